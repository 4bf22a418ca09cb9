//! Memory held by idle connections: heap bytes per idle WebSocket tunnel
//! (after the 101) and per idle HTTP/1.1 keep-alive connection (after one
//! request), at 1,500 connections. RSS, with the kernel's share, is measured
//! by `bench/compare.sh idle`.
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
/// Live allocations by size class (log2 of the size), printed with the figures.
static BY_CLASS: [AtomicIsize; 32] = [const { AtomicIsize::new(0) }; 32];

fn class(size: usize) -> usize {
    (usize::BITS - size.leading_zeros()).min(31) as usize
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is only bookkeeping.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        BY_CLASS[class(layout.size())].fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        BY_CLASS[class(layout.size())].fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        BY_CLASS[class(layout.size())].fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        BY_CLASS[class(layout.size())].fetch_sub(1, Ordering::Relaxed);
        BY_CLASS[class(new_size)].fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const WARM_UP: usize = 50;
/// The counters are process-wide: one measurement at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const COUNT: usize = 1_500;

/// Heap bytes per idle WebSocket tunnel: 1,520 measured on 2026-11-30 (the
/// tunnel task ~0.6 KB, two socket registrations, the idle timer); 4,171
/// before the hand-written splice relay. See docs/PERFORMANCE.md, "Footprint".
const TUNNEL_BOUND: isize = 3_000;

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: bench.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const SWITCHED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

/// Read one HTTP head with a stack buffer.
fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 1024];
    let mut len = 0;
    loop {
        let n = stream.read(&mut head[len..]).expect("read a head");
        assert!(n > 0, "closed before a full head: {:?}", String::from_utf8_lossy(&head[..len]));
        len += n;
        if head[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            return head[..len].to_vec();
        }
    }
}

/// A blocking backend: each connection's Upgrade gets a 101 and the socket is
/// kept; returns them once `count` were served.
fn backend(listener: TcpListener, count: usize) -> std::thread::JoinHandle<Vec<TcpStream>> {
    std::thread::spawn(move || {
        let mut kept = Vec::with_capacity(count);
        while kept.len() < count {
            let (mut stream, _) = listener.accept().expect("accept");
            read_head(&mut stream);
            stream.write_all(SWITCHED).expect("reply");
            kept.push(stream);
        }
        kept
    })
}

/// Open `count` WebSockets through the proxy (Upgrade, 101); keep the client sockets.
fn open(proxy: SocketAddr, count: usize, kept: &mut Vec<TcpStream>) {
    for _ in 0..count {
        let mut stream = TcpStream::connect(proxy).expect("connect to the proxy");
        stream.write_all(UPGRADE).expect("send");
        let head = read_head(&mut stream);
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
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
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

async fn start_proxy(backend_addr: SocketAddr) -> Proxy {
    Proxy::start(&format!(
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

[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "web"

[limits]
max-connections = 10_000
"#
    ))
    .await
}

/// Live heap bytes and RSS before, and allocations by size class.
fn snapshot() -> (isize, i64, Vec<isize>) {
    (LIVE.load(Ordering::Relaxed), rss_kib(), BY_CLASS.iter().map(|c| c.load(Ordering::Relaxed)).collect())
}

/// Per connection since `before`: heap bytes, RSS bytes, and the size classes that grew.
fn per_connection(before: &(isize, i64, Vec<isize>)) -> (isize, i64, String) {
    let grown: Vec<String> = BY_CLASS
        .iter()
        .zip(&before.2)
        .enumerate()
        .filter_map(|(i, (now, before))| {
            let n = now.load(Ordering::Relaxed) - before;
            (n.abs() >= COUNT as isize / 2)
                .then(|| format!("{}..{} B: {n:+}", 1usize << i.saturating_sub(1), 1usize << i))
        })
        .collect();
    let heap = (LIVE.load(Ordering::Relaxed) - before.0) / COUNT as isize;
    let rss = (rss_kib() - before.1) * 1024 / COUNT as i64;
    (heap, rss, grown.join(", "))
}

async fn per_tunnel() -> (isize, i64, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let proxy = start_proxy(backend_addr).await;
    let addr = proxy.addr("main");
    let measured = tokio::task::spawn_blocking(move || {
        let backend = backend(listener, WARM_UP + COUNT);
        let mut clients = Vec::with_capacity(WARM_UP + COUNT);
        open(addr, WARM_UP, &mut clients);
        let before = snapshot();
        open(addr, COUNT, &mut clients);
        let mut backends = backend.join().expect("backend thread");
        // Once a byte crossed every tunnel both ways, each is relaying and the
        // HTTP connection that upgraded it has finished.
        ping(&mut clients, &mut backends);
        let (per_heap, per_rss, grown) = per_connection(&before);
        drop((clients, backends));
        (per_heap, per_rss, grown)
    })
    .await
    .unwrap();
    proxy.stop().await;
    measured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_idle_websocket_tunnel_holds_little_memory() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let (heap, rss, grown) = per_tunnel().await;
    println!(
        "idle WebSocket tunnel: {heap} heap bytes per connection ({rss} bytes RSS) at {COUNT}; live allocations grown, by size: {grown}"
    );
    assert!(
        heap <= TUNNEL_BOUND,
        "an idle tunnel holds {heap} heap bytes (bound {TUNNEL_BOUND}): something is kept per tunnel \
         (a buffer, the finished HTTP connection's task, a sniff buffer?); live allocations grown, by size: {grown}"
    );
}

/// Heap bytes per idle keep-alive connection: 11,920 measured on 2026-11-30
/// (the connection task 7.8 KB, its 2 KiB read buffer and 1 KiB write
/// buffer, two timers, the socket registration); about 40 KB before the
/// stages not every connection reaches were boxed (the task alone was 33.8 KB).
const KEEP_ALIVE_BOUND: isize = 20_000;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A blocking backend answering every request on every connection with [`OK`].
fn keep_alive_backend(listener: TcpListener) {
    std::thread::spawn(move || {
        while let Ok((mut stream, _)) = listener.accept() {
            std::thread::spawn(move || {
                let mut head = [0u8; 1024];
                let mut len = 0;
                while let Ok(n) = stream.read(&mut head[len..]) {
                    if n == 0 {
                        return;
                    }
                    len += n;
                    if let Some(end) = head[..len].windows(4).position(|w| w == b"\r\n\r\n") {
                        head.copy_within(end + 4..len, 0);
                        len -= end + 4;
                        if stream.write_all(OK).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// Open `count` connections through the proxy, one answered request each; keep them open.
fn keep_alive_clients(proxy: SocketAddr, count: usize, kept: &mut Vec<TcpStream>) {
    for _ in 0..count {
        let mut stream = TcpStream::connect(proxy).expect("connect to the proxy");
        stream.write_all(GET).expect("send");
        let head = read_head(&mut stream);
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
        assert!(head.ends_with(b"ok"), "the 2-byte body arrives with the head: {}", String::from_utf8_lossy(&head));
        kept.push(stream);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_idle_keep_alive_connection_holds_little_memory() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = start_proxy(listener.local_addr().unwrap()).await;
    keep_alive_backend(listener);
    let addr = proxy.addr("main");
    let (heap, rss, grown) = tokio::task::spawn_blocking(move || {
        let mut clients = Vec::with_capacity(WARM_UP + COUNT);
        keep_alive_clients(addr, WARM_UP, &mut clients);
        let before = snapshot();
        keep_alive_clients(addr, COUNT, &mut clients);
        // The last connection's loop may still be on its way back to waiting.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let measured = per_connection(&before);
        drop(clients);
        measured
    })
    .await
    .unwrap();
    proxy.stop().await;
    println!(
        "idle keep-alive connection: {heap} heap bytes per connection ({rss} bytes RSS) at {COUNT}; live allocations grown, by size: {grown}"
    );
    assert!(
        heap <= KEEP_ALIVE_BOUND,
        "an idle keep-alive connection holds {heap} heap bytes (bound {KEEP_ALIVE_BOUND}): a request's buffers \
         or a large connection future kept while waiting; live allocations grown, by size: {grown}"
    );
}
