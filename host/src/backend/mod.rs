//! Backends: named groups of servers, choosing a server, and connecting.
//!
//! - **Order of servers.** A request with an affinity key (from the route
//!   plugin, or the backend's `hash-key`) tries servers in rendezvous-hash
//!   order for that key: the same key reaches the same server from any sluice
//!   instance with the same server list, with no shared state. A request
//!   pinned by the sticky cookie tries its server first. Otherwise servers
//!   are taken round-robin, or least-connections first.
//! - **Health.** Servers marked down (by active checks, or by failed connects
//!   when checks are configured) get no new traffic; see [`health`].
//! - **Failover.** A server that refuses or does not answer within the
//!   connect timeout is skipped and the next one in the order is tried:
//!   nothing has been sent yet, so the client does not notice.
//! - Each backend keeps idle HTTP/1 connections per server for reuse.

pub mod health;

use crate::config::{BackendConfig, Balance};
use crate::http::ProxyBody;
use crate::names::BackendName;
use hyper::client::conn::http1::SendRequest;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;

/// Idle HTTP/1 connections kept per server.
const MAX_IDLE_HTTP_PER_SERVER: usize = 256;

/// Every backend of a config, by name.
#[derive(Clone, Default)]
pub struct Backends {
    by_name: HashMap<BackendName, Arc<Backend>>,
}

impl Backends {
    /// Build the backends; when called inside a tokio runtime, start their
    /// health checks (they stop when the backends are dropped).
    pub fn new<'a>(configs: impl IntoIterator<Item = &'a BackendConfig>) -> Self {
        let by_name: HashMap<_, _> =
            configs.into_iter().map(|config| (config.name.clone(), Arc::new(Backend::new(config.clone())))).collect();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for backend in by_name.values().filter(|b| b.config.health_check.is_some()) {
                runtime.spawn(health::run(Arc::downgrade(backend)));
            }
        }
        Self { by_name }
    }

    pub fn get(&self, name: &BackendName) -> Option<&Arc<Backend>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.by_name.values()
    }
}

/// One server of a backend and what sluice knows of it.
pub struct Server {
    /// As written in the config (`host:port`).
    pub addr: String,
    /// The opaque value of the sticky cookie that names this server.
    pub cookie_id: String,
    /// Connections (raw relays, HTTP requests in flight) open to it now.
    active: AtomicUsize,
    up: AtomicBool,
    /// Consecutive check results in the current direction (for rise/fall).
    streak: AtomicU32,
}

impl Server {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// One backend: its servers, round-robin cursor and idle HTTP connections.
pub struct Backend {
    config: BackendConfig,
    servers: Vec<Arc<Server>>,
    next: AtomicUsize,
    http_idle: Mutex<HashMap<String, Vec<SendRequest<ProxyBody>>>>,
}

/// A connection to one server of a backend.
pub struct BackendConn {
    pub stream: TcpStream,
    /// The server as written in the config.
    pub server: String,
    /// Counts the connection as active on its server until dropped.
    pub guard: ActiveGuard,
}

/// Counts one connection or request as active on a server while it lives.
pub struct ActiveGuard(Arc<Server>);

impl ActiveGuard {
    fn new(server: Arc<Server>) -> Self {
        server.active.fetch_add(1, Ordering::Relaxed);
        Self(server)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// No server of the backend accepted the connection.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend `{backend}`: every server is down")]
    AllDown { backend: BackendName },
    #[error("backend `{backend}`: no server accepted the connection ({})", .failures.join("; "))]
    Unreachable {
        backend: BackendName,
        /// One line per server tried: "addr: reason".
        failures: Vec<String>,
    },
}

impl Backend {
    fn new(config: BackendConfig) -> Self {
        let servers = config
            .servers
            .iter()
            .map(|addr| {
                Arc::new(Server {
                    addr: addr.clone(),
                    cookie_id: cookie_id(&config.name, addr),
                    active: AtomicUsize::new(0),
                    up: AtomicBool::new(true),
                    streak: AtomicU32::new(0),
                })
            })
            .collect();
        Self { config, servers, next: AtomicUsize::new(0), http_idle: Mutex::default() }
    }

    pub fn name(&self) -> &BackendName {
        &self.config.name
    }

    pub fn config(&self) -> &BackendConfig {
        &self.config
    }

    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    pub fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout
    }

    /// The server a sticky cookie value names, if it is one of ours.
    pub fn server_by_cookie(&self, value: &str) -> Option<&Arc<Server>> {
        self.servers.iter().find(|server| server.cookie_id == value)
    }

    /// The servers to try, best first: the pinned server (sticky cookie) if
    /// it is up, then by affinity key (rendezvous hash) or the balance rule.
    /// Down servers are left out; an empty order means every server is down.
    pub fn server_order(&self, affinity: Option<&str>, pinned: Option<&str>) -> Vec<Arc<Server>> {
        let mut up: Vec<Arc<Server>> = self.servers.iter().filter(|s| s.is_up()).cloned().collect();
        if up.is_empty() {
            return up;
        }
        match (affinity, self.config.balance) {
            (Some(key), _) => {
                up.sort_by_cached_key(|server| std::cmp::Reverse(rendezvous_score(key, &server.addr)));
            }
            (None, Balance::RoundRobin) => {
                let first = self.next.fetch_add(1, Ordering::Relaxed) % up.len();
                up.rotate_left(first);
            }
            (None, Balance::LeastConnections) => {
                let first = self.next.fetch_add(1, Ordering::Relaxed) % up.len();
                up.rotate_left(first); // ties go round-robin
                up.sort_by_key(|server| server.active());
            }
        }
        if let Some(pinned) = pinned
            && let Some(at) = up.iter().position(|server| server.cookie_id == pinned)
        {
            let server = up.remove(at);
            up.insert(0, server);
        }
        up
    }

    /// Connect to the next server in turn, trying each server at most once.
    pub async fn connect(&self, affinity: Option<&str>) -> Result<BackendConn, BackendError> {
        self.connect_in_order(&self.server_order(affinity, None)).await
    }

    /// Connect to the first server of `order` that accepts.
    pub async fn connect_in_order(&self, order: &[Arc<Server>]) -> Result<BackendConn, BackendError> {
        if order.is_empty() {
            return Err(BackendError::AllDown { backend: self.config.name.clone() });
        }
        let mut failures = Vec::new();
        for server in order {
            match connect_one(&server.addr, self.config.connect_timeout).await {
                Ok(stream) => {
                    let guard = ActiveGuard::new(server.clone());
                    return Ok(BackendConn { stream, server: server.addr.clone(), guard });
                }
                Err(e) => {
                    tracing::warn!(backend = %self.config.name, server = %server.addr, error = %e, "backend server refused");
                    if self.config.health_check.is_some() {
                        health::record(self, server, false);
                    }
                    failures.push(format!("{}: {e}", server.addr));
                }
            }
        }
        Err(BackendError::Unreachable { backend: self.config.name.clone(), failures })
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

    /// Count a request as active on `server` (least-connections) while the guard lives.
    pub fn guard(&self, server: &str) -> Option<ActiveGuard> {
        self.servers.iter().find(|s| s.addr == server).map(|s| ActiveGuard::new(s.clone()))
    }
}

/// Rendezvous (highest random weight) hashing: each server gets a score for
/// the key; the highest wins. Stable across processes and versions (SHA-256).
fn rendezvous_score(key: &str, server: &str) -> u64 {
    let digest =
        Sha256::new().chain_update(key.as_bytes()).chain_update([0]).chain_update(server.as_bytes()).finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"))
}

/// The sticky cookie value for a server: opaque, stable across restarts
/// and instances, and it does not reveal the server's address.
fn cookie_id(backend: &BackendName, server: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"sluice sticky\0")
        .chain_update(backend.as_str().as_bytes())
        .chain_update([0])
        .chain_update(server.as_bytes())
        .finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

async fn connect_one(server: &str, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
