//! The accept loop: it only accepts. Each connection gets its own task, with
//! a connection id in its tracing span; sniffing, plugin calls and relaying
//! all happen inside that task, under their own deadlines, so one slow client
//! never delays the next accept.

use crate::connection::{self, Outcome, Report, Spawner};
use crate::metrics::{self, GaugeGuard};
use crate::names::{ConnId, ListenerName};
use crate::plugin::ConnFacts;
use crate::state::Snapshot;
use arc_swap::ArcSwap;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
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
        loop {
            let accepted = tokio::select! {
                () = self.draining.stop_accepting.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, client_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    tracing::error!(listener = %self.name, error = %e, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
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
            let Ok(sniff_permit) = snapshot.limits.sniffing.clone().try_acquire_owned() else {
                refuse(&self.name, "max-sniffing");
                continue;
            };
            let Ok(local_addr) = stream.local_addr() else { continue };
            let _ = stream.set_nodelay(true);
            let facts = ConnFacts { listener: self.name.clone(), client_addr, local_addr, tls: None, hello: None };
            let close_all = self.draining.close_all.clone();
            let spawner = Spawner { tasks: self.connections.clone(), close_all: close_all.clone() };
            let span = tracing::info_span!("conn", id = %ConnId::next(), listener = %self.name, client = %client_addr);
            let listener = self.name.clone();
            let active_gauge = active.clone();
            self.connections.spawn(
                async move {
                    let _permit = connection_permit;
                    let _active = GaugeGuard::new(active_gauge);
                    let started = Instant::now();
                    let report = tokio::select! {
                        report = connection::serve(stream, facts, &snapshot, &plan, &spawner, sniff_permit) => report,
                        () = close_all.cancelled() => Report::shutdown(),
                    };
                    count_connection(&listener, &report);
                    log_access(&report, started.elapsed());
                }
                .instrument(span),
            );
        }
    }
}

fn refuse(listener: &ListenerName, limit: &'static str) {
    tracing::warn!(listener = %listener, limit, "connection refused: global limit reached");
    metrics::count("sluice_connections_refused_total", vec![("limit", limit.to_string())], 1);
}

fn count_connection(listener: &ListenerName, report: &Report) {
    let listener = listener.to_string();
    let protocol = report.verdict.to_string();
    metrics::count("sluice_connections_total", vec![("listener", listener.clone()), ("protocol", protocol)], 1);
    if let Outcome::Http { .. } = report.outcome {
        return; // HTTP bodies and tunnels are counted as they flow (see `metrics::http`)
    }
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
