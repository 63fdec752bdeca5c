//! The clock seam for drivers. The engine itself never reads a clock: drivers read one of these
//! and pass the time in.

use std::fmt;
use std::time::{Instant, SystemTime};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time, for deadlines and backoff.
    fn now(&self) -> Instant;
    /// Wall-clock time, for timestamps shown to people and metrics services.
    fn system_time(&self) -> SystemTime;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place that reads the real clock"
    )]
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "the one place that reads the real clock"
    )]
    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }
}
