//! The plugin contract, sluice:plugin@0.2.0: what plugins declare at `init`
//! (their backends and the headers they read) and what the host does with it,
//! with real components from `plugins/`: `declare` (a 0.2.0 router built on
//! the SDK that declares what its settings say and reports what it was
//! handed), the built-in `path`, and `leak` (still built against 0.1.0).

mod common;

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sluice::config::{Config, PluginLimits};
use sluice::names::{BackendName, PluginName};
use sluice::plugin::wasm::{Runtime, WasmRouter};
use sluice::plugin::{
    ConnFacts, HeaderInterest, Manifest, PluginError, RouteDecision, RouteRequest, Router, Sniffer, Verdict,
};
use std::process::Command;
use std::sync::Arc;

fn load_router(plugin: &str, wasm: &[u8], settings: &str) -> Arc<WasmRouter> {
    let runtime = Runtime::new().unwrap();
    runtime.load_router(PluginName::new(plugin), wasm, settings.into(), PluginLimits::default()).unwrap()
}

fn declare(settings: &str) -> Arc<WasmRouter> {
    load_router("declare", &std::fs::read(plugin_path("declare")).unwrap(), settings)
}

fn request(path: &str, headers: &[(&str, &str)]) -> RouteRequest {
    RouteRequest {
        method: "GET".into(),
        path: path.into(),
        authority: Some("example.test".into()),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
    }
}

fn body(decision: RouteDecision) -> String {
    match decision {
        RouteDecision::Respond(response) => String::from_utf8(response.body).unwrap(),
        other => panic!("expected a response, got {other:?}"),
    }
}

fn backends(names: &[&str]) -> Option<Vec<BackendName>> {
    Some(names.iter().map(|n| BackendName::new(*n)).collect())
}

#[test]
fn the_sdk_carries_an_identical_copy_of_the_wit() {
    let root = repo_root();
    let wit = std::fs::read_to_string(root.join("wit/plugin.wit")).unwrap();
    let copy = std::fs::read_to_string(root.join("plugins/sdk/wit/plugin.wit")).unwrap();
    assert!(wit.contains("package sluice:plugin@0.2.0;"));
    assert!(wit == copy, "plugins/sdk/wit/plugin.wit differs from wit/plugin.wit: copy it over");
}

#[test]
fn pick_gets_only_the_headers_the_plugin_declared() {
    let sent = [("x-a", "1"), ("cookie", "sid=2"), ("x-b", "3"), ("x-a", "4")];
    let only = declare(r#"{"backends": ["web"], "headers": ["X-A", "x-missing"], "forward": "web"}"#);
    assert_eq!(only.manifest().headers, HeaderInterest::Only(vec!["x-a".into(), "x-missing".into()]));
    let seen = body(only.pick(&ConnFacts::probe(), &request("/seen", &sent)).unwrap());
    assert_eq!(seen, "headers=x-a,x-a tenant=-");

    let all = declare(r#"{"backends": ["web"], "forward": "web"}"#);
    assert_eq!(all.manifest().headers, HeaderInterest::All);
    let seen = body(all.pick(&ConnFacts::probe(), &request("/seen", &sent)).unwrap());
    assert_eq!(seen, "headers=x-a,cookie,x-b,x-a tenant=-");

    let none = declare(r#"{"backends": [], "headers": [], "forward": "web"}"#);
    let conn = ConnFacts { tenant: Some("acme".into()), ..ConnFacts::probe() };
    assert_eq!(body(none.pick(&conn, &request("/seen", &sent)).unwrap()), "headers= tenant=acme");
}

#[test]
fn a_decision_naming_an_undeclared_backend_is_a_plugin_error() {
    let plugin = declare(r#"{"backends": ["web"], "forward": "api"}"#);
    assert_eq!(plugin.manifest().backends, backends(&["web"]));
    let err = plugin.pick(&ConnFacts::probe(), &request("/", &[])).unwrap_err();
    assert!(matches!(&err, PluginError::UndeclaredBackend(name) if name == "api"), "{err}");
    assert_eq!(err.label(), "undeclared-backend");

    let plugin = declare(r#"{"backends": ["web"], "forward": "web"}"#);
    let decision = plugin.pick(&ConnFacts::probe(), &request("/", &[])).unwrap();
    assert!(matches!(decision, RouteDecision::Forward(f) if f.backend.as_str() == "web"));
}

#[test]
fn the_built_in_plugins_declare_what_their_settings_use() {
    let settings = r#"{
        "default-backend": "web",
        "rules": [
            {"path-prefix": "/socket.io/", "backend": "io", "affinity": {"cookie": "sid"}},
            {"headers": {"X-Canary": "1"}, "backend": "canary", "affinity": {"header": "x-user"}},
            {"path-prefix": "/old", "respond": {"status": 301}}
        ]
    }"#;
    let path = load_router("path", sluice::builtin::component("path").unwrap(), settings);
    let expected = Manifest {
        backends: backends(&["io", "canary", "web"]),
        headers: HeaderInterest::Only(vec!["cookie".into(), "x-canary".into(), "x-user".into()]),
    };
    assert_eq!(*path.manifest(), expected);

    let runtime = Runtime::new().unwrap();
    let settings = r#"{"tls-backend": "tls", "tls-passthrough": {"db.test": "db"}, "other-backend": "ssh"}"#;
    let wasm = sluice::builtin::component("sniff").unwrap();
    let sniff = runtime.load_sniffer(PluginName::new("sniff"), wasm, settings.into(), PluginLimits::default()).unwrap();
    assert_eq!(sniff.manifest().backends, backends(&["tls", "ssh", "db"]));
}

#[test]
fn a_component_built_against_0_1_0_still_loads_with_nothing_declared() {
    let wasm = std::fs::read(plugin_path("leak")).unwrap();
    let runtime = Runtime::new().unwrap();
    let plugin = runtime.load_sniffer(PluginName::new("old"), &wasm, "{}".into(), PluginLimits::default()).unwrap();
    assert_eq!(*plugin.manifest(), Manifest::UNDECLARED);
    // Its backends are not checked: any name goes through, as in 0.1.0.
    let verdict = plugin.classify(&ConnFacts::probe(), b"COUNT", false).unwrap();
    assert!(matches!(verdict, Verdict::Forward(name) if name.as_str().starts_with("calls-")));
}

const UNKNOWN_BACKEND_CONFIG: &str = r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"

[backends.web]
servers = ["127.0.0.1:9"]

[plugins.sniff]
builtin = "sniff"
[plugins.sniff.settings]
other-backend = "ssh"

[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "wbe"
"#;

#[test]
fn check_refuses_a_plugin_that_can_route_to_an_unknown_backend() {
    let dir = std::env::temp_dir().join(format!("sluice-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("typo.toml");
    std::fs::write(&config, UNKNOWN_BACKEND_CONFIG).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("check").arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    // Every problem at once, each with the file, the plugin and the backend.
    assert!(stderr.contains("typo.toml: 2 problems"), "{stderr}");
    assert!(
        stderr.contains(
            "plugins.path.settings: plugin `path` can route to backend `wbe`, which is not defined (backends: `web`)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("plugins.sniff.settings: plugin `sniff` can route to backend `ssh`"), "{stderr}");
}

#[test]
fn start_up_refuses_it_too() {
    let config = Config::parse(UNKNOWN_BACKEND_CONFIG, std::path::Path::new("typo.toml")).unwrap();
    let err = sluice::state::Snapshot::build(&config, &Runtime::new().unwrap()).err().expect("refused");
    assert!(err.to_string().contains("`wbe`"), "{err}");
}

#[tokio::test]
async fn the_proxy_hands_a_route_plugin_only_its_headers() {
    let web = common::http_backend::http_backend("web").await;
    let proxy = Proxy::start(&format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "declare"

[backends.web]
servers = ["{web}"]

[plugins.sniff]
builtin = "sniff"

[plugins.declare]
file = "{file}"
[plugins.declare.settings]
backends = ["web"]
headers = ["x-wanted"]
forward = "web"
"#,
        web = web.addr,
        file = plugin_path("declare").display(),
    ))
    .await;
    let stream = tokio::net::TcpStream::connect(proxy.addr("main")).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::get("/seen")
        .header("host", "example.test")
        .header("x-wanted", "yes")
        .header("x-unwanted", "no")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "headers=x-wanted tenant=-");
    // Requests the plugin forwards reach the backend with every header.
    let request = Request::get("/").header("host", "example.test").header("x-unwanted", "kept");
    let response = sender.send_request(request.body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(common::http_backend::field(&String::from_utf8_lossy(&body), "x-unwanted"), Some("kept"));
    proxy.stop().await;
}

#[test]
fn load_errors_name_the_contract_version() {
    let runtime = Runtime::new().unwrap();
    let load = |wasm: &[u8]| {
        runtime.load_router(PluginName::new("x"), wasm, "{}".into(), PluginLimits::default()).err().expect("refused")
    };
    let err = load(sluice::builtin::component("sniff").unwrap());
    assert!(err.to_string().starts_with("does not fit the `router` world of sluice:plugin@0.2.0: "), "{err}");
    let newer = wat::parse_str(r#"(component (instance $i) (export "sluice:plugin/setup@0.3.0" (instance $i)))"#);
    let err = load(&newer.unwrap());
    assert_eq!(
        err.to_string(),
        "is not a sluice `router` plugin: it targets sluice:plugin@0.3.0; this sluice runs 0.2.0 (and still loads 0.1.0)"
    );
}
