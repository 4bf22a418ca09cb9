//! Per-client limits on one listener: open connections, new connections per
//! second and HTTP requests per second, keyed by the client's address or
//! its prefix (`ipv4-prefix`, `ipv6-prefix`), so one source cannot take the
//! whole connection budget.
//!
//! The state is bounded: the open-connection table only holds clients with a
//! connection open (at most `max-connections` of them), and the rate
//! limiters (governor's keyed GCRA) are pruned of idle keys every second;
//! if a spray of source addresses still fills one past [`MAX_KEYS`], it is
//! started afresh (the global limits still hold meanwhile).

use super::{Throttled, count_refusal};
use crate::config::{PerClientLimits, Rate};
use crate::names::ListenerName;
use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most keys one rate limiter holds before it is started afresh.
pub const MAX_KEYS: usize = 100_000;
/// Look after the rate limiters every this many checks.
const MAINTAIN_EVERY: u64 = 256;
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// A client as the limits count it: its address masked to the configured prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    network: IpAddr,
    prefix: u8,
}

impl ClientKey {
    pub fn new(ip: IpAddr, limits: &PerClientLimits) -> ClientKey {
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let prefix = limits.ipv4_prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                ClientKey { network: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)), prefix }
            }
            IpAddr::V6(v6) => {
                let prefix = limits.ipv6_prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                ClientKey { network: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)), prefix }
            }
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Which per-client limit refused a connection; also its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client has `max-connections` open already.
    Connections,
    /// The client opens connections faster than `new-connections-per-second`.
    NewConnectionRate,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "per-client-connections",
            Refusal::NewConnectionRate => "per-client-rate",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Connections => f.write_str("per-client limit: too many open connections"),
            Refusal::NewConnectionRate => f.write_str("per-client limit: too many new connections per second"),
        }
    }
}

type OpenCounts = Mutex<HashMap<ClientKey, u32>>;

/// One client connection counted as open until dropped.
pub struct ClientPermit {
    open: Arc<OpenCounts>,
    key: ClientKey,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The per-client state of one listener.
pub struct ClientLimiter {
    listener: ListenerName,
    limits: PerClientLimits,
    open: Arc<OpenCounts>,
    new_connections: Option<Arc<KeyedRate>>,
    http_requests: Option<Arc<KeyedRate>>,
}

impl ClientLimiter {
    pub fn new(listener: ListenerName, limits: PerClientLimits) -> ClientLimiter {
        ClientLimiter {
            listener,
            limits,
            open: Arc::default(),
            new_connections: limits.new_connections.map(|rate| Arc::new(KeyedRate::new(rate))),
            http_requests: limits.http_requests.map(|rate| Arc::new(KeyedRate::new(rate))),
        }
    }

    /// Keep `previous`'s state (a reload): open connections stay counted,
    /// and rate limiters whose rate did not change keep their history.
    pub fn continue_from(&mut self, previous: &ClientLimiter) {
        if (self.limits.ipv4_prefix, self.limits.ipv6_prefix)
            != (previous.limits.ipv4_prefix, previous.limits.ipv6_prefix)
        {
            return; // the keys mean something else now
        }
        self.open = previous.open.clone();
        if self.limits.new_connections == previous.limits.new_connections {
            self.new_connections = previous.new_connections.clone();
        }
        if self.limits.http_requests == previous.limits.http_requests {
            self.http_requests = previous.http_requests.clone();
        }
    }

    /// Admit a new connection from `ip`, or say which limit refuses it
    /// (counted and logged here). The permit counts it as open until dropped.
    pub fn admit(&self, ip: IpAddr) -> Result<Option<ClientPermit>, Refusal> {
        let key = ClientKey::new(ip, &self.limits);
        let result = self.try_admit(key);
        if let Err(refusal) = result {
            count_refusal(refusal.label());
            static LOG: Throttled = Throttled::new();
            if let Some(suppressed) = LOG.ready() {
                tracing::warn!(listener = %self.listener, client = %key, suppressed, "connection refused: {refusal}");
            }
        }
        result
    }

    fn try_admit(&self, key: ClientKey) -> Result<Option<ClientPermit>, Refusal> {
        let Some(max) = self.limits.max_connections else {
            return match &self.new_connections {
                Some(rate) if rate.check(&key).is_err() => Err(Refusal::NewConnectionRate),
                _ => Ok(None),
            };
        };
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.get(&key).copied().unwrap_or(0);
        if count >= max {
            return Err(Refusal::Connections);
        }
        if let Some(rate) = &self.new_connections
            && rate.check(&key).is_err()
        {
            return Err(Refusal::NewConnectionRate);
        }
        open.insert(key, count + 1);
        Ok(Some(ClientPermit { open: self.open.clone(), key }))
    }

    /// One HTTP request from `ip`: `Err` with how long until the client may
    /// send the next one when it is over its rate.
    pub fn check_request(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(rate) = &self.http_requests else { return Ok(()) };
        let key = ClientKey::new(ip, &self.limits);
        rate.check(&key).inspect_err(|_| {
            crate::metrics::count(
                "sluice_http_requests_refused_total",
                vec![("listener", self.listener.to_string()), ("limit", "per-client-rate".to_string())],
                1,
            );
            static LOG: Throttled = Throttled::new();
            if let Some(suppressed) = LOG.ready() {
                tracing::warn!(listener = %self.listener, client = %key, suppressed, "429: per-client request rate exceeded");
            }
        })
    }

    /// How many clients the state holds now (open-connection table and rate limiters), for tests.
    pub fn tracked(&self) -> (usize, usize, usize) {
        let open = self.open.lock().map_or(0, |open| open.len());
        let keys = |rate: &Option<Arc<KeyedRate>>| rate.as_ref().map_or(0, |rate| rate.limiter.load().len());
        (open, keys(&self.new_connections), keys(&self.http_requests))
    }
}

/// A keyed rate limiter that keeps itself small.
struct KeyedRate {
    quota: Quota,
    limiter: ArcSwap<DefaultKeyedRateLimiter<ClientKey>>,
    checks: AtomicU64,
    last_pruned: Mutex<Instant>,
}

impl KeyedRate {
    fn new(rate: Rate) -> KeyedRate {
        let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        KeyedRate {
            quota,
            limiter: ArcSwap::from_pointee(RateLimiter::keyed(quota)),
            checks: AtomicU64::new(0),
            last_pruned: Mutex::new(Instant::now()),
        }
    }

    /// Take one unit for `key`; `Err` with the wait until the next one.
    fn check(&self, key: &ClientKey) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(MAINTAIN_EVERY) {
            self.maintain();
        }
        let limiter = self.limiter.load();
        limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// Drop idle keys every second; start afresh if a spray of addresses overfilled it.
    fn maintain(&self) {
        let limiter = self.limiter.load();
        let overfull = limiter.len() > MAX_KEYS;
        {
            let mut last = self.last_pruned.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !overfull && last.elapsed() < PRUNE_INTERVAL {
                return;
            }
            *last = Instant::now();
        }
        limiter.retain_recent();
        limiter.shrink_to_fit();
        if limiter.len() > MAX_KEYS {
            static LOG: Throttled = Throttled::new();
            if let Some(suppressed) = LOG.ready() {
                tracing::warn!(
                    keys = limiter.len(),
                    suppressed,
                    "per-client rate limiter overfilled by many sources: started afresh"
                );
            }
            self.limiter.store(Arc::new(RateLimiter::keyed(self.quota)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: Option<u32>, new_connections: Option<Rate>) -> PerClientLimits {
        PerClientLimits { max_connections, new_connections, http_requests: None, ipv4_prefix: 24, ipv6_prefix: 64 }
    }

    #[test]
    fn keys_are_prefixes_and_mapped_ipv4_is_ipv4() {
        let limits = limits(None, None);
        let key = |ip: &str| ClientKey::new(ip.parse().unwrap(), &limits).to_string();
        assert_eq!(key("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(key("::ffff:203.0.113.77"), "203.0.113.0/24");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
    }

    #[test]
    fn open_connections_are_counted_per_client_and_released() {
        let limiter = ClientLimiter::new(ListenerName::new("t"), limits(Some(2), None));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.1.1".parse().unwrap();
        let first = limiter.admit(a).unwrap();
        let _second = limiter.admit(a).unwrap();
        assert_eq!(limiter.admit(a).err(), Some(Refusal::Connections));
        assert!(limiter.admit(b).is_ok(), "another /24 has its own share");
        drop(first);
        assert!(limiter.admit(a).is_ok());
    }

    #[test]
    fn a_spray_of_addresses_leaves_bounded_state() {
        let rate = Rate { per_second: 1_000, burst: 1 };
        let mut limits = limits(Some(1), Some(rate));
        limits.ipv4_prefix = 32;
        let limiter = ClientLimiter::new(ListenerName::new("t"), limits);
        for i in 0..(MAX_KEYS as u32 + 5_000) {
            drop(limiter.admit(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))));
        }
        let (open, keys, _) = limiter.tracked();
        assert_eq!(open, 0, "closed connections leave nothing behind");
        assert!(keys <= MAX_KEYS + MAINTAIN_EVERY as usize, "{keys} keys");
    }
}
