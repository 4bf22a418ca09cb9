//! PROXY protocol version 2: the binary header, encoded and parsed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Endpoints, Parsed, ProxiedAddrs, ProxyHeaderError, Version};

/// How every v2 header starts.
pub(super) const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version/command, family, length.
pub(super) const V2_FIXED_LEN: usize = 16;
/// The most bytes we accept after the fixed part of a v2 header (addresses and TLVs).
pub(super) const V2_MAX_BODY: u16 = 520;

pub(super) fn encode_v2(endpoints: &Endpoints) -> Vec<u8> {
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

pub(super) fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
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
