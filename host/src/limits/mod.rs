//! Connection limits beyond the global caps (docs/LIMITS.md):
//!
//! - [`fd_budget`]: raise the descriptor limit at start, derive the default
//!   `max-connections` from it, warn when a configured limit cannot fit.
//! - [`per_client`]: per-client-address caps and rates on each listener.
//! - [`memory`]: return memory freed after a flood to the system.
//! - [`Throttled`]: refusals are logged at most once per interval, so a
//!   flood cannot flood the log too.

pub mod fd_budget;
pub mod memory;
pub mod per_client;

use crate::http::{ProxyBody, error_response};
use crate::state::Snapshot;
use http::{HeaderValue, Response, StatusCode, header};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one log line per this interval for each kind of refusal.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Count a connection refused by a limit (`sluice_connections_refused_total`).
pub fn count_refusal(limit: &'static str) {
    crate::metrics::count("sluice_connections_refused_total", vec![("limit", limit.to_string())], 1);
}

/// The answer to an HTTP request over its client's rate.
pub fn too_many_requests(retry_after: Duration) -> Response<ProxyBody> {
    let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "too many requests from your address");
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

/// A reload keeps the per-client state of the listeners it keeps, so open
/// connections stay counted. `fresh` was just built and is not shared yet.
pub fn carry_over(fresh: &mut Snapshot, previous: &Snapshot) {
    for (name, plan) in fresh.listeners.iter_mut() {
        if let (Some(plan), Some(old)) = (Arc::get_mut(plan), previous.listeners.get(name)) {
            plan.per_client.continue_from(&old.per_client);
        }
    }
}

/// Lets a log line through at most once per [`LOG_INTERVAL`], and counts the ones held back.
pub struct Throttled {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttled {
    pub const fn new() -> Throttled {
        Throttled { last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    pub fn ready(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| at.elapsed() < LOG_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(Instant::now());
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl Default for Throttled {
    fn default() -> Self {
        Self::new()
    }
}
