//! Starting the accept loops of the listeners, one per worker, and publishing where they are bound.

use super::{ReloadHandle, Reloader, Running, Startup};
use crate::accept::{AcceptLoop, Draining};
use crate::config::Config;
use crate::names::ListenerName;
use crate::state::Snapshot;
use crate::workers::{Sockets, Workers};
use arc_swap::ArcSwap;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

impl Reloader {
    #[allow(clippy::too_many_arguments)] // each is a distinct piece of the running proxy
    pub(crate) fn new(
        config: Config,
        snapshot: Arc<ArcSwap<Snapshot>>,
        connections: TaskTracker,
        draining: Draining,
        handle: &ReloadHandle,
        startup: Startup,
        watch: bool,
        workers: Arc<Workers>,
    ) -> Reloader {
        Reloader {
            config,
            snapshot,
            running: Vec::new(),
            connections,
            draining,
            inbox: startup.inbox,
            shared: handle.shared.clone(),
            watch,
            attempted: BTreeSet::new(),
            baseline: startup.baseline,
            workers,
        }
    }

    /// Start the accept loop of a listener bound at startup.
    pub(crate) fn start_listener(&mut self, name: ListenerName, listener: Sockets) {
        let bind = match self.config.listener(&name) {
            Some(config) => config.bind,
            None => listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        match self.spawn_accept_loop(name.clone(), bind, listener) {
            Ok(running) => self.running.push(running),
            Err(e) => tracing::error!(listener = %name, error = %e, "cannot start the listener"),
        }
        self.publish_addrs();
    }

    /// Start one accept loop per worker, each on its own socket and runtime.
    pub(super) fn spawn_accept_loop(
        &self,
        name: ListenerName,
        bind: SocketAddr,
        sockets: Sockets,
    ) -> std::io::Result<Running> {
        let addr = sockets.local_addr()?;
        let socket = match sockets.try_clone() {
            Ok(socket) => Some(socket),
            Err(e) => {
                tracing::warn!(listener = %name, error = %e, "cannot duplicate the listening sockets");
                None
            }
        };
        let stop = self.draining.stop_accepting.child_token();
        let mut loops = Vec::new();
        for (worker, socket) in self.workers.handles().iter().zip(sockets.into_vec()) {
            // Registered with the worker's reactor: its runtime alone polls it.
            let listener = {
                let _on_worker = worker.enter();
                TcpListener::from_std(socket)?
            };
            let accept = AcceptLoop {
                name: name.clone(),
                listener,
                snapshot: self.snapshot.clone(),
                connections: self.connections.clone(),
                draining: Draining { stop_accepting: stop.clone(), close_all: self.draining.close_all.clone() },
            };
            loops.push(worker.spawn(accept.run()));
        }
        tracing::info!(listener = %name, %addr, workers = loops.len(), "listening");
        let task = tokio::spawn(async move {
            for accept in loops {
                let _ = accept.await;
            }
        });
        Ok(Running { name, bind, addr, socket, stop, task })
    }

    pub(super) fn publish_addrs(&self) {
        *self.shared.addrs.lock().expect("addrs lock") =
            self.running.iter().map(|r| (r.name.clone(), r.addr)).collect();
    }
}
