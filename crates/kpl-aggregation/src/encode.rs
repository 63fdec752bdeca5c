//! The aggregated-record encoder, with exact incremental size accounting.
//!
//! The protobuf is written while records are added, into three buffers that mirror the three
//! fields of `AggregatedRecord` (partition-key table, explicit-hash-key table, records). The encoded
//! size is therefore always the sum of the buffer lengths: exact by construction, and the size a
//! record *would* add is computed from the same arithmetic before it is written.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::wire::{AGGREGATE_OVERHEAD, DIGEST_LEN, MAGIC, tag};
use crate::{HashKey, KinesisRecord, UserRecord};

/// Deduplicating tables need a fast hasher: one lookup per record sits on the hot path. Iteration
/// order never matters here (indices are assigned in insertion order), so a seeded hasher is safe.
type FastHasher = foldhash::fast::RandomState;

/// The largest encoded size an aggregated record may have.
///
/// Defaults to the KPL's `AggregationMaxSize` of 51,200 bytes; the KPL allows 64 bytes to 10 MiB.
///
/// ```
/// use kpl_aggregation::MaxAggregateSize;
///
/// assert_eq!(MaxAggregateSize::default().get(), 51_200);
/// assert!(MaxAggregateSize::new(1024 * 1024).is_ok());
/// assert!(MaxAggregateSize::new(63).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct MaxAggregateSize(usize);

impl MaxAggregateSize {
    /// The smallest allowed value, 64 bytes.
    pub const MIN: usize = 64;
    /// The largest allowed value, 10 MiB.
    pub const MAX: usize = 10 * 1024 * 1024;
    /// The KPL's default, 51,200 bytes.
    pub const DEFAULT: Self = Self(51_200);

    /// Validates `bytes` against `64..=10 MiB`.
    pub fn new(bytes: usize) -> Result<Self, MaxAggregateSizeError> {
        if (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(Self(bytes))
        } else {
            Err(MaxAggregateSizeError { bytes })
        }
    }

    /// The limit in bytes.
    pub const fn get(self) -> usize {
        self.0
    }
}

impl Default for MaxAggregateSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An aggregation size limit outside the allowed range.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error(
    "aggregation_max_size is {bytes} bytes; it must be from {min} to {max}",
    min = MaxAggregateSize::MIN,
    max = MaxAggregateSize::MAX
)]
pub struct MaxAggregateSizeError {
    bytes: usize,
}

impl MaxAggregateSizeError {
    /// The rejected value.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Which partition key an aggregated Kinesis record carries on the outside.
///
/// Routing always uses the explicit hash key (the first user record's hash key), so the outer
/// partition key only costs request bytes — and shows up in consumers that do not de-aggregate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
#[non_exhaustive]
pub enum OuterPartitionKey {
    /// The KPL's choice: the one-byte constant `"a"`, the cheapest key.
    #[default]
    Constant,
    /// The first user record's partition key, so that consumers which do not de-aggregate still see
    /// a meaningful key (asked for in KPL issue #439).
    FirstUserRecord,
}

impl OuterPartitionKey {
    /// The constant the KPL puts on every aggregate.
    pub const CONSTANT: &'static str = "a";
}

/// Packs user records into one Kinesis record in the KPL aggregation format.
///
/// The encoded size is tracked exactly as records are added, so [`Aggregator::size_with`] and
/// [`Aggregator::try_push`] answer "does this record still fit?" in constant time, without encoding
/// twice or trimming afterwards. [`Aggregator::finish`] emits what the KPL emits:
///
/// * one user record: its own data, partition key and hash key, not wrapped;
/// * two or more: `F3 89 9A C2` + protobuf + MD5(protobuf), with the outer partition key chosen by
///   [`OuterPartitionKey`] and the first user record's hash key as the explicit hash key.
///
/// Records are borrowed, not consumed: a producer keeps each user record until its outcome is
/// known (it may have to re-aggregate it for a retry), and the aggregator copies what it encodes.
/// The first record is always accepted, so a single record larger than the limit is emitted alone.
/// The aggregator does not group by shard: the caller must only put records together that are
/// predicted for the same shard, or a KCL consumer drops the whole aggregate.
///
/// ```
/// use kpl_aggregation::{Aggregator, PartitionKey, UserRecord, deaggregate};
///
/// let mut aggregator = Aggregator::default();
/// for (key, data) in [("pk-1", "hello"), ("pk-2", "world")] {
///     let record = UserRecord::new(PartitionKey::new(key)?, data);
///     aggregator.try_push(&record)?;
/// }
/// let size = aggregator.size();
/// let kinesis_record = aggregator.finish().expect("two records were added");
/// assert_eq!(kinesis_record.data().len(), size);
/// assert_eq!(kinesis_record.partition_key(), "a");
/// assert_eq!(deaggregate(&kinesis_record).len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Aggregator {
    max_size: MaxAggregateSize,
    outer_partition_key: OuterPartitionKey,
    /// Encoded `partition_key_table` entries (tag, length, bytes), in table order.
    partition_key_table: Vec<u8>,
    /// Encoded `explicit_hash_key_table` entries, in table order.
    explicit_hash_key_table: Vec<u8>,
    /// Encoded `records` entries, in order.
    records: Vec<u8>,
    /// Finds a partition key's table index; the key bytes themselves live in `partition_key_table`.
    partition_key_index: HashTable<KeySlot>,
    explicit_hash_key_index: HashMap<HashKey, u64, FastHasher>,
    hasher: FastHasher,
    record_count: usize,
    /// Kept whole so that a lone record can be emitted unwrapped, as the KPL does. It is
    /// encoded into the tables and `records` only when a second record joins it, so a record
    /// that goes alone (aggregation off, or larger than the limit) is never copied.
    first: Option<FirstRecord>,
}

/// Where one distinct partition key sits in the encoded partition-key table.
#[derive(Clone, Copy, Debug)]
struct KeySlot {
    hash: u64,
    /// Byte range of the key's text within `partition_key_table`.
    start: usize,
    end: usize,
    index: u64,
}

#[derive(Clone, Debug)]
struct FirstRecord {
    record: UserRecord,
    hash_key: HashKey,
    /// What it adds to an aggregate (see [`Placement::growth`]).
    growth: usize,
    /// Whether it is encoded in the tables and `records` yet.
    written: bool,
}

/// Where a record's keys would go: existing table indexes, or new entries and their encoded size.
struct Placement {
    key_hash: u64,
    key_index: u64,
    new_key: bool,
    hash_key_index: Option<u64>,
    new_hash_key: bool,
    /// Bytes the record adds to the protobuf: new table entries plus the record entry.
    growth: usize,
    /// Length of the `Record` message body.
    body: usize,
}

impl Aggregator {
    /// An empty aggregator with the given size limit and outer-key policy.
    pub fn new(max_size: MaxAggregateSize, outer_partition_key: OuterPartitionKey) -> Self {
        Self {
            max_size,
            outer_partition_key,
            ..Self::default()
        }
    }

    /// The size limit.
    pub fn max_size(&self) -> MaxAggregateSize {
        self.max_size
    }

    /// How many user records have been added since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.record_count
    }

    /// Whether no user record has been added since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// The exact length of the data [`finish`](Self::finish) would emit now (0 when empty).
    pub fn size(&self) -> usize {
        match (&self.first, self.record_count) {
            (None, _) => 0,
            (Some(first), 1) => first.record.data().len(),
            (Some(_), _) => self.aggregate_size(),
        }
    }

    /// The exact length of the data [`finish`](Self::finish) would emit after adding `record`.
    pub fn size_with(&self, record: &UserRecord) -> usize {
        if self.is_empty() {
            return record.data().len();
        }
        self.aggregate_size() + self.place(record).growth
    }

    /// Whether `record` can be added without the aggregate exceeding the size limit.
    ///
    /// Always `true` for an empty aggregator: a record larger than the limit goes alone.
    pub fn fits(&self, record: &UserRecord) -> bool {
        self.is_empty() || self.size_with(record) <= self.max_size.get()
    }

    /// Adds a copy of `record` if it fits under the size limit; otherwise leaves the aggregator as
    /// it was and says by how much the record missed.
    pub fn try_push(&mut self, record: &UserRecord) -> Result<(), AggregateFull> {
        let placement = self.place(record);
        if let Some(size_with_record) = self.overflow(&placement) {
            return Err(AggregateFull {
                size_with_record,
                limit: self.max_size.get(),
            });
        }
        self.accept(record, &placement);
        Ok(())
    }

    /// Adds a copy of `record`, first finishing the current aggregate if the record does not fit
    /// in it. Returns the finished aggregate, if there was one; `record` then starts the next.
    ///
    /// This is the usual loop of a producer: push every record predicted for a shard, send what
    /// comes back, and [`finish`](Self::finish) at the flush deadline.
    ///
    /// ```
    /// use kpl_aggregation::{Aggregator, MaxAggregateSize, OuterPartitionKey, PartitionKey, UserRecord};
    ///
    /// let limit = MaxAggregateSize::new(1_000)?;
    /// let mut aggregator = Aggregator::new(limit, OuterPartitionKey::Constant);
    /// let mut sent = Vec::new();
    /// for i in 0..100 {
    ///     let record = UserRecord::new(PartitionKey::new(format!("key-{i}"))?, vec![0u8; 50]);
    ///     sent.extend(aggregator.push(&record));
    /// }
    /// sent.extend(aggregator.finish());
    /// assert!(sent.len() > 1);
    /// assert!(sent.iter().all(|record| record.data().len() <= 1_000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push(&mut self, record: &UserRecord) -> Option<KinesisRecord> {
        let placement = self.place(record);
        if self.overflow(&placement).is_none() {
            self.accept(record, &placement);
            return None;
        }
        let finished = self.finish();
        // The tables were just cleared, so the record's place must be computed afresh.
        let placement = self.place(record);
        self.accept(record, &placement);
        finished
    }

    /// Emits the Kinesis record for everything added so far and resets the aggregator for reuse
    /// (its buffers keep their capacity). Returns `None` when nothing was added.
    pub fn finish(&mut self) -> Option<KinesisRecord> {
        let first = self.first.take()?;
        let (partition_key, _, data) = first.record.into_parts();
        let record = if self.record_count == 1 {
            KinesisRecord::new(partition_key.into_string(), data)
        } else {
            let body = self.encode_body();
            let partition_key = match self.outer_partition_key {
                OuterPartitionKey::Constant => OuterPartitionKey::CONSTANT.to_owned(),
                OuterPartitionKey::FirstUserRecord => partition_key.into_string(),
            };
            KinesisRecord::unsealed_aggregate(partition_key, body)
        };
        self.clear();
        Some(record.with_explicit_hash_key(first.hash_key))
    }

    /// Drops every record added since the last [`finish`](Self::finish).
    pub fn clear(&mut self) {
        self.partition_key_table.clear();
        self.explicit_hash_key_table.clear();
        self.records.clear();
        self.partition_key_index.clear();
        self.explicit_hash_key_index.clear();
        self.record_count = 0;
        self.first = None;
        // Only a record larger than the limit could have grown it past the limit; no shard
        // keeps room for the largest record it ever saw.
        if self.records.capacity() > 2 * self.max_size.get() {
            self.records = Vec::new();
        }
    }

    /// The size the aggregate would have with a record at `placement`, if that exceeds the limit.
    /// A record is never too large for an empty aggregator: it then goes alone.
    fn overflow(&self, placement: &Placement) -> Option<usize> {
        let size_with_record = self.aggregate_size() + placement.growth;
        (self.first.is_some() && size_with_record > self.max_size.get()).then_some(size_with_record)
    }

    fn accept(&mut self, record: &UserRecord, placement: &Placement) {
        match &mut self.first {
            None => {
                self.first = Some(FirstRecord {
                    record: record.clone(),
                    hash_key: record.hash_key(),
                    growth: placement.growth,
                    written: false,
                });
                self.record_count = 1;
                return;
            }
            Some(first) if !first.written => {
                // A second record joins: the first is encoded now, in the empty tables, where
                // the second's placement counted it.
                first.written = true;
                let first = first.record.clone();
                self.record_count = 0;
                let placement = self.place(&first);
                self.write(&first, &placement);
            }
            Some(_) => {}
        }
        self.write(record, placement);
    }

    fn aggregate_size(&self) -> usize {
        if let Some(first) = self.unwritten_first() {
            return AGGREGATE_OVERHEAD + first.growth;
        }
        AGGREGATE_OVERHEAD
            + self.partition_key_table.len()
            + self.explicit_hash_key_table.len()
            + self.records.len()
    }

    /// Looks both keys up (one hash-table probe each) and computes what the record would add.
    /// The first record, while it is not encoded yet (the tables are then empty).
    fn unwritten_first(&self) -> Option<&FirstRecord> {
        self.first.as_ref().filter(|first| !first.written)
    }

    fn place(&self, record: &UserRecord) -> Placement {
        let key = record.partition_key().as_str().as_bytes();
        let key_hash = self.hasher.hash_one(key);
        let (key_index, new_key, hash_key_index, new_hash_key) = match self.unwritten_first() {
            // The tables are empty, and the first record takes their first entries.
            Some(first) => {
                let first = &first.record;
                let (key_index, new_key) = if first.partition_key().as_str().as_bytes() == key {
                    (0, false)
                } else {
                    (1, true)
                };
                let (hash_key_index, new_hash_key) =
                    match (record.explicit_hash_key(), first.explicit_hash_key()) {
                        (None, _) => (None, false),
                        (Some(own), Some(first)) if own == first => (Some(0), false),
                        (Some(_), Some(_)) => (Some(1), true),
                        (Some(_), None) => (Some(0), true),
                    };
                (key_index, new_key, hash_key_index, new_hash_key)
            }
            None => {
                let table = &self.partition_key_table;
                let found = self.partition_key_index.find(key_hash, |slot| {
                    slot.hash == key_hash && table.get(slot.start..slot.end) == Some(key)
                });
                let (key_index, new_key) = match found {
                    Some(slot) => (slot.index, false),
                    None => (self.partition_key_index.len() as u64, true),
                };
                let (hash_key_index, new_hash_key) = match record.explicit_hash_key() {
                    None => (None, false),
                    Some(hash_key) => match self.explicit_hash_key_index.get(&hash_key) {
                        Some(&index) => (Some(index), false),
                        None => (Some(self.explicit_hash_key_index.len() as u64), true),
                    },
                };
                (key_index, new_key, hash_key_index, new_hash_key)
            }
        };
        let body = record_body_len(key_index, hash_key_index, record.data().len());
        let mut growth = 1 + encoded_len_varint(body as u64) + body;
        if new_key {
            growth += table_entry_len(key.len());
        }
        if let (true, Some(hash_key)) = (new_hash_key, record.explicit_hash_key()) {
            growth += table_entry_len(decimal_len(hash_key));
        }
        Placement {
            key_hash,
            key_index,
            new_key,
            hash_key_index,
            new_hash_key,
            growth,
            body,
        }
    }

    fn write(&mut self, record: &UserRecord, placement: &Placement) {
        if placement.new_key {
            let key = record.partition_key().as_str().as_bytes();
            let table = &mut self.partition_key_table;
            table.push(tag::PARTITION_KEY_TABLE);
            put_varint(table, key.len() as u64);
            let start = table.len();
            table.extend_from_slice(key);
            let slot = KeySlot {
                hash: placement.key_hash,
                start,
                end: table.len(),
                index: placement.key_index,
            };
            self.partition_key_index
                .insert_unique(placement.key_hash, slot, |slot| slot.hash);
        }
        if let (true, Some(hash_key), Some(index)) = (
            placement.new_hash_key,
            record.explicit_hash_key(),
            placement.hash_key_index,
        ) {
            let decimal = hash_key.to_string();
            let table = &mut self.explicit_hash_key_table;
            table.push(tag::EXPLICIT_HASH_KEY_TABLE);
            put_varint(table, decimal.len() as u64);
            table.extend_from_slice(decimal.as_bytes());
            self.explicit_hash_key_index.insert(hash_key, index);
        }
        let data = record.data();
        let out = &mut self.records;
        out.reserve(placement.growth);
        out.push(tag::RECORDS);
        put_varint(out, placement.body as u64);
        out.push(tag::PARTITION_KEY_INDEX);
        put_varint(out, placement.key_index);
        if let Some(index) = placement.hash_key_index {
            out.push(tag::EXPLICIT_HASH_KEY_INDEX);
            put_varint(out, index);
        }
        out.push(tag::DATA);
        put_varint(out, data.len() as u64);
        out.extend_from_slice(data);
        self.record_count += 1;
    }

    /// The aggregate without its MD5 trailer, with room for it: the trailer is computed when
    /// the record's data is first read (see [`KinesisRecord::seal_all`]).
    fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.aggregate_size());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.partition_key_table);
        out.extend_from_slice(&self.explicit_hash_key_table);
        out.extend_from_slice(&self.records);
        debug_assert_eq!(out.len() + DIGEST_LEN, self.aggregate_size());
        out
    }
}

/// A record that would push the aggregate over its size limit. The aggregator is unchanged and the
/// caller still holds the record: finish this aggregate and start the next one with it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error(
    "adding the record would make the aggregated record {size_with_record} bytes, \
     over aggregation_max_size = {limit} bytes"
)]
pub struct AggregateFull {
    size_with_record: usize,
    limit: usize,
}

impl AggregateFull {
    /// The aggregate's size had the record been added.
    pub fn size_with_record(&self) -> usize {
        self.size_with_record
    }

    /// The size limit in force.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Length of a `Record` message body: required pk index, optional EHK index, required data.
fn record_body_len(key_index: u64, hash_key_index: Option<u64>, data_len: usize) -> usize {
    let hash_key_index_len = hash_key_index.map_or(0, |index| 1 + encoded_len_varint(index));
    1 + encoded_len_varint(key_index)
        + hash_key_index_len
        + 1
        + encoded_len_varint(data_len as u64)
        + data_len
}

/// Length of one length-delimited table entry holding `len` bytes.
fn table_entry_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Appends a varint. Indexes and lengths are nearly always below 128, so that case is kept inline
/// and the general case is left to `prost`.
#[inline]
fn put_varint(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        out.push(value as u8);
    } else {
        encode_varint(value, out);
    }
}

/// Number of decimal digits of a hash key.
fn decimal_len(hash_key: HashKey) -> usize {
    hash_key
        .get()
        .checked_ilog10()
        .map_or(1, |log| log as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PartitionKey;

    fn record(key: &str, data: &[u8]) -> UserRecord {
        UserRecord::new(
            PartitionKey::new(key).unwrap_or_else(|e| panic!("{e}")),
            data.to_vec(),
        )
    }

    #[test]
    fn a_record_that_goes_alone_is_never_copied_and_leaves_no_room_behind() {
        let limit = MaxAggregateSize::new(1_000).unwrap_or_else(|e| panic!("{e}"));
        let mut aggregator = Aggregator::new(limit, OuterPartitionKey::Constant);
        let large = record("big", &[7; 100_000]);
        assert!(aggregator.push(&large).is_none());
        assert_eq!(aggregator.records.capacity(), 0, "not encoded while alone");
        let small = record("small", b"x");
        let alone = aggregator
            .push(&small)
            .unwrap_or_else(|| panic!("the large one went"));
        assert_eq!(
            alone.data().as_ptr(),
            large.data().as_ptr(),
            "its data, not a copy"
        );
        let finished = aggregator
            .finish()
            .unwrap_or_else(|| panic!("the small one"));
        assert_eq!(finished.data().as_ptr(), small.data().as_ptr());
        assert_eq!(aggregator.records.capacity(), 0);
    }

    #[test]
    fn a_second_record_sharing_the_first_s_keys_is_sized_and_encoded_as_if_both_were_written() {
        let hash = HashKey::new(42);
        for (first, second) in [
            (record("k", b"a"), record("k", b"b")),
            (record("k", b"a"), record("j", b"b")),
            (
                record("k", b"a").with_explicit_hash_key(hash),
                record("k", b"b").with_explicit_hash_key(hash),
            ),
            (
                record("k", b"a").with_explicit_hash_key(hash),
                record("j", b"b").with_explicit_hash_key(HashKey::new(7)),
            ),
            (
                record("k", b"a"),
                record("k", b"b").with_explicit_hash_key(hash),
            ),
        ] {
            let mut aggregator = Aggregator::default();
            aggregator
                .try_push(&first)
                .unwrap_or_else(|e| panic!("{e}"));
            let predicted = aggregator.size_with(&second);
            aggregator
                .try_push(&second)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(aggregator.size(), predicted);
            let aggregate = aggregator.finish().unwrap_or_else(|| panic!("two records"));
            assert_eq!(aggregate.data().len(), predicted);
            let back = crate::deaggregate(&aggregate);
            let keys: Vec<_> = back
                .iter()
                .map(|r| {
                    (
                        r.partition_key().to_owned(),
                        r.explicit_hash_key(),
                        r.data().to_vec(),
                    )
                })
                .collect();
            let expected: Vec<_> = [&first, &second]
                .iter()
                .map(|r| {
                    let key = r.partition_key().as_str().to_owned();
                    (key, r.explicit_hash_key(), r.data().to_vec())
                })
                .collect();
            assert_eq!(keys, expected);
        }
    }

    #[test]
    fn decimal_len_matches_formatting() {
        for value in [0u128, 9, 10, 99, 100, u128::MAX] {
            assert_eq!(
                decimal_len(HashKey::new(value)),
                value.to_string().len(),
                "{value}"
            );
        }
    }

    #[test]
    fn max_size_bounds() {
        assert_eq!(MaxAggregateSize::new(64).map(MaxAggregateSize::get), Ok(64));
        assert!(MaxAggregateSize::new(10 * 1024 * 1024).is_ok());
        let error = MaxAggregateSize::new(10 * 1024 * 1024 + 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "aggregation_max_size is 10485761 bytes; it must be from 64 to 10485760"
        );
    }
}
