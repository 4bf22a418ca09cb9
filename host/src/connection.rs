//! One client connection, from its first byte to its end:
//!
//! ```text
//! sniff ─┬─► reply (bytes, then close or sniff again)   e.g. Flash policy
//!        ├─► reject (close)
//!        ├─► forward / forward-default ─► connect ─► replay head ─► relay
//!        ├─► http ─► the HTTP stage: each request routed by the route plugin
//!        ├─► terminate-tls ─► handshake (certificate by SNI) ─► sniff again, decrypted
//!        └─► plugin failed ─► the listener's fallback (close, or a backend)
//! ```
//!
//! Returns a [`Report`] that the accept loop logs as the access-log line.

use crate::backend::{Backend, BackendError};
use crate::config::{Fallback, HashKey};
use crate::http::{self, HttpStage};
use crate::io::PrefixedIo;
use crate::metrics;
use crate::metrics::http::BackendErrorKind;
use crate::names::BackendName;
use crate::plugin::{ConnFacts, TlsFacts, Verdict};
use crate::proxy_protocol::{self, ProxiedAddrs};
use crate::relay::{IntoHalves, Pending, RelayEnd, TlsStreamHalves, relay, relay_tcp};
use crate::sniff::{SniffFailure, SniffLimits, sniff};
use crate::state::{ListenerPlan, Snapshot};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a closing connection may keep sending before it is dropped
/// (lets a client finish writing so it reads our reply instead of a reset).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 << 10;

/// Why a connection ended. Each variant is a label in the access log.
#[derive(Debug)]
pub enum Outcome {
    /// The plugin's reply was sent and the connection closed.
    Replied,
    /// The plugin rejected the connection.
    Rejected(String),
    /// Relayed to a backend until this end.
    Relayed(RelayEnd),
    /// Reading from or writing to the client failed before a relay started.
    ClientError(io::Error),
    /// The plugin failed and the fallback is to close.
    PluginFailed(SniffFailure),
    /// No server of the chosen backend accepted the connection.
    BackendUnavailable(BackendError),
    /// The verdict cannot be carried out with this listener's config.
    Misrouted(String),
    /// Served as HTTP: this many requests (each has its own access-log line).
    Http { requests: u64, error: Option<String> },
    /// The TLS handshake failed or timed out.
    TlsFailed(String),
    /// The proxy shut down before the connection ended.
    Shutdown,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Replied => "replied",
            Outcome::Rejected(_) => "rejected",
            Outcome::Relayed(end) => end.label(),
            Outcome::ClientError(_) => "client-error",
            Outcome::PluginFailed(_) => "plugin-failed",
            Outcome::BackendUnavailable(_) => "backend-unavailable",
            Outcome::Misrouted(_) => "misrouted",
            Outcome::Http { .. } => "http",
            Outcome::TlsFailed(_) => "tls-failed",
            Outcome::Shutdown => "shutdown",
        }
    }
}

/// What the access log says about a connection.
#[derive(Debug)]
pub struct Report {
    pub verdict: &'static str,
    /// The SNI name of a terminated TLS session.
    pub tls_server_name: Option<String>,
    /// The client address a trusted PROXY protocol header gave.
    pub proxied_client: Option<std::net::SocketAddr>,
    pub backend: Option<BackendName>,
    pub server: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub outcome: Outcome,
}

impl Report {
    /// The report of a connection closed by the proxy's shutdown.
    pub fn shutdown() -> Self {
        Self::new()
    }

    fn new() -> Self {
        Self {
            verdict: "none",
            tls_server_name: None,
            proxied_client: None,
            backend: None,
            server: None,
            bytes_in: 0,
            bytes_out: 0,
            outcome: Outcome::Shutdown,
        }
    }

    fn ended(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Record how the connection ended; the stream is done.
    fn end<S>(&mut self, outcome: Outcome) -> Step<S> {
        self.outcome = outcome;
        Step::Done
    }
}

/// What a connection may spawn beside itself (upgraded tunnels), tracked so
/// a shutdown drains them too.
#[derive(Clone)]
pub struct Spawner {
    pub tasks: TaskTracker,
    pub close_all: CancellationToken,
}

/// Serve one accepted connection on `plan`'s listener.
pub async fn serve(
    client: TcpStream,
    mut facts: ConnFacts,
    snapshot: &Arc<Snapshot>,
    plan: &Arc<ListenerPlan>,
    spawner: &Spawner,
    sniff_permit: OwnedSemaphorePermit,
) -> Report {
    let mut report = Report::new();
    let mut sniff_permit = Some(sniff_permit);
    let mut client = client;
    let mut initial = Vec::new();
    let mut _client_permit = None; // per-client limits for the client a PROXY header names
    if !plan.config.proxy_protocol_from.is_empty() {
        let peer = facts.client_addr.ip();
        if !plan.config.proxy_protocol_from.iter().any(|net| net.contains(peer)) {
            return report.ended(Outcome::Rejected(format!("{peer} is not a trusted PROXY protocol source")));
        }
        match proxy_protocol::read_header(&mut client, plan.config.inspect_timeout).await {
            Ok((addrs, rest)) => {
                if let Some(addrs) = addrs {
                    facts.client_addr = addrs.client;
                    facts.local_addr = addrs.server;
                    report.proxied_client = Some(addrs.client);
                    match plan.per_client.admit(addrs.client.ip()) {
                        Ok(permit) => _client_permit = permit,
                        Err(refusal) => return report.ended(Outcome::Rejected(refusal.to_string())),
                    }
                }
                initial = rest;
            }
            Err(e) => return report.ended(Outcome::Rejected(format!("PROXY protocol header: {e}"))),
        }
    }
    let (client, head) =
        match serve_stream(client, &facts, (snapshot, plan, spawner), initial, &mut sniff_permit, &mut report).await {
            Step::Done => return report,
            Step::TerminateTls { client, head } => (client, head),
        };
    // Boxed, as every stage below that not every connection reaches: a task's
    // future is allocated whole for its life, so an idle plain-text connection
    // would otherwise hold the TLS handshake's state too (docs/PERFORMANCE.md).
    Box::pin(terminate_tls(client, head, facts, (snapshot, plan, spawner), report)).await
}

/// Terminate TLS on `client` (its ClientHello already read, in `head`) and
/// serve what comes inside.
async fn terminate_tls(
    client: TcpStream,
    head: Vec<u8>,
    mut facts: ConnFacts,
    (snapshot, plan, spawner): (&Arc<Snapshot>, &Arc<ListenerPlan>, &Spawner),
    mut report: Report,
) -> Report {
    let Some(tls) = &plan.tls else {
        let why = "the sniff plugin chose terminate-tls, but this listener has no certificates";
        return report.ended(Outcome::Misrouted(why.into()));
    };
    // The ClientHello was read while sniffing: replay it into the handshake.
    let handshake = tls.acceptor.accept(PrefixedIo::new(head, client));
    let handshake_result = |result: &str| {
        let labels = vec![("listener", facts.listener.to_string()), ("result", result.to_string())];
        metrics::count("sluice_tls_handshakes_total", labels, 1);
    };
    let stream = match tokio::time::timeout(tls.handshake_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            handshake_result("failed");
            return report.ended(Outcome::TlsFailed(e.to_string()));
        }
        Err(_) => {
            handshake_result("timeout");
            return report.ended(Outcome::TlsFailed(format!("no handshake within {:?}", tls.handshake_timeout)));
        }
    };
    handshake_result("ok");
    if stream.get_ref().1.alpn_protocol() == Some(crate::acme::ACME_TLS_ALPN) {
        // A TLS-ALPN-01 validation (RFC 8737): the handshake was the answer.
        let mut stream = stream;
        let _ = stream.shutdown().await;
        return report.ended(Outcome::Replied);
    }
    let session = stream.get_ref().1;
    let tls_facts = TlsFacts {
        server_name: session.server_name().map(str::to_string),
        alpn: session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
    };
    report.tls_server_name = tls_facts.server_name.clone();
    facts.tls = Some(tls_facts);
    facts.hello = None;
    // Boxed, as every stage below that not every connection reaches: a task's
    // future is allocated whole for its life, so an idle connection would
    // otherwise hold the largest stage's state (docs/PERFORMANCE.md, idle memory).
    match Box::pin(serve_stream(
        TlsStreamHalves(stream),
        &facts,
        (snapshot, plan, spawner),
        Vec::new(),
        &mut None,
        &mut report,
    ))
    .await
    {
        Step::Done => report,
        Step::TerminateTls { .. } => report.ended(Outcome::Misrouted("terminate-tls inside TLS".into())),
    }
}

/// Where serving a stream stopped.
enum Step<S> {
    /// The connection is over; the report says how.
    Done,
    /// The plugin asked for TLS termination; the caller does the handshake.
    TerminateTls { client: S, head: Vec<u8> },
}

/// Sniff `client` and carry out the verdict, on a plain or decrypted stream.
async fn serve_stream<S>(
    mut client: S,
    facts: &ConnFacts,
    (snapshot, plan, spawner): (&Arc<Snapshot>, &Arc<ListenerPlan>, &Spawner),
    mut initial: Vec<u8>,
    sniff_permit: &mut Option<OwnedSemaphorePermit>,
    report: &mut Report,
) -> Step<S>
where
    S: AsyncRead + AsyncWrite + IntoHalves + Unpin + Send + 'static,
{
    let limits = SniffLimits { max_bytes: plan.config.max_inspect_bytes, timeout: plan.config.inspect_timeout };
    loop {
        let sniffed = match sniff(&mut client, plan.sniffer.as_ref(), facts, limits, std::mem::take(&mut initial)).await
        {
            Ok(sniffed) => sniffed,
            Err(e) => return report.end(Outcome::ClientError(e)),
        };
        sniff_permit.take(); // no longer sniffing: the slot goes to the next connection
        report.bytes_in += sniffed.head.len() as u64;
        let verdict = match sniffed.decision {
            Ok(verdict) => verdict,
            Err(failure) => {
                tracing::warn!(
                    plugin = %plan.sniffer.name(),
                    reason = failure.label(),
                    fallback = ?plan.config.fallback,
                    "sniff plugin failed: {failure}; applying the listener's fallback"
                );
                match &plan.config.fallback {
                    Fallback::Close => return report.end(Outcome::PluginFailed(failure)),
                    Fallback::Backend(name) => Verdict::Forward(name.clone()),
                }
            }
        };
        report.verdict = verdict.label();
        let labels = vec![("listener", facts.listener.to_string()), ("verdict", verdict.label().to_string())];
        metrics::count("sluice_sniff_verdicts_total", labels, 1);
        let backend_name = match verdict {
            Verdict::Reply { data, then_close } => {
                if let Err(e) = client.write_all(&data).await {
                    return report.end(Outcome::ClientError(e));
                }
                report.bytes_out += data.len() as u64;
                if then_close {
                    // Boxed: its 4 KiB drain buffer would otherwise sit in every connection's task.
                    Box::pin(close_gracefully(client)).await;
                    return report.end(Outcome::Replied);
                }
                continue;
            }
            Verdict::Reject(reason) => return report.end(Outcome::Rejected(reason)),
            Verdict::ForwardDefault => match &plan.config.default_backend {
                Some(name) => name.clone(),
                None => return report.end(Outcome::Misrouted("no default-backend on this listener".into())),
            },
            Verdict::Forward(name) => name,
            Verdict::Http => {
                // A tenant listener without a route plugin of its own answers unknown names with 404.
                let own = plan
                    .router
                    .clone()
                    .or_else(|| plan.tenants.as_ref().map(|_| crate::tenant::http::NoSite::shared()));
                let Some(router) = own else {
                    let why = "the sniff plugin chose http, but this listener has no `route` plugin";
                    return report.end(Outcome::Misrouted(why.into()));
                };
                let stage = Arc::new(HttpStage {
                    facts: facts.clone(),
                    plan: plan.clone(),
                    snapshot: snapshot.clone(),
                    router,
                    tasks: spawner.tasks.clone(),
                    close_all: spawner.close_all.clone(),
                    requests: AtomicU64::new(0),
                    tenant_conn: Default::default(),
                });
                let result = http::serve(PrefixedIo::new(sniffed.head, client), stage.clone()).await;
                let requests = stage.requests.load(Ordering::Relaxed);
                return report.end(Outcome::Http { requests, error: result.err() });
            }
            Verdict::TerminateTls => return Step::TerminateTls { client, head: sniffed.head },
            // The sniff stage never hands on need-more; count it as a plugin fault if it ever did.
            Verdict::NeedMore => return report.end(Outcome::PluginFailed(SniffFailure::NeedMoreWhenComplete)),
        };
        let Some(backend) = snapshot.backends.get(&backend_name) else {
            return report.end(Outcome::Misrouted(format!("the plugin chose an unknown backend `{backend_name}`")));
        };
        Box::pin(forward(client, sniffed.head, (snapshot, plan, backend), facts, report)).await;
        return Step::Done;
    }
}

/// Connect to the backend, replay the sniffed head, then relay both ways.
/// When the backend has no server for it, the listener's fallback backend
/// (if it names another one) gets the connection instead.
async fn forward<C: IntoHalves>(
    client: C,
    head: Vec<u8>,
    (snapshot, plan, backend): (&Snapshot, &ListenerPlan, &Arc<Backend>),
    facts: &ConnFacts,
    report: &mut Report,
) {
    let mut backend = backend;
    report.backend = Some(backend.name().clone());
    // Raw streams have no headers or cookies: the client address is the only key.
    let affinity = |backend: &Backend| match backend.config().hash_key {
        Some(HashKey::ClientIp) => Some(facts.client_addr.ip().to_string()),
        _ => None,
    };
    let mut connected = backend.connect(affinity(backend).as_deref()).await;
    if let Err(e) = &connected
        && let Fallback::Backend(name) = &plan.config.fallback
        && name != backend.name()
        && let Some(fallback) = snapshot.backends.get(name)
    {
        tracing::warn!(error = %e, fallback = %name, "backend unavailable; applying the listener's fallback");
        backend = fallback;
        report.backend = Some(backend.name().clone());
        connected = backend.connect(affinity(backend).as_deref()).await;
    }
    let mut conn = match connected {
        Ok(conn) => conn,
        Err(e) => {
            let kind = if e.is_unavailable() { BackendErrorKind::Unavailable } else { BackendErrorKind::Connect };
            backend.metrics().error(kind);
            return report.outcome = Outcome::BackendUnavailable(e);
        }
    };
    report.server = Some(conn.server.addr.clone());
    let mut preamble = Vec::new();
    if let Some(version) = backend.config().proxy_protocol {
        let addrs = ProxiedAddrs { client: facts.client_addr, server: facts.local_addr };
        preamble = proxy_protocol::encode(version, addrs);
    }
    preamble.extend_from_slice(&head);
    if let Err(e) = conn.stream.write_all(&preamble).await {
        return report.outcome = Outcome::Relayed(RelayEnd::BackendError(e));
    }
    let stats = match client.into_tcp() {
        // Nothing is buffered: the sniffed head went out with the preamble.
        Ok(client) => relay_tcp(client, conn.stream, Pending::default(), backend.idle_timeout()).await,
        Err(client) => relay(client, conn.stream, backend.idle_timeout()).await,
    };
    report.bytes_in += stats.client_to_backend;
    report.bytes_out += stats.backend_to_client;
    report.outcome = Outcome::Relayed(stats.end);
}

/// Send our FIN, then read and discard what the client still sends for a
/// moment, so closing with unread bytes does not turn into a reset that could
/// destroy the reply before the client reads it.
async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin>(mut client: S) {
    if client.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
