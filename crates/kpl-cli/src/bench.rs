//! `kpl bench`: a generated workload through the producer, with throughput, CPU time, latency
//! percentiles and peak memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kpl::{Record, Stream};
use rand::{RngCore, SeedableRng};

use crate::cli::BenchArgs;
use crate::produce::{OUTCOMES_IN_FLIGHT, Report};
use crate::progress::{Counters, Progress, since};
use crate::target::Target;
use crate::{Failure, Outcome};
use kpl_cli::usage::ProcessUsage;

/// The bytes records' data are cut from (random, so compression or deduplication on the way
/// would not flatter the numbers).
const DATA_POOL: usize = 1 << 20;

/// How long the producer may take to finish at the end.
const DRAIN: Duration = Duration::from_secs(60);

pub(crate) async fn run(args: BenchArgs) -> Result<Outcome, Failure> {
    if args.size > DATA_POOL {
        return Err(Failure::bad_input(format!(
            "--size {}: at most {DATA_POOL} bytes",
            args.size
        )));
    }
    let local = args.stream.is_none();
    let name = args.stream.clone().unwrap_or_else(|| "bench".to_owned());
    let stream = Stream::new(name.as_str())
        .map_err(|error| Failure::bad_input(format!("--stream: {error}")))?;
    let target = Target::open_with(
        local,
        None,
        args.config.as_deref(),
        args.endpoint.as_deref(),
        args.region.as_deref(),
    )
    .await?;
    let producer = target.producer(&name, args.shards).await?;
    let before = ProcessUsage::now();
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(Arc::clone(&counters), Duration::from_secs(5));
    let mut report = Report::new(Arc::clone(&counters));
    let (sender, mut outcomes) = producer.outcome_channel(OUTCOMES_IN_FLIGHT);
    let mut pool = vec![0u8; DATA_POOL];
    rand::rngs::SmallRng::seed_from_u64(7).fill_bytes(&mut pool);
    let pool = Bytes::from(pool);
    let tasks = args.threads.max(1) as u64;
    let mut senders = Vec::new();
    for task in 0..tasks {
        let count = args.records / tasks + u64::from(task < args.records % tasks);
        let (sender, stream, pool, counters) = (
            sender.clone(),
            stream.clone(),
            pool.clone(),
            Arc::clone(&counters),
        );
        let size = args.size;
        senders.push(tokio::spawn(async move {
            let mut keys = rand::rngs::SmallRng::seed_from_u64(task);
            let mut refused = Vec::new();
            for n in 0..count {
                let offset = (n as usize * 7_919) % (DATA_POOL - size + 1);
                let record = Record::new(
                    stream.clone(),
                    format!("{:016x}", keys.next_u64()),
                    pool.slice(offset..offset + size),
                );
                match sender.send_wait(record).await {
                    Ok(_) => {
                        Counters::add(&counters.accepted, 1);
                        Counters::add(&counters.bytes, size as u64);
                    }
                    Err(error) => refused.push(error.to_string()),
                }
            }
            refused
        }));
    }
    drop(sender);
    while let Some(outcome) = outcomes.recv().await {
        report.record_outcome(outcome, None);
    }
    let mut refused = Vec::new();
    for task in senders {
        refused.extend(task.await.unwrap_or_default());
    }
    report.elapsed = since(report.started);
    let after = ProcessUsage::now();
    producer.shutdown(DRAIN).await;
    progress.finish();
    for error in refused.iter().take(3) {
        eprintln!("kpl: a record was refused: {error}");
    }
    for _ in &refused {
        report.failed("Refused", 0);
    }
    let delivered = counters
        .delivered
        .load(std::sync::atomic::Ordering::Relaxed);
    let cpu = after.cpu().saturating_sub(before.cpu());
    crate::say(&format!(
        "workload:   {} records of {} bytes, random keys, {} sending task(s), to {} on {}\n",
        args.records,
        args.size,
        tasks,
        name,
        target.place()
    ));
    if local {
        crate::say(&format!(
            "stream:     {} shards, which take at most {:.0} MB/s and {} Kinesis records (aggregates) a second\n",
            args.shards,
            f64::from(args.shards) * 1.048_576,
            u64::from(args.shards) * 1_000
        ));
    }
    crate::say(&report.summary());
    crate::say(&format!(
        "cpu:        {:.2} s ({:.2} µs per delivered record)\nmemory:     peak {:.1} MiB resident\n",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64,
        after.peak_rss_kib as f64 / 1024.0
    ));
    let mut outcome = report.outcome();
    if let Some((readable, dropped)) = target.kcl_read_back(&name) {
        let whole = readable as u64 == delivered && dropped == 0;
        crate::say(&format!(
            "read back: {readable} user records by the KCL's rules, {dropped} aggregates dropped: {}\n",
            if whole {
                "every delivered record exactly once"
            } else {
                "NOT every delivered record exactly once"
            }
        ));
        if !whole {
            outcome = Outcome::Failed;
        }
    }
    Ok(outcome)
}
