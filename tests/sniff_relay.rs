//! The foundation end to end: the real proxy, the real default sniff plugin,
//! real backends on loopback.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const POLICY: &str =
    "<cross-domain-policy><allow-access-from domain=\"*.test\" to-ports=\"843\"/></cross-domain-policy>";

/// One listener with the default sniff plugin: HTTP to `web`, everything else to `default`.
async fn proxy_with(default: SocketAddr, web: SocketAddr, inspect_timeout: &str) -> Proxy {
    Proxy::start(&format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
default-backend = "default"
inspect-timeout = "{inspect_timeout}"

[backends.default]
servers = ["{default}"]

[backends.web]
servers = ["{web}"]

[plugins.sniff]
builtin = "sniff"
[plugins.sniff.settings]
flash-policy = '{POLICY}'
http-backend = "web"
"#
    ))
    .await
}

async fn standard_proxy() -> Proxy {
    proxy_with(tagged_echo("default").await, tagged_echo("web").await, "300ms").await
}

fn policy_reply() -> Vec<u8> {
    let mut reply = POLICY.as_bytes().to_vec();
    reply.push(0);
    reply
}

#[tokio::test]
async fn flash_policy_in_one_write() {
    let proxy = standard_proxy().await;
    let mut client = proxy.connect("main").await;
    client.write_all(b"<policy-file-request/>\0").await.unwrap();
    assert_eq!(read_to_end(&mut client).await, policy_reply());
}

#[tokio::test]
async fn flash_policy_split_over_three_writes() {
    let proxy = standard_proxy().await;
    let mut client = proxy.connect("main").await;
    for piece in [&b"<policy-"[..], b"file-requ", b"est/>\0"] {
        client.write_all(piece).await.unwrap();
        // Separate TCP segments, so the plugin really sees three heads.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read_to_end(&mut client).await, policy_reply());
}

#[tokio::test]
async fn flash_policy_without_the_nul() {
    let proxy = standard_proxy().await;
    let mut client = proxy.connect("main").await;
    client.write_all(b"<policy-file-request/>").await.unwrap();
    assert_eq!(read_to_end(&mut client).await, policy_reply());
}

#[tokio::test]
async fn http_reaches_the_http_backend() {
    let proxy = standard_proxy().await;
    let mut client = proxy.connect("main").await;
    let request = testdata("http1-get.bin");
    client.write_all(&request).await.unwrap();
    let mut expected = b"web\n".to_vec();
    expected.extend_from_slice(&request);
    assert_eq!(read_exactly(&mut client, expected.len()).await, expected);
}

#[tokio::test]
async fn ssh_reaches_the_default_backend() {
    let proxy = standard_proxy().await;
    let mut client = proxy.connect("main").await;
    let banner = testdata("ssh-banner.bin");
    client.write_all(&banner).await.unwrap();
    let mut expected = b"default\n".to_vec();
    expected.extend_from_slice(&banner);
    assert_eq!(read_exactly(&mut client, expected.len()).await, expected);
}

#[tokio::test]
async fn a_silent_client_reaches_a_server_that_speaks_first() {
    let proxy = standard_proxy().await;
    let mut client = proxy.connect("main").await;
    // Send nothing: after the inspect deadline the plugin decides on an empty
    // head and the default backend's greeting arrives.
    assert_eq!(read_exactly(&mut client, 8).await, b"default\n");
    client.write_all(b"EHLO sluice.test\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut client, 18).await, b"EHLO sluice.test\r\n");
}

#[tokio::test]
async fn http_arriving_one_byte_every_50ms() {
    let proxy = proxy_with(tagged_echo("default").await, tagged_echo("web").await, "5s").await;
    let mut client = proxy.connect("main").await;
    let request = b"GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n";
    for byte in request {
        client.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut expected = b"web\n".to_vec();
    expected.extend_from_slice(request);
    assert_eq!(read_exactly(&mut client, expected.len()).await, expected);
}

#[tokio::test]
async fn half_close_passes_the_fin_and_the_response_still_flows() {
    // The backend reads the request to EOF, then answers.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let default = backend.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = backend.accept().await.unwrap();
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.unwrap();
        let answer = format!("got {} bytes after your FIN", request.len());
        stream.write_all(answer.as_bytes()).await.unwrap();
    });
    let proxy = proxy_with(default, tagged_echo("web").await, "300ms").await;
    let mut client = proxy.connect("main").await;
    client.write_all(b"BYE 12345").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"got 9 bytes after your FIN");
}

/// 64 MiB each way at once, compared by hash on both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_byte_exact() {
    const SIZE: usize = 64 << 20;
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let default = backend.local_addr().unwrap();
    let backend_task = tokio::spawn(async move {
        let (stream, _) = backend.accept().await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let send = tokio::spawn(async move {
            let hash = send_pattern(&mut write, SIZE, 7).await;
            write.shutdown().await.unwrap();
            hash
        });
        let received = hash_until_eof(&mut read).await;
        (received, send.await.unwrap())
    });

    let proxy = proxy_with(default, tagged_echo("web").await, "300ms").await;
    let client = proxy.connect("main").await;
    let (mut read, mut write) = client.into_split();
    let send = tokio::spawn(async move {
        let hash = send_pattern(&mut write, SIZE, 3).await;
        write.shutdown().await.unwrap();
        hash
    });
    let client_received = hash_until_eof(&mut read).await;
    let client_sent = send.await.unwrap();
    let ((backend_received_len, backend_received), (backend_sent_len, backend_sent)) = backend_task.await.unwrap();

    assert_eq!(client_sent.0, SIZE);
    assert_eq!((backend_received_len, backend_received), client_sent, "client → backend");
    assert_eq!(client_received, (backend_sent_len, backend_sent), "backend → client");
}

/// Write `size` bytes of a seeded pattern; returns (length, sha256).
async fn send_pattern(write: &mut tokio::net::tcp::OwnedWriteHalf, size: usize, seed: u64) -> (usize, Vec<u8>) {
    let mut hasher = Sha256::new();
    let mut state = seed;
    let mut chunk = vec![0u8; 256 << 10];
    let mut sent = 0;
    while sent < size {
        for byte in chunk.iter_mut() {
            // xorshift: cheap bytes that are not all alike
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        if sent == 0 {
            chunk[..4].copy_from_slice(b"BULK"); // not the start of any sniffed protocol
        }
        let n = chunk.len().min(size - sent);
        write.write_all(&chunk[..n]).await.unwrap();
        hasher.update(&chunk[..n]);
        sent += n;
    }
    (sent, hasher.finalize().to_vec())
}

async fn hash_until_eof(read: &mut tokio::net::tcp::OwnedReadHalf) -> (usize, Vec<u8>) {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0;
    loop {
        let n = read.read(&mut buf).await.unwrap();
        if n == 0 {
            return (total, hasher.finalize().to_vec());
        }
        hasher.update(&buf[..n]);
        total += n;
    }
}

#[tokio::test]
async fn a_dead_backend_closes_the_client_cleanly_and_others_are_served() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap() // dropped: nothing listens there now
    };
    let proxy = proxy_with(dead, tagged_echo("web").await, "300ms").await;
    let mut client = proxy.connect("main").await;
    client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
    assert!(closed_without_data(&mut client).await);

    let mut http = proxy.connect("main").await;
    http.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut http, 4).await, b"web\n");
}

#[tokio::test]
async fn shutdown_drains_open_connections() {
    let proxy = standard_proxy().await;
    let mut client = proxy.connect("main").await;
    client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut client, 8).await, b"default\n");
    let stop = tokio::spawn(proxy.stop());
    // The open relay still works while the proxy drains, until the client leaves.
    client.write_all(b"still here").await.unwrap();
    assert_eq!(read_exactly(&mut client, 21).await, b"SSH-2.0-x\r\nstill here");
    drop(client);
    assert_eq!(stop.await.unwrap(), sluice::Drained::Clean);
}

/// Both directions at once, with a half-close in the middle: the client sends
/// 16 MiB and its FIN while the backend sends 32 MiB, and the backend sends
/// 32 MiB more only after it saw that FIN. Every byte compared by hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_direction_keeps_flowing_after_a_fin_mid_transfer() {
    const UP: usize = 16 << 20;
    const DOWN: usize = 32 << 20;
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let default = backend.local_addr().unwrap();
    let backend_task = tokio::spawn(async move {
        let (stream, _) = backend.accept().await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let (fin_seen, fin) = tokio::sync::oneshot::channel();
        let receive = tokio::spawn(async move {
            let received = hash_until_eof(&mut read).await;
            fin_seen.send(()).unwrap();
            received
        });
        let mut sent = Sha256::new();
        let bytes = pattern_bytes(DOWN, 11);
        write.write_all(&bytes).await.unwrap();
        sent.update(&bytes);
        fin.await.unwrap();
        let bytes = pattern_bytes(DOWN, 13);
        write.write_all(&bytes).await.unwrap();
        sent.update(&bytes);
        write.shutdown().await.unwrap();
        (receive.await.unwrap(), (2 * DOWN, sent.finalize().to_vec()))
    });

    let proxy = proxy_with(default, tagged_echo("web").await, "300ms").await;
    let client = proxy.connect("main").await;
    let (mut read, mut write) = client.into_split();
    let send = tokio::spawn(async move {
        let hash = send_pattern(&mut write, UP, 5).await;
        write.shutdown().await.unwrap();
        hash
    });
    let client_received = hash_until_eof(&mut read).await;
    let client_sent = send.await.unwrap();
    let (backend_received, backend_sent) = backend_task.await.unwrap();

    assert_eq!(backend_received, client_sent, "client → backend");
    assert_eq!(client_received, backend_sent, "backend → client, before and after the client's FIN");
}

/// `size` bytes of a seeded pattern.
fn pattern_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
