//! The producer's configuration as the AWS transport's and the CloudWatch exporter's settings:
//! region, endpoint, credentials, timeouts, proxy, trust store; the default transport and
//! exporter made from them, sharing one way through the network.

use std::sync::Arc;

use kpl_engine::transport::SharedTransport;

use crate::config::Config;
use crate::error::BuildError;
use kpl_engine::metrics::MetricsExporter;

/// The default transport, when the producer made one: the default exporter derives its SDK
/// configuration from the transport's (region, credentials, HTTP client with its proxy and trust
/// store), so the records and their metrics go one way.
#[cfg(feature = "aws")]
pub(crate) type Network = Option<kpl_aws::AwsTransport>;
#[cfg(not(feature = "aws"))]
pub(crate) type Network = ();

/// The credentials providers given to the builder, for the default transport and exporter.
#[derive(Default)]
pub(crate) struct Credentials {
    #[cfg(feature = "aws")]
    pub(crate) kinesis: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    #[cfg(feature = "cloudwatch")]
    pub(crate) metrics: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl Credentials {
    /// A provider given for a part the application replaced with its own: the setting that
    /// would go unused, and the builder method that replaced the part.
    #[allow(
        unused_variables,
        reason = "without the aws features nothing can go unused"
    )]
    pub(crate) fn unused(
        &self,
        own_transport: bool,
        own_exporter: bool,
    ) -> Option<(&'static str, &'static str)> {
        #[cfg(feature = "aws")]
        if own_transport && self.kinesis.is_some() {
            return Some(("credentials_provider", "transport"));
        }
        #[cfg(feature = "cloudwatch")]
        if own_exporter && self.metrics.is_some() {
            return Some(("metrics_credentials_provider", "metrics_exporter"));
        }
        None
    }
}

/// Whether `url` (`scheme://host[:port][/path]`) names this machine: `localhost`, 127.0.0.0/8
/// or `[::1]`.
#[cfg(any(feature = "aws", test))]
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `AwsAccessKeyId`, `AwsSecretKey` and `AwsSessionToken` as the AWS clients take them. Empty
/// credentials (set field by field) mean the default chain, never empty static keys.
#[cfg(feature = "aws")]
pub(crate) fn static_credentials(config: &Config) -> Option<aws_credential_types::Credentials> {
    let credentials = config.credentials.as_ref().filter(|c| !c.is_empty())?;
    Some(aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
        None,
        "kpl-static",
    ))
}

/// The AWS transport's settings for `config`: region, endpoint, static credentials, timeouts,
/// proxy, trust store, certificate checks.
#[cfg(feature = "aws")]
pub(crate) fn aws_settings(config: &Config) -> Result<kpl_aws::AwsSettings, BuildError> {
    let endpoint_url = crate::config::endpoint_url(&config.kinesis_endpoint, config.kinesis_port);
    if let Some(url) = &endpoint_url
        && url.starts_with("http://")
        && !is_loopback_url(url)
    {
        tracing::warn!(
            endpoint = %crate::transport::redact_userinfo(url),
            "plain http to a host that is not this machine: records and the session token travel unencrypted"
        );
    }
    let mut settings = kpl_aws::AwsSettings::default();
    settings.sdk.region = (!config.region.is_empty()).then(|| config.region.clone());
    settings.sdk.endpoint_url = endpoint_url;
    settings.sdk.credentials = static_credentials(config);
    settings.connect_timeout = Some(config.connect_timeout);
    settings.sdk.request_timeout = Some(config.request_timeout);
    settings.verify_certificate = config.verify_certificate;
    settings.proxy_host = (!config.proxy_host.is_empty()).then(|| config.proxy_host.clone());
    settings.proxy_port = Some(config.proxy_port);
    settings.proxy_credentials = (!config.proxy_user_name.is_empty()).then(|| {
        (
            config.proxy_user_name.clone(),
            config.proxy_password.clone(),
        )
    });
    settings.ca_certificates = match (config.ca_cert_path.as_str(), config.ca_cert_file.as_str()) {
        ("", "") => None,
        (path, "") | ("", path) => Some(path.to_owned()),
        (_, _) => {
            let both = "CaCertPath and CaCertFile are both set: set one (a directory, or a file)";
            return Err(BuildError::UnsupportedSetting(Box::new(
                kpl_aws::AwsSettingsError::CustomCa(both.to_owned()),
            )));
        }
    };
    Ok(settings)
}

/// The AWS transport for `config`, signing with `provider` if given (else the static keys of
/// `config`, else the SDK's chain).
#[cfg(feature = "aws")]
pub(crate) fn aws_transport(
    config: &Config,
    provider: Option<aws_credential_types::provider::SharedCredentialsProvider>,
) -> Result<kpl_aws::AwsTransport, BuildError> {
    let mut settings = aws_settings(config)?;
    settings.sdk.credentials_provider = provider;
    kpl_aws::AwsTransport::new(settings).map_err(|error| match error {
        kpl_aws::AwsSettingsError::NoRegion => BuildError::NoRegion,
        error => BuildError::UnsupportedSetting(Box::new(error)),
    })
}

/// The AWS transport configured from `config` (region, endpoint, credentials, timeouts), with
/// the application's credentials provider if it gave one.
#[cfg(feature = "aws")]
pub(crate) fn default_transport(
    config: &Config,
    providers: &Credentials,
) -> Result<(SharedTransport, Network), BuildError> {
    // The AWS client's connections need the runtime's IO driver; without it every call would
    // panic in a task.
    let io = crate::runtime_probe::has_driver(|| {
        let registered =
            std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).and_then(|socket| {
                socket.set_nonblocking(true)?;
                tokio::net::UdpSocket::from_std(socket)
            });
        drop(registered);
    });
    if !io {
        return Err(BuildError::RuntimeWithoutIo);
    }
    let transport = aws_transport(config, providers.kinesis.clone())?;
    Ok((SharedTransport::new(transport.clone()), Some(transport)))
}

/// The KPL's default: metrics uploaded to CloudWatch, with the producer's region and
/// credentials, at `CloudwatchEndpoint` if set.
#[cfg(feature = "cloudwatch")]
pub(crate) fn default_exporter(
    config: &Config,
    providers: &Credentials,
    network: Network,
) -> Option<Arc<dyn MetricsExporter>> {
    if config.metrics_level == crate::MetricsLevel::None {
        return None;
    }
    let mut settings = kpl_cloudwatch::CloudWatchSettings::default();
    // Made only beside the default transport: the application's own transport comes with
    // its own exporter, or none.
    let transport = network?;
    // The transport's region (`Region`, or what the SDK's chain found at build), its
    // credentials and its way through the network (proxy, trust store), as the KPL's metrics
    // take the records'. `KinesisEndpoint` is Kinesis's alone; an endpoint from the environment
    // or the profile (`AWS_ENDPOINT_URL`) stands for every service.
    let kinesis_endpoint =
        crate::config::endpoint_url(&config.kinesis_endpoint, config.kinesis_port).is_some();
    settings.base_config = Some(Arc::new(move || {
        let transport = transport.clone();
        Box::pin(async move {
            let base = transport.sdk_config().await;
            if !kinesis_endpoint {
                return base;
            }
            let mut base = base.into_builder();
            base.set_endpoint_url(None);
            base.build()
        })
    }));
    settings.sdk.endpoint_url =
        crate::config::endpoint_url(&config.cloudwatch_endpoint, config.cloudwatch_port);
    if kinesis_endpoint && settings.sdk.endpoint_url.is_none() {
        // Most often a local server or a test: the records stay local, and the metrics would
        // go to the region's CloudWatch, with the producer's credentials.
        tracing::warn!(
            metrics_level = ?config.metrics_level,
            "KinesisEndpoint is set and CloudwatchEndpoint is not: the metrics go to the \
             region's CloudWatch; set MetricsLevel=none, or CloudwatchEndpoint, to keep them \
             elsewhere"
        );
    }
    // The metrics' own provider, if they have one, as in the KPL.
    if let Some(provider) = &providers.metrics {
        settings.sdk.credentials_provider = Some(provider.clone());
    }
    settings.sdk.request_timeout = Some(config.request_timeout);
    Some(Arc::new(kpl_cloudwatch::CloudWatchExporter::new(settings)))
}

/// Without the `cloudwatch` feature metrics are uploaded only to an exporter the application
/// gives.
#[cfg(not(feature = "cloudwatch"))]
pub(crate) fn default_exporter(
    _: &Config,
    _: &Credentials,
    _: Network,
) -> Option<Arc<dyn MetricsExporter>> {
    None
}

/// Without the `aws` feature there is no default transport.
#[cfg(not(feature = "aws"))]
pub(crate) fn default_transport(
    _: &Config,
    _: &Credentials,
) -> Result<(SharedTransport, Network), BuildError> {
    Err(BuildError::NoTransport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints_are_told_from_remote_ones() {
        for url in [
            "http://localhost:4567",
            "http://127.0.0.1:4567/",
            "http://127.8.9.10",
            "http://[::1]:4567",
            "http://LOCALHOST",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:4567",
            "http://kinesis.example.com",
            "http://localhost.example.com:80",
            "http://[2001:db8::1]:4567",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }
}
