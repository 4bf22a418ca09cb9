//! Live reload: the config file, plugin files and certificates are watched,
//! and a change is loaded, validated and swapped in without a restart.
//!
//! - **What is watched.** The *directories* holding the config file, every
//!   plugin `file` and every certificate and key (and, for a file that is a
//!   symlink, the directory of its target). Watching directories, not files,
//!   sees every way a deployment replaces a file: written in place, written
//!   to a temporary file and renamed over, deleted and re-created, and the
//!   Kubernetes ConfigMap/Secret `..data` symlink swap. An event counts when
//!   it names a watched file, a `..`-prefixed entry (the Kubernetes
//!   machinery) or a watched directory itself.
//! - **Debounce.** A burst of events is one change: the files are looked at
//!   once nothing has happened for [`DEBOUNCE`] (but at most [`MAX_DELAY`]
//!   after the first event of the burst). Then the content of every watched
//!   file is hashed; when nothing changed since the last attempt (a `touch`,
//!   an editor's swap file, a spurious event), nothing is done.
//! - **Validate, then swap.** A reload reads the config with
//!   [`Config::load`], builds a whole new [`Snapshot`] (every plugin compiled,
//!   instantiated with its settings and probed; every certificate loaded)
//!   off the async workers, binds the listeners the new config adds, and only
//!   when all of that worked swaps the snapshot in with one atomic store.
//!   Connections already running keep the snapshot they started with.
//! - **Refuse loudly.** When any step fails, nothing changes: the previous
//!   version stays live, the refusal is logged at error level with the file
//!   and the reason, and [`ReloadStatus`] records it. A file that was caught
//!   half-written fails to load, and the event of the write that completes it
//!   triggers the next attempt.
//! - **Listeners.** Added listeners are bound and start accepting; removed
//!   ones stop accepting (connections they already accepted run to their
//!   end); a listener whose `bind` changed is removed and added. A listener
//!   whose configured address is the same as one going away (a rename) takes
//!   over its socket instead of binding a new one.
//! - **Triggers.** Watched files, and [`ReloadHandle::reload_now`] (SIGHUP in
//!   the binary), which reloads even if no file changed.
//!
//! The stages, one file each: `listeners.rs` starts the accept loops,
//! `watcher.rs` waits for file events and debounces them, `apply.rs` loads a
//! new config and swaps it in, `files.rs` says which files a config depends
//! on and hashes them.

use crate::accept::Draining;
use crate::config::Config;
use crate::names::ListenerName;
use crate::state::Snapshot;
use crate::workers::{Sockets, Workers};
use arc_swap::ArcSwap;
use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod apply;
mod files;
mod listeners;
mod watcher;

pub(crate) use files::Baseline;
use files::Fingerprint;

/// The quiet period: files are looked at once no event arrived for this long.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// A burst of events that never goes quiet is looked at after this long anyway.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// The result of the last reload and how many there were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Reloads that were swapped in.
    pub successes: u64,
    /// Reloads that were refused (the previous version stayed live).
    pub failures: u64,
    /// The most recent attempt, if there was one.
    pub last: Option<LastReload>,
}

impl ReloadStatus {
    /// Why the most recent attempt was refused, if it was.
    pub fn last_error(&self) -> Option<&str> {
        self.last.as_ref().and_then(|last| last.result.as_ref().err()).map(String::as_str)
    }
}

/// One reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastReload {
    /// When it finished.
    pub at: SystemTime,
    pub trigger: Trigger,
    /// `Ok` with a summary of what is now live, or `Err` with what was
    /// refused and why (naming the file).
    pub result: Result<String, String>,
}

/// What started a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// These watched files changed on disk.
    Files(Vec<PathBuf>),
    /// [`ReloadHandle::reload_now`] or [`ReloadHandle::reload`] (SIGHUP).
    Request,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Request => f.write_str("request"),
            Trigger::Files(files) => {
                let names: Vec<String> = files.iter().map(|file| file.display().to_string()).collect();
                write!(f, "changed: {}", names.join(", "))
            }
        }
    }
}

/// Talks to the running proxy's reloader: status, manual reloads, and where
/// the listeners are bound now. Cheap to clone; usable before and after
/// [`App::run`](crate::App::run) starts.
#[derive(Clone)]
pub struct ReloadHandle {
    shared: Arc<Shared>,
}

struct Shared {
    requests: mpsc::UnboundedSender<Request>,
    status: watch::Sender<ReloadStatus>,
    addrs: Mutex<Vec<(ListenerName, SocketAddr)>>,
}

/// A reload asked for through the handle; `reply` gets its result.
struct Request {
    reply: Option<oneshot::Sender<Result<String, String>>>,
}

/// What the reloader starts from, made at bind time: the receiving end of
/// the handle's requests, and the content of the files the first snapshot
/// was built from.
pub(crate) struct Startup {
    inbox: mpsc::UnboundedReceiver<Request>,
    baseline: Fingerprint,
}

impl ReloadHandle {
    pub(crate) fn new(addrs: Vec<(ListenerName, SocketAddr)>, baseline: Baseline) -> (ReloadHandle, Startup) {
        let (requests, inbox) = mpsc::unbounded_channel();
        let (status, _) = watch::channel(ReloadStatus::default());
        let handle = ReloadHandle { shared: Arc::new(Shared { requests, status, addrs: Mutex::new(addrs) }) };
        (handle, Startup { inbox, baseline: baseline.0 })
    }

    /// The last reload's result and the counters.
    pub fn status(&self) -> ReloadStatus {
        self.shared.status.borrow().clone()
    }

    /// Follow the status as it changes.
    pub fn subscribe(&self) -> watch::Receiver<ReloadStatus> {
        self.shared.status.subscribe()
    }

    /// Ask for a reload (even if no file changed) and return at once; the
    /// result shows in [`status`](Self::status). What SIGHUP does.
    pub fn reload_now(&self) {
        let _ = self.shared.requests.send(Request { reply: None });
    }

    /// Reload (even if no file changed) and wait for the result: a summary
    /// of what is live now, or why the reload was refused.
    pub async fn reload(&self) -> Result<String, String> {
        let (reply, result) = oneshot::channel();
        if self.shared.requests.send(Request { reply: Some(reply) }).is_err() {
            return Err("sluice is not running".to_string());
        }
        result.await.unwrap_or_else(|_| Err("sluice stopped before reloading".to_string()))
    }

    /// Where each listener is bound now (listeners come and go with reloads).
    pub fn local_addrs(&self) -> Vec<(ListenerName, SocketAddr)> {
        self.shared.addrs.lock().expect("addrs lock").clone()
    }

    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.local_addrs().into_iter().find(|(name, _)| name.as_str() == listener).map(|(_, addr)| addr)
    }
}

/// One listener with its accept loop running.
struct Running {
    name: ListenerName,
    /// The address from the config (port 0 stays 0 here).
    bind: SocketAddr,
    /// The address actually bound.
    addr: SocketAddr,
    /// Duplicates of the listening sockets (one per worker), so a renamed
    /// listener on the same address can take them over without a moment of
    /// not listening.
    socket: Option<Sockets>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Owns the listeners once the proxy runs, watches the files and performs
/// reloads. Spawned by [`App::run`](crate::App::run).
pub(crate) struct Reloader {
    config: Config,
    snapshot: Arc<ArcSwap<Snapshot>>,
    running: Vec<Running>,
    connections: TaskTracker,
    /// Global shutdown: every accept loop stops on it (each also has its own
    /// child token, cancelled when a reload removes it).
    draining: Draining,
    inbox: mpsc::UnboundedReceiver<Request>,
    shared: Arc<Shared>,
    watch: bool,
    /// Files named by the most recent config that was read, when it was not
    /// swapped in: watched too, so fixing them is noticed.
    attempted: BTreeSet<PathBuf>,
    baseline: Fingerprint,
    /// Each listener accepts on every worker.
    workers: Arc<Workers>,
}
