//! The Kinesis transport of kpl-rs, on `aws-sdk-kinesis`.
//!
//! [`AwsTransport`] implements the engine's [`Transport`] with the AWS SDK
//! for Rust: `PutRecords`, `ListShards` (paged; a page after the first carries only its token)
//! and `DescribeStreamSummary` (which reports the stream's `MaxRecordSizeInKiB`). Streams are
//! addressed by name or by ARN, so streams of other accounts work, and an ARN of another region
//! goes through a client for its region (see [`AwsTransport`]).
//!
//! The SDK's own retries are off: the engine classifies every error and retries with its own
//! backoff. Every SDK error is mapped to a [`TransportErrorKind`]
//! (the table is in `docs/aws-errors.md`); no SDK type appears in the engine's types.
//!
//! ```no_run
//! use kpl_aws::{AwsSettings, AwsTransport};
//!
//! let mut settings = AwsSettings::default();
//! settings.sdk.region = Some("eu-west-1".to_owned());
//! settings.sdk.endpoint_url = Some("http://127.0.0.1:4567".to_owned()); // a local server
//! let transport = AwsTransport::new(settings)?;
//! # Ok::<(), kpl_aws::AwsSettingsError>(())
//! ```
#![forbid(unsafe_code)]

mod answer_cap;
mod errors;
mod exact_body;
mod sdk;
mod warm_credentials;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_config::meta::region::ProvideRegion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardFilter, ShardFilterType};
use kpl_aggregation::{HashKey, HashKeyRange, KinesisRecord};
use kpl_engine::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, ListShardsResponse, PutRecordsEntryResult,
    PutRecordsRequest, PutRecordsResponse, ShardDescription, ShardFilter as EngineShardFilter,
    StreamSummary, Transport, TransportFuture,
};
use kpl_engine::{ShardId, Stream, TransportError, TransportErrorKind};
use tokio::sync::{Notify, OnceCell};

pub use answer_cap::MAX_ANSWER_BYTES;
pub use aws_smithy_runtime_api::client::http::SharedHttpClient;
pub use errors::map_sdk_error;
pub use sdk::SdkSettings;
pub use warm_credentials::{RENEW_AHEAD, WarmCredentials, keep_warm};

mod http;
mod unverified_tls;

/// How to reach Kinesis. Everything is optional: by default the SDK's provider chains decide
/// the region and the credentials, the regional endpoint is used, and certificates are verified.
#[derive(Clone)]
#[non_exhaustive]
pub struct AwsSettings {
    /// Region, endpoint, credentials and the call timeout, as every AWS client of the producer
    /// takes them (the CloudWatch exporter's too).
    pub sdk: SdkSettings,
    /// Timeout for establishing a connection.
    pub connect_timeout: Option<Duration>,
    /// Whether to verify TLS certificates (`VerifyCertificate`). `false` accepts any
    /// certificate, for test endpoints with self-signed ones; a `warn` says so at `new`.
    pub verify_certificate: bool,
    /// An HTTP proxy (`ProxyHost`): a host name, with `proxy_port`, or a URL. Calls to `https`
    /// endpoints go through it by `CONNECT`. Without one, the `HTTPS_PROXY` / `HTTP_PROXY` /
    /// `NO_PROXY` environment is honoured, as the AWS SDKs do.
    pub proxy_host: Option<String>,
    /// The proxy's port (`ProxyPort`), when `proxy_host` is a host name; 443 by default, as in
    /// the KPL.
    pub proxy_port: Option<u16>,
    /// The proxy's user name and password (`ProxyUserName`, `ProxyPassword`), sent with basic
    /// authentication. Never printed.
    pub proxy_credentials: Option<(String, String)>,
    /// A file of PEM CA certificates, or a directory of them (`.pem`, `.crt`), trusted instead
    /// of the built-in roots (`CaCertFile`, `CaCertPath`).
    pub ca_certificates: Option<String>,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            sdk: SdkSettings::default(),
            connect_timeout: None,
            verify_certificate: true,
            proxy_host: None,
            proxy_port: None,
            proxy_credentials: None,
            ca_certificates: None,
        }
    }
}

impl fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("sdk", &self.sdk)
            .field("connect_timeout", &self.connect_timeout)
            .field("verify_certificate", &self.verify_certificate)
            .field(
                "proxy_host",
                &self.proxy_host.as_deref().map(http::without_userinfo),
            )
            .field("proxy_port", &self.proxy_port)
            .field(
                "proxy_credentials",
                &self
                    .proxy_credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .field("ca_certificates", &self.ca_certificates)
            .finish()
    }
}

/// Settings the AWS transport cannot honour.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AwsSettingsError {
    /// The proxy settings cannot be used (the message says why).
    Proxy(String),
    /// `CaCertPath` / `CaCertFile` cannot be read or hold no PEM certificate.
    CustomCa(String),
    /// The endpoint is not an `http://` or `https://` URL.
    Endpoint(String),
    /// No region is set and the SDK's region chain found none.
    NoRegion,
}

impl fmt::Display for AwsSettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Proxy(why) => write!(f, "ProxyHost cannot be used: {why}"),
            Self::CustomCa(why) => write!(f, "CaCertPath/CaCertFile cannot be used: {why}"),
            Self::Endpoint(url) => {
                write!(f, "endpoint {url:?} must start with http:// or https://")
            }
            Self::NoRegion => f.write_str(
                "no region: set Region (or the AWS_REGION environment variable, or a region in \
                 the AWS profile); none of them is set and no instance metadata answered",
            ),
        }
    }
}

impl std::error::Error for AwsSettingsError {}

/// The Kinesis transport on `aws-sdk-kinesis`. Cheap to clone. The region is settled when it
/// is made (see [`new`](Self::new)); the rest of the SDK configuration is loaded on the first
/// call, in a task of its own: a call that gives up waiting for it (its `RequestTimeout`
/// passed) does not cancel the load, and the next call finds it further along or done.
///
/// **Regions**: a stream named by an ARN of another region than the transport's goes to a
/// client for that region (same settings otherwise), made on first use; at most
/// [`MAX_REGIONS`] of them. A stream named by name goes to the transport's region.
#[derive(Clone)]
pub struct AwsTransport {
    settings: Arc<AwsSettings>,
    /// The HTTP client for a proxy or a trust store of the application's; `None`: the SDK's.
    http_client: Option<SharedHttpClient>,
    client: Arc<ClientSlot>,
    /// Clients for the other regions stream ARNs name, by region; `None` for a transport on a
    /// client built elsewhere, which serves every stream.
    regional: Option<Arc<RegionalClients>>,
}

/// Clients by region.
type RegionalClients = Mutex<BTreeMap<String, Arc<ClientSlot>>>;

/// The most regions besides its own one transport makes clients for: stream ARNs come from
/// the application, and a client per distinct text would grow without end.
pub const MAX_REGIONS: usize = 32;

/// The client, once the SDK configuration is loaded.
#[derive(Default)]
struct ClientSlot {
    client: OnceCell<Client>,
    loading: AtomicBool,
    loaded: Notify,
}

impl fmt::Debug for AwsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsTransport")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AwsTransport {
    /// A transport with these settings, checked now; the SDK configuration loads on first use.
    ///
    /// Without `settings.sdk.region`, the SDK's region chain is asked now (`AWS_REGION`,
    /// `AWS_DEFAULT_REGION`, the profile's `region`, then the EC2 instance metadata), on a thread
    /// of its own, and [`AwsSettingsError::NoRegion`] is returned when none answers: a producer
    /// without a region fails here rather than record by record later. Asking the instance
    /// metadata off EC2 takes a few seconds to give up; set `AWS_EC2_METADATA_DISABLED=true`
    /// there to skip it.
    pub fn new(mut settings: AwsSettings) -> Result<Self, AwsSettingsError> {
        if !settings.verify_certificate {
            let endpoint = settings
                .sdk
                .endpoint_url
                .as_deref()
                .map(http::without_userinfo);
            tracing::warn!(
                endpoint = endpoint.as_deref().unwrap_or("(regional)"),
                "VerifyCertificate=false: any TLS certificate is accepted, so anyone on the path \
                 can read and change the calls; use CaCertFile for a private CA instead"
            );
        }
        if let Some(url) = &settings.sdk.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(AwsSettingsError::Endpoint(http::without_userinfo(url)));
        }
        let http_client = http::client_for(&settings)?;
        if settings.sdk.region.is_none() {
            settings.sdk.region = Some(region_from_chain().ok_or(AwsSettingsError::NoRegion)?);
        }
        Ok(Self {
            settings: Arc::new(settings),
            http_client,
            client: Arc::default(),
            regional: Some(Arc::default()),
        })
    }

    /// A transport on a client built elsewhere. Its retries should be off (the engine retries).
    pub fn from_client(client: Client) -> Self {
        Self {
            settings: Arc::new(AwsSettings::default()),
            http_client: None,
            client: Arc::new(ClientSlot {
                client: OnceCell::new_with(Some(client)),
                ..ClientSlot::default()
            }),
            regional: None,
        }
    }

    /// The SDK configuration this transport's calls use (region, endpoint, credentials, HTTP
    /// client, timeouts; the SDK's retries off, as the engine retries), for other Kinesis calls
    /// of the application to go the same way: `aws_sdk_kinesis::Client::new(&config)`, with
    /// retries set back on in its config builder if the caller does not retry.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        load_sdk_config(&self.settings, self.http_client.clone()).await
    }

    /// The region calls go to for streams named by name: the settings' or the one the SDK's
    /// chain found at [`new`](Self::new). `None` for a transport on a client built elsewhere.
    pub fn region(&self) -> Option<&str> {
        self.settings.sdk.region.as_deref()
    }

    /// The HTTP client made for the settings' proxy and trust store, if they ask for one: hand
    /// it to the other AWS clients of the application (the metrics'), so their calls take the
    /// same way.
    pub fn http_client(&self) -> Option<SharedHttpClient> {
        self.http_client.clone()
    }

    /// The client for `stream`: the transport's, or one for the region its ARN names.
    async fn client(&self, stream: &Stream) -> Result<Client, TransportError> {
        let own = self.loaded(&self.client, &self.settings).await;
        let (Some(regional), Some(region)) = (&self.regional, stream.arn().and_then(arn_region))
        else {
            return Ok(own);
        };
        if own
            .config()
            .region()
            .is_some_and(|own| own.as_ref() == region)
        {
            return Ok(own);
        }
        let slot = {
            let mut clients = regional.lock().unwrap_or_else(PoisonError::into_inner);
            if !clients.contains_key(region) && clients.len() >= MAX_REGIONS {
                return Err(TransportError::new(
                    TransportErrorKind::Validation,
                    "TooManyRegions",
                    format!(
                        "stream {stream} is in region {region}: the transport already has clients \
                         for {MAX_REGIONS} other regions"
                    ),
                ));
            }
            Arc::clone(clients.entry(region.to_owned()).or_default())
        };
        let mut settings = AwsSettings::clone(&self.settings);
        settings.sdk.region = Some(region.to_owned());
        Ok(self.loaded(&slot, &Arc::new(settings)).await)
    }

    /// The client of `slot`, loading the SDK configuration for `settings` on first use.
    async fn loaded(&self, slot: &Arc<ClientSlot>, settings: &Arc<AwsSettings>) -> Client {
        if let Some(client) = slot.client.get() {
            return client.clone();
        }
        loop {
            // Registered before the checks, so a load ending in between still wakes it.
            let loaded = slot.loaded.notified();
            if let Some(client) = slot.client.get() {
                return client.clone();
            }
            if !slot.loading.swap(true, Ordering::AcqRel) {
                let settings = Arc::clone(settings);
                let http_client = self.http_client.clone();
                let load = LoadEnding(Arc::clone(slot));
                tokio::spawn(async move {
                    let config = load_sdk_config(&settings, http_client).await;
                    let config = aws_sdk_kinesis::config::Builder::from(&config)
                        .interceptor(answer_cap::AnswerCap)
                        .interceptor(exact_body::ExactBody)
                        .build();
                    let client = Client::from_conf(config);
                    let _ = load.0.client.set(client);
                });
            }
            loaded.await;
        }
    }
}

/// Ends a load of the SDK configuration when dropped, whether it set the client or its task
/// stopped first (a panic, its runtime shut down): waiters wake, and without a client the next
/// one starts the load again instead of waiting for a load that will never end.
struct LoadEnding(Arc<ClientSlot>);

impl Drop for LoadEnding {
    fn drop(&mut self) {
        self.0.loading.store(false, Ordering::Release);
        self.0.loaded.notify_waiters();
    }
}

/// The region the SDK's default chain finds. It is asynchronous (a profile file, the instance
/// metadata), and `new` is not, and may be called on a runtime's thread: it runs on a thread and
/// a runtime of its own.
fn region_from_chain() -> Option<String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                let chain = aws_config::default_provider::region::default_provider();
                runtime
                    .block_on(ProvideRegion::region(&chain))
                    .map(|region| region.to_string())
            })
            .join()
            .ok()
            .flatten()
    })
}

/// The SDK configuration for `settings`, with the SDK's retries off.
async fn load_sdk_config(
    settings: &AwsSettings,
    http_client: Option<SharedHttpClient>,
) -> aws_config::SdkConfig {
    let mut timeouts = TimeoutConfig::builder();
    if let Some(connect) = settings.connect_timeout {
        timeouts = timeouts.connect_timeout(connect);
    }
    if let Some(request) = settings.sdk.request_timeout {
        timeouts = timeouts.operation_attempt_timeout(request);
    }
    let config = settings
        .sdk
        .loader(http_client)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts.build())
        .load()
        .await;
    keep_warm(config)
}

/// The region of a stream ARN (`arn:<partition>:kinesis:<region>:<account>:stream/<name>`).
fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|region| !region.is_empty())
}

fn malformed(message: impl Into<String>) -> TransportError {
    TransportError::new(TransportErrorKind::Other, "MalformedResponse", message)
}

fn parse_range(start: &str, end: &str) -> Result<HashKeyRange, TransportError> {
    let start = HashKey::parse_decimal(start)
        .map_err(|e| malformed(format!("bad starting hash key: {e}")))?;
    let end =
        HashKey::parse_decimal(end).map_err(|e| malformed(format!("bad ending hash key: {e}")))?;
    HashKeyRange::new(start, end).map_err(|e| malformed(e.to_string()))
}

/// Sets the stream on a request builder by name or by ARN.
macro_rules! address {
    ($builder:expr, $stream:expr) => {{
        let stream: &Stream = $stream;
        match stream.arn() {
            Some(arn) => $builder.stream_arn(arn),
            None => $builder.stream_name(stream.name()),
        }
    }};
}

impl Transport for AwsTransport {
    fn put_records(&self, request: PutRecordsRequest) -> TransportFuture<PutRecordsResponse> {
        let this = self.clone();
        TransportFuture::new(async move {
            let client = this.client(&request.stream).await?;
            // The aggregates' trailers, computed side by side, outside the producer's lock.
            KinesisRecord::seal_all(&request.entries);
            let mut entries = Vec::with_capacity(request.entries.len());
            for record in request.entries {
                let explicit_hash_key = record.explicit_hash_key().map(|key| key.to_string());
                let (partition_key, _, data) = record.into_parts();
                let entry = PutRecordsRequestEntry::builder()
                    // Shares the engine's buffer: no copy of the aggregate per call.
                    .data(Blob::from_maybe_shared(data))
                    .partition_key(partition_key)
                    .set_explicit_hash_key(explicit_hash_key)
                    .build()
                    .map_err(errors::construction_failure)?;
                entries.push(entry);
            }
            let call = address!(client.put_records(), &request.stream).set_records(Some(entries));
            let output = call.send().await.map_err(map_sdk_error)?;
            let entries = output
                .records()
                .iter()
                .map(|entry| {
                    match (
                        entry.error_code(),
                        entry.shard_id(),
                        entry.sequence_number(),
                    ) {
                        (Some(code), _, _) => PutRecordsEntryResult::Failed {
                            code: code.to_owned(),
                            message: entry.error_message().unwrap_or_default().to_owned(),
                        },
                        (None, Some(shard), Some(sequence)) => PutRecordsEntryResult::Written {
                            shard_id: ShardId::from(shard),
                            sequence_number: sequence.into(),
                        },
                        (None, _, _) => PutRecordsEntryResult::Failed {
                            code: "MalformedResponse".to_owned(),
                            message:
                                "an entry has neither an error code nor a shard and sequence number"
                                    .to_owned(),
                        },
                    }
                })
                .collect();
            Ok(PutRecordsResponse { entries })
        })
    }

    fn list_shards(&self, request: ListShardsRequest) -> TransportFuture<ListShardsResponse> {
        let this = self.clone();
        TransportFuture::new(async move {
            let client = this.client(&request.stream).await?;
            let max_results = i32::try_from(request.max_results).unwrap_or(1_000);
            let call = match &request.next_token {
                // A page after the first carries only its token (KPL #481).
                Some(token) => client
                    .list_shards()
                    .next_token(token)
                    .max_results(max_results),
                None => {
                    let filter_type = match request.filter {
                        EngineShardFilter::AtLatest => ShardFilterType::AtLatest,
                        EngineShardFilter::FromTrimHorizon => ShardFilterType::FromTrimHorizon,
                        other => {
                            return Err(TransportError::new(
                                TransportErrorKind::Validation,
                                "UnsupportedShardFilter",
                                format!("this transport cannot list shards with {other:?}"),
                            ));
                        }
                    };
                    let filter = ShardFilter::builder()
                        .r#type(filter_type)
                        .build()
                        .map_err(errors::construction_failure)?;
                    address!(client.list_shards(), &request.stream)
                        .shard_filter(filter)
                        .max_results(max_results)
                }
            };
            let output = call.send().await.map_err(map_sdk_error)?;
            let mut shards = Vec::with_capacity(output.shards().len());
            for shard in output.shards() {
                let range = shard
                    .hash_key_range()
                    .ok_or_else(|| malformed("a shard without a hash key range"))?;
                shards.push(ShardDescription {
                    shard_id: ShardId::from(shard.shard_id()),
                    hash_key_range: parse_range(
                        range.starting_hash_key(),
                        range.ending_hash_key(),
                    )?,
                    open: shard
                        .sequence_number_range()
                        .is_none_or(|sequence| sequence.ending_sequence_number().is_none()),
                });
            }
            Ok(ListShardsResponse {
                shards,
                next_token: output.next_token().map(str::to_owned),
            })
        })
    }

    fn describe_stream_summary(
        &self,
        request: DescribeStreamSummaryRequest,
    ) -> TransportFuture<StreamSummary> {
        let this = self.clone();
        TransportFuture::new(async move {
            let client = this.client(&request.stream).await?;
            let output = address!(client.describe_stream_summary(), &request.stream)
                .send()
                .await
                .map_err(map_sdk_error)?;
            let summary = output
                .stream_description_summary()
                .ok_or_else(|| malformed("no StreamDescriptionSummary"))?;
            Ok(StreamSummary {
                max_record_size_kib: summary
                    .max_record_size_in_kib()
                    .and_then(|kib| u32::try_from(kib).ok()),
                open_shard_count: u32::try_from(summary.open_shard_count()).unwrap_or(0),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_arn_names_its_region() {
        let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders";
        assert_eq!(arn_region(arn), Some("eu-west-1"));
        assert_eq!(
            arn_region("arn:aws-cn:kinesis:cn-north-1:123456789012:stream/s"),
            Some("cn-north-1")
        );
        assert_eq!(arn_region("orders"), None);
    }

    /// A transport shared by producers on two runtimes: the first stops while the load it
    /// started is under way, and the second's calls start the load again instead of waiting
    /// for ever on one that will never end.
    #[test]
    fn a_load_whose_runtime_stopped_is_started_again_by_the_next_call() {
        let mut settings = AwsSettings::default();
        settings.sdk.region = Some("us-east-1".to_owned());
        settings.sdk.credentials = Some(aws_credential_types::Credentials::new(
            "AKID", "secret", None, None, "test",
        ));
        let transport = AwsTransport::new(settings).unwrap();
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        first.block_on(async {
            let load = transport.loaded(&transport.client, &transport.settings);
            // Polled once: the load is spawned, and has not run.
            tokio::select! {
                biased;
                _ = load => panic!("loaded without running the load"),
                () = std::future::ready(()) => {}
            }
            assert!(transport.client.loading.load(Ordering::Acquire));
        });
        drop(first);
        assert!(!transport.client.loading.load(Ordering::Acquire));
        assert!(transport.client.client.get().is_none());
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = second.block_on(async {
            let load = transport.loaded(&transport.client, &transport.settings);
            tokio::time::timeout(Duration::from_secs(30), load).await
        });
        let client = client.expect("the second runtime loads the client");
        assert_eq!(
            client.config().region().map(AsRef::as_ref),
            Some("us-east-1")
        );
    }
}

/// Keeps the code in this crate's README compiling and passing.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
