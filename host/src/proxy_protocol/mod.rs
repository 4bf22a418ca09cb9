//! The HAProxy PROXY protocol, versions 1 (text) and 2 (binary).
//!
//! A proxy hides the client's address from the backend: the backend only sees
//! the proxy's own connection. The PROXY protocol fixes that with one header,
//! sent before any other byte, that carries the original client and server
//! addresses (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>).
//!
//! sluice uses it both ways:
//! - towards backends that want the client address, it sends a header
//!   ([`encode`]) right after connecting;
//! - on listeners behind another proxy or load balancer, it reads one
//!   ([`read_header`]), but only from peers in trusted networks ([`IpNet`]):
//!   anyone else could claim any address.
//!
//! Parsing is incremental and never panics: [`parse`] says whether the bytes
//! so far are a complete header, a strict prefix of one, or not a header at
//! all, and it fails on the first byte that rules a header out.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

mod ip_net;
mod read;
#[cfg(test)]
mod tests;
mod v1;
mod v2;

pub use ip_net::IpNet;
pub use read::{MAX_HEADER_LEN, ReadError, read_header};
pub use v1::V1_MAX_LEN;
use v1::{V1_PREFIX, encode_v1, parse_v1};
use v2::{V2_MAX_BODY, V2_SIGNATURE, encode_v2, parse_v2};

/// Addresses carried by a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxiedAddrs {
    /// Where the connection came from: the real client.
    pub client: SocketAddr,
    /// Where the client connected to.
    pub server: SocketAddr,
}

/// A PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The human-readable text line.
    V1,
    /// The binary header.
    V2,
}

/// Why bytes are not a valid PROXY header.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    #[error("not a PROXY protocol header: the bytes match neither the v1 nor the v2 signature")]
    NotProxyProtocol,
    #[error("PROXY v1 header has no CRLF within {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("PROXY v1 header is malformed: bad {0}")]
    V1Malformed(&'static str),
    #[error("PROXY v2 header has version {0}, expected 2")]
    V2BadVersion(u8),
    #[error("PROXY v2 header has command {0:#x}, expected LOCAL (0x0) or PROXY (0x1)")]
    V2BadCommand(u8),
    #[error(
        "PROXY v2 family/transport {0:#04x} ({name}) is not supported: only TCP over IPv4 or IPv6, or UNSPEC",
        name = family_name(*.0)
    )]
    V2Unsupported(u8),
    #[error("PROXY v2 header declares {declared} address bytes, fewer than the {needed} its family needs")]
    V2LengthTooShort { declared: u16, needed: u16 },
    #[error("PROXY v2 header declares {declared} bytes after the fixed part; at most {V2_MAX_BODY} are accepted")]
    V2TooLong { declared: u16 },
}

/// A v2 family/transport byte in words, for error messages.
fn family_name(byte: u8) -> &'static str {
    match byte {
        0x00 => "UNSPEC",
        0x11 => "TCP over IPv4",
        0x12 => "UDP over IPv4",
        0x21 => "TCP over IPv6",
        0x22 => "UDP over IPv6",
        0x31 => "unix stream",
        0x32 => "unix datagram",
        _ => "unknown",
    }
}

/// Both ends of a connection in one address family.
enum Endpoints {
    V4(SocketAddrV4, SocketAddrV4),
    V6(SocketAddrV6, SocketAddrV6),
}

impl Endpoints {
    /// Mixed families become IPv6, the IPv4 side as an IPv4-mapped address.
    fn of(addrs: ProxiedAddrs) -> Self {
        match (addrs.client, addrs.server) {
            (SocketAddr::V4(c), SocketAddr::V4(s)) => Endpoints::V4(c, s),
            (c, s) => Endpoints::V6(as_v6(c), as_v6(s)),
        }
    }
}

fn as_v6(addr: SocketAddr) -> SocketAddrV6 {
    match addr {
        SocketAddr::V4(a) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
        SocketAddr::V6(a) => SocketAddrV6::new(*a.ip(), a.port(), 0, 0),
    }
}

/// Encode a header for a backend connection. When the client and server
/// addresses are of different families, the IPv4 one is sent as an
/// IPv4-mapped IPv6 address.
pub fn encode(version: Version, addrs: ProxiedAddrs) -> Vec<u8> {
    let endpoints = Endpoints::of(addrs);
    match version {
        Version::V1 => encode_v1(&endpoints),
        Version::V2 => encode_v2(&endpoints),
    }
}

/// Result of parsing from the start of a byte buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header of `len` bytes; `addrs` is None for v2 LOCAL, v1
    /// UNKNOWN and v2 UNSPEC: use the real peer address.
    Header { len: usize, addrs: Option<ProxiedAddrs>, version: Version },
    /// The bytes so far are a strict prefix of a valid header: read more.
    Incomplete,
}

/// Parse a header at the start of `buf`, which may contain more data after
/// it (the client's first bytes). TLVs in v2 are skipped but counted in
/// `len`. Addresses are returned as sent: an IPv4-mapped IPv6 address stays
/// IPv6.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if starts_like(buf, V2_SIGNATURE) {
        parse_v2(buf)
    } else if starts_like(buf, V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(ProxyHeaderError::NotProxyProtocol)
    }
}

/// Whether `buf` and `signature` agree on their common length.
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    buf.iter().zip(signature).all(|(a, b)| a == b)
}
