//! The KPL's metrics: one definition per metric (its name, unit, level and finest dimension),
//! the per-interval accumulators the engine fills as it works, and the series an exporter takes
//! from it ([`Engine::take_metrics`](crate::Engine::take_metrics)).
//!
//! Each metric is a distribution: every observation is one sample, and an interval keeps the
//! sample count, sum, minimum and maximum (a CloudWatch `StatisticSet`). A count metric's
//! samples are 1s and 0s (`UserRecordsPut` takes 1 per record written and 0 per record failed,
//! so its mean is the success rate and its sum the records written).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

#[cfg(test)]
use crate::stats::MAX_ERROR_CODES;
use crate::stats::{Summary, bounded_error_code};
use crate::stream::Stream;
use crate::transport::ShardId;

/// The unit a metric is reported in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unit {
    /// A number of things.
    Count,
    /// Bytes.
    Bytes,
    /// Milliseconds.
    Milliseconds,
}

impl Unit {
    /// The CloudWatch name of the unit.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Bytes => "Bytes",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// Which `MetricsLevel` reports a metric: `summary` reports the Summary metrics, `detailed`
/// all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Reported at `summary` and `detailed`.
    Summary,
    /// Reported at `detailed` only.
    Detailed,
}

/// How finely a metric's series are split: over all streams, per stream, or per shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Granularity {
    /// One series over every stream.
    Global,
    /// One series per stream (`StreamName`).
    Stream,
    /// One series per shard (`StreamName`, `ShardId`).
    Shard,
}

/// One of the KPL's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Metric {
    /// 1 per user record accepted.
    UserRecordsReceived,
    /// Outstanding user records, sampled (the producer samples every 200 ms).
    UserRecordsPending,
    /// Per finished user record: 1 written, 0 failed (the mean is the success rate).
    UserRecordsPut,
    /// Data bytes of each user record written.
    UserRecordsDataPut,
    /// 1 per user record failed because `RecordTtl` passed.
    UserRecordExpired,
    /// Per Kinesis record answered: 1 written, 0 failed.
    KinesisRecordsPut,
    /// Bytes (data and partition key) of each Kinesis record written.
    KinesisRecordsDataPut,
    /// 1 per failed Kinesis record, and per failed whole request, by error code.
    ErrorsByCode,
    /// 0 per Kinesis record written, 1 per Kinesis record failed and per failed whole request.
    AllErrors,
    /// Per finished user record: its attempts less one.
    RetriesPerRecord,
    /// Per attempt: how long the record waited before it (since it was accepted, or since its
    /// previous attempt ended).
    BufferingTime,
    /// Per `PutRecords` call: how long it took.
    RequestTime,
    /// Per Kinesis record sent: the user records in it.
    UserRecordsPerKinesisRecord,
    /// Per `PutRecords` call: the Kinesis records in it.
    KinesisRecordsPerPutRecordsRequest,
    /// Per `PutRecords` call: the user records in it.
    UserRecordsPerPutRecordsRequest,
}

impl Metric {
    /// Every metric, in the order `docs/metrics.md` lists them.
    pub const ALL: [Self; 15] = [
        Self::UserRecordsReceived,
        Self::UserRecordsPending,
        Self::UserRecordsPut,
        Self::UserRecordsDataPut,
        Self::UserRecordExpired,
        Self::KinesisRecordsPut,
        Self::KinesisRecordsDataPut,
        Self::ErrorsByCode,
        Self::AllErrors,
        Self::RetriesPerRecord,
        Self::BufferingTime,
        Self::RequestTime,
        Self::UserRecordsPerKinesisRecord,
        Self::KinesisRecordsPerPutRecordsRequest,
        Self::UserRecordsPerPutRecordsRequest,
    ];

    /// The KPL's (and CloudWatch's) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::UserRecordsReceived => "UserRecordsReceived",
            Self::UserRecordsPending => "UserRecordsPending",
            Self::UserRecordsPut => "UserRecordsPut",
            Self::UserRecordsDataPut => "UserRecordsDataPut",
            Self::UserRecordExpired => "UserRecordExpired",
            Self::KinesisRecordsPut => "KinesisRecordsPut",
            Self::KinesisRecordsDataPut => "KinesisRecordsDataPut",
            Self::ErrorsByCode => "ErrorsByCode",
            Self::AllErrors => "AllErrors",
            Self::RetriesPerRecord => "RetriesPerRecord",
            Self::BufferingTime => "BufferingTime",
            Self::RequestTime => "RequestTime",
            Self::UserRecordsPerKinesisRecord => "UserRecordsPerKinesisRecord",
            Self::KinesisRecordsPerPutRecordsRequest => "KinesisRecordsPerPutRecordsRequest",
            Self::UserRecordsPerPutRecordsRequest => "UserRecordsPerPutRecordsRequest",
        }
    }

    /// The metric named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|metric| metric.name() == name)
    }

    /// Its unit.
    pub fn unit(self) -> Unit {
        match self {
            Self::UserRecordsDataPut | Self::KinesisRecordsDataPut => Unit::Bytes,
            Self::BufferingTime | Self::RequestTime => Unit::Milliseconds,
            _ => Unit::Count,
        }
    }

    /// The lowest `MetricsLevel` that reports it (the KPL's).
    pub fn level(self) -> Level {
        match self {
            Self::UserRecordsPut
            | Self::UserRecordExpired
            | Self::KinesisRecordsPut
            | Self::ErrorsByCode
            | Self::AllErrors
            | Self::BufferingTime => Level::Summary,
            _ => Level::Detailed,
        }
    }

    /// Its finest split (the KPL's): the engine keeps it per shard or per stream.
    pub fn finest(self) -> Granularity {
        match self {
            Self::UserRecordsReceived
            | Self::UserRecordsPending
            | Self::RequestTime
            | Self::KinesisRecordsPerPutRecordsRequest
            | Self::UserRecordsPerPutRecordsRequest => Granularity::Stream,
            _ => Granularity::Shard,
        }
    }

    /// Whether its series are also split by error code (`ErrorCode`).
    pub fn by_error_code(self) -> bool {
        self == Self::ErrorsByCode
    }

    /// What one sample is, for docs/metrics.md.
    pub fn description(self) -> &'static str {
        match self {
            Self::UserRecordsReceived => "1 per user record accepted by `send`.",
            Self::UserRecordsPending => {
                "The user records outstanding (accepted, without an outcome yet), sampled every 200 ms."
            }
            Self::UserRecordsPut => {
                "Per user record finished: 1 if written, 0 if failed, so the mean is the success rate. ShardId: the shard it was written to, or the predicted one for a failure."
            }
            Self::UserRecordsDataPut => "The data bytes of each user record written.",
            Self::UserRecordExpired => "1 per user record failed because `RecordTtl` passed.",
            Self::KinesisRecordsPut => {
                "Per Kinesis record (an aggregate or a single record) answered: 1 written, 0 failed. ShardId: the predicted shard."
            }
            Self::KinesisRecordsDataPut => {
                "The bytes (data and partition key) of each Kinesis record written."
            }
            Self::ErrorsByCode => {
                "1 per failed Kinesis record (with its shard) and per failed whole `PutRecords` call (without one), by error code: the service's, or the producer's own (`docs/aws-errors.md`)."
            }
            Self::AllErrors => {
                "0 per Kinesis record written, 1 per Kinesis record failed and per failed whole call: the mean is the error rate."
            }
            Self::RetriesPerRecord => "Per user record finished: its attempts less one.",
            Self::BufferingTime => {
                "Per attempt of a user record: the time it waited before the attempt, from its acceptance or from the end of its previous attempt."
            }
            Self::RequestTime => "The duration of each `PutRecords` call.",
            Self::UserRecordsPerKinesisRecord => "Per Kinesis record sent: the user records in it.",
            Self::KinesisRecordsPerPutRecordsRequest => {
                "Per `PutRecords` call: the Kinesis records in it."
            }
            Self::UserRecordsPerPutRecordsRequest => {
                "Per `PutRecords` call: the user records in it."
            }
        }
    }

    /// Its position in [`ALL`](Self::ALL).
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One series of an interval: a metric, its dimensions, and the statistics of its samples.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Series {
    /// The metric.
    pub metric: Metric,
    /// `StreamName`.
    pub stream: Stream,
    /// `ShardId`; `None` for a stream-level series (a metric kept per stream, or an
    /// observation with no shard: a record sent without a prediction, a whole call failed).
    pub shard: Option<ShardId>,
    /// `ErrorCode`, for `ErrorsByCode`.
    pub error_code: Option<Arc<str>>,
    /// Sample count, sum, minimum and maximum.
    pub stat: Summary,
}

impl Series {
    /// A series of `metric` at a place with statistics `stat`.
    pub fn new(
        metric: Metric,
        stream: Stream,
        shard: Option<ShardId>,
        error_code: Option<Arc<str>>,
        stat: Summary,
    ) -> Self {
        Self {
            metric,
            stream,
            shard,
            error_code,
            stat,
        }
    }
}

/// One statistic set ready for a metrics service: a metric, its dimensions in order, and the
/// sample count, sum, minimum and maximum.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MetricDatum {
    /// The metric (its name and unit come with it).
    pub metric: Metric,
    /// The dimensions, name and value, in the KPL's order.
    pub dimensions: Vec<(String, String)>,
    /// The statistics; `count` is never 0.
    pub stat: Summary,
}

impl MetricDatum {
    /// A datum of `metric` with `dimensions` and `stat`.
    pub fn new(metric: Metric, dimensions: Vec<(String, String)>, stat: Summary) -> Self {
        Self {
            metric,
            dimensions,
            stat,
        }
    }
}

/// What a producer hands its exporter every `MetricsUploadDelay`: the interval's statistics.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MetricsUpload {
    /// `MetricsNamespace`.
    pub namespace: String,
    /// When the interval ended: every datum's timestamp.
    pub timestamp: SystemTime,
    /// The statistic sets, each with samples.
    pub data: Vec<MetricDatum>,
}

impl MetricsUpload {
    /// An upload of `data` to `namespace`, stamped `timestamp`.
    pub fn new(
        namespace: impl Into<String>,
        timestamp: SystemTime,
        data: Vec<MetricDatum>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            timestamp,
            data,
        }
    }
}

/// How an upload went, when it went through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportReport {
    /// Requests made.
    pub requests: usize,
    /// Statistic sets sent.
    pub datums: usize,
    /// Statistic sets left out because a metrics service cannot take them (a non-finite value).
    pub skipped: usize,
}

/// An upload that did not go through (after the exporter's own retries).
#[derive(Debug)]
pub struct ExportError {
    message: String,
    /// Statistic sets that did not reach the service.
    pub lost: usize,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ExportError {
    /// An error that lost `lost` statistic sets, with a message and the underlying error.
    pub fn new(
        message: impl Into<String>,
        lost: usize,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            message: message.into(),
            lost,
            source,
        }
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} statistic sets lost)", self.message, self.lost)
    }
}

impl std::error::Error for ExportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// The future a [`MetricsExporter`] returns: named, boxed, `Send`, and independent of any
/// runtime, as [`TransportFuture`](crate::transport::TransportFuture) is for calls.
#[must_use = "an export does nothing unless polled"]
pub struct ExportFuture(Pin<Box<dyn Future<Output = Result<ExportReport, ExportError>> + Send>>);

impl ExportFuture {
    /// Wraps any `Send` future.
    pub fn new(
        future: impl Future<Output = Result<ExportReport, ExportError>> + Send + 'static,
    ) -> Self {
        Self(Box::pin(future))
    }
}

impl Future for ExportFuture {
    type Output = Result<ExportReport, ExportError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ExportFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportFuture")
    }
}

/// Where a producer sends its metrics every `MetricsUploadDelay` (CloudWatch, with
/// `kpl-cloudwatch`). An exporter retries as it sees fit; the producer never waits for it but at
/// shutdown, and never lets it hold records back.
pub trait MetricsExporter: Send + Sync + 'static {
    /// Sends one upload.
    fn export(&self, upload: MetricsUpload) -> ExportFuture;
}

/// The samples of one interval at one place (a stream, or one of its shards), per metric.
#[derive(Clone, Debug, Default)]
pub(crate) struct Interval {
    stats: [Summary; Metric::ALL.len()],
    errors: BTreeMap<Arc<str>, Summary>,
}

impl Interval {
    #[inline(always)]
    pub(crate) fn record(&mut self, metric: Metric, value: f64) {
        self.stats[metric.index()].record(value);
    }

    /// A sample of 1 for `ErrorsByCode` under `code` (bounded in number and length like
    /// [`StreamStats::errors_by_code`](crate::StreamStats::errors_by_code)), and of 1 for
    /// `AllErrors`.
    pub(crate) fn error(&mut self, code: &str) {
        self.record(Metric::AllErrors, 1.0);
        if let Some(stat) = self.errors.get_mut(code) {
            stat.record(1.0);
            return;
        }
        let code = bounded_error_code(code, self.errors.len());
        self.errors.entry(Arc::from(code)).or_default().record(1.0);
    }

    /// Takes the interval's series (those with samples) and starts a new interval.
    pub(crate) fn take(
        &mut self,
        stream: &Stream,
        shard: Option<&ShardId>,
        into: &mut Vec<Series>,
    ) {
        for metric in Metric::ALL {
            let stat = std::mem::take(&mut self.stats[metric.index()]);
            if stat.count > 0 && metric != Metric::ErrorsByCode {
                into.push(Series {
                    metric,
                    stream: stream.clone(),
                    shard: shard.cloned(),
                    error_code: None,
                    stat,
                });
            }
        }
        for (code, stat) in std::mem::take(&mut self.errors) {
            into.push(Series {
                metric: Metric::ErrorsByCode,
                stream: stream.clone(),
                shard: shard.cloned(),
                error_code: Some(code),
                stat,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_listed_once_in_the_order_of_its_index() {
        for (index, metric) in Metric::ALL.into_iter().enumerate() {
            assert_eq!(metric.index(), index);
            assert_eq!(Metric::from_name(metric.name()), Some(metric));
        }
        assert_eq!(Metric::from_name("UnhealthyDaemon"), None);
    }

    #[test]
    fn an_interval_gives_its_samples_once_and_error_codes_stay_bounded() {
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let shard = ShardId::from("shardId-0");
        let mut interval = Interval::default();
        interval.record(Metric::UserRecordsPut, 1.0);
        interval.record(Metric::UserRecordsPut, 0.0);
        for n in 0..100 {
            interval.error(&format!("Code{n}"));
        }
        let mut series = Vec::new();
        interval.take(&stream, Some(&shard), &mut series);
        let put = series
            .iter()
            .find(|s| s.metric == Metric::UserRecordsPut)
            .map(|s| s.stat);
        assert_eq!(
            put.map(|s| (s.count, s.sum, s.min, s.max)),
            Some((2, 1.0, 0.0, 1.0))
        );
        let codes = series.iter().filter(|s| s.metric == Metric::ErrorsByCode);
        assert_eq!(codes.clone().count(), MAX_ERROR_CODES);
        assert_eq!(codes.map(|s| s.stat.count).sum::<u64>(), 100);
        let all = series.iter().find(|s| s.metric == Metric::AllErrors);
        assert_eq!(all.map(|s| s.stat.count), Some(100));
        let mut again = Vec::new();
        interval.take(&stream, Some(&shard), &mut again);
        assert!(again.is_empty(), "a new interval starts empty");
    }
}
