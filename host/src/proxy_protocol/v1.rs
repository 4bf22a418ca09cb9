//! PROXY protocol version 1: the human-readable text line, encoded and parsed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use super::{Endpoints, Parsed, ProxiedAddrs, ProxyHeaderError, Version};

/// How every v1 header starts.
pub(super) const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (a TCP6 line with the longest addresses).
pub const V1_MAX_LEN: usize = 107;

pub(super) fn encode_v1(endpoints: &Endpoints) -> Vec<u8> {
    let line = match endpoints {
        Endpoints::V4(c, s) => format!("PROXY TCP4 {} {} {} {}\r\n", c.ip(), s.ip(), c.port(), s.port()),
        Endpoints::V6(c, s) => format!("PROXY TCP6 {} {} {} {}\r\n", c.ip(), s.ip(), c.port(), s.port()),
    };
    line.into_bytes()
}

pub(super) fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
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
