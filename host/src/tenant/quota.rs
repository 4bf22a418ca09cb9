//! A tenant's connection and request-rate quotas, and their usage.
//!
//! - `max-connections`: a connection counts against the tenant from its
//!   first request for one of the tenant's names (with TLS, the SNI names
//!   the same tenant) until it closes; a connection over the quota gets 503
//!   and is closed.
//! - `requests-per-second` / `requests-burst`: a token bucket (governor's
//!   GCRA) per tenant; beyond it, 429 with `Retry-After`.
//!
//! Each refusal is counted in `sluice_tenant_quota_exceeded_total{tenant,
//! quota}` (see [`super::metrics`]); the fuel and memory quotas are the
//! tenant plugin's limits, counted there when a decision breaks them.

use crate::config::tenants::Quotas;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which quota refused something; its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    Connections,
    Requests,
    /// The plugin ran out of fuel in a decision.
    Cpu,
    /// The plugin's instance went over its memory cap.
    Memory,
}

impl QuotaKind {
    pub fn label(self) -> &'static str {
        match self {
            QuotaKind::Connections => "connections",
            QuotaKind::Requests => "requests",
            QuotaKind::Cpu => "cpu",
            QuotaKind::Memory => "memory",
        }
    }
}

/// A tenant's live quota state.
pub struct QuotaState {
    max_connections: Option<usize>,
    connections: Arc<Semaphore>,
    requests: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
    served: AtomicU64,
}

impl QuotaState {
    pub fn new(quotas: &Quotas) -> QuotaState {
        let requests = quotas.requests.and_then(|rate| {
            let per_second = NonZeroU32::new(rate.per_second)?;
            let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
            Some(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)))
        });
        QuotaState {
            max_connections: quotas.max_connections,
            connections: Arc::new(Semaphore::new(quotas.max_connections.unwrap_or(Semaphore::MAX_PERMITS))),
            requests,
            clock: DefaultClock::default(),
            served: AtomicU64::new(0),
        }
    }

    /// One request: `Err(retry after)` when the tenant is over its rate.
    pub fn request(&self) -> Result<(), Duration> {
        if let Some(limiter) = &self.requests
            && let Err(not_until) = limiter.check()
        {
            return Err(not_until.wait_time_from(self.clock.now()));
        }
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn open_connections(&self) -> usize {
        match self.max_connections {
            Some(max) => max.saturating_sub(self.connections.available_permits()),
            None => Semaphore::MAX_PERMITS - self.connections.available_permits(),
        }
    }

    pub fn usage_json(&self) -> serde_json::Value {
        serde_json::json!({
            "open_connections": self.open_connections(),
            "requests_admitted": self.served.load(Ordering::Relaxed),
        })
    }
}

/// The tenants one connection counts against (plain HTTP keep-alive may
/// carry requests for several); their places are given back when it closes.
#[derive(Default)]
pub struct ConnSlot {
    held: Mutex<Vec<(Arc<str>, OwnedSemaphorePermit)>>,
}

impl ConnSlot {
    /// Count this connection against `tenant` (once); `false` when the
    /// tenant has no place left.
    pub fn hold(&self, tenant: &str, quota: &QuotaState) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if held.iter().any(|(name, _)| &**name == tenant) {
            return true;
        }
        match quota.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                held.push((Arc::from(tenant), permit));
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;

    #[test]
    fn the_request_bucket_refuses_beyond_its_burst_and_says_when_to_retry() {
        let quota =
            QuotaState::new(&Quotas { max_connections: None, requests: Some(Rate { per_second: 1, burst: 3 }) });
        assert!((0..3).all(|_| quota.request().is_ok()));
        let retry = quota.request().unwrap_err();
        assert!(retry > Duration::ZERO && retry <= Duration::from_secs(1), "{retry:?}");
        assert_eq!(quota.usage_json()["requests_admitted"], 3);
    }

    #[test]
    fn a_connection_counts_once_per_tenant_and_the_cap_holds() {
        let quota = QuotaState::new(&Quotas { max_connections: Some(1), requests: None });
        let (first, second) = (ConnSlot::default(), ConnSlot::default());
        assert!(first.hold("a", &quota));
        assert!(first.hold("a", &quota), "the same connection again");
        assert!(!second.hold("a", &quota), "a second connection is over the quota");
        drop(first);
        assert!(second.hold("a", &quota), "the place came back when the first closed");
    }
}
