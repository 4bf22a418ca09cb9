//! A sniff plugin that leaks, for sluice's instance-recycling tests.
//!
//! Every call leaks 64 KiB (allocated, touched, never freed), like an
//! interpreter that grows a little with each request, and counts the calls
//! its instance has served. It forwards to a backend named `calls-N`, N being
//! that count, when the head is `COUNT`, and to the listener's default backend
//! otherwise.
//!
//! Built against sluice:plugin@0.1.0 on purpose: it proves that old
//! components keep loading (no manifest: every header, backends unchecked,
//! which its `calls-N` answers rely on).
//!
//! Settings `{"init": "trap"}` make `init` trap, `{"init": "loop"}` make it
//! loop until its CPU budget runs out.

wit_bindgen::generate!({ world: "sniffer", path: "../../../wit/deps-0.1.0" });

use exports::sluice::plugin::setup;
use exports::sluice::plugin::sniff::{self, Connection, Verdict};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes leaked per call.
const LEAK: usize = 64 << 10;

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Plugin;

impl setup::Guest for Plugin {
    fn init(settings: String) -> Result<(), String> {
        if settings.contains(r#""init":"trap""#) {
            core::arch::wasm32::unreachable();
        }
        if settings.contains(r#""init":"loop""#) {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Ok(())
    }
}

impl sniff::Guest for Plugin {
    fn classify(_conn: Connection, head: Vec<u8>, _complete: bool) -> Verdict {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        if head.is_empty() {
            return Verdict::NeedMore; // the load-time probe
        }
        std::hint::black_box(Vec::leak(vec![1u8; LEAK]));
        if head.starts_with(b"COUNT") { Verdict::Forward(format!("calls-{calls}")) } else { Verdict::ForwardDefault }
    }
}

export!(Plugin);
