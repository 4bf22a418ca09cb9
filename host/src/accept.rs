//! The accept loop: it only accepts. Each connection gets its own task, with
//! a connection id in its tracing span; sniffing, plugin calls and relaying
//! all happen inside that task, under their own deadlines, so one slow client
//! never delays the next accept.

use crate::connection::{self, Outcome, Report, Spawner};
use crate::limits::Throttled;
use crate::metrics::{self, GaugeGuard};
use crate::names::{ConnId, ListenerName};
use crate::plugin::ConnFacts;
use crate::state::Snapshot;
use arc_swap::ArcSwap;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Pause after an accept error such as running out of file descriptors,
/// instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The two steps of a shutdown.
#[derive(Clone)]
pub struct Draining {
    /// Stop accepting new connections.
    pub stop_accepting: CancellationToken,
    /// Close the connections still open.
    pub close_all: CancellationToken,
}

pub struct AcceptLoop {
    pub name: ListenerName,
    pub listener: TcpListener,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub connections: TaskTracker,
    pub draining: Draining,
}

impl AcceptLoop {
    pub async fn run(self) {
        // The listener's gauge, looked up once rather than once per connection.
        let active = metrics::gauge("sluice_connections_active", vec![("listener", self.name.to_string())]);
        // A listener bound to one address accepts every connection on it:
        // no `getsockname` per connection then (a wildcard bind still asks).
        let bound = self.listener.local_addr().ok().filter(|addr| !addr.ip().is_unspecified());
        loop {
            let accepted = tokio::select! {
                () = self.draining.stop_accepting.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let Some((stream, client_addr)) = accepted_or_back_off(accepted, &self.name).await else { continue };
            let snapshot = self.snapshot.load_full();
            let Some(plan) = snapshot.listeners.get(&self.name).cloned() else {
                continue; // this listener was removed from the config
            };
            // Global limits: refuse (and count) rather than let a flood of
            // sockets starve the clients already being served.
            let Ok(connection_permit) = snapshot.limits.connections.clone().try_acquire_owned() else {
                refuse(&self.name, "max-connections");
                continue;
            };
            // Per-client limits; behind a trusted PROXY protocol sender they
            // apply to the client its header names (see `connection`).
            let behind_proxy = plan.config.proxy_protocol_from.iter().any(|net| net.contains(client_addr.ip()));
            let client_permit = if behind_proxy {
                None
            } else {
                match plan.per_client.admit(client_addr.ip()) {
                    Ok(permit) => permit,
                    Err(_) => continue, // counted and logged by the limiter; dropping `stream` closes it
                }
            };
            let Ok(sniff_permit) = snapshot.limits.sniffing.clone().try_acquire_owned() else {
                refuse(&self.name, "max-sniffing");
                continue;
            };
            let Some(local_addr) = bound.or_else(|| stream.local_addr().ok()) else { continue };
            let _ = stream.set_nodelay(true);
            let facts = ConnFacts {
                listener: self.name.clone(),
                client_addr,
                local_addr,
                tls: None,
                hello: None,
                tenant: None,
            };
            let close_all = self.draining.close_all.clone();
            let spawner = Spawner { tasks: self.connections.clone(), close_all: close_all.clone() };
            let span = tracing::info_span!("conn", id = %ConnId::next(), listener = %self.name, client = %client_addr);
            let listener = self.name.clone();
            let active_gauge = active.clone();
            // Boxed: the task then holds a pointer, and tokio's moves of the
            // future (into the task cell, and its stage when it finishes)
            // copy 8 bytes instead of the connection's whole state.
            self.connections.spawn(Box::pin(
                async move {
                    let _permits = (connection_permit, client_permit);
                    let _active = GaugeGuard::new(active_gauge);
                    let started = Instant::now();
                    let report = tokio::select! {
                        report = connection::serve(stream, facts, &snapshot, &plan, &spawner, sniff_permit) => report,
                        () = close_all.cancelled() => Report::shutdown(),
                    };
                    count_connection(&listener, &report);
                    crate::limits::memory::connection_ended();
                    log_access(&report, started.elapsed());
                }
                .instrument(span),
            ));
        }
    }
}

fn refuse(listener: &ListenerName, limit: &'static str) {
    static LOG: Throttled = Throttled::new();
    if let Some(suppressed) = LOG.ready() {
        tracing::warn!(listener = %listener, limit, suppressed, "connection refused: global limit reached");
    }
    crate::limits::count_refusal(limit);
}

/// The accepted connection, or `None` after an accept error: one that
/// concerns a single connection is skipped; any other (out of file
/// descriptors: EMFILE, ENFILE) is logged at most once per interval and
/// followed by a pause, instead of spinning on it. Shared by the admin listener.
pub async fn accepted_or_back_off(
    accepted: io::Result<(TcpStream, SocketAddr)>,
    listener: &(dyn std::fmt::Display + Sync),
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok(accepted) => Some(accepted),
        Err(e) if is_per_connection(&e) => None,
        Err(e) => {
            static LOG: Throttled = Throttled::new();
            if let Some(suppressed) = LOG.ready() {
                tracing::error!(listener = %listener, error = %e, suppressed, "accept failed; backing off");
            }
            metrics::count("sluice_accept_errors_total", vec![("listener", listener.to_string())], 1);
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            None
        }
    }
}

fn count_connection(listener: &ListenerName, report: &Report) {
    thread_local! {
        /// This worker's `sluice_connections_total` handles: building the
        /// label list to look one up cost four allocations per connection.
        static CONNECTIONS: RefCell<HashMap<(ListenerName, &'static str), Arc<AtomicU64>>> =
            RefCell::new(HashMap::new());
    }
    CONNECTIONS.with_borrow_mut(|seen| {
        seen.entry((listener.clone(), report.verdict))
            .or_insert_with(|| {
                let labels = vec![("listener", listener.to_string()), ("protocol", report.verdict.to_string())];
                metrics::counter("sluice_connections_total", labels)
            })
            .fetch_add(1, Ordering::Relaxed)
    });
    if let Outcome::Http { .. } = report.outcome {
        return; // HTTP bodies and tunnels are counted as they flow (see `metrics::http`)
    }
    let listener = listener.to_string();
    metrics::count(
        "sluice_bytes_total",
        vec![("listener", listener.clone()), ("direction", "in".into())],
        report.bytes_in,
    );
    metrics::count("sluice_bytes_total", vec![("listener", listener), ("direction", "out".into())], report.bytes_out);
}

/// Errors that concern one connection that failed while being accepted, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// One line per connection, at its end.
fn log_access(report: &Report, duration: Duration) {
    let detail = match &report.outcome {
        Outcome::Rejected(reason) | Outcome::Misrouted(reason) | Outcome::TlsFailed(reason) => Some(reason.clone()),
        Outcome::ClientError(e) => Some(e.to_string()),
        Outcome::PluginFailed(e) => Some(e.to_string()),
        Outcome::BackendUnavailable(e) => Some(e.to_string()),
        Outcome::Relayed(end) => match end {
            crate::relay::RelayEnd::ClientError(e)
            | crate::relay::RelayEnd::BackendError(e)
            | crate::relay::RelayEnd::LocalError(e) => Some(e.to_string()),
            _ => None,
        },
        Outcome::Http { error, .. } => error.clone(),
        Outcome::Replied | Outcome::Shutdown => None,
    };
    tracing::info!(
        target: "sluice::access",
        verdict = report.verdict,
        sni = report.tls_server_name.as_deref(),
        proxied_client = report.proxied_client.map(|a| a.to_string()),
        backend = report.backend.as_ref().map(|b| b.as_str()),
        server = report.server.as_deref(),
        bytes_in = report.bytes_in,
        bytes_out = report.bytes_out,
        duration_ms = duration.as_millis() as u64,
        outcome = report.outcome.label(),
        detail,
        "connection closed"
    );
}
