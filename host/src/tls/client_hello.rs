//! A bounded, careful parser of a TLS ClientHello, for the server name (SNI)
//! and the ALPN protocols the client offers, so a sniff plugin can route
//! an encrypted stream by name without terminating it.
//!
//! The ClientHello may arrive in several TCP segments and even span several
//! TLS records; the parser works on whatever prefix has arrived and says
//! [`Hello::Incomplete`] until the whole handshake message is there. It
//! never reads past the data it is given and never panics on garbage.

/// The largest ClientHello we wait for (a post-quantum key share makes them
/// a few KiB; anything much larger is not worth buffering).
const MAX_HELLO: usize = 16 << 10;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// What a ClientHello asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub server_name: Option<String>,
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    Complete(ClientHello),
    /// A valid prefix: wait for more bytes.
    Incomplete,
    /// Not a ClientHello (or a malformed one); the reason says where.
    Invalid(&'static str),
}

/// Parse the ClientHello at the start of `head`.
pub fn parse(head: &[u8]) -> Hello {
    // Gather the handshake bytes from consecutive handshake records.
    let mut handshake = Vec::new();
    let mut rest = head;
    loop {
        if rest.len() < 5 {
            return if handshake_complete(&handshake) { finish(&handshake) } else { Hello::Incomplete };
        }
        if rest[0] != CONTENT_HANDSHAKE || rest[1] != 3 {
            return if handshake.is_empty() {
                Hello::Invalid("not a TLS handshake record")
            } else {
                finish(&handshake)
            };
        }
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if len == 0 || len > (1 << 14) {
            return Hello::Invalid("bad TLS record length");
        }
        let available = (rest.len() - 5).min(len);
        handshake.extend_from_slice(&rest[5..5 + available]);
        if handshake.len() > MAX_HELLO {
            return Hello::Invalid("ClientHello too large");
        }
        if handshake_complete(&handshake) {
            return finish(&handshake);
        }
        if available < len {
            return Hello::Incomplete;
        }
        rest = &rest[5 + len..];
    }
}

fn handshake_complete(handshake: &[u8]) -> bool {
    handshake.len() >= 4 && handshake.len() >= 4 + u24(&handshake[1..4])
}

fn u24(bytes: &[u8]) -> usize {
    (bytes[0] as usize) << 16 | (bytes[1] as usize) << 8 | bytes[2] as usize
}

fn finish(handshake: &[u8]) -> Hello {
    if handshake.first() != Some(&HANDSHAKE_CLIENT_HELLO) {
        return Hello::Invalid("first handshake message is not a ClientHello");
    }
    if !handshake_complete(handshake) {
        return Hello::Incomplete;
    }
    let body = &handshake[4..4 + u24(&handshake[1..4])];
    match client_hello_body(body) {
        Some(hello) => Hello::Complete(hello),
        None => Hello::Invalid("malformed ClientHello"),
    }
}

/// A cursor over a byte slice whose reads fail instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

fn client_hello_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        return Some(hello); // no extensions at all
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        match kind {
            EXT_SERVER_NAME => hello.server_name = server_name(data),
            EXT_ALPN => hello.alpn = alpn(data)?,
            _ => {}
        }
    }
    Some(hello)
}

fn server_name(data: &[u8]) -> Option<String> {
    let mut list = Reader(Reader(data).vec16()?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == 0 {
            let name = std::str::from_utf8(name).ok()?;
            return Some(name.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    None
}

fn alpn(data: &[u8]) -> Option<Vec<String>> {
    let mut list = Reader(Reader(data).vec16()?);
    let mut protocols = Vec::new();
    while !list.0.is_empty() {
        protocols.push(String::from_utf8_lossy(list.vec8()?).into_owned());
    }
    Some(protocols)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello captured from Python's ssl module for "a.test".
    const CAPTURED: &[u8] = include_bytes!("../../../tests/testdata/tls-client-hello.bin");

    #[test]
    fn captured_hello_gives_its_server_name() {
        match parse(CAPTURED) {
            Hello::Complete(hello) => assert_eq!(hello.server_name.as_deref(), Some("a.test")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for n in 0..CAPTURED.len() {
            assert_eq!(parse(&CAPTURED[..n]), Hello::Incomplete, "prefix of {n} bytes");
        }
    }

    #[test]
    fn a_hello_split_across_records_is_reassembled() {
        let handshake = &CAPTURED[5..];
        let (first, second) = handshake.split_at(100);
        let mut split = Vec::new();
        for part in [first, second] {
            split.extend_from_slice(&[22, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(parse(&split), parse(CAPTURED));
        for n in 0..split.len() {
            assert_eq!(parse(&split[..n]), Hello::Incomplete, "prefix of {n} bytes");
        }
    }

    #[test]
    fn garbage_is_invalid_never_a_panic() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Hello::Invalid(_)));
        assert!(matches!(parse(&[22, 3, 1, 0, 0, 1]), Hello::Invalid(_)));
        // A record claiming a ClientHello whose inner lengths lie.
        let mut lying = vec![22, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0xff, 0xff];
        assert!(matches!(parse(&lying), Hello::Invalid(_)));
        lying.truncate(9);
        assert_eq!(parse(&lying), Hello::Incomplete);
        let mut state = 1u32;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (state >> 16) as u8
                })
                .collect();
            let mut record = vec![22, 3, 1, (len >> 8) as u8, len as u8, 1, 0, (len >> 8) as u8, len as u8];
            record.extend_from_slice(&bytes);
            let _ = parse(&record);
        }
    }
}
