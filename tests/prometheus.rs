//! sluice as Prometheus sees it: the real `prometheus` binary (Debian package
//! `prometheus`) scrapes a real sluice's `/metrics` and answers queries about
//! traffic the test sent; `promtool` lints the exposition and checks the
//! example scrape config and alert rules in `deploy/prometheus/`; the Grafana
//! dashboard in `deploy/grafana/` only uses series sluice exports, and every
//! one of its queries (and every alert expression) is accepted by Prometheus.
//!
//! Under `CI=true` a missing `prometheus` or `promtool` fails the tests;
//! elsewhere those tests skip with a message.

mod common;

use common::http_backend::http_backend;
use common::{Proxy, admin_get, read_to_end, repo_root};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How many HTTP requests the test sends through sluice.
const REQUESTS: usize = 7;
/// The listener's name: unique in this process, so its counters are ours alone.
const LISTENER: &str = "prom-scraped";

/// The path of a tool, or `None` (skip) when it is missing outside CI.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "`{name}` is missing: install the Debian package `prometheus` (.ci/run does)");
        eprintln!("skipping: `{name}` is not installed (Debian package `prometheus`)");
    }
    found
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("sluice-prom-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(web: SocketAddr) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listeners]]
name = "{LISTENER}"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"

[backends.prom-web]
servers = ["{web}"]

[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "prom-web"
"#
    )
}

/// GET `path` from `addr` with hyper: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    let request =
        hyper::Request::get(path).header("host", addr.to_string()).body(http_body_util::Empty::<bytes::Bytes>::new());
    let response = sender.send_request(request.ok()?).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Percent-encode a query parameter.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's answer to an instant query (the whole JSON response).
async fn query(prometheus: SocketAddr, promql: &str) -> serde_json::Value {
    let (status, body) = http_get(prometheus, &format!("/api/v1/query?query={}", encode(promql)))
        .await
        .unwrap_or_else(|| panic!("prometheus did not answer the query {promql}"));
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {promql}: {status} {body}: {e}"));
    assert_eq!(json["status"], "success", "query {promql}: {body}");
    json
}

/// The single value of a query's vector result, if it has exactly one sample.
fn single_value(answer: &serde_json::Value) -> Option<f64> {
    match answer["data"]["result"].as_array()?.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Start Prometheus on a free loopback port scraping `target` every second.
/// The port is found by binding port 0 and releasing it; if Prometheus then
/// fails to bind it (someone else took it), it is tried again on another.
async fn start_prometheus(binary: &Path, target: SocketAddr, dir: &Path) -> (Killed, SocketAddr) {
    let rules = repo_root().join("deploy/prometheus/alerts.yml");
    let config = dir.join("prometheus.yml");
    let mut file = std::fs::File::create(&config).unwrap();
    write!(
        file,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: [\"{target}\"]\n",
        rules.display()
    )
    .unwrap();
    for attempt in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.join(format!("prometheus-{attempt}.log"))).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join(format!("data-{attempt}")).display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let mut child = Killed(child);
        // Ready, or exited (port taken: try another), within a bound.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join(format!("prometheus-{attempt}.log"))).unwrap_or_default();
                eprintln!("prometheus exited ({status}) on {addr}; trying another port:\n{log}");
                break;
            }
            if let Some((200, _)) = http_get(addr, "/-/ready").await {
                return (child, addr);
            }
            assert!(tokio::time::Instant::now() < deadline, "prometheus never became ready on {addr}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("prometheus could not start on any port; see its logs in {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_sluice_and_sees_the_requests_sent() {
    let Some(binary) = tool("prometheus") else { return };
    let web = http_backend("web").await;
    let proxy = Proxy::start(&config(web.addr)).await;
    for _ in 0..REQUESTS {
        let mut client = proxy.connect(LISTENER).await;
        client.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await.unwrap();
        let response = read_to_end(&mut client).await;
        assert!(response.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&response));
    }
    let admin = proxy.admin_addr().unwrap();
    let dir = temp_dir("scrape");
    let (_prometheus, prometheus) = start_prometheus(&binary, admin, &dir).await;

    // Wait (bounded, polling the API) for a scrape that found the target up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while single_value(&query(prometheus, "up{job=\"sluice\"}").await) != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "the sluice target never came up in prometheus");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let value = |promql: String| async move {
        let answer = query(prometheus, &promql).await;
        single_value(&answer).unwrap_or_else(|| panic!("{promql}: not one sample: {answer}"))
    };
    let requests = REQUESTS as f64;
    assert_eq!(value(format!("sum(sluice_http_responses_total{{listener=\"{LISTENER}\"}})")).await, requests);
    assert_eq!(value(format!("sluice_http_responses_total{{listener=\"{LISTENER}\",class=\"2xx\"}}")).await, requests);
    assert_eq!(value("sluice_backend_requests_total{backend=\"prom-web\",class=\"2xx\"}".into()).await, requests);
    let count = format!("sluice_http_request_duration_seconds_count{{listener=\"{LISTENER}\",class=\"2xx\"}}");
    assert_eq!(value(count).await, requests);
    let quantile = format!(
        "histogram_quantile(0.5, sum by (le) (sluice_http_request_duration_seconds_bucket{{listener=\"{LISTENER}\"}}))"
    );
    let median = value(quantile).await;
    assert!(median > 0.0 && median <= 30.0, "median latency {median}");
    let build = query(prometheus, "sluice_build_info").await;
    assert_eq!(single_value(&build), Some(1.0), "{build}");
    assert_eq!(build["data"]["result"][0]["metric"]["version"], env!("CARGO_PKG_VERSION"), "{build}");
    assert!(value("process_resident_memory_bytes{job=\"sluice\"}".into()).await > 0.0);
    assert!(value("process_start_time_seconds{job=\"sluice\"}".into()).await > 1.7e9);

    // Prometheus loaded the example alert rules…
    let (_, rules) = http_get(prometheus, "/api/v1/rules").await.expect("the rules API answers");
    assert!(rules.contains("\"SluiceDown\""), "{rules}");
    // …and accepts every query of the dashboard.
    for expr in dashboard_queries() {
        let promql = ["$listener", "$backend", "$job"]
            .iter()
            .fold(expr.replace("$__rate_interval", "1m"), |promql, variable| promql.replace(variable, ".*"));
        query(prometheus, &promql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool() {
    let Some(promtool) = tool("promtool") else { return };
    let web = http_backend("web").await;
    let proxy = Proxy::start(&config(web.addr).replace(LISTENER, "prom-linted").replace("prom-web", "lint-web")).await;
    let mut client = proxy.connect("prom-linted").await;
    client.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await.unwrap();
    read_to_end(&mut client).await;
    let metrics = admin_get(proxy.admin_addr().unwrap(), "/metrics").await;
    assert!(metrics.contains("sluice_http_request_duration_seconds_bucket{listener=\"prom-linted\""), "{metrics}");
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}\n{}{}\n--- exposition ---\n{metrics}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_example_scrape_config_and_alert_rules_pass_promtool() {
    let Some(promtool) = tool("promtool") else { return };
    let deploy = repo_root().join("deploy/prometheus");
    for args in
        [["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"], ["test", "rules", "alerts_test.yml"]]
    {
        let output = Command::new(&promtool).args(args).current_dir(&deploy).output().unwrap();
        assert!(
            output.status.success(),
            "promtool {}: {}\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Every PromQL expression in the dashboard: panel targets and annotations.
fn dashboard_queries() -> Vec<String> {
    let path = repo_root().join("deploy/grafana/sluice.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has too few queries: {exprs:?}");
    exprs
}

fn collect_exprs(value: &serde_json::Value, exprs: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                exprs.push(expr.to_string());
            }
            map.values().for_each(|v| collect_exprs(v, exprs));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, exprs)),
        _ => {}
    }
}

/// The metric names a PromQL expression uses (identifiers that name sluice or process series).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
        let word = &tail[..end];
        // Skip label values ("…") and names inside braces are labels, not metrics: only prefixes we export count.
        if word.starts_with("sluice_") || word.starts_with("process_") {
            names.push(word.to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_alerts_use_only_series_sluice_exports() {
    let web = http_backend("web").await;
    let proxy = Proxy::start(&config(web.addr).replace(LISTENER, "prom-names").replace("prom-web", "names-web")).await;
    let metrics = admin_get(proxy.admin_addr().unwrap(), "/metrics").await;
    let exported: Vec<&str> =
        metrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let exists = |name: &str| {
        exported.contains(&name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(|base| exported.contains(&base)))
    };
    let alerts = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).unwrap();
    let alert_exprs: Vec<String> =
        alerts.lines().filter_map(|line| line.trim().strip_prefix("expr:")).map(|e| e.trim().to_string()).collect();
    assert!(alert_exprs.len() >= 5, "{alert_exprs:?}");
    let mut used = 0;
    for expr in dashboard_queries().iter().chain(&alert_exprs) {
        for name in metric_names(expr) {
            assert!(exists(&name), "`{name}` (in `{expr}`) is not in the exposition:\n{metrics}");
            used += 1;
        }
    }
    assert!(used >= 15);
}
