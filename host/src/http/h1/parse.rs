//! Request and response heads, parsed once, and the framing of their bodies
//! by RFC 9112 section 6, strictly: anything that two parsers could read
//! differently is refused, never guessed at.
//!
//! Refused (a request: 400; a response: 502): `Content-Length` with
//! `Transfer-Encoding`; `Content-Length` values that differ or are not plain
//! digits; a `Transfer-Encoding` whose last coding is not `chunked`, or with
//! `chunked` twice; a bare LF anywhere in the head; obs-fold (httparse refuses
//! it, as it refuses bare CR, bad whitespace and invalid names or values).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use std::mem::MaybeUninit;

/// Most header fields in one head (hyper's limit too).
pub const MAX_HEADERS: usize = 100;

/// Room for a head's fields, left uninitialised: httparse writes the ones it
/// finds. Filling 100 empty fields first (3.2 KB) cost more than parsing a
/// short head, three times per request.
pub fn field_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [MaybeUninit::uninit(); MAX_HEADERS]
}

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body at all.
    None,
    Length(u64),
    Chunked,
    /// Responses only: until the backend closes.
    ToClose,
}

/// Why a head is not served here.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("the head is too large")]
    TooLarge,
    /// Valid, but for hyper's path (an upgrade, `Expect`, HTTP/1.0 with a transfer coding …).
    #[error("served by the general path")]
    Unusual,
}

/// A parsed request head.
pub struct RequestHead {
    pub request: Request<()>,
    pub body: Body,
    /// The client asked to close after this exchange.
    pub close: bool,
    /// The head's length in bytes.
    pub len: usize,
}

/// Parse a request head at the start of `buf`. `Ok(None)`: incomplete.
pub fn request(buf: &[u8], max: usize) -> Result<Option<RequestHead>, HeadError> {
    let mut slots = field_slots();
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Invalid("malformed request head")),
    };
    if len > max {
        return Err(HeadError::TooLarge);
    }
    refuse_bare_lf(&buf[..len])?;
    // httparse reads only HTTP/1.0 and HTTP/1.1.
    let http10 = parsed.version == Some(0);
    let (method, target) = (parsed.method.unwrap_or(""), parsed.path.unwrap_or(""));
    if !target.starts_with('/') || method == "CONNECT" {
        return Err(HeadError::Unusual);
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Invalid("invalid method"))?;
    // Room for the fields the proxy adds (X-Forwarded-*, the request id)
    // without growing the map.
    let mut headers = super::pool::header_map(parsed.headers.len() + 4);
    // One copy of the head; every value is a slice of it, not an allocation of its own.
    let shared = Bytes::copy_from_slice(&buf[..len]);
    let slice = |part: &[u8]| {
        let at = part.as_ptr() as usize - buf.as_ptr() as usize;
        shared.slice(at..at + part.len())
    };
    let uri =
        Uri::from_maybe_shared(slice(target.as_bytes())).map_err(|_| HeadError::Invalid("invalid request target"))?;
    let mut framing = Framing::default();
    let (mut close, mut keep_alive) = (false, false);
    for field in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| HeadError::Invalid("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(slice(field.value))
            .map_err(|_| HeadError::Invalid("invalid header value"))?;
        if name == header::UPGRADE || name == header::EXPECT {
            return Err(HeadError::Unusual);
        }
        if name == header::CONNECTION {
            for token in tokens(field.value) {
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return Err(HeadError::Unusual);
                }
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        framing.note(name.as_str().as_bytes(), field.value)?;
        headers.append(name, value);
    }
    // HTTP/1.0 has no transfer codings (RFC 9112 section 6.1): hyper's path
    // answers such a message as it always has.
    if http10 && framing.codings > 0 {
        return Err(HeadError::Unusual);
    }
    let body = match framing.body()? {
        Some(body) => body,
        None => Body::None,
    };
    // An HTTP/1.0 connection closes after each exchange unless the client asks otherwise.
    let close = close || (http10 && !keep_alive);
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
    *request.headers_mut() = headers;
    Ok(Some(RequestHead { request, body, close, len }))
}

/// A parsed response head: what the proxy passes on is re-read from the
/// head by `serve::response_head`.
pub struct ResponseHead {
    pub status: u16,
    pub body: Body,
    /// The backend connection may carry another request.
    pub reusable: bool,
    pub len: usize,
}

/// Parse a response head to a request (`head_request`: a HEAD) at the start of `buf`.
pub fn response(buf: &[u8], head_request: bool, max: usize) -> Result<Option<ResponseHead>, HeadError> {
    let mut slots = field_slots();
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Invalid("malformed response head")),
    };
    refuse_bare_lf(&buf[..len])?;
    let status = parsed.code.unwrap_or(0);
    let mut framing = Framing::default();
    let mut reusable = parsed.version == Some(1);
    // Names compared as bytes: httparse has checked they are tokens, and
    // nothing here needs a `HeaderName` (`serve::response_head` re-reads the head).
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") && tokens(field.value).any(|t| t.eq_ignore_ascii_case(b"close")) {
            reusable = false;
        }
        framing.note(name, field.value)?;
    }
    let framed = framing.body()?;
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Body::None
    } else {
        match framed {
            Some(body) => body,
            None => {
                reusable = false;
                Body::ToClose
            }
        }
    };
    Ok(Some(ResponseHead { status, body, reusable, len }))
}

/// The length and framing headers seen so far.
#[derive(Default)]
struct Framing {
    length: Option<u64>,
    /// How many transfer codings, over every Transfer-Encoding field.
    codings: usize,
    /// The last coding seen is `chunked`.
    chunked_seen: bool,
}

impl Framing {
    /// Note one field (`name` in any case).
    fn note(&mut self, name: &[u8], value: &[u8]) -> Result<(), HeadError> {
        if name.eq_ignore_ascii_case(b"content-length") {
            // A list of equal values is one length (RFC 9112 section 6.3, item 5).
            for item in value.split(|&b| b == b',') {
                let item = item.trim_ascii();
                if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                    return Err(HeadError::Invalid("a Content-Length that is not a number"));
                }
                let length = std::str::from_utf8(item)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or(HeadError::Invalid("a Content-Length too large"))?;
                if self.length.is_some_and(|seen| seen != length) {
                    return Err(HeadError::Invalid("Content-Length values that differ"));
                }
                self.length = Some(length);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if coding.is_empty() {
                    continue;
                }
                if self.chunked_seen {
                    return Err(HeadError::Invalid("a transfer coding after chunked"));
                }
                self.chunked_seen = coding.eq_ignore_ascii_case(b"chunked");
                self.codings += 1;
            }
            if self.codings == 0 {
                return Err(HeadError::Invalid("an empty Transfer-Encoding"));
            }
        }
        Ok(())
    }

    /// `None`: no framing header at all.
    fn body(&self) -> Result<Option<Body>, HeadError> {
        match (self.length, self.codings) {
            (Some(_), 1..) => Err(HeadError::Invalid("both Content-Length and Transfer-Encoding")),
            (Some(length), 0) => Ok(Some(Body::Length(length))),
            (None, 0) => Ok(None),
            (None, 1) if self.chunked_seen => Ok(Some(Body::Chunked)),
            // `gzip, chunked` is legal: hyper's path serves it.
            (None, _) if self.chunked_seen => Err(HeadError::Unusual),
            (None, _) => Err(HeadError::Invalid("a Transfer-Encoding that does not end in chunked")),
        }
    }
}

/// Comma-separated tokens of a field value.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// httparse accepts a bare LF as a line end; RFC 9112 lets a recipient, and
/// sluice does not: a bare LF could end a line for one parser and not another.
fn refuse_bare_lf(head: &[u8]) -> Result<(), HeadError> {
    // memchr jumps from LF to LF; a byte loop cost ~5 instructions per byte of every head.
    // (An LF that starts the head ends an empty line httparse skips, as before.)
    if memchr::memchr_iter(b'\n', head).any(|at| at > 0 && head[at - 1] != b'\r') {
        return Err(HeadError::Invalid("a bare LF line ending"));
    }
    Ok(())
}

/// One chunk-size line at the start of `buf`: `Ok(Some((size, line length)))`,
/// `Ok(None)` when incomplete.
pub fn chunk_line(buf: &[u8]) -> Result<Option<(u64, usize)>, &'static str> {
    const MAX_LINE: usize = 4096;
    let Some(lf) = buf.iter().take(MAX_LINE).position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE { Err("a chunk-size line too long") } else { Ok(None) };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err("a chunk-size line without CRLF");
    }
    let line = &buf[..lf - 1];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err("a bad chunk size");
    }
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    if !rest.is_empty() && (rest[0] != b';' || rest.iter().any(|&b| b == b'\r' || b == 0 || b == 0x7f)) {
        return Err("a bad chunk extension");
    }
    let size = line[..digits].iter().fold(0u64, |n, &b| (n << 4) | u64::from((b as char).to_digit(16).unwrap_or(0)));
    Ok(Some((size, lf + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(head: &str) -> Result<Option<RequestHead>, HeadError> {
        request(head.as_bytes(), 16 * 1024)
    }

    #[test]
    fn framing_rules() {
        let body = |head: &str| req(head).map(|h| h.map(|h| h.body));
        assert_eq!(body("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(Some(Body::None)));
        assert_eq!(
            body("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Ok(Some(Body::Length(5)))
        );
        assert_eq!(body("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"), Ok(Some(Body::Chunked)));
        assert!(matches!(body("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"), Err(HeadError::Invalid(_))));
        assert!(matches!(body("POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n"), Err(HeadError::Invalid(_))));
        assert!(matches!(body("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), Err(HeadError::Invalid(_))));
        assert_eq!(body("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), Err(HeadError::Unusual));
        assert_eq!(body("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(HeadError::Unusual));
        assert_eq!(body("GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n"), Err(HeadError::Unusual));
        assert!(matches!(body("GET / HTTP/1.1\r\nA: b\n\r\n"), Err(HeadError::Invalid(_))));
        assert_eq!(body("GET / HTTP/1.1\r\nA: b\r\n"), Ok(None));
    }

    #[test]
    fn http10_closes_unless_asked_to_keep_alive() {
        let head = |text: &str| req(text).unwrap().unwrap();
        let plain = head("GET / HTTP/1.0\r\n\r\n");
        assert_eq!((plain.request.version(), plain.close, plain.body), (Version::HTTP_10, true, Body::None));
        assert!(!head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").close);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").close);
        assert_eq!(head("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n").body, Body::Length(3));
        let eleven = head("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!((eleven.request.version(), eleven.close), (Version::HTTP_11, false));
    }

    #[test]
    fn chunk_lines() {
        assert_eq!(chunk_line(b"1a\r\n"), Ok(Some((26, 4))));
        assert_eq!(chunk_line(b"0;x=y\r\n"), Ok(Some((0, 7))));
        assert_eq!(chunk_line(b"1a"), Ok(None));
        assert!(chunk_line(b"zz\r\n").is_err());
        assert!(chunk_line(b"5\n").is_err());
        assert!(chunk_line(b"ffffffffffffffff1\r\n").is_err());
        assert!(chunk_line(b"5 x\r\n").is_err());
    }
}
