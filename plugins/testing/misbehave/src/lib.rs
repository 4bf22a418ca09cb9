//! A sniff plugin that misbehaves on request, for sluice's sandbox tests.
//!
//! The first bytes of the connection choose the behaviour:
//! - `TRAP`  executes `unreachable` (a trap);
//! - `LOOP`  loops forever (must be stopped by the CPU budget);
//! - `HOG`   allocates and touches 1 GiB (must hit the memory cap);
//! - `SPIN`  does bounded work that stays inside the default CPU budget;
//! - `ALLOC` allocates 1 MiB, well inside the default memory cap;
//! - anything else is forwarded to the listener's default backend.
//!
//! Settings `{"fail-init": true}` make `init` fail.

use sluice_plugin::{Conn, Level, Manifest, Verdict};
use std::hint::black_box;

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Settings {
    #[serde(default)]
    fail_init: bool,
}

struct Plugin;

impl sluice_plugin::Sniffer for Plugin {
    type Settings = Settings;

    fn init(settings: Settings) -> Result<Self, String> {
        if settings.fail_init {
            return Err("refusing to start: fail-init is set".to_string());
        }
        Ok(Plugin)
    }

    fn manifest(&self) -> Manifest {
        Manifest::new()
    }

    fn classify(&self, _conn: &Conn, head: &[u8], _complete: bool) -> Verdict {
        if head.starts_with(b"TRAP") {
            core::arch::wasm32::unreachable();
        } else if head.starts_with(b"LOOP") {
            let mut n: u64 = 0;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        } else if head.starts_with(b"HOG") {
            let hog = vec![1u8; 1 << 30];
            black_box(&hog);
        } else if head.starts_with(b"SPIN") {
            let mut n: u64 = 0;
            for i in 0..10_000u64 {
                n = black_box(n.wrapping_add(i));
            }
            black_box(n);
        } else if head.starts_with(b"ALLOC") {
            let buf = vec![1u8; 1 << 20];
            black_box(&buf);
        } else if head.is_empty() {
            return Verdict::NeedMore;
        }
        sluice_plugin::log(Level::Debug, "misbehave: behaving");
        Verdict::ForwardDefault
    }
}

sluice_plugin::export_sniffer!(Plugin);
