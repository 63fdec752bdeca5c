//! `VerifyCertificate = false`: an HTTP connector whose TLS accepts any server certificate.
//!
//! The SDK's own connector builds its rustls configuration inside and takes no verifier, so
//! this path has a hyper client of its own: hyper-util's pooled client, hyper-rustls over a
//! rustls configuration whose verifier accepts every certificate (the handshake's signatures
//! are still checked, so the session is encrypted to whoever holds the presented key), and
//! hyper-util's `CONNECT` tunnel for a proxy. Everything else about a call (signing, retries,
//! timeouts of the whole operation) stays with the SDK.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use http::{HeaderValue, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tower_service::Service;

use crate::AwsSettingsError;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Where connections go: straight to the endpoint, or through a proxy by `CONNECT`.
#[derive(Clone)]
pub(crate) enum ProxyRoute {
    /// No proxy.
    Direct,
    /// `ProxyHost`: every connection through this proxy, with this `Proxy-Authorization`.
    Fixed {
        proxy: Uri,
        authorization: Option<HeaderValue>,
    },
    /// The `HTTPS_PROXY` / `NO_PROXY` environment decides per destination.
    Environment(Arc<Matcher>),
}

impl ProxyRoute {
    /// The proxy named by a URL (`http://host:port`), with basic authentication when given.
    pub(crate) fn fixed(
        url: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<Self, AwsSettingsError> {
        let shown = crate::http::without_userinfo(url);
        let proxy: Uri = url
            .parse()
            .map_err(|error| AwsSettingsError::Proxy(format!("proxy {shown:?}: {error}")))?;
        if proxy.scheme_str() != Some("http") {
            return Err(AwsSettingsError::Proxy(format!(
                "proxy {shown:?}: with VerifyCertificate=false only an http:// proxy is supported"
            )));
        }
        let authorization = credentials
            .map(|(user, password)| {
                let token = base64_simd::STANDARD.encode_to_string(format!("{user}:{password}"));
                let mut value = HeaderValue::try_from(format!("Basic {token}")).map_err(|_| {
                    AwsSettingsError::Proxy(
                        "ProxyUserName/ProxyPassword hold characters a header cannot carry".into(),
                    )
                })?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        Ok(Self::Fixed {
            proxy,
            authorization,
        })
    }

    /// The proxy the environment names for each destination.
    pub(crate) fn from_environment() -> Self {
        Self::Environment(Arc::new(Matcher::from_env()))
    }

    /// The proxy for `destination` and its authorization, or `None` to connect directly.
    fn proxy_for(&self, destination: &Uri) -> Option<(Uri, Option<HeaderValue>)> {
        match self {
            Self::Direct => None,
            Self::Fixed {
                proxy,
                authorization,
            } => Some((proxy.clone(), authorization.clone())),
            Self::Environment(matcher) => matcher
                .intercept(destination)
                .map(|intercept| (intercept.uri().clone(), intercept.basic_auth().cloned())),
        }
    }
}

/// The TLS configuration that accepts any server certificate.
pub(crate) fn accept_any_certificate() -> Result<Arc<ClientConfig>, AwsSettingsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| AwsSettingsError::CustomCa(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A connector for the SDK with `settings`' timeouts.
pub(crate) fn connector(
    route: &ProxyRoute,
    tls: &Arc<ClientConfig>,
    settings: &HttpConnectorSettings,
) -> SharedHttpConnector {
    let mut tcp = TcpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(settings.connect_timeout());
    let routed = RoutedConnector {
        tcp,
        route: route.clone(),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(ClientConfig::clone(tls))
        .https_or_http()
        .enable_http1()
        .wrap_connector(routed);
    let client = Client::builder(TokioExecutor::new()).build(https);
    SharedHttpConnector::new(UnverifiedConnector {
        client,
        read_timeout: settings.read_timeout(),
    })
}

/// Accepts whatever certificate the server presents; checks only that the handshake is signed
/// by its key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TCP connections, straight or through the route's proxy.
#[derive(Clone)]
struct RoutedConnector {
    tcp: TcpConnector,
    route: ProxyRoute,
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<tokio::net::TcpStream>, BoxError>> + Send>>;

impl Service<Uri> for RoutedConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        match self.route.proxy_for(&destination) {
            None => {
                let connecting = self.tcp.call(destination);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Some((proxy, authorization)) => {
                let mut tunnel = Tunnel::new(proxy, self.tcp.clone());
                if let Some(authorization) = authorization {
                    tunnel = tunnel.with_auth(authorization);
                }
                Box::pin(async move {
                    std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
                    Ok(tunnel.call(destination).await?)
                })
            }
        }
    }
}

/// The SDK's view of the hyper client.
struct UnverifiedConnector {
    client: Client<HttpsConnector<RoutedConnector>, SdkBody>,
    read_timeout: Option<Duration>,
}

impl fmt::Debug for UnverifiedConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedConnector")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpConnector for UnverifiedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(error) => {
                return HttpConnectorFuture::ready(Err(ConnectorError::user(error.into())));
            }
        };
        let responding = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let answered = match read_timeout {
                Some(limit) => tokio::time::timeout(limit, responding)
                    .await
                    .map_err(|elapsed| ConnectorError::timeout(elapsed.into()))?,
                None => responding.await,
            };
            let response = answered.map_err(connector_error)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|error| ConnectorError::other(error.into(), None))
        })
    }
}

/// A failed call as the SDK classifies it: not reaching the server (refused, TLS, proxy) and
/// broken connections are I/O, which the engine retries as `ConnectionError`.
fn connector_error(error: hyper_util::client::legacy::Error) -> ConnectorError {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(&error);
    let mut io = error.is_connect();
    while let Some(current) = cause {
        io |= current.is::<std::io::Error>();
        cause = current.source();
    }
    if io {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}
