//! Multi-tenant hosting end to end (docs/TENANTS.md): three tenants on one
//! TLS port, each with its own certificate, backends, route plugin and
//! quotas — one hostile (its plugin traps, loops, over-allocates and names
//! another tenant's backend), one over its request quota, one normal — and
//! single-tenant reloads, conflicts and config errors.

mod common;

use common::http_backend::{HttpBackend, field, http_backend};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use sluice::reload::ReloadHandle;
use sluice::{App, Config};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

/// A test CA, a directory for the config and certificates, and a client.
struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    client: TlsConnector,
}

impl Pki {
    fn new() -> Pki {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-tenants-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("tenants.d")).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "sluice tenants test CA");
        let key = KeyPair::generate().unwrap();
        let ca_der: CertificateDer<'static> = params.self_signed(&key).unwrap().der().clone();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Pki { dir, ca: Issuer::new(params, key), client: TlsConnector::from(Arc::new(config)) }
    }

    /// `certs/<file>.pem` and `.key` for `names`.
    fn leaf(&self, file: &str, names: &[&str]) {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::create_dir_all(self.dir.join("certs")).unwrap();
        std::fs::write(self.dir.join(format!("certs/{file}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("certs/{file}.key")), key.serialize_pem()).unwrap();
    }

    fn tenant(&self, file: &str, text: &str) {
        std::fs::write(self.dir.join("tenants.d").join(file), text).unwrap();
    }
}

struct World {
    pki: Pki,
    addr: SocketAddr,
    admin: SocketAddr,
    reload: ReloadHandle,
    alpha: HttpBackend,
    hostile: HttpBackend,
    busy: HttpBackend,
    stop: Option<oneshot::Sender<()>>,
}

fn alpha_tenant(backend: SocketAddr) -> String {
    format!(
        r#"names = ["alpha.test", "*.alpha.test"]
[[certificates]]
cert = "../certs/alpha.pem"
key = "../certs/alpha.key"
[backends.alpha-web]
servers = ["{backend}"]
[route]
builtin = "path"
settings = {{ default-backend = "alpha-web" }}
"#
    )
}

fn hostile_tenant(backend: SocketAddr, tag: &str) -> String {
    format!(
        r#"names = ["hostile.test"]
[[certificates]]
cert = "../certs/hostile.pem"
key = "../certs/hostile.key"
[backends.web]
servers = ["{backend}"]
[route]
file = "{plugin}"
settings = {{ backend = "web", foreign = "alpha-web", tag = "{tag}" }}
[quotas]
cpu-budget = 2_000_000
memory-limit = "4MiB"
"#,
        plugin = plugin_path("hostile_route").display()
    )
}

fn busy_tenant(backend: SocketAddr) -> String {
    format!(
        r#"names = ["busy.test"]
[[certificates]]
cert = "../certs/busy.pem"
key = "../certs/busy.key"
[backends.web]
servers = ["{backend}"]
[route]
builtin = "path"
settings = {{ default-backend = "web" }}
[quotas]
requests-per-second = 1
requests-burst = 3
"#
    )
}

const MAIN: &str = r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
tenants = "tenants.d"

[admin]
bind = "127.0.0.1:0"

[backends.global]
servers = ["127.0.0.1:9"]

[plugins.sniff]
builtin = "sniff"
"#;

async fn world() -> World {
    let pki = Pki::new();
    pki.leaf("alpha", &["alpha.test", "*.alpha.test"]);
    pki.leaf("hostile", &["hostile.test"]);
    pki.leaf("busy", &["busy.test"]);
    let (alpha, hostile, busy) =
        (http_backend("alpha").await, http_backend("hostile").await, http_backend("busy").await);
    pki.tenant("alpha.toml", &alpha_tenant(alpha.addr));
    pki.tenant("hostile.toml", &hostile_tenant(hostile.addr, "v1"));
    pki.tenant("busy.toml", &busy_tenant(busy.addr));
    std::fs::write(pki.dir.join("sluice.toml"), MAIN).unwrap();
    let config = Config::load(&pki.dir.join("sluice.toml")).unwrap_or_else(|e| panic!("{e}"));
    let app = App::bind(config).await.unwrap_or_else(|e| panic!("{e}"));
    let (addr, admin, reload) = (app.local_addr("main").unwrap(), app.admin_addr().unwrap(), app.reload_handle());
    let (stop, stopped) = oneshot::channel::<()>();
    // Reloads only when the test asks: each step is deterministic.
    tokio::spawn(app.with_watch(false).run(async {
        let _ = stopped.await;
    }));
    World { pki, addr, admin, reload, alpha, hostile, busy, stop: Some(stop) }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.pki.dir);
    }
}

/// Status, `Retry-After`, body of one GET over a new connection: TLS with
/// `sni` when given, else plain HTTP; `host` is the Host header.
async fn get(world: &World, sni: Option<&str>, host: &str, path: &str) -> (u16, Option<String>, String) {
    let tcp = TcpStream::connect(world.addr).await.unwrap();
    let request = http::Request::get(path).header("host", host).body(Empty::<bytes::Bytes>::new()).unwrap();
    let response = match sni {
        Some(sni) => {
            let name = ServerName::try_from(sni.to_string()).unwrap();
            let tls = world.pki.client.connect(name, tcp).await.expect("TLS handshake");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        }
        None => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(request).await.unwrap()
        }
    };
    let status = response.status().as_u16();
    let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}

async fn status(world: &World) -> serde_json::Value {
    serde_json::from_str(&admin_get(world.admin, "/status").await).unwrap()
}

fn tenant<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let tenants = status["tenants"][0]["tenants"].as_array().expect("tenants in /status");
    tenants.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no tenant {name} in {status:#}"))
}

/// The value of a counter in /metrics (0 when absent).
async fn metric(world: &World, series: &str) -> u64 {
    let text = admin_get(world.admin, "/metrics").await;
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_tenants_on_one_port_stay_isolated_and_within_their_quotas() {
    let world = Arc::new(world().await);

    // Each tenant is served with its own certificate (the handshake verifies it) and backend.
    let (code, _, body) = get(&world, Some("alpha.test"), "alpha.test", "/").await;
    assert_eq!((code, field(&body, "backend")), (200, Some("alpha")), "{body}");
    let (code, _, body) = get(&world, Some("www.alpha.test"), "www.alpha.test", "/").await;
    assert_eq!((code, field(&body, "backend")), (200, Some("alpha")), "wildcard name: {body}");
    let (code, _, body) = get(&world, Some("hostile.test"), "hostile.test", "/").await;
    assert_eq!((code, field(&body, "backend"), field(&body, "x-plugin")), (200, Some("hostile"), Some("v1")));

    // The hostile tenant's plugin traps, loops, over-allocates, names another tenant's backend:
    // its own requests fail, while the normal tenant's all succeed at the same time.
    let hammer: Vec<_> = ["/trap", "/loop", "/hog", "/foreign"]
        .into_iter()
        .map(|path| {
            let world = world.clone();
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for _ in 0..15 {
                    codes.push(get(&world, Some("hostile.test"), "hostile.test", path).await.0);
                }
                codes
            })
        })
        .collect();
    let alpha_before = world.alpha.requests();
    for i in 0..60 {
        let (code, _, body) = get(&world, Some("alpha.test"), "alpha.test", &format!("/page/{i}")).await;
        assert_eq!((code, field(&body, "backend")), (200, Some("alpha")), "alpha request {i} during the attack");
    }
    for codes in hammer {
        let codes = codes.await.unwrap();
        assert!(codes.iter().all(|code| *code == 502), "hostile requests fail as the tenant's own 502s: {codes:?}");
    }
    assert_eq!(world.alpha.requests() - alpha_before, 60, "no hostile request reached alpha's backend");
    assert!(metric(&world, r#"sluice_tenant_quota_exceeded_total{tenant="hostile",quota="cpu"}"#).await >= 15);
    assert!(metric(&world, r#"sluice_tenant_quota_exceeded_total{tenant="hostile",quota="memory"}"#).await >= 15);
    let foreign = r#"sluice_tenant_plugin_failures_total{tenant="hostile",reason="undeclared-backend"}"#;
    assert_eq!(metric(&world, foreign).await, 15);
    let hostile_ok = r#"sluice_tenant_http_responses_total{tenant="alpha",class="2xx"}"#;
    assert!(metric(&world, hostile_ok).await >= 62);
    let (code, _, _) = get(&world, Some("hostile.test"), "hostile.test", "/").await;
    assert_eq!(code, 200, "the hostile tenant still serves its good requests");

    // The busy tenant is over its request quota (burst 3, then 1/s): 429 with Retry-After, counted.
    let mut refused = 0;
    for _ in 0..10 {
        let (code, retry, _) = get(&world, Some("busy.test"), "busy.test", "/").await;
        if code == 429 {
            refused += 1;
            assert!(retry.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)), "Retry-After in seconds");
        } else {
            assert_eq!(code, 200);
        }
    }
    assert!(refused >= 5, "{refused} of 10 refused");
    assert_eq!(metric(&world, r#"sluice_tenant_quota_exceeded_total{tenant="busy",quota="requests"}"#).await, refused);
    assert!(world.busy.requests() <= 10 - refused);
    // ...and only the busy tenant: alpha is served right after.
    assert_eq!(get(&world, Some("alpha.test"), "alpha.test", "/").await.0, 200);

    // A Host of another tenant on a connection for alpha's name: 421. Unknown names: 404.
    assert_eq!(get(&world, Some("alpha.test"), "busy.test", "/").await.0, 421);
    let (code, _, body) = get(&world, None, "nobody.test", "/").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no site"), "{body}");
    assert_eq!(get(&world, None, "alpha.test", "/plain").await.0, 200, "plain HTTP is dispatched by Host");
    assert!(metric(&world, r#"sluice_tenant_http_responses_total{tenant="-",class="4xx"}"#).await >= 1);

    // /status lists the tenants with their plugin, quotas and usage.
    let status = status(&world).await;
    let hostile = tenant(&status, "hostile");
    assert_eq!(hostile["quotas"]["cpu_budget"], 2_000_000);
    assert_eq!(hostile["plugin_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(tenant(&status, "busy")["quotas"]["requests_per_second"], 1);
    assert!(tenant(&status, "alpha")["usage"]["requests_admitted"].as_u64().unwrap() >= 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_file_reloads_alone_and_a_broken_one_keeps_its_previous_version() {
    let world = world().await;
    for _ in 0..5 {
        assert_eq!(get(&world, Some("alpha.test"), "alpha.test", "/").await.0, 200);
    }
    let before = status(&world).await;
    let alpha_admitted = tenant(&before, "alpha")["usage"]["requests_admitted"].clone();
    assert_eq!(alpha_admitted, 5);

    // A new version of the hostile tenant: its settings change, alpha is untouched
    // (same instance: its usage counters were not reset).
    world.pki.tenant("hostile.toml", &hostile_tenant(world.hostile.addr, "v2"));
    world.reload.reload().await.expect("reload");
    let (_, _, body) = get(&world, Some("hostile.test"), "hostile.test", "/").await;
    assert_eq!(field(&body, "x-plugin"), Some("v2"), "{body}");
    let after = status(&world).await;
    assert_eq!(tenant(&after, "alpha")["usage"]["requests_admitted"], alpha_admitted, "alpha was not reloaded");
    assert_eq!(tenant(&after, "alpha")["plugin_sha256"], tenant(&before, "alpha")["plugin_sha256"]);

    // A broken alpha file: refused, reported in /status, the previous alpha stays live.
    world.pki.tenant("alpha.toml", "names = [\"alpha.test\"]\n[route]\nbuiltin = \"nope\"\n");
    world.reload.reload().await.expect("the reload itself goes on");
    assert_eq!(get(&world, Some("alpha.test"), "alpha.test", "/").await.0, 200);
    let status_now = status(&world).await;
    let refused = status_now["tenants"][0]["refused"].to_string();
    assert!(refused.contains("alpha.toml") && refused.contains("route.builtin"), "{refused}");
    assert_eq!(tenant(&status_now, "alpha")["usage"]["requests_admitted"], 6);

    // A new tenant claiming alpha's name: refused, naming both files; alpha keeps it.
    world.pki.tenant("thief.toml", &busy_tenant(world.busy.addr).replace("busy.test", "alpha.test"));
    world.reload.reload().await.expect("reload");
    let status_now = status(&world).await;
    let refused = status_now["tenants"][0]["refused"].to_string();
    assert!(
        refused.contains("thief.toml") && refused.contains("alpha.toml") && refused.contains("alpha.test"),
        "{refused}"
    );
    let (_, _, body) = get(&world, Some("alpha.test"), "alpha.test", "/").await;
    assert_eq!(field(&body, "backend"), Some("alpha"));

    // Adding a file adds a tenant; its plugin sees which tenant it routes for.
    world.pki.tenant(
        "seer.toml",
        &format!(
            "names = [\"seer.test\"]\n[backends.web]\nservers = [\"{}\"]\n[route]\nfile = \"{}\"\n\
             settings = {{ backends = [\"web\"], forward = \"web\" }}\n",
            world.busy.addr,
            plugin_path("declare").display()
        ),
    );
    world.reload.reload().await.expect("reload");
    let (code, _, body) = get(&world, None, "seer.test", "/seen").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("tenant=seer"), "{body}");

    // Removing a file removes the tenant: its name is nobody's now.
    std::fs::remove_file(world.pki.dir.join("tenants.d/busy.toml")).unwrap();
    std::fs::remove_file(world.pki.dir.join("tenants.d/thief.toml")).unwrap();
    world.reload.reload().await.expect("reload");
    assert_eq!(get(&world, None, "busy.test", "/").await.0, 404);
    assert_eq!(get(&world, None, "alpha.test", "/").await.0, 200);
}

async fn start_error(dir: &Path) -> String {
    let config = Config::load(&dir.join("sluice.toml")).unwrap_or_else(|e| panic!("{e}"));
    match App::bind(config).await {
        Ok(_) => panic!("started despite broken tenants"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn conflicts_and_tenant_file_problems_stop_startup_all_at_once() {
    let pki = Pki::new();
    pki.leaf("alpha", &["alpha.test"]);
    std::fs::write(pki.dir.join("sluice.toml"), MAIN).unwrap();
    pki.tenant("alpha.toml", &alpha_tenant("127.0.0.1:9".parse().unwrap()));
    pki.tenant("beta.toml", &alpha_tenant("127.0.0.1:9".parse().unwrap()).replace("\"*.alpha.test\"", "\"b.test\""));
    pki.tenant(
        "broken.toml",
        "names = [\"ok.test\", \"https://x\"]\n[backends.web]\nservers = []\n[route]\nbuiltin = \"path\"\n\
         [quotas]\nrequests-burst = 3\n",
    );
    // A plugin that declares (at `init`) a backend its tenant does not have is refused at load.
    pki.leaf("greedy", &["greedy.test"]);
    pki.tenant(
        "greedy.toml",
        &hostile_tenant("127.0.0.1:9".parse().unwrap(), "v1")
            .replace("hostile.test", "greedy.test")
            .replace("certs/hostile", "certs/greedy")
            .replace("tag = \"v1\"", "declare = \"alpha-web\""),
    );
    let error = start_error(&pki.dir).await;
    let _ = std::fs::remove_dir_all(&pki.dir);
    for needle in [
        "beta.toml: names: `alpha.test` is also claimed by tenant `alpha`",
        "alpha.toml",
        "broken.toml",
        "names[1]",
        "backends.web.servers",
        "quotas.requests-burst",
        "greedy.toml: route.settings: the route plugin declares backend `alpha-web`, which tenant `greedy` does not have",
    ] {
        assert!(error.contains(needle), "`{needle}` missing from:\n{error}");
    }
}

#[tokio::test]
async fn the_multi_tenant_example_passes_check() {
    let path = repo_root().join("examples/tenants/sluice.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let runtime = sluice::plugin::wasm::Runtime::new().unwrap();
    let snapshot = sluice::state::Snapshot::build(&config, &runtime).unwrap_or_else(|e| panic!("{e}"));
    let tenants = snapshot.listeners.values().find_map(|plan| plan.tenants.clone()).expect("a tenant listener");
    assert!(tenants.tenants.len() >= 2, "{tenants:?}");
    assert!(tenants.refused.is_empty());
}
