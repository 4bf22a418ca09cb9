//! One plugin decision by each default plugin, measured two ways:
//! - `warm`: the steady state, an initialised instance taken from the pool;
//! - `cold`: instance start (pooling allocator), `init` with the settings,
//!   then the decision: what the first decision after a reload, or a burst
//!   beyond the warm pool, costs. This is "instance start included".
//!
//! Groups:
//! - `sniff-decision`: the default sniff plugin (`plugins/sniff`) on a TLS
//!   ClientHello, an HTTP/1.1 request head and an SSH banner;
//! - `route-decision`: the default path plugin (`plugins/path`) with a small
//!   rule set of the kind a Socket.IO deployment uses, on a browser's
//!   long-polling request; and a trivial router (`plugins/testing/declare`)
//!   declaring every header (`all-headers`, as a 0.1.0 plugin gets them) or
//!   none (`no-headers`), to show what lowering the headers costs.
//!
//! Run with `cargo bench --bench plugin`. Criterion prints the mean; the
//! median is in `target/criterion/<group>/<case>/new/estimates.json`
//! (`bench/plugin-medians.sh` prints all of them).

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::config::PluginLimits;
use sluice::names::PluginName;
use sluice::plugin::wasm::Runtime;
use sluice::plugin::{ConnFacts, RouteRequest, Router, Sniffer};
use std::hint::black_box;
use std::path::Path;

fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata").join(name)).unwrap()
}

fn sniff_decision(c: &mut Criterion) {
    let wasm = sluice::builtin::component("sniff").unwrap();
    let runtime = Runtime::new().unwrap();
    let settings = r#"{"http-backend":"web"}"#.to_string();
    let plugin = runtime.load_sniffer(PluginName::new("sniff"), wasm, settings, PluginLimits::default()).unwrap();
    let conn = ConnFacts::probe();

    let mut group = c.benchmark_group("sniff-decision");
    for capture in ["tls-client-hello.bin", "http1-get.bin", "ssh-banner.bin"] {
        let head = testdata(capture);
        group.bench_function(format!("warm/{capture}"), |b| {
            b.iter(|| plugin.classify(&conn, black_box(&head), false).unwrap())
        });
    }
    let head = testdata("http1-get.bin");
    group.bench_function("cold/http1-get.bin", |b| {
        b.iter(|| plugin.classify_cold(&conn, black_box(&head), false).unwrap())
    });
    group.finish();
}

/// Socket.IO with sticky long-polling, an API host with a stripped prefix, a
/// redirect for an old host, and a canary by header: four rules, as in a
/// small real deployment.
const ROUTE_SETTINGS: &str = r#"{
    "default-backend": "web",
    "rules": [
        {"path-prefix": "/socket.io/", "backend": "socketio", "affinity": "client-ip"},
        {"host": "api.example.test", "path-prefix": "/v1/", "backend": "api", "strip-prefix": true,
         "set-headers": {"x-routed-by": "sluice"}},
        {"host": "old.example.test", "respond": {"status": 301, "headers": {"location": "https://example.test/"}}},
        {"path-prefix": "/admin/", "headers": {"x-canary": "1"}, "backend": "admin-canary"}
    ]
}"#;

/// A browser's Socket.IO long-polling request: matches the first rule.
fn polling_request() -> RouteRequest {
    let header = |name: &str, value: &str| (name.to_string(), value.as_bytes().to_vec());
    RouteRequest {
        method: "GET".into(),
        path: "/socket.io/?EIO=4&transport=polling&t=P0x1a2b".into(),
        authority: Some("example.test".into()),
        headers: vec![
            header("host", "example.test"),
            header("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
            header("accept", "*/*"),
            header("accept-language", "en-GB,en;q=0.5"),
            header("cookie", "io=Xb2kL0aQ9pRsT1uVAAAB"),
            header("connection", "keep-alive"),
        ],
    }
}

fn route_decision(c: &mut Criterion) {
    let wasm = sluice::builtin::component("path").unwrap();
    let runtime = Runtime::new().unwrap();
    let limits = PluginLimits::default();
    let plugin = runtime.load_router(PluginName::new("path"), wasm, ROUTE_SETTINGS.to_string(), limits).unwrap();
    let conn = ConnFacts::probe();
    let request = polling_request();

    let mut group = c.benchmark_group("route-decision");
    group.bench_function("warm/socket.io-polling", |b| b.iter(|| plugin.pick(&conn, black_box(&request)).unwrap()));
    group
        .bench_function("cold/socket.io-polling", |b| b.iter(|| plugin.pick_cold(&conn, black_box(&request)).unwrap()));

    // What the lazy request view saves: the same trivial router (the test
    // plugin `declare`) declaring every header, then none, on the same request.
    let declare = std::fs::read(Path::new(env!("SLUICE_PLUGIN_DIR")).join("declare.wasm")).unwrap();
    for (case, headers) in [("all-headers", ""), ("no-headers", r#", "headers": []"#)] {
        let settings = format!(r#"{{"backends": ["web"], "forward": "web"{headers}}}"#);
        let plugin = runtime.load_router(PluginName::new("declare"), &declare, settings, limits).unwrap();
        group.bench_function(format!("warm/{case}"), |b| b.iter(|| plugin.pick(&conn, black_box(&request)).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, sniff_decision, route_decision);
criterion_main!(benches);
