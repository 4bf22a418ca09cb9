//! Unit tests of the PROXY protocol: encoding, parsing every prefix, reading, trusted networks.

use super::v2::V2_SIGNATURE;
use super::*;
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

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
