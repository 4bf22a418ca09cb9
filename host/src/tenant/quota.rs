//! A tenant's connection and request-rate quotas, and their usage.
//!
//! - `max-connections`: a connection counts against the tenant from its
//!   first request for one of the tenant's names (with TLS, the SNI names
//!   the same tenant) until it closes; a request on a connection over the
//!   quota gets 503 (HTTP/1: and the connection is closed; HTTP/2: the
//!   connection stays, and a later request takes a place once one is free).
//! - `requests-per-second` / `requests-burst`: a token bucket (governor's
//!   GCRA) per tenant; beyond it, 429 with `Retry-After`.
//!
//! Each refusal is counted in `sluice_tenant_quota_exceeded_total{tenant,
//! quota}` (see [`super::metrics`]); the fuel and memory quotas are the
//! tenant plugin's limits, counted there when a decision breaks them.

use crate::config::Rate;
use crate::config::tenants::Quotas;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

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

/// A tenant's live quota state. A new version of the tenant (its file
/// changed) continues the previous one's: the connections already open
/// still count against the (new) `max-connections`, and an unchanged
/// request rate keeps its bucket, so a reload is no way around a quota.
pub struct QuotaState {
    max_connections: Option<usize>,
    /// Connections open now, shared by every version of the tenant.
    open: Arc<AtomicUsize>,
    rate: Option<Rate>,
    requests: Option<Arc<DefaultDirectRateLimiter>>,
    clock: DefaultClock,
    served: Arc<AtomicU64>,
}

impl QuotaState {
    /// The state of a tenant's new version: `previous` is its live version, if any.
    pub fn new(quotas: &Quotas, previous: Option<&QuotaState>) -> QuotaState {
        let requests = match previous {
            Some(previous) if previous.rate == quotas.requests => previous.requests.clone(),
            _ => quotas.requests.and_then(|rate| {
                let per_second = NonZeroU32::new(rate.per_second)?;
                let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
                Some(Arc::new(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))))
            }),
        };
        QuotaState {
            max_connections: quotas.max_connections,
            open: previous.map_or_else(Arc::default, |previous| previous.open.clone()),
            rate: quotas.requests,
            requests,
            clock: DefaultClock::default(),
            served: previous.map_or_else(Arc::default, |previous| previous.served.clone()),
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

    /// A place for one more connection, if the tenant is under its quota.
    fn open_connection(&self) -> Option<OpenConnection> {
        let admitted = self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| match self.max_connections {
            Some(max) if open >= max => None,
            _ => Some(open + 1),
        });
        admitted.ok().map(|_| OpenConnection(self.open.clone()))
    }

    pub fn usage_json(&self) -> serde_json::Value {
        serde_json::json!({
            "open_connections": self.open.load(Ordering::Relaxed),
            "requests_admitted": self.served.load(Ordering::Relaxed),
        })
    }
}

/// One connection counted against a tenant; given back on drop.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The tenants one connection counts against (plain HTTP keep-alive may
/// carry requests for several); their places are given back when it closes.
#[derive(Default)]
pub struct ConnSlot {
    held: Mutex<Vec<(Arc<str>, OpenConnection)>>,
}

impl ConnSlot {
    /// Count this connection against `tenant` (once); `false` when the
    /// tenant has no place left.
    pub fn hold(&self, tenant: &str, quota: &QuotaState) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if held.iter().any(|(name, _)| &**name == tenant) {
            return true;
        }
        match quota.open_connection() {
            Some(open) => {
                held.push((Arc::from(tenant), open));
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_bucket_refuses_beyond_its_burst_and_says_when_to_retry() {
        let quota =
            QuotaState::new(&Quotas { max_connections: None, requests: Some(Rate { per_second: 1, burst: 3 }) }, None);
        assert!((0..3).all(|_| quota.request().is_ok()));
        let retry = quota.request().unwrap_err();
        assert!(retry > Duration::ZERO && retry <= Duration::from_secs(1), "{retry:?}");
        assert_eq!(quota.usage_json()["requests_admitted"], 3);
    }

    #[test]
    fn a_connection_counts_once_per_tenant_and_the_cap_holds() {
        let quota = QuotaState::new(&Quotas { max_connections: Some(1), requests: None }, None);
        let (first, second) = (ConnSlot::default(), ConnSlot::default());
        assert!(first.hold("a", &quota));
        assert!(first.hold("a", &quota), "the same connection again");
        assert!(!second.hold("a", &quota), "a second connection is over the quota");
        drop(first);
        assert!(second.hold("a", &quota), "the place came back when the first closed");
    }

    #[test]
    fn a_new_version_continues_the_open_connections_and_an_unchanged_rate() {
        let rate = Some(Rate { per_second: 1, burst: 2 });
        let old = QuotaState::new(&Quotas { max_connections: Some(2), requests: rate }, None);
        let (first, second) = (ConnSlot::default(), ConnSlot::default());
        assert!(first.hold("a", &old) && second.hold("a", &old));
        assert!(old.request().is_ok() && old.request().is_ok());
        let new = QuotaState::new(&Quotas { max_connections: Some(2), requests: rate }, Some(&old));
        assert!(!ConnSlot::default().hold("a", &new), "the two open connections still count");
        assert!(new.request().is_err(), "the burst was spent before the reload");
        assert_eq!(new.usage_json()["requests_admitted"], 2);
        let raised = QuotaState::new(&Quotas { max_connections: Some(3), requests: None }, Some(&new));
        let third = ConnSlot::default();
        assert!(third.hold("a", &raised));
        assert_eq!(raised.usage_json()["open_connections"], 3);
        drop((first, second, third));
        assert_eq!(raised.usage_json()["open_connections"], 0);
    }
}
