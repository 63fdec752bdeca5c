//! The producer's configuration: every KPL key that still means something in process, under its
//! snake_case name, with the KPL's defaults and ranges; the keys this library adds; and the Java
//! KPL's `.properties` format.
//!
//! Every key is described once, in [`KEYS`]: its KPL name, default, range and meaning. Parsing
//! (`Config::set`, [`Config::from_kpl_properties`]), validation ([`Config::validate`]) and
//! `docs/config.md` all come from that table.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use kpl_aggregation::{MaxAggregateSize, OuterPartitionKey};
use kpl_engine::{
    EngineConfig, MAX_USER_RECORD_SIZE_RANGE, MIN_COLLECTION_MAX_SIZE, OrderingMode,
    PUT_RECORDS_MAX_ENTRIES,
};

use crate::error::ConfigError;
use crate::metrics::{MetricsDimension, MetricsGranularity, MetricsLevel};
use crate::properties;

/// Static credentials, when not taken from the default provider chain. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl StaticCredentials {
    /// Whether nothing is set: such credentials mean the default provider chain.
    pub fn is_empty(&self) -> bool {
        self.access_key_id.is_empty()
            && self.secret_access_key.is_empty()
            && self.session_token.as_ref().is_none_or(String::is_empty)
    }
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &"<redacted>")
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The producer's configuration. `Default` is the KPL's defaults; set fields directly, or by KPL
/// name with [`set`](Self::set), or load a KPL `.properties` file. [`validate`](Self::validate)
/// (called by the producer's `build`) checks every value against its range.
///
/// ```
/// use std::time::Duration;
/// let mut config = kpl::Config::default();
/// config.record_max_buffered_time = Duration::from_millis(50);
/// config.set("RateLimit", "100")?;
/// config.validate()?;
/// # Ok::<(), kpl::ConfigError>(())
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `AggregationEnabled`.
    pub aggregation_enabled: bool,
    /// `AggregationMaxCount`.
    pub aggregation_max_count: u64,
    /// `AggregationMaxSize`, bytes.
    pub aggregation_max_size: u64,
    /// `CollectionMaxCount`.
    pub collection_max_count: u64,
    /// `CollectionMaxSize`, bytes.
    pub collection_max_size: u64,
    /// `ConnectTimeout`.
    pub connect_timeout: Duration,
    /// `RequestTimeout`.
    pub request_timeout: Duration,
    /// `FailIfThrottled`.
    pub fail_if_throttled: bool,
    /// `KinesisEndpoint`: a host, or a full `http://` / `https://` URL.
    pub kinesis_endpoint: String,
    /// `KinesisPort`.
    pub kinesis_port: u16,
    /// `CloudwatchEndpoint`: a host, or a full URL.
    pub cloudwatch_endpoint: String,
    /// `CloudwatchPort`.
    pub cloudwatch_port: u16,
    /// `MaxConnections`: calls in flight at once.
    pub max_connections: u64,
    /// `MaxUserRecordSize`: the largest record, bytes of data + partition key; a stream with a
    /// lower `MaxRecordSizeInKiB` lowers it for that stream.
    pub max_user_record_size: u64,
    /// `MetricsGranularity`.
    pub metrics_granularity: MetricsGranularity,
    /// `MetricsLevel`.
    pub metrics_level: MetricsLevel,
    /// `MetricsNamespace`.
    pub metrics_namespace: String,
    /// `MetricsUploadDelay`.
    pub metrics_upload_delay: Duration,
    /// `RateLimit`, percent of a shard's limits.
    pub rate_limit: u64,
    /// `RecordMaxBufferedTime`.
    pub record_max_buffered_time: Duration,
    /// `RecordTtl`.
    pub record_ttl: Duration,
    /// `Region`; empty for the SDK's default.
    pub region: String,
    /// `VerifyCertificate`.
    pub verify_certificate: bool,
    /// `ProxyHost`.
    pub proxy_host: String,
    /// `ProxyPort`.
    pub proxy_port: u16,
    /// `ProxyUserName`.
    pub proxy_user_name: String,
    /// `ProxyPassword` (never printed).
    pub proxy_password: String,
    /// `CaCertPath`.
    pub ca_cert_path: String,
    /// `CaCertFile`.
    pub ca_cert_file: String,
    /// `UserRecordTimeoutInMillis`: a delivery future gives up waiting after this long (the
    /// producer keeps trying); zero for never.
    pub user_record_timeout: Duration,
    /// `ReturnUserRecordOnFailure`: failed deliveries carry the record.
    pub return_user_record_on_failure: bool,
    /// Credentials (`AwsAccessKeyId`, `AwsSecretKey`, `AwsSessionToken`); `None` for the default
    /// provider chain.
    pub credentials: Option<StaticCredentials>,
    /// `MaxOutstandingRecords` (new): records accepted and unfinished before `send` refuses.
    pub max_outstanding_records: u64,
    /// `MaxOutstandingBytes` (new): bytes accepted and unfinished before `send` refuses.
    pub max_outstanding_bytes: u64,
    /// `OrderingMode` (new): `unordered` or `per_shard` (see `docs/ordering.md`).
    pub ordering: OrderingMode,
    /// `ShardMapRefreshInterval` (new): periodic shard-map re-read, ± 10 %.
    pub shard_map_refresh_interval: Duration,
    /// `OuterPartitionKey` (new): `constant` ("a", as the KPL) or `first_user_record`.
    pub outer_partition_key: OuterPartitionKey,
    /// `RetryBackoffBase` (new): first retry backoff ceiling.
    pub retry_backoff_base: Duration,
    /// `RetryBackoffCap` (new): largest retry backoff ceiling.
    pub retry_backoff_cap: Duration,
    /// Seed of the engine's jitter; `None` picks one per producer.
    pub rng_seed: Option<u64>,
    /// Dimensions added to the metrics (see [`add_metrics_dimension`](Self::add_metrics_dimension)).
    pub additional_metrics_dimensions: Vec<MetricsDimension>,
}

impl Default for Config {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            aggregation_enabled: engine.aggregation_enabled,
            aggregation_max_count: engine.aggregation_max_count,
            aggregation_max_size: engine.aggregation_max_size.get() as u64,
            collection_max_count: engine.collection_max_count as u64,
            collection_max_size: engine.collection_max_size as u64,
            connect_timeout: Duration::from_millis(6_000),
            request_timeout: Duration::from_millis(6_000),
            fail_if_throttled: engine.fail_if_throttled,
            kinesis_endpoint: String::new(),
            kinesis_port: 443,
            cloudwatch_endpoint: String::new(),
            cloudwatch_port: 443,
            max_connections: 24,
            max_user_record_size: engine.max_user_record_size as u64,
            metrics_granularity: MetricsGranularity::Shard,
            metrics_level: MetricsLevel::Detailed,
            metrics_namespace: "KinesisProducerLibrary".to_owned(),
            metrics_upload_delay: Duration::from_millis(60_000),
            rate_limit: engine.rate_limit,
            record_max_buffered_time: engine.record_max_buffered_time,
            record_ttl: engine.record_ttl,
            region: String::new(),
            verify_certificate: true,
            proxy_host: String::new(),
            proxy_port: 443,
            proxy_user_name: String::new(),
            proxy_password: String::new(),
            ca_cert_path: String::new(),
            ca_cert_file: String::new(),
            user_record_timeout: Duration::ZERO,
            return_user_record_on_failure: false,
            credentials: None,
            max_outstanding_records: engine.max_outstanding_records as u64,
            max_outstanding_bytes: engine.max_outstanding_bytes as u64,
            ordering: engine.ordering,
            shard_map_refresh_interval: engine.shard_map_refresh_interval,
            outer_partition_key: engine.outer_partition_key,
            retry_backoff_base: engine.retry_backoff_base,
            retry_backoff_cap: engine.retry_backoff_cap,
            rng_seed: None,
            additional_metrics_dimensions: Vec::new(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Config");
        for key in KEYS.iter().filter(|k| k.kind != KeyKind::Ignored) {
            let value = if key.secret {
                "<redacted>".to_owned()
            } else {
                (key.get)(self)
            };
            s.field(key.field, &value);
        }
        s.field("credentials", &self.credentials);
        s.field("rng_seed", &self.rng_seed);
        s.field(
            "additional_metrics_dimensions",
            &self.additional_metrics_dimensions,
        );
        s.finish()
    }
}

/// How a key is treated in process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// A KPL key with the KPL's meaning.
    Kpl,
    /// A key this library adds.
    New,
    /// A KPL key that only made sense for the daemon or the Java wrapper: accepted, checked
    /// where the KPL checked it, logged and otherwise ignored.
    Ignored,
}

/// One configuration key.
#[derive(Clone, Copy)]
pub(crate) struct Key {
    /// The KPL (properties-file) name.
    pub name: &'static str,
    /// The `Config` field (empty for ignored keys).
    pub field: &'static str,
    /// The default, as text.
    pub default: &'static str,
    /// The allowed values, as text.
    pub range: &'static str,
    /// What it does.
    pub meaning: &'static str,
    /// How it is treated.
    pub kind: KeyKind,
    secret: bool,
    get: fn(&Config) -> String,
    set: fn(&mut Config, &str) -> Result<(), Invalid>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

/// CloudWatch's limits on a dimension's name and value, and on dimensions per datum less the
/// producer's own three (`ErrorCode`, `StreamName`, `ShardId`).
const MAX_DIMENSION_NAME_CHARS: usize = 255;
const MAX_DIMENSION_VALUE_CHARS: usize = 1_024;
const MAX_ADDITIONAL_DIMENSIONS: usize = 27;

/// Why a value was refused, before the key's name is attached.
#[derive(Debug)]
struct Invalid;

const I64_MAX: u64 = i64::MAX as u64;

fn int(value: &str, min: u64, max: u64) -> Result<u64, Invalid> {
    let number: u64 = value.parse().map_err(|_| Invalid)?;
    if (min..=max).contains(&number) {
        Ok(number)
    } else {
        Err(Invalid)
    }
}

fn millis(value: &str, min: u64, max: u64) -> Result<Duration, Invalid> {
    int(value, min, max).map(Duration::from_millis)
}

fn boolean(value: &str) -> Result<bool, Invalid> {
    // Java's Boolean.parseBoolean takes anything that is not "true" as false; a typo there
    // silently flips a setting, so only true and false are accepted here.
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Invalid),
    }
}

fn port(value: &str) -> Result<u16, Invalid> {
    int(value, 1, 65_535).map(|p| p as u16)
}

fn ms_text(duration: Duration) -> String {
    duration.as_millis().to_string()
}

fn is_host(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// An endpoint is empty, a host, or an `http://` / `https://` URL (the KPL takes hosts only;
/// KPL issue #249).
fn endpoint(value: &str) -> Result<String, Invalid> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    let ok = match rest {
        None => is_host(value),
        Some(rest) => {
            let authority = rest.split('/').next().unwrap_or_default();
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            !host.is_empty()
                && is_host(host)
                && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
        }
    };
    if ok {
        Ok(value.to_owned())
    } else {
        Err(Invalid)
    }
}

/// The URL of an endpoint setting: `None` when empty, the setting itself when a URL, and
/// `https://host:port` for a host.
#[cfg(feature = "aws")]
pub(crate) fn endpoint_url(endpoint: &str, port: u16) -> Option<String> {
    if endpoint.is_empty() {
        None
    } else if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        Some(endpoint.to_owned())
    } else {
        Some(format!("https://{endpoint}:{port}"))
    }
}

fn region(value: &str) -> Result<String, Invalid> {
    // ^([a-z]+-([a-z]+-)?[a-z]+-[0-9])?$
    if value.is_empty() {
        return Ok(String::new());
    }
    let parts: Vec<&str> = value.split('-').collect();
    let (words, number) = parts.split_at(parts.len() - 1);
    let words_ok = (2..=3).contains(&words.len())
        && words
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()));
    let number_ok = number
        .first()
        .is_some_and(|n| n.len() == 1 && n.chars().all(|c| c.is_ascii_digit()));
    if words_ok && number_ok {
        Ok(value.to_owned())
    } else {
        Err(Invalid)
    }
}

fn namespace(value: &str) -> Result<String, Invalid> {
    // (?!AWS/).{1,255}
    let chars = value.chars().count();
    if (1..=255).contains(&chars) && !value.starts_with("AWS/") {
        Ok(value.to_owned())
    } else {
        Err(Invalid)
    }
}

fn ordering_text(mode: OrderingMode) -> String {
    match mode {
        OrderingMode::PerShard => "per_shard",
        _ => "unordered",
    }
    .to_owned()
}

fn outer_key_text(policy: OuterPartitionKey) -> String {
    match policy {
        OuterPartitionKey::FirstUserRecord => "first_user_record",
        _ => "constant",
    }
    .to_owned()
}

macro_rules! key {
    ($name:literal, $field:literal, $kind:ident, $default:literal, $range:literal, $meaning:literal,
     get: $get:expr, set: $set:expr) => {
        Key {
            name: $name,
            field: $field,
            default: $default,
            range: $range,
            meaning: $meaning,
            kind: KeyKind::$kind,
            secret: false,
            get: $get,
            set: $set,
        }
    };
}

fn nothing(_: &Config) -> String {
    String::new()
}

/// Every key, in the order `docs/config.md` lists them.
pub(crate) static KEYS: &[Key] = &[
    key!("AggregationEnabled", "aggregation_enabled", Kpl, "true", "true, false",
        "Pack user records predicted for the same shard into one Kinesis record.",
        get: |c| c.aggregation_enabled.to_string(),
        set: |c, v| { c.aggregation_enabled = boolean(v)?; Ok(()) }),
    key!("AggregationMaxCount", "aggregation_max_count", Kpl, "4294967295", "1..=9223372036854775807",
        "Most user records in one aggregate.",
        get: |c| c.aggregation_max_count.to_string(),
        set: |c, v| { c.aggregation_max_count = int(v, 1, I64_MAX)?; Ok(()) }),
    key!("AggregationMaxSize", "aggregation_max_size", Kpl, "51200", "64..=10485760",
        "Most bytes in one aggregate (exact); a record larger by itself is sent alone.",
        get: |c| c.aggregation_max_size.to_string(),
        set: |c, v| { c.aggregation_max_size = int(v, MaxAggregateSize::MIN as u64, MaxAggregateSize::MAX as u64)?; Ok(()) }),
    key!("CollectionMaxCount", "collection_max_count", Kpl, "500", "1..=500",
        "Most Kinesis records in one PutRecords call.",
        get: |c| c.collection_max_count.to_string(),
        set: |c, v| { c.collection_max_count = int(v, 1, PUT_RECORDS_MAX_ENTRIES as u64)?; Ok(()) }),
    key!("CollectionMaxSize", "collection_max_size", Kpl, "5242880", "52224..=9223372036854775807",
        "Most bytes (data + partition keys) in one PutRecords call; calls never pass the service's 10 MiB.",
        get: |c| c.collection_max_size.to_string(),
        set: |c, v| { c.collection_max_size = int(v, MIN_COLLECTION_MAX_SIZE as u64, I64_MAX)?; Ok(()) }),
    key!("ConnectTimeout", "connect_timeout", Kpl, "6000", "100..=300000 (ms)",
        "Timeout for establishing a connection.",
        get: |c| ms_text(c.connect_timeout),
        set: |c, v| { c.connect_timeout = millis(v, 100, 300_000)?; Ok(()) }),
    key!("RequestTimeout", "request_timeout", Kpl, "6000", "100..=600000 (ms)",
        "Timeout of a whole call. A timed-out PutRecords may have been written: its retry can duplicate records.",
        get: |c| ms_text(c.request_timeout),
        set: |c, v| { c.request_timeout = millis(v, 100, 600_000)?; Ok(()) }),
    key!("FailIfThrottled", "fail_if_throttled", Kpl, "false", "true, false",
        "Fail throttled records at once instead of retrying them.",
        get: |c| c.fail_if_throttled.to_string(),
        set: |c, v| { c.fail_if_throttled = boolean(v)?; Ok(()) }),
    key!("KinesisEndpoint", "kinesis_endpoint", Kpl, "", "empty, a host, or an http:// or https:// URL",
        "Kinesis endpoint override. Unlike the KPL, a full URL is accepted, so local servers over plain HTTP work.",
        get: |c| c.kinesis_endpoint.clone(),
        set: |c, v| { c.kinesis_endpoint = endpoint(v)?; Ok(()) }),
    key!("KinesisPort", "kinesis_port", Kpl, "443", "1..=65535",
        "Port for a host-only KinesisEndpoint.",
        get: |c| c.kinesis_port.to_string(),
        set: |c, v| { c.kinesis_port = port(v)?; Ok(()) }),
    key!("CloudwatchEndpoint", "cloudwatch_endpoint", Kpl, "", "empty, a host, or an http:// or https:// URL",
        "CloudWatch endpoint override for the metrics upload (the `cloudwatch` feature). A full URL is accepted too.",
        get: |c| c.cloudwatch_endpoint.clone(),
        set: |c, v| { c.cloudwatch_endpoint = endpoint(v)?; Ok(()) }),
    key!("CloudwatchPort", "cloudwatch_port", Kpl, "443", "1..=65535",
        "Port for a host-only CloudwatchEndpoint.",
        get: |c| c.cloudwatch_port.to_string(),
        set: |c, v| { c.cloudwatch_port = port(v)?; Ok(()) }),
    key!("MaxConnections", "max_connections", Kpl, "24", "1..=256",
        "Most calls in flight at once (and the connection pool size).",
        get: |c| c.max_connections.to_string(),
        set: |c, v| { c.max_connections = int(v, 1, 256)?; Ok(()) }),
    key!("MaxUserRecordSize", "max_user_record_size", Kpl, "1048576", "64..=10485760",
        "Largest record (data + partition key) accepted; a stream whose MaxRecordSizeInKiB is lower lowers it, a higher one does not raise it (as in the KPL 1.0.7: set it to send larger records to a stream that allows them).",
        get: |c| c.max_user_record_size.to_string(),
        set: |c, v| { c.max_user_record_size = int(v, *MAX_USER_RECORD_SIZE_RANGE.start() as u64, *MAX_USER_RECORD_SIZE_RANGE.end() as u64)?; Ok(()) }),
    key!("MetricsGranularity", "metrics_granularity", Kpl, "shard", "global, stream, shard",
    "How finely the metrics are split: over all streams, per stream, or per shard (`docs/metrics.md`).",
    get: |c| match c.metrics_granularity {
        MetricsGranularity::Global => "global",
        MetricsGranularity::Stream => "stream",
        _ => "shard",
    }.to_owned(),
    set: |c, v| {
        c.metrics_granularity = match v {
            "global" => MetricsGranularity::Global,
            "stream" => MetricsGranularity::Stream,
            "shard" => MetricsGranularity::Shard,
            _ => return Err(Invalid),
        };
        Ok(())
    }),
    key!("MetricsLevel", "metrics_level", Kpl, "detailed", "none, summary, detailed",
    "Which metrics are reported: none, the Summary ones, or all (`docs/metrics.md`). The windowed view (`KinesisProducer::metrics`) has them all whatever the level.",
    get: |c| match c.metrics_level {
        MetricsLevel::None => "none",
        MetricsLevel::Summary => "summary",
        _ => "detailed",
    }.to_owned(),
    set: |c, v| {
        c.metrics_level = match v {
            "none" => MetricsLevel::None,
            "summary" => MetricsLevel::Summary,
            "detailed" => MetricsLevel::Detailed,
            _ => return Err(Invalid),
        };
        Ok(())
    }),
    key!("MetricsNamespace", "metrics_namespace", Kpl, "KinesisProducerLibrary", "1 to 255 characters, not starting with AWS/",
        "Namespace of the uploaded metrics.",
        get: |c| c.metrics_namespace.clone(),
        set: |c, v| { c.metrics_namespace = namespace(v)?; Ok(()) }),
    key!("MetricsUploadDelay", "metrics_upload_delay", Kpl, "60000", "1..=60000 (ms)",
        "How often the metrics are uploaded (to CloudWatch by default; see `docs/metrics.md`), in whole seconds (at least one).",
        get: |c| ms_text(c.metrics_upload_delay),
        set: |c, v| { c.metrics_upload_delay = millis(v, 1, 60_000)?; Ok(()) }),
    key!("RateLimit", "rate_limit", Kpl, "150", "1..=9223372036854775807 (%)",
        "Most per-shard rate, as a percentage of 1,000 records/s and 1 MiB/s. Sending starts at the shard's limit (100 %) and probes up to this; a throttle cuts the rate below what the shard took (at most once a second), and it comes back while the shard stays busy. Below 100, a ceiling the service never throttles.",
        get: |c| c.rate_limit.to_string(),
        set: |c, v| { c.rate_limit = int(v, 1, I64_MAX)?; Ok(()) }),
    key!("RecordMaxBufferedTime", "record_max_buffered_time", Kpl, "100", "0..=9223372036854775807 (ms)",
        "Longest a record waits to be batched before it is sent.",
        get: |c| ms_text(c.record_max_buffered_time),
        set: |c, v| { c.record_max_buffered_time = millis(v, 0, I64_MAX)?; Ok(()) }),
    key!("RecordTtl", "record_ttl", Kpl, "30000", "100..=9223372036854775807 (ms)",
        "A record not written this long after it was accepted fails as expired.",
        get: |c| ms_text(c.record_ttl),
        set: |c, v| { c.record_ttl = millis(v, 100, I64_MAX)?; Ok(()) }),
    key!("Region", "region", Kpl, "", "empty, or a region such as us-east-1",
        "AWS region; empty takes the AWS SDK chain's (AWS_REGION, the profile, instance metadata) at build, which fails if none.",
        get: |c| c.region.clone(),
        set: |c, v| { c.region = region(v)?; Ok(()) }),
    key!("VerifyCertificate", "verify_certificate", Kpl, "true", "true, false",
        "Verify the endpoint's TLS certificate; false accepts any (self-signed test endpoints), with a warning at build.",
        get: |c| c.verify_certificate.to_string(),
        set: |c, v| { c.verify_certificate = boolean(v)?; Ok(()) }),
    key!("ProxyHost", "proxy_host", Kpl, "", "a host, or empty",
        "HTTP proxy host for the Kinesis and CloudWatch calls (https goes through it by CONNECT); empty honours HTTPS_PROXY/HTTP_PROXY/NO_PROXY (docs/aws.md).",
        get: |c| c.proxy_host.clone(),
        set: |c, v| { if !is_host(v) { return Err(Invalid); } c.proxy_host = v.to_owned(); Ok(()) }),
    key!("ProxyPort", "proxy_port", Kpl, "443", "1..=65535",
        "HTTP proxy port.",
        get: |c| c.proxy_port.to_string(),
        set: |c, v| { c.proxy_port = port(v)?; Ok(()) }),
    key!("ProxyUserName", "proxy_user_name", Kpl, "", "any text",
        "HTTP proxy user name (basic authentication; empty for none).",
        get: |c| c.proxy_user_name.clone(),
        set: |c, v| { c.proxy_user_name = v.to_owned(); Ok(()) }),
    Key {
        secret: true,
        ..key!("ProxyPassword", "proxy_password", Kpl, "", "any text",
            "HTTP proxy password. Never printed.",
            get: |c| c.proxy_password.clone(),
            set: |c, v| { c.proxy_password = v.to_owned(); Ok(()) })
    },
    key!("CaCertPath", "ca_cert_path", Kpl, "", "a directory, or empty",
        "Directory of PEM CA certificates (.pem, .crt) to trust instead of the built-in ones (not with CaCertFile).",
        get: |c| c.ca_cert_path.clone(),
        set: |c, v| { c.ca_cert_path = v.to_owned(); Ok(()) }),
    key!("CaCertFile", "ca_cert_file", Kpl, "", "a file, or empty",
        "File of PEM CA certificates to trust instead of the built-in ones (not with CaCertPath).",
        get: |c| c.ca_cert_file.clone(),
        set: |c, v| { c.ca_cert_file = v.to_owned(); Ok(()) }),
    key!("UserRecordTimeoutInMillis", "user_record_timeout", Kpl, "0", "0..=9223372036854775807 (ms; 0 = off)",
        "A delivery future gives up waiting after this long; the producer keeps trying to send the record.",
        get: |c| ms_text(c.user_record_timeout),
        set: |c, v| { c.user_record_timeout = millis(v, 0, I64_MAX)?; Ok(()) }),
    key!("ReturnUserRecordOnFailure", "return_user_record_on_failure", Kpl, "false", "true, false",
        "Failed deliveries carry the record (DeliveryError::record).",
        get: |c| c.return_user_record_on_failure.to_string(),
        set: |c, v| { c.return_user_record_on_failure = boolean(v)?; Ok(()) }),
    Key {
        secret: true,
        ..key!("AwsAccessKeyId", "credentials.access_key_id", Kpl, "", "an access key id, or empty",
            "Static credentials (with AwsSecretKey); empty uses the default provider chain. Never printed.",
            get: |c| c.credentials.as_ref().map(|k| k.access_key_id.clone()).unwrap_or_default(),
            set: |c, v| { set_credentials(c, |k| k.access_key_id = v.to_owned()); Ok(()) })
    },
    Key {
        secret: true,
        ..key!("AwsSecretKey", "credentials.secret_access_key", Kpl, "", "a secret access key, or empty",
            "Static credentials (with AwsAccessKeyId). Never printed.",
            get: |c| c.credentials.as_ref().map(|k| k.secret_access_key.clone()).unwrap_or_default(),
            set: |c, v| { set_credentials(c, |k| k.secret_access_key = v.to_owned()); Ok(()) })
    },
    Key {
        secret: true,
        ..key!("AwsSessionToken", "credentials.session_token", New, "", "a session token, or empty",
            "Session token of temporary static credentials (only with AwsAccessKeyId and AwsSecretKey). Never printed.",
            get: |c| c.credentials.as_ref().and_then(|k| k.session_token.clone()).unwrap_or_default(),
            set: |c, v| { set_credentials(c, |k| k.session_token = (!v.is_empty()).then(|| v.to_owned())); Ok(()) })
    },
    key!("MaxOutstandingRecords", "max_outstanding_records", New, "1000000", "1..=9223372036854775807",
        "Records accepted and not finished beyond which send refuses (and send_wait waits).",
        get: |c| c.max_outstanding_records.to_string(),
        set: |c, v| { c.max_outstanding_records = int(v, 1, I64_MAX)?; Ok(()) }),
    key!("MaxOutstandingBytes", "max_outstanding_bytes", New, "67108864", "MaxUserRecordSize..=9223372036854775807",
        "Memory charged for records accepted and not finished (keys, data, their encoded copies and bookkeeping; see Memory below) beyond which send refuses.",
        get: |c| c.max_outstanding_bytes.to_string(),
        set: |c, v| { c.max_outstanding_bytes = int(v, 64, I64_MAX)?; Ok(()) }),
    key!("OrderingMode", "ordering", New, "unordered", "unordered, per_shard",
    "per_shard keeps the order of each partition key (one call per shard in flight); see docs/ordering.md.",
    get: |c| ordering_text(c.ordering),
    set: |c, v| {
        c.ordering = match v {
            "unordered" => OrderingMode::Unordered,
            "per_shard" => OrderingMode::PerShard,
            _ => return Err(Invalid),
        };
        Ok(())
    }),
    key!("ShardMapRefreshInterval", "shard_map_refresh_interval", New, "60000", "1000..=9223372036854775807 (ms)",
        "How often the shard map is re-read without a sign of a reshard (± 10 % jitter).",
        get: |c| ms_text(c.shard_map_refresh_interval),
        set: |c, v| { c.shard_map_refresh_interval = millis(v, 1_000, I64_MAX)?; Ok(()) }),
    key!("OuterPartitionKey", "outer_partition_key", New, "constant", "constant, first_user_record",
    "Partition key of aggregates: the KPL's constant \"a\", or the first user record's key.",
    get: |c| outer_key_text(c.outer_partition_key),
    set: |c, v| {
        c.outer_partition_key = match v {
            "constant" => OuterPartitionKey::Constant,
            "first_user_record" => OuterPartitionKey::FirstUserRecord,
            _ => return Err(Invalid),
        };
        Ok(())
    }),
    key!("RetryBackoffBase", "retry_backoff_base", New, "100", "1..=9223372036854775807 (ms)",
        "First retry backoff ceiling of a shard; it doubles per consecutive failure (full jitter).",
        get: |c| ms_text(c.retry_backoff_base),
        set: |c, v| { c.retry_backoff_base = millis(v, 1, I64_MAX)?; Ok(()) }),
    key!("RetryBackoffCap", "retry_backoff_cap", New, "10000", "RetryBackoffBase..=9223372036854775807 (ms)",
        "Largest retry backoff ceiling.",
        get: |c| ms_text(c.retry_backoff_cap),
        set: |c, v| { c.retry_backoff_cap = millis(v, 1, I64_MAX)?; Ok(()) }),
    // Keys that only made sense for the KPL's daemon or its Java wrapper.
    key!("CredentialsRefreshDelay", "", Ignored, "5000", "1..=300000 (ms)",
        "How often the Java wrapper pushed credentials to the daemon. In process the provider refreshes them itself.",
        get: nothing, set: |_, v| { millis(v, 1, 300_000).map(drop) }),
    key!("LogLevel", "", Ignored, "info", "trace, debug, info, warning, error",
        "The daemon's log level. This library logs through `tracing`; the application's subscriber decides.",
        get: nothing, set: |_, v| match v { "trace" | "debug" | "info" | "warning" | "error" => Ok(()), _ => Err(Invalid) }),
    key!("MinConnections", "", Ignored, "1", "1..=16",
        "Validated but unused by the KPL itself.",
        get: nothing, set: |_, v| int(v, 1, 16).map(drop)),
    key!("EnableOldestFutureTracker", "", Ignored, "true", "true, false",
        "The age of the oldest record is always tracked here (oldest_record_age).",
        get: nothing, set: |_, v| boolean(v).map(drop)),
    key!("NativeExecutable", "", Ignored, "", "a path",
        "Path of the KPL daemon; there is no daemon.",
        get: nothing, set: |_, _| Ok(())),
    key!("TempDirectory", "", Ignored, "", "a path",
        "Where the daemon binary and its pipes were extracted.",
        get: nothing, set: |_, _| Ok(())),
    key!("ThreadingModel", "", Ignored, "PER_REQUEST", "PER_REQUEST, POOLED",
        "The daemon's HTTP threading; calls here share the tokio runtime.",
        get: nothing, set: |_, v| match v { "PER_REQUEST" | "POOLED" => Ok(()), _ => Err(Invalid) }),
    key!("ThreadPoolSize", "", Ignored, "0", "0..",
        "The daemon's HTTP thread pool.",
        get: nothing, set: |_, v| int(v, 0, I64_MAX).map(drop)),
    key!("EnableCoreDumps", "", Ignored, "", "true, false, or empty (unset)",
        "Core dumps of the daemon.",
        get: nothing, set: |_, v| if v.is_empty() { Ok(()) } else { boolean(v).map(drop) }),
    key!("StsEndpoint", "", Ignored, "", "a host",
        "Already a no-op in the KPL.",
        get: nothing, set: |_, _| Ok(())),
    key!("StsPort", "", Ignored, "443", "1..=65535",
        "Already a no-op in the KPL.",
        get: nothing, set: |_, v| port(v).map(drop)),
    key!("EnableDaemonHealthCheck", "", Ignored, "false", "true, false",
        "Restarted a hung daemon.",
        get: nothing, set: |_, v| boolean(v).map(drop)),
    key!("DaemonHealthCheckTimeoutMs", "", Ignored, "30000", "5000.. (ms)",
        "The daemon health check's timeout.",
        get: nothing, set: |_, v| int(v, 5_000, I64_MAX).map(drop)),
    key!("GlueSchemaRegistryPropertiesFilePath", "", Ignored, "", "a path",
        "Glue Schema Registry integration of the Java wrapper; not supported.",
        get: nothing, set: |_, _| Ok(())),
];

/// Names the KPL used in older versions and samples, and the key they mean now.
const ALIASES: &[(&str, &str)] = &[
    ("CustomEndpoint", "KinesisEndpoint"),
    ("Port", "KinesisPort"),
];

/// Sets one part of the static credentials. When every part is empty again, there are none:
/// the default provider chain applies, as the keys' documentation says (never empty keys).
fn set_credentials(config: &mut Config, set: impl FnOnce(&mut StaticCredentials)) {
    let credentials = config.credentials.get_or_insert_with(|| StaticCredentials {
        access_key_id: String::new(),
        secret_access_key: String::new(),
        session_token: None,
    });
    set(credentials);
    if credentials.is_empty() {
        config.credentials = None;
    }
}

fn find_key(name: &str) -> Option<&'static Key> {
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, canonical)| canonical);
    KEYS.iter()
        .find(|key| key.name == name || (!key.field.is_empty() && key.field == name))
}

/// Keys whose names are close to `name` (for "did you mean").
fn close_matches(name: &str) -> Vec<&'static str> {
    let lower = name.to_ascii_lowercase();
    let mut scored: Vec<(usize, &'static str)> = KEYS
        .iter()
        .map(|key| {
            (
                edit_distance(&lower, &key.name.to_ascii_lowercase()),
                key.name,
            )
        })
        .filter(|&(distance, key)| distance <= 3.max(key.len() / 4))
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, key)| key).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

impl Config {
    /// Sets a key by its KPL name (`RateLimit`) or field name (`rate_limit`) from text, as a
    /// properties file would. Ignored daemon keys are checked and otherwise have no effect.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let Some(found) = find_key(key) else {
            return Err(ConfigError::unknown_key(key, close_matches(key)));
        };
        (found.set)(self, value.trim()).map_err(|Invalid| {
            ConfigError::invalid(found.name, value, found.range, found.secret)
        })?;
        if found.kind == KeyKind::Ignored {
            tracing::info!(
                key = found.name,
                "KPL key accepted and ignored: {}",
                found.meaning
            );
        }
        Ok(())
    }

    /// Reads a Java KPL `.properties` file: comments, `key = value` / `key: value` / `key value`
    /// with Java's spacing and escapes, line continuations. A trailing `;` after a value (as in
    /// the KPL's own sample file) is tolerated with a warning. An unknown key is skipped with a
    /// warning that lists close matches, as the KPL skips a property it has no setter for; a
    /// bad value of a known key is an error. See
    /// [`from_kpl_properties_strict`](Self::from_kpl_properties_strict) to refuse unknown keys.
    pub fn from_kpl_properties(text: &str) -> Result<Self, ConfigError> {
        Self::read_kpl_properties(text, false)
    }

    /// [`from_kpl_properties`](Self::from_kpl_properties), with an unknown key an error that
    /// lists close matches: a misspelt key then fails the deployment instead of leaving the
    /// default in place.
    pub fn from_kpl_properties_strict(text: &str) -> Result<Self, ConfigError> {
        Self::read_kpl_properties(text, true)
    }

    fn read_kpl_properties(text: &str, strict: bool) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        for (line, key, value) in properties::parse(text) {
            if !strict && find_key(&key).is_none() {
                let error = ConfigError::unknown_key(&key, close_matches(&key)).at_line(line);
                tracing::warn!(key = %key, line, "skipping a key the producer does not know: {error}");
                continue;
            }
            let value = match value.strip_suffix(';') {
                Some(trimmed) if find_key(&key).is_some_and(|k| k.name != "MetricsNamespace") => {
                    tracing::warn!(key = %key, line, "ignoring the trailing ';' after the value");
                    trimmed.trim_end().to_owned()
                }
                _ => value,
            };
            config
                .set(&key, &value)
                .map_err(|error| error.at_line(line))?;
        }
        Ok(config)
    }

    /// [`from_kpl_properties`](Self::from_kpl_properties) on a file.
    pub fn from_kpl_properties_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::io(path, error))?;
        Self::from_kpl_properties(&text)
    }

    /// [`from_kpl_properties_strict`](Self::from_kpl_properties_strict) on a file.
    pub fn from_kpl_properties_file_strict(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::io(path, error))?;
        Self::from_kpl_properties_strict(&text)
    }

    /// Checks every value against its range, naming the first key that is out of it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut scratch = Self::default();
        for key in KEYS.iter().filter(|k| k.kind != KeyKind::Ignored) {
            let value = (key.get)(self);
            (key.set)(&mut scratch, &value)
                .map_err(|Invalid| ConfigError::invalid(key.name, &value, key.range, key.secret))?;
        }
        // Settings that only make sense together, in the KPL's names; then whatever else the
        // engine refuses, named by the KPL key of the field at fault.
        if self.max_outstanding_bytes < self.max_user_record_size {
            return Err(ConfigError::invalid(
                "MaxOutstandingBytes",
                &self.max_outstanding_bytes.to_string(),
                "at least MaxUserRecordSize",
                false,
            ));
        }
        if self.retry_backoff_cap < self.retry_backoff_base {
            return Err(ConfigError::invalid(
                "RetryBackoffCap",
                &ms_text(self.retry_backoff_cap),
                "at least RetryBackoffBase",
                false,
            ));
        }
        if let Err(invalid) = self.engine_config(0).validate() {
            let key = KEYS.iter().find(|key| key.field == invalid.key());
            let name = key.map_or_else(|| invalid.key(), |key| key.name);
            let value = key.map_or_else(|| invalid.value().to_owned(), |key| (key.get)(self));
            return Err(ConfigError::invalid(name, &value, invalid.allowed(), false));
        }
        // CloudWatch refuses a whole call for one bad dimension: check them here, once.
        let reserved = ["StreamName", "ShardId", "ErrorCode"];
        for dimension in &self.additional_metrics_dimensions {
            let name_ok = (1..=MAX_DIMENSION_NAME_CHARS).contains(&dimension.name.chars().count())
                && !reserved.contains(&dimension.name.as_str());
            let value_ok = dimension.value.chars().count() <= MAX_DIMENSION_VALUE_CHARS;
            if !name_ok || !value_ok {
                return Err(ConfigError::invalid(
                    "additional_metrics_dimensions",
                    &format!("{}={}", dimension.name, dimension.value),
                    "names of 1 to 255 characters other than StreamName, ShardId and ErrorCode; values of at most 1024 characters",
                    false,
                ));
            }
        }
        if self.additional_metrics_dimensions.len() > MAX_ADDITIONAL_DIMENSIONS {
            return Err(ConfigError::invalid(
                "additional_metrics_dimensions",
                &self.additional_metrics_dimensions.len().to_string(),
                "at most 27 (CloudWatch takes 30 dimensions, and the producer's own are 3)",
                false,
            ));
        }
        if let Some(credentials) = &self.credentials {
            if credentials.access_key_id.is_empty() != credentials.secret_access_key.is_empty() {
                return Err(ConfigError::invalid(
                    "AwsSecretKey",
                    "",
                    "AwsAccessKeyId and AwsSecretKey are set together",
                    true,
                ));
            }
            if credentials.access_key_id.is_empty() && credentials.session_token.is_some() {
                return Err(ConfigError::invalid(
                    "AwsSessionToken",
                    "",
                    "a session token only with AwsAccessKeyId and AwsSecretKey",
                    true,
                ));
            }
        }
        Ok(())
    }

    /// Adds a dimension `name` = `value` to every metric series at and finer than
    /// `granularity` (the KPL's `addAdditionalMetricsDimension`): `Global` adds it to every
    /// series, `Stream` to the per-stream and per-shard ones, `Shard` to the per-shard ones.
    pub fn add_metrics_dimension(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
        granularity: MetricsGranularity,
    ) -> &mut Self {
        self.additional_metrics_dimensions.push(MetricsDimension {
            name: name.into(),
            value: value.into(),
            granularity,
        });
        self
    }

    /// The engine's part of this configuration.
    pub(crate) fn engine_config(&self, seed: u64) -> EngineConfig {
        let saturate = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        // Durations past a century are the same as forever, and keep `Instant` arithmetic safe.
        let century = kpl_engine::MAX_DURATION;
        let mut engine = EngineConfig::default();
        engine.aggregation_enabled = self.aggregation_enabled;
        engine.aggregation_max_count = self.aggregation_max_count;
        engine.aggregation_max_size =
            MaxAggregateSize::new(saturate(self.aggregation_max_size)).unwrap_or_default();
        engine.collection_max_count = saturate(self.collection_max_count);
        engine.collection_max_size = saturate(self.collection_max_size);
        engine.rate_limit = self.rate_limit;
        engine.record_max_buffered_time = self.record_max_buffered_time.min(century);
        engine.record_ttl = self.record_ttl.min(century);
        engine.fail_if_throttled = self.fail_if_throttled;
        engine.max_user_record_size = saturate(self.max_user_record_size);
        engine.max_outstanding_records = saturate(self.max_outstanding_records);
        engine.max_outstanding_bytes = saturate(self.max_outstanding_bytes);
        engine.record_overhead_bytes = crate::completion::FACADE_BYTES_PER_RECORD
            + if self.user_record_timeout.is_zero() {
                0
            } else {
                crate::completion::TIMER_BYTES_PER_RECORD
            };
        engine.ordering = self.ordering;
        engine.shard_map_refresh_interval = self.shard_map_refresh_interval.min(century);
        engine.outer_partition_key = self.outer_partition_key;
        engine.retry_backoff_base = self.retry_backoff_base.min(century);
        engine.retry_backoff_cap = self.retry_backoff_cap.min(century);
        engine.rng_seed = seed;
        engine
    }
}

/// `docs/config.md`, generated from [`KEYS`] (`tests/docs_in_sync.rs` keeps the file in step).
pub(crate) fn reference_markdown() -> String {
    let mut out = String::from(
        "# Configuration keys\n\n\
         Generated from `crates/kpl/src/config.rs` (`KEYS`); `cargo test -p kpl --test docs_in_sync` \
         fails when this file is out of date, and `KPL_BLESS=1` rewrites it.\n\n\
         Set keys on `kpl::Config` fields (the *field* column), with `Config::set(name, value)`, \
         or in a Java KPL `.properties` file read by `Config::from_kpl_properties`. Durations are \
         milliseconds in properties files. A key the producer does not know is skipped with a \
         warning naming close matches, as the KPL skips it; `Config::from_kpl_properties_strict` \
         refuses it instead, and `Config::set` always does. `Config::validate` (called by the \
         producer's builder) checks every range and names the key, the value and the range when \
         one is out of it.\n",
    );
    let sections = [
        (
            KeyKind::Kpl,
            "## KPL keys\n\nThe KPL's keys, with the KPL's defaults and ranges.\n",
        ),
        (KeyKind::New, "## Keys this library adds\n"),
        (
            KeyKind::Ignored,
            "## KPL keys that are accepted and ignored\n\nThey only made sense for the KPL's \
             daemon or its Java wrapper. Properties files that set them still load: the value is \
             checked as the KPL checked it, an info-level log line says it is ignored, and \
             nothing else happens.\n",
        ),
    ];
    for (kind, heading) in sections {
        out.push('\n');
        out.push_str(heading);
        out.push_str(
            "\n| key | field | default | allowed | meaning |\n| --- | --- | --- | --- | --- |\n",
        );
        for key in KEYS.iter().filter(|k| k.kind == kind) {
            let field = if key.field.is_empty() {
                "—".to_owned()
            } else {
                format!("`{}`", key.field)
            };
            let default = if key.default.is_empty() {
                "(empty)".to_owned()
            } else {
                format!("`{}`", key.default)
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                key.name, field, default, key.range, key.meaning
            ));
        }
    }
    out.push_str(
        "\nOlder KPL names are read as their current keys: `CustomEndpoint` as \
         `KinesisEndpoint`, `Port` as `KinesisPort`.\n",
    );
    out.push_str(&memory_markdown());
    out
}

/// The section of `docs/config.md` on what `MaxOutstandingBytes` counts, with the numbers this
/// build charges.
fn memory_markdown() -> String {
    use kpl_engine::memory::{
        ENCODED_COPIES, ENCODED_FRAMING_BYTES, ENGINE_BYTES_PER_RECORD, HISTORY_BYTES,
        record_charge,
    };
    let facade = crate::completion::FACADE_BYTES_PER_RECORD;
    let timer = crate::completion::TIMER_BYTES_PER_RECORD;
    let typical = record_charge(116, facade);
    let limit = kpl_engine::DEFAULT_MAX_OUTSTANDING_BYTES;
    format!(
        "\n## Memory\n\n\
         `MaxOutstandingBytes` bounds the memory the producer holds for records; the default is \
         {} MiB. Every record accepted and not yet finished is charged:\n\n\
         - its partition key and data;\n\
         - {ENCODED_COPIES} encoded copies of them, {ENCODED_FRAMING_BYTES} bytes of framing \
         each: the Kinesis record it goes out in, and the transport's wire form of that (base64 \
         in JSON). They exist only while it is queued or in flight, but are reserved when it is \
         accepted, so that encoding never passes the limit;\n\
         - {} bytes of bookkeeping: {ENGINE_BYTES_PER_RECORD} in the engine (its entry and its \
         slot in the record window) and {facade} in the producer (the token the engine keeps with \
         it, saying where its outcome goes, and its place in the table of completions; {timer} \
         more with `UserRecordTimeoutInMillis` set, for the future's timer);\n\
         - once an attempt to write it has failed, {HISTORY_BYTES} more for its history of \
         failed attempts (the first and the latest), which only a retried record has.\n\n\
         The limit is checked against the most the records can take, each record without a \
         history counted as if it had one, so that it holds even when every record comes to be \
         retried. A record with a 16-character key and 100 bytes of data is charged {typical} \
         bytes ({} with a history), so a default producer holds up to about {} of them before \
         `send` refuses and `send_wait` waits. `KinesisProducer::outstanding_bytes` reports the \
         charge now. What the limit does \
         not count does not grow with the records: the runtime, the connections and the AWS \
         client, and per shard at most one aggregate's worth of room in its lists. \
         `docs/guarantees.md` has the measurements (`cargo xtask memory`).\n",
        limit / (1024 * 1024),
        ENGINE_BYTES_PER_RECORD + facade,
        typical + HISTORY_BYTES,
        limit / (typical + HISTORY_BYTES),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_gives_the_engine_its_own_defaults() {
        let engine = Config::default().engine_config(7);
        let mut expected = EngineConfig::default();
        expected.record_overhead_bytes = crate::completion::FACADE_BYTES_PER_RECORD;
        expected.rng_seed = 7;
        // EngineConfig has no PartialEq (it would tie every future field to it); its Debug
        // lists every field.
        assert_eq!(format!("{engine:?}"), format!("{expected:?}"));
    }

    #[test]
    fn metrics_dimensions_cloudwatch_would_refuse_are_refused_at_once() {
        for (name, value) in [("", "v"), ("StreamName", "v"), ("app", &*"v".repeat(1_025))] {
            let mut config = Config::default();
            config.add_metrics_dimension(name, value, MetricsGranularity::Global);
            let error = config.validate().unwrap_err();
            assert_eq!(error.key(), Some("additional_metrics_dimensions"), "{name}");
        }
        let mut config = Config::default();
        for n in 0..28 {
            config.add_metrics_dimension(format!("d{n}"), "v", MetricsGranularity::Shard);
        }
        assert!(
            config.validate().is_err(),
            "28 and the producer's 3 pass 30"
        );
        config.additional_metrics_dimensions.pop();
        assert!(config.validate().is_ok());
    }

    #[test]
    fn settings_wrong_together_are_refused_under_the_kpl_key() {
        let mut config = Config::default();
        config.max_outstanding_bytes = config.max_user_record_size - 1;
        let error = config.validate().unwrap_err();
        assert_eq!(error.key(), Some("MaxOutstandingBytes"));
        assert_eq!(error.allowed(), Some("at least MaxUserRecordSize"));
    }

    #[test]
    fn every_config_the_facade_accepts_the_engine_accepts() {
        // The facade's ranges are the KPL's; the engine's checks run after them, so a gap
        // between the two would surface here as an error named by an engine field.
        let mut config = Config::default();
        for (key, value) in [
            ("AggregationMaxSize", "64"),
            ("CollectionMaxCount", "1"),
            ("CollectionMaxSize", "52224"),
            ("MaxUserRecordSize", "64"),
            ("RecordTtl", "100"),
            ("RecordMaxBufferedTime", "0"),
            ("ShardMapRefreshInterval", "1000"),
        ] {
            config
                .set(key, value)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            config
                .validate()
                .unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
            assert!(
                config.engine_config(0).validate().is_ok(),
                "{key} = {value}"
            );
        }
    }

    #[test]
    fn setting_each_key_to_its_documented_default_changes_nothing() {
        for key in KEYS {
            let mut config = Config::default();
            config
                .set(key.name, key.default)
                .unwrap_or_else(|e| panic!("{}: {e}", key.name));
            if key.name.starts_with("Aws") {
                continue; // setting an empty credential creates an empty credential set
            }
            assert_eq!(
                config,
                Config::default(),
                "{} = {:?}",
                key.name,
                key.default
            );
        }
    }

    #[test]
    fn ignored_daemon_keys_are_accepted_and_still_checked() {
        let ignored: Vec<&str> = KEYS
            .iter()
            .filter(|k| k.kind == KeyKind::Ignored)
            .map(|k| k.name)
            .collect();
        for name in [
            "NativeExecutable",
            "TempDirectory",
            "ThreadingModel",
            "EnableCoreDumps",
            "StsEndpoint",
            "StsPort",
        ] {
            assert!(ignored.contains(&name), "{name}");
        }
        let config =
            Config::from_kpl_properties("NativeExecutable = /opt/kpl\nThreadingModel = POOLED\n")
                .unwrap();
        assert_eq!(config, Config::default());
        assert!(Config::from_kpl_properties("ThreadingModel = SOMETIMES").is_err());
    }
}
