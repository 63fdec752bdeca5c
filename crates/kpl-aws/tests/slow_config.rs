//! The SDK configuration can take longer to load than a call may last (here: the region comes
//! from an instance metadata endpoint that is slow to answer). Each call gives up after its
//! timeout, but the load goes on without it, so calls soon get answers; if each call's timeout
//! cancelled the load, none ever would.
//!
//! The test runs itself again as a child process, with the environment pointing the SDK at a
//! slow metadata endpoint on loopback (the environment cannot be changed safely in a running
//! test process).
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "a slow metadata server on loopback, timed in real time"
)]

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use kpl_aws::{AwsSettings, AwsTransport};
use kpl_engine::Stream;
use kpl_engine::transport::{ListShardsRequest, ShardFilter, Transport};

const TEST: &str = "a_slow_configuration_load_is_not_cancelled_by_call_timeouts";
const CHILD: &str = "KPL_SLOW_CONFIG_CHILD";

/// Accepts metadata requests, reads them, waits 300 ms and hangs up without an answer.
fn slow_metadata_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut socket in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer);
                std::thread::sleep(Duration::from_millis(300));
            });
        }
    });
    format!("http://{address}")
}

#[test]
fn a_slow_configuration_load_is_not_cancelled_by_call_timeouts() {
    if std::env::var_os(CHILD).is_none() {
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture"])
            .env(CHILD, "1")
            .env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                slow_metadata_endpoint(),
            )
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/nonexistent/kpl-test-config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/kpl-test-credentials",
            )
            .status()
            .unwrap();
        assert!(status.success(), "the child run failed: {status}");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(child());
}

async fn child() {
    let mut settings = AwsSettings::default();
    // No region: the SDK looks for one, ending at the slow metadata endpoint. Calls go to a
    // closed port, so once the configuration is loaded each answers at once, with an error.
    settings.endpoint_url = Some("http://127.0.0.1:9".to_owned());
    settings.credentials = Some(("AKIDTEST".into(), "secret".into(), None));
    let transport = AwsTransport::new(settings).unwrap();
    let request =
        || ListShardsRequest::new(Stream::new("s").unwrap(), None, ShardFilter::AtLatest, 100);
    let started = Instant::now();
    let mut timed_out = 0;
    let answered_after = loop {
        let call = transport.list_shards(request());
        match tokio::time::timeout(Duration::from_millis(100), call).await {
            Ok(_) => break started.elapsed(),
            Err(_) => timed_out += 1,
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no call was answered in a minute ({timed_out} timed out)"
        );
    };
    eprintln!("the first answer came after {answered_after:?}; {timed_out} calls timed out before");
    assert!(timed_out > 0, "the configuration load was slow");
}
