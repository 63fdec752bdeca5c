//! `fuzz` and `soak`: cargo-fuzz on the fuzz targets, and the simulation sweep over many seeds.

use std::process::Command;

use crate::util::{Result, cargo, root, run};

pub(crate) const FUZZ_TARGETS: [&str; 3] = ["decode", "roundtrip", "properties"];

pub(crate) fn fuzz(targets: &[&str], secs: u64) -> Result {
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

pub(crate) fn soak(seeds: u64, first: u64, minutes: Option<u64>) -> Result {
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
