//! Backends: named groups of servers, choosing a server, and connecting.
//!
//! - **Servers.** Each `servers` entry is an address, or a name that stands
//!   for every address it resolves to; names are resolved again every
//!   `resolve-interval` (see [`resolve`]), so a DNS name can be a server list.
//! - **Order of servers.** See [`balance`]: an affinity key picks servers by
//!   weighted rendezvous hashing (the same key reaches the same server from
//!   any sluice instance with the same servers, with no shared state); a
//!   request pinned by the sticky cookie tries its server first; otherwise
//!   smooth weighted round-robin, or weighted least-connections.
//! - **Health.** Servers marked down (by active checks, or by failed connects
//!   when checks are configured) get no new traffic; see [`health`].
//! - **Limits.** A server with `max-connections` takes no more at once; the
//!   rest wait in the backend's bounded queue for up to `queue-timeout`.
//! - **Failover.** A server that refuses or does not answer within the
//!   connect timeout is skipped and the next one in the order is tried, up to
//!   `retries` more: nothing has been sent yet, so the client does not notice.
//! - Each backend keeps idle HTTP/1 connections per server for reuse.

pub mod balance;
pub mod health;
mod resolve;

use crate::config::{BackendConfig, ServerSpec};
use crate::http::ProxyBody;
use crate::metrics::http::BackendMetrics;
use crate::names::BackendName;
use arc_swap::ArcSwap;
use hyper::client::conn::http1::SendRequest;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Idle HTTP/1 connections kept per server.
const MAX_IDLE_HTTP_PER_SERVER: usize = 256;

/// Idle HTTP/1 connections by server address.
type IdlePool = HashMap<String, Vec<SendRequest<ProxyBody>>>;

/// Every backend of a config, by name.
#[derive(Clone, Default)]
pub struct Backends {
    by_name: HashMap<BackendName, Arc<Backend>>,
}

impl Backends {
    /// Build the backends, resolving server names once (this may block: call
    /// it off the async workers). When called inside a tokio runtime, start
    /// their health checks and name re-resolution (both stop when the
    /// backends are dropped).
    pub fn new<'a>(configs: impl IntoIterator<Item = &'a BackendConfig>) -> Self {
        let by_name: HashMap<_, _> =
            configs.into_iter().map(|config| (config.name.clone(), Arc::new(Backend::new(config.clone())))).collect();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for backend in by_name.values() {
                if backend.config.health_check.is_some() {
                    runtime.spawn(health::run(Arc::downgrade(backend)));
                }
                if backend.config.servers.iter().any(|spec| resolve::is_name(&spec.address)) {
                    runtime.spawn(resolve::run(Arc::downgrade(backend)));
                }
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

/// One address of a backend and what sluice knows of it.
pub struct Server {
    /// The address connected to, as text (`ip:port`), for logs and metrics.
    pub addr: String,
    pub socket: SocketAddr,
    /// The `servers` entry it came from (a name, or the same address).
    pub entry: String,
    pub weight: u32,
    pub max_connections: Option<usize>,
    /// The opaque value of the sticky cookie that names this server.
    pub cookie_id: String,
    /// Connections (raw relays, HTTP requests in flight, WebSocket tunnels) open to it now.
    active: AtomicUsize,
    up: AtomicBool,
    /// Consecutive check results in the current direction (for rise/fall).
    streak: AtomicU32,
    /// Smooth weighted round-robin's running weight.
    current_weight: AtomicI64,
    /// Woken when a connection to a server of the same backend ends (for the queue).
    released: Arc<Notify>,
}

impl Server {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Count one more connection on this server, unless it is at its `max-connections`.
    fn try_take_slot(self: &Arc<Self>) -> Option<ActiveGuard> {
        let mut active = self.active.load(Ordering::Relaxed);
        loop {
            if self.max_connections.is_some_and(|max| active >= max) {
                return None;
            }
            match self.active.compare_exchange_weak(active, active + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(ActiveGuard(self.clone())),
                Err(now) => active = now,
            }
        }
    }
}

/// One backend: its servers, balancing state and idle HTTP connections.
pub struct Backend {
    config: BackendConfig,
    /// Replaced as a whole when names resolve to a different set of addresses.
    servers: ArcSwap<Vec<Arc<Server>>>,
    /// Serialises smooth weighted round-robin's read-modify-write of all weights.
    round_robin: Mutex<()>,
    /// Tie-breaking cursor for least-connections.
    next: AtomicUsize,
    released: Arc<Notify>,
    /// Requests and connections waiting for a free server now.
    queued: AtomicUsize,
    /// One pool per worker (`crate::workers::shard`): a connection's task runs
    /// on the worker that opened it, so only that worker reuses it.
    http_idle: Box<[Mutex<IdlePool>]>,
    /// This backend's request and error series.
    metrics: Arc<BackendMetrics>,
}

/// A connection to one server of a backend.
pub struct BackendConn {
    pub stream: TcpStream,
    pub server: Arc<Server>,
    /// Counts the connection as active on its server until dropped.
    pub guard: ActiveGuard,
}

/// Counts one connection or request as active on a server while it lives.
pub struct ActiveGuard(Arc<Server>);

impl ActiveGuard {
    pub fn server(&self) -> &Arc<Server> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        if self.0.max_connections.is_some() {
            self.0.released.notify_waiters();
        }
    }
}

/// No server of the backend took the connection.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend `{backend}`: every server is down")]
    AllDown { backend: BackendName },
    #[error("backend `{backend}`: every server is at max-connections and the queue is full ({queue} waiting)")]
    QueueFull { backend: BackendName, queue: usize },
    #[error("backend `{backend}`: no server had room within the queue timeout ({timeout:?})")]
    QueueTimeout { backend: BackendName, timeout: Duration },
    #[error("backend `{backend}`: no server accepted the connection ({})", .failures.join("; "))]
    Unreachable {
        backend: BackendName,
        /// One line per server tried: "addr: reason".
        failures: Vec<String>,
    },
}

impl BackendError {
    /// The backend has no server to offer right now (503), as opposed to
    /// servers that failed when tried (502).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::AllDown { .. } | Self::QueueFull { .. } | Self::QueueTimeout { .. })
    }
}

impl Backend {
    fn new(config: BackendConfig) -> Self {
        let released = Arc::new(Notify::new());
        let resolved: Vec<Vec<SocketAddr>> = config.servers.iter().map(resolve::initial).collect();
        let servers = assemble(&config, &resolved, &[], &released);
        Self {
            servers: ArcSwap::from_pointee(servers),
            round_robin: Mutex::new(()),
            next: AtomicUsize::new(0),
            released,
            queued: AtomicUsize::new(0),
            http_idle: (0..crate::workers::shard_count()).map(|_| Mutex::default()).collect(),
            metrics: Arc::new(BackendMetrics::new(config.name.as_str())),
            config,
        }
    }

    pub fn metrics(&self) -> &Arc<BackendMetrics> {
        &self.metrics
    }

    pub fn name(&self) -> &BackendName {
        &self.config.name
    }

    pub fn config(&self) -> &BackendConfig {
        &self.config
    }

    /// The servers now (names resolved to addresses).
    pub fn servers(&self) -> Arc<Vec<Arc<Server>>> {
        self.servers.load_full()
    }

    /// Requests and connections waiting for room on a server now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout
    }

    /// Install a new resolution of the `servers` entries (one address list per
    /// entry), keeping the state of addresses that stay.
    fn set_resolved(&self, resolved: &[Vec<SocketAddr>]) {
        let old = self.servers.load();
        let servers = assemble(&self.config, resolved, &old, &self.released);
        let changed = servers.len() != old.len() || servers.iter().zip(old.iter()).any(|(a, b)| !Arc::ptr_eq(a, b));
        if changed {
            let addrs: Vec<&str> = servers.iter().map(|s| s.addr.as_str()).collect();
            tracing::info!(backend = %self.config.name, servers = ?addrs, "backend servers changed");
            self.servers.store(Arc::new(servers));
        }
    }

    /// Reserve room on the first server of `candidates` that has some,
    /// waiting in the backend's queue while every one is at `max-connections`.
    /// With `only_first` (the client's own server, by sticky cookie or
    /// affinity key) it waits for room on the first one rather than spill
    /// over to another, which would break the client's session.
    /// Returns the index of the server in `candidates` and its guard.
    pub async fn reserve(
        &self,
        candidates: &[Arc<Server>],
        only_first: bool,
    ) -> Result<(usize, ActiveGuard), BackendError> {
        let backend = || self.config.name.clone();
        if candidates.is_empty() {
            return Err(BackendError::AllDown { backend: backend() });
        }
        let candidates = if only_first { &candidates[..1] } else { candidates };
        let take = || candidates.iter().enumerate().find_map(|(at, server)| server.try_take_slot().map(|g| (at, g)));
        if let Some(found) = take() {
            return Ok(found);
        }
        let Some(_place) = QueuePlace::join(&self.queued, self.config.queue) else {
            return Err(BackendError::QueueFull { backend: backend(), queue: self.config.queue });
        };
        let deadline = tokio::time::Instant::now() + self.config.queue_timeout;
        loop {
            // Register for the wake-up before looking, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(found) = take() {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(BackendError::QueueTimeout { backend: backend(), timeout: self.config.queue_timeout });
            }
        }
    }

    /// Connect to `server`, marking it down on failure when health checks are on.
    pub async fn connect_to(&self, server: &Server) -> io::Result<TcpStream> {
        let connected = connect_one(server.socket, self.config.connect_timeout).await;
        if let Err(e) = &connected {
            tracing::warn!(backend = %self.config.name, server = %server.addr, error = %e, "backend server refused");
            if self.config.health_check.is_some() {
                health::record(self, server, false);
            }
        }
        connected
    }

    /// Connect to the servers of `order` in turn (waiting for room when they
    /// are full) until one accepts, trying at most `retries` more after the
    /// first. With `keyed`, the first server is the client's own: see [`Backend::reserve`].
    pub async fn connect_in_order(&self, order: &[Arc<Server>], keyed: bool) -> Result<BackendConn, BackendError> {
        let mut candidates = order.to_vec();
        let mut failures = Vec::new();
        loop {
            let only_first = keyed && failures.is_empty();
            let (at, guard) =
                self.reserve(&candidates, only_first).await.map_err(|e| self.unreachable_or(e, &failures))?;
            let server = candidates.remove(at);
            match self.connect_to(&server).await {
                Ok(stream) => return Ok(BackendConn { stream, server, guard }),
                Err(e) => failures.push(format!("{}: {e}", server.addr)),
            }
            if failures.len() > self.config.retries as usize {
                return Err(self.unreachable(failures));
            }
        }
    }

    /// Connect by the balance rule (and affinity key, if any).
    pub async fn connect(&self, affinity: Option<&str>) -> Result<BackendConn, BackendError> {
        self.connect_in_order(&self.server_order(affinity, None), affinity.is_some()).await
    }

    pub fn unreachable(&self, failures: Vec<String>) -> BackendError {
        BackendError::Unreachable { backend: self.config.name.clone(), failures }
    }

    /// After some servers failed, running out of servers means they were unreachable.
    pub fn unreachable_or(&self, error: BackendError, failures: &[String]) -> BackendError {
        match error {
            BackendError::AllDown { .. } if !failures.is_empty() => self.unreachable(failures.to_vec()),
            other => other,
        }
    }

    fn idle_pool(&self) -> &Mutex<IdlePool> {
        &self.http_idle[crate::workers::shard(self.http_idle.len())]
    }

    /// An idle HTTP/1 connection to `server` that is ready for a request.
    pub fn take_idle_http(&self, server: &str) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle_pool().lock().expect("http pool lock");
        let senders = idle.get_mut(server)?;
        senders.retain(|sender| !sender.is_closed());
        let ready = senders.iter().position(|sender| sender.is_ready())?;
        Some(senders.swap_remove(ready))
    }

    /// Keep an HTTP/1 connection for reuse; it becomes ready again once its
    /// current response has been read.
    pub fn put_idle_http(&self, server: &str, sender: SendRequest<ProxyBody>) {
        let mut idle = self.idle_pool().lock().expect("http pool lock");
        let senders = idle.entry(server.to_string()).or_default();
        senders.retain(|sender| !sender.is_closed());
        if senders.len() < MAX_IDLE_HTTP_PER_SERVER {
            senders.push(sender);
        }
    }
}

/// One place in a backend's queue, given back on drop.
struct QueuePlace<'a>(&'a AtomicUsize);

impl<'a> QueuePlace<'a> {
    fn join(queued: &'a AtomicUsize, capacity: usize) -> Option<Self> {
        queued.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < capacity).then_some(n + 1)).ok()?;
        Some(Self(queued))
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The server list for one resolution: every address of every entry, in
/// config order, duplicates dropped. Servers already in `old` are kept as they
/// are (health, load, round-robin state).
fn assemble(
    config: &BackendConfig,
    resolved: &[Vec<SocketAddr>],
    old: &[Arc<Server>],
    released: &Arc<Notify>,
) -> Vec<Arc<Server>> {
    let mut servers: Vec<Arc<Server>> = Vec::new();
    for (spec, addrs) in config.servers.iter().zip(resolved) {
        for &socket in addrs {
            if servers.iter().any(|s| s.socket == socket) {
                continue;
            }
            let same = |s: &&Arc<Server>| s.socket == socket && s.entry == spec.address && s.weight == spec.weight;
            let server = match old.iter().find(same) {
                Some(kept) => kept.clone(),
                None => Arc::new(new_server(&config.name, spec, socket, released.clone())),
            };
            servers.push(server);
        }
    }
    servers
}

fn new_server(backend: &BackendName, spec: &ServerSpec, socket: SocketAddr, released: Arc<Notify>) -> Server {
    let addr = socket.to_string();
    Server {
        cookie_id: cookie_id(backend, &addr),
        addr,
        socket,
        entry: spec.address.clone(),
        weight: spec.weight,
        max_connections: spec.max_connections,
        active: AtomicUsize::new(0),
        up: AtomicBool::new(true),
        streak: AtomicU32::new(0),
        current_weight: AtomicI64::new(0),
        released,
    }
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

async fn connect_one(server: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_resolution_keeps_the_servers_that_stay() {
        let spec = ServerSpec { address: "127.0.0.1:9001".into(), weight: 1, max_connections: Some(1) };
        let backend = Backend::new(BackendConfig { servers: vec![spec], ..balance::tests::config(&[]) });
        let first = backend.servers()[0].clone();
        let _busy = first.try_take_slot().expect("room for one");
        assert!(first.try_take_slot().is_none(), "max-connections = 1");
        let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:9001".parse().unwrap(), "127.0.0.2:9001".parse().unwrap());
        backend.set_resolved(&[vec![a, b]]);
        let servers = backend.servers();
        assert_eq!(servers.len(), 2);
        assert!(Arc::ptr_eq(&servers[0], &first), "same address, same server: its load is kept");
        assert_eq!(servers[1].active(), 0);
        backend.set_resolved(&[vec![b]]);
        assert_eq!(backend.servers().iter().map(|s| s.addr.as_str()).collect::<Vec<_>>(), ["127.0.0.2:9001"]);
    }
}
