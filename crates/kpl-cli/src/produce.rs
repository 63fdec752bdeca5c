//! `kpl produce`: input records through the producer, with back-pressure, progress, a summary,
//! and every record that did not make it written back for re-sending.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kpl::time::Clock;
use kpl::{
    Delivery, DeliveryError, KinesisProducer, Record, RecordId, RecordOutcome, SendError, Stream,
    TokioClock,
};
use tokio::sync::mpsc;

use crate::cli::{InputFormat, ProduceArgs};
use crate::input::{self, BadInput, InputRecord, Location, RecordShape};
use crate::progress::{Counters, Progress, since};
use crate::target::Target;
use crate::{Failure, Outcome};

/// Outcomes not yet received, at most: with the producer's own limits, how far reading runs
/// ahead of the service.
const OUTCOMES_IN_FLIGHT: usize = 65_536;

/// Input records read ahead of the producer.
const READ_AHEAD: usize = 4_096;

pub(crate) async fn run(args: ProduceArgs) -> Result<Outcome, Failure> {
    let shape = RecordShape {
        format: args.input_format,
        key: args.key.clone(),
        key_field: args.key_field.clone(),
        hash_key_field: args.hash_key_field.clone(),
        data_field: args.data_field.clone(),
    };
    shape.check().map_err(Failure::bad_input)?;
    let stream = Stream::new(args.target.stream.as_str())
        .map_err(|error| Failure::bad_input(format!("--stream: {error}")))?;
    let failed_out = args
        .failed_out
        .as_deref()
        .map(|path| FailedOut::create(path, args.input_format))
        .transpose()?;
    let target = Target::open(&args.target).await?;
    let producer = target.producer(&args.target.stream, args.shards).await?;
    let (records, inputs) = mpsc::channel(READ_AHEAD);
    let files = args.files.clone();
    std::thread::spawn(move || {
        input::read_all(&files, &shape, |record| {
            records.blocking_send(record).is_ok()
        });
    });
    let run = Run {
        producer,
        stream,
        skip_bad: args.skip_bad,
        drain_timeout: args.drain_timeout,
        progress_interval: args.progress_interval,
        failed_out,
    };
    let report = run.pump(inputs).await?;
    target.save()?;
    print!("{}", report.summary());
    if let Some(bad) = &report.stopped_at {
        eprintln!("kpl: stopped at bad input: {bad} (--skip-bad counts such lines and goes on)");
    }
    Ok(report.outcome())
}

/// One `produce` run's settings.
struct Run {
    producer: KinesisProducer,
    stream: Stream,
    skip_bad: bool,
    drain_timeout: Duration,
    progress_interval: Duration,
    failed_out: Option<FailedOut>,
}

/// A record on its way: where it was read and its bytes as read.
pub(crate) struct Sent {
    location: Location,
    raw: Bytes,
}

type Sending = Pin<Box<dyn Future<Output = Result<RecordId, SendError>> + Send>>;

impl Run {
    /// Reads `inputs` into the producer until they end, a bad one stops them, or Ctrl-C; then
    /// waits (at most the drain timeout) for the outcomes of everything accepted.
    async fn pump(mut self, mut inputs: mpsc::Receiver<InputRecord>) -> Result<Report, Failure> {
        let counters = Arc::new(Counters::default());
        let progress = Progress::start(Arc::clone(&counters), self.progress_interval);
        let mut report = Report::new(Arc::clone(&counters));
        let (sender, mut outcomes) = self.producer.outcome_channel(OUTCOMES_IN_FLIGHT);
        let mut pending: HashMap<RecordId, Sent> = HashMap::new();
        let mut sending: Option<(Sent, Sending)> = None;
        let mut reading = true;
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        while reading || sending.is_some() {
            tokio::select! {
                // Outcomes first: they free room for the next records.
                biased;
                Some(outcome) = outcomes.recv() => {
                    let sent = pending.remove(&outcome.id);
                    report.record_outcome(outcome, sent, self.failed_out.as_mut())?;
                }
                _ = &mut interrupt, if !report.interrupted => {
                    report.interrupted = true;
                    reading = false;
                    if let Some((sent, _)) = sending.take() {
                        report.not_accepted(sent, "Interrupted", "Ctrl-C before the producer took it", self.failed_out.as_mut())?;
                    }
                }
                accepted = async {
                    match sending.as_mut() {
                        Some((_, future)) => future.await,
                        None => std::future::pending().await,
                    }
                }, if sending.is_some() => {
                    let Some((sent, _)) = sending.take() else { continue };
                    match accepted {
                        Ok(id) => {
                            Counters::add(&counters.accepted, 1);
                            Counters::add(&counters.bytes, sent.raw.len() as u64);
                            pending.insert(id, sent);
                        }
                        Err(refused) => {
                            let bad = BadInput {
                                location: sent.location.clone(),
                                field: None,
                                problem: refused.to_string(),
                            };
                            report.bad_input(bad, &sent.raw, self.skip_bad, self.failed_out.as_mut())?;
                            reading &= self.skip_bad;
                        }
                    }
                }
                next = inputs.recv(), if reading && sending.is_none() => {
                    let Some(input) = next else {
                        reading = false;
                        continue;
                    };
                    match input.parsed {
                        Ok(parsed) => {
                            let mut record = Record::new(self.stream.clone(), parsed.partition_key, parsed.data);
                            if let Some(hash_key) = parsed.explicit_hash_key {
                                record = record.with_explicit_hash_key(hash_key);
                            }
                            let sender = sender.clone();
                            let future: Sending = Box::pin(async move { sender.send_wait(record).await });
                            sending = Some((Sent { location: input.location, raw: input.raw }, future));
                        }
                        Err(bad) => {
                            report.bad_input(bad, &input.raw, self.skip_bad, self.failed_out.as_mut())?;
                            reading &= self.skip_bad;
                        }
                    }
                }
            }
        }
        drop(inputs);
        drop(sender);
        // Everything accepted ends in an outcome: delivered within the drain timeout, or failed
        // by the shutdown with the reason (never sent, or possibly written while in flight).
        let producer = self.producer.clone();
        let drain = self.drain_timeout;
        if report.interrupted {
            eprintln!(
                "kpl: interrupted: sending what was read, waiting up to {drain:?} for it \
                 (Ctrl-C again to stop now)"
            );
        }
        let shutdown = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::timeout(drain, producer.flush_and_wait()) => {}
                _ = tokio::signal::ctrl_c() => eprintln!("kpl: stopping now"),
            }
            producer.shutdown(Duration::ZERO).await
        });
        while let Some(outcome) = outcomes.recv().await {
            let sent = pending.remove(&outcome.id);
            report.record_outcome(outcome, sent, self.failed_out.as_mut())?;
        }
        let _ = shutdown.await;
        if let Some(failed_out) = self.failed_out.as_mut() {
            failed_out.finish()?;
        }
        report.elapsed = since(report.started);
        progress.finish();
        Ok(report)
    }
}

/// What a run did.
pub(crate) struct Report {
    pub(crate) counters: Arc<Counters>,
    pub(crate) started: std::time::Instant,
    pub(crate) elapsed: Duration,
    /// Failed records by error code.
    pub(crate) failures: BTreeMap<String, u64>,
    /// Time from acceptance to outcome of each delivered record, in microseconds.
    pub(crate) latencies: Vec<u32>,
    pub(crate) interrupted: bool,
    /// The bad input that stopped reading.
    pub(crate) stopped_at: Option<BadInput>,
}

impl Report {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        Self {
            counters,
            started: TokioClock.now(),
            elapsed: Duration::ZERO,
            failures: BTreeMap::new(),
            latencies: Vec::new(),
            interrupted: false,
            stopped_at: None,
        }
    }

    /// Counts an outcome; a failed record goes to `failed_out` with its error.
    pub(crate) fn record_outcome(
        &mut self,
        outcome: RecordOutcome,
        sent: Option<Sent>,
        failed_out: Option<&mut FailedOut>,
    ) -> Result<(), Failure> {
        match outcome.outcome {
            Ok(delivery) => self.delivered(&delivery),
            Err(error) => {
                let code = error_code(&error);
                self.failed(&code, error.attempt_count());
                if let (Some(failed_out), Some(sent)) = (failed_out, sent) {
                    let message = format!("{error} [attempts: {}]", attempt_codes(&error));
                    failed_out.write(&sent.raw, &sent.location, &code, &message)?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn delivered(&mut self, delivery: &Delivery) {
        Counters::add(&self.counters.delivered, 1);
        let attempts = delivery.attempts();
        Counters::add(
            &self.counters.retries,
            attempts.len().saturating_sub(1) as u64,
        );
        let latency: Duration = attempts
            .iter()
            .map(|attempt| attempt.delay() + attempt.duration())
            .sum();
        self.latencies
            .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    pub(crate) fn failed(&mut self, code: &str, attempts: usize) {
        Counters::add(&self.counters.failed, 1);
        Counters::add(&self.counters.retries, attempts.saturating_sub(1) as u64);
        *self.failures.entry(code.to_owned()).or_default() += 1;
    }

    /// A record the producer never took (interrupted while waiting for room).
    fn not_accepted(
        &mut self,
        sent: Sent,
        code: &str,
        message: &str,
        failed_out: Option<&mut FailedOut>,
    ) -> Result<(), Failure> {
        *self.failures.entry(code.to_owned()).or_default() += 1;
        Counters::add(&self.counters.failed, 1);
        if let Some(failed_out) = failed_out {
            failed_out.write(&sent.raw, &sent.location, code, message)?;
        }
        Ok(())
    }

    /// A bad input record: counted and kept in `failed_out` when skipping, else the reason to
    /// stop.
    fn bad_input(
        &mut self,
        bad: BadInput,
        raw: &Bytes,
        skip: bool,
        failed_out: Option<&mut FailedOut>,
    ) -> Result<(), Failure> {
        if let Some(failed_out) = failed_out {
            failed_out.write(raw, &bad.location, "BadInput", &bad.to_string())?;
        }
        if skip {
            Counters::add(&self.counters.skipped, 1);
            eprintln!("kpl: skipped {bad}");
        } else {
            self.stopped_at = Some(bad);
        }
        Ok(())
    }

    /// The exit status: interrupted, stopped by bad input, some failed or skipped, or done.
    pub(crate) fn outcome(&self) -> Outcome {
        let skipped = self
            .counters
            .skipped
            .load(std::sync::atomic::Ordering::Relaxed);
        if self.interrupted {
            Outcome::Interrupted
        } else if self.stopped_at.is_some() {
            Outcome::BadInput
        } else if self.failures.is_empty() && skipped == 0 {
            Outcome::Done
        } else {
            Outcome::Failed
        }
    }

    /// The closing summary, one `name: value` per line.
    pub(crate) fn summary(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let counters = &self.counters;
        let delivered = counters.delivered.load(Relaxed);
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        let mut text = format!(
            "sent:       {} records, {:.2} MB\ndelivered:  {delivered}\nfailed:     {}",
            counters.accepted.load(Relaxed),
            counters.bytes.load(Relaxed) as f64 / 1e6,
            self.failures.values().sum::<u64>(),
        );
        if !self.failures.is_empty() {
            let codes: Vec<String> = self
                .failures
                .iter()
                .map(|(code, count)| format!("{code} {count}"))
                .collect();
            text.push_str(&format!(" ({})", codes.join(", ")));
        }
        text.push_str(&format!(
            "\nskipped:    {} bad input records\nretries:    {}\n",
            counters.skipped.load(Relaxed),
            counters.retries.load(Relaxed)
        ));
        let mut latencies = self.latencies.clone();
        latencies.sort_unstable();
        let percentile = |p: f64| {
            let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            latencies
                .get(index)
                .map_or(0.0, |micros| f64::from(*micros) / 1000.0)
        };
        text.push_str(&format!(
            "latency:    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\nthroughput: {:.0} records/s over {:.2} s\n",
            percentile(0.5),
            percentile(0.99),
            percentile(1.0),
            delivered as f64 / seconds,
            seconds,
        ));
        if self.interrupted {
            text.push_str("interrupted: records not delivered are counted as failed above\n");
        }
        text
    }
}

/// The error codes of a failed record's attempts, in order, a repeated one counted:
/// `InternalFailure x5, Expired`.
fn attempt_codes(error: &DeliveryError) -> String {
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for code in error
        .attempts()
        .iter()
        .filter_map(|attempt| attempt.error_code())
    {
        match runs.last_mut() {
            Some((last, count)) if *last == code => *count += 1,
            _ => runs.push((code, 1)),
        }
    }
    let runs: Vec<String> = runs
        .into_iter()
        .map(|(code, count)| match count {
            1 => code.to_owned(),
            count => format!("{code} x{count}"),
        })
        .collect();
    runs.join(", ")
}

/// A failed record's error code: the service's or the producer's last, else its kind.
pub(crate) fn error_code(error: &DeliveryError) -> String {
    error
        .error_code()
        .map_or_else(|| format!("{:?}", error.kind()), str::to_owned)
}

/// Failed records written back in the input format, their errors beside them.
pub(crate) struct FailedOut {
    records: BufWriter<File>,
    errors: BufWriter<File>,
    format: InputFormat,
    path: PathBuf,
}

impl FailedOut {
    fn create(path: &Path, format: InputFormat) -> Result<Self, Failure> {
        let errors_path = errors_path(path);
        let open = |path: &Path| {
            File::create(path)
                .map(BufWriter::new)
                .map_err(|error| Failure::bad_input(format!("{}: {error}", path.display())))
        };
        Ok(Self {
            records: open(path)?,
            errors: open(&errors_path)?,
            format,
            path: path.to_owned(),
        })
    }

    fn write(
        &mut self,
        raw: &[u8],
        location: &Location,
        code: &str,
        message: &str,
    ) -> Result<(), Failure> {
        let written = match self.format {
            InputFormat::Text | InputFormat::Json => self
                .records
                .write_all(raw)
                .and_then(|()| self.records.write_all(b"\n")),
            InputFormat::Binary => self.records.write_all(&input::frame(raw)),
        };
        let message = message.replace(['\t', '\n'], " ");
        written
            .and_then(|()| writeln!(self.errors, "{location}\t{code}\t{message}"))
            .map_err(|error| Failure::bad_input(format!("{}: {error}", self.path.display())))
    }

    fn finish(&mut self) -> Result<(), Failure> {
        self.records
            .flush()
            .and_then(|()| self.errors.flush())
            .map_err(|error| Failure::bad_input(format!("{}: {error}", self.path.display())))
    }
}

/// Where the errors of `--failed-out FILE` go: `FILE.errors`.
pub(crate) fn errors_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".errors");
    PathBuf::from(name)
}
