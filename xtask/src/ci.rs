//! `cargo xtask ci` and `setup`: every check CI makes, in order, and what the tests need.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::e2e::e2e_tests;
use crate::release;
use crate::util::{
    CARGO_DENY, CARGO_MACHETE, Result, Tally, cargo, cargo_tool, root, run, run_tests,
};

/// The independent aggregation implementation the interop tests compare against.
pub(crate) const ORACLE_PACKAGES: [&str; 2] = ["aws-kinesis-agg==1.2.3", "six==1.17.0"];

/// Crates that must never appear in the dependency tree of the listed crate.
/// (Any `aws-*` crate is forbidden as well.)
pub(crate) const FORBIDDEN_DEPENDENCIES: [(&str, &[&str]); 2] = [
    (
        "kpl-aggregation",
        &["tokio", "async-std", "smol", "metrics"],
    ),
    // The engine is sans-IO: no runtime, no network stack, no clock of its own.
    (
        "kpl-engine",
        &["tokio", "async-std", "smol", "mio", "hyper"],
    ),
];

pub(crate) fn ci() -> Result {
    let python = setup()?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    // The end-to-end tests sit behind the `e2e` features; linting includes them.
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "kpl/e2e,kpl-cli/e2e,kpl-aggregation/interop",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    check_dependency_boundaries()?;
    check_one_http_stack()?;
    check_licenses_and_sources()?;
    release::release_checks()?;

    let mut tally = Tally::default();
    let result = (|| {
        run_tests(
            "cargo test (unit, integration, property and interop tests; examples)",
            cargo()
                .args(["test", "--workspace", "--locked", "--exclude", "kpl-fuzz"])
                .args(["--lib", "--bins", "--tests", "--examples"])
                .args(["--features", "kpl-aggregation/interop"])
                .env("KPL_INTEROP_PYTHON", &python),
            &mut tally,
        )?;
        run_tests(
            "cargo test --doc",
            cargo().args(["test", "--workspace", "--locked", "--doc"]),
            &mut tally,
        )?;
        run(
            "cargo doc",
            cargo()
                .args(["doc", "--workspace", "--no-deps", "--locked"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )?;
        e2e_tests(&mut tally)?;
        run_tests(
            "fuzz corpus replay",
            cargo().args([
                "test",
                "--locked",
                "-p",
                "kpl-fuzz",
                "--test",
                "corpus_replay",
            ]),
            &mut tally,
        )?;
        release::package_builds()
    })();
    println!(
        "\nsummary: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    result
}

/// Creates `.tools/interop-venv` with the Python oracle if it is missing; returns its interpreter.
pub(crate) fn setup() -> Result<PathBuf> {
    let venv = root().join(".tools/interop-venv");
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                "import aws_kinesis_agg.aggregator, aws_kinesis_agg.deaggregator",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if python.exists() && ready(&python) {
        return Ok(python);
    }
    let system_python = ["python3", "python"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok())
        .ok_or(
            "the interop tests need Python 3 with the venv module (to install aws-kinesis-agg \
             1.2.3), and neither `python3` nor `python` is on PATH",
        )?;
    run(
        "create .tools/interop-venv",
        Command::new(system_python).arg("-m").arg("venv").arg(&venv),
    )?;
    run(
        "install the Python aggregation oracle",
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(ORACLE_PACKAGES),
    )?;
    if ready(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import aws_kinesis_agg after installing it",
            python.display()
        ))
    }
}

pub(crate) fn check_dependency_boundaries() -> Result {
    eprintln!("\n==> dependency boundaries");
    // Without its default `aws` feature the facade must build without any AWS crate; with
    // `aws` but without `cloudwatch`, without the CloudWatch SDK.
    let checks = FORBIDDEN_DEPENDENCIES
        .iter()
        .map(|&(krate, forbidden)| (krate, forbidden, None, false))
        .chain([
            ("kpl", &[][..], Some(""), true),
            (
                "kpl",
                &["aws-sdk-cloudwatch", "kpl-cloudwatch"][..],
                Some("aws"),
                false,
            ),
        ]);
    for (krate, forbidden, features, any_aws) in checks {
        let output = cargo()
            .args([
                "tree",
                "--locked",
                "-p",
                krate,
                "-e",
                "normal,build",
                "--prefix",
                "none",
            ])
            .args(features.map(|_| "--no-default-features"))
            .args(
                features
                    .filter(|f| !f.is_empty())
                    .map(|f| format!("--features={f}")),
            )
            .output()
            .map_err(|e| format!("cargo tree: {e}"))?;
        if !output.status.success() {
            return Err(format!("cargo tree -p {krate} failed"));
        }
        let tree = String::from_utf8_lossy(&output.stdout);
        for line in tree.lines() {
            let name = line.split(' ').next().unwrap_or_default();
            if forbidden.contains(&name) || (any_aws && name.starts_with("aws-")) {
                return Err(format!(
                    "{krate} must not depend on {name}, but its tree has: {line}"
                ));
            }
        }
        let without = if any_aws { ", nor any aws-* crate" } else { "" };
        eprintln!("{krate} (features {features:?}): none of {forbidden:?}{without}");
    }
    Ok(())
}

/// Crates of which the tree may hold one major version only: one HTTP and TLS stack (the SDK
/// clients on hyper 1 and rustls 0.23, as the project's own connectors), not a second one
/// pulled in by a legacy feature. (`http` 0.2 stays: the SDK's types still use it.)
const ONE_VERSION_ONLY: [&str; 5] = ["hyper", "h2", "rustls", "hyper-rustls", "tokio-rustls"];

/// Fails when `cargo tree --duplicates` lists a second version of an HTTP or TLS crate.
pub(crate) fn check_one_http_stack() -> Result {
    eprintln!("\n==> one HTTP and TLS stack");
    let output = cargo()
        .args([
            "tree",
            "--locked",
            "--workspace",
            "--duplicates",
            "--prefix",
            "none",
        ])
        // The duplicated crates only, not what depends on them.
        .args(["--depth", "0", "-e", "normal,build,dev"])
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !output.status.success() {
        return Err("cargo tree --duplicates failed".to_owned());
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    let twice: Vec<&str> = tree
        .lines()
        .filter(|line| ONE_VERSION_ONLY.contains(&line.split(' ').next().unwrap_or_default()))
        .collect();
    if !twice.is_empty() {
        return Err(format!(
            "a second HTTP or TLS stack is in the tree (see `cargo tree -d`): {twice:?}"
        ));
    }
    eprintln!("one version each of {ONE_VERSION_ONLY:?}");
    Ok(())
}

/// `cargo deny check licenses bans sources` against `deny.toml`, then `cargo machete` for
/// dependencies no code uses. Advisories are left out: they need the RustSec database from
/// GitHub, which CI cannot reach.
pub(crate) fn check_licenses_and_sources() -> Result {
    let deny = cargo_tool(CARGO_DENY)?;
    run(
        "cargo deny check licenses bans sources",
        Command::new(&deny)
            .current_dir(root())
            .args(["--locked", "check", "--hide-inclusion-graph"])
            .args(["licenses", "bans", "sources"]),
    )?;
    let machete = cargo_tool(CARGO_MACHETE)?;
    run(
        "cargo machete (unused dependencies)",
        Command::new(&machete).current_dir(root()),
    )
}
