//! Give memory freed after a flood back to the system.
//!
//! glibc's malloc keeps freed memory in its arenas: after a flood of
//! connections ends, RSS stays at its peak (measured: 35 MiB at rest, 258 MiB
//! during 10,000 connections, still 258 MiB at rest afterwards; a
//! `malloc_trim(0)` from a debugger brought it to 66 MiB). So once enough
//! connections have ended and the open count has fallen to half its recent
//! high, sluice calls `malloc_trim(0)` (off the async workers). A steady load
//! never triggers it; a flood that ends does, at most once per sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the open-connection count is looked at.
const SAMPLE: Duration = Duration::from_secs(1);
/// Connections that must have ended since the last trim before another one.
const MIN_ENDED: u64 = 1_000;

static ENDED: AtomicU64 = AtomicU64::new(0);

/// Count a connection that ended (called by the accept loop).
pub fn connection_ended() {
    ENDED.fetch_add(1, Ordering::Relaxed);
}

/// Trim after floods until `stop`. `open` tracks the connection tasks.
pub async fn release_after_floods(open: TaskTracker, stop: CancellationToken) {
    let mut sample = tokio::time::interval(SAMPLE);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut high = 0;
    let mut ended_at_trim = ENDED.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = sample.tick() => {}
        }
        let now_open = open.len();
        high = high.max(now_open);
        let ended = ENDED.load(Ordering::Relaxed);
        if ended - ended_at_trim < MIN_ENDED || now_open > high / 2 {
            continue;
        }
        let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        tracing::debug!(
            open = now_open,
            high,
            ended = ended - ended_at_trim,
            released,
            "returned freed memory to the system"
        );
        crate::metrics::count("sluice_memory_trims_total", Vec::new(), 1);
        high = now_open;
        ended_at_trim = ended;
    }
}

/// `malloc_trim(0)`: true when memory was released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: malloc_trim takes a plain integer, touches only the allocator's
    // own state and is thread-safe (it locks each arena while trimming it).
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators (musl, other systems) have no `malloc_trim`.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
