//! Where a plugin's words go: its `host.log` calls and whatever it writes to
//! stdout and stderr end up in the proxy's log, tagged with the plugin's
//! name, one log line per text line, truncated and rate-limited so a chatty
//! or hostile plugin cannot flood the log.

use crate::names::PluginName;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Longest line a plugin may log; longer lines are cut and marked with `…`.
pub const MAX_LINE: usize = 1024;
/// Lines per second a plugin may log, sustained…
const LINES_PER_SECOND: f64 = 50.0;
/// …and in a burst.
const BURST_LINES: f64 = 200.0;
/// Lines kept by a capturing log (`sluice plugin test`).
const MAX_CAPTURED: usize = 1000;

/// Where a plugin's lines are written.
#[derive(Clone, Default)]
pub enum LogTarget {
    /// The proxy's log (`tracing`).
    #[default]
    Tracing,
    /// A list, for `sluice plugin test` to print.
    Capture(Arc<Mutex<Vec<String>>>),
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stdout,
    Stderr,
    /// The `host.log` import, with its level.
    Log(tracing::Level),
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Stdout => "stdout",
            Source::Stderr => "stderr",
            Source::Log(level) => match level {
                tracing::Level::TRACE => "trace",
                tracing::Level::DEBUG => "debug",
                tracing::Level::INFO => "info",
                tracing::Level::WARN => "warn",
                tracing::Level::ERROR => "error",
            },
        }
    }
}

/// One plugin version's log: shared by all its instances, so the rate limit
/// holds for the plugin as a whole.
pub struct PluginLog {
    plugin: PluginName,
    target: LogTarget,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

impl PluginLog {
    pub fn new(plugin: PluginName, target: LogTarget) -> Self {
        let bucket = Bucket { tokens: BURST_LINES, refilled: Instant::now(), dropped: 0 };
        Self { plugin, target, bucket: Mutex::new(bucket) }
    }

    /// Write one line (already cut to [`MAX_LINE`]), unless over the rate limit.
    pub fn line(&self, source: Source, line: &str) {
        let dropped = {
            let mut bucket = self.bucket.lock().expect("log bucket lock");
            let now = Instant::now();
            let refill = now.duration_since(bucket.refilled).as_secs_f64() * LINES_PER_SECOND;
            bucket.tokens = (bucket.tokens + refill).min(BURST_LINES);
            bucket.refilled = now;
            if bucket.tokens < 1.0 {
                bucket.dropped += 1;
                return;
            }
            bucket.tokens -= 1.0;
            std::mem::take(&mut bucket.dropped)
        };
        if dropped > 0 {
            let note = format!("({dropped} lines dropped: over {LINES_PER_SECOND} lines per second)");
            self.emit(Source::Log(tracing::Level::WARN), &note);
        }
        self.emit(source, line);
    }

    fn emit(&self, source: Source, line: &str) {
        let plugin = self.plugin.as_str();
        match &self.target {
            LogTarget::Tracing => match source {
                Source::Stdout => tracing::info!(plugin, stream = "stdout", "{line}"),
                Source::Stderr => tracing::warn!(plugin, stream = "stderr", "{line}"),
                Source::Log(tracing::Level::TRACE) => tracing::trace!(plugin, "{line}"),
                Source::Log(tracing::Level::DEBUG) => tracing::debug!(plugin, "{line}"),
                Source::Log(tracing::Level::INFO) => tracing::info!(plugin, "{line}"),
                Source::Log(tracing::Level::WARN) => tracing::warn!(plugin, "{line}"),
                Source::Log(tracing::Level::ERROR) => tracing::error!(plugin, "{line}"),
            },
            LogTarget::Capture(lines) => {
                let mut lines = lines.lock().expect("captured log lock");
                if lines.len() < MAX_CAPTURED {
                    lines.push(format!("[{}] {line}", source.label()));
                }
            }
        }
    }
}

/// `text` cut to at most [`MAX_LINE`] bytes on a character boundary.
pub fn truncate(text: &str) -> &str {
    let mut end = text.len().min(MAX_LINE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Collects one instance's stdout or stderr bytes into lines.
struct Lines {
    source: Source,
    log: Arc<PluginLog>,
    partial: Vec<u8>,
    /// The current line was longer than [`MAX_LINE`]; the rest is dropped.
    cut: bool,
}

impl Lines {
    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (chunk, ends_line) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], true),
                None => (bytes, false),
            };
            let room = MAX_LINE - self.partial.len();
            if chunk.len() > room {
                self.cut = true;
            }
            self.partial.extend_from_slice(&chunk[..chunk.len().min(room)]);
            bytes = &bytes[chunk.len() + usize::from(ends_line)..];
            if ends_line {
                self.finish_line();
            }
        }
    }

    fn finish_line(&mut self) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let text = String::from_utf8_lossy(&self.partial);
        let text = truncate(&text);
        if self.cut {
            self.log.line(self.source, &format!("{text}…"));
        } else {
            self.log.line(self.source, text);
        }
        self.partial.clear();
        self.cut = false;
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() || self.cut {
            self.finish_line();
        }
    }
}

/// A stdout or stderr stream of one instance: WASI's output-stream traits
/// over [`Lines`]. Always ready, never blocks.
#[derive(Clone)]
pub struct LogPipe(Arc<Mutex<Lines>>);

impl LogPipe {
    pub fn new(source: Source, log: Arc<PluginLog>) -> Self {
        Self(Arc::new(Mutex::new(Lines { source, log, partial: Vec::new(), cut: false })))
    }

    /// Log an unfinished last line: called after every call, so what a
    /// plugin wrote just before it trapped (a panic message) is not lost.
    pub fn flush_partial(&self) {
        self.0.lock().expect("log pipe lock").flush_partial();
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.0.lock().expect("log pipe lock").write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.lock().expect("log pipe lock").write(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured() -> (Arc<PluginLog>, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = PluginLog::new(PluginName::new("t"), LogTarget::Capture(lines.clone()));
        (Arc::new(log), lines)
    }

    #[test]
    fn bytes_become_lines_cut_at_the_limit() {
        let (log, lines) = captured();
        let pipe = LogPipe::new(Source::Stderr, log);
        let mut out = pipe.clone();
        OutputStream::write(&mut out, Bytes::from_static(b"one\r\ntw")).unwrap();
        OutputStream::write(&mut out, Bytes::from_static(b"o\nthree")).unwrap();
        assert_eq!(*lines.lock().unwrap(), ["[stderr] one", "[stderr] two"]);
        pipe.flush_partial();
        pipe.flush_partial(); // nothing left: no empty line
        OutputStream::write(&mut out, Bytes::from(vec![b'x'; MAX_LINE + 10])).unwrap();
        OutputStream::write(&mut out, Bytes::from_static(b"yyy\nz\n")).unwrap();
        let lines = lines.lock().unwrap();
        assert_eq!(lines[2], "[stderr] three");
        assert_eq!(lines[3], format!("[stderr] {}…", "x".repeat(MAX_LINE)));
        assert_eq!(lines[4], "[stderr] z");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn a_flood_is_cut_to_the_burst_then_counted() {
        let (log, lines) = captured();
        for i in 0..(BURST_LINES as usize + 50) {
            log.line(Source::Stdout, &format!("line {i}"));
        }
        assert_eq!(lines.lock().unwrap().len(), BURST_LINES as usize);
        // Once tokens come back, the next line says how many were dropped.
        log.bucket.lock().unwrap().tokens = 2.0;
        log.line(Source::Stdout, "after");
        let lines = lines.lock().unwrap();
        assert!(lines[BURST_LINES as usize].contains("lines dropped"), "{lines:?}");
        assert_eq!(lines.last().unwrap(), "[stdout] after");
    }
}
