//! The whole producer (driver task, connections, futures) under seeded random faults and a
//! reshard, on tokio's paused clock: every future resolves once, every delivery is where a
//! KCL consumer reads it, and no record is read twice because of the reshard.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kpl::time::Clock;
use kpl::{Config, KinesisProducer, OrderingMode, Record, Stream, TokioClock};
use kpl_aggregation::HashKey;
use kpl_sim::{Faults, SimKinesis, SimTransport};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

async fn run(seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let shards = rng.random_range(1..=4);
    let mut sim = SimKinesis::new(seed);
    sim.create_stream("s", shards, TokioClock.now());
    sim.set_faults(Faults {
        entry_internal_failure: rng.random_range(0.0..0.1),
        request_unavailable: rng.random_range(0.0..0.1),
        request_timeout: rng.random_range(0.0..0.05),
    });
    let transport = SimTransport::new(sim, TokioClock);
    let mut config = Config::default();
    config.max_connections = rng.random_range(1..=8);
    config.max_outstanding_records = rng.random_range(20..400);
    config.rng_seed = Some(seed);
    if rng.random_bool(0.5) {
        config.ordering = OrderingMode::PerShard;
    }
    let producer = KinesisProducer::builder()
        .config(config)
        .transport(transport.clone())
        .build()
        .unwrap();
    let stream = Stream::new("s").unwrap();
    let total = 300;
    let reshard_at = rng.random_range(0..total);
    let mut futures = Vec::with_capacity(total);
    for n in 0..total {
        if n == reshard_at {
            transport.with_sim(|sim| {
                let open = sim.open_shards("s");
                let (id, range) = open[0].clone();
                let middle = range.start().get() / 2 + range.end().get() / 2;
                sim.split_shard(
                    "s",
                    id.as_str(),
                    HashKey::new(middle.max(range.start().get() + 1)),
                )
                .unwrap();
            });
        }
        let record = Record::new(
            stream.clone(),
            format!("key-{}", rng.random_range(0..30)),
            format!("sweep-{n:05}"),
        );
        futures.push(producer.send_wait(record).await.unwrap());
        if rng.random_bool(0.1) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..50))).await;
        }
    }
    let mut delivered = Vec::new();
    // Each record's attempts, by record number, whatever its outcome.
    let mut attempts = Vec::with_capacity(total);
    for future in futures {
        match future.await {
            Ok(delivery) => {
                attempts.push(delivery.attempts().to_vec());
                delivered.push(delivery);
            }
            Err(error) => attempts.push(error.attempts().to_vec()),
        }
    }
    assert_eq!(producer.outstanding_records(), 0, "seed {seed}");
    let (view, violations) =
        transport.with_sim(|sim| (sim.kcl_view("s"), sim.counters().limit_violations));
    assert_eq!(violations, 0, "seed {seed}");
    let readable: BTreeSet<(String, String)> = view
        .records
        .iter()
        .map(|r| (r.shard_id.to_string(), r.sequence_number.clone()))
        .collect();
    for delivery in &delivered {
        let at = (
            delivery.shard_id().to_string(),
            delivery.sequence_number().to_owned(),
        );
        assert!(
            readable.contains(&at),
            "seed {seed}: a delivery at {at:?} is not readable"
        );
    }
    // A record is read twice only after an attempt whose outcome the producer could not know
    // (a call that timed out, or a landing no map read could judge), never after the reshard.
    let mut copies: BTreeMap<&[u8], usize> = BTreeMap::new();
    for record in &view.records {
        *copies.entry(record.data.as_ref()).or_default() += 1;
    }
    for (n, attempts) in attempts.iter().enumerate() {
        let data = format!("sweep-{n:05}");
        let read = copies.get(data.as_bytes()).copied().unwrap_or(0);
        assert!(
            read < 2
                || attempts
                    .iter()
                    .any(|a| matches!(a.error_code(), Some("RequestTimeout" | "UnjudgedLanding"))),
            "seed {seed}: record {n} is read {read} times, but none of its attempts had an unknown outcome: {attempts:#?}"
        );
    }
    // With a 30 s record TTL and only transient faults, everything gets through.
    assert_eq!(delivered.len(), total, "seed {seed}");
    assert!(
        producer
            .shutdown(Duration::from_secs(1))
            .await
            .unsent
            .is_empty()
    );
}

#[test]
fn the_producer_survives_seeded_faults_and_a_reshard() {
    for seed in 0..200 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(run(seed));
    }
}
