//! Where the stream lives: the embedded simulated Kinesis (kept in a directory between runs if
//! asked), or a server reached through the AWS SDK. Each command asks the same questions of
//! either: make a producer, list shards, read a shard, create, split or delete a stream.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use std::time::Instant;

use kpl::time::Clock;
use kpl::{Config, KinesisProducer, ShardId, TokioClock, TransportErrorKind};
use kpl_aggregation::{HashKey, HashKeyRange};
use kpl_sim::{ShardInfo, SimKinesis, SimTransport, StoredRecord, StreamSnapshot};
use serde::{Deserialize, Serialize};

use crate::cli::TargetArgs;
use crate::{Failure, Outcome};

/// A record as stored in a shard, whichever the service.
#[derive(Clone, Debug)]
pub(crate) struct StoredEntry {
    pub(crate) sequence_number: String,
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<HashKey>,
    pub(crate) data: Bytes,
    pub(crate) arrived: SystemTime,
}

/// Where a shard's reading starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start {
    TrimHorizon,
    Latest,
    At(SystemTime),
}

/// Where reading a shard stands.
#[derive(Clone, Debug)]
pub(crate) enum Cursor {
    /// The embedded stream: the index of the next stored record.
    Local(usize),
    /// A server: the next shard iterator, `None` once a closed shard is read to its end.
    Remote(Option<String>),
}

/// One read of a shard.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) records: Vec<StoredEntry>,
    /// Nothing more to read now.
    pub(crate) caught_up: bool,
    /// The shard is closed and read to its end: nothing more will come.
    pub(crate) ended: bool,
}

/// The service a command talks to.
pub(crate) enum Target {
    Local(Box<Local>),
    Remote(Box<Remote>),
}

/// The embedded stream.
pub(crate) struct Local {
    transport: SimTransport,
    config: Config,
    state: Option<PathBuf>,
    /// Arrival times of the records read from the state directory, by sequence number (the
    /// simulated service keeps its own clock's instants, which do not outlive the process).
    arrivals: HashMap<String, SystemTime>,
    /// This process's instant and wall time at the same moment, to date new records.
    origin: (Instant, SystemTime),
}

/// A server, through the AWS SDK configured as the producer's transport is.
pub(crate) struct Remote {
    client: aws_sdk_kinesis::Client,
    config: Config,
    /// Where it is, for messages.
    place: String,
}

/// The producer's configuration: a `.properties` file, else the defaults with metrics off (a
/// command-line run should not upload metrics unless its configuration asks).
pub(crate) fn producer_config(
    file: Option<&Path>,
    endpoint: Option<&str>,
    region: Option<&str>,
) -> Result<Config, Failure> {
    let mut config = match file {
        Some(path) => Config::from_kpl_properties_file(path)
            .map_err(|error| Failure::bad_input(format!("{}: {error}", path.display())))?,
        None => {
            let mut config = Config::default();
            config.metrics_level = kpl::MetricsLevel::None;
            config
        }
    };
    if let Some(endpoint) = endpoint {
        config
            .set("KinesisEndpoint", endpoint)
            .map_err(|error| Failure::bad_input(format!("--endpoint: {error}")))?;
    }
    if let Some(region) = region {
        config
            .set("Region", region)
            .map_err(|error| Failure::bad_input(format!("--region: {error}")))?;
    }
    Ok(config)
}

impl Target {
    /// The service `args` name.
    pub(crate) async fn open(args: &TargetArgs) -> Result<Self, Failure> {
        Self::open_with(
            args.local,
            args.local_state.as_deref(),
            args.config.as_deref(),
            args.endpoint.as_deref(),
            args.region.as_deref(),
        )
        .await
    }

    pub(crate) async fn open_with(
        local: bool,
        state: Option<&Path>,
        config: Option<&Path>,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Self, Failure> {
        let config = producer_config(config, endpoint, region)?;
        if local {
            return Local::open(config, state).map(|local| Self::Local(Box::new(local)));
        }
        Remote::open(config)
            .await
            .map(|remote| Self::Remote(Box::new(remote)))
    }

    /// A producer writing to `stream` with the command's configuration; the embedded stream is
    /// created with `shards` if it does not exist, a server's stream must.
    pub(crate) async fn producer(
        &self,
        stream: &str,
        shards: u32,
    ) -> Result<KinesisProducer, Failure> {
        match self {
            Self::Local(local) => {
                local.transport.with_sim(|sim| {
                    if !sim.stream_names().iter().any(|name| name == stream) {
                        sim.create_stream(stream, shards.max(1), TokioClock.now());
                    }
                });
                KinesisProducer::builder()
                    .config(local.config.clone())
                    .transport(local.transport.clone())
                    .build()
                    .map_err(|error| Failure::bad_input(error_chain(&error)))
            }
            Self::Remote(remote) => {
                remote.check(stream).await?;
                KinesisProducer::builder()
                    .config(remote.config.clone())
                    .build()
                    .map_err(|error| Failure::bad_input(error_chain(&error)))
            }
        }
    }

    /// Every shard of `stream`, open or closed, parents before children.
    pub(crate) async fn shards(&self, stream: &str) -> Result<Vec<ShardInfo>, Failure> {
        match self {
            Self::Local(local) => {
                let shards = local.transport.with_sim(|sim| sim.shards(stream));
                if shards.is_empty() {
                    return Err(Failure::unreachable(format!(
                        "stream {stream} not found in the embedded service{}",
                        local.where_kept()
                    )));
                }
                Ok(shards)
            }
            Self::Remote(remote) => remote.shards(stream).await,
        }
    }

    /// Where reading `shard` from `start` begins.
    pub(crate) async fn cursor(
        &self,
        stream: &str,
        shard: &ShardId,
        start: Start,
    ) -> Result<Cursor, Failure> {
        match self {
            Self::Local(local) => Ok(Cursor::Local(local.transport.with_sim(|sim| {
                let stored = sim.stored(stream, shard.as_str());
                match start {
                    Start::TrimHorizon => 0,
                    Start::Latest => stored.len(),
                    Start::At(at) => stored
                        .iter()
                        .position(|record| local.arrived(record) >= at)
                        .unwrap_or(stored.len()),
                }
            }))),
            Self::Remote(remote) => remote.cursor(stream, shard, start).await,
        }
    }

    /// The next records of `shard` from `cursor`, which moves past them.
    pub(crate) async fn read(
        &self,
        stream: &str,
        shard: &ShardInfo,
        cursor: &mut Cursor,
    ) -> Result<Batch, Failure> {
        match (self, cursor) {
            (Self::Local(local), Cursor::Local(next)) => Ok(local.read(stream, shard, next)),
            (Self::Remote(remote), Cursor::Remote(iterator)) => remote.read(stream, iterator).await,
            _ => Err(Failure::bad_input("a cursor of another service")),
        }
    }

    /// Creates `stream` with `shards` shards and waits until it is active.
    pub(crate) async fn create_stream(&self, stream: &str, shards: u32) -> Result<(), Failure> {
        match self {
            Self::Local(local) => {
                let exists = local.transport.with_sim(|sim| {
                    let exists = sim.stream_names().iter().any(|name| name == stream);
                    if !exists {
                        sim.create_stream(stream, shards.max(1), TokioClock.now());
                    }
                    exists
                });
                if exists {
                    return Err(Failure::bad_input(format!(
                        "stream {stream} already exists"
                    )));
                }
                Ok(())
            }
            Self::Remote(remote) => remote.create_stream(stream, shards).await,
        }
    }

    /// Splits open shard `shard` at `at` (its middle if `None`).
    pub(crate) async fn split_shard(
        &self,
        stream: &str,
        shard: &str,
        at: Option<HashKey>,
    ) -> Result<(), Failure> {
        let shards = self.shards(stream).await?;
        let Some(found) = shards.iter().find(|s| s.id.as_str() == shard && s.open) else {
            return Err(Failure::bad_input(format!(
                "stream {stream} has no open shard {shard}"
            )));
        };
        let range = found.range;
        let at = at.unwrap_or_else(|| {
            let (start, end) = (range.start().get(), range.end().get());
            HashKey::new(start + (end - start) / 2 + 1)
        });
        match self {
            Self::Local(local) => local
                .transport
                .with_sim(|sim| sim.split_shard(stream, shard, at))
                .map_err(|error| Failure::bad_input(error.to_string())),
            Self::Remote(remote) => remote.split_shard(stream, shard, at).await,
        }
    }

    /// Deletes `stream` (and waits until it is gone).
    pub(crate) async fn delete_stream(&self, stream: &str) -> Result<(), Failure> {
        match self {
            Self::Local(local) => {
                self.shards(stream).await?;
                local.transport.with_sim(|sim| sim.delete_stream(stream));
                if let Some(directory) = &local.state {
                    let file = state_file(directory, stream);
                    if file.exists() {
                        std::fs::remove_file(&file).map_err(|error| {
                            Failure::bad_input(format!("{}: {error}", file.display()))
                        })?;
                    }
                }
                Ok(())
            }
            Self::Remote(remote) => remote.delete_stream(stream).await,
        }
    }

    /// The embedded stream's user records as a KCL consumer reads them (every shard from the
    /// start), and the aggregates it would drop; `None` for a server.
    pub(crate) fn kcl_read_back(&self, stream: &str) -> Option<(usize, usize)> {
        match self {
            Self::Local(local) => Some(local.transport.with_sim(|sim| {
                let view = sim.kcl_view(stream);
                (view.records.len(), view.dropped.len())
            })),
            Self::Remote(_) => None,
        }
    }

    /// How long to wait between two reads of one shard: a server allows five a second.
    pub(crate) fn read_pause(&self) -> Duration {
        match self {
            Self::Local(_) => Duration::ZERO,
            Self::Remote(_) => Duration::from_millis(200),
        }
    }

    /// Keeps the embedded streams in their directory, if there is one.
    pub(crate) fn save(&self) -> Result<(), Failure> {
        match self {
            Self::Local(local) => local.save(),
            Self::Remote(_) => Ok(()),
        }
    }

    /// Where the stream is, for messages.
    pub(crate) fn place(&self) -> String {
        match self {
            Self::Local(local) => match &local.state {
                Some(directory) => format!("the embedded service kept in {}", directory.display()),
                None => "the embedded service".to_owned(),
            },
            Self::Remote(remote) => remote.place.clone(),
        }
    }
}

impl Local {
    fn open(config: Config, state: Option<&Path>) -> Result<Self, Failure> {
        let origin = (TokioClock.now(), TokioClock.system_time());
        let mut sim = SimKinesis::new(LOCAL_SEED);
        let mut arrivals = HashMap::new();
        if let Some(directory) = state {
            std::fs::create_dir_all(directory)
                .map_err(|error| Failure::bad_input(format!("{}: {error}", directory.display())))?;
            let entries = std::fs::read_dir(directory)
                .map_err(|error| Failure::bad_input(format!("{}: {error}", directory.display())))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.to_string_lossy().ends_with(STATE_SUFFIX))
                .collect();
            files.sort();
            for file in files {
                let kept = KeptStream::read(&file)?;
                let snapshot = kept.into_snapshot(origin.0, &mut arrivals, &file)?;
                sim.restore(snapshot, origin.0)
                    .map_err(|error| Failure::bad_input(format!("{}: {error}", file.display())))?;
            }
        }
        Ok(Self {
            transport: SimTransport::new(sim, TokioClock),
            config,
            state: state.map(Path::to_owned),
            arrivals,
            origin,
        })
    }

    fn where_kept(&self) -> String {
        match &self.state {
            Some(directory) => format!(" kept in {}", directory.display()),
            None => {
                " of this process (use --local-state DIR to keep streams between runs)".to_owned()
            }
        }
    }

    fn arrived(&self, record: &StoredRecord) -> SystemTime {
        self.arrivals
            .get(&record.sequence_number)
            .copied()
            .unwrap_or_else(|| {
                self.origin.1 + record.written_at.saturating_duration_since(self.origin.0)
            })
    }

    fn read(&self, stream: &str, shard: &ShardInfo, next: &mut usize) -> Batch {
        self.transport.with_sim(|sim| {
            let stored = sim.stored(stream, shard.id.as_str());
            let records: Vec<StoredEntry> = stored
                .get(*next..)
                .unwrap_or_default()
                .iter()
                .map(|record| StoredEntry {
                    sequence_number: record.sequence_number.clone(),
                    partition_key: record.partition_key.clone(),
                    explicit_hash_key: record.explicit_hash_key,
                    data: record.data.clone(),
                    arrived: self.arrived(record),
                })
                .collect();
            *next = stored.len();
            let open = sim
                .shards(stream)
                .iter()
                .any(|s| s.id == shard.id && s.open);
            Batch {
                records,
                caught_up: true,
                ended: !open,
            }
        })
    }

    fn save(&self) -> Result<(), Failure> {
        let Some(directory) = &self.state else {
            return Ok(());
        };
        let snapshots: Vec<StreamSnapshot> = self.transport.with_sim(|sim| {
            sim.stream_names()
                .iter()
                .filter_map(|name| sim.snapshot(name))
                .collect()
        });
        for snapshot in snapshots {
            let file = state_file(directory, &snapshot.name);
            let kept = KeptStream::from_snapshot(snapshot, |record| self.arrived(record));
            kept.write(&file)?;
        }
        Ok(())
    }
}

/// The embedded service's seed: its answers are the same from run to run.
const LOCAL_SEED: u64 = 42;

/// How often, and how many times, a stream's status is asked while waiting for it to change.
const STATUS_POLL: Duration = Duration::from_millis(100);
const STATUS_POLLS: u32 = 600;

/// How a kept stream's file is named.
const STATE_SUFFIX: &str = ".stream.json";

fn state_file(directory: &Path, stream: &str) -> PathBuf {
    directory.join(format!("{stream}{STATE_SUFFIX}"))
}

/// A stream as kept in its file.
#[derive(Serialize, Deserialize)]
struct KeptStream {
    name: String,
    max_record_size: usize,
    shards: Vec<KeptShard>,
}

#[derive(Serialize, Deserialize)]
struct KeptShard {
    id: String,
    starting_hash_key: String,
    ending_hash_key: String,
    open: bool,
    parents: Vec<String>,
    records: Vec<KeptRecord>,
}

#[derive(Serialize, Deserialize)]
struct KeptRecord {
    sequence_number: String,
    partition_key: String,
    explicit_hash_key: Option<String>,
    /// Base64.
    data: String,
    /// Milliseconds since the epoch.
    arrived: u64,
}

impl KeptStream {
    fn read(file: &Path) -> Result<Self, Failure> {
        let text = std::fs::read(file)
            .map_err(|error| Failure::bad_input(format!("{}: {error}", file.display())))?;
        serde_json::from_slice(&text)
            .map_err(|error| Failure::bad_input(format!("{}: {error}", file.display())))
    }

    fn write(&self, file: &Path) -> Result<(), Failure> {
        let failed = |error: &dyn std::fmt::Display| {
            Failure::bad_input(format!("{}: {error}", file.display()))
        };
        let text = serde_json::to_vec(self).map_err(|error| failed(&error))?;
        // Written beside and renamed, so an interrupted run leaves the old file whole.
        let partial = file.with_extension("json.partial");
        std::fs::write(&partial, text).map_err(|error| failed(&error))?;
        std::fs::rename(&partial, file).map_err(|error| failed(&error))
    }

    fn from_snapshot(
        snapshot: StreamSnapshot,
        arrived: impl Fn(&StoredRecord) -> SystemTime,
    ) -> Self {
        let shards = snapshot
            .shards
            .into_iter()
            .map(|(info, records)| KeptShard {
                id: info.id.as_str().to_owned(),
                starting_hash_key: info.range.start().get().to_string(),
                ending_hash_key: info.range.end().get().to_string(),
                open: info.open,
                parents: info
                    .parents
                    .iter()
                    .map(|parent| parent.as_str().to_owned())
                    .collect(),
                records: records
                    .iter()
                    .map(|record| KeptRecord {
                        sequence_number: record.sequence_number.clone(),
                        partition_key: record.partition_key.clone(),
                        explicit_hash_key: record
                            .explicit_hash_key
                            .map(|key| key.get().to_string()),
                        data: base64_simd::STANDARD.encode_to_string(&record.data),
                        arrived: millis(arrived(record)),
                    })
                    .collect(),
            })
            .collect();
        Self {
            name: snapshot.name,
            max_record_size: snapshot.max_record_size,
            shards,
        }
    }

    fn into_snapshot(
        self,
        now: Instant,
        arrivals: &mut HashMap<String, SystemTime>,
        file: &Path,
    ) -> Result<StreamSnapshot, Failure> {
        let bad = |what: String| Failure::bad_input(format!("{}: {what}", file.display()));
        let hash_key = |text: &str| {
            HashKey::parse_decimal(text).map_err(|error| bad(format!("hash key {text:?}: {error}")))
        };
        let mut shards = Vec::with_capacity(self.shards.len());
        for shard in self.shards {
            let range = HashKeyRange::new(
                hash_key(&shard.starting_hash_key)?,
                hash_key(&shard.ending_hash_key)?,
            )
            .map_err(|error| bad(error.to_string()))?;
            let mut records = Vec::with_capacity(shard.records.len());
            for record in shard.records {
                let data = base64_simd::STANDARD
                    .decode_to_vec(&record.data)
                    .map_err(|error| bad(format!("record {}: {error}", record.sequence_number)))?;
                let explicit_hash_key = record
                    .explicit_hash_key
                    .as_deref()
                    .map(hash_key)
                    .transpose()?;
                arrivals.insert(
                    record.sequence_number.clone(),
                    UNIX_EPOCH + Duration::from_millis(record.arrived),
                );
                records.push(StoredRecord {
                    sequence_number: record.sequence_number,
                    partition_key: record.partition_key,
                    explicit_hash_key,
                    data: Bytes::from(data),
                    written_at: now,
                });
            }
            shards.push((
                ShardInfo {
                    id: ShardId::new(shard.id),
                    range,
                    open: shard.open,
                    parents: shard.parents.into_iter().map(ShardId::new).collect(),
                },
                records,
            ));
        }
        Ok(StreamSnapshot {
            name: self.name,
            max_record_size: self.max_record_size,
            shards,
        })
    }
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl Remote {
    async fn open(config: Config) -> Result<Self, Failure> {
        let transport = kpl::aws::transport(&config).map_err(|error| match error {
            kpl::BuildError::NoRegion => Failure::bad_input(format!("{error} (or pass --region)")),
            error => Failure::bad_input(error_chain(&error)),
        })?;
        let mut config = config;
        if let (true, Some(region)) = (config.region.is_empty(), transport.region()) {
            // The producer built later takes the region found now, not the chain again.
            config.region = region.to_owned();
        }
        // Printed in messages: never a password written into the endpoint.
        let endpoint = kpl::transport::redact_userinfo(&config.kinesis_endpoint);
        let place = match (&transport.region(), endpoint.as_str()) {
            (Some(region), "") => format!("region {region}"),
            (Some(region), endpoint) => format!("{endpoint} (region {region})"),
            (None, endpoint) => endpoint.to_owned(),
        };
        let sdk = transport.sdk_config().await;
        // The producer's calls are retried by its engine; these by the SDK.
        let client_config = aws_sdk_kinesis::config::Builder::from(&sdk)
            .retry_config(aws_config::retry::RetryConfig::standard())
            .build();
        Ok(Self {
            client: aws_sdk_kinesis::Client::from_conf(client_config),
            config,
            place,
        })
    }

    /// Fails with what is wrong when `stream` cannot be written: it does not exist, the
    /// credentials are refused, or the endpoint does not answer.
    async fn check(&self, stream: &str) -> Result<(), Failure> {
        self.client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map(drop)
            .map_err(|error| self.failure(stream, &error))
    }

    /// A call's error as the user should read it.
    fn failure<E, R>(&self, stream: &str, error: &SdkError<E, R>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let place = &self.place;
        match error {
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("an error");
                let message = service.err().message().unwrap_or_default();
                // The transport's classification of the code, not a table of the CLI's own.
                let (outcome, what) = match TransportErrorKind::from_code(code) {
                    TransportErrorKind::NotFound => (
                        Outcome::Unreachable,
                        format!("stream {stream} not found at {place}"),
                    ),
                    TransportErrorKind::ExpiredCredentials => (
                        Outcome::Unreachable,
                        format!(
                            "the credentials were refused at {place} ({code}): check the AWS \
                             keys, profile or role"
                        ),
                    ),
                    TransportErrorKind::AccessDenied => (
                        Outcome::Unreachable,
                        format!(
                            "not allowed at {place} ({code}): the credentials lack a permission \
                             (docs/aws.md lists those the producer needs)"
                        ),
                    ),
                    TransportErrorKind::InUse => (
                        Outcome::BadInput,
                        format!("stream {stream} is in use at {place}: it exists, or is changing"),
                    ),
                    TransportErrorKind::Validation => (
                        Outcome::BadInput,
                        format!("{place} refused the call ({code})"),
                    ),
                    _ => (Outcome::Failed, format!("{place} answered {code}")),
                };
                let message = if message.is_empty() {
                    what
                } else {
                    format!("{what}: {message}")
                };
                Failure { outcome, message }
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Failure::unreachable(
                format!("{place} is unreachable: {}", DisplayErrorContext(error)),
            ),
            _ => Failure::unreachable(format!(
                "calling {place} failed: {}",
                DisplayErrorContext(error)
            )),
        }
    }

    async fn shards(&self, stream: &str) -> Result<Vec<ShardInfo>, Failure> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = match &token {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(stream),
            };
            let page = request
                .send()
                .await
                .map_err(|error| self.failure(stream, &error))?;
            for shard in page.shards() {
                let range = shard.hash_key_range();
                let parse =
                    |text: Option<&str>| text.and_then(|text| HashKey::parse_decimal(text).ok());
                let (Some(start), Some(end)) = (
                    parse(range.map(|r| r.starting_hash_key())),
                    parse(range.map(|r| r.ending_hash_key())),
                ) else {
                    continue;
                };
                let Ok(range) = HashKeyRange::new(start, end) else {
                    continue;
                };
                let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(|id| ShardId::new(id.to_owned()))
                    .collect();
                shards.push(ShardInfo {
                    id: ShardId::new(shard.shard_id().to_owned()),
                    range,
                    open: shard
                        .sequence_number_range()
                        .is_none_or(|r| r.ending_sequence_number().is_none()),
                    parents,
                });
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(shards)
    }

    async fn cursor(&self, stream: &str, shard: &ShardId, start: Start) -> Result<Cursor, Failure> {
        let mut request = self
            .client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.as_str());
        request = match start {
            Start::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Start::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Start::At(at) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from(at)),
        };
        let answer = request
            .send()
            .await
            .map_err(|error| self.failure(stream, &error))?;
        Ok(Cursor::Remote(answer.shard_iterator().map(str::to_owned)))
    }

    async fn read(&self, stream: &str, iterator: &mut Option<String>) -> Result<Batch, Failure> {
        let Some(current) = iterator.clone() else {
            return Ok(Batch {
                caught_up: true,
                ended: true,
                ..Batch::default()
            });
        };
        let answer = self
            .client
            .get_records()
            .shard_iterator(current)
            .limit(10_000)
            .send()
            .await
            .map_err(|error| self.failure(stream, &error))?;
        let records: Vec<StoredEntry> = answer
            .records()
            .iter()
            .map(|record| StoredEntry {
                sequence_number: record.sequence_number().to_owned(),
                partition_key: record.partition_key().to_owned(),
                explicit_hash_key: None,
                data: Bytes::copy_from_slice(record.data().as_ref()),
                arrived: record
                    .approximate_arrival_timestamp()
                    .and_then(|at| SystemTime::try_from(*at).ok())
                    .unwrap_or(UNIX_EPOCH),
            })
            .collect();
        *iterator = answer.next_shard_iterator().map(str::to_owned);
        // An empty page is not the end while the shard is behind: reads from the trim horizon
        // step through stretches without records.
        let caught_up = match answer.millis_behind_latest() {
            Some(behind) => behind == 0,
            None => records.is_empty(),
        };
        Ok(Batch {
            caught_up,
            ended: iterator.is_none(),
            records,
        })
    }

    async fn create_stream(&self, stream: &str, shards: u32) -> Result<(), Failure> {
        self.client
            .create_stream()
            .stream_name(stream)
            .shard_count(shards.max(1) as i32)
            .send()
            .await
            .map_err(|error| self.failure(stream, &error))?;
        self.wait_until(stream, false).await
    }

    /// Waits (a minute at most) until `stream` is active, or with `gone` until it no longer
    /// exists.
    async fn wait_until(&self, stream: &str, gone: bool) -> Result<(), Failure> {
        for _ in 0..STATUS_POLLS {
            let described = self
                .client
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await;
            let reached = match described {
                Ok(summary) => {
                    !gone
                        && summary.stream_description_summary().is_some_and(|s| {
                            s.stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active
                        })
                }
                Err(error)
                    if gone
                        && error
                            .as_service_error()
                            .is_some_and(|service| service.is_resource_not_found_exception()) =>
                {
                    true
                }
                Err(error) => return Err(self.failure(stream, &error)),
            };
            if reached {
                return Ok(());
            }
            tokio::time::sleep(STATUS_POLL).await;
        }
        Err(Failure::unreachable(format!(
            "stream {stream} was not {} at {} within a minute",
            if gone { "gone" } else { "active" },
            self.place
        )))
    }

    async fn split_shard(&self, stream: &str, shard: &str, at: HashKey) -> Result<(), Failure> {
        self.client
            .split_shard()
            .stream_name(stream)
            .shard_to_split(shard)
            .new_starting_hash_key(at.get().to_string())
            .send()
            .await
            .map_err(|error| self.failure(stream, &error))?;
        self.wait_until(stream, false).await
    }

    /// Deletes `stream` and waits until it is gone.
    async fn delete_stream(&self, stream: &str) -> Result<(), Failure> {
        self.client
            .delete_stream()
            .stream_name(stream)
            .send()
            .await
            .map_err(|error| self.failure(stream, &error))?;
        self.wait_until(stream, true).await
    }
}

/// An error and its sources, one after the other.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
