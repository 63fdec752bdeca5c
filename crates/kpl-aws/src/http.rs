//! The HTTP client for settings the SDK's default client does not take: a proxy, a trust store
//! of the application's, no certificate checks. The first two are the SDK's own hyper 1
//! connector (`aws-smithy-http-client`) with them set; the last is a connector of our own
//! ([`unverified_tls`]). One connector per set of timeouts the SDK asks for.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_smithy_http_client::Connector;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use crate::{AwsSettings, AwsSettingsError, unverified_tls};

/// A client with the proxy, trust store and certificate checking of `settings`, or `None` when
/// they ask for none of them (the SDK's default client then serves).
pub(crate) fn client_for(
    settings: &AwsSettings,
) -> Result<Option<SharedHttpClient>, AwsSettingsError> {
    if !settings.verify_certificate {
        let route = match proxy_url(settings) {
            Some(url) => unverified_tls::ProxyRoute::fixed(
                &url,
                settings
                    .proxy_credentials
                    .as_ref()
                    .map(|(user, password)| (user.as_str(), password.as_str())),
            )?,
            None if proxy_in_environment() => unverified_tls::ProxyRoute::from_environment(),
            None => unverified_tls::ProxyRoute::Direct,
        };
        let tls = unverified_tls::accept_any_certificate()?;
        return Ok(Some(SharedHttpClient::new(ConfiguredClient {
            stack: Stack::Unverified { route, tls },
            connectors: Mutex::default(),
        })));
    }
    let proxy = proxy_config(settings)?;
    let trust = trust_store(settings)?;
    if proxy.is_none() && trust.is_none() {
        return Ok(None);
    }
    let mut context = TlsContext::builder();
    if let Some(trust) = trust {
        context = context.with_trust_store(trust);
    }
    let context = context
        .build()
        .map_err(|error| AwsSettingsError::CustomCa(error.to_string()))?;
    Ok(Some(SharedHttpClient::new(ConfiguredClient {
        stack: Stack::Sdk {
            proxy: proxy.unwrap_or_else(ProxyConfig::disabled),
            tls: context,
        },
        connectors: Mutex::default(),
    })))
}

/// Whether the environment names a proxy, as the AWS SDKs read it.
fn proxy_in_environment() -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// `ProxyHost` as a URL: the KPL names a host (with `ProxyPort`, 443 by default); a URL is
/// taken as it is.
fn proxy_url(settings: &AwsSettings) -> Option<String> {
    let host = settings
        .proxy_host
        .as_deref()
        .filter(|host| !host.is_empty())?;
    Some(if host.contains("://") {
        host.to_owned()
    } else {
        format!("http://{host}:{}", settings.proxy_port.unwrap_or(443))
    })
}

/// `ProxyHost` (with `ProxyPort`, `ProxyUserName`, `ProxyPassword`), else the `HTTPS_PROXY` /
/// `HTTP_PROXY` / `NO_PROXY` environment as the AWS SDKs read it.
fn proxy_config(settings: &AwsSettings) -> Result<Option<ProxyConfig>, AwsSettingsError> {
    let Some(url) = proxy_url(settings) else {
        return Ok(proxy_in_environment().then(ProxyConfig::from_env));
    };
    if url.contains('@') {
        // Where it would be printed, or logged by a layer below, it cannot be taken back.
        return Err(AwsSettingsError::Proxy(format!(
            "{:?} holds user information: give it as the proxy's user name and password \
             (ProxyUserName, ProxyPassword) instead",
            without_userinfo(&url)
        )));
    }
    let mut config = ProxyConfig::all(url.as_str()).map_err(|error| {
        AwsSettingsError::Proxy(format!("proxy {:?}: {error}", without_userinfo(&url)))
    })?;
    if let Some((user, password)) = &settings.proxy_credentials {
        config = config.with_basic_auth(user.as_str(), password.as_str());
    }
    Ok(Some(config))
}

/// `url` without a `user:password@` part, for messages: a password written into `ProxyHost`
/// must not be printed.
pub(crate) fn without_userinfo(url: &str) -> String {
    kpl_engine::transport::redact_userinfo(url)
}

/// Where a PEM certificate begins.
const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// The PEM certificates of `ca_certificates` (a file, or every `.pem`/`.crt` file of a
/// directory), trusted instead of the built-in roots.
fn trust_store(settings: &AwsSettings) -> Result<Option<TrustStore>, AwsSettingsError> {
    let Some(path) = settings
        .ca_certificates
        .as_deref()
        .filter(|path| !path.is_empty())
    else {
        return Ok(None);
    };
    let unreadable = |error: std::io::Error| AwsSettingsError::CustomCa(format!("{path}: {error}"));
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    let files: Vec<std::path::PathBuf> = if metadata.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(unreadable)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|file| {
                file.extension()
                    .is_some_and(|extension| extension == "pem" || extension == "crt")
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.into()]
    };
    let mut store = TrustStore::empty().with_native_roots(false);
    let mut found = false;
    for file in files {
        let pem = std::fs::read(&file).map_err(unreadable)?;
        if pem
            .windows(PEM_CERTIFICATE.len())
            .any(|window| window == PEM_CERTIFICATE)
        {
            found = true;
            store.add_pem_certificate(pem);
        }
    }
    if !found {
        return Err(AwsSettingsError::CustomCa(format!(
            "{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
        )));
    }
    Ok(Some(store))
}

/// Connectors of one stack, cached by the timeouts asked for.
struct ConfiguredClient {
    stack: Stack,
    connectors: Mutex<Vec<(Timeouts, SharedHttpConnector)>>,
}

/// What makes the connectors.
enum Stack {
    /// The SDK's connector with a proxy and a TLS context.
    Sdk { proxy: ProxyConfig, tls: TlsContext },
    /// `VerifyCertificate = false`: a connector of our own that accepts any certificate.
    Unverified {
        route: unverified_tls::ProxyRoute,
        tls: Arc<rustls::ClientConfig>,
    },
}

type Timeouts = (Option<Duration>, Option<Duration>);

impl fmt::Debug for ConfiguredClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The proxy's password stays out.
        f.debug_struct("ConfiguredClient").finish_non_exhaustive()
    }
}

impl HttpClient for ConfiguredClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self
            .connectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, connector)) = connectors.iter().find(|(timeouts, _)| *timeouts == key) {
            return connector.clone();
        }
        let connector = match &self.stack {
            Stack::Sdk { proxy, tls } => {
                let mut builder = Connector::builder().connector_settings(settings.clone());
                builder.set_sleep_impl(components.sleep_impl());
                SharedHttpConnector::new(
                    builder
                        .proxy_config(proxy.clone())
                        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
                        .tls_context(tls.clone())
                        .build(),
                )
            }
            Stack::Unverified { route, tls } => unverified_tls::connector(route, tls, settings),
        };
        connectors.push((key, connector.clone()));
        connector
    }
}
