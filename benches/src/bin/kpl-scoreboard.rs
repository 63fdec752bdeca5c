//! The processes of `cargo xtask bench`'s end-to-end scoreboard (see `kpl_benches::scoreboard`).
//!
//! - `kpl-scoreboard stub [LATENCY_MS]`: starts a verifying Kinesis stub for a 4-shard stream
//!   (answering each call `LATENCY_MS` after it arrives, 0 by default), prints its endpoint on
//!   one line, and when its standard input closes prints what it received (JSON).
//! - `kpl-scoreboard produce <send_wait|send_all|sdk_batches> <endpoint> <records>`: pushes the
//!   standard workload and prints a JSON report of the run.
//! - `kpl-scoreboard limit <records>`: times the wire-ready limit loop and prints it (JSON).

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use kpl_benches::scoreboard::{self, Way};
use kpl_engine::time::{Clock, SystemClock};
use kpl_sim::http::VerifyingEndpoint;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["stub"] => stub(0),
        ["stub", latency_ms] => match latency_ms.parse() {
            Ok(latency_ms) => stub(latency_ms),
            Err(e) => Err(format!("bad latency {latency_ms:?}: {e}")),
        },
        ["produce", way, endpoint, records] => match (Way::from_name(way), records.parse()) {
            (Some(way), Ok(count)) => {
                let report = scoreboard::run(way, (*endpoint).to_owned(), count);
                println!("{}", report.to_json());
                Ok(())
            }
            _ => Err(format!("bad way {way:?} or record count {records:?}")),
        },
        ["limit", records] => match records.parse() {
            Ok(count) => {
                limit(count);
                Ok(())
            }
            Err(e) => Err(format!("bad record count {records:?}: {e}")),
        },
        _ => Err(
            "usage: kpl-scoreboard stub [latency_ms] | produce <way> <endpoint> <records> | limit <records>"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kpl-scoreboard: {message}");
            ExitCode::FAILURE
        }
    }
}

fn stub(latency_ms: u64) -> Result<(), String> {
    let stub = VerifyingEndpoint::start_with_latency(
        kpl_benches::even_ranges(4),
        Duration::from_millis(latency_ms),
    )
    .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", stub.endpoint()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    // Runs until the parent closes standard input.
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    writeln!(out, "{}", stub.counts().to_json()).map_err(|e| e.to_string())
}

fn limit(count: usize) {
    let records = kpl_benches::user_records(count, 7);
    let ranges = kpl_benches::even_ranges(4);
    // The best of three, as the loop's work never changes.
    let best = (0..3)
        .map(|_| {
            let started = SystemClock.now();
            std::hint::black_box(scoreboard::wire_ready_limit(&records, &ranges));
            started.elapsed()
        })
        .min()
        .unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({ "records": count, "seconds": best.as_secs_f64() })
    );
}
