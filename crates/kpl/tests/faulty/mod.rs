//! A fault-injecting Kinesis endpoint on loopback: HTTP/1.1 speaking the JSON 1.1 protocol the
//! AWS SDK sends, with the simulated service (`kpl-sim`) behind it for streams, shards, limits,
//! reshards and what was stored. Faults are injected at the HTTP level, scripted or seeded:
//! error answers (applied or not), answers delayed past the client's timeout, connections reset
//! mid-answer, calls never answered, wrong entry counts, malformed JSON, endless `NextToken`s,
//! and per-entry errors.
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    dead_code,
    reason = "a test server; each test uses a part"
)]

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_types::base64;
use kpl::time::{Clock, SystemClock};
use kpl::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, PutRecordsEntryResult, PutRecordsRequest,
    ShardFilter,
};
use kpl::{Stream, TransportError};
use kpl_aggregation::{HashKey, KinesisRecord};
use kpl_engine::{Request, Response};
use kpl_sim::SimKinesis;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One fault, for one call.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fault {
    /// Answer with this HTTP status and error code; `applied`: the call took effect first.
    Status {
        status: u16,
        code: &'static str,
        applied: bool,
    },
    /// Answer correctly, but only after this long (past the client's timeout).
    Delay { by: Duration, applied: bool },
    /// Close the connection halfway through the answer (the call took effect).
    Reset,
    /// Never answer (keep the connection open); `applied`: the call took effect.
    Silent { applied: bool },
    /// A `PutRecords` answer with one result missing (the call took effect).
    WrongCount,
    /// An answer that is not JSON; `applied`: the call took effect.
    Malformed { applied: bool },
    /// A `ListShards` page whose `NextToken` always leads back to itself.
    EndlessToken,
    /// Every `every`-th entry of a `PutRecords` fails with `code` (not stored).
    EntryErrors { code: &'static str, every: usize },
}

impl Fault {
    /// The fault's kind, for counting.
    fn kind(&self) -> &'static str {
        match self {
            Self::Status { .. } => "Status",
            Self::Delay { .. } => "Delay",
            Self::Reset => "Reset",
            Self::Silent { .. } => "Silent",
            Self::WrongCount => "WrongCount",
            Self::Malformed { .. } => "Malformed",
            Self::EndlessToken => "EndlessToken",
            Self::EntryErrors { .. } => "EntryErrors",
        }
    }
}

/// Seeded random faults: each call draws one with `probability`.
#[derive(Clone, Debug)]
pub(crate) struct RandomFaults {
    pub(crate) seed: u64,
    pub(crate) probability: f64,
    /// How long delayed answers wait (past the client's request timeout).
    pub(crate) delay: Duration,
}

struct State {
    sim: SimKinesis,
    script: VecDeque<Fault>,
    random: Option<(RandomFaults, SmallRng)>,
    injected: BTreeMap<String, u64>,
    calls: u64,
    put_calls: u64,
    /// Every `PutRecords` is accepted and never answered.
    stalled: bool,
    /// Calls by the access key id they were signed with.
    access_keys: BTreeMap<String, u64>,
    /// Calls by the region they were signed for.
    regions: BTreeMap<String, u64>,
    /// Calls by operation: the `x-amz-target` header, or the path of a call without one (a
    /// CloudWatch call in RPC v2 CBOR names its operation in the path).
    operations: BTreeMap<String, u64>,
}

/// A running endpoint; it stops with the test process.
#[derive(Clone)]
pub(crate) struct FaultyKinesis {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FaultyKinesis {
    /// Starts on loopback, on a thread and runtime of its own, with `sim` behind it.
    pub(crate) fn start(sim: SimKinesis) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            sim,
            script: VecDeque::new(),
            random: None,
            injected: BTreeMap::new(),
            calls: 0,
            put_calls: 0,
            stalled: false,
            access_keys: BTreeMap::new(),
            regions: BTreeMap::new(),
            operations: BTreeMap::new(),
        }));
        let shared = Arc::clone(&state);
        std::thread::Builder::new()
            .name("faulty-kinesis".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).unwrap();
                    while let Ok((socket, _)) = listener.accept().await {
                        let state = Arc::clone(&shared);
                        tokio::spawn(async move {
                            let _ = serve(socket, state).await;
                        });
                    }
                });
            })?;
        Ok(Self { address, state })
    }

    /// The endpoint URL.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Queues faults for the next calls, whatever the random faults say.
    pub(crate) fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.lock().unwrap().script.extend(faults);
    }

    /// Turns seeded random faults on.
    pub(crate) fn set_random(&self, faults: RandomFaults) {
        let rng = SmallRng::seed_from_u64(faults.seed);
        self.state.lock().unwrap().random = Some((faults, rng));
    }

    /// Stalls (accepts every `PutRecords` and never answers) or recovers.
    pub(crate) fn set_stalled(&self, stalled: bool) {
        self.state.lock().unwrap().stalled = stalled;
    }

    /// Turns random faults off.
    pub(crate) fn clear_random(&self) {
        self.state.lock().unwrap().random = None;
    }

    /// Runs `f` on the simulated service (reshards, read-back).
    pub(crate) fn with_sim<T>(&self, f: impl FnOnce(&mut SimKinesis) -> T) -> T {
        f(&mut self.state.lock().unwrap().sim)
    }

    /// Faults injected so far, by kind.
    pub(crate) fn injected(&self) -> BTreeMap<String, u64> {
        self.state.lock().unwrap().injected.clone()
    }

    /// Calls received so far by the access key id that signed them.
    pub(crate) fn access_keys(&self) -> BTreeMap<String, u64> {
        self.state.lock().unwrap().access_keys.clone()
    }

    /// Calls received so far by operation (see `State::operations`).
    pub(crate) fn operations(&self) -> BTreeMap<String, u64> {
        self.state.lock().unwrap().operations.clone()
    }

    /// Calls of `operation` received so far: a Kinesis operation by its `x-amz-target`, a
    /// CloudWatch one by the path that names it.
    pub(crate) fn calls_of(&self, operation: &str) -> u64 {
        self.operations()
            .iter()
            .filter(|(called, _)| called.rsplit(['.', '/']).next() == Some(operation))
            .map(|(_, calls)| calls)
            .sum()
    }

    /// Calls received so far by the region they were signed for.
    pub(crate) fn regions(&self) -> BTreeMap<String, u64> {
        self.state.lock().unwrap().regions.clone()
    }

    /// Calls received so far: all, and `PutRecords`.
    pub(crate) fn calls(&self) -> (u64, u64) {
        let state = self.state.lock().unwrap();
        (state.calls, state.put_calls)
    }
}

/// What to send back, decided under the lock and written after it.
enum Answer {
    Reply { status: u16, body: String },
    Delayed { by: Duration, body: String },
    Reset { body: String },
    Silent,
}

async fn serve(socket: TcpStream, state: Arc<Mutex<State>>) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        let mut target = String::new();
        let (mut access_key, mut region) = (String::new(), String::new());
        let mut bearer = String::new();
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("x-amz-sso_bearer_token") {
                    bearer = value.trim().to_owned();
                } else if name.eq_ignore_ascii_case("x-amz-target") {
                    target = value.trim().to_owned();
                } else if name.eq_ignore_ascii_case("authorization") {
                    // `AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/...`
                    let credential = value.split("Credential=").nth(1).unwrap_or_default();
                    let mut scope = credential.split('/');
                    access_key = scope.next().unwrap_or_default().to_owned();
                    region = scope.nth(1).unwrap_or_default().to_owned();
                }
            }
        }
        {
            let mut state = state.lock().unwrap();
            *state.access_keys.entry(access_key).or_default() += 1;
            *state.regions.entry(region).or_default() += 1;
            let operation = if target.is_empty() {
                path.clone()
            } else {
                target.clone()
            };
            *state.operations.entry(operation).or_default() += 1;
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await?;
        let answer = if path.starts_with("/federation/credentials") {
            sso_role_credentials(&bearer)
        } else if target.is_empty() && body.starts_with(b"Action=AssumeRoleWithWebIdentity") {
            assume_role_with_web_identity(&body)
        } else {
            let mut state = state.lock().unwrap();
            answer(&mut state, &target, &body)
        };
        // A call held open must not hold its request too (memory runs measure the producer).
        drop(body);
        let socket = reader.get_mut();
        match answer {
            Answer::Reply { status, body } => write_answer(socket, status, &body).await?,
            Answer::Delayed { by, body } => {
                tokio::time::sleep(by).await;
                write_answer(socket, 200, &body).await?;
            }
            Answer::Reset { body } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                socket.write_all(head.as_bytes()).await?;
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
}

/// IAM Identity Center's `GetRoleCredentials` (REST JSON): keys named after the portal's
/// bearer token (`AKID` + token), as STS's below.
fn sso_role_credentials(bearer: &str) -> Answer {
    if bearer.is_empty() || !bearer.chars().all(|c| c.is_ascii_alphanumeric()) {
        let body = r#"{"message":"the session token is missing or invalid"}"#;
        return Answer::Reply {
            status: 401,
            body: body.to_owned(),
        };
    }
    let body = serde_json::json!({"roleCredentials": {
        "accessKeyId": format!("AKID{bearer}"),
        "secretAccessKey": "sso-secret",
        "sessionToken": "session",
        "expiration": 4_070_908_800_000_u64,
    }});
    Answer::Reply {
        status: 200,
        body: body.to_string(),
    }
}

/// STS's `AssumeRoleWithWebIdentity` (query protocol, form in, XML out): keys named after the
/// token (`AKID` + token), so a test sees which token reached the service; a call without a
/// role or with a token that is not plain letters and digits is refused as STS refuses it.
fn assume_role_with_web_identity(body: &[u8]) -> Answer {
    let form = String::from_utf8_lossy(body);
    let field = |name: &str| {
        form.split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_default()
            .to_owned()
    };
    let (token, role) = (field("WebIdentityToken"), field("RoleArn"));
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_alphanumeric()) || role.is_empty() {
        let body = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\
                    <Message>the token or the role is missing</Message></Error></ErrorResponse>";
        return Answer::Reply {
            status: 400,
            body: body.to_owned(),
        };
    }
    let body = format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>AKID{token}</AccessKeyId>\
         <SecretAccessKey>web-identity-secret</SecretAccessKey><SessionToken>session</SessionToken>\
         <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
         <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/kpl/kpl</Arn><AssumedRoleId>AROAKPL:kpl</AssumedRoleId></AssumedRoleUser>\
         </AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>1</RequestId>\
         </ResponseMetadata></AssumeRoleWithWebIdentityResponse>"
    );
    Answer::Reply { status: 200, body }
}

async fn write_answer(socket: &mut TcpStream, status: u16, body: &str) -> io::Result<()> {
    let reason = if status == 200 { "OK" } else { "Error" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await
}

fn draw(state: &mut State, operation: &str) -> Option<Fault> {
    if state.stalled && operation == "PutRecords" {
        return Some(Fault::Silent { applied: false });
    }
    if let Some(fault) = state.script.pop_front() {
        return Some(fault);
    }
    let (faults, rng) = state.random.as_mut()?;
    if !rng.random_bool(faults.probability) {
        return None;
    }
    let applied = rng.random_bool(0.5);
    let delay = faults.delay;
    let choices: Vec<Fault> = if operation == "PutRecords" {
        vec![
            Fault::Status {
                status: 500,
                code: "InternalFailure",
                applied,
            },
            Fault::Status {
                status: 503,
                code: "ServiceUnavailable",
                applied: false,
            },
            Fault::Status {
                status: 400,
                code: "ProvisionedThroughputExceededException",
                applied: false,
            },
            Fault::Delay { by: delay, applied },
            Fault::Reset,
            Fault::Silent { applied },
            Fault::WrongCount,
            Fault::Malformed { applied },
            Fault::EntryErrors {
                code: "ProvisionedThroughputExceededException",
                every: 2,
            },
            Fault::EntryErrors {
                code: "InternalFailure",
                every: 3,
            },
            Fault::EntryErrors {
                code: "KMSThrottlingException",
                every: 4,
            },
        ]
    } else {
        vec![
            Fault::Status {
                status: 500,
                code: "InternalFailure",
                applied: false,
            },
            Fault::Status {
                status: 400,
                code: "LimitExceededException",
                applied: false,
            },
            Fault::Malformed { applied: false },
        ]
    };
    Some(choices[rng.random_range(0..choices.len())].clone())
}

fn answer(state: &mut State, target: &str, body: &[u8]) -> Answer {
    state.calls += 1;
    let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
    if operation == "PutRecords" {
        state.put_calls += 1;
    }
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let fault = draw(state, &operation);
    if let Some(fault) = &fault {
        *state.injected.entry(fault.kind().to_owned()).or_default() += 1;
    }
    let now = SystemClock.now();
    let apply = |state: &mut State| -> Result<Value, TransportError> {
        let request = to_request(&operation, &request);
        let response = state.sim.handle(request, now)?;
        Ok(to_json(response))
    };
    let success = |result: Result<Value, TransportError>| match result {
        Ok(value) => (200, value.to_string()),
        Err(error) => error_answer(&error),
    };
    match fault {
        None => {
            let (status, body) = success(apply(state));
            Answer::Reply { status, body }
        }
        Some(Fault::Status {
            status,
            code,
            applied,
        }) => {
            if applied {
                let _ = apply(state);
            }
            let body = json!({"__type": code, "message": "injected"}).to_string();
            Answer::Reply { status, body }
        }
        Some(Fault::Delay { by, applied }) => {
            let body = if applied {
                success(apply(state)).1
            } else {
                json!({"__type": "InternalFailure", "message": "late"}).to_string()
            };
            Answer::Delayed { by, body }
        }
        Some(Fault::Reset) => Answer::Reset {
            body: success(apply(state)).1,
        },
        Some(Fault::Silent { applied }) => {
            if applied {
                let _ = apply(state);
            }
            Answer::Silent
        }
        Some(Fault::WrongCount) => {
            let (status, body) = success(apply(state));
            let mut value: Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(records) = value["Records"].as_array_mut() {
                records.pop();
            }
            Answer::Reply {
                status,
                body: value.to_string(),
            }
        }
        Some(Fault::Malformed { applied }) => {
            if applied {
                let _ = apply(state);
            }
            Answer::Reply {
                status: 200,
                body: "{\"Records\": [".to_owned(),
            }
        }
        Some(Fault::EndlessToken) => {
            let (status, body) = success(apply(state));
            let mut value: Value = serde_json::from_str(&body).unwrap_or_default();
            value["NextToken"] = json!("again");
            Answer::Reply {
                status,
                body: value.to_string(),
            }
        }
        Some(Fault::EntryErrors { code, every }) => Answer::Reply {
            status: 200,
            body: entry_errors(state, &request, code, every, now),
        },
    }
}

/// A `PutRecords` where every `every`-th entry fails with `code` without being stored.
fn entry_errors(
    state: &mut State,
    request: &Value,
    code: &str,
    every: usize,
    now: std::time::Instant,
) -> String {
    let Request::PutRecords(put) = to_request("PutRecords", request) else {
        unreachable!()
    };
    let (failing, passing): (Vec<_>, Vec<_>) = put
        .entries
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % every == 0);
    let passed = if passing.is_empty() {
        Ok(Vec::new())
    } else {
        let request = Request::PutRecords(PutRecordsRequest::new(
            put.stream,
            passing.iter().map(|(_, e)| e.clone()).collect(),
        ));
        state
            .sim
            .handle(request, now)
            .map(|response| match response {
                Response::PutRecords(put) => put.entries,
                _ => Vec::new(),
            })
    };
    let passed = match passed {
        Ok(passed) => passed,
        Err(error) => return error_answer(&error).1,
    };
    let mut results: Vec<(usize, Value)> = failing
        .iter()
        .map(|(i, _)| (*i, json!({"ErrorCode": code, "ErrorMessage": "injected"})))
        .collect();
    results.extend(
        passing
            .iter()
            .map(|(i, _)| *i)
            .zip(passed.into_iter().map(entry_json)),
    );
    results.sort_by_key(|(i, _)| *i);
    let failed = results
        .iter()
        .filter(|(_, r)| r.get("ErrorCode").is_some())
        .count();
    json!({"FailedRecordCount": failed, "Records": results.into_iter().map(|(_, r)| r).collect::<Vec<_>>()})
        .to_string()
}

fn stream_of(request: &Value) -> Stream {
    let name = request["StreamARN"]
        .as_str()
        .or_else(|| request["StreamName"].as_str())
        .unwrap_or("missing");
    Stream::new(name).unwrap()
}

fn to_request(operation: &str, request: &Value) -> Request {
    match operation {
        "PutRecords" => Request::PutRecords(PutRecordsRequest::new(
            stream_of(request),
            request["Records"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|entry| {
                    let data = base64::decode(entry["Data"].as_str().unwrap_or_default()).unwrap();
                    let record = KinesisRecord::new(
                        entry["PartitionKey"].as_str().unwrap_or_default(),
                        data,
                    );
                    match entry["ExplicitHashKey"].as_str() {
                        Some(ehk) => {
                            record.with_explicit_hash_key(HashKey::parse_decimal(ehk).unwrap())
                        }
                        None => record,
                    }
                })
                .collect(),
        )),
        "ListShards" => {
            let next_token = request["NextToken"].as_str().map(str::to_owned);
            let filter = match request["ShardFilter"]["Type"].as_str() {
                Some("FROM_TRIM_HORIZON") => ShardFilter::FromTrimHorizon,
                _ => ShardFilter::AtLatest,
            };
            // A token this endpoint made up leads back to the first page.
            let next_token = next_token.filter(|token| token != "again");
            let stream = if request["StreamName"].is_null() && request["StreamARN"].is_null() {
                Stream::new("s").unwrap()
            } else {
                stream_of(request)
            };
            Request::ListShards(ListShardsRequest::new(
                stream,
                next_token,
                filter,
                request["MaxResults"].as_u64().unwrap_or(1_000) as u32,
            ))
        }
        _ => Request::DescribeStreamSummary(DescribeStreamSummaryRequest::new(stream_of(request))),
    }
}

fn entry_json(entry: PutRecordsEntryResult) -> Value {
    match entry {
        PutRecordsEntryResult::Written {
            shard_id,
            sequence_number,
        } => json!({"ShardId": shard_id.as_str(), "SequenceNumber": &*sequence_number}),
        PutRecordsEntryResult::Failed { code, message } => {
            json!({"ErrorCode": code, "ErrorMessage": message})
        }
    }
}

fn to_json(response: Response) -> Value {
    match response {
        Response::PutRecords(put) => {
            let failed = put
                .entries
                .iter()
                .filter(|e| matches!(e, PutRecordsEntryResult::Failed { .. }))
                .count();
            json!({
                "FailedRecordCount": failed,
                "Records": put.entries.into_iter().map(entry_json).collect::<Vec<_>>(),
            })
        }
        Response::ListShards(page) => {
            let shards: Vec<Value> = page
                .shards
                .iter()
                .map(|shard| {
                    let mut sequence = json!({"StartingSequenceNumber": "0"});
                    if !shard.open {
                        sequence["EndingSequenceNumber"] = json!("9");
                    }
                    json!({
                        "ShardId": shard.shard_id.as_str(),
                        "HashKeyRange": {
                            "StartingHashKey": shard.hash_key_range.start().to_string(),
                            "EndingHashKey": shard.hash_key_range.end().to_string(),
                        },
                        "SequenceNumberRange": sequence,
                    })
                })
                .collect();
            let mut value = json!({"Shards": shards});
            if let Some(token) = page.next_token {
                value["NextToken"] = json!(token);
            }
            value
        }
        Response::DescribeStreamSummary(summary) => json!({
            "StreamDescriptionSummary": {
                "StreamName": "s",
                "StreamARN": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
                "StreamStatus": "ACTIVE",
                "RetentionPeriodHours": 24,
                "StreamCreationTimestamp": 1.7e9,
                "EnhancedMonitoring": [],
                "OpenShardCount": summary.open_shard_count,
                "MaxRecordSizeInKiB": summary.max_record_size_kib,
            }
        }),
        _ => json!({}),
    }
}

fn error_answer(error: &TransportError) -> (u16, String) {
    let status = if error.is_retryable() && error.code().contains("Internal") {
        500
    } else {
        400
    };
    (
        status,
        json!({"__type": error.code(), "message": error.message()}).to_string(),
    )
}
