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

use crate::accept::{AcceptLoop, Draining};
use crate::config::{Config, DemoKind};
use crate::names::ListenerName;
use crate::plugin::wasm::Runtime;
use crate::state::Snapshot;
use crate::workers::{Sockets, Workers};
use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

/// The socket an added listener will accept on.
enum Socket {
    Bound(Sockets),
    /// The socket of the removed listener at this index.
    TakeOver(usize),
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
    fn spawn_accept_loop(&self, name: ListenerName, bind: SocketAddr, sockets: Sockets) -> std::io::Result<Running> {
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

    fn publish_addrs(&self) {
        *self.shared.addrs.lock().expect("addrs lock") =
            self.running.iter().map(|r| (r.name.clone(), r.addr)).collect();
    }

    /// Watch and serve reload requests until `stop` is cancelled (shutdown);
    /// then return the accept loops, so shutdown can wait for them to end.
    pub(crate) async fn run(mut self, stop: CancellationToken) -> Vec<JoinHandle<()>> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut watcher = if self.watch { DirWatcher::new(events_tx) } else { None };
        let mut watched = self.watch_set();
        if let Some(watcher) = &mut watcher {
            watcher.update(&watched.dirs);
        }
        // The pending burst of events: when to look, and since when it lasts.
        let mut pending: Option<(Instant, Instant)> = None;
        let mut last_seen = std::mem::take(&mut self.baseline);
        if self.watch && fingerprint(&watched.files).await != last_seen {
            // Changed between loading and watching (maybe still being
            // written): look once it is quiet.
            let now = Instant::now();
            pending = Some((now + DEBOUNCE, now));
        }

        loop {
            let deadline = pending.map(|(at, _)| at);
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(request) = self.inbox.recv() => {
                    let result = self.reload(Trigger::Request, &mut last_seen, &stop).await;
                    if let Some(reply) = request.reply {
                        let _ = reply.send(result);
                    }
                    watched = self.rewatch(&mut watcher, &mut last_seen).await;
                }
                () = sleep_until(deadline) => {
                    pending = None;
                    watched = self.files_settled(&mut watcher, &mut last_seen, &stop).await;
                }
                Some(event) = events.recv() => {
                    if watched.is_relevant(&event, watcher.as_mut()) {
                        let now = Instant::now();
                        let since = pending.map_or(now, |(_, since)| since);
                        pending = Some(((now + DEBOUNCE).min(since + MAX_DELAY), since));
                    }
                }
            }
        }
        drop(watcher);
        self.running.into_iter().map(|running| running.task).collect()
    }

    /// A burst of events is over: reload if the content of a watched file
    /// changed since the last attempt. Returns the (new) watch set.
    async fn files_settled(
        &mut self,
        watcher: &mut Option<DirWatcher>,
        last_seen: &mut Fingerprint,
        stop: &CancellationToken,
    ) -> WatchSet {
        let watched = self.rewatch(watcher, last_seen).await;
        let now = fingerprint(&watched.files).await;
        let changed: Vec<PathBuf> = now
            .iter()
            .filter(|(file, hash)| last_seen.get(*file) != Some(*hash))
            .map(|(file, _)| file.clone())
            .collect();
        if changed.is_empty() {
            tracing::debug!("watched files were touched but their content is the same: nothing to reload");
            return watched;
        }
        *last_seen = now;
        let _ = self.reload(Trigger::Files(changed), last_seen, stop).await;
        self.rewatch(watcher, last_seen).await
    }

    /// Recompute what to watch (files come and go with the config, symlinks
    /// get new targets) and hash the files that are new to the set.
    async fn rewatch(&self, watcher: &mut Option<DirWatcher>, last_seen: &mut Fingerprint) -> WatchSet {
        let watched = self.watch_set();
        if let Some(watcher) = watcher {
            watcher.update(&watched.dirs);
        }
        let new: BTreeSet<PathBuf> = watched.files.iter().filter(|f| !last_seen.contains_key(*f)).cloned().collect();
        if !new.is_empty() {
            last_seen.extend(fingerprint(&new).await);
        }
        last_seen.retain(|file, _| watched.files.contains(file));
        watched
    }

    fn watch_set(&self) -> WatchSet {
        let mut files = files_of(&self.config);
        files.extend(self.attempted.iter().cloned());
        WatchSet::new(files)
    }

    /// One reload attempt: load, validate, swap, and record the result.
    async fn reload(
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Every file a config depends on, as absolute paths.
fn files_of(config: &Config) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::from([config.source.clone()]);
    for plugin in config.plugins.values() {
        if let crate::config::PluginSource::File(path) = &plugin.source {
            files.insert(path.clone());
        }
    }
    for listener in &config.listeners {
        for certificate in &listener.certificates {
            files.insert(certificate.cert.clone());
            files.insert(certificate.key.clone());
        }
        // The tenant directory (its listing: tenants added, removed) and each tenant's files.
        files.extend(listener.tenants.iter().flat_map(|dir| crate::tenant::load::watched_files(dir)));
    }
    files.into_iter().map(|file| std::path::absolute(&file).unwrap_or(file)).collect()
}

/// The files a config file names, read loosely from its TOML (no
/// validation), so a config that does not load yet still gets the files it
/// names watched: when the missing or broken one is fixed, that is noticed.
fn files_named_in(path: &Path) -> BTreeSet<PathBuf> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files = BTreeSet::from([path.to_path_buf()]);
    let table: Option<toml::Table> = std::fs::read_to_string(path).ok().and_then(|text| toml::from_str(&text).ok());
    if let Some(table) = table {
        let plugins = table.get("plugins").and_then(|p| p.as_table()).into_iter().flat_map(|p| p.values());
        for file in plugins.filter_map(|plugin| plugin.get("file")?.as_str()) {
            files.insert(base.join(file));
        }
        let listeners = table.get("listeners").and_then(|l| l.as_array()).into_iter().flatten();
        let certificates = listeners.filter_map(|l| l.get("certificates")?.as_array()).flatten();
        for certificate in certificates {
            for key in ["cert", "key"] {
                if let Some(file) = certificate.get(key).and_then(|f| f.as_str()) {
                    files.insert(base.join(file));
                }
            }
        }
    }
    files.into_iter().map(|file| std::path::absolute(&file).unwrap_or(file)).collect()
}

/// The content hash of each file (`None`: it cannot be read).
type Fingerprint = BTreeMap<PathBuf, Option<[u8; 32]>>;

async fn fingerprint(files: &BTreeSet<PathBuf>) -> Fingerprint {
    let files = files.clone();
    tokio::task::spawn_blocking(move || hash_files(&files)).await.unwrap_or_default()
}

fn hash_files(files: &BTreeSet<PathBuf>) -> Fingerprint {
    files.iter().map(|file| (file.clone(), read_or_list(file).map(|bytes| Sha256::digest(&bytes).into()))).collect()
}

/// A file's bytes, or a directory's sorted entry names (a watched tenant directory).
fn read_or_list(path: &Path) -> Option<Vec<u8>> {
    if !path.is_dir() {
        return std::fs::read(path).ok();
    }
    let mut names: Vec<_> = std::fs::read_dir(path).ok()?.filter_map(|e| Some(e.ok()?.file_name())).collect();
    names.sort();
    Some(names.iter().flat_map(|name| [name.as_encoded_bytes(), b"\0"].concat()).collect())
}

/// The content of the files `config` depends on, as it is before the first
/// snapshot is built from them: the reloader's starting point, so that a
/// change made before it starts watching is still noticed.
#[derive(Default)]
pub(crate) struct Baseline(Fingerprint);

impl Baseline {
    /// Blocking: call it where the plugins are read anyway.
    pub(crate) fn of(config: &Config) -> Baseline {
        Baseline(hash_files(&files_of(config)))
    }
}

/// What to watch for a set of files, and which events concern them.
struct WatchSet {
    /// The files, as the config names them (made absolute): hashed.
    files: BTreeSet<PathBuf>,
    /// The files and, for symlinks, their targets: events naming them count.
    paths: BTreeSet<PathBuf>,
    /// The directories holding all of those: watched.
    dirs: BTreeSet<PathBuf>,
}

impl WatchSet {
    fn new(files: BTreeSet<PathBuf>) -> WatchSet {
        let mut paths = files.clone();
        paths.extend(files.iter().filter_map(|file| std::fs::canonicalize(file).ok()));
        let mut dirs: BTreeSet<PathBuf> =
            paths.iter().filter_map(|path| path.parent().map(Path::to_path_buf)).collect();
        // A watched directory (a tenant directory) is watched itself, for its entries.
        dirs.extend(paths.iter().filter(|path| path.is_dir()).cloned());
        WatchSet { files, paths, dirs }
    }

    /// Whether an event may concern the watched files. Errors and events
    /// without paths (a queue overflow, say) count: the hash check sorts
    /// them out.
    fn is_relevant(&self, event: &notify::Result<notify::Event>, mut watcher: Option<&mut DirWatcher>) -> bool {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "file watcher error");
                return true;
            }
        };
        // Opening or reading a file (sluice's own reads among them) changes nothing.
        if matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write)) {
            return false;
        }
        if event.paths.is_empty() {
            return true;
        }
        let mut relevant = false;
        for path in &event.paths {
            if self.dirs.contains(path) {
                // A watched directory itself went or moved: watch it afresh when it is back.
                if let Some(watcher) = watcher.as_deref_mut()
                    && matches!(event.kind, EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)))
                {
                    watcher.forget(path);
                }
                relevant = true;
            }
            let kubernetes = path.file_name().is_some_and(|name| name.as_encoded_bytes().starts_with(b".."))
                && path.parent().is_some_and(|dir| self.dirs.contains(dir));
            let entry_of_watched_dir = path.parent().is_some_and(|dir| self.paths.contains(dir));
            relevant |= kubernetes || entry_of_watched_dir || self.paths.contains(path);
        }
        relevant
    }
}

/// A `notify` watcher over a set of directories (not recursive).
struct DirWatcher {
    watcher: RecommendedWatcher,
    watching: BTreeSet<PathBuf>,
}

impl DirWatcher {
    fn new(events: mpsc::UnboundedSender<notify::Result<notify::Event>>) -> Option<DirWatcher> {
        let handler = move |event: notify::Result<notify::Event>| {
            let _ = events.send(event);
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => Some(DirWatcher { watcher, watching: BTreeSet::new() }),
            Err(error) => {
                tracing::warn!(%error, "cannot watch files; reload with SIGHUP instead");
                None
            }
        }
    }

    fn update(&mut self, dirs: &BTreeSet<PathBuf>) {
        for gone in self.watching.difference(dirs) {
            let _ = self.watcher.unwatch(gone);
        }
        self.watching.retain(|dir| dirs.contains(dir));
        for dir in dirs {
            if self.watching.contains(dir) {
                continue;
            }
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching for changes");
                    self.watching.insert(dir.clone());
                }
                Err(error) => tracing::warn!(dir = %dir.display(), %error, "cannot watch for changes"),
            }
        }
    }

    /// The directory is gone (or moved): watch it again at the next update.
    fn forget(&mut self, dir: &Path) {
        if self.watching.remove(dir) {
            let _ = self.watcher.unwatch(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, Event, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Result<Event> {
        Ok(paths.iter().fold(Event::new(kind), |event, path| event.add_path(PathBuf::from(path))))
    }

    #[test]
    fn events_count_for_watched_files_kubernetes_entries_and_writes_only() {
        let set = WatchSet::new(BTreeSet::from([PathBuf::from("/nonexistent/etc/sluice.toml")]));
        assert_eq!(set.dirs, BTreeSet::from([PathBuf::from("/nonexistent/etc")]));
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(set.is_relevant(&event(write, &["/nonexistent/etc/sluice.toml"]), None));
        assert!(!set.is_relevant(&event(write, &["/nonexistent/etc/other.toml"]), None));
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(set.is_relevant(&event(rename, &["/nonexistent/etc/.x.tmp", "/nonexistent/etc/sluice.toml"]), None));
        let create = EventKind::Create(CreateKind::Any);
        assert!(set.is_relevant(&event(create, &["/nonexistent/etc/..data_tmp"]), None), "Kubernetes swap");
        assert!(!set.is_relevant(&event(create, &["/elsewhere/..data"]), None));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        assert!(!set.is_relevant(&event(open, &["/nonexistent/etc/sluice.toml"]), None), "reads are not changes");
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(set.is_relevant(&event(closed, &["/nonexistent/etc/sluice.toml"]), None));
        assert!(set.is_relevant(&event(EventKind::Other, &[]), None), "an overflow: look");
    }

    #[test]
    fn a_watched_directory_counts_its_new_entries_and_hashes_its_listing() {
        let dir = std::env::temp_dir().join(format!("sluice-reload-dir-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let set = WatchSet::new(BTreeSet::from([dir.clone()]));
        assert!(set.dirs.contains(&dir), "the directory itself is watched");
        let create = EventKind::Create(CreateKind::Any);
        let new_file = dir.join("new-tenant.toml");
        assert!(set.is_relevant(&event(create, &[new_file.to_str().unwrap()]), None));
        let before = read_or_list(&dir);
        std::fs::write(&new_file, "").unwrap();
        let after = read_or_list(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(before.is_some() && before != after, "adding a file changes the directory's hash");
    }

    #[test]
    fn a_config_that_does_not_validate_still_names_its_files() {
        let dir = std::env::temp_dir().join(format!("sluice-reload-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sluice.toml");
        std::fs::write(
            &config,
            "[[listeners]]\nname = 1\n[[listeners.certificates]]\ncert = \"tls/a.crt\"\nkey = \"tls/a.key\"\n\
             [plugins.route]\nfile = \"plugins/route.wasm\"\nunknown = true\n",
        )
        .unwrap();
        let named = files_named_in(&config);
        let _ = std::fs::remove_dir_all(&dir);
        let expected: BTreeSet<PathBuf> =
            [config.clone(), dir.join("tls/a.crt"), dir.join("tls/a.key"), dir.join("plugins/route.wasm")].into();
        assert_eq!(named, expected);
    }
}
