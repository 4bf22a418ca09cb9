//! The proxy's log, captured in the test process: a global `tracing`
//! subscriber writing into memory, so a test can check that a line (a
//! plugin's stdout, say) reached the log. Tests in one binary share it: look
//! for lines tagged with a plugin name only that test uses.

use std::io::Write;
use std::sync::{Mutex, Once};

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Start capturing (once per test binary).
pub fn install() {
    INSTALL.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(|| Capture)
            .init();
    });
}

/// Everything logged so far.
pub fn text() -> String {
    assert!(INSTALL.is_completed(), "call log_capture::install() first");
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

/// The log lines so far that contain every one of `words`.
pub fn lines_with(words: &[&str]) -> Vec<String> {
    assert!(INSTALL.is_completed(), "call log_capture::install() first");
    let log = LOG.lock().unwrap();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|line| words.iter().all(|w| line.contains(w)))
        .map(String::from)
        .collect()
}
