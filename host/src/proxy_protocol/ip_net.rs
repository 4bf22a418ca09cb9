//! Trusted networks: which peers may send a PROXY header ([`IpNet`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network like "10.0.0.0/8", "127.0.0.1/32", "::1/128", "fd00::/8"; used
/// to say which peers may send PROXY headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The network address, host bits zero.
    addr: IpAddr,
    /// At most 32 for IPv4, 128 for IPv6.
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this network. IPv4 and IPv4-mapped IPv6 addresses
    /// are the same address: "10.0.0.0/8" contains `::ffff:10.1.2.3`, and
    /// "::ffff:0:0/96" contains `10.1.2.3`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(ip)) => self.masks_to_self(IpAddr::V4(ip)),
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip.to_ipv4_mapped().is_some_and(|ip| self.masks_to_self(ip.into())),
            (IpAddr::V6(_), IpAddr::V4(ip)) => self.masks_to_self(ip.to_ipv6_mapped().into()),
            (IpAddr::V6(_), IpAddr::V6(ip)) => self.masks_to_self(ip.into()),
        }
    }

    /// `ip` must be of the network's family.
    fn masks_to_self(&self, ip: IpAddr) -> bool {
        mask(ip, self.prefix) == self.addr
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32u32.saturating_sub(prefix.into())).unwrap_or(0);
            Ipv4Addr::from_bits(a.to_bits() & mask).into()
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128u32.saturating_sub(prefix.into())).unwrap_or(0);
            Ipv6Addr::from_bits(a.to_bits() & mask).into()
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    /// "address/prefix", or a bare address for a single host (/32 or /128).
    /// Bits set after the prefix are refused: "10.0.0.1/8" is likely a typo.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr =
            addr_text.parse().map_err(|_| format!("{s:?} is not a network: {addr_text:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => parse_prefix(p, max)
                .ok_or_else(|| format!("{s:?} is not a network: the prefix length must be a number from 0 to {max}"))?,
        };
        let net = IpNet { addr: mask(addr, prefix), prefix };
        if net.addr != addr {
            return Err(format!("{s:?} has bits set after the /{prefix} prefix; did you mean \"{net}\"?"));
        }
        Ok(net)
    }
}

/// A prefix length: decimal digits only, at most `max`.
fn parse_prefix(text: &str, max: u8) -> Option<u8> {
    let n: u8 = text.parse().ok()?;
    (n <= max && text.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
