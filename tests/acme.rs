//! Automatic certificates against the real ACME test server, Pebble (Debian
//! package `pebble`): issue with TLS-ALPN-01 and HTTP-01, serve, renew, and
//! survive Pebble being down at renewal time.
//!
//! sluice is bound first (port 0); Pebble is then configured to validate on
//! sluice's port, to resolve every name to 127.0.0.1 through
//! `pebble-challtestsrv`'s mock DNS, to issue 20-second certificates (so
//! renewal, at two thirds of the lifetime, happens within the test) and never
//! to reuse an authorization (so every renewal answers a fresh challenge).
//! Without Pebble the test is skipped, except under `CI=true`, where it fails.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// Every wait in this test ends by this long.
const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether pebble is installed; under CI it must be.
fn pebble_installed() -> bool {
    let found = ["pebble", "pebble-challtestsrv"].iter().all(|tool| {
        std::process::Command::new(tool).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    });
    if !found && std::env::var("CI").as_deref() == Ok("true") {
        panic!("pebble and pebble-challtestsrv are required under CI (apt-get install -y pebble)");
    }
    if !found {
        eprintln!("skipped: pebble is not installed (apt-get install -y pebble)");
    }
    found
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Pebble, its mock DNS server, and the test CA for Pebble's own HTTPS.
struct Pebble {
    dir: PathBuf,
    config: PathBuf,
    dns: u16,
    api: SocketAddr,
    management: SocketAddr,
    ca_der: CertificateDer<'static>,
    dns_server: Child,
    server: Option<Child>,
}

impl Pebble {
    /// Make Pebble's HTTPS certificate and pick its ports; start its DNS server.
    fn new(dir: &Path) -> Pebble {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "pebble HTTPS test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        std::fs::write(dir.join("pebble-ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("pebble-key.pem"), leaf_key.serialize_pem()).unwrap();

        let (api, management, dns) = (free_tcp_port(), free_tcp_port(), free_udp_port());
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_tcp_port()), "-defaultIPv6", ""])
            .stdout(log_file(dir, "challtestsrv.log"))
            .stderr(log_file(dir, "challtestsrv.log"))
            .kill_on_drop(true)
            .spawn()
            .expect("starting pebble-challtestsrv");
        Pebble {
            dir: dir.to_path_buf(),
            config: dir.join("pebble.json"),
            dns,
            api: SocketAddr::from(([127, 0, 0, 1], api)),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            ca_der: ca.der().clone(),
            dns_server,
            server: None,
        }
    }

    /// Pebble's config: validate challenges on `challenge_port`, issue
    /// 20-second certificates.
    fn configure(&self, challenge_port: u16) {
        let config = serde_json::json!({ "pebble": {
            "listenAddress": self.api.to_string(),
            "managementListenAddress": self.management.to_string(),
            "certificate": self.dir.join("pebble-cert.pem"),
            "privateKey": self.dir.join("pebble-key.pem"),
            "httpPort": challenge_port,
            "tlsPort": challenge_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": 20,
        }});
        std::fs::write(&self.config, config.to_string()).unwrap();
    }

    fn directory(&self) -> String {
        format!("https://{}/dir", self.api)
    }

    /// Start Pebble and wait until its API answers.
    async fn start(&mut self) {
        let server = Command::new("pebble")
            .args(["-config".as_ref(), self.config.as_os_str()])
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log_file(&self.dir, "pebble.log"))
            .stderr(log_file(&self.dir, "pebble.log"))
            .kill_on_drop(true)
            .spawn()
            .expect("starting pebble");
        self.server = Some(server);
        let this = &*self;
        let ready = until(|| async move { this.get(this.api, "/dir").await.ok() }).await;
        assert!(ready.contains("newOrder"), "pebble's directory: {ready}");
    }

    async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill().await.unwrap();
        }
    }

    /// The root Pebble issues under (a new one each time it starts).
    async fn root(&self) -> CertificateDer<'static> {
        let pem = until(|| async move { self.get(self.management, "/roots/0").await.ok() }).await;
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pebble's root is PEM")
    }

    /// GET over HTTPS from Pebble (HTTP/1.0: the body runs to the close).
    async fn get(&self, addr: SocketAddr, path: &str) -> Result<String, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response).into_owned();
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") => {
                Ok(body.to_string())
            }
            _ => Err(response),
        }
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(name)).unwrap();
    Stdio::from(file)
}

/// Poll `probe` until it gives a value; panic at the deadline.
async fn until<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "not within {DEADLINE:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Accepts any certificate: the test checks the chain itself, so it can
/// also look at a certificate that no longer verifies.
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate chain sluice serves at `addr` for `name`, if the handshake works.
async fn served_chain(addr: SocketAddr, name: &str) -> Option<Vec<CertificateDer<'static>>> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.ok()?;
    let tls =
        TlsConnector::from(Arc::new(config)).connect(ServerName::try_from(name.to_string()).ok()?, tcp).await.ok()?;
    Some(tls.get_ref().1.peer_certificates()?.iter().map(|c| c.clone().into_owned()).collect())
}

/// Whether `chain` is valid now for `name` under `root`.
fn verifies(chain: &[CertificateDer<'static>], root: &CertificateDer<'static>, name: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Wait until sluice serves, for `name`, a certificate chained to `root` other than `previous`.
async fn wait_for_certificate(
    addr: SocketAddr,
    name: &str,
    root: &CertificateDer<'static>,
    previous: Option<&CertificateDer<'static>>,
) -> CertificateDer<'static> {
    until(|| async move {
        let chain = served_chain(addr, name).await?;
        (Some(&chain[0]) != previous && verifies(&chain, root, name).is_ok()).then(|| chain[0].clone())
    })
    .await
}

fn acme_status(status: &serde_json::Value, listener: &str) -> serde_json::Value {
    status["acme"].as_array().unwrap().iter().find(|s| s["listener"] == listener).cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_serve_renew_and_survive_the_ca_being_down() {
    if !pebble_installed() {
        return;
    }
    // sluice's log (order failures and issuance) shows with the test's output.
    let _ = tracing_subscriber::fmt().with_env_filter("sluice=info").with_test_writer().try_init();
    let dir = std::env::temp_dir().join(format!("sluice-acme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut pebble = Pebble::new(&dir);
    let acme = |names: &str, challenge: &str| {
        format!(
            "[listeners.acme]\nnames = [{names}]\ndirectory = \"{directory}\"\n\
             state-dir = \"{state}\"\nchallenge = \"{challenge}\"\nca-file = \"{ca}\"\n\
             contact = [\"mailto:ops@example.com\"]\nretry-min = \"1s\"\nretry-max = \"2s\"\n",
            directory = pebble.directory(),
            state = dir.join("state").display(),
            ca = dir.join("pebble-ca.pem").display(),
        )
    };
    let config = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"edge\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\nroute = \"route\"\n{}\
         [[listeners]]\nname = \"api\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\nroute = \"route\"\n{}\
         [plugins.sniff]\nbuiltin = \"sniff\"\n[plugins.route]\nbuiltin = \"path\"\n",
        acme("\"alpn.test\"", "tls-alpn-01"),
        acme("\"http.test\"", "http-01"),
    );
    let proxy = Proxy::start(&config).await;
    let (edge, api) = (proxy.addr("edge"), proxy.addr("api"));
    let admin = proxy.admin_addr().unwrap();

    // Pebble validates both challenge types on the edge listener's port:
    // TLS-ALPN-01 for alpn.test (edge's own name), HTTP-01 for http.test
    // (the api listener's name, answered by edge's HTTP stage).
    // The challenge port is sluice's, bound first (port 0); Pebble starts after.
    pebble.configure(edge.port());
    pebble.start().await;
    let root = pebble.root().await;

    // Issue: sluice started before Pebble, so its first orders failed and were retried.
    let first_alpn = wait_for_certificate(edge, "alpn.test", &root, None).await;
    let first_http = wait_for_certificate(api, "http.test", &root, None).await;
    let status: serde_json::Value = serde_json::from_str(&admin_get(admin, "/status").await).unwrap();
    for listener in ["edge", "api"] {
        let entry = acme_status(&status, listener);
        assert!(entry["certificate"]["not_after_unix"].as_u64().unwrap() > 0, "{entry}");
        assert_eq!(entry["consecutive_failures"], 0, "{entry}");
    }
    assert!(dir.join(format!("state/127.0.0.1_{}_dir/alpn.test/cert.pem", pebble.api.port())).is_file());
    assert!(dir.join(format!("state/127.0.0.1_{}_dir/account.json", pebble.api.port())).is_file());

    // Renew: at two thirds of the 20 s lifetime, a fresh certificate, fresh challenges.
    wait_for_certificate(edge, "alpn.test", &root, Some(&first_alpn)).await;
    wait_for_certificate(api, "http.test", &root, Some(&first_http)).await;

    // The CA goes away: the renewal fails, the failure and the next attempt
    // show, and the certificate in place is still served.
    pebble.stop().await;
    let in_place_alpn = served_chain(edge, "alpn.test").await.expect("serving")[0].clone();
    let in_place_http = served_chain(api, "http.test").await.expect("serving")[0].clone();
    let stopped_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let failing = until(|| async move {
        let status: serde_json::Value = serde_json::from_str(&admin_get(admin, "/status").await).ok()?;
        let entry = acme_status(&status, "edge");
        let failed_after_stop = entry["last_error"]["at_unix"].as_u64().is_some_and(|at| at >= stopped_at);
        (failed_after_stop && entry["consecutive_failures"].as_u64() >= Some(1)).then_some(entry)
    })
    .await;
    assert!(failing["next_attempt_unix"].as_u64().is_some() || failing["ordering"] == true, "{failing}");
    assert!(failing["last_error"]["error"].as_str().unwrap().contains("Connection refused"), "{failing}");
    let metrics = admin_get(admin, "/metrics").await;
    assert!(metrics.contains("sluice_acme_orders_total{listener=\"edge\",result=\"failed\"}"), "{metrics}");
    assert!(metrics.contains("sluice_acme_orders_total{listener=\"edge\",result=\"issued\"}"), "{metrics}");
    assert!(!metrics.contains("sluice_acme_consecutive_failures{listener=\"edge\"} 0"), "{metrics}");
    let still = served_chain(edge, "alpn.test").await.expect("still serving");
    assert_eq!(still[0], in_place_alpn, "the certificate in place is still served while renewal fails");
    let still = served_chain(api, "http.test").await.expect("still serving");
    assert_eq!(still[0], in_place_http);

    // The CA is back (with a new root, as a restarted Pebble has): renewal succeeds.
    pebble.start().await;
    let new_root = pebble.root().await;
    assert_ne!(new_root, root);
    wait_for_certificate(edge, "alpn.test", &new_root, None).await;
    wait_for_certificate(api, "http.test", &new_root, None).await;
    let recovered = until(|| async move {
        let status: serde_json::Value = serde_json::from_str(&admin_get(admin, "/status").await).ok()?;
        let entry = acme_status(&status, "edge");
        (entry["consecutive_failures"] == 0).then_some(entry)
    })
    .await;
    assert!(recovered["last_success_unix"].as_u64().unwrap() >= stopped_at, "{recovered}");

    pebble.stop().await;
    drop(pebble.dns_server);
    proxy.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
