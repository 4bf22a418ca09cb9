//! Live reload end to end: a listener's certificate and key swapped together
//! like a Kubernetes TLS Secret; each new one is served at once, and a key
//! that does not match its certificate is refused.

mod common;
mod reload_harness;

use common::*;
use reload_harness::{IN_EFFECT_WITHIN, Latencies, Proxy, TempDir, wait_status};
use sluice::Drained;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// Certificates: a Kubernetes TLS Secret (tls.crt and tls.key swapped together).

/// A test CA, and leaf certificates for `reload.test` it signs (as PEM).
struct Pki {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_der: rustls::pki_types::CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca_der = params.self_signed(&key).unwrap().der().clone();
        Pki { ca: rcgen::Issuer::new(params, key), ca_der }
    }

    /// (cert PEM, key PEM, cert DER)
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let params = rcgen::CertificateParams::new(vec!["reload.test".to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// The certificate a new TLS connection to `addr` is shown.
    async fn served(&self, addr: SocketAddr) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("reload.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_swapped_like_a_kubernetes_secret() {
    let echo = tagged_echo("echo").await;
    let pki = Pki::new();
    let dir = TempDir::new("certs");
    let secret = dir.path("secret");
    std::fs::create_dir(&secret).unwrap();
    // The Secret volume: tls.crt -> ..data/tls.crt, tls.key -> ..data/tls.key.
    let write_version = |n: u32, cert: &str, key: &str| {
        let version = secret.join(format!("..2026_01_01_00_00_00.{n:09}"));
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("tls.crt"), cert).unwrap();
        std::fs::write(version.join("tls.key"), key).unwrap();
        version
    };
    let swap_to = |version: &Path| {
        let data_tmp = secret.join("..data_tmp");
        std::os::unix::fs::symlink(version.file_name().unwrap(), &data_tmp).unwrap();
        std::fs::rename(&data_tmp, secret.join("..data")).unwrap();
        Instant::now()
    };
    let first = pki.leaf();
    let mut old = write_version(0, &first.0, &first.1);
    std::os::unix::fs::symlink(old.file_name().unwrap(), secret.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(Path::new("..data").join(file), secret.join(file)).unwrap();
    }
    let config = dir.path("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\ndefault-backend = \"echo\"\n\
             [[listeners.certificates]]\ncert = \"secret/tls.crt\"\nkey = \"secret/tls.key\"\n\
             [backends.echo]\nservers = [\"{echo}\"]\n[plugins.sniff]\nbuiltin = \"sniff\"\n"
        ),
    )
    .unwrap();
    let proxy = Proxy::start(&config, true).await;
    let addr = proxy.addr("main");
    assert_eq!(pki.served(addr).await, first.2);

    let mut latencies = Latencies(Vec::new());
    for n in 1..=5 {
        let leaf = pki.leaf();
        let version = write_version(n, &leaf.0, &leaf.1);
        let written = swap_to(&version);
        std::fs::remove_dir_all(&old).unwrap();
        old = version;
        let probe = || pki.served(addr);
        let want = leaf.2;
        let since = written;
        loop {
            if probe().await == want {
                latencies.0.push(since.elapsed());
                break;
            }
            assert!(since.elapsed() < IN_EFFECT_WITHIN, "certificate #{n} not served in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    latencies.report("certificate");

    // A key that does not match the certificate is refused; the live one stays.
    let live = pki.served(addr).await;
    let (cert, _, _) = pki.leaf();
    let (_, wrong_key, _) = pki.leaf();
    let failures = proxy.reload.status().failures;
    let broken = write_version(90, &cert, &wrong_key);
    swap_to(&broken);
    let status = wait_status(&proxy.reload, "mismatched key", |s| s.failures > failures).await;
    let error = status.last_error().unwrap();
    assert!(error.contains("tls.key") && error.contains("does not match"), "{error}");
    assert_eq!(pki.served(addr).await, live, "the previous certificate is still served");
    assert_eq!(proxy.stop().await, Drained::Clean);
}
