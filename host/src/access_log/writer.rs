//! Access-log lines go to a file (or stdout) from a thread of their own: a
//! slow disk never stalls a request. Requests hand lines over through a
//! bounded queue; when it is full a line is dropped and counted
//! (`sluice_access_log_dropped_total`), never waited for.
//!
//! One writer per destination for the whole process: config versions that
//! name the same file share it, so a reload neither reopens the file nor
//! interleaves two writers. [`reopen_all`] (SIGUSR1) makes every writer close
//! and reopen its file by path: after logrotate renames the file, the next
//! lines go to a new file at the configured path.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Lines that may wait for the disk before new ones are dropped.
const QUEUE_LINES: usize = 64 * 1024;

enum Message {
    Line(String),
    /// Wakes the thread to reopen now (the flag says whether to).
    Reopen,
}

/// Where lines go: a file by path, or stdout.
pub struct Writer {
    path: Option<PathBuf>,
    queue: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

fn writers() -> &'static Mutex<Vec<Weak<Writer>>> {
    static WRITERS: OnceLock<Mutex<Vec<Weak<Writer>>>> = OnceLock::new();
    WRITERS.get_or_init(Mutex::default)
}

impl Writer {
    /// The writer for `path` (stdout when `None`): the running one if any,
    /// else a new one, after opening the file (creating it, appending).
    pub fn open(path: Option<&Path>) -> io::Result<Arc<Writer>> {
        let mut writers = writers().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        writers.retain(|writer| writer.strong_count() > 0);
        if let Some(running) = writers.iter().filter_map(Weak::upgrade).find(|w| w.path.as_deref() == path) {
            return Ok(running);
        }
        let out: Box<dyn Write + Send> = match path {
            Some(path) => Box::new(open_append(path)?),
            None => Box::new(io::stdout()),
        };
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let reopen = Arc::new(AtomicBool::new(false));
        let thread = WriterThread { path: path.map(Path::to_path_buf), reopen: reopen.clone() };
        std::thread::Builder::new().name("sluice-access-log".into()).spawn(move || thread.run(lines, out))?;
        let dropped = crate::metrics::counter("sluice_access_log_dropped_total", Vec::new());
        let writer = Arc::new(Writer { path: path.map(Path::to_path_buf), queue, reopen, dropped });
        writers.push(Arc::downgrade(&writer));
        Ok(writer)
    }

    /// Queue a line; drop it (counted) if the writer is too far behind.
    pub fn write(&self, line: String) {
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn reopen(&self) {
        if self.path.is_some() {
            self.reopen.store(true, Ordering::Relaxed);
            // A wake-up; if the queue is full the flag is seen at the next line.
            let _ = self.queue.try_send(Message::Reopen);
        }
    }
}

/// Close and reopen every access-log file (SIGUSR1, after log rotation).
pub fn reopen_all() {
    let writers = writers().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for writer in writers.iter().filter_map(Weak::upgrade) {
        writer.reopen();
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct WriterThread {
    path: Option<PathBuf>,
    reopen: Arc<AtomicBool>,
}

impl WriterThread {
    /// Write lines until every sender is gone, flushing whenever the queue
    /// runs empty (so lines reach the file promptly, in few writes).
    fn run(self, lines: Receiver<Message>, out: Box<dyn Write + Send>) {
        let mut out = BufWriter::with_capacity(64 << 10, out);
        let mut failing = false;
        loop {
            let message = match lines.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) => {
                    self.report(out.flush(), &mut failing);
                    match lines.recv() {
                        Ok(message) => message,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            if self.reopen.swap(false, Ordering::Relaxed)
                && let Some(path) = &self.path
            {
                self.report(out.flush(), &mut failing);
                match open_append(path) {
                    Ok(file) => {
                        out = BufWriter::with_capacity(64 << 10, Box::new(file) as Box<dyn Write + Send>);
                        tracing::info!(path = %path.display(), "access log reopened");
                    }
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "cannot reopen the access log; still writing to the old file")
                    }
                }
            }
            if let Message::Line(line) = message {
                self.report(out.write_all(line.as_bytes()), &mut failing);
            }
        }
        let _ = out.flush();
    }

    /// Log the first error of a run of failures, and the recovery.
    fn report(&self, result: io::Result<()>, failing: &mut bool) {
        let path = || self.path.as_deref().map_or("stdout".into(), |p| p.display().to_string());
        match result {
            Err(e) if !*failing => {
                *failing = true;
                tracing::error!(path = %path(), error = %e, "writing the access log failed; lines are lost until it works again");
            }
            Ok(()) if *failing => {
                *failing = false;
                tracing::info!(path = %path(), "writing the access log works again");
            }
            _ => {}
        }
    }
}
