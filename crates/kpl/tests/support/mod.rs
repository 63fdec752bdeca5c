//! The facade's test kit: a producer over the simulated service, made one way. Each test
//! says only what differs: the streams, the configuration, the service's faults, its seed.
#![allow(dead_code, reason = "test support: each test file uses a part")]

use kpl::time::{Clock, SystemClock};
use kpl::{BlockingProducer, Config, KinesisProducer, TokioClock};
use kpl_sim::{Faults, SimKinesis, SimTransport};

/// A producer over a simulated service; by default one stream `s` of two shards.
#[derive(Debug)]
pub(crate) struct SimProducer {
    seed: u64,
    streams: Vec<(String, u32)>,
    faults: Faults,
    config: Config,
}

impl SimProducer {
    /// The service seeded with `seed` (its faults' draws, its sequence numbers).
    pub(crate) fn seeded(seed: u64) -> Self {
        Self {
            seed,
            streams: vec![("s".to_owned(), 2)],
            faults: Faults::default(),
            config: Config::default(),
        }
    }

    /// These streams, with their shard counts, instead of `s`.
    pub(crate) fn streams(mut self, streams: &[(&str, u32)]) -> Self {
        self.streams = streams
            .iter()
            .map(|&(name, shards)| (name.to_owned(), shards))
            .collect();
        self
    }

    /// The producer's configuration.
    pub(crate) fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The service's faults.
    pub(crate) fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The service alone, its streams made at `now` of `clock`.
    pub(crate) fn sim_at(&self, clock: &impl Clock) -> SimKinesis {
        let mut sim = SimKinesis::new(self.seed);
        for (name, shards) in &self.streams {
            sim.create_stream(name, *shards, clock.now());
        }
        sim.set_faults(self.faults);
        sim
    }

    /// The service alone on the system clock, for an HTTP endpoint in front of it.
    pub(crate) fn sim(&self) -> SimKinesis {
        self.sim_at(&SystemClock)
    }

    /// The in-process transport to the service, on tokio's clock.
    pub(crate) fn transport(&self) -> SimTransport {
        SimTransport::new(self.sim_at(&TokioClock), TokioClock)
    }

    /// The producer, and the transport (to read back what the service stored).
    pub(crate) fn build(self) -> (KinesisProducer, SimTransport) {
        let transport = self.transport();
        let producer = KinesisProducer::builder()
            .config(self.config)
            .transport(transport.clone())
            .build()
            .unwrap_or_else(|error| panic!("{error}"));
        (producer, transport)
    }

    /// The blocking producer, and the transport.
    pub(crate) fn build_blocking(self) -> (BlockingProducer, SimTransport) {
        let transport = self.transport();
        let producer = BlockingProducer::builder()
            .config(self.config)
            .transport(transport.clone())
            .build()
            .unwrap_or_else(|error| panic!("{error}"));
        (producer, transport)
    }
}

/// A credentials provider that answers after `delay` (STS behind a proxy, the instance metadata
/// of a busy host) with the key `AKIDSLOW`, or fails with "no role for you"; counts how often
/// it is asked.
#[cfg(feature = "aws")]
#[derive(Debug, Default)]
pub(crate) struct SlowCredentials {
    pub(crate) delay: std::time::Duration,
    pub(crate) fails: bool,
    pub(crate) loads: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[cfg(feature = "aws")]
impl kpl::aws::ProvideCredentials for SlowCredentials {
    fn provide_credentials<'a>(&'a self) -> kpl::aws::CredentialsFuture<'a>
    where
        Self: 'a,
    {
        kpl::aws::CredentialsFuture::new(async move {
            self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.fails {
                return Err(kpl::aws::CredentialsError::provider_error(
                    "no role for you",
                ));
            }
            Ok(kpl::aws::Credentials::new(
                "AKIDSLOW",
                "slow-secret",
                None,
                None,
                "test",
            ))
        })
    }
}
