//! The state directory: what an ACME listener keeps between restarts.
//!
//! ```text
//! <state-dir>/
//!   <directory-id>/                 one per ACME directory URL, e.g.
//!                                   acme-v02.api.letsencrypt.org_directory
//!     account.json                  the account key (PKCS#8) and URL (mode 0600)
//!     <first-name>/
//!       cert.pem                    the certificate chain, leaf first
//!       key.pem                     its private key (mode 0600)
//! ```
//!
//! Files are written to a temporary name and renamed over, so a crash never
//! leaves half a certificate; the key is written before the chain, so a chain
//! on disk always has its key.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where one listener's files are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub account: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path, directory: &str, first_name: &str) -> Paths {
        let id: String = directory
            .split_once("://")
            .map_or(directory, |(_, rest)| rest)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        let dir = state_dir.join(id);
        let names = dir.join(first_name);
        Paths { account: dir.join("account.json"), cert: names.join("cert.pem"), key: names.join("key.pem") }
    }
}

/// A certificate ready to serve, with its validity.
#[derive(Clone)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Certificate {
    /// Parse a PEM chain and key (as issued, or as read from disk).
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Certificate, String> {
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate chain is not PEM: {e:?}"))?;
        let leaf = chain.first().ok_or("the certificate chain is empty")?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| format!("the certificate: {e}"))?;
        let time = |t: x509_parser::time::ASN1Time| UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
        let (not_before, not_after) = (time(parsed.validity().not_before), time(parsed.validity().not_after));
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("the private key is not PEM: {e:?}"))?;
        let provider = rustls::crypto::ring::default_provider();
        let key = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| format!("the private key does not match the certificate: {e}"))?;
        Ok(Certificate { key: Arc::new(key), not_before, not_after })
    }

    /// When to renew: `renew_before` ahead of expiry, or with a third of the
    /// lifetime left if that comes later (short-lived certificates).
    pub fn renew_at(&self, renew_before: Duration) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        self.not_after - renew_before.min(lifetime / 3)
    }
}

/// The stored certificate, if there is one (`Err` when it is there but unusable).
pub fn load_certificate(paths: &Paths) -> Result<Option<Certificate>, String> {
    if !paths.cert.exists() {
        return Ok(None);
    }
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let (chain, key) = (read(&paths.cert)?, read(&paths.key)?);
    Certificate::from_pem(&chain, &key).map(Some).map_err(|e| format!("{}: {e}", paths.cert.display()))
}

/// Store a new certificate: the key first, then the chain.
pub fn save_certificate(paths: &Paths, chain_pem: &str, key_pem: &str) -> Result<(), String> {
    write_atomically(&paths.key, key_pem.as_bytes(), true)?;
    write_atomically(&paths.cert, chain_pem.as_bytes(), false)
}

pub fn read_account(paths: &Paths) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(&paths.account) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", paths.account.display())),
    }
}

pub fn save_account(paths: &Paths, json: &[u8]) -> Result<(), String> {
    write_atomically(&paths.account, json, true)
}

/// Write to `path.tmp`, then rename over `path` (creating the directory).
fn write_atomically(path: &Path, bytes: &[u8], secret: bool) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(fail)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_directory_gets_its_own_folder() {
        let paths = Paths::new(Path::new("/var/lib/sluice"), "https://acme-v02.api.letsencrypt.org/directory", "a.com");
        assert_eq!(paths.account, Path::new("/var/lib/sluice/acme-v02.api.letsencrypt.org_directory/account.json"));
        assert_eq!(paths.cert, Path::new("/var/lib/sluice/acme-v02.api.letsencrypt.org_directory/a.com/cert.pem"));
        let pebble = Paths::new(Path::new("s"), "https://127.0.0.1:14000/dir", "a.test");
        assert_eq!(pebble.key, Path::new("s/127.0.0.1_14000_dir/a.test/key.pem"));
    }

    #[test]
    fn renewal_is_thirty_days_ahead_or_at_two_thirds_of_a_short_lifetime() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap().self_signed(&key).unwrap();
        let mut certificate = Certificate::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        let day = Duration::from_secs(86400);
        certificate.not_before = UNIX_EPOCH + 1000 * day;
        certificate.not_after = certificate.not_before + 90 * day;
        assert_eq!(certificate.renew_at(30 * day), certificate.not_before + 60 * day);
        assert_eq!(certificate.renew_at(10 * day), certificate.not_before + 80 * day);
        certificate.not_after = certificate.not_before + Duration::from_secs(30);
        assert_eq!(certificate.renew_at(30 * day), certificate.not_before + Duration::from_secs(20));
    }
}
