//! Replays every committed corpus file through the fuzz bodies, so stable CI exercises the corpus
//! even where cargo-fuzz cannot run.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus folder {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "corpus {target} has only {} files",
        files.len()
    );
    for file in &files {
        let bytes = std::fs::read(file).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| body(&bytes));
        assert!(
            outcome.is_ok(),
            "fuzz body {target} panicked on {}",
            file.display()
        );
    }
    println!("replayed {} {target} corpus files", files.len());
}

#[test]
fn decode_corpus() {
    replay("decode", kpl_fuzz::decode);
}

#[test]
fn properties_corpus() {
    replay("properties", kpl_fuzz::properties);
}

#[test]
fn roundtrip_corpus() {
    replay("roundtrip", kpl_fuzz::roundtrip);
}
