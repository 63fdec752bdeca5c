//! The network between a producer and Kinesis: a TLS endpoint with a private CA trusted through
//! `CaCertFile`/`CaCertPath`, and a `CONNECT` proxy with basic authentication, both on loopback
//! in front of a local Kinesis endpoint.
#![allow(clippy::unwrap_used, reason = "tests")]

mod middlemen;
mod warnings;

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;
use support::SimProducer;

use kpl::{Config, DeliveryErrorKind, FailureReason, KinesisProducer, Record, Stream};
use kpl_sim::http::Endpoint;
use middlemen::{ConnectProxy, TlsFront};
use warnings::Warnings;

/// A local Kinesis endpoint behind a TLS front; its CA's PEM written to a file of its own.
async fn tls_endpoint(name: &str) -> (Endpoint, TlsFront, std::path::PathBuf) {
    let plain = Endpoint::start(SimProducer::seeded(5).sim()).unwrap();
    let upstream = plain
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let front = TlsFront::start(upstream).await;
    let directory = std::env::temp_dir().join(format!("kpl-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let ca_file = directory.join("ca.pem");
    std::fs::write(&ca_file, &front.ca_pem).unwrap();
    (plain, front, ca_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_take_the_records_way_through_the_proxy_and_the_private_ca() {
    let (plain, front, ca_file) = tls_endpoint("metrics").await;
    let proxy = ConnectProxy::start(None).await;
    let port = proxy.address.port().to_string();
    let (delivered, _) = send(
        &front.endpoint,
        |config| {
            config.ca_cert_file = ca_file.display().to_string();
            config.set("ProxyHost", "127.0.0.1").unwrap();
            config.set("ProxyPort", &port).unwrap();
            config.set("MetricsLevel", "summary").unwrap();
            config.set("CloudwatchEndpoint", &front.endpoint).unwrap();
        },
        5,
    )
    .await;
    assert_eq!(delivered, 5);
    // Shutting down uploads the last metrics: through the proxy, trusting the CA, or not at all.
    let metrics_calls = plain.calls_of("PutMetricData");
    assert!(metrics_calls >= 1, "{:?}", plain.operations());
    assert!(
        proxy.tunnels.load(Ordering::Relaxed) >= 2,
        "one for each client at least"
    );
    std::fs::remove_dir_all(ca_file.parent().unwrap()).unwrap();
}

/// Sends `count` records and awaits them: the number delivered, and the errors of the others.
async fn send(
    endpoint: &str,
    configure: impl FnOnce(&mut Config),
    count: usize,
) -> (usize, Vec<kpl::DeliveryError>) {
    let mut config = Config::default();
    config.set("KinesisEndpoint", endpoint).unwrap();
    config.set("Region", "us-east-1").unwrap();
    config.set("AwsAccessKeyId", "AKIDNETWORK").unwrap();
    config.set("AwsSecretKey", "secret").unwrap();
    config.set("MetricsLevel", "none").unwrap();
    config.set("RecordMaxBufferedTime", "20").unwrap();
    config.set("RequestTimeout", "1000").unwrap();
    // Records that cannot get through fail within a second.
    config.set("RecordTtl", "1000").unwrap();
    configure(&mut config);
    let producer = KinesisProducer::builder().config(config).build().unwrap();
    let stream = Stream::new("s").unwrap();
    let mut futures = Vec::new();
    for n in 0..count {
        let record = Record::new(stream.clone(), format!("key-{n}"), vec![3; 10]);
        futures.push(producer.send(record).unwrap());
    }
    let mut delivered = 0;
    let mut errors = Vec::new();
    for future in futures {
        match future.await {
            Ok(_) => delivered += 1,
            Err(error) => errors.push(error),
        }
    }
    producer.shutdown(Duration::from_secs(5)).await;
    (delivered, errors)
}

/// Every error is the record's expiry after attempts that could not reach the service.
fn all_expired_unreached(errors: &[kpl::DeliveryError]) -> bool {
    errors.iter().all(|error| {
        error.kind() == DeliveryErrorKind::Failed(FailureReason::Expired)
            && error
                .attempts()
                .iter()
                .any(|attempt| attempt.error_code() == Some("ConnectionError"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_through_its_file_or_directory_and_refused_without_it() {
    let (plain, front, ca_file) = tls_endpoint("ca").await;
    let directory = ca_file.parent().unwrap().to_owned();
    let by_file = send(
        &front.endpoint,
        |c| c.ca_cert_file = ca_file.display().to_string(),
        10,
    );
    assert_eq!(by_file.await.0, 10);
    let by_directory = send(
        &front.endpoint,
        |c| c.ca_cert_path = directory.display().to_string(),
        10,
    );
    assert_eq!(by_directory.await.0, 10);
    // The built-in roots do not know the CA: the handshake fails, and the records with it.
    let (delivered, errors) = send(&front.endpoint, |_| {}, 3).await;
    assert_eq!((delivered, errors.len()), (0, 3));
    assert!(all_expired_unreached(&errors), "{errors:?}");
    assert_eq!(plain.calls().1, 2, "one PutRecords call per trusted run");
    // Without certificate checks the unknown CA is no obstacle; the build warns about it.
    let warnings = Warnings::default();
    let logging = tracing::subscriber::set_default(warnings.clone());
    let unverified = send(&front.endpoint, |c| c.verify_certificate = false, 10);
    assert_eq!(unverified.await.0, 10);
    drop(logging);
    assert!(
        warnings.text().contains("VerifyCertificate=false"),
        "{}",
        warnings.text()
    );
    assert_eq!(plain.calls().1, 3);
    std::fs::remove_dir_all(directory).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_through_a_proxy_that_asks_for_credentials_and_fail_when_it_refuses_them() {
    let (plain, front, ca_file) = tls_endpoint("proxy").await;
    let proxy = ConnectProxy::start(Some(("kpl", "proxy-secret"))).await;
    let through_proxy = |password: &'static str| {
        let ca_file = ca_file.display().to_string();
        let port = proxy.address.port().to_string();
        move |config: &mut Config| {
            config.ca_cert_file = ca_file;
            config.set("ProxyHost", "127.0.0.1").unwrap();
            config.set("ProxyPort", &port).unwrap();
            config.set("ProxyUserName", "kpl").unwrap();
            config.set("ProxyPassword", password).unwrap();
        }
    };
    let (delivered, errors) = send(&front.endpoint, through_proxy("proxy-secret"), 10).await;
    assert_eq!((delivered, errors.len()), (10, 0));
    let tunnels = proxy.tunnels.load(Ordering::Relaxed);
    assert!(tunnels >= 1, "the calls went through the proxy");
    assert_eq!(plain.calls().1, 1);
    // With the wrong password the proxy refuses every tunnel: nothing reaches the service.
    let (delivered, errors) = send(&front.endpoint, through_proxy("wrong"), 3).await;
    assert_eq!((delivered, errors.len()), (0, 3));
    assert!(all_expired_unreached(&errors), "{errors:?}");
    assert!(proxy.refused.load(Ordering::Relaxed) >= 1);
    assert_eq!(proxy.tunnels.load(Ordering::Relaxed), tunnels);
    assert_eq!(plain.calls().1, 1);
    // Without certificate checks (another connector) the same proxy and credentials hold.
    let unverified = |password: &'static str| {
        let configure = through_proxy(password);
        move |config: &mut Config| {
            configure(config);
            config.ca_cert_file.clear();
            config.verify_certificate = false;
        }
    };
    let (delivered, errors) = send(&front.endpoint, unverified("proxy-secret"), 10).await;
    assert_eq!((delivered, errors.len()), (10, 0));
    assert!(proxy.tunnels.load(Ordering::Relaxed) > tunnels);
    assert_eq!(plain.calls().1, 2);
    let refused = proxy.refused.load(Ordering::Relaxed);
    let (delivered, errors) = send(&front.endpoint, unverified("wrong"), 3).await;
    assert_eq!((delivered, errors.len()), (0, 3));
    assert!(all_expired_unreached(&errors), "{errors:?}");
    assert!(proxy.refused.load(Ordering::Relaxed) > refused);
    assert_eq!(plain.calls().1, 2);
    std::fs::remove_dir_all(ca_file.parent().unwrap()).unwrap();
}
