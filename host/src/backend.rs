//! Backends: named groups of servers, and connecting to one of them.
//!
//! Servers are tried in round-robin order, or, when a request carries an
//! affinity key, in rendezvous-hash order for that key (the same key reaches
//! the same server, from any sluice instance with the same server list). A
//! server that refuses or does not answer within the connect timeout is
//! skipped and the next one is tried, so one dead server costs a client
//! nothing but the failed attempt.
//!
//! Each backend also keeps idle HTTP/1 connections per server for reuse.

use crate::config::BackendConfig;
use crate::http::ProxyBody;
use crate::names::BackendName;
use hyper::client::conn::http1::SendRequest;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;

/// Every backend of a config, by name.
#[derive(Clone, Default)]
pub struct Backends {
    by_name: HashMap<BackendName, Arc<Backend>>,
}

impl Backends {
    pub fn new<'a>(configs: impl IntoIterator<Item = &'a BackendConfig>) -> Self {
        let by_name = configs
            .into_iter()
            .map(|config| {
                let backend =
                    Backend { config: config.clone(), next: AtomicUsize::new(0), http_idle: Mutex::default() };
                (config.name.clone(), Arc::new(backend))
            })
            .collect();
        Self { by_name }
    }

    pub fn get(&self, name: &BackendName) -> Option<&Arc<Backend>> {
        self.by_name.get(name)
    }
}

/// One backend, its round-robin cursor and its idle HTTP connections.
pub struct Backend {
    config: BackendConfig,
    next: AtomicUsize,
    http_idle: Mutex<HashMap<String, Vec<SendRequest<ProxyBody>>>>,
}

/// Idle HTTP/1 connections kept per server.
const MAX_IDLE_HTTP_PER_SERVER: usize = 32;

/// A connection to one server of a backend.
pub struct BackendConn {
    pub stream: TcpStream,
    /// The server as written in the config.
    pub server: String,
}

/// Every server of the backend failed.
#[derive(Debug, thiserror::Error)]
#[error("backend `{backend}`: no server accepted the connection ({})", .failures.join("; "))]
pub struct BackendError {
    pub backend: BackendName,
    /// One line per server tried: "addr: reason".
    pub failures: Vec<String>,
}

impl Backend {
    pub fn name(&self) -> &BackendName {
        &self.config.name
    }

    pub fn config(&self) -> &BackendConfig {
        &self.config
    }

    pub fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout
    }

    /// The order in which to try the servers: by rendezvous hash of the
    /// affinity key, or round-robin.
    pub fn server_order(&self, affinity: Option<&str>) -> Vec<&str> {
        let servers = &self.config.servers;
        match affinity {
            Some(key) => {
                let mut scored: Vec<(u64, &str)> =
                    servers.iter().map(|server| (rendezvous_score(key, server), server.as_str())).collect();
                scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
                scored.into_iter().map(|(_, server)| server).collect()
            }
            None => {
                let first = self.next.fetch_add(1, Ordering::Relaxed);
                (0..servers.len()).map(|offset| servers[(first + offset) % servers.len()].as_str()).collect()
            }
        }
    }

    /// Connect to the next server in turn, trying each server at most once.
    pub async fn connect(&self) -> Result<BackendConn, BackendError> {
        self.connect_in_order(&self.server_order(None)).await
    }

    /// Connect to the first server of `order` that accepts.
    pub async fn connect_in_order(&self, order: &[&str]) -> Result<BackendConn, BackendError> {
        let mut failures = Vec::new();
        for &server in order {
            match connect_one(server, self.config.connect_timeout).await {
                Ok(stream) => return Ok(BackendConn { stream, server: server.to_string() }),
                Err(e) => {
                    tracing::warn!(backend = %self.config.name, server, error = %e, "backend server refused");
                    failures.push(format!("{server}: {e}"));
                }
            }
        }
        Err(BackendError { backend: self.config.name.clone(), failures })
    }

    /// An idle HTTP/1 connection to `server` that is ready for a request.
    pub fn take_idle_http(&self, server: &str) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.http_idle.lock().expect("http pool lock");
        let senders = idle.get_mut(server)?;
        senders.retain(|sender| !sender.is_closed());
        let ready = senders.iter().position(|sender| sender.is_ready())?;
        Some(senders.swap_remove(ready))
    }

    /// Keep an HTTP/1 connection for reuse; it becomes ready again once its
    /// current response has been read.
    pub fn put_idle_http(&self, server: &str, sender: SendRequest<ProxyBody>) {
        let mut idle = self.http_idle.lock().expect("http pool lock");
        let senders = idle.entry(server.to_string()).or_default();
        senders.retain(|sender| !sender.is_closed());
        if senders.len() < MAX_IDLE_HTTP_PER_SERVER {
            senders.push(sender);
        }
    }
}

/// Rendezvous (highest random weight) hashing: each server gets a score for
/// the key; the highest wins. Stable across processes and versions (SHA-256).
fn rendezvous_score(key: &str, server: &str) -> u64 {
    let digest =
        Sha256::new().chain_update(key.as_bytes()).chain_update([0]).chain_update(server.as_bytes()).finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"))
}

async fn connect_one(server: &str, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
