//! Compiled rules and request matching, independent of the bindings.
//!
//! [`Router::new`] checks the [`Settings`] once and compiles them; [`Router::pick`]
//! then decides each request. Everything here is plain Rust over borrowed
//! request facts, unit-tested natively. No input can make it panic: request
//! data is only ever searched, split and compared, never indexed.

use crate::{AffinitySettings, ResponseSettings, RuleSettings, Settings};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The status of the built-in `not-found` response.
pub const DEFAULT_NOT_FOUND_STATUS: u16 = 404;
/// The body of the built-in `not-found` response.
pub const DEFAULT_NOT_FOUND_BODY: &str = "sluice: no route for this request\n";
/// The content type given to a response body when the settings name none.
pub const DEFAULT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// One header: a lower-case name and its raw value.
pub type Header = (String, Vec<u8>);

/// The facts about a request that rules look at, borrowed from the
/// bindings' record.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, e.g. "/socket.io/?EIO=4&transport=polling".
    pub path: &'a str,
    /// HTTP/2 `:authority` or the HTTP/1 `Host` header.
    pub authority: Option<&'a str>,
    /// Lower-case names (matched case-insensitively all the same), raw values.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The client's address as `"ip:port"` (`"[v6]:port"` for IPv6).
    pub client_addr: &'a str,
}

impl<'a> Request<'a> {
    /// Every value of the header `name`, in order.
    fn header_values<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        let headers: &'a [(&'a str, &'a [u8])] = self.headers;
        headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Forward(Forward),
    Respond(Response),
}

/// Send the request on to a backend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forward {
    pub backend: String,
    pub affinity: Option<String>,
    pub set_headers: Vec<Header>,
    pub remove_headers: Vec<String>,
    pub rewrite_path: Option<String>,
}

/// Answer the client directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

/// The checked, compiled settings.
#[derive(Debug, Clone)]
pub struct Router {
    rules: Vec<Rule>,
    /// What unmatched requests get: `default-backend` or `not-found`.
    fallback: Action,
}

impl Default for Router {
    /// No rules and no default backend: every request gets the built-in 404.
    fn default() -> Self {
        Self { rules: Vec::new(), fallback: Action::Respond(default_not_found()) }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    host: Option<HostPattern>,
    path_prefix: Option<String>,
    method: Option<String>,
    headers: Vec<(String, HeaderMatch)>,
    action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// The whole host, lower-case.
    Exact(String),
    /// From "*.example.com": the suffix ".example.com", lower-case.
    Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderMatch {
    Present,
    Exactly(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Action {
    Forward {
        /// Backend and header edits; affinity and rewrite are filled per request.
        template: Forward,
        affinity: Option<AffinitySettings>,
        /// The prefix to strip (the rule's `path-prefix`) when `strip-prefix` is set.
        strip: Option<String>,
        /// A share of the requests that goes to other backends (split.rs).
        split: Option<crate::split::Split>,
    },
    Respond(Response),
}

impl Router {
    /// Check `settings` and compile them. The error names the problem and,
    /// for a rule, its position (counted from 1).
    pub fn new(settings: Settings) -> Result<Self, String> {
        let fallback = match (settings.default_backend, settings.not_found) {
            (Some(_), Some(_)) => {
                return Err("set `default-backend` or `not-found`, not both: with a default backend \
                            no request is left unmatched"
                    .to_string());
            }
            (Some(backend), None) => Action::Forward {
                template: Forward { backend: backend_name("default-backend", backend)?, ..Forward::default() },
                affinity: None,
                strip: None,
                split: None,
            },
            (None, Some(not_found)) => Action::Respond(not_found_response(not_found)?),
            (None, None) => Action::Respond(default_not_found()),
        };
        let rules = settings
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| compile_rule(rule).map_err(|e| format!("rule {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules, fallback })
    }

    /// Every backend a decision can name: each rule's and `default-backend`.
    pub fn backends(&self) -> Vec<String> {
        let mut backends: Vec<String> = Vec::new();
        for action in self.rules.iter().map(|rule| &rule.action).chain([&self.fallback]) {
            if let Action::Forward { template, split, .. } = action {
                let split = split.iter().flat_map(|split| split.backends());
                for backend in [template.backend.as_str()].into_iter().chain(split) {
                    if !backends.iter().any(|known| known == backend) {
                        backends.push(backend.to_string());
                    }
                }
            }
        }
        backends
    }

    /// Every request header a rule reads: the headers it matches on, and the
    /// header or cookie it takes an affinity key from (lower-case).
    pub fn headers_read(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let mut add = |name: &str| {
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        };
        for rule in &self.rules {
            rule.headers.iter().for_each(|(name, _)| add(name));
            match &rule.action {
                Action::Forward { affinity: Some(AffinitySettings::Header(name)), .. } => add(name),
                Action::Forward { affinity: Some(AffinitySettings::Cookie(_)), .. } => add("cookie"),
                _ => {}
            }
            if let Action::Forward { split: Some(split), .. } = &rule.action
                && let Some(name) = split.header_read()
            {
                add(&name);
            }
        }
        names
    }

    /// Decide `req`: the first matching rule's action, else the fallback.
    pub fn pick(&self, req: &Request) -> Decision {
        let action = self.rules.iter().find(|rule| rule.matches(req)).map_or(&self.fallback, |rule| &rule.action);
        match action {
            Action::Respond(response) => Decision::Respond(response.clone()),
            Action::Forward { template, affinity, strip, split } => {
                let mut forward = template.clone();
                if let Some(backend) = split.as_ref().and_then(|split| split.pick(req)) {
                    backend.clone_into(&mut forward.backend);
                }
                forward.affinity = affinity.as_ref().and_then(|source| affinity_key(source, req));
                forward.rewrite_path = strip.as_deref().map(|prefix| strip_prefix(req.path, prefix));
                Decision::Forward(forward)
            }
        }
    }
}

impl Rule {
    fn matches(&self, req: &Request) -> bool {
        if let Some(pattern) = &self.host {
            match req.authority {
                Some(authority) if pattern.matches(authority_host(authority)) => {}
                _ => return false,
            }
        }
        if let Some(prefix) = &self.path_prefix
            && !path_only(req.path).starts_with(prefix.as_str())
        {
            return false;
        }
        if let Some(method) = &self.method
            && req.method != method
        {
            return false;
        }
        self.headers.iter().all(|(name, want)| {
            req.header_values(name).any(|value| match want {
                HeaderMatch::Present => true,
                HeaderMatch::Exactly(expected) => value == expected.as_slice(),
            })
        })
    }
}

impl HostPattern {
    fn parse(pattern: &str) -> Result<Self, String> {
        let lower = pattern.trim().to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(format!("host {pattern:?} is empty"));
        }
        if name.contains('*') {
            return Err(format!("host {pattern:?}: the only wildcard allowed is a leading \"*.\""));
        }
        if name.contains(|c: char| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#')) {
            return Err(format!("host {pattern:?} is not a host name"));
        }
        let bracketed = name.starts_with('[') && name.ends_with(']');
        if name.contains(':') && !bracketed {
            return Err(format!("host {pattern:?}: leave out the port (ports are ignored; IPv6 goes in brackets)"));
        }
        Ok(if wildcard { Self::Subdomains(format!(".{name}")) } else { Self::Exact(name.to_string()) })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Subdomains(suffix) => {
                let host = host.as_bytes();
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix.as_bytes()))
            }
        }
    }
}

/// The host part of an authority: without userinfo, port or a trailing dot.
/// `"[::1]:8080"` gives `"[::1]"`, `"Example.COM.:443"` gives `"Example.COM"`.
pub fn authority_host(authority: &str) -> &str {
    let authority = authority.trim();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, rest)| rest);
    let host = if host_port.starts_with('[') {
        host_port.find(']').and_then(|end| host_port.get(..=end)).unwrap_or(host_port)
    } else {
        host_port.split_once(':').map_or(host_port, |(host, _)| host)
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// The path without its query string (or a fragment, should one be sent).
pub fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// `path` without `prefix`, always starting with '/', query string kept.
pub fn strip_prefix(path: &str, prefix: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    if rest.starts_with('/') { rest.to_string() } else { format!("/{rest}") }
}

/// The sticky-session key `source` gives for `req`, if it is there and not empty.
fn affinity_key(source: &AffinitySettings, req: &Request) -> Option<String> {
    match source {
        AffinitySettings::ClientIp => client_ip(req.client_addr),
        AffinitySettings::Cookie(name) => cookie(req, name).map(lossy),
        AffinitySettings::Header(name) => {
            req.header_values(name).map(trim_ows).find(|value| !value.is_empty()).map(lossy)
        }
        AffinitySettings::Query(name) => query_param(req.path, name).map(str::to_string),
    }
}

/// The IP part of `"ip:port"` or `"[ipv6]:port"`. IPv4-mapped IPv6 addresses
/// become IPv4, so a client keeps its key across dual-stack listeners.
pub fn client_ip(addr: &str) -> Option<String> {
    let addr = addr.trim();
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return Some(socket.ip().to_canonical().to_string());
    }
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Some(ip.to_canonical().to_string());
    }
    // Something std does not parse (a zone name, say): cut the port by hand.
    let host = match addr.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None if addr.matches(':').count() == 1 => addr.split(':').next().unwrap_or(addr),
        None => addr,
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// The first non-empty value of cookie `name` across every `Cookie` header
/// ("a=1; b=2"). Cookie names are case-sensitive.
pub fn cookie<'a>(req: &Request<'a>, name: &str) -> Option<&'a [u8]> {
    req.header_values("cookie").flat_map(|value| value.split(|&b| b == b';')).find_map(|pair| {
        let pair = trim_ows(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (pair.get(..eq)?, trim_ows(pair.get(eq + 1..)?));
        (trim_ows(key) == name.as_bytes() && !value.is_empty()).then_some(value)
    })
}

/// The first non-empty value of query parameter `name` (names and values
/// compared and returned as sent, without percent-decoding).
pub fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = path.split_once('?')?;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name && !value.is_empty()).then_some(value)
    })
}

/// Without leading and trailing spaces and tabs.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---- Checking and compiling the settings ----

fn compile_rule(rule: RuleSettings) -> Result<Rule, String> {
    let host = rule.host.as_deref().map(HostPattern::parse).transpose()?;
    if let Some(prefix) = &rule.path_prefix
        && !prefix.starts_with('/')
    {
        return Err(format!("path-prefix {prefix:?} must start with '/'"));
    }
    if let Some(method) = &rule.method
        && (method.is_empty() || !method.bytes().all(is_tchar))
    {
        return Err(format!("method {method:?} is not an HTTP method"));
    }
    let headers = header_map("headers", rule.headers.unwrap_or_default(), false)?
        .into_iter()
        .map(|(name, value)| (name, if value == b"*" { HeaderMatch::Present } else { HeaderMatch::Exactly(value) }))
        .collect();
    let action = match (rule.backend, rule.respond) {
        (Some(_), Some(_)) => return Err("set either `backend` or `respond`, not both".to_string()),
        (None, None) => return Err("needs `backend` (forward) or `respond` (answer directly)".to_string()),
        (None, Some(respond)) => {
            let forward_only = [
                ("affinity", rule.affinity.is_some()),
                ("strip-prefix", rule.strip_prefix.is_some()),
                ("set-headers", rule.set_headers.is_some()),
                ("remove-headers", rule.remove_headers.is_some()),
                ("split", rule.split.is_some() || rule.split_key.is_some()),
            ];
            if let Some((key, _)) = forward_only.iter().find(|(_, set)| *set) {
                return Err(format!("`{key}` needs `backend`, and this rule has `respond`"));
            }
            let Some(status) = respond.status else {
                return Err("respond needs a `status`".to_string());
            };
            Action::Respond(response("respond", status, respond.headers, respond.body.unwrap_or_default())?)
        }
        (Some(backend), None) => {
            let backend = backend_name("backend", backend)?;
            let affinity = rule.affinity.map(|source| key_source("affinity", source)).transpose()?;
            let strip = match (rule.strip_prefix, &rule.path_prefix) {
                (Some(true), None) => return Err("strip-prefix needs a path-prefix".to_string()),
                (Some(true), Some(prefix)) => Some(prefix.clone()),
                _ => None,
            };
            let set_headers = header_map("set-headers", rule.set_headers.unwrap_or_default(), true)?;
            let mut remove_headers: Vec<String> = Vec::new();
            for name in rule.remove_headers.unwrap_or_default() {
                let name = framing_checked("remove-headers", header_name("remove-headers", &name)?)?;
                if set_headers.iter().any(|(set, _)| *set == name) {
                    return Err(format!("header {name:?} is both in set-headers and remove-headers"));
                }
                if !remove_headers.contains(&name) {
                    remove_headers.push(name);
                }
            }
            let split = match (rule.split, rule.split_key) {
                (None, Some(_)) => return Err("split-key needs split".to_string()),
                (None, None) => None,
                (Some(entries), key) => {
                    let key = key.map(|source| key_source("split-key", source)).transpose()?;
                    Some(crate::split::Split::new(entries, key)?)
                }
            };
            Action::Forward {
                template: Forward { backend, set_headers, remove_headers, ..Forward::default() },
                affinity,
                strip,
                split,
            }
        }
    };
    Ok(Rule { host, path_prefix: rule.path_prefix, method: rule.method, headers, action })
}

fn backend_name(key: &str, name: String) -> Result<String, String> {
    if name.trim().is_empty() { Err(format!("{key} is empty")) } else { Ok(name) }
}

fn default_not_found() -> Response {
    Response {
        status: DEFAULT_NOT_FOUND_STATUS,
        headers: vec![("content-type".to_string(), DEFAULT_CONTENT_TYPE.as_bytes().to_vec())],
        body: DEFAULT_NOT_FOUND_BODY.as_bytes().to_vec(),
    }
}

fn not_found_response(settings: ResponseSettings) -> Result<Response, String> {
    let body = settings.body.unwrap_or_else(|| DEFAULT_NOT_FOUND_BODY.to_string());
    response("not-found", settings.status.unwrap_or(DEFAULT_NOT_FOUND_STATUS), settings.headers, body)
}

fn response(
    key: &str,
    status: u16,
    headers: Option<BTreeMap<String, String>>,
    body: String,
) -> Result<Response, String> {
    if !(200..=599).contains(&status) {
        return Err(format!("{key} status {status} must be between 200 and 599"));
    }
    let mut headers = header_map(&format!("{key} headers"), headers.unwrap_or_default(), true)?;
    if !body.is_empty() && !headers.iter().any(|(name, _)| name == "content-type") {
        headers.push(("content-type".to_string(), DEFAULT_CONTENT_TYPE.as_bytes().to_vec()));
    }
    Ok(Response { status, headers, body: body.into_bytes() })
}

/// Lower-cased, checked headers from a settings table. `edits` marks tables
/// whose headers are sent, where the message-framing headers are refused.
fn header_map(key: &str, map: BTreeMap<String, String>, edits: bool) -> Result<Vec<Header>, String> {
    let mut headers: Vec<Header> = Vec::with_capacity(map.len());
    for (name, value) in map {
        let mut name = header_name(key, &name)?;
        if edits {
            name = framing_checked(key, name)?;
        }
        if headers.iter().any(|(seen, _)| *seen == name) {
            return Err(format!("{key}: header {name:?} is given twice"));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(format!("{key}: the value of {name:?} contains a control character"));
        }
        headers.push((name, value.into_bytes()));
    }
    // Sorted by their lower-case names, whatever case the settings used.
    headers.sort();
    Ok(headers)
}

/// A key source (`affinity`, `split-key`) whose name can match something:
/// a header name lower-cased, a cookie or query parameter name checked.
fn key_source(key: &str, source: AffinitySettings) -> Result<AffinitySettings, String> {
    match source {
        AffinitySettings::Header(name) => Ok(AffinitySettings::Header(header_name(key, &name)?)),
        AffinitySettings::Cookie(name) if name.is_empty() || !name.bytes().all(is_tchar) => {
            Err(format!("{key}: {name:?} is not a valid cookie name"))
        }
        AffinitySettings::Query(name) if name.is_empty() || name.contains(['&', '=', '#']) => {
            Err(format!("{key}: {name:?} is not a valid query parameter name"))
        }
        other => Ok(other),
    }
}

/// `name` lower-cased, if it is a valid header name.
fn header_name(key: &str, name: &str) -> Result<String, String> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!("{key}: {name:?} is not a valid header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// Refuses the headers that frame a message: the host sets those itself.
fn framing_checked(key: &str, name: String) -> Result<String, String> {
    if name == "content-length" || name == "transfer-encoding" {
        return Err(format!("{key}: {name:?} cannot be changed (the host frames messages itself)"));
    }
    Ok(name)
}

/// A `tchar` of RFC 9110: what header names and methods are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_hosts() {
        for (authority, host) in [
            ("example.test", "example.test"),
            ("Example.TEST:8443", "Example.TEST"),
            ("example.test.", "example.test"),
            ("example.test.:80", "example.test"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("[::1", "[::1"),
            ("user:pw@host:1", "host"),
            (" host ", "host"),
            ("", ""),
            (":", ""),
        ] {
            assert_eq!(authority_host(authority), host, "{authority}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(path_only("/a/b?c=/d#e"), "/a/b");
        assert_eq!(path_only("/a#b?c"), "/a");
        assert_eq!(path_only("?x"), "");
        assert_eq!(path_only(""), "");
        assert_eq!(strip_prefix("/api/x?y=1", "/api"), "/x?y=1");
        assert_eq!(strip_prefix("/api/x?y=1", "/api/"), "/x?y=1");
        assert_eq!(strip_prefix("/api?y=1", "/api"), "/?y=1");
        assert_eq!(strip_prefix("/api", "/api"), "/");
        assert_eq!(strip_prefix("/apix", "/api"), "/x");
        assert_eq!(strip_prefix("/é/ü", "/é"), "/ü");
    }

    #[test]
    fn client_ips() {
        assert_eq!(client_ip("10.0.0.1:80").as_deref(), Some("10.0.0.1"));
        assert_eq!(client_ip("[::1]:5").as_deref(), Some("::1"));
        assert_eq!(client_ip("[::ffff:10.0.0.1]:5").as_deref(), Some("10.0.0.1"));
        assert_eq!(client_ip("[::1").as_deref(), Some("::1"));
        assert_eq!(client_ip("host:80").as_deref(), Some("host"));
        assert_eq!(client_ip(" "), None);
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("/?a=1&b=2", "b"), Some("2"));
        assert_eq!(query_param("/?a=1&&b=x=y", "b"), Some("x=y"));
        assert_eq!(query_param("/?a=1", "b"), None);
        assert_eq!(query_param("/", "a"), None);
    }

    #[test]
    fn ows_trimming() {
        assert_eq!(trim_ows(b" \ta b\t "), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b"x"), b"x");
    }

    #[test]
    fn host_patterns() {
        assert_eq!(HostPattern::parse("*.Example.COM."), Ok(HostPattern::Subdomains(".example.com".into())));
        assert_eq!(HostPattern::parse("API.test"), Ok(HostPattern::Exact("api.test".into())));
        assert!(HostPattern::parse("").is_err());
        assert!(HostPattern::parse("*.*.a").is_err());
        assert!(HostPattern::parse("::1").is_err());
    }
}
