//! De-aggregation: the consumer side, with the KCL's rules.
//!
//! The parser is written against the wire format directly (with `prost`'s varint primitives) rather
//! than through generated structs, for three reasons: proto2 field presence must be observable
//! (required fields, the optional explicit-hash-key index), data must stay zero-copy slices of the
//! input, and hostile input must never size an allocation before the bytes it describes are present.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::wire::{DIGEST_LEN, MAGIC, tag};
use crate::{HashKey, HashKeyRange, KinesisRecord};

/// One user record recovered from a Kinesis record.
///
/// It shares the Kinesis record's buffer: neither the data nor the partition key is copied.
/// Equality compares what the record says (keys, data, position), not where its bytes live.
#[derive(Clone)]
pub struct DeaggregatedRecord {
    /// The Kinesis record's data; for an aggregate, both the key and the payload are ranges of it.
    source: Bytes,
    data: Range<usize>,
    partition_key: KeyText,
    explicit_hash_key: Option<HashKey>,
    sub_sequence_number: u64,
    aggregated: bool,
}

/// Where a de-aggregated record's partition key lives.
#[derive(Clone)]
enum KeyText {
    /// A range of `source` that was checked to be UTF-8 when the aggregate was decoded.
    InSource(Range<usize>),
    /// The outer key of a plain record that passed through, or a key that was not UTF-8,
    /// decoded lossily as the KCL decodes it.
    Outer(Arc<str>),
}

impl DeaggregatedRecord {
    /// The user record's partition key.
    pub fn partition_key(&self) -> &str {
        match &self.partition_key {
            // The range was validated as UTF-8 during decoding, so the fallback is unreachable;
            // it exists only because this crate forbids `unsafe` (no `from_utf8_unchecked`).
            KeyText::InSource(range) => self
                .source
                .get(range.clone())
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .unwrap_or_default(),
            KeyText::Outer(key) => key,
        }
    }

    /// The explicit hash key, only if the producer set one for this user record.
    pub fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit_hash_key
    }

    /// The hash key that routes this user record: the explicit one, or MD5 of the partition key.
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .unwrap_or_else(|| HashKey::from_partition_key(self.partition_key()))
    }

    /// The payload.
    pub fn data(&self) -> &[u8] {
        self.source.get(self.data.clone()).unwrap_or_default()
    }

    /// The payload as `Bytes`, sharing the Kinesis record's buffer (no copy).
    pub fn data_bytes(&self) -> Bytes {
        self.source.slice(self.data.clone())
    }

    /// The payload by value, sharing the Kinesis record's buffer (no copy).
    pub fn into_data(self) -> Bytes {
        self.data_bytes()
    }

    /// Position within the aggregate, from 0 (always 0 for a record that was not aggregated). Together
    /// with the Kinesis sequence number it identifies the user record for checkpointing.
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number
    }

    /// Whether the record came out of an aggregate (`false` for a plain record passed through).
    pub fn is_aggregated(&self) -> bool {
        self.aggregated
    }
}

impl PartialEq for DeaggregatedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.sub_sequence_number == other.sub_sequence_number
            && self.aggregated == other.aggregated
            && self.explicit_hash_key == other.explicit_hash_key
            && self.partition_key() == other.partition_key()
            && self.data() == other.data()
    }
}

impl Eq for DeaggregatedRecord {}

impl fmt::Debug for DeaggregatedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeaggregatedRecord")
            .field("partition_key", &self.partition_key())
            .field("explicit_hash_key", &self.explicit_hash_key)
            .field("data", &Bytes::copy_from_slice(self.data()))
            .field("sub_sequence_number", &self.sub_sequence_number)
            .field("aggregated", &self.aggregated)
            .finish()
    }
}

/// Splits a Kinesis record into its user records, exactly as the KCL decides.
///
/// The record is treated as an aggregate only if its data starts with the magic `F3 89 9A C2`, has
/// more than 16 bytes after it, the MD5 trailer matches and the protobuf is well formed (required
/// fields present). Anything else passes through as one plain record with sub-sequence number 0,
/// as the KCL does. Use [`deaggregate_strict`] to learn *why* a record is not a valid aggregate.
///
/// Inside a well-formed aggregate the KCL reads the user records in order, and so does this
/// function:
///
/// - a table index is read as the KCL's cast to a 32-bit `int` reads it (an index of 2^32 is 0);
/// - a partition key that is not UTF-8 is decoded lossily (malformed bytes become U+FFFD), and its
///   hash key is the MD5 of that decoded text;
/// - an explicit hash key is read as Java's `BigInteger` reads it (a leading `+` or `-`, leading
///   zeros, the decimal digits of every script in Unicode 15.0, as Java 21); one that is negative
///   or above 2^128 − 1 lies outside every shard;
/// - at an index out of range or an explicit hash key that is not a number, the KCL stops: the
///   records before it are delivered, the rest are not, and nothing passes through whole;
/// - a user record whose hash key lies outside 0..=2^128 − 1 makes the KCL drop the whole
///   aggregate: this function then returns no record for it.
///
/// ```
/// use kpl_aggregation::{KinesisRecord, deaggregate};
///
/// let plain = KinesisRecord::new("user-42", "not an aggregate");
/// let records = deaggregate(&plain);
/// assert_eq!(records.len(), 1);
/// assert!(!records[0].is_aggregated());
/// assert_eq!(records[0].partition_key(), "user-42");
/// ```
pub fn deaggregate(record: &KinesisRecord) -> Vec<DeaggregatedRecord> {
    let source = record.data();
    match kcl_walk(source, HashKeyRange::FULL, |place| {
        shared_record(source, place)
    }) {
        KclWalk::NotAggregate => vec![passthrough(record)],
        KclWalk::Read { records, end } => match end {
            WalkEnd::Outside { .. } => Vec::new(),
            WalkEnd::Complete | WalkEnd::Stopped => records,
        },
    }
}

/// A user record read out of a Kinesis record by [`deaggregate_borrowed`]: its partition key and
/// data borrow the Kinesis record's bytes, so reading it neither copies nor counts references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BorrowedRecord<'a> {
    partition_key: Cow<'a, str>,
    explicit_hash_key: Option<HashKey>,
    data: &'a [u8],
    sub_sequence_number: u64,
    aggregated: bool,
}

impl<'a> BorrowedRecord<'a> {
    /// The user record's partition key (owned only when it was not UTF-8 and was read lossily,
    /// as the KCL reads it).
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key, only if the producer set one for this user record.
    pub fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit_hash_key
    }

    /// The hash key that routes this user record: the explicit one, or MD5 of the partition key.
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .unwrap_or_else(|| HashKey::from_partition_key(&self.partition_key))
    }

    /// The payload, borrowed from the Kinesis record.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Position within the aggregate, from 0 (always 0 for a record that was not aggregated).
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number
    }

    /// Whether the record came out of an aggregate (`false` for a plain record passed through).
    pub fn is_aggregated(&self) -> bool {
        self.aggregated
    }
}

/// [`deaggregate`] without owning anything: the same user records by the same KCL rules, each
/// borrowing its key and data from `record`. For a consumer that handles each record before it
/// lets go of the Kinesis record, this is the fastest way to read an aggregate: one allocation
/// for the list, none per user record.
///
/// ```
/// use kpl_aggregation::{Aggregator, PartitionKey, UserRecord, deaggregate_borrowed};
///
/// let mut aggregator = Aggregator::default();
/// for key in ["a", "b"] {
///     aggregator.try_push(&UserRecord::new(PartitionKey::new(key)?, "payload"))?;
/// }
/// let kinesis_record = aggregator.finish().expect("two records");
/// let records = deaggregate_borrowed(&kinesis_record);
/// assert_eq!(records.len(), 2);
/// assert_eq!((records[1].partition_key(), records[1].data()), ("b", &b"payload"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn deaggregate_borrowed(record: &KinesisRecord) -> Vec<BorrowedRecord<'_>> {
    borrowed_records(record, verified_body(record.data()).ok())
}

/// [`deaggregate_borrowed`] for many Kinesis records at once, as `GetRecords` returns them: each
/// record's user records, in order. The aggregates' MD5 trailers, most of the work, are checked
/// eight side by side, which makes the whole about twice as fast per user record as one Kinesis
/// record at a time (docs/benchmarks.md).
///
/// ```
/// use kpl_aggregation::{Aggregator, KinesisRecord, PartitionKey, UserRecord, deaggregate_many_borrowed};
///
/// let mut aggregator = Aggregator::default();
/// aggregator.try_push(&UserRecord::new(PartitionKey::new("a")?, "one"))?;
/// aggregator.try_push(&UserRecord::new(PartitionKey::new("b")?, "two"))?;
/// let batch = [aggregator.finish().expect("two records"), KinesisRecord::new("c", "plain")];
/// let read = deaggregate_many_borrowed(&batch);
/// assert_eq!(read.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
/// assert_eq!(read[1][0].data(), b"plain");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn deaggregate_many_borrowed(records: &[KinesisRecord]) -> Vec<Vec<BorrowedRecord<'_>>> {
    let framed: Vec<Option<Range<usize>>> = records
        .iter()
        .map(|record| framed_body(record.data()).ok())
        .collect();
    let bodies: Vec<&[u8]> = records
        .iter()
        .zip(&framed)
        .filter_map(|(record, body)| Some(&record.data()[body.clone()?]))
        .collect();
    let mut digests = crate::md5_lanes::md5_many(&bodies).into_iter();
    records
        .iter()
        .zip(framed)
        .map(|(record, body)| {
            let verified = body.and_then(|body| {
                let digest = digests.next()?;
                check_trailer(record.data(), body, digest).ok()
            });
            borrowed_records(record, verified)
        })
        .collect()
}

/// The user records of `record`, borrowing it, given where its verified protobuf is.
fn borrowed_records(record: &KinesisRecord, body: Option<Range<usize>>) -> Vec<BorrowedRecord<'_>> {
    let data: &[u8] = record.data();
    let borrowed = |place: RecordPlace| BorrowedRecord {
        partition_key: place.key_text(data),
        explicit_hash_key: place.explicit_hash_key,
        data: data.get(place.data.clone()).unwrap_or_default(),
        sub_sequence_number: place.position,
        aggregated: true,
    };
    match kcl_walk_verified(data, body, HashKeyRange::FULL, borrowed) {
        KclWalk::NotAggregate => vec![BorrowedRecord {
            partition_key: Cow::Borrowed(record.partition_key()),
            explicit_hash_key: record.explicit_hash_key(),
            data,
            sub_sequence_number: 0,
            aggregated: false,
        }],
        KclWalk::Read { records, end } => match end {
            WalkEnd::Outside { .. } => Vec::new(),
            WalkEnd::Complete | WalkEnd::Stopped => records,
        },
    }
}

/// Decodes a Kinesis record that must be an aggregate, with a typed error when it is not.
///
/// ```
/// use kpl_aggregation::{DecodeErrorKind, KinesisRecord, deaggregate_strict};
///
/// let plain = KinesisRecord::new("user-42", "not an aggregate");
/// let error = deaggregate_strict(&plain).unwrap_err();
/// assert_eq!(error.kind(), DecodeErrorKind::BadMagic);
/// ```
pub fn deaggregate_strict(record: &KinesisRecord) -> Result<Vec<DeaggregatedRecord>, DecodeError> {
    let data = record.data();
    let body = verified_body(data)?;
    let message = parse_aggregated_record(data, body)?;
    message.into_records(data)
}

/// [`deaggregate`], then the KCL's hash-range filter for a consumer reading shard `range`.
///
/// If any user record of an aggregate hashes outside `range`, the KCL discards the whole aggregate
/// without a word. This function reports it as [`ShardDeaggregation::Dropped`], with the records,
/// so the caller can log, count or keep them. Plain (non-aggregated) records are never filtered,
/// also as in the KCL.
///
/// ```
/// use kpl_aggregation::{HashKeyRange, KinesisRecord, ShardDeaggregation, deaggregate_for_shard};
///
/// let plain = KinesisRecord::new("user-42", "payload");
/// match deaggregate_for_shard(&plain, HashKeyRange::FULL) {
///     ShardDeaggregation::Kept(records) => assert_eq!(records.len(), 1),
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
pub fn deaggregate_for_shard(record: &KinesisRecord, range: HashKeyRange) -> ShardDeaggregation {
    let source = record.data();
    match kcl_walk(source, range, |place| shared_record(source, place)) {
        KclWalk::NotAggregate => ShardDeaggregation::Kept(vec![passthrough(record)]),
        KclWalk::Read { records, end } => match end {
            WalkEnd::Outside { position, hash_key } => {
                ShardDeaggregation::Dropped(DroppedAggregate {
                    records,
                    range,
                    first_outside: position,
                    first_outside_hash_key: hash_key,
                })
            }
            WalkEnd::Complete | WalkEnd::Stopped => ShardDeaggregation::Kept(records),
        },
    }
}

/// What the KCL makes of a Kinesis record, for a consumer of one shard's range; `R` is how a
/// user record is handed out (owning a share of the buffer, or borrowing it).
enum KclWalk<R> {
    /// Not an aggregate: it passes through whole.
    NotAggregate,
    /// An aggregate, read in order. With [`WalkEnd::Outside`], `records` are what could be read
    /// of the dropped aggregate (for reporting); otherwise they are what the KCL delivers.
    Read { records: Vec<R>, end: WalkEnd },
}

/// Where a user record of an aggregate lies in the Kinesis record's data, as the walk found it.
struct RecordPlace {
    data: Range<usize>,
    /// The partition key's bytes, and whether they are UTF-8 (else they are read lossily).
    key: Range<usize>,
    key_is_utf8: bool,
    explicit_hash_key: Option<HashKey>,
    position: u64,
}

impl RecordPlace {
    /// The partition key as the KCL reads it: the text, or its lossy decoding.
    fn key_text<'a>(&self, data: &'a [u8]) -> Cow<'a, str> {
        let bytes = data.get(self.key.clone()).unwrap_or_default();
        if self.key_is_utf8 {
            // Checked to be UTF-8 when the table was read: the fallback cannot happen (and
            // exists because this crate forbids `unsafe`, so no `from_utf8_unchecked`).
            Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default())
        } else {
            String::from_utf8_lossy(bytes)
        }
    }
}

enum WalkEnd {
    /// Every user record was read.
    Complete,
    /// A bad table index or explicit hash key stopped the KCL; the records before it count.
    Stopped,
    /// The user record at `position` hashes outside the range: the KCL drops the aggregate.
    /// `hash_key` is `None` when it is outside 0..=2^128 − 1 altogether.
    Outside {
        position: u64,
        hash_key: Option<HashKey>,
    },
}

/// How the KCL's `BigInteger` reads an explicit hash key.
enum JavaHashKey {
    Valid(HashKey),
    /// A number, but negative or above 2^128 − 1: outside every shard.
    OutOfSpace,
}

/// Java's `new BigInteger(text)`: an optional sign, then one or more digits, leading zeros
/// allowed. `None` where Java throws `NumberFormatException`.
fn java_big_integer(text: &[u8]) -> Option<JavaHashKey> {
    // The field is a protobuf string: Java decodes it (lossily), then `BigInteger` takes every
    // Unicode decimal digit, not only ASCII ones.
    let text = String::from_utf8_lossy(text);
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, &text[..]),
    };
    let ascii: Option<Vec<u8>> = digits
        .chars()
        .map(|c| java_decimal_digit(c).map(|d| b'0' + d))
        .collect();
    let ascii = ascii.filter(|ascii| !ascii.is_empty())?;
    let magnitude = HashKey::parse_decimal_bytes(&ascii).ok();
    Some(match magnitude {
        Some(value) if !negative || value.get() == 0 => JavaHashKey::Valid(value),
        _ => JavaHashKey::OutOfSpace,
    })
}

/// The zero of every run of ten Unicode decimal digits (general category `Nd`) in Unicode 15.0,
/// the version Java 21's `Character.digit` follows.
const UNICODE_DIGIT_ZEROS: [u32; 68] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x11F50, 0x16A60, 0x16AC0,
    0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E950,
    0x1FBF0,
];

/// The value of a decimal digit as Java's `Character.digit(c, 10)` reads it.
fn java_decimal_digit(c: char) -> Option<u8> {
    let code = u32::from(c);
    let run = UNICODE_DIGIT_ZEROS.partition_point(|&zero| zero <= code);
    let zero = UNICODE_DIGIT_ZEROS[run.checked_sub(1)?];
    u8::try_from(code - zero).ok().filter(|&digit| digit < 10)
}

/// A `uint64` table index as the KCL's `(int)` cast reads it: the low 32 bits, as a signed int.
fn java_int_index(index: u64) -> Option<usize> {
    let as_int = index as u32 as i32;
    usize::try_from(as_int).ok()
}

/// The KCL's de-aggregation loop over one Kinesis record, for a consumer of `range`; `make`
/// turns each user record's place into what is handed out.
fn kcl_walk<R>(data: &[u8], range: HashKeyRange, make: impl FnMut(RecordPlace) -> R) -> KclWalk<R> {
    kcl_walk_verified(data, verified_body(data).ok(), range, make)
}

/// [`kcl_walk`] once the trailer is checked: `body` is the protobuf's place when the framing
/// and the MD5 trailer are right, `None` when the record is not an aggregate.
fn kcl_walk_verified<R>(
    data: &[u8],
    body: Option<Range<usize>>,
    range: HashKeyRange,
    mut make: impl FnMut(RecordPlace) -> R,
) -> KclWalk<R> {
    let Some(body) = body else {
        return KclWalk::NotAggregate;
    };
    let Ok(parsed) = parse_aggregated_record(data, body) else {
        return KclWalk::NotAggregate;
    };
    let mut records = Vec::with_capacity(parsed.records.len());
    let mut outside: Option<(u64, Option<HashKey>)> = None;
    let mut end = WalkEnd::Complete;
    for (position, raw) in parsed.records.iter().enumerate() {
        let position = position as u64;
        let Some((key_range, utf8)) = java_int_index(raw.partition_key_index)
            .and_then(|index| parsed.partition_keys.get(index))
        else {
            end = WalkEnd::Stopped;
            break;
        };
        let explicit = match raw.explicit_hash_key_index {
            None => None,
            Some(index) => {
                let text = java_int_index(index)
                    .and_then(|index| parsed.explicit_hash_keys.get(index))
                    .and_then(|entry| java_big_integer(&data[entry.clone()]));
                match text {
                    Some(value) => Some(value),
                    None => {
                        end = WalkEnd::Stopped;
                        break;
                    }
                }
            }
        };
        let explicit_hash_key = match explicit {
            None => None,
            Some(JavaHashKey::Valid(hash_key)) => Some(hash_key),
            Some(JavaHashKey::OutOfSpace) => {
                // Outside every shard; it cannot be reported as a record with a hash key.
                if outside.is_none() {
                    outside = Some((position, None));
                }
                break;
            }
        };
        let place = RecordPlace {
            data: raw.data.clone(),
            key: key_range.clone(),
            key_is_utf8: *utf8,
            explicit_hash_key,
            position,
        };
        // Every 128-bit hash key lies in the full range: no need to hash the key to know it.
        if outside.is_none() && range != HashKeyRange::FULL {
            let hash_key = explicit_hash_key
                .unwrap_or_else(|| HashKey::from_partition_key(&place.key_text(data)));
            if !range.contains(hash_key) {
                outside = Some((position, Some(hash_key)));
            }
        }
        records.push(make(place));
    }
    if let Some((position, hash_key)) = outside {
        end = WalkEnd::Outside { position, hash_key };
    }
    KclWalk::Read { records, end }
}

/// A user record of an aggregate that shares `source`, the Kinesis record's buffer.
fn shared_record(source: &Bytes, place: RecordPlace) -> DeaggregatedRecord {
    let partition_key = if place.key_is_utf8 {
        KeyText::InSource(place.key.clone())
    } else {
        KeyText::Outer(Arc::from(place.key_text(source)))
    };
    DeaggregatedRecord {
        source: source.clone(),
        data: place.data,
        partition_key,
        explicit_hash_key: place.explicit_hash_key,
        sub_sequence_number: place.position,
        aggregated: true,
    }
}

/// What a consumer of one shard gets from a Kinesis record: see [`deaggregate_for_shard`].
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ShardDeaggregation {
    /// Every user record belongs to the shard (or the record was not an aggregate).
    Kept(Vec<DeaggregatedRecord>),
    /// The aggregate holds a user record outside the shard's range; the KCL drops all of it.
    Dropped(DroppedAggregate),
}

impl ShardDeaggregation {
    /// The records a KCL consumer would process: all of them, or none if the aggregate was dropped.
    pub fn into_kept(self) -> Vec<DeaggregatedRecord> {
        match self {
            Self::Kept(records) => records,
            Self::Dropped(_) => Vec::new(),
        }
    }
}

/// An aggregate that the KCL would drop because it holds a user record outside the shard's range.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DroppedAggregate {
    records: Vec<DeaggregatedRecord>,
    range: HashKeyRange,
    first_outside: u64,
    first_outside_hash_key: Option<HashKey>,
}

impl DroppedAggregate {
    /// The shard's range the aggregate was checked against.
    pub fn range(&self) -> HashKeyRange {
        self.range
    }

    /// Sub-sequence number of the first user record outside the range.
    pub fn first_outside(&self) -> u64 {
        self.first_outside
    }

    /// Hash key of the first user record outside the range; `None` when its explicit hash key
    /// is a number outside 0..=2^128 − 1 (negative, or too large), which no shard holds.
    pub fn first_outside_hash_key(&self) -> Option<HashKey> {
        self.first_outside_hash_key
    }

    /// The user records of the dropped aggregate that could be read (up to a bad index or
    /// explicit hash key, if it has one).
    pub fn records(&self) -> &[DeaggregatedRecord] {
        &self.records
    }

    /// The user records of the dropped aggregate that could be read, by value.
    pub fn into_records(self) -> Vec<DeaggregatedRecord> {
        self.records
    }
}

impl fmt::Display for DroppedAggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "aggregate of {} user records dropped: sub-record {} has hash key ",
            self.records.len(),
            self.first_outside,
        )?;
        match self.first_outside_hash_key {
            Some(hash_key) => write!(f, "{hash_key}")?,
            None => f.write_str("outside 0..=2^128-1")?,
        }
        write!(
            f,
            ", outside the shard's range {}..={}",
            self.range.start(),
            self.range.end()
        )
    }
}

/// Why a Kinesis record is not a valid aggregate.
///
/// Boxed, so that the parser's `Result`s stay two words wide on the hot path.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DecodeError(Box<DecodeErrorDetail>);

#[derive(Clone, PartialEq, Eq, Debug)]
struct DecodeErrorDetail {
    kind: DecodeErrorKind,
    detail: Cow<'static, str>,
}

impl DecodeError {
    #[cold]
    fn new(kind: DecodeErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self(Box::new(DecodeErrorDetail {
            kind,
            detail: detail.into(),
        }))
    }

    /// The category of the problem.
    pub fn kind(&self) -> DecodeErrorKind {
        self.0.kind
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.0.kind {
            DecodeErrorKind::BadMagic => {
                "record does not start with the aggregation magic F3 89 9A C2"
            }
            DecodeErrorKind::Truncated => "aggregated record is truncated",
            DecodeErrorKind::ChecksumMismatch => "aggregated record's MD5 trailer does not match",
            DecodeErrorKind::Protobuf => "aggregated record's protobuf is malformed",
            DecodeErrorKind::MissingRequiredField => "aggregated record lacks a required field",
            DecodeErrorKind::IndexOutOfRange => "aggregated record has a table index out of range",
            DecodeErrorKind::InvalidUtf8 => {
                "aggregated record has a partition key that is not UTF-8"
            }
            DecodeErrorKind::InvalidExplicitHashKey => {
                "aggregated record has an invalid explicit hash key"
            }
        };
        if self.0.detail.is_empty() {
            f.write_str(what)
        } else {
            write!(f, "{what}: {}", self.0.detail)
        }
    }
}

impl std::error::Error for DecodeError {}

/// The categories of [`DecodeError`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The data does not start with `F3 89 9A C2`: a plain record.
    BadMagic,
    /// The data is too short to hold magic, a protobuf and the 16-byte MD5 trailer.
    Truncated,
    /// The MD5 of the protobuf does not match the trailer.
    ChecksumMismatch,
    /// The protobuf does not parse: bad varint, length past the end, unsupported wire type.
    Protobuf,
    /// A `Record` lacks `partition_key_index` or `data`, or a `Tag` lacks `key` (proto2 `required`).
    MissingRequiredField,
    /// A `Record` refers to a table entry that does not exist.
    IndexOutOfRange,
    /// A partition key or tag in the tables is not valid UTF-8.
    InvalidUtf8,
    /// A referenced explicit hash key is not a decimal integer from 0 to 2^128 − 1.
    InvalidExplicitHashKey,
}

fn passthrough(record: &KinesisRecord) -> DeaggregatedRecord {
    DeaggregatedRecord {
        source: record.data().clone(),
        data: 0..record.data().len(),
        partition_key: KeyText::Outer(Arc::from(record.partition_key())),
        explicit_hash_key: record.explicit_hash_key(),
        sub_sequence_number: 0,
        aggregated: false,
    }
}

/// Checks magic, length and MD5; returns the protobuf's position in `data`.
fn verified_body(data: &[u8]) -> Result<Range<usize>, DecodeError> {
    let body = framed_body(data)?;
    let digest: [u8; DIGEST_LEN] = Md5::digest(&data[body.clone()]).into();
    check_trailer(data, body, digest)
}

/// `body` (from [`framed_body`]) if `digest`, its MD5, is the trailer that follows it.
fn check_trailer(
    data: &[u8],
    body: Range<usize>,
    digest: [u8; DIGEST_LEN],
) -> Result<Range<usize>, DecodeError> {
    if digest[..] != data[body.end..] {
        return Err(DecodeError::new(DecodeErrorKind::ChecksumMismatch, ""));
    }
    Ok(body)
}

/// Checks magic and length; returns where the protobuf would be, before its trailer.
fn framed_body(data: &[u8]) -> Result<Range<usize>, DecodeError> {
    if data.len() < MAGIC.len() {
        let kind = if MAGIC.starts_with(data) && !data.is_empty() {
            DecodeErrorKind::Truncated
        } else {
            DecodeErrorKind::BadMagic
        };
        return Err(DecodeError::new(kind, format!("{} bytes", data.len())));
    }
    if data[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::new(DecodeErrorKind::BadMagic, ""));
    }
    let after_magic = data.len() - MAGIC.len();
    if after_magic <= DIGEST_LEN {
        return Err(DecodeError::new(
            DecodeErrorKind::Truncated,
            format!("{after_magic} bytes after the magic; more than {DIGEST_LEN} are needed"),
        ));
    }
    Ok(MAGIC.len()..data.len() - DIGEST_LEN)
}

/// A `Record` as found on the wire, before its indexes are checked against the tables.
struct RawRecord {
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    data: Range<usize>,
}

/// Tables and records of an `AggregatedRecord`, positions relative to the whole Kinesis data.
#[derive(Default)]
struct ParsedAggregate {
    /// Ranges of the data holding each partition key, and whether it is valid UTF-8.
    partition_keys: Vec<(Range<usize>, bool)>,
    /// Ranges of the explicit hash keys; only an entry a record refers to is read.
    explicit_hash_keys: Vec<Range<usize>>,
    records: Vec<RawRecord>,
}

impl ParsedAggregate {
    fn into_records(self, data: &Bytes) -> Result<Vec<DeaggregatedRecord>, DecodeError> {
        if let Some(position) = self.partition_keys.iter().position(|(_, utf8)| !utf8) {
            return Err(DecodeError::new(
                DecodeErrorKind::InvalidUtf8,
                format!("partition key table entry {position}"),
            ));
        }
        let mut out = Vec::with_capacity(self.records.len());
        for (position, raw) in self.records.into_iter().enumerate() {
            let partition_key = usize::try_from(raw.partition_key_index)
                .ok()
                .and_then(|index| self.partition_keys.get(index))
                .map(|(range, _)| range)
                .ok_or_else(|| {
                    DecodeError::new(
                        DecodeErrorKind::IndexOutOfRange,
                        format!(
                            "record {position} has partition_key_index {} but the table has {} entries",
                            raw.partition_key_index,
                            self.partition_keys.len()
                        ),
                    )
                })?;
            let explicit_hash_key = match raw.explicit_hash_key_index {
                None => None,
                Some(index) => {
                    let entry = usize::try_from(index)
                        .ok()
                        .and_then(|i| self.explicit_hash_keys.get(i))
                        .ok_or_else(|| {
                            DecodeError::new(
                                DecodeErrorKind::IndexOutOfRange,
                                format!(
                                    "record {position} has explicit_hash_key_index {index} but the table has {} entries",
                                    self.explicit_hash_keys.len()
                                ),
                            )
                        })?;
                    Some(
                        HashKey::parse_decimal_bytes(&data[entry.clone()]).map_err(|_| {
                            DecodeError::new(
                                DecodeErrorKind::InvalidExplicitHashKey,
                                format!("table entry {index}, used by record {position}"),
                            )
                        })?,
                    )
                }
            };
            out.push(DeaggregatedRecord {
                source: data.clone(),
                data: raw.data,
                partition_key: KeyText::InSource(partition_key.clone()),
                explicit_hash_key,
                sub_sequence_number: position as u64,
                aggregated: true,
            });
        }
        Ok(out)
    }
}

fn parse_aggregated_record(
    data: &[u8],
    body: Range<usize>,
) -> Result<ParsedAggregate, DecodeError> {
    let mut parsed = ParsedAggregate::default();
    let mut reader = Reader::new(data, body);
    while !reader.is_empty() {
        // Any other tag, a known field number with an unexpected wire type included, is an unknown
        // field and is skipped, as protobuf parsers do.
        let field = reader.varint()?;
        match u8::try_from(field) {
            Ok(tag::PARTITION_KEY_TABLE) => {
                let entry = reader.length_delimited()?;
                let key = &data[entry.clone()];
                let utf8 = key.is_ascii() || std::str::from_utf8(key).is_ok();
                parsed.partition_keys.push((entry, utf8));
            }
            Ok(tag::EXPLICIT_HASH_KEY_TABLE) => {
                parsed.explicit_hash_keys.push(reader.length_delimited()?);
            }
            Ok(tag::RECORDS) => {
                let record = reader.length_delimited()?;
                parsed.records.push(parse_record(data, record)?);
            }
            _ => reader.skip(field)?,
        }
    }
    Ok(parsed)
}

fn parse_record(data: &[u8], range: Range<usize>) -> Result<RawRecord, DecodeError> {
    let mut reader = Reader::new(data, range);
    let mut partition_key_index = None;
    let mut explicit_hash_key_index = None;
    let mut payload = None;
    while !reader.is_empty() {
        let field = reader.varint()?;
        match u8::try_from(field) {
            Ok(tag::PARTITION_KEY_INDEX) => partition_key_index = Some(reader.varint()?),
            Ok(tag::EXPLICIT_HASH_KEY_INDEX) => explicit_hash_key_index = Some(reader.varint()?),
            Ok(tag::DATA) => payload = Some(reader.length_delimited()?),
            Ok(tag::TAGS) => {
                let tag_range = reader.length_delimited()?;
                check_tag(data, tag_range)?;
            }
            _ => reader.skip(field)?,
        }
    }
    let missing = |field| DecodeError::new(DecodeErrorKind::MissingRequiredField, field);
    Ok(RawRecord {
        partition_key_index: partition_key_index
            .ok_or_else(|| missing("Record.partition_key_index"))?,
        explicit_hash_key_index,
        data: payload.ok_or_else(|| missing("Record.data"))?,
    })
}

/// Tags are never produced by the KPL and are not surfaced, but a proto2 parser (and so the KCL)
/// rejects a `Tag` without its required `key`, so this parser does too.
fn check_tag(data: &[u8], range: Range<usize>) -> Result<(), DecodeError> {
    let mut reader = Reader::new(data, range);
    let mut has_key = false;
    while !reader.is_empty() {
        let field = reader.varint()?;
        match u8::try_from(field) {
            Ok(known @ (tag::TAG_KEY | tag::TAG_VALUE)) => {
                let text = reader.length_delimited()?;
                if std::str::from_utf8(&data[text]).is_err() {
                    return Err(DecodeError::new(DecodeErrorKind::InvalidUtf8, "Tag"));
                }
                has_key |= known == tag::TAG_KEY;
            }
            _ => reader.skip(field)?,
        }
    }
    if has_key {
        Ok(())
    } else {
        Err(DecodeError::new(
            DecodeErrorKind::MissingRequiredField,
            "Tag.key",
        ))
    }
}

/// A cursor over `data[range]` that reads protobuf primitives and never reads past `range.end`.
struct Reader<'a> {
    data: &'a [u8],
    position: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], range: Range<usize>) -> Self {
        Self {
            data,
            position: range.start,
            end: range.end,
        }
    }

    fn is_empty(&self) -> bool {
        self.position >= self.end
    }

    fn remaining(&self) -> &'a [u8] {
        self.data.get(self.position..self.end).unwrap_or_default()
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        // Tags, indexes and small lengths are single bytes; only longer varints go through prost.
        match self.data.get(self.position) {
            Some(&byte) if byte < 0x80 && self.position < self.end => {
                self.position += 1;
                Ok(u64::from(byte))
            }
            _ => self.long_varint(),
        }
    }

    #[cold]
    fn long_varint(&mut self) -> Result<u64, DecodeError> {
        let mut buf = self.remaining();
        let before = buf.len();
        let value = prost::encoding::decode_varint(&mut buf)
            .map_err(|_| DecodeError::new(DecodeErrorKind::Protobuf, "invalid varint"))?;
        self.position += before - buf.len();
        Ok(value)
    }

    /// Reads a length prefix and returns the range of the bytes it announces.
    #[inline]
    fn length_delimited(&mut self) -> Result<Range<usize>, DecodeError> {
        let len = self.varint()?;
        let available = self.end - self.position;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= available)
            .ok_or_else(|| {
                DecodeError::new(
                    DecodeErrorKind::Protobuf,
                    format!("length {len} runs past the end ({available} bytes left)"),
                )
            })?;
        let start = self.position;
        self.position += len;
        Ok(start..self.position)
    }

    /// Skips the value of an unknown field.
    fn skip(&mut self, tag: u64) -> Result<(), DecodeError> {
        if tag >> 3 == 0 {
            return Err(DecodeError::new(
                DecodeErrorKind::Protobuf,
                "field number 0",
            ));
        }
        match tag & 0x7 {
            0 => self.varint().map(drop),
            1 => self.fixed(8),
            2 => self.length_delimited().map(drop),
            5 => self.fixed(4),
            wire_type => Err(DecodeError::new(
                DecodeErrorKind::Protobuf,
                format!("unsupported wire type {wire_type}"),
            )),
        }
    }

    fn fixed(&mut self, len: usize) -> Result<(), DecodeError> {
        if self.end - self.position < len {
            return Err(DecodeError::new(
                DecodeErrorKind::Protobuf,
                format!("fixed{} value runs past the end", len * 8),
            ));
        }
        self.position += len;
        Ok(())
    }
}
