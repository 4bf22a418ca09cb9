//! The PROXY protocol v1/v2 reader (`host/src/proxy_protocol.rs`) and the
//! trusted-network parser next to it.
//!
//! Beyond "no panic":
//! - a header is never longer than the input nor than the reader's cap;
//! - the header alone parses to the same header (nothing after it matters),
//!   and every strict prefix of it is `Incomplete` (the reader waits, never
//!   refuses, while a valid header is still arriving);
//! - its addresses re-encode to a header that parses back to them, byte for
//!   byte the input when the input was a minimal v2 PROXY header;
//! - an `IpNet` that parses displays as text that parses back to it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::proxy_protocol::{IpNet, MAX_HEADER_LEN, Parsed, V1_MAX_LEN, Version, encode, parse};

fuzz_target!(|data: &[u8]| {
    check_header(data);
    if let Ok(text) = std::str::from_utf8(data) {
        check_net(text);
    }
});

fn check_header(data: &[u8]) {
    let Ok(Parsed::Header { len, addrs, version }) = parse(data) else {
        return;
    };
    assert!(len <= data.len(), "header of {len} bytes from {} bytes", data.len());
    assert!(len <= MAX_HEADER_LEN);
    if version == Version::V1 {
        assert!(len <= V1_MAX_LEN);
    }
    let header = &data[..len];
    assert_eq!(parse(header), Ok(Parsed::Header { len, addrs, version }), "the header alone");
    for end in 0..len {
        assert_eq!(parse(&header[..end]), Ok(Parsed::Incomplete), "prefix of {end} bytes of {header:?}");
    }
    let Some(addrs) = addrs else { return };
    assert_eq!(addrs.client.is_ipv4(), addrs.server.is_ipv4(), "one family per header");
    for out_version in [Version::V1, Version::V2] {
        let encoded = encode(out_version, addrs);
        let expected = Parsed::Header { len: encoded.len(), addrs: Some(addrs), version: out_version };
        assert_eq!(parse(&encoded), Ok(expected), "re-encoded {out_version:?} of {addrs:?}");
    }
    // A v2 PROXY command with exactly the address bytes is what `encode` writes.
    let minimal_v2 =
        version == Version::V2 && header[12] == 0x21 && matches!((header[13], len), (0x11, 28) | (0x21, 52));
    if minimal_v2 {
        assert_eq!(encode(Version::V2, addrs), header, "v2 re-encoding");
    }
}

fn check_net(text: &str) {
    let Ok(net) = text.parse::<IpNet>() else { return };
    let shown = net.to_string();
    assert_eq!(shown.parse::<IpNet>(), Ok(net), "{text:?} displayed as {shown:?}");
}
