//! Produces records through the engine to the simulated Kinesis, in virtual time, with a shard
//! split half-way and some injected faults; then reads every shard back as a KCL consumer would
//! and checks that every record is there exactly where its outcome says.
//!
//! ```sh
//! cargo run --release -p kpl-sim --example simulate            # 100,000 records, 4 shards
//! cargo run --release -p kpl-sim --example simulate -- 500000 8 --ordered
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Duration;

use kpl_aggregation::HashKey;
use kpl_engine::time::{Clock, SystemClock};
use kpl_engine::{EngineConfig, OrderingMode, Record, Stream};
use kpl_sim::{Faults, Outcome, Pair, SimKinesis};

fn main() -> Result<(), Box<dyn Error>> {
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let total = numbers.next().unwrap_or(100_000);
    let shards = u32::try_from(numbers.next().unwrap_or(4))?.max(1);
    let ordered = std::env::args().any(|a| a == "--ordered");

    let start = SystemClock.now();
    let mut sim = SimKinesis::new(7);
    sim.create_stream("demo", shards, start);
    sim.set_faults(Faults {
        entry_internal_failure: 0.01,
        request_unavailable: 0.01,
        request_timeout: 0.0,
    });
    let mut config = EngineConfig::default();
    if ordered {
        config.ordering = OrderingMode::PerShard;
    }
    let mut pair = Pair::new(config, sim, start)?;
    let stream = Stream::new("demo")?;

    // Offer records at 20,000 per second of virtual time, the whole stream's worth and more.
    let pace = Duration::from_micros(50);
    for n in 0..total {
        if n == total / 2 {
            // Split the first open shard behind the producer's back.
            if let Some((id, range)) = pair.sim.open_shards("demo").first().cloned() {
                let middle = range.start().get() / 2 + range.end().get() / 2;
                pair.sim
                    .split_shard("demo", id.as_str(), HashKey::new(middle))?;
            }
        }
        let record = Record::new(
            stream.clone(),
            format!("user-{}", n % 5_000),
            format!("event {n}"),
        );
        while let Err(rejected) = pair.submit(record.clone()) {
            // Back-pressure: let virtual time pass until there is room.
            if !rejected.reason().is_back_pressure() {
                return Err(rejected.into());
            }
            let next = pair.next_time().unwrap_or(pair.now + pace);
            pair.advance_to(next);
        }
        let next = pair.now + pace;
        pair.advance_to(next);
    }
    pair.run_until_idle();
    let elapsed = pair.now - start;

    let view = pair.sim.kcl_view("demo");
    let mut readable: BTreeMap<(String, String), u64> = BTreeMap::new();
    for consumed in &view.records {
        *readable
            .entry((
                consumed.shard_id.to_string(),
                consumed.sequence_number.clone(),
            ))
            .or_default() += 1;
    }
    let mut delivered = 0u64;
    let mut failed = 0u64;
    let mut retried = 0u64;
    let mut mismatched = 0u64;
    for outcome in pair.outcomes().values() {
        match outcome {
            Outcome::Delivered(delivery) => {
                delivered += 1;
                retried += u64::from(delivery.attempts().len() > 1);
                let key = (
                    delivery.shard_id().to_string(),
                    delivery.sequence_number().to_owned(),
                );
                if !readable.contains_key(&key) {
                    mismatched += 1;
                }
            }
            Outcome::Failed(_) => failed += 1,
        }
    }
    let counters = pair.sim.counters();
    println!("records offered:            {total}");
    println!("delivered:                  {delivered} ({retried} after a retry)");
    println!("failed:                     {failed}");
    println!("virtual time:               {:.2} s", elapsed.as_secs_f64());
    println!(
        "PutRecords calls:           {}",
        counters.put_records_requests
    );
    println!("Kinesis records written:    {}", counters.written_entries);
    println!(
        "user records per Kinesis record: {:.1}",
        view.records.len() as f64 / counters.written_entries.max(1) as f64
    );
    println!("entries throttled:          {}", counters.throttled_entries);
    println!(
        "aggregates a KCL consumer drops (re-sent copies): {}",
        view.dropped.len()
    );
    println!("KCL-readable user records:  {}", view.records.len());
    println!("deliveries not found where their outcome says: {mismatched}");
    println!(
        "requests over a service limit: {}",
        counters.limit_violations
    );
    if mismatched > 0 || delivered + failed != total || counters.limit_violations > 0 {
        return Err("verification failed".into());
    }
    println!("verified: every outcome matches what a KCL consumer reads");
    Ok(())
}
