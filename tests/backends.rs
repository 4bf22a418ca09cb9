//! Backends end to end with three real servers on loopback: balancing,
//! sticky cookies, consistent hashing across proxy instances, health checks,
//! and the PROXY protocol in both directions.

mod common;

use common::http_backend::{HttpBackend, field, http_backend, http_backend_at};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Body = Empty<bytes::Bytes>;

/// A proxy whose path plugin sends everything to backend `pool` (three
/// servers) configured with `backend_extra` lines.
async fn pool_proxy(servers: &[&HttpBackend], backend_extra: &str) -> Proxy {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{}\"", s.addr)).collect();
    Proxy::start(&format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"

[backends.pool]
servers = [{}]
connect-timeout = "500ms"
{backend_extra}

[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "pool"
"#,
        servers.join(", ")
    ))
    .await
}

/// One request on a new connection: status, body, Set-Cookie.
async fn request(addr: SocketAddr, headers: &[(&str, &str)]) -> (StatusCode, String, Option<String>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut builder = Request::get("/").header("host", "pool.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response =
        tokio::time::timeout(Duration::from_secs(10), sender.send_request(builder.body(Body::new()).unwrap()))
            .await
            .expect("no client hangs")
            .unwrap();
    let status = response.status();
    let cookie = response.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), cookie)
}

fn backend_of(body: &str) -> String {
    field(body, "backend").unwrap_or("none").to_string()
}

async fn three() -> [HttpBackend; 3] {
    [http_backend("one").await, http_backend("two").await, http_backend("three").await]
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let servers = three().await;
    let proxy = pool_proxy(&[&servers[0], &servers[1], &servers[2]], "").await;
    for _ in 0..30 {
        assert_eq!(request(proxy.addr("main"), &[]).await.0, StatusCode::OK);
    }
    let counts: Vec<u64> = servers.iter().map(HttpBackend::requests).collect();
    assert_eq!(counts, [10, 10, 10]);
}

#[tokio::test]
async fn least_connections_avoids_busy_servers() {
    let servers = three().await;
    let proxy = pool_proxy(&[&servers[0], &servers[1], &servers[2]], "balance = \"least-connections\"").await;
    // Two requests that never get an answer keep two servers busy.
    let mut hanging = Vec::new();
    for _ in 0..2 {
        let stream = tokio::net::TcpStream::connect(proxy.addr("main")).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let held = Request::get("/never").header("host", "pool.test").body(Body::new()).unwrap();
        hanging.push(tokio::spawn(async move { sender.send_request(held).await }));
        // Wait until the held request reached a server before sending the next.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while servers.iter().map(HttpBackend::requests).sum::<u64>() < hanging.len() as u64 {
            assert!(tokio::time::Instant::now() < deadline, "the held request never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let idle = servers.iter().position(|s| s.requests() == 0).expect("one server is idle");
    for _ in 0..12 {
        let (_, body, _) = request(proxy.addr("main"), &[]).await;
        assert_eq!(backend_of(&body), ["one", "two", "three"][idle], "the least-loaded server takes the work");
    }
}

#[tokio::test]
async fn sticky_cookie_pins_a_client_and_moves_it_when_its_server_dies() {
    let servers = three().await;
    let sticky = "sticky-cookie = { name = \"srv\", same-site = \"Lax\" }";
    let proxy = pool_proxy(&[&servers[0], &servers[1], &servers[2]], sticky).await;
    let (_, body, cookie) = request(proxy.addr("main"), &[]).await;
    let first = backend_of(&body);
    let cookie = cookie.expect("the first response sets the cookie");
    assert!(cookie.starts_with("srv=") && cookie.contains("Path=/") && cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    for _ in 0..100 {
        let (status, body, set) = request(proxy.addr("main"), &[("cookie", &pair)]).await;
        assert_eq!((status, backend_of(&body)), (StatusCode::OK, first.clone()));
        assert_eq!(set, None, "a valid cookie is not set again");
    }
    // Kill the pinned server: the request goes elsewhere, without an error,
    // and the cookie is rewritten to the new server.
    let index = ["one", "two", "three"].iter().position(|n| *n == first).unwrap();
    servers[index].kill();
    let (status, body, set) = request(proxy.addr("main"), &[("cookie", &pair)]).await;
    let moved = backend_of(&body);
    assert_eq!(status, StatusCode::OK);
    assert_ne!(moved, first);
    let new_pair = set.expect("the cookie is rewritten").split(';').next().unwrap().to_string();
    assert_ne!(new_pair, pair);
    for _ in 0..20 {
        let (_, body, _) = request(proxy.addr("main"), &[("cookie", &new_pair)]).await;
        assert_eq!(backend_of(&body), moved);
    }
}

#[tokio::test]
async fn two_proxies_choose_the_same_server_for_a_key() {
    let servers = three().await;
    let refs = [&servers[0], &servers[1], &servers[2]];
    let hash = "hash-key = { header = \"x-user\" }";
    let (a, b) = (pool_proxy(&refs, hash).await, pool_proxy(&refs, hash).await);
    let mut seen = std::collections::HashSet::new();
    for user in 0..30 {
        let key = format!("user-{user}");
        let (_, from_a, _) = request(a.addr("main"), &[("x-user", &key)]).await;
        let (_, from_b, _) = request(b.addr("main"), &[("x-user", &key)]).await;
        let (_, again, _) = request(a.addr("main"), &[("x-user", &key)]).await;
        assert_eq!(backend_of(&from_a), backend_of(&from_b), "{key}");
        assert_eq!(backend_of(&from_a), backend_of(&again), "{key}");
        seen.insert(backend_of(&from_a));
    }
    assert_eq!(seen.len(), 3, "keys spread over every server");
}

#[tokio::test]
async fn health_checks_take_a_dead_server_out_and_bring_it_back() {
    let servers = three().await;
    let check =
        "health-check = { interval = \"100ms\", timeout = \"200ms\", rise = 2, fall = 2, http-path = \"/health\" }";
    let proxy = pool_proxy(&[&servers[0], &servers[1], &servers[2]], check).await;
    let dead_addr = servers[1].addr;
    servers[1].kill();
    // Every request succeeds (failed connects fail over); within a few check
    // intervals the dead server is out of rotation.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "the dead server was never taken out");
        let (status, _, _) = request(proxy.addr("main"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        // Out of rotation: six requests in a row all land on the others.
        let before = servers[0].requests() + servers[2].requests();
        for _ in 0..6 {
            assert_eq!(request(proxy.addr("main"), &[]).await.0, StatusCode::OK);
        }
        if servers[0].requests() + servers[2].requests() - before == 6 {
            break;
        }
    }
    // Bring it back on the same port: it receives traffic again.
    let revived = http_backend_at("two", &dead_addr.to_string()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while revived.requests() == 0 || revived.requests() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the revived server got no traffic");
        assert_eq!(request(proxy.addr("main"), &[]).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_server_down_gives_503() {
    let servers = three().await;
    let check = "health-check = { interval = \"50ms\", timeout = \"100ms\", rise = 1, fall = 1 }";
    let proxy = pool_proxy(&[&servers[0], &servers[1], &servers[2]], check).await;
    for server in &servers {
        server.kill();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body, _) = request(proxy.addr("main"), &[]).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(body, "sluice: no server is available\n");
            break;
        }
        assert_eq!(status, StatusCode::BAD_GATEWAY, "before the checks notice: refused connects");
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw backend that reports the first `n` bytes it receives.
async fn capture_backend(n: usize) -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut got = vec![0u8; n];
        stream.read_exact(&mut got).await.unwrap();
        let _ = tx.send(got);
    });
    (addr, rx)
}

async fn raw_proxy(backend: SocketAddr, version: &str) -> Proxy {
    Proxy::start(&format!(
        "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\ndefault-backend = \"b\"\n\
         [backends.b]\nservers = [\"{backend}\"]\nproxy-protocol = \"{version}\"\n\
         [plugins.sniff]\nbuiltin = \"sniff\"\n"
    ))
    .await
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_bytes_sent_to_the_backend() {
    let payload = b"SSH-2.0-x\r\n";
    // v1: a text line before the client's bytes.
    let client_line_len =
        |c: SocketAddr, p: SocketAddr| format!("PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n", c.port(), p.port());
    let listener_port_line = {
        let (backend, got) = {
            // The v1 line's length depends on the port numbers: read up to the payload.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut all = Vec::new();
                let mut buf = [0u8; 256];
                while !all.ends_with(b"SSH-2.0-x\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    all.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(all);
            });
            (addr, rx)
        };
        let proxy = raw_proxy(backend, "v1").await;
        let mut client = proxy.connect("main").await;
        client.write_all(payload).await.unwrap();
        let received = got.await.unwrap();
        let mut expected = client_line_len(client.local_addr().unwrap(), proxy.addr("main")).into_bytes();
        expected.extend_from_slice(payload);
        assert_eq!(String::from_utf8_lossy(&received), String::from_utf8_lossy(&expected));
        received
    };
    assert!(listener_port_line.starts_with(b"PROXY TCP4 "));

    // v2: the binary header, 28 bytes for TCP over IPv4, then the client's bytes.
    let (backend, got) = capture_backend(28 + payload.len()).await;
    let proxy = raw_proxy(backend, "v2").await;
    let mut client = proxy.connect("main").await;
    client.write_all(payload).await.unwrap();
    let received = got.await.unwrap();
    let (c, p) = (client.local_addr().unwrap(), proxy.addr("main"));
    let mut expected = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0x00, 12, 127, 0, 0, 1, 127, 0, 0, 1]);
    expected.extend_from_slice(&c.port().to_be_bytes());
    expected.extend_from_slice(&p.port().to_be_bytes());
    expected.extend_from_slice(payload);
    assert_eq!(received, expected);
}

async fn trusting_proxy(web: SocketAddr, trusted: &str) -> Proxy {
    Proxy::start(&format!(
        "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\nroute = \"path\"\n\
         proxy-protocol-from = [\"{trusted}\"]\n\
         [backends.web]\nservers = [\"{web}\"]\n\
         [plugins.sniff]\nbuiltin = \"sniff\"\n[plugins.path]\nbuiltin = \"path\"\n\
         [plugins.path.settings]\ndefault-backend = \"web\"\n"
    ))
    .await
}

#[tokio::test]
async fn proxy_protocol_accepted_from_trusted_networks_only() {
    let web = http_backend("web").await;
    let proxy = trusting_proxy(web.addr, "127.0.0.0/8").await;
    let mut client = proxy.connect("main").await;
    client
        .write_all(b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 80\r\nGET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_end(&mut client).await).unwrap();
    assert!(answer.contains("x-forwarded-for: 203.0.113.7\n"), "the real client address: {answer}");

    // v2 too, with the client's first bytes in the same segment.
    let mut client = proxy.connect("main").await;
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0x00, 12, 192, 0, 2, 9, 198, 51, 100, 1, 0x9c, 0x40, 0, 80]);
    v2.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    client.write_all(&v2).await.unwrap();
    let answer = String::from_utf8(read_to_end(&mut client).await).unwrap();
    assert!(answer.contains("x-forwarded-for: 192.0.2.9\n"), "{answer}");

    // From an untrusted address (this test connects from 127.0.0.1): refused.
    let strict = trusting_proxy(web.addr, "10.0.0.0/8").await;
    let mut client = strict.connect("main").await;
    let _ = client.write_all(b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 80\r\nGET / HTTP/1.1\r\n\r\n").await;
    assert!(closed_without_data(&mut client).await);
    // A trusted source that sends no PROXY header: refused too.
    let mut client = proxy.connect("main").await;
    client.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await.unwrap();
    assert!(closed_without_data(&mut client).await);
}
