//! Protocol detection on the first bytes of a connection.
//!
//! Pure functions over byte slices, no bindings: they are unit-tested natively
//! and exercised through the real component by the host's tests.
//!
//! Every detector answers [`Match::Yes`], [`Match::No`] or [`Match::Maybe`]
//! ("the bytes so far are a prefix of something I recognise"), so the plugin
//! can ask for more bytes exactly while a prefix is ambiguous.

/// The Flash player's cross-domain policy request; the trailing NUL is
/// optional in the wild.
pub const FLASH_POLICY_REQUEST: &[u8] = b"<policy-file-request/>";

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Methods that make a line HTTP even before its end is seen (a request
/// line cut by the byte cap or the inspect deadline): the RFC 9110 methods,
/// PATCH (RFC 5789) and the common WebDAV ones, in any case.
pub const HTTP_METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"REPORT",
];

/// The longest request line the detector waits for before deciding on the
/// method alone. Longer lines are still HTTP; the HTTP stage judges them.
const MAX_REQUEST_LINE: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The bytes are this protocol.
    Yes,
    /// The bytes so far are a strict prefix of this protocol.
    Maybe,
    /// The bytes cannot be this protocol.
    No,
}

/// What the head of a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    FlashPolicy,
    Tls,
    Http1,
    Http2,
}

/// What [`detect`] made of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// The head is this protocol.
    Found(Protocol),
    /// The head is none of the protocols we know.
    NoMatch,
    /// The head is still a prefix of something we know: more bytes could decide.
    NeedMore,
}

/// Classify `head`.
pub fn detect(head: &[u8]) -> Detection {
    let mut ambiguous = false;
    for (protocol, detector) in [
        (Protocol::FlashPolicy, flash_policy as fn(&[u8]) -> Match),
        (Protocol::Tls, tls_client_hello),
        (Protocol::Http2, http2_preface),
        (Protocol::Http1, http1_request_line),
    ] {
        match detector(head) {
            Match::Yes => return Detection::Found(protocol),
            Match::Maybe => ambiguous = true,
            Match::No => {}
        }
    }
    if ambiguous { Detection::NeedMore } else { Detection::NoMatch }
}

/// Like [`detect`], but for the last call: no more bytes will come, so a
/// prefix is decided on what it is most likely to be.
pub fn detect_final(head: &[u8]) -> Option<Protocol> {
    match detect(head) {
        Detection::Found(protocol) => Some(protocol),
        Detection::NoMatch => None,
        // A request line cut by the byte cap is still HTTP; other prefixes
        // (a lone "<policy", half a TLS record header) are not enough.
        Detection::NeedMore if known_method_then_space(head) => Some(Protocol::Http1),
        Detection::NeedMore => None,
    }
}

/// `<policy-file-request/>`, with or without the NUL.
pub fn flash_policy(head: &[u8]) -> Match {
    prefix_match(head, FLASH_POLICY_REQUEST)
}

/// A TLS record header carrying a handshake message of type ClientHello:
/// content type 22, protocol version 3.x, then handshake type 1.
pub fn tls_client_hello(head: &[u8]) -> Match {
    const HANDSHAKE: u8 = 0x16;
    const CLIENT_HELLO: u8 = 0x01;
    type Check = (usize, fn(u8) -> bool);
    let expected: [Check; 4] =
        [(0, |b| b == HANDSHAKE), (1, |b| b == 0x03), (2, |b| b <= 0x04), (5, |b| b == CLIENT_HELLO)];
    for (index, ok) in expected {
        match head.get(index) {
            None => return Match::Maybe,
            Some(&byte) if !ok(byte) => return Match::No,
            Some(_) => {}
        }
    }
    Match::Yes
}

/// The HTTP/2 prior-knowledge preface.
pub fn http2_preface(head: &[u8]) -> Match {
    prefix_match(head, H2_PREFACE)
}

/// Anything that starts like an HTTP/1 request line:
/// `token WS+ target WS+ "HTTP/" …` up to the line feed, where WS is a space
/// or a tab. The HTTP stage, not this detector, judges whether the line is
/// well formed (a lowercase method is legal; a tab, a double space or
/// `HTTP/1.2` gets an error status there), so a malformed request is never
/// relayed raw past the route plugin.
///
/// `Maybe` while the line could still become one; `No` as soon as it cannot:
/// the first bytes are not a token, the token is longer than any method,
/// the line carries control bytes (binary data, not a request line), or the
/// line ended without ` HTTP/`.
pub fn http1_request_line(head: &[u8]) -> Match {
    // The HTTP/2 preface also looks like a request line: it is HTTP/2's.
    if H2_PREFACE.starts_with(head) || head.starts_with(H2_PREFACE) {
        return if head.len() < H2_PREFACE.len() { Match::Maybe } else { Match::No };
    }
    let method_len = head.iter().take_while(|&&b| is_tchar(b)).count();
    if method_len > MAX_METHOD {
        return Match::No;
    }
    if method_len == head.len() {
        return Match::Maybe;
    }
    if method_len == 0 || !is_ws(head[method_len]) {
        return Match::No;
    }
    let rest = &head[method_len..];
    let (line, ended) = match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        // A CR must be the last byte before the LF; a bare CR ends the line too.
        Some(at) if rest[at] == b'\r' && at + 1 == rest.len() => (&rest[..at], false),
        Some(at) => (&rest[..at], true),
        None => (rest, false),
    };
    if line.iter().any(|&b| b < 0x20 && b != b'\t') {
        return Match::No;
    }
    // `line` starts with the whitespace after the method: the version follows
    // whitespace somewhere after it (a missing or spaced target is the HTTP
    // stage's to refuse).
    let has_version = line.windows(6).any(|w| is_ws(w[0]) && &w[1..] == b"HTTP/");
    if ended {
        return if has_version { Match::Yes } else { Match::No };
    }
    if head.len() > MAX_REQUEST_LINE {
        // A very long line: HTTP when it begins with a method we know.
        return if known_method_then_space(head) { Match::Yes } else { Match::No };
    }
    Match::Maybe
}

/// Longer than the longest registered method (`UPDATEREDIRECTREF`, 17) with room to spare.
const MAX_METHOD: usize = 32;

/// RFC 9110 `tchar`: the bytes of a method token.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The whitespace a near-HTTP request line may use between its parts.
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// True when the head begins with a known method in any case, then a space or tab.
fn known_method_then_space(head: &[u8]) -> bool {
    HTTP_METHODS.iter().any(|m| head.len() > m.len() && head[..m.len()].eq_ignore_ascii_case(m) && is_ws(head[m.len()]))
}

/// `Yes` when `head` starts with `pattern`, `Maybe` when it is a strict
/// prefix of it.
fn prefix_match(head: &[u8], pattern: &[u8]) -> Match {
    if head.starts_with(pattern) {
        Match::Yes
    } else if pattern.starts_with(head) {
        Match::Maybe
    } else {
        Match::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every strict prefix of `whole` must be ambiguous, and `whole` itself
    /// must be detected as `expected`.
    fn check_all_prefixes(whole: &[u8], expected: Protocol) {
        for n in 0..whole.len() {
            assert_eq!(detect(&whole[..n]), Detection::NeedMore, "prefix of {n} bytes");
        }
        assert_eq!(detect(whole), Detection::Found(expected));
    }

    #[test]
    fn flash_policy_every_prefix() {
        check_all_prefixes(b"<policy-file-request/>", Protocol::FlashPolicy);
        assert_eq!(detect(b"<policy-file-request/>\0"), Detection::Found(Protocol::FlashPolicy));
    }

    #[test]
    fn http1_every_prefix() {
        check_all_prefixes(b"GET /index.html HTTP/1.1\r\n", Protocol::Http1);
        check_all_prefixes(b"OPTIONS * HTTP/1.0\n", Protocol::Http1);
        check_all_prefixes(b"PATCH /x?y=1 HTTP/1.1\r\n", Protocol::Http1);
    }

    #[test]
    fn http2_preface_every_prefix() {
        // "P" is also a prefix of POST/PUT/PATCH/PROPFIND, still ambiguous.
        check_all_prefixes(H2_PREFACE, Protocol::Http2);
    }

    #[test]
    fn tls_every_prefix() {
        check_all_prefixes(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], Protocol::Tls);
    }

    #[test]
    fn others_are_decided_early() {
        assert_eq!(detect(b"SSH-2.0-OpenSSH_9.2p1\r\n"), Detection::NoMatch);
        assert_eq!(detect(b"SSH-"), Detection::NeedMore, "a token so far: could be a method");
        assert_eq!(detect(b"SSH-2.0-OpenSSH\r"), Detection::NoMatch);
        assert_eq!(detect(b"\x16\x03\x01\x00\x10\x02"), Detection::NoMatch);
        assert_eq!(detect(b"GET\r\n"), Detection::NoMatch);
        assert_eq!(detect(b"GET(/"), Detection::NoMatch, "not a token");
        assert_eq!(detect(b"GET /x\r\n"), Detection::NoMatch, "HTTP/0.9 has no version");
        assert_eq!(detect(b"GET /\0 HTTP/1.1"), Detection::NoMatch, "binary, not a request line");
        assert_eq!(detect(b"\x00GET"), Detection::NoMatch);
    }

    #[test]
    fn line_protocols_are_not_http() {
        for line in [&b"PING\r\n"[..], b"SET key value\r\n", b"EHLO mail.example\r\n", b"a001 LOGIN u p\r\n"] {
            assert_eq!(detect(line), Detection::NoMatch, "{}", String::from_utf8_lossy(line));
        }
        let mut long_token = vec![b'A'; MAX_METHOD + 1];
        assert_eq!(detect(&long_token), Detection::NoMatch, "longer than any method");
        long_token.truncate(MAX_METHOD);
        assert_eq!(detect(&long_token), Detection::NeedMore);
    }

    /// Lines that start like a request line but are not well formed are
    /// HTTP: the HTTP stage answers them, nothing is relayed raw.
    #[test]
    fn near_http_lines_every_prefix() {
        for line in [
            &b"get /x HTTP/1.1\r\n"[..],
            b"Get /x HTTP/1.1\n",
            b"GET  /x HTTP/1.1\r\n",
            b"GET\t/x HTTP/1.1\r\n",
            b"GET /x\tHTTP/1.1\r\n",
            b"GET /x  HTTP/1.1\r\n",
            b"GET /x HTTP/1.2\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET /a b HTTP/1.1\r\n",
            b"GET HTTP/1.1\r\n",
            b"BREW /pot HTTP/1.1\r\n",
            b"M-SEARCH * HTTP/1.1\r\n",
        ] {
            check_all_prefixes(line, Protocol::Http1);
        }
        // A bare CR ends the line: decided there.
        assert_eq!(detect(b"GET / HTTP/1.1\rHost"), Detection::Found(Protocol::Http1));
        assert_eq!(detect(b"GET / HTTP/1.1\r"), Detection::NeedMore);
    }

    #[test]
    fn a_long_request_line_is_http_when_its_method_is_known() {
        let mut long = b"get /".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_REQUEST_LINE));
        assert_eq!(detect(&long), Detection::Found(Protocol::Http1));
        let mut other = b"frob /".to_vec();
        other.extend(std::iter::repeat_n(b'a', MAX_REQUEST_LINE));
        assert_eq!(detect(&other), Detection::NoMatch);
    }

    /// Found by the `sniff_detect` fuzz target: the sniff stage acts on the
    /// first verdict that is not `NeedMore`, so a prefix must never decide
    /// what the whole line contradicts, however TCP splits the bytes.
    #[test]
    fn a_prefix_never_contradicts_the_whole_line() {
        let mut long = b"GET /".to_vec();
        long.resize(MAX_REQUEST_LINE + 10, b'a');
        long.extend_from_slice(b" HTTP/1.1\r\n");
        let lines: [&[u8]; 4] =
            [b"GET /index\x8f\0\0 HTTP/1.1\r\n", b"GET /a\tb HTTP/1.1\r\n", b"GET /\x01 HTTP/1.0\n", &long];
        for line in lines {
            let whole = detect(line);
            for n in 0..line.len() {
                let part = detect(&line[..n]);
                assert!(part == Detection::NeedMore || part == whole, "{n} bytes: {part:?}, whole: {whole:?}");
            }
        }
    }

    #[test]
    fn final_decision_on_prefixes() {
        assert_eq!(detect_final(b""), None);
        assert_eq!(detect_final(b"<policy-file"), None);
        assert_eq!(detect_final(b"<policy-file-request/>"), Some(Protocol::FlashPolicy));
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 100));
        assert_eq!(detect_final(&long), Some(Protocol::Http1));
        assert_eq!(detect_final(b"post\t/upload"), Some(Protocol::Http1));
        assert_eq!(detect_final(b"HELO mail.example"), None, "not a method we know");
    }
}
