//! Cumulative counters and distributions per stream and shard, kept as plain data (what
//! [`Engine::stats`](crate::Engine::stats) returns). The metrics, with the KPL's names, are
//! [`crate::metrics`]'s.

use std::collections::BTreeMap;

use crate::transport::ShardId;

/// Count, sum, minimum and maximum of a distribution.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Summary {
    pub(crate) fn record(&mut self, value: f64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
    }

    /// Adds another distribution's samples to this one.
    pub fn merge(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The mean, or 0 without samples.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Statistics of one stream since the engine started.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct StreamStats {
    /// User records accepted.
    pub user_records_received: u64,
    /// User records accepted and not finished.
    pub user_records_pending: u64,
    /// User records written.
    pub user_records_put: u64,
    /// Bytes of user-record data written.
    pub user_records_data_put: u64,
    /// User records that failed for good (expired ones included).
    pub user_records_failed: u64,
    /// User records that failed because `record_ttl` passed.
    pub user_records_expired: u64,
    /// Kinesis records (aggregates or single records) written.
    pub kinesis_records_put: u64,
    /// Bytes of the Kinesis records written, as the service counts them: each one's data (for
    /// an aggregate, the packed records with their framing) and partition key. The same bytes
    /// the `KinesisRecordsDataPut` metric reports.
    pub kinesis_records_data_put: u64,
    /// Failed attempts that were retried, counted per user record.
    pub retries_per_record: u64,
    /// Failed attempts per error code, counted per Kinesis record or per request. At most
    /// [`MAX_ERROR_CODES`] codes of at most [`MAX_ERROR_CODE_LEN`] bytes; the rest are counted
    /// under [`OTHER_ERROR_CODES`].
    pub errors_by_code: BTreeMap<String, u64>,
    /// Aggregates written to a shard the shard map did not know (a child after a reshard),
    /// held without re-sending until a map read could judge them.
    pub unknown_shard_landings: u64,
    /// User records re-sent alone because no shard map read in time knew the shard their
    /// aggregate had landed on. The first copy may be readable too: this counts the only
    /// duplicates a reshard can cause (see docs/ordering.md).
    pub unjudged_landings_resent: u64,
    /// Milliseconds from acceptance to the first send of each user record.
    pub buffering_time: Summary,
    /// Milliseconds per `PutRecords` call.
    pub request_time: Summary,
    /// User records per Kinesis record sent.
    pub user_records_per_kinesis_record: Summary,
    /// Kinesis records per `PutRecords` call.
    pub kinesis_records_per_request: Summary,
    /// Per-shard statistics.
    pub shards: BTreeMap<ShardId, ShardStats>,
}

/// Statistics of one shard.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ShardStats {
    /// User records written to this shard.
    pub user_records_put: u64,
    /// Kinesis records written to this shard.
    pub kinesis_records_put: u64,
    /// Bytes of the Kinesis records written to this shard, as the service counts them (see
    /// [`StreamStats::kinesis_records_data_put`]).
    pub kinesis_records_data_put: u64,
    /// Kinesis records refused by throttling.
    pub throttled: u64,
    /// The current AIMD rate multiplier (1 = the configured `rate_limit`).
    pub rate_factor: f64,
}

/// Most distinct codes `errors_by_code` holds: the service uses a handful, and an endpoint that
/// invents a code per answer must not grow the map without bound.
pub const MAX_ERROR_CODES: usize = 64;
/// Longest error code kept; longer ones are cut.
pub const MAX_ERROR_CODE_LEN: usize = 128;
/// Where codes past [`MAX_ERROR_CODES`] are counted.
pub const OTHER_ERROR_CODES: &str = "OtherErrorCodes";

impl StreamStats {
    pub(crate) fn error(&mut self, code: &str, count: u64) {
        if let Some(n) = self.errors_by_code.get_mut(code) {
            *n += count;
            return;
        }
        let code = bounded_error_code(code, self.errors_by_code.len());
        *self.errors_by_code.entry(code.to_owned()).or_default() += count;
    }
}

/// The name a new error code is counted under in a table that already holds `known` codes:
/// the code cut to [`MAX_ERROR_CODE_LEN`] bytes, or [`OTHER_ERROR_CODES`] once the table is
/// full, so that no table of codes grows without limit.
pub(crate) fn bounded_error_code(code: &str, known: usize) -> &str {
    if known >= MAX_ERROR_CODES - 1 {
        return OTHER_ERROR_CODES;
    }
    let mut end = code.len().min(MAX_ERROR_CODE_LEN);
    while !code.is_char_boundary(end) {
        end -= 1;
    }
    &code[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_bounded_in_number_and_length() {
        let mut stats = StreamStats::default();
        for n in 0..1_000 {
            stats.error(&format!("Code{n}"), 1);
        }
        stats.error(&"é".repeat(200), 1);
        assert!(stats.errors_by_code.len() <= MAX_ERROR_CODES);
        assert!(
            stats
                .errors_by_code
                .keys()
                .all(|code| code.len() <= MAX_ERROR_CODE_LEN)
        );
        assert_eq!(
            stats.errors_by_code.values().sum::<u64>(),
            1_001,
            "nothing is lost"
        );
        assert_eq!(stats.errors_by_code["Code0"], 1);
        assert_eq!(stats.errors_by_code[OTHER_ERROR_CODES], 1_001 - 63);
    }
}
