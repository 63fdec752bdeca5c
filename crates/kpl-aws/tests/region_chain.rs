//! Without a configured region the transport asks the SDK's region chain when it is made, down
//! to the EC2 instance metadata: a metadata endpoint that answers gives the region, one that
//! hangs up leaves none, and `new` refuses with `NoRegion` instead of every call failing later.
//!
//! The test runs itself again as child processes, with the environment pointing the SDK at a
//! metadata endpoint on loopback (the environment cannot be changed safely in a running test
//! process).
#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use kpl_aws::{AwsSettings, AwsSettingsError, AwsTransport};

const TEST: &str = "without_a_region_the_instance_metadata_is_asked_and_none_is_refused";
const CHILD: &str = "KPL_REGION_CHAIN_CHILD";

/// An instance metadata endpoint (IMDSv2: a token, then the region) that tells `region`, or,
/// without one, hangs up on every request.
fn metadata_endpoint(region: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(socket);
                loop {
                    let mut request = String::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        request.push_str(&line);
                        line.clear();
                    }
                    let Some(region) = region.filter(|_| !request.is_empty()) else {
                        return;
                    };
                    let (headers, body) = if request.starts_with("PUT /latest/api/token") {
                        ("x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n", "TOKEN")
                    } else if request.starts_with("GET /latest/meta-data/placement/region") {
                        ("", region)
                    } else {
                        return;
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\n{headers}content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if reader.get_mut().write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{address}")
}

#[test]
fn without_a_region_the_instance_metadata_is_asked_and_none_is_refused() {
    if let Some(expected) = std::env::var_os(CHILD) {
        let mut settings = AwsSettings::default();
        settings.sdk.endpoint_url = Some("http://127.0.0.1:9".to_owned());
        settings.sdk.credentials = Some(aws_credential_types::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ));
        match (AwsTransport::new(settings), expected.to_str().unwrap()) {
            (Err(error), "none") => assert_eq!(error, AwsSettingsError::NoRegion),
            (Ok(transport), region) => assert_eq!(transport.region(), Some(region)),
            (Err(error), region) => panic!("expected {region}, got {error}"),
        }
        return;
    }
    for (metadata, expected) in [(Some("sa-east-1"), "sa-east-1"), (None, "none")] {
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture"])
            .env(CHILD, expected)
            .env(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                metadata_endpoint(metadata),
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
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "the child run expecting {expected} failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
}
