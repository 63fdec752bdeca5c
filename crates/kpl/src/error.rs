//! The facade's errors. Each says what went wrong at this layer and hands back what it can.

use std::fmt;
use std::path::{Path, PathBuf};

use kpl_engine::{Attempt, Failure, FailureReason, Record, RecordId, RejectReason};

/// A configuration value or file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{detail}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct ConfigError {
    detail: ConfigErrorDetail,
    line: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
enum ConfigErrorDetail {
    #[error("unknown configuration key {key:?}{}", suggestions_text(.suggestions))]
    UnknownKey {
        key: String,
        suggestions: Vec<&'static str>,
    },
    #[error("invalid value {value:?} for {key}: allowed {allowed}")]
    InvalidValue {
        key: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn suggestions_text(suggestions: &[&'static str]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.join(", "))
    }
}

impl ConfigError {
    pub(crate) fn unknown_key(key: &str, suggestions: Vec<&'static str>) -> Self {
        Self {
            detail: ConfigErrorDetail::UnknownKey {
                key: key.to_owned(),
                suggestions,
            },
            line: None,
        }
    }

    pub(crate) fn invalid(
        key: &'static str,
        value: &str,
        allowed: &'static str,
        secret: bool,
    ) -> Self {
        let value = if secret {
            "<redacted>".to_owned()
        } else {
            without_userinfo(value)
        };
        Self {
            detail: ConfigErrorDetail::InvalidValue {
                key,
                value,
                allowed,
            },
            line: None,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self {
            detail: ConfigErrorDetail::Io {
                path: path.to_owned(),
                source,
            },
            line: None,
        }
    }

    pub(crate) fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    /// The key at fault (the KPL name), if the error is about one.
    pub fn key(&self) -> Option<&str> {
        match &self.detail {
            ConfigErrorDetail::UnknownKey { key, .. } => Some(key),
            ConfigErrorDetail::InvalidValue { key, .. } => Some(key),
            ConfigErrorDetail::Io { .. } => None,
        }
    }

    /// Known keys close to an unknown one.
    pub fn suggestions(&self) -> &[&'static str] {
        match &self.detail {
            ConfigErrorDetail::UnknownKey { suggestions, .. } => suggestions,
            _ => &[],
        }
    }

    /// The allowed range, for an invalid value.
    pub fn allowed(&self) -> Option<&'static str> {
        match &self.detail {
            ConfigErrorDetail::InvalidValue { allowed, .. } => Some(allowed),
            _ => None,
        }
    }

    /// The line of the properties file, when the error came from one.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

/// Why `send` did not take a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// The outstanding-records or outstanding-bytes limit is reached; `send_wait` would wait.
    BufferFull,
    /// The partition key or the explicit hash key is invalid.
    InvalidRecord,
    /// Data plus partition key exceed the stream's record size limit.
    TooLarge,
    /// The producer is shutting down or was shut down.
    ShuttingDown,
    /// `send_wait` gave up waiting for buffer space.
    TimedOut,
    /// The [`OutcomeReceiver`](crate::OutcomeReceiver) of an outcome channel was dropped.
    NoOutcomeReceiver,
}

/// A record `send` did not take, with the reason and the record back.
pub struct SendError {
    kind: SendErrorKind,
    cause: SendCause,
    record: Box<Record>,
}

/// What decided a refusal: the engine's typed reason, or the facade's own state.
enum SendCause {
    Rejected(RejectReason),
    Facade(String),
}

impl SendError {
    pub(crate) fn new(kind: SendErrorKind, message: impl Into<String>, record: Record) -> Self {
        Self {
            kind,
            cause: SendCause::Facade(message.into()),
            record: Box::new(record),
        }
    }

    pub(crate) fn from_rejected(reason: RejectReason, record: Record) -> Self {
        let kind = match reason {
            ref reason if reason.is_back_pressure() => SendErrorKind::BufferFull,
            RejectReason::TooLarge { .. } => SendErrorKind::TooLarge,
            _ => SendErrorKind::InvalidRecord,
        };
        Self {
            kind,
            cause: SendCause::Rejected(reason),
            record: Box::new(record),
        }
    }

    /// Why.
    pub fn kind(&self) -> SendErrorKind {
        self.kind
    }

    /// The engine's reason, with its numbers (the size and the limit, the outstanding charge,
    /// the key's length), when the engine refused the record; `None` when the producer did
    /// (shutting down, waiting senders first, `send_wait_timeout` ran out).
    pub fn reject_reason(&self) -> Option<&RejectReason> {
        match &self.cause {
            SendCause::Rejected(reason) => Some(reason),
            SendCause::Facade(_) => None,
        }
    }

    /// The record.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Takes the record back.
    pub fn into_record(self) -> Record {
        *self.record
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("SendError");
        debug.field("kind", &self.kind);
        match &self.cause {
            SendCause::Rejected(reason) => debug.field("reason", reason),
            SendCause::Facade(message) => debug.field("message", message),
        };
        debug.field("record", &self.record).finish()
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record for {} not accepted: ", self.record.stream())?;
        match &self.cause {
            SendCause::Rejected(reason) => write!(f, "{reason}"),
            SendCause::Facade(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for SendError {
    /// The cause under the engine's reason (an explicit hash key's parse error), if any.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            SendCause::Rejected(reason) => std::error::Error::source(reason),
            SendCause::Facade(_) => None,
        }
    }
}

/// How a delivery ended without the record being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryErrorKind {
    /// The record failed: see the reason and the attempts.
    Failed(FailureReason),
    /// The producer was shut down before any call carried the record: it was not written.
    ShutDown,
    /// The producer was shut down while a call carrying the record was in flight (or its landing
    /// on a new shard waited to be judged): it may have been written. Re-sending it may
    /// duplicate it.
    ShutDownInFlight,
    /// The producer was dropped before the outcome was known.
    Cancelled,
    /// `user_record_timeout` passed; the producer may still write the record.
    TimedOut,
}

/// A record that was not written: why, every attempt, and (with
/// `return_user_record_on_failure`) the record.
#[derive(Clone, Debug)]
pub struct DeliveryError {
    pub(crate) id: RecordId,
    pub(crate) kind: DeliveryErrorKind,
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) attempt_count: usize,
    pub(crate) record: Option<Box<Record>>,
    /// The last failed attempt's error, as [`source`](std::error::Error::source) gives it.
    pub(crate) last_failure: Option<AttemptFailure>,
}

/// The error of a record's last failed attempt, as the service (or the producer, for its own
/// codes in [`codes`](crate::codes)) gave it: the [`source`](std::error::Error::source) of a
/// [`DeliveryError`] that had attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptFailure {
    code: String,
    message: String,
}

impl AttemptFailure {
    /// The error code, such as `ProvisionedThroughputExceededException`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error of the last attempt in `attempts` that failed.
    fn last_of(attempts: &[Attempt]) -> Option<Self> {
        attempts.iter().rev().find_map(|attempt| {
            Some(Self {
                code: attempt.error_code()?.to_owned(),
                message: attempt.error_message().unwrap_or_default().to_owned(),
            })
        })
    }
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AttemptFailure {}

impl DeliveryError {
    /// A record's error with no attempts and no record: it ended for a reason of the caller's
    /// side (cancelled, timed out).
    pub(crate) fn bare(id: RecordId, kind: DeliveryErrorKind) -> Self {
        Self {
            id,
            kind,
            attempts: Vec::new(),
            attempt_count: 0,
            record: None,
            last_failure: None,
        }
    }

    /// The producer went away before the record finished.
    pub(crate) fn cancelled(id: RecordId) -> Self {
        Self::bare(id, DeliveryErrorKind::Cancelled)
    }

    /// The error a caller gets for a record the engine failed: records abandoned at shutdown are
    /// cut short (or cancelled, when the producer was `dropped`), the others failed for their
    /// reason. The record is kept in the error with `return_records`, and always when the
    /// shutdown cut it short; it is also returned apart then, for the shutdown's report.
    pub(crate) fn from_failure(
        failure: Failure,
        dropped: bool,
        return_records: bool,
    ) -> (Self, Option<Record>) {
        let kind = match failure.reason() {
            FailureReason::Abandoned | FailureReason::AbandonedInFlight if dropped => {
                DeliveryErrorKind::Cancelled
            }
            FailureReason::Abandoned => DeliveryErrorKind::ShutDown,
            FailureReason::AbandonedInFlight => DeliveryErrorKind::ShutDownInFlight,
            other => DeliveryErrorKind::Failed(other),
        };
        let id = failure.id();
        let attempts = failure.attempts().to_vec();
        let attempt_count = failure.attempt_count();
        let record = failure.into_record();
        let cut_short = matches!(
            kind,
            DeliveryErrorKind::ShutDown | DeliveryErrorKind::ShutDownInFlight
        );
        let kept = (return_records || cut_short).then(|| Box::new(record.clone()));
        let error = Self {
            id,
            kind,
            last_failure: AttemptFailure::last_of(&attempts),
            attempts,
            attempt_count,
            record: kept,
        };
        (error, cut_short.then_some(record))
    }

    /// The record's id, as [`DeliveryFuture::id`](crate::DeliveryFuture::id) gave it.
    pub fn id(&self) -> RecordId {
        self.id
    }

    /// How it ended.
    pub fn kind(&self) -> DeliveryErrorKind {
        self.kind
    }

    /// The attempts, in order (every one, or six: the first, the latest, and one of every kind
    /// of failure met).
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// How many attempts there were, those left out of [`attempts`](Self::attempts) (a record
    /// tried more than six times keeps six) included.
    pub fn attempt_count(&self) -> usize {
        self.attempt_count
    }

    /// The last error code reported by an attempt.
    pub fn error_code(&self) -> Option<&str> {
        self.attempts.iter().rev().find_map(Attempt::error_code)
    }

    /// The record, when `return_user_record_on_failure` is set (or the producer shut down).
    pub fn record(&self) -> Option<&Record> {
        self.record.as_deref()
    }

    /// Takes the record, if it was kept.
    pub fn into_record(self) -> Option<Record> {
        self.record.map(|record| *record)
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {} ", self.id.get())?;
        match self.kind {
            DeliveryErrorKind::Failed(reason) => write!(f, "failed: {reason}")?,
            DeliveryErrorKind::ShutDown => {
                f.write_str("not written: the producer shut down first")?
            }
            DeliveryErrorKind::ShutDownInFlight => f.write_str(
                "outcome unknown: the producer shut down while its call was in flight; it may have been written",
            )?,
            DeliveryErrorKind::Cancelled => {
                f.write_str("has no outcome: the producer was dropped before it was written")?
            }
            DeliveryErrorKind::TimedOut => {
                f.write_str("timed out waiting (user_record_timeout); it may still be written")?
            }
        }
        if let Some(last) = self.attempts.last() {
            write!(f, "; {} attempt(s), the last: {last}", self.attempt_count)?;
        }
        Ok(())
    }
}

impl std::error::Error for DeliveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.last_failure
            .as_ref()
            .map(|failure| failure as &(dyn std::error::Error + 'static))
    }
}

/// Why a producer could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// No transport was given, and no default transport is compiled in.
    #[error(
        "no transport: give one with .transport(..) (the AWS transport is not compiled in: enable the `aws` feature)"
    )]
    NoTransport,
    /// The default transport cannot honour a setting; the source is the transport's typed
    /// error (with the AWS transport, a `kpl::AwsSettingsError`), which names the setting.
    #[error("the transport cannot honour a setting")]
    UnsupportedSetting(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A credentials provider was given for a part the application replaced with its own
    /// (`credentials_provider` with `transport`, `metrics_credentials_provider` with
    /// `metrics_exporter`): it would go unused.
    #[error(
        "{setting} applies to the default AWS client, which .{own}(..) replaced: configure yours instead"
    )]
    UnusedSetting {
        /// The builder method whose setting would go unused.
        setting: &'static str,
        /// The builder method that replaced the default.
        own: &'static str,
    },
    /// No `Region` is set and the AWS SDK's region chain (`AWS_REGION`, `AWS_DEFAULT_REGION`,
    /// the profile's `region`, the EC2 instance metadata) found none.
    #[error(
        "no region: set Region (or AWS_REGION, or a region in the AWS profile); none is set and no instance metadata answered"
    )]
    NoRegion,
    /// `build` was called outside a tokio runtime.
    #[error("KinesisProducer::build must be called inside a tokio runtime")]
    NoRuntime,
    /// The tokio runtime has no timers, which the producer needs for deadlines and timeouts.
    #[error("the tokio runtime has timers disabled: build it with enable_time() (or enable_all())")]
    RuntimeWithoutTimers,
    /// The tokio runtime has no IO driver, which the AWS transport needs for its connections.
    #[error("the tokio runtime has IO disabled: build it with enable_io() (or enable_all())")]
    RuntimeWithoutIo,
    /// The blocking producer's runtime could not be started.
    #[error("cannot start the blocking producer's runtime")]
    Runtime(#[source] std::io::Error),
}

/// A value without the `user:password@` of a URL, which must not be echoed in an error.
fn without_userinfo(value: &str) -> String {
    kpl_engine::transport::redact_userinfo(value)
}
