//! Live reload end to end: the route plugin's `.wasm` replaced under
//! continuous HTTP and WebSocket load, by every method deployments use.

mod common;
mod reload_harness;

use common::http_backend::{HttpBackend, field, http_backend};
use common::*;
use hyper::StatusCode;
use reload_harness::load::{Load, fetch};
use reload_harness::{
    Latencies, METHODS, Method, Proxy, REPLACEMENTS, Replacer, TempDir, in_effect, stays, wait_status,
};
use sluice::Drained;
use sluice::reload::ReloadHandle;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// The route plugin's .wasm replaced under load.

/// The two route plugin files. The path plugin's behaviour comes from its
/// settings, which live in the config, so a second *file* that routes
/// differently under the same settings is made from `path.wasm` by changing
/// the body of its built-in not-found answer, a constant in its data
/// segment ("…for this request" ↔ "…for THAT request"): the same size, a
/// different content hash (a real compile and load), a different answer.
fn route_plugins() -> [(Vec<u8>, &'static str); 2] {
    const THIS: &[u8] = b"sluice: no route for this request\n";
    const THAT: &[u8] = b"sluice: no route for THAT request\n";
    let original = std::fs::read(plugin_path("path")).unwrap();
    let at: Vec<usize> = original.windows(THIS.len()).enumerate().filter(|(_, w)| *w == THIS).map(|(i, _)| i).collect();
    assert_eq!(at.len(), 1, "the not-found body appears once in path.wasm");
    let mut patched = original.clone();
    patched[at[0]..at[0] + THAT.len()].copy_from_slice(THAT);
    [(original, "this"), (patched, "THAT")]
}

fn route_plugin_config(a: &HttpBackend) -> String {
    format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "route"

[backends.a]
servers = ["{a}"]

[plugins.sniff]
builtin = "sniff"

[plugins.route]
file = "plugins/route.wasm"
[plugins.route.settings]
[[plugins.route.settings.rules]]
path-prefix = "/ws"
backend = "a"
[[plugins.route.settings.rules]]
path-prefix = "/load"
backend = "a"
"#,
        a = a.addr
    )
}

/// Which route plugin answered `/probe` (no rule matches it): "this" or "THAT".
async fn not_found_variant(addr: SocketAddr) -> String {
    let (status, body) = fetch(addr, "/probe").await.unwrap_or_else(|e| panic!("probe failed: {e}"));
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    match body.as_str() {
        "sluice: no route for this request\n" => "this".to_string(),
        "sluice: no route for THAT request\n" => "THAT".to_string(),
        other => panic!("unexpected not-found body {other:?}"),
    }
}

fn answered_by_a(status: StatusCode, body: &str) -> bool {
    status == StatusCode::OK && field(body, "backend") == Some("a")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_plugin_file_replaced_under_load_by_every_method() {
    let started = Instant::now();
    let a = http_backend("a").await;
    let dir = TempDir::new("plugin");
    std::fs::create_dir(dir.path("plugins")).unwrap();
    let variants = route_plugins();
    let route = dir.path("plugins/route.wasm");
    std::fs::write(&route, &variants[0].0).unwrap();
    std::fs::write(dir.path("sluice.toml"), route_plugin_config(&a)).unwrap();
    let proxy = Proxy::start(&dir.path("sluice.toml"), true).await;
    let addr = proxy.addr("main");
    let probe = || not_found_variant(addr);
    assert_eq!(probe().await, "this");

    let mut replacer = Replacer::new(route.clone());
    // Warm-up, not timed: the first load of the second file compiles it
    // (the compile cache makes every later load of either file cheap).
    let written = replacer.replace(Method::Rename, &variants[1].0).await;
    let compile = in_effect_eventually(written, "THAT", probe, &proxy.reload).await;
    println!("first load of the second plugin file (compiling it) in effect after {compile:?}");

    let load = Load::start(addr, "/load/x", answered_by_a, 3).await;
    let mut latencies = Latencies(Vec::new());
    let mut current = 1;
    for method in METHODS {
        for i in 0..REPLACEMENTS {
            current = 1 - current;
            let (bytes, want) = &variants[current];
            let written = replacer.replace(method, bytes).await;
            latencies.0.push(in_effect(written, want, &format!("{method:?} #{i}"), probe).await);
        }
    }
    latencies.report("route plugin file");

    // A truncated .wasm written mid-load changes nothing, loudly.
    let failures = proxy.reload.status().failures;
    let (good, want) = &variants[1 - current];
    let old = variants[current].1;
    replacer.replace(Method::Rename, &good[..good.len() / 2]).await;
    let status = wait_status(&proxy.reload, "truncated wasm", |s| s.failures > failures).await;
    let error = status.last_error().unwrap();
    assert!(error.contains("plugin `route`") && error.contains("route.wasm"), "names the plugin and file: {error}");
    assert!(error.contains("not a valid WebAssembly component"), "{error}");
    stays(Duration::from_millis(300), old, "the old plugin stays live", probe).await;
    // Fixing it is picked up.
    let written = replacer.replace(Method::InPlace, good).await;
    in_effect(written, want, "the fixed file", probe).await;
    // The new version answers as soon as it is swapped in; the status is
    // published a moment later, after the watched files are hashed again.
    wait_status(&proxy.reload, "the fixed file clears the error", |s| s.last_error().is_none()).await;

    let (requests, echoes) = load.finish().await;
    println!("under load: {requests} requests and {echoes} WebSocket echoes, none failed");
    assert!(requests > 100 && echoes > 30, "the load ran: {requests} requests, {echoes} echoes");
    let status = proxy.reload.status();
    println!("reload status: {} ok, {} refused", status.successes, status.failures);
    assert!(status.successes >= (METHODS.len() * REPLACEMENTS) as u64 + 2);
    assert_eq!(proxy.stop().await, Drained::Clean);
    println!("total {:?}", started.elapsed());
}

/// Like [`in_effect`], with a generous deadline (for a first compile).
async fn in_effect_eventually<F, Fut>(since: Instant, want: &str, mut probe: F, reload: &ReloadHandle) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = String>,
{
    for _ in 0..1000 {
        if probe().await == want {
            return since.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{want:?} never came into effect; reload status: {:?}", reload.status());
}
