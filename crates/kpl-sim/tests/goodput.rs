//! Goodput at the shard limit, in virtual time: at default settings a producer uses at least
//! 90 % of a stream's write capacity with at most 5 % of its entries throttled, whichever way
//! the service enforces the limits (token buckets or fixed one-second windows); `RateLimit`
//! below 100 is a ceiling that is never throttled; two producers sharing a stream reach 85 %
//! together, in fair shares. `cargo xtask goodput` prints the full table (docs/benchmarks.md).
#![allow(clippy::unwrap_used, reason = "tests")]

use kpl_engine::EngineConfig;
use kpl_sim::Enforcement;
use kpl_sim::goodput::{self, GoodputReport, Scenario, Workload};

const MODELS: [Enforcement; 2] = [Enforcement::TokenBucket, Enforcement::FixedWindow];

fn scenario(config: EngineConfig, shards: u32, workload: Workload) -> Scenario {
    Scenario::new(shards, config, workload)
}

fn small_records(records: usize, data_bytes: usize) -> Workload {
    Workload {
        records,
        key_chars: 16,
        data_bytes,
        large: None,
    }
}

fn run(scenario: &Scenario, enforcement: Enforcement) -> GoodputReport {
    let mut scenario = scenario.clone();
    scenario.enforcement = enforcement;
    let report = goodput::run(&scenario).unwrap();
    eprintln!(
        "{enforcement:?}, RateLimit {}: {:.1} % (least shard {:.1} %), {} of {} entries throttled, {} retries, p99 {:?}, {:?}",
        scenario.config.rate_limit,
        100.0 * report.utilization(),
        100.0 * report.least_shard_utilization(),
        report.throttled_entries,
        report.entries_sent,
        report.retries,
        report.p99_latency,
        report.elapsed,
    );
    report
}

/// The targets at default settings: 90 % of capacity on every shard, 5 % of entries throttled
/// at most, nothing lost.
fn assert_near_capacity(report: &GoodputReport, what: &str) {
    assert_eq!(report.failed, 0, "{what}");
    assert!(
        report.least_shard_utilization() >= 0.9,
        "{what}: {:.3}",
        report.least_shard_utilization()
    );
    assert!(
        report.throttled_fraction() <= 0.05,
        "{what}: {:.3} throttled",
        report.throttled_fraction()
    );
}

#[test]
fn bytes_bound_aggregated_records_reach_the_byte_limit() {
    // A million records of a 16-character key and 100 bytes: about 28 s of a 4-shard stream,
    // long enough for the rate to settle.
    let scenario = scenario(EngineConfig::default(), 4, small_records(1_000_000, 100));
    for model in MODELS {
        assert_near_capacity(&run(&scenario, model), &format!("{model:?}"));
    }
}

#[test]
fn records_bound_unaggregated_records_reach_the_record_limit() {
    let mut config = EngineConfig::default();
    config.aggregation_enabled = false;
    let scenario = scenario(config, 4, small_records(100_000, 10));
    for model in MODELS {
        assert_near_capacity(&run(&scenario, model), &format!("{model:?}"));
    }
}

#[test]
fn occasional_records_of_up_to_10_mib_do_not_cost_the_stream_its_capacity() {
    let mut config = EngineConfig::default();
    config.max_user_record_size = 10 * 1024 * 1024;
    let mut scenario = scenario(
        config,
        1,
        Workload {
            records: 60_000,
            key_chars: 16,
            data_bytes: 100,
            large: Some((20_000, 1024 * 1024, 10 * 1024 * 1024)),
        },
    );
    scenario.max_record_size_kib = Some(10 * 1024);
    for model in MODELS {
        assert_near_capacity(&run(&scenario, model), &format!("{model:?}"));
    }
}

#[test]
fn a_rate_limit_under_100_is_a_ceiling_that_is_never_throttled() {
    let mut config = EngineConfig::default();
    config.rate_limit = 60;
    let scenario = scenario(config, 4, small_records(200_000, 100));
    for model in MODELS {
        let report = run(&scenario, model);
        assert_eq!(report.throttled_entries, 0, "{model:?}");
        assert_eq!(report.failed, 0, "{model:?}");
        for shard in &report.shards {
            assert!(
                (0.57..=0.61).contains(&shard.utilization()),
                "{model:?}: {:.3}",
                shard.utilization()
            );
        }
    }
}

#[test]
fn two_producers_sharing_a_stream_reach_its_capacity_in_fair_shares() {
    let mut scenario = scenario(EngineConfig::default(), 4, small_records(500_000, 100));
    scenario.producers = 2;
    for model in MODELS {
        let report = run(&scenario, model);
        assert_eq!(report.failed, 0, "{model:?}");
        assert!(
            report.utilization() >= 0.85,
            "{model:?}: {:.3}",
            report.utilization()
        );
        let rates = &report.producer_records_per_sec;
        let (low, high) = rates.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
        // Fair shares: within a tenth of each other over the run.
        assert!(low >= 0.9 * high, "{model:?}: {rates:?}");
    }
}
