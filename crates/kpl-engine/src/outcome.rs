//! What goes in (records) and what comes out (per-record outcomes with their attempt history).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl_aggregation::HashKeyParseError;

use crate::stream::Stream;
use crate::transport::{ShardId, TransportErrorKind};

/// Error codes the producer gives attempts it judged failed itself, next to the codes the
/// service answers with (docs/aws-errors.md lists both). They appear in
/// [`Attempt::error_code`] and as keys of
/// [`StreamStats::errors_by_code`](crate::StreamStats::errors_by_code).
pub mod codes {
    /// The record reached `record_ttl` before it could be written.
    pub const EXPIRED: &str = "Expired";
    /// An aggregate landed on a shard that does not own all of its records; a KCL consumer
    /// would drop it there, so every record in it was sent again.
    pub const WRONG_SHARD: &str = "WrongShard";
    /// An aggregate landed on a shard no map read listed in time; each record in it was sent
    /// again alone, and a consumer may read the first copy too.
    pub const UNJUDGED_LANDING: &str = "UnjudgedLanding";
    /// The transport answered a request with another operation's response.
    pub const UNEXPECTED_RESPONSE: &str = "UnexpectedResponse";
    /// The transport's call panicked or was cancelled.
    pub const TRANSPORT_PANICKED: &str = "TransportPanicked";
    /// A `PutRecords` answer held a different number of results than the request had entries.
    pub const RECORD_COUNT_MISMATCH: &str = "RecordCountMismatch";
    /// `ListShards` pages that do not make a listing (too many, or a repeated token).
    pub const MALFORMED_LISTING: &str = "MalformedListing";

    /// Every code above.
    pub const ALL: &[&str] = &[
        EXPIRED,
        WRONG_SHARD,
        UNJUDGED_LANDING,
        UNEXPECTED_RESPONSE,
        TRANSPORT_PANICKED,
        RECORD_COUNT_MISMATCH,
        MALFORMED_LISTING,
    ];
}

/// A record as the application hands it over.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    stream: Stream,
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: Bytes,
}

impl Record {
    /// A record for `stream` with a partition key and data.
    pub fn new(stream: Stream, partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            stream,
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// Routes the record by this decimal hash key instead of the MD5 of its partition key.
    #[must_use]
    pub fn with_explicit_hash_key(mut self, hash_key: impl Into<String>) -> Self {
        self.explicit_hash_key = Some(hash_key.into());
        self
    }

    /// The target stream.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The partition key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key, if one was given.
    pub fn explicit_hash_key(&self) -> Option<&str> {
        self.explicit_hash_key.as_deref()
    }

    /// The data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The size the service counts against the record limit: data plus partition key.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// Takes the record apart: stream, partition key, explicit hash key, data.
    pub fn into_parts(self) -> (Stream, String, Option<String>, Bytes) {
        (
            self.stream,
            self.partition_key,
            self.explicit_hash_key,
            self.data,
        )
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("stream", &self.stream)
            .field("partition_key", &self.partition_key)
            .field("explicit_hash_key", &self.explicit_hash_key)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Identifies an accepted record in the events about it. Increases with acceptance order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(pub(crate) u64);

impl RecordId {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Why a record was refused at the door.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The partition key is not 1..=256 characters (UTF-16 code units, as Kinesis counts them).
    #[error("partition_key has {chars} characters (UTF-16 code units); allowed 1..=256")]
    PartitionKey {
        /// Its length in UTF-16 code units.
        chars: usize,
    },
    /// The explicit hash key is not a decimal number in 0..2^128.
    #[error("explicit_hash_key is invalid")]
    ExplicitHashKey(#[source] HashKeyParseError),
    /// Data plus partition key exceed the stream's record size limit.
    #[error("record size (data + partition key) is {size} bytes; the stream allows {limit}")]
    TooLarge {
        /// The record's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Accepting it would pass `max_outstanding_records`.
    #[error("{limit} records are outstanding, the max_outstanding_records limit")]
    TooManyRecords {
        /// The limit.
        limit: usize,
    },
    /// Accepting it would pass `max_outstanding_bytes`.
    #[error(
        "{outstanding} bytes charged for outstanding records plus this record's {charge} would \
         exceed max_outstanding_bytes ({limit})"
    )]
    TooManyBytes {
        /// The most the outstanding records can take: their charge now (see
        /// [`crate::memory`]) and a history of failed attempts for each that has none yet.
        outstanding: usize,
        /// The most this record can be charged: its key and data, their encoded copies,
        /// bookkeeping and a history of failed attempts.
        charge: usize,
        /// The limit.
        limit: usize,
    },
}

impl RejectReason {
    /// Whether waiting (for outstanding records to finish) could make the record acceptable.
    pub fn is_back_pressure(&self) -> bool {
        matches!(
            self,
            Self::TooManyRecords { .. } | Self::TooManyBytes { .. }
        )
    }
}

/// A refused record, with the reason and the record handed back.
#[derive(Debug, thiserror::Error)]
#[error("record refused: {}", .0.reason)]
pub struct Rejected(Box<RejectedParts>);

#[derive(Debug)]
struct RejectedParts {
    reason: RejectReason,
    record: Record,
}

impl Rejected {
    pub(crate) fn new(reason: RejectReason, record: Record) -> Self {
        Self(Box::new(RejectedParts { reason, record }))
    }

    /// Why.
    pub fn reason(&self) -> &RejectReason {
        &self.0.reason
    }

    /// The caller's record, back.
    pub fn into_record(self) -> Record {
        self.0.record
    }

    /// The reason and the record.
    pub fn into_parts(self) -> (RejectReason, Record) {
        let parts = *self.0;
        (parts.reason, parts.record)
    }
}

/// One try at writing a record: how long it waited before, how long the call took, and how it
/// ended. The KPL's `Attempt`.
#[derive(Clone, PartialEq, Eq)]
pub struct Attempt {
    delay_nanos: u64,
    duration_nanos: u64,
    result: AttemptResult,
}

/// Where a Kinesis record was written; shared by the attempts of all its user records.
#[derive(PartialEq, Eq, Debug)]
pub(crate) struct Landing {
    pub(crate) shard_id: ShardId,
    pub(crate) sequence_number: Arc<str>,
}

/// Why an attempt failed; shared by the attempts of all user records it concerned.
#[derive(PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct AttemptError {
    code: String,
    message: String,
}

impl AttemptError {
    /// The most of an error code kept: service codes are short, and whatever sends longer ones
    /// (a proxy, an emulator, a broken gateway) must not make each retried record hold them.
    /// (The distinct texts retried records hold are bounded together too: see
    /// `engine::error_texts`.)
    pub(crate) const MAX_CODE_BYTES: usize = 128;
    /// The most of an error message kept, for the same reason.
    pub(crate) const MAX_MESSAGE_BYTES: usize = 512;

    /// An attempt's error, its code and message cut to [`Self::MAX_CODE_BYTES`] and
    /// [`Self::MAX_MESSAGE_BYTES`] (on a character boundary, an ellipsis marking the cut).
    pub(crate) fn shared(code: impl Into<String>, message: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            code: capped(code.into(), Self::MAX_CODE_BYTES),
            message: capped(message.into(), Self::MAX_MESSAGE_BYTES),
        })
    }

    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    #[cfg(test)]
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The bytes its code and message take.
    pub(crate) fn text_bytes(&self) -> usize {
        self.code.capacity() + self.message.capacity()
    }
}

/// `text` cut to at most `max` bytes on a character boundary, ending in an ellipsis when cut.
fn capped(mut text: String, max: usize) -> String {
    const ELLIPSIS: char = '…';
    if text.len() <= max {
        return text;
    }
    let mut end = max - ELLIPSIS.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push(ELLIPSIS);
    // Keep only what the cut text needs.
    text.shrink_to_fit();
    text
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum AttemptResult {
    Written(Arc<Landing>),
    Failed(Arc<AttemptError>),
}

/// A duration in nanoseconds, saturating: attempts keep two of them, and this halves their size.
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Attempt {
    pub(crate) fn written(delay: Duration, duration: Duration, landing: Arc<Landing>) -> Self {
        Self {
            delay_nanos: nanos(delay),
            duration_nanos: nanos(duration),
            result: AttemptResult::Written(landing),
        }
    }

    pub(crate) fn failed(delay: Duration, duration: Duration, error: Arc<AttemptError>) -> Self {
        Self {
            delay_nanos: nanos(delay),
            duration_nanos: nanos(duration),
            result: AttemptResult::Failed(error),
        }
    }

    /// Time from acceptance (first attempt) or the previous attempt's end to this one's start.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos)
    }

    /// Time the call took; zero for attempts that made no call (such as expiry).
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.duration_nanos)
    }

    /// Whether this attempt wrote the record.
    pub fn is_success(&self) -> bool {
        matches!(self.result, AttemptResult::Written { .. })
    }

    /// The error code of a failed attempt.
    pub fn error_code(&self) -> Option<&str> {
        match &self.result {
            AttemptResult::Failed(error) => Some(&error.code),
            AttemptResult::Written(_) => None,
        }
    }

    /// The error message of a failed attempt.
    pub fn error_message(&self) -> Option<&str> {
        match &self.result {
            AttemptResult::Failed(error) => Some(&error.message),
            AttemptResult::Written(_) => None,
        }
    }

    /// The shard a successful attempt wrote to.
    pub fn shard_id(&self) -> Option<&ShardId> {
        match &self.result {
            AttemptResult::Written(landing) => Some(&landing.shard_id),
            AttemptResult::Failed(_) => None,
        }
    }

    /// The sequence number of a successful attempt.
    pub fn sequence_number(&self) -> Option<&str> {
        match &self.result {
            AttemptResult::Written(landing) => Some(&landing.sequence_number),
            AttemptResult::Failed(_) => None,
        }
    }
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Attempt");
        s.field("delay", &self.delay())
            .field("duration", &self.duration());
        match &self.result {
            AttemptResult::Written(landing) => s
                .field("shard_id", &landing.shard_id)
                .field("sequence_number", &landing.sequence_number),
            AttemptResult::Failed(error) => s
                .field("error_code", &error.code)
                .field("error_message", &error.message),
        };
        s.finish()
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            AttemptResult::Written(landing) => write!(
                f,
                "written to {} as {}",
                landing.shard_id, landing.sequence_number
            )?,
            AttemptResult::Failed(error) => write!(f, "{}: {}", error.code, error.message)?,
        }
        write!(f, " (after {:?}, took {:?})", self.delay(), self.duration())
    }
}

/// The failed attempts of a record still outstanding, bounded so that a record retried for a
/// long time does not grow without limit: the first, the latest, and how many were left out
/// between them. Allocated at the first failure: most records never fail.
#[derive(Clone, Debug)]
pub(crate) struct AttemptHistory {
    attempts: Vec<Attempt>,
    omitted: u32,
    /// When the latest attempt ended: where the next attempt's delay starts.
    last_end: Instant,
}

impl AttemptHistory {
    /// Attempts kept per record: the first, the latest, and one of every kind of failure, six
    /// in all (see `keep`). Each outstanding record is
    /// charged room for them (see [`crate::memory`]).
    pub(crate) const KEPT: usize = 6;

    pub(crate) fn new(last_end: Instant) -> Self {
        Self {
            // Room for one more than are kept, so the list never grows past it.
            attempts: Vec::with_capacity(Self::KEPT + 1),
            omitted: 0,
            last_end,
        }
    }

    pub(crate) fn last_end(&self) -> Instant {
        self.last_end
    }

    /// The failed attempts, those left out included.
    pub(crate) fn count(&self) -> usize {
        self.attempts.len() + self.omitted as usize
    }

    /// The most memory one history takes: its box, and its list at full room.
    #[cfg(test)]
    pub(crate) fn bytes_at_most() -> usize {
        size_of::<Self>() + (Self::KEPT + 1) * size_of::<Attempt>()
    }

    /// Adds a failed attempt that ended at `end`.
    pub(crate) fn push(&mut self, attempt: Attempt, end: Instant) {
        self.keep(attempt);
        self.last_end = end;
    }

    /// Past the cap, an attempt is left out: the oldest (but the first) whose error another kept
    /// attempt also shows, so that every kind of failure a record met stays visible (a timed-out
    /// call, which may have written it, among them); failing that, the oldest but the first.
    fn keep(&mut self, attempt: Attempt) {
        self.attempts.push(attempt);
        if self.attempts.len() > Self::KEPT {
            let last = self.attempts.len() - 1;
            let repeated = (1..last).find(|&i| {
                let code = self.attempts[i].error_code();
                (0..=last).any(|j| j != i && self.attempts[j].error_code() == code)
            });
            self.attempts.remove(repeated.unwrap_or(1));
            self.omitted = self.omitted.saturating_add(1);
        }
    }

    /// The kept attempts and the number left out.
    pub(crate) fn into_parts(self) -> (Vec<Attempt>, u32) {
        (self.attempts, self.omitted)
    }

    /// [`into_parts`](Self::into_parts) after a last, successful attempt.
    fn finish(mut self, last: Attempt) -> (Vec<Attempt>, u32) {
        self.keep(last);
        self.into_parts()
    }
}

/// The attempts of a delivered record. The usual case, one successful attempt, needs no
/// allocation.
#[derive(Clone, Debug)]
pub(crate) enum AttemptList {
    One(Attempt),
    Many {
        attempts: Vec<Attempt>,
        omitted: u32,
    },
}

impl AttemptList {
    pub(crate) fn new(earlier: Option<Box<AttemptHistory>>, last: Attempt) -> Self {
        match earlier {
            None => Self::One(last),
            Some(history) => {
                let (attempts, omitted) = history.finish(last);
                Self::Many { attempts, omitted }
            }
        }
    }

    fn as_slice(&self) -> &[Attempt] {
        match self {
            Self::One(attempt) => std::slice::from_ref(attempt),
            Self::Many { attempts, .. } => attempts,
        }
    }

    fn count(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many { attempts, omitted } => attempts.len() + *omitted as usize,
        }
    }

    fn last(&self) -> &Attempt {
        match self {
            Self::One(attempt) => attempt,
            // `new` never builds an empty `Many`.
            Self::Many { attempts, .. } => attempts
                .last()
                .unwrap_or_else(|| unreachable!("a delivery has a successful attempt")),
        }
    }
}

/// A record written: where, and how it got there; with the token its owner gave it
/// ([`Engine::submit_with`](crate::Engine::submit_with)), `()` by default.
#[derive(Clone, Debug)]
pub struct Delivery<T = ()> {
    pub(crate) id: RecordId,
    pub(crate) attempts: AttemptList,
    pub(crate) token: T,
}

impl<T> Delivery<T> {
    /// The token given with the record.
    pub fn token(&self) -> &T {
        &self.token
    }
    /// The delivery without its token, and the token.
    pub fn take_token(self) -> (Delivery, T) {
        let Self {
            id,
            attempts,
            token,
        } = self;
        (
            Delivery {
                id,
                attempts,
                token: (),
            },
            token,
        )
    }
    /// The record.
    pub fn id(&self) -> RecordId {
        self.id
    }
    /// The shard it was written to.
    pub fn shard_id(&self) -> &ShardId {
        &self.landing().shard_id
    }
    /// Its sequence number (shared by all user records of one aggregate).
    pub fn sequence_number(&self) -> &str {
        &self.landing().sequence_number
    }
    fn landing(&self) -> &Landing {
        match &self.attempts.last().result {
            AttemptResult::Written(landing) => landing,
            // The engine builds a delivery only around a successful last attempt.
            AttemptResult::Failed(_) => {
                unreachable!("the last attempt of a delivery succeeded")
            }
        }
    }
    /// The attempts, the last one successful: every one, or for a record tried more than six
    /// times, six of them: the first, the latest, and one of every kind of failure met.
    pub fn attempts(&self) -> &[Attempt] {
        self.attempts.as_slice()
    }
    /// How many attempts there were, those left out of [`attempts`](Self::attempts) included.
    pub fn attempt_count(&self) -> usize {
        self.attempts.count()
    }
}

/// Why a record failed for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// The service refused it with an error retrying cannot fix (not found, access denied, …).
    Terminal(TransportErrorKind),
    /// `RecordTtl` passed before it was written.
    Expired,
    /// It was throttled and `fail_if_throttled` is set.
    Throttled,
    /// The owner gave up on it ([`Engine::abandon`](crate::Engine::abandon)), for example at
    /// shutdown, before any call carried it: it was not written.
    Abandoned,
    /// The owner gave up on it while a call carrying it was in flight, or while its landing
    /// waited to be judged: it may have been written.
    AbandonedInFlight,
    /// The service answered a `PutRecords` with a different number of results than entries.
    RecordCountMismatch,
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Terminal(kind) => write!(f, "terminal error ({kind})"),
            Self::Expired => f.write_str("record_ttl expired"),
            Self::Throttled => f.write_str("throttled and fail_if_throttled is set"),
            Self::Abandoned => f.write_str("abandoned before it was written"),
            Self::AbandonedInFlight => {
                f.write_str("abandoned while its call was in flight; it may have been written")
            }
            Self::RecordCountMismatch => {
                f.write_str("the service returned a different number of results")
            }
        }
    }
}

/// A record that will not be written, with the record handed back, and the token its owner
/// gave it ([`Engine::submit_with`](crate::Engine::submit_with)), `()` by default.
#[derive(Clone, Debug)]
pub struct Failure<T = ()> {
    pub(crate) id: RecordId,
    pub(crate) reason: FailureReason,
    pub(crate) record: Record,
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) omitted_attempts: u32,
    pub(crate) token: T,
}

impl<T> Failure<T> {
    /// The token given with the record.
    pub fn token(&self) -> &T {
        &self.token
    }
    /// The failure without its token, and the token.
    pub fn take_token(self) -> (Failure, T) {
        let Self {
            id,
            reason,
            record,
            attempts,
            omitted_attempts,
            token,
        } = self;
        let failure = Failure {
            id,
            reason,
            record,
            attempts,
            omitted_attempts,
            token: (),
        };
        (failure, token)
    }
    /// The record's id.
    pub fn id(&self) -> RecordId {
        self.id
    }
    /// Why it failed.
    pub fn reason(&self) -> FailureReason {
        self.reason
    }
    /// The record.
    pub fn record(&self) -> &Record {
        &self.record
    }
    /// Takes the record back.
    pub fn into_record(self) -> Record {
        self.record
    }
    /// The attempts, in order, the last one saying what finally went wrong: every one, or for
    /// a record tried more than six times, six of them: the first, the latest, and one of every
    /// kind of failure met.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }
    /// How many attempts there were, those left out of [`attempts`](Self::attempts) included.
    pub fn attempt_count(&self) -> usize {
        self.attempts.len() + self.omitted_attempts as usize
    }
}

impl<T> fmt::Display for Failure<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {} to {} failed: {}",
            self.id.0, self.record.stream, self.reason
        )?;
        if let Some(last) = self.attempts.last() {
            write!(
                f,
                "; after {} attempt(s), the last: {last}",
                self.attempt_count()
            )?;
        }
        Ok(())
    }
}

/// Identifies a flush marker; see [`Engine::flush_marker`](crate::Engine::flush_marker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlushId(pub(crate) u64);

/// Something the owner of the engine must learn about. Outcomes carry the token the record
/// was submitted with (`()` unless [`Engine::submit_with`](crate::Engine::submit_with) gave
/// one).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event<T = ()> {
    /// A record was written.
    Delivered(Delivery<T>),
    /// A record will not be written. Boxed: failures are rare, and the box keeps every event
    /// small.
    Failed(Box<Failure<T>>),
    /// Every record accepted before the marker was created has its outcome.
    Flushed(FlushId),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Clock, SystemClock};

    #[test]
    fn error_codes_and_messages_are_cut_where_they_enter_on_a_character_boundary() {
        let error = AttemptError::shared("X".repeat(1_000), "é".repeat(40_000));
        assert_eq!(error.code.len(), AttemptError::MAX_CODE_BYTES);
        assert!(error.message.len() <= AttemptError::MAX_MESSAGE_BYTES);
        assert!(error.message.len() >= AttemptError::MAX_MESSAGE_BYTES - 4);
        assert!(error.message.ends_with('…') && error.message.starts_with("éé"));
        assert!(error.message.capacity() <= AttemptError::MAX_MESSAGE_BYTES);
        let short = AttemptError::shared("InternalFailure", "boom");
        assert_eq!(
            (short.code.as_str(), short.message.as_str()),
            ("InternalFailure", "boom")
        );
    }

    #[test]
    fn a_long_history_keeps_the_first_and_the_latest_attempts_and_counts_the_rest() {
        let start = SystemClock.now();
        let error = AttemptError::shared("InternalFailure", "boom");
        let mut history = AttemptHistory::new(start);
        for n in 0..100u64 {
            let attempt = Attempt::failed(Duration::from_millis(n), Duration::ZERO, error.clone());
            history.push(attempt, start + Duration::from_secs(n));
        }
        assert_eq!(history.last_end(), start + Duration::from_secs(99));
        let last = Attempt::failed(Duration::from_millis(1_000), Duration::ZERO, error);
        let list = AttemptList::new(Some(Box::new(history)), last);
        assert_eq!(list.count(), 101);
        let kept = list.as_slice();
        assert_eq!(kept.len(), AttemptHistory::KEPT);
        assert_eq!(kept[0].delay(), Duration::ZERO, "the first is kept");
        // The latest four failures (96 to 99 ms) and the final attempt.
        assert_eq!(kept[1].delay(), Duration::from_millis(96));
        assert_eq!(list.last().delay(), Duration::from_millis(1_000));
    }

    #[test]
    fn a_long_history_keeps_one_of_every_kind_of_failure() {
        let start = SystemClock.now();
        let busy = AttemptError::shared("ServiceUnavailable", "busy");
        let timeout = AttemptError::shared("RequestTimeout", "no answer");
        let mut history = AttemptHistory::new(start);
        for n in 0..50u64 {
            let error = if n == 3 { &timeout } else { &busy };
            let attempt = Attempt::failed(Duration::from_millis(n), Duration::ZERO, error.clone());
            history.push(attempt, start + Duration::from_secs(n));
        }
        let (kept, omitted) = history.into_parts();
        assert_eq!(kept.len(), AttemptHistory::KEPT);
        assert_eq!(omitted, 50 - AttemptHistory::KEPT as u32);
        assert_eq!(kept[0].delay(), Duration::ZERO, "the first is kept");
        assert!(
            kept.iter()
                .any(|a| a.error_code() == Some("RequestTimeout")),
            "the one timed-out call is still there"
        );
        assert_eq!(
            kept.last().map(Attempt::delay),
            Some(Duration::from_millis(49))
        );
    }
}
