//! The goodput table of `docs/benchmarks.md`: each workload against a simulated stream under
//! both enforcement models and several `RateLimit`s, in virtual time. Run with
//! `cargo xtask goodput` (or `cargo run --release -p kpl-sim --example goodput`).

use kpl_engine::EngineConfig;
use kpl_sim::Enforcement;
use kpl_sim::goodput::{self, Scenario, Workload};

/// The named workloads of the table.
fn workloads() -> Vec<(&'static str, Scenario)> {
    let base = |config: EngineConfig, workload: Workload| Scenario::new(4, config, workload);
    let mut records_config = EngineConfig::default();
    records_config.aggregation_enabled = false;
    let mut mix = base(
        EngineConfig::default(),
        Workload {
            records: 60_000,
            key_chars: 16,
            data_bytes: 100,
            large: Some((20_000, 1024 * 1024, 10 * 1024 * 1024)),
        },
    );
    mix.shards = 1;
    mix.max_record_size_kib = Some(10 * 1024);
    mix.config.max_user_record_size = 10 * 1024 * 1024;
    let mut shared = base(
        EngineConfig::default(),
        Workload {
            records: 500_000,
            key_chars: 16,
            data_bytes: 100,
            large: None,
        },
    );
    shared.producers = 2;
    vec![
        (
            "bytes-bound: 1,000,000 x (16-char key + 100 B), aggregated",
            base(
                EngineConfig::default(),
                Workload {
                    records: 1_000_000,
                    key_chars: 16,
                    data_bytes: 100,
                    large: None,
                },
            ),
        ),
        (
            "records-bound: 100,000 x (16-char key + 10 B), aggregation off",
            base(
                records_config,
                Workload {
                    records: 100_000,
                    key_chars: 16,
                    data_bytes: 10,
                    large: None,
                },
            ),
        ),
        (
            "mix: 60,000 x 116 B, one in 20,000 of 1-10 MiB, a 10 MiB stream of one shard",
            mix,
        ),
        ("shared: two producers, 500,000 x 116 B each", shared),
    ]
}

fn main() {
    println!(
        "| workload | enforcement | RateLimit | utilization | per shard | throttled | retries | p99 latency | time |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let only = std::env::args().nth(1).unwrap_or_default();
    for (name, scenario) in workloads()
        .into_iter()
        .filter(|(name, _)| name.contains(&only))
    {
        for enforcement in [Enforcement::TokenBucket, Enforcement::FixedWindow] {
            for rate_limit in [60, 100, 150] {
                let mut scenario = scenario.clone();
                scenario.enforcement = enforcement;
                scenario.config.rate_limit = rate_limit;
                let report = match goodput::run(&scenario) {
                    Ok(report) => report,
                    Err(error) => {
                        eprintln!("{name}: {error}");
                        continue;
                    }
                };
                let shares = if report.producer_records_per_sec.len() > 1 {
                    let rates: Vec<String> = report
                        .producer_records_per_sec
                        .iter()
                        .map(|r| format!("{r:.0}"))
                        .collect();
                    format!(" (records/s per producer: {})", rates.join(", "))
                } else {
                    String::new()
                };
                println!(
                    "| {name}{shares} | {enforcement:?} | {rate_limit} | {:.1} % | {} | {:.2} % ({} of {}) | {} | {:.2} s | {:.2} s |",
                    100.0 * report.utilization(),
                    report
                        .shards
                        .iter()
                        .map(|shard| format!("{:.0}", 100.0 * shard.utilization()))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    100.0 * report.throttled_fraction(),
                    report.throttled_entries,
                    report.entries_sent,
                    report.retries,
                    report.p99_latency.as_secs_f64(),
                    report.elapsed.as_secs_f64(),
                );
                if report.failed > 0 {
                    println!("|   {} records failed | | | | | | | | |", report.failed);
                }
            }
        }
    }
}
