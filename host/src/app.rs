//! The running proxy: `App::bind(config)` loads plugins and binds every
//! listener, `app.local_addr(name)` tells where it listens (port 0 works),
//! `app.run(shutdown)` serves until `shutdown` resolves, then drains. While
//! it runs, [`reload`](crate::reload) watches the config, plugin and
//! certificate files and swaps in each valid new version;
//! [`App::reload_handle`] reports on reloads and triggers them.

use crate::accept::Draining;
use crate::admin;
use crate::config::{Config, DemoServer};
use crate::demo;
use crate::names::ListenerName;
use crate::plugin::wasm::Runtime;
use crate::reload::{Baseline, ReloadHandle, ReloadStatus, Reloader, Startup, Trigger};
use crate::state::{BuildError, Snapshot};
use crate::workers::{Sockets, Workers};
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
    config: Config,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Each listener's sockets, one per worker.
    listeners: Vec<(ListenerName, Sockets)>,
    workers: Arc<Workers>,
    demo_servers: Vec<(DemoServer, TcpListener)>,
    admin: Option<TcpListener>,
    grace: Duration,
    watch: bool,
    reload: ReloadHandle,
    startup: Startup,
}

impl App {
    /// Load and probe every plugin, then bind every listener, for one
    /// worker per CPU. Nothing is served until [`App::run`].
    pub async fn bind(config: Config) -> Result<App, StartError> {
        Self::bind_with_workers(config, crate::workers::default_count()).await
    }

    /// [`App::bind`] for `workers` worker threads (see [`crate::workers`]):
    /// each listener is bound once per worker.
    pub async fn bind_with_workers(config: Config, workers: usize) -> Result<App, StartError> {
        // Started first: per-worker pools in the snapshot are sized by them.
        let workers = Workers::start(workers)
            .map_err(|e| StartError::Runtime(format!("cannot start the worker threads: {e}")))?;
        let count = workers.count();
        let runtime = Runtime::new().map_err(|e| StartError::Runtime(format!("{e:#}")))?;
        let (snapshot, baseline) = {
            let config = config.clone();
            // Compiling WebAssembly is CPU-heavy: keep it off the async workers.
            // The files are hashed before they are read, for the reloader.
            tokio::task::spawn_blocking(move || {
                let baseline = Baseline::of(&config);
                Snapshot::build(&config, &runtime).map(|snapshot| (snapshot, baseline))
            })
            .await
            .map_err(|e| StartError::Runtime(format!("plugin loading panicked: {e}")))??
        };

        // Once, at start (`sluice check` prints the same).
        tracing::info!("{}", crate::limits::fd_budget::summary(&config));
        for warning in crate::limits::fd_budget::warnings(&config) {
            tracing::warn!("{warning}");
        }
        let mut demo_servers = Vec::new();
        for demo in &config.demo_servers {
            let what = format!("demo server ({:?})", demo.kind);
            let listener = bind(&what, demo.bind).await?;
            demo_servers.push((demo.clone(), listener));
        }
        let mut listeners = Vec::new();
        for listener in &config.listeners {
            let bound = Sockets::bind(listener.bind, count).map_err(|error| StartError::Bind {
                what: format!("listener `{}`", listener.name),
                addr: listener.bind,
                error,
            })?;
            listeners.push((listener.name.clone(), bound));
        }
        let admin = match &config.admin {
            Some(admin) => Some(bind("admin listener", admin.bind).await?),
            None => None,
        };
        let addrs = listeners.iter().filter_map(|(name, l)| Some((name.clone(), l.local_addr().ok()?))).collect();
        let (reload, startup) = ReloadHandle::new(addrs, baseline);
        Ok(App {
            config,
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            listeners,
            workers: Arc::new(workers),
            demo_servers,
            admin,
            grace: Duration::from_secs(30),
            watch: true,
            reload,
            startup,
        })
    }

    /// How long `run` lets open connections finish after shutdown begins.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Whether `run` watches the config, plugin and certificate files and
    /// reloads when they change (default: yes). Without watching, reloads
    /// happen only through [`ReloadHandle::reload_now`] (SIGHUP).
    pub fn with_watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// Reload status, manual reloads and the current listener addresses,
    /// usable while `run` runs.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// The last reload's result and the counters.
    pub fn reload_status(&self) -> ReloadStatus {
        self.reload.status()
    }

    /// The admin listener's address, if the config has `[admin]`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// The address a listener is bound to (at startup; after reloads, ask
    /// the [`ReloadHandle`]).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.local_addrs().into_iter().find(|(name, _)| name.as_str() == listener).map(|(_, addr)| addr)
    }

    pub fn local_addrs(&self) -> Vec<(ListenerName, SocketAddr)> {
        self.listeners.iter().filter_map(|(name, listener)| Some((name.clone(), listener.local_addr().ok()?))).collect()
    }

    /// How many worker threads `run` starts.
    pub fn workers(&self) -> usize {
        self.workers.count()
    }

    /// Serve until `shutdown` resolves; then stop accepting, let open
    /// connections finish for the grace period, and close the rest.
    /// Connections are served on the worker threads; everything else on the
    /// runtime `run` is called on.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Drained {
        // Held until the end: the worker threads stop when the last handle goes.
        let workers = self.workers;
        let stop_accepting = CancellationToken::new();
        let close_all = CancellationToken::new();
        let connections = TaskTracker::new();
        let draining = Draining { stop_accepting: stop_accepting.clone(), close_all: close_all.clone() };

        if let (Some(listener), Some(limits)) = (self.admin, self.config.admin) {
            let reload = self.reload.clone();
            let admin = Arc::new(admin::Admin {
                snapshot: self.snapshot.clone(),
                extra: Arc::new(move || reload_json(&reload.status())),
                started: std::time::Instant::now(),
            });
            tokio::spawn(admin::serve(listener, admin, limits, stop_accepting.clone()));
        }
        tokio::spawn(crate::limits::memory::release_after_floods(connections.clone(), stop_accepting.clone()));
        for (demo, listener) in self.demo_servers {
            tokio::spawn(demo::serve(demo, listener, stop_accepting.clone()));
        }
        crate::acme::spawn(&self.config, stop_accepting.clone());
        // The reloader owns the listeners from here on: reloads add and remove them.
        let mut reloader = Reloader::new(
            self.config,
            self.snapshot,
            connections.clone(),
            draining,
            &self.reload,
            self.startup,
            self.watch,
            workers.clone(),
        );
        for (name, listener) in self.listeners {
            reloader.start_listener(name, listener);
        }
        let reloader = tokio::spawn(reloader.run(stop_accepting.clone()));

        shutdown.await;
        stop_accepting.cancel();
        match reloader.await {
            Ok(accept_loops) => {
                for accept in accept_loops {
                    let _ = accept.await;
                }
            }
            Err(e) => tracing::error!(error = %e, "the reloader failed; its listeners stop on their own"),
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

/// The last reload, for `/status`.
fn reload_json(status: &ReloadStatus) -> serde_json::Value {
    let last = status.last.as_ref().map(|last| {
        let at = last.at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        // The trigger as words ("files changed" with the files, or "reload requested").
        let (trigger, files) = match &last.trigger {
            Trigger::Files(files) => ("files changed", files.iter().map(|f| f.display().to_string()).collect()),
            Trigger::Request => ("reload requested", Vec::new()),
        };
        match &last.result {
            Ok(summary) => {
                serde_json::json!({ "at_unix": at, "trigger": trigger, "files": files, "ok": true, "summary": summary })
            }
            Err(error) => {
                serde_json::json!({ "at_unix": at, "trigger": trigger, "files": files, "ok": false, "error": error })
            }
        }
    });
    serde_json::json!({ "successes": status.successes, "failures": status.failures, "last": last })
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|error| StartError::Bind { what: what.to_string(), addr, error })
}
