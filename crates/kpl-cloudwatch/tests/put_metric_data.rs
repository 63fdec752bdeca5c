//! The exporter through the real SDK client against a loopback CloudWatch stub that decodes
//! what the SDK sends (Smithy RPC v2 CBOR, gzip-compressed when large) and answers as the
//! service does.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use ciborium::Value;
use kpl_cloudwatch::{CloudWatchExporter, CloudWatchSettings};
use kpl_engine::Summary;
use kpl_engine::metrics::{Metric, MetricDatum, MetricsExporter, MetricsUpload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the stub received: its path, whether its body was gzip-compressed, and the
/// decoded body.
#[derive(Debug)]
struct Received {
    path: String,
    gzip: bool,
    body: Value,
    /// The access key id the request was signed with.
    access_key: String,
    /// The region it was signed for.
    region: String,
}

/// How the stub answers.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    Unavailable,
    /// The first three requests (every attempt of a first call) fail, the rest go through.
    FirstCallUnavailable,
}

struct Stub {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn stub(answer: Answer) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, Arc::clone(&log), answer));
        }
    });
    Stub { url, received }
}

/// Serves the requests of one connection (the SDK keeps connections alive).
async fn serve(mut socket: TcpStream, log: Arc<Mutex<Vec<Received>>>, answer: Answer) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 8192];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap();
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 65536];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buffer.drain(..head_end + length).skip(head_end).collect();
        let gzip = header("content-encoding").is_some_and(|v| v.contains("gzip"));
        let scope = |part: usize| {
            header("authorization")
                .and_then(|auth| {
                    let credential = auth.split("Credential=").nth(1)?;
                    Some(credential.split('/').nth(part)?.to_owned())
                })
                .unwrap_or_default()
        };
        let (access_key, region) = (scope(0), scope(2));
        let body = if gzip {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
                .unwrap();
            plain
        } else {
            body
        };
        let body: Value = ciborium::from_reader(&body[..]).unwrap();
        let seen = {
            let mut log = log.lock().unwrap();
            log.push(Received {
                path,
                gzip,
                body,
                access_key,
                region,
            });
            log.len()
        };
        let unavailable = ("503 Service Unavailable", &[0xa0][..]);
        // An empty CBOR map.
        let ok = ("200 OK", &[0xa0][..]);
        let (status, reply): (&str, &[u8]) = match answer {
            Answer::Ok => ok,
            Answer::Unavailable => unavailable,
            Answer::FirstCallUnavailable if seen <= 3 => unavailable,
            Answer::FirstCallUnavailable => ok,
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nsmithy-protocol: rpc-v2-cbor\r\ncontent-type: application/cbor\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        let mut bytes = response.into_bytes();
        bytes.extend_from_slice(reply);
        if socket.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

fn exporter(url: &str) -> CloudWatchExporter {
    let mut settings = CloudWatchSettings::default();
    settings.sdk.region = Some("us-east-1".to_owned());
    settings.sdk.endpoint_url = Some(url.to_owned());
    settings.sdk.credentials = Some(aws_credential_types::Credentials::new(
        "AKIDEXAMPLE",
        "secret",
        None,
        None,
        "test",
    ));
    settings.sdk.request_timeout = Some(Duration::from_secs(5));
    CloudWatchExporter::new(settings)
}

/// Datum `n`: `UserRecordsDataPut` of shard `n`, `n + 1` samples summing to `10 n`.
fn datum(n: usize) -> MetricDatum {
    let mut stat = Summary::default();
    (stat.count, stat.sum, stat.min, stat.max) = (n as u64 + 1, 10.0 * n as f64, 0.0, n as f64);
    let dimensions = vec![
        ("app".to_owned(), "test".to_owned()),
        ("StreamName".to_owned(), "orders".to_owned()),
        ("ShardId".to_owned(), format!("shardId-{n:012}")),
    ];
    MetricDatum::new(Metric::UserRecordsDataPut, dimensions, stat)
}

fn field<'a>(map: &'a Value, name: &str) -> &'a Value {
    map.as_map()
        .and_then(|entries| {
            entries
                .iter()
                .find(|(key, _)| key.as_text() == Some(name))
                .map(|(_, value)| value)
        })
        .unwrap_or_else(|| panic!("no {name} in {map:?}"))
}

/// A received datum's dimensions, name and value, in order.
fn dimensions_of(datum: &Value) -> Vec<(String, String)> {
    field(datum, "Dimensions")
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let text = |name| field(d, name).as_text().unwrap().to_owned();
            (text("Name"), text("Value"))
        })
        .collect()
}

fn number(value: &Value) -> f64 {
    match value {
        Value::Float(f) => *f,
        Value::Integer(i) => i128::from(*i) as f64,
        other => panic!("not a number: {other:?}"),
    }
}

/// Credentials from a provider of the application's, as the KPL's metrics credentials provider.
#[derive(Debug)]
struct MetricsAccount;

impl aws_credential_types::provider::ProvideCredentials for MetricsAccount {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let credentials =
            aws_credential_types::Credentials::new("AKIDMETRICS", "secret", None, None, "test");
        aws_credential_types::provider::future::ProvideCredentials::ready(Ok(credentials))
    }
}

#[tokio::test]
async fn a_credentials_provider_signs_the_uploads_in_place_of_static_keys() {
    let stub = stub(Answer::Ok).await;
    let mut settings = CloudWatchSettings::default();
    settings.sdk.region = Some("us-east-1".to_owned());
    settings.sdk.endpoint_url = Some(stub.url.clone());
    settings.sdk.credentials = Some(aws_credential_types::Credentials::new(
        "AKIDEXAMPLE",
        "secret",
        None,
        None,
        "test",
    ));
    settings.sdk.credentials_provider =
        Some(aws_credential_types::provider::SharedCredentialsProvider::new(MetricsAccount));
    assert!(!format!("{settings:?}").contains("AKIDEXAMPLE"));
    let upload = MetricsUpload::new("KinesisProducerLibrary", UNIX_EPOCH, vec![datum(1)]);
    CloudWatchExporter::new(settings)
        .export(upload)
        .await
        .unwrap();
    let received = stub.received.lock().unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].access_key, "AKIDMETRICS");
}

/// A base configuration as another client's (the producer's Kinesis transport's): its region,
/// its keys, and its endpoint, which must not carry over to CloudWatch.
fn base_config(kinesis_endpoint: &str) -> kpl_cloudwatch::BaseConfig {
    let kinesis_endpoint = kinesis_endpoint.to_owned();
    Arc::new(move || {
        let kinesis_endpoint = kinesis_endpoint.clone();
        Box::pin(async move {
            let keys =
                aws_credential_types::Credentials::new("AKIDBASE", "secret", None, None, "test");
            aws_config::SdkConfig::builder()
                .region(aws_config::Region::new("eu-west-1"))
                .endpoint_url(kinesis_endpoint)
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(keys),
                )
                .behavior_version(aws_config::BehaviorVersion::latest())
                .build()
        })
    })
}

#[tokio::test]
async fn a_client_derived_from_a_base_configuration_keeps_its_region_and_keys_and_its_own_endpoint_wins()
 {
    let cloudwatch = stub(Answer::Ok).await;
    let kinesis = stub(Answer::Ok).await;
    let mut settings = CloudWatchSettings::default();
    settings.base_config = Some(base_config(&kinesis.url));
    settings.sdk.endpoint_url = Some(cloudwatch.url.clone());
    let upload = MetricsUpload::new("KinesisProducerLibrary", UNIX_EPOCH, vec![datum(1)]);
    CloudWatchExporter::new(settings.clone())
        .export(upload.clone())
        .await
        .unwrap();
    {
        let received = cloudwatch.received.lock().unwrap();
        assert_eq!(received.len(), 1);
        assert_eq!(
            (received[0].access_key.as_str(), received[0].region.as_str()),
            ("AKIDBASE", "eu-west-1")
        );
    }
    assert!(
        kinesis.received.lock().unwrap().is_empty(),
        "not to the base's endpoint"
    );
    // The metrics' own provider and region win over the base's.
    settings.sdk.credentials_provider =
        Some(aws_credential_types::provider::SharedCredentialsProvider::new(MetricsAccount));
    settings.sdk.region = Some("ap-south-1".to_owned());
    CloudWatchExporter::new(settings)
        .export(upload)
        .await
        .unwrap();
    let received = cloudwatch.received.lock().unwrap();
    assert_eq!(
        (received[1].access_key.as_str(), received[1].region.as_str()),
        ("AKIDMETRICS", "ap-south-1")
    );
}

#[tokio::test]
async fn a_base_configuration_s_endpoint_stands_when_the_settings_give_none() {
    // As `AWS_ENDPOINT_URL` from the environment would be: one endpoint for every service.
    let shared = stub(Answer::Ok).await;
    let mut settings = CloudWatchSettings::default();
    settings.base_config = Some(base_config(&shared.url));
    let upload = MetricsUpload::new("KinesisProducerLibrary", UNIX_EPOCH, vec![datum(2)]);
    CloudWatchExporter::new(settings)
        .export(upload)
        .await
        .unwrap();
    let received = shared.received.lock().unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].access_key, "AKIDBASE");
}

#[tokio::test]
async fn every_datum_arrives_with_its_dimensions_unit_statistics_and_timestamp() {
    let stub = stub(Answer::Ok).await;
    let at = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let data: Vec<MetricDatum> = (0..2_500).map(datum).collect();
    let upload = MetricsUpload::new("KinesisProducerLibrary", at, data);
    let report = exporter(&stub.url).export(upload).await.unwrap();
    assert_eq!(
        (report.requests, report.datums, report.skipped),
        (3, 2_500, 0)
    );

    let received = stub.received.lock().unwrap();
    assert_eq!(received.len(), 3);
    let mut seen = vec![false; 2_500];
    for request in received.iter() {
        assert!(
            request.path.ends_with("/operation/PutMetricData"),
            "{}",
            request.path
        );
        assert!(request.gzip, "a large body is compressed");
        assert_eq!(
            field(&request.body, "Namespace").as_text(),
            Some("KinesisProducerLibrary")
        );
        let data = field(&request.body, "MetricData").as_array().unwrap();
        assert!(data.len() <= 1_000);
        for datum in data {
            assert_eq!(
                field(datum, "MetricName").as_text(),
                Some("UserRecordsDataPut")
            );
            assert_eq!(field(datum, "Unit").as_text(), Some("Bytes"));
            let dimensions = dimensions_of(datum);
            assert_eq!(dimensions[0], ("app".to_owned(), "test".to_owned()));
            assert_eq!(
                dimensions[1],
                ("StreamName".to_owned(), "orders".to_owned())
            );
            let shard = &dimensions[2].1;
            let n: usize = shard.trim_start_matches("shardId-").parse().unwrap();
            assert!(!seen[n], "datum {n} sent twice");
            seen[n] = true;
            let set = field(datum, "StatisticValues");
            assert_eq!(number(field(set, "SampleCount")), n as f64 + 1.0);
            assert_eq!(number(field(set, "Sum")), 10.0 * n as f64);
            assert_eq!(number(field(set, "Minimum")), 0.0);
            assert_eq!(number(field(set, "Maximum")), n as f64);
            let Value::Tag(1, seconds) = field(datum, "Timestamp") else {
                panic!("an epoch timestamp")
            };
            assert_eq!(number(seconds), 1_764_000_000.0);
        }
    }
    assert!(seen.iter().all(|&s| s), "every datum arrived");
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_then_the_upload_is_reported_lost() {
    let stub = stub(Answer::Unavailable).await;
    let upload = MetricsUpload::new("ns", UNIX_EPOCH, (0..10).map(datum).collect());
    let error = exporter(&stub.url).export(upload).await.unwrap_err();
    assert_eq!(error.lost, 10);
    assert!(error.to_string().contains("PutMetricData"), "{error}");
    // The SDK's standard retries: three attempts of the one call.
    assert_eq!(stub.received.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_refused_call_loses_its_own_datums_and_the_others_still_go() {
    let stub = stub(Answer::FirstCallUnavailable).await;
    let upload = MetricsUpload::new("ns", UNIX_EPOCH, (0..2_500).map(datum).collect());
    let error = exporter(&stub.url).export(upload).await.unwrap_err();
    assert_eq!(error.lost, 1_000, "{error}");
    // Three attempts of the first call, then one each for the other two.
    assert_eq!(stub.received.lock().unwrap().len(), 5);
}

/// A datum as received: metric name, dimensions, sample count, sum.
type Datum = (String, Vec<(String, String)>, f64, f64);

/// The datums of every request the stub received.
fn datums(received: &[Received]) -> Vec<Datum> {
    let mut all = Vec::new();
    for request in received {
        for datum in field(&request.body, "MetricData").as_array().unwrap() {
            let dimensions = dimensions_of(datum);
            let set = field(datum, "StatisticValues");
            all.push((
                field(datum, "MetricName").as_text().unwrap().to_owned(),
                dimensions,
                number(field(set, "SampleCount")),
                number(field(set, "Sum")),
            ));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_statistics_reach_cloudwatch_exactly() {
    use kpl::time::Clock;
    use kpl::{Config, KinesisProducer, MetricsGranularity, Record, Stream, TokioClock};
    use kpl_sim::{ScriptedFault, SimKinesis, SimTransport};

    let stub = stub(Answer::Ok).await;
    let mut config = Config::default();
    // One user record per Kinesis record and up to a hundred per call; one call is throttled
    // whole (as many records as the shard's rate let into it).
    config.aggregation_enabled = false;
    config.collection_max_count = 100;
    config.metrics_granularity = MetricsGranularity::Stream;
    config.metrics_namespace = "KplTest".to_owned();
    // No map re-read, which would take the scripted throttle for itself.
    config.shard_map_refresh_interval = Duration::from_secs(3_600);
    let mut sim = SimKinesis::new(13);
    sim.create_stream("orders", 1, TokioClock.now());
    let transport = SimTransport::new(sim, TokioClock);
    let producer = KinesisProducer::builder()
        .config(config)
        .transport(transport.clone())
        .metrics_exporter(exporter(&stub.url))
        .build()
        .unwrap();
    let stream = Stream::new("orders").unwrap();
    // A first record reads the map, so that the next call is the first of the thousand's.
    let warm = producer.send(Record::new(stream.clone(), "warm", vec![0]));
    producer.flush_and_wait().await;
    warm.unwrap().await.unwrap();
    transport.with_sim(|sim| sim.script(ScriptedFault::ThrottleAll));
    let mut deliveries = Vec::new();
    for n in 0..1_000 {
        let record = Record::new(stream.clone(), format!("key-{n}"), vec![5; 10]);
        deliveries.push(producer.send_wait(record).await.unwrap());
    }
    producer.flush_and_wait().await;
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    // Everything goes in the upload at shutdown (the delay is a minute).
    producer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(producer.metrics_exports().map(|e| e.uploads), Some(1));
    let retried = transport.with_sim(|sim| sim.counters().throttled_entries) as f64;
    assert!((1.0..=100.0).contains(&retried), "{retried}");

    let received = stub.received.lock().unwrap();
    let datums = datums(&received);
    let find = |name: &str, dimensions: &[(&str, &str)]| {
        let wanted: Vec<(String, String)> = dimensions
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<(f64, f64)> = datums
            .iter()
            .filter(|(metric, dims, ..)| metric == name && *dims == wanted)
            .map(|&(_, _, count, sum)| (count, sum))
            .collect();
        assert_eq!(found.len(), 1, "{name} {dimensions:?} in {datums:?}");
        found[0]
    };
    let stream_dim = [("StreamName", "orders")];
    for dims in [&[][..], &stream_dim[..]] {
        assert_eq!(find("UserRecordsPut", dims), (1_001.0, 1_001.0));
        assert_eq!(find("RetriesPerRecord", dims), (1_001.0, retried));
        assert_eq!(find("AllErrors", dims), (1_001.0 + retried, retried));
        assert_eq!(
            find("KinesisRecordsPut", dims),
            (1_001.0 + retried, 1_001.0)
        );
        // A thousand records of 10 bytes and the one-byte first.
        assert_eq!(find("UserRecordsDataPut", dims), (1_001.0, 10_001.0));
    }
    let throttled = ("ErrorCode", "ProvisionedThroughputExceededException");
    assert_eq!(find("ErrorsByCode", &[throttled]), (retried, retried));
    assert_eq!(
        find("ErrorsByCode", &[throttled, ("StreamName", "orders")]),
        (retried, retried)
    );
    assert!(
        datums
            .iter()
            .all(|(_, dims, ..)| dims.iter().all(|(n, _)| n != "ShardId")),
        "stream granularity"
    );
    assert!(
        received
            .iter()
            .all(|r| field(&r.body, "Namespace").as_text() == Some("KplTest"))
    );
}
