//! The clients of the live-reload tests: one-shot HTTP requests, and continuous
//! HTTP and WebSocket load that records every failure.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

pub type ClientBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn get(path: &str) -> Request<ClientBody> {
    Request::get(path).header("host", "reload.test").body(Empty::new().boxed()).unwrap()
}

/// One request on a new connection: status and body, or what went wrong.
pub async fn fetch(addr: SocketAddr, path: &str) -> Result<(StatusCode, String), String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        let response = sender.send_request(get(path)).await.map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.unwrap_or_else(|_| Err("timed out".to_string()))
}

/// Continuous load until stopped: HTTP requests (new connections and a
/// keep-alive connection) and WebSockets echoing every 50 ms. Every failure
/// is recorded with what went wrong.
pub struct Load {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    echoes: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Upper bound on what each load task does, so no loop can run away.
const MAX_LOAD_ITERATIONS: usize = 100_000;

impl Load {
    /// `check` says whether a response to `path` is one of the expected ones.
    pub async fn start(
        addr: SocketAddr,
        path: &'static str,
        check: fn(StatusCode, &str) -> bool,
        websockets: usize,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let echoes = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();

        // Two clients opening a new connection per request.
        for _ in 0..2 {
            let (stop, requests, failures) = (stop.clone(), requests.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..MAX_LOAD_ITERATIONS {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match fetch(addr, path).await {
                        Ok((status, body)) if check(status, &body) => {}
                        Ok((status, body)) => failures.lock().unwrap().push(format!("unexpected {status}: {body}")),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }));
        }
        // One keep-alive client (it keeps the version its connection started with).
        {
            let (stop, requests, failures) = (stop.clone(), requests.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake::<_, ClientBody>(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(connection);
                for _ in 0..MAX_LOAD_ITERATIONS {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = async {
                        sender.ready().await.map_err(|e| format!("keep-alive ready: {e}"))?;
                        let response =
                            sender.send_request(get(path)).await.map_err(|e| format!("keep-alive request: {e}"))?;
                        let status = response.status();
                        let body = response.into_body().collect().await.map_err(|e| format!("keep-alive: {e}"))?;
                        Ok::<_, String>((status, String::from_utf8_lossy(&body.to_bytes()).into_owned()))
                    };
                    match tokio::time::timeout(Duration::from_secs(5), result).await {
                        Ok(Ok((status, body))) if check(status, &body) => {}
                        Ok(Ok((status, body))) => {
                            failures.lock().unwrap().push(format!("keep-alive: unexpected {status}: {body}"))
                        }
                        Ok(Err(e)) => {
                            failures.lock().unwrap().push(e);
                            break;
                        }
                        Err(_) => {
                            failures.lock().unwrap().push("keep-alive: timed out".to_string());
                            break;
                        }
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }));
        }
        // WebSockets, open for the whole test, each echoing every 50 ms.
        for n in 0..websockets {
            let mut socket = websocket(addr).await;
            let (stop, echoes, failures) = (stop.clone(), echoes.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..MAX_LOAD_ITERATIONS {
                    let last = stop.load(Ordering::Relaxed);
                    let text = format!("socket {n} message {i}");
                    let echo = async {
                        socket.send(Message::text(text.clone())).await.map_err(|e| format!("ws send: {e}"))?;
                        match socket.next().await {
                            Some(Ok(Message::Text(echoed))) if echoed.as_str() == text => Ok(()),
                            other => Err(format!("ws {n}: expected the echo of {text:?}, got {other:?}")),
                        }
                    };
                    match tokio::time::timeout(Duration::from_secs(5), echo).await {
                        Ok(Ok(())) => echoes.fetch_add(1, Ordering::Relaxed),
                        Ok(Err(e)) => return failures.lock().unwrap().push(e),
                        Err(_) => return failures.lock().unwrap().push(format!("ws {n}: echo timed out")),
                    };
                    if last {
                        // One more echo after the stop signal proves it is still open.
                        let _ = socket.close(None).await;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        Load { stop, requests, echoes, failures, tasks }
    }

    /// Stop, and assert that not one request or echo failed.
    pub async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} failures under load, the first: {:?}",
            failures.len(),
            &failures[..5.min(failures.len())]
        );
        (self.requests.load(Ordering::Relaxed), self.echoes.load(Ordering::Relaxed))
    }
}

pub async fn websocket(addr: SocketAddr) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (socket, response) = tokio_tungstenite::client_async("ws://reload.test/ws", stream).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
}
