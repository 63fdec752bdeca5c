//! The builder: checks the runtime and the configuration, makes the default transport and
//! exporter, and starts the driver.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpl_engine::Engine;
use kpl_engine::time::Clock;
use kpl_engine::transport::{SharedTransport, Transport};
use tokio::sync::Notify;

use super::driver::{collect_metrics, drive};
use super::state::{Shared, State};
use super::{Handle, KinesisProducer};
use crate::clock::TokioClock;
use crate::config::Config;
use crate::error::BuildError;
use crate::metrics::MetricsHub;
use crate::wiring::{Credentials, Network, default_exporter, default_transport};
use kpl_engine::metrics::MetricsExporter;

/// Builds a [`KinesisProducer`].
#[must_use = "a builder does nothing until build() is called"]
pub struct ProducerBuilder {
    config: Config,
    transport: Option<SharedTransport>,
    exporter: Option<Arc<dyn MetricsExporter>>,
    credentials: Credentials,
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
    /// The KPL's default configuration, the default transport and exporter.
    pub(super) fn new() -> Self {
        Self {
            config: Config::default(),
            transport: None,
            exporter: None,
            credentials: Credentials::default(),
        }
    }

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
    /// runtime, which needs timers (and IO, for the default AWS transport).
    ///
    /// The producer lives on that runtime: its driver and the timers of
    /// `UserRecordTimeoutInMillis` run there. [`send`](KinesisProducer::send) works from any
    /// thread, but once that runtime stops (a `current_thread` runtime whose `block_on`
    /// returned, say) no record moves and no timer fires: build on a runtime that outlives the
    /// producer, or use [`BlockingProducer`](crate::BlockingProducer).
    pub fn build(self) -> Result<KinesisProducer, BuildError> {
        self.config.validate()?;
        let credentials = self.credentials;
        let own = (self.transport.is_some(), self.exporter.is_some());
        if let Some((setting, own)) = credentials.unused(own.0, own.1) {
            return Err(BuildError::UnusedSetting { setting, own });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        // Without timers the driver's first deadline would panic and cancel every record with
        // no reason given.
        if !crate::runtime_probe::has_driver(|| drop(tokio::time::sleep(Duration::ZERO))) {
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
