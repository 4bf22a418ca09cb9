//! Experiment features a user reaches through the running proxy
//! (docs/EXPERIMENTS.md): the 5xx-rate rollback rule against a backend that
//! fails, capture rotation under a size cap (and replaying the rotated
//! files), and the path plugin's `split` shares.
//!
//! Each test names its plugins uniquely: the metrics registry is
//! process-wide and the tests run in parallel.

mod common;

use bytes::Bytes;
use common::http_backend::{field, http_backend};
use common::{Proxy, admin_get, plugin_path, read_to_end};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use sluice::metrics;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// One `GET` on a fresh connection: (status, the backend's name if it is an `http_backend`).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, Option<String>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: t.test\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let response = String::from_utf8_lossy(&read_to_end(&mut stream).await).into_owned();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, field(body, "backend").map(str::to_string))
}

/// A backend answering every request with `status`; counts them.
async fn status_backend(status: u16) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"failing on purpose\n")));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, count)
}

fn value(name: &'static str, labels: &[(&'static str, &str)]) -> i64 {
    metrics::value(name, labels)
}

fn route_config(plugin: &str, a: SocketAddr, b: SocketAddr, plugin_tables: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"
token-file = "{token}"

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

{plugin_tables}
"#,
        token = token_file().display()
    )
}

const TOKEN: &str = "e2e-rules-token";

/// The admin token file shared by this file's tests.
fn token_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!("sluice-experiments-rules-token-{}", std::process::id()));
    if !path.exists() {
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    }
    path
}

/// `POST path` on the admin listener with the token: (status, body).
async fn admin_post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = String::from_utf8(read_to_end(&mut stream).await).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_whose_backend_answers_500_is_rolled_back_by_the_5xx_rule() {
    let live = http_backend("live").await;
    let (failing, failing_requests) = status_backend(500).await;
    // Live sends everything to `a` (200s); the candidate, for half the users, to `b` (500s).
    let tables = format!(
        r#"[plugins.fivexx]
file = "{path}"
settings = {{ default-backend = "a" }}

[plugins.fivexx.candidate]
settings = {{ default-backend = "b" }}
shadow = false
share = 50
key = {{ header = "x-user" }}
rollback = {{ max-5xx-increase = 10.0, window = "1m", min-requests = 5 }}
"#,
        path = plugin_path("path").display()
    );
    let proxy = Proxy::start(&route_config("fivexx", live.addr, failing, &tables)).await;
    let web = proxy.addr("web");
    let rolled_back = || value("sluice_experiment_rollbacks_total", &[("plugin", "fivexx"), ("rule", "5xx-rate")]);
    assert_eq!(value("sluice_experiment_candidate_on", &[("plugin", "fivexx")]), 1);

    // Until the rule fires, the users in the candidate's share get its 500s; then nobody does.
    let users: Vec<String> = (0..80).map(|i| format!("X-User: user-{i}\r\n")).collect();
    let mut five_hundreds = 0;
    for (i, user) in users.iter().enumerate() {
        let off_before = rolled_back() > 0;
        let (status, backend) = get(web, &format!("/r/{i}"), user).await;
        match status {
            500 => {
                assert!(!off_before, "request {i}: a 500 after the rollback");
                five_hundreds += 1;
            }
            200 => assert_eq!(backend.as_deref(), Some("live"), "request {i}"),
            other => panic!("request {i}: status {other}"),
        }
    }
    assert_eq!(rolled_back(), 1, "the 5xx rule fired once");
    assert_eq!(failing_requests.load(Ordering::Relaxed), five_hundreds);
    // Both sides need 5 responses: at least 5 candidate 500s, and far fewer than its 40-odd users.
    assert!((5..30).contains(&five_hundreds), "{five_hundreds} candidate 500s before the rollback");
    assert_eq!(value("sluice_experiment_candidate_on", &[("plugin", "fivexx")]), 0);

    let status: serde_json::Value =
        serde_json::from_str(&admin_get(proxy.admin_addr().unwrap(), "/status").await).unwrap();
    let experiment = status["experiments"].as_array().unwrap().iter().find(|e| e["plugin"] == "fivexx").unwrap();
    assert_eq!(experiment["state"], "rolled-back", "{experiment:#}");
    assert_eq!(experiment["rollback"]["rule"], "5xx-rate", "{experiment:#}");
    let reason = experiment["rollback"]["reason"].as_str().unwrap();
    assert!(reason.contains("candidate 5xx rate 100.0%") && reason.contains("live 0.0%"), "{reason}");

    // It stays off: every user, the candidate's included, is on the live version.
    let before = failing_requests.load(Ordering::Relaxed);
    for (i, user) in users.iter().enumerate().take(40) {
        assert_eq!(get(web, &format!("/after/{i}"), user).await, (200, Some("live".to_string())), "user {i}");
    }
    assert_eq!(failing_requests.load(Ordering::Relaxed), before);
    assert_eq!(rolled_back(), 1);

    // The operator sets a share: the candidate is on again, with fresh counts, so the rule
    // needs `min-requests` of its responses again before it fires a second time.
    let (code, body) = admin_post(proxy.admin_addr().unwrap(), "/experiments/fivexx/share", "50").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"state\": \"running\""), "{body}");
    assert_eq!(value("sluice_experiment_candidate_on", &[("plugin", "fivexx")]), 1);
    let mut again = 0;
    for (i, user) in users.iter().enumerate() {
        let off_before = rolled_back() > 1;
        let (status, _) = get(web, &format!("/again/{i}"), user).await;
        if status == 500 {
            assert!(!off_before, "request {i}: a 500 after the second rollback");
            again += 1;
        }
    }
    assert_eq!(rolled_back(), 2, "the rule fired again");
    assert!((5..30).contains(&again), "{again} candidate 500s before the second rollback");
    proxy.stop().await;
}

/// `FILE`, `FILE.1`, `FILE.2`…
fn numbered(file: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return file.to_path_buf();
    }
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The `path` of each captured line (every line must be a JSON object).
fn captured_paths(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| {
            let record: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: a bad line ({e}): {line}", file.display()));
            record["path"].as_str().unwrap_or_else(|| panic!("no path in {line}")).to_string()
        })
        .collect()
}

fn replay(capture: &Path) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["plugin", "replay", "--capture"])
        .arg(capture)
        .arg("--live")
        .arg(plugin_path("path"))
        .args(["--settings", r#"{"default-backend":"a"}"#])
        .args(["--candidate-settings", r#"{"default-backend":"a","rules":[{"path-prefix":"/odd","backend":"b"}]}"#])
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_rotates_under_its_size_cap_and_the_rotated_files_replay() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let dir = std::env::temp_dir().join(format!("sluice-capture-rotation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("decisions.jsonl");
    const CAP: u64 = 4096;
    let tables = format!(
        r#"[plugins.rotating]
file = "{path}"
settings = {{ default-backend = "a" }}

[plugins.rotating.capture]
file = "{capture}"
max-size = "4KiB"
keep = 2
"#,
        path = plugin_path("path").display(),
        capture = capture.display()
    );
    let proxy = Proxy::start(&route_config("rotating", a.addr, b.addr, &tables)).await;
    let web = proxy.addr("web");
    // Lines of about 1 KiB (a padding header): 3 or 4 per file, so 30 requests rotate many times.
    let padding = format!("X-Padding: {}\r\n", "p".repeat(900));
    const REQUESTS: usize = 30;
    let path_of = |i: usize| if i.is_multiple_of(2) { format!("/even/{i}") } else { format!("/odd/{i}") };
    for i in 0..REQUESTS {
        assert_eq!(get(web, &path_of(i), &padding).await, (200, Some("a".to_string())));
    }
    // The worker writes off the client's path: wait (bounded) for the last line.
    let last = path_of(REQUESTS - 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while captured_paths(&capture).last() != Some(&last) {
        assert!(tokio::time::Instant::now() < deadline, "the last request was never captured");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.stop().await;

    // FILE, FILE.1, FILE.2: each under the cap; FILE.3 never kept.
    for n in 0..=2 {
        let size = std::fs::metadata(numbered(&capture, n)).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0 && size <= CAP, "{}: {size} bytes", numbered(&capture, n).display());
    }
    assert!(!numbered(&capture, 3).exists(), "only `keep = 2` rotated files are kept");
    let files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(files.len(), 3, "{files:?}");
    // Oldest to newest, the kept lines are the most recent requests, in order, none missing.
    let kept: Vec<String> = (0..=2).rev().flat_map(|n| captured_paths(&numbered(&capture, n))).collect();
    assert!(kept.len() < REQUESTS, "older files were deleted: {} lines kept", kept.len());
    let expected: Vec<String> = (REQUESTS - kept.len()..REQUESTS).map(path_of).collect();
    assert_eq!(kept, expected);

    // Every kept file, rotated or current, replays.
    for n in 0..=2 {
        let file = numbered(&capture, n);
        let lines = captured_paths(&file);
        let odd = lines.iter().filter(|p| p.starts_with("/odd/")).count();
        let (ok, report) = replay(&file);
        assert!(ok, "{}: {report}", file.display());
        let want = format!("{} decisions replayed, {odd} changed", lines.len());
        assert!(report.starts_with(&want), "{}: want `{want}`: {report}", file.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_split_spreads_distinct_keys_about_their_configured_share() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let tables = format!(
        r#"[plugins.splitting]
file = "{path}"
settings = {{ default-backend = "a", rules = [{{ path-prefix = "/api/", backend = "a", split = [{{ backend = "b", percent = 30 }}], split-key = {{ header = "X-User" }} }}] }}
"#,
        path = plugin_path("path").display()
    );
    let proxy = Proxy::start(&route_config("splitting", a.addr, b.addr, &tables)).await;
    let web = proxy.addr("web");
    const USERS: usize = 300;
    let mut sides = Vec::with_capacity(USERS);
    for user in 0..USERS {
        let (status, backend) = get(web, "/api/items", &format!("x-user: user-{user}\r\n")).await;
        assert_eq!(status, 200, "user {user}");
        sides.push(backend.unwrap());
    }
    let to_b = sides.iter().filter(|side| *side == "b").count();
    assert_eq!(a.requests() + b.requests(), USERS as u64);
    // 30 % of 300 is 90; σ ≈ 8 for a random hash. The keys and the hash are
    // fixed, so the count never changes between runs; the band is wide.
    assert!((45..=135).contains(&to_b), "{to_b} of {USERS} users split to b");
    // Each user stays on its side.
    for user in (0..USERS).step_by(7) {
        let (_, backend) = get(web, "/api/again", &format!("X-User: user-{user}\r\n")).await;
        assert_eq!(backend.as_deref(), Some(sides[user].as_str()), "user {user} moved");
    }
    // Without the key, or outside the rule: the rule's own backend.
    assert_eq!(get(web, "/api/items", "").await.1.as_deref(), Some("a"));
    assert_eq!(get(web, "/other", "x-user: user-1\r\n").await.1.as_deref(), Some("a"));
    proxy.stop().await;
}

/// Why `config` does not start (it must not).
async fn start_error(config: &str) -> String {
    let config =
        sluice::Config::parse(config, &common::repo_root().join("test.toml")).unwrap_or_else(|e| panic!("{e}"));
    match sluice::App::bind(config).await {
        Ok(_) => panic!("started despite a broken split"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_split_to_an_unknown_backend_or_on_an_impossible_key_stops_the_start() {
    let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:9".parse().unwrap(), "127.0.0.1:9".parse().unwrap());
    let tables = |split: &str, key: &str| {
        format!(
            r#"[plugins.badsplit]
builtin = "path"
settings = {{ default-backend = "a", rules = [{{ path-prefix = "/", backend = "a", split = [{{ backend = "{split}", percent = 5 }}], split-key = {key} }}] }}
"#
        )
    };
    let error = start_error(&route_config("badsplit", a, b, &tables("c", "\"client-ip\""))).await;
    assert!(error.contains("backend `c`, which is not defined"), "{error}");
    let error = start_error(&route_config("badsplit", a, b, &tables("b", "{ header = \"x user\" }"))).await;
    assert!(error.contains("split-key: \"x user\" is not a valid header name"), "{error}");
}
