//! The file-descriptor budget: at start the soft `RLIMIT_NOFILE` is raised
//! to the hard limit, and the default `max-connections` is what that limit
//! can hold. Each proxied connection may need two descriptors (client and
//! backend); a reserve is kept for everything else:
//!
//! ```text
//! reserve = 64                    stdio, epoll, the file watcher, plugin and certificate files, reloads
//!         + limit / 16            pooled backend connections beyond one per client, DNS, health checks
//!         + admin max-connections the admin listener's cap
//!         + 2 per listener        the listening socket and the duplicate kept for reloads
//!         + 1 per backend server  its health check
//! max-connections (default) = (limit - reserve) / 2
//! ```

use crate::config::Config;
use std::net::IpAddr;

/// Descriptors kept for the process itself, whatever the limit.
const BASE_RESERVE: u64 = 64;
/// Used when the limit cannot be read, and as the ceiling of an unlimited one.
const FALLBACK_LIMIT: u64 = 1024;
const UNLIMITED_CEILING: u64 = 1 << 20;

/// The descriptor limit after [`raise_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub before: u64,
    pub now: u64,
}

/// Raise the soft descriptor limit to the hard one. Call once at start,
/// before the config is loaded (its defaults are derived from the limit).
pub fn raise_limit() -> std::io::Result<Raised> {
    #[cfg(unix)]
    {
        use rlimit::Resource;
        let (soft, hard) = Resource::NOFILE.get()?;
        if soft < hard {
            // On macOS the hard limit may be "unlimited" but the kernel caps it lower.
            rlimit::increase_nofile_limit(hard)?;
        }
        Ok(Raised { before: soft, now: Resource::NOFILE.get()?.0 })
    }
    #[cfg(not(unix))]
    Ok(Raised { before: FALLBACK_LIMIT, now: FALLBACK_LIMIT })
}

/// The soft descriptor limit in force now.
pub fn current_limit() -> u64 {
    #[cfg(unix)]
    {
        match rlimit::Resource::NOFILE.get() {
            Ok((soft, _)) => soft.min(UNLIMITED_CEILING),
            Err(_) => FALLBACK_LIMIT,
        }
    }
    #[cfg(not(unix))]
    FALLBACK_LIMIT
}

/// How the descriptor limit is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    pub limit: u64,
    pub reserve: u64,
}

impl FdBudget {
    pub fn new(limit: u64, admin_max_connections: usize, listeners: usize, backend_servers: usize) -> FdBudget {
        let reserve =
            BASE_RESERVE + limit / 16 + admin_max_connections as u64 + 2 * listeners as u64 + backend_servers as u64;
        FdBudget { limit, reserve }
    }

    /// The budget of a config under the current limit.
    pub fn of(config: &Config) -> FdBudget {
        let admin = config.admin.as_ref().map_or(0, |admin| admin.max_connections);
        let servers = config.backends.values().map(|b| b.servers.len()).sum();
        FdBudget::new(current_limit(), admin, config.listeners.len(), servers)
    }

    /// Proxied connections the limit can hold, two descriptors each, at least one.
    pub fn max_connections(&self) -> usize {
        (self.limit.saturating_sub(self.reserve) / 2).max(1) as usize
    }
}

/// One line on the budget, for the start-up log and `sluice check`.
pub fn summary(config: &Config) -> String {
    let budget = FdBudget::of(config);
    format!(
        "file-descriptor limit {} ({} kept in reserve): max-connections {}, max-sniffing {}",
        budget.limit, budget.reserve, config.limits.max_connections, config.limits.max_sniffing
    )
}

/// What in a config cannot work as written, or is unsafe: logged once at
/// start and printed by `sluice check`.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let budget = FdBudget::of(config);
    if config.limits.max_connections > budget.max_connections() {
        warnings.push(format!(
            "[limits] max-connections = {} cannot be met by the file-descriptor limit {}: each proxied \
             connection may need 2 descriptors and {} are kept in reserve, so about {} fit; beyond that new \
             connections fail to be accepted for everyone. Raise the limit (LimitNOFILE= in systemd, ulimit -n) \
             or lower max-connections (or leave it out: the default fits the limit)",
            config.limits.max_connections,
            budget.limit,
            budget.reserve,
            budget.max_connections()
        ));
    }
    if let Some(admin) = &config.admin
        && !is_loopback(admin.bind.ip())
    {
        warnings.push(format!(
            "the admin listener binds {}, not a loopback address: its endpoints (/status, /metrics) have no \
             authentication, so anyone who can reach that address can read them",
            admin.bind
        ));
    }
    warnings
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_fits_the_limit_with_its_reserve() {
        let budget = FdBudget::new(20_000, 64, 1, 3);
        assert_eq!(budget.reserve, 64 + 1250 + 64 + 2 + 3);
        assert_eq!(budget.max_connections(), (20_000 - 1383) / 2);
        assert!(2 * budget.max_connections() as u64 + budget.reserve <= budget.limit);
        // A limit below the reserve still leaves one connection.
        assert_eq!(FdBudget::new(32, 64, 1, 0).max_connections(), 1);
    }
}
