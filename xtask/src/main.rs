//! Project automation, run as `cargo xtask <command>` (see `.cargo/config.toml`).
//!
//! - `ci`: everything CI checks, in order; `.ci/run` and GitHub Actions call exactly this.
//! - `setup`: installs what the tests need (the Python interop oracle) into `.tools/` (git-ignored).
//! - `bench [--quick] [criterion args]`: runs the criterion benchmarks and prints the ratios the
//!   targets are stated in, then the end-to-end scoreboard (a producer process pushing 1 M records
//!   over HTTP to a verifying stub process, against the wire-ready limit measured in the same
//!   run); `--quick` runs the scoreboard alone, once.
//! - `fuzz [TARGET] [--secs N]`: runs cargo-fuzz on each (or one) fuzz target for N seconds.
//! - `soak [--seeds N] [--first N] [--minutes N]`: runs the engine simulation sweep over many more
//!   seeds than CI; with `--minutes`, for that long, half of it over HTTP with injected faults.
//! - `goodput`: the goodput table of `docs/benchmarks.md` (workload × enforcement × `RateLimit`,
//!   in the simulator's virtual time).
//! - `memory`: the producer's memory at the default limits, with a stalled endpoint, then with one
//!   stuck shard for `--minutes N` (10 by default).
//! - `e2e [--repeat N]`: starts the local Kinesis servers and runs only the end-to-end tests, N
//!   times in a row.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

type Result<T = ()> = std::result::Result<T, String>;

/// The independent aggregation implementation the interop tests compare against.
const ORACLE_PACKAGES: [&str; 2] = ["aws-kinesis-agg==1.2.3", "six==1.17.0"];
/// Crates that must never appear in the dependency tree of the listed crate.
/// (Any `aws-*` crate is forbidden as well.)
const FORBIDDEN_DEPENDENCIES: [(&str, &[&str]); 2] = [
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
const FUZZ_TARGETS: [&str; 3] = ["decode", "roundtrip", "properties"];
/// The Kinesis-compatible server of the end-to-end tests; its version and every dependency's
/// are pinned by `xtask/npm/kinesalite/package-lock.json`.
const KINESALITE: &str = "kinesalite";
/// The server of the StreamARN end-to-end tests (kinesalite refuses ARNs); pinned by
/// `xtask/npm/kinesis-local/package-lock.json`.
const KINESIS_LOCAL: &str = "kinesis-local";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("setup") => setup().map(drop),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("soak") => soak(&args[1..]),
        Some("e2e") => e2e(&args[1..]),
        Some("memory") => memory(&args[1..]),
        Some("goodput") => goodput(&args[1..]),
        _ => Err("usage: cargo xtask <ci | setup | bench [--quick] [criterion args] | \
                  fuzz [TARGET] [--secs N] | soak [--seeds N] [--first N] [--minutes N] | e2e [--repeat N] | memory [--minutes N] | goodput [WORKLOAD]>"
            .to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

fn run(step: &str, command: &mut Command) -> Result {
    eprintln!("\n==> {step}");
    let status = command
        .status()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

/// Test counts summed over every `test result:` line a cargo test run prints.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs a cargo test command, echoing its output and adding its results to `tally`.
fn run_tests(step: &str, command: &mut Command, tally: &mut Tally) -> Result {
    eprintln!("\n==> {step}");
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("{step}: reading output: {e}"))?;
        println!("{line}");
        if let Some(rest) = line.trim().strip_prefix("test result: ") {
            let count = |label: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(label)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            tally.passed += count(" passed");
            tally.failed += count(" failed");
            tally.ignored += count(" ignored");
        }
    }
    let status = child.wait().map_err(|e| format!("{step}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

fn ci() -> Result {
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
    check_licenses_and_sources()?;

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
        )
    })();
    println!(
        "\nsummary: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    result
}

/// Creates `.tools/interop-venv` with the Python oracle if it is missing; returns its interpreter.
fn setup() -> Result<PathBuf> {
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

fn check_dependency_boundaries() -> Result {
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

/// The cargo tools `cargo xtask ci` installs from crates.io into `.tools/cargo` when missing:
/// (crate, version).
const CARGO_DENY: (&str, &str) = ("cargo-deny", "0.20.2");
const CARGO_MACHETE: (&str, &str) = ("cargo-machete", "0.9.2");

/// The path of a cargo tool's binary, installed first if it is missing or another version.
fn cargo_tool((name, version): (&str, &str)) -> Result<PathBuf> {
    let tools = root().join(".tools/cargo");
    let binary = tools.join("bin").join(name);
    let installed = Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains(version));
    if !installed {
        run(
            &format!("install {name} {version}"),
            cargo()
                .args(["install", "--locked", "--version", version, name, "--root"])
                .arg(&tools),
        )?;
    }
    Ok(binary)
}

/// `cargo deny check licenses bans sources` against `deny.toml`, then `cargo machete` for
/// dependencies no code uses. Advisories are left out: they need the RustSec database from
/// GitHub, which CI cannot reach.
fn check_licenses_and_sources() -> Result {
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

fn bench(args: &[String]) -> Result {
    let quick = args.iter().any(|arg| arg == "--quick");
    let extra: Vec<&String> = args.iter().filter(|arg| *arg != "--quick").collect();
    if !quick {
        criterion(&extra)?;
    }
    scoreboard(if quick { 1 } else { 3 })
}

fn criterion(extra: &[&String]) -> Result {
    run(
        "cargo bench",
        cargo()
            .args(["bench", "--locked", "-p", "kpl-benches", "--"])
            .args(extra),
    )?;
    // Absent when a criterion filter skipped the benchmark.
    let estimate = |group: &str, name: &str| -> Option<f64> {
        let path = target_dir().join(format!("criterion/{group}/{name}/new/estimates.json"));
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["mean"]["point_estimate"].as_f64()
    };
    const RECORDS: f64 = 1_000_000.0;
    let per_record = |group: &str, name: &str| estimate(group, name).map(|ns| ns / RECORDS);
    println!("\nper user record (16-char key + 100 B; mean of criterion samples)");
    if let (Some(baseline), Some(encode), Some(decode)) = (
        per_record("aggregation", "baseline_md5_memcpy"),
        per_record("aggregation", "encode"),
        per_record("aggregation", "decode"),
    ) {
        println!("  aggregation baseline (MD5 + memcpy of the encoded bytes): {baseline:7.1} ns");
        println!(
            "  encode:  {encode:7.1} ns  = {:.3} x baseline (target <= 1.15)",
            encode / baseline
        );
        println!(
            "  decode:  {decode:7.1} ns  = {:.2} M user records/s (target >= 5)",
            1_000.0 / decode
        );
    }
    if let (Some(one), Some(lanes)) = (
        per_record("aggregation", "hash_keys_one_at_a_time"),
        per_record("aggregation", "hash_keys_side_by_side"),
    ) {
        println!(
            "  hash key (MD5 of a 16-char key): one at a time {one:5.1} ns, eight side by side \
             {lanes:5.1} ns = {:.2} x faster",
            one / lanes
        );
    }
    if let (Some(baseline), Some(engine)) = (
        per_record("engine", "baseline_core_work"),
        per_record("engine", "engine_null_transport"),
    ) {
        println!(
            "  engine baseline (MD5 key + shard search + encode + trailer MD5): {baseline:7.1} ns = {:.2} M/s",
            1_000.0 / baseline
        );
        println!(
            "  engine, null transport, 4 shards: {engine:7.1} ns = {:.2} M/s = {:.3} x baseline throughput (target >= 0.7)",
            1_000.0 / engine,
            baseline / engine
        );
    }
    let per_producer_record = |name: &str| estimate("producer", name).map(|ns| ns / 250_000.0);
    if let (Some(null), Some(aws)) = (
        per_producer_record("null_transport"),
        per_producer_record("aws_sdk_http_stub"),
    ) {
        println!(
            "  producer (facade), in-process transport, one core: {null:7.1} ns = {:.2} M/s",
            1_000.0 / null
        );
        println!(
            "  producer through the AWS SDK to a loopback stub:    {aws:7.1} ns = {:.2} M/s",
            1_000.0 / aws
        );
        println!(
            "  SDK layer (serialize + sign + send + parse) per user record: {:7.1} ns",
            aws - null
        );
    }
    if let (Some(one), Some(four)) = (
        per_producer_record("blocking_null_transport_1_threads"),
        per_producer_record("blocking_null_transport_4_threads"),
    ) {
        println!(
            "  blocking producer, in-process transport: 1 thread {one:7.1} ns, 4 threads \
             {four:7.1} ns = {:.2} x the 1-thread rate (target >= 1)",
            one / four
        );
    }
    Ok(())
}

/// Only the end-to-end tests, `--repeat N` times in a row (each run with servers of its own),
/// to show that they pass every time and not by luck.
fn e2e(args: &[String]) -> Result {
    let repeat = match args {
        [] => 1,
        [flag, count] if flag == "--repeat" => count
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--repeat takes a positive number, not {count}"))?,
        other => return Err(format!("unknown e2e options {other:?}")),
    };
    let mut tally = Tally::default();
    let mut failed_runs = Vec::new();
    for run in 1..=repeat {
        if repeat > 1 {
            eprintln!("\n==> end-to-end run {run} of {repeat}");
        }
        if let Err(error) = e2e_tests(&mut tally) {
            eprintln!("run {run}: {error}");
            failed_runs.push(run);
        }
    }
    println!(
        "\nsummary: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    if repeat > 1 {
        println!(
            "end-to-end runs: {} of {repeat} passed",
            repeat - failed_runs.len() as u32
        );
    }
    if failed_runs.is_empty() {
        Ok(())
    } else {
        Err(format!("end-to-end runs {failed_runs:?} failed"))
    }
}

/// The end-to-end tests, each server started before and stopped after its tests.
fn e2e_tests(tally: &mut Tally) -> Result {
    type Start = fn() -> Result<LocalServer>;
    // (step, server, package, test target, variable carrying the endpoint)
    let suites: [(&str, Start, &str, &str, &str); 3] = [
        (
            "end-to-end tests through the producer against kinesalite",
            LocalServer::kinesalite,
            "kpl",
            "e2e_kinesalite",
            "KPL_KINESALITE_ENDPOINT",
        ),
        (
            "StreamARN end-to-end tests against kinesis-local",
            LocalServer::kinesis_local,
            "kpl",
            "e2e_kinesis_local",
            "KPL_KINESIS_LOCAL_ENDPOINT",
        ),
        (
            "the kpl command line against kinesalite",
            LocalServer::kinesalite,
            "kpl-cli",
            "e2e_kinesalite",
            "KPL_KINESALITE_ENDPOINT",
        ),
    ];
    for (step, start, package, target, variable) in suites {
        let server = start()?;
        run_tests(
            step,
            cargo()
                .args(["test", "--locked", "-p", package, "--features", "e2e"])
                .args(["--test", target])
                .env(variable, server.endpoint()),
            tally,
        )?;
    }
    Ok(())
}

/// The producer's memory at the default limits: with a stalled endpoint (an application sends
/// flat out until the producer refuses, then the endpoint recovers and everything drains), then
/// with one shard failing every entry for `minutes` of steady traffic.
fn memory(args: &[String]) -> Result {
    let minutes: u64 = match args {
        [] => 10,
        [flag, n] if flag == "--minutes" => n.parse().map_err(|_| "--minutes takes a number")?,
        _ => return Err("usage: cargo xtask memory [--minutes N]".to_owned()),
    };
    // One test of `crates/kpl/tests/faults_http.rs`, in release, with its output shown.
    let http_test = |filter: &str, variable: &str, value: String| {
        let mut command = cargo();
        command
            .args(["test", "--release", "--locked", "-p", "kpl"])
            .args(["--features", "aws", "--test", "faults_http", filter])
            .args(["--", "--nocapture"])
            .env(variable, value);
        command
    };
    run(
        "memory with a stalled endpoint, default limits",
        &mut http_test("stalled", "KPL_MEMORY_RUN", "1".to_owned()),
    )?;
    run(
        &format!("memory with one stuck shard for {minutes} minutes, default limits"),
        &mut http_test("stuck", "KPL_MEMORY_MINUTES", minutes.to_string()),
    )
}

/// The goodput table: each workload against a simulated stream that enforces the service's
/// per-shard limits by token buckets or by fixed windows, at several `RateLimit`s.
fn goodput(args: &[String]) -> Result {
    run(
        "goodput scenarios in virtual time",
        cargo()
            .args([
                "run",
                "--release",
                "--locked",
                "-p",
                "kpl-sim",
                "--example",
                "goodput",
                "--",
            ])
            .args(args),
    )
}

fn soak(args: &[String]) -> Result {
    let mut seeds = 100_000u64;
    let mut first = 1_000_000u64;
    let mut minutes = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = rest
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{arg} takes a number"))?;
        match arg.as_str() {
            "--seeds" => seeds = value,
            "--first" => first = value,
            "--minutes" => minutes = Some(value),
            other => return Err(format!("unknown soak option {other}")),
        }
    }
    if let Some(minutes) = minutes {
        // Half the time on the simulated service, half over HTTP with injected faults; each
        // prints records, faults, outcomes, duplicates by cause and resident memory.
        let secs = (minutes * 60 / 2).max(1).to_string();
        run(
            &format!("simulation sweep for {minutes}/2 minutes from seed {first}"),
            cargo()
                .args(["test", "--release", "--locked", "-p", "kpl-sim"])
                .args(["--test", "simulation", "seeded_sweep", "--", "--nocapture"])
                .env("KPL_SIM_SECS", &secs)
                .env("KPL_SIM_FIRST_SEED", first.to_string()),
        )?;
        return run(
            &format!("HTTP fault runs for {minutes}/2 minutes"),
            cargo()
                .args(["test", "--release", "--locked", "-p", "kpl"])
                .args([
                    "--test",
                    "faults_http",
                    "every_promise",
                    "--",
                    "--nocapture",
                ])
                .env("KPL_HTTP_SOAK_SECS", &secs),
        );
    }
    run(
        &format!("simulation sweep: seeds {first}..{}", first + seeds),
        cargo()
            .args(["test", "--release", "--locked", "-p", "kpl-sim"])
            .args(["--test", "simulation", "seeded_sweep", "--", "--nocapture"])
            .env("KPL_SIM_SEEDS", seeds.to_string())
            .env("KPL_SIM_FIRST_SEED", first.to_string()),
    )
}

fn fuzz(args: &[String]) -> Result {
    let mut secs = 60u64;
    let mut targets: Vec<&str> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--secs" => {
                secs = rest
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--secs takes a number of seconds")?;
            }
            name if FUZZ_TARGETS.contains(&name) => targets.push(name),
            other => {
                return Err(format!(
                    "unknown fuzz argument {other:?}; targets: {FUZZ_TARGETS:?}"
                ));
            }
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.to_vec();
    }
    let tools = root().join(".tools/cargo-fuzz");
    let cargo_fuzz = tools.join("bin/cargo-fuzz");
    if !cargo_fuzz.exists() {
        run(
            "install cargo-fuzz into .tools/cargo-fuzz",
            cargo()
                .args(["install", "cargo-fuzz", "--locked", "--root"])
                .arg(&tools),
        )?;
    }
    for target in targets {
        let corpus = root().join("fuzz/corpus").join(target);
        run(
            &format!("cargo fuzz run {target} for {secs} s"),
            Command::new(&cargo_fuzz)
                .current_dir(root())
                .args(["fuzz", "run", target, "--features", "libfuzzer"])
                .arg(&corpus)
                .arg("--")
                .arg(format!("-max_total_time={secs}"))
                // cargo-fuzz passes nightly-only sanitizer flags; this lets the stable toolchain
                // accept them (the only toolchain these machines have).
                .env("RUSTC_BOOTSTRAP", "1"),
        )?;
    }
    Ok(())
}

/// A local Kinesis-compatible server (kinesalite, or kinesis-local), installed from npm into
/// `.tools/` on first use, running on a free port until dropped (whatever the tests' outcome).
/// kinesalite is bound to 127.0.0.1; kinesis-local has no host option.
struct LocalServer {
    child: std::process::Child,
    port: u16,
    name: &'static str,
}

/// Installs the npm package `package` into `.tools/<package>` unless it is there, exactly as
/// `xtask/npm/<package>/package-lock.json` pins it (`npm ci`); returns the folder.
fn npm_install(package: &str) -> Result<PathBuf> {
    let dir = root().join(".tools").join(package);
    let pinned = root().join("xtask").join("npm").join(package);
    let installed = dir.join("node_modules").join(package).join("package.json");
    let lock = dir.join("package-lock.json");
    let same_lock =
        std::fs::read(&lock).ok() == std::fs::read(pinned.join("package-lock.json")).ok();
    if !(installed.exists() && same_lock) {
        for tool in ["node", "npm"] {
            if Command::new(tool).arg("--version").output().is_err() {
                return Err(format!(
                    "the end-to-end tests need Node.js and npm to install {package}, and `{tool}` is not on PATH"
                ));
            }
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(pinned.join(file), dir.join(file))
                .map_err(|e| format!("{}: {e}", pinned.join(file).display()))?;
        }
        run(
            &format!("npm ci ({package}, as pinned by xtask/npm/{package})"),
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
        )?;
    }
    Ok(dir)
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl LocalServer {
    fn kinesalite() -> Result<Self> {
        let dir = npm_install(KINESALITE)?;
        // The CLI binds every interface and has no host option; this wrapper binds loopback,
        // with short stream-state delays and a shard limit above what the tests create.
        let script = dir.join("start.js");
        std::fs::write(
            &script,
            "const port = Number(process.argv[2]);\n\
             require('kinesalite')({createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50, shardLimit: 1000})\n\
               .listen(port, '127.0.0.1', () => console.log('kinesalite listening on ' + port));\n",
        )
        .map_err(|e| format!("{}: {e}", script.display()))?;
        let port = free_port()?;
        let mut command = Command::new("node");
        command.arg(&script).arg(port.to_string()).current_dir(&dir);
        Self::launch("kinesalite", port, command)
    }

    /// kinesis-local must start from its own package folder (it reads `server.json` there).
    fn kinesis_local() -> Result<Self> {
        let dir = npm_install(KINESIS_LOCAL)?;
        let port = free_port()?;
        let mut command = Command::new("node");
        command
            .arg("main.js")
            .current_dir(dir.join("node_modules/kinesis-local"))
            .env("KINESIS_MOCK_PLAIN_PORT", port.to_string())
            .env("KINESIS_MOCK_TLS_PORT", free_port()?.to_string())
            .env("CREATE_STREAM_DURATION", "50ms")
            .env("DELETE_STREAM_DURATION", "50ms")
            .env("UPDATE_STREAM_DURATION", "50ms")
            .stderr(Stdio::null());
        Self::launch("kinesis-local", port, command)
    }

    fn launch(name: &'static str, port: u16, mut command: Command) -> Result<Self> {
        eprintln!("\n==> start {name} on port {port}");
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start node for {name}: {e}"))?;
        let server = Self { child, port, name };
        server.wait_for_port()?;
        Ok(server)
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "waiting for an external server to listen"
    )]
    fn wait_for_port(&self) -> Result {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_millis(200))
                .is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(format!(
            "{} did not listen on {address} within 30 s",
            self.name
        ))
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User records each scoreboard run pushes (the workload of `shared/spec/performance.md`).
const SCOREBOARD_RECORDS: u64 = 1_000_000;

/// One producer run's report, as `kpl-scoreboard produce` prints it.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    seconds: f64,
    cpu_seconds: f64,
    application_rss_kib: f64,
    peak_rss_kib: f64,
}

/// The end-to-end scoreboard: for each way of producing, `repeats` runs of a producer process
/// pushing [`SCOREBOARD_RECORDS`] records over HTTP to a stub process that verifies each one,
/// with the producer on core 0 and the stub on core 1 when `taskset` and two cores are there;
/// the median run of each is printed with the wire-ready limit measured in the same run.
fn scoreboard(repeats: usize) -> Result {
    run(
        "cargo build --release -p kpl-benches --bin kpl-scoreboard",
        cargo().args([
            "build",
            "--release",
            "--locked",
            "-p",
            "kpl-benches",
            "--bin",
            "kpl-scoreboard",
        ]),
    )?;
    let binary = target_dir().join("release/kpl-scoreboard");
    let pinned = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && Command::new("taskset").arg("--version").output().is_ok();
    let on_core = |core: &str| {
        let mut command = if pinned {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", core]).arg(&binary);
            taskset
        } else {
            Command::new(&binary)
        };
        command.current_dir(root());
        command
    };
    eprintln!(
        "\n==> scoreboard: {SCOREBOARD_RECORDS} records (16-char key + 100 B), 4 shards, {}",
        if pinned {
            "producer on core 0, stub on core 1"
        } else {
            "unpinned (no taskset or one core)"
        }
    );
    let mut stub = on_core("1")
        .arg("stub")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kpl-scoreboard stub: {e}"))?;
    let mut stub_out = BufReader::new(stub.stdout.take().ok_or("stub has no stdout")?);
    let mut endpoint = String::new();
    stub_out
        .read_line(&mut endpoint)
        .map_err(|e| format!("stub endpoint: {e}"))?;
    let endpoint = endpoint.trim().to_owned();
    let json_line = |command: &mut Command, what: &str| -> Result<serde_json::Value> {
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{what}: {e}"))?;
        if !output.status.success() {
            return Err(format!("{what} failed ({})", output.status));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| format!("{what}: {e}"))
    };
    let number = |json: &serde_json::Value, field: &str| json[field].as_f64().unwrap_or(f64::NAN);
    let ways = ["send_wait", "send_all", "sdk_batches"];
    let mut sent = 0u64;
    let mut fingerprint = 0u64;
    let mut medians = Vec::new();
    let mut limits = Vec::new();
    for _ in 0..repeats {
        let limit = json_line(
            on_core("0").args(["limit", &SCOREBOARD_RECORDS.to_string()]),
            "kpl-scoreboard limit",
        )?;
        limits.push(number(&limit, "seconds"));
    }
    for way in ways {
        let mut runs = Vec::new();
        for _ in 0..repeats {
            let what = format!("kpl-scoreboard produce {way}");
            let report = json_line(
                on_core("0").args(["produce", way, &endpoint, &SCOREBOARD_RECORDS.to_string()]),
                &what,
            )?;
            let delivered = report["delivered"].as_u64().unwrap_or(0);
            if delivered != SCOREBOARD_RECORDS {
                return Err(format!(
                    "{what}: {delivered} of {SCOREBOARD_RECORDS} records delivered"
                ));
            }
            sent += SCOREBOARD_RECORDS;
            fingerprint = fingerprint.wrapping_add(report["fingerprint"].as_u64().unwrap_or(0));
            runs.push(Run {
                seconds: number(&report, "seconds"),
                cpu_seconds: number(&report, "cpu_seconds"),
                application_rss_kib: number(&report, "application_rss_kib"),
                peak_rss_kib: number(&report, "peak_rss_kib"),
            });
        }
        runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        medians.push((way, runs[runs.len() / 2]));
    }
    drop(stub.stdin.take());
    let mut counts = String::new();
    stub_out
        .read_line(&mut counts)
        .map_err(|e| format!("stub counts: {e}"))?;
    let _ = stub.wait();
    let counts: serde_json::Value =
        serde_json::from_str(&counts).map_err(|e| format!("stub counts: {e}"))?;
    let received = counts["user_records"].as_u64().unwrap_or(0);
    let summed = counts["fingerprint"].as_u64().unwrap_or(0);
    if received != sent || summed != fingerprint {
        return Err(format!(
            "the stub received {received} user records (fingerprint {summed}), \
             {sent} were delivered (fingerprint {fingerprint}): {counts}"
        ));
    }
    limits.sort_by(f64::total_cmp);
    let limit = limits[limits.len() / 2] / SCOREBOARD_RECORDS as f64;
    let records = SCOREBOARD_RECORDS as f64;
    println!(
        "\nend to end over HTTP, one core for the producer (median of {repeats}; every record \
         verified by the stub: {received} received, {} corrupt, {} in aggregates a KCL consumer \
         would drop)",
        counts["corrupt"], counts["dropped_by_kcl"]
    );
    println!(
        "  wire-ready limit (MD5 key + route + encode + MD5 trailer + base64 + SHA-256): \
         {:6.1} ns = {:.2} M records/s",
        limit * 1e9,
        1e-6 / limit
    );
    println!(
        "  {:<12} {:>12} {:>10} {:>13} {:>13} {:>12}",
        "way", "records/s", "x limit", "CPU us/rec", "peak RSS MiB", "over app MiB"
    );
    for (way, run) in medians {
        let rate = records / run.seconds;
        println!(
            "  {way:<12} {:>12.0} {:>10.3} {:>13.3} {:>13.0} {:>12.0}",
            rate,
            rate * limit,
            run.cpu_seconds / records * 1e6,
            run.peak_rss_kib / 1024.0,
            (run.peak_rss_kib - run.application_rss_kib) / 1024.0,
        );
    }
    println!(
        "  targets: kpl-rs >= 0.7 x limit (>= 1.5 M/s), <= 0.7 us CPU per record, \
         <= 128 MiB over the application's data"
    );
    Ok(())
}

/// Cargo's target directory (`CARGO_TARGET_DIR` when set).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}
