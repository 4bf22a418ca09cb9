//! A real HTTP/1.1 backend (hyper) for the tests. It describes each request
//! it receives in its response body, one `key: value` per line, and has a
//! few special paths:
//!
//! - `/download/N` streams N bytes of a pattern;
//! - `/upload` reads the body and answers with its length and SHA-256;
//! - `/never` never answers;
//! - `/delay/MS` answers after MS milliseconds;
//! - an `Upgrade: websocket` request becomes a WebSocket echo server.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A running backend: its address and how many requests it has seen.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
    /// Cancel to kill the server: it stops listening and drops every connection.
    pub stop: tokio_util::sync::CancellationToken,
}

impl HttpBackend {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Kill the server, as a crashed node would be.
    pub fn kill(&self) {
        self.stop.cancel();
    }
}

pub async fn http_backend(name: &'static str) -> HttpBackend {
    http_backend_at(name, "127.0.0.1:0").await
}

/// A backend on a given address (to bring a killed server back on its port).
pub async fn http_backend_at(name: &'static str, addr: &str) -> HttpBackend {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let (counter, accepted) = (requests.clone(), connections.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = stopped.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => return,
                },
            };
            accepted.fetch_add(1, Ordering::Relaxed);
            let (counter, stopped) = (counter.clone(), stopped.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    answer(name, request)
                });
                let serve = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::select! {
                    _ = serve => {},
                    () = stopped.cancelled() => {},
                }
            });
        }
    });
    HttpBackend { addr, requests, connections, stop }
}

async fn answer(name: &'static str, mut request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    if request.headers().get("upgrade").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        return Ok(websocket_echo(&mut request));
    }
    if let Some(n) = path.strip_prefix("/download/") {
        return Ok(download(n.parse().unwrap()));
    }
    if path == "/never" {
        std::future::pending::<()>().await;
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(std::time::Duration::from_millis(ms.parse().unwrap())).await;
    }
    let mut text = format!("backend: {name}\nmethod: {}\npath: {}\n", request.method(), request.uri());
    for (header, value) in request.headers() {
        text.push_str(&format!("{header}: {}\n", String::from_utf8_lossy(value.as_bytes())));
    }
    let mut body = request.into_body();
    let (mut length, mut hasher) = (0usize, Sha256::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            length += data.len();
            hasher.update(&data);
        }
    }
    text.push_str(&format!("body-length: {length}\nbody-sha256: {}\n", hex(&hasher.finalize())));
    Ok(Response::new(Full::new(Bytes::from(text)).boxed()))
}

fn download(size: usize) -> Response<Body> {
    let chunk = Bytes::from(pattern(64 << 10));
    let chunks = (0..size.div_ceil(chunk.len())).map(move |i| {
        let n = chunk.len().min(size - i * chunk.len());
        Ok::<_, Infallible>(Frame::data(chunk.slice(..n)))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks))));
    response.headers_mut().insert("content-length", size.into());
    response
}

/// The bytes `/download` sends, chunk by chunk.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn websocket_echo(request: &mut Request<Incoming>) -> Response<Body> {
    let key = request.headers().get("sec-websocket-key").cloned().expect("a websocket key");
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let upgraded = upgrade.await.expect("upgrade");
        let mut socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert("connection", "upgrade".parse().unwrap());
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert("sec-websocket-accept", derive_accept_key(key.as_bytes()).parse().unwrap());
    response
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of `key` in a backend's description, if present.
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(": "))
}
