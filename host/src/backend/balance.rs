//! The order in which a request tries a backend's servers.
//!
//! - **Affinity key** (from the route plugin or the backend's `hash-key`):
//!   weighted rendezvous hashing. Every server gets a score from a hash of
//!   the key and its address, scaled by its weight; the highest wins. Two
//!   sluice instances with the same servers pick the same server for a key
//!   with no shared state, and losing a server only moves that server's keys.
//! - **Round-robin**: smooth weighted round-robin; a server of weight 3 gets
//!   three of every four requests next to one of weight 1, interleaved rather
//!   than in bursts. Equal weights give plain round-robin.
//! - **Least-connections**: fewest active connections per unit of weight
//!   first; ties go round-robin.
//!
//! Down servers are left out; the pinned server (sticky cookie) goes first.

use super::{Backend, Server};
use crate::config::Balance;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Backend {
    /// The servers to try, best first. An empty order means every server is down.
    pub fn server_order(&self, affinity: Option<&str>, pinned: Option<&str>) -> Vec<Arc<Server>> {
        let mut up: Vec<Arc<Server>> = self.servers.load().iter().filter(|s| s.is_up()).cloned().collect();
        if up.is_empty() {
            return up;
        }
        match (affinity, self.config.balance) {
            (Some(key), _) => {
                up.sort_by(|a, b| rendezvous_score(key, b).total_cmp(&rendezvous_score(key, a)));
            }
            (None, Balance::RoundRobin) => self.smooth_weighted_round_robin(&mut up),
            (None, Balance::LeastConnections) => {
                let first = self.next.fetch_add(1, Ordering::Relaxed) % up.len();
                up.rotate_left(first); // ties go round-robin (the sort is stable)
                // Active connections per unit of weight, scaled so integer division keeps precision.
                up.sort_by_key(|s| s.active() as u64 * 1_000_000 / u64::from(s.weight));
            }
        }
        if let Some(pinned) = pinned
            && let Some(at) = up.iter().position(|server| server.cookie_id == pinned)
        {
            let server = up.remove(at);
            up.insert(0, server);
        }
        up
    }

    /// The server a sticky cookie value names, if it is one of ours.
    pub fn server_by_cookie(&self, value: &str) -> Option<Arc<Server>> {
        self.servers.load().iter().find(|server| server.cookie_id == value).cloned()
    }

    /// Each pick adds every server's weight to its running weight, takes the
    /// largest, and subtracts the total from the winner (nginx's smooth WRR).
    /// The others follow in list order, for failover.
    fn smooth_weighted_round_robin(&self, up: &mut [Arc<Server>]) {
        let _step = self.round_robin.lock().expect("round-robin lock");
        let total: i64 = up.iter().map(|s| i64::from(s.weight)).sum();
        let mut best = 0;
        let mut best_weight = i64::MIN;
        for (at, server) in up.iter().enumerate() {
            let weight =
                server.current_weight.fetch_add(i64::from(server.weight), Ordering::Relaxed) + i64::from(server.weight);
            if weight > best_weight {
                (best, best_weight) = (at, weight);
            }
        }
        up[best].current_weight.fetch_sub(total, Ordering::Relaxed);
        up.rotate_left(best);
    }
}

/// Weighted rendezvous score: `weight / -ln(u)` with `u` in (0, 1) from a
/// hash of the key and the server's address. The same in every process
/// (SHA-256); with equal weights the order is the hash order.
fn rendezvous_score(key: &str, server: &Server) -> f64 {
    let digest =
        Sha256::new().chain_update(key.as_bytes()).chain_update([0]).chain_update(server.addr.as_bytes()).finalize();
    let bits = u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"));
    let unit = ((bits >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(server.weight) / -unit.ln()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::{BackendConfig, ServerSpec};
    use crate::names::BackendName;
    use std::collections::HashMap;
    use std::time::Duration;

    fn backend(balance: Balance, weights: &[u32]) -> Backend {
        Backend::new(BackendConfig { balance, ..config(weights) })
    }

    /// A backend config with one server per weight, on 127.0.0.1:9001 and up.
    pub fn config(weights: &[u32]) -> BackendConfig {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| ServerSpec {
                address: format!("127.0.0.1:{}", 9001 + i),
                weight,
                max_connections: None,
            })
            .collect();
        BackendConfig {
            name: BackendName::new("test"),
            servers,
            resolve_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            retries: 3,
            retry_idempotent: false,
            queue: 10,
            queue_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(60),
            forwarded: Default::default(),
            balance: Balance::RoundRobin,
            hash_key: None,
            sticky_cookie: None,
            health_check: None,
            proxy_protocol: None,
        }
    }

    fn first_picks(
        backend: &Backend,
        picks: usize,
        affinity: impl Fn(usize) -> Option<String>,
    ) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for i in 0..picks {
            let order = backend.server_order(affinity(i).as_deref(), None);
            *counts.entry(order[0].addr.clone()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn smooth_weighted_round_robin_follows_the_weights_and_interleaves() {
        let backend = backend(Balance::RoundRobin, &[3, 1, 1]);
        let picks: Vec<String> = (0..5).map(|_| backend.server_order(None, None)[0].addr.clone()).collect();
        // One full cycle: 3 + 1 + 1, the heavy server never three times in a row.
        assert_eq!(picks.iter().filter(|a| a.ends_with(":9001")).count(), 3, "{picks:?}");
        assert!(!picks.windows(3).any(|w| w.iter().all(|a| a.ends_with(":9001"))), "{picks:?}");
        let counts = first_picks(&backend, 500, |_| None);
        assert_eq!(counts["127.0.0.1:9001"], 300);
        assert_eq!(counts["127.0.0.1:9002"], 100);
        assert_eq!(counts["127.0.0.1:9003"], 100);
    }

    #[test]
    fn equal_weights_give_plain_round_robin_with_every_server_in_each_order() {
        let backend = backend(Balance::RoundRobin, &[1, 1, 1]);
        let orders: Vec<Vec<String>> =
            (0..3).map(|_| backend.server_order(None, None).iter().map(|s| s.addr.clone()).collect()).collect();
        let firsts: Vec<&str> = orders.iter().map(|o| o[0].as_str()).collect();
        assert_eq!(firsts, ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]);
        assert!(orders.iter().all(|order| order.len() == 3));
    }

    #[test]
    fn rendezvous_hashing_is_stable_and_weighted() {
        let one = backend(Balance::RoundRobin, &[1, 1, 1]);
        let other = backend(Balance::LeastConnections, &[1, 1, 1]);
        for key in ["alice", "bob", "carol", "10.1.2.3"] {
            let a: Vec<String> = one.server_order(Some(key), None).iter().map(|s| s.addr.clone()).collect();
            let b: Vec<String> = other.server_order(Some(key), None).iter().map(|s| s.addr.clone()).collect();
            assert_eq!(a, b, "two backends with the same servers agree on key {key}");
        }
        let weighted = backend(Balance::RoundRobin, &[4, 1]);
        let counts = first_picks(&weighted, 5000, |i| Some(format!("user-{i}")));
        let heavy = counts["127.0.0.1:9001"] as f64 / 5000.0;
        assert!((0.75..0.85).contains(&heavy), "weight 4 of 5 should take ~80% of keys, took {heavy}");
    }

    #[test]
    fn least_connections_weighs_active_connections_by_weight() {
        let backend = backend(Balance::LeastConnections, &[2, 1]);
        let servers = backend.servers();
        let _held: Vec<_> = [0, 0, 1].iter().map(|&i| servers[i].try_take_slot().unwrap()).collect();
        // 2 active / weight 2 = 1 per unit, 1 / 1 = 1: a tie, both get picked in turn.
        let counts = first_picks(&backend, 10, |_| None);
        assert_eq!(counts.len(), 2, "{counts:?}");
        let _more = servers[1].try_take_slot().unwrap();
        let counts = first_picks(&backend, 10, |_| None);
        assert_eq!(counts.get("127.0.0.1:9001"), Some(&10), "{counts:?}");
    }
}
