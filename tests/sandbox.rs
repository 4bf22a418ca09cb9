//! Plugin sandbox limits, each as a pair: a guest that stays inside the
//! limit and one that breaks it. A plugin that traps, loops or over-allocates
//! costs only its own decision: the listener's fallback applies and everyone
//! else is served.

mod common;

use common::*;
use sluice::config::{PluginLimits, parse_size};
use sluice::names::PluginName;
use sluice::plugin::wasm::{LoadError, Runtime};
use sluice::plugin::{ConnFacts, PluginError, Sniffer, Verdict};
use tokio::io::AsyncWriteExt;

/// Two listeners on the misbehaving plugin: one falls back to a backend, one closes.
async fn misbehaving_proxy() -> Proxy {
    let default = tagged_echo("default").await;
    let fallback = tagged_echo("fallback").await;
    let plugin = plugin_path("misbehave");
    Proxy::start(&format!(
        r#"
[[listeners]]
name = "to-backend"
bind = "127.0.0.1:0"
sniff = "misbehave"
default-backend = "default"
fallback = {{ backend = "fallback" }}

[[listeners]]
name = "to-close"
bind = "127.0.0.1:0"
sniff = "misbehave"
default-backend = "default"
fallback = "close"

[backends.default]
servers = ["{default}"]
[backends.fallback]
servers = ["{fallback}"]

[plugins.misbehave]
file = "{}"
cpu-budget = 5_000_000
memory-limit = "16MiB"
"#,
        plugin.display()
    ))
    .await
}

async fn first_line(proxy: &Proxy, listener: &str, head: &[u8]) -> Vec<u8> {
    let mut client = proxy.connect(listener).await;
    client.write_all(head).await.unwrap();
    read_exactly(&mut client, 8).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_decisions_get_the_fallback_while_others_are_served() {
    let proxy = misbehaving_proxy().await;
    for head in [&b"TRAP"[..], b"LOOP", b"HOG"] {
        // Good connections around (and during) each bad one are unaffected.
        let good = first_line(&proxy, "to-backend", b"hello");
        let bad = first_line(&proxy, "to-backend", head);
        let (good, bad) = tokio::join!(good, bad);
        assert_eq!(good, b"default\n", "a well-behaved connection beside {head:?}");
        assert_eq!(bad, b"fallback", "{head:?} gets the fallback backend");
    }
}

#[tokio::test]
async fn fallback_close_closes_only_the_bad_connection() {
    let proxy = misbehaving_proxy().await;
    for head in [&b"TRAP"[..], b"LOOP", b"HOG"] {
        let mut client = proxy.connect("to-close").await;
        client.write_all(head).await.unwrap();
        assert!(closed_without_data(&mut client).await, "{head:?} is closed");
    }
    assert_eq!(first_line(&proxy, "to-close", b"hello").await, b"default\n");
}

#[tokio::test]
async fn work_and_memory_inside_the_limits_are_fine() {
    let proxy = misbehaving_proxy().await;
    assert_eq!(first_line(&proxy, "to-backend", b"SPIN").await, b"default\n");
    assert_eq!(first_line(&proxy, "to-backend", b"ALLOC").await, b"default\n");
}

fn load(
    wasm: &[u8],
    settings: &str,
    limits: PluginLimits,
) -> Result<std::sync::Arc<sluice::plugin::wasm::WasmSniffer>, LoadError> {
    Runtime::new().unwrap().load_sniffer(PluginName::new("under-test"), wasm, settings.into(), limits)
}

#[test]
fn each_limit_names_its_reason() {
    let wasm = std::fs::read(plugin_path("misbehave")).unwrap();
    let limits =
        PluginLimits { cpu_budget: 5_000_000, memory_limit: parse_size("16MiB").unwrap(), ..PluginLimits::default() };
    let plugin = load(&wasm, "{}", limits).unwrap();
    let conn = ConnFacts::probe();
    assert!(matches!(plugin.classify(&conn, b"TRAP", false), Err(PluginError::Trap(m)) if m.contains("unreachable")));
    assert!(matches!(plugin.classify(&conn, b"LOOP", false), Err(PluginError::CpuBudget)));
    assert!(matches!(plugin.classify(&conn, b"HOG", false), Err(PluginError::MemoryCap)));
    // After every failure the plugin keeps answering (from fresh instances).
    assert_eq!(plugin.classify(&conn, b"ALLOC", false).unwrap(), Verdict::ForwardDefault);
    assert_eq!(plugin.classify(&conn, b"SPIN", false).unwrap(), Verdict::ForwardDefault);
}

#[test]
fn a_tighter_budget_stops_what_a_default_one_allows() {
    let wasm = std::fs::read(plugin_path("misbehave")).unwrap();
    let tight = PluginLimits { cpu_budget: 20_000, memory_limit: 16 << 20, ..PluginLimits::default() };
    let plugin = load(&wasm, "{}", tight).unwrap();
    assert!(matches!(plugin.classify(&ConnFacts::probe(), b"SPIN", false), Err(PluginError::CpuBudget)));
    // The guest starts with about 1.1 MiB (its stack and data); 1 MiB more does not fit in 2 MiB.
    let small = PluginLimits { cpu_budget: 5_000_000, memory_limit: 2 << 20, ..PluginLimits::default() };
    let plugin = load(&wasm, "{}", small).unwrap();
    assert!(matches!(plugin.classify(&ConnFacts::probe(), b"ALLOC", false), Err(PluginError::MemoryCap)));
    // A cap below what the guest needs to start is refused at load.
    let tiny = PluginLimits { cpu_budget: 5_000_000, memory_limit: 256 << 10, ..PluginLimits::default() };
    let err = load(&wasm, "{}", tiny).err().expect("a cap below the initial memory is refused");
    assert!(matches!(err, LoadError::Probe(PluginError::MemoryCap)), "{err}");
}

#[test]
fn broken_plugins_are_refused_at_load_with_the_reason() {
    let wasm = std::fs::read(plugin_path("misbehave")).unwrap();
    let limits = PluginLimits::default();
    let err = load(&wasm[..wasm.len() / 2], "{}", limits).err().expect("truncated wasm is refused");
    assert!(matches!(err, LoadError::Compile(_)), "{err}");
    let err = load(b"not wasm at all", "{}", limits).err().expect("garbage is refused");
    assert!(matches!(err, LoadError::Compile(_)), "{err}");
    let err = load(&wasm, r#"{"fail-init":true}"#, limits).err().expect("init failure is refused");
    assert!(err.to_string().contains("refusing to start: fail-init is set"), "{err}");
}

#[test]
fn the_sniff_plugin_refuses_unknown_settings() {
    let wasm = std::fs::read(plugin_path("sniff")).unwrap();
    let err = load(&wasm, r#"{"flash-polcy":"x"}"#, PluginLimits::default()).err().expect("typo is refused");
    assert!(err.to_string().contains("unknown field `flash-polcy`"), "{err}");
}
