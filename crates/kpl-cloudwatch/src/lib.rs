//! The CloudWatch exporter of kpl-rs: a producer's metrics, uploaded with `PutMetricData` as the
//! KPL uploads them.
//!
//! Every `MetricsUploadDelay` the producer hands a [`MetricsExporter`] the interval's statistic
//! sets; [`CloudWatchExporter`] turns each into a `MetricDatum` with a `StatisticSet` (sample
//! count, sum, minimum, maximum), its unit, the interval's timestamp and its dimensions, and
//! sends them in as few `PutMetricData` calls as the service's limits allow (1,000 datums and
//! 1 MB a call). Statistic sets a metrics service would refuse (a non-finite value, no samples:
//! the KPL's issue #188) are left out and counted. Failed calls are retried by the SDK with
//! exponential backoff and jitter; an upload that still fails is reported, never retried into the
//! next one (CloudWatch would count the samples twice).
//!
//! It has its own region, endpoint and credentials, so metrics can go to another account or
//! region than the records (the KPL's `CloudwatchEndpoint` and metrics credentials); or it
//! derives its client from another's configuration ([`CloudWatchSettings::base_config`]), as
//! the producer's default exporter derives it from the Kinesis transport's.
//!
//! ```no_run
//! use std::time::SystemTime;
//! use kpl_cloudwatch::{CloudWatchExporter, CloudWatchSettings};
//! use kpl_engine::metrics::{Metric, MetricDatum, MetricsExporter, MetricsUpload};
//! use kpl_engine::Summary;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let mut settings = CloudWatchSettings::default();
//! settings.sdk.region = Some("eu-west-1".to_owned());
//! let exporter = CloudWatchExporter::new(settings);
//! let mut stat = Summary::default();
//! (stat.count, stat.sum, stat.min, stat.max) = (3, 2.0, 0.0, 1.0);
//! let datum = MetricDatum::new(
//!     Metric::UserRecordsPut,
//!     vec![("StreamName".to_owned(), "orders".to_owned())],
//!     stat,
//! );
//! let upload = MetricsUpload::new("KinesisProducerLibrary", SystemTime::now(), vec![datum]);
//! let report = exporter.export(upload).await?;
//! assert_eq!(report.datums, 1);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum as CwDatum, StandardUnit, StatisticSet};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use kpl_aws::SdkSettings;
use kpl_engine::metrics::{
    ExportError, ExportFuture, ExportReport, MetricDatum, MetricsExporter, MetricsUpload, Unit,
};
use tokio::sync::OnceCell;

/// The most datums one `PutMetricData` call takes.
pub const MAX_DATUMS_PER_CALL: usize = 1_000;
/// The most bytes one `PutMetricData` call's body may have (1 MB), less room for the request's
/// own framing: calls are cut by an estimate of each datum's encoded size.
pub const MAX_BYTES_PER_CALL: usize = 1_000_000 - 16 * 1024;
/// The most dimensions CloudWatch takes per datum.
pub const MAX_DIMENSIONS: usize = 30;
/// Calls per upload the SDK makes at most for one batch, retries included.
const MAX_ATTEMPTS: u32 = 3;
/// What a datum's encoding costs beyond its names and values, rounded up: the CBOR field names
/// (`MetricName`, `Dimensions`, `StatisticValues`, `SampleCount`, `Sum`, `Minimum`, `Maximum`,
/// `Timestamp`, `Unit`), four doubles, a tagged timestamp and the longest unit.
const DATUM_OVERHEAD_BYTES: usize = 160;
/// What one dimension's encoding costs beyond its name and value.
const DIMENSION_OVERHEAD_BYTES: usize = 16;

/// Gives the SDK configuration the CloudWatch client derives from: the region, credentials and
/// HTTP client (proxy, trust store) another client already uses, so both go one way. The
/// producer hands its Kinesis transport's (`kpl_aws::AwsTransport::sdk_config`).
pub type BaseConfig =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = aws_config::SdkConfig> + Send>> + Send + Sync>;

/// Where and as whom to upload. Everything is optional: by default the SDK's provider chains
/// decide the region and the credentials, and the regional endpoint is used. The client derives
/// from [`base_config`](Self::base_config) when given; each setting of `sdk` that is set
/// overrides it.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct CloudWatchSettings {
    /// Region, endpoint, credentials and the call timeout (of each attempt), as every AWS
    /// client of the producer takes them.
    pub sdk: SdkSettings,
    /// The SDK configuration to derive from (see [`BaseConfig`]); `None`: the SDK's defaults.
    /// Its endpoint stands unless `sdk.endpoint_url` is set: give a base without another
    /// service's endpoint (the producer's default exporter strips `KinesisEndpoint` from the
    /// transport's).
    pub base_config: Option<BaseConfig>,
    /// An HTTP client of the application's (a proxy, a trust store: `kpl_aws::AwsTransport`'s
    /// `http_client`); `None`: the base's, or the SDK's.
    pub http_client: Option<SharedHttpClient>,
}

impl fmt::Debug for CloudWatchSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudWatchSettings")
            .field("sdk", &self.sdk)
            .field(
                "base_config",
                &self.base_config.as_ref().map(|_| "<shared>"),
            )
            .field(
                "http_client",
                &self.http_client.as_ref().map(|_| "<client>"),
            )
            .finish()
    }
}

/// Uploads a producer's metrics to CloudWatch. Cheap to clone; the SDK configuration is loaded
/// at the first upload.
#[derive(Clone)]
pub struct CloudWatchExporter {
    settings: Arc<CloudWatchSettings>,
    client: Arc<OnceCell<Client>>,
}

impl fmt::Debug for CloudWatchExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudWatchExporter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl CloudWatchExporter {
    /// An exporter with `settings`.
    pub fn new(settings: CloudWatchSettings) -> Self {
        Self {
            settings: Arc::new(settings),
            client: Arc::new(OnceCell::new()),
        }
    }

    /// An exporter on a client the application built.
    pub fn from_client(client: Client) -> Self {
        Self {
            settings: Arc::new(CloudWatchSettings::default()),
            client: Arc::new(OnceCell::new_with(Some(client))),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { Client::from_conf(client_config(&self.settings).await) })
            .await
    }
}

impl MetricsExporter for CloudWatchExporter {
    fn export(&self, upload: MetricsUpload) -> ExportFuture {
        let exporter = self.clone();
        ExportFuture::new(async move { exporter.upload(upload).await })
    }
}

impl CloudWatchExporter {
    async fn upload(&self, upload: MetricsUpload) -> Result<ExportReport, ExportError> {
        let timestamp = DateTime::from(upload.timestamp);
        let mut report = ExportReport::default();
        let mut data = Vec::with_capacity(upload.data.len());
        for datum in &upload.data {
            match to_cloudwatch(datum, timestamp) {
                Some(encoded) => data.push(encoded),
                None => report.skipped += 1,
            }
        }
        let calls = split_into_calls(data);
        let total: usize = calls.iter().map(|(call, _)| call.len()).sum();
        let client = self.client().await;
        // Every call is made, whatever became of the others: one refused call loses its own
        // datums only.
        let mut failure: Option<(usize, aws_sdk_cloudwatch::error::SdkError<_, _>)> = None;
        for (call, _) in calls {
            let count = call.len();
            let sent = client
                .put_metric_data()
                .namespace(&upload.namespace)
                .set_metric_data(Some(call))
                .send()
                .await;
            report.requests += 1;
            match sent {
                Ok(_) => report.datums += count,
                Err(error) => {
                    let lost = failure.as_ref().map_or(0, |(lost, _)| *lost) + count;
                    failure = Some((lost, error));
                }
            }
        }
        match failure {
            None => Ok(report),
            Some((lost, error)) => {
                let message = format!(
                    "PutMetricData to namespace {:?}: {} of {total} datums not sent, the last failure: {}",
                    upload.namespace,
                    lost,
                    aws_sdk_cloudwatch::error::DisplayErrorContext(&error)
                );
                Err(ExportError::new(message, lost, Some(Box::new(error))))
            }
        }
    }
}

/// A datum in CloudWatch's terms; `None` when CloudWatch would refuse it (no samples, or a
/// value that is not finite).
fn to_cloudwatch(datum: &MetricDatum, timestamp: DateTime) -> Option<CwDatum> {
    let stat = &datum.stat;
    let values = [stat.sum, stat.min, stat.max];
    if stat.count == 0 || values.iter().any(|value| !value.is_finite()) {
        return None;
    }
    let unit = match datum.metric.unit() {
        Unit::Bytes => StandardUnit::Bytes,
        Unit::Milliseconds => StandardUnit::Milliseconds,
        _ => StandardUnit::Count,
    };
    let statistics = StatisticSet::builder()
        .sample_count(stat.count as f64)
        .sum(stat.sum)
        .minimum(stat.min)
        .maximum(stat.max)
        .build();
    let dimensions = datum
        .dimensions
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .take(MAX_DIMENSIONS)
        .map(|(name, value)| Dimension::builder().name(name).value(value).build())
        .collect();
    let encoded = CwDatum::builder()
        .metric_name(datum.metric.name())
        .set_dimensions(Some(dimensions))
        .statistic_values(statistics)
        .unit(unit)
        .timestamp(timestamp)
        .build();
    Some(encoded)
}

/// An estimate (from above) of a datum's size in a call's body.
fn estimated_size(datum: &CwDatum) -> usize {
    let name = datum.metric_name().map_or(0, str::len);
    let dimensions: usize = datum
        .dimensions()
        .iter()
        .map(|d| {
            d.name().map_or(0, str::len) + d.value().map_or(0, str::len) + DIMENSION_OVERHEAD_BYTES
        })
        .sum();
    DATUM_OVERHEAD_BYTES + name + dimensions
}

/// The datums cut into calls of at most [`MAX_DATUMS_PER_CALL`] datums and
/// [`MAX_BYTES_PER_CALL`] estimated bytes, in order, each with its estimated size.
fn split_into_calls(data: Vec<CwDatum>) -> Vec<(Vec<CwDatum>, usize)> {
    let mut calls: Vec<(Vec<CwDatum>, usize)> = Vec::new();
    for datum in data {
        let size = estimated_size(&datum);
        match calls.last_mut() {
            Some((call, bytes))
                if call.len() < MAX_DATUMS_PER_CALL && *bytes + size <= MAX_BYTES_PER_CALL =>
            {
                call.push(datum);
                *bytes += size;
            }
            _ => calls.push((vec![datum], size)),
        }
    }
    calls
}

/// The client's configuration: derived from the base (given, or loaded from the settings),
/// with the settings laid over it and the SDK's standard retries (exponential backoff with
/// jitter) for each call.
async fn client_config(settings: &CloudWatchSettings) -> aws_sdk_cloudwatch::Config {
    let sdk = &settings.sdk;
    let base = match &settings.base_config {
        Some(base) => base().await,
        None => kpl_aws::keep_warm(sdk.loader(settings.http_client.clone()).load().await),
    };
    let mut config = aws_sdk_cloudwatch::config::Builder::from(&base)
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
    // Otherwise the base's (or the environment's, or the profile's) stands.
    if let Some(url) = &sdk.endpoint_url {
        config = config.endpoint_url(url.clone());
    }
    if let Some(request) = sdk.request_timeout {
        let timeouts = base
            .timeout_config()
            .map_or_else(TimeoutConfig::builder, TimeoutConfig::to_builder);
        config = config.timeout_config(timeouts.operation_attempt_timeout(request).build());
    }
    if let Some(region) = &sdk.region {
        config = config.region(aws_config::Region::new(region.clone()));
    }
    if let Some(http_client) = &settings.http_client {
        config = config.http_client(http_client.clone());
    }
    if let Some(provider) = sdk.provider() {
        let warm = kpl_aws::WarmCredentials::new(provider);
        warm.warm();
        config = config.credentials_provider(warm);
    }
    config.build()
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use kpl_engine::Summary;
    use kpl_engine::metrics::Metric;

    use super::*;

    fn datum(stream: &str, sum: f64) -> MetricDatum {
        let mut stat = Summary::default();
        (stat.count, stat.sum, stat.min, stat.max) = (2, sum, 0.0, sum);
        let dimensions = vec![("StreamName".to_owned(), stream.to_owned())];
        MetricDatum::new(Metric::UserRecordsDataPut, dimensions, stat)
    }

    #[test]
    fn values_cloudwatch_would_refuse_are_left_out() {
        let at = DateTime::from(UNIX_EPOCH);
        assert!(to_cloudwatch(&datum("s", 5.0), at).is_some());
        assert!(to_cloudwatch(&datum("s", f64::INFINITY), at).is_none());
        assert!(to_cloudwatch(&datum("s", f64::NAN), at).is_none());
        let mut empty = datum("s", 1.0);
        empty.stat = Summary::default();
        assert!(to_cloudwatch(&empty, at).is_none(), "no samples");
        let Some(encoded) = to_cloudwatch(&datum("s", 5.0), at) else {
            unreachable!()
        };
        assert_eq!(encoded.unit(), Some(&StandardUnit::Bytes));
        let set = encoded.statistic_values();
        assert_eq!(
            set.map(|s| (s.sample_count(), s.sum())),
            Some((Some(2.0), Some(5.0)))
        );
    }

    #[test]
    fn calls_hold_at_most_a_thousand_datums_and_a_megabyte() {
        let at = DateTime::from(UNIX_EPOCH);
        let many: Vec<CwDatum> = (0..2_500)
            .filter_map(|n| to_cloudwatch(&datum(&format!("stream-{n}"), 1.0), at))
            .collect();
        let sizes: Vec<usize> = split_into_calls(many)
            .iter()
            .map(|(c, _)| c.len())
            .collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);
        let long = "x".repeat(255);
        let big: Vec<CwDatum> = (0..1_000)
            .filter_map(|_| {
                let mut d = datum("s", 1.0);
                d.dimensions = (0..30)
                    .map(|i| (format!("{long}{i}"), long.clone()))
                    .collect();
                to_cloudwatch(&d, at)
            })
            .collect();
        let calls = split_into_calls(big);
        assert!(calls.len() > 1);
        assert!(calls.iter().all(|(_, bytes)| *bytes <= MAX_BYTES_PER_CALL));
        assert_eq!(calls.iter().map(|(c, _)| c.len()).sum::<usize>(), 1_000);
    }
}

/// Keeps the code in this crate's README compiling and passing.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
