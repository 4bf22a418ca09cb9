//! Shared harness of the live-reload tests: a proxy started from a config
//! file, temporary directories, the four ways deployments replace a file, and
//! waiting for a change to take effect.
#![allow(dead_code)] // each reload test file uses a different part of the harness

pub mod load;

use sluice::reload::{ReloadHandle, ReloadStatus};
use sluice::{App, Config, Drained};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How soon after a write its new behaviour must be live.
pub const IN_EFFECT_WITHIN: Duration = Duration::from_millis(500);
/// Replacements per method.
pub const REPLACEMENTS: usize = 20;

// Harness: a proxy started from a config file, temporary directories, the
// four ways of replacing a file.

/// A running proxy started from a config file, with its reload handle.
pub struct Proxy {
    pub reload: ReloadHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Drained>,
}

impl Proxy {
    pub async fn start(config: &Path, watch: bool) -> Proxy {
        let config = Config::load(config).unwrap_or_else(|e| panic!("{e}"));
        let app = App::bind(config).await.unwrap_or_else(|e| panic!("proxy failed to start: {e}"));
        let reload = app.reload_handle();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.with_grace(Duration::from_secs(5)).with_watch(watch).run(async {
            let _ = stopped.await;
        }));
        Proxy { reload, stop: Some(stop), task }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.reload.local_addr(listener).unwrap_or_else(|| panic!("no listener `{listener}`"))
    }

    pub async fn stop(mut self) -> Drained {
        let _ = self.stop.take().expect("stopped once").send(());
        self.task.await.expect("proxy task")
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sluice-reload-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ways deployments replace a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Truncate and write in place, in three partial writes 30 ms apart.
    InPlace,
    /// Write a temporary file next to it, then rename it over.
    Rename,
    /// Delete it, then create it again.
    Recreate,
    /// A Kubernetes ConfigMap/Secret volume: `name -> ..data/name`, and
    /// `..data -> ..<version>` swapped atomically by renaming a new symlink over it.
    Kubernetes,
}

pub const METHODS: [Method; 4] = [Method::InPlace, Method::Rename, Method::Recreate, Method::Kubernetes];

/// Replaces `target` with `content` by `method`; returns when the
/// replacement is complete (the moment the new behaviour is measured from).
pub struct Replacer {
    target: PathBuf,
    /// The Kubernetes layout's current version directory, once set up.
    kubernetes: Option<(PathBuf, u32)>,
}

impl Replacer {
    pub fn new(target: PathBuf) -> Replacer {
        Replacer { target, kubernetes: None }
    }

    fn dir(&self) -> PathBuf {
        self.target.parent().unwrap().to_path_buf()
    }

    fn name(&self) -> String {
        self.target.file_name().unwrap().to_string_lossy().into_owned()
    }

    pub async fn replace(&mut self, method: Method, content: &[u8]) -> Instant {
        match method {
            Method::InPlace => {
                let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(&self.target).unwrap();
                let third = content.len().div_ceil(3);
                for (i, chunk) in content.chunks(third).enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                    file.write_all(chunk).unwrap();
                    file.flush().unwrap();
                }
            }
            Method::Rename => {
                let temp = self.dir().join(format!(".{}.tmp", self.name()));
                std::fs::write(&temp, content).unwrap();
                std::fs::rename(&temp, &self.target).unwrap();
            }
            Method::Recreate => {
                std::fs::remove_file(&self.target).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
                std::fs::write(&self.target, content).unwrap();
            }
            Method::Kubernetes => {
                if self.kubernetes.is_none() {
                    self.make_kubernetes_layout();
                }
                let (old, n) = self.kubernetes.take().unwrap();
                let version = self.dir().join(format!("..2026_01_01_00_00_00.{:09}", n + 1));
                std::fs::create_dir(&version).unwrap();
                std::fs::write(version.join(self.name()), content).unwrap();
                let data_tmp = self.dir().join("..data_tmp");
                std::os::unix::fs::symlink(version.file_name().unwrap(), &data_tmp).unwrap();
                std::fs::rename(&data_tmp, self.dir().join("..data")).unwrap();
                let done = Instant::now();
                std::fs::remove_dir_all(&old).unwrap();
                self.kubernetes = Some((version, n + 1));
                return done;
            }
        }
        Instant::now()
    }

    /// Turn the plain file into the Kubernetes layout, same content (so no
    /// reload is due).
    fn make_kubernetes_layout(&mut self) {
        let version = self.dir().join("..2026_01_01_00_00_00.000000000");
        std::fs::create_dir(&version).unwrap();
        std::fs::copy(&self.target, version.join(self.name())).unwrap();
        std::os::unix::fs::symlink(version.file_name().unwrap(), self.dir().join("..data")).unwrap();
        let link = self.dir().join(format!(".{}.link", self.name()));
        std::os::unix::fs::symlink(Path::new("..data").join(self.name()), &link).unwrap();
        std::fs::rename(&link, &self.target).unwrap();
        self.kubernetes = Some((version, 0));
    }
}

/// Poll `probe` (each call a new connection) until it answers `want`;
/// panic if that takes longer than [`IN_EFFECT_WITHIN`] from `since`.
/// Returns how long it took.
pub async fn in_effect<F, Fut>(since: Instant, want: &str, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = String>,
{
    loop {
        let seen = probe().await;
        let elapsed = since.elapsed();
        if seen == want {
            return elapsed;
        }
        assert!(elapsed < IN_EFFECT_WITHIN, "{what}: still {seen:?} {elapsed:?} after the write (want {want:?})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait (up to 5 s) until the reload status satisfies `done`.
pub async fn wait_status(reload: &ReloadHandle, what: &str, done: impl Fn(&ReloadStatus) -> bool) -> ReloadStatus {
    let mut status = reload.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| done(s))).await;
    match waited {
        Ok(Ok(status)) => status.clone(),
        _ => panic!("{what}: reload status is {:?}", reload.status()),
    }
}

/// Over `period`, every probe answers `want`.
pub async fn stays<F, Fut>(period: Duration, want: &str, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = String>,
{
    let until = Instant::now() + period;
    while Instant::now() < until {
        assert_eq!(probe().await, want, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    pub fn report(&self, what: &str) {
        let mut sorted = self.0.clone();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        let max = sorted.last().unwrap();
        println!("{what}: {} changes in effect after median {median:?}, max {max:?}", sorted.len());
    }
}
