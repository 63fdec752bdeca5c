//! The engine's settings: the KPL's keys that shape batching, limiting and retrying, with the
//! KPL's defaults and ranges, plus the ones this engine adds.

use std::time::Duration;

use kpl_aggregation::{MaxAggregateSize, OuterPartitionKey};

/// The service's limit on entries per `PutRecords`.
pub const PUT_RECORDS_MAX_ENTRIES: usize = 500;
/// The service's limit on a `PutRecords` call's size, counting data and partition keys: 10 MiB,
/// as the service's `PutRecords` documentation states it today (it was 5 MiB before streams could
/// take records of up to 10 MiB).
pub const PUT_RECORDS_MAX_BYTES: usize = 10 * 1024 * 1024;
/// The KPL's default `CollectionMaxSize`, 5 MiB.
pub(crate) const DEFAULT_COLLECTION_MAX_SIZE: usize = 5 * 1024 * 1024;
/// The largest record size a stream can be configured for (`MaxRecordSizeInKiB` = 10240).
pub const MAX_RECORD_SIZE_LIMIT: usize = 10 * 1024 * 1024;
/// The sizes `max_user_record_size` may take: from 64 bytes to the largest record a stream can
/// be configured for.
pub const MAX_USER_RECORD_SIZE_RANGE: std::ops::RangeInclusive<usize> = 64..=MAX_RECORD_SIZE_LIMIT;
/// The smallest `collection_max_size` (the KPL's): one 51 KiB aggregate and its key fit.
pub const MIN_COLLECTION_MAX_SIZE: usize = 52_224;
/// The default `max_outstanding_bytes`: 64 MiB of records, bookkeeping and encoded copies.
pub const DEFAULT_MAX_OUTSTANDING_BYTES: usize = 64 * 1024 * 1024;
/// The longest duration any setting may have: a century, the same as forever for a producer,
/// and short enough that adding it to an `Instant` cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);

/// How strictly records of one partition key keep their order. See `docs/ordering.md`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrderingMode {
    /// The KPL's behaviour: several requests per shard in flight, retries mixed with new records.
    /// Records of a key may be reordered (by up to about the retry backoff).
    #[default]
    Unordered,
    /// At most one request per shard in flight, one aggregate per shard per request, retries
    /// re-queued at the head: records of a partition key are written in the order accepted.
    PerShard,
}

/// The engine's configuration. Build it from [`Default`] (the KPL's defaults) and set fields;
/// [`Engine::new`](crate::Engine::new) checks it with [`validate`](Self::validate).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EngineConfig {
    /// `AggregationEnabled`: pack user records predicted for one shard into one Kinesis record.
    pub aggregation_enabled: bool,
    /// `AggregationMaxCount`: user records per aggregate, 1..=2^63−1.
    pub aggregation_max_count: u64,
    /// `AggregationMaxSize`: bytes per aggregate (64..=10 MiB, exact).
    pub aggregation_max_size: MaxAggregateSize,
    /// `CollectionMaxCount`: Kinesis records per `PutRecords`, 1..=500.
    pub collection_max_count: usize,
    /// `CollectionMaxSize`: bytes per `PutRecords` (data + partition keys), at least 52,224.
    /// Requests never exceed the service's 10 MiB, whatever this says.
    pub collection_max_size: usize,
    /// `RateLimit`: per-shard rate as a percentage of 1,000 records/s and 1 MiB/s, at least 1.
    pub rate_limit: u64,
    /// `RecordMaxBufferedTime`: how long a record may wait to be batched.
    pub record_max_buffered_time: Duration,
    /// `RecordTtl`: a record not written this long after it was accepted fails as expired;
    /// at least 100 ms.
    pub record_ttl: Duration,
    /// `FailIfThrottled`: fail throttled records at once instead of retrying them.
    pub fail_if_throttled: bool,
    /// `MaxUserRecordSize`: the record size limit (data + partition key), 64..=10 MiB. A stream
    /// that reports a lower `MaxRecordSizeInKiB` lowers it for that stream; a higher one does not
    /// raise it (a cap set on the client stays, as in the KPL 1.0.7).
    pub max_user_record_size: usize,
    /// Records accepted but not yet finished, beyond which `submit` refuses (back-pressure).
    pub max_outstanding_records: usize,
    /// Memory charged for records accepted but not yet finished, beyond which `submit` refuses:
    /// each record's key, data and bookkeeping, and the encoded Kinesis records not yet
    /// answered (see [`crate::memory`]).
    pub max_outstanding_bytes: usize,
    /// Memory the driver keeps per outstanding record (where each record's outcome goes, say), charged on
    /// top of the engine's own [`ENGINE_BYTES_PER_RECORD`](crate::memory::ENGINE_BYTES_PER_RECORD).
    pub record_overhead_bytes: usize,
    /// Ordering guarantee; see [`OrderingMode`].
    pub ordering: OrderingMode,
    /// How often the shard map is re-read even without a sign of a reshard (± 10 % jitter).
    pub shard_map_refresh_interval: Duration,
    /// The partition key of aggregates: the KPL's constant `"a"` or the first record's own key.
    pub outer_partition_key: OuterPartitionKey,
    /// First retry backoff ceiling; doubles per consecutive failure of a shard (full jitter).
    pub retry_backoff_base: Duration,
    /// Largest retry backoff ceiling.
    pub retry_backoff_cap: Duration,
    /// Seed of the jitter generator: the same seed and inputs give the same outputs.
    pub rng_seed: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            aggregation_enabled: true,
            aggregation_max_count: 4_294_967_295,
            aggregation_max_size: MaxAggregateSize::DEFAULT,
            collection_max_count: PUT_RECORDS_MAX_ENTRIES,
            collection_max_size: DEFAULT_COLLECTION_MAX_SIZE,
            rate_limit: 150,
            record_max_buffered_time: Duration::from_millis(100),
            record_ttl: Duration::from_secs(30),
            fail_if_throttled: false,
            max_user_record_size: 1024 * 1024,
            max_outstanding_records: 1_000_000,
            max_outstanding_bytes: DEFAULT_MAX_OUTSTANDING_BYTES,
            record_overhead_bytes: 0,
            ordering: OrderingMode::Unordered,
            shard_map_refresh_interval: Duration::from_secs(60),
            outer_partition_key: OuterPartitionKey::Constant,
            retry_backoff_base: Duration::from_millis(100),
            retry_backoff_cap: Duration::from_secs(10),
            rng_seed: 0x6b70_6c2d_7273,
        }
    }
}

/// A setting outside its allowed range. Names the setting, the value and the range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value} for {key}: allowed {allowed}")]
pub struct InvalidConfig {
    key: &'static str,
    value: String,
    allowed: &'static str,
}

impl InvalidConfig {
    /// An error for `key` (the engine's field name).
    pub fn new(key: &'static str, value: impl ToString, allowed: &'static str) -> Self {
        Self {
            key,
            value: value.to_string(),
            allowed,
        }
    }

    /// The setting's name.
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// The refused value, as text.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The allowed range, as text.
    pub fn allowed(&self) -> &'static str {
        self.allowed
    }
}

fn check<T: PartialOrd + ToString>(
    key: &'static str,
    value: T,
    ok: bool,
    allowed: &'static str,
) -> Result<(), InvalidConfig> {
    if ok {
        Ok(())
    } else {
        Err(InvalidConfig::new(key, value.to_string(), allowed))
    }
}

fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

impl EngineConfig {
    /// Checks every setting against its range.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        check(
            "aggregation_max_count",
            self.aggregation_max_count,
            (1..=i64::MAX as u64).contains(&self.aggregation_max_count),
            "1..=9223372036854775807",
        )?;
        check(
            "collection_max_count",
            self.collection_max_count,
            (1..=PUT_RECORDS_MAX_ENTRIES).contains(&self.collection_max_count),
            "1..=500",
        )?;
        check(
            "collection_max_size",
            self.collection_max_size,
            self.collection_max_size >= MIN_COLLECTION_MAX_SIZE,
            "52224..",
        )?;
        check(
            "rate_limit",
            self.rate_limit,
            self.rate_limit >= 1,
            "1.. (percent)",
        )?;
        check(
            "record_ttl",
            millis(self.record_ttl),
            (Duration::from_millis(100)..=MAX_DURATION).contains(&self.record_ttl),
            "100 ms to a century",
        )?;
        check(
            "record_max_buffered_time",
            millis(self.record_max_buffered_time),
            self.record_max_buffered_time <= MAX_DURATION,
            "up to a century",
        )?;
        check(
            "max_user_record_size",
            self.max_user_record_size,
            MAX_USER_RECORD_SIZE_RANGE.contains(&self.max_user_record_size),
            "64..=10485760",
        )?;
        check(
            "max_outstanding_records",
            self.max_outstanding_records,
            self.max_outstanding_records >= 1,
            "1..",
        )?;
        check(
            "max_outstanding_bytes",
            self.max_outstanding_bytes,
            self.max_outstanding_bytes >= self.max_user_record_size,
            "at least max_user_record_size",
        )?;
        check(
            "shard_map_refresh_interval",
            millis(self.shard_map_refresh_interval),
            (Duration::from_secs(1)..=MAX_DURATION).contains(&self.shard_map_refresh_interval),
            "1 s to a century",
        )?;
        check(
            "retry_backoff_base",
            millis(self.retry_backoff_base),
            (Duration::from_millis(1)..=MAX_DURATION).contains(&self.retry_backoff_base),
            "1 ms to a century",
        )?;
        check(
            "retry_backoff_cap",
            millis(self.retry_backoff_cap),
            (self.retry_backoff_base..=MAX_DURATION).contains(&self.retry_backoff_cap),
            "retry_backoff_base to a century",
        )?;
        Ok(())
    }

    /// Entries per request after the service's limit is applied.
    pub(crate) fn request_max_count(&self) -> usize {
        self.collection_max_count.min(PUT_RECORDS_MAX_ENTRIES)
    }

    /// Bytes per request after the service's limit is applied.
    pub(crate) fn request_max_size(&self) -> usize {
        self.collection_max_size.min(PUT_RECORDS_MAX_BYTES)
    }

    /// The grace a Kinesis record gets in the collector after aggregation: min(50 ms, 0.2 ×
    /// `record_max_buffered_time`), as in KPL 0.14.
    pub(crate) fn collection_grace(&self) -> Duration {
        Duration::from_millis(50).min(self.record_max_buffered_time / 5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_kpl_defaults_and_valid() {
        let config = EngineConfig::default();
        config.validate().unwrap();
        assert_eq!(config.aggregation_max_size.get(), 51_200);
        assert_eq!(config.collection_max_count, 500);
        assert_eq!(config.rate_limit, 150);
        assert_eq!(config.record_ttl, Duration::from_secs(30));
        assert_eq!(config.collection_grace(), Duration::from_millis(20));
    }

    #[test]
    fn each_range_is_enforced_and_named() {
        type Spoil = Box<dyn Fn(&mut EngineConfig)>;
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "aggregation_max_count",
                Box::new(|c| c.aggregation_max_count = 0),
            ),
            (
                "collection_max_count",
                Box::new(|c| c.collection_max_count = 501),
            ),
            (
                "collection_max_size",
                Box::new(|c| c.collection_max_size = 52_223),
            ),
            ("rate_limit", Box::new(|c| c.rate_limit = 0)),
            (
                "record_ttl",
                Box::new(|c| c.record_ttl = Duration::from_millis(99)),
            ),
            // Past a century, `Instant` arithmetic could overflow.
            ("record_ttl", Box::new(|c| c.record_ttl = Duration::MAX)),
            (
                "record_max_buffered_time",
                Box::new(|c| c.record_max_buffered_time = Duration::MAX),
            ),
            (
                "shard_map_refresh_interval",
                Box::new(|c| c.shard_map_refresh_interval = Duration::MAX),
            ),
            (
                "retry_backoff_cap",
                Box::new(|c| c.retry_backoff_cap = Duration::MAX),
            ),
            (
                "max_user_record_size",
                Box::new(|c| c.max_user_record_size = 63),
            ),
            (
                "max_outstanding_records",
                Box::new(|c| c.max_outstanding_records = 0),
            ),
            (
                "max_outstanding_bytes",
                Box::new(|c| c.max_outstanding_bytes = 10),
            ),
            (
                "shard_map_refresh_interval",
                Box::new(|c| c.shard_map_refresh_interval = Duration::ZERO),
            ),
            (
                "retry_backoff_base",
                Box::new(|c| c.retry_backoff_base = Duration::ZERO),
            ),
            (
                "retry_backoff_cap",
                Box::new(|c| c.retry_backoff_cap = Duration::from_micros(1)),
            ),
        ];
        for (key, spoil) in cases {
            let mut config = EngineConfig::default();
            spoil(&mut config);
            let error = config.validate().unwrap_err();
            assert_eq!(error.key(), key);
            assert!(error.to_string().contains(key));
        }
    }
}
