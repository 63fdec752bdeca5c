//! The fast endpoint: every `PutRecords` entry written, checked the way a consumer would read
//! it: every aggregate's MD5 trailer, and the KCL's rule that every user record of an aggregate
//! belongs to the shard it was written to (a KCL consumer drops the whole aggregate otherwise).
//! It counts the user records a consumer would get and adds up their [`fingerprint`]s, so a run
//! can show that every record arrived intact. No shard limits and nothing stored: it is not a
//! model of the service's behaviour, and answers as fast as it can, or after a fixed latency
//! per call ([`VerifyingEndpoint::start_with_latency`]) standing for the round trip to a region.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kpl_aggregation::{HashKey, HashKeyRange, KinesisRecord, MAGIC, deaggregate_strict};
use tokio::io::BufReader;
use tokio::net::TcpStream;

use super::wire::{self, read_request, write_answer};

/// A 64-bit fingerprint of a user record's data: its first 8 bytes and its length. The
/// benchmarks' data is random, so the sum over a run tells whether each record arrived once
/// and whole.
pub fn fingerprint(data: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    let n = data.len().min(8);
    head[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(head).wrapping_add(data.len() as u64)
}

/// What the stub has received so far.
#[derive(Debug, Default)]
pub struct VerifiedCounts {
    /// User records a KCL consumer would get.
    pub user_records: AtomicU64,
    /// Wrapping sum of the [`fingerprint`]s of those records.
    pub fingerprint: AtomicU64,
    /// `PutRecords` entries (Kinesis records).
    pub entries: AtomicU64,
    /// `PutRecords` calls.
    pub requests: AtomicU64,
    /// Aggregates whose trailer or encoding was wrong.
    pub corrupt: AtomicU64,
    /// User records in aggregates a KCL consumer would drop (one of them outside the shard).
    pub dropped_by_kcl: AtomicU64,
}

impl VerifiedCounts {
    /// The counts as one line of JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "user_records": get(&self.user_records),
            "fingerprint": get(&self.fingerprint),
            "entries": get(&self.entries),
            "requests": get(&self.requests),
            "corrupt": get(&self.corrupt),
            "dropped_by_kcl": get(&self.dropped_by_kcl),
        })
    }
}

/// The fast, verifying endpoint (see the [module](super)); it runs until the process ends.
#[derive(Debug)]
pub struct VerifyingEndpoint {
    address: SocketAddr,
    counts: Arc<VerifiedCounts>,
}

impl VerifyingEndpoint {
    /// Starts the endpoint for a stream with these shard ranges, on a thread of its own.
    pub fn start(ranges: Vec<HashKeyRange>) -> io::Result<Self> {
        Self::start_with_latency(ranges, Duration::ZERO)
    }

    /// Starts the endpoint with every answer held back `latency` after its request was read,
    /// as a call to a region takes time: connections wait concurrently, so a client hides the
    /// latency only with enough calls in flight.
    pub fn start_with_latency(ranges: Vec<HashKeyRange>, latency: Duration) -> io::Result<Self> {
        let counts = Arc::new(VerifiedCounts::default());
        let shared = Arc::new(Shared {
            ranges,
            counts: Arc::clone(&counts),
            latency,
        });
        let address = super::serve_on_loopback("kpl-sim-verifying", move |socket| {
            serve(socket, Arc::clone(&shared))
        })?;
        Ok(Self { address, counts })
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// What it has received so far.
    pub fn counts(&self) -> &VerifiedCounts {
        &self.counts
    }
}

struct Shared {
    ranges: Vec<HashKeyRange>,
    counts: Arc<VerifiedCounts>,
    latency: Duration,
}

async fn serve(socket: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    let mut sequence = 0u64;
    while let Some(request) = read_request(&mut reader, &mut line).await? {
        if let Some(why) = &request.unreadable {
            return write_answer(reader.get_mut(), 400, &wire::unreadable_answer(why)).await;
        }
        let answer = match request.operation() {
            "PutRecords" => put_records(&request.body, &shared, &mut sequence),
            "ListShards" => list_shards(&shared.ranges),
            _ => SUMMARY.to_owned(),
        };
        if !shared.latency.is_zero() {
            tokio::time::sleep(shared.latency).await;
        }
        write_answer(reader.get_mut(), 200, &answer).await?;
    }
    Ok(())
}

/// The stream's summary: active, with the service's default record size limit.
const SUMMARY: &str = r#"{"StreamDescriptionSummary":{"StreamName":"bench","StreamARN":"arn:aws:kinesis:us-east-1:123456789012:stream/bench","StreamStatus":"ACTIVE","RetentionPeriodHours":24,"StreamCreationTimestamp":1.7E9,"EnhancedMonitoring":[],"OpenShardCount":4}}"#;

fn shard_of(ranges: &[HashKeyRange], key: HashKey) -> usize {
    ranges.partition_point(|range| range.end() < key)
}

fn put_records(body: &[u8], shared: &Shared, sequence: &mut u64) -> String {
    let counts = &shared.counts;
    counts.requests.fetch_add(1, Ordering::Relaxed);
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let records = parsed["Records"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = String::with_capacity(32 + records.len() * 80);
    out.push_str(r#"{"FailedRecordCount":0,"Records":["#);
    for (i, record) in records.iter().enumerate() {
        let partition_key = record["PartitionKey"].as_str().unwrap_or("");
        let key = record["ExplicitHashKey"]
            .as_str()
            .and_then(|ehk| HashKey::parse_decimal(ehk).ok())
            .unwrap_or_else(|| HashKey::from_partition_key(partition_key));
        let shard = shard_of(&shared.ranges, key);
        let data = record["Data"]
            .as_str()
            .and_then(|text| base64_simd::STANDARD.decode_to_vec(text).ok())
            .unwrap_or_default();
        verify(
            KinesisRecord::new(partition_key, data),
            shared.ranges.get(shard).copied(),
            counts,
        );
        *sequence += 1;
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"SequenceNumber":"{}","ShardId":"shardId-{:012}"}}"#,
            sequence, shard
        ));
    }
    counts
        .entries
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    out.push_str("]}");
    out
}

/// Counts what a KCL consumer of `range` gets from `record`.
fn verify(record: KinesisRecord, range: Option<HashKeyRange>, counts: &VerifiedCounts) {
    let count = |counter: &AtomicU64, n: usize| counter.fetch_add(n as u64, Ordering::Relaxed);
    if !record.data().starts_with(&MAGIC) {
        count(&counts.user_records, 1);
        counts
            .fingerprint
            .fetch_add(fingerprint(record.data()), Ordering::Relaxed);
        return;
    }
    let Ok(users) = deaggregate_strict(&record) else {
        count(&counts.corrupt, 1);
        return;
    };
    let inside = |hash_key| range.is_some_and(|range| range.contains(hash_key));
    if !users.iter().all(|user| inside(user.hash_key())) {
        count(&counts.dropped_by_kcl, users.len());
        return;
    }
    count(&counts.user_records, users.len());
    let sum = users
        .iter()
        .fold(0u64, |sum, user| sum.wrapping_add(fingerprint(user.data())));
    counts.fingerprint.fetch_add(sum, Ordering::Relaxed);
}

fn list_shards(ranges: &[HashKeyRange]) -> String {
    let shards: Vec<String> = ranges
        .iter()
        .enumerate()
        .map(|(i, range)| {
            format!(
                r#"{{"ShardId":"shardId-{i:012}","HashKeyRange":{{"StartingHashKey":"{}","EndingHashKey":"{}"}},"SequenceNumberRange":{{"StartingSequenceNumber":"0"}}}}"#,
                range.start(),
                range.end()
            )
        })
        .collect();
    format!(r#"{{"Shards":[{}]}}"#, shards.join(","))
}

#[cfg(test)]
mod tests {
    use kpl_aggregation::{Aggregator, PartitionKey, UserRecord};

    use super::*;

    fn user(key: &str, data: &'static [u8]) -> UserRecord {
        UserRecord::new(
            PartitionKey::new(key).unwrap_or_else(|e| panic!("{e}")),
            data,
        )
    }

    #[test]
    fn the_endpoint_counts_what_a_kcl_consumer_gets_and_nothing_else() {
        let ranges = vec![
            HashKeyRange::new(HashKey::new(0), HashKey::new(u128::MAX / 2))
                .unwrap_or(HashKeyRange::FULL),
            HashKeyRange::new(HashKey::new(u128::MAX / 2 + 1), HashKey::new(u128::MAX))
                .unwrap_or(HashKeyRange::FULL),
        ];
        let counts = VerifiedCounts::default();
        let (a, b) = (user("a", b"first"), user("b", b"second"));
        let shard = |record: &UserRecord| shard_of(&ranges, record.hash_key());
        assert_ne!(shard(&a), shard(&b), "the keys were chosen for two shards");
        // An aggregate of one shard's record, written to that shard: kept.
        let mut aggregator = Aggregator::default();
        aggregator.push(&a);
        let kept = aggregator.finish().unwrap_or_else(|| panic!("one record"));
        verify(kept, Some(ranges[shard(&a)]), &counts);
        // An aggregate holding a record of the other shard: dropped whole.
        aggregator.push(&a);
        aggregator.push(&b);
        let mixed = aggregator.finish().unwrap_or_else(|| panic!("two records"));
        verify(mixed.clone(), Some(ranges[shard(&a)]), &counts);
        // A damaged trailer: corrupt.
        let mut damaged = mixed.data().to_vec();
        if let Some(last) = damaged.last_mut() {
            *last ^= 1;
        }
        verify(KinesisRecord::new("a", damaged), Some(ranges[0]), &counts);
        // A plain record: kept wherever it lands.
        verify(KinesisRecord::new("b", &b"plain"[..]), None, &counts);
        let json = counts.to_json();
        assert_eq!(json["user_records"], 2);
        assert_eq!(json["dropped_by_kcl"], 2);
        assert_eq!(json["corrupt"], 1);
        let expected = fingerprint(b"first").wrapping_add(fingerprint(b"plain"));
        assert_eq!(json["fingerprint"], expected);
    }
}
