//! Policy experiments (docs/EXPERIMENTS.md) on the real proxy: shadow
//! comparisons, rollout by stable key, automatic rollback, the admin write
//! actions and their token, capture and `sluice plugin replay`.
//!
//! Each test names its plugins uniquely: the metrics registry is
//! process-wide and the tests run in parallel.

mod common;

use common::http_backend::{field, http_backend};
use common::{Proxy, admin_get, plugin_path, read_to_end, tagged_echo};
use sluice::metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One `GET` on a fresh connection; the backend's name (or the status line).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: t.test\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let response = String::from_utf8_lossy(&read_to_end(&mut stream).await).into_owned();
    let (_, body) = response.split_once("\r\n\r\n").unwrap_or(("", &response));
    field(body, "backend").map(str::to_string).unwrap_or_else(|| response.lines().next().unwrap_or("").to_string())
}

/// A request to the admin listener: (status code, body).
async fn admin(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = String::from_utf8(read_to_end(&mut stream).await).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn value(name: &'static str, labels: &[(&'static str, &str)]) -> i64 {
    metrics::value(name, labels)
}

/// Wait (bounded) until `done` holds: the shadow worker runs on its own thread.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn route_config(plugin: &str, a: SocketAddr, b: SocketAddr, candidate: &str, extra: &str) -> String {
    format!(
        r#"
{extra}
[[listeners]]
name = "web"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "{plugin}"

[backends.a]
servers = ["{a}"]
[backends.b]
servers = ["{b}"]

[plugins.sniff]
builtin = "sniff"

[plugins.{plugin}]
file = "{path}"
settings = {{ default-backend = "a" }}

[plugins.{plugin}.candidate]
{candidate}
"#,
        path = plugin_path("path").display()
    )
}

/// The candidate sends `/new/…` to `b`; live sends everything to `a`.
const NEW_TO_B: &str = r#"settings = { default-backend = "a", rules = [{ path-prefix = "/new", backend = "b" }] }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_disagreements_are_counted_exactly_and_never_change_a_response() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let candidate = format!("{NEW_TO_B}\nshadow = true");
    let proxy = Proxy::start(&route_config("shadowed", a.addr, b.addr, &candidate, "")).await;
    let web = proxy.addr("web");
    for i in 0..40 {
        let path = if i % 4 == 0 { format!("/new/{i}") } else { format!("/old/{i}") };
        assert_eq!(get(web, &path, "").await, "a", "request {i} answered by the live decision");
    }
    let result = |r: &str| value("sluice_experiment_comparisons_total", &[("plugin", "shadowed"), ("result", r)]);
    until("40 comparisons", || result("agree") + result("backend") == 40).await;
    assert_eq!((result("agree"), result("backend")), (30, 10));
    assert_eq!(value("sluice_experiment_shadow_dropped_total", &[("plugin", "shadowed")]), 0);
    assert_eq!(b.requests(), 0, "the candidate's backend never got a request");
    let decided = |v: &str| value("sluice_experiment_decisions_total", &[("plugin", "shadowed"), ("version", v)]);
    assert_eq!((decided("live"), decided("candidate")), (40, 0));
    proxy.stop().await;
}

/// A connection from `ip` (a loopback address), its first line back.
async fn first_line_from(ip: [u8; 4], to: SocketAddr, send: &[u8]) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((ip, 0))).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream.write_all(send).await.unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), async {
        while stream.read(&mut byte).await.unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
    })
    .await
    .expect("a first line in time");
    String::from_utf8_lossy(&line).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_candidate_is_rolled_back_and_clients_only_see_live_answers() {
    let (live, cand) = (tagged_echo("live").await, tagged_echo("candidate").await);
    // Live: the built-in sniff plugin sends unknown protocols to `live`.
    // Candidate: `misbehave` traps on "TRAP…" (and would send the rest to `cand`).
    let config = format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listeners]]
name = "tcp"
bind = "127.0.0.1:0"
sniff = "gate"
default-backend = "cand"

[backends.live]
servers = ["{live}"]
[backends.cand]
servers = ["{cand}"]

[plugins.gate]
builtin = "sniff"
settings = {{ other-backend = "live" }}

[plugins.gate.candidate]
file = "{misbehave}"
settings = {{}}
shadow = false
share = 50
rollback = {{ max-failures-per-minute = 3 }}
"#,
        misbehave = plugin_path("misbehave").display()
    );
    let proxy = Proxy::start(&config).await;
    let tcp = proxy.addr("tcp");
    // 60 clients from 60 loopback addresses; about half are in the candidate's share.
    for n in 0..60u8 {
        let line = first_line_from([127, 0, 0, 2 + n], tcp, b"TRAP hello\n").await;
        assert_eq!(line, "live", "client {n} got the live version's answer");
    }
    let failures = value("sluice_experiment_candidate_failures_total", &[("plugin", "gate"), ("reason", "trap")]);
    assert_eq!(failures, 4, "rolled back at the 4th failure (3 per minute tolerated), then never called");
    assert_eq!(value("sluice_experiment_rollbacks_total", &[("plugin", "gate"), ("rule", "failures")]), 1);
    assert_eq!(value("sluice_experiment_candidate_on", &[("plugin", "gate")]), 0);
    let status = admin_get(proxy.admin_addr().unwrap(), "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let experiment = &status["experiments"][0];
    assert_eq!(experiment["state"], "rolled-back", "{status:#}");
    assert_eq!(experiment["rollback"]["rule"], "failures", "{status:#}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_percent_rollout_by_cookie_is_consistent_per_client() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let candidate = r#"settings = { default-backend = "b" }
share = 10
key = { cookie = "sid" }
shadow = false"#;
    let proxy = Proxy::start(&route_config("rollout", a.addr, b.addr, candidate, "")).await;
    let web = proxy.addr("web");
    let mut on_candidate = 0;
    for client in 0..500 {
        let cookie = format!("Cookie: theme=dark; sid=client-{client}\r\n");
        let first = get(web, "/", &cookie).await;
        let second = get(web, "/again", &cookie).await;
        assert_eq!(first, second, "client {client} stays on one version");
        assert!(first == "a" || first == "b", "{first}");
        on_candidate += usize::from(first == "b");
    }
    // Binomial(500, 0.1): mean 50, σ ≈ 6.7. Bernstein's bound puts
    // P(|X − 50| > 40) below 3·10⁻⁶ for a random hash; ours is fixed, so the
    // outcome never changes between runs.
    assert!((10..=90).contains(&on_candidate), "{on_candidate} of 500 clients on the candidate");
    // Without the cookie: the live version.
    assert_eq!(get(web, "/", "").await, "a");
    proxy.stop().await;
}

fn token_file(name: &str, token: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sluice-admin-token-{}-{name}", std::process::id()));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_write_actions_need_the_token() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let candidate = format!("{NEW_TO_B}\nshadow = false");
    // No token configured: writes refused.
    let open =
        Proxy::start(&route_config("admin-open", a.addr, b.addr, &candidate, "[admin]\nbind = \"127.0.0.1:0\"")).await;
    let admin_addr = open.admin_addr().unwrap();
    let (status, body) = admin(admin_addr, "POST", "/experiments/admin-open/share", None, "50").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("token-file"), "{body}");
    assert_eq!(admin(admin_addr, "POST", "/reload", Some("anything"), "").await.0, 403);
    assert!(admin_get(admin_addr, "/status").await.contains("admin-open"), "reads stay open");
    open.stop().await;

    let token = token_file("writes", "s3cret-token");
    let admin_table = format!("[admin]\nbind = \"127.0.0.1:0\"\ntoken-file = \"{}\"", token.display());
    let guarded = Proxy::start(&route_config("admin-guarded", a.addr, b.addr, &candidate, &admin_table)).await;
    let admin_addr = guarded.admin_addr().unwrap();
    let share = "/experiments/admin-guarded/share";
    assert_eq!(admin(admin_addr, "POST", share, None, "50").await.0, 401);
    assert_eq!(admin(admin_addr, "POST", share, Some("wrong"), "50").await.0, 401);
    let (status, body) = admin(admin_addr, "POST", share, Some("s3cret-token"), "50").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"share_percent\": 50.0"), "{body}");
    assert_eq!(value("sluice_experiment_share_basis_points", &[("plugin", "admin-guarded")]), 5000);
    let (status, body) = admin(admin_addr, "POST", share, Some("s3cret-token"), "150").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = admin(admin_addr, "POST", "/experiments/admin-guarded/abort", Some("s3cret-token"), "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"state\": \"aborted\""), "{body}");
    // Accepted: the reloader ran (and refused, because this test's config was never a file).
    let (status, body) = admin(admin_addr, "POST", "/reload", Some("s3cret-token"), "").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.starts_with("reload refused: ") && body.contains("cannot read the file"), "{body}");
    guarded.stop().await;
    let _ = std::fs::remove_file(token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_replayed_reports_the_expected_differences() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let capture = std::env::temp_dir().join(format!("sluice-capture-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&capture);
    // A capture with no candidate: the route plugin records every request.
    let config = route_config("captured", a.addr, b.addr, "", "").replace(
        "[plugins.captured.candidate]",
        &format!("[plugins.captured.capture]\nfile = \"{}\"", capture.display()),
    );
    let proxy = Proxy::start(&config).await;
    let web = proxy.addr("web");
    for i in 0..10 {
        let path = if i < 4 { format!("/new/{i}") } else { format!("/old/{i}") };
        get(web, &path, "Authorization: Bearer hidden\r\n").await;
    }
    let lines = || std::fs::read_to_string(&capture).map(|t| t.lines().count()).unwrap_or(0);
    until("10 captured lines", || lines() == 10).await;
    proxy.stop().await;
    let text = std::fs::read_to_string(&capture).unwrap();
    assert!(!text.contains("hidden"), "secrets are redacted: {text}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["plugin", "replay", "--capture"])
        .arg(&capture)
        .arg("--live")
        .arg(plugin_path("path"))
        .args(["--settings", r#"{"default-backend":"a"}"#])
        .args(["--candidate-settings", r#"{"default-backend":"a","rules":[{"path-prefix":"/new","backend":"b"}]}"#])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.starts_with("10 decisions replayed, 4 changed (40.0%)"), "{report}");
    assert!(report.contains("\nbackend: 4\n"), "{report}");
    assert!(report.contains("live: forward to a\n  candidate: forward to b"), "{report}");
    let _ = std::fs::remove_file(&capture);
}
