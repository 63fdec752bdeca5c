//! What stands between a producer and Kinesis in some deployments, on loopback: a TLS endpoint
//! whose certificate comes from a private CA made for the test, and an HTTP `CONNECT` proxy that
//! may ask for basic authentication.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A TLS endpoint on loopback in front of a plain one: it decrypts and passes the bytes on.
pub(crate) struct TlsFront {
    /// `https://127.0.0.1:<port>`.
    pub(crate) endpoint: String,
    /// The PEM certificate of the CA that signed the endpoint's certificate.
    pub(crate) ca_pem: String,
}

impl TlsFront {
    /// Starts in front of `upstream`, with a certificate for `127.0.0.1` and `localhost` from a
    /// CA made now.
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let certificate = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider();
        let config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certificate.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("https://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the CA ends its handshake: nothing to pass on.
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    if let Ok(mut plain) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        Self {
            endpoint,
            ca_pem: ca.pem(),
        }
    }
}

/// An HTTP `CONNECT` proxy on loopback.
pub(crate) struct ConnectProxy {
    pub(crate) address: SocketAddr,
    /// Tunnels opened.
    pub(crate) tunnels: Arc<AtomicU64>,
    /// Requests refused for want of the right credentials.
    pub(crate) refused: Arc<AtomicU64>,
}

impl ConnectProxy {
    /// Starts; with `credentials`, only requests carrying them (basic authentication) get a
    /// tunnel, the others a `407`.
    pub(crate) async fn start(credentials: Option<(&str, &str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let expected = credentials.map(|(user, password)| {
            let pair = format!("{user}:{password}");
            format!("Basic {}", base64_simd::STANDARD.encode_to_string(pair))
        });
        let (tunnels, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let counters = (Arc::clone(&tunnels), Arc::clone(&refused));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let expected = expected.clone();
                let counters = (Arc::clone(&counters.0), Arc::clone(&counters.1));
                tokio::spawn(async move {
                    let _ = tunnel(socket, expected, counters).await;
                });
            }
        });
        Self {
            address,
            tunnels,
            refused,
        }
    }
}

async fn tunnel(
    socket: TcpStream,
    expected: Option<String>,
    (tunnels, refused): (Arc<AtomicU64>, Arc<AtomicU64>),
) -> io::Result<()> {
    let mut reader = BufReader::new(socket);
    let mut request = String::new();
    reader.read_line(&mut request).await?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("proxy-authorization")
        {
            authorization = Some(value.trim().to_owned());
        }
    }
    let mut parts = request.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    if expected.is_some() && authorization != expected {
        refused.fetch_add(1, Ordering::Relaxed);
        reader
            .get_mut()
            .write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n",
            )
            .await?;
        return Ok(());
    }
    let mut upstream = TcpStream::connect(target).await?;
    tunnels.fetch_add(1, Ordering::Relaxed);
    let mut client = reader.into_inner();
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
