//! The async producer: a cheap handle over shared state, and one driver task per producer that
//! runs the engine, the transport calls and the timers.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use kpl_engine::time::Clock;
use kpl_engine::transport::{SharedTransport, Transport, send_request};
use kpl_engine::{
    Attempt, Delivery, Engine, Event, FailureReason, FlushId, PreparedRecord, Record, RecordId,
    Rejected, Request, RequestId, Response, Stream, StreamStats, TransportError,
    TransportErrorKind,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::clock::TokioClock;
use crate::completion::{CompletionTable, DeliveryFuture, IdTable, Outcome};
use crate::config::Config;
use crate::error::{BuildError, DeliveryError, DeliveryErrorKind, SendError, SendErrorKind};
use crate::metrics::{
    MetricReading, MetricsExports, MetricsHub, PENDING_SAMPLE_PERIOD, SAMPLES_PER_SECOND,
};
use kpl_engine::metrics::{Metric, MetricsExporter};

/// Where a caller wants a record's outcome to go, before the record has an id.
enum Want {
    /// A [`DeliveryFuture`], through the producer's table of completions.
    Future,
    /// A slot reserved in an outcome channel.
    Channel(mpsc::OwnedPermit<RecordOutcome>),
}

/// Where an accepted record's outcome goes.
enum Waiter {
    /// The table of completions (`State::completions`); the id, for cancelling it.
    Future(RecordId),
    Channel(mpsc::OwnedPermit<RecordOutcome>),
}

/// The producer's memory per outstanding record beyond the engine's, charged against
/// `MaxOutstandingBytes`: its place in the table of waiting records and in the table of
/// completions, each twice over for the tables' growth.
pub(crate) const FACADE_BYTES_PER_RECORD: usize =
    2 * (size_of::<Option<Waiter>>() + crate::completion::SLOT_BYTES);

/// With `UserRecordTimeoutInMillis` set, each record's future also holds a boxed timer.
pub(crate) const TIMER_BYTES_PER_RECORD: usize = 16 + size_of::<tokio::time::Sleep>();

/// What `shutdown` could not deliver in time.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Records that no call had carried: accepted and certainly not written, handed back. (Their
    /// delivery futures resolve with [`DeliveryErrorKind::ShutDown`].)
    pub unsent: Vec<Record>,
    /// Records whose call was still in flight at the deadline (or whose landing on a new shard
    /// waited to be judged): they may have been written, so re-sending them may duplicate them.
    /// (Their delivery futures resolve with [`DeliveryErrorKind::ShutDownInFlight`].)
    pub in_flight: Vec<Record>,
}

/// Builds a [`KinesisProducer`].
#[must_use = "a builder does nothing until build() is called"]
pub struct ProducerBuilder {
    config: Config,
    transport: Option<SharedTransport>,
    exporter: Option<Arc<dyn MetricsExporter>>,
    credentials: Credentials,
}

/// What the default transport found and made for its calls, for the default exporter's calls to
/// go the same way: its region, and its HTTP client (a proxy, a trust store) if it has one.
#[cfg(feature = "aws")]
#[derive(Default)]
#[cfg_attr(
    not(feature = "cloudwatch"),
    expect(dead_code, reason = "only the CloudWatch exporter reads it")
)]
struct Network {
    region: Option<String>,
    http_client: Option<kpl_aws::SharedHttpClient>,
}
#[cfg(not(feature = "aws"))]
type Network = ();

/// The credentials providers given to the builder, for the default transport and exporter.
#[derive(Default)]
struct Credentials {
    #[cfg(feature = "aws")]
    kinesis: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    #[cfg(feature = "cloudwatch")]
    metrics: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl Credentials {
    /// A provider given for a part the application replaced with its own: the setting that
    /// would go unused, and the builder method that replaced the part.
    #[allow(
        unused_variables,
        reason = "without the aws features nothing can go unused"
    )]
    fn unused(
        &self,
        own_transport: bool,
        own_exporter: bool,
    ) -> Option<(&'static str, &'static str)> {
        #[cfg(feature = "aws")]
        if own_transport && self.kinesis.is_some() {
            return Some(("credentials_provider", "transport"));
        }
        #[cfg(feature = "cloudwatch")]
        if own_exporter && self.metrics.is_some() {
            return Some(("metrics_credentials_provider", "metrics_exporter"));
        }
        None
    }
}

impl fmt::Debug for ProducerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("config", &self.config)
            .field("transport", &self.transport)
            .field("exporter", &self.exporter.as_ref().map(|_| "<exporter>"))
            .finish_non_exhaustive()
    }
}

impl ProducerBuilder {
    /// The configuration (default: the KPL defaults).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The transport that carries calls to Kinesis.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(SharedTransport::new(transport));
        self
    }

    /// Where the metrics are uploaded every `MetricsUploadDelay` (unless `MetricsLevel` is
    /// `none`). Without one, a producer on the default AWS transport uploads to CloudWatch
    /// when the `cloudwatch` feature is on (it is by default), as the KPL does; a producer on
    /// another transport uploads nowhere.
    pub fn metrics_exporter(mut self, exporter: impl MetricsExporter) -> Self {
        self.exporter = Some(Arc::new(exporter));
        self
    }

    /// Where the default AWS transport gets its credentials: a provider of the application's
    /// (AWS SSO, web identity, a vault, one that rotates keys...), the KPL's
    /// `setCredentialsProvider`. It takes precedence over `AwsAccessKeyId`/`AwsSecretKey`;
    /// without either, the SDK's default chain decides (environment, profiles, SSO, web
    /// identity, container and instance credentials). The SDK caches what it returns until
    /// shortly before it expires. The metrics use it too unless
    /// [`metrics_credentials_provider`](Self::metrics_credentials_provider) says otherwise.
    /// With a transport of your own, [`build`](Self::build) refuses it: configure your
    /// transport instead.
    #[cfg(feature = "aws")]
    pub fn credentials_provider(
        mut self,
        provider: impl aws_credential_types::provider::ProvideCredentials + 'static,
    ) -> Self {
        self.credentials.kinesis =
            Some(aws_credential_types::provider::SharedCredentialsProvider::new(provider));
        self
    }

    /// Where the default CloudWatch exporter gets its credentials, when they are not the
    /// records' (the KPL's `setMetricsCredentialsProvider`): metrics uploaded to another
    /// account, say. With an exporter of your own, [`build`](Self::build) refuses it.
    #[cfg(feature = "cloudwatch")]
    pub fn metrics_credentials_provider(
        mut self,
        provider: impl aws_credential_types::provider::ProvideCredentials + 'static,
    ) -> Self {
        self.credentials.metrics =
            Some(aws_credential_types::provider::SharedCredentialsProvider::new(provider));
        self
    }

    /// Checks the configuration and starts the producer's driver task on the current tokio
    /// runtime.
    pub fn build(self) -> Result<KinesisProducer, BuildError> {
        self.config.validate()?;
        let credentials = self.credentials;
        let own = (self.transport.is_some(), self.exporter.is_some());
        if let Some((setting, own)) = credentials.unused(own.0, own.1) {
            return Err(BuildError::UnusedSetting { setting, own });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        // Without timers the driver's first deadline would panic and cancel every record with
        // no reason given; tokio offers no way to ask but to try.
        let timers = std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO)));
        if timers.is_err() {
            return Err(BuildError::RuntimeWithoutTimers);
        }
        let own_transport = self.transport.is_some();
        let (transport, network) = match self.transport {
            Some(transport) => (transport, Network::default()),
            None => default_transport(&self.config, &credentials)?,
        };
        let exporter = match (self.exporter, own_transport) {
            (Some(exporter), _) => Some(exporter),
            (None, false) => default_exporter(&self.config, &credentials, network),
            (None, true) => None,
        };
        // The producer's time is tokio's: its timers (delivery timeouts, `send_wait_timeout`,
        // the driver's sleeps) are tokio's, so a clock that disagreed with them could not work.
        let clock = TokioClock;
        let seed = self.config.rng_seed.unwrap_or_else(|| {
            let wall = clock
                .system_time()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            wall.as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15
        });
        let engine = Engine::new(self.config.engine_config(seed)).map_err(|error| {
            BuildError::Config(crate::error::ConfigError::invalid(
                error.key(),
                error.value(),
                error.allowed(),
                false,
            ))
        })?;
        let state = State::new(engine);
        let shared = Arc::new(Shared {
            completions: Arc::clone(&state.completions),
            state: Mutex::new(state),
            driver_wake: Notify::new(),
            space: Notify::new(),
            clock,
            max_connections: usize::try_from(self.config.max_connections)
                .unwrap_or(1)
                .max(1),
            request_timeout: self.config.request_timeout,
            user_record_timeout: (!self.config.user_record_timeout.is_zero())
                .then_some(self.config.user_record_timeout),
            return_records: self.config.return_user_record_on_failure,
            runtime: runtime.clone(),
            metrics: Mutex::new({
                let mut hub = MetricsHub::new(
                    self.config.metrics_level,
                    self.config.metrics_granularity,
                    self.config.additional_metrics_dimensions.clone(),
                );
                if let Some(exporter) = exporter {
                    hub.export_to(
                        exporter,
                        self.config.metrics_namespace.clone(),
                        self.config.metrics_upload_delay,
                    );
                }
                hub
            }),
        });
        runtime.spawn(drive(Arc::clone(&shared), transport));
        // An upload that takes longer than the interval it reports is given up on (and counted),
        // so one that hangs does not stop the uploads for good.
        let upload_timeout = self.config.metrics_upload_delay.max(Duration::from_secs(1));
        runtime.spawn(collect_metrics(Arc::downgrade(&shared), upload_timeout));
        Ok(KinesisProducer {
            handle: Arc::new(Handle { shared }),
        })
    }
}

/// The producer: hand it records, await their outcomes.
///
/// A cheap `Clone` handle (`Send + Sync`); all clones share one engine and one driver task.
/// Records for several streams (by name or ARN) go through one producer.
///
/// **Dropping** the last handle without [`shutdown`](Self::shutdown) never blocks: the driver
/// stops, calls in flight are abandoned, and every pending [`DeliveryFuture`] resolves with
/// [`DeliveryErrorKind::Cancelled`]. Use `shutdown` to deliver what can be delivered first.
#[derive(Clone)]
pub struct KinesisProducer {
    handle: Arc<Handle>,
}

impl fmt::Debug for KinesisProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KinesisProducer")
            .field("outstanding_records", &self.outstanding_records())
            .finish_non_exhaustive()
    }
}

/// Whether `url` (`scheme://host[:port][/path]`) names this machine: `localhost`, 127.0.0.0/8
/// or `[::1]`.
#[cfg(any(feature = "aws", test))]
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `AwsAccessKeyId`, `AwsSecretKey` and `AwsSessionToken` as the AWS clients take them. Empty
/// credentials (set field by field) mean the default chain, never empty static keys.
#[cfg(feature = "aws")]
fn static_credentials(config: &Config) -> Option<(String, String, Option<String>)> {
    let credentials = config.credentials.as_ref().filter(|c| !c.is_empty())?;
    Some((
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
    ))
}

/// The AWS transport's settings for `config`: region, endpoint, static credentials, timeouts,
/// proxy, trust store, certificate checks.
#[cfg(feature = "aws")]
fn aws_settings(config: &Config) -> Result<kpl_aws::AwsSettings, BuildError> {
    let endpoint_url = crate::config::endpoint_url(&config.kinesis_endpoint, config.kinesis_port);
    if let Some(url) = &endpoint_url
        && url.starts_with("http://")
        && !is_loopback_url(url)
    {
        tracing::warn!(
            endpoint = %url,
            "plain http to a host that is not this machine: records and the session token travel unencrypted"
        );
    }
    let mut settings = kpl_aws::AwsSettings::default();
    settings.region = (!config.region.is_empty()).then(|| config.region.clone());
    settings.endpoint_url = endpoint_url;
    settings.credentials = static_credentials(config);
    settings.connect_timeout = Some(config.connect_timeout);
    settings.request_timeout = Some(config.request_timeout);
    settings.verify_certificate = config.verify_certificate;
    settings.proxy_host = (!config.proxy_host.is_empty()).then(|| config.proxy_host.clone());
    settings.proxy_port = Some(config.proxy_port);
    settings.proxy_credentials = (!config.proxy_user_name.is_empty()).then(|| {
        (
            config.proxy_user_name.clone(),
            config.proxy_password.clone(),
        )
    });
    settings.ca_certificates = match (config.ca_cert_path.as_str(), config.ca_cert_file.as_str()) {
        ("", "") => None,
        (path, "") | ("", path) => Some(path.to_owned()),
        (_, _) => {
            let both = "CaCertPath and CaCertFile are both set: set one (a directory, or a file)";
            return Err(BuildError::UnsupportedSetting(Box::new(
                kpl_aws::AwsSettingsError::CustomCa(both.to_owned()),
            )));
        }
    };
    Ok(settings)
}

/// The AWS transport for `config`, signing with `provider` if given (else the static keys of
/// `config`, else the SDK's chain).
#[cfg(feature = "aws")]
pub(crate) fn aws_transport(
    config: &Config,
    provider: Option<aws_credential_types::provider::SharedCredentialsProvider>,
) -> Result<kpl_aws::AwsTransport, BuildError> {
    let mut settings = aws_settings(config)?;
    settings.credentials_provider = provider;
    kpl_aws::AwsTransport::new(settings).map_err(|error| match error {
        kpl_aws::AwsSettingsError::NoRegion => BuildError::NoRegion,
        error => BuildError::UnsupportedSetting(Box::new(error)),
    })
}

/// The AWS transport configured from `config` (region, endpoint, credentials, timeouts), with
/// the application's credentials provider if it gave one.
#[cfg(feature = "aws")]
fn default_transport(
    config: &Config,
    providers: &Credentials,
) -> Result<(SharedTransport, Network), BuildError> {
    // The AWS client's connections need the runtime's IO driver; without it every call would
    // panic in a task. Tokio offers no way to ask but to register something.
    let io = std::panic::catch_unwind(|| {
        let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        socket.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(socket).map(drop)
    });
    if io.is_err() {
        return Err(BuildError::RuntimeWithoutIo);
    }
    let transport = aws_transport(config, providers.kinesis.clone())?;
    let network = Network {
        region: transport.region().map(str::to_owned),
        http_client: transport.http_client(),
    };
    Ok((SharedTransport::new(transport), network))
}

/// The KPL's default: metrics uploaded to CloudWatch, with the producer's region and
/// credentials, at `CloudwatchEndpoint` if set.
#[cfg(feature = "cloudwatch")]
fn default_exporter(
    config: &Config,
    providers: &Credentials,
    network: Network,
) -> Option<Arc<dyn MetricsExporter>> {
    if config.metrics_level == crate::MetricsLevel::None {
        return None;
    }
    let mut settings = kpl_cloudwatch::CloudWatchSettings::default();
    // The transport's: `Region`, or what the SDK's chain found at build.
    settings.region = network.region;
    settings.endpoint_url =
        crate::config::endpoint_url(&config.cloudwatch_endpoint, config.cloudwatch_port);
    settings.credentials = static_credentials(config);
    // The records' provider unless the metrics have their own, as in the KPL.
    settings.credentials_provider = providers
        .metrics
        .clone()
        .or_else(|| providers.kinesis.clone());
    settings.request_timeout = Some(config.request_timeout);
    // The records' way through the network (proxy, trust store), as the KPL's metrics take it.
    settings.http_client = network.http_client;
    Some(Arc::new(kpl_cloudwatch::CloudWatchExporter::new(settings)))
}

/// Without the `cloudwatch` feature metrics are uploaded only to an exporter the application
/// gives.
#[cfg(not(feature = "cloudwatch"))]
fn default_exporter(_: &Config, _: &Credentials, _: Network) -> Option<Arc<dyn MetricsExporter>> {
    None
}

/// Without the `aws` feature there is no default transport.
#[cfg(not(feature = "aws"))]
fn default_transport(
    _: &Config,
    _: &Credentials,
) -> Result<(SharedTransport, Network), BuildError> {
    Err(BuildError::NoTransport)
}

/// Stops the driver when the last producer handle goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.accepting = false;
        state.dropped = true;
        drop(state);
        self.shared.driver_wake.notify_one();
        self.shared.space.notify_waiters();
    }
}

struct Shared {
    state: Mutex<State>,
    /// The same table as `State::completions`, for building futures without the lock.
    completions: Arc<CompletionTable>,
    driver_wake: Notify,
    space: Notify,
    clock: TokioClock,
    max_connections: usize,
    request_timeout: Duration,
    user_record_timeout: Option<Duration>,
    return_records: bool,
    /// The runtime the producer was built on: delivery futures' timers live on it, so `send`
    /// works from any thread.
    runtime: tokio::runtime::Handle,
    /// The metrics taken from the engine (a lock of its own: reading them never waits on the
    /// engine's).
    metrics: Mutex<MetricsHub>,
}

impl Shared {
    /// The lock is never held across an `.await`. A panic while holding it leaves the engine
    /// consistent (every engine method completes or does nothing), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn metrics(&self) -> MutexGuard<'_, MetricsHub> {
        self.metrics.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    engine: Engine,
    /// Where each unfinished record's outcome goes, by record id.
    waiters: IdTable<Waiter>,
    /// The outcomes of records sent for futures, until their futures read them.
    completions: Arc<CompletionTable>,
    /// Who waits for each flush marker.
    flushes: BTreeMap<FlushId, Vec<oneshot::Sender<()>>>,
    /// The newest flush marker, and how many records had been accepted when it was made: a
    /// `flush_and_wait` with nothing accepted since waits on it instead of making another.
    newest_flush: Option<(FlushId, u64)>,
    accepting: bool,
    dropped: bool,
    finished: bool,
    in_flight: usize,
    /// While shutting down: the records the shutdown cut short, collected for the report.
    shutdown_report: Option<ShutdownReport>,
    /// Failures to log once the lock is released: a `tracing` subscriber may use the producer,
    /// and the lock is not re-entrant.
    failures_to_log: Vec<FailureLog>,
    /// The deadline the driver sleeps until (`None`: until woken).
    driver_sleeps_until: Option<Instant>,
    /// `send_wait` callers waiting for buffer space, in arrival order: only the first may take
    /// space, and `send` refuses while any wait, so a large record is not starved by smaller
    /// ones that keep fitting in what frees up.
    space_queue: VecDeque<u64>,
    next_ticket: u64,
}

impl State {
    fn new(engine: Engine) -> Self {
        Self {
            engine,
            waiters: IdTable::default(),
            completions: Arc::default(),
            flushes: BTreeMap::new(),
            newest_flush: None,
            accepting: true,
            dropped: false,
            finished: false,
            in_flight: 0,
            shutdown_report: None,
            failures_to_log: Vec::new(),
            driver_sleeps_until: None,
            space_queue: VecDeque::new(),
            next_ticket: 0,
        }
    }

    fn forget_abandoned_flushes(&mut self) {
        let abandoned: Vec<FlushId> = self
            .flushes
            .iter_mut()
            .filter_map(|(&id, waiting)| {
                waiting.retain(|sender| !sender.is_closed());
                waiting.is_empty().then_some(id)
            })
            .collect();
        for id in abandoned {
            self.flushes.remove(&id);
            self.engine.forget_flush_marker(id);
        }
    }

    /// Admits a prepared record under the lock for a caller holding `ticket` in the queue of
    /// `send_wait` callers (`None`: not queued), its outcome going where `want` says (taken
    /// only if the record is accepted). Returns its id and whether the caller left the queue.
    fn admit(
        &mut self,
        prepared: PreparedRecord,
        ticket: Option<u64>,
        want: &mut Option<Want>,
        now: Instant,
    ) -> Result<(RecordId, bool), SendError> {
        if !self.accepting {
            return Err(SendError::new(
                SendErrorKind::ShuttingDown,
                "the producer is shutting down",
                prepared.into_record(),
            ));
        }
        if let Some(&first) = self.space_queue.front()
            && ticket != Some(first)
        {
            let waiting = self.space_queue.len();
            return Err(SendError::new(
                SendErrorKind::BufferFull,
                format!("{waiting} send_wait call(s) are waiting for buffer space first"),
                prepared.into_record(),
            ));
        }
        let id = self
            .engine
            .submit_prepared(prepared, now)
            .map_err(|rejected| {
                let (reason, record) = rejected.into_parts();
                SendError::from_rejected(reason, record)
            })?;
        let dequeued = ticket.is_some() && self.space_queue.pop_front().is_some();
        let waiter = match want.take() {
            Some(Want::Future) => Waiter::Future(id),
            Some(Want::Channel(permit)) => Waiter::Channel(permit),
            None => return Ok((id, dequeued)),
        };
        self.waiters.insert(id.get(), waiter);
        Ok((id, dequeued))
    }

    /// Whether the driver has something to do now: a request it has a connection for, events,
    /// or a deadline earlier than the one it sleeps until. Waking it for every record would
    /// cost a driver round per record.
    fn driver_has_work(&mut self, max_connections: usize) -> bool {
        let has_work = (self.engine.has_requests() && self.in_flight < max_connections)
            || self.engine.has_events();
        let earlier = match (self.engine.poll_timeout(), self.driver_sleeps_until) {
            (Some(due), Some(sleeping)) => due < sleeping,
            (Some(_), None) => true,
            (None, _) => false,
        };
        has_work || earlier
    }

    /// Hands every engine event to whoever waits for it. Returns whether records finished.
    fn dispatch(&mut self, return_records: bool) -> bool {
        let mut finished = false;
        // Outcomes for futures, handed to the table of completions under one lock.
        let mut completed = Vec::new();
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::Delivered(delivery) => {
                    finished = true;
                    let id = delivery.id();
                    self.deliver(id, Ok(delivery), &mut completed);
                }
                Event::Failed(failure) => {
                    finished = true;
                    let failure = *failure;
                    let id = failure.id();
                    let reason = failure.reason();
                    if !matches!(
                        reason,
                        FailureReason::Abandoned | FailureReason::AbandonedInFlight
                    ) {
                        self.failures_to_log.push(FailureLog {
                            id,
                            reason,
                            last: failure.attempts().last().cloned(),
                        });
                    }
                    let kind = match reason {
                        FailureReason::Abandoned | FailureReason::AbandonedInFlight
                            if self.dropped =>
                        {
                            DeliveryErrorKind::Cancelled
                        }
                        FailureReason::Abandoned => DeliveryErrorKind::ShutDown,
                        FailureReason::AbandonedInFlight => DeliveryErrorKind::ShutDownInFlight,
                        other => DeliveryErrorKind::Failed(other),
                    };
                    let attempts = failure.attempts().to_vec();
                    let attempt_count = failure.attempt_count();
                    let record = failure.into_record();
                    let shut_down = matches!(
                        kind,
                        DeliveryErrorKind::ShutDown | DeliveryErrorKind::ShutDownInFlight
                    );
                    let kept = (return_records || shut_down).then(|| Box::new(record.clone()));
                    // Records that failed for another reason keep it, and are not reported
                    // as cut short by the shutdown.
                    if let Some(report) = &mut self.shutdown_report {
                        match kind {
                            DeliveryErrorKind::ShutDown => report.unsent.push(record),
                            DeliveryErrorKind::ShutDownInFlight => report.in_flight.push(record),
                            _ => {}
                        }
                    }
                    let error = DeliveryError {
                        id,
                        kind,
                        attempts,
                        attempt_count,
                        record: kept,
                    };
                    self.deliver(id, Err(error), &mut completed);
                }
                Event::Flushed(id) => {
                    // The outcomes a flush waits for are there before it is told.
                    self.completions.complete(mem::take(&mut completed));
                    for sender in self.flushes.remove(&id).unwrap_or_default() {
                        let _ = sender.send(());
                    }
                }
                _ => {}
            }
        }
        self.completions.complete(completed);
        finished
    }

    /// Hands record `id` its outcome, where its caller wants it: into `completed` for its
    /// future, or its slot in an outcome channel (reserved when it was accepted: this never
    /// waits or fails).
    fn deliver(
        &mut self,
        id: RecordId,
        outcome: Outcome,
        completed: &mut Vec<(RecordId, Outcome)>,
    ) {
        match self.waiters.remove(id.get()) {
            Some(Waiter::Future(_)) => completed.push((id, outcome)),
            Some(Waiter::Channel(permit)) => drop(permit.send(RecordOutcome { id, outcome })),
            None => {}
        }
    }

    /// Cancels every record still waiting for its outcome: nothing can finish them any more.
    fn cancel_waiters(&mut self) {
        let futures = self
            .waiters
            .drain()
            .into_iter()
            .filter_map(|(_, waiter)| match waiter {
                Waiter::Future(id) => Some((id, Err(DeliveryError::cancelled(id)))),
                Waiter::Channel(_) => None,
            });
        self.completions.complete(futures);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.cancel_waiters();
    }
}

impl KinesisProducer {
    /// A builder with the KPL's default configuration.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder {
            config: Config::default(),
            transport: None,
            exporter: None,
            credentials: Credentials::default(),
        }
    }

    /// Accepts a record without waiting, or says why not and hands it back: the buffer is full
    /// (or `send_wait` callers are waiting for space first; see [`send_wait`](Self::send_wait)),
    /// the record is invalid or too large, or the producer is shutting down.
    pub fn send(&self, record: Record) -> Result<DeliveryFuture, SendError> {
        let id = self.admit(record, None, &mut Some(Want::Future))?;
        Ok(self.delivery_future(id))
    }

    /// The future of record `id`'s outcome, with the producer's `user_record_timeout`.
    fn delivery_future(&self, id: RecordId) -> DeliveryFuture {
        let shared = &self.handle.shared;
        // On the producer's runtime, whichever thread sends (a timer needs a runtime's clock).
        let timer = shared.user_record_timeout.map(|timeout| {
            let _entered = shared.runtime.enter();
            Box::pin(tokio::time::sleep(timeout))
        });
        DeliveryFuture::new(id, Arc::clone(&shared.completions), timer)
    }

    /// `send` for a caller holding `ticket` in the queue of `send_wait` callers (`None`: not
    /// queued), whose outcome goes to `waiter` (taken only if the record is accepted). Space
    /// goes to the first in the queue.
    fn admit(
        &self,
        record: Record,
        ticket: Option<u64>,
        want: &mut Option<Want>,
    ) -> Result<RecordId, SendError> {
        // Checking and hashing need no lock: other senders go on meanwhile.
        let prepared = prepare(record)?;
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        let now = shared.clock.now();
        let admitted = state.admit(prepared, ticket, want, now);
        let wake = state.driver_has_work(shared.max_connections);
        drop(state);
        if wake {
            shared.driver_wake.notify_one();
        }
        let (id, dequeued) = admitted?;
        if dequeued {
            // The next in the queue may fit too.
            shared.space.notify_waiters();
        }
        Ok(id)
    }

    /// Accepts many records under one lock and one clock read, each checked and hashed before
    /// the lock, or says for each why not and hands it back. One result per record, in order.
    /// A record refused for want of space ([`SendErrorKind::BufferFull`]) stops the batch: the
    /// ones after it are refused the same way, so records are accepted in the order given.
    /// See [`send_all`](Self::send_all) to wait for space instead.
    pub fn send_batch(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Vec<Result<DeliveryFuture, SendError>> {
        let prepared = PreparedRecord::prepare_many(records)
            .into_iter()
            .map(|prepared| prepared.map_err(send_error));
        let shared = &self.handle.shared;
        let mut accepted: Vec<Result<RecordId, SendError>> =
            Vec::with_capacity(prepared.size_hint().0);
        let wake = {
            let mut state = shared.lock();
            let now = shared.clock.now();
            let mut full = false;
            for prepared in prepared {
                let result = prepared.and_then(|prepared| {
                    if full {
                        return Err(SendError::new(
                            SendErrorKind::BufferFull,
                            "a record before it in the batch found no buffer space",
                            prepared.into_record(),
                        ));
                    }
                    let admitted = state.admit(prepared, None, &mut Some(Want::Future), now);
                    admitted.map(|(id, _)| id)
                });
                full |= matches!(&result, Err(e) if e.kind() == SendErrorKind::BufferFull);
                accepted.push(result);
            }
            state.driver_has_work(shared.max_connections)
        };
        if wake {
            shared.driver_wake.notify_one();
        }
        accepted
            .into_iter()
            .map(|result| result.map(|id| self.delivery_future(id)))
            .collect()
    }

    /// [`send_batch`](Self::send_batch), waiting for buffer space whenever it runs out, as
    /// [`send_wait`](Self::send_wait) does. One result per record, in order; refusals other
    /// than for space come back at once with their records.
    pub async fn send_all(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Vec<Result<DeliveryFuture, SendError>> {
        let mut rest: Vec<Record> = records.into_iter().collect();
        let mut results = Vec::with_capacity(rest.len());
        while !rest.is_empty() {
            let mut refused = Vec::new();
            for result in self.send_batch(mem::take(&mut rest)) {
                match result {
                    Err(error) if error.kind() == SendErrorKind::BufferFull => {
                        refused.push(error.into_record());
                    }
                    // Only back-pressure refusals follow the first one.
                    other => results.push(other),
                }
            }
            let mut refused = refused.into_iter();
            if let Some(first) = refused.next() {
                // Wait for room for the first; the others go as a batch again.
                results.push(self.send_wait(first).await);
                rest = refused.collect();
            }
        }
        results
    }

    /// [`send`](Self::send), waiting for buffer space while the outstanding limits are
    /// reached (back-pressure). Other refusals return at once.
    ///
    /// Waiting callers get space in the order they began to wait, and while any waits, `send`
    /// refuses with [`SendErrorKind::BufferFull`]: a large record is not passed over forever
    /// by smaller ones that fit in what frees up.
    pub async fn send_wait(&self, record: Record) -> Result<DeliveryFuture, SendError> {
        let id = self
            .send_waiting(record, None, &mut Some(Want::Future))
            .await?;
        Ok(self.delivery_future(id))
    }

    /// [`send_wait`](Self::send_wait), giving up after `timeout` with
    /// [`SendErrorKind::TimedOut`] and the record.
    pub async fn send_wait_timeout(
        &self,
        record: Record,
        timeout: Duration,
    ) -> Result<DeliveryFuture, SendError> {
        let id = self
            .send_waiting(record, Some(timeout), &mut Some(Want::Future))
            .await?;
        Ok(self.delivery_future(id))
    }

    async fn send_waiting(
        &self,
        record: Record,
        timeout: Option<Duration>,
        want: &mut Option<Want>,
    ) -> Result<RecordId, SendError> {
        // A timeout too long to be a time is no limit.
        let limit = timeout.and_then(|timeout| {
            let deadline = crate::clock::tokio_now().checked_add(timeout)?;
            Some((deadline, timeout))
        });
        // The common case needs no waiting, no queueing and no registration with the notifier.
        let mut record = match self.admit(record, None, want) {
            Err(error) if error.kind() == SendErrorKind::BufferFull => error.into_record(),
            other => return other,
        };
        let place = QueuePlace::take(&self.handle.shared);
        loop {
            let space = self.handle.shared.space.notified();
            tokio::pin!(space);
            // Registered before the retry, so space freed in between is not missed.
            space.as_mut().enable();
            match self.admit(record, Some(place.ticket), want) {
                Err(error) if error.kind() == SendErrorKind::BufferFull => {
                    record = error.into_record();
                }
                other => return other,
            }
            match limit {
                Some((deadline, timeout)) => {
                    if tokio::time::timeout_at(deadline, space).await.is_err() {
                        return Err(SendError::new(
                            SendErrorKind::TimedOut,
                            format!("no buffer space within {timeout:?}"),
                            record,
                        ));
                    }
                }
                None => space.await,
            }
        }
    }

    /// A channel for the outcomes of records sent without a [`DeliveryFuture`], for callers
    /// that fire and forget (the KPL's callbacks, without a task or a future per record):
    /// records sent through the [`OutcomeSender`] have their outcome, exactly one each, come out
    /// of the [`OutcomeReceiver`] in the order they finish.
    ///
    /// **Back-pressure**: the channel holds at most `capacity` outcomes, counting those of
    /// records still outstanding: a slot is reserved when a record is accepted, so an outcome
    /// is never dropped and never waits. While every slot is taken (outcomes not yet
    /// received), [`OutcomeSender::send`] refuses with [`SendErrorKind::BufferFull`] and
    /// [`OutcomeSender::send_wait`] waits: a consumer that falls behind slows its producers
    /// down instead of growing a queue. The producer's own limits apply too. Dropping the
    /// receiver makes the sender refuse every record with [`SendErrorKind::NoOutcomeReceiver`].
    /// `user_record_timeout` does not apply: there is no future to time out.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    pub fn outcome_channel(&self, capacity: usize) -> (OutcomeSender, OutcomeReceiver) {
        let (sender, receiver) = mpsc::channel(capacity);
        let sender = OutcomeSender {
            producer: self.clone(),
            sender,
        };
        (sender, OutcomeReceiver { receiver })
    }

    /// Sends what is buffered for every stream now, without waiting for the buffering
    /// deadlines (rate limits still apply). Returns at once; see
    /// [`flush_and_wait`](Self::flush_and_wait) to wait for the outcomes.
    pub fn flush(&self) {
        let shared = &self.handle.shared;
        let now = shared.clock.now();
        shared.lock().engine.flush(now);
        shared.driver_wake.notify_one();
    }

    /// [`flush`](Self::flush) for one stream.
    pub fn flush_stream(&self, stream: &Stream) {
        let shared = &self.handle.shared;
        let now = shared.clock.now();
        shared.lock().engine.flush_stream(stream, now);
        shared.driver_wake.notify_one();
    }

    /// Flushes every stream and resolves once every record accepted before the call has its
    /// outcome (the KPL's `flushSync`, without its polling loop).
    pub async fn flush_and_wait(&self) {
        let shared = &self.handle.shared;
        let receiver = {
            let mut state = shared.lock();
            if state.finished {
                return;
            }
            let now = shared.clock.now();
            let (sender, receiver) = oneshot::channel();
            let accepted = state.engine.records_accepted();
            let shared_marker = state
                .newest_flush
                .filter(|&(id, at)| at == accepted && state.flushes.contains_key(&id));
            match shared_marker {
                // Nothing accepted since the newest marker: it covers this call too. (Callers
                // that stopped waiting leave, so repeated calls do not pile up.)
                Some((id, _)) => {
                    state.engine.flush(now);
                    let waiting = state.flushes.entry(id).or_default();
                    waiting.retain(|sender| !sender.is_closed());
                    waiting.push(sender);
                }
                None => {
                    // Markers whose callers all gave up go, so that a caller that keeps giving up
                    // while records keep coming does not leave one marker per call behind.
                    state.forget_abandoned_flushes();
                    let id = state.engine.flush_marker(now);
                    state.flushes.entry(id).or_default().push(sender);
                    state.newest_flush = Some((id, accepted));
                }
            }
            // An empty marker completes at once. Events handed out here are not seen by the
            // driver, so those waiting for buffer space are told here.
            if state.dispatch(shared.return_records) {
                shared.space.notify_waiters();
            }
            let failures = mem::take(&mut state.failures_to_log);
            drop(state);
            log_failures(failures);
            receiver
        };
        shared.driver_wake.notify_one();
        // An error means the producer stopped: nothing is outstanding any more either way.
        let _ = receiver.await;
    }

    /// Records accepted and not yet finished.
    pub fn outstanding_records(&self) -> usize {
        self.handle.shared.lock().engine.outstanding_records()
    }

    /// The memory charged against `MaxOutstandingBytes`: the key, data and bookkeeping of every
    /// record accepted and not yet finished, plus the encoded Kinesis records of requests not
    /// yet answered (twice their size, for the transport's wire copy). See `docs/config.md`.
    pub fn outstanding_bytes(&self) -> usize {
        self.handle.shared.lock().engine.outstanding_bytes()
    }

    /// How long the oldest unfinished record has been waiting.
    pub fn oldest_record_age(&self) -> Option<Duration> {
        let shared = &self.handle.shared;
        let oldest = shared.lock().engine.oldest_outstanding()?;
        Some(shared.clock.now().saturating_duration_since(oldest))
    }

    /// The statistics of the last `window` (whole seconds, at most 60: the KPL's
    /// `getMetrics(name, windowSeconds)`) of `metric`, or of every metric, at every place: per
    /// shard, per stream, and over every stream (`stream` `None`). The producer takes its
    /// metrics each second, so the current second is not in yet. See `docs/metrics.md`.
    pub fn metrics(&self, metric: Option<Metric>, window: Duration) -> Vec<MetricReading> {
        self.handle.shared.metrics().readings(metric, window)
    }

    /// How the uploads of the metrics went (see
    /// [`metrics_exporter`](ProducerBuilder::metrics_exporter)); `None` when they go nowhere.
    pub fn metrics_exports(&self) -> Option<MetricsExports> {
        self.handle.shared.metrics().exports()
    }

    /// Statistics per stream (see `kpl_engine::stats` for what each field means).
    pub fn stats(&self) -> Vec<(Stream, StreamStats)> {
        let state = self.handle.shared.lock();
        state
            .engine
            .stats()
            .map(|(stream, stats)| (stream.clone(), stats))
            .collect()
    }

    /// Stops accepting records, flushes, waits up to `deadline` for outcomes, then fails what
    /// is left and returns those records: never sent ([`DeliveryErrorKind::ShutDown`]), or
    /// carried by a call still in flight, so possibly written
    /// ([`DeliveryErrorKind::ShutDownInFlight`]).
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let shared = &self.handle.shared;
        shared.lock().accepting = false;
        shared.space.notify_waiters();
        let _ = tokio::time::timeout(deadline, self.flush_and_wait()).await;
        let (report, failures, last_upload) = {
            let mut state = shared.lock();
            state.shutdown_report = Some(ShutdownReport::default());
            state.engine.abandon();
            state.dispatch(shared.return_records);
            state.finished = true;
            let report = state.shutdown_report.take().unwrap_or_default();
            for sender in mem::take(&mut state.flushes).into_values().flatten() {
                let _ = sender.send(());
            }
            let failures = mem::take(&mut state.failures_to_log);
            let last_metrics = state.engine.take_metrics();
            let mut hub = shared.metrics();
            drop(state);
            hub.add_second(last_metrics);
            (
                report,
                failures,
                hub.due_upload(shared.clock.system_time(), true),
            )
        };
        log_failures(failures);
        shared.driver_wake.notify_one();
        // The last interval's metrics go now, within the request timeout (and a few seconds at
        // most: shutting down is not held up by a metrics service), or are counted lost.
        if let Some(upload) = last_upload {
            let bound = shared.request_timeout.min(LAST_UPLOAD_TIMEOUT);
            upload.send(bound).await;
        }
        if !report.unsent.is_empty() || !report.in_flight.is_empty() {
            tracing::warn!(
                unsent = report.unsent.len(),
                in_flight = report.in_flight.len(),
                "shutdown deadline passed with records unsent or of unknown outcome"
            );
        }
        report
    }
}

/// Samples `UserRecordsPending` every 200 ms and takes the engine's metrics every second, for
/// the window and the `metrics` recorder, until the producer is finished (its last second
/// included).
async fn collect_metrics(shared: Weak<Shared>, upload_timeout: Duration) {
    let mut tick = tokio::time::interval(PENDING_SAMPLE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = 0u32;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let due = {
            let mut state = shared.lock();
            if state.finished {
                // `shutdown` takes and uploads the last interval itself; a producer dropped
                // without it leaves its last second unreported, as nothing is left to wait for
                // an upload.
                return;
            }
            state.engine.sample_pending();
            samples += 1;
            if !samples.is_multiple_of(SAMPLES_PER_SECOND) {
                continue;
            }
            // The hub is locked before the state is let go (always in this order), so that
            // `shutdown` cannot take the last interval between the two.
            let series = state.engine.take_metrics();
            let mut hub = shared.metrics();
            drop(state);
            hub.add_second(series);
            hub.due_upload(shared.clock.system_time(), false)
        };
        if let Some(upload) = due {
            tokio::spawn(upload.send(upload_timeout));
        }
    }
}

/// Runs the engine: feeds it time and answers, sends its requests (at most `MaxConnections` at
/// once, each within `RequestTimeout`), hands out outcomes, and sleeps until its next deadline.
async fn drive(shared: Arc<Shared>, transport: SharedTransport) {
    let _stopped = DriverStopped(Arc::clone(&shared));
    let mut calls: JoinSet<(RequestId, Result<Response, TransportError>)> = JoinSet::new();
    let mut call_ids: BTreeMap<tokio::task::Id, RequestId> = BTreeMap::new();
    let mut log = DriverLog::default();
    loop {
        let (requests, next, freed, stop, failures) = {
            let mut state = shared.lock();
            if state.dropped && !state.finished {
                state.engine.abandon();
                state.dispatch(shared.return_records);
                state.finished = true;
            }
            if state.finished {
                (Vec::new(), None, true, true, Vec::new())
            } else {
                let now = shared.clock.now();
                state.engine.handle_timeout(now);
                let mut requests = Vec::new();
                while state.in_flight < shared.max_connections {
                    let Some(request) = state.engine.poll_request(now) else {
                        break;
                    };
                    state.in_flight += 1;
                    requests.push(request);
                }
                let freed = state.dispatch(shared.return_records);
                let next = state.engine.poll_timeout();
                state.driver_sleeps_until = next;
                let failures = mem::take(&mut state.failures_to_log);
                (requests, next, freed, false, failures)
            }
        };
        log_failures(failures);
        if freed {
            shared.space.notify_waiters();
        }
        if stop {
            calls.abort_all();
            return;
        }
        for (id, request) in requests {
            if let Request::ListShards(list) = &request {
                tracing::debug!(stream = %list.stream, page = ?list.next_token, "reading the shard map");
            }
            let call = send_request(&transport, request);
            let timeout = shared.request_timeout;
            let handle = calls.spawn(async move {
                let result = match tokio::time::timeout(timeout, call).await {
                    Ok(result) => result,
                    Err(_) => Err(TransportError::new(
                        TransportErrorKind::Timeout,
                        "RequestTimeout",
                        format!("no answer within {} ms", timeout.as_millis()),
                    )),
                };
                (id, result)
            });
            call_ids.insert(handle.id(), id);
        }
        let sleep = next.map(|at| tokio::time::sleep_until(tokio::time::Instant::from_std(at)));
        tokio::select! {
            () = shared.driver_wake.notified() => {}
            Some(joined) = calls.join_next_with_id(), if !calls.is_empty() => {
                let (task, answer) = match joined {
                    Ok((task, (id, result))) => (task, Some((id, result))),
                    Err(error) => (error.id(), None),
                };
                let Some(id) = call_ids.remove(&task) else { continue };
                let result = match answer {
                    Some((_, result)) => result,
                    None => Err(TransportError::new(
                        TransportErrorKind::Other,
                        kpl_engine::codes::TRANSPORT_PANICKED,
                        "the transport's call panicked or was cancelled",
                    )),
                };
                let now = shared.clock.now();
                log.answer(&result, now);
                let (summary, freed) = {
                    let mut state = shared.lock();
                    state.in_flight = state.in_flight.saturating_sub(1);
                    let charged = state.engine.outstanding_bytes();
                    state.engine.handle_response(id, result, now);
                    // An answer gives back its encoded records' charge even when every record
                    // in it is retried: room for those waiting to send.
                    let freed = state.engine.outstanding_bytes() < charged;
                    (log.take_summary(&state.engine, now), freed)
                };
                if freed {
                    shared.space.notify_waiters();
                }
                if let Some(summary) = summary {
                    summary.log();
                }
            }
            () = async { if let Some(sleep) = sleep { sleep.await } }, if next.is_some() => {}
        }
    }
}

/// The outcome of a record sent through an [`OutcomeSender`].
#[derive(Debug)]
#[non_exhaustive]
pub struct RecordOutcome {
    /// The id [`OutcomeSender::send`] returned for it.
    pub id: RecordId,
    /// Written, or why not.
    pub outcome: Result<Delivery, DeliveryError>,
}

/// Sends records whose outcomes go to an [`OutcomeReceiver`] (see
/// [`KinesisProducer::outcome_channel`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct OutcomeSender {
    producer: KinesisProducer,
    sender: mpsc::Sender<RecordOutcome>,
}

impl OutcomeSender {
    /// Accepts a record without waiting, or says why not and hands it back: a full outcome
    /// channel, and everything [`KinesisProducer::send`] refuses for.
    pub fn send(&self, record: Record) -> Result<RecordId, SendError> {
        let slot = match self.sender.clone().try_reserve_owned() {
            Ok(slot) => slot,
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(SendError::new(
                    SendErrorKind::BufferFull,
                    format!(
                        "the outcome channel is full ({} outcomes not yet received or still to come)",
                        self.sender.max_capacity()
                    ),
                    record,
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(no_receiver(record)),
        };
        self.producer
            .admit(record, None, &mut Some(Want::Channel(slot)))
    }

    /// [`send`](Self::send), waiting for a slot in the outcome channel and then for buffer
    /// space while either is full.
    pub async fn send_wait(&self, record: Record) -> Result<RecordId, SendError> {
        let Ok(slot) = self.sender.clone().reserve_owned().await else {
            return Err(no_receiver(record));
        };
        let mut waiter = Some(Want::Channel(slot));
        self.producer.send_waiting(record, None, &mut waiter).await
    }

    /// The producer the records go through.
    pub fn producer(&self) -> &KinesisProducer {
        &self.producer
    }
}

fn no_receiver(record: Record) -> SendError {
    SendError::new(
        SendErrorKind::NoOutcomeReceiver,
        "the outcome receiver was dropped: no one would learn this record's outcome",
        record,
    )
}

/// Where the outcomes of records sent through an [`OutcomeSender`] come out.
#[derive(Debug)]
pub struct OutcomeReceiver {
    receiver: mpsc::Receiver<RecordOutcome>,
}

impl OutcomeReceiver {
    /// The next outcome, waiting for one; `None` once every sender is gone and every outcome
    /// has been received.
    pub async fn recv(&mut self) -> Option<RecordOutcome> {
        self.receiver.recv().await
    }

    /// The next outcome if one is there.
    pub fn try_recv(&mut self) -> Option<RecordOutcome> {
        self.receiver.try_recv().ok()
    }

    /// Blocks the thread for the next outcome (outside an async context).
    pub fn blocking_recv(&mut self) -> Option<RecordOutcome> {
        self.receiver.blocking_recv()
    }
}

/// Checks and hashes a record (no lock needed), or refuses it with the record back.
fn prepare(record: Record) -> Result<PreparedRecord, SendError> {
    PreparedRecord::prepare(record).map_err(send_error)
}

fn send_error(rejected: Rejected) -> SendError {
    let (reason, record) = rejected.into_parts();
    SendError::from_rejected(reason, record)
}

/// A `send_wait` caller's place in the queue for buffer space; leaving the queue (admitted,
/// timed out, or the future dropped) lets the next one try.
struct QueuePlace {
    shared: Arc<Shared>,
    ticket: u64,
}

impl QueuePlace {
    fn take(shared: &Arc<Shared>) -> Self {
        let mut state = shared.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.space_queue.push_back(ticket);
        Self {
            shared: Arc::clone(shared),
            ticket,
        }
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let first = state.space_queue.front() == Some(&self.ticket);
        state.space_queue.retain(|&ticket| ticket != self.ticket);
        drop(state);
        if first {
            self.shared.space.notify_waiters();
        }
    }
}

/// Runs when the driver ends for any reason, including its runtime shutting down under it:
/// nothing can make progress any more, so the producer refuses records and every pending
/// future resolves as cancelled instead of waiting forever.
struct DriverStopped(Arc<Shared>);

impl Drop for DriverStopped {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.accepting = false;
        state.finished = true;
        // Nothing can finish the records any more: the engine lets them go, so the producer
        // does not report them outstanding (and ageing) for the rest of its life, and each ends
        // cancelled where its outcome is awaited (a future, or a slot in an outcome channel).
        state.dropped = true;
        state.engine.abandon();
        state.dispatch(false);
        state.cancel_waiters();
        state.flushes.clear();
        state.failures_to_log.clear();
        drop(state);
        self.0.space.notify_waiters();
    }
}

/// What the driver logs: throttling when it starts, a summary of retries and errors now and
/// then, and every terminal or failed call. Never credentials: errors carry service messages.
#[derive(Default)]
struct DriverLog {
    last_throttled: Option<Instant>,
    next_summary: Option<Instant>,
    reported_retries: u64,
    reported_errors: u64,
    reported_failed: u64,
    reported_unjudged: u64,
}

/// The longest `shutdown` waits for the last upload of the metrics.
const LAST_UPLOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Throttling after this long without any counts as starting again.
const THROTTLING_QUIET: Duration = Duration::from_secs(10);
/// Retries and errors are summarized at most this often.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

impl DriverLog {
    fn answer(&mut self, result: &Result<Response, TransportError>, now: Instant) {
        match result {
            Err(error) if !error.is_retryable() => {
                tracing::warn!(%error, "call failed with an error retrying cannot fix");
            }
            Err(error) => tracing::debug!(%error, "call failed; its records will be retried"),
            Ok(Response::PutRecords(put)) => {
                let throttled = put
                    .entries
                    .iter()
                    .filter(|entry| {
                        matches!(entry, kpl_engine::transport::PutRecordsEntryResult::Failed { code, .. }
                            if TransportErrorKind::from_code(code) == TransportErrorKind::Throttled)
                    })
                    .count();
                if throttled > 0 {
                    let starting = self
                        .last_throttled
                        .is_none_or(|last| now.saturating_duration_since(last) > THROTTLING_QUIET);
                    if starting {
                        tracing::info!(
                            throttled,
                            "throttling started: shards refuse records; their rates are lowered and the records retried"
                        );
                    } else {
                        tracing::debug!(throttled, "entries throttled");
                    }
                    self.last_throttled = Some(now);
                }
            }
            Ok(Response::ListShards(page)) => {
                tracing::debug!(
                    shards = page.shards.len(),
                    last_page = page.next_token.is_none(),
                    "shard map page read"
                );
            }
            Ok(_) => {}
        }
    }

    /// The counts for the periodic summary, when one is due. Taken under the producer's lock;
    /// logged after it is released.
    fn take_summary(&mut self, engine: &Engine, now: Instant) -> Option<Summary> {
        let next = *self.next_summary.get_or_insert(now + SUMMARY_EVERY);
        if now < next {
            return None;
        }
        self.next_summary = Some(now + SUMMARY_EVERY);
        let (mut retries, mut errors, mut failed, mut unjudged) = (0, 0, 0, 0);
        for (_, stats) in engine.stats() {
            retries += stats.retries_per_record;
            errors += stats.errors_by_code.values().sum::<u64>();
            failed += stats.user_records_failed;
            unjudged += stats.unjudged_landings_resent;
        }
        let summary = Summary {
            retries: retries - self.reported_retries,
            errors: errors - self.reported_errors,
            failed_records: failed - self.reported_failed,
            unjudged_resent: unjudged - self.reported_unjudged,
            outstanding: engine.outstanding_records(),
        };
        (
            self.reported_retries,
            self.reported_errors,
            self.reported_failed,
            self.reported_unjudged,
        ) = (retries, errors, failed, unjudged);
        Some(summary)
    }
}

/// What happened since the last periodic summary.
struct Summary {
    retries: u64,
    errors: u64,
    failed_records: u64,
    unjudged_resent: u64,
    outstanding: usize,
}

impl Summary {
    fn log(&self) {
        if self.unjudged_resent > 0 {
            tracing::warn!(
                records = self.unjudged_resent,
                "records re-sent because no shard map read could tell whether a consumer keeps the copy they landed with: a consumer may read them twice"
            );
        }
        if self.retries + self.errors + self.failed_records > 0 {
            tracing::info!(
                retries = self.retries,
                errors = self.errors,
                failed_records = self.failed_records,
                outstanding = self.outstanding,
                "since the last summary"
            );
        }
    }
}

/// A failed record, as logged (never its data or key).
struct FailureLog {
    id: RecordId,
    reason: FailureReason,
    last: Option<Attempt>,
}

fn log_failures(failures: Vec<FailureLog>) {
    for failure in failures {
        tracing::debug!(
            record = failure.id.get(),
            reason = %failure.reason,
            last_attempt = ?failure.last,
            "record failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpl_sim::UnansweredTransport;

    #[tokio::test(start_paused = true)]
    async fn flush_calls_with_nothing_accepted_in_between_share_one_marker() {
        let producer = KinesisProducer::builder()
            .transport(UnansweredTransport)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let _pending = producer.send(Record::new(stream, "k", vec![1]));
        // A health check that gives up on each flush: one marker, not one per call, and the
        // callers that left are not kept either.
        for _ in 0..10 {
            let gave_up = tokio::time::timeout(Duration::ZERO, producer.flush_and_wait()).await;
            assert!(gave_up.is_err());
        }
        let state = producer.handle.shared.lock();
        assert_eq!(state.flushes.len(), 1);
        assert!(state.flushes.values().all(|waiting| waiting.len() <= 1));
    }

    #[tokio::test(start_paused = true)]
    async fn flush_calls_given_up_on_while_records_keep_coming_leave_no_markers_behind() {
        let producer = KinesisProducer::builder()
            .transport(UnansweredTransport)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let mut pending = Vec::new();
        for n in 0..100u8 {
            pending.push(producer.send(Record::new(stream.clone(), "k", vec![n])));
            let gave_up = tokio::time::timeout(Duration::ZERO, producer.flush_and_wait()).await;
            assert!(gave_up.is_err());
        }
        let state = producer.handle.shared.lock();
        assert_eq!(state.flushes.len(), 1, "only the latest call's marker");
        assert_eq!(state.engine.pending_flush_markers(), 1);
    }

    #[test]
    fn loopback_endpoints_are_told_from_remote_ones() {
        for url in [
            "http://localhost:4567",
            "http://127.0.0.1:4567/",
            "http://127.8.9.10",
            "http://[::1]:4567",
            "http://LOCALHOST",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:4567",
            "http://kinesis.example.com",
            "http://localhost.example.com:80",
            "http://[2001:db8::1]:4567",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
