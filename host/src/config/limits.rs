//! The config keys of the connection limits (see docs/LIMITS.md): the
//! global caps and their defaults derived from the file-descriptor budget,
//! each listener's `[listeners.per-client]` table, and the admin listener's
//! cap and header timeout. Validated here so `raw.rs` only hooks them in.

use super::units::parse_duration;
use super::{GlobalLimits, Problem};
use crate::limits::fd_budget::{self, FdBudget};
use serde::Deserialize;
use std::time::Duration;

/// Limits on what one client address (or prefix) may use of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerClientLimits {
    /// Open connections per client; `None`: no cap.
    pub max_connections: Option<u32>,
    /// New connections per client; `None`: no rate limit.
    pub new_connections: Option<Rate>,
    /// HTTP requests per client (beyond: 429); `None`: no rate limit.
    pub http_requests: Option<Rate>,
    /// Clients are counted by this prefix of their IPv4 address (32: each address)…
    pub ipv4_prefix: u8,
    /// …and of their IPv6 address (64: each /64, what one host usually gets).
    pub ipv6_prefix: u8,
}

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// By default one client address may hold at most this share (1/2) of
/// `[limits] max-connections`, so no single source can take every slot.
/// The rate limits are off unless configured: many real clients share one
/// address (a NAT, a load balancer without PROXY protocol, a benchmark on
/// loopback), and only the operator knows which listener faces whom.
pub const DEFAULT_PER_CLIENT_SHARE: usize = 2;
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: u32 = 64;
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Without a configured `max-sniffing`, at most this many (and never more than `max-connections`).
const DEFAULT_MAX_SNIFFING: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawPerClient {
    max_connections: Option<u32>,
    new_connections_per_second: Option<u32>,
    new_connections_burst: Option<u32>,
    http_requests_per_second: Option<u32>,
    http_requests_burst: Option<u32>,
    ipv4_prefix: Option<u8>,
    ipv6_prefix: Option<u8>,
}

/// `max-connections` and `max-sniffing` as written in `[limits]`.
pub(super) struct RawGlobal {
    pub max_connections: Option<usize>,
    pub max_sniffing: Option<usize>,
}

/// The global limits: what `[limits]` says, else defaults the current
/// file-descriptor limit can hold (with the reserve `budget` describes).
pub(super) fn global(raw: RawGlobal, budget: &FdBudget, problems: &mut Vec<Problem>) -> GlobalLimits {
    let max_connections = raw.max_connections.unwrap_or_else(|| budget.max_connections());
    let max_sniffing = raw.max_sniffing.unwrap_or(DEFAULT_MAX_SNIFFING.min(max_connections));
    if max_connections == 0 || max_sniffing == 0 {
        problems.push(problem("limits", "max-connections and max-sniffing must be at least 1"));
    }
    GlobalLimits { max_connections, max_sniffing }
}

/// The reserve for everything that is not a proxied connection, from what the config holds.
pub(super) fn budget(admin_max_connections: Option<u32>, listeners: usize, backend_servers: usize) -> FdBudget {
    FdBudget::new(fd_budget::current_limit(), admin_max_connections.unwrap_or(0) as usize, listeners, backend_servers)
}

impl RawPerClient {
    pub(super) fn validate(&self, at: &str, global: &GlobalLimits) -> Result<PerClientLimits, Vec<Problem>> {
        let mut problems = Vec::new();
        let field = |key: &str| format!("{at}.per-client.{key}");
        let max_connections = match self.max_connections {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some((global.max_connections / DEFAULT_PER_CLIENT_SHARE).clamp(1, u32::MAX as usize) as u32),
        };
        let mut rate = |per_second: Option<u32>, burst: Option<u32>, key: &str| {
            // A written burst of 0 is a mistake whether or not the rate is on.
            if burst == Some(0) {
                problems.push(problem(&field(&format!("{key}-burst")), "must be at least 1"));
            }
            let per_second = per_second.filter(|&n| n > 0)?; // unset or 0: no limit
            let burst = burst.unwrap_or(per_second.saturating_mul(2));
            Some(Rate { per_second, burst: burst.max(1) })
        };
        let new_connections = rate(self.new_connections_per_second, self.new_connections_burst, "new-connections");
        let http_requests = rate(self.http_requests_per_second, self.http_requests_burst, "http-requests");
        let ipv4_prefix = self.ipv4_prefix.unwrap_or(32);
        if !(1..=32).contains(&ipv4_prefix) {
            problems.push(problem(&field("ipv4-prefix"), &format!("{ipv4_prefix} is out of range (1 to 32)")));
        }
        let ipv6_prefix = self.ipv6_prefix.unwrap_or(64);
        if !(1..=128).contains(&ipv6_prefix) {
            problems.push(problem(&field("ipv6-prefix"), &format!("{ipv6_prefix} is out of range (1 to 128)")));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(PerClientLimits { max_connections, new_connections, http_requests, ipv4_prefix, ipv6_prefix })
    }
}

/// The admin listener's `header-timeout` and `max-connections`.
pub(super) fn admin(
    header_timeout: Option<&str>,
    max_connections: Option<u32>,
) -> Result<(Duration, u32), Vec<Problem>> {
    let mut problems = Vec::new();
    let header_timeout = match header_timeout.map(|text| (text, parse_duration(text))) {
        None => DEFAULT_ADMIN_HEADER_TIMEOUT,
        Some((_, Ok(d))) if !d.is_zero() => d,
        Some((text, Ok(_))) => {
            problems.push(problem("admin.header-timeout", &format!("`{text}` must be longer than zero")));
            Duration::ZERO
        }
        Some((_, Err(e))) => {
            problems.push(problem("admin.header-timeout", &e));
            Duration::ZERO
        }
    };
    let max_connections = max_connections.unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS);
    if max_connections == 0 {
        problems.push(problem("admin.max-connections", "must be at least 1"));
    }
    if problems.is_empty() { Ok((header_timeout, max_connections)) } else { Err(problems) }
}

fn problem(field: &str, message: &str) -> Problem {
    Problem { field: field.to_string(), message: message.to_string() }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const LISTENER: &str = "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\n\
                            [plugins.sniff]\nbuiltin = \"sniff\"\n";

    #[test]
    fn per_client_cap_is_half_the_global_one_and_rates_are_off_by_default() {
        let config =
            Config::parse(&format!("[limits]\nmax-connections = 400\n{LISTENER}"), Path::new("t.toml")).unwrap();
        let per_client = config.listeners[0].per_client;
        assert_eq!(per_client.max_connections, Some(200), "half of the global cap by default");
        assert_eq!(per_client.new_connections, None);
        assert_eq!(per_client.http_requests, None);
        assert_eq!((per_client.ipv4_prefix, per_client.ipv6_prefix), (32, 64));
        assert_eq!(config.limits.max_sniffing, 400, "max-sniffing never exceeds max-connections by default");
    }

    #[test]
    fn bad_limits_are_named_by_field() {
        let text = format!(
            "[admin]\nmax-connections = 0\nheader-timeout = \"0s\"\n{LISTENER}\
             [listeners.per-client]\nipv4-prefix = 33\nhttp-requests-burst = 0\nmax-connections = 0\n"
        );
        let error = Config::parse(&text, Path::new("t.toml")).unwrap_err().to_string();
        for want in [
            "listeners[0].per-client.ipv4-prefix: 33 is out of range (1 to 32)",
            "listeners[0].per-client.http-requests-burst: must be at least 1",
            "admin.header-timeout: `0s` must be longer than zero",
            "admin.max-connections: must be at least 1",
        ] {
            assert!(error.contains(want), "missing {want:?} in {error}");
        }
    }
}
