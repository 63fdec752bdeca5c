//! The producer's promises over real HTTP, through the AWS transport, against a loopback endpoint
//! that injects faults (`kpl_sim::http::Endpoint`): every record gets exactly one outcome; every delivery
//! is stored on a shard that owns its hash key, in an aggregate a KCL consumer keeps; a record is
//! stored twice only after an attempt whose outcome was unknown; the request rate stays bounded
//! while shards throttle, and throughput comes back after.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "end-to-end tests over loopback HTTP"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use kpl::time::{Clock, SystemClock};
use kpl::{
    Attempt, Config, DeliveryErrorKind, FailureReason, KinesisProducer, Record, Stream, TokioClock,
};
use kpl_aggregation::HashKey;
use kpl_sim::SimKinesis;
use kpl_sim::http::{Endpoint, Fault, RandomFaults};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn producer(endpoint: &str, configure: impl FnOnce(&mut Config)) -> KinesisProducer {
    let mut config = Config::default();
    config.set("KinesisEndpoint", endpoint).unwrap();
    config.set("Region", "us-east-1").unwrap();
    config.set("AwsAccessKeyId", "AKIDLOCALTEST").unwrap();
    config.set("AwsSecretKey", "local-secret").unwrap();
    config.set("RequestTimeout", "1000").unwrap();
    config.set("RecordTtl", "120000").unwrap();
    // The metrics go to the same endpoint, which refuses them: the records never notice.
    config.set("CloudwatchEndpoint", endpoint).unwrap();
    config.set("MetricsUploadDelay", "1000").unwrap();
    config.rng_seed = Some(7);
    configure(&mut config);
    KinesisProducer::builder().config(config).build().unwrap()
}

fn endpoint_with_stream(shards: u32, seed: u64) -> Endpoint {
    let mut sim = SimKinesis::new(seed);
    sim.create_stream("s", shards, SystemClock.now());
    Endpoint::start(sim).unwrap()
}

fn data(n: usize) -> Vec<u8> {
    format!("http-{n:06}|payload").into_bytes()
}

fn number(data: &[u8]) -> usize {
    std::str::from_utf8(&data[5..11]).unwrap().parse().unwrap()
}

/// Attempt codes after which the call may have taken effect though its answer did not say so.
const UNKNOWN_OUTCOME: [&str; 7] = [
    "RequestTimeout",
    "ConnectionError",
    "MalformedResponse",
    "InternalFailure",
    "ServiceUnavailable",
    "RecordCountMismatch",
    "UnjudgedLanding",
];

/// What one run under faults went through.
#[derive(Default)]
struct Run {
    records: usize,
    failed: usize,
    faults: BTreeMap<String, u64>,
    duplicates: BTreeMap<&'static str, usize>,
}

/// One run: 2,000 records to a new 4-shard stream `name` of `endpoint`, under seeded faults and
/// a reshard; checks every promise and says what happened.
async fn run_under_faults(endpoint: &Endpoint, name: &str, seed: u64) -> Run {
    endpoint.with_sim(|sim| sim.create_stream(name, 4, SystemClock.now()));
    let faults_before = endpoint.injected();
    endpoint.set_random(RandomFaults {
        seed,
        probability: 0.3,
        delay: Duration::from_millis(1_500),
    });
    let producer = producer(&endpoint.endpoint(), |config| {
        config.aggregation_max_count = 10;
        config.collection_max_count = 4;
    });
    let stream = Stream::new(name).unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let total = 2_000;
    let mut futures = Vec::with_capacity(total);
    for n in 0..total {
        if n == 300 {
            // Every kind at least once, whatever the seed draws.
            endpoint.script([
                Fault::Reset,
                Fault::WrongCount,
                Fault::Silent { applied: true },
                Fault::Delay {
                    by: Duration::from_millis(1_500),
                    applied: true,
                },
                Fault::Status {
                    status: 500,
                    code: "InternalFailure",
                    applied: true,
                },
                Fault::Malformed { applied: true },
                Fault::EntryErrors {
                    code: "KMSThrottlingException",
                    every: 2,
                },
            ]);
        }
        if n == total / 2 {
            // A split and a merge between calls, behind the producer's back.
            endpoint.with_sim(|sim| {
                let open = sim.open_shards(name);
                let (first, range) = open[0].clone();
                let middle = range.start().get() / 2 + range.end().get() / 2;
                sim.split_shard(name, first.as_str(), HashKey::new(middle))
                    .unwrap();
                sim.merge_shards(name, open[2].0.as_str(), open[3].0.as_str())
                    .unwrap();
            });
        }
        let key: String = (0..12)
            .map(|_| char::from(rng.random_range(b'a'..=b'z')))
            .collect();
        let mut record = Record::new(stream.clone(), key, data(n));
        if rng.random_bool(0.1) {
            record = record.with_explicit_hash_key(rng.random::<u128>().to_string());
        }
        futures.push(producer.send_wait(record).await.unwrap());
    }
    let mut outcomes: Vec<(bool, Vec<Attempt>)> = Vec::with_capacity(total);
    let mut delivered_at = BTreeMap::new();
    for (n, future) in futures.into_iter().enumerate() {
        match future.await {
            Ok(delivery) => {
                delivered_at.insert(
                    n,
                    (
                        delivery.shard_id().to_string(),
                        delivery.sequence_number().to_owned(),
                    ),
                );
                outcomes.push((true, delivery.attempts().to_vec()));
            }
            Err(error) => {
                // With a two-minute TTL and transient faults, only an answer that lost the
                // count of its entries fails records.
                assert_eq!(
                    error.kind(),
                    DeliveryErrorKind::Failed(FailureReason::RecordCountMismatch),
                    "{error}"
                );
                outcomes.push((false, error.attempts().to_vec()));
            }
        }
    }
    endpoint.clear_random();
    assert_eq!(outcomes.len(), total, "one outcome per record");
    assert_eq!(producer.outstanding_records(), 0);
    let report = producer.shutdown(Duration::from_secs(5)).await;
    assert!(report.unsent.is_empty() && report.in_flight.is_empty());

    let mut injected = endpoint.injected();
    for (kind, count) in &faults_before {
        if let Some(now) = injected.get_mut(kind) {
            *now -= count;
        }
    }
    injected.retain(|_, count| *count > 0);
    let injected_total: u64 = injected.values().sum();
    assert!(injected_total >= 15, "too few faults: {injected:?}");
    assert!(injected.len() >= 7, "too few kinds of fault: {injected:?}");

    let (view, violations) =
        endpoint.with_sim(|sim| (sim.kcl_view(name), sim.counters().limit_violations));
    assert_eq!(violations, 0, "a request broke a service limit");
    let mut copies: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
    for consumed in &view.records {
        copies.entry(number(&consumed.data)).or_default().push((
            consumed.shard_id.to_string(),
            consumed.sequence_number.clone(),
        ));
    }
    let mut duplicates: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut failed = 0;
    for (n, (ok, attempts)) in outcomes.iter().enumerate() {
        let read = copies.get(&n).map(Vec::as_slice).unwrap_or_default();
        if *ok {
            // Stored where the delivery says, in a copy a KCL consumer keeps.
            assert!(
                read.contains(&delivered_at[&n]),
                "record {n} delivered at {:?} is not read there: {read:?}",
                delivered_at[&n]
            );
        } else {
            failed += 1;
        }
        if read.len() > 1 {
            let cause = attempts
                .iter()
                .filter_map(Attempt::error_code)
                .find_map(|code| UNKNOWN_OUTCOME.iter().find(|known| **known == code));
            let Some(cause) = cause else {
                panic!(
                    "record {n} is read {} times with no attempt of unknown outcome: {attempts:#?}",
                    read.len()
                );
            };
            *duplicates.entry(*cause).or_default() += 1;
        }
    }
    Run {
        records: total,
        failed,
        faults: injected,
        duplicates,
    }
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One run in CI; with `KPL_HTTP_SOAK_SECS` (`cargo xtask soak --minutes N`), runs with new seeds
/// until that many seconds have passed, and reports the totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_promise_holds_under_seeded_http_faults_and_a_reshard() {
    let soak = std::env::var("KPL_HTTP_SOAK_SECS")
        .ok()
        .and_then(|secs| secs.parse::<u64>().ok())
        .map(Duration::from_secs);
    let endpoint = Endpoint::start(SimKinesis::new(11)).unwrap();
    let started = SystemClock.now();
    let rss_at_start = rss_kib();
    let mut total = Run::default();
    let mut runs = 0u64;
    loop {
        let run = run_under_faults(&endpoint, &format!("s{runs}"), 2026 + runs).await;
        runs += 1;
        total.records += run.records;
        total.failed += run.failed;
        for (kind, count) in run.faults {
            *total.faults.entry(kind).or_default() += count;
        }
        for (cause, count) in run.duplicates {
            *total.duplicates.entry(cause).or_default() += count;
        }
        if soak.is_none_or(|secs| SystemClock.now().duration_since(started) >= secs) {
            break;
        }
    }
    let faults: u64 = total.faults.values().sum();
    eprintln!(
        "over HTTP: {runs} runs, {} records, {faults} faults injected {:?}; outcomes: {} delivered, \
         {} failed; lost 0; read twice, by cause: {:?}; RSS {} KiB at start, {} KiB at end",
        total.records,
        total.faults,
        total.records - total.failed,
        total.failed,
        total.duplicates,
        rss_at_start.unwrap_or_default(),
        rss_kib().unwrap_or_default(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_is_ridden_out_without_a_retry_storm() {
    let endpoint = endpoint_with_stream(2, 12);
    let producer = producer(&endpoint.endpoint(), |_| {});
    let stream = Stream::new("s").unwrap();
    let send = |from: usize, count: usize| {
        let producer = producer.clone();
        let stream = stream.clone();
        async move {
            let mut futures = Vec::new();
            for n in from..from + count {
                let record = Record::new(stream.clone(), format!("k{n}"), data(n));
                futures.push(producer.send_wait(record).await.unwrap());
            }
            for future in futures {
                future.await.unwrap();
            }
        }
    };
    // Warm up: the map is read and a first batch written.
    let started = std::time::Instant::now();
    send(0, 200).await;
    eprintln!("warm-up took {:?}", started.elapsed());
    let (_, puts_before) = endpoint.calls();
    // Six calls in a row throttle every entry.
    endpoint.script(std::iter::repeat_n(
        Fault::EntryErrors {
            code: "ProvisionedThroughputExceededException",
            every: 1,
        },
        6,
    ));
    send(200, 400).await;
    let (_, puts_after) = endpoint.calls();
    let puts = puts_after - puts_before;
    eprintln!("{puts} PutRecords calls after the storm began");
    // Every record got through after the storm; the storm cost retries, not a flood of calls:
    // backoff keeps the calls near the storm's six plus what the records need.
    assert!(puts >= 6, "{puts}");
    assert!(
        puts < 60,
        "{puts} PutRecords calls for 400 records and a 6-call storm"
    );
    let stats = producer.stats();
    let throttled: u64 = stats
        .iter()
        .flat_map(|(_, s)| s.shards.values())
        .map(|shard| shard.throttled)
        .sum();
    assert!(throttled > 0);
    assert_eq!(producer.outstanding_records(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_listing_and_odd_answers_end_in_outcomes_not_hangs() {
    let endpoint = endpoint_with_stream(1, 13);
    // The first map read pages for ever, then answers are malformed or cut.
    endpoint.script([
        Fault::EndlessToken,
        Fault::EndlessToken,
        Fault::EndlessToken,
    ]);
    let producer = producer(&endpoint.endpoint(), |_| {});
    let stream = Stream::new("s").unwrap();
    let first = producer
        .send(Record::new(stream.clone(), "k", data(0)))
        .unwrap();
    assert!(
        first.await.is_ok(),
        "the record went once the listing was refused"
    );
    endpoint.script([
        Fault::Malformed { applied: false },
        Fault::Reset,
        Fault::WrongCount,
    ]);
    let futures: Vec<_> = (1..4)
        .map(|n| {
            producer
                .send(Record::new(stream.clone(), format!("k{n}"), data(n)))
                .unwrap()
        })
        .collect();
    producer.flush();
    let mut outcomes = 0;
    for future in futures {
        let _ = future.await;
        outcomes += 1;
    }
    assert_eq!(outcomes, 3);
    assert_eq!(producer.outstanding_records(), 0);
}

/// An answer larger than any real one is not read whole: the call fails as unreadable, and
/// its record goes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_larger_than_any_real_one_is_refused_unread_and_the_record_goes_again() {
    let endpoint = endpoint_with_stream(1, 17);
    let producer = producer(&endpoint.endpoint(), |_| {});
    let stream = Stream::new("s").unwrap();
    producer
        .send(Record::new(stream.clone(), "warm", data(0)))
        .unwrap()
        .await
        .unwrap();
    endpoint.script([Fault::Oversized {
        bytes: 3 * kpl::aws::MAX_ANSWER_BYTES / 2,
    }]);
    let delivery = producer
        .send(Record::new(stream.clone(), "k", data(1)))
        .unwrap()
        .await
        .unwrap();
    let attempts = delivery.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let refused = &attempts[0];
    assert_ne!(refused.error_code(), Some("InternalFailure"), "{refused:?}");
    assert!(
        refused
            .error_message()
            .is_some_and(|message| message.contains("longer than")),
        "{refused:?}"
    );
    assert_eq!(producer.outstanding_records(), 0);
}

/// Resident memory at its peak so far, in KiB (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// With the endpoint stalled (it accepts calls and never answers), an application sends flat
/// out until the producer refuses; then the endpoint recovers and everything drains. In CI with
/// 20,000 records and small limits; `cargo xtask memory` runs it with the default limits
/// (`KPL_MEMORY_RUN=1`) and prints the memory it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_endpoint_fills_the_limits_then_everything_drains() {
    let full_run = std::env::var_os("KPL_MEMORY_RUN").is_some();
    let endpoint = endpoint_with_stream(4, 14);
    endpoint.set_stalled(true);
    let mut limits = (0, 0);
    let producer = producer(&endpoint.endpoint(), |config| {
        config.set("RequestTimeout", "2000").unwrap();
        config.set("RecordTtl", "600000").unwrap();
        if !full_run {
            config.max_outstanding_records = 20_000;
        }
        limits = (config.max_outstanding_records, config.max_outstanding_bytes);
    });
    let stream = Stream::new("s").unwrap();
    let rss_before = rss_kib().unwrap_or_default();
    let mut futures = Vec::new();
    let mut payload = 0u64;
    let mut rng = SmallRng::seed_from_u64(3);
    loop {
        let key: String = (0..16)
            .map(|_| char::from(rng.random_range(b'a'..=b'z')))
            .collect();
        let mut data = vec![0u8; 100];
        rng.fill(&mut data[..]);
        let size = (key.len() + data.len()) as u64;
        match producer.send(Record::new(stream.clone(), key, data)) {
            Ok(future) => {
                payload += size;
                futures.push(future);
            }
            Err(error) => {
                assert_eq!(error.kind(), kpl::SendErrorKind::BufferFull, "{error}");
                break;
            }
        }
    }
    let accepted = futures.len();
    let peak_full = peak_rss_kib().unwrap_or_default();
    // Nothing was answered: every record is still outstanding.
    assert_eq!(producer.outstanding_records(), accepted);
    endpoint.set_stalled(false);
    for future in futures {
        future.await.unwrap();
    }
    assert_eq!(producer.outstanding_records(), 0);
    let rss_drained = rss_kib().unwrap_or_default();
    eprintln!(
        "stalled endpoint, limits {limits:?}: {accepted} records accepted ({payload} bytes of \
         keys and data) before the producer refused; RSS {rss_before} KiB before, peak {peak_full} \
         KiB, {rss_drained} KiB after the endpoint recovered and every record was delivered"
    );
}

/// One shard fails every entry (it is down) while the application keeps sending, with a
/// `RecordTtl` long enough that nothing expires: the shard's records pile up to the byte limit
/// and stay, the producer refuses what does not fit, and memory stays flat; once the shard
/// comes back, everything drains. In CI for three seconds with a 4 MiB limit; `cargo xtask
/// memory` runs it for ten minutes at the default limits (`KPL_MEMORY_MINUTES`) and prints
/// resident memory every thirty seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_shard_holds_its_records_and_memory_stays_flat() {
    let minutes: Option<u64> = std::env::var("KPL_MEMORY_MINUTES")
        .ok()
        .map(|m| m.parse().unwrap());
    let endpoint = endpoint_with_stream(4, 15);
    let stuck = endpoint.with_sim(|sim| {
        sim.set_discard_written(true);
        let shard = sim.open_shards("s")[0].0.clone();
        sim.set_shard_failing("s", shard.as_str(), Some("InternalFailure"))
            .unwrap();
        shard
    });
    let mut limit = 0;
    let producer = producer(&endpoint.endpoint(), |config| {
        config.set("RecordTtl", "86400000").unwrap();
        config.set("RequestTimeout", "6000").unwrap();
        if minutes.is_none() {
            config.max_outstanding_bytes = 4 * 1024 * 1024;
        }
        limit = config.max_outstanding_bytes as usize;
    });
    let (run_for, per_tick, sample_every) = match minutes {
        // 4,000 records/s, in ticks of 10 ms: the limit is reached within the first minute.
        Some(minutes) => (
            Duration::from_secs(minutes * 60),
            40,
            Duration::from_secs(30),
        ),
        None => (Duration::from_secs(3), 200, Duration::from_millis(500)),
    };
    let stream = Stream::new("s").unwrap();
    let mut rng = SmallRng::seed_from_u64(5);
    let (mut accepted, mut refused) = (0usize, 0usize);
    let mut samples: Vec<(Duration, u64, usize)> = Vec::new();
    let mut full_at = None;
    let start = TokioClock.now();
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let mut next_sample = Duration::ZERO;
    while TokioClock.now().saturating_duration_since(start) < run_for {
        ticks.tick().await;
        for _ in 0..per_tick {
            let key: String = (0..16)
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect();
            let mut data = vec![0u8; 100];
            rng.fill(&mut data[..]);
            // Outcomes are counted in the producer's statistics; the futures are not kept, so
            // that the application's own memory does not grow with the run.
            match producer.send(Record::new(stream.clone(), key, data)) {
                Ok(_) => accepted += 1,
                Err(error) => {
                    assert_eq!(error.kind(), kpl::SendErrorKind::BufferFull, "{error}");
                    refused += 1;
                    full_at
                        .get_or_insert_with(|| TokioClock.now().saturating_duration_since(start));
                }
            }
        }
        if TokioClock.now().saturating_duration_since(start) >= next_sample {
            let sample = (
                TokioClock.now().saturating_duration_since(start),
                rss_kib().unwrap_or_default(),
                producer.outstanding_bytes(),
            );
            if minutes.is_some() {
                eprintln!(
                    "{:>5.0} s: RSS {} KiB, {} bytes charged, {accepted} accepted, {refused} refused",
                    sample.0.as_secs_f64(),
                    sample.1,
                    sample.2
                );
            }
            samples.push(sample);
            next_sample += sample_every;
        }
    }
    let put = |producer: &KinesisProducer| -> u64 {
        producer
            .stats()
            .iter()
            .map(|(_, stats)| stats.user_records_put)
            .sum()
    };
    let delivered = put(&producer);
    let full_at = full_at.expect("the stuck shard's records filled the byte limit");
    assert!(producer.outstanding_bytes() <= limit);
    assert!(delivered > 0, "the other shards kept delivering");
    assert_eq!(
        producer.outstanding_records() + delivered as usize,
        accepted,
        "nothing failed or expired"
    );
    // From the moment the limit was reached, memory is flat: no sample exceeds the first one
    // taken after it by more than a tenth (plus 8 MiB of allocator noise).
    let after_full: Vec<u64> = samples
        .iter()
        .filter(|(at, _, _)| *at > full_at)
        .map(|&(_, rss, _)| rss)
        .collect();
    if let (Some(&first), Some(&most)) = (after_full.first(), after_full.iter().max()) {
        assert!(
            most <= first + first / 10 + 8 * 1024,
            "RSS grew from {first} KiB to {most} KiB at the limit"
        );
    }
    // The long run: resident memory within 5 % from minute 2 to the end.
    if minutes.is_some_and(|minutes| minutes > 2) {
        let settled: Vec<u64> = samples
            .iter()
            .filter(|(at, _, _)| *at >= Duration::from_secs(120))
            .map(|&(_, rss, _)| rss)
            .collect();
        if let (Some(&least), Some(&most)) = (settled.iter().min(), settled.iter().max()) {
            assert!(
                most <= least + least / 20,
                "RSS from minute 2 on ranged from {least} KiB to {most} KiB"
            );
        }
    }
    endpoint.with_sim(|sim| sim.set_shard_failing("s", stuck.as_str(), None).unwrap());
    producer.flush_and_wait().await;
    assert_eq!(producer.outstanding_records(), 0);
    assert_eq!(put(&producer), accepted as u64);
    eprintln!(
        "stuck shard for {:.0} s, limit {limit}: {accepted} records accepted, {refused} refused, \
         limit reached after {:.1} s; RSS first {} KiB, at the limit {:?} KiB, last {} KiB, peak \
         {} KiB; after the shard recovered every record was delivered",
        run_for.as_secs_f64(),
        full_at.as_secs_f64(),
        samples.first().map_or(0, |s| s.1),
        after_full.first(),
        samples.last().map_or(0, |s| s.1),
        peak_rss_kib().unwrap_or_default(),
    );
}
