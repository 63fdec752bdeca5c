//! Goodput in real time, over HTTP: `cargo xtask goodput --http`.
//!
//! The producer (default configuration, through `kpl-aws`) sends 16-character random keys and
//! 100 random bytes as fast as back-pressure lets it to a simulated stream of 4 shards that
//! enforces the service's per-shard limits (1 MiB/s of data and partition keys, 1,000 records/s)
//! under each of the simulator's enforcement models, served over HTTP by a child process, in
//! wall-clock time. Capacity is counted in what the service counts: the bytes and the Kinesis
//! records it wrote.
//!
//! - `kpl-goodput-http [RECORDS...]`: the table, for 200,000 and 1,000,000 records by default.
//! - `kpl-goodput-http serve <token-bucket|fixed-window>`: the child: prints its endpoint on one
//!   line, serves until its standard input closes, then prints what it wrote (JSON).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use kpl::{Config, KinesisProducer, Record, Stream, TokioClock};
use kpl_engine::time::{Clock, SystemClock};
use kpl_sim::http::Endpoint;
use kpl_sim::{Enforcement, SimKinesis};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SHARDS: u32 = 4;
const STREAM: &str = "goodput";
const SHARD_BYTES_PER_SEC: f64 = 1_048_576.0;
const SHARD_RECORDS_PER_SEC: f64 = 1_000.0;
/// Width of the buckets deliveries are counted in, for the sustained rate.
const BUCKET: Duration = Duration::from_millis(10);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => match args.get(1).map(String::as_str).and_then(enforcement) {
            Some(enforcement) => serve(enforcement),
            None => Err("serve takes token-bucket or fixed-window".to_owned()),
        },
        _ => {
            let counts: Result<Vec<usize>, _> = args.iter().map(|a| a.parse()).collect();
            match counts {
                Ok(counts) if counts.is_empty() => table(&[200_000, 1_000_000]),
                Ok(counts) => table(&counts),
                Err(e) => Err(format!("record counts are numbers: {e}")),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kpl-goodput-http: {error}");
            ExitCode::FAILURE
        }
    }
}

fn enforcement(name: &str) -> Option<Enforcement> {
    match name {
        "token-bucket" => Some(Enforcement::TokenBucket),
        "fixed-window" => Some(Enforcement::FixedWindow),
        _ => None,
    }
}

/// The child: a stream of [`SHARDS`] shards behind HTTP until standard input closes.
fn serve(enforcement: Enforcement) -> Result<(), String> {
    let mut sim = SimKinesis::new(1);
    sim.create_stream(STREAM, SHARDS, SystemClock.now());
    sim.set_discard_written(true);
    sim.set_enforcement(STREAM, enforcement)
        .map_err(|e| e.to_string())?;
    let endpoint = Endpoint::start(sim).map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", endpoint.endpoint()).map_err(|e| e.to_string())?;
    stdout.flush().map_err(|e| e.to_string())?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let counters = endpoint.with_sim(|sim| sim.counters().clone());
    writeln!(
        stdout,
        "{} {} {}",
        counters.written_bytes, counters.written_entries, counters.throttled_entries
    )
    .map_err(|e| e.to_string())
}

/// What the service wrote and refused in one run.
struct Served {
    written_bytes: u64,
    written_entries: u64,
    throttled_entries: u64,
}

fn table(counts: &[usize]) -> Result<(), String> {
    println!(
        "| enforcement | user records | capacity | wall time | of capacity (whole run) | sustained (10-90 %) | Kinesis records throttled | CPU time |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for name in ["token-bucket", "fixed-window"] {
        for &count in counts {
            let row = run_one(name, count)?;
            println!(
                "| {name} | {count} | {:.2} s | {:.2} s | {:.1} % | {:.1} % | {:.2} % | {:.2} s |",
                row.capacity.as_secs_f64(),
                row.elapsed.as_secs_f64(),
                100.0 * row.capacity.as_secs_f64() / row.elapsed.as_secs_f64(),
                100.0 * row.sustained,
                100.0 * row.throttled,
                row.cpu.as_secs_f64(),
            );
        }
    }
    Ok(())
}

struct Row {
    capacity: Duration,
    elapsed: Duration,
    sustained: f64,
    throttled: f64,
    cpu: Duration,
}

fn run_one(enforcement: &str, count: usize) -> Result<Row, String> {
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["serve", enforcement])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let url = lines
        .next()
        .and_then(Result::ok)
        .ok_or("the endpoint did not start")?;
    let cpu_before = kpl_cli::usage::ProcessUsage::now().cpu();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (elapsed, deliveries) = runtime.block_on(produce(&url, count))?;
    drop(runtime);
    let cpu = kpl_cli::usage::ProcessUsage::now()
        .cpu()
        .saturating_sub(cpu_before);
    drop(child.stdin.take());
    let served = lines
        .next()
        .and_then(Result::ok)
        .and_then(|line| {
            let numbers: Vec<u64> = line.split(' ').filter_map(|n| n.parse().ok()).collect();
            match numbers.as_slice() {
                &[written_bytes, written_entries, throttled_entries] => Some(Served {
                    written_bytes,
                    written_entries,
                    throttled_entries,
                }),
                _ => None,
            }
        })
        .ok_or("the endpoint did not say what it wrote")?;
    let _ = child.wait();
    let shards = f64::from(SHARDS);
    let capacity = Duration::from_secs_f64(
        (served.written_bytes as f64 / (shards * SHARD_BYTES_PER_SEC))
            .max(served.written_entries as f64 / (shards * SHARD_RECORDS_PER_SEC)),
    );
    // Delivered user records per second between a tenth and nine tenths of them, in the
    // service's terms (its bytes and records per user record).
    let sustained = sustained_records_per_sec(&deliveries, count).map_or(0.0, |rate| {
        let bytes = rate * served.written_bytes as f64 / count as f64;
        let records = rate * served.written_entries as f64 / count as f64;
        (bytes / (shards * SHARD_BYTES_PER_SEC)).max(records / (shards * SHARD_RECORDS_PER_SEC))
    });
    let sent = served.written_entries + served.throttled_entries;
    Ok(Row {
        capacity,
        elapsed,
        sustained,
        throttled: served.throttled_entries as f64 / sent.max(1) as f64,
        cpu,
    })
}

/// Sends `count` records and waits for every outcome; returns the time from the producer's
/// build to the last outcome, and the deliveries counted per [`BUCKET`].
async fn produce(url: &str, count: usize) -> Result<(Duration, Vec<u32>), String> {
    let mut config = Config::default();
    let set = |config: &mut Config, key: &str, value: &str| {
        config.set(key, value).map_err(|e| e.to_string())
    };
    set(&mut config, "KinesisEndpoint", url)?;
    set(&mut config, "Region", "us-east-1")?;
    set(&mut config, "AwsAccessKeyId", "AKIDGOODPUT")?;
    set(&mut config, "AwsSecretKey", "secret")?;
    set(&mut config, "MetricsLevel", "none")?;
    let started = SystemClock.now();
    let producer = KinesisProducer::builder()
        .config(config)
        .build()
        .map_err(|e| e.to_string())?;
    let stream = Stream::new(STREAM).map_err(|e| e.to_string())?;
    let (sender, mut outcomes) = producer.outcome_channel(100_000);
    let counting = tokio::spawn(async move {
        let mut buckets: Vec<u32> = Vec::new();
        let mut failed = 0usize;
        while let Some(outcome) = outcomes.recv().await {
            if outcome.outcome.is_err() {
                failed += 1;
                continue;
            }
            let at = TokioClock.now().saturating_duration_since(started);
            let bucket = (at.as_nanos() / BUCKET.as_nanos()) as usize;
            if buckets.len() <= bucket {
                buckets.resize(bucket + 1, 0);
            }
            buckets[bucket] += 1;
        }
        (buckets, failed)
    });
    let mut rng = SmallRng::seed_from_u64(11);
    for _ in 0..count {
        let key: String = (0..16)
            .map(|_| char::from(rng.random_range(b'a'..=b'z')))
            .collect();
        let mut data = vec![0u8; 100];
        rng.fill(&mut data[..]);
        sender
            .send_wait(Record::new(stream.clone(), key, data))
            .await
            .map_err(|e| e.to_string())?;
    }
    drop(sender);
    producer.flush();
    let (buckets, failed) = counting.await.map_err(|e| e.to_string())?;
    let elapsed = SystemClock.now().saturating_duration_since(started);
    producer.shutdown(Duration::from_secs(1)).await;
    if failed > 0 {
        return Err(format!("{failed} records failed"));
    }
    Ok((elapsed, buckets))
}

/// User records delivered per second between the deliveries that brought the count to a tenth
/// and to nine tenths of `count`.
fn sustained_records_per_sec(buckets: &[u32], count: usize) -> Option<f64> {
    let (low, high) = (count as u64 / 10, count as u64 - count as u64 / 10);
    let mut sum = 0u64;
    let (mut from, mut to) = (None, None);
    for (index, &delivered) in buckets.iter().enumerate() {
        sum += u64::from(delivered);
        if from.is_none() && sum >= low {
            from = Some((index, sum));
        }
        if to.is_none() && sum >= high {
            to = Some((index, sum));
        }
    }
    let ((start, at_start), (end, at_end)) = (from?, to?);
    (end > start)
        .then(|| (at_end - at_start) as f64 / (BUCKET * (end - start) as u32).as_secs_f64())
}
