//! Tenant features a user reaches through the running proxy (docs/TENANTS.md):
//! the `max-connections` quota on real keep-alive connections, and tenants
//! added and removed by dropping files into the watched tenant directory.
//!
//! Each test names its tenants uniquely: the metrics registry is
//! process-wide and the tests run in parallel.

mod common;

use common::http_backend::{field, http_backend};
use common::{admin_get, read_to_end};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sluice::reload::ReloadHandle;
use sluice::{App, Config};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A config directory with `tenants.d/`, removed on drop, and the proxy started from it.
struct Site {
    dir: PathBuf,
    addr: SocketAddr,
    admin: SocketAddr,
    reload: ReloadHandle,
    stop: Option<oneshot::Sender<()>>,
}

impl Site {
    /// `main` is the config file; `tenants` the files put in `tenants.d/` before start.
    async fn start(name: &str, main: &str, tenants: &[(&str, String)], watch: bool) -> Site {
        let dir = std::env::temp_dir().join(format!("sluice-tenants-quotas-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tenants.d")).unwrap();
        std::fs::write(dir.join("sluice.toml"), main).unwrap();
        for (file, text) in tenants {
            std::fs::write(dir.join("tenants.d").join(file), text).unwrap();
        }
        let config = Config::load(&dir.join("sluice.toml")).unwrap_or_else(|e| panic!("{e}"));
        let app = App::bind(config).await.unwrap_or_else(|e| panic!("{e}"));
        let (addr, admin, reload) = (app.local_addr("main").unwrap(), app.admin_addr().unwrap(), app.reload_handle());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.with_watch(watch).run(async {
            let _ = stopped.await;
        }));
        Site { dir, addr, admin, reload, stop: Some(stop) }
    }

    fn tenant_path(&self, file: &str) -> PathBuf {
        self.dir.join("tenants.d").join(file)
    }

    async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&admin_get(self.admin, "/status").await).unwrap()
    }

    /// A counter or gauge in /metrics (0 when absent).
    async fn metric(&self, series: &str) -> u64 {
        let text = admin_get(self.admin, "/metrics").await;
        text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tenant file: `names`, one backend `web`, the built-in path plugin
/// tagging what it routes with `x-routed-by: <tag>`, and `extra` (quotas).
fn tenant(names: &[&str], backend: SocketAddr, tag: &str, extra: &str) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        r#"names = [{names}]
[backends.web]
servers = ["{backend}"]
[route]
builtin = "path"
settings = {{ default-backend = "web", rules = [{{ path-prefix = "/", backend = "web", set-headers = {{ x-routed-by = "{tag}" }} }}] }}
{extra}
"#,
        names = names.join(", ")
    )
}

/// A keep-alive HTTP/1.1 client connection to the proxy.
async fn keep_alive(addr: SocketAddr) -> SendRequest<Empty<bytes::Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// Status and body of one GET on `sender`'s connection.
async fn send(sender: &mut SendRequest<Empty<bytes::Bytes>>, host: &str, path: &str) -> (u16, String) {
    let request = http::Request::get(path).header("host", host).body(Empty::new()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), async {
        // The connection is ready again once the previous response is done with.
        sender.ready().await?;
        sender.send_request(request).await
    })
    .await
    .expect("a response in time")
    .unwrap_or_else(|e| panic!("GET {path} for {host}: {e}"));
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One GET on a new connection (`Connection: close`): the whole raw response.
async fn get_once(addr: SocketAddr, host: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    String::from_utf8_lossy(&read_to_end(&mut stream).await).into_owned()
}

fn status_code(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

fn tenant_status<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["tenants"][0]["tenants"].as_array()?.iter().find(|t| t["name"] == name)
}

/// Poll (bounded: 10 s, every 10 ms) until `probe` holds.
async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !probe().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const MAIN_NO_ROUTE: &str = r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
tenants = "tenants.d"

[admin]
bind = "127.0.0.1:0"

[plugins.sniff]
builtin = "sniff"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_connection_quota_refuses_the_next_connection_until_one_closes() {
    let (capped_backend, free_backend) = (http_backend("capped").await, http_backend("free").await);
    let tenants = [
        ("capped.toml", tenant(&["capped.test"], capped_backend.addr, "capped", "[quotas]\nmax-connections = 2")),
        ("free.toml", tenant(&["free.test"], free_backend.addr, "free", "")),
    ];
    let site = Site::start("connections", MAIN_NO_ROUTE, &tenants, false).await;

    // Two keep-alive connections hold the tenant's two places (a second request on one is no new place).
    let mut first = keep_alive(site.addr).await;
    let mut second = keep_alive(site.addr).await;
    for sender in [&mut first, &mut second] {
        for path in ["/a", "/b"] {
            let (code, body) = send(sender, "capped.test", path).await;
            assert_eq!((code, field(&body, "backend")), (200, Some("capped")), "{body}");
        }
    }
    let status = site.status().await;
    assert_eq!(tenant_status(&status, "capped").unwrap()["usage"]["open_connections"], 2, "{status:#}");

    // A third connection: 503, `Connection: close`, and the proxy closes it.
    let refused = get_once(site.addr, "capped.test", "/third").await;
    assert_eq!(status_code(&refused), 503, "{refused}");
    assert!(refused.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{refused}");
    assert!(body(&refused).contains("too many open connections"), "{refused}");
    let exceeded = r#"sluice_tenant_quota_exceeded_total{tenant="capped",quota="connections"}"#;
    assert_eq!(site.metric(exceeded).await, 1);
    assert_eq!(capped_backend.requests(), 4, "the refused request never reached the backend");

    // Another tenant is unaffected, on new connections and on one of many requests.
    let mut other = keep_alive(site.addr).await;
    for i in 0..3 {
        let (code, body) = send(&mut other, "free.test", &format!("/{i}")).await;
        assert_eq!((code, field(&body, "backend")), (200, Some("free")), "{body}");
    }
    let response = get_once(site.addr, "free.test", "/").await;
    assert_eq!(status_code(&response), 200, "{response}");
    // The held connections still work.
    assert_eq!(send(&mut first, "capped.test", "/still").await.0, 200);

    // One closes: its place comes back, and the next new connection is served.
    drop(first);
    let site_ref = &site;
    eventually("the closed connection's place to come back", || async move {
        tenant_status(&site_ref.status().await, "capped").unwrap()["usage"]["open_connections"] == 1
    })
    .await;
    let response = get_once(site.addr, "capped.test", "/fourth").await;
    assert_eq!(status_code(&response), 200, "{response}");
    assert_eq!(field(body(&response), "backend"), Some("capped"));
    assert_eq!(send(&mut second, "capped.test", "/second-still").await.0, 200);
    assert_eq!(site.metric(exceeded).await, 1, "nothing else was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tenant_file_keeps_counting_the_connections_already_open() {
    let backend = http_backend("resized").await;
    let resized = |tag: &str, max: u32| {
        tenant(&["resized.test"], backend.addr, tag, &format!("[quotas]\nmax-connections = {max}"))
    };
    let site = Site::start("reloaded", MAIN_NO_ROUTE, &[("resized.toml", resized("v1", 2))], false).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut sender = keep_alive(site.addr).await;
        assert_eq!(send(&mut sender, "resized.test", "/").await.0, 200);
        held.push(sender);
    }

    // A new version of the tenant (its plugin settings changed): the two open connections still count.
    std::fs::write(site.tenant_path("resized.toml"), resized("v2", 2)).unwrap();
    site.reload.reload().await.expect("reload");
    assert_eq!(site.reload.status().failures, 0, "{:?}", site.reload.status());
    let refused = get_once(site.addr, "resized.test", "/third").await;
    assert_eq!(status_code(&refused), 503, "a reload is no way around the quota: {refused}");
    let status = site.status().await;
    assert_eq!(tenant_status(&status, "resized").unwrap()["usage"]["open_connections"], 2, "{status:#}");

    // A raised quota applies to the connections already open.
    std::fs::write(site.tenant_path("resized.toml"), resized("v3", 3)).unwrap();
    site.reload.reload().await.expect("reload");
    let third = get_once(site.addr, "resized.test", "/third").await;
    assert_eq!(status_code(&third), 200, "{third}");
    assert_eq!(field(body(&third), "x-routed-by"), Some("v3"));

    // A lowered one too: with two open and a quota of one, a new connection waits for both to close.
    std::fs::write(site.tenant_path("resized.toml"), resized("v4", 1)).unwrap();
    site.reload.reload().await.expect("reload");
    assert_eq!(status_code(&get_once(site.addr, "resized.test", "/").await), 503);
    drop(held);
    let site_ref = &site;
    eventually("the closed connections' places to come back", || async move {
        tenant_status(&site_ref.status().await, "resized").unwrap()["usage"]["open_connections"] == 0
    })
    .await;
    assert_eq!(status_code(&get_once(site.addr, "resized.test", "/").await), 200);
}

const MAIN_WITH_FALLBACK: &str = r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "fallback"
tenants = "tenants.d"

[admin]
bind = "127.0.0.1:0"

[backends.default]
servers = ["BACKEND"]

[plugins.sniff]
builtin = "sniff"

[plugins.fallback]
builtin = "path"
settings = { default-backend = "default" }
"#;

/// Write `text` to `path` as deployments do: a hidden temporary file (which
/// the tenant loader ignores) renamed into place, so no half-written file is read.
fn write_atomically(path: &Path, text: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_file_dropped_into_the_watched_directory_is_served_and_removing_it_falls_back() {
    let (default_backend, old_backend, new_backend) =
        (http_backend("default").await, http_backend("old").await, http_backend("new").await);
    let main = MAIN_WITH_FALLBACK.replace("BACKEND", &default_backend.addr.to_string());
    let tenants = [("old.toml", tenant(&["old.test"], old_backend.addr, "old", ""))];
    let site = Site::start("watched", &main, &tenants, true).await;
    let routed = |response: &str| {
        let body = body(response);
        (
            status_code(response),
            field(body, "backend").map(str::to_string),
            field(body, "x-routed-by").map(str::to_string),
        )
    };
    let fallback = (200, Some("default".to_string()), None);
    let (routed, fallback_ref, addr) = (&routed, &fallback, site.addr);

    // Before: the name is nobody's, so the listener's own route plugin sends it to `default`.
    assert_eq!(routed(&get_once(site.addr, "new.test", "/").await), fallback);
    assert_eq!(routed(&get_once(site.addr, "old.test", "/").await), (200, Some("old".into()), Some("old".into())));

    // A new file: after the watcher's reload, the new tenant's plugin routes its name.
    write_atomically(&site.tenant_path("new.toml"), &tenant(&["new.test", "*.new.test"], new_backend.addr, "new", ""));
    let want = (200, Some("new".to_string()), Some("new".to_string()));
    let want_ref = &want;
    eventually("the new tenant to route its name", || async move {
        routed(&get_once(addr, "www.new.test", "/").await) == *want_ref
    })
    .await;
    assert_eq!(routed(&get_once(site.addr, "new.test", "/x").await), want);
    assert!(tenant_status(&site.status().await, "new").is_some());
    // The tenant that was there is still served.
    assert_eq!(routed(&get_once(site.addr, "old.test", "/").await), (200, Some("old".into()), Some("old".into())));

    // The file removed: its names get the listener's fallback again.
    std::fs::remove_file(site.tenant_path("new.toml")).unwrap();
    eventually("the removed tenant's name to fall back", || async move {
        routed(&get_once(addr, "new.test", "/").await) == *fallback_ref
    })
    .await;
    // (Polling reached the tenant until the reload; from now on nothing does.)
    let new_requests = new_backend.requests();
    assert_eq!(routed(&get_once(site.addr, "www.new.test", "/").await), fallback);
    assert!(tenant_status(&site.status().await, "new").is_none());
    assert_eq!(new_backend.requests(), new_requests, "nothing reached the removed tenant's backend");
    assert_eq!(routed(&get_once(site.addr, "old.test", "/").await), (200, Some("old".into()), Some("old".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_over_the_connection_quota_gets_503() {
    let backend = http_backend("h2capped").await;
    let tenants = [("h2capped.toml", tenant(&["h2capped.test"], backend.addr, "h2", "[quotas]\nmax-connections = 1"))];
    let site = Site::start("http2", MAIN_NO_ROUTE, &tenants, false).await;
    let h2 = || async {
        let tcp = TcpStream::connect(site.addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        let closed = tokio::spawn(conn);
        (sender, closed)
    };
    let get = |sender: &mut hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>| {
        let request = http::Request::get("http://h2capped.test/").body(Empty::new()).unwrap();
        let sent = sender.send_request(request);
        async move { tokio::time::timeout(Duration::from_secs(10), sent).await.expect("an answer in time") }
    };
    // One connection, many streams: one place.
    let (mut first, _first_conn) = h2().await;
    for _ in 0..3 {
        assert_eq!(get(&mut first).await.unwrap().status(), 200);
    }
    // A second connection is over the quota: each of its requests gets 503 (an HTTP/2
    // connection carries other streams, so it is not closed)...
    let (mut second, _second_conn) = h2().await;
    for _ in 0..2 {
        assert_eq!(get(&mut second).await.expect("a response").status(), 503);
    }
    assert_eq!(get(&mut first).await.unwrap().status(), 200, "the first is still served");
    let exceeded = r#"sluice_tenant_quota_exceeded_total{tenant="h2capped",quota="connections"}"#;
    assert_eq!(site.metric(exceeded).await, 2);
    // ...until the first closes: then its next request takes the place.
    drop(first);
    let site_ref = &site;
    eventually("the first connection's place to come back", || async move {
        tenant_status(&site_ref.status().await, "h2capped").unwrap()["usage"]["open_connections"] == 0
    })
    .await;
    assert_eq!(get(&mut second).await.unwrap().status(), 200);
    assert_eq!(backend.requests(), 5, "the refused requests never reached the backend");
}
