//! The default route plugin's rules (`plugins/path/src/rules.rs`), linked
//! natively: settings checked and compiled by `path::init`, then a request
//! decided by `Router::pick`.
//!
//! Input: the settings JSON, a NUL byte, then the request one field a line:
//! method, path, authority (an empty line: none), client address, and
//! `name: value` header lines. The seed corpus shows the shape.
//!
//! Beyond "no panic":
//! - a refused setting says why; a decision is the same when asked twice;
//! - a forward names a non-empty backend, rewrites to a path starting with
//!   '/', never sets or removes a framing header, never both sets and
//!   removes one, and gives no empty affinity key;
//! - a direct response has a status from 200 to 599 and a content type
//!   when it has a body;
//! - the helpers return pieces of their input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use path::rules::{authority_host, client_ip, path_only, query_param, strip_prefix};
use path::{Decision, Request};

fuzz_target!(|data: &[u8]| {
    let (settings, request) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(settings) = std::str::from_utf8(settings) else { return };
    let request = String::from_utf8_lossy(request);
    let mut lines = request.split('\n');
    let method = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    let authority = lines.next().filter(|a| !a.is_empty());
    let client_addr = lines.next().unwrap_or_default();
    let header_lines: Vec<(String, &[u8])> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            (name.to_ascii_lowercase(), value.trim_start().as_bytes())
        })
        .collect();
    let headers: Vec<(&str, &[u8])> = header_lines.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let req = Request { method, path, authority, headers: &headers, client_addr };

    check_helpers(&req);
    let router = match path::init(settings) {
        Ok(router) => router,
        Err(message) => {
            assert!(!message.trim().is_empty());
            return;
        }
    };
    let decision = router.pick(&req);
    assert_eq!(router.pick(&req), decision, "the same request decided twice");
    match decision {
        Decision::Forward(forward) => {
            assert!(!forward.backend.trim().is_empty());
            if let Some(path) = &forward.rewrite_path {
                assert!(path.starts_with('/'), "{path:?}");
            }
            if let Some(key) = &forward.affinity {
                assert!(!key.is_empty());
            }
            for (name, _) in &forward.set_headers {
                assert!(is_header_name(name), "{name:?}");
                assert!(!forward.remove_headers.contains(name), "{name:?} is set and removed");
            }
            for name in &forward.remove_headers {
                assert!(is_header_name(name), "{name:?}");
            }
        }
        Decision::Respond(response) => {
            assert!((200..=599).contains(&response.status), "{}", response.status);
            if !response.body.is_empty() {
                assert!(response.headers.iter().any(|(name, _)| name == "content-type"));
            }
        }
    }
});

/// Lower case, made of RFC 9110 token characters, and not a framing header.
fn is_header_name(name: &str) -> bool {
    let tchar = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty() && name.bytes().all(tchar) && name != "content-length" && name != "transfer-encoding"
}

fn check_helpers(req: &Request) {
    let within = |part: &str, whole: &str| {
        let (start, end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
        part.is_empty() || (start >= whole.as_ptr() as usize && end <= whole.as_ptr() as usize + whole.len())
    };
    if let Some(authority) = req.authority {
        let host = authority_host(authority);
        assert!(within(host, authority), "{host:?} from {authority:?}");
    }
    let only = path_only(req.path);
    assert!(req.path.starts_with(only), "{only:?} from {:?}", req.path);
    for (name, _) in req.headers.iter().take(4) {
        if let Some(value) = query_param(req.path, name) {
            assert!(within(value, req.path) && !value.is_empty(), "{value:?}");
        }
        if name.starts_with('/') {
            assert!(strip_prefix(req.path, name).starts_with('/'));
        }
    }
    if let Some(ip) = client_ip(req.client_addr) {
        assert!(!ip.is_empty());
    }
}
