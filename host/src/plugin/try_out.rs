//! `sluice plugin test`: run a plugin on sample input, outside the proxy,
//! and describe its decision — the tool for policy experiments before a
//! plugin goes live. The plugin runs in the same sandbox, with the same
//! limits, as in the proxy.

use super::wasm::{LoadError, Runtime};
use super::{ConnFacts, RouteDecision, RouteRequest, Router, Sniffer, Verdict};
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

/// Load `wasm` as the world `input` calls for, run it once, describe the result.
pub fn run(
    wasm: &[u8],
    settings_json: &str,
    limits: PluginLimits,
    conn: &ConnFacts,
    input: &Input,
) -> Result<String, String> {
    let runtime = Runtime::new().map_err(|e| format!("{e:#}"))?;
    let name = PluginName::new("under-test");
    let describe_load = |e: LoadError| format!("the plugin {e}");
    match input {
        Input::Head { bytes, complete } => {
            let plugin = runtime.load_sniffer(name, wasm, settings_json.to_string(), limits).map_err(describe_load)?;
            let verdict = plugin.classify(conn, bytes, *complete).map_err(|e| format!("the plugin {e}"))?;
            Ok(describe_verdict(&verdict))
        }
        Input::Request(request) => {
            let plugin = runtime.load_router(name, wasm, settings_json.to_string(), limits).map_err(describe_load)?;
            let decision = plugin.pick(conn, request).map_err(|e| format!("the plugin {e}"))?;
            Ok(describe_decision(&decision))
        }
    }
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
}
