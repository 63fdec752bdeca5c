//! The clock seam for drivers. The engine itself never reads a clock: drivers read one of these
//! and pass the time in.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

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

/// A clock that moves only when told to, for tests and simulations.
#[derive(Clone, Debug)]
pub struct ManualClock {
    inner: Arc<Mutex<(Instant, SystemTime)>>,
}

impl ManualClock {
    /// A clock standing at the real current time.
    pub fn new() -> Self {
        let clock = SystemClock;
        Self {
            inner: Arc::new(Mutex::new((clock.now(), clock.system_time()))),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut times = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        times.0 += by;
        times.1 += by;
    }

    /// Moves the clock to `at` if that is later than now.
    pub fn advance_to(&self, at: Instant) {
        let mut times = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if at > times.0 {
            let by = at - times.0;
            times.0 = at;
            times.1 += by;
        }
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    fn system_time(&self) -> SystemTime {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}
