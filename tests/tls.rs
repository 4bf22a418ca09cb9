//! TLS end to end: termination with certificates chosen by SNI, plaintext and
//! TLS on one port, the Flash policy inside TLS, passthrough by SNI, broken
//! handshakes, and certificate errors at startup. Certificates are made by
//! rcgen in each test; clients are rustls.

mod common;

use common::http_backend::{field, http_backend};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A test CA and a directory to write certificates into.
struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
}

/// A certificate written to disk.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "sluice test CA");
        let key = KeyPair::generate().unwrap();
        let ca_der = params.self_signed(&key).unwrap().der().clone();
        Pki { dir, ca: Issuer::new(params, key), ca_der }
    }

    fn leaf(&self, file: &str, names: &[&str], expired: bool) -> Leaf {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (cert_path, key_path) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf { cert: cert_path, key: key_path, der: cert.der().clone() }
    }

    /// A client that trusts the test CA.
    fn client(&self, alpn: &[&str]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that accepts any certificate and remembers the one it was shown,
/// to see which certificate an unknown name gets.
fn recording_client() -> (TlsConnector, Arc<Mutex<Option<CertificateDer<'static>>>>) {
    #[derive(Debug)]
    struct Record(Arc<Mutex<Option<CertificateDer<'static>>>>, Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for Record {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            *self.0.lock().unwrap() = Some(end_entity.clone().into_owned());
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.1.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.1.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.1.signature_verification_algorithms.supported_schemes()
        }
    }
    let seen = Arc::new(Mutex::new(None));
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Record(seen.clone(), provider())))
        .with_no_client_auth();
    (TlsConnector::from(Arc::new(config)), seen)
}

const POLICY: &str = "<cross-domain-policy><allow-access-from domain=\"*\" to-ports=\"443\"/></cross-domain-policy>";

/// The main listener terminates TLS with a.test, b.test (+ *.b.test) and a
/// default certificate; the pass listener passes some names through.
async fn tls_proxy(a: &Leaf, b: &Leaf, default: &Leaf, pass: std::net::SocketAddr) -> Proxy {
    let web = http_backend("web").await;
    let raw = tagged_echo("raw-pass").await;
    Proxy::start(&format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"
default-backend = "web"
tls-handshake-timeout = "2s"
[[listeners.certificates]]
cert = "{a_cert}"
key = "{a_key}"
[[listeners.certificates]]
cert = "{b_cert}"
key = "{b_key}"
[[listeners.certificates]]
cert = "{d_cert}"
key = "{d_key}"
default = true

[[listeners]]
name = "pass"
bind = "127.0.0.1:0"
sniff = "passthrough"
default-backend = "web"

[backends.web]
servers = ["{web}"]
[backends.tls-pass]
servers = ["{pass}"]
[backends.raw-pass]
servers = ["{raw}"]

[plugins.sniff]
builtin = "sniff"
[plugins.sniff.settings]
flash-policy = '{POLICY}'

[plugins.passthrough]
builtin = "sniff"
[plugins.passthrough.settings]
tls-passthrough = {{ "pass.test" = "tls-pass", "a.test" = "raw-pass" }}

[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"
"#,
        a_cert = a.cert.display(),
        a_key = a.key.display(),
        b_cert = b.cert.display(),
        b_key = b.key.display(),
        d_cert = default.cert.display(),
        d_key = default.key.display(),
        web = web.addr,
    ))
    .await
}

struct World {
    pki: Pki,
    a: Leaf,
    b: Leaf,
    default: Leaf,
    pass_leaf: Leaf,
    proxy: Proxy,
}

async fn world() -> World {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"], false);
    let b = pki.leaf("b", &["b.test", "*.b.test"], false);
    let default = pki.leaf("default", &["default.test"], false);
    let pass_leaf = pki.leaf("pass", &["pass.test"], false);
    let pass = tls_echo_backend(&pass_leaf).await;
    let proxy = tls_proxy(&a, &b, &default, pass).await;
    World { pki, a, b, default, pass_leaf, proxy }
}

/// A backend that terminates TLS itself and echoes.
async fn tls_echo_backend(leaf: &Leaf) -> std::net::SocketAddr {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(stream).await?;
                let mut buf = [0u8; 1024];
                loop {
                    let n = tls.read(&mut buf).await?;
                    if n == 0 {
                        return tls.shutdown().await;
                    }
                    tls.write_all(&buf[..n]).await?;
                }
            });
        }
    });
    addr
}

async fn handshake(
    connector: &TlsConnector,
    proxy: &Proxy,
    listener: &str,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = proxy.connect(listener).await;
    connector.connect(ServerName::try_from(name.to_string()).unwrap(), tcp).await.expect("TLS handshake")
}

fn served_cert(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

#[tokio::test]
async fn each_name_gets_its_certificate_and_unknown_names_the_default() {
    let w = world().await;
    let client = w.pki.client(&[]);
    assert_eq!(served_cert(&handshake(&client, &w.proxy, "main", "a.test").await), w.a.der);
    assert_eq!(served_cert(&handshake(&client, &w.proxy, "main", "b.test").await), w.b.der);
    assert_eq!(served_cert(&handshake(&client, &w.proxy, "main", "x.b.test").await), w.b.der, "wildcard");
    let (recording, seen) = recording_client();
    handshake(&recording, &w.proxy, "main", "unknown.test").await;
    assert_eq!(seen.lock().unwrap().clone(), Some(w.default.der.clone()));
}

#[tokio::test]
async fn one_port_serves_http_and_https() {
    let w = world().await;
    // Plain HTTP.
    let tcp = w.proxy.connect("main").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get("/plain").header("host", "a.test").body(Empty::<bytes::Bytes>::new()).unwrap();
    let body = sender.send_request(request).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(field(&body, "x-forwarded-proto"), Some("http"), "{body}");

    // HTTPS, HTTP/1.1 by ALPN.
    let tls = handshake(&w.pki.client(&["http/1.1"]), &w.proxy, "main", "a.test").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get("/secure").header("host", "a.test").body(Empty::<bytes::Bytes>::new()).unwrap();
    let body = sender.send_request(request).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(field(&body, "x-forwarded-proto"), Some("https"), "{body}");
    assert_eq!(field(&body, "path"), Some("/secure"));

    // HTTPS, HTTP/2 by ALPN.
    let tls = handshake(&w.pki.client(&["h2"]), &w.proxy, "main", "b.test").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get("https://b.test/h2").body(Empty::<bytes::Bytes>::new()).unwrap();
    let body = sender.send_request(request).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(field(&body, "host"), Some("b.test"), "{body}");
    assert_eq!(field(&body, "x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn an_http10_request_inside_tls_is_answered_in_http10_and_closed() {
    let w = world().await;
    let mut tls = handshake(&w.pki.client(&[]), &w.proxy, "main", "a.test").await;
    tls.write_all(b"GET /old HTTP/1.0\r\nHost: a.test\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    // The proxy closes after an HTTP/1.0 answer: read_to_end returns.
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was not closed after the answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.0 200 "), "{answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert_eq!(field(body, "x-forwarded-proto"), Some("https"), "{answer}");
    assert_eq!(field(body, "path"), Some("/old"), "{answer}");
}

#[tokio::test]
async fn flash_policy_inside_tls() {
    let w = world().await;
    let mut tls = handshake(&w.pki.client(&[]), &w.proxy, "main", "a.test").await;
    tls.write_all(b"<policy-file-request/>\0").await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply)).await.unwrap();
    let mut expected = POLICY.as_bytes().to_vec();
    expected.push(0);
    assert_eq!(reply, expected);
}

#[tokio::test]
async fn passthrough_by_sni_reaches_a_backend_that_terminates_itself() {
    let w = world().await;
    let mut tls = handshake(&w.pki.client(&[]), &w.proxy, "pass", "pass.test").await;
    assert_eq!(served_cert(&tls), w.pass_leaf.der, "the backend's own certificate, untouched");
    tls.write_all(b"through the tunnel").await.unwrap();
    let mut echoed = [0u8; 18];
    tls.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"through the tunnel");
}

#[tokio::test]
async fn a_client_hello_split_over_segments_is_routed_by_its_name() {
    let w = world().await;
    // A real ClientHello for "a.test", sent in three pieces.
    let hello = testdata("tls-client-hello.bin");
    let mut client = w.proxy.connect("pass").await;
    for piece in [&hello[..3], &hello[3..200], &hello[200..]] {
        client.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut expected = b"raw-pass\n".to_vec();
    expected.extend_from_slice(&hello);
    assert_eq!(read_exactly(&mut client, expected.len()).await, expected, "routed by SNI, every byte replayed");
}

#[tokio::test]
async fn garbage_and_truncated_hellos_close_cleanly_while_others_are_served() {
    let w = world().await;
    let client = w.pki.client(&[]);
    let good = handshake(&client, &w.proxy, "main", "a.test");
    let bad = async {
        let mut garbage = w.proxy.connect("main").await;
        garbage.write_all(&[0x16, 0x03, 0x01, 0x00, 0x20, 0x01, 0xde, 0xad, 0xbe, 0xef]).await.unwrap();
        garbage.write_all(&[0x42; 64]).await.unwrap();
        let garbage_closed = closed_without_data(&mut garbage).await;
        let mut truncated = w.proxy.connect("main").await;
        truncated.write_all(&testdata("tls-client-hello.bin")[..100]).await.unwrap();
        truncated.shutdown().await.unwrap();
        (garbage_closed, closed_without_data(&mut truncated).await)
    };
    let (good, (garbage_closed, truncated_closed)) = tokio::join!(good, bad);
    assert!(garbage_closed && truncated_closed);
    assert_eq!(served_cert(&good), w.a.der);
    let _ = (&w.b, &w.default);
}

async fn start_error(config: String) -> String {
    let config = sluice::Config::parse(&config, &repo_root().join("test.toml")).unwrap_or_else(|e| panic!("{e}"));
    match sluice::App::bind(config).await {
        Ok(_) => panic!("the proxy started"),
        Err(e) => e.to_string(),
    }
}

fn listener_with(cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\n\
         [[listeners.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n[plugins.sniff]\nbuiltin = \"sniff\"\n",
        cert.display(),
        key.display()
    )
}

#[tokio::test]
async fn certificate_problems_stop_startup_with_the_file_named() {
    let pki = Pki::new();
    let expired = pki.leaf("expired", &["old.test"], true);
    let message = start_error(listener_with(&expired.cert, &expired.key)).await;
    assert!(message.contains(&format!("{}: the certificate expired on", expired.cert.display())), "{message}");

    let a = pki.leaf("a", &["a.test"], false);
    let b = pki.leaf("b", &["b.test"], false);
    let message = start_error(listener_with(&a.cert, &b.key)).await;
    assert!(message.contains(&format!("{}: the private key does not match", b.key.display())), "{message}");

    std::fs::write(pki.dir.join("empty.pem"), "not a pem file\n").unwrap();
    let message = start_error(listener_with(&pki.dir.join("empty.pem"), &a.key)).await;
    assert!(message.contains("empty.pem: no certificate found"), "{message}");

    let missing = pki.dir.join("missing.pem");
    let err = sluice::Config::parse(&listener_with(&missing, &a.key), &repo_root().join("test.toml")).unwrap_err();
    assert!(err.to_string().contains("listeners[0].certificates[0].cert:"), "{err}");
    assert!(err.to_string().contains("missing.pem does not exist"), "{err}");
}
