//! The virtual WASI plugins get (host/src/plugin/wasm/wasi.rs) and instance
//! recycling, with real guests built from `plugins/testing`: `wasi_guest`
//! uses WASI through Rust's std (prints, panics, exits, sleeps, reads the
//! clocks, tries files and sockets); `leak` leaks 64 KiB per call.

mod common;

use common::*;
use sluice::config::PluginLimits;
use sluice::names::PluginName;
use sluice::plugin::wasm::{LoadError, Runtime, WasmSniffer};
use sluice::plugin::{ConnFacts, PluginError, Sniffer, Verdict};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

fn load(plugin: &str, limits: PluginLimits) -> (Arc<WasmSniffer>, Arc<Mutex<Vec<String>>>) {
    let wasm = std::fs::read(plugin_path(plugin)).unwrap();
    let (runtime, log) = Runtime::new().unwrap().capturing_logs();
    let plugin = runtime.load_sniffer(PluginName::new(plugin), &wasm, "{}".into(), limits).unwrap();
    (plugin, log)
}

fn classify(plugin: &WasmSniffer, head: &[u8]) -> Result<Verdict, PluginError> {
    plugin.classify(&ConnFacts::probe(), head, false)
}

fn rejected(verdict: Result<Verdict, PluginError>) -> String {
    match verdict {
        Ok(Verdict::Reject(text)) => text,
        other => panic!("expected a reject, got {other:?}"),
    }
}

#[test]
fn stdout_and_stderr_reach_the_log_even_before_a_trap() {
    let (plugin, log) = load("wasi_guest", PluginLimits::default());
    assert_eq!(classify(&plugin, b"PRINT").unwrap(), Verdict::ForwardDefault);
    // The stderr line has no final newline: it is logged when the call ends.
    assert_eq!(
        *log.lock().unwrap(),
        ["[stdout] wasi-guest says hello on stdout", "[stderr] wasi-guest says hello on stderr"]
    );

    log.lock().unwrap().clear();
    let err = classify(&plugin, b"PANIC").unwrap_err();
    assert!(matches!(&err, PluginError::Trap(m) if m.contains("unreachable")), "{err}");
    let lines = log.lock().unwrap().join("\n");
    assert!(lines.contains("[stderr] ") && lines.contains("wasi-guest panicked on purpose"), "{lines}");
}

#[test]
fn exit_and_blocking_end_the_call_with_a_clear_reason() {
    let (plugin, _) = load("wasi_guest", PluginLimits::default());
    // WASI 0.2's `exit` carries success or failure only: `exit(3)` is a failure.
    let err = classify(&plugin, b"EXIT").unwrap_err();
    assert!(matches!(err, PluginError::Exit(1)), "{err}");
    assert_eq!(err.to_string(), "called `exit` (status 1) instead of returning a decision");
    let err = classify(&plugin, b"SLEEP").unwrap_err();
    assert!(err.to_string().contains("a plugin may not block"), "{err}");
    // The plugin keeps answering from fresh instances.
    assert_eq!(classify(&plugin, b"hello").unwrap(), Verdict::ForwardDefault);
}

#[test]
fn clocks_and_random_work_environment_is_empty_files_and_network_are_out_of_reach() {
    let (plugin, _) = load("wasi_guest", PluginLimits::default());
    let time = rejected(classify(&plugin, b"TIME"));
    let epoch: u64 = time.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(epoch > 1_700_000_000, "the wall clock is the host's: {time}");
    // Two instances' random sources differ (RandomState keys come from them).
    let other = load("wasi_guest", PluginLimits::default()).0;
    let random = |text: &str| text.rsplit(' ').next().unwrap().to_string();
    assert_ne!(random(&time), random(&rejected(classify(&other, b"TIME"))));

    assert_eq!(rejected(classify(&plugin, b"ENV")), "0 variables, 0 arguments");
    let file = rejected(classify(&plugin, b"FILE"));
    assert!(file.starts_with("no file:"), "{file}");
    match classify(&plugin, b"NET") {
        Ok(Verdict::Reject(text)) => assert!(text.starts_with("no network"), "{text}"),
        Err(PluginError::Trap(message)) => assert!(message.contains("plugins get no network"), "{message}"),
        other => panic!("the network is out of reach: {other:?}"),
    }
}

/// `(component (import "<name>" (instance)))`: imports one empty instance.
fn component_importing(name: &str) -> Vec<u8> {
    wat::parse_str(format!(r#"(component (import "{name}" (instance)))"#)).unwrap()
}

#[test]
fn an_import_sluice_does_not_provide_is_refused_at_load_by_name() {
    let runtime = Runtime::new().unwrap();
    let load = |wasm: &[u8]| {
        runtime.load_router(PluginName::new("x"), wasm, "{}".into(), PluginLimits::default()).err().expect("refused")
    };
    let err = load(&component_importing("wasi:http/outgoing-handler@0.2.3"));
    assert!(matches!(err, LoadError::UnprovidedImport { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "imports `wasi:http/outgoing-handler@0.2.3`, which sluice does not provide: plugins get no network"
    );
    let err = load(&component_importing("wasi:cli/environment@0.3.0"));
    assert!(err.to_string().contains("imports `wasi:cli/environment@0.3.0`"), "{err}");
    let err = load(&component_importing("example:kv/store@1.0.0"));
    assert!(err.to_string().contains("plugins get only clocks, random"), "{err}");
    let err = load(b"not wasm");
    assert!(err.to_string().starts_with("is not a valid WebAssembly component"), "{err}");
}

#[test]
fn init_failures_say_init_failed_and_why() {
    let wasm = std::fs::read(plugin_path("leak")).unwrap();
    let runtime = Runtime::new().unwrap();
    let load = |settings: &str| {
        let limits = PluginLimits::default();
        runtime.load_sniffer(PluginName::new("leak"), &wasm, settings.into(), limits).err().expect("refused")
    };
    let err = load(r#"{"init":"trap"}"#);
    assert!(err.to_string().starts_with("`init` trapped: ") && err.to_string().contains("unreachable"), "{err}");
    let err = load(r#"{"init":"loop"}"#);
    assert_eq!(err.to_string(), "`init` ran out of its CPU budget");
}

/// `sluice plugin test`, the binary, on `plugin` with `args`: (success, stdout, stderr).
fn plugin_test(plugin: &str, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["plugin", "test"])
        .arg(plugin)
        .args(args)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn plugin_test_prints_what_the_plugin_wrote_and_names_the_file() {
    let guest = plugin_path("wasi_guest").display().to_string();
    let (ok, out, err) = plugin_test(&guest, &["--head", "PRINT"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "verdict: forward-default\nmanifest: backends none\n\
         log: [stdout] wasi-guest says hello on stdout\nlog: [stderr] wasi-guest says hello on stderr\n"
    );
    let (ok, out, err) = plugin_test(&guest, &["--head", "PANIC"]);
    assert!(!ok && out.contains("wasi-guest panicked on purpose"), "{out}");
    assert!(err.contains(&format!("plugin {guest} trapped: ")) && err.contains("unreachable"), "{err}");

    let dir = std::env::temp_dir().join(format!("sluice-plugin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.wasm");
    std::fs::write(&broken, b"\0asm broken").unwrap();
    let broken = broken.display().to_string();
    let (ok, _, err) = plugin_test(&broken, &["--head", "x"]);
    assert!(!ok && err.contains(&format!("plugin {broken} is not a valid WebAssembly component")), "{err}");

    let path = plugin_path("path").display().to_string();
    for bad in ["index.html", "GET index.html", "GET / extra"] {
        let (ok, _, err) = plugin_test(&path, &["--request", bad]);
        assert!(!ok && err.contains("is not a request"), "{bad}: {err}");
    }
}

#[test]
fn a_leaking_plugin_is_recycled_before_it_fails() {
    // 2 MiB cap, about 1.1 MiB at start, 64 KiB more per call: without
    // recycling the 15th call or so goes over the cap.
    let limits = PluginLimits { memory_limit: 2 << 20, ..PluginLimits::default() };
    let (plugin, _) = load("leak", limits);
    for call in 0..300 {
        let verdict = classify(&plugin, b"x");
        assert!(matches!(verdict, Ok(Verdict::ForwardDefault)), "call {call}: {verdict:?}");
    }
}

#[test]
fn an_instance_is_retired_after_its_calls() {
    let limits = PluginLimits { max_instance_calls: 3, ..PluginLimits::default() };
    let (plugin, _) = load("leak", limits);
    let counts: Vec<String> = (0..7)
        .map(|_| match classify(&plugin, b"COUNT") {
            Ok(Verdict::Forward(backend)) => backend.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    // The load-time probe was the first instance's first call.
    assert_eq!(counts, ["calls-2", "calls-3", "calls-1", "calls-2", "calls-3", "calls-1", "calls-2"]);
}

/// The guests through the real proxy: plugin calls run on its worker
/// threads, where WASI's stdio must not need to block on a runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_proxy_prints_are_logged_and_misbehaviour_gets_the_fallback() {
    log_capture::install();
    let default = tagged_echo("default").await;
    let fallback = tagged_echo("fallback").await;
    let proxy = Proxy::start(&format!(
        r#"
[[listeners]]
name = "guest"
bind = "127.0.0.1:0"
sniff = "proxied-guest"
default-backend = "default"
fallback = {{ backend = "fallback" }}

[[listeners]]
name = "leak"
bind = "127.0.0.1:0"
sniff = "proxied-leak"
default-backend = "default"

[backends.default]
servers = ["{default}"]
[backends.fallback]
servers = ["{fallback}"]

[plugins.proxied-guest]
file = "{}"
[plugins.proxied-leak]
file = "{}"
memory-limit = "2MiB"
"#,
        plugin_path("wasi_guest").display(),
        plugin_path("leak").display(),
    ))
    .await;
    let first_line = async |listener: &str, head: &[u8]| {
        let mut client = proxy.connect(listener).await;
        client.write_all(head).await.unwrap();
        read_exactly(&mut client, 8).await
    };
    assert_eq!(first_line("guest", b"PRINT").await, b"default\n");
    for head in [&b"PANIC"[..], b"EXIT", b"SLEEP"] {
        assert_eq!(first_line("guest", head).await, b"fallback", "{head:?}");
    }
    assert_eq!(first_line("guest", b"hello").await, b"default\n");
    let logged = |words: &[&str]| log_capture::lines_with(&[&["proxied-guest"], words].concat());
    assert_eq!(logged(&["stdout", "wasi-guest says hello on stdout"]).len(), 1);
    assert_eq!(logged(&["stderr", "wasi-guest says hello on stderr"]).len(), 1);
    assert_eq!(logged(&["stderr", "wasi-guest panicked on purpose"]).len(), 1);

    for connection in 0..100 {
        assert_eq!(first_line("leak", b"x").await, b"default\n", "connection {connection}");
    }
    proxy.stop().await;
}
