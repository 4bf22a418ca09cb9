//! Header work for proxied requests and responses: hop-by-hop stripping
//! (RFC 9110 section 7.6.1), client-address headers, the route plugin's
//! edits, and the request head handed to the route plugin.

use crate::config::ForwardedHeaders;
use crate::plugin::{ConnFacts, HeaderInterest, RouteRequest};
use http::Request;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;
use std::net::IpAddr;

/// Headers that describe one hop, never forwarded. Names made once: a
/// `&str` name is parsed into a `HeaderName` on every lookup.
pub(crate) const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove hop-by-hop headers, including every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present: most requests carry
    // none, or only `Connection`, and a hashed removal of an absent name
    // costs about as much as one of a present name.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(at) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << at;
        }
    }
    if present & 1 != 0 {
        remove_connection_named(headers);
    }
    for (at, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << at) != 0 {
            headers.remove(name);
        }
    }
}

/// Remove the headers the `Connection` fields name (RFC 9110 section 7.6.1),
/// each by lookup: no list of names is built.
fn remove_connection_named(headers: &mut HeaderMap) {
    for at in 0.. {
        // A clone shares the field's bytes; the map can then change under the loop.
        let Some(value) = headers.get_all(header::CONNECTION).iter().nth(at).cloned() else { break };
        for name in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            // `Connection` itself goes last (see the caller), so every field is read.
            if let Ok(name) = std::str::from_utf8(name)
                && !name.is_empty()
                && !name.eq_ignore_ascii_case("connection")
            {
                headers.remove(name);
            }
        }
    }
}

/// True for an HTTP/1.1 `Upgrade: websocket` request.
pub fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    request.version() == http::Version::HTTP_11
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
}

/// The request's authority: HTTP/2 `:authority` / absolute-form URI, or `Host`.
pub fn authority<B>(request: &Request<B>) -> Option<String> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_string))
}

/// The request head as the route plugin sees it, with only the headers
/// `interest` names copied (the rest would be dropped before the call).
pub fn route_request<B>(request: &Request<B>, interest: &HeaderInterest) -> RouteRequest {
    RouteRequest {
        method: request.method().as_str().to_string(),
        path: request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".to_string()),
        authority: authority(request),
        headers: request
            .headers()
            .iter()
            .filter(|(name, _)| interest.wants(name.as_str()))
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
            .collect(),
    }
}

/// Apply the route plugin's header edits. Names or values that are not
/// valid HTTP are skipped and reported.
pub fn apply_edits(headers: &mut HeaderMap, remove: &[String], set: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut refused = Vec::new();
    for name in remove {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => {
                headers.remove(name);
            }
            Err(_) => refused.push(name.clone()),
        }
    }
    for (name, value) in set {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            (Ok(name), Ok(value)) => {
                headers.insert(name, value);
            }
            _ => refused.push(name.clone()),
        }
    }
    refused
}

// Names made once: a `&str` name is copied into a new `HeaderName` on each insert.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

thread_local! {
    /// The last client address made into an `X-Forwarded-For` value on this
    /// worker: requests from one client, or one load balancer, share it.
    static LAST_FORWARDED_FOR: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// `ip` as a header value, made once for a run of requests from one address.
fn forwarded_for(ip: IpAddr) -> Option<HeaderValue> {
    LAST_FORWARDED_FOR.with_borrow_mut(|last| {
        if let Some((seen, value)) = last.as_ref()
            && *seen == ip
        {
            return Some(value.clone());
        }
        let mut text = Vec::with_capacity(46);
        crate::text::push_ip(&mut text, ip);
        // A boxed slice becomes `Bytes` as it is; clones then share it.
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(text.into_boxed_slice())).ok()?;
        *last = Some((ip, value.clone()));
        Some(value)
    })
}

/// Add the client-address and protocol headers `forwarded` asks for.
pub fn add_forwarded(headers: &mut HeaderMap, conn: &ConnFacts, host: Option<&str>, forwarded: ForwardedHeaders) {
    let client_ip = conn.client_addr.ip();
    let proto = if conn.tls.is_some() { "https" } else { "http" };
    if forwarded.x_forwarded_for {
        if headers.contains_key(&X_FORWARDED_FOR) {
            append_list(headers, X_FORWARDED_FOR, &client_ip.to_string());
        } else if let Some(value) = forwarded_for(client_ip) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if forwarded.x_forwarded_proto {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if forwarded.x_forwarded_host
        && let Some(value) = host.and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert(X_FORWARDED_HOST, value);
    }
    if forwarded.forwarded {
        let node = match client_ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("\"[{ip}]\""),
        };
        let mut element = format!("for={node};proto={proto}");
        if let Some(host) = host.filter(|h| !h.contains(['"', '\\'])) {
            element.push_str(&format!(";host=\"{host}\""));
        }
        append_list(headers, header::FORWARDED, &element);
    }
}

/// Append `item` to a comma-separated list header, joining repeated headers into one.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let mut joined: Vec<String> =
        headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
    joined.push(item.to_string());
    if let Ok(value) = HeaderValue::from_str(&joined.join(", ")) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ListenerName;

    fn conn(client: &str) -> ConnFacts {
        ConnFacts {
            listener: ListenerName::new("test"),
            client_addr: client.parse().unwrap(),
            local_addr: "127.0.0.1:80".parse().unwrap(),
            tls: None,
            hello: None,
            tenant: None,
        }
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_named_by_connection() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "a.test"),
            ("x-kept", "yes"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["host", "x-kept"]);
    }

    #[test]
    fn names_from_every_connection_field_go_in_any_case() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "X-One , connection,"),
            ("connection", "x-two"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
        // No hop-by-hop field at all: nothing moves.
        let mut plain = HeaderMap::new();
        plain.append("host", HeaderValue::from_static("a.test"));
        remove_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn forwarded_for_names_each_request_s_own_client() {
        let only_for = ForwardedHeaders { x_forwarded_for: true, ..ForwardedHeaders::default() };
        for client in ["127.0.0.1:1", "127.0.0.1:2", "[::1]:3", "127.0.0.2:4", "127.0.0.2:5"] {
            let mut headers = HeaderMap::new();
            add_forwarded(&mut headers, &conn(client), None, only_for);
            let ip = client.parse::<std::net::SocketAddr>().unwrap().ip().to_string();
            assert_eq!(headers["x-forwarded-for"], ip.as_str());
        }
    }

    #[test]
    fn forwarded_for_is_appended_not_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        headers.insert("forwarded", HeaderValue::from_static("for=203.0.113.7"));
        let all = ForwardedHeaders { forwarded: true, ..ForwardedHeaders::default() };
        add_forwarded(&mut headers, &conn("[::1]:4000"), Some("a.test:8080"), all);
        assert_eq!(headers["x-forwarded-for"], "203.0.113.7, ::1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "a.test:8080");
        assert_eq!(headers["forwarded"], "for=203.0.113.7, for=\"[::1]\";proto=http;host=\"a.test:8080\"");
    }

    #[test]
    fn invalid_plugin_edits_are_refused_not_applied() {
        let mut headers = HeaderMap::new();
        let set = vec![("x-ok".to_string(), b"1".to_vec()), ("bad name".to_string(), b"1".to_vec())];
        let refused = apply_edits(&mut headers, &[], &set);
        assert_eq!(refused, ["bad name"]);
        assert_eq!(headers["x-ok"], "1");
    }
}
