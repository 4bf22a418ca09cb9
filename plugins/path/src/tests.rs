//! End-to-end tests: JSON settings (what `init` receives) in, decisions out.

use super::*;
use crate::rules::{DEFAULT_CONTENT_TYPE, DEFAULT_NOT_FOUND_BODY};

fn router(settings: &str) -> Router {
    init(settings).unwrap_or_else(|e| panic!("settings refused: {e}"))
}

fn init_error(settings: &str) -> String {
    match init(settings) {
        Ok(_) => panic!("settings accepted: {settings}"),
        Err(e) => {
            assert!(e.starts_with("path plugin settings: "), "{e}");
            e
        }
    }
}

/// A request to build up in a test; defaults to `GET` from 192.0.2.7.
#[derive(Clone)]
struct Req {
    method: &'static str,
    path: &'static str,
    authority: Option<&'static str>,
    headers: Vec<(&'static str, &'static [u8])>,
    client_addr: &'static str,
}

fn get(path: &'static str) -> Req {
    Req { method: "GET", path, authority: Some("example.test"), headers: Vec::new(), client_addr: "192.0.2.7:50123" }
}

impl Req {
    fn method(mut self, method: &'static str) -> Self {
        self.method = method;
        self
    }
    fn authority(mut self, authority: Option<&'static str>) -> Self {
        self.authority = authority;
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value.as_bytes()));
        self
    }
    fn raw_header(mut self, name: &'static str, value: &'static [u8]) -> Self {
        self.headers.push((name, value));
        self
    }
    fn client(mut self, addr: &'static str) -> Self {
        self.client_addr = addr;
        self
    }
    fn pick(&self, router: &Router) -> Decision {
        router.pick(&Request {
            method: self.method,
            path: self.path,
            authority: self.authority,
            headers: &self.headers,
            client_addr: self.client_addr,
        })
    }
    fn forward(&self, router: &Router) -> Forward {
        match self.pick(router) {
            Decision::Forward(forward) => forward,
            other => panic!("expected a forward for {}, got {other:?}", self.path),
        }
    }
    fn respond(&self, router: &Router) -> Response {
        match self.pick(router) {
            Decision::Respond(response) => response,
            other => panic!("expected a response for {}, got {other:?}", self.path),
        }
    }
    /// The backend picked, or "" when the request is answered directly.
    fn backend(&self, router: &Router) -> String {
        match self.pick(router) {
            Decision::Forward(forward) => forward.backend,
            Decision::Respond(_) => String::new(),
        }
    }
    fn affinity(&self, router: &Router) -> Option<String> {
        self.forward(router).affinity
    }
}

fn header(name: &str, value: &str) -> Header {
    (name.to_string(), value.as_bytes().to_vec())
}

fn affinity_router(source: &str) -> Router {
    router(&format!(r#"{{"rules": [{{"path-prefix": "/", "backend": "app", "affinity": {source}}}]}}"#))
}

// ---- The Socket.IO case ----

#[test]
fn socket_io_split() {
    // default-backend = "web"
    // [[rules]]
    // path-prefix = "/socket.io/"
    // backend = "socketio"
    // affinity = "client-ip"
    let r = router(
        r#"{"default-backend": "web",
            "rules": [{"path-prefix": "/socket.io/", "backend": "socketio", "affinity": "client-ip"}]}"#,
    );
    let polling = get("/socket.io/?EIO=4&transport=polling").client("198.51.100.4:61000");
    assert_eq!(
        polling.forward(&r),
        Forward { backend: "socketio".into(), affinity: Some("198.51.100.4".into()), ..Forward::default() }
    );
    let websocket = get("/socket.io/?EIO=4&transport=websocket&sid=abc").method("GET").client("[2001:db8::1]:443");
    assert_eq!(websocket.affinity(&r).as_deref(), Some("2001:db8::1"));
    assert_eq!(get("/").forward(&r), Forward { backend: "web".into(), ..Forward::default() });
    assert_eq!(get("/index.html?socket.io/").backend(&r), "web");
    assert_eq!(get("/socket.io").backend(&r), "web");
    assert_eq!(get("/static/socket.io/client.js").backend(&r), "web");
}

// ---- Matching ----

#[test]
fn first_match_wins() {
    let r = router(
        r#"{"rules": [
            {"path-prefix": "/api/v2/", "backend": "v2"},
            {"path-prefix": "/api/", "backend": "v1"},
            {"path-prefix": "/api/v2/legacy", "backend": "never"}
        ]}"#,
    );
    assert_eq!(get("/api/v2/legacy").backend(&r), "v2");
    assert_eq!(get("/api/v2/users").backend(&r), "v2");
    assert_eq!(get("/api/v1/users").backend(&r), "v1");
    // The same rules in the other order: the broad one shadows the rest.
    let r = router(
        r#"{"rules": [{"path-prefix": "/api/", "backend": "v1"}, {"path-prefix": "/api/v2/", "backend": "v2"}]}"#,
    );
    assert_eq!(get("/api/v2/users").backend(&r), "v1");
}

#[test]
fn rule_without_conditions_matches_everything() {
    let r = router(r#"{"rules": [{"host": "a.test", "backend": "a"}, {"backend": "catch-all"}]}"#);
    assert_eq!(get("/anything").authority(None).method("DELETE").backend(&r), "catch-all");
    assert_eq!(get("/").authority(Some("a.test")).backend(&r), "a");
}

#[test]
fn exact_host() {
    let r = router(r#"{"rules": [{"host": "API.test", "backend": "api"}]}"#);
    for authority in ["api.test", "API.TEST", "api.test:8443", "Api.Test:80", "api.test.", "user@api.test:1"] {
        assert_eq!(get("/").authority(Some(authority)).backend(&r), "api", "{authority}");
    }
    for authority in ["www.api.test", "api.test.evil", "apitest", "", ":80", "api.tes", "api.testx"] {
        assert_eq!(get("/").authority(Some(authority)).backend(&r), "", "{authority}");
    }
    assert_eq!(get("/").authority(None).backend(&r), "");
}

#[test]
fn wildcard_host() {
    let r = router(r#"{"rules": [{"host": "*.Example.com", "backend": "sub"}]}"#);
    for authority in ["a.example.com", "a.b.example.com", "A.EXAMPLE.COM:443", "x.example.com."] {
        assert_eq!(get("/").authority(Some(authority)).backend(&r), "sub", "{authority}");
    }
    for authority in ["example.com", "example.com:80", ".example.com", "badexample.com", "a.example.com.evil", "com"] {
        assert_eq!(get("/").authority(Some(authority)).backend(&r), "", "{authority}");
    }
}

#[test]
fn ipv6_host() {
    let r = router(r#"{"rules": [{"host": "[::1]", "backend": "local"}]}"#);
    assert_eq!(get("/").authority(Some("[::1]:8080")).backend(&r), "local");
    assert_eq!(get("/").authority(Some("[::1]")).backend(&r), "local");
    assert_eq!(get("/").authority(Some("[::2]:8080")).backend(&r), "");
}

#[test]
fn path_prefix() {
    let r = router(r#"{"rules": [{"path-prefix": "/api/", "backend": "api"}]}"#);
    for path in ["/api/", "/api/users", "/api/?q=1", "/api/x#frag"] {
        assert_eq!(get(path).backend(&r), "api", "{path}");
    }
    // Case-sensitive, no percent-decoding, and the query string is not the path.
    for path in ["/api", "/API/users", "/%61pi/", "/x?next=/api/", "", "*", "api/"] {
        assert_eq!(get(path).backend(&r), "", "{path}");
    }
}

#[test]
fn method() {
    let r = router(r#"{"rules": [{"method": "POST", "backend": "writes"}]}"#);
    assert_eq!(get("/").method("POST").backend(&r), "writes");
    assert_eq!(get("/").method("post").backend(&r), "");
    assert_eq!(get("/").method("GET").backend(&r), "");
}

#[test]
fn all_conditions_must_hold() {
    let r = router(r#"{"rules": [{"host": "a.test", "path-prefix": "/x", "method": "PUT", "backend": "hit"}]}"#);
    let hit = get("/x").authority(Some("a.test")).method("PUT");
    assert_eq!(hit.backend(&r), "hit");
    assert_eq!(hit.clone().authority(Some("b.test")).backend(&r), "");
    assert_eq!(hit.clone().method("GET").backend(&r), "");
    assert_eq!(get("/y").authority(Some("a.test")).method("PUT").backend(&r), "");
}

#[test]
fn headers_match() {
    let r = router(r#"{"rules": [{"headers": {"X-Canary": "1", "x-env": "*"}, "backend": "canary"}]}"#);
    assert_eq!(get("/").header("x-canary", "1").header("x-env", "staging").backend(&r), "canary");
    assert_eq!(get("/").header("X-ENV", "").header("X-Canary", "1").backend(&r), "canary");
    // A repeated header matches when any of its values does.
    assert_eq!(get("/").header("x-canary", "2").header("x-canary", "1").header("x-env", "a").backend(&r), "canary");
    assert_eq!(get("/").header("x-canary", "2").header("x-env", "a").backend(&r), "");
    assert_eq!(get("/").header("x-canary", "1").backend(&r), "", "x-env missing");
    assert_eq!(get("/").header("x-canary", "1 ").header("x-env", "a").backend(&r), "", "exact value");
    assert_eq!(get("/").header("x-env", "a").backend(&r), "", "x-canary missing");
}

// ---- Affinity ----

#[test]
fn affinity_client_ip() {
    let r = affinity_router(r#""client-ip""#);
    for (addr, ip) in [
        ("203.0.113.9:4444", Some("203.0.113.9")),
        ("[::1]:5", Some("::1")),
        ("[2001:DB8::1]:443", Some("2001:db8::1")),
        ("[::ffff:192.0.2.1]:80", Some("192.0.2.1")),
        ("203.0.113.9", Some("203.0.113.9")),
        ("::1", Some("::1")),
        ("[fe80::1%eth0]:8080", Some("fe80::1%eth0")),
        ("unix-socket", Some("unix-socket")),
        ("", None),
        ("[]:80", None),
        (":80", None),
    ] {
        assert_eq!(get("/").client(addr).affinity(&r).as_deref(), ip, "{addr}");
    }
}

#[test]
fn affinity_cookie() {
    let r = affinity_router(r#"{"cookie": "sid"}"#);
    assert_eq!(get("/").header("cookie", "sid=abc").affinity(&r).as_deref(), Some("abc"));
    assert_eq!(get("/").header("cookie", "a=1; sid=abc; b=2").affinity(&r).as_deref(), Some("abc"));
    assert_eq!(get("/").header("cookie", "a=1;sid=abc").affinity(&r).as_deref(), Some("abc"));
    assert_eq!(get("/").header("cookie", "a=1").header("Cookie", "b=2; sid=xyz").affinity(&r).as_deref(), Some("xyz"));
    assert_eq!(get("/").header("cookie", "sid=v=with=equals").affinity(&r).as_deref(), Some("v=with=equals"));
    assert_eq!(get("/").header("cookie", "sid=; sid=late").affinity(&r).as_deref(), Some("late"));
    // Absent, empty, differently named or cased: no key.
    assert_eq!(get("/").affinity(&r), None);
    assert_eq!(get("/").header("cookie", "").affinity(&r), None);
    assert_eq!(get("/").header("cookie", "sid=").affinity(&r), None);
    assert_eq!(get("/").header("cookie", "xsid=1; sidx=2; SID=3; sid").affinity(&r), None);
    assert_eq!(get("/").header("x-cookie", "sid=abc").affinity(&r), None);
    // Non-UTF-8 bytes still give a key.
    assert_eq!(get("/").raw_header("cookie", b"sid=\xff1").affinity(&r).as_deref(), Some("\u{fffd}1"));
}

#[test]
fn affinity_header() {
    let r = affinity_router(r#"{"header": "X-User"}"#);
    assert_eq!(get("/").header("x-user", "alice").affinity(&r).as_deref(), Some("alice"));
    assert_eq!(get("/").header("x-user", " ").header("x-user", "bob").affinity(&r).as_deref(), Some("bob"));
    assert_eq!(get("/").affinity(&r), None);
    assert_eq!(get("/").header("x-user", "").affinity(&r), None);
}

#[test]
fn affinity_query() {
    let r = affinity_router(r#"{"query": "sid"}"#);
    assert_eq!(get("/socket.io/?EIO=4&transport=polling&sid=Ab-9").affinity(&r).as_deref(), Some("Ab-9"));
    assert_eq!(get("/?sid=1&sid=2").affinity(&r).as_deref(), Some("1"));
    assert_eq!(get("/?sid=x#frag").affinity(&r).as_deref(), Some("x"));
    assert_eq!(get("/").affinity(&r), None);
    assert_eq!(get("/?").affinity(&r), None);
    assert_eq!(get("/?sid").affinity(&r), None);
    assert_eq!(get("/?sid=").affinity(&r), None);
    assert_eq!(get("/?xsid=1&SID=2").affinity(&r), None);
    assert_eq!(get("/sid=1").affinity(&r), None);
}

#[test]
fn no_affinity_by_default() {
    let r = router(r#"{"rules": [{"backend": "app"}]}"#);
    assert_eq!(get("/?sid=1").header("cookie", "sid=1").affinity(&r), None);
}

// ---- Forward edits ----

#[test]
fn strip_prefix_keeps_query() {
    let r = router(
        r#"{"rules": [
            {"path-prefix": "/api/", "strip-prefix": true, "backend": "api"},
            {"path-prefix": "/v1", "strip-prefix": true, "backend": "v1"},
            {"path-prefix": "/keep/", "strip-prefix": false, "backend": "keep"}
        ]}"#,
    );
    let rewrite = |path: &'static str| get(path).forward(&r).rewrite_path;
    assert_eq!(rewrite("/api/users?x=1&y=/api/").as_deref(), Some("/users?x=1&y=/api/"));
    assert_eq!(rewrite("/api/").as_deref(), Some("/"));
    assert_eq!(rewrite("/api/?q").as_deref(), Some("/?q"));
    assert_eq!(rewrite("/v1/items?id=3").as_deref(), Some("/items?id=3"));
    assert_eq!(rewrite("/v1").as_deref(), Some("/"));
    assert_eq!(rewrite("/v1?x=1").as_deref(), Some("/?x=1"));
    assert_eq!(rewrite("/keep/this?x=1"), None);
}

#[test]
fn header_edits() {
    let r = router(
        r#"{"rules": [{"backend": "app",
            "set-headers": {"X-Routed-By": "sluice", "x-b": "2"},
            "remove-headers": ["X-Internal", "x-internal", "x-debug"]}]}"#,
    );
    let forward = get("/").forward(&r);
    assert_eq!(forward.set_headers, vec![header("x-b", "2"), header("x-routed-by", "sluice")]);
    assert_eq!(forward.remove_headers, vec!["x-internal".to_string(), "x-debug".to_string()]);
    assert_eq!(forward.rewrite_path, None);
}

// ---- Direct answers ----

#[test]
fn respond_rule() {
    let r = router(
        r#"{"default-backend": "web", "rules": [
            {"host": "old.test", "respond": {"status": 301, "headers": {"Location": "https://example.test/"}, "body": ""}},
            {"path-prefix": "/down", "respond": {"status": 503, "body": "maintenance\n"}},
            {"path-prefix": "/page", "respond": {"status": 200, "headers": {"content-type": "text/html"}, "body": "<p>"}}
        ]}"#,
    );
    assert_eq!(
        get("/any").authority(Some("OLD.test:80")).respond(&r),
        Response { status: 301, headers: vec![header("location", "https://example.test/")], body: Vec::new() }
    );
    assert_eq!(
        get("/down").respond(&r),
        Response {
            status: 503,
            headers: vec![header("content-type", DEFAULT_CONTENT_TYPE)],
            body: b"maintenance\n".to_vec()
        }
    );
    assert_eq!(get("/page").respond(&r).headers, vec![header("content-type", "text/html")]);
    assert_eq!(get("/elsewhere").backend(&r), "web");
}

#[test]
fn not_found_default() {
    let expected = Response {
        status: 404,
        headers: vec![header("content-type", DEFAULT_CONTENT_TYPE)],
        body: DEFAULT_NOT_FOUND_BODY.as_bytes().to_vec(),
    };
    assert_eq!(DEFAULT_NOT_FOUND_BODY, "sluice: no route for this request\n");
    assert_eq!(get("/").respond(&router("{}")), expected);
    assert_eq!(get("/").respond(&Router::default()), expected);
    let r = router(r#"{"rules": [{"path-prefix": "/api/", "backend": "api"}]}"#);
    assert_eq!(get("/other").respond(&r), expected);
}

#[test]
fn not_found_configured() {
    let r = router(r#"{"not-found": {"status": 410, "body": "no route\n"}}"#);
    assert_eq!(
        get("/").respond(&r),
        Response {
            status: 410,
            headers: vec![header("content-type", DEFAULT_CONTENT_TYPE)],
            body: b"no route\n".to_vec()
        }
    );
    let r = router(r#"{"not-found": {"body": "nope"}}"#);
    assert_eq!(get("/").respond(&r).status, 404);
    let r = router(r#"{"not-found": {"status": 421}}"#);
    assert_eq!(get("/").respond(&r).body, DEFAULT_NOT_FOUND_BODY.as_bytes());
    let r = router(r#"{"not-found": {"body": "", "headers": {"x-why": "no rule"}}}"#);
    assert_eq!(get("/").respond(&r), Response { status: 404, headers: vec![header("x-why", "no rule")], body: vec![] });
}

#[test]
fn default_backend() {
    let r = router(r#"{"default-backend": "web", "rules": [{"method": "POST", "backend": "writes"}]}"#);
    assert_eq!(get("/").forward(&r), Forward { backend: "web".into(), ..Forward::default() });
    assert_eq!(get("/").method("POST").backend(&r), "writes");
}

// ---- Settings errors ----

#[test]
fn unknown_fields_are_named() {
    let e = init_error(r#"{"default-bakend": "web"}"#);
    assert!(e.contains("unknown field `default-bakend`"), "{e}");
    let e = init_error(r#"{"rules": [{"path_prefix": "/x", "backend": "a"}]}"#);
    assert!(e.contains("unknown field `path_prefix`"), "{e}");
    let e = init_error(r#"{"not-found": {"code": 404}}"#);
    assert!(e.contains("unknown field `code`"), "{e}");
    let e = init_error(r#"{"rules": [{"backend": "a", "affinity": "client_ip"}]}"#);
    assert!(e.contains("client_ip"), "{e}");
    let e = init_error(r#"{"rules": [{"backend": "a", "affinity": {"cookies": "sid"}}]}"#);
    assert!(e.contains("cookies"), "{e}");
}

#[test]
fn backend_xor_respond() {
    let e = init_error(r#"{"rules": [{"backend": "a"}, {"backend": "a", "respond": {"status": 204}}]}"#);
    assert!(e.contains("rule 2") && e.contains("not both"), "{e}");
    let e = init_error(r#"{"rules": [{"path-prefix": "/"}]}"#);
    assert!(e.contains("rule 1") && e.contains("needs `backend`"), "{e}");
}

#[test]
fn other_settings_errors() {
    for (settings, expected) in [
        (r#"{"rules": [{"respond": {"status": 700}}]}"#, "between 200 and 599"),
        (r#"{"rules": [{"respond": {"status": 101}}]}"#, "between 200 and 599"),
        (r#"{"rules": [{"respond": {"status": 70000}}]}"#, "u16"),
        (r#"{"rules": [{"respond": {"body": "x"}}]}"#, "needs a `status`"),
        (r#"{"not-found": {"status": 199}}"#, "not-found status 199"),
        (r#"{"default-backend": "web", "not-found": {"status": 404}}"#, "not both"),
        (r#"{"default-backend": ""}"#, "default-backend is empty"),
        (r#"{"rules": [{"backend": " "}]}"#, "backend is empty"),
        (r#"{"rules": [{"respond": {"status": 204}, "affinity": "client-ip"}]}"#, "`affinity` needs `backend`"),
        (r#"{"rules": [{"respond": {"status": 204}, "set-headers": {}}]}"#, "`set-headers` needs `backend`"),
        (r#"{"rules": [{"backend": "a", "strip-prefix": true}]}"#, "strip-prefix needs a path-prefix"),
        (r#"{"rules": [{"backend": "a", "path-prefix": "api/"}]}"#, "must start with '/'"),
        (r#"{"rules": [{"backend": "a", "host": "a.*.com"}]}"#, "wildcard"),
        (r#"{"rules": [{"backend": "a", "host": "*"}]}"#, "wildcard"),
        (r#"{"rules": [{"backend": "a", "host": "*."}]}"#, "empty"),
        (r#"{"rules": [{"backend": "a", "host": "a.test:80"}]}"#, "port"),
        (r#"{"rules": [{"backend": "a", "host": "a test"}]}"#, "not a host name"),
        (r#"{"rules": [{"backend": "a", "method": "G T"}]}"#, "not an HTTP method"),
        (r#"{"rules": [{"backend": "a", "headers": {"x canary": "1"}}]}"#, "not a valid header name"),
        (r#"{"rules": [{"backend": "a", "headers": {"X-A": "1", "x-a": "2"}}]}"#, "given twice"),
        (r#"{"rules": [{"backend": "a", "set-headers": {"x-a": "1\r\nx-b: 2"}}]}"#, "control character"),
        (r#"{"rules": [{"backend": "a", "set-headers": {"Content-Length": "1"}}]}"#, "cannot be changed"),
        (r#"{"rules": [{"backend": "a", "remove-headers": ["transfer-encoding"]}]}"#, "cannot be changed"),
        (r#"{"rules": [{"backend": "a", "set-headers": {"x-a": "1"}, "remove-headers": ["X-A"]}]}"#, "both in"),
        (r#"{"rules": [{"backend": "a", "affinity": {"cookie": ""}}]}"#, "not a valid cookie name"),
        (r#"{"rules": [{"backend": "a", "affinity": {"header": "a b"}}]}"#, "not a valid header name"),
        (r#"{"rules": [{"backend": "a", "affinity": {"query": "a=b"}}]}"#, "not a valid query parameter name"),
        // A split key that can never match would silently keep every request on the rule's backend.
        (
            r#"{"rules": [{"backend": "a", "split": [{"backend": "b", "percent": 5}], "split-key": {"header": "a b"}}]}"#,
            "rule 1: split-key: \"a b\" is not a valid header name",
        ),
        (
            r#"{"rules": [{"backend": "a", "split": [{"backend": "b", "percent": 5}], "split-key": {"cookie": ""}}]}"#,
            "split-key: \"\" is not a valid cookie name",
        ),
        (
            r#"{"rules": [{"backend": "a", "split": [{"backend": "b", "percent": 5}], "split-key": {"query": "a&b"}}]}"#,
            "split-key: \"a&b\" is not a valid query parameter name",
        ),
        (r#"{"rules": {"backend": "a"}}"#, "expected a sequence"),
        ("not json", "expected"),
    ] {
        let e = init_error(settings);
        assert!(e.contains(expected), "{settings}: {e}");
    }
}

// ---- Robustness ----

#[test]
fn odd_requests_never_panic() {
    let r = router(
        r#"{"rules": [
            {"host": "*.é.test", "path-prefix": "/ü/", "strip-prefix": true, "headers": {"x": "*"}, "backend": "a",
             "affinity": {"cookie": "c"}},
            {"host": "[::1]", "backend": "b", "affinity": {"query": "q"}},
            {"headers": {"y": "ÿ"}, "backend": "c", "affinity": {"header": "y"}},
            {"path-prefix": "/", "backend": "d", "affinity": "client-ip"}
        ]}"#,
    );
    let authorities =
        [None, Some(""), Some("["), Some("[::1"), Some("]"), Some(":"), Some("@"), Some("é.test"), Some("ü.é.test:")];
    let paths = ["", "?", "#", "/ü/", "/ü/?", "/ü", "?q=&q", "/?q=%ff&&=&q=1", "\u{0}", "/é?é=é"];
    let addrs = ["", "[", "]", "[:", "::::", "1.2.3.4:", "[::1]x", "é:é"];
    let values: [&'static [u8]; 5] = [b"", b";;;==;", b"\xff\xfe", b"c=\xff", b"c"];
    for authority in authorities {
        for path in paths {
            for addr in addrs {
                for value in values {
                    let req = get(path)
                        .authority(authority)
                        .client(addr)
                        .raw_header("cookie", value)
                        .raw_header("x", value)
                        .raw_header("y", value);
                    let _ = req.pick(&r);
                }
            }
        }
    }
    assert_eq!(get("/ü/x").authority(Some("A.é.test")).header("x", "").forward(&r).rewrite_path.as_deref(), Some("/x"));
}

mod manifest {
    use crate::PathPlugin;
    use sluice_plugin::testing::{TestRouter, request};
    use sluice_plugin::{Decision, HeaderInterest};

    #[test]
    fn declares_the_backends_and_headers_its_rules_use() {
        let plugin = TestRouter::<PathPlugin>::new(
            r#"{"default-backend": "web", "rules": [
                {"headers": {"X-Canary": "1"}, "backend": "canary"},
                {"path-prefix": "/io/", "backend": "io", "affinity": {"cookie": "sid"}},
                {"path-prefix": "/api/", "backend": "web", "affinity": {"header": "X-User"}},
                {"path-prefix": "/old", "respond": {"status": 301}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(plugin.manifest().backends, ["canary", "io", "web"]);
        assert_eq!(
            plugin.manifest().headers,
            HeaderInterest::Only(vec!["x-canary".into(), "cookie".into(), "x-user".into()])
        );
        // Routed under the host's rules: undeclared headers never reach the rules.
        let decision = plugin.pick(request("GET", "/").header("x-canary", "1").header("x-other", "1")).unwrap();
        assert!(matches!(decision, Decision::Forward(f) if f.backend == "canary"));
        let decision = plugin.pick(request("GET", "/io/").header("cookie", "sid=abc")).unwrap();
        assert!(matches!(decision, Decision::Forward(f) if f.affinity.as_deref() == Some("abc")));
    }

    #[test]
    fn a_plugin_without_rules_reads_no_header_and_names_no_backend() {
        let plugin = TestRouter::<PathPlugin>::new("{}").unwrap();
        assert!(plugin.manifest().backends.is_empty());
        assert_eq!(plugin.manifest().headers, HeaderInterest::Only(Vec::new()));
        let err = TestRouter::<PathPlugin>::new(r#"{"default-backnd": "web"}"#).err().unwrap();
        assert!(err.starts_with("path plugin settings: unknown field `default-backnd`"), "{err}");
    }
}
