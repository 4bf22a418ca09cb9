//! Operating sluice: `plugin test`, the admin endpoints and metrics, the
//! access log, global limits and graceful shutdown — through the built binary
//! where the binary is what operators use.

mod common;

use common::http_backend::http_backend;
use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn plugin_test(args: &[&str]) -> (bool, String, String) {
    let output = sluice().arg("plugin").arg("test").args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn plugin_test_runs_the_default_plugins_on_sample_input() {
    let sniff = plugin_path("sniff");
    let sniff = sniff.to_str().unwrap();
    let (ok, out, err) = plugin_test(&[sniff, "--head", r"<policy-file-request/>\0"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("verdict: reply ("), "{out}");
    assert!(out.contains("then close") && out.contains("cross-domain-policy"), "{out}");

    let (_, out, _) = plugin_test(&[sniff, "--head", r"GET / HTTP/1.1\r\n"]);
    assert_eq!(out, "verdict: http\nmanifest: backends none\n");
    let (_, out, _) = plugin_test(&[sniff, "--head", "GET / HT"]);
    assert_eq!(out, "verdict: need-more\nmanifest: backends none\n");
    let (_, out, _) = plugin_test(&[sniff, "--head", "", "--complete", "--settings", r#"{"other-backend":"ssh"}"#]);
    assert_eq!(out, "verdict: forward to backend `ssh`\nmanifest: backends ssh\n");
    let hello = std::env::temp_dir().join(format!("sluice-hello-{}.bin", std::process::id()));
    std::fs::write(&hello, testdata("tls-client-hello.bin")).unwrap();
    let (_, out, _) = plugin_test(&[sniff, "--head-file", hello.to_str().unwrap()]);
    assert_eq!(out, "verdict: terminate-tls\nmanifest: backends none\n");

    let path = plugin_path("path");
    let path = path.to_str().unwrap();
    let settings =
        r#"{"default-backend":"web","rules":[{"path-prefix":"/socket.io/","backend":"io","affinity":"client-ip"}]}"#;
    let (ok, out, err) = plugin_test(&[
        path,
        "--settings",
        settings,
        "--request",
        "GET /socket.io/?EIO=4",
        "--client",
        "192.0.2.7:5000",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "decision: forward to backend `io`\naffinity: 192.0.2.7\nmanifest: backends io, web; reads no header\n"
    );
    let (_, out, _) = plugin_test(&[path, "--settings", settings, "--request", "GET /", "--header", "host: a.test"]);
    assert_eq!(out, "decision: forward to backend `web`\nmanifest: backends io, web; reads no header\n");

    // Mistakes get precise messages and a failing exit code.
    let (ok, _, err) = plugin_test(&[sniff, "--head", r"\q"]);
    assert!(!ok && err.contains("unknown escape"), "{err}");
    let (ok, _, err) = plugin_test(&[path, "--settings", r#"{"default-backnd":"web"}"#, "--request", "GET /"]);
    assert!(!ok && err.contains("refused its settings") && err.contains("default-backnd"), "{err}");
    let (ok, _, err) = plugin_test(&[sniff, "--request", "GET /"]);
    assert!(!ok && err.contains("does not fit the `router` world"), "{err}");
}

#[tokio::test]
async fn metrics_and_status_follow_known_traffic() {
    let web = http_backend("web").await;
    let echo = tagged_echo("echo").await;
    let proxy = Proxy::start(&format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listeners]]
name = "metered"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"
default-backend = "echo"

[backends.web]
servers = ["{web}"]
[backends.echo]
servers = ["{echo}"]

[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"
"#,
        web = web.addr
    ))
    .await;
    // Known traffic: 3 HTTP requests, 2 Flash policy requests, 1 raw relay.
    for _ in 0..3 {
        let mut client = proxy.connect("metered").await;
        client.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await.unwrap();
        read_to_end(&mut client).await;
    }
    for _ in 0..2 {
        let mut client = proxy.connect("metered").await;
        client.write_all(b"<policy-file-request/>\0").await.unwrap();
        read_to_end(&mut client).await;
    }
    let mut raw = proxy.connect("metered").await;
    raw.write_all(b"hello").await.unwrap();
    raw.shutdown().await.unwrap();
    read_to_end(&mut raw).await;

    let admin = proxy.admin_addr().expect("the admin listener is bound");
    let server_up = format!("sluice_backend_server_up{{backend=\"web\",server=\"{}\"}} 1", web.addr);
    let expected = [
        "sluice_connections_total{listener=\"metered\",protocol=\"forward-default\"} 1",
        "sluice_connections_total{listener=\"metered\",protocol=\"http\"} 3",
        "sluice_connections_total{listener=\"metered\",protocol=\"reply\"} 2",
        "sluice_sniff_verdicts_total{listener=\"metered\",verdict=\"reply\"} 2",
        "sluice_http_responses_total{listener=\"metered\",class=\"2xx\"} 3",
        "sluice_connections_active{listener=\"metered\"} 0",
        server_up.as_str(),
        "# TYPE sluice_plugin_decision_seconds histogram",
    ];
    // Each connection is counted just after its client sees it close, on
    // whichever worker served it: wait until every count has landed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = admin_get(admin, "/metrics").await;
        let missing: Vec<&str> = expected.iter().copied().filter(|line| !metrics.contains(line)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "missing {missing:?} in\n{metrics}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metrics = admin_get(admin, "/metrics").await;
    assert!(metrics.contains("sluice_plugin_decision_seconds_count{plugin=\"path\",world=\"router\"}"));

    assert_eq!(admin_get(admin, "/healthz").await, "ok\n");
    let status: serde_json::Value = serde_json::from_str(&admin_get(admin, "/status").await).unwrap();
    assert_eq!(status["listeners"][0]["name"], "metered");
    let plugins = status["plugins"].as_array().unwrap();
    assert!(plugins.iter().any(|p| p["name"] == "sniff" && p["sha256"].as_str().unwrap().len() == 64), "{status}");
    assert_eq!(status["backends"][1]["servers"][0]["up"], true, "{status}");
}

#[tokio::test]
async fn a_flood_of_silent_sockets_is_capped() {
    let echo = tagged_echo("echo").await;
    let proxy = Proxy::start(&format!(
        "[limits]\nmax-sniffing = 2\n\
         [[listeners]]\nname = \"capped\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\ndefault-backend = \"echo\"\n\
         inspect-timeout = \"10s\"\n[backends.echo]\nservers = [\"{echo}\"]\n[plugins.sniff]\nbuiltin = \"sniff\"\n"
    ))
    .await;
    let silent: Vec<_> = futures_util::future::join_all((0..2).map(|_| proxy.connect("capped"))).await;
    // Both sniffing slots are taken by silent sockets: the next one is refused…
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // (Workers accept from their own queues, in any order: a later socket may
    // take a slot first, and then it is one of the earlier ones that is refused.)
    let mut held = Vec::new();
    loop {
        let mut third = proxy.connect("capped").await;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            _ => held.push(third),
        }
        assert!(tokio::time::Instant::now() < deadline);
    }
    // …and a client that is past sniffing is not affected by the cap.
    // Once the proxy has seen them close (another worker may accept the next
    // client first), the slots are free again.
    drop((silent, held));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = proxy.connect("capped").await;
        client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), (&mut client).take(5).read_to_end(&mut got)).await;
        if got == b"echo\n" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slots were never given back: {got:?}");
    }
}

/// The binary on a config, with its stderr lines sent to a channel.
fn spawn_binary(config: &str, args: &[&str]) -> (Child, mpsc::Receiver<String>, SocketAddr) {
    let dir = std::env::temp_dir().join(format!("sluice-op-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = sluice().arg("run").arg("--config").arg(&path).args(args).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("sluice printed its address");
        if line.contains("listening") && !line.contains("admin") && !line.contains("demo") {
            let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let addr = json["fields"]["addr"].as_str().map(str::to_string).unwrap_or_else(|| {
                let at = line.find("addr=").unwrap();
                line[at + 5..].split_whitespace().next().unwrap().to_string()
            });
            break addr.parse().unwrap();
        }
    };
    (child, rx, addr)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn sigterm(child: &Child) {
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_carry_the_fields_operators_need() {
    let web = http_backend("web").await;
    let config = format!(
        "[[listeners]]\nname = \"logged\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\nroute = \"path\"\n\
         [backends.web]\nservers = [\"{}\"]\n[plugins.sniff]\nbuiltin = \"sniff\"\n\
         [plugins.path]\nbuiltin = \"path\"\n[plugins.path.settings]\ndefault-backend = \"web\"\n",
        web.addr
    );
    let (mut child, lines, addr) = spawn_binary(&config, &["--log-format", "json"]);
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /page?x=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await.unwrap();
    read_to_end(&mut client).await;
    let (mut request, mut connection) = (None, None);
    while request.is_none() || connection.is_none() {
        let line = lines.recv_timeout(Duration::from_secs(10)).expect("access log lines");
        let json: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if json["target"] == "sluice::access" {
            match json["fields"]["message"].as_str() {
                Some("request") => request = Some(json),
                Some("connection closed") => connection = Some(json),
                _ => {}
            }
        }
    }
    let (request, connection) = (request.unwrap(), connection.unwrap());
    assert_eq!(request["fields"]["method"], "GET");
    assert_eq!(request["fields"]["path"], "/page?x=1");
    assert_eq!(request["fields"]["status"], 200);
    assert_eq!(request["fields"]["backend"], "web");
    assert_eq!(request["fields"]["server"], web.addr.to_string());
    assert!(request["fields"]["duration_ms"].is_u64());
    assert_eq!(request["span"]["listener"], "logged", "{request}");
    assert!(request["span"]["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(connection["fields"]["verdict"], "http");
    assert_eq!(connection["fields"]["outcome"], "http");
    assert!(connection["fields"]["bytes_in"].as_u64().unwrap() > 0);
    sigterm(&child);
    assert!(child.wait().unwrap().success());
}

// Multi-threaded: the test blocks a thread in `wait()` while its echo backend
// must keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_connections_finish_within_the_grace_period() {
    let echo = tagged_echo("echo").await;
    let config = format!(
        "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\ndefault-backend = \"echo\"\n\
         [backends.echo]\nservers = [\"{echo}\"]\n[plugins.sniff]\nbuiltin = \"sniff\"\n"
    );
    // A connection that finishes during the grace period: exit code 0.
    let (mut child, _lines, addr) = spawn_binary(&config, &["--grace", "10s"]);
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut client, 5).await, b"echo\n");
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
    client.write_all(b"still served").await.unwrap();
    assert_eq!(read_exactly(&mut client, 23).await, b"SSH-2.0-x\r\nstill served");
    drop(client);
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // A connection that outlives the grace period: closed, exit code 3.
    let (mut child, _lines, addr) = spawn_binary(&config, &["--grace", "300ms"]);
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut client, 5).await, b"echo\n");
    sigterm(&child);
    assert_eq!(child.wait().unwrap().code(), Some(3));
    let mut rest = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await.expect("closed by the proxy");
}
