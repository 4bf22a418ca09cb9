//! Memory held by idle connections: heap bytes per idle WebSocket tunnel
//! (after the 101) and per idle keep-alive HTTP connection (after one
//! request), at 1,500 connections.
//!
//! The proxy runs in this process; the clients and the backend are plain
//! blocking std sockets on their own threads, so (beyond vectors reserved
//! before the baseline) every heap byte that appears is the proxy's. A
//! counting global allocator gives live heap bytes, which unlike RSS does not
//! depend on the allocator's arenas or on what else the machine does. The
//! kernel's socket buffers are not heap and are not counted (the same for
//! every proxy; see docs/PERFORMANCE.md, "Footprint").
//!
//! The bounds are about twice what was measured when the test was written:
//! they catch a regression (a buffer or a finished task kept alive per
//! connection), not noise.

mod common;

use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is only bookkeeping.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const WARM_UP: usize = 50;
const COUNT: usize = 1_500;

/// Heap bytes per idle WebSocket tunnel. Measured 2026-11-30: see docs/PERFORMANCE.md.
const TUNNEL_BOUND: isize = 2_000;
/// Heap bytes per idle keep-alive connection.
const KEEP_ALIVE_BOUND: isize = 6_000;

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: bench.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const SWITCHED: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Read one HTTP head (and, for a 200, its 2-byte body) with a stack buffer.
fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 1024];
    let mut len = 0;
    loop {
        let n = stream.read(&mut head[len..]).expect("read a head");
        assert!(n > 0, "closed before a full head: {:?}", String::from_utf8_lossy(&head[..len]));
        len += n;
        if let Some(end) = head[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            let mut want = end + 4;
            if head.starts_with(b"HTTP/1.1 200") {
                want += 2;
            }
            while len < want {
                len += stream.read(&mut head[len..]).expect("read the body");
            }
            return head[..len].to_vec();
        }
    }
}

/// A blocking backend: a WebSocket Upgrade gets a 101 and the socket is kept
/// (returned once `upgrades` were served); any other request gets a 200, and
/// that connection is served on its own thread for as long as it stays open
/// (the proxy pools it for the next client).
fn backend(listener: TcpListener, upgrades: usize) -> std::thread::JoinHandle<Vec<TcpStream>> {
    std::thread::spawn(move || {
        let mut kept = Vec::with_capacity(upgrades.min(WARM_UP + COUNT));
        while kept.len() < upgrades {
            let (mut stream, _) = listener.accept().expect("accept");
            let head = read_head(&mut stream);
            if head.windows(8).any(|w| w.eq_ignore_ascii_case(b"upgrade:")) {
                stream.write_all(SWITCHED).expect("reply");
                kept.push(stream);
                continue;
            }
            std::thread::spawn(move || {
                while stream.write_all(OK).is_ok() && next_request(&mut stream) {}
            });
        }
        kept
    })
}

/// Wait for the next request head on a keep-alive backend connection.
fn next_request(stream: &mut TcpStream) -> bool {
    let mut head = [0u8; 1024];
    let mut len = 0;
    while !head[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut head[len..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => len += n,
        }
        if len == head.len() {
            return false;
        }
    }
    true
}

/// Open `count` connections through the proxy, each one upgraded (and one
/// byte sent through the tunnel each way) or served one request; return the
/// client sockets, held open.
fn open(proxy: SocketAddr, count: usize, websocket: bool, kept: &mut Vec<TcpStream>) {
    for _ in 0..count {
        let mut stream = TcpStream::connect(proxy).expect("connect to the proxy");
        stream.write_all(if websocket { UPGRADE } else { GET }).expect("send");
        let head = read_head(&mut stream);
        let want: &[u8] = if websocket { b"HTTP/1.1 101" } else { b"HTTP/1.1 200" };
        assert!(head.starts_with(want), "{}", String::from_utf8_lossy(&head));
        kept.push(stream);
    }
}

/// Send one byte each way through every tunnel: once it arrived, the
/// tunnel is relaying (the HTTP connection that upgraded has finished).
fn ping(clients: &mut [TcpStream], backends: &mut [TcpStream]) {
    for stream in clients.iter_mut() {
        stream.write_all(b"c").expect("client byte");
    }
    for stream in backends.iter_mut() {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).expect("the client's byte crosses the tunnel");
        assert_eq!(&byte, b"c");
        stream.write_all(b"b").expect("backend byte");
    }
    for stream in clients.iter_mut() {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).expect("the backend's byte crosses the tunnel");
        assert_eq!(&byte, b"b");
    }
}

fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()).unwrap_or(0)
}

async fn per_connection(websocket: bool) -> (isize, i64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let proxy = Proxy::start(&format!(
        r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"
[listeners.per-client]
max-connections = 0

[backends.web]
servers = ["{backend_addr}"]

[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"

[limits]
max-connections = 10_000
"#
    ))
    .await;
    let addr = proxy.addr("main");
    let measured = tokio::task::spawn_blocking(move || {
        let backend = backend(listener, if websocket { WARM_UP + COUNT } else { usize::MAX });
        let mut clients = Vec::with_capacity(WARM_UP + COUNT);
        open(addr, WARM_UP, websocket, &mut clients);
        let before = (LIVE.load(Ordering::Relaxed), rss_kib());
        open(addr, COUNT, websocket, &mut clients);
        let backends = if websocket {
            let mut backends = backend.join().expect("backend thread");
            ping(&mut clients, &mut backends);
            Some(backends)
        } else {
            None
        };
        let after = (LIVE.load(Ordering::Relaxed), rss_kib());
        let per_heap = (after.0 - before.0) / COUNT as isize;
        let per_rss = (after.1 - before.1) * 1024 / COUNT as i64;
        drop((clients, backends));
        (per_heap, per_rss)
    })
    .await
    .unwrap();
    proxy.stop().await;
    measured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_idle_websocket_tunnel_holds_little_memory() {
    let (heap, rss) = per_connection(true).await;
    println!("idle WebSocket tunnel: {heap} heap bytes per connection ({rss} bytes RSS) at {COUNT}");
    assert!(
        heap <= TUNNEL_BOUND,
        "an idle tunnel holds {heap} heap bytes (bound {TUNNEL_BOUND}): something is kept per tunnel \
         (a buffer, the finished HTTP connection's task, a sniff buffer?)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_idle_keep_alive_connection_holds_little_memory() {
    let (heap, rss) = per_connection(false).await;
    println!("idle keep-alive connection: {heap} heap bytes per connection ({rss} bytes RSS) at {COUNT}");
    assert!(
        heap <= KEEP_ALIVE_BOUND,
        "an idle keep-alive connection holds {heap} heap bytes (bound {KEEP_ALIVE_BOUND})"
    );
}
