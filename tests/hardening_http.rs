//! The HTTP-stage findings of the hardening battery (issue 14), each driven
//! by real clients against the real proxy and real backends that record what
//! they receive: Host confusion, HTTP/2 timeouts, half-close, near-HTTP
//! request lines, malformed chunked bodies, and HTTP/2 access-log spans.

mod common;

use bytes::Bytes;
use common::http_backend::{HttpBackend, field, http_backend, pattern};
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long anything the proxy must close may take at most: far above the
/// configured 300 ms, so only "never" fails.
const GENEROUS: Duration = Duration::from_secs(10);

/// A raw TCP backend that records every byte it receives and never answers.
struct RawBackend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicU64>,
}

impl RawBackend {
    async fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let (sink, count) = (received.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        RawBackend { addr, received, connections }
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

struct Setup {
    proxy: Proxy,
    web: HttpBackend,
    internal: HttpBackend,
    other: RawBackend,
}

impl Setup {
    fn addr(&self) -> SocketAddr {
        self.proxy.addr("main")
    }

    /// Requests seen by the two HTTP backends together.
    fn routed(&self) -> u64 {
        self.web.requests() + self.internal.requests()
    }
}

async fn setup() -> Setup {
    let (web, internal, other) = (http_backend("web").await, http_backend("internal").await, RawBackend::start().await);
    let proxy = Proxy::start(&format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"
default-backend = "other"
header-timeout = "300ms"

[backends.web]
servers = ["{web}"]
[backends.internal]
servers = ["{internal}"]
[backends.other]
servers = ["{other}"]

[plugins.sniff]
builtin = "sniff"

[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"
[[plugins.path.settings.rules]]
host = "internal.example"
backend = "internal"
"#,
        web = web.addr,
        internal = internal.addr,
        other = other.addr,
    ))
    .await;
    Setup { proxy, web, internal, other }
}

/// Send `request` raw, half-close, and read the whole answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(request).await.unwrap();
    String::from_utf8_lossy(&read_to_end(&mut client).await).into_owned()
}

fn status_of(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

// ---------------------------------------------------------------- finding 1

#[tokio::test]
async fn two_host_headers_are_a_400_and_reach_no_backend() {
    let setup = setup().await;
    let answer = exchange(
        setup.addr(),
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), "400", "{answer}");
    // The same header twice, and in different case.
    let answer =
        exchange(setup.addr(), b"GET /x HTTP/1.1\r\nhost: a.example\r\nHOST: a.example\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(status_of(&answer), "400", "{answer}");
    assert_eq!(setup.routed(), 0, "nothing was routed");
}

/// An HTTP/2 client connection to the proxy (the h2 crate, which sends the
/// header fields it is given as they are).
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// Send a bodiless request over HTTP/2; the status and body.
async fn h2_send(sender: &mut h2::client::SendRequest<Bytes>, request: Request<()>) -> (StatusCode, String) {
    let sender = sender.clone();
    let mut sender = sender.ready().await.unwrap();
    let (response, _) = sender.send_request(request, true).unwrap();
    let response = tokio::time::timeout(GENEROUS, response).await.expect("an HTTP/2 answer").unwrap();
    let status = response.status();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test]
async fn two_host_fields_over_http2_are_a_400() {
    let setup = setup().await;
    let mut sender = h2_client(setup.addr()).await;
    let request = Request::get("http://a.example/x")
        .header("host", "a.example")
        .header("host", "internal.example")
        .body(())
        .unwrap();
    let (status, body) = h2_send(&mut sender, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(setup.routed(), 0, "nothing was routed");
}

// ---------------------------------------------------------------- finding 2

#[tokio::test]
async fn an_absolute_form_target_replaces_host_for_routing_and_forwarding() {
    let setup = setup().await;
    let answer = exchange(
        setup.addr(),
        b"GET http://public.example/x HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(field(&answer, "backend"), Some("web"), "routed by the target's authority: {answer}");
    assert_eq!(field(&answer, "host"), Some("public.example"), "the backend sees the routed host: {answer}");
    assert_eq!(field(&answer, "x-forwarded-host"), Some("public.example"), "{answer}");
    assert_eq!(setup.internal.requests(), 0);

    // The other way round: the target names the internal host.
    let answer = exchange(
        setup.addr(),
        b"GET http://internal.example/x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(field(&answer, "backend"), Some("internal"), "{answer}");
    assert_eq!(field(&answer, "host"), Some("internal.example"), "{answer}");
    assert_eq!(field(&answer, "x-forwarded-host"), Some("internal.example"), "{answer}");
}

#[tokio::test]
async fn http2_authority_and_a_different_host_field_are_a_400() {
    let setup = setup().await;
    let mut sender = h2_client(setup.addr()).await;
    let request = Request::get("http://public.example/x").header("host", "internal.example").body(()).unwrap();
    let (status, body) = h2_send(&mut sender, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(setup.routed(), 0, "nothing was routed");

    // The same entity spelled differently (case, default port) is one host:
    // routed and forwarded as the :authority says.
    let request = Request::get("http://Internal.Example/x").header("host", "internal.example:80").body(()).unwrap();
    let (status, body) = h2_send(&mut sender, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(field(&body, "backend"), Some("internal"), "{body}");
    assert_eq!(field(&body, "host"), Some("Internal.Example"), "{body}");
    assert_eq!(field(&body, "x-forwarded-host"), Some("Internal.Example"), "{body}");
}

#[tokio::test]
async fn userinfo_is_never_forwarded() {
    let setup = setup().await;
    for request in [
        &b"GET http://user:pw@public.example/x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n"[..],
        b"GET /x HTTP/1.1\r\nHost: user:pw@public.example\r\nConnection: close\r\n\r\n",
    ] {
        let answer = exchange(setup.addr(), request).await;
        assert_eq!(status_of(&answer), "400", "{answer}");
    }
    let mut sender = h2_client(setup.addr()).await;
    let request = Request::get("http://user:pw@public.example/x").body(()).unwrap();
    let (status, body) = h2_send(&mut sender, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(setup.routed(), 0, "nothing was routed");
}

#[tokio::test]
async fn a_missing_host_is_a_400_on_http11_only() {
    let setup = setup().await;
    let answer = exchange(setup.addr(), b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), "400", "{answer}");
    let answer = exchange(setup.addr(), b"GET /x HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), "400", "an empty Host names no host: {answer}");
    assert_eq!(setup.routed(), 0);
    let answer = exchange(setup.addr(), b"GET /x HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&answer), "200", "HTTP/1.0 needs no Host: {answer}");
    assert_eq!(field(&answer, "backend"), Some("web"), "{answer}");
}

// ---------------------------------------------------------------- finding 3

#[tokio::test]
async fn an_http2_connection_that_sends_only_the_preface_is_closed() {
    let setup = setup().await;
    let mut client = setup.proxy.connect("main").await;
    client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    closed_within(&mut client, GENEROUS).await;
}

#[tokio::test]
async fn http2_headers_without_end_headers_are_closed() {
    let setup = setup().await;
    let mut client = setup.proxy.connect("main").await;
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&frame(0x4, 0, 0, &[])); // SETTINGS, empty
    // HEADERS on stream 1 with END_STREAM but not END_HEADERS: `:method GET`,
    // then a CONTINUATION that never comes.
    bytes.extend_from_slice(&frame(0x1, 0x1, 1, &[0x82]));
    client.write_all(&bytes).await.unwrap();
    closed_within(&mut client, GENEROUS).await;
    assert_eq!(setup.routed(), 0);
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_but_a_slow_request_is_not() {
    let setup = setup().await;
    let stream = TcpStream::connect(setup.addr()).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    // A response that takes longer than header-timeout is not cut off...
    let request = Request::get("http://www.test/delay/1000").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(field(&String::from_utf8_lossy(&body), "path"), Some("/delay/1000"));
    // ... but once idle, the connection is closed.
    tokio::time::timeout(GENEROUS, connection).await.expect("the idle connection was closed").unwrap().ok();
    assert_eq!(setup.web.requests(), 1);
}

/// An HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Wait (reading and discarding) until the proxy closes the connection.
async fn closed_within(client: &mut TcpStream, bound: Duration) {
    let drained = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the proxy kept the connection open for {bound:?}");
}

// ---------------------------------------------------------------- finding 7

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_gets_the_whole_download() {
    const SIZE: usize = 4 << 20;
    let setup = setup().await;
    let mut client = setup.proxy.connect("main").await;
    let request = format!("GET /download/{SIZE} HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    client.shutdown().await.unwrap(); // FIN: nothing more from the client
    let answer = read_to_end(&mut client).await;
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = &answer[head_end..];
    assert_eq!(body.len(), SIZE, "the whole body arrived");
    // `/download` sends the 64 KiB pattern over and over.
    let chunk = pattern(64 << 10);
    assert!(body.chunks(chunk.len()).all(|c| c == &chunk[..c.len()]), "byte exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_gets_the_answer_to_its_upload() {
    const SIZE: usize = 1 << 20;
    let setup = setup().await;
    let mut client = setup.proxy.connect("main").await;
    let head = format!("POST /upload HTTP/1.1\r\nHost: www.test\r\nContent-Length: {SIZE}\r\n\r\n");
    let body = pattern(SIZE);
    let (mut read, mut write) = client.split();
    let send = async {
        write.write_all(head.as_bytes()).await.unwrap();
        write.write_all(&body).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let mut answer = Vec::new();
    let receive = tokio::time::timeout(GENEROUS, read.read_to_end(&mut answer));
    let ((), received) = tokio::join!(send, receive);
    received.expect("the answer arrived").unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(field(&answer, "body-length"), Some(SIZE.to_string().as_str()), "{answer}");
}

#[tokio::test]
async fn pipelined_requests_before_a_half_close_are_all_answered() {
    let setup = setup().await;
    let mut client = setup.proxy.connect("main").await;
    client
        .write_all(b"GET /first HTTP/1.1\r\nHost: www.test\r\n\r\nGET /second HTTP/1.1\r\nHost: www.test\r\n\r\n")
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    // Both answered in order, then the proxy closes its side too.
    let answer = String::from_utf8_lossy(&read_to_end(&mut client).await).into_owned();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    let (first, second) = (answer.find("path: /first").unwrap(), answer.find("path: /second").unwrap());
    assert!(first < second, "{answer}");
}

// ---------------------------------------------------------------- finding 8

#[tokio::test]
async fn near_http_request_lines_reach_the_http_stage() {
    let setup = setup().await;
    // Lowercase methods are legal (methods are case-sensitive tokens):
    // routed like any request, with the client-address headers.
    let answer = exchange(setup.addr(), b"get /x HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(field(&answer, "method"), Some("get"), "{answer}");
    assert_eq!(field(&answer, "x-forwarded-for"), Some("127.0.0.1"), "{answer}");
    // Malformed lines: the HTTP stage answers them itself.
    for line in [
        &b"GET  /x HTTP/1.1"[..],
        b"GET\t/x HTTP/1.1",
        b"GET /x\tHTTP/1.1",
        b"GET /x HTTP/1.2",
        b"GET /x HTTP/2.0",
        b"GET /x  HTTP/1.1",
        b"GET /a b HTTP/1.1",
    ] {
        let mut request = line.to_vec();
        request.extend_from_slice(b"\r\nHost: www.test\r\nConnection: close\r\n\r\n");
        let answer = exchange(setup.addr(), &request).await;
        assert_eq!(status_of(&answer), "400", "{}: {answer}", String::from_utf8_lossy(line));
    }
    assert_eq!(setup.other.connections(), 0, "nothing was relayed raw: {:?}", setup.other.received.lock().unwrap());
}

// ---------------------------------------------------------------- finding 9

#[tokio::test]
async fn a_malformed_chunked_body_is_a_400() {
    let setup = setup().await;
    let answer = exchange(
        setup.addr(),
        b"POST /upload HTTP/1.1\r\nHost: www.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nxx\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), "400", "{answer}");
}

#[tokio::test]
async fn http2_access_log_lines_carry_the_connection_span() {
    log_capture::install();
    let setup = setup().await;
    let access_line = |probe: &str| {
        let text = log_capture::text();
        // Written when the handler returns, before the client has the response.
        let line = text.lines().find(|l| l.contains(probe)).map(str::to_string);
        line.unwrap_or_else(|| panic!("no access line for {probe}: {text}"))
    };
    // HTTP/1: the line is in the connection's span (the reference).
    let answer =
        exchange(setup.addr(), b"GET /h1-span-probe HTTP/1.1\r\nHost: www.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), "200");
    let line = access_line("/h1-span-probe");
    assert!(line.contains("conn{") && line.contains("client=127.0.0.1:"), "no connection span: {line}");
    // HTTP/2: the same.
    let mut sender = h2_client(setup.addr()).await;
    let request = Request::get("http://www.test/h2-span-probe").body(()).unwrap();
    assert_eq!(h2_send(&mut sender, request).await.0, StatusCode::OK);
    let line = access_line("/h2-span-probe");
    assert!(line.contains("conn{") && line.contains("client=127.0.0.1:"), "no connection span: {line}");
}
