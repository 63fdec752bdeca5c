//! Credentials from every source the application can hand the producer, and the regions calls
//! go to, checked by the access key and region each call to a local endpoint was signed with.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::{SimProducer, SlowCredentials};

use aws_config::credential_process::CredentialProcessProvider;
use aws_config::profile::ProfileFileCredentialsProvider;
#[allow(
    deprecated,
    reason = "the types ProfileFileCredentialsProvider takes, by the path aws-config names them"
)]
use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
use kpl::aws::{Credentials, CredentialsFuture, ProvideCredentials};
use kpl::time::{Clock, SystemClock};
use kpl::{BuildError, Config, KinesisProducer, ProducerBuilder, Record, Stream, TokioClock};
use kpl_sim::SimKinesis;
use kpl_sim::http::Endpoint;

fn endpoint() -> Endpoint {
    Endpoint::start(SimProducer::seeded(3).sim()).unwrap()
}

/// A producer on the default AWS transport to `endpoint`, with no static keys.
fn builder(endpoint: &Endpoint, configure: impl FnOnce(&mut Config)) -> ProducerBuilder {
    let mut config = Config::default();
    config.set("KinesisEndpoint", &endpoint.endpoint()).unwrap();
    config.set("Region", "us-east-1").unwrap();
    config.set("MetricsLevel", "none").unwrap();
    config.set("RecordMaxBufferedTime", "20").unwrap();
    configure(&mut config);
    KinesisProducer::builder().config(config)
}

/// Sends `count` records and waits for every outcome; returns how many were delivered.
async fn deliver(producer: &KinesisProducer, count: usize) -> usize {
    let stream = Stream::new("s").unwrap();
    let mut futures = Vec::new();
    for n in 0..count {
        let record = Record::new(stream.clone(), format!("key-{n}"), vec![1; 10]);
        futures.push(producer.send(record).unwrap());
    }
    producer.flush_and_wait().await;
    let mut delivered = 0;
    for future in futures {
        delivered += usize::from(future.await.is_ok());
    }
    delivered
}

/// Keys that expire within the SDK's refresh margin, a new one at every load: each call asks
/// the provider again, as a provider rotating short-lived keys is asked.
#[derive(Debug, Default)]
struct Rotating {
    loads: Arc<AtomicU64>,
}

impl ProvideCredentials for Rotating {
    fn provide_credentials<'a>(&'a self) -> CredentialsFuture<'a>
    where
        Self: 'a,
    {
        let n = self.loads.fetch_add(1, Ordering::Relaxed);
        let expiry = TokioClock.system_time() + Duration::from_secs(2);
        let credentials = Credentials::new(
            format!("AKIDROTATING{n}"),
            "secret",
            None,
            Some(expiry),
            "test",
        );
        CredentialsFuture::ready(Ok(credentials))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_rotates_keys_signs_each_call_with_the_key_it_gives_then() {
    let endpoint = endpoint();
    let loads = Arc::new(AtomicU64::new(0));
    let provider = Rotating {
        loads: Arc::clone(&loads),
    };
    let producer = builder(&endpoint, |_| {})
        .credentials_provider(provider)
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(deliver(&producer, 20).await, 20);
    }
    producer.shutdown(Duration::from_secs(5)).await;
    let keys = endpoint.access_keys();
    assert!(keys.len() >= 2, "one key for every call: {keys:?}");
    assert!(
        keys.keys().all(|key| key.starts_with("AKIDROTATING")),
        "{keys:?}"
    );
    assert!(loads.load(Ordering::Relaxed) >= 2);
}

/// A provider slower than `RequestTimeout` is not cancelled with each call that gives up
/// waiting for it: it is asked once, and once it answers every record goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_slower_than_the_request_timeout_is_asked_once_and_the_records_go() {
    let endpoint = endpoint();
    let loads = Arc::new(AtomicU64::new(0));
    let provider = SlowCredentials {
        delay: Duration::from_millis(300),
        loads: Arc::clone(&loads),
        ..SlowCredentials::default()
    };
    let producer = builder(&endpoint, |config| {
        config.set("RequestTimeout", "100").unwrap();
    })
    .credentials_provider(provider)
    .build()
    .unwrap();
    assert_eq!(deliver(&producer, 20).await, 20);
    producer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(loads.load(Ordering::Relaxed), 1);
    let keys: Vec<String> = endpoint.access_keys().into_keys().collect();
    assert_eq!(keys, ["AKIDSLOW"]);
}

/// Never any keys.
#[derive(Debug)]
struct Failing;

impl ProvideCredentials for Failing {
    fn provide_credentials<'a>(&'a self) -> CredentialsFuture<'a>
    where
        Self: 'a,
    {
        CredentialsFuture::ready(Err(kpl::aws::CredentialsError::provider_error(
            "the role cannot be assumed",
        )))
    }
}

/// A provider that always fails ends every record in a failure that names it, within the
/// records' time to live; nothing is sent and nothing waits for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_always_fails_ends_every_record_in_a_failure_that_names_it() {
    let endpoint = endpoint();
    let producer = builder(&endpoint, |config| {
        config.set("RecordTtl", "1500").unwrap();
    })
    .credentials_provider(Failing)
    .build()
    .unwrap();
    let stream = Stream::new("s").unwrap();
    let mut futures = Vec::new();
    for n in 0..10 {
        let record = Record::new(stream.clone(), format!("key-{n}"), vec![1; 10]);
        futures.push(producer.send(record).unwrap());
    }
    producer.flush();
    for future in futures {
        let failure = future.await.unwrap_err();
        let text = format!("{failure:?}");
        assert!(text.contains("credential"), "{text}");
    }
    producer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(endpoint.calls_of("PutRecords"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_file_and_a_credential_process_provide_keys_through_the_hook() {
    let directory = std::env::temp_dir().join(format!("kpl-credentials-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let credentials_file = directory.join("credentials");
    std::fs::write(
        &credentials_file,
        "[default]\naws_access_key_id = AKIDWRONGPROFILE\naws_secret_access_key = x\n\n\
         [kpl-test]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = secret\n",
    )
    .unwrap();
    #[allow(deprecated, reason = "see the import")]
    let profile = ProfileFileCredentialsProvider::builder()
        .profile_files(
            ProfileFiles::builder()
                .with_file(ProfileFileKind::Credentials, &credentials_file)
                .build(),
        )
        .profile_name("kpl-test")
        .build();
    let process = CredentialProcessProvider::new(
        r#"echo '{"Version": 1, "AccessKeyId": "AKIDPROCESS", "SecretAccessKey": "secret"}'"#
            .to_owned(),
    );
    let from_profile = signed_with(profile).await;
    let from_process = signed_with(process).await;
    std::fs::remove_dir_all(&directory).unwrap();
    assert_eq!(from_profile, ["AKIDPROFILE"]);
    assert_eq!(from_process, ["AKIDPROCESS"]);
}

/// The access keys that signed the calls of a producer with `provider` delivering a few records.
async fn signed_with(provider: impl ProvideCredentials + 'static) -> Vec<String> {
    let endpoint = endpoint();
    let producer = builder(&endpoint, |_| {})
        .credentials_provider(provider)
        .build()
        .unwrap();
    assert_eq!(deliver(&producer, 5).await, 5);
    producer.shutdown(Duration::from_secs(5)).await;
    endpoint.access_keys().into_keys().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_can_sign_with_credentials_of_their_own() {
    let endpoint = endpoint();
    let producer = builder(&endpoint, |config| {
        config.set("MetricsLevel", "summary").unwrap();
        config
            .set("CloudwatchEndpoint", &endpoint.endpoint())
            .unwrap();
        config.set("MetricsUploadDelay", "1000").unwrap();
        // Static keys lose to the providers.
        config.set("AwsAccessKeyId", "AKIDSTATIC").unwrap();
        config.set("AwsSecretKey", "secret").unwrap();
    })
    .credentials_provider(Fixed("AKIDRECORDS"))
    .metrics_credentials_provider(Fixed("AKIDMETRICS"))
    .build()
    .unwrap();
    assert_eq!(deliver(&producer, 10).await, 10);
    // Shutting down uploads the last interval of metrics (to an endpoint that refuses them).
    producer.shutdown(Duration::from_secs(10)).await;
    let keys = endpoint.access_keys();
    let names: Vec<&str> = keys.keys().map(String::as_str).collect();
    assert_eq!(names, ["AKIDMETRICS", "AKIDRECORDS"], "{keys:?}");
}

/// The same key every time.
#[derive(Debug)]
struct Fixed(&'static str);

impl ProvideCredentials for Fixed {
    fn provide_credentials<'a>(&'a self) -> CredentialsFuture<'a>
    where
        Self: 'a,
    {
        CredentialsFuture::ready(Ok(Credentials::new(self.0, "secret", None, None, "test")))
    }
}

#[tokio::test]
async fn a_provider_for_a_client_the_application_replaced_is_refused_at_build() {
    let sim = SimKinesis::new(1);
    let transport = kpl_sim::SimTransport::new(sim, TokioClock);
    let error = KinesisProducer::builder()
        .transport(transport)
        .credentials_provider(Fixed("AKIDUNUSED"))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            error,
            BuildError::UnusedSetting {
                setting: "credentials_provider",
                own: "transport"
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(".transport(..)"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_arn_of_another_region_is_written_through_a_client_for_that_region() {
    let endpoint = endpoint();
    let arn = endpoint.with_sim(|sim| {
        sim.create_stream("t", 2, SystemClock.now());
        assert!(sim.set_stream_region("t", "eu-west-1"));
        sim.stream_arn("t").unwrap().to_owned()
    });
    let producer = builder(&endpoint, |_| {})
        .credentials_provider(Fixed("AKIDREGIONS"))
        .build()
        .unwrap();
    let by_name = Stream::new("s").unwrap();
    let by_arn = Stream::new(arn).unwrap();
    let mut futures = Vec::new();
    for n in 0..10 {
        for stream in [&by_name, &by_arn] {
            let record = Record::new(stream.clone(), format!("key-{n}"), vec![2; 10]);
            futures.push(producer.send(record).unwrap());
        }
    }
    producer.flush_and_wait().await;
    for future in futures {
        future.await.unwrap();
    }
    producer.shutdown(Duration::from_secs(5)).await;
    let regions = endpoint.regions();
    let names: Vec<&str> = regions.keys().map(String::as_str).collect();
    assert_eq!(names, ["eu-west-1", "us-east-1"], "{regions:?}");
}

/// Set in the child process of the test below: the local endpoint to write to.
const CHILD_ENDPOINT: &str = "KPL_TEST_DEFAULT_CHAIN_ENDPOINT";

/// The SDK's default chain, with neither static keys nor a provider: the keys and the region
/// come from the profile `AWS_PROFILE` names in the files `AWS_CONFIG_FILE` and
/// `AWS_SHARED_CREDENTIALS_FILE` name. The environment is the chain's input, and a test cannot
/// set it for itself without `unsafe`, so it runs again in a child process with that
/// environment, and checks what the endpoint saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_chain_reads_the_profile_aws_profile_names() {
    if let Ok(url) = std::env::var(CHILD_ENDPOINT) {
        deliver_through_the_default_chain(&url).await;
        return;
    }
    let endpoint = endpoint();
    let directory = std::env::temp_dir().join(format!("kpl-chain-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let (config_file, credentials_file) = (directory.join("config"), directory.join("credentials"));
    std::fs::write(&config_file, "[profile kpl-chain]\nregion = eu-west-1\n").unwrap();
    std::fs::write(
        &credentials_file,
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = x\n\n\
         [kpl-chain]\naws_access_key_id = AKIDCHAIN\naws_secret_access_key = secret\n",
    )
    .unwrap();
    let output = run_child(
        "the_default_chain_reads_the_profile_aws_profile_names",
        &[
            (CHILD_ENDPOINT, endpoint.endpoint().into()),
            ("AWS_CONFIG_FILE", config_file.into()),
            ("AWS_SHARED_CREDENTIALS_FILE", credentials_file.into()),
            ("AWS_PROFILE", "kpl-chain".into()),
        ],
    );
    std::fs::remove_dir_all(&directory).unwrap();
    assert_succeeded(&output);
    let keys: Vec<String> = endpoint.access_keys().into_keys().collect();
    let regions: Vec<String> = endpoint.regions().into_keys().collect();
    assert_eq!(
        (keys, regions),
        (vec!["AKIDCHAIN".to_owned()], vec!["eu-west-1".to_owned()])
    );
}

/// The child's side of the tests of the default chain: a producer with neither keys nor a
/// provider (nor a region, unless the environment gives one) delivers to `url`.
async fn deliver_through_the_default_chain(url: &str) {
    let mut config = Config::default();
    config.set("KinesisEndpoint", url).unwrap();
    config.set("MetricsLevel", "none").unwrap();
    config.set("RecordMaxBufferedTime", "20").unwrap();
    let producer = KinesisProducer::builder().config(config).build().unwrap();
    assert_eq!(deliver(&producer, 5).await, 5);
    producer.shutdown(Duration::from_secs(5)).await;
}

/// Fails with the child's output unless it passed.
fn assert_succeeded(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the test `name` again in a child process whose AWS environment is `environment` and
/// nothing else: no keys, region, profile, web identity, container credentials or endpoint
/// of the parent's, and no instance metadata asked for.
fn run_child(name: &str, environment: &[(&str, std::ffi::OsString)]) -> std::process::Output {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", name, "--nocapture"])
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_SSO",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KINESIS",
    ] {
        child.env_remove(name);
    }
    child.envs(environment.iter().map(|(name, value)| (name, value)));
    child.output().unwrap()
}

const CHILD_REGION_ENDPOINT: &str = "KPL_TEST_REGION_ENDPOINT";

/// A producer with no `Region` takes the one the SDK's chain finds at `build` (for the records'
/// calls and the metrics'), and fails `build` with a clear error when the chain finds none.
/// Run in child processes given the environment, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_region_is_refused_at_build_and_the_chain_s_region_is_taken() {
    if let Ok(url) = std::env::var(CHILD_REGION_ENDPOINT) {
        let mut config = Config::default();
        config.set("KinesisEndpoint", &url).unwrap();
        config.set("CloudwatchEndpoint", &url).unwrap();
        config.set("AwsAccessKeyId", "AKIDREGION").unwrap();
        config.set("AwsSecretKey", "secret").unwrap();
        config.set("MetricsLevel", "summary").unwrap();
        config.set("RecordMaxBufferedTime", "20").unwrap();
        match KinesisProducer::builder().config(config).build() {
            Ok(producer) => {
                assert_eq!(deliver(&producer, 3).await, 3);
                producer.shutdown(Duration::from_secs(5)).await;
                println!("delivered");
            }
            Err(error) => {
                assert!(matches!(error, BuildError::NoRegion), "{error:?}");
                println!("refused: {error}");
            }
        }
        return;
    }
    let name = "a_missing_region_is_refused_at_build_and_the_chain_s_region_is_taken";
    let directory = std::env::temp_dir().join(format!("kpl-region-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let empty_profile = directory.join("config");
    std::fs::write(&empty_profile, "[default]\n").unwrap();
    let endpoint = endpoint();
    let nowhere = [
        (CHILD_REGION_ENDPOINT, endpoint.endpoint().into()),
        ("AWS_CONFIG_FILE", empty_profile.clone().into()),
        ("AWS_SHARED_CREDENTIALS_FILE", empty_profile.into()),
    ];
    let refused = run_child(name, &nowhere);
    let refused = String::from_utf8_lossy(&refused.stdout);
    assert!(
        refused.contains("refused:") && refused.contains("no region: set Region"),
        "{refused}"
    );
    assert_eq!(endpoint.calls(), (0, 0), "nothing was called");
    let mut from_environment = nowhere.to_vec();
    from_environment.push(("AWS_REGION", "ap-south-1".into()));
    let delivered = run_child(name, &from_environment);
    std::fs::remove_dir_all(&directory).unwrap();
    let stdout = String::from_utf8_lossy(&delivered.stdout);
    assert!(
        delivered.status.success() && stdout.contains("delivered"),
        "{stdout}"
    );
    let regions: Vec<String> = endpoint.regions().into_keys().collect();
    assert_eq!(
        regions,
        vec!["ap-south-1".to_owned()],
        "records and metrics"
    );
    let metrics_calls = endpoint.calls_of("PutMetricData");
    assert!(metrics_calls >= 1, "{:?}", endpoint.operations());
}

const CHILD_WEB_IDENTITY_ENDPOINT: &str = "KPL_TEST_WEB_IDENTITY_ENDPOINT";

/// Web identity (EKS service accounts, GitHub's OIDC): the default chain reads the token file
/// `AWS_WEB_IDENTITY_TOKEN_FILE` names, trades it with STS for keys of `AWS_ROLE_ARN`, and the
/// calls are signed with those. STS is the local endpoint too (`AWS_ENDPOINT_URL_STS`), which
/// names the keys after the token. In a child process given the environment, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_keys_from_sts_sign_the_calls() {
    if let Ok(url) = std::env::var(CHILD_WEB_IDENTITY_ENDPOINT) {
        deliver_through_the_default_chain(&url).await;
        return;
    }
    let directory = std::env::temp_dir().join(format!("kpl-web-identity-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let token_file = directory.join("token");
    std::fs::write(&token_file, "WEBIDENTITY").unwrap();
    let empty_profile = directory.join("config");
    std::fs::write(&empty_profile, "[default]\n").unwrap();
    let endpoint = endpoint();
    let output = run_child(
        "web_identity_keys_from_sts_sign_the_calls",
        &[
            (CHILD_WEB_IDENTITY_ENDPOINT, endpoint.endpoint().into()),
            ("AWS_CONFIG_FILE", empty_profile.clone().into()),
            ("AWS_SHARED_CREDENTIALS_FILE", empty_profile.into()),
            ("AWS_REGION", "eu-central-1".into()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.into()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kpl".into()),
            ("AWS_ROLE_SESSION_NAME", "kpl".into()),
            ("AWS_ENDPOINT_URL_STS", endpoint.endpoint().into()),
        ],
    );
    std::fs::remove_dir_all(&directory).unwrap();
    assert_succeeded(&output);
    let keys: Vec<String> = endpoint.access_keys().into_keys().collect();
    // STS's call is not signed (the token is its proof): an empty key.
    assert_eq!(keys, ["", "AKIDWEBIDENTITY"], "{keys:?}");
    let regions: Vec<String> = endpoint.regions().into_keys().collect();
    assert_eq!(regions, ["", "eu-central-1"]);
}

const CHILD_SSO_ENDPOINT: &str = "KPL_TEST_SSO_ENDPOINT";

/// IAM Identity Center (`aws sso login`): a profile with an `sso-session`, whose token `aws sso
/// login` left in `~/.aws/sso/cache/<sha1 of the session name>.json`; the default chain trades
/// it with the portal (`AWS_ENDPOINT_URL_SSO`, the local endpoint, which names the keys after
/// the token) for the role's keys, which sign the calls. In a child process whose `HOME` is a
/// directory of the test's, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_profile_s_cached_login_gives_the_keys_that_sign_the_calls() {
    if let Ok(url) = std::env::var(CHILD_SSO_ENDPOINT) {
        deliver_through_the_default_chain(&url).await;
        return;
    }
    let home = std::env::temp_dir().join(format!("kpl-sso-{}", std::process::id()));
    let cache = home.join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let config_file = home.join(".aws/config");
    std::fs::write(
        &config_file,
        "[profile kpl-sso]\nsso_session = kpl\nsso_account_id = 123456789012\n\
         sso_role_name = producer\nregion = ap-northeast-1\n\n\
         [sso-session kpl]\nsso_start_url = https://example.awsapps.com/start\n\
         sso_region = us-east-1\n",
    )
    .unwrap();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, b"kpl");
    let name: String = digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    std::fs::write(
        cache.join(format!("{name}.json")),
        r#"{"accessToken": "SSOLOGIN", "expiresAt": "2099-01-01T00:00:00Z",
            "region": "us-east-1", "startUrl": "https://example.awsapps.com/start"}"#,
    )
    .unwrap();
    let endpoint = endpoint();
    let output = run_child(
        "an_sso_profile_s_cached_login_gives_the_keys_that_sign_the_calls",
        &[
            (CHILD_SSO_ENDPOINT, endpoint.endpoint().into()),
            ("HOME", home.clone().into()),
            ("AWS_CONFIG_FILE", config_file.into()),
            ("AWS_SHARED_CREDENTIALS_FILE", home.join("none").into()),
            ("AWS_PROFILE", "kpl-sso".into()),
            ("AWS_ENDPOINT_URL_SSO", endpoint.endpoint().into()),
        ],
    );
    std::fs::remove_dir_all(&home).unwrap();
    assert_succeeded(&output);
    let keys: Vec<String> = endpoint.access_keys().into_keys().collect();
    // The portal's call carries the bearer token, not a signature: an empty key.
    assert_eq!(keys, ["", "AKIDSSOLOGIN"], "{keys:?}");
    let regions: Vec<String> = endpoint.regions().into_keys().collect();
    assert_eq!(regions, ["", "ap-northeast-1"]);
}
