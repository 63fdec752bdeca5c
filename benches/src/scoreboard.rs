//! The end-to-end scoreboard of `cargo xtask bench`: a producer process pushing the standard
//! workload over HTTP to a [`VerifyingEndpoint`](kpl_sim::http::VerifyingEndpoint) in another process, with
//! what the producer process spent, and the wire-ready limit measured in the same run.
//!
//! The `kpl-scoreboard` binary runs each part; `cargo xtask bench` starts the processes (pinned
//! to separate cores with `taskset` when there are two), collects their JSON lines and prints
//! the table of `docs/benchmarks.md`.

use std::time::Duration;

use base64_simd::STANDARD as BASE64;
use kpl_aggregation::{Aggregator, HashKey, HashKeyRange, UserRecord};
use kpl_engine::time::{Clock, SystemClock};
use kpl_engine::{Record, Stream};
use sha2::{Digest, Sha256};

pub use kpl_cli::usage::ProcessUsage;

/// The most entries of one `PutRecords` call.
const ENTRIES_PER_CALL: usize = 500;
/// The most bytes of one `PutRecords` call's records.
const BYTES_PER_CALL: usize = 5 * 1024 * 1024;

/// The application's records: `count` records of the standard workload for `stream`, made
/// directly (no intermediate copies), each key its own allocation and the data slices of one
/// buffer, as an application holding its records in memory would have them.
pub fn application_records(stream: &Stream, count: usize, seed: u64) -> Vec<Record> {
    crate::workload(count, seed, |key, data| {
        Record::new(stream.clone(), key, data)
    })
}

/// The wrapping sum of the records' [`fingerprint`](kpl_sim::http::fingerprint)s, to compare
/// with what the stub received.
pub fn fingerprint_sum(records: &[Record]) -> u64 {
    records.iter().fold(0, |sum, record| {
        sum.wrapping_add(kpl_sim::http::fingerprint(record.data()))
    })
}

/// The wire-ready limit: what any shard-aware aggregating producer must do per record before
/// a request can leave — MD5 of the partition key, a search of the shard ranges, encoding into
/// the shard's aggregate, the aggregate's MD5 trailer, base64 of every aggregate into the JSON
/// body and SHA-256 of each body (SigV4 signs it) — in a plain loop. Returns the number of
/// request bodies made, so the work cannot be optimised away.
pub fn wire_ready_limit(records: &[UserRecord], ranges: &[HashKeyRange]) -> usize {
    let mut aggregators: Vec<Aggregator> = ranges.iter().map(|_| Aggregator::default()).collect();
    let mut body = Body::default();
    for record in records {
        let hash_key = HashKey::from_partition_key(record.partition_key().as_str());
        let shard = ranges.partition_point(|range| range.end() < hash_key);
        if let Some(aggregate) = aggregators.get_mut(shard).and_then(|a| a.push(record)) {
            body.add(aggregate.data());
        }
    }
    for aggregate in aggregators.iter_mut().filter_map(Aggregator::finish) {
        body.add(aggregate.data());
    }
    body.seal();
    body.sealed
}

/// A `PutRecords` body being written: base64 text of each entry, signed when full.
#[derive(Default)]
struct Body {
    text: String,
    entries: usize,
    bytes: usize,
    sealed: usize,
}

impl Body {
    fn add(&mut self, data: &[u8]) {
        if self.entries == ENTRIES_PER_CALL || self.bytes + data.len() > BYTES_PER_CALL {
            self.seal();
        }
        self.text.push_str(r#"{"Data":""#);
        BASE64.encode_append(data, &mut self.text);
        self.text.push_str(r#""},"#);
        self.entries += 1;
        self.bytes += data.len();
    }

    fn seal(&mut self) {
        if self.entries == 0 {
            return;
        }
        std::hint::black_box(Sha256::digest(self.text.as_bytes()));
        self.text.clear();
        self.entries = 0;
        self.bytes = 0;
        self.sealed += 1;
    }
}

/// How a run hands records to the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// `KinesisProducer::send_wait` per record, every delivery future kept and awaited at the
    /// end (the workload of `shared/spec/performance.md`).
    SendWait,
    /// `KinesisProducer::send_all` with 500 records at a time, futures awaited at the end.
    SendAll,
    /// No producer: the AWS SDK's `PutRecords` with 500 plain records per call, one call at a
    /// time, as the fastest peer does.
    SdkBatches,
}

impl Way {
    /// Every way, in the scoreboard's order.
    pub const ALL: [Self; 3] = [Self::SendWait, Self::SendAll, Self::SdkBatches];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::SendWait => "send_wait",
            Self::SendAll => "send_all",
            Self::SdkBatches => "sdk_batches",
        }
    }

    /// The way named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|way| way.name() == name)
    }
}

/// What one producer run reports.
#[derive(Debug)]
pub struct RunReport {
    /// Records handed over.
    pub records: usize,
    /// Records whose outcome was a delivery.
    pub delivered: usize,
    /// From the first record handed over to the last outcome.
    pub elapsed: Duration,
    /// CPU the process spent in that time.
    pub cpu: Duration,
    /// Resident memory once the application's records were made, KiB.
    pub application_rss_kib: u64,
    /// Peak resident memory of the process, KiB.
    pub peak_rss_kib: u64,
    /// [`fingerprint_sum`] of the records handed over.
    pub fingerprint: u64,
}

impl RunReport {
    /// As one line of JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "records": self.records,
            "delivered": self.delivered,
            "seconds": self.elapsed.as_secs_f64(),
            "cpu_seconds": self.cpu.as_secs_f64(),
            "application_rss_kib": self.application_rss_kib,
            "peak_rss_kib": self.peak_rss_kib,
            "fingerprint": self.fingerprint,
        })
    }
}

/// Pushes `count` records of the standard workload to the Kinesis endpoint `endpoint` the
/// `way` says, on a single-threaded runtime, and reports.
pub fn run(way: Way, endpoint: String, count: usize) -> RunReport {
    let stream = Stream::new("bench").expect("a valid stream name");
    let records = application_records(&stream, count, 7);
    let fingerprint = fingerprint_sum(&records);
    let before = ProcessUsage::now();
    let started = SystemClock.now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let delivered = runtime.block_on(async move {
        match way {
            Way::SendWait | Way::SendAll => {
                let Some(transport) = crate::aws_transport(endpoint) else {
                    return 0;
                };
                let batch = if way == Way::SendAll {
                    ENTRIES_PER_CALL
                } else {
                    1
                };
                crate::produce(records, transport, batch).await
            }
            Way::SdkBatches => sdk_batches(records, endpoint).await,
        }
    });
    let elapsed = started.elapsed();
    let after = ProcessUsage::now();
    RunReport {
        records: count,
        delivered,
        elapsed,
        cpu: after.cpu().saturating_sub(before.cpu()),
        application_rss_kib: before.rss_kib,
        // The kernel's counts are approximate (per-thread counters folded in lazily, the
        // high-water mark raised only at some points), so the peak it reports can read below a
        // resident size seen earlier: the peak is at least that.
        peak_rss_kib: after.peak_rss_kib.max(before.rss_kib),
        fingerprint,
    }
}

/// The fastest peer's way: plain records, 500 per `PutRecords` call through the AWS SDK.
async fn sdk_batches(records: Vec<Record>, endpoint: String) -> usize {
    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;

    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "AKIDBENCH",
            "bench-secret",
            None,
            None,
            "bench",
        ))
        .build();
    let client = aws_sdk_kinesis::Client::from_conf(config);
    let mut delivered = 0;
    for chunk in records.chunks(ENTRIES_PER_CALL) {
        let entries: Vec<PutRecordsRequestEntry> = chunk
            .iter()
            .filter_map(|record| {
                PutRecordsRequestEntry::builder()
                    .partition_key(record.partition_key())
                    .data(Blob::new(record.data().to_vec()))
                    .build()
                    .ok()
            })
            .collect();
        let sent = client
            .put_records()
            .stream_name("bench")
            .set_records(Some(entries))
            .send()
            .await;
        if let Ok(output) = sent {
            delivered += output
                .records()
                .iter()
                .filter(|entry| entry.error_code().is_none())
                .count();
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DATA_LEN, KEY_LEN};

    #[test]
    fn the_limit_loop_signs_one_body_per_500_aggregates_or_5_mib() {
        let records = crate::user_records(20_000, 3);
        let ranges = crate::even_ranges(4);
        // 20,000 records of ~125 encoded bytes are ~49 aggregates of 51,200 bytes: one body.
        assert_eq!(wire_ready_limit(&records, &ranges), 1);
        let mut body = Body::default();
        for _ in 0..1_001 {
            body.add(b"x");
        }
        body.seal();
        assert_eq!(body.sealed, 3);
    }

    #[test]
    fn application_records_are_the_standard_workload() {
        let stream = Stream::new("bench").unwrap_or_else(|e| panic!("{e}"));
        let records = application_records(&stream, 100, 1);
        assert_eq!(records.len(), 100);
        assert!(records.iter().all(|r| r.partition_key().len() == KEY_LEN));
        assert!(records.iter().all(|r| r.data().len() == DATA_LEN));
        assert_ne!(records[0].data(), records[1].data());
        assert_ne!(fingerprint_sum(&records), fingerprint_sum(&records[1..]));
    }

    #[test]
    fn every_way_delivers_every_record_intact_to_the_stub() {
        let stub = kpl_sim::http::VerifyingEndpoint::start(crate::even_ranges(4))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut sum = 0u64;
        for way in Way::ALL {
            let report = run(way, stub.endpoint(), 3_000);
            assert_eq!(
                (report.records, report.delivered),
                (3_000, 3_000),
                "{way:?}"
            );
            sum = sum.wrapping_add(report.fingerprint);
        }
        let counts = stub.counts().to_json();
        assert_eq!(counts["user_records"], 9_000);
        assert_eq!(counts["fingerprint"], sum);
        assert_eq!(counts["corrupt"], 0);
        assert_eq!(counts["dropped_by_kcl"], 0);
    }

    #[test]
    fn a_stub_with_latency_holds_each_answer_back_and_still_gets_every_record() {
        let latency = Duration::from_millis(30);
        let stub =
            kpl_sim::http::VerifyingEndpoint::start_with_latency(crate::even_ranges(4), latency)
                .unwrap_or_else(|e| panic!("{e}"));
        let report = run(Way::SendWait, stub.endpoint(), 500);
        assert_eq!(report.delivered, 500);
        // At least the shard listing and one PutRecords call, one after the other.
        assert!(report.elapsed >= 2 * latency, "{:?}", report.elapsed);
        assert_eq!(stub.counts().to_json()["user_records"], 500);
    }
}
