//! The running proxy: `App::bind(config)` loads plugins and binds every
//! listener, `app.local_addr(name)` tells where it listens (port 0 works),
//! `app.run(shutdown)` serves until `shutdown` resolves, then drains.

use crate::accept::{AcceptLoop, Draining};
use crate::config::{Config, DemoServer};
use crate::demo;
use crate::names::ListenerName;
use crate::plugin::wasm::Runtime;
use crate::state::{BuildError, Snapshot};
use arc_swap::ArcSwap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the WebAssembly runtime: {0}")]
    Runtime(String),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{what}: cannot listen on {addr}: {error}")]
    Bind { what: String, addr: SocketAddr, error: io::Error },
}

/// How `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    Clean,
    /// This many connections were still open when the grace period ended and were closed.
    Forced(usize),
}

pub struct App {
    snapshot: Arc<ArcSwap<Snapshot>>,
    listeners: Vec<(ListenerName, TcpListener)>,
    demo_servers: Vec<(DemoServer, TcpListener)>,
    grace: Duration,
}

impl App {
    /// Load and probe every plugin, then bind every listener. Nothing is
    /// served until [`App::run`].
    pub async fn bind(config: Config) -> Result<App, StartError> {
        let runtime = Runtime::new().map_err(|e| StartError::Runtime(format!("{e:#}")))?;
        let snapshot = {
            let config = config.clone();
            // Compiling WebAssembly is CPU-heavy: keep it off the async workers.
            tokio::task::spawn_blocking(move || Snapshot::build(&config, &runtime))
                .await
                .map_err(|e| StartError::Runtime(format!("plugin loading panicked: {e}")))??
        };

        let mut demo_servers = Vec::new();
        for demo in &config.demo_servers {
            let what = format!("demo server ({:?})", demo.kind);
            let listener = bind(&what, demo.bind).await?;
            demo_servers.push((demo.clone(), listener));
        }
        let mut listeners = Vec::new();
        for listener in &config.listeners {
            let bound = bind(&format!("listener `{}`", listener.name), listener.bind).await?;
            listeners.push((listener.name.clone(), bound));
        }
        Ok(App {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            listeners,
            demo_servers,
            grace: Duration::from_secs(30),
        })
    }

    /// How long `run` lets open connections finish after shutdown begins.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The address a listener is bound to.
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.local_addrs().into_iter().find(|(name, _)| name.as_str() == listener).map(|(_, addr)| addr)
    }

    pub fn local_addrs(&self) -> Vec<(ListenerName, SocketAddr)> {
        self.listeners.iter().filter_map(|(name, listener)| Some((name.clone(), listener.local_addr().ok()?))).collect()
    }

    /// Serve until `shutdown` resolves; then stop accepting, let open
    /// connections finish for the grace period, and close the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Drained {
        let stop_accepting = CancellationToken::new();
        let close_all = CancellationToken::new();
        let connections = TaskTracker::new();
        let draining = Draining { stop_accepting: stop_accepting.clone(), close_all: close_all.clone() };

        for (demo, listener) in self.demo_servers {
            tokio::spawn(demo::serve(demo.kind, listener, stop_accepting.clone()));
        }
        let mut accept_loops = Vec::new();
        for (name, listener) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(listener = %name, %addr, "listening");
            }
            let accept = AcceptLoop {
                name,
                listener,
                snapshot: self.snapshot.clone(),
                connections: connections.clone(),
                draining: draining.clone(),
            };
            accept_loops.push(tokio::spawn(accept.run()));
        }

        shutdown.await;
        stop_accepting.cancel();
        for accept in accept_loops {
            let _ = accept.await;
        }
        connections.close();
        let open = connections.len();
        tracing::info!(open, grace = ?self.grace, "shutting down: no longer accepting");
        if tokio::time::timeout(self.grace, connections.wait()).await.is_ok() {
            tracing::info!("shutdown complete: every connection finished");
            return Drained::Clean;
        }
        let forced = connections.len();
        tracing::warn!(forced, "grace period over: closing the remaining connections");
        close_all.cancel();
        connections.wait().await;
        Drained::Forced(forced)
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|error| StartError::Bind { what: what.to_string(), addr, error })
}
