//! Numbers and addresses written into byte buffers by hand, for the
//! per-request path: the formatting machinery costs more than the bytes.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

/// `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `ip` as its `Display` writes it (IPv4 by hand).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `addr` as its `Display` writes it: `ip:port`, `[ip6]:port`.
pub fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(_) => push_ip(out, addr.ip()),
        SocketAddr::V6(v6) => {
            out.push(b'[');
            push_ip(out, IpAddr::V6(*v6.ip()));
            if v6.scope_id() != 0 {
                let _ = write!(out, "%{}", v6.scope_id());
            }
            out.push(b']');
        }
    }
    out.push(b':');
    push_decimal(out, u64::from(addr.port()));
}

/// Replace `to` with what `write` puts in a byte buffer (ASCII), keeping
/// `to`'s allocation.
pub fn rewrite(to: &mut String, write: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::mem::take(to).into_bytes();
    bytes.clear();
    write(&mut bytes);
    *to = String::from_utf8(bytes).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_display_writes_them() {
        for text in [
            "0.0.0.0:0",
            "127.0.0.1:8080",
            "255.255.255.255:65535",
            "10.20.3.4:9",
            "[::1]:443",
            "[2001:db8::7]:1",
            "[fe80::1%3]:80",
            "[::ffff:1.2.3.4]:5",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            let mut out = b"left over".to_vec();
            out.clear();
            push_socket_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
            let mut ip = Vec::new();
            push_ip(&mut ip, addr.ip());
            assert_eq!(String::from_utf8(ip).unwrap(), addr.ip().to_string());
        }
        for n in [0, 7, 10, 99, 100, 65535, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }
}
