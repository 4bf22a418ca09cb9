//! A raw HTTP/1 backend and client for byte-exact tests: the backend
//! records exactly what reaches it and answers with exact bytes; the client
//! reads one response by its framing.

use super::Proxy;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub const GENEROUS: Duration = Duration::from_secs(10);

/// What the backend does with one request it received.
#[derive(Clone)]
pub enum Action {
    /// Write these bytes and keep the connection.
    Reply(Vec<u8>),
    /// Write these bytes, then close the connection.
    ReplyClose(Vec<u8>),
    /// Close without answering.
    Close,
}

pub type Script = Arc<dyn Fn(usize, usize, &[u8]) -> Action + Send + Sync>;
/// Every request a backend received: (connection index, the bytes).
pub type Received = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

/// A raw backend: every request it received (head and body bytes as they
/// arrived), by connection; answers as its script says for
/// (connection index, request index on that connection, request bytes).
pub struct RawBackend {
    pub addr: SocketAddr,
    requests: Received,
    connections: Arc<Mutex<usize>>,
    /// Notified whenever the backend closes a connection.
    pub closed: Arc<Notify>,
}

impl RawBackend {
    pub async fn start(script: Script) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let closed = Arc::new(Notify::new());
        let (log, count, notify) = (requests.clone(), connections.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let conn = {
                    let mut count = count.lock().unwrap();
                    *count += 1;
                    *count - 1
                };
                let (log, script, notify) = (log.clone(), script.clone(), notify.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut index = 0;
                    loop {
                        while let Some(len) = request_len(&buf) {
                            let request: Vec<u8> = buf.drain(..len).collect();
                            log.lock().unwrap().push((conn, request.clone()));
                            let action = script(conn, index, &request);
                            index += 1;
                            match action {
                                Action::Reply(bytes) => {
                                    if stream.write_all(&bytes).await.is_err() {
                                        return;
                                    }
                                }
                                Action::ReplyClose(bytes) => {
                                    let _ = stream.write_all(&bytes).await;
                                    drop(stream);
                                    notify.notify_one();
                                    return;
                                }
                                Action::Close => {
                                    drop(stream);
                                    notify.notify_one();
                                    return;
                                }
                            }
                        }
                        let mut chunk = [0u8; 8192];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                if !buf.is_empty() {
                                    // An incomplete request: recorded as it is.
                                    log.lock().unwrap().push((conn, std::mem::take(&mut buf)));
                                }
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        RawBackend { addr, requests, connections, closed }
    }

    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap().iter().map(|(_, r)| r.clone()).collect()
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

/// The length of the first complete request in `buf` (a test backend's
/// simple view: Content-Length, or chunked up to `0\r\n\r\n`).
pub fn request_len(buf: &[u8]) -> Option<usize> {
    let head = find(buf, b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    if text.contains("transfer-encoding: chunked") {
        return find(&buf[head..], b"0\r\n\r\n").map(|at| head + at + 5);
    }
    let length = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap_or(0);
    (buf.len() >= head + length).then_some(head + length)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// One parsed response as the client got it.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// Read one response from `stream` (`buf` keeps bytes read past it):
/// Content-Length, chunked, or no length (read to close).
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Got> {
    tokio::time::timeout(GENEROUS, async {
        let head_end = loop {
            if let Some(at) = find(buf, b"\r\n\r\n") {
                break at + 4;
            }
            if !fill(stream, buf).await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let lower = head.to_ascii_lowercase();
        let body = if lower.contains("transfer-encoding: chunked") {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(at) = find(buf, b"\r\n") {
                        break at;
                    }
                    if !fill(stream, buf).await {
                        return None;
                    }
                };
                let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?.trim(), 16).ok()?;
                while buf.len() < line_end + 2 + size + 2 {
                    if !fill(stream, buf).await {
                        return None;
                    }
                }
                body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
                buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else if let Some(length) = lower.lines().find_map(|l| l.strip_prefix("content-length:")) {
            let length: usize = length.trim().parse().ok()?;
            while buf.len() < length {
                if !fill(stream, buf).await {
                    return None;
                }
            }
            buf.drain(..length).collect()
        } else {
            while fill(stream, buf).await {}
            std::mem::take(buf)
        };
        Some(Got { status, head, body })
    })
    .await
    .expect("a response in time")
}

pub async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// The proxy in front of `backend`: the built-in sniff and path plugins, every request to it.
pub async fn proxy_for(backend: SocketAddr) -> Proxy {
    Proxy::start(&format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"
header-timeout = "5s"

[backends.b]
servers = ["{backend}"]

[plugins.sniff]
builtin = "sniff"

[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "b"
"#
    ))
    .await
}
