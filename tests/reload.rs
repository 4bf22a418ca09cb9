//! Live reload end to end: the real proxy started from a config file on
//! disk, with the file watcher on, under continuous HTTP and WebSocket load,
//! while the route plugin's `.wasm` and the config file are replaced by every
//! method deployments use.

mod common;

use bytes::Bytes;
use common::http_backend::{HttpBackend, field, http_backend};
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use sluice::reload::{ReloadHandle, ReloadStatus, Trigger};
use sluice::{App, Config, Drained};
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// How soon after a write its new behaviour must be live.
const IN_EFFECT_WITHIN: Duration = Duration::from_millis(500);
/// Replacements per method.
const REPLACEMENTS: usize = 20;

// ---------------------------------------------------------------------------
// Harness: a proxy started from a config file, temporary directories, the
// four ways of replacing a file.

/// A running proxy started from a config file, with its reload handle.
struct Proxy {
    reload: ReloadHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Drained>,
}

impl Proxy {
    async fn start(config: &Path, watch: bool) -> Proxy {
        let config = Config::load(config).unwrap_or_else(|e| panic!("{e}"));
        let app = App::bind(config).await.unwrap_or_else(|e| panic!("proxy failed to start: {e}"));
        let reload = app.reload_handle();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.with_grace(Duration::from_secs(5)).with_watch(watch).run(async {
            let _ = stopped.await;
        }));
        Proxy { reload, stop: Some(stop), task }
    }

    fn addr(&self, listener: &str) -> SocketAddr {
        self.reload.local_addr(listener).unwrap_or_else(|| panic!("no listener `{listener}`"))
    }

    async fn stop(mut self) -> Drained {
        let _ = self.stop.take().expect("stopped once").send(());
        self.task.await.expect("proxy task")
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sluice-reload-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ways deployments replace a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// Truncate and write in place, in three partial writes 30 ms apart.
    InPlace,
    /// Write a temporary file next to it, then rename it over.
    Rename,
    /// Delete it, then create it again.
    Recreate,
    /// A Kubernetes ConfigMap/Secret volume: `name -> ..data/name`, and
    /// `..data -> ..<version>` swapped atomically by renaming a new symlink over it.
    Kubernetes,
}

const METHODS: [Method; 4] = [Method::InPlace, Method::Rename, Method::Recreate, Method::Kubernetes];

/// Replaces `target` with `content` by `method`; returns when the
/// replacement is complete (the moment the new behaviour is measured from).
struct Replacer {
    target: PathBuf,
    /// The Kubernetes layout's current version directory, once set up.
    kubernetes: Option<(PathBuf, u32)>,
}

impl Replacer {
    fn new(target: PathBuf) -> Replacer {
        Replacer { target, kubernetes: None }
    }

    fn dir(&self) -> PathBuf {
        self.target.parent().unwrap().to_path_buf()
    }

    fn name(&self) -> String {
        self.target.file_name().unwrap().to_string_lossy().into_owned()
    }

    async fn replace(&mut self, method: Method, content: &[u8]) -> Instant {
        match method {
            Method::InPlace => {
                let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(&self.target).unwrap();
                let third = content.len().div_ceil(3);
                for (i, chunk) in content.chunks(third).enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                    file.write_all(chunk).unwrap();
                    file.flush().unwrap();
                }
            }
            Method::Rename => {
                let temp = self.dir().join(format!(".{}.tmp", self.name()));
                std::fs::write(&temp, content).unwrap();
                std::fs::rename(&temp, &self.target).unwrap();
            }
            Method::Recreate => {
                std::fs::remove_file(&self.target).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
                std::fs::write(&self.target, content).unwrap();
            }
            Method::Kubernetes => {
                if self.kubernetes.is_none() {
                    self.make_kubernetes_layout();
                }
                let (old, n) = self.kubernetes.take().unwrap();
                let version = self.dir().join(format!("..2026_01_01_00_00_00.{:09}", n + 1));
                std::fs::create_dir(&version).unwrap();
                std::fs::write(version.join(self.name()), content).unwrap();
                let data_tmp = self.dir().join("..data_tmp");
                std::os::unix::fs::symlink(version.file_name().unwrap(), &data_tmp).unwrap();
                std::fs::rename(&data_tmp, self.dir().join("..data")).unwrap();
                let done = Instant::now();
                std::fs::remove_dir_all(&old).unwrap();
                self.kubernetes = Some((version, n + 1));
                return done;
            }
        }
        Instant::now()
    }

    /// Turn the plain file into the Kubernetes layout, same content (so no
    /// reload is due).
    fn make_kubernetes_layout(&mut self) {
        let version = self.dir().join("..2026_01_01_00_00_00.000000000");
        std::fs::create_dir(&version).unwrap();
        std::fs::copy(&self.target, version.join(self.name())).unwrap();
        std::os::unix::fs::symlink(version.file_name().unwrap(), self.dir().join("..data")).unwrap();
        let link = self.dir().join(format!(".{}.link", self.name()));
        std::os::unix::fs::symlink(Path::new("..data").join(self.name()), &link).unwrap();
        std::fs::rename(&link, &self.target).unwrap();
        self.kubernetes = Some((version, 0));
    }
}

// ---------------------------------------------------------------------------
// Clients: one-shot HTTP requests, continuous load, WebSockets.

type ClientBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn get(path: &str) -> Request<ClientBody> {
    Request::get(path).header("host", "reload.test").body(Empty::new().boxed()).unwrap()
}

/// One request on a new connection: status and body, or what went wrong.
async fn fetch(addr: SocketAddr, path: &str) -> Result<(StatusCode, String), String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        let response = sender.send_request(get(path)).await.map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.unwrap_or_else(|_| Err("timed out".to_string()))
}

/// Continuous load until stopped: HTTP requests (new connections and a
/// keep-alive connection) and WebSockets echoing every 50 ms. Every failure
/// is recorded with what went wrong.
struct Load {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    echoes: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Upper bound on what each load task does, so no loop can run away.
const MAX_LOAD_ITERATIONS: usize = 100_000;

impl Load {
    /// `check` says whether a response to `path` is one of the expected ones.
    async fn start(
        addr: SocketAddr,
        path: &'static str,
        check: fn(StatusCode, &str) -> bool,
        websockets: usize,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let echoes = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();

        // Two clients opening a new connection per request.
        for _ in 0..2 {
            let (stop, requests, failures) = (stop.clone(), requests.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..MAX_LOAD_ITERATIONS {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match fetch(addr, path).await {
                        Ok((status, body)) if check(status, &body) => {}
                        Ok((status, body)) => failures.lock().unwrap().push(format!("unexpected {status}: {body}")),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }));
        }
        // One keep-alive client (it keeps the version its connection started with).
        {
            let (stop, requests, failures) = (stop.clone(), requests.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake::<_, ClientBody>(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(connection);
                for _ in 0..MAX_LOAD_ITERATIONS {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = async {
                        sender.ready().await.map_err(|e| format!("keep-alive ready: {e}"))?;
                        let response =
                            sender.send_request(get(path)).await.map_err(|e| format!("keep-alive request: {e}"))?;
                        let status = response.status();
                        let body = response.into_body().collect().await.map_err(|e| format!("keep-alive: {e}"))?;
                        Ok::<_, String>((status, String::from_utf8_lossy(&body.to_bytes()).into_owned()))
                    };
                    match tokio::time::timeout(Duration::from_secs(5), result).await {
                        Ok(Ok((status, body))) if check(status, &body) => {}
                        Ok(Ok((status, body))) => {
                            failures.lock().unwrap().push(format!("keep-alive: unexpected {status}: {body}"))
                        }
                        Ok(Err(e)) => {
                            failures.lock().unwrap().push(e);
                            break;
                        }
                        Err(_) => {
                            failures.lock().unwrap().push("keep-alive: timed out".to_string());
                            break;
                        }
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }));
        }
        // WebSockets, open for the whole test, each echoing every 50 ms.
        for n in 0..websockets {
            let mut socket = websocket(addr).await;
            let (stop, echoes, failures) = (stop.clone(), echoes.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..MAX_LOAD_ITERATIONS {
                    let last = stop.load(Ordering::Relaxed);
                    let text = format!("socket {n} message {i}");
                    let echo = async {
                        socket.send(Message::text(text.clone())).await.map_err(|e| format!("ws send: {e}"))?;
                        match socket.next().await {
                            Some(Ok(Message::Text(echoed))) if echoed.as_str() == text => Ok(()),
                            other => Err(format!("ws {n}: expected the echo of {text:?}, got {other:?}")),
                        }
                    };
                    match tokio::time::timeout(Duration::from_secs(5), echo).await {
                        Ok(Ok(())) => echoes.fetch_add(1, Ordering::Relaxed),
                        Ok(Err(e)) => return failures.lock().unwrap().push(e),
                        Err(_) => return failures.lock().unwrap().push(format!("ws {n}: echo timed out")),
                    };
                    if last {
                        // One more echo after the stop signal proves it is still open.
                        let _ = socket.close(None).await;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        Load { stop, requests, echoes, failures, tasks }
    }

    /// Stop, and assert that not one request or echo failed.
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} failures under load, the first: {:?}",
            failures.len(),
            &failures[..5.min(failures.len())]
        );
        (self.requests.load(Ordering::Relaxed), self.echoes.load(Ordering::Relaxed))
    }
}

async fn websocket(addr: SocketAddr) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (socket, response) = tokio_tungstenite::client_async("ws://reload.test/ws", stream).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
}

/// Poll `probe` (each call a new connection) until it answers `want`;
/// panic if that takes longer than [`IN_EFFECT_WITHIN`] from `since`.
/// Returns how long it took.
async fn in_effect<F, Fut>(since: Instant, want: &str, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = String>,
{
    loop {
        let seen = probe().await;
        let elapsed = since.elapsed();
        if seen == want {
            return elapsed;
        }
        assert!(elapsed < IN_EFFECT_WITHIN, "{what}: still {seen:?} {elapsed:?} after the write (want {want:?})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait (up to 5 s) until the reload status satisfies `done`.
async fn wait_status(reload: &ReloadHandle, what: &str, done: impl Fn(&ReloadStatus) -> bool) -> ReloadStatus {
    let mut status = reload.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| done(s))).await;
    match waited {
        Ok(Ok(status)) => status.clone(),
        _ => panic!("{what}: reload status is {:?}", reload.status()),
    }
}

/// Over `period`, every probe answers `want`.
async fn stays<F, Fut>(period: Duration, want: &str, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = String>,
{
    let until = Instant::now() + period;
    while Instant::now() < until {
        assert_eq!(probe().await, want, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn report(&self, what: &str) {
        let mut sorted = self.0.clone();
        sorted.sort();
        let median = sorted[sorted.len() / 2];
        let max = sorted.last().unwrap();
        println!("{what}: {} changes in effect after median {median:?}, max {max:?}", sorted.len());
    }
}

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
    assert!(proxy.reload.status().last_error().is_none());

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

// ---------------------------------------------------------------------------
// The config file replaced under load: a route moves between backends.

fn routing_config(a: &HttpBackend, b: &HttpBackend, to: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"

[backends.a]
servers = ["{a}"]
[backends.b]
servers = ["{b}"]

[plugins.sniff]
builtin = "sniff"

[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "{to}"
[[plugins.path.settings.rules]]
path-prefix = "/ws"
backend = "a"
"#,
        a = a.addr,
        b = b.addr
    )
}

async fn backend_of(addr: SocketAddr) -> String {
    let (status, body) = fetch(addr, "/probe").await.unwrap_or_else(|e| panic!("probe failed: {e}"));
    assert_eq!(status, StatusCode::OK, "{body}");
    field(&body, "backend").expect("a backend answered").to_string()
}

fn answered_by_a_or_b(status: StatusCode, body: &str) -> bool {
    status == StatusCode::OK && matches!(field(body, "backend"), Some("a" | "b"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_replaced_under_load_by_every_method() {
    let started = Instant::now();
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let dir = TempDir::new("config");
    let config = dir.path("sluice.toml");
    std::fs::write(&config, routing_config(&a, &b, "a")).unwrap();
    let proxy = Proxy::start(&config, true).await;
    let addr = proxy.addr("main");
    let probe = || backend_of(addr);
    assert_eq!(probe().await, "a");

    let load = Load::start(addr, "/load", answered_by_a_or_b, 3).await;
    let mut replacer = Replacer::new(config.clone());
    let mut latencies = Latencies(Vec::new());
    let mut to = "a";
    for method in METHODS {
        for i in 0..REPLACEMENTS {
            to = if to == "a" { "b" } else { "a" };
            let written = replacer.replace(method, routing_config(&a, &b, to).as_bytes()).await;
            latencies.0.push(in_effect(written, to, &format!("{method:?} #{i}"), probe).await);
        }
    }
    latencies.report("config file");
    let other = if to == "a" { "b" } else { "a" };

    // A config with an error changes nothing, and says which file and field.
    let failures = proxy.reload.status().failures;
    let broken = routing_config(&a, &b, other).replace("servers = [", "servers = 7 + [");
    replacer.replace(Method::Rename, broken.as_bytes()).await;
    let status = wait_status(&proxy.reload, "config with a syntax error", |s| s.failures > failures).await;
    let error = status.last_error().unwrap();
    assert!(error.contains("sluice.toml"), "names the file: {error}");
    stays(Duration::from_millis(300), to, "the old config stays live", probe).await;
    let failures = status.failures;
    let dangling = routing_config(&a, &b, other).replace("route = \"path\"", "route = \"path\"\nnope = 1");
    replacer.replace(Method::InPlace, dangling.as_bytes()).await;
    let status = wait_status(&proxy.reload, "config with an unknown key", |s| s.failures > failures).await;
    assert!(status.last_error().unwrap().contains("sluice.toml"), "{status:?}");

    // Settings the plugin refuses at init change nothing either.
    let failures = status.failures;
    let refused =
        routing_config(&a, &b, other).replace("backend = \"a\"", "backend = \"a\"\nrespond = { status = 200 }");
    replacer.replace(Method::Recreate, refused.as_bytes()).await;
    let status = wait_status(&proxy.reload, "settings refused by the plugin", |s| s.failures > failures).await;
    let error = status.last_error().unwrap();
    assert!(error.contains("plugin `path`") && error.contains("refused its settings"), "{error}");
    stays(Duration::from_millis(300), to, "the old settings stay live", probe).await;

    // Fixing it is picked up.
    let written = replacer.replace(Method::InPlace, routing_config(&a, &b, other).as_bytes()).await;
    in_effect(written, other, "the fixed config", probe).await;
    assert!(proxy.reload.status().last_error().is_none());

    let (requests, echoes) = load.finish().await;
    println!("under load: {requests} requests and {echoes} WebSocket echoes, none failed");
    assert!(requests > 100 && echoes > 30, "the load ran: {requests} requests, {echoes} echoes");
    assert_eq!(proxy.stop().await, Drained::Clean);
    println!("total {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// Listeners, spurious events, manual reloads.

fn listeners_config(echo: SocketAddr, listeners: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (name, bind) in listeners {
        text.push_str(&format!(
            "[[listeners]]\nname = \"{name}\"\nbind = \"{bind}\"\nsniff = \"sniff\"\ndefault-backend = \"echo\"\n"
        ));
    }
    text.push_str(&format!("[backends.echo]\nservers = [\"{echo}\"]\n[plugins.sniff]\nbuiltin = \"sniff\"\n"));
    text
}

/// A free port on loopback (bound, then released).
async fn free_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A raw connection through the default backend: the tag it announces, then
/// the connection (which echoes).
async fn raw_connect(addr: SocketAddr) -> (String, tokio::io::BufReader<tokio::net::TcpStream>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"xyz\n").await.unwrap(); // nothing the sniff plugin knows: the default backend
    let mut stream = tokio::io::BufReader::new(stream);
    let (mut tag, mut echo) = (String::new(), String::new());
    let read = async {
        stream.read_line(&mut tag).await?;
        stream.read_line(&mut echo).await // the sniffed bytes, replayed and echoed
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.unwrap().unwrap();
    assert_eq!(echo, "xyz\n");
    (tag.trim().to_string(), stream)
}

async fn echoes(stream: &mut tokio::io::BufReader<tokio::net::TcpStream>, text: &str) -> bool {
    let mut line = String::new();
    let reply = async {
        stream.get_mut().write_all(format!("{text}\n").as_bytes()).await?;
        stream.read_line(&mut line).await
    };
    matches!(tokio::time::timeout(Duration::from_secs(5), reply).await, Ok(Ok(_))) && line.trim() == text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_come_and_go_with_the_config() {
    let echo = tagged_echo("echo").await;
    let dir = TempDir::new("listeners");
    let config = dir.path("sluice.toml");
    let fixed = free_port().await;
    let fixed_text = fixed.to_string();
    std::fs::write(&config, listeners_config(echo, &[("one", "127.0.0.1:0"), ("two", &fixed_text)])).unwrap();
    let proxy = Proxy::start(&config, false).await; // reloads by request only
    let (one, two) = (proxy.addr("one"), proxy.addr("two"));
    let (tag, mut open_on_one) = raw_connect(one).await;
    assert_eq!(tag, "echo");

    // Added: "three" starts. Removed: "one" stops accepting, its open connection goes on.
    // Renamed on the same fixed address: "two" becomes "deux" on the same socket.
    std::fs::write(&config, listeners_config(echo, &[("deux", &fixed_text), ("three", "127.0.0.1:0")])).unwrap();
    let summary = proxy.reload.reload().await.expect("reload");
    assert!(summary.contains("2 listeners (2 added, 2 removed)"), "{summary}");
    let three = proxy.addr("three");
    assert_eq!(proxy.addr("deux"), two);
    assert_eq!(proxy.reload.local_addr("one"), None);
    assert_eq!(raw_connect(three).await.0, "echo");
    assert_eq!(raw_connect(two).await.0, "echo", "the renamed listener serves on the same address");
    assert!(tokio::net::TcpStream::connect(one).await.is_err(), "the removed listener no longer accepts");
    assert!(echoes(&mut open_on_one, "still here").await, "its open connection keeps running");

    // A listener that cannot bind refuses the whole reload; nothing changes.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken_text = taken.local_addr().unwrap().to_string();
    std::fs::write(
        &config,
        listeners_config(echo, &[("deux", &fixed_text), ("three", "127.0.0.1:0"), ("four", &taken_text)]),
    )
    .unwrap();
    let error = proxy.reload.reload().await.expect_err("the port is taken");
    assert!(error.contains("listener `four`: cannot listen on"), "{error}");
    assert_eq!(proxy.reload.local_addr("four"), None);
    assert_eq!(proxy.addr("three"), three);
    assert_eq!(raw_connect(three).await.0, "echo");
    let status = proxy.reload.status();
    assert_eq!((status.successes, status.failures), (1, 1));
    assert_eq!(status.last.as_ref().unwrap().trigger, Trigger::Request);

    // Without the watcher, a changed file is not noticed until asked.
    std::fs::write(&config, listeners_config(echo, &[("deux", &fixed_text)])).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxy.reload.status().successes, 1, "no watcher, no reload");
    proxy.reload.reload().await.expect("reload");
    assert_eq!(proxy.reload.local_addr("three"), None);
    assert!(echoes(&mut open_on_one, "still here after two reloads").await);
    drop(open_on_one);
    drop(taken);
    assert_eq!(proxy.stop().await, Drained::Clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_a_change_do_nothing() {
    let echo = tagged_echo("echo").await;
    let dir = TempDir::new("spurious");
    let config = dir.path("sluice.toml");
    let text = listeners_config(echo, &[("main", "127.0.0.1:0")]);
    std::fs::write(&config, &text).unwrap();
    let proxy = Proxy::start(&config, true).await;
    // The same bytes written again, by every method, and unrelated files nearby.
    let mut replacer = Replacer::new(config.clone());
    for method in METHODS {
        replacer.replace(method, text.as_bytes()).await;
    }
    std::fs::write(dir.path("unrelated.txt"), "x").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(proxy.reload.status(), ReloadStatus::default(), "nothing changed, nothing reloaded");
    // A real change is still seen.
    let written = replacer.replace(Method::InPlace, text.replace("main", "renamed").as_bytes()).await;
    let status = wait_status(&proxy.reload, "renamed listener", |s| s.successes == 1).await;
    assert!(written.elapsed() < Duration::from_secs(1));
    assert!(matches!(&status.last.unwrap().trigger, Trigger::Files(files) if files == std::slice::from_ref(&config)));
    assert!(proxy.reload.local_addr("renamed").is_some());
    assert_eq!(proxy.stop().await, Drained::Clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary() {
    let (one, two) = (tagged_echo("one").await, tagged_echo("two").await);
    let dir = TempDir::new("sighup");
    let config = dir.path("sluice.toml");
    let text = |to: SocketAddr| {
        format!(
            "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\ndefault-backend = \"b\"\n\
             [backends.b]\nservers = [\"{to}\"]\n[plugins.sniff]\nbuiltin = \"sniff\"\n"
        )
    };
    std::fs::write(&config, text(one)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(&config)
        .arg("--no-watch")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let addr: SocketAddr = loop {
        let line = lines.next().expect("sluice exited before listening").unwrap();
        if let Some(at) = line.find("addr=") {
            break line[at + 5..].split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {}); // keep draining the log
    assert_eq!(raw_connect(addr).await.0, "one");

    std::fs::write(&config, text(two)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(raw_connect(addr).await.0, "one", "--no-watch: not reloaded by the write");
    let kill = |signal: &str| {
        let status = std::process::Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap();
        assert!(status.success());
    };
    kill("-HUP");
    let since = Instant::now();
    loop {
        if raw_connect(addr).await.0 == "two" {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(5), "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill("-TERM");
    // Waiting blocks: off the runtime, which runs the backends the proxy drains.
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit code 0 after a clean drain, not {status}");
}

// ---------------------------------------------------------------------------
// Certificates: a Kubernetes TLS Secret (tls.crt and tls.key swapped together).

/// A test CA, and leaf certificates for `reload.test` it signs (as PEM).
struct Pki {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_der: rustls::pki_types::CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca_der = params.self_signed(&key).unwrap().der().clone();
        Pki { ca: rcgen::Issuer::new(params, key), ca_der }
    }

    /// (cert PEM, key PEM, cert DER)
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let params = rcgen::CertificateParams::new(vec!["reload.test".to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// The certificate a new TLS connection to `addr` is shown.
    async fn served(&self, addr: SocketAddr) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("reload.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_swapped_like_a_kubernetes_secret() {
    let echo = tagged_echo("echo").await;
    let pki = Pki::new();
    let dir = TempDir::new("certs");
    let secret = dir.path("secret");
    std::fs::create_dir(&secret).unwrap();
    // The Secret volume: tls.crt -> ..data/tls.crt, tls.key -> ..data/tls.key.
    let write_version = |n: u32, cert: &str, key: &str| {
        let version = secret.join(format!("..2026_01_01_00_00_00.{n:09}"));
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("tls.crt"), cert).unwrap();
        std::fs::write(version.join("tls.key"), key).unwrap();
        version
    };
    let swap_to = |version: &Path| {
        let data_tmp = secret.join("..data_tmp");
        std::os::unix::fs::symlink(version.file_name().unwrap(), &data_tmp).unwrap();
        std::fs::rename(&data_tmp, secret.join("..data")).unwrap();
        Instant::now()
    };
    let first = pki.leaf();
    let mut old = write_version(0, &first.0, &first.1);
    std::os::unix::fs::symlink(old.file_name().unwrap(), secret.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(Path::new("..data").join(file), secret.join(file)).unwrap();
    }
    let config = dir.path("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\ndefault-backend = \"echo\"\n\
             [[listeners.certificates]]\ncert = \"secret/tls.crt\"\nkey = \"secret/tls.key\"\n\
             [backends.echo]\nservers = [\"{echo}\"]\n[plugins.sniff]\nbuiltin = \"sniff\"\n"
        ),
    )
    .unwrap();
    let proxy = Proxy::start(&config, true).await;
    let addr = proxy.addr("main");
    assert_eq!(pki.served(addr).await, first.2);

    let mut latencies = Latencies(Vec::new());
    for n in 1..=5 {
        let leaf = pki.leaf();
        let version = write_version(n, &leaf.0, &leaf.1);
        let written = swap_to(&version);
        std::fs::remove_dir_all(&old).unwrap();
        old = version;
        let probe = || pki.served(addr);
        let want = leaf.2;
        let since = written;
        loop {
            if probe().await == want {
                latencies.0.push(since.elapsed());
                break;
            }
            assert!(since.elapsed() < IN_EFFECT_WITHIN, "certificate #{n} not served in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    latencies.report("certificate");

    // A key that does not match the certificate is refused; the live one stays.
    let live = pki.served(addr).await;
    let (cert, _, _) = pki.leaf();
    let (_, wrong_key, _) = pki.leaf();
    let failures = proxy.reload.status().failures;
    let broken = write_version(90, &cert, &wrong_key);
    swap_to(&broken);
    let status = wait_status(&proxy.reload, "mismatched key", |s| s.failures > failures).await;
    let error = status.last_error().unwrap();
    assert!(error.contains("tls.key") && error.contains("does not match"), "{error}");
    assert_eq!(pki.served(addr).await, live, "the previous certificate is still served");
    assert_eq!(proxy.stop().await, Drained::Clean);
}
