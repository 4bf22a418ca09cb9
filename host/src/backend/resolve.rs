//! Server names: a `servers` entry like `"app.svc.cluster.local:8080"`
//! stands for every address the name resolves to, so a Kubernetes headless
//! service or a Consul DNS name works as a server list.
//!
//! Names are resolved once when the backend is built, then again every
//! `resolve-interval`. Addresses that appear become servers (healthy until
//! checked); addresses that disappear stop getting new traffic (open
//! connections to them carry on). A failed lookup keeps the last addresses:
//! a DNS outage should not empty a backend.

use super::Backend;
use crate::config::ServerSpec;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Weak;
use std::time::Duration;

/// How long one lookup may take before the previous answer is kept.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// An entry that is not a literal `ip:port`.
pub(super) fn is_name(address: &str) -> bool {
    address.parse::<SocketAddr>().is_err()
}

/// The addresses of one entry when the backend is built. Blocks on DNS for
/// names; an entry that does not resolve starts with no servers (and a warning).
pub(super) fn initial(spec: &ServerSpec) -> Vec<SocketAddr> {
    if let Ok(socket) = spec.address.parse() {
        return vec![socket];
    }
    match spec.address.to_socket_addrs() {
        Ok(addrs) => sorted(addrs),
        Err(e) => {
            tracing::warn!(server = %spec.address, error = %e, "server name does not resolve (yet); will retry");
            Vec::new()
        }
    }
}

/// Resolve the backend's names every `resolve-interval` until it is dropped.
pub(super) async fn run(backend: Weak<Backend>) {
    loop {
        let Some(interval) = backend.upgrade().map(|b| b.config.resolve_interval) else { return };
        tokio::time::sleep(interval).await;
        let Some(live) = backend.upgrade() else { return };
        let current = live.servers();
        let specs = live.config.servers.clone();
        drop(live); // do not keep a replaced backend alive while resolving
        let mut resolved = Vec::with_capacity(specs.len());
        for spec in &specs {
            let addrs = if is_name(&spec.address) {
                match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(spec.address.as_str())).await {
                    Ok(Ok(addrs)) => sorted(addrs),
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {LOOKUP_TIMEOUT:?}"),
                        };
                        tracing::warn!(server = %spec.address, error, "server name lookup failed; keeping its last addresses");
                        current.iter().filter(|s| s.entry == spec.address).map(|s| s.socket).collect()
                    }
                }
            } else {
                initial(spec)
            };
            resolved.push(addrs);
        }
        let Some(live) = backend.upgrade() else { return };
        live.set_resolved(&resolved);
    }
}

/// DNS answers come in any order; sort so that the server list (and so
/// round-robin order) only changes when the set of addresses does.
fn sorted(addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = addrs.collect();
    addrs.sort();
    addrs.dedup();
    addrs
}
