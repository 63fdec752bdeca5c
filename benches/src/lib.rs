//! Workloads and baselines shared by the criterion benchmarks (`cargo xtask bench`).
//!
//! The workload is the one `shared/spec/performance.md` fixes for every measurement: user records
//! with a random 16-character `[A-Za-z0-9]` partition key and 100 random bytes of data.

use bytes::Bytes;
use kpl_aggregation::{Aggregator, KinesisRecord, PartitionKey, UserRecord};
use md5::{Digest, Md5};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Records in one benchmark iteration.
pub const RECORDS: usize = 1_000_000;
/// Length of each partition key, in characters.
pub const KEY_LEN: usize = 16;
/// Length of each record's data, in bytes.
pub const DATA_LEN: usize = 100;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `count` user records of the standard workload, the same for the same `seed`.
pub fn user_records(count: usize, seed: u64) -> Vec<UserRecord> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut payload = vec![0u8; count * DATA_LEN];
    rng.fill(&mut payload[..]);
    let payload = Bytes::from(payload);
    (0..count)
        .map(|i| {
            let key: String = (0..KEY_LEN)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect();
            let key = PartitionKey::new(key).expect("16 ASCII characters are a valid key");
            UserRecord::new(key, payload.slice(i * DATA_LEN..(i + 1) * DATA_LEN))
        })
        .collect()
}

/// Aggregates `records` in order, starting a new aggregate whenever the next record does not fit,
/// and hands each finished Kinesis record to `sink` (as a producer hands it to the transport).
pub fn aggregate_each(
    aggregator: &mut Aggregator,
    records: &[UserRecord],
    mut sink: impl FnMut(KinesisRecord),
) {
    for record in records {
        aggregator.push(record).into_iter().for_each(&mut sink);
    }
    aggregator.finish().into_iter().for_each(sink);
}

/// [`aggregate_each`], collecting the Kinesis records.
pub fn aggregate_all(aggregator: &mut Aggregator, records: &[UserRecord]) -> Vec<KinesisRecord> {
    let mut out = Vec::with_capacity(records.len() / 300 + 1);
    aggregate_each(aggregator, records, |record| out.push(record));
    out
}

/// The floor for encoding: copy every aggregate's bytes once and MD5 them, nothing else.
/// Returns a value derived from all digests so the work cannot be optimised away.
pub fn md5_and_memcpy(aggregates: &[KinesisRecord], scratch: &mut Vec<u8>) -> u8 {
    let mut fold = 0u8;
    for record in aggregates {
        scratch.clear();
        scratch.extend_from_slice(record.data());
        let digest = Md5::digest(&scratch[..]);
        fold ^= digest[0];
    }
    fold
}
