//! Plugins in JavaScript and Python: the example routers in
//! `examples/plugins/{js-router,py-router}`, built with their registry
//! toolchains (componentize-js, componentize-py; default builds, WASI not
//! stubbed out), loaded into the real proxy and driven with real requests:
//! `x-beta: 1` goes to `beta`, `/hello` is answered by the plugin (which
//! prints a line that must reach the proxy log), the rest goes to `web`.
//!
//! The toolchains are installed by `.ci/run` (npm ci, a venv from
//! requirements.txt). Without them the tests skip with a message; with
//! `CI=true` they fail instead.
//!
//! Each test also prints one bounded measurement of its plugin next to the
//! Rust path plugin's (size, load, cold and warm decision, memory per
//! instance); the figures in docs/PLUGINS-LANGUAGES.md come from here.

mod common;

use bytes::Bytes;
use common::http_backend::{field, http_backend};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use sluice::config::PluginLimits;
use sluice::names::PluginName;
use sluice::plugin::wasm::{Runtime, WasmRouter};
use sluice::plugin::{ConnFacts, RouteRequest, Router};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The interpreters start with more memory than Rust plugins need.
const MEMORY_LIMIT: &str = "64MiB";

/// Measurements run one at a time, so tests running in parallel do not skew them.
static MEASURING: Mutex<()> = Mutex::new(());

struct Lang {
    /// The example's directory name, also the plugin name in the proxy.
    name: &'static str,
    /// What `/hello` answers and prints ("hello from …").
    greeting: &'static str,
    /// A file that exists once the toolchain is installed.
    toolchain: &'static str,
    /// Files whose change calls for a rebuild.
    inputs: &'static [&'static str],
    /// The build command, given the output path.
    build: fn(&Path, &Path) -> Command,
}

const JS: Lang = Lang {
    name: "js-router",
    greeting: "hello from JavaScript",
    toolchain: "node_modules/@bytecodealliance/componentize-js/package.json",
    inputs: &["router.js", "build.mjs", "package-lock.json"],
    build: |dir, out| {
        let mut command = Command::new("node");
        command.arg(dir.join("build.mjs")).arg(out);
        command
    },
};

const PY: Lang = Lang {
    name: "py-router",
    greeting: "hello from Python",
    toolchain: ".venv/bin/componentize-py",
    inputs: &["app.py", "build.sh", "requirements.txt"],
    build: |dir, out| {
        let mut command = Command::new(dir.join("build.sh"));
        command.arg(out);
        command
    },
};

/// The built component, rebuilt when an input is newer; `None` (after
/// saying why) when the toolchain is not installed outside CI.
fn built(lang: &Lang) -> Option<PathBuf> {
    let dir = repo_root().join("examples/plugins").join(lang.name);
    if !dir.join(lang.toolchain).exists() {
        let why = format!(
            "the {} toolchain is not installed ({} is missing; .ci/run installs it)",
            lang.name, lang.toolchain
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipping: {why}");
        return None;
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.wasm", lang.name));
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let newest_input = lang
        .inputs
        .iter()
        .map(|input| dir.join(input))
        .chain([repo_root().join("wit/plugin.wit")])
        .filter_map(|path| modified(&path))
        .max();
    if modified(&out).is_none_or(|built| newest_input.is_some_and(|input| input > built)) {
        let started = Instant::now();
        let status = (lang.build)(&dir, &out).current_dir(&dir).status().expect("running the build");
        assert!(status.success(), "building {} failed: {status}", lang.name);
        eprintln!("{}: built in {:.1} s", lang.name, started.elapsed().as_secs_f64());
    }
    Some(out)
}

fn request(path: &str, headers: &[(&str, &str)]) -> RouteRequest {
    RouteRequest {
        method: "GET".into(),
        path: path.into(),
        authority: Some("www.test".into()),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One bounded measurement: load (compile, start, `init`, probe), a cold
/// decision (a fresh instance: start, `init`, `pick`), a warm decision
/// (median of 200 on a live instance) and the linear memory of an instance.
fn measure(name: &str, wasm: &[u8], settings: &str, memory_limit: u64) -> String {
    let _one_at_a_time = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let limits = PluginLimits { memory_limit, ..PluginLimits::default() };
    let runtime = Runtime::new().unwrap();
    let started = Instant::now();
    let plugin: std::sync::Arc<WasmRouter> =
        runtime.load_router(PluginName::new(name), wasm, settings.into(), limits).unwrap();
    let load = started.elapsed();
    let conn = ConnFacts::probe();
    let req = request("/", &[("user-agent", "measure")]);
    let cold = median(
        (0..5)
            .map(|_| {
                let started = Instant::now();
                plugin.pick_cold(&conn, &req).unwrap();
                started.elapsed()
            })
            .collect(),
    );
    for _ in 0..20 {
        plugin.pick(&conn, &req).unwrap();
    }
    let warm = median(
        (0..200)
            .map(|_| {
                let started = Instant::now();
                plugin.pick(&conn, &req).unwrap();
                started.elapsed()
            })
            .collect(),
    );
    let memory = plugin.warm_instance_memory().unwrap_or(0);
    format!(
        "| {name} | {:.2} MB | {:.0} ms | {:.0} µs | {:.1} µs | {:.1} MiB |",
        wasm.len() as f64 / 1e6,
        load.as_secs_f64() * 1e3,
        cold.as_secs_f64() * 1e6,
        warm.as_secs_f64() * 1e6,
        memory as f64 / (1 << 20) as f64,
    )
}

fn rust_figures() -> String {
    let wasm = std::fs::read(plugin_path("path")).unwrap();
    measure("rust (path)", &wasm, r#"{"default-backend":"web"}"#, 16 << 20)
}

async fn get(proxy: &Proxy, path: &str, beta: bool) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(proxy.addr("main")).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(path).header("host", "www.test");
    if beta {
        request = request.header("x-beta", "1");
    }
    let response = sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn routes_real_requests(lang: &Lang) {
    log_capture::install();
    let Some(wasm_path) = built(lang) else { return };
    let wasm = std::fs::read(&wasm_path).unwrap();
    let figures = measure(lang.name, &wasm, "{}", sluice::config::parse_size(MEMORY_LIMIT).unwrap());
    println!("| plugin | size | load | cold decision | warm decision | memory per instance |");
    println!("|---|---|---|---|---|---|\n{figures}\n{}", rust_figures());

    let (web, beta) = (http_backend("web").await, http_backend("beta").await);
    let proxy = Proxy::start(&format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "{name}"

[backends.web]
servers = ["{web}"]
[backends.beta]
servers = ["{beta}"]

[plugins.sniff]
builtin = "sniff"
[plugins.{name}]
file = "{file}"
memory-limit = "{MEMORY_LIMIT}"
"#,
        name = lang.name,
        web = web.addr,
        beta = beta.addr,
        file = wasm_path.display(),
    ))
    .await;

    for (path, beta, backend) in
        [("/", false, "web"), ("/app.js", false, "web"), ("/", true, "beta"), ("/hello", true, "beta")]
    {
        let (status, body) = get(&proxy, path, beta).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(field(&body, "backend"), Some(backend), "{path} (x-beta: {beta}): {body}");
    }
    let (status, body) = get(&proxy, "/hello", false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with(&format!("{}, 127.0.0.1:", lang.greeting)), "{body}");
    assert_eq!(web.requests() + beta.requests(), 4, "/hello was answered by the plugin");

    // What the plugin printed reached the log, tagged with its name.
    let printed = format!("{}: {}", lang.name, lang.greeting);
    let lines = log_capture::lines_with(&[&printed, "stdout", "plugin="]);
    assert_eq!(lines.len(), 1, "{printed} in the log once: {lines:?}");
    assert_eq!(lines[0].matches(lang.name).count(), 2, "tagged with the plugin's name: {}", lines[0]);
    // So did its `host.log` line from `init` (at load and at each new instance).
    assert!(!log_capture::lines_with(&[&format!("{} ready", lang.name)]).is_empty());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_router_routes_real_requests() {
    routes_real_requests(&JS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_router_routes_real_requests() {
    routes_real_requests(&PY).await;
}
