//! TLS termination with rustls: a listener's certificates, chosen by SNI.
//!
//! - Each certificate answers for the DNS names it carries (its
//!   subjectAltNames) or the `names` the config gives; `*.example.com`
//!   covers one label below `example.com`.
//! - A client that sends no SNI, or a name no certificate covers, gets the
//!   listener's default certificate.
//! - TLS 1.2 and 1.3 only; ALPN `h2` and `http/1.1` (and `acme-tls/1` on
//!   listeners with an `acme` table, for TLS-ALPN-01 validation).
//! - Names listed under `acme` are served the certificate issued for them
//!   (see [`crate::acme`]), swapped in when it is renewed.
//! - Resumption: TLS 1.3 and 1.2 session tickets (key rotated every 6 hours)
//!   and a TLS 1.2 session-ID cache.
//! - Certificates are checked at load: the files must be readable PEM, the
//!   key must match the certificate, and the certificate must be valid now.
//!   Every error names the file.

pub mod client_hello;

use crate::acme::AcmeConfig;
use crate::config::CertificateConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello as RustlsHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// Why a listener's certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: String },
    #[error("{file}: no certificate found in the PEM file")]
    NoCertificate { file: String },
    #[error("{file}: not a certificate rustls can use: {error}")]
    BadCertificate { file: String, error: String },
    #[error("{file}: the private key does not match the certificate {cert} ({error})")]
    KeyMismatch { file: String, cert: String, error: String },
    #[error("{file}: the certificate expired on {not_after} (UTC)")]
    Expired { file: String, not_after: String },
    #[error("{file}: the certificate is not valid before {not_before} (UTC)")]
    NotYetValid { file: String, not_before: String },
    #[error("{file}: the certificate names no DNS name; list them in `names`")]
    NoNames { file: String },
}

/// Certificates consulted by SNI before the listener's own (the listener's
/// tenants, see [`crate::tenant`]).
pub trait CertSource: Send + Sync + std::fmt::Debug {
    fn certificate(&self, server_name: &str) -> Option<Arc<CertifiedKey>>;
}

/// A listener's TLS setup: the acceptor and its handshake deadline.
#[derive(Clone)]
pub struct Terminator {
    pub acceptor: TlsAcceptor,
    pub handshake_timeout: Duration,
}

impl Terminator {
    /// `acme`: the listener's automatically issued names, served from
    /// [`crate::acme`] (which also answers TLS-ALPN-01 challenges).
    pub fn load(
        certificates: &[CertificateConfig],
        acme: Option<&AcmeConfig>,
        handshake_timeout: Duration,
        front: Option<Arc<dyn CertSource>>,
    ) -> Result<Terminator, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut resolver =
            SniResolver { acme_names: acme.map(|acme| acme.names.clone()), front, ..SniResolver::default() };
        for (i, certificate) in certificates.iter().enumerate() {
            let (key, names) = load_certified_key(certificate, &provider)?;
            let key = Arc::new(key);
            for name in names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => resolver.wildcard.entry(parent.to_string()).or_insert_with(|| key.clone()),
                    None => resolver.exact.entry(name).or_insert_with(|| key.clone()),
                };
            }
            if certificate.default || (i == 0 && !certificates.iter().any(|c| c.default)) {
                resolver.default = Some(key);
            }
        }
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| CertError::BadCertificate { file: "(tls settings)".into(), error: e.to_string() })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        resumption(&mut config)?;
        if acme.is_some() {
            config.alpn_protocols.push(crate::acme::ACME_TLS_ALPN.to_vec());
        }
        Ok(Terminator { acceptor: TlsAcceptor::from(Arc::new(config)), handshake_timeout })
    }
}

/// Sessions in the TLS 1.2 session-ID cache (a few hundred bytes each).
const SESSION_CACHE_SIZE: usize = 8192;

/// Resumption, so a returning client skips the key exchange and the
/// signature: stateless tickets for TLS 1.3 and 1.2, encrypted under a key
/// that rustls rotates every 6 hours (the previous key still decrypts), and a
/// session-ID cache for TLS 1.2 clients without ticket support.
/// One ticketer for the process, so a config reload does not invalidate the
/// tickets clients hold.
fn resumption(config: &mut rustls::ServerConfig) -> Result<(), CertError> {
    static TICKETER: std::sync::OnceLock<Arc<dyn rustls::server::ProducesTickets>> = std::sync::OnceLock::new();
    let ticketer = match TICKETER.get() {
        Some(ticketer) => ticketer.clone(),
        None => {
            let made = rustls::crypto::ring::Ticketer::new().map_err(|e| CertError::BadCertificate {
                file: "(tls session tickets)".into(),
                error: e.to_string(),
            })?;
            TICKETER.get_or_init(|| made).clone()
        }
    };
    config.ticketer = ticketer;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    Ok(())
}

/// Picks the certificate for a ClientHello's server name.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By parent domain: `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// Names whose certificates come from ACME (checked first).
    acme_names: Option<Vec<String>>,
    /// Checked next: the tenants' certificates.
    front: Option<Arc<dyn CertSource>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: RustlsHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(names) = &self.acme_names
            && let Some(key) = crate::acme::resolve(&hello, names)
        {
            return Some(key);
        }
        if let (Some(front), Some(name)) = (&self.front, hello.server_name())
            && let Some(key) = front.certificate(name)
        {
            return Some(key);
        }
        let by_name = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        by_name.or(self.default.as_ref()).cloned()
    }
}

/// Read, parse and check one certificate and its key; returns the names it answers for.
pub(crate) fn load_certified_key(
    certificate: &CertificateConfig,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, Vec<String>), CertError> {
    let cert_file = certificate.cert.display().to_string();
    let key_file = certificate.key.display().to_string();
    let chain = read_chain(&certificate.cert)?;
    let key = PrivateKeyDer::from_pem_file(&certificate.key)
        .map_err(|e| CertError::Read { file: key_file.clone(), error: pem_error(e) })?;
    let certified = CertifiedKey::from_der(chain.clone(), key, provider).map_err(|e| CertError::KeyMismatch {
        file: key_file,
        cert: cert_file.clone(),
        error: e.to_string(),
    })?;
    let names = check_validity(&chain[0], &cert_file)?;
    let names = match &certificate.names {
        Some(configured) => configured.clone(),
        None if names.is_empty() => return Err(CertError::NoNames { file: cert_file }),
        None => names,
    };
    Ok((certified, names))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let file = path.display().to_string();
    let iter =
        CertificateDer::pem_file_iter(path).map_err(|e| CertError::Read { file: file.clone(), error: pem_error(e) })?;
    let chain = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadCertificate { file: file.clone(), error: pem_error(e) })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate { file });
    }
    Ok(chain)
}

fn pem_error(error: rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind in the file".to_string(),
        other => format!("{other:?}"),
    }
}

/// Check the certificate is valid now; return its DNS subjectAltNames.
fn check_validity(der: &CertificateDer<'_>, file: &str) -> Result<Vec<String>, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| CertError::BadCertificate { file: file.to_string(), error: e.to_string() })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(CertError::Expired { file: file.to_string(), not_after: validity.not_after.to_string() });
    }
    if validity.not_before > now {
        return Err(CertError::NotYetValid { file: file.to_string(), not_before: validity.not_before.to_string() });
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    Ok(names)
}
