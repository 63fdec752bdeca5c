//! Whether the tokio runtime `build` runs on has the drivers the producer needs. Tokio offers no
//! way to ask but to use one, which panics without it; the probe catches that panic without
//! letting the application's panic hook see it (a crash reporter would record a crash), and
//! puts the application's hook back after.
//!
//! Under `panic = "abort"` a panic cannot be caught: there is no probe, and a runtime without
//! timers (or, for the AWS transport, without IO) stops the process at the producer's first use
//! of them, with tokio's message naming the driver.

/// Whether `use_driver` ran without panicking; `true` when panics abort (nothing is tried).
pub(crate) fn has_driver(use_driver: impl FnOnce() + std::panic::UnwindSafe) -> bool {
    #[cfg(panic = "unwind")]
    {
        quiet::catch(use_driver)
    }
    #[cfg(not(panic = "unwind"))]
    {
        let _ = use_driver;
        true
    }
}

#[cfg(panic = "unwind")]
mod quiet {
    use std::cell::Cell;
    use std::panic::{self, PanicHookInfo, UnwindSafe};
    use std::sync::Arc;

    thread_local! {
        /// Set while this thread probes: its panic is expected, and not reported.
        pub(super) static PROBING: Cell<bool> = const { Cell::new(false) };
    }

    type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Send + Sync + 'static>;

    /// Runs `probe`, catching its panic, with a hook in front of the current one for as long
    /// as it runs: it passes on every panic but this thread's, and the current hook is put
    /// back after.
    pub(super) fn catch(probe: impl FnOnce() + UnwindSafe) -> bool {
        let previous: Arc<Hook> = Arc::new(panic::take_hook());
        let passed_on = Arc::clone(&previous);
        panic::set_hook(Box::new(move |info| {
            if !PROBING.with(Cell::get) {
                passed_on(info);
            }
        }));
        PROBING.with(|probing| probing.set(true));
        let result = panic::catch_unwind(probe);
        PROBING.with(|probing| probing.set(false));
        // Dropping the front hook leaves `previous` as the only handle to the old one.
        drop(panic::take_hook());
        match Arc::try_unwrap(previous) {
            Ok(hook) => panic::set_hook(hook),
            Err(shared) => panic::set_hook(Box::new(move |info| shared(info))),
        }
        result.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_that_panics_is_found_missing_and_one_that_works_present() {
        assert!(!has_driver(|| panic!("no driver")));
        assert!(has_driver(|| {}));
        assert!(!quiet::PROBING.with(std::cell::Cell::get));
    }
}
