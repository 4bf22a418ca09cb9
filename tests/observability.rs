//! What an operator watches: HTTP series (bytes, latency, per-backend
//! requests and errors), request ids, and the access log in a file in each
//! format, reopened on rotation (from the library, and by SIGUSR1 on the
//! real binary).

mod common;

use bytes::Bytes;
use common::http_backend::{field, http_backend};
use common::{Proxy, admin_get};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// One request on a new connection; the response with its whole body.
async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Response<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn get(path: &str) -> hyper::http::request::Builder {
    Request::get(path).header("host", "a.test")
}

/// The value of one sample line `series` in the exposition (0 when absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().unwrap())
}

/// Poll `/metrics` until `done` holds for it (bounded).
async fn metrics_when(admin: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = admin_get(admin, "/metrics").await;
        if done(&metrics) {
            return metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "metrics never got there:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("sluice-obs-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The file's lines once it has at least `n` (bounded wait: the writer is a thread).
fn lines_when(path: &Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(std::time::Instant::now() < deadline, "{} has {} lines, not {n}", path.display(), lines.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config(listener: &str, web: SocketAddr, extra: &str) -> String {
    // Port 9 on loopback (discard) is closed here: connecting to it fails at once.
    format!(
        r#"{extra}
[admin]
bind = "127.0.0.1:0"

[[listeners]]
name = "{listener}"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"

[backends.web]
servers = ["{web}"]
[backends.dead]
servers = ["127.0.0.1:9"]
retries = 0

[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"
[[plugins.path.settings.rules]]
path-prefix = "/dead/"
backend = "dead"
[[plugins.path.settings.rules]]
path-prefix = "/teapot"
respond = {{ status = 418, body = "short and stout" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bytes_latency_and_backend_series_are_counted() {
    let web = http_backend("web").await;
    let listener = "obs-metered";
    let proxy = Proxy::start(&config(listener, web.addr, "")).await;
    let addr = proxy.addr(listener);

    let download = send(addr, get("/download/100000").body(Full::default()).unwrap()).await;
    assert_eq!(download.body().len(), 100_000);
    let upload = Request::post("/upload").header("host", "a.test").body(Full::new(Bytes::from(vec![7u8; 30_000])));
    let upload = send(addr, upload.unwrap()).await;
    assert_eq!(field(std::str::from_utf8(upload.body()).unwrap(), "body-length"), Some("30000"));
    let dead = send(addr, get("/dead/x").body(Full::default()).unwrap()).await;
    assert_eq!(dead.status(), 502);
    let teapot = send(addr, get("/teapot").body(Full::default()).unwrap()).await;
    assert_eq!(teapot.status(), 418);

    // A WebSocket tunnel: its bytes count when it closes.
    let (mut socket, _) =
        tokio_tungstenite::client_async("ws://a.test/ws", TcpStream::connect(addr).await.unwrap()).await.unwrap();
    socket.send(Message::binary(vec![1u8; 5000])).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap().len(), 5000);
    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    drop(socket); // the client's FIN: the tunnel ends when both sides have closed

    let admin = proxy.admin_addr().unwrap();
    let bytes = |direction: &str| format!("sluice_bytes_total{{listener=\"{listener}\",direction=\"{direction}\"}}");
    // Bodies both ways, plus the WebSocket frames (5000 bytes each way and their framing).
    let metrics =
        metrics_when(admin, |m| sample(m, &bytes("in")) >= 35_000.0 && sample(m, &bytes("out")) >= 105_000.0).await;
    assert!(sample(&metrics, &bytes("in")) < 40_000.0, "{metrics}");
    assert!(sample(&metrics, &bytes("out")) < 110_000.0, "{metrics}");

    let responses = |class: &str| format!("sluice_http_responses_total{{listener=\"{listener}\",class=\"{class}\"}}");
    assert_eq!(sample(&metrics, &responses("2xx")), 2.0, "{metrics}");
    assert_eq!(sample(&metrics, &responses("1xx")), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, &responses("4xx")), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, &responses("5xx")), 1.0, "{metrics}");
    let latency = |suffix: &str, class: &str| {
        format!("sluice_http_request_duration_seconds{suffix}{{listener=\"{listener}\",class=\"{class}\"}}")
    };
    assert_eq!(sample(&metrics, &latency("_count", "2xx")), 2.0, "{metrics}");
    let inf =
        format!("sluice_http_request_duration_seconds_bucket{{listener=\"{listener}\",class=\"2xx\",le=\"+Inf\"}}");
    assert_eq!(sample(&metrics, &inf), 2.0, "{metrics}");
    assert!(sample(&metrics, &latency("_sum", "2xx")) > 0.0, "{metrics}");

    // Per backend: requests by the class the client got, errors by kind. The
    // backend names are shared with other tests in this process: compare to
    // at least what this test sent.
    assert!(sample(&metrics, "sluice_backend_requests_total{backend=\"web\",class=\"2xx\"}") >= 2.0, "{metrics}");
    assert!(sample(&metrics, "sluice_backend_requests_total{backend=\"dead\",class=\"5xx\"}") >= 1.0, "{metrics}");
    assert!(sample(&metrics, "sluice_backend_errors_total{backend=\"dead\",kind=\"connect\"}") >= 1.0, "{metrics}");
    assert!(metrics.contains("sluice_backend_errors_total{backend=\"web\",kind=\"timeout\"} "), "{metrics}");
    assert!(metrics.contains("sluice_build_info{version=\""), "{metrics}");
    assert!(metrics.contains("\nprocess_open_fds "), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made_and_reach_backend_client_and_log() {
    let web = http_backend("web").await;
    let dir = temp_dir("json");
    let log = dir.join("access.log");
    let extra = format!("[access-log]\nformat = \"json\"\nfile = \"{}\"\n", log.display());
    let proxy = Proxy::start(&config("obs-json", web.addr, &extra)).await;
    let addr = proxy.addr("obs-json");

    let given = send(addr, get("/given").header("x-request-id", "client-id-42").body(Full::default()).unwrap()).await;
    assert_eq!(given.headers()["x-request-id"], "client-id-42");
    assert_eq!(field(std::str::from_utf8(given.body()).unwrap(), "x-request-id"), Some("client-id-42"));

    // Not sane (a space): replaced, and the backend sees only the new id.
    let bad = send(addr, get("/made").header("x-request-id", "two words").body(Full::default()).unwrap()).await;
    let made = bad.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 33, "{made}");
    assert_eq!(field(std::str::from_utf8(bad.body()).unwrap(), "x-request-id"), Some(made.as_str()));

    let lines = lines_when(&log, 2);
    let entries: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries[0]["request_id"], "client-id-42");
    assert_eq!(entries[0]["target"], "/given");
    assert_eq!(entries[0]["status"], 200);
    assert_eq!(entries[0]["listener"], "obs-json");
    assert_eq!(entries[0]["backend"], "web");
    assert_eq!(entries[0]["server"], web.addr.to_string());
    assert_eq!(entries[0]["bytes"], given.body().len());
    assert_eq!(entries[1]["request_id"], made.as_str());
    assert!(entries[1]["duration_ms"].as_f64().unwrap() >= 0.0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_go_to_a_file_that_is_reopened_after_rotation() {
    let web = http_backend("web").await;
    let dir = temp_dir("combined");
    let log = dir.join("access.log");
    let extra = format!("[access-log]\nformat = \"combined\"\nfile = \"{}\"\n", log.display());
    let proxy = Proxy::start(&config("obs-combined", web.addr, &extra)).await;
    let addr = proxy.addr("obs-combined");
    let request = get("/page?q=1")
        .header("referer", "http://r.test/")
        .header("user-agent", "probe/1.0")
        .header("x-request-id", "rid-1")
        .body(Full::default())
        .unwrap();
    let response = send(addr, request).await;
    let lines = lines_when(&log, 1);
    let expected_tail =
        format!("\"GET /page?q=1 HTTP/1.1\" 200 {} \"http://r.test/\" \"probe/1.0\" \"rid-1\"", response.body().len());
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{}", lines[0]);
    assert!(lines[0].ends_with(&expected_tail), "{}\nshould end with\n{expected_tail}", lines[0]);

    // logrotate's way: rename the file, then ask for a reopen (SIGUSR1 does this).
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    sluice::access_log::reopen();
    send(addr, get("/after").body(Full::default()).unwrap()).await;
    let new_lines = lines_when(&log, 1);
    assert!(new_lines[0].contains("\"GET /after HTTP/1.1\" 200 "), "{}", new_lines[0]);
    assert_eq!(lines_when(&rotated, 1).len(), 1, "the rotated file keeps only the old line");
    proxy.stop().await;
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary reopens its access log on a real SIGUSR1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reopens_its_access_log_on_sigusr1() {
    let web = http_backend("web").await;
    let dir = temp_dir("sigusr1");
    let log = dir.join("access.log");
    let config_path = dir.join("sluice.toml");
    let config = config("obs-binary", web.addr, "[access-log]\nformat = \"text\"\nfile = \"access.log\"\n");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config_path)
        .env("SLUICE_LOG", "warn,sluice::app=info,sluice::reload=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr: SocketAddr = loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("sluice logs its address");
        if let Some(at) = line.find("addr=").filter(|_| line.contains("listening")) {
            break line[at + 5..].split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    send(addr, get("/before").body(Full::default()).unwrap()).await;
    assert!(lines_when(&log, 1)[0].contains("target=/before "));
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    assert!(Command::new("kill").arg("-USR1").arg(child.0.id().to_string()).status().unwrap().success());
    // The signal is handled asynchronously: send until a line lands in the new file.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(child.0.try_wait().unwrap().is_none(), "sluice exited on SIGUSR1");
        send(addr, get("/after").body(Full::default()).unwrap()).await;
        let reopened = std::fs::read_to_string(&log).unwrap_or_default();
        if reopened.lines().any(|line| line.contains("target=/after ")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no line in a new access log after SIGUSR1");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill").arg("-TERM").arg(child.0.id().to_string()).status().unwrap().success());
    assert!(child.0.wait().unwrap().success());
}

/// `/status` says what started the last reload in words, not Rust debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_reload_trigger_in_words() {
    let web = http_backend("web").await;
    let dir = temp_dir("status");
    let path = dir.join("sluice.toml");
    std::fs::write(&path, config("obs-status", web.addr, "")).unwrap();
    let app = sluice::App::bind(sluice::Config::load(&path).unwrap()).await.unwrap().with_watch(false);
    let (reload, admin) = (app.reload_handle(), app.admin_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    reload.reload().await.expect("the reload succeeds");
    let status: serde_json::Value = serde_json::from_str(&admin_get(admin, "/status").await).unwrap();
    assert_eq!(status["reload"]["last"]["trigger"], "reload requested", "{status}");
    assert_eq!(status["reload"]["last"]["files"], serde_json::json!([]), "{status}");
    assert_eq!(status["reload"]["last"]["ok"], true, "{status}");
    let _ = stop.send(());
    running.await.unwrap();
}
