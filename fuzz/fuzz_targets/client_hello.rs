//! The TLS ClientHello reader (`host/src/tls/client_hello.rs`), which runs on
//! the bytes of every TLS connection before any handshake.
//!
//! Beyond "no panic":
//! - every prefix of the input is `Incomplete` or the input's own result
//!   (the reader never decides on bytes it has not seen);
//! - a complete hello gives the same answer when its handshake message is
//!   re-cut into records of another size (record reassembly);
//! - the server name it reports is lower case without a trailing dot.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::tls::client_hello::{Hello, parse};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    for end in cut_points(data) {
        let part = parse(&data[..end]);
        assert!(part == Hello::Incomplete || part == whole, "prefix of {end}: {part:?}, whole: {whole:?}");
    }
    let Hello::Complete(hello) = &whole else { return };
    if let Some(name) = &hello.server_name {
        assert!(!name.ends_with('.'), "{name:?}");
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
    }
    if let Some(message) = handshake_message(data) {
        let size = usize::from(data.last().copied().unwrap_or(1).max(1));
        assert_eq!(parse(&records(&message, size)), whole, "re-cut into {size}-byte records");
    }
});

/// Prefix lengths worth checking without making each run quadratic.
fn cut_points(data: &[u8]) -> Vec<usize> {
    let n = data.len();
    let mut cuts = vec![n.saturating_sub(1), n / 2, 5.min(n), 9.min(n)];
    if let Some(&b) = data.get(4) {
        cuts.push((usize::from(b) * 31) % (n + 1));
    }
    cuts
}

/// The first handshake message, gathered from the leading handshake records.
fn handshake_message(data: &[u8]) -> Option<Vec<u8>> {
    let mut handshake = Vec::new();
    let mut rest = data;
    while let [22, 3, _, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let take = len.min(tail.len());
        handshake.extend_from_slice(&tail[..take]);
        rest = &tail[take..];
        if take < len {
            break;
        }
    }
    let [_, a, b, c, ..] = handshake[..] else { return None };
    let total = 4 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
    handshake.get(..total).map(<[u8]>::to_vec)
}

/// `message` as handshake records of at most `size` bytes each.
fn records(message: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in message.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}
