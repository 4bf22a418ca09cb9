//! Automatic certificates from an ACME directory (RFC 8555), such as Let's Encrypt.
//!
//! A listener with an `[listeners.acme]` table gets one certificate for its
//! names and keeps it renewed:
//!
//! ```text
//! start ─► load the certificate from the state directory (if any) ─► serve it
//!   └─► loop: sleep until the renewal point (or the next retry)
//!             ─► order: account ─► challenges answered by the listeners ─► CSR ─► certificate
//!             ─► ok: write to the state directory, swap into the resolver (no restart)
//!             └─► failed: log, /status and metrics show the error and the next attempt;
//!                 retry after retry-min, doubling up to retry-max; the old certificate stays
//! ```
//!
//! - [`config`]: the table, validated without contacting the directory.
//! - `store`: the state directory (account, certificate chain, key).
//! - `issue`: one order with `instant-acme`.
//! - `manager`: the renewal loop, backoff, status and metrics.
//!
//! What the rest of the proxy sees lives here, process-wide: the issued
//! certificates by name (read by the TLS resolver), the pending TLS-ALPN-01
//! challenge certificates and HTTP-01 tokens (answered by any listener, since
//! the CA connects to ports 443 and 80, which may be different listeners), and
//! each order's status. Nothing here runs unless a listener has an `acme` table:
//! the hot-path checks start with one relaxed atomic load.

pub mod config;
mod issue;
mod manager;
mod store;

pub use config::{AcmeConfig, ChallengeKind};

use crate::config::Config;
use arc_swap::ArcSwap;
use bytes::Bytes;
use rustls::server::ClientHello;
use rustls::sign::CertifiedKey;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio_util::sync::CancellationToken;

/// The ALPN protocol of TLS-ALPN-01 validation connections (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Where HTTP-01 tokens are fetched (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// Set once an ACME task runs; until then every hook returns at once.
static ACTIVE: AtomicBool = AtomicBool::new(false);

#[derive(Default)]
struct Registry {
    /// Issued certificates by DNS name.
    certificates: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates by DNS name, while an order waits for them.
    alpn_challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations by token, while an order waits for them.
    http_tokens: Mutex<HashMap<String, String>>,
    /// Each ACME listener's order status, by listener name.
    status: Mutex<BTreeMap<String, manager::OrderStatus>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Start one renewal task per listener with an `acme` table; they end on
/// `stop`. Does nothing (and starts nothing) when no listener has one.
///
/// The tasks follow the config sluice started with: a reload that changes an
/// `acme` table takes effect at the next restart (the certificates already
/// issued keep being served across reloads).
pub fn spawn(config: &Config, stop: CancellationToken) {
    for listener in &config.listeners {
        let Some(acme) = &listener.acme else { continue };
        if !ACTIVE.swap(true, Ordering::Relaxed) {
            // The ACME client's HTTPS uses the process default; sluice uses ring everywhere.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let task = manager::Manager::new(listener.name.to_string(), acme.clone());
        tokio::spawn(task.run(stop.clone()));
    }
}

/// The certificate to present for a ClientHello on a listener whose ACME
/// names are `names`: the TLS-ALPN-01 challenge certificate when the hello
/// offers `acme-tls/1` for a name with a pending challenge, else the issued
/// certificate for the name (or, without SNI, for the first name).
pub fn resolve(hello: &ClientHello<'_>, names: &[String]) -> Option<Arc<CertifiedKey>> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    let server_name = hello.server_name().map(str::to_ascii_lowercase);
    let offers_acme = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
    if offers_acme
        && let Some(name) = &server_name
        && let Some(challenge) = lock(&registry().alpn_challenges).get(name)
    {
        return Some(challenge.clone());
    }
    let name = match &server_name {
        Some(name) if names.contains(name) => name,
        Some(_) => return None,
        None => names.first()?,
    };
    registry().certificates.load().get(name).cloned()
}

/// The HTTP-01 answer for a request path, if it asks for a pending token:
/// the key authorization (RFC 8555 §8.3). Called by the HTTP stage before
/// the route plugin.
pub fn http01_answer(path: &str) -> Option<Bytes> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    let token = path.strip_prefix(HTTP01_PREFIX)?;
    lock(&registry().http_tokens).get(token).map(|answer| Bytes::from(answer.clone()))
}

/// Every ACME listener's status, for the admin `/status` page.
pub fn status_json() -> serde_json::Value {
    let status = lock(&registry().status);
    serde_json::Value::Array(status.iter().map(|(listener, status)| status.json(listener)).collect())
}

/// Swap a newly issued certificate in for its names.
fn install(names: &[String], key: Arc<CertifiedKey>) {
    let certificates = &registry().certificates;
    let mut next = HashMap::clone(&certificates.load());
    for name in names {
        next.insert(name.clone(), key.clone());
    }
    certificates.store(Arc::new(next));
}

fn set_status(listener: &str, status: manager::OrderStatus) {
    lock(&registry().status).insert(listener.to_string(), status);
}

/// A challenge answered while it lives: dropping it withdraws the answer.
enum PendingChallenge {
    TlsAlpn(String),
    Http(String),
}

impl PendingChallenge {
    fn tls_alpn(name: &str, certificate: Arc<CertifiedKey>) -> PendingChallenge {
        lock(&registry().alpn_challenges).insert(name.to_string(), certificate);
        PendingChallenge::TlsAlpn(name.to_string())
    }

    fn http(token: &str, key_authorization: &str) -> PendingChallenge {
        lock(&registry().http_tokens).insert(token.to_string(), key_authorization.to_string());
        PendingChallenge::Http(token.to_string())
    }
}

impl Drop for PendingChallenge {
    fn drop(&mut self) {
        match self {
            PendingChallenge::TlsAlpn(name) => {
                lock(&registry().alpn_challenges).remove(name);
            }
            PendingChallenge::Http(token) => {
                lock(&registry().http_tokens).remove(token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http01_answers_only_pending_tokens_and_only_while_pending() {
        ACTIVE.store(true, Ordering::Relaxed);
        let pending = PendingChallenge::http("tok-1", "tok-1.thumb");
        assert_eq!(http01_answer("/.well-known/acme-challenge/tok-1").as_deref(), Some(&b"tok-1.thumb"[..]));
        assert_eq!(http01_answer("/.well-known/acme-challenge/tok-2"), None);
        assert_eq!(http01_answer("/tok-1"), None);
        drop(pending);
        assert_eq!(http01_answer("/.well-known/acme-challenge/tok-1"), None, "withdrawn with the order");
    }
}
