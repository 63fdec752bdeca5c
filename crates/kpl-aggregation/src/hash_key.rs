//! 128-bit hash keys, hash-key ranges and validated partition keys.

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

/// A position on the 128-bit Kinesis hash-key ring.
///
/// Kinesis routes a record to the shard whose hash-key range contains the record's hash key. The hash
/// key is either given explicitly (the decimal `ExplicitHashKey` of the API) or derived from the
/// partition key: the MD5 digest of its UTF-8 bytes read as a big-endian unsigned integer.
///
/// ```
/// use kpl_aggregation::HashKey;
///
/// let key = HashKey::from_partition_key("pk-1");
/// assert_eq!(key.to_string(), "273922656776327812788301823748127981641");
/// assert_eq!("273922656776327812788301823748127981641".parse::<HashKey>(), Ok(key));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct HashKey(u128);

impl HashKey {
    /// The lowest hash key, 0.
    pub const MIN: Self = Self(0);
    /// The highest hash key, 2^128 − 1.
    pub const MAX: Self = Self(u128::MAX);

    /// Wraps a raw 128-bit value.
    pub const fn new(value: u128) -> Self {
        Self(value)
    }

    /// The raw 128-bit value.
    pub const fn get(self) -> u128 {
        self.0
    }

    /// The hash key Kinesis derives from a partition key: MD5 of its UTF-8 bytes, big-endian.
    pub fn from_partition_key(partition_key: &str) -> Self {
        let digest: [u8; 16] = Md5::digest(partition_key.as_bytes()).into();
        Self(u128::from_be_bytes(digest))
    }

    /// [`from_partition_key`](Self::from_partition_key) of many keys at once, in order: several
    /// MD5s computed side by side, which is faster per key than one at a time.
    ///
    /// ```
    /// use kpl_aggregation::HashKey;
    ///
    /// let keys = ["user-1", "user-2", "user-3"];
    /// let hash_keys = HashKey::from_partition_keys(&keys);
    /// assert_eq!(hash_keys[1], HashKey::from_partition_key("user-2"));
    /// ```
    pub fn from_partition_keys(partition_keys: &[&str]) -> Vec<Self> {
        let messages: Vec<&[u8]> = partition_keys.iter().map(|key| key.as_bytes()).collect();
        crate::md5_lanes::md5_many(&messages)
            .into_iter()
            .map(|digest| Self(u128::from_be_bytes(digest)))
            .collect()
    }

    /// Parses the decimal form used by the `ExplicitHashKey` API field.
    ///
    /// Accepts ASCII digits only (leading zeros allowed, as Java's `BigInteger` does); rejects an empty
    /// string, signs, whitespace and values above 2^128 − 1.
    pub fn parse_decimal(text: &str) -> Result<Self, HashKeyParseError> {
        Self::parse_decimal_bytes(text.as_bytes()).map_err(|reason| HashKeyParseError {
            input: text.to_owned(),
            reason,
        })
    }

    /// Byte-level parser shared with the decoder, which reads table entries straight from the wire.
    pub(crate) fn parse_decimal_bytes(text: &[u8]) -> Result<Self, HashKeyParseErrorReason> {
        if text.is_empty() {
            return Err(HashKeyParseErrorReason::Empty);
        }
        let mut value: u128 = 0;
        for (position, &byte) in text.iter().enumerate() {
            let digit = match byte {
                b'0'..=b'9' => u128::from(byte - b'0'),
                _ => return Err(HashKeyParseErrorReason::NotADigit { position }),
            };
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(digit))
                .ok_or(HashKeyParseErrorReason::TooLarge)?;
        }
        Ok(Self(value))
    }
}

impl fmt::Display for HashKey {
    /// The decimal form, as the `ExplicitHashKey` API field and the aggregation tables carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for HashKey {
    type Err = HashKeyParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_decimal(text)
    }
}

impl From<u128> for HashKey {
    fn from(value: u128) -> Self {
        Self(value)
    }
}

impl From<HashKey> for u128 {
    fn from(key: HashKey) -> Self {
        key.0
    }
}

/// Why a decimal explicit hash key was rejected.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("explicit hash key {:?} is invalid: {reason}", Excerpt(input))]
pub struct HashKeyParseError {
    input: String,
    reason: HashKeyParseErrorReason,
}

impl HashKeyParseError {
    /// The text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What was wrong with it.
    pub fn reason(&self) -> &HashKeyParseErrorReason {
        &self.reason
    }
}

/// The specific problem with a decimal explicit hash key.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashKeyParseErrorReason {
    /// The text was empty.
    #[error("it is empty; expected a decimal integer from 0 to 2^128-1")]
    Empty,
    /// A character that is not an ASCII digit (signs and whitespace included).
    #[error("the character at byte {position} is not a decimal digit 0-9")]
    NotADigit {
        /// Byte offset of the offending character.
        position: usize,
    },
    /// The value exceeds 2^128 − 1.
    #[error("it exceeds the maximum 2^128-1 = {}", u128::MAX)]
    TooLarge,
}

/// Shortens untrusted text so an error message stays readable.
struct Excerpt<'a>(&'a str);

impl fmt::Debug for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        match self.0.char_indices().nth(SHOWN) {
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
            None => fmt::Debug::fmt(self.0, f),
        }
    }
}

/// An inclusive range of hash keys, as a shard's `HashKeyRange` describes it.
///
/// ```
/// use kpl_aggregation::{HashKey, HashKeyRange};
///
/// let lower_half = HashKeyRange::new(HashKey::MIN, HashKey::new(u128::MAX / 2))?;
/// assert!(lower_half.contains(HashKey::new(0)));
/// assert!(!lower_half.contains(HashKey::MAX));
/// # Ok::<(), kpl_aggregation::InvalidHashKeyRange>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct HashKeyRange {
    start: HashKey,
    end: HashKey,
}

impl HashKeyRange {
    /// The whole ring, `0..=2^128-1`: the range of a stream's only shard.
    pub const FULL: Self = Self {
        start: HashKey::MIN,
        end: HashKey::MAX,
    };

    /// A range from `start` to `end`, both inclusive. Fails when `start > end`.
    pub fn new(start: HashKey, end: HashKey) -> Result<Self, InvalidHashKeyRange> {
        if start <= end {
            Ok(Self { start, end })
        } else {
            Err(InvalidHashKeyRange { start, end })
        }
    }

    /// The first hash key in the range.
    pub const fn start(&self) -> HashKey {
        self.start
    }

    /// The last hash key in the range (inclusive).
    pub const fn end(&self) -> HashKey {
        self.end
    }

    /// Whether `key` lies in `start..=end`.
    pub fn contains(&self, key: HashKey) -> bool {
        self.start <= key && key <= self.end
    }
}

/// A hash-key range whose start lies after its end.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("hash key range start {start} is greater than its end {end}")]
pub struct InvalidHashKeyRange {
    start: HashKey,
    end: HashKey,
}

/// A partition key that Kinesis accepts: 1 to 256 characters, counted as the service (and the
/// Java KPL) counts them, in UTF-16 code units: a character outside the Basic Multilingual Plane,
/// such as most emoji, counts twice.
///
/// Constructing one validates the length once, so every later use is known to be valid.
///
/// ```
/// use kpl_aggregation::PartitionKey;
///
/// let key = PartitionKey::new("user-42")?;
/// assert_eq!(key.as_str(), "user-42");
///
/// let error = PartitionKey::new("").unwrap_err();
/// assert_eq!(error.char_count(), 0);
/// assert_eq!(error.into_key(), ""); // the caller's value comes back
/// # Ok::<(), kpl_aggregation::PartitionKeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PartitionKey(String);

impl PartitionKey {
    /// The fewest characters (UTF-16 code units) a partition key may have.
    pub const MIN_CHARS: usize = 1;
    /// The most characters (UTF-16 code units) a partition key may have.
    pub const MAX_CHARS: usize = 256;
    /// The most UTF-8 bytes a valid partition key can take: three per UTF-16 code unit.
    pub const MAX_BYTES: usize = 3 * Self::MAX_CHARS;

    /// Validates `key`; on failure the error hands the string back.
    pub fn new(key: impl Into<String>) -> Result<Self, PartitionKeyError> {
        let key = key.into();
        // A UTF-8 byte never holds more than one UTF-16 code unit, so a key of 1..=256 bytes is
        // valid; only longer ones need counting.
        if (Self::MIN_CHARS..=Self::MAX_CHARS).contains(&key.len()) {
            return Ok(Self(key));
        }
        let char_count = key.encode_utf16().count();
        if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&char_count) {
            return Err(PartitionKeyError { key, char_count });
        }
        Ok(Self(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's length in UTF-8 bytes (what Kinesis counts against request and record sizes).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a valid partition key has at least one character.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The hash key Kinesis derives from this partition key (MD5, big-endian).
    pub fn hash_key(&self) -> HashKey {
        HashKey::from_partition_key(&self.0)
    }

    /// Gives the string back.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for PartitionKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PartitionKey {
    type Error = PartitionKeyError;

    fn try_from(key: String) -> Result<Self, Self::Error> {
        Self::new(key)
    }
}

impl TryFrom<&str> for PartitionKey {
    type Error = PartitionKeyError;

    fn try_from(key: &str) -> Result<Self, Self::Error> {
        Self::new(key)
    }
}

/// A partition key outside 1..=256 characters (UTF-16 code units). Holds the rejected string.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error(
    "partition_key has {char_count} characters (UTF-16 code units, as Kinesis counts them); it must have {min} to {max}",
    min = PartitionKey::MIN_CHARS,
    max = PartitionKey::MAX_CHARS
)]
pub struct PartitionKeyError {
    key: String,
    char_count: usize,
}

impl PartitionKeyError {
    /// How many characters the rejected key has, in UTF-16 code units as Kinesis counts them.
    pub fn char_count(&self) -> usize {
        self.char_count
    }

    /// The rejected key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Gives the rejected key back to the caller.
    pub fn into_key(self) -> String {
        self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_hash_key_matches_the_reference_vector() {
        assert_eq!(
            HashKey::from_partition_key("pk-1").get(),
            273_922_656_776_327_812_788_301_823_748_127_981_641
        );
    }

    #[test]
    fn decimal_round_trips_at_the_edges() {
        for value in [0u128, 1, 9, 10, u128::MAX / 3, u128::MAX - 1, u128::MAX] {
            let key = HashKey::new(value);
            assert_eq!(key.to_string().parse::<HashKey>(), Ok(key));
        }
        assert_eq!(HashKey::parse_decimal("007"), Ok(HashKey::new(7)));
    }

    #[test]
    fn decimal_rejects_what_java_biginteger_range_checks_reject() {
        let reason = |text: &str| *HashKey::parse_decimal(text).unwrap_err().reason();
        assert_eq!(reason(""), HashKeyParseErrorReason::Empty);
        assert_eq!(
            reason("-1"),
            HashKeyParseErrorReason::NotADigit { position: 0 }
        );
        assert_eq!(
            reason("+1"),
            HashKeyParseErrorReason::NotADigit { position: 0 }
        );
        assert_eq!(
            reason(" 1"),
            HashKeyParseErrorReason::NotADigit { position: 0 }
        );
        assert_eq!(
            reason("12a"),
            HashKeyParseErrorReason::NotADigit { position: 2 }
        );
        assert_eq!(
            reason("340282366920938463463374607431768211456"),
            HashKeyParseErrorReason::TooLarge
        );
        let message = HashKey::parse_decimal("340282366920938463463374607431768211456")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("340282366920938463463374607431768211455"),
            "{message}"
        );
    }

    #[test]
    fn long_bad_input_is_shortened_in_the_message() {
        let long = "x".repeat(10_000);
        let message = HashKey::parse_decimal(&long).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("10000 bytes"), "{message}");
    }

    #[test]
    fn range_contains_both_ends() {
        let range = HashKeyRange::new(HashKey::new(10), HashKey::new(20)).unwrap();
        assert!(!range.contains(HashKey::new(9)));
        assert!(range.contains(HashKey::new(10)));
        assert!(range.contains(HashKey::new(20)));
        assert!(!range.contains(HashKey::new(21)));
        assert!(HashKeyRange::new(HashKey::new(2), HashKey::new(1)).is_err());
        assert!(HashKeyRange::FULL.contains(HashKey::MAX));
    }

    #[test]
    fn partition_key_counts_utf16_code_units_as_kinesis_does() {
        assert!(PartitionKey::new("é".repeat(256)).is_ok()); // 512 bytes, 256 units
        assert!(PartitionKey::new("€".repeat(256)).is_ok()); // 768 bytes, 256 units
        // An emoji is two UTF-16 code units: 128 fit, 129 do not.
        assert!(PartitionKey::new("😀".repeat(128)).is_ok());
        let error = PartitionKey::new("😀".repeat(129)).unwrap_err();
        assert_eq!(error.char_count(), 258);
        let error = PartitionKey::new("a".repeat(2_000)).unwrap_err();
        assert_eq!(error.char_count(), 2_000);
        assert_eq!(
            error.to_string(),
            "partition_key has 2000 characters (UTF-16 code units, as Kinesis counts them); it must have 1 to 256"
        );
        assert_eq!(PartitionKey::new("").unwrap_err().char_count(), 0);
        assert!(PartitionKey::new("a".repeat(256)).is_ok());
        assert!(PartitionKey::new("a".repeat(257)).is_err());
    }
}
