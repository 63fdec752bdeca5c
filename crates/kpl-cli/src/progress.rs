//! Progress while records go: a bar on a terminal, plain periodic lines otherwise (a log, a
//! pipe, CI), both on stderr so stdout keeps only what a command prints.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kpl::TokioClock;
use std::time::Instant;

use kpl::time::Clock;
use tokio::task::JoinHandle;

/// What a run has done so far, updated as it goes.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) skipped: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    fn line(&self, elapsed: Duration) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (accepted, delivered, failed) =
            (get(&self.accepted), get(&self.delivered), get(&self.failed));
        let rate = delivered as f64 / elapsed.as_secs_f64().max(1e-9);
        let mut line = format!(
            "{accepted} records ({:.1} MB) sent, {delivered} delivered, {rate:.0} records/s, \
             {} in flight, {} retries, {failed} failed",
            get(&self.bytes) as f64 / 1e6,
            accepted.saturating_sub(delivered + failed),
            get(&self.retries),
        );
        let skipped = get(&self.skipped);
        if skipped > 0 {
            line.push_str(&format!(", {skipped} bad skipped"));
        }
        line
    }
}

/// Shows progress until [`finish`](Self::finish).
pub(crate) struct Progress {
    task: Option<JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

/// How often the bar is redrawn on a terminal.
const BAR_TICK: Duration = Duration::from_millis(200);

impl Progress {
    /// A bar if stderr is a terminal, else a line every `interval` (none if it is zero).
    pub(crate) fn start(counters: Arc<Counters>, interval: Duration) -> Self {
        let started = TokioClock.now();
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            let shown = bar.clone();
            let task = tokio::spawn(async move {
                loop {
                    shown.set_message(counters.line(since(started)));
                    shown.tick();
                    tokio::time::sleep(BAR_TICK).await;
                }
            });
            return Self {
                task: Some(task),
                bar: Some(bar),
            };
        }
        if interval.is_zero() {
            return Self {
                task: None,
                bar: None,
            };
        }
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let elapsed = since(started);
                eprintln!(
                    "progress {:.1}s: {}",
                    elapsed.as_secs_f64(),
                    counters.line(elapsed)
                );
            }
        });
        Self {
            task: Some(task),
            bar: None,
        }
    }

    /// Stops showing progress (the bar is cleared: the summary follows).
    pub(crate) fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

pub(crate) fn since(started: Instant) -> Duration {
    TokioClock.now().saturating_duration_since(started)
}
