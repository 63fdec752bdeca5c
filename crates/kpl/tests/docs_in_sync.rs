//! The repository's reference pages agree with the code they describe. These tests read
//! `docs/` at the workspace root, so the published package leaves this file out.

use std::path::PathBuf;

fn docs_page(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(name)
}

/// Compares a generated page with the file; `KPL_BLESS=1` writes the file first.
fn assert_generated_page_is_current(name: &str, expected: &str) -> String {
    let path = docs_page(name);
    if std::env::var_os("KPL_BLESS").is_some() {
        std::fs::write(&path, expected).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let actual =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        actual == expected,
        "docs/{name} is out of date: run `KPL_BLESS=1 cargo test -p kpl --test docs_in_sync`"
    );
    actual
}

#[test]
fn docs_config_md_is_generated_from_the_key_table() {
    let page = assert_generated_page_is_current("config.md", &kpl::__reference::config_markdown());
    for key in ["AggregationEnabled", "MaxOutstandingBytes", "RecordTtl"] {
        assert!(page.contains(&format!("`{key}`")), "{key}");
    }
}

#[test]
fn docs_metrics_md_is_generated_from_the_definitions() {
    let page =
        assert_generated_page_is_current("metrics.md", &kpl::__reference::metrics_markdown());
    for metric in kpl::Metric::ALL {
        assert!(page.contains(metric.name()), "{}", metric.name());
    }
}

#[test]
fn every_producer_made_error_code_is_documented_next_to_the_service_codes() {
    let path = docs_page("aws-errors.md");
    let docs = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for code in kpl_engine::codes::ALL {
        assert!(
            docs.contains(&format!("| `{code}` |")),
            "docs/aws-errors.md has no row for {code}"
        );
    }
}
