//! `kpl produce`: input records through the producer, with back-pressure, progress, a summary,
//! and every record that did not make it written back for re-sending.

use std::collections::BTreeMap;
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
    Delivery, DeliveryError, KinesisProducer, Record, RecordId, RecordOutcome, SendError,
    SendErrorKind, Stream, TokioClock,
};
use tokio::sync::mpsc;

use crate::cli::{InputFormat, ProduceArgs};
use crate::input::{self, BadInput, InputRecord, Location, RecordShape};
use crate::progress::{Counters, Progress, since};
use crate::target::Target;
use crate::{Failure, Outcome};

/// Outcomes not yet received, at most: with the producer's own limits, how far reading runs
/// ahead of the service.
pub(crate) const OUTCOMES_IN_FLIGHT: usize = 65_536;

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
    if let Some(path) = &args.failed_out {
        refuse_an_input(path, &args.files)?;
    }
    let target = Target::open(&args.target).await?;
    let producer = target.producer(&args.target.stream, args.shards).await?;
    // Made once the stream is known to be there: a run that cannot start leaves the last
    // run's failures as they were.
    let failed_out = args
        .failed_out
        .as_deref()
        .map(|path| FailedOut::create(path, args.input_format))
        .transpose()?;
    let (records, inputs) = mpsc::channel(READ_AHEAD);
    let files = args.files.clone();
    let reader = Arc::new(Reader::default());
    let reading = Arc::clone(&reader);
    std::thread::spawn(move || {
        input::read_all(&files, &shape, |record| reading.pass_on(&records, record));
    });
    let run = Run {
        reader,
        producer,
        stream,
        skip_bad: args.skip_bad,
        drain_timeout: args.drain_timeout,
        progress_interval: args.progress_interval,
        failed_out,
    };
    let report = run.pump(inputs).await?;
    target.save()?;
    crate::say(&report.summary());
    if let Some(problem) = &report.failed_out_problem {
        eprintln!("kpl: {problem}");
    }
    match &report.stopped_at {
        Some(bad) if bad.unreadable => eprintln!("kpl: stopped: {bad}"),
        Some(bad) => {
            eprintln!("kpl: stopped at bad input: {bad} (--skip-bad counts such lines and goes on)")
        }
        None => {}
    }
    Ok(report.outcome())
}

/// `--failed-out` must not be one of the inputs: it is written over.
fn refuse_an_input(failed_out: &Path, files: &[PathBuf]) -> Result<(), Failure> {
    let Ok(output) = std::fs::canonicalize(failed_out) else {
        return Ok(());
    };
    for file in files {
        if std::fs::canonicalize(file).is_ok_and(|input| input == output) {
            return Err(Failure::bad_input(format!(
                "--failed-out {} is also an input: write the failures elsewhere, then re-send them",
                failed_out.display()
            )));
        }
    }
    Ok(())
}

/// The input reader's side of the hand-over: a record it read is either passed on, or kept
/// here when the run stopped taking records meanwhile, so that no record read is lost.
#[derive(Default)]
struct Reader(std::sync::Mutex<Hand>);

#[derive(Default)]
struct Hand {
    stopped: bool,
    /// The record the reader was passing on when the run stopped taking them.
    held: Option<InputRecord>,
}

impl Reader {
    /// Passes `record` on (waiting for room); `false` once the run stopped taking records.
    /// The lock is held while waiting, so that [`stop`](Self::stop) finds the record here if the
    /// hand-over fails.
    fn pass_on(&self, records: &mpsc::Sender<InputRecord>, record: InputRecord) -> bool {
        let mut hand = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if hand.stopped {
            // Read after the run stopped, and after it said how far the input was read.
            return false;
        }
        match records.blocking_send(record) {
            Ok(()) => true,
            Err(mpsc::error::SendError(record)) => {
                hand.held = Some(record);
                false
            }
        }
    }

    /// Stops the hand-over (call after closing the channel) and gives back the record that
    /// was being passed on, if any.
    fn stop(&self) -> Option<InputRecord> {
        let mut hand = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hand.stopped = true;
        hand.held.take()
    }
}

/// One `produce` run's settings.
struct Run {
    reader: Arc<Reader>,
    producer: KinesisProducer,
    stream: Stream,
    skip_bad: bool,
    drain_timeout: Duration,
    progress_interval: Duration,
    failed_out: Option<FailedOut>,
}

/// A record on its way: where it was read and its bytes as read.
#[derive(Clone)]
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
        let mut sending: Option<(Sent, Sending)> = None;
        let mut reading = true;
        let mut last_read: Option<Location> = None;
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        while reading || sending.is_some() {
            tokio::select! {
                // Outcomes first: they free room for the next records.
                biased;
                Some(outcome) = outcomes.recv() => {
                    report.record_outcome(outcome, self.failed_out.as_mut());
                }
                _ = &mut interrupt, if !report.interrupted => {
                    report.interrupted = true;
                    reading = false;
                    if let Some((sent, _)) = sending.take() {
                        report.not_accepted(sent, "Interrupted", "Ctrl-C before the producer took it", self.failed_out.as_mut());
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
                        Ok(_) => {
                            Counters::add(&counters.accepted, 1);
                            Counters::add(&counters.bytes, sent.raw.len() as u64);
                        }
                        Err(refused) if matches!(refused.kind(), SendErrorKind::InvalidRecord | SendErrorKind::TooLarge) => {
                            let bad = BadInput {
                                location: sent.location.clone(),
                                unreadable: false,
                                field: None,
                                problem: refused.to_string(),
                            };
                            report.bad_input(bad, &sent.raw, self.skip_bad, self.failed_out.as_mut());
                            reading &= self.skip_bad;
                        }
                        Err(refused) => {
                            // Not the record's fault (the producer is going away): it was not
                            // sent, and neither will what follows be.
                            report.not_accepted(sent, "Refused", &refused.to_string(), self.failed_out.as_mut());
                            reading = false;
                        }
                    }
                }
                next = inputs.recv(), if reading && sending.is_none() => {
                    let Some(input) = next else {
                        reading = false;
                        continue;
                    };
                    last_read = Some(input.location.clone());
                    match input.parsed {
                        Ok(parsed) => {
                            let mut record = Record::new(self.stream.clone(), parsed.partition_key, parsed.data);
                            if let Some(hash_key) = parsed.explicit_hash_key {
                                record = record.with_explicit_hash_key(hash_key);
                            }
                            let sender = sender.clone();
                            let sent = Sent { location: input.location, raw: input.raw };
                            // The record's outcome brings its origin back; this copy (two
                            // reference counts) is for a refusal, which hands back only the record.
                            let context = sent.clone();
                            let future: Sending = Box::pin(async move { sender.send_wait_with(record, context).await });
                            sending = Some((sent, future));
                        }
                        Err(bad) => {
                            reading &= self.skip_bad && !bad.unreadable;
                            report.bad_input(bad, &input.raw, self.skip_bad, self.failed_out.as_mut());
                        }
                    }
                }
            }
        }
        if report.interrupted {
            // Records read ahead but never handed to the producer: not sent, and said so.
            inputs.close();
            let held = self.reader.stop();
            let read_ahead = std::iter::from_fn(|| inputs.try_recv().ok());
            for input in read_ahead.chain(held) {
                last_read = Some(input.location.clone());
                let sent = Sent {
                    location: input.location,
                    raw: input.raw,
                };
                report.not_accepted(
                    sent,
                    "Interrupted",
                    "read but not sent: Ctrl-C",
                    self.failed_out.as_mut(),
                );
            }
            if let Some(location) = &last_read {
                eprintln!("kpl: interrupted; the input was read up to {location}");
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
            let interrupted = tokio::select! {
                _ = tokio::time::timeout(drain, producer.flush_and_wait()) => false,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("kpl: stopping now");
                    true
                }
            };
            producer.shutdown(Duration::ZERO).await;
            interrupted
        });
        while let Some(outcome) = outcomes.recv().await {
            report.record_outcome(outcome, self.failed_out.as_mut());
        }
        report.interrupted |= shutdown.await.unwrap_or(false);
        if let Some(failed_out) = self.failed_out.as_mut() {
            report.failed_out_problem = failed_out.finish().err();
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
    /// Time from acceptance to outcome of the delivered records.
    pub(crate) latencies: Latencies,
    pub(crate) interrupted: bool,
    /// The bad input that stopped reading.
    pub(crate) stopped_at: Option<BadInput>,
    /// Why `--failed-out` is not complete, if it is not.
    pub(crate) failed_out_problem: Option<String>,
}

impl Report {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        Self {
            counters,
            started: TokioClock.now(),
            elapsed: Duration::ZERO,
            failures: BTreeMap::new(),
            latencies: Latencies::default(),
            interrupted: false,
            stopped_at: None,
            failed_out_problem: None,
        }
    }

    /// Counts an outcome; a failed record sent with its origin (a [`Sent`] context) goes to
    /// `failed_out` with its error.
    pub(crate) fn record_outcome(
        &mut self,
        mut outcome: RecordOutcome,
        failed_out: Option<&mut FailedOut>,
    ) {
        let sent = outcome.take_context::<Sent>();
        match outcome.outcome {
            Ok(delivery) => self.delivered(&delivery),
            Err(error) => {
                let code = error_code(&error);
                self.failed(&code, error.attempt_count());
                if let (Some(failed_out), Some(sent)) = (failed_out, sent) {
                    let message = format!("{error} [attempts: {}]", attempt_codes(&error));
                    failed_out.write(&sent.raw, &sent.location, &code, &message);
                }
            }
        }
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
        self.latencies.add(latency);
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
    ) {
        *self.failures.entry(code.to_owned()).or_default() += 1;
        Counters::add(&self.counters.failed, 1);
        if let Some(failed_out) = failed_out {
            failed_out.write(&sent.raw, &sent.location, code, message);
        }
    }

    /// A bad input record: counted and kept in `failed_out` when skipping, else the reason to
    /// stop.
    fn bad_input(
        &mut self,
        bad: BadInput,
        raw: &Bytes,
        skip: bool,
        failed_out: Option<&mut FailedOut>,
    ) {
        if let Some(failed_out) = failed_out {
            if bad.unreadable {
                // No record was read there: only the error is kept.
                failed_out.write_error(&bad.location, "Unreadable", &bad.to_string());
            } else {
                failed_out.write(raw, &bad.location, "BadInput", &bad.to_string());
            }
        }
        if skip && !bad.unreadable {
            Counters::add(&self.counters.skipped, 1);
            eprintln!("kpl: skipped {bad}");
        } else {
            self.stopped_at = Some(bad);
        }
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
        } else if self.failures.is_empty() && skipped == 0 && self.failed_out_problem.is_none() {
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
        let millis = |latency: Duration| latency.as_secs_f64() * 1000.0;
        text.push_str(&format!(
            "latency:    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\nthroughput: {:.0} records/s over {:.2} s\n",
            millis(self.latencies.percentile(0.5)),
            millis(self.latencies.percentile(0.99)),
            millis(self.latencies.max),
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

/// Latencies counted in buckets 1 % wide (exact below 100 µs): percentiles of any number of
/// records in a few kilobytes.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    buckets: Vec<u64>,
    count: u64,
    max: Duration,
}

/// Below this many microseconds each microsecond has its bucket.
const EXACT_MICROS: u64 = 100;
/// The growth from one bucket to the next above [`EXACT_MICROS`].
const BUCKET_GROWTH: f64 = 1.01;

impl Latencies {
    fn index(micros: u64) -> usize {
        if micros < EXACT_MICROS {
            micros as usize
        } else {
            let steps = ((micros as f64 / EXACT_MICROS as f64).ln() / BUCKET_GROWTH.ln()) as usize;
            EXACT_MICROS as usize + steps
        }
    }

    /// The smallest latency of bucket `index`.
    fn floor(index: usize) -> Duration {
        let micros = if index < EXACT_MICROS as usize {
            index as f64
        } else {
            EXACT_MICROS as f64 * BUCKET_GROWTH.powi((index - EXACT_MICROS as usize) as i32)
        };
        Duration::from_secs_f64(micros / 1e6)
    }

    pub(crate) fn add(&mut self, latency: Duration) {
        let index = Self::index(latency.as_micros().min(u128::from(u64::MAX)) as u64);
        if self.buckets.len() <= index {
            self.buckets.resize(index + 1, 0);
        }
        self.buckets[index] += 1;
        self.count += 1;
        self.max = self.max.max(latency);
    }

    /// The latency below which a share `p` of the records fell (within 1 %).
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let rank = ((self.count as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::floor(index).min(self.max);
            }
        }
        self.max
    }
}

/// A failed record's error code: the service's or the producer's last, else its kind.
pub(crate) fn error_code(error: &DeliveryError) -> String {
    error
        .error_code()
        .map_or_else(|| format!("{:?}", error.kind()), str::to_owned)
}

/// Failed records written back in the input format, their errors beside them. Written as
/// `FILE.partial` and renamed at the end, so a run that stops early leaves the last run's file.
///
/// A write that fails (a full disk) does not stop the run: the records' outcomes are still
/// waited for and counted, what could not be written is counted as lost, and at the end the
/// partial file is left under its `.partial` name and named in the error, so that the last
/// run's `FILE` is never taken for this run's failures.
pub(crate) struct FailedOut {
    records: BufWriter<File>,
    errors: BufWriter<File>,
    format: InputFormat,
    path: PathBuf,
    /// The first write error, once one happened; nothing more is written after it.
    broken: Option<std::io::Error>,
    /// Failed records (and error lines) to be written, and how many of them could not be.
    total: u64,
    lost: u64,
}

impl FailedOut {
    fn create(path: &Path, format: InputFormat) -> Result<Self, Failure> {
        let open = |path: &Path| {
            File::create(partial(path))
                .map(BufWriter::new)
                .map_err(|error| Failure::bad_input(format!("{}: {error}", path.display())))
        };
        Ok(Self {
            records: open(path)?,
            errors: open(&errors_path(path))?,
            format,
            path: path.to_owned(),
            broken: None,
            total: 0,
            lost: 0,
        })
    }

    /// Keeps the first write error, and counts what it lost.
    fn written(&mut self, result: std::io::Result<()>) {
        if let Err(error) = result {
            self.lost += 1;
            if self.broken.is_none() {
                eprintln!(
                    "kpl: --failed-out: cannot write {}: {error}; the run goes on, and the \
                     failures from here on are counted but not written",
                    partial(&self.path).display()
                );
                self.broken = Some(error);
            }
        }
    }

    fn write(&mut self, raw: &[u8], location: &Location, code: &str, message: &str) {
        self.total += 1;
        if self.broken.is_some() {
            self.lost += 1;
            return;
        }
        let written = match self.format {
            InputFormat::Text | InputFormat::Json => self
                .records
                .write_all(raw)
                .and_then(|()| self.records.write_all(b"\n")),
            InputFormat::Binary => self.records.write_all(&input::frame(raw)),
        };
        let message = message.replace(['\t', '\n'], " ");
        let written = written.and_then(|()| writeln!(self.errors, "{location}\t{code}\t{message}"));
        self.written(written);
    }

    /// An error line alone, for input that could not be read.
    fn write_error(&mut self, location: &Location, code: &str, message: &str) {
        self.total += 1;
        if self.broken.is_some() {
            self.lost += 1;
            return;
        }
        let message = message.replace(['\t', '\n'], " ");
        let written = writeln!(self.errors, "{location}\t{code}\t{message}");
        self.written(written);
    }

    /// Puts the files in place, or says why they are not: the run's outcomes are counted by
    /// then, and the summary printed after.
    fn finish(&mut self) -> Result<(), String> {
        if self.broken.is_none() {
            let errors = errors_path(&self.path);
            let done = self
                .records
                .flush()
                .and_then(|()| self.errors.flush())
                .and_then(|()| std::fs::rename(partial(&self.path), &self.path))
                .and_then(|()| std::fs::rename(partial(&errors), &errors));
            match done {
                Ok(()) => return Ok(()),
                Err(error) => self.broken = Some(error),
            }
        }
        let error = self
            .broken
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        Err(format!(
            "--failed-out: {} is incomplete: of {} failed records, {} were never written and \
             the last ones written may be cut short ({error}); {} was left as the previous run \
             wrote it",
            partial(&self.path).display(),
            self.total,
            self.lost,
            self.path.display()
        ))
    }
}

/// `path` with `.partial` after its name.
fn partial(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Where the errors of `--failed-out FILE` go: `FILE.errors`.
pub(crate) fn errors_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".errors");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(line: u64) -> InputRecord {
        let location = Location {
            source: Arc::from("stdin"),
            line,
        };
        InputRecord {
            location: location.clone(),
            raw: Bytes::from_static(b"x"),
            parsed: Err(BadInput {
                location,
                unreadable: false,
                field: None,
                problem: "unused".to_owned(),
            }),
        }
    }

    /// The reader waits to pass a record on to a full channel when the run stops taking
    /// records (Ctrl-C): the record comes back to the run, which writes it as interrupted,
    /// instead of being dropped with the failed hand-over.
    #[test]
    fn a_record_being_passed_on_when_the_run_stops_comes_back() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let (records, mut inputs) = mpsc::channel(1);
        let reader = Arc::new(Reader::default());
        assert!(reader.pass_on(&records, input(1)), "room for one");
        let reading = Arc::clone(&reader);
        let blocked = std::thread::spawn(move || reading.pass_on(&records, input(2)));
        // The reader holds its lock while it waits: once the run closes the channel, its
        // hand-over fails and `stop` (which waits for the lock) finds the record.
        while !blocked.is_finished() && reader.0.try_lock().is_ok() {
            std::thread::yield_now();
        }
        inputs.close();
        let held = reader.stop();
        assert!(!blocked.join().unwrap_or(true), "the hand-over failed");
        let read_ahead = runtime.block_on(async { inputs.recv().await });
        let lines: Vec<u64> = read_ahead
            .into_iter()
            .chain(held)
            .map(|input| input.location.line)
            .collect();
        assert_eq!(lines, [1, 2], "both records read come back, in order");
        // A record read after the stop is not passed on.
        let (late, _inputs) = mpsc::channel(1);
        assert!(!reader.pass_on(&late, input(3)));
    }

    #[test]
    fn latency_percentiles_are_within_a_percent_in_little_memory() {
        let mut latencies = Latencies::default();
        // 1 ms to 10 s, one record each millisecond.
        for ms in 1..=10_000u64 {
            latencies.add(Duration::from_millis(ms));
        }
        for (p, expected) in [(0.5, 5_000.0), (0.99, 9_900.0)] {
            let got = latencies.percentile(p).as_secs_f64() * 1000.0;
            assert!((got - expected).abs() / expected <= 0.011, "p{p}: {got} ms");
        }
        assert_eq!(latencies.max, Duration::from_secs(10));
        assert!(
            latencies.buckets.len() < 1_300,
            "{}",
            latencies.buckets.len()
        );
        let mut exact = Latencies::default();
        exact.add(Duration::from_micros(42));
        assert_eq!(exact.percentile(0.5), Duration::from_micros(42));
    }
}
