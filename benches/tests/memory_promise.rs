//! The memory promise of `docs/guarantees.md`: the producer's peak live heap stays within
//! 1.1 × `MaxOutstandingBytes`, plus at most 32 MiB fixed, plus one aggregate's room per open
//! shard, whatever the record size and however the endpoint misbehaves.
//!
//! Each scenario runs the producer (through `kpl-aws`, over HTTP) against a simulated stream of
//! 4 shards served by a child process, so that only the producer's memory is counted: this
//! test's process counts every byte it allocates (a wrapper of the system allocator). In
//! `cargo xtask ci`: small versions. `cargo xtask memory` runs the full table in release
//! (`KPL_MEMORY_FULL=1`) and prints it.
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "a measurement")]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kpl::time::{Clock, SystemClock};
use kpl::{Config, KinesisProducer, Record, SendErrorKind, Stream};
use kpl_sim::SimKinesis;
use kpl_sim::http::Endpoint;
use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// Set in the child process: what its endpoint does.
const ENDPOINT_MODE: &str = "KPL_MEMORY_ENDPOINT_MODE";
/// Set by `cargo xtask memory`: the full table.
const FULL: &str = "KPL_MEMORY_FULL";
const SHARDS: u32 = 4;
const MIB: usize = 1024 * 1024;
/// The fixed part the promise allows: the runtime, the AWS client, the connections, buffers
/// sized by the configuration rather than by the records.
const FIXED: usize = 32 * MIB;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Endpointing {
    /// Takes every call and never answers.
    Stalled,
    /// Fails every entry, each with a different 64 KiB message.
    LongMessages,
}

impl Endpointing {
    fn name(self) -> &'static str {
        match self {
            Self::Stalled => "stalled",
            Self::LongMessages => "long-messages",
        }
    }
}

struct Scenario {
    name: &'static str,
    endpoint: Endpointing,
    /// Bytes of data per record (the key is 16 more).
    data: usize,
    /// How long to go on after the producer first refuses a record (calls time out and go
    /// again meanwhile); records keep being offered to it.
    after_full: Duration,
    configure: fn(&mut Config),
}

fn scenarios(full: bool) -> Vec<Scenario> {
    let seconds = |quick: u64, long: u64| Duration::from_secs(if full { long } else { quick });
    let mut list = vec![
        Scenario {
            name: "100 B records, stalled endpoint",
            endpoint: Endpointing::Stalled,
            data: 100,
            after_full: seconds(1, 5),
            configure: |_| {},
        },
        Scenario {
            name: "1 MiB records, stalled endpoint",
            endpoint: Endpointing::Stalled,
            data: MIB - 16,
            after_full: seconds(1, 5),
            configure: |_| {},
        },
        Scenario {
            name: "100 B records, every entry failed with a 64 KiB message, aggregation off",
            endpoint: Endpointing::LongMessages,
            data: 100,
            after_full: seconds(3, 30),
            configure: |config| config.aggregation_enabled = false,
        },
        Scenario {
            name: "the same, 10 entries per call (answers of 640 KiB, read)",
            endpoint: Endpointing::LongMessages,
            data: 100,
            after_full: seconds(3, 30),
            configure: |config| {
                config.aggregation_enabled = false;
                config.collection_max_count = 10;
            },
        },
        Scenario {
            name: "100 B records, retry waves (stalled, RequestTimeout 1 s)",
            endpoint: Endpointing::Stalled,
            data: 100,
            after_full: seconds(3, 60),
            configure: |config| config.request_timeout = Duration::from_secs(1),
        },
    ];
    if full {
        list.insert(
            1,
            Scenario {
                name: "10 KiB records, stalled endpoint",
                endpoint: Endpointing::Stalled,
                data: 10 * 1024,
                after_full: seconds(1, 5),
                configure: |_| {},
            },
        );
        list.insert(
            3,
            Scenario {
                name: "10 MiB records, stalled endpoint, MaxOutstandingBytes 256 MiB",
                endpoint: Endpointing::Stalled,
                data: 10 * MIB - 16,
                after_full: seconds(1, 5),
                configure: |config| {
                    config.max_user_record_size = 10 * MIB as u64;
                    config.max_outstanding_bytes = 256 * MIB as u64;
                },
            },
        );
    }
    list
}

#[test]
fn the_live_heap_stays_within_the_limit_and_a_fixed_part() {
    if let Ok(mode) = std::env::var(ENDPOINT_MODE) {
        serve(&mode);
        return;
    }
    let full = std::env::var_os(FULL).is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| scenario | records accepted | MaxOutstandingBytes | peak live heap | bound | peak / limit |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut over = Vec::new();
    for scenario in scenarios(full) {
        let mut child = EndpointProcess::start(scenario.endpoint);
        let row = runtime.block_on(run(&scenario, &child.url));
        child.stop();
        println!(
            "| {} | {} | {} MiB | {:.1} MiB | {:.1} MiB | {:.2} |",
            scenario.name,
            row.accepted,
            row.limit / MIB,
            mib(row.peak),
            mib(row.bound),
            row.peak as f64 / row.limit as f64
        );
        if row.peak > row.bound {
            over.push(scenario.name);
        }
    }
    assert!(over.is_empty(), "over the promise: {over:?}");
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

struct Row {
    accepted: usize,
    limit: usize,
    peak: usize,
    bound: usize,
}

async fn run(scenario: &Scenario, url: &str) -> Row {
    let mut config = Config::default();
    config.set("KinesisEndpoint", url).unwrap();
    config.set("Region", "us-east-1").unwrap();
    config.set("AwsAccessKeyId", "AKIDMEMORY").unwrap();
    config.set("AwsSecretKey", "secret").unwrap();
    config.set("MetricsLevel", "none").unwrap();
    config.set("RecordTtl", "3600000").unwrap();
    (scenario.configure)(&mut config);
    let limit = usize::try_from(config.max_outstanding_bytes).unwrap();
    let room = usize::try_from(config.aggregation_max_size).unwrap();
    let bound = limit + limit / 10 + FIXED + SHARDS as usize * room;
    HEAP.reset_peak_usage();
    let producer = KinesisProducer::builder().config(config).build().unwrap();
    let stream = Stream::new("s").unwrap();
    let clock = SystemClock;
    let mut futures = Vec::new();
    let mut n = 0u64;
    let mut full_since = None;
    loop {
        n += 1;
        let key = format!("{n:016}");
        let data = vec![(n % 251) as u8; scenario.data];
        match producer.send(Record::new(stream.clone(), key, data)) {
            Ok(future) => futures.push(future),
            Err(error) => {
                assert_eq!(error.kind(), SendErrorKind::BufferFull, "{error}");
                let since = *full_since.get_or_insert_with(|| clock.now());
                if clock.now().saturating_duration_since(since) >= scenario.after_full {
                    break;
                }
                // Full: offer again after a while, as an application polling for room would.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let peak = HEAP.peak_usage();
    let accepted = futures.len();
    producer.shutdown(Duration::ZERO).await;
    drop(futures);
    Row {
        accepted,
        limit,
        peak,
        bound,
    }
}

/// The endpoint's child process; stopped when its standard input closes.
struct EndpointProcess {
    child: Child,
    url: String,
}

impl EndpointProcess {
    fn start(mode: Endpointing) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "the_live_heap_stays_within_the_limit_and_a_fixed_part",
                "--nocapture",
            ])
            .env(ENDPOINT_MODE, mode.name())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("endpoint ").map(str::to_owned))
            .unwrap();
        // The rest of what it prints is read, so that it can finish printing.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url }
    }

    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for EndpointProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The child's side: serves a stream of [`SHARDS`] shards as `mode` says until its standard
/// input closes.
fn serve(mode: &str) {
    let mut sim = SimKinesis::new(1);
    sim.create_stream("s", SHARDS, SystemClock.now());
    sim.set_discard_written(true);
    // Records of up to 10 MiB, as a stream raised to the service's largest allows.
    sim.set_max_record_size_kib("s", 10 * 1024).unwrap();
    if mode == Endpointing::LongMessages.name() {
        let shards: Vec<String> = sim
            .open_shards("s")
            .into_iter()
            .map(|(shard, _)| shard.as_str().to_owned())
            .collect();
        for shard in shards {
            sim.set_shard_failing("s", &shard, Some("InternalFailure"))
                .unwrap();
        }
        sim.set_failure_message_len(64 * 1024);
    }
    let endpoint = Endpoint::start(sim).unwrap();
    endpoint.set_stalled(mode == Endpointing::Stalled.name());
    let mut stdout = std::io::stdout();
    writeln!(stdout, "endpoint {}", endpoint.endpoint()).unwrap();
    stdout.flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
