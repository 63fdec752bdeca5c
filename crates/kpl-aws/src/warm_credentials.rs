//! Credentials resolved outside the calls that need them, and renewed before they expire.
//!
//! The SDK resolves identity inside each call's future, so a call cancelled by its timeout
//! cancels the resolution with it, and the next call starts again from nothing: a provider
//! slower than `RequestTimeout` (STS behind a proxy, the instance metadata on a busy host) never
//! finishes, and no record is ever delivered. Here the provider runs in a task of its own. A
//! caller that gives up leaves it running; the next caller waits on the same resolution, and
//! keys about to expire are renewed in the background while the current ones still sign.

use std::error::Error;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};
use kpl_engine::time::{Clock, SystemClock};
use tokio::sync::Notify;

/// How long before their expiry keys are renewed in the background.
pub const RENEW_AHEAD: Duration = Duration::from_secs(300);

/// For this long after a resolution failed, callers get its failure at once (and a new
/// resolution is under way) rather than wait on the next one: a provider slower than the
/// calls' timeout that fails would otherwise never show why.
const FAILURE_SHOWN_FOR: Duration = Duration::from_secs(5);

/// Keys with less than this left are not handed out: the call they sign would arrive expired.
const LAST_USABLE: Duration = Duration::from_secs(1);

/// A credentials provider that resolves in a task of its own and renews keys
/// [`RENEW_AHEAD`] of their expiry. Made by [`keep_warm`].
#[derive(Clone)]
pub struct WarmCredentials {
    shared: Arc<Shared>,
}

struct Shared {
    provider: SharedCredentialsProvider,
    state: Mutex<State>,
    finished: Notify,
}

#[derive(Default)]
struct State {
    current: Option<Credentials>,
    resolving: bool,
    /// How many resolutions have ended: a waiter knows its one ended when this moves.
    ended: u64,
    /// Why the last resolution failed, while no keys are usable, and when.
    failure: Option<Arc<CredentialsError>>,
    failed_at: Option<std::time::Instant>,
}

impl fmt::Debug for WarmCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmCredentials").finish_non_exhaustive()
    }
}

/// The SDK configuration with its credentials provider, if it has one, resolved by
/// [`WarmCredentials`], which starts resolving now (on a tokio runtime).
pub fn keep_warm(config: aws_config::SdkConfig) -> aws_config::SdkConfig {
    let Some(provider) = config.credentials_provider() else {
        return config;
    };
    let warm = WarmCredentials::new(provider);
    warm.warm();
    config
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(warm))
        .build()
}

impl WarmCredentials {
    /// `provider`, resolved in tasks of its own.
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            shared: Arc::new(Shared {
                provider,
                state: Mutex::default(),
                finished: Notify::new(),
            }),
        }
    }

    /// Starts resolving now, unless usable keys are at hand or a resolution is under way, so
    /// that the first call finds them ready.
    /// Does nothing outside a tokio runtime.
    pub fn warm(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut state = self.shared.lock();
        if state.usable(SystemClock.system_time()).is_none() && !state.resolving {
            Shared::start(&self.shared, &mut state, &runtime);
        }
    }

    async fn resolve(&self) -> provider::Result {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No task to hand the resolution to: it runs in the caller's future, as the SDK's.
            return self.shared.provider.provide_credentials().await;
        };
        let waiting_since = {
            let mut state = self.shared.lock();
            let now = SystemClock.system_time();
            if let Some(current) = state.usable(now) {
                let current = current.clone();
                if renewal_due(&current, now) && !state.resolving {
                    Shared::start(&self.shared, &mut state, &runtime);
                }
                return Ok(current);
            }
            if !state.resolving {
                Shared::start(&self.shared, &mut state, &runtime);
            }
            let recent_failure = state.failed_at.is_some_and(|at| {
                SystemClock.now().saturating_duration_since(at) < FAILURE_SHOWN_FOR
            });
            if let (true, Some(failure)) = (recent_failure, &state.failure) {
                return Err(same_kind(failure));
            }
            state.ended
        };
        loop {
            let finished = self.shared.finished.notified();
            tokio::pin!(finished);
            // Registered before the check, so an end in between still wakes this waiter.
            finished.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.ended != waiting_since {
                    if let Some(current) = state.usable(SystemClock.system_time()) {
                        return Ok(current.clone());
                    }
                    return Err(match &state.failure {
                        Some(failure) => same_kind(failure),
                        None => CredentialsError::not_loaded("the keys expired as they came"),
                    });
                }
            }
            finished.await;
        }
    }
}

impl ProvideCredentials for WarmCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.resolve())
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts one resolution in a task of its own on `runtime`.
    fn start(this: &Arc<Self>, state: &mut State, runtime: &tokio::runtime::Handle) {
        state.resolving = true;
        let ending = Ending {
            shared: Arc::clone(this),
            result: None,
        };
        let resolution = async move {
            let mut ending = ending;
            let result = ending.shared.provider.provide_credentials().await;
            ending.result = Some(result);
        };
        runtime.spawn(resolution);
    }
}

/// Records a resolution's end when dropped: with its result, or, if its task stopped first
/// (a panic, a runtime shut down), as failed, so waiters never wait on it forever.
struct Ending {
    shared: Arc<Shared>,
    result: Option<provider::Result>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        // A task that stopped is no answer of the provider's: its waiters are told, but the
        // next caller asks the provider again at once.
        let answered = self.result.is_some();
        let result = self.result.take().unwrap_or_else(|| {
            Err(CredentialsError::unhandled(
                "the task resolving the credentials stopped before it ended",
            ))
        });
        {
            let mut state = self.shared.lock();
            state.resolving = false;
            state.ended = state.ended.wrapping_add(1);
            match result {
                Ok(credentials) => {
                    state.current = Some(credentials);
                    state.failure = None;
                    state.failed_at = None;
                }
                Err(error) => {
                    state.failure = Some(Arc::new(error));
                    state.failed_at = answered.then(|| SystemClock.now());
                }
            }
        }
        self.shared.finished.notify_waiters();
    }
}

impl State {
    /// The current keys, unless they expire within [`LAST_USABLE`] of `now`.
    fn usable(&self, now: SystemTime) -> Option<&Credentials> {
        self.current.as_ref().filter(|current| {
            current.expiry().is_none_or(|expiry| {
                expiry
                    .duration_since(now)
                    .is_ok_and(|left| left > LAST_USABLE)
            })
        })
    }
}

fn renewal_due(credentials: &Credentials, now: SystemTime) -> bool {
    credentials.expiry().is_some_and(|expiry| {
        expiry
            .duration_since(now)
            .map_or(true, |left| left < RENEW_AHEAD)
    })
}

/// An error of the same kind as `failure`, for each of the waiters it reaches (the SDK's
/// errors cannot be cloned); the original is its source.
fn same_kind(failure: &Arc<CredentialsError>) -> CredentialsError {
    let cause = SharedFailure(Arc::clone(failure));
    match failure.as_ref() {
        CredentialsError::CredentialsNotLoaded(_) => CredentialsError::not_loaded(cause),
        CredentialsError::ProviderTimedOut(timeout) => {
            CredentialsError::provider_timed_out(timeout.timeout_duration())
        }
        CredentialsError::InvalidConfiguration(_) => CredentialsError::invalid_configuration(cause),
        CredentialsError::ProviderError(_) => CredentialsError::provider_error(cause),
        _ => CredentialsError::unhandled(cause),
    }
}

/// One resolution's failure, shared by every caller that waited on it.
#[derive(Debug)]
struct SharedFailure(Arc<CredentialsError>);

impl fmt::Display for SharedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for SharedFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Keys named by their load's number, valid for `lifetime`, after `delay`.
    #[derive(Debug)]
    struct Numbered {
        loads: Arc<AtomicU64>,
        lifetime: Duration,
        delay: Duration,
    }

    impl ProvideCredentials for Numbered {
        fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            provider::future::ProvideCredentials::new(async move {
                let n = self.loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                let expiry = SystemClock.system_time() + self.lifetime;
                Ok(Credentials::new(
                    format!("AKID{n}"),
                    "s",
                    None,
                    Some(expiry),
                    "test",
                ))
            })
        }
    }

    fn warm(lifetime: Duration, delay: Duration) -> (WarmCredentials, Arc<AtomicU64>) {
        let loads = Arc::new(AtomicU64::new(0));
        let provider = Numbered {
            loads: Arc::clone(&loads),
            lifetime,
            delay,
        };
        let warm = WarmCredentials::new(SharedCredentialsProvider::new(provider));
        (warm, loads)
    }

    #[tokio::test(start_paused = true)]
    async fn callers_that_give_up_leave_the_resolution_running_for_the_next() {
        let (warm, loads) = warm(Duration::from_secs(3600), Duration::from_millis(50));
        for _ in 0..3 {
            let gave_up =
                tokio::time::timeout(Duration::from_millis(5), warm.provide_credentials()).await;
            assert!(gave_up.is_err());
        }
        let keys = warm.provide_credentials().await.unwrap();
        assert_eq!(keys.access_key_id(), "AKID0");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_near_their_expiry_still_sign_while_new_ones_are_fetched() {
        let (warm, loads) = warm(RENEW_AHEAD / 2, Duration::from_millis(20));
        warm.warm();
        let first = warm.provide_credentials().await.unwrap();
        assert_eq!(first.access_key_id(), "AKID0");
        // Within the renewal window: the current keys come at once, and a renewal starts.
        let again = warm.provide_credentials().await.unwrap();
        assert_eq!(again.access_key_id(), "AKID0");
        assert!(warm.shared.lock().resolving);
        // The provider's delay passes (in the test's paused time).
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        let renewed = warm.provide_credentials().await.unwrap();
        assert_eq!(renewed.access_key_id(), "AKID1");
    }

    #[test]
    fn a_resolution_whose_runtime_stopped_is_started_again_by_the_next_caller() {
        let (warm, loads) = warm(Duration::from_secs(3600), Duration::from_secs(3600));
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        first.block_on(async {
            warm.warm();
            tokio::task::yield_now().await;
        });
        // The task resolving on `first` is dropped with it.
        drop(first);
        assert!(!warm.shared.lock().resolving);
        assert!(warm.shared.lock().failure.is_some());
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let keys = second.block_on(warm.provide_credentials()).unwrap();
        assert_eq!(keys.access_key_id(), "AKID1");
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    /// A provider slower than the calls' timeout that fails: callers that come soon after see
    /// its failure at once (while it is asked again), rather than time out waiting again.
    #[tokio::test(start_paused = true)]
    async fn a_recent_failure_is_shown_at_once_while_the_provider_is_asked_again() {
        #[derive(Debug)]
        struct SlowFailure(Arc<AtomicU64>);
        impl ProvideCredentials for SlowFailure {
            fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                provider::future::ProvideCredentials::new(async move {
                    self.0.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Err(CredentialsError::provider_error("no role"))
                })
            }
        }
        let asked = Arc::new(AtomicU64::new(0));
        let warm = WarmCredentials::new(SharedCredentialsProvider::new(SlowFailure(Arc::clone(
            &asked,
        ))));
        assert!(warm.provide_credentials().await.is_err());
        let shown = tokio::time::timeout(Duration::from_millis(1), warm.provide_credentials())
            .await
            .expect("at once, not after the provider's 300 ms")
            .unwrap_err();
        let mut chain = Vec::new();
        let mut cause: Option<&(dyn Error + 'static)> = Some(&shown);
        while let Some(error) = cause {
            chain.push(error.to_string());
            cause = error.source();
        }
        assert!(
            chain.iter().any(|text| text.contains("no role")),
            "{chain:?}"
        );
        assert!(warm.shared.lock().resolving, "asked again meanwhile");
        tokio::task::yield_now().await;
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn every_waiter_gets_a_failure_of_the_provider_s_kind() {
        #[derive(Debug)]
        struct NotThere;
        impl ProvideCredentials for NotThere {
            fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                provider::future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
                    "no profile",
                )))
            }
        }
        let warm = WarmCredentials::new(SharedCredentialsProvider::new(NotThere));
        let (a, b) = tokio::join!(warm.provide_credentials(), warm.provide_credentials());
        for error in [a.unwrap_err(), b.unwrap_err()] {
            assert!(
                matches!(error, CredentialsError::CredentialsNotLoaded(_)),
                "{error:?}"
            );
            let cause = error.source().unwrap().to_string();
            assert!(
                cause.contains("not enabled") || cause.contains("not loaded"),
                "{cause}"
            );
        }
    }
}
