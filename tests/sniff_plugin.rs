//! The default sniff plugin, as the compiled component, on every prefix of
//! captured real handshakes (`tests/testdata/`): a strict prefix must ask for
//! more bytes (or decide early when it can no longer be anything else), the
//! whole must be recognised, and the last call (`complete`) always decides.

mod common;

use common::*;
use sluice::config::PluginLimits;
use sluice::names::{BackendName, PluginName};
use sluice::plugin::wasm::{Runtime, WasmSniffer};
use sluice::plugin::{ConnFacts, Sniffer, Verdict};
use std::sync::Arc;

fn sniffer(settings: &str) -> Arc<WasmSniffer> {
    let wasm = std::fs::read(plugin_path("sniff")).unwrap();
    Runtime::new()
        .unwrap()
        .load_sniffer(PluginName::new("sniff"), &wasm, settings.into(), PluginLimits::default())
        .unwrap()
}

fn classify(plugin: &WasmSniffer, head: &[u8], complete: bool) -> Verdict {
    plugin.classify(&ConnFacts::probe(), head, complete).unwrap()
}

/// Every strict prefix asks for more; the whole capture gets `expected`.
fn check_all_prefixes(plugin: &WasmSniffer, capture: &str, decided_at: usize, expected: Verdict) {
    let bytes = testdata(capture);
    for n in 0..decided_at {
        assert_eq!(classify(plugin, &bytes[..n], false), Verdict::NeedMore, "{capture}: prefix of {n} bytes");
    }
    for n in decided_at..=bytes.len() {
        assert_eq!(classify(plugin, &bytes[..n], false), expected, "{capture}: prefix of {n} bytes");
    }
}

#[test]
fn captured_handshakes_on_every_prefix() {
    let plugin = sniffer("{}");
    // TLS is certain after the record header and the handshake type (6 bytes).
    check_all_prefixes(&plugin, "tls-client-hello.bin", 6, Verdict::TerminateTls);
    // HTTP/1 once the request line is complete.
    let request_line = testdata("http1-get.bin").iter().position(|&b| b == b'\n').unwrap() + 1;
    check_all_prefixes(&plugin, "http1-get.bin", request_line, Verdict::Http);
    check_all_prefixes(&plugin, "http2-preface.bin", 24, Verdict::Http);
    let policy = check_reply(&classify(&plugin, &testdata("flash-policy-request.bin"), false));
    assert!(policy.starts_with(b"<?xml") && policy.ends_with(b"</cross-domain-policy>\0"));
    for n in 0..22 {
        let head = &testdata("flash-policy-request.bin")[..n];
        assert_eq!(classify(&plugin, head, false), Verdict::NeedMore, "flash prefix of {n} bytes");
    }
    // The SSH banner starts like a request line (a token, a space): decided
    // at its line end, which ` HTTP/` never came before.
    let banner = testdata("ssh-banner.bin").len();
    check_all_prefixes(&plugin, "ssh-banner.bin", banner, Verdict::ForwardDefault);
}

fn check_reply(verdict: &Verdict) -> Vec<u8> {
    match verdict {
        Verdict::Reply { data, then_close: true } => data.clone(),
        other => panic!("expected a reply that closes, got {other:?}"),
    }
}

#[test]
fn the_last_call_always_decides() {
    let plugin = sniffer("{}");
    for capture in
        ["tls-client-hello.bin", "http1-get.bin", "http2-preface.bin", "flash-policy-request.bin", "ssh-banner.bin"]
    {
        let bytes = testdata(capture);
        for n in 0..=bytes.len() {
            let verdict = classify(&plugin, &bytes[..n], true);
            assert_ne!(verdict, Verdict::NeedMore, "{capture}: complete prefix of {n} bytes");
        }
    }
    // Silence (a client waiting for the server to speak first).
    assert_eq!(classify(&plugin, b"", true), Verdict::ForwardDefault);
}

#[test]
fn settings_choose_passthrough_and_raw_backends() {
    let plugin = sniffer(r#"{"tls-backend":"tls-pass","http-backend":"web","other-backend":"ssh"}"#);
    let forward = |name: &str| Verdict::Forward(BackendName::new(name));
    assert_eq!(classify(&plugin, &testdata("tls-client-hello.bin"), false), forward("tls-pass"));
    assert_eq!(classify(&plugin, &testdata("http1-get.bin"), false), forward("web"));
    assert_eq!(classify(&plugin, &testdata("ssh-banner.bin"), false), forward("ssh"));
}

#[test]
fn garbage_never_traps() {
    let plugin = sniffer("{}");
    let mut state = 0x9e3779b97f4a7c15u64;
    for len in 0..512 {
        let head: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        plugin.classify(&ConnFacts::probe(), &head, len % 2 == 0).expect("garbage gets a verdict");
    }
}
