//! A sniff plugin that uses WASI through Rust's std, for sluice's tests of
//! the virtual WASI plugins get. The first bytes choose what it does:
//!
//! - `PRINT`  prints a line to stdout and one to stderr (without a final newline);
//! - `PANIC`  panics (Rust prints the message to stderr, then traps);
//! - `EXIT`   calls `std::process::exit(3)`;
//! - `SLEEP`  sleeps for a second (the plugin may not block);
//! - `FILE`   tries to read `/etc/hostname`; `ENV` lists the environment;
//!   `TIME` reads both clocks and the random source; each answers with
//!   `reject(<what it saw>)`;
//! - `NET`    tries to connect to 127.0.0.1:9;
//! - anything else is forwarded to the listener's default backend.

use sluice_plugin::{Conn, Manifest, Verdict};
use std::io::Write;

struct Plugin;

impl sluice_plugin::Sniffer for Plugin {
    type Settings = sluice_plugin::serde::de::IgnoredAny;

    fn init(_settings: Self::Settings) -> Result<Self, String> {
        Ok(Plugin)
    }

    fn manifest(&self) -> Manifest {
        Manifest::new()
    }

    fn classify(&self, _conn: &Conn, head: &[u8], _complete: bool) -> Verdict {
        if head.starts_with(b"PRINT") {
            println!("wasi-guest says hello on stdout");
            eprint!("wasi-guest says hello on stderr");
            let _ = std::io::stderr().flush();
        } else if head.starts_with(b"PANIC") {
            panic!("wasi-guest panicked on purpose");
        } else if head.starts_with(b"EXIT") {
            std::process::exit(3);
        } else if head.starts_with(b"SLEEP") {
            std::thread::sleep(std::time::Duration::from_secs(1));
        } else if head.starts_with(b"FILE") {
            return Verdict::Reject(match std::fs::read("/etc/hostname") {
                Ok(_) => "file read".to_string(),
                Err(e) => format!("no file: {e}"),
            });
        } else if head.starts_with(b"ENV") {
            let vars = std::env::vars().count();
            let args = std::env::args().count();
            return Verdict::Reject(format!("{vars} variables, {args} arguments"));
        } else if head.starts_with(b"TIME") {
            let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let start = std::time::Instant::now();
            let elapsed = start.elapsed();
            // RandomState keys come from the host's random source.
            let random = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 1u8);
            return Verdict::Reject(format!("epoch {} s, elapsed {elapsed:?}, random {random}", since_epoch.as_secs()));
        } else if head.starts_with(b"NET") {
            return Verdict::Reject(match std::net::TcpStream::connect("127.0.0.1:9") {
                Ok(_) => "connected".to_string(),
                Err(e) => format!("no network: {e}"),
            });
        }
        Verdict::ForwardDefault
    }
}

sluice_plugin::export_sniffer!(Plugin);
