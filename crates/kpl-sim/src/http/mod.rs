//! The simulated service behind HTTP, for tests and benchmarks of clients that speak to
//! Kinesis over the network (the AWS SDK, the `kpl` command line): HTTP/1.1 with keep-alive,
//! the JSON 1.1 protocol the SDK sends, on loopback. Two endpoints share the wire code:
//!
//! - [`Endpoint`]: [`SimKinesis`] behind it (streams, shards, limits enforced in real time by
//!   the service's model, reshards, what was stored), faults injected at the HTTP level,
//!   scripted ([`Endpoint::script`]) or seeded ([`RandomFaults`]): error answers (applied or
//!   not), answers delayed past the client's timeout, connections reset mid-answer, calls never
//!   answered, wrong entry counts, malformed JSON, endless `NextToken`s, per-entry errors. It
//!   also answers IAM Identity Center's `GetRoleCredentials` and STS's
//!   `AssumeRoleWithWebIdentity`, for credential tests, and counts calls by operation, signing
//!   key and region.
//! - [`VerifyingEndpoint`]: as fast as it can, no limits and nothing stored: every `PutRecords`
//!   entry written to the shard owning its hash key, and checked as a KCL consumer reads it
//!   (aggregate trailers, every record inside its shard), counted in [`VerifiedCounts`].
//!   The scoreboard's stub.
//!
//! Behind the `http` feature.

mod faults;
mod verifying;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use self::faults::{Answer, State, answer, assume_role_with_web_identity, sso_role_credentials};
pub use self::faults::{Fault, RandomFaults};
pub use self::verifying::{VerifiedCounts, VerifyingEndpoint, fingerprint};
use self::wire::{read_request, write_answer};
use crate::SimKinesis;

/// Serves connections on a loopback port, on a thread and runtime of its own, each connection
/// with `serve`; returns the address. The server runs until the process ends.
fn serve_on_loopback<F, S>(name: &str, serve: S) -> io::Result<SocketAddr>
where
    S: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                while let Ok((socket, _)) = listener.accept().await {
                    let connection = serve(socket);
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
            });
        })?;
    Ok(address)
}

/// A Kinesis endpoint on loopback with the simulated service behind it, faults injected at the
/// HTTP level (scripted or seeded). It runs until the process ends.
#[derive(Clone)]
pub struct Endpoint {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Starts on loopback, on a thread and runtime of its own, with `sim` behind it.
    pub fn start(sim: SimKinesis) -> io::Result<Self> {
        let state = Arc::new(Mutex::new(State::new(sim)));
        let shared = Arc::clone(&state);
        let address = serve_on_loopback("kpl-sim-http", move |socket| {
            serve(socket, Arc::clone(&shared))
        })?;
        Ok(Self { address, state })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Queues faults for the next calls, whatever the random faults say.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state().script.extend(faults);
    }

    /// Turns seeded random faults on.
    pub fn set_random(&self, faults: RandomFaults) {
        let rng = SmallRng::seed_from_u64(faults.seed);
        self.state().random = Some((faults, rng));
    }

    /// Stalls (accepts every `PutRecords` and never answers) or recovers.
    pub fn set_stalled(&self, stalled: bool) {
        self.state().stalled = stalled;
    }

    /// Turns random faults off.
    pub fn clear_random(&self) {
        self.state().random = None;
    }

    /// Runs `f` on the simulated service (reshards, read-back).
    pub fn with_sim<T>(&self, f: impl FnOnce(&mut SimKinesis) -> T) -> T {
        f(&mut self.state().sim)
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.state().injected.clone()
    }

    /// Calls received so far by the access key id that signed them.
    pub fn access_keys(&self) -> BTreeMap<String, u64> {
        self.state().access_keys.clone()
    }

    /// Calls received so far by operation (see `State::operations`).
    pub fn operations(&self) -> BTreeMap<String, u64> {
        self.state().operations.clone()
    }

    /// Calls of `operation` received so far: a Kinesis operation by its `x-amz-target`, a
    /// CloudWatch one by the path that names it.
    pub fn calls_of(&self, operation: &str) -> u64 {
        self.operations()
            .iter()
            .filter(|(called, _)| called.rsplit(['.', '/']).next() == Some(operation))
            .map(|(_, calls)| calls)
            .sum()
    }

    /// Calls received so far by the region they were signed for.
    pub fn regions(&self) -> BTreeMap<String, u64> {
        self.state().regions.clone()
    }

    /// Calls received so far: all, and `PutRecords`.
    pub fn calls(&self) -> (u64, u64) {
        let state = self.state();
        (state.calls, state.put_calls)
    }
}

/// Serves the calls of one connection.
async fn serve(socket: TcpStream, state: Arc<Mutex<State>>) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    while let Some(request) = read_request(&mut reader, &mut line).await? {
        lock().count_call(&request);
        if let Some(why) = &request.unreadable {
            return write_answer(reader.get_mut(), 400, &wire::unreadable_answer(why)).await;
        }
        let answer = if request.path.starts_with("/federation/credentials") {
            sso_role_credentials(&request.bearer)
        } else if request.target.is_empty()
            && request
                .body
                .starts_with(b"Action=AssumeRoleWithWebIdentity")
        {
            assume_role_with_web_identity(&request.body)
        } else {
            answer(&mut lock(), &request.target, &request.body)
        };
        // A call held open must not hold its request too (memory runs measure the producer).
        drop(request);
        let socket = reader.get_mut();
        match answer {
            Answer::Reply { status, body } => write_answer(socket, status, &body).await?,
            Answer::Delayed { by, body } => {
                tokio::time::sleep(by).await;
                write_answer(socket, 200, &body).await?;
            }
            Answer::Reset { body } => {
                socket
                    .write_all(wire::head(200, body.len()).as_bytes())
                    .await?;
                socket.write_all(&body.as_bytes()[..body.len() / 2]).await?;
                return Ok(());
            }
            Answer::Silent => {
                // Hold the connection until the client gives up on it.
                let mut sink = Vec::new();
                let _ = reader.read_to_end(&mut sink).await;
                return Ok(());
            }
        }
    }
    Ok(())
}
