//! One sniff decision by the default sniff plugin, measured three ways:
//! - `warm`: the steady state, an initialised instance taken from the pool;
//! - `cold`: instance start (pooling allocator), `init` with the settings,
//!   then the decision — what the first decision after a reload costs;
//! - per input: a TLS ClientHello, an HTTP request line, an SSH banner.
//!
//! Run with `cargo bench --bench plugin`.

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::config::PluginLimits;
use sluice::names::PluginName;
use sluice::plugin::wasm::Runtime;
use sluice::plugin::{ConnFacts, Sniffer};
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

criterion_group!(benches, sniff_decision);
criterion_main!(benches);
