//! HTTP/1.1 message framing through the proxy (RFC 9112), byte for byte:
//! raw TCP clients send exact messages, a raw TCP backend records exactly
//! what reaches it and answers with exact bytes. Ambiguous or malformed
//! framing is refused (400 from a client, 502 from a backend) and never
//! forwarded; keep-alive, pipelining, pooled backend connections and bodies
//! of every framing are checked end to end.

mod common;

use common::raw_http::*;
use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The request's path, from its request line.
fn path_of(request: &[u8]) -> String {
    String::from_utf8_lossy(request).split(' ').nth(1).unwrap_or("").to_string()
}

/// Send `request` on a new connection; the one response (if any).
async fn exchange(proxy: &Proxy, request: &[u8]) -> Option<Got> {
    let mut client = proxy.connect("main").await;
    client.write_all(request).await.unwrap();
    read_response(&mut client, &mut Vec::new()).await
}

fn body_of(request: &[u8]) -> &[u8] {
    &request[find(request, b"\r\n\r\n").map_or(request.len(), |at| at + 4)..]
}

#[tokio::test]
async fn ambiguous_or_malformed_requests_are_400_and_reach_no_backend() {
    let backend = RawBackend::start(Arc::new(|_, _, _| Action::Reply(ok("x")))).await;
    let proxy = proxy_for(backend.addr).await;
    let cases: &[(&str, &[u8])] = &[
        (
            "Content-Length and Transfer-Encoding",
            b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "two different Content-Lengths",
            b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        ("a list of different lengths", b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        ("a signed Content-Length", b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello"),
        (
            "a bad chunk size",
            b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        ("a bare LF line ending", b"GET /a HTTP/1.1\r\nHost: t\nX-A: 1\r\n\r\n"),
        ("bare LF everywhere", b"GET /a HTTP/1.1\nHost: t\n\n"),
        ("obs-fold", b"GET /a HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n  folded\r\n\r\n"),
        ("gzip not chunked last", b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("an unknown coding only", b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nxxxxx"),
        (
            "chunked twice",
            b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
    ];
    for (what, request) in cases {
        let got = exchange(&proxy, request).await;
        assert_eq!(got.as_ref().map(|g| g.status), Some(400), "{what}: {got:?}");
    }
    assert_eq!(backend.connections(), 0, "nothing reached the backend: {:?}", backend.requests());
}

#[tokio::test]
async fn a_bad_chunk_later_in_the_body_is_400_and_the_backend_never_sees_a_complete_request() {
    let backend = RawBackend::start(Arc::new(|_, _, _| Action::Reply(ok("x")))).await;
    let proxy = proxy_for(backend.addr).await;
    let got = exchange(
        &proxy,
        b"POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\nxx\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(got.map(|g| g.status), Some(400));
    for request in backend.requests() {
        assert!(!request.ends_with(b"0\r\n\r\n"), "a complete message reached the backend: {request:?}");
    }
}

#[tokio::test]
async fn ambiguous_or_malformed_responses_are_502() {
    let responses: Vec<(&str, &[u8])> = vec![
        (
            "Content-Length and Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        ("two different Content-Lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("a bare LF", b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc"),
        ("obs-fold", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n folded\r\n\r\nabc"),
        ("a bad chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        ("chunked not last", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc"),
    ];
    for (what, response) in responses {
        let bytes = response.to_vec();
        let backend = RawBackend::start(Arc::new(move |_, _, _| Action::ReplyClose(bytes.clone()))).await;
        let proxy = proxy_for(backend.addr).await;
        let got = exchange(&proxy, b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(got.as_ref().map(|g| g.status), Some(502), "{what}: {got:?}");
        proxy.stop().await;
    }
}

#[tokio::test]
async fn keep_alive_requests_share_few_backend_connections() {
    let backend = RawBackend::start(Arc::new(|_, _, request| Action::Reply(ok(&path_of(request))))).await;
    let proxy = proxy_for(backend.addr).await;
    let mut client = proxy.connect("main").await;
    let mut buf = Vec::new();
    for i in 0..20 {
        client.write_all(format!("GET /r{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await.unwrap();
        let got = read_response(&mut client, &mut buf).await.expect("a response");
        assert_eq!((got.status, got.body), (200, format!("/r{i}").into_bytes()));
    }
    assert_eq!(backend.requests().len(), 20);
    assert!(backend.connections() <= 2, "{} backend connections for 20 requests", backend.connections());
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let backend = RawBackend::start(Arc::new(|_, _, request| Action::Reply(ok(&path_of(request))))).await;
    let proxy = proxy_for(backend.addr).await;
    let mut client = proxy.connect("main").await;
    let mut pipeline = Vec::new();
    for i in 0..8 {
        pipeline.extend_from_slice(format!("GET /p{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    pipeline.extend_from_slice(b"POST /p8 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    client.write_all(&pipeline).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..9 {
        let got = read_response(&mut client, &mut buf).await.expect("a response");
        assert_eq!((got.status, got.body), (200, format!("/p{i}").into_bytes()));
    }
}

#[tokio::test]
async fn a_backend_closing_a_pooled_connection_is_retried_only_when_safe() {
    // Each backend connection answers its first request; a second one on it
    // is read and the connection closed without an answer.
    let backend = RawBackend::start(Arc::new(|_, index, request| match index {
        0 => Action::Reply(ok(&path_of(request))),
        _ => Action::Close,
    }))
    .await;
    let proxy = proxy_for(backend.addr).await;
    let mut client = proxy.connect("main").await;
    let mut buf = Vec::new();
    for path in ["/one", "/two"] {
        client.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await.unwrap();
        let got = read_response(&mut client, &mut buf).await.expect("a response");
        assert_eq!((got.status, got.body), (200, path.as_bytes().to_vec()), "a GET is sent again");
    }
    let sent = backend.requests().len();
    assert_eq!(sent, 3, "/two went twice: {:?}", backend.requests());
    client.write_all(b"POST /three HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc").await.unwrap();
    let got = read_response(&mut client, &mut buf).await.expect("a response");
    assert_eq!(got.status, 502, "a POST is never sent twice: {got:?}");
    let posts = backend.requests().iter().filter(|r| r.starts_with(b"POST")).count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_while_idle_is_not_used() {
    let backend = RawBackend::start(Arc::new(|_, _, request| Action::ReplyClose(ok(&path_of(request))))).await;
    let proxy = proxy_for(backend.addr).await;
    let mut client = proxy.connect("main").await;
    let mut buf = Vec::new();
    for path in ["/one", "/two", "/three"] {
        client
            .write_all(format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx").as_bytes())
            .await
            .unwrap();
        let got = read_response(&mut client, &mut buf).await.expect("a response");
        assert_eq!((got.status, got.body), (200, path.as_bytes().to_vec()));
        // The backend closed its side after answering, before the next request.
        tokio::time::timeout(GENEROUS, backend.closed.notified()).await.ok();
    }
    assert_eq!(backend.requests().len(), 3, "each POST went once: {:?}", backend.requests());
}

#[tokio::test]
async fn request_bodies_of_each_framing_arrive_intact() {
    let backend = RawBackend::start(Arc::new(|_, _, _| Action::Reply(ok("done")))).await;
    let proxy = proxy_for(backend.addr).await;
    let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut client = proxy.connect("main").await;
    let mut buf = Vec::new();
    let mut request = format!("POST /cl HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
    request.extend_from_slice(&big);
    client.write_all(&request).await.unwrap();
    assert_eq!(read_response(&mut client, &mut buf).await.unwrap().status, 200);
    // Chunked, in pieces of several sizes, with a chunk extension and a trailer.
    let mut request = b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut at = 0;
    for size in [1usize, 17, 4096, 65_537, 100_000] {
        let piece = &big[at..(at + size).min(big.len())];
        request.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
        at += piece.len();
    }
    request.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
    client.write_all(&request).await.unwrap();
    assert_eq!(read_response(&mut client, &mut buf).await.unwrap().status, 200);
    let received = backend.requests();
    assert_eq!(received.len(), 2);
    assert_eq!(body_of(&received[0]), &big[..]);
    let head = String::from_utf8_lossy(&received[1][..find(&received[1], b"\r\n\r\n").unwrap()]).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    // Decode what the backend got.
    let mut body = body_of(&received[1]).to_vec();
    let mut decoded = Vec::new();
    loop {
        let line = find(&body, b"\r\n").unwrap();
        let size_text = String::from_utf8_lossy(&body[..line]).split(';').next().unwrap().trim().to_string();
        let size = usize::from_str_radix(&size_text, 16).unwrap();
        if size == 0 {
            break;
        }
        decoded.extend_from_slice(&body[line + 2..line + 2 + size]);
        body.drain(..line + 2 + size + 2);
    }
    assert_eq!(decoded.len(), at);
    assert_eq!(decoded, &big[..at]);
}

#[tokio::test]
async fn response_bodies_of_each_framing_arrive_intact() {
    let big: Vec<u8> = (0..300_000u32).map(|i| b'A' + (i % 26) as u8).collect();
    let body = big.clone();
    let backend = RawBackend::start(Arc::new(move |_, _, request| {
        let mut response;
        match path_of(request).as_str() {
            "/cl" => {
                response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                response.extend_from_slice(&body);
                Action::Reply(response)
            }
            "/chunked" => {
                response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for piece in body.chunks(70_001) {
                    response.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    response.extend_from_slice(piece);
                    response.extend_from_slice(b"\r\n");
                }
                response.extend_from_slice(b"0\r\n\r\n");
                Action::Reply(response)
            }
            _ => {
                response = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
                response.extend_from_slice(&body);
                Action::ReplyClose(response)
            }
        }
    }))
    .await;
    let proxy = proxy_for(backend.addr).await;
    let mut client = proxy.connect("main").await;
    let mut buf = Vec::new();
    for path in ["/cl", "/chunked", "/to-close", "/cl"] {
        client.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await.unwrap();
        let got = read_response(&mut client, &mut buf).await.expect("a response on the same connection");
        assert_eq!(got.status, 200, "{path}: {}", got.head);
        assert_eq!(got.body.len(), big.len(), "{path}");
        assert!(got.body == big, "{path}: the body differs");
    }
}

#[tokio::test]
async fn head_and_bodiless_statuses_end_at_their_head() {
    let backend = RawBackend::start(Arc::new(|_, _, request| match path_of(request).as_str() {
        "/204" => Action::Reply(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        "/304" => Action::Reply(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n".to_vec()),
        _ => Action::Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec()),
    }))
    .await;
    let proxy = proxy_for(backend.addr).await;
    let mut client = proxy.connect("main").await;
    client
        .write_all(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\nGET /204 HTTP/1.1\r\nHost: t\r\n\r\nGET /304 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while !(find(&all, b"304 Not Modified").is_some() && all.ends_with(b"\r\n\r\n")) {
            if !fill(&mut client, &mut all).await {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&all);
    let statuses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["200", "204", "304"], "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body bytes after a bodiless response: {text:?}");
}

#[tokio::test]
async fn hop_by_hop_response_fields_stop_at_the_proxy() {
    let response = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n\
        X-Private: secret\r\nProxy-Connection: keep-alive\r\nTrailer: X-Sum\r\nTE: trailers\r\n\
        X-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
        .to_vec();
    let backend = RawBackend::start(Arc::new(move |_, _, _| Action::Reply(response.clone()))).await;
    let proxy = proxy_for(backend.addr).await;
    let got = exchange(&proxy, b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n").await.expect("a response");
    assert_eq!((got.status, got.body.as_slice()), (200, &b"ok"[..]));
    let head = got.head.to_ascii_lowercase();
    let names: Vec<&str> = head.lines().skip(1).filter_map(|line| line.split_once(':')).map(|(n, _)| n).collect();
    for gone in ["keep-alive", "x-private", "proxy-connection", "trailer", "te"] {
        assert!(!names.contains(&gone), "{gone} reached the client: {head}");
    }
    assert!(head.contains("x-kept: yes"), "{head}");
}
