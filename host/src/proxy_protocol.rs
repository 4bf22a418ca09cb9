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

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// How every v1 header starts.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (a TCP6 line with the longest addresses).
pub const V1_MAX_LEN: usize = 107;
/// How every v2 header starts.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED_LEN: usize = 16;
/// The most bytes we accept after the fixed part of a v2 header (addresses and TLVs).
const V2_MAX_BODY: u16 = 520;
/// The longest header [`read_header`] accepts.
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + V2_MAX_BODY as usize;

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

fn encode_v1(endpoints: &Endpoints) -> Vec<u8> {
    let line = match endpoints {
        Endpoints::V4(c, s) => format!("PROXY TCP4 {} {} {} {}\r\n", c.ip(), s.ip(), c.port(), s.port()),
        Endpoints::V6(c, s) => format!("PROXY TCP6 {} {} {} {}\r\n", c.ip(), s.ip(), c.port(), s.port()),
    };
    line.into_bytes()
}

fn encode_v2(endpoints: &Endpoints) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED_LEN + 36);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    let (client_port, server_port) = match endpoints {
        Endpoints::V4(c, s) => {
            out.extend_from_slice(&[0x11, 0, 12]); // TCP over IPv4, 12 address bytes
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&s.ip().octets());
            (c.port(), s.port())
        }
        Endpoints::V6(c, s) => {
            out.extend_from_slice(&[0x21, 0, 36]); // TCP over IPv6, 36 address bytes
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&s.ip().octets());
            (c.port(), s.port())
        }
    };
    out.extend_from_slice(&client_port.to_be_bytes());
    out.extend_from_slice(&server_port.to_be_bytes());
    out
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

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX_LEN {
            return Err(ProxyHeaderError::V1TooLong);
        }
        return check_v1_protocol_prefix(buf).map(|()| Parsed::Incomplete);
    };
    // The prefix has no CR, so the line ends after it.
    let line = buf.get(V1_PREFIX.len()..end).ok_or(ProxyHeaderError::V1Malformed("protocol"))?;
    let addrs = parse_v1_line(line)?;
    Ok(Parsed::Header { len: end + 2, addrs, version: Version::V1 })
}

const V1_PROTOCOLS: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];

/// Fail early when an unfinished line already has an impossible protocol.
fn check_v1_protocol_prefix(buf: &[u8]) -> Result<(), ProxyHeaderError> {
    let rest = buf.get(V1_PREFIX.len()..).unwrap_or_default();
    let ok = match rest.iter().position(|&b| b == b' ' || b == b'\r') {
        Some(end) => V1_PROTOCOLS.contains(&&rest[..end]),
        None => V1_PROTOCOLS.iter().any(|p| p.starts_with(rest)),
    };
    if ok { Ok(()) } else { Err(ProxyHeaderError::V1Malformed("protocol")) }
}

/// The line between "PROXY " and CRLF.
fn parse_v1_line(line: &[u8]) -> Result<Option<ProxiedAddrs>, ProxyHeaderError> {
    let mut fields = line.split(|&b| b == b' ');
    match fields.next().unwrap_or_default() {
        // The receiver must ignore anything after UNKNOWN.
        b"UNKNOWN" => Ok(None),
        b"TCP4" => parse_v1_addrs::<Ipv4Addr>(fields).map(Some),
        b"TCP6" => parse_v1_addrs::<Ipv6Addr>(fields).map(Some),
        _ => Err(ProxyHeaderError::V1Malformed("protocol")),
    }
}

fn parse_v1_addrs<'a, A>(mut fields: impl Iterator<Item = &'a [u8]>) -> Result<ProxiedAddrs, ProxyHeaderError>
where
    A: FromStr + Into<IpAddr>,
{
    let client: A = parse_v1_field(fields.next(), "source address")?;
    let server: A = parse_v1_field(fields.next(), "destination address")?;
    let client_port = parse_v1_port(fields.next(), "source port")?;
    let server_port = parse_v1_port(fields.next(), "destination port")?;
    if fields.next().is_some() {
        return Err(ProxyHeaderError::V1Malformed("end of line (extra field)"));
    }
    Ok(ProxiedAddrs {
        client: SocketAddr::new(client.into(), client_port),
        server: SocketAddr::new(server.into(), server_port),
    })
}

fn parse_v1_field<T: FromStr>(field: Option<&[u8]>, name: &'static str) -> Result<T, ProxyHeaderError> {
    field
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|s| s.parse().ok())
        .ok_or(ProxyHeaderError::V1Malformed(name))
}

/// A port is 0 to 65535 in decimal, without sign or leading zero.
fn parse_v1_port(field: Option<&[u8]>, name: &'static str) -> Result<u16, ProxyHeaderError> {
    match field {
        Some(f) if f.iter().all(u8::is_ascii_digit) && (f == b"0" || !f.starts_with(b"0")) => {
            parse_v1_field(Some(f), name)
        }
        _ => Err(ProxyHeaderError::V1Malformed(name)),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let Some(&version_command) = buf.get(12) else { return Ok(Parsed::Incomplete) };
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::V2BadVersion(version_command >> 4));
    }
    let is_local = match version_command & 0x0f {
        0x0 => true,
        0x1 => false,
        other => return Err(ProxyHeaderError::V2BadCommand(other)),
    };
    let Some(&family) = buf.get(13) else { return Ok(Parsed::Incomplete) };
    // LOCAL (health checks from the proxy itself) carries no usable address
    // whatever its family says.
    let needed = match family {
        _ if is_local => 0,
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        other => return Err(ProxyHeaderError::V2Unsupported(other)),
    };
    let Some(&[hi, lo]) = buf.get(14..16) else { return Ok(Parsed::Incomplete) };
    let declared = u16::from_be_bytes([hi, lo]);
    if declared > V2_MAX_BODY {
        return Err(ProxyHeaderError::V2TooLong { declared });
    }
    if declared < needed {
        return Err(ProxyHeaderError::V2LengthTooShort { declared, needed });
    }
    let len = V2_FIXED_LEN + usize::from(declared);
    let Some(body) = buf.get(V2_FIXED_LEN..len) else { return Ok(Parsed::Incomplete) };
    let addrs = match needed {
        0 => None,
        _ => Some(parse_v2_addrs(body, family).ok_or(ProxyHeaderError::V2LengthTooShort { declared, needed })?),
    };
    Ok(Parsed::Header { len, addrs, version: Version::V2 })
}

/// The addresses at the start of a v2 body whose length was checked. TLVs
/// after them are ignored.
fn parse_v2_addrs(body: &[u8], family: u8) -> Option<ProxiedAddrs> {
    let mut body = Reader(body);
    let (client, server): (IpAddr, IpAddr) = if family == 0x11 {
        (Ipv4Addr::from(body.take::<4>()?).into(), Ipv4Addr::from(body.take::<4>()?).into())
    } else {
        (Ipv6Addr::from(body.take::<16>()?).into(), Ipv6Addr::from(body.take::<16>()?).into())
    };
    let client_port = u16::from_be_bytes(body.take()?);
    let server_port = u16::from_be_bytes(body.take()?);
    Some(ProxiedAddrs { client: SocketAddr::new(client, client_port), server: SocketAddr::new(server, server_port) })
}

/// Takes fixed-size arrays off the front of a slice, without panicking.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// Why [`read_header`] got no header.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
    #[error("no complete PROXY header before the deadline")]
    Timeout,
    #[error("connection closed before a complete PROXY header")]
    Closed,
    #[error(transparent)]
    Invalid(#[from] ProxyHeaderError),
}

impl ReadError {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ReadError::Io(_) => "proxy-header-io",
            ReadError::Timeout => "proxy-header-timeout",
            ReadError::Closed => "proxy-header-closed",
            ReadError::Invalid(_) => "proxy-header-invalid",
        }
    }
}

/// Read one PROXY header from `stream` before `timeout` elapses. Returns the
/// addresses (None: use the real peer) and the bytes read after the header,
/// which the caller must replay. Reads at most [`MAX_HEADER_LEN`] bytes.
pub async fn read_header<S>(stream: &mut S, timeout: Duration) -> Result<(Option<ProxiedAddrs>, Vec<u8>), ReadError>
where
    S: AsyncRead + Unpin,
{
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; MAX_HEADER_LEN];
    let mut filled = 0;
    loop {
        // `parse` is Incomplete only below MAX_HEADER_LEN bytes, so there is
        // always room here; were there none, the read would return 0 (Closed).
        let room = buf.get_mut(filled..).unwrap_or_default();
        let n = match tokio::time::timeout_at(deadline, stream.read(room)).await {
            Err(_elapsed) => return Err(ReadError::Timeout),
            Ok(read) => read?,
        };
        if n == 0 {
            return Err(ReadError::Closed);
        }
        filled += n;
        let got = &buf[..filled];
        if let Parsed::Header { len, addrs, .. } = parse(got)? {
            return Ok((addrs, got.get(len..).unwrap_or_default().to_vec()));
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn addrs(client: &str, server: &str) -> ProxiedAddrs {
        ProxiedAddrs { client: client.parse().unwrap(), server: server.parse().unwrap() }
    }

    fn header(buf: &[u8]) -> (usize, Option<ProxiedAddrs>, Version) {
        match parse(buf) {
            Ok(Parsed::Header { len, addrs, version }) => (len, addrs, version),
            other => panic!("expected a header, got {other:?}"),
        }
    }

    /// A v2 header with `version_command`, `family` and `body`.
    fn v2(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[version_command, family]);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let v4 = addrs("192.0.2.1:56324", "198.51.100.1:443");
        let v6 = addrs("[2001:db8::1]:56324", "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:443");
        let mixed = addrs("192.0.2.1:1", "[2001:db8::2]:2");
        let mixed_mapped = addrs("[::ffff:192.0.2.1]:1", "[2001:db8::2]:2");
        let mixed_other_way = addrs("[2001:db8::2]:2", "192.0.2.1:1");
        let mixed_other_way_mapped = addrs("[2001:db8::2]:2", "[::ffff:192.0.2.1]:1");
        let cases = [(v4, v4), (v6, v6), (mixed, mixed_mapped), (mixed_other_way, mixed_other_way_mapped)];
        for version in [Version::V1, Version::V2] {
            for (sent, received) in cases {
                let mut bytes = encode(version, sent);
                let len = bytes.len();
                bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
                assert_eq!(header(&bytes), (len, Some(received), version), "{version:?} {sent:?}");
                assert!(version == Version::V2 || len <= V1_MAX_LEN);
            }
        }
    }

    #[test]
    fn known_v1_header() {
        let bytes = encode(Version::V1, addrs("192.0.2.1:56324", "198.51.100.1:443"));
        assert_eq!(bytes, b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n");
        let bytes = encode(Version::V1, addrs("[2001:db8::1]:1", "[::1]:2"));
        assert_eq!(bytes, b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n");
    }

    #[test]
    fn known_v2_tcp4_header() {
        let bytes = encode(Version::V2, addrs("192.0.2.1:56324", "198.51.100.1:443"));
        let expected: &[u8] = &[
            0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
            0x21, // version 2, PROXY
            0x11, // TCP over IPv4
            0x00, 0x0c, // 12 address bytes
            0xc0, 0x00, 0x02, 0x01, // 192.0.2.1
            0xc6, 0x33, 0x64, 0x01, // 198.51.100.1
            0xdc, 0x04, // 56324
            0x01, 0xbb, // 443
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let v4 = addrs("192.0.2.1:56324", "198.51.100.1:443");
        let v6 = addrs("[2001:db8::1]:56324", "[::1]:443");
        let mut headers = vec![b"PROXY UNKNOWN\r\n".to_vec(), v2(0x21, 0x11, &[1; 20])];
        for version in [Version::V1, Version::V2] {
            headers.extend([encode(version, v4), encode(version, v6)]);
        }
        for full in headers {
            for end in 0..full.len() {
                assert_eq!(parse(&full[..end]), Ok(Parsed::Incomplete), "{:?}", &full[..end]);
            }
            let mut with_data = full.clone();
            with_data.extend_from_slice(b"\r\nhello");
            assert_eq!(header(&with_data).0, full.len());
        }
    }

    #[test]
    fn garbage_is_refused_on_the_first_wrong_byte() {
        let garbage: [&[u8]; 6] =
            [b"G", b"GET / HTTP/1.1\r\n", b"PROXX", b"PROXY\r\n", b"\r\n\r\n\0\r\nQUIX", b"\r\n\r\n\0\n"];
        for garbage in garbage {
            assert_eq!(parse(garbage), Err(ProxyHeaderError::NotProxyProtocol), "{garbage:?}");
        }
        assert_eq!(parse(b"PROXY HTTP"), Err(ProxyHeaderError::V1Malformed("protocol")));
        assert_eq!(parse(b"PROXY TCP5"), Err(ProxyHeaderError::V1Malformed("protocol")));
    }

    #[test]
    fn v1_without_crlf_within_107_bytes_is_too_long() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN, b'x');
        assert_eq!(parse(&long), Err(ProxyHeaderError::V1TooLong));
        long.truncate(V1_MAX_LEN - 2);
        long.extend_from_slice(b"\r\n");
        assert_eq!(header(&long), (V1_MAX_LEN, None, Version::V1));
    }

    #[test]
    fn v1_malformed_fields_are_named() {
        let cases: [(&[u8], &str); 9] = [
            (b"PROXY TCP4 192.0.2.1 198.51.100.1 65536 443\r\n", "source port"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.1 1 0443\r\n", "destination port"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.1 +1 443\r\n", "source port"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.1 1\r\n", "destination port"),
            (b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n", "source address"),
            (b"PROXY TCP6 2001:db8::1 198.51.100.1 1 2\r\n", "destination address"),
            (b"PROXY TCP4  192.0.2.1 198.51.100.1 1 2\r\n", "source address"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.1 1 2 3\r\n", "end of line (extra field)"),
            (b"PROXY TCP4\r\n", "source address"),
        ];
        for (bytes, field) in cases {
            assert_eq!(parse(bytes), Err(ProxyHeaderError::V1Malformed(field)), "{}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(header(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n").1, Some(addrs("1.2.3.4:0", "5.6.7.8:65535")));
    }

    #[test]
    fn v1_unknown_ignores_the_rest_of_the_line() {
        assert_eq!(header(b"PROXY UNKNOWN\r\nGET"), (15, None, Version::V1));
        assert_eq!(header(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").1, None);
    }

    #[test]
    fn v2_local_and_unspec_carry_no_addresses() {
        assert_eq!(header(&v2(0x20, 0x00, &[])), (16, None, Version::V2));
        // LOCAL ignores whatever addresses follow, even of an unsupported family.
        assert_eq!(header(&v2(0x20, 0x12, &[7; 12])), (28, None, Version::V2));
        assert_eq!(header(&v2(0x21, 0x00, &[1, 2, 3])), (19, None, Version::V2));
    }

    #[test]
    fn v2_tlvs_are_skipped_but_counted() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb];
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]); // PP2_TYPE_NOOP, one byte
        body.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'.', b'b']); // PP2_TYPE_AUTHORITY
        let mut bytes = v2(0x21, 0x11, &body);
        bytes.extend_from_slice(b"data");
        let expected = Some(addrs("192.0.2.1:56324", "198.51.100.1:443"));
        assert_eq!(header(&bytes), (16 + 22, expected, Version::V2));
    }

    #[test]
    fn v2_refusals() {
        assert_eq!(parse(&v2(0x21, 0x12, &[0; 12])), Err(ProxyHeaderError::V2Unsupported(0x12)));
        assert_eq!(parse(&v2(0x21, 0x31, &[0; 216])), Err(ProxyHeaderError::V2Unsupported(0x31)));
        assert_eq!(parse(&v2(0x11, 0x11, &[0; 12])), Err(ProxyHeaderError::V2BadVersion(1)));
        assert_eq!(parse(&v2(0x22, 0x11, &[0; 12])), Err(ProxyHeaderError::V2BadCommand(2)));
        let short = Err(ProxyHeaderError::V2LengthTooShort { declared: 12, needed: 36 });
        assert_eq!(parse(&v2(0x21, 0x21, &[0; 12])), short);
        assert_eq!(parse(&v2(0x21, 0x11, &[0; 521])), Err(ProxyHeaderError::V2TooLong { declared: 521 }));
        // Refused as soon as the offending byte arrives.
        assert_eq!(parse(&v2(0x21, 0x12, &[])[..14]), Err(ProxyHeaderError::V2Unsupported(0x12)));
        let message = ProxyHeaderError::V2Unsupported(0x12).to_string();
        assert!(message.contains("0x12 (UDP over IPv4)"), "{message}");
    }

    #[tokio::test]
    async fn read_header_handles_split_writes_and_returns_extra_bytes() {
        for version in [Version::V1, Version::V2] {
            let sent = addrs("192.0.2.1:56324", "[2001:db8::1]:443");
            let bytes = encode(version, sent);
            let (mut server, mut client) = tokio::io::duplex(1024);
            let writer = tokio::spawn(async move {
                for piece in [&bytes[..1], &bytes[1..7], &bytes[7..20]] {
                    client.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
                let mut last = bytes[20..].to_vec();
                last.extend_from_slice(b"GET / HTTP/1.1\r\n");
                client.write_all(&last).await.unwrap();
                client
            });
            let (got, extra) = read_header(&mut server, Duration::from_secs(5)).await.unwrap();
            assert_eq!(got, Some(addrs("[::ffff:192.0.2.1]:56324", "[2001:db8::1]:443")));
            assert_eq!(extra, b"GET / HTTP/1.1\r\n");
            drop(writer.await.unwrap());
        }
    }

    #[tokio::test]
    async fn read_header_reports_eof_and_garbage() {
        let (mut server, mut client) = tokio::io::duplex(64);
        client.write_all(b"PROXY TCP4 1.2").await.unwrap();
        drop(client);
        assert!(matches!(read_header(&mut server, Duration::from_secs(5)).await, Err(ReadError::Closed)));

        let (mut server, mut client) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let result = read_header(&mut server, Duration::from_secs(5)).await;
        assert!(matches!(result, Err(ReadError::Invalid(ProxyHeaderError::NotProxyProtocol))));
    }

    #[tokio::test(start_paused = true)]
    async fn read_header_times_out() {
        let (mut server, mut client) = tokio::io::duplex(64);
        client.write_all(b"PROXY TCP4 ").await.unwrap();
        let started = Instant::now();
        let result = read_header(&mut server, Duration::from_secs(3)).await;
        assert!(matches!(result, Err(ReadError::Timeout)), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        drop(client);
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_net_parses_and_displays() {
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("127.0.0.1").to_string(), "127.0.0.1/32");
        assert_eq!(net("::1").to_string(), "::1/128");
        assert_eq!(net("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in ["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/+8", "10.0.0.0/-1", "10.0.0.0/x"] {
            let err = bad.parse::<IpNet>().unwrap_err();
            assert!(err.contains("prefix length must be a number from 0 to"), "{bad}: {err}");
        }
        let err = "10.0.0.256/8".parse::<IpNet>().unwrap_err();
        assert!(err.contains("\"10.0.0.256\" is not an IP address"), "{err}");
        let err = "10.1.2.3/8".parse::<IpNet>().unwrap_err();
        assert!(err.contains("did you mean \"10.0.0.0/8\""), "{err}");
    }

    #[test]
    fn ip_net_contains() {
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("127.0.0.1/32").contains(ip("127.0.0.1")));
        assert!(!net("127.0.0.1/32").contains(ip("127.0.0.2")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("fd00::/8").contains(ip("fd12:3456::1")));
        assert!(!net("fd00::/8").contains(ip("fe80::1")));
        assert!(net("::1/128").contains(ip("::1")));
        // IPv4-mapped IPv6 peers (dual-stack sockets) match IPv4 networks, and back.
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(!net("10.0.0.0/8").contains(ip("::ffff:11.1.2.3")));
        assert!(!net("10.0.0.0/8").contains(ip("::a01:203")));
        assert!(net("::ffff:0:0/96").contains(ip("10.1.2.3")));
    }
}
