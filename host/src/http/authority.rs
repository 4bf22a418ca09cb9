//! One host per request: the host the route plugin routes on is the host
//! the backend receives, or the request is refused with 400.
//!
//! - More than one `Host` field: 400 (RFC 9112 section 3.2), over HTTP/1 and HTTP/2.
//! - HTTP/1 absolute-form target (`GET http://a.example/x`): the target's
//!   authority replaces `Host` (RFC 9112 section 3.2.2).
//! - HTTP/2 `:authority` and a `host` field that names another host
//!   (after case and default-port normalisation): 400, the request is
//!   malformed (RFC 9113 section 8.3.1). When they agree, `:authority` is used.
//! - Userinfo (`user:pw@`) in the target, `:authority` or `Host`: 400.
//! - HTTP/1.1 (and HTTP/2) without a host: 400; HTTP/1.0 may omit it.
//!
//! After [`settle`], the request carries exactly the one `Host` field the
//! route plugin sees (absent only for HTTP/1.0 without one).

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Version};

/// Why a request's host was refused (each answered with 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("more than one Host header")]
    Duplicate,
    #[error("no Host header")]
    Missing,
    #[error("the Host header is not a valid host")]
    Invalid,
    #[error("userinfo in the request's host")]
    Userinfo,
    #[error("the :authority and Host of an HTTP/2 request name different hosts")]
    Mismatch,
}

/// Decide the request's one host and make `Host` say it (no `Host`: an
/// HTTP/1.0 request without a host).
pub fn settle<B>(request: &mut Request<B>) -> Result<(), HostError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Duplicate);
    }
    // An empty Host names no host: the same as none.
    let host = host.filter(|v| !v.is_empty());
    // The common case: an origin-form target and one plain Host, which is
    // then what the backend gets (the full parse below would say the same).
    if request.uri().authority().is_none() && host.is_some_and(|v| plainly_valid(v.as_bytes())) {
        return Ok(());
    }
    let host = host.map(|v| parse(v.to_str().map_err(|_| HostError::Invalid)?)).transpose()?;
    let target = request.uri().authority().map(|a| parse(a.as_str())).transpose()?;
    let settled = match (target, host) {
        (Some(target), Some(host)) if request.version() == Version::HTTP_2 => {
            let scheme = request.uri().scheme_str().unwrap_or("http");
            if !same_host(&target, &host, scheme) {
                return Err(HostError::Mismatch);
            }
            target
        }
        // HTTP/1 absolute-form: the target wins; HTTP/2 without a host field.
        (Some(target), _) => target,
        // The one Host field already says it (an `Authority` keeps its text as given).
        (None, Some(_)) => return Ok(()),
        (None, None) if request.version() <= Version::HTTP_10 => {
            // An empty Host, if any, is not passed on: the backend gets no host either.
            request.headers_mut().remove(header::HOST);
            return Ok(());
        }
        (None, None) => return Err(HostError::Missing),
    };
    let value = HeaderValue::from_str(settled.as_str()).map_err(|_| HostError::Invalid)?;
    request.headers_mut().insert(header::HOST, value);
    Ok(())
}

/// A host that [`parse`] certainly accepts, checked without building an
/// `Authority` (which copies the text): a DNS name or IPv4 address of
/// letters, digits, dots and hyphens, and a port of digits that fits in 16
/// bits. Anything else takes the full parse.
fn plainly_valid(text: &[u8]) -> bool {
    let (host, port) = match text.iter().position(|&b| b == b':') {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    !host.is_empty()
        && host.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|port| {
            (1..=5).contains(&port.len())
                && port.iter().all(u8::is_ascii_digit)
                && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= u32::from(u16::MAX)
        })
}

/// A host without userinfo, with a numeric port if any.
fn parse(text: &str) -> Result<Authority, HostError> {
    let authority: Authority = text.parse().map_err(|_| HostError::Invalid)?;
    if authority.as_str().contains('@') {
        return Err(HostError::Userinfo);
    }
    // `Authority` leaves the port unchecked: only digits (possibly none) are a port.
    let port = match authority.as_str().rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => authority.as_str().split_once(':').map(|(_, port)| port),
    };
    if let Some(port) = port
        && !port.is_empty()
        && (!port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err())
    {
        return Err(HostError::Invalid);
    }
    if authority.host().is_empty() {
        return Err(HostError::Invalid);
    }
    Ok(authority)
}

/// Scheme-based normalisation (RFC 3986 section 6.2.3): hosts compare
/// without case, and the scheme's default port equals no port.
fn same_host(a: &Authority, b: &Authority, scheme: &str) -> bool {
    let default = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
    a.host().eq_ignore_ascii_case(b.host()) && a.port_u16().unwrap_or(default) == b.port_u16().unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut request = Request::builder().version(version).uri(uri);
        for host in hosts {
            request = request.header("host", *host);
        }
        request.body(()).unwrap()
    }

    /// The one `Host` the request carries after `settle`.
    fn settled(version: Version, uri: &str, hosts: &[&str]) -> Result<Option<String>, HostError> {
        let mut request = request(version, uri, hosts);
        settle(&mut request)?;
        let mut sent = request.headers().get_all("host").iter().map(|v| v.to_str().unwrap().to_string());
        let host = sent.next();
        assert_eq!(sent.next(), None, "one Host at most");
        Ok(host)
    }

    const H1: Version = Version::HTTP_11;
    const H2: Version = Version::HTTP_2;

    #[test]
    fn one_host_routes_and_is_forwarded() {
        assert_eq!(settled(H1, "/x", &["a.test"]), Ok(Some("a.test".into())));
        assert_eq!(settled(H1, "/x", &["[::1]:8080"]), Ok(Some("[::1]:8080".into())));
        assert_eq!(settled(H1, "http://b.test/x", &["a.test"]), Ok(Some("b.test".into())), "the target wins");
        assert_eq!(settled(H1, "http://b.test:8080/x", &[]), Ok(Some("b.test:8080".into())));
        assert_eq!(settled(H2, "http://b.test/x", &[]), Ok(Some("b.test".into())));
        assert_eq!(settled(H2, "https://B.test/x", &["b.TEST:443"]), Ok(Some("B.test".into())));
        assert_eq!(settled(Version::HTTP_10, "/x", &[]), Ok(None));
        assert_eq!(settled(Version::HTTP_10, "/x", &[""]), Ok(None));
    }

    #[test]
    fn the_quick_check_accepts_only_what_the_full_parse_accepts() {
        let mut candidates: Vec<String> = [
            "a.test",
            "A-B.example:8080",
            "127.0.0.1",
            "127.0.0.1:65535",
            "x:0",
            "localhost:1",
            "a..b",
            "-a-",
            "a.test:65536",
            "a.test:99999",
            "a.test:",
            ":80",
            "a.test:8a",
            "a.test:123456",
            "[::1]:80",
            "u@a",
            "a b",
            "a_b",
            "a%41",
            "a.test:80:81",
            "",
            "é.test",
            "a.test/x",
            "a.test?",
        ]
        .map(String::from)
        .to_vec();
        // Every string of up to three characters over an alphabet of the interesting ones.
        let alphabet = ['a', '1', '.', '-', ':', '@', '[', ']', '%', '_', ' '];
        for x in alphabet {
            for y in alphabet {
                for z in alphabet {
                    candidates.extend([format!("{x}"), format!("{x}{y}"), format!("{x}{y}{z}")]);
                }
            }
        }
        let mut quick = 0;
        for text in &candidates {
            if plainly_valid(text.as_bytes()) {
                quick += 1;
                assert!(parse(text).is_ok(), "{text:?} passed the quick check but not the full parse");
            }
        }
        assert!(quick > 100, "the quick check took {quick} of {} candidates", candidates.len());
        assert!(plainly_valid(b"a.test:8080") && !plainly_valid(b"a.test:65536") && !plainly_valid(b"u@a.test"));
    }

    #[test]
    fn confusing_hosts_are_refused() {
        assert_eq!(settled(H1, "/x", &["a.test", "b.test"]), Err(HostError::Duplicate));
        assert_eq!(settled(H1, "/x", &["a.test", "a.test"]), Err(HostError::Duplicate));
        assert_eq!(settled(H2, "http://a.test/x", &["a.test", "b.test"]), Err(HostError::Duplicate));
        assert_eq!(settled(H2, "http://a.test/x", &["b.test"]), Err(HostError::Mismatch));
        assert_eq!(settled(H2, "http://a.test/x", &["a.test:8080"]), Err(HostError::Mismatch));
        assert_eq!(settled(H1, "/x", &[]), Err(HostError::Missing));
        assert_eq!(settled(H1, "/x", &[""]), Err(HostError::Missing));
        assert_eq!(settled(H1, "http://u:p@a.test/x", &["a.test"]), Err(HostError::Userinfo));
        assert_eq!(settled(H1, "/x", &["u@a.test"]), Err(HostError::Userinfo));
        for bad in ["a b", "a.test:http", "a.test:99999", ":80", "a.test/x"] {
            assert_eq!(settled(H1, "/x", &[bad]), Err(HostError::Invalid), "{bad}");
        }
    }
}
