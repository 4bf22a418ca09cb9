//! One reload attempt: load and validate the config, build the snapshot, bind added listeners, swap, record.

use super::files::{Fingerprint, files_named_in, files_of, fingerprint};
use super::{LastReload, Reloader, Running, Trigger};
use crate::config::{Config, DemoKind};
use crate::names::ListenerName;
use crate::plugin::wasm::Runtime;
use crate::state::Snapshot;
use crate::workers::Sockets;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// The socket an added listener will accept on.
enum Socket {
    Bound(Sockets),
    /// The socket of the removed listener at this index.
    TakeOver(usize),
}

impl Reloader {
    /// One reload attempt: load, validate, swap, and record the result.
    pub(super) async fn reload(
        &mut self,
        trigger: Trigger,
        last_seen: &mut Fingerprint,
        stop: &CancellationToken,
    ) -> Result<String, String> {
        // Hash the files before reading them: a write that lands while the
        // reload runs then still counts as a change afterwards.
        let before = fingerprint(&self.watch_set().files).await;
        let result = self.try_reload(stop).await;
        // Files the new config names that were not watched yet: hashed now.
        let mut seen = fingerprint(&self.watch_set().files).await;
        seen.extend(before);
        *last_seen = seen;

        let at = SystemTime::now();
        match &result {
            Ok(summary) => tracing::info!(trigger = %trigger, "reloaded: {summary}"),
            Err(error) => {
                tracing::error!(trigger = %trigger, "reload refused, the previous version stays live: {error}")
            }
        }
        self.shared.status.send_modify(|status| {
            match &result {
                Ok(_) => {
                    status.successes += 1;
                    crate::metrics::count("sluice_reloads_total", vec![("result", "ok".to_string())], 1);
                }
                Err(_) => {
                    status.failures += 1;
                    crate::metrics::count("sluice_reloads_total", vec![("result", "refused".to_string())], 1);
                }
            }
            status.last = Some(LastReload { at, trigger, result: result.clone() });
        });
        result
    }

    async fn try_reload(&mut self, stop: &CancellationToken) -> Result<String, String> {
        let path = self.config.source.clone();
        self.attempted = files_named_in(&path);
        let config = Config::load(&path).map_err(|e| e.to_string())?;
        self.attempted = files_of(&config);

        let demo_servers = |config: &Config| -> Vec<(SocketAddr, DemoKind)> {
            config.demo_servers.iter().map(|demo| (demo.bind, demo.kind)).collect()
        };
        if demo_servers(&config) != demo_servers(&self.config) {
            tracing::warn!("demo servers are not reloaded: restart sluice to change them");
        }

        let runtime = Runtime::new().map_err(|e| format!("cannot start the WebAssembly runtime: {e:#}"))?;
        let snapshot = {
            let config = config.clone();
            let previous = self.snapshot.load_full();
            tokio::task::spawn_blocking(move || Snapshot::build_after(&config, &runtime, Some(&previous)))
                .await
                .map_err(|e| format!("loading the plugins panicked: {e}"))?
                .map_err(|e| e.to_string())?
        };

        // Which listeners go, which come. A changed `bind` is both.
        let stays = |name: &ListenerName, bind: SocketAddr, other: &Config| {
            other.listener(name).is_some_and(|listener| listener.bind == bind)
        };
        let (mut removed, kept): (Vec<Running>, Vec<Running>) =
            std::mem::take(&mut self.running).into_iter().partition(|r| !stays(&r.name, r.bind, &config));
        self.running = kept;
        let added: Vec<(ListenerName, SocketAddr)> = config
            .listeners
            .iter()
            .filter(|listener| !self.running.iter().any(|r| r.name == listener.name))
            .map(|listener| (listener.name.clone(), listener.bind))
            .collect();

        // Bind the new ones; a listener on the (fixed) address of one going
        // away will take over its socket. Nothing has changed yet if this fails.
        let mut sockets = Vec::new();
        let mut refused = None;
        for (name, bind) in &added {
            if let Some(from) = removed.iter().position(|r| bind.port() != 0 && r.bind == *bind && r.socket.is_some()) {
                sockets.push(Socket::TakeOver(from));
                continue;
            }
            match Sockets::bind(*bind, self.workers.count()) {
                Ok(socket) => sockets.push(Socket::Bound(socket)),
                Err(error) => {
                    refused = Some(format!("listener `{name}`: cannot listen on {bind}: {error}"));
                    break;
                }
            }
        }
        if refused.is_none() && stop.is_cancelled() {
            refused = Some("sluice is shutting down".to_string());
        }
        if let Some(error) = refused {
            self.running.append(&mut removed);
            let live = &self.config;
            self.running.sort_by_key(|r| live.listeners.iter().position(|l| l.name == r.name));
            return Err(error);
        }

        // Commit. Removed listeners stop accepting first (the connections
        // they accepted keep running), so none of them takes a connection
        // after its name has left the snapshot.
        for running in &removed {
            running.stop.cancel();
        }
        for running in &mut removed {
            let _ = (&mut running.task).await;
            tracing::info!(listener = %running.name, addr = %running.addr, "listener removed: no longer accepting");
        }
        let mut snapshot = snapshot;
        crate::limits::carry_over(&mut snapshot, &self.snapshot.load());
        crate::experiment::carry_over(&snapshot, &self.snapshot.load());
        self.snapshot.store(Arc::new(snapshot));
        let (added_count, removed_count) = (added.len(), removed.len());
        for ((name, bind), socket) in added.into_iter().zip(sockets) {
            let socket = match socket {
                Socket::Bound(socket) => Ok(socket),
                Socket::TakeOver(from) => match removed[from].socket.take() {
                    Some(socket) => Ok(socket),
                    None => Sockets::bind(bind, self.workers.count()),
                },
            };
            match socket.and_then(|socket| self.spawn_accept_loop(name.clone(), bind, socket)) {
                Ok(running) => self.running.push(running),
                Err(e) => tracing::error!(listener = %name, error = %e, "cannot start the listener"),
            }
        }
        drop(removed); // closes the sockets nobody took over
        // Keep the config's order, for `local_addrs`.
        self.running.sort_by_key(|r| config.listeners.iter().position(|l| l.name == r.name));
        self.publish_addrs();
        let summary = format!(
            "{} listeners ({added_count} added, {removed_count} removed), {} backends, {} plugins",
            config.listeners.len(),
            config.backends.len(),
            config.plugins.len()
        );
        self.config = config;
        self.attempted.clear();
        Ok(summary)
    }
}
