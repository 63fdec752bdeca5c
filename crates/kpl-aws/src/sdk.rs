//! Where and as whom AWS calls go: the settings the Kinesis transport and the CloudWatch
//! exporter share, and the one way they become the SDK's configuration.

use std::fmt;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// The settings every AWS client of the producer takes. Everything is optional: by default the
/// SDK's provider chains decide the region and the credentials, and the regional endpoint is
/// used.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct SdkSettings {
    /// The region, such as `us-east-1`.
    pub region: Option<String>,
    /// A full endpoint URL (`http://` or `https://`), for local servers or VPC endpoints.
    pub endpoint_url: Option<String>,
    /// Static credentials (the SDK's type, which never prints the secret).
    pub credentials: Option<Credentials>,
    /// A credentials provider of the application's (an SSO or web-identity provider, one that
    /// rotates keys, ...); it takes precedence over `credentials`. Without either, the SDK's
    /// default chain decides.
    pub credentials_provider: Option<SharedCredentialsProvider>,
    /// Timeout of each call (each attempt).
    pub request_timeout: Option<Duration>,
}

impl SdkSettings {
    /// aws-config's loader with these settings laid over the SDK's defaults, and `http_client`
    /// for every call (the credential chain's own included) if given. Retries, and timeouts
    /// beyond `request_timeout`, are the caller's to add.
    pub fn loader(&self, http_client: Option<SharedHttpClient>) -> ConfigLoader {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(http_client) = http_client {
            loader = loader.http_client(http_client);
        }
        if let Some(request) = self.request_timeout {
            let timeouts = TimeoutConfig::builder().operation_attempt_timeout(request);
            loader = loader.timeout_config(timeouts.build());
        }
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(provider) = &self.credentials_provider {
            loader = loader.credentials_provider(provider.clone());
        } else if let Some(keys) = &self.credentials {
            loader = loader.credentials_provider(keys.clone());
        }
        loader
    }

    /// The credentials provider these settings give, if any: the application's provider, else
    /// the static keys.
    pub fn provider(&self) -> Option<SharedCredentialsProvider> {
        self.credentials_provider
            .clone()
            .or_else(|| self.credentials.clone().map(SharedCredentialsProvider::new))
    }
}

impl fmt::Debug for SdkSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkSettings")
            .field("region", &self.region)
            .field(
                "endpoint_url",
                &self
                    .endpoint_url
                    .as_deref()
                    .map(crate::http::without_userinfo),
            )
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "credentials_provider",
                &self.credentials_provider.as_ref().map(|_| "<provider>"),
            )
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}
