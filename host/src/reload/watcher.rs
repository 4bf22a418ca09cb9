//! Waiting for changes: the reloader's loop over file events and requests, debouncing, and the `notify` watcher.

use super::files::{Fingerprint, files_of, fingerprint};
use super::{DEBOUNCE, MAX_DELAY, Reloader, Trigger};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

impl Reloader {
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

    pub(super) fn watch_set(&self) -> WatchSet {
        let mut files = files_of(&self.config);
        files.extend(self.attempted.iter().cloned());
        WatchSet::new(files)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What to watch for a set of files, and which events concern them.
pub(super) struct WatchSet {
    /// The files, as the config names them (made absolute): hashed.
    pub(super) files: BTreeSet<PathBuf>,
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
    use super::super::files::read_or_list;
    use super::*;
    use notify::event::{CreateKind, DataChange, Event, RenameMode};

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
}
