//! The seam between the engine and whatever talks to Kinesis: our own request and response types,
//! the transport error with its classification, and the [`Transport`] trait the drivers call.
//!
//! No AWS SDK type crosses this seam, so the engine, the simulator and the AWS transport can each
//! change without the others noticing.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use kpl_aggregation::{HashKeyRange, KinesisRecord};

use crate::stream::Stream;

/// One `PutRecords` call: up to 500 entries for one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutRecordsRequest {
    /// The stream written to.
    pub stream: Stream,
    /// The entries, each a Kinesis record (an aggregate or a single user record) with its
    /// partition key and explicit hash key.
    pub entries: Vec<KinesisRecord>,
}

impl PutRecordsRequest {
    /// A call writing `entries` to `stream`.
    pub fn new(stream: Stream, entries: Vec<KinesisRecord>) -> Self {
        Self { stream, entries }
    }

    /// The size the service counts against the 10 MiB request limit: data plus partition keys.
    pub fn billed_size(&self) -> usize {
        self.entries.iter().map(KinesisRecord::billed_size).sum()
    }
}

/// The answer to a [`PutRecordsRequest`]: one result per entry, in the order of the entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutRecordsResponse {
    /// One result per request entry.
    pub entries: Vec<PutRecordsEntryResult>,
}

/// The service's verdict on one entry of a `PutRecords` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutRecordsEntryResult {
    /// The record was written.
    Written {
        /// The shard that received it.
        shard_id: ShardId,
        /// Its sequence number in that shard.
        sequence_number: Arc<str>,
    },
    /// The record was not written.
    Failed {
        /// The service's error code, such as `ProvisionedThroughputExceededException`.
        code: String,
        /// The service's error message.
        message: String,
    },
}

/// A `ListShards` call. A page after the first carries only the token, as the service requires
/// (sending the stream with a token is an error; KPL issue #481).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListShardsRequest {
    /// The stream whose shards are listed.
    pub stream: Stream,
    /// Where to continue; `None` for the first page.
    pub next_token: Option<String>,
    /// Which shards to list: the open ones to route by, every one to look up a shard that
    /// has closed since a record landed on it.
    pub filter: ShardFilter,
    /// Page size (the service allows up to 10,000).
    pub max_results: u32,
}

impl ListShardsRequest {
    /// A call for one page of `stream`'s shards: the first (`next_token` `None`) or a later one.
    pub fn new(
        stream: Stream,
        next_token: Option<String>,
        filter: ShardFilter,
        max_results: u32,
    ) -> Self {
        Self {
            stream,
            next_token,
            filter,
            max_results,
        }
    }
}

/// The `ShardFilter` of a `ListShards` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardFilter {
    /// `AT_LATEST`: the shards open now.
    AtLatest,
    /// `FROM_TRIM_HORIZON`: every shard from the trim horizon on, closed ones included.
    FromTrimHorizon,
}

/// One page of shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListShardsResponse {
    /// The shards on this page.
    pub shards: Vec<ShardDescription>,
    /// Where the next page starts; `None` on the last page.
    pub next_token: Option<String>,
}

/// A shard as `ListShards` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardDescription {
    /// Its id, such as `shardId-000000000003`.
    pub shard_id: ShardId,
    /// The hash keys it owns.
    pub hash_key_range: HashKeyRange,
    /// `false` when the shard has an ending sequence number (it was split or merged).
    pub open: bool,
}

/// A `DescribeStreamSummary` call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DescribeStreamSummaryRequest {
    /// The stream described.
    pub stream: Stream,
}

impl DescribeStreamSummaryRequest {
    /// A call describing `stream`.
    pub fn new(stream: Stream) -> Self {
        Self { stream }
    }
}

/// What the engine uses from `DescribeStreamSummary`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    /// `MaxRecordSizeInKiB`, when the service reports it (streams can allow up to 10 MiB).
    pub max_record_size_kib: Option<u32>,
    /// The number of open shards.
    pub open_shard_count: u32,
}

/// A request the engine wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Write records.
    PutRecords(PutRecordsRequest),
    /// Read (a page of) the shard map.
    ListShards(ListShardsRequest),
    /// Learn the stream's record size limit.
    DescribeStreamSummary(DescribeStreamSummaryRequest),
}

/// The answer to a [`Request`], of the matching kind.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Response {
    /// Answer to [`Request::PutRecords`].
    PutRecords(PutRecordsResponse),
    /// Answer to [`Request::ListShards`].
    ListShards(ListShardsResponse),
    /// Answer to [`Request::DescribeStreamSummary`].
    DescribeStreamSummary(StreamSummary),
}

/// A shard id as the service spells it, such as `shardId-000000000003`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(Arc<str>);

impl ShardId {
    /// Wraps a shard id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for ShardId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

/// What went wrong with a call, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// `ProvisionedThroughputExceededException`, `LimitExceededException`, `ThrottlingException`.
    Throttled,
    /// `InternalFailure`, `ServiceUnavailable`, any 5xx.
    ServiceUnavailable,
    /// No answer within the request timeout. The write may or may not have happened.
    Timeout,
    /// The connection could not be made or broke.
    Connection,
    /// `ResourceNotFoundException`: the stream does not exist.
    NotFound,
    /// `AccessDeniedException` and other authorisation failures.
    AccessDenied,
    /// `ValidationException`, `InvalidArgumentException`: the request itself was wrong.
    Validation,
    /// `ExpiredTokenException`, `UnrecognizedClientException`, invalid signatures.
    ExpiredCredentials,
    /// `ResourceInUseException`: the stream is being created, updated or deleted.
    InUse,
    /// A KMS error other than throttling (`KMSAccessDeniedException`, `KMSDisabledException`, …).
    Kms,
    /// Anything else.
    Other,
}

impl TransportErrorKind {
    /// Classifies a service error code, such as the `ErrorCode` of a `PutRecords` entry.
    pub fn from_code(code: &str) -> Self {
        match code {
            "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "ThrottlingException"
            | "Throttling"
            | "KMSThrottlingException" => Self::Throttled,
            "InternalFailure"
            | "InternalFailureException"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "InternalServerError" => Self::ServiceUnavailable,
            "ResourceNotFoundException" => Self::NotFound,
            "ResourceInUseException" => Self::InUse,
            "AccessDeniedException" | "AccessDenied" => Self::AccessDenied,
            "ValidationException" | "InvalidArgumentException" | "SerializationException" => {
                Self::Validation
            }
            "ExpiredTokenException"
            | "ExpiredToken"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken" => Self::ExpiredCredentials,
            code if code.starts_with("KMS") => Self::Kms,
            _ => Self::Other,
        }
    }

    /// Whether a call that failed this way may succeed if tried again later.
    ///
    /// `Other` is retried: an unknown code is more often a transient oddity than a verdict, and the
    /// record's time to live bounds the cost.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Throttled
                | Self::ServiceUnavailable
                | Self::Timeout
                | Self::Connection
                | Self::InUse
                | Self::Other
        )
    }

    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::ServiceUnavailable => "service_unavailable",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::NotFound => "not_found",
            Self::AccessDenied => "access_denied",
            Self::Validation => "validation",
            Self::ExpiredCredentials => "expired_credentials",
            Self::InUse => "in_use",
            Self::Kms => "kms",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a whole call failed. Opaque: ask [`kind`](Self::kind) and
/// [`is_retryable`](Self::is_retryable) rather than matching on codes.
pub struct TransportError {
    kind: TransportErrorKind,
    code: String,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl TransportError {
    /// An error of `kind` with the service's (or the transport's) code and message.
    pub fn new(
        kind: TransportErrorKind,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            code: code.into(),
            message: message.into(),
            source: None,
        }
    }

    /// An error classified from a service error code.
    pub fn from_code(code: impl Into<String>, message: impl Into<String>) -> Self {
        let code = code.into();
        Self::new(TransportErrorKind::from_code(&code), code, message)
    }

    /// Attaches the lower-level cause.
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The classification.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// The error code reported to the user in the attempt history.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message reported to the user in the attempt history.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the call may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportError")
            .field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.kind, self.message)
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// `value` (an endpoint or proxy URL, or a host) safe to print: everything between its scheme
/// (if any) and its last `@` is replaced by `<redacted>`. The whole value is scanned, so a
/// password holding `/`, `?` or `#`, or a `user:password@host` without a scheme, is caught
/// too; any `@` counts as the end of user information.
///
/// ```
/// use kpl_engine::transport::redact_userinfo;
///
/// assert_eq!(redact_userinfo("https://user:pa/ss@host:443/x"), "https://<redacted>@host:443/x");
/// assert_eq!(redact_userinfo("user:hunter2@proxy.corp"), "<redacted>@proxy.corp");
/// assert_eq!(redact_userinfo("http://127.0.0.1:4567"), "http://127.0.0.1:4567");
/// ```
pub fn redact_userinfo(value: &str) -> String {
    let Some(at) = value.rfind('@') else {
        return value.to_owned();
    };
    let start = value
        .find("://")
        .map(|scheme| scheme + 3)
        .filter(|&start| start <= at)
        .unwrap_or(0);
    format!("{}<redacted>@{}", &value[..start], &value[at + 1..])
}

/// The future a [`Transport`] returns: named, boxed, `Send`, and independent of any runtime.
#[must_use = "a transport future does nothing unless polled"]
pub struct TransportFuture<T>(Pin<Box<dyn Future<Output = Result<T, TransportError>> + Send>>);

impl<T> TransportFuture<T> {
    /// Wraps any `Send` future.
    pub fn new(future: impl Future<Output = Result<T, TransportError>> + Send + 'static) -> Self {
        Self(Box::pin(future))
    }

    /// A future that is already complete.
    pub fn ready(result: Result<T, TransportError>) -> Self
    where
        T: Send + 'static,
    {
        Self::new(std::future::ready(result))
    }
}

impl<T> Future for TransportFuture<T> {
    type Output = Result<T, TransportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for TransportFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransportFuture")
    }
}

/// Something that can carry the engine's requests to Kinesis: the AWS SDK, the simulator, a test
/// double. Object safe; the futures need no particular runtime.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends a `PutRecords` call.
    fn put_records(&self, request: PutRecordsRequest) -> TransportFuture<PutRecordsResponse>;

    /// Sends a `ListShards` call.
    fn list_shards(&self, request: ListShardsRequest) -> TransportFuture<ListShardsResponse>;

    /// Sends a `DescribeStreamSummary` call.
    fn describe_stream_summary(
        &self,
        request: DescribeStreamSummaryRequest,
    ) -> TransportFuture<StreamSummary>;
}

/// Sends any [`Request`] through `transport` and wraps the answer in the matching [`Response`].
pub fn send_request(transport: &dyn Transport, request: Request) -> TransportFuture<Response> {
    match request {
        Request::PutRecords(request) => {
            let future = transport.put_records(request);
            TransportFuture::new(async move { future.await.map(Response::PutRecords) })
        }
        Request::ListShards(request) => {
            let future = transport.list_shards(request);
            TransportFuture::new(async move { future.await.map(Response::ListShards) })
        }
        Request::DescribeStreamSummary(request) => {
            let future = transport.describe_stream_summary(request);
            TransportFuture::new(async move { future.await.map(Response::DescribeStreamSummary) })
        }
    }
}

/// A cheaply cloned, shared [`Transport`].
#[derive(Clone, Debug)]
pub struct SharedTransport(Arc<dyn Transport>);

impl SharedTransport {
    /// Shares `transport`.
    pub fn new(transport: impl Transport) -> Self {
        Self(Arc::new(transport))
    }
}

impl Transport for SharedTransport {
    fn put_records(&self, request: PutRecordsRequest) -> TransportFuture<PutRecordsResponse> {
        self.0.put_records(request)
    }

    fn list_shards(&self, request: ListShardsRequest) -> TransportFuture<ListShardsResponse> {
        self.0.list_shards(request)
    }

    fn describe_stream_summary(
        &self,
        request: DescribeStreamSummaryRequest,
    ) -> TransportFuture<StreamSummary> {
        self.0.describe_stream_summary(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified_and_only_transient_kinds_retry() {
        let cases = [
            (
                "ProvisionedThroughputExceededException",
                TransportErrorKind::Throttled,
                true,
            ),
            (
                "KMSThrottlingException",
                TransportErrorKind::Throttled,
                true,
            ),
            (
                "InternalFailure",
                TransportErrorKind::ServiceUnavailable,
                true,
            ),
            (
                "ResourceNotFoundException",
                TransportErrorKind::NotFound,
                false,
            ),
            (
                "AccessDeniedException",
                TransportErrorKind::AccessDenied,
                false,
            ),
            ("ValidationException", TransportErrorKind::Validation, false),
            (
                "ExpiredTokenException",
                TransportErrorKind::ExpiredCredentials,
                false,
            ),
            ("KMSAccessDeniedException", TransportErrorKind::Kms, false),
            ("SomethingNew", TransportErrorKind::Other, true),
        ];
        for (code, kind, retryable) in cases {
            let error = TransportError::from_code(code, "m");
            assert_eq!(error.kind(), kind, "{code}");
            assert_eq!(error.is_retryable(), retryable, "{code}");
        }
    }
}
