//! HTTP/1.0 clients through the proxy, byte for byte: the answer speaks
//! HTTP/1.0, the connection closes after it unless the client asked for
//! keep-alive, a body of unknown length reaches the client unchunked up to
//! the close, and the backend gets an HTTP/1.1 request on a pooled
//! connection. A transfer coding in HTTP/1.0 is never forwarded.

mod common;

use common::raw_http::*;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Answers by path: `/chunked` in chunks, `/to-close` without a length
/// (then closes), anything else with a Content-Length.
async fn backend() -> RawBackend {
    RawBackend::start(Arc::new(|_, _, request: &[u8]| {
        let path = String::from_utf8_lossy(request).split(' ').nth(1).unwrap_or("").to_string();
        match path.as_str() {
            "/chunked" => Action::Reply(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
            ),
            "/to-close" => Action::ReplyClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the close".to_vec()),
            other => Action::Reply(ok(&format!("at {other}"))),
        }
    }))
    .await
}

/// Whether the proxy closed `client` (nothing more arrives, then EOF).
async fn closed_by_proxy(client: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    tokio::time::timeout(GENEROUS, fill(client, buf)).await == Ok(false) && buf.is_empty()
}

#[tokio::test]
async fn an_http10_request_is_answered_in_http10_and_closed() {
    let backend = backend().await;
    let proxy = proxy_for(backend.addr).await;
    let mut client = proxy.connect("main").await;
    client.write_all(b"GET /page HTTP/1.0\r\nHost: example.test\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let got = read_response(&mut client, &mut buf).await.expect("a response");
    assert!(got.head.starts_with("HTTP/1.0 200 "), "{}", got.head);
    assert_eq!(got.body, b"at /page");
    assert!(got.head.to_ascii_lowercase().contains("connection: close"), "{}", got.head);
    assert!(closed_by_proxy(&mut client, &mut buf).await, "the proxy closes after an HTTP/1.0 answer");

    let requests = backend.requests();
    let forwarded = String::from_utf8_lossy(&requests[0]).to_ascii_lowercase();
    assert!(forwarded.starts_with("get /page http/1.1\r\n"), "{forwarded}");
    assert!(forwarded.contains("host: example.test\r\n"), "{forwarded}");
    assert!(forwarded.contains("x-forwarded-for: 127.0.0.1\r\n"), "{forwarded}");
}

#[tokio::test]
async fn http10_keep_alive_serves_several_requests_on_one_connection() {
    let backend = backend().await;
    let proxy = proxy_for(backend.addr).await;
    let mut client = proxy.connect("main").await;
    let mut buf = Vec::new();
    for path in ["/one", "/two", "/three"] {
        let request = format!("GET {path} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let got = read_response(&mut client, &mut buf).await.expect("a response on the same connection");
        assert!(got.head.starts_with("HTTP/1.0 200 "), "{}", got.head);
        assert!(got.head.to_ascii_lowercase().contains("connection: keep-alive"), "{}", got.head);
        assert_eq!(got.body, format!("at {path}").as_bytes());
    }
    // Without keep-alive, the next one is the last.
    client.write_all(b"GET /last HTTP/1.0\r\nHost: a\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut client, &mut buf).await.expect("a response").body, b"at /last");
    assert!(closed_by_proxy(&mut client, &mut buf).await);
    // The backend connection was pooled across all four.
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn a_body_of_unknown_length_reaches_an_http10_client_unchunked_up_to_the_close() {
    let backend = backend().await;
    let proxy = proxy_for(backend.addr).await;
    for (path, body) in [("/chunked", &b"hello world"[..]), ("/to-close", b"until the close")] {
        let mut client = proxy.connect("main").await;
        // Even when keep-alive is asked for: only the close can end this body.
        let request = format!("GET {path} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let got = read_response(&mut client, &mut Vec::new()).await.expect("a response");
        let head = got.head.to_ascii_lowercase();
        assert!(head.starts_with("http/1.0 200 "), "{head}");
        assert!(!head.contains("transfer-encoding"), "{path}: no chunks for HTTP/1.0: {head}");
        assert!(!head.contains("content-length"), "{path}: {head}");
        assert!(head.contains("connection: close"), "{path}: {head}");
        assert_eq!(got.body, body, "{path}: read up to the close");
    }
}

#[tokio::test]
async fn a_transfer_coding_in_http10_is_never_forwarded() {
    let backend = backend().await;
    let proxy = proxy_for(backend.addr).await;
    let mut client = proxy.connect("main").await;
    client
        .write_all(b"POST /upload HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await
        .unwrap();
    let got = read_response(&mut client, &mut Vec::new()).await;
    assert_eq!(got.map(|g| g.status), Some(400));
    assert!(backend.requests().is_empty(), "{:?}", backend.requests());
}
