//! Request building and response mapping against a replaying HTTP client: no server needed.
//! One test per row of the error table (`docs/aws-errors.md`).
#![allow(clippy::unwrap_used, reason = "tests")]

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_credential_types::Credentials;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::put_records::PutRecordsError;
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
use aws_smithy_types::body::SdkBody;
use kpl_aggregation::{HashKey, HashKeyRange, KinesisRecord};
use kpl_aws::{AwsSettings, AwsSettingsError, AwsTransport, map_sdk_error};
use kpl_engine::transport::{
    DescribeStreamSummaryRequest, ListShardsRequest, PutRecordsEntryResult, PutRecordsRequest,
    ShardFilter, Transport,
};
use kpl_engine::{Stream, TransportError, TransportErrorKind};

fn response(status: u16, body: &str) -> ReplayEvent {
    ReplayEvent::new(
        http::Request::builder()
            .uri("https://kinesis.us-east-1.amazonaws.com/")
            .body(SdkBody::empty())
            .unwrap(),
        http::Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.1")
            .body(SdkBody::from(body))
            .unwrap(),
    )
}

fn transport(events: Vec<ReplayEvent>) -> (AwsTransport, StaticReplayClient) {
    let http = StaticReplayClient::new(events);
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .http_client(http.clone())
        .build();
    (AwsTransport::from_client(Client::from_conf(config)), http)
}

fn bodies(http: &StaticReplayClient) -> Vec<serde_json::Value> {
    http.actual_requests()
        .map(|request| serde_json::from_slice(request.body().bytes().unwrap()).unwrap())
        .collect()
}

fn put(stream: &str) -> PutRecordsRequest {
    PutRecordsRequest::new(
        Stream::new(stream).unwrap(),
        vec![
            KinesisRecord::new("pk-1", &b"one"[..]).with_explicit_hash_key(HashKey::new(42)),
            KinesisRecord::new("pk-2", &b"two"[..]),
        ],
    )
}

#[tokio::test]
async fn put_records_maps_each_entry_and_sends_keys_and_data() {
    let (transport, http) = transport(vec![response(
        200,
        r#"{"FailedRecordCount":1,"Records":[
            {"SequenceNumber":"495","ShardId":"shardId-000000000001"},
            {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard"}]}"#,
    )]);
    let answer = transport.put_records(put("orders")).await.unwrap();
    assert_eq!(answer.entries.len(), 2);
    assert!(
        matches!(&answer.entries[0], PutRecordsEntryResult::Written { shard_id, sequence_number }
        if shard_id.as_str() == "shardId-000000000001" && &**sequence_number == "495")
    );
    assert!(
        matches!(&answer.entries[1], PutRecordsEntryResult::Failed { code, message }
        if code == "ProvisionedThroughputExceededException" && message == "Rate exceeded for shard")
    );
    let body = &bodies(&http)[0];
    assert_eq!(body["StreamName"], "orders");
    assert_eq!(body["Records"][0]["PartitionKey"], "pk-1");
    assert_eq!(body["Records"][0]["ExplicitHashKey"], "42");
    assert_eq!(body["Records"][0]["Data"], "b25l"); // base64 of "one"
    assert!(body["Records"][1].get("ExplicitHashKey").is_none());
}

#[tokio::test]
async fn streams_addressed_by_arn_send_the_arn() {
    let (transport, http) = transport(vec![response(
        200,
        r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","ShardId":"shardId-0"},{"SequenceNumber":"2","ShardId":"shardId-0"}]}"#,
    )]);
    let arn = "arn:aws:kinesis:us-east-1:210987654321:stream/shared";
    transport.put_records(put(arn)).await.unwrap();
    let body = &bodies(&http)[0];
    assert_eq!(body["StreamARN"], arn);
    assert!(body.get("StreamName").is_none());
}

#[tokio::test]
async fn a_malformed_entry_is_an_entry_failure() {
    let (transport, _http) = transport(vec![response(
        200,
        r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"},{"SequenceNumber":"2","ShardId":"shardId-0"}]}"#,
    )]);
    let answer = transport.put_records(put("s")).await.unwrap();
    assert!(
        matches!(&answer.entries[0], PutRecordsEntryResult::Failed { code, .. } if code == "MalformedResponse")
    );
}

#[tokio::test]
async fn list_shards_pages_carry_only_the_token_after_the_first() {
    let (transport, http) = transport(vec![
        response(
            200,
            r#"{"Shards":[{"ShardId":"shardId-000000000000","HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"170141183460469231731687303715884105727"},"SequenceNumberRange":{"StartingSequenceNumber":"1"}}],"NextToken":"tok-1"}"#,
        ),
        response(
            200,
            r#"{"Shards":[{"ShardId":"shardId-000000000001","HashKeyRange":{"StartingHashKey":"170141183460469231731687303715884105728","EndingHashKey":"340282366920938463463374607431768211455"},"SequenceNumberRange":{"StartingSequenceNumber":"1","EndingSequenceNumber":"9"}}]}"#,
        ),
    ]);
    let first = transport
        .list_shards(ListShardsRequest::new(
            Stream::new("s").unwrap(),
            None,
            ShardFilter::AtLatest,
            1000,
        ))
        .await
        .unwrap();
    assert_eq!(first.next_token.as_deref(), Some("tok-1"));
    assert!(first.shards[0].open);
    assert_eq!(first.shards[0].hash_key_range.start(), HashKey::new(0));
    let second = transport
        .list_shards(ListShardsRequest::new(
            Stream::new("s").unwrap(),
            first.next_token,
            ShardFilter::AtLatest,
            1000,
        ))
        .await
        .unwrap();
    assert!(
        !second.shards[0].open,
        "an ending sequence number means closed"
    );
    assert_eq!(second.shards[0].hash_key_range.end(), HashKey::MAX);
    let sent = bodies(&http);
    assert_eq!(sent[0]["StreamName"], "s");
    assert_eq!(sent[0]["ShardFilter"]["Type"], "AT_LATEST");
    assert_eq!(sent[1]["NextToken"], "tok-1");
    assert!(
        sent[1].get("StreamName").is_none()
            && sent[1].get("StreamARN").is_none()
            && sent[1].get("ShardFilter").is_none()
    );
}

#[tokio::test]
async fn a_listing_of_every_shard_asks_from_the_trim_horizon_and_sees_closed_shards() {
    let (transport, http) = transport(vec![response(
        200,
        r#"{"Shards":[{"ShardId":"shardId-000000000000","HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"340282366920938463463374607431768211455"},"SequenceNumberRange":{"StartingSequenceNumber":"1","EndingSequenceNumber":"9"}}]}"#,
    )]);
    let listing = transport
        .list_shards(ListShardsRequest::new(
            Stream::new("s").unwrap(),
            None,
            ShardFilter::FromTrimHorizon,
            1000,
        ))
        .await
        .unwrap();
    assert!(!listing.shards[0].open);
    assert_eq!(listing.shards[0].hash_key_range, HashKeyRange::FULL);
    assert_eq!(bodies(&http)[0]["ShardFilter"]["Type"], "FROM_TRIM_HORIZON");
}

#[tokio::test]
async fn a_shard_with_a_bad_hash_key_is_a_malformed_response() {
    let (transport, _http) = transport(vec![response(
        200,
        r#"{"Shards":[{"ShardId":"shardId-0","HashKeyRange":{"StartingHashKey":"zero","EndingHashKey":"1"}}]}"#,
    )]);
    let error = transport
        .list_shards(ListShardsRequest::new(
            Stream::new("s").unwrap(),
            None,
            ShardFilter::AtLatest,
            10,
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "MalformedResponse");
}

#[tokio::test]
async fn describe_stream_summary_reports_the_record_size_limit() {
    let (transport, _http) = transport(vec![response(
        200,
        r#"{"StreamDescriptionSummary":{"StreamName":"s","StreamARN":"arn:aws:kinesis:us-east-1:123456789012:stream/s","StreamStatus":"ACTIVE","RetentionPeriodHours":24,"StreamCreationTimestamp":1.7E9,"EnhancedMonitoring":[],"OpenShardCount":4,"MaxRecordSizeInKiB":4096}}"#,
    )]);
    let summary = transport
        .describe_stream_summary(DescribeStreamSummaryRequest::new(Stream::new("s").unwrap()))
        .await
        .unwrap();
    assert_eq!(summary.max_record_size_kib, Some(4096));
    assert_eq!(summary.open_shard_count, 4);
}

async fn error_for(status: u16, body: &str) -> TransportError {
    let (transport, _http) = transport(vec![response(status, body)]);
    transport.put_records(put("s")).await.unwrap_err()
}

fn service_error(code: &str) -> String {
    format!(r#"{{"__type":"{code}","message":"{code} happened"}}"#)
}

#[tokio::test]
async fn a_signature_error_quoting_the_session_token_does_not_carry_it() {
    let body = r#"{"__type":"InvalidSignatureException","message":"The request signature we calculated does not match the signature you provided.\n\nThe Canonical String for this request should have been\n'POST\n/\n\nx-amz-security-token:IQoJb3JpZ2luX2VjSECRETTOKEN\n'"}"#;
    let error = error_for(400, body).await;
    assert_eq!(error.kind(), TransportErrorKind::ExpiredCredentials);
    let mut chain = format!("{error} {error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    assert!(!chain.contains("SECRETTOKEN"), "{chain}");
    assert!(
        error
            .message()
            .starts_with("The request signature we calculated")
    );
}

#[tokio::test]
async fn every_service_error_code_maps_to_its_kind() {
    let rows = [
        (
            400,
            "ProvisionedThroughputExceededException",
            TransportErrorKind::Throttled,
            true,
        ),
        (
            400,
            "LimitExceededException",
            TransportErrorKind::Throttled,
            true,
        ),
        (
            400,
            "KMSThrottlingException",
            TransportErrorKind::Throttled,
            true,
        ),
        (
            500,
            "InternalFailureException",
            TransportErrorKind::ServiceUnavailable,
            true,
        ),
        (
            500,
            "InternalFailure",
            TransportErrorKind::ServiceUnavailable,
            true,
        ),
        (
            503,
            "ServiceUnavailable",
            TransportErrorKind::ServiceUnavailable,
            true,
        ),
        (
            400,
            "ResourceNotFoundException",
            TransportErrorKind::NotFound,
            false,
        ),
        (
            400,
            "AccessDeniedException",
            TransportErrorKind::AccessDenied,
            false,
        ),
        (
            400,
            "ValidationException",
            TransportErrorKind::Validation,
            false,
        ),
        (
            400,
            "InvalidArgumentException",
            TransportErrorKind::Validation,
            false,
        ),
        (
            400,
            "ExpiredTokenException",
            TransportErrorKind::ExpiredCredentials,
            false,
        ),
        (
            400,
            "UnrecognizedClientException",
            TransportErrorKind::ExpiredCredentials,
            false,
        ),
        (
            400,
            "KMSAccessDeniedException",
            TransportErrorKind::Kms,
            false,
        ),
        (400, "KMSDisabledException", TransportErrorKind::Kms, false),
        (400, "KMSNotFoundException", TransportErrorKind::Kms, false),
        (
            400,
            "KMSInvalidStateException",
            TransportErrorKind::Kms,
            false,
        ),
        (400, "KMSOptInRequired", TransportErrorKind::Kms, false),
        (
            400,
            "ResourceInUseException",
            TransportErrorKind::InUse,
            true,
        ),
        (
            500,
            "SomethingNewException",
            TransportErrorKind::ServiceUnavailable,
            true,
        ),
        (
            400,
            "SomethingNewException",
            TransportErrorKind::Other,
            true,
        ),
    ];
    for (status, code, kind, retryable) in rows {
        let error = error_for(status, &service_error(code)).await;
        assert_eq!(error.kind(), kind, "{code}");
        assert_eq!(error.code(), code);
        assert_eq!(error.message(), format!("{code} happened"));
        assert_eq!(error.is_retryable(), retryable, "{code}");
    }
}

#[tokio::test]
async fn an_unreadable_answer_is_a_response_error() {
    let error = error_for(200, "this is not json").await;
    assert_eq!(error.kind(), TransportErrorKind::Other);
    assert_eq!(error.code(), "MalformedResponse");
    let error = error_for(502, "<html>bad gateway</html>").await;
    assert_eq!(error.kind(), TransportErrorKind::ServiceUnavailable);
}

#[test]
fn timeouts_dispatch_failures_and_construction_failures_map_to_their_kinds() {
    let timeout: SdkError<PutRecordsError, HttpResponse> = SdkError::timeout_error("slow");
    assert_eq!(map_sdk_error(timeout).kind(), TransportErrorKind::Timeout);
    let dispatch: SdkError<PutRecordsError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::timeout("slow connect".into()));
    assert_eq!(map_sdk_error(dispatch).kind(), TransportErrorKind::Timeout);
    let dispatch: SdkError<PutRecordsError, HttpResponse> =
        SdkError::dispatch_failure(ConnectorError::io("connection reset".into()));
    let error = map_sdk_error(dispatch);
    assert_eq!(error.kind(), TransportErrorKind::Connection);
    assert!(error.is_retryable());
    let construction: SdkError<PutRecordsError, HttpResponse> =
        SdkError::construction_failure("bad input");
    assert_eq!(
        map_sdk_error(construction).kind(),
        TransportErrorKind::Validation
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() {
    let mut settings = AwsSettings::default();
    settings.sdk.region = Some("us-east-1".into());
    settings.sdk.endpoint_url = Some("http://127.0.0.1:1".into());
    settings.sdk.credentials = Some(Credentials::new("AKIDTEST", "secret", None, None, "test"));
    let transport = AwsTransport::new(settings).unwrap();
    let error = transport.put_records(put("s")).await.unwrap_err();
    assert_eq!(error.kind(), TransportErrorKind::Connection, "{error}");
}

#[test]
fn settings_that_cannot_be_used_are_refused_with_the_reason() {
    let mut settings = AwsSettings::default();
    assert!(
        settings.verify_certificate,
        "verified unless told otherwise"
    );
    settings.sdk.region = Some("us-east-1".into());
    // A proxy is taken; one that is not a URL is not.
    settings.proxy_host = Some("proxy.local".into());
    settings.proxy_port = Some(3128);
    settings.proxy_credentials = Some(("user".into(), "proxy-secret".into()));
    assert!(AwsTransport::new(settings.clone()).is_ok());
    assert!(!format!("{settings:?}").contains("proxy-secret"));
    settings.proxy_host = Some("http://[not a host".into());
    assert!(matches!(
        AwsTransport::new(settings.clone()).unwrap_err(),
        AwsSettingsError::Proxy(_)
    ));
    // The same without certificate checks, whose connector is another.
    settings.verify_certificate = false;
    assert!(matches!(
        AwsTransport::new(settings.clone()).unwrap_err(),
        AwsSettingsError::Proxy(_)
    ));
    settings.proxy_host = Some("proxy.local".into());
    assert!(AwsTransport::new(settings.clone()).is_ok());
    // Without certificate checks the tunnel goes in the clear to the proxy: an https:// one is
    // refused rather than half-used.
    settings.proxy_host = Some("https://proxy.local:3129".into());
    let error = AwsTransport::new(settings.clone()).unwrap_err();
    assert!(
        error.to_string().contains("only an http:// proxy"),
        "{error}"
    );
    // A password written into the proxy's URL is never shown.
    settings.proxy_host = Some("http://user:pw-in-url@[bad".into());
    let error = AwsTransport::new(settings.clone()).unwrap_err();
    assert!(!error.to_string().contains("pw-in-url"), "{error}");
    assert!(!format!("{settings:?}").contains("pw-in-url"));
    settings.verify_certificate = true;
    let error = AwsTransport::new(settings.clone()).unwrap_err();
    assert!(!error.to_string().contains("pw-in-url"), "{error}");
    settings.proxy_host = Some("proxy.local".into());
    settings.proxy_host = None;
    // A trust store that cannot be read, or holds no certificate, is refused at once.
    settings.ca_certificates = Some("/nonexistent/my-ca.pem".into());
    let error = AwsTransport::new(settings.clone()).unwrap_err();
    assert!(
        matches!(&error, AwsSettingsError::CustomCa(why) if why.contains("/nonexistent/my-ca.pem")),
        "{error}"
    );
    let not_pem = std::env::temp_dir().join(format!("kpl-not-a-ca-{}.pem", std::process::id()));
    std::fs::write(&not_pem, "not a certificate").unwrap();
    settings.ca_certificates = Some(not_pem.display().to_string());
    let error = AwsTransport::new(settings.clone()).unwrap_err();
    std::fs::remove_file(&not_pem).unwrap();
    assert!(
        matches!(&error, AwsSettingsError::CustomCa(why) if why.contains("no PEM certificate")),
        "{error}"
    );
    settings.ca_certificates = None;
    settings.sdk.endpoint_url = Some("localhost:4567".into());
    assert!(matches!(
        AwsTransport::new(settings.clone()).unwrap_err(),
        AwsSettingsError::Endpoint(_)
    ));
    settings.sdk.credentials = Some(Credentials::new(
        "AKIDSECRETID",
        "very-secret",
        None,
        None,
        "test",
    ));
    let debug = format!("{settings:?}");
    assert!(!debug.contains("very-secret") && !debug.contains("AKIDSECRETID"));
}
