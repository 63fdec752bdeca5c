//! Interoperability with an independent implementation of the format: the Python `aws-kinesis-agg`
//! 1.2.3 package by AWS, driven through `interop/oracle.py`.
//!
//! `cargo xtask ci` installs it into `.tools/interop-venv` (git-ignored) and runs this file (it
//! needs the `interop` feature, so a plain `cargo test` does not build it). These tests never
//! skip: without the oracle they fail and say how to install it.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on unexpected results by design"
)]

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{assert_same_records, user_record};
use kpl_aggregation::{
    Aggregator, HashKey, KinesisRecord, MaxAggregateSize, OuterPartitionKey, UserRecord,
    deaggregate, deaggregate_strict,
};
use proptest::collection::vec;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

const SETS: usize = 200;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn oracle_python() -> PathBuf {
    if let Some(python) = std::env::var_os("KPL_INTEROP_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = workspace_root().join(".tools/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "the interop oracle (Python aws-kinesis-agg 1.2.3) is not installed at {}: run `cargo xtask \
         setup` (or `cargo xtask ci`), or set KPL_INTEROP_PYTHON to a Python that has it",
        venv.display()
    );
    venv
}

fn run_oracle(mode: &str, input: &str) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oracle.py");
    let mut child = Command::new(oracle_python())
        .arg(&script)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python oracle");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("run the Python oracle");
    assert!(
        output.status.success(),
        "oracle {mode} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    writer
        .join()
        .expect("writer thread")
        .expect("write to the oracle");
    String::from_utf8(output.stdout).expect("the oracle prints hex and ASCII")
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex from the oracle"))
        .collect()
}

/// Deterministic sets of 2 to 40 records from the shared strategies.
fn record_sets() -> Vec<Vec<UserRecord>> {
    let mut runner = TestRunner::deterministic();
    let strategy = vec(user_record(), 2..40);
    (0..SETS)
        .map(|_| strategy.new_tree(&mut runner).expect("generate").current())
        .collect()
}

fn encode_with_us(records: &[UserRecord]) -> KinesisRecord {
    let mut aggregator = Aggregator::new(
        MaxAggregateSize::new(MaxAggregateSize::MAX).unwrap(),
        OuterPartitionKey::Constant,
    );
    for record in records {
        aggregator.try_push(record).unwrap();
    }
    aggregator.finish().unwrap()
}

fn encode_with_python(sets: &[Vec<UserRecord>]) -> Vec<Vec<u8>> {
    let mut input = String::new();
    for set in sets {
        input.push_str("SET\n");
        for record in set {
            let hash_key = record
                .explicit_hash_key()
                .map_or_else(|| "-".to_owned(), |key| hex(key.to_string().as_bytes()));
            let _ = writeln!(
                input,
                "{} {hash_key} {}",
                hex(record.partition_key().as_str().as_bytes()),
                hex(record.data())
            );
        }
        input.push_str("END\n");
    }
    run_oracle("encode", &input).lines().map(unhex).collect()
}

struct PythonRecord {
    partition_key: String,
    explicit_hash_key: Option<HashKey>,
    data: Vec<u8>,
    sub_sequence_number: u64,
    aggregated: bool,
}

fn decode_with_python(records: &[KinesisRecord]) -> Vec<Vec<PythonRecord>> {
    let mut input = String::new();
    for record in records {
        let _ = writeln!(
            input,
            "{} {}",
            hex(record.partition_key().as_bytes()),
            hex(record.data())
        );
    }
    let output = run_oracle("decode", &input);
    let mut lines = output.lines();
    let mut out = Vec::new();
    while let Some(header) = lines.next() {
        let count: usize = header
            .strip_prefix("RECORDS ")
            .and_then(|n| n.parse().ok())
            .expect("RECORDS header");
        let records = (0..count)
            .map(|_| {
                let fields: Vec<_> = lines.next().expect("record line").split(' ').collect();
                PythonRecord {
                    partition_key: String::from_utf8(unhex(fields[0])).unwrap(),
                    explicit_hash_key: (fields[1] != "-").then(|| {
                        String::from_utf8(unhex(fields[1]))
                            .unwrap()
                            .parse()
                            .unwrap()
                    }),
                    data: unhex(fields[2]),
                    sub_sequence_number: fields[3].parse().unwrap(),
                    aggregated: fields[4] == "1",
                }
            })
            .collect();
        out.push(records);
    }
    out
}

#[test]
fn our_aggregates_are_byte_identical_to_the_python_encoder() {
    let sets = record_sets();
    let theirs = encode_with_python(&sets);
    assert_eq!(theirs.len(), sets.len());
    for (index, (set, their_blob)) in sets.iter().zip(&theirs).enumerate() {
        let ours = encode_with_us(set);
        assert_eq!(hex(ours.data()), hex(their_blob), "set {index} differs");
    }
}

#[test]
fn python_decodes_our_output() {
    let sets = record_sets();
    let ours: Vec<_> = sets.iter().map(|set| encode_with_us(set)).collect();
    // A lone record is sent raw, as the KPL does: Python must pass it through unchanged.
    let lone = encode_with_us(&sets[0][..1]);
    let decoded = decode_with_python(&[ours.clone(), vec![lone.clone()]].concat());
    assert_eq!(decoded.len(), sets.len() + 1);
    for (set, theirs) in sets.iter().zip(&decoded) {
        assert_eq!(theirs.len(), set.len());
        for (position, (want, got)) in set.iter().zip(theirs).enumerate() {
            assert_eq!(got.partition_key, want.partition_key().as_str());
            assert_eq!(got.data, &want.data()[..]);
            assert_eq!(got.sub_sequence_number, position as u64);
            assert!(got.aggregated);
            // Python hands table entry 0 to records without an EHK whenever the blob has one
            // (it ignores field presence), so only records that set one can be compared.
            if want.explicit_hash_key().is_some() {
                assert_eq!(got.explicit_hash_key, want.explicit_hash_key());
            }
        }
    }
    let passed = decoded.last().unwrap();
    assert_eq!(passed.len(), 1);
    assert!(!passed[0].aggregated);
    assert_eq!(passed[0].data, &lone.data()[..]);
    assert_eq!(passed[0].partition_key, lone.partition_key());
}

#[test]
fn we_decode_python_output() {
    let sets = record_sets();
    let theirs = encode_with_python(&sets);
    for (set, blob) in sets.iter().zip(theirs) {
        let record = KinesisRecord::new("a", blob);
        let decoded = deaggregate_strict(&record).expect("a valid aggregate");
        assert_same_records(&decoded, set);
        assert_eq!(deaggregate(&record), decoded);
    }
}
