//! `sluice plugin test`: run a plugin on sample input, outside the proxy,
//! and describe its decision — the tool for policy experiments before a
//! plugin goes live. The plugin runs in the same sandbox, with the same
//! limits, as in the proxy.

use super::wasm::{LoadError, Runtime};
use super::{ConnFacts, HeaderInterest, Manifest, PluginError, RouteDecision, RouteRequest, Router, Sniffer, Verdict};
use crate::config::PluginLimits;
use crate::names::PluginName;
use std::fmt::Write;

/// What to feed the plugin.
pub enum Input {
    /// For a sniff plugin: the first bytes of a connection.
    Head { bytes: Vec<u8>, complete: bool },
    /// For a route plugin: a request head.
    Request(RouteRequest),
}

/// What a try-out printed and decided.
pub struct Report {
    /// The plugin's `host.log` lines and its stdout/stderr, in order
    /// (`[info] …`, `[stdout] …`).
    pub log: Vec<String>,
    /// The decision described, or why there was none.
    pub outcome: Result<String, String>,
}

/// Load `wasm` (read from `file`, named in errors) as the world `input`
/// calls for, run it once, describe the result.
pub fn run(
    wasm: &[u8],
    file: &str,
    settings_json: &str,
    limits: PluginLimits,
    conn: &ConnFacts,
    input: &Input,
) -> Report {
    let runtime = match Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return Report { log: Vec::new(), outcome: Err(format!("{e:#}")) },
    };
    let (runtime, log) = runtime.capturing_logs();
    let outcome = decide(&runtime, wasm, file, settings_json, limits, conn, input);
    let log = std::mem::take(&mut *log.lock().expect("captured log lock"));
    Report { log, outcome }
}

fn decide(
    runtime: &Runtime,
    wasm: &[u8],
    file: &str,
    settings_json: &str,
    limits: PluginLimits,
    conn: &ConnFacts,
    input: &Input,
) -> Result<String, String> {
    let name = PluginName::new("under-test");
    let describe_load = |e: LoadError| format!("plugin {file} {e}");
    let describe_call = |e: PluginError| format!("plugin {file} {e}");
    match input {
        Input::Head { bytes, complete } => {
            let plugin = runtime.load_sniffer(name, wasm, settings_json.to_string(), limits).map_err(describe_load)?;
            let verdict = plugin.classify(conn, bytes, *complete).map_err(describe_call)?;
            Ok(describe_verdict(&verdict) + &describe_manifest(plugin.manifest(), false))
        }
        Input::Request(request) => {
            let plugin = runtime.load_router(name, wasm, settings_json.to_string(), limits).map_err(describe_load)?;
            let decision = plugin.pick(conn, request).map_err(describe_call)?;
            Ok(describe_decision(&decision) + &describe_manifest(plugin.manifest(), true))
        }
    }
}

/// How `--settings` text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsFormat {
    Json,
    Toml,
}

/// Plugin settings as the JSON object `init` receives, from a JSON object or
/// a TOML table (`format`; `None`: whichever of the two the text is).
pub fn settings_json(text: &str, format: Option<SettingsFormat>) -> Result<String, String> {
    let from_json = || match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value.to_string()),
        Ok(_) => Err("it is JSON, but not an object (write `{\"key\": value}`)".to_string()),
        Err(e) => Err(format!("not JSON: {e}")),
    };
    // The same conversion as a `settings` table in the config.
    let from_toml = || {
        toml::from_str::<toml::Table>(text)
            .map_err(|e| format!("not TOML: {}", e.message()))
            .and_then(|table| serde_json::to_string(&table).map_err(|e| format!("cannot encode as JSON: {e}")))
    };
    match format {
        Some(SettingsFormat::Json) => from_json().map_err(|e| format!("--settings: {e}")),
        Some(SettingsFormat::Toml) => from_toml().map_err(|e| format!("--settings-toml: {e}")),
        // JSON first: `{}` is an empty object in both, `{"a": 1}` only JSON.
        None => from_json().or_else(|json| {
            from_toml()
                .map_err(|toml| format!("--settings is neither a JSON object ({json}) nor a TOML table ({toml})"))
        }),
    }
}

/// A request head from a request line ("GET /path", optionally followed by
/// the HTTP version) and "name: value" headers; `host` sets the authority.
pub fn parse_request(line: &str, headers: &[String]) -> Result<RouteRequest, String> {
    let parts: Vec<&str> = line.split(' ').collect();
    let (method, path) = match parts[..] {
        [method, path] | [method, path, "HTTP/1.0" | "HTTP/1.1" | "HTTP/2"] => (method, path),
        _ => return Err(format!("`{line}` is not a request line (use \"METHOD PATH\", e.g. \"GET /index.html\")")),
    };
    if !is_token(method) {
        return Err(format!("`{method}` is not an HTTP method (in --request `{line}`)"));
    }
    let path_ok = path == "*" || path.starts_with('/') || path.starts_with("http://") || path.starts_with("https://");
    if !path_ok || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("`{path}` is not a request path (it starts with `/`, in --request `{line}`)"));
    }
    let mut parsed = Vec::new();
    for header in headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(format!("`{header}` is not a header (use \"name: value\")"));
        };
        let name = name.trim().to_ascii_lowercase();
        if !is_token(&name) || value.contains(['\r', '\n', '\0']) {
            return Err(format!("`{header}` is not a valid header"));
        }
        parsed.push((name, value.trim().as_bytes().to_vec()));
    }
    let authority = parsed.iter().find(|(n, _)| n == "host").map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    let bad_host = |host: &str| {
        host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control() || "/?#@".contains(c))
    };
    if let Some(host) = authority.as_deref().filter(|host| bad_host(host)) {
        return Err(format!("`{host}` is not a host (the `host` header names a server, e.g. `example.com:8080`)"));
    }
    Ok(RouteRequest { method: method.to_string(), path: path.to_string(), authority, headers: parsed })
}

/// An HTTP token (RFC 9110): a method or a header name.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What the plugin declared at `init`: one line.
fn describe_manifest(manifest: &Manifest, route: bool) -> String {
    let Some(backends) = &manifest.backends else {
        return "manifest: none (a sluice:plugin@0.1.0 component: backends unchecked, every header)\n".to_string();
    };
    let backends: Vec<&str> = backends.iter().map(|b| b.as_str()).collect();
    let backends = if backends.is_empty() { "none".to_string() } else { backends.join(", ") };
    let headers = match &manifest.headers {
        _ if !route => String::new(),
        HeaderInterest::All => "; reads every header".to_string(),
        HeaderInterest::Only(names) if names.is_empty() => "; reads no header".to_string(),
        HeaderInterest::Only(names) => format!("; reads headers {}", names.join(", ")),
    };
    format!("manifest: backends {backends}{headers}\n")
}

fn describe_verdict(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Reply { data, then_close } => format!(
            "verdict: reply ({} bytes{})\n{}\n",
            data.len(),
            if *then_close { ", then close" } else { "" },
            escape(data)
        ),
        Verdict::Forward(backend) => format!("verdict: forward to backend `{backend}`\n"),
        Verdict::Reject(reason) => format!("verdict: reject ({reason})\n"),
        other => format!("verdict: {}\n", other.label()),
    }
}

fn describe_decision(decision: &RouteDecision) -> String {
    let mut out = String::new();
    match decision {
        RouteDecision::Forward(to) => {
            let _ = writeln!(out, "decision: forward to backend `{}`", to.backend);
            if let Some(key) = &to.affinity {
                let _ = writeln!(out, "affinity: {key}");
            }
            if let Some(path) = &to.rewrite_path {
                let _ = writeln!(out, "rewrite path: {path}");
            }
            for (name, value) in &to.set_headers {
                let _ = writeln!(out, "set header: {name}: {}", escape(value));
            }
            for name in &to.remove_headers {
                let _ = writeln!(out, "remove header: {name}");
            }
        }
        RouteDecision::Respond(response) => {
            let _ = writeln!(out, "decision: respond {}", response.status);
            for (name, value) in &response.headers {
                let _ = writeln!(out, "{name}: {}", escape(value));
            }
            if !response.body.is_empty() {
                let _ = writeln!(out, "\n{}", escape(&response.body));
            }
        }
    }
    out
}

/// Bytes as text, with non-printable bytes as `\xHH` (and `\r`, `\n`, `\0`).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            0 => out.push_str("\\0"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// Turn `\r`, `\n`, `\t`, `\0`, `\\` and `\xHH` into bytes.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).ok().filter(|h| h.len() == 2);
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(byte.ok_or_else(|| format!("bad \\x escape in `{text}` (use two hex digits)"))?);
            }
            other => {
                let shown = other.map(|c| (c as char).to_string()).unwrap_or_default();
                return Err(format!("unknown escape `\\{shown}` in `{text}` (use \\r \\n \\t \\0 \\\\ \\xHH)"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        let bytes = unescape(r"<policy-file-request/>\0\x16\r\n").unwrap();
        assert_eq!(bytes, b"<policy-file-request/>\0\x16\r\n");
        assert_eq!(escape(&bytes), r"<policy-file-request/>\0\x16\r\n");
        assert!(unescape(r"\q").unwrap_err().contains("unknown escape"));
        assert!(unescape(r"\x1").unwrap_err().contains(r"bad \x escape"));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let ok = parse_request("GET /a?b=1", &["Host: example.com".into(), "x-beta: 1".into()]).unwrap();
        assert_eq!((ok.method.as_str(), ok.path.as_str()), ("GET", "/a?b=1"));
        assert_eq!(ok.authority.as_deref(), Some("example.com"));
        assert_eq!(ok.headers[1], ("x-beta".to_string(), b"1".to_vec()));
        assert!(parse_request("GET / HTTP/1.1", &[]).is_ok());
        for bad in ["GET", "/index.html", "GET index.html", "GET  /", "G(T /", "GET / extra", ""] {
            assert!(parse_request(bad, &[]).is_err(), "{bad:?} is refused");
        }
        assert!(parse_request("GET /", &["no colon".into()]).unwrap_err().contains("not a header"));
        assert!(parse_request("GET /", &["bad name: 1".into()]).unwrap_err().contains("not a valid header"));
        for host in ["host: a b", "host:", "Host: a/b"] {
            assert!(parse_request("GET /", &[host.into()]).unwrap_err().contains("is not a host"), "{host}");
        }
    }

    #[test]
    fn settings_are_json_or_toml() {
        let toml = "default-backend = \"web\"\n[[rules]]\npath-prefix = \"/api\"\nbackend = \"api\"";
        let want: serde_json::Value =
            serde_json::from_str(r#"{"default-backend":"web","rules":[{"backend":"api","path-prefix":"/api"}]}"#)
                .unwrap();
        let value = |json: String| serde_json::from_str::<serde_json::Value>(&json).unwrap();
        assert_eq!(value(settings_json(toml, None).unwrap()), want);
        assert_eq!(value(settings_json(toml, Some(SettingsFormat::Toml)).unwrap()), want);
        assert_eq!(settings_json(r#"{"a": [1, "x"]}"#, None).unwrap(), r#"{"a":[1,"x"]}"#);
        assert_eq!(settings_json("{}", None).unwrap(), "{}");
        assert_eq!(settings_json("", None).unwrap(), "{}");
        let err = settings_json("{not either", None).unwrap_err();
        assert!(err.contains("neither a JSON object") && err.contains("nor a TOML table"), "{err}");
        assert!(settings_json("[1]", Some(SettingsFormat::Json)).unwrap_err().contains("not an object"));
        assert!(
            settings_json(r#"{"a": 1}"#, Some(SettingsFormat::Toml))
                .unwrap_err()
                .starts_with("--settings-toml: not TOML")
        );
    }
}
