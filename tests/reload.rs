//! Live reload end to end: the real proxy started from a config file on
//! disk, with the file watcher on, while the config file is replaced under
//! continuous HTTP and WebSocket load by every method deployments use; and
//! listeners coming and going, spurious events and SIGHUP. The route plugin's
//! `.wasm` is in `reload_plugins.rs`, certificates in `reload_certs.rs`, the
//! shared harness in `reload_harness/`.

mod common;
mod reload_harness;

use common::http_backend::{HttpBackend, field, http_backend};
use common::*;
use hyper::StatusCode;
use reload_harness::load::{Load, fetch};
use reload_harness::{
    Latencies, METHODS, Method, Proxy, REPLACEMENTS, Replacer, TempDir, in_effect, stays, wait_status,
};
use sluice::Drained;
use sluice::reload::{ReloadStatus, Trigger};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::time::Instant;

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
    // The new version answers as soon as it is swapped in; the status is
    // published a moment later, after the watched files are hashed again.
    wait_status(&proxy.reload, "the fixed config clears the error", |s| s.last_error().is_none()).await;

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
