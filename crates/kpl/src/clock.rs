//! The producer's default clock: tokio's, so `#[tokio::test(start_paused = true)]` drives it.

use std::time::{Instant, SystemTime};

use kpl_engine::time::Clock;

/// Reads tokio's clock (virtual when tokio's time is paused) for deadlines, and the system's
/// wall clock for timestamps.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

/// Tokio's current instant, for tokio's timers: the facade's one reading of it.
#[allow(
    clippy::disallowed_methods,
    reason = "the clock module is where the facade reads the time"
)]
pub(crate) fn tokio_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        tokio_now().into_std()
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "the facade's one reading of the wall clock"
    )]
    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }
}
