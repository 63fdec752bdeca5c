//! The simulated service's answers over HTTP, and the faults injected into them.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use kpl_aggregation::{HashKey, KinesisRecord};
use kpl_engine::time::{Clock, SystemClock};
use kpl_engine::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, PutRecordsEntryResult, PutRecordsRequest,
    ShardFilter,
};
use kpl_engine::{Request, Response, Stream, TransportError, TransportErrorKind};
use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::{Value, json};

use super::wire::HttpRequest;
use crate::SimKinesis;

/// One fault, for one call. Where a fault is `applied`, the call took effect in the service
/// before the fault hid its answer, as a real one can.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with an HTTP status and an error code.
    Status {
        /// The HTTP status.
        status: u16,
        /// The error code (`__type`).
        code: &'static str,
        /// Whether the call took effect first.
        applied: bool,
    },
    /// Answer correctly, but only after a while (past the client's timeout).
    Delay {
        /// How long.
        by: Duration,
        /// Whether the call took effect (else the late answer is an error).
        applied: bool,
    },
    /// Close the connection halfway through the answer (the call took effect).
    Reset,
    /// Never answer (keep the connection open).
    Silent {
        /// Whether the call took effect.
        applied: bool,
    },
    /// A `PutRecords` answer with one result missing (the call took effect).
    WrongCount,
    /// An answer that is not JSON.
    Malformed {
        /// Whether the call took effect.
        applied: bool,
    },
    /// A `ListShards` page whose `NextToken` always leads back to itself.
    EndlessToken,
    /// Some entries of a `PutRecords` fail (not stored); the others are written.
    EntryErrors {
        /// Their error code.
        code: &'static str,
        /// Every `every`-th entry fails, the first included.
        every: usize,
    },
    /// A `PutRecords` refused whole (not stored) with an `InternalFailure` whose message is
    /// `bytes` long: an answer larger than any the service gives.
    Oversized {
        /// The message's length.
        bytes: usize,
    },
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
            Self::Oversized { .. } => "Oversized",
        }
    }
}

/// Seeded random faults: each call draws one with `probability`.
#[derive(Clone, Debug)]
pub struct RandomFaults {
    /// The seed of the draws.
    pub seed: u64,
    /// The chance that a call draws a fault.
    pub probability: f64,
    /// How long delayed answers wait (past the client's request timeout).
    pub delay: Duration,
}

pub(super) struct State {
    pub(super) sim: SimKinesis,
    pub(super) script: VecDeque<Fault>,
    pub(super) random: Option<(RandomFaults, SmallRng)>,
    pub(super) injected: BTreeMap<String, u64>,
    pub(super) calls: u64,
    pub(super) put_calls: u64,
    /// Every `PutRecords` is accepted and never answered.
    pub(super) stalled: bool,
    /// Calls by the access key id they were signed with.
    pub(super) access_keys: BTreeMap<String, u64>,
    /// Calls by the region they were signed for.
    pub(super) regions: BTreeMap<String, u64>,
    /// Calls by operation: the `x-amz-target` header, or the path of a call without one (a
    /// CloudWatch call in RPC v2 CBOR names its operation in the path).
    pub(super) operations: BTreeMap<String, u64>,
}

impl State {
    pub(super) fn new(sim: SimKinesis) -> Self {
        Self {
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
        }
    }

    /// Counts a call by who signed it, for which region, and its operation.
    pub(super) fn count_call(&mut self, request: &HttpRequest) {
        *self
            .access_keys
            .entry(request.access_key.clone())
            .or_default() += 1;
        *self.regions.entry(request.region.clone()).or_default() += 1;
        let operation = if request.target.is_empty() {
            request.path.clone()
        } else {
            request.target.clone()
        };
        *self.operations.entry(operation).or_default() += 1;
    }
}

/// What to send back, decided under the lock and written after it.
pub(super) enum Answer {
    Reply { status: u16, body: String },
    Delayed { by: Duration, body: String },
    Reset { body: String },
    Silent,
}

/// IAM Identity Center's `GetRoleCredentials` (REST JSON): keys named after the portal's
/// bearer token (`AKID` + token), as STS's below.
pub(super) fn sso_role_credentials(bearer: &str) -> Answer {
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
pub(super) fn assume_role_with_web_identity(body: &[u8]) -> Answer {
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

pub(super) fn answer(state: &mut State, target: &str, body: &[u8]) -> Answer {
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
        let request = to_request(&operation, &request)?;
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
        Some(Fault::Oversized { bytes }) => {
            let message = "x".repeat(bytes);
            let body = json!({"__type": "InternalFailure", "message": message}).to_string();
            Answer::Reply { status: 500, body }
        }
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
    let put = match to_request("PutRecords", request) {
        Ok(Request::PutRecords(put)) => put,
        Ok(_) => return error_answer(&unreadable("not a PutRecords")).1,
        Err(error) => return error_answer(&error).1,
    };
    let (failing, passing): (Vec<_>, Vec<_>) = put
        .entries
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % every.max(1) == 0);
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

/// A request the service cannot read: answered as the service answers it.
fn unreadable(what: &str) -> TransportError {
    TransportError::new(
        TransportErrorKind::Validation,
        "SerializationException",
        format!("the request could not be read: {what}"),
    )
}

fn stream_of(request: &Value) -> Result<Stream, TransportError> {
    let name = request["StreamARN"]
        .as_str()
        .or_else(|| request["StreamName"].as_str())
        .unwrap_or("missing");
    Stream::new(name).map_err(|error| unreadable(&error.to_string()))
}

fn put_entry(entry: &Value) -> Result<KinesisRecord, TransportError> {
    let data = base64_simd::STANDARD
        .decode_to_vec(entry["Data"].as_str().unwrap_or_default())
        .map_err(|_| unreadable("Data is not base64"))?;
    let record = KinesisRecord::new(entry["PartitionKey"].as_str().unwrap_or_default(), data);
    Ok(match entry["ExplicitHashKey"].as_str() {
        Some(ehk) => {
            let hash_key =
                HashKey::parse_decimal(ehk).map_err(|error| unreadable(&error.to_string()))?;
            record.with_explicit_hash_key(hash_key)
        }
        None => record,
    })
}

fn to_request(operation: &str, request: &Value) -> Result<Request, TransportError> {
    Ok(match operation {
        "PutRecords" => Request::PutRecords(PutRecordsRequest::new(
            stream_of(request)?,
            request["Records"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(put_entry)
                .collect::<Result<_, _>>()?,
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
                // A page after the first names its stream by the token alone.
                Stream::new("s").map_err(|error| unreadable(&error.to_string()))?
            } else {
                stream_of(request)?
            };
            Request::ListShards(ListShardsRequest::new(
                stream,
                next_token,
                filter,
                request["MaxResults"].as_u64().unwrap_or(1_000) as u32,
            ))
        }
        _ => Request::DescribeStreamSummary(DescribeStreamSummaryRequest::new(stream_of(request)?)),
    })
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
