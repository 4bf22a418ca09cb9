//! The HTTP stage end to end: the real proxy with the default sniff and path
//! plugins, real hyper backends, real hyper and WebSocket clients.

mod common;

use bytes::Bytes;
use common::http_backend::{HttpBackend, field, hex, http_backend, pattern};
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

struct Setup {
    proxy: Proxy,
    web: HttpBackend,
    io: HttpBackend,
    api: HttpBackend,
}

async fn setup() -> Setup {
    let (web, io, api) = (http_backend("web").await, http_backend("io").await, http_backend("api").await);
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = Proxy::start(&format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"
header-timeout = "1s"
max-header-bytes = "16KiB"

[[listeners]]
name = "strict"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "strict"

[backends.web]
servers = ["{web}"]
[backends.io]
servers = ["{io}"]
[backends.api]
servers = ["{api}"]
forwarded-headers = ["x-forwarded-for", "forwarded"]
[backends.dead]
servers = ["{dead}"]
[backends.slow]
servers = ["{web}"]
response-timeout = "300ms"

[plugins.sniff]
builtin = "sniff"

[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"
[[plugins.path.settings.rules]]
host = "api.test"
backend = "api"
[[plugins.path.settings.rules]]
path-prefix = "/socket.io/"
backend = "io"
affinity = "client-ip"
[[plugins.path.settings.rules]]
path-prefix = "/dead/"
backend = "dead"
[[plugins.path.settings.rules]]
path-prefix = "/never"
backend = "slow"
[[plugins.path.settings.rules]]
path-prefix = "/old"
respond = {{ status = 301, headers = {{ location = "/new" }} }}

[plugins.strict]
builtin = "path"
[plugins.strict.settings]
[[plugins.strict.settings.rules]]
path-prefix = "/only/"
backend = "web"
"#,
        web = web.addr,
        io = io.addr,
        api = api.addr,
    ))
    .await;
    Setup { proxy, web, io, api }
}

type ClientBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An HTTP/1.1 client connection to the proxy.
async fn connect_h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<ClientBody> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection.with_upgrades());
    sender
}

fn get(path: &str, host: &str) -> Request<ClientBody> {
    Request::get(path).header("host", host).body(Empty::new().boxed()).unwrap()
}

async fn text(response: Response<hyper::body::Incoming>) -> (StatusCode, String) {
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn fetch(addr: SocketAddr, request: Request<ClientBody>) -> (StatusCode, String) {
    let mut sender = connect_h1(addr).await;
    text(sender.send_request(request).await.unwrap()).await
}

#[tokio::test]
async fn one_keep_alive_connection_reaches_a_backend_per_request() {
    let setup = setup().await;
    let mut sender = connect_h1(setup.proxy.addr("main")).await;
    for (path, backend) in [("/", "web"), ("/socket.io/?EIO=4&transport=polling", "io"), ("/app.js", "web")] {
        sender.ready().await.unwrap();
        let (status, body) = text(sender.send_request(get(path, "www.test")).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(field(&body, "backend"), Some(backend), "{path}: {body}");
        assert_eq!(field(&body, "path"), Some(path));
    }
    assert_eq!(setup.io.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn host_routing_ignores_case_and_port() {
    let setup = setup().await;
    for host in ["api.test", "API.test:8080"] {
        let (_, body) = fetch(setup.proxy.addr("main"), get("/v1/users", host)).await;
        assert_eq!(field(&body, "backend"), Some("api"), "{host}");
        assert_eq!(field(&body, "host"), Some(host), "Host is kept");
    }
    let (_, body) = fetch(setup.proxy.addr("main"), get("/v1/users", "other.test")).await;
    assert_eq!(field(&body, "backend"), Some("web"));
}

#[tokio::test]
async fn client_address_headers_reach_the_backend() {
    let setup = setup().await;
    let request = Request::get("/")
        .header("host", "www.test")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-secret")
        .header("x-secret", "hop-by-hop")
        .body(Empty::new().boxed())
        .unwrap();
    let (_, body) = fetch(setup.proxy.addr("main"), request).await;
    assert_eq!(field(&body, "x-forwarded-for"), Some("203.0.113.9, 127.0.0.1"), "appended, not replaced: {body}");
    assert_eq!(field(&body, "x-forwarded-proto"), Some("http"));
    assert_eq!(field(&body, "x-forwarded-host"), Some("www.test"));
    assert_eq!(field(&body, "x-secret"), None, "headers named by Connection are hop-by-hop");
    assert_eq!(field(&body, "forwarded"), None, "Forwarded is off for this backend");

    // The api backend asks for RFC 7239 Forwarded and no X-Forwarded-Proto.
    let (_, body) = fetch(setup.proxy.addr("main"), get("/", "api.test")).await;
    assert_eq!(field(&body, "forwarded"), Some("for=127.0.0.1;proto=http;host=\"api.test\""), "{body}");
    assert_eq!(field(&body, "x-forwarded-proto"), None);
}

#[tokio::test]
async fn websocket_messages_are_echoed_byte_exact() {
    let setup = setup().await;
    let stream = tokio::net::TcpStream::connect(setup.proxy.addr("main")).await.unwrap();
    let url = "ws://www.test/socket.io/?EIO=4&transport=websocket";
    let (mut socket, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    let big = pattern(1 << 20);
    socket.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap().into_data(), big);
    for i in 0..1000 {
        socket.send(Message::text(format!("message {i}"))).await.unwrap();
    }
    for i in 0..1000 {
        assert_eq!(socket.next().await.unwrap().unwrap().into_text().unwrap(), format!("message {i}"));
    }
    socket.close(None).await.unwrap();
    assert_eq!(setup.io.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A raw upgrade tunnel: bytes the client sends right behind its request and
/// bytes the server sends right behind its 101 (both buffered by hyper) come
/// through first, then 8 MiB echoed, then the client's FIN is passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_tunnel_carries_early_bytes_then_bulk_then_the_fin() {
    const SIZE: usize = 8 << 20;
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = backend.accept().await.unwrap();
        let mut head = Vec::new();
        let after_head = loop {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request head arrives");
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break head.split_off(end + 4);
            }
        };
        let mut answer =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nserver-first;"
                .to_vec();
        answer.extend_from_slice(&after_head);
        stream.write_all(&answer).await.unwrap();
        // Echo the rest, then pass the client's FIN back.
        let (mut read, mut write) = stream.split();
        tokio::io::copy(&mut read, &mut write).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let proxy = Proxy::start(&format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"

[backends.tunnel]
servers = ["{backend_addr}"]

[plugins.sniff]
builtin = "sniff"

[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "tunnel"
"#
    ))
    .await;

    let mut client = proxy.connect("main").await;
    client
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: www.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nclient-early;",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let head_end = loop {
        let mut buf = [0u8; 4096];
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "the 101 arrives");
        received.extend_from_slice(&buf[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    assert!(received.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&received));
    let early = b"server-first;client-early;";
    let mut tunnel_bytes = received.split_off(head_end);
    while tunnel_bytes.len() < early.len() {
        let mut buf = [0u8; 64];
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "the early bytes arrive");
        tunnel_bytes.extend_from_slice(&buf[..n]);
    }
    assert_eq!(tunnel_bytes, early);

    let bulk = pattern(SIZE);
    let (mut read, mut write) = client.into_split();
    let sent = bulk.clone();
    let send = tokio::spawn(async move {
        write.write_all(&sent).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    read.read_to_end(&mut echoed).await.unwrap();
    send.await.unwrap();
    assert_eq!(echoed.len(), SIZE);
    assert!(echoed == bulk, "the echo is byte exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_up_and_down_stream_through_with_bounded_memory() {
    const SIZE: usize = 100 << 20;
    let setup = setup().await;
    let rss_before = rss_bytes();

    // Upload: a streamed body the client never holds whole.
    let chunk = Bytes::from(pattern(64 << 10));
    let mut hasher = Sha256::new();
    for _ in 0..SIZE / chunk.len() {
        hasher.update(&chunk);
    }
    let expected = hex(&hasher.finalize());
    let frames = (0..SIZE / chunk.len()).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())));
    let body = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)));
    let request = Request::post("/upload").header("host", "www.test").body(body).unwrap();
    let (status, text_body) = fetch(setup.proxy.addr("main"), request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field(&text_body, "body-length"), Some(SIZE.to_string().as_str()));
    assert_eq!(field(&text_body, "body-sha256"), Some(expected.as_str()));

    // Download, hashed as it arrives.
    let mut sender = connect_h1(setup.proxy.addr("main")).await;
    let response = sender.send_request(get(&format!("/download/{SIZE}"), "www.test")).await.unwrap();
    let mut body = response.into_body();
    let (mut received, mut hasher) = (0usize, Sha256::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len();
            hasher.update(&data);
        }
    }
    let mut expected = Sha256::new();
    let pattern_chunk = pattern(64 << 10);
    for i in 0..SIZE.div_ceil(pattern_chunk.len()) {
        expected.update(&pattern_chunk[..pattern_chunk.len().min(SIZE - i * pattern_chunk.len())]);
    }
    assert_eq!(received, SIZE);
    assert_eq!(hex(&hasher.finalize()), hex(&expected.finalize()));

    // Proxy, backend and client share this process: had any of them held a
    // body whole, resident memory would have grown by at least 100 MiB.
    let growth = rss_bytes().saturating_sub(rss_before);
    assert!(growth < 48 << 20, "resident memory grew by {} MiB", growth >> 20);
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize =
        field(&status.replace(":\t", ": "), "VmRSS").unwrap().trim_end_matches(" kB").trim().parse().unwrap();
    kib << 10
}

#[tokio::test]
async fn chunked_and_pipelined_requests() {
    let setup = setup().await;
    let mut client = setup.proxy.connect("main").await;
    // A chunked upload, then two requests pipelined in the same write.
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
              GET /first HTTP/1.1\r\nHost: www.test\r\n\r\n\
              GET /second HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let all = String::from_utf8(read_to_end(&mut client).await).unwrap();
    let chunked = hex(&Sha256::digest(b"hello world"));
    assert!(all.contains(&format!("body-sha256: {chunked}")), "{all}");
    let (first, second) = (all.find("path: /first").unwrap(), all.find("path: /second").unwrap());
    assert!(first < second, "responses in request order");
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3);
}

#[tokio::test]
async fn http2_with_prior_knowledge() {
    let setup = setup().await;
    let stream = tokio::net::TcpStream::connect(setup.proxy.addr("main")).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    for (path, backend) in [("http://www.test/", "web"), ("http://www.test/socket.io/?EIO=4", "io")] {
        let request = Request::get(path).body(Full::new(Bytes::new())).unwrap();
        let (status, body) = text(sender.send_request(request).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(field(&body, "backend"), Some(backend), "{body}");
        assert_eq!(field(&body, "host"), Some("www.test"), "the authority becomes Host");
    }
}

#[tokio::test]
async fn every_error_has_its_status_and_a_short_body() {
    let setup = setup().await;
    let main = setup.proxy.addr("main");
    let (status, body) = fetch(setup.proxy.addr("strict"), get("/elsewhere", "www.test")).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, "sluice: no route for this request\n"));
    let (status, body) = fetch(main, get("/dead/x", "www.test")).await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_GATEWAY, "sluice: the backend could not be reached\n"));
    let (status, body) = fetch(main, get("/never", "www.test")).await;
    assert_eq!((status, body.as_str()), (StatusCode::GATEWAY_TIMEOUT, "sluice: the backend did not answer in time\n"));
    let (status, _) = fetch(main, get("/old/page", "www.test")).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);

    let connect = Request::connect("www.test:443").body(Empty::new().boxed()).unwrap();
    assert_eq!(fetch(main, connect).await.0, StatusCode::METHOD_NOT_ALLOWED);

    // A head over max-header-bytes: 431.
    let mut client = setup.proxy.connect("main").await;
    let huge = format!("GET / HTTP/1.1\r\nHost: www.test\r\nX-Big: {}\r\n\r\n", "a".repeat(32 << 10));
    let _ = client.write_all(huge.as_bytes()).await;
    let answer = String::from_utf8_lossy(&read_to_end(&mut client).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // A malformed head: 400.
    let mut client = setup.proxy.connect("main").await;
    client.write_all(b"GET / HTTP/1.1\r\nHost www.test\r\n\r\n").await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_end(&mut client).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // A head that never completes is cut off at header-timeout (1s here).
    let mut client = setup.proxy.connect("main").await;
    client.write_all(b"GET / HTTP/1.1\r\nHost: www.test\r\n").await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_end(&mut client).await).into_owned();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // The connection that saw a 502 is still usable: errors close only when they must.
    let mut sender = connect_h1(main).await;
    assert_eq!(text(sender.send_request(get("/dead/1", "www.test")).await.unwrap()).await.0, StatusCode::BAD_GATEWAY);
    sender.ready().await.unwrap();
    assert_eq!(text(sender.send_request(get("/ok", "www.test")).await.unwrap()).await.0, StatusCode::OK);
    let _ = (&setup.web, &setup.api);
}

#[tokio::test]
async fn backend_connections_are_reused() {
    let setup = setup().await;
    let mut first = connect_h1(setup.proxy.addr("main")).await;
    let mut second = connect_h1(setup.proxy.addr("main")).await;
    for _ in 0..5 {
        for sender in [&mut first, &mut second] {
            sender.ready().await.unwrap();
            let (_, body) = text(sender.send_request(get("/", "www.test")).await.unwrap()).await;
            assert_eq!(field(&body, "backend"), Some("web"));
        }
    }
    // Ten sequential requests from two client connections: one pooled
    // backend connection per worker served them all (the two client
    // connections may land on different workers, which share no pool).
    let seen = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(seen(&setup.web.requests), 10);
    let workers = sluice::workers::default_count().min(2) as u64;
    assert!((1..=workers).contains(&seen(&setup.web.connections)), "{}", seen(&setup.web.connections));
}
