//! The producer's metrics. The engine keeps the KPL's fifteen metrics as per-interval statistic
//! sets ([`kpl_engine::metrics`]); a task of the producer takes them every second (and samples
//! `UserRecordsPending` every 200 ms, as the KPL does), then:
//!
//! - keeps the last [`WINDOW_SECONDS`] seconds for [`KinesisProducer::metrics`](crate::KinesisProducer::metrics),
//!   the KPL's `getMetrics`;
//! - every `MetricsUploadDelay`, hands the interval to a [`MetricsExporter`] (CloudWatch, with
//!   the `cloudwatch` feature), in a task of its own: an upload never holds the producer up,
//!   and a failed one is counted ([`MetricsExports`]) and logged, not queued;
//! - sends them to the [`metrics`] facade, to whatever recorder the application installed
//!   (Prometheus, StatsD, OpenTelemetry…), filtered by `MetricsLevel` and split no finer than
//!   `MetricsGranularity`, with the additional dimensions. The library never installs a
//!   recorder itself.
//!
//! `docs/metrics.md` lists every metric and how each backend sees it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use kpl_engine::metrics::{
    ExportError, ExportReport, Granularity, Level, Metric, MetricDatum, MetricsExporter,
    MetricsUpload, Series,
};
use kpl_engine::stats::{MAX_ERROR_CODES, OTHER_ERROR_CODES};
use kpl_engine::{ShardId, Stream, Summary};

/// Which dimension levels metrics are reported at (`MetricsGranularity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricsGranularity {
    /// Only totals over all streams.
    Global,
    /// Per stream, and totals.
    Stream,
    /// Per shard, per stream, and totals.
    #[default]
    Shard,
}

/// Which metrics are reported (`MetricsLevel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricsLevel {
    /// None.
    None,
    /// The KPL's summary set.
    Summary,
    /// All of them.
    #[default]
    Detailed,
}

/// How far back [`KinesisProducer::metrics`](crate::KinesisProducer::metrics) can look, in
/// seconds (the KPL's limit).
pub const WINDOW_SECONDS: usize = 60;
/// How often the producer samples `UserRecordsPending` (the KPL's period).
pub(crate) const PENDING_SAMPLE_PERIOD: Duration = Duration::from_millis(200);
/// Samples of `UserRecordsPending` per second: the metrics are taken every this many samples.
pub(crate) const SAMPLES_PER_SECOND: u32 = 5;

/// A dimension added to every series at and finer than `granularity`, after the producer's
/// own (the KPL's `addAdditionalMetricsDimension`): `Global` puts it on every series, `Stream`
/// on the per-stream and per-shard ones, `Shard` on the per-shard ones only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsDimension {
    /// The dimension's name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// The coarsest series it is added to.
    pub granularity: MetricsGranularity,
}

/// The statistics of one metric at one place over a window: every stream and shard
/// (`stream` and `shard` `None`), one stream, or one shard of it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MetricReading {
    /// The metric.
    pub metric: Metric,
    /// `StreamName`; `None` for the total over every stream.
    pub stream: Option<Stream>,
    /// `ShardId`; `None` for a stream's (or the global) total.
    pub shard: Option<ShardId>,
    /// `ErrorCode`, for `ErrorsByCode`.
    pub error_code: Option<Arc<str>>,
    /// Sample count, sum, minimum and maximum.
    pub stat: Summary,
}

/// Where a series is reported: the metric and its dimensions.
pub(crate) type ReadingKey = (Metric, Option<Stream>, Option<ShardId>, Option<Arc<str>>);

pub(crate) fn granularity(configured: MetricsGranularity) -> Granularity {
    match configured {
        MetricsGranularity::Global => Granularity::Global,
        MetricsGranularity::Stream => Granularity::Stream,
        _ => Granularity::Shard,
    }
}

/// Whether `level` reports `metric`.
pub(crate) fn reports(level: MetricsLevel, metric: Metric) -> bool {
    match level {
        MetricsLevel::None => false,
        MetricsLevel::Summary => metric.level() == Level::Summary,
        _ => true,
    }
}

/// The place a series is reported at when split no finer than `granularity`.
fn coarsened(series: &Series, granularity: Granularity) -> ReadingKey {
    let stream = (granularity >= Granularity::Stream).then(|| series.stream.clone());
    let shard = if granularity == Granularity::Shard {
        series.shard.clone()
    } else {
        None
    };
    (series.metric, stream, shard, series.error_code.clone())
}

/// Adds `series` at its place and at every coarser one up to the global total (the KPL's
/// tree: a value put at a shard counts for its stream and for the whole), stopping at
/// `granularity`.
pub(crate) fn roll_up_tree<'a>(
    series: impl IntoIterator<Item = &'a Series>,
    granularity: Granularity,
    into: &mut BTreeMap<ReadingKey, Summary>,
) {
    for series in series {
        let levels = [Granularity::Global, Granularity::Stream, Granularity::Shard];
        for level in levels.into_iter().filter(|&level| level <= granularity) {
            if level == Granularity::Shard && series.shard.is_none() {
                continue;
            }
            into.entry(coarsened(series, level))
                .or_default()
                .merge(&series.stat);
        }
    }
}

/// Adds `series` at one place each: its own, or the coarsest of it and `granularity`. Summing
/// the places of a metric gives its total, with nothing counted twice.
pub(crate) fn roll_up_finest<'a>(
    series: impl IntoIterator<Item = &'a Series>,
    granularity: Granularity,
    into: &mut BTreeMap<ReadingKey, Summary>,
) {
    for series in series {
        into.entry(coarsened(series, granularity))
            .or_default()
            .merge(&series.stat);
    }
}

/// The dimensions of a reading, in the KPL's order: `ErrorCode`, `StreamName`, `ShardId`, with
/// each additional dimension after the producer's of its granularity.
pub(crate) fn dimensions(
    key: &ReadingKey,
    additional: &[MetricsDimension],
) -> Vec<(String, String)> {
    let (_, stream, shard, code) = key;
    let extra = |level: MetricsGranularity| {
        additional
            .iter()
            .filter(move |d| d.granularity == level)
            .map(|d| (d.name.clone(), d.value.clone()))
    };
    let mut dimensions: Vec<(String, String)> = extra(MetricsGranularity::Global).collect();
    if let Some(code) = code {
        dimensions.push(("ErrorCode".to_owned(), code.to_string()));
    }
    if let Some(stream) = stream {
        dimensions.push(("StreamName".to_owned(), stream.name().to_owned()));
        dimensions.extend(extra(MetricsGranularity::Stream));
    }
    if let Some(shard) = shard {
        dimensions.push(("ShardId".to_owned(), shard.as_str().to_owned()));
        dimensions.extend(extra(MetricsGranularity::Shard));
    }
    // Blank values are dropped (the KPL's fix of its #594): CloudWatch refuses them.
    dimensions.retain(|(_, value)| !value.is_empty());
    dimensions
}

/// How the uploads to the exporter went, since the producer started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsExports {
    /// Uploads that went through.
    pub uploads: u64,
    /// Uploads that failed (after the exporter's own retries).
    pub failed_uploads: u64,
    /// Statistic sets delivered.
    pub datums: u64,
    /// Statistic sets lost with failed uploads.
    pub lost_datums: u64,
    /// Statistic sets left out because a metrics service cannot take them.
    pub skipped_datums: u64,
}

/// The exporter and what waits for it.
struct Uploads {
    exporter: Arc<dyn MetricsExporter>,
    namespace: String,
    every: u32,
    /// Seconds since the last upload.
    seconds: u32,
    /// The interval's statistics, at every place up to the granularity, filtered by level.
    pending: BTreeMap<ReadingKey, Summary>,
    in_flight: Arc<AtomicBool>,
    outcomes: Arc<Mutex<MetricsExports>>,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("namespace", &self.namespace)
            .field("every", &self.every)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// An upload ready to go, and where its outcome is counted.
pub(crate) struct DueUpload {
    exporter: Arc<dyn MetricsExporter>,
    upload: MetricsUpload,
    in_flight: Arc<AtomicBool>,
    outcomes: Arc<Mutex<MetricsExports>>,
}

/// Clears the in-flight flag however the upload ends (done, timed out, panicked, cancelled).
struct InFlight(Arc<AtomicBool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl DueUpload {
    /// Sends the upload, giving up after `timeout`, and counts (and logs) how it went.
    pub(crate) async fn send(self, timeout: Duration) {
        let _in_flight = InFlight(self.in_flight);
        let datums = self.upload.data.len();
        let result = match tokio::time::timeout(timeout, self.exporter.export(self.upload)).await {
            Ok(result) => result,
            Err(_) => Err(ExportError::new(
                format!("the upload took longer than {} ms", timeout.as_millis()),
                datums,
                None,
            )),
        };
        record_export(&self.outcomes, &result);
    }
}

fn record_export(outcomes: &Mutex<MetricsExports>, result: &Result<ExportReport, ExportError>) {
    {
        let mut outcomes = outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(report) => {
                outcomes.uploads += 1;
                outcomes.datums += report.datums as u64;
                outcomes.skipped_datums += report.skipped as u64;
            }
            Err(error) => {
                outcomes.failed_uploads += 1;
                outcomes.lost_datums += error.lost as u64;
            }
        }
    }
    // Logged with the lock let go: a subscriber may ask for `metrics_exports`.
    if let Err(error) = result {
        tracing::warn!(%error, "metrics upload failed; its statistics are dropped");
    }
}

/// What the producer keeps of its metrics, and where it sends them.
#[derive(Debug)]
pub(crate) struct MetricsHub {
    level: MetricsLevel,
    granularity: Granularity,
    additional: Vec<MetricsDimension>,
    /// The engine's series of each of the last seconds, newest last.
    window: VecDeque<Vec<Series>>,
    uploads: Option<Uploads>,
    /// Every error code reported so far, at most `MAX_ERROR_CODES` over the producer's life:
    /// each becomes a label value, and recorders keep every label set they see.
    codes: BTreeSet<Arc<str>>,
}

impl MetricsHub {
    pub(crate) fn new(
        level: MetricsLevel,
        configured: MetricsGranularity,
        additional: Vec<MetricsDimension>,
    ) -> Self {
        if level != MetricsLevel::None {
            describe();
        }
        Self {
            level,
            granularity: granularity(configured),
            additional,
            window: VecDeque::with_capacity(WINDOW_SECONDS),
            uploads: None,
            codes: BTreeSet::new(),
        }
    }

    /// Uploads every `every` (whole seconds, at least one) to `exporter`, in `namespace`.
    pub(crate) fn export_to(
        &mut self,
        exporter: Arc<dyn MetricsExporter>,
        namespace: String,
        every: Duration,
    ) {
        if self.level == MetricsLevel::None {
            return;
        }
        let every = u32::try_from(every.as_secs()).unwrap_or(u32::MAX).max(1);
        self.uploads = Some(Uploads {
            exporter,
            namespace,
            every,
            seconds: 0,
            pending: BTreeMap::new(),
            in_flight: Arc::new(AtomicBool::new(false)),
            outcomes: Arc::new(Mutex::new(MetricsExports::default())),
        });
    }

    /// How the uploads went; `None` without an exporter.
    pub(crate) fn exports(&self) -> Option<MetricsExports> {
        let uploads = self.uploads.as_ref()?;
        Some(
            *uploads
                .outcomes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The upload due after this second, if one is: every `MetricsUploadDelay`, or now when
    /// `last` (the producer is finishing, and the last upload goes even beside one under way).
    /// Otherwise an interval whose predecessor is still being uploaded waits and grows, so
    /// uploads never pile up.
    pub(crate) fn due_upload(&mut self, at: SystemTime, last: bool) -> Option<DueUpload> {
        let uploads = self.uploads.as_mut()?;
        uploads.seconds = uploads.seconds.saturating_add(1);
        let due = last || uploads.seconds >= uploads.every;
        let waits = !last && uploads.in_flight.load(Ordering::Acquire);
        if !due || uploads.pending.is_empty() || waits {
            return None;
        }
        uploads.seconds = 0;
        let data = std::mem::take(&mut uploads.pending)
            .into_iter()
            .map(|(key, stat)| MetricDatum::new(key.0, dimensions(&key, &self.additional), stat))
            .collect();
        uploads.in_flight.store(true, Ordering::Release);
        Some(DueUpload {
            exporter: Arc::clone(&uploads.exporter),
            upload: MetricsUpload::new(uploads.namespace.clone(), at, data),
            in_flight: Arc::clone(&uploads.in_flight),
            outcomes: Arc::clone(&uploads.outcomes),
        })
    }

    /// Takes one second's series: keeps them for the window, and returns what to report to the
    /// `metrics` recorder, for the caller to [`emit`](Emissions::emit) once it holds no lock (a
    /// recorder may call back into the producer).
    #[must_use = "the second's metrics reach the recorder only when emitted"]
    pub(crate) fn add_second(&mut self, mut series: Vec<Series>) -> Emissions {
        for series in &mut series {
            if let Some(code) = &mut series.error_code {
                self.bound_code(code);
            }
        }
        let emissions = self.emissions(&series);
        if let Some(uploads) = self.uploads.as_mut() {
            let reported = series.iter().filter(|s| reports(self.level, s.metric));
            roll_up_tree(reported, self.granularity, &mut uploads.pending);
        }
        if self.window.len() == WINDOW_SECONDS {
            self.window.pop_front();
        }
        self.window.push_back(series);
        emissions
    }

    /// Keeps `code` if it was seen before or there is room for one more over the producer's
    /// life; otherwise it becomes `OtherErrorCodes`, as the engine counts codes past its bound.
    fn bound_code(&mut self, code: &mut Arc<str>) {
        if self.codes.contains(code) {
            return;
        }
        if self.codes.len() + 1 < MAX_ERROR_CODES {
            self.codes.insert(Arc::clone(code));
        } else {
            *code = Arc::from(OTHER_ERROR_CODES);
        }
    }

    /// The statistics of the last `window` (whole seconds, at most [`WINDOW_SECONDS`]), at
    /// every place: per shard, per stream, and over every stream. `metric` picks one metric.
    pub(crate) fn readings(&self, metric: Option<Metric>, window: Duration) -> Vec<MetricReading> {
        let seconds = usize::try_from(window.as_secs())
            .unwrap_or(usize::MAX)
            .clamp(1, WINDOW_SECONDS);
        let recent = self.window.iter().rev().take(seconds).flatten();
        let mut totals = BTreeMap::new();
        let picked = recent.filter(|s| metric.is_none_or(|metric| s.metric == metric));
        roll_up_tree(picked, Granularity::Shard, &mut totals);
        totals
            .into_iter()
            .map(
                |((metric, stream, shard, error_code), stat)| MetricReading {
                    metric,
                    stream,
                    shard,
                    error_code,
                    stat,
                },
            )
            .collect()
    }

    /// A second's series as the `metrics` facade's recorder takes them: counters of the sample
    /// sum and count and gauges of the minimum and maximum (see `docs/metrics.md`).
    fn emissions(&self, series: &[Series]) -> Emissions {
        if self.level == MetricsLevel::None {
            return Emissions(Vec::new());
        }
        let mut places = BTreeMap::new();
        let reported = series.iter().filter(|s| reports(self.level, s.metric));
        roll_up_finest(reported, self.granularity, &mut places);
        let emissions = places
            .into_iter()
            .map(|(key, stat)| {
                let labels: Vec<metrics::Label> = dimensions(&key, &self.additional)
                    .into_iter()
                    .map(|(name, value)| metrics::Label::new(name, value))
                    .collect();
                (&NAMES[key.0.index()], labels, stat)
            })
            .collect();
        Emissions(emissions)
    }
}

/// One second's metrics for the `metrics` facade's recorder, prepared under the hub's lock and
/// emitted after it.
pub(crate) struct Emissions(Vec<(&'static FacadeNames, Vec<metrics::Label>, Summary)>);

impl Emissions {
    /// Hands them to the recorder. Call it holding no lock of the producer's.
    pub(crate) fn emit(self) {
        for (names, labels, stat) in self.0 {
            metrics::counter!(names.sum, labels.clone()).increment(stat.sum.round() as u64);
            metrics::counter!(names.count, labels.clone()).increment(stat.count);
            metrics::gauge!(names.min, labels.clone()).set(stat.min);
            metrics::gauge!(names.max, labels).set(stat.max);
        }
    }
}

/// The names one metric is reported under in the `metrics` facade.
struct FacadeNames {
    sum: &'static str,
    count: &'static str,
    min: &'static str,
    max: &'static str,
}

macro_rules! facade_names {
    ($($name:literal),* $(,)?) => {
        [$(FacadeNames {
            sum: concat!($name, "_sum"),
            count: concat!($name, "_count"),
            min: concat!($name, "_min"),
            max: concat!($name, "_max"),
        }),*]
    };
}

/// In the order of [`Metric::ALL`] (a test holds them to it).
static NAMES: [FacadeNames; Metric::ALL.len()] = facade_names!(
    "UserRecordsReceived",
    "UserRecordsPending",
    "UserRecordsPut",
    "UserRecordsDataPut",
    "UserRecordExpired",
    "KinesisRecordsPut",
    "KinesisRecordsDataPut",
    "ErrorsByCode",
    "AllErrors",
    "RetriesPerRecord",
    "BufferingTime",
    "RequestTime",
    "UserRecordsPerKinesisRecord",
    "KinesisRecordsPerPutRecordsRequest",
    "UserRecordsPerPutRecordsRequest",
);

/// Describes every metric to the installed recorder: its unit and what a sample is.
fn describe() {
    for metric in Metric::ALL {
        let names = &NAMES[metric.index()];
        let unit = match metric.unit() {
            kpl_engine::metrics::Unit::Bytes => metrics::Unit::Bytes,
            kpl_engine::metrics::Unit::Milliseconds => metrics::Unit::Milliseconds,
            _ => metrics::Unit::Count,
        };
        metrics::describe_counter!(names.sum, unit, metric.description());
        metrics::describe_counter!(names.count, metrics::Unit::Count, "samples");
        metrics::describe_gauge!(names.min, unit, "the smallest sample of the last second");
        metrics::describe_gauge!(names.max, unit, "the largest sample of the last second");
    }
}

/// `docs/metrics.md`, generated from the metrics' definitions (`tests/docs_in_sync.rs` keeps
/// the file in step).
pub(crate) fn reference_markdown() -> String {
    use std::fmt::Write as _;

    let mut out = String::from(
        "# Metrics\n\n\
         Generated from `kpl_engine::metrics` and `crates/kpl/src/metrics.rs`; \
         `cargo test -p kpl --test docs_in_sync` fails when this file is out of date, and \
         `KPL_BLESS=1` rewrites it.\n\n\
         The producer keeps the KPL's metrics, with the KPL's names, units, levels and dimensions. \
         Each is a distribution: every observation is one sample, and for each interval the \
         producer keeps the sample count, sum, minimum and maximum (a CloudWatch statistic set). \
         A count metric's samples are 1s and 0s where the KPL's are: `UserRecordsPut` takes 1 per \
         record written and 0 per record failed, so its sum is the records written and its mean the \
         success rate.\n\n\
         | metric | unit | level | finest dimensions | one sample |\n| --- | --- | --- | --- | --- |\n",
    );
    for metric in Metric::ALL {
        let mut dimensions = String::new();
        if metric.by_error_code() {
            dimensions.push_str("ErrorCode, ");
        }
        dimensions.push_str("StreamName");
        if metric.finest() == Granularity::Shard {
            dimensions.push_str(", ShardId");
        }
        let level = match metric.level() {
            Level::Summary => "Summary",
            Level::Detailed => "Detailed",
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {level} | {dimensions} | {} |",
            metric.name(),
            metric.unit().as_str(),
            metric.description()
        );
    }
    out.push_str(
        "\n## Levels, granularity and dimensions\n\n\
         - `MetricsLevel`: `none` reports nothing, `summary` the metrics marked Summary, `detailed` \
         (the default) all of them.\n\
         - `MetricsGranularity`: `global` reports each metric over every stream, `stream` also per \
         stream, `shard` (the default) also per shard. A sample taken at a shard counts for its \
         stream and for the whole. Above some hundreds of shards, `stream` keeps the number of \
         series (and the CloudWatch bill) down, as the KPL's documentation advises.\n\
         - Samples without a shard (a whole `PutRecords` call that failed, a record sent without \
         a shard prediction) are reported at the stream.\n\
         - `Config::add_metrics_dimension(name, value, granularity)` (the KPL's \
         `addAdditionalMetricsDimension`) adds a dimension to every series at and finer than its \
         granularity. Dimensions come in the KPL's order: the global additional ones, \
         `ErrorCode`, `StreamName`, the stream-level additional ones, `ShardId`, the shard-level \
         additional ones. Blank values are left out.\n\n\
         ## Where the metrics go\n\n\
         Every 200 ms the producer samples `UserRecordsPending`; every second it takes the \
         interval's statistics from the engine and\n\n\
         1. keeps them for `KinesisProducer::metrics(metric, window)` (the KPL's `getMetrics`): \
         per shard, per stream and over every stream, over the last `window` seconds (at most \
         60), whatever `MetricsLevel` says;\n\
         2. hands them to the `metrics` crate's recorder, if the application installed one \
         (`metrics-exporter-prometheus`, StatsD, OpenTelemetry…; the library never installs one), \
         filtered by `MetricsLevel` and split no finer than `MetricsGranularity`, each series once \
         (summing a metric's series gives its total). Each metric `M` becomes four series with \
         the dimensions as labels:\n\n\
         | name | kind | value |\n| --- | --- | --- |\n\
         | `M_sum` | counter | the sum of the samples (rounded to a whole number) |\n\
         | `M_count` | counter | the number of samples |\n\
         | `M_min` | gauge | the smallest sample of the last second with samples |\n\
         | `M_max` | gauge | the largest sample of the last second with samples |\n\n\
         So with Prometheus, `rate(UserRecordsPut_sum[1m])` is records written per second, and \
         `rate(BufferingTime_sum[1m]) / rate(BufferingTime_count[1m])` the mean buffering time. \
         `crates/kpl/examples/prometheus.rs` prints the scrape text after producing to the \
         embedded simulated stream;\n\
         3. every `MetricsUploadDelay` (60 s by default), hands the interval's statistics to the \
         producer's exporter: at every place up to `MetricsGranularity` (a shard's samples \
         count for the shard, its stream and the whole, as in the KPL), filtered by \
         `MetricsLevel`, in `MetricsNamespace`. The upload runs in a task of its own; while one \
         is under way the next interval waits and grows instead of queuing, a failed one is \
         logged and counted (`KinesisProducer::metrics_exports`) and its statistics dropped \
         (sending them again would count them twice), and `shutdown` sends the last interval in \
         a task bounded by `RequestTimeout` or 5 s, and waits for it at most 250 ms beyond the \
         records' outcomes (a CloudWatch out of reach does not hold the application up; the \
         upload goes on while the runtime runs). A producer with `KinesisEndpoint` set and \
         `CloudwatchEndpoint` not warns at build: its metrics would go to the region's \
         CloudWatch.\n\n\
         ## CloudWatch\n\n\
         With the `cloudwatch` feature (on by default), a producer on the default AWS transport \
         uploads to CloudWatch (`kpl-cloudwatch`, on `aws-sdk-cloudwatch`), as the KPL does, \
         unless `MetricsLevel` is `none`. `ProducerBuilder::metrics_exporter` sets another \
         exporter (or this one on a producer with another transport). Each statistic set \
         becomes a `MetricDatum` with a `StatisticSet` (sample count, sum, minimum, \
         maximum), its unit and the interval's timestamp, in as few `PutMetricData` calls as \
         the service allows (1,000 datums and 1 MB a call; the SDK compresses large bodies). \
         Sets CloudWatch would refuse (no samples, a value that is not finite: the KPL's \
         issue #188) are left out and counted. Each call gets up to three attempts (the \
         SDK's standard retries: exponential backoff with jitter); one refused call loses its \
         own datums, not the others'. An upload that takes longer than `MetricsUploadDelay` is \
         given up on and counted lost. Additional dimensions are checked when the producer \
         is built (names of 1 to 255 characters, not the producer's own; values of at most \
         1,024; at most 27 of them), as CloudWatch refuses a whole call for one bad \
         dimension. The region and credentials are the producer's \
         (`Region`, `AwsAccessKeyId`…, or the SDK's chains); `CloudwatchEndpoint` and \
         `CloudwatchPort` set the endpoint. To upload with other credentials or to another \
         region or account (the KPL's metrics credentials provider), give \
         `ProducerBuilder::metrics_exporter(kpl::CloudWatchExporter::new(settings))` with \
         `CloudWatchSettings` of their own.\n\n\
         The credentials need this permission:\n\n\
         ```json\n\
         {\n  \"Effect\": \"Allow\",\n  \"Action\": \"cloudwatch:PutMetricData\",\n  \"Resource\": \"*\"\n}\n\
         ```\n\n\
         Every metric at `shard` granularity is one series per shard, stream and error code, \
         and CloudWatch bills per series: above some hundreds of shards, `stream` granularity \
         or the `summary` level keep the bill (and the `PutMetricData` calls) down.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_bounded_over_the_producer_s_life_not_per_second() {
        let mut hub = MetricsHub::new(
            MetricsLevel::Detailed,
            MetricsGranularity::Stream,
            Vec::new(),
        );
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let mut one = Summary::default();
        (one.count, one.sum, one.min, one.max) = (1, 1.0, 1.0, 1.0);
        // A new code every second, as a misbehaving endpoint could send.
        for second in 0..1_000 {
            let code: Arc<str> = Arc::from(format!("Code{second}"));
            let series = Series::new(Metric::ErrorsByCode, stream.clone(), None, Some(code), one);
            hub.add_second(vec![series]).emit();
        }
        let codes: BTreeSet<Arc<str>> = hub
            .window
            .iter()
            .flatten()
            .filter_map(|series| series.error_code.clone())
            .collect();
        assert!(codes.len() <= MAX_ERROR_CODES, "{} codes", codes.len());
        assert!(codes.contains(OTHER_ERROR_CODES));
        assert!(codes.contains("Code0") || hub.codes.contains("Code0"));
        assert!(hub.codes.len() < MAX_ERROR_CODES);
    }

    #[test]
    fn a_series_counts_at_every_level_of_the_tree_but_once_at_the_finest() {
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let mut one = Summary::default();
        (one.count, one.sum, one.min, one.max) = (1, 1.0, 1.0, 1.0);
        let shard = Some(ShardId::from("shardId-1"));
        let put = Metric::UserRecordsPut;
        let shard_series = Series::new(put, stream.clone(), shard, None, one);
        let stream_series = Series::new(put, stream, None, None, one);
        let both = [shard_series, stream_series];
        let mut tree = BTreeMap::new();
        roll_up_tree(&both, Granularity::Shard, &mut tree);
        // The shard, the stream (both samples) and the whole (both samples).
        let counts: Vec<u64> = tree.values().map(|s| s.count).collect();
        assert_eq!(counts, [2, 2, 1]);
        let mut finest = BTreeMap::new();
        roll_up_finest(&both, Granularity::Stream, &mut finest);
        assert_eq!(finest.values().map(|s| s.count).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn additional_dimensions_go_where_their_granularity_says_in_the_kpl_order() {
        let stream = Stream::new("s").unwrap_or_else(|e| panic!("{e}"));
        let extra = |name: &str, granularity| MetricsDimension {
            name: name.to_owned(),
            value: "v".to_owned(),
            granularity,
        };
        let additional = [
            extra("app", MetricsGranularity::Global),
            extra("tier", MetricsGranularity::Stream),
            extra("zone", MetricsGranularity::Shard),
            extra("blank", MetricsGranularity::Global),
        ];
        let mut additional = additional.to_vec();
        additional[3].value.clear();
        let key: ReadingKey = (
            Metric::ErrorsByCode,
            Some(stream.clone()),
            Some(ShardId::from("shardId-1")),
            Some(Arc::from("Throttled")),
        );
        let names: Vec<String> = dimensions(&key, &additional)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            names,
            ["app", "ErrorCode", "StreamName", "tier", "ShardId", "zone"]
        );
        let global: ReadingKey = (Metric::UserRecordsPut, None, None, None);
        let names: Vec<String> = dimensions(&global, &additional)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["app"]);
    }

    #[test]
    fn facade_names_follow_the_metrics_in_order() {
        for metric in Metric::ALL {
            let names = &NAMES[metric.index()];
            assert_eq!(names.sum, format!("{}_sum", metric.name()));
        }
    }
}
