//! Backends end to end with three real servers on loopback: balancing,
//! sticky cookies, consistent hashing across proxy instances, health checks,
//! and the PROXY protocol in both directions.

mod common;

use common::http_backend::{HttpBackend, field, http_backend, http_backend_at};
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Body = Empty<bytes::Bytes>;

/// A proxy whose path plugin sends everything to backend `pool` (the given
/// servers) configured with `backend_extra` lines.
async fn pool_proxy(servers: &[&HttpBackend], backend_extra: &str) -> Proxy {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{}\"", s.addr)).collect();
    Proxy::start(&pool_config(&servers.join(", "), backend_extra)).await
}

/// The config of [`pool_proxy`], with `servers` as TOML array items.
fn pool_config(servers: &str, backend_extra: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"

[backends.pool]
servers = [{servers}]
connect-timeout = "500ms"
{backend_extra}

[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "pool"
"#
    )
}

/// One request on a new connection: status, body, Set-Cookie.
async fn request(addr: SocketAddr, headers: &[(&str, &str)]) -> (StatusCode, String, Option<String>) {
    let mut builder = Request::get("/").header("host", "pool.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(addr, builder.body(Full::default()).unwrap()).await
}

/// A request of any method and path, with an optional body.
async fn request_to(addr: SocketAddr, method: &str, path: &str, body: &str) -> (StatusCode, String, Option<String>) {
    let request = Request::builder().method(method).uri(path).header("host", "pool.test");
    send(addr, request.body(Full::new(bytes::Bytes::from(body.to_string()))).unwrap()).await
}

async fn send(addr: SocketAddr, request: Request<Full<bytes::Bytes>>) -> (StatusCode, String, Option<String>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
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

#[tokio::test]
async fn weights_shape_round_robin() {
    let servers = three().await;
    let entries = format!(
        "{{ address = \"{}\", weight = 3 }}, \"{}\", {{ address = \"{}\" }}",
        servers[0].addr, servers[1].addr, servers[2].addr
    );
    let proxy = Proxy::start(&pool_config(&entries, "")).await;
    for _ in 0..50 {
        assert_eq!(request(proxy.addr("main"), &[]).await.0, StatusCode::OK);
    }
    let counts: Vec<u64> = servers.iter().map(HttpBackend::requests).collect();
    assert_eq!(counts, [30, 10, 10], "weight 3 takes three of every five requests");
}

#[tokio::test]
async fn max_connections_queues_requests_and_refuses_beyond_the_queue() {
    let server = http_backend("only").await;
    let limits = "max-connections = 1\nqueue = 1\nqueue-timeout = \"1s\"";
    let proxy = pool_proxy(&[&server], limits).await;
    let addr = proxy.addr("main");
    // A takes the server's only slot for 600 ms; B waits in the queue for it.
    let a = tokio::spawn(async move { request_to(addr, "GET", "/delay/600", "").await });
    wait_for_requests(&server, 1).await;
    let b = tokio::spawn(async move { request_to(addr, "GET", "/b", "").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // C finds the slot taken and the queue full: refused at once, 503.
    let (status, body, _) = request_to(addr, "GET", "/c", "").await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "sluice: no server is available\n"));
    assert_eq!(server.requests(), 1, "B is still queued, C never reached the server");
    assert_eq!(a.await.unwrap().0, StatusCode::OK);
    let (status, body, _) = b.await.unwrap();
    assert_eq!(status, StatusCode::OK, "B got the slot when A finished");
    assert_eq!(field(&body, "path"), Some("/b"));

    // D holds the slot for longer than the queue timeout: E gives up after 1 s.
    let d = tokio::spawn(async move { request_to(addr, "GET", "/delay/3000", "").await });
    wait_for_requests(&server, 3).await;
    let waited = std::time::Instant::now();
    assert_eq!(request_to(addr, "GET", "/e", "").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(waited.elapsed() >= Duration::from_millis(900), "E waited in the queue first");
    assert_eq!(d.await.unwrap().0, StatusCode::OK);
    assert_eq!(server.requests(), 3, "E never reached the server");
}

async fn wait_for_requests(server: &HttpBackend, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.requests() < n {
        assert!(tokio::time::Instant::now() < deadline, "request {n} never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A server that reads a request and hangs up without answering, as a
/// crashing process would. Counts the connections it took.
async fn hang_up_backend() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = taken.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, taken)
}

async fn hang_up_proxy(hang_up: SocketAddr, good: SocketAddr, retry: bool) -> Proxy {
    Proxy::start(&pool_config(&format!("\"{hang_up}\", \"{good}\""), &format!("retry-idempotent = {retry}"))).await
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_another_server_only_when_configured() {
    let good = http_backend("good").await;
    let (hang_up, taken) = hang_up_backend().await;

    // Not configured: a request the server took and never answered is a 502.
    let strict = hang_up_proxy(hang_up, good.addr, false).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(request_to(strict.addr("main"), "GET", "/", "").await.0.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 502, 502], "round-robin over a good and a hanging-up server");

    // Configured: GETs always succeed, the hang-up is retried on the good server.
    let retrying = hang_up_proxy(hang_up, good.addr, true).await;
    let before = taken.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..6 {
        let (status, body, _) = request_to(retrying.addr("main"), "GET", "/", "").await;
        assert_eq!((status, backend_of(&body)), (StatusCode::OK, "good".to_string()));
    }
    assert_eq!(taken.load(std::sync::atomic::Ordering::Relaxed) - before, 3, "half went to the hang-up first");
    // A POST is never sent twice: the one that reaches the hang-up server fails.
    let mut posts = Vec::new();
    for _ in 0..2 {
        posts.push(request_to(retrying.addr("main"), "POST", "/", "pay once").await.0.as_u16());
    }
    posts.sort();
    assert_eq!(posts, [200, 502]);
}

#[tokio::test]
async fn a_raw_connection_goes_to_the_listener_fallback_when_its_backend_has_no_server() {
    let spare = tagged_echo("spare").await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap(); // nothing listens now
    let proxy = Proxy::start(&format!(
        "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\ndefault-backend = \"gone\"\n\
         fallback = {{ backend = \"spare\" }}\n\
         [backends.gone]\nservers = [\"{closed}\"]\n[backends.spare]\nservers = [\"{spare}\"]\n\
         [plugins.sniff]\nbuiltin = \"sniff\"\n"
    ))
    .await;
    let mut client = proxy.connect("main").await;
    client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
    let got = read_exactly(&mut client, b"spare\nSSH-2.0-x\r\n".len()).await;
    assert_eq!(String::from_utf8_lossy(&got), "spare\nSSH-2.0-x\r\n", "the fallback got every byte");
}

#[tokio::test]
async fn a_server_name_stands_for_every_address_it_resolves_to() {
    let server = http_backend("named").await;
    let pool = pool_config(&format!("\"localhost:{}\"", server.addr.port()), "resolve-interval = \"100ms\"");
    let proxy = Proxy::start(&format!("[admin]\nbind = \"127.0.0.1:0\"\n{pool}")).await;
    for _ in 0..6 {
        // localhost may also resolve to ::1, where nothing listens: that connect fails over.
        let (status, body, _) = request(proxy.addr("main"), &[]).await;
        assert_eq!((status, backend_of(&body)), (StatusCode::OK, "named".to_string()));
    }
    // Re-resolution every 100 ms keeps the same servers (and their state).
    tokio::time::sleep(Duration::from_millis(350)).await;
    let status = admin_get(proxy.admin_addr().unwrap(), "/status").await;
    let entry = format!("\"entry\": \"localhost:{}\"", server.addr.port());
    let addr = format!("\"addr\": \"{}\"", server.addr);
    assert!(status.contains(&entry) && status.contains(&addr), "{status}");
    assert_eq!(request(proxy.addr("main"), &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_sticky_client_waits_for_its_full_server_instead_of_moving() {
    let servers = [http_backend("one").await, http_backend("two").await];
    let limits = "max-connections = 1\nsticky-cookie = { name = \"srv\" }";
    let proxy = pool_proxy(&[&servers[0], &servers[1]], limits).await;
    let addr = proxy.addr("main");
    let (_, body, cookie) = request(addr, &[]).await;
    let (home, pair) = (backend_of(&body), cookie.unwrap().split(';').next().unwrap().to_string());
    // Fill the client's server for 500 ms with one of its own requests.
    let busy = {
        let pair = pair.clone();
        tokio::spawn(async move {
            let request = Request::get("/delay/500").header("host", "pool.test").header("cookie", pair.as_str());
            send(addr, request.body(Full::default()).unwrap()).await
        })
    };
    let total = || servers.iter().map(HttpBackend::requests).sum::<u64>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while total() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the busy request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The pinned client waits in the queue and lands on its own server; no new cookie.
    let (status, body, set) = request(addr, &[("cookie", &pair)]).await;
    assert_eq!((status, backend_of(&body), set), (StatusCode::OK, home.clone(), None));
    assert_eq!(busy.await.unwrap().0, StatusCode::OK);
}
