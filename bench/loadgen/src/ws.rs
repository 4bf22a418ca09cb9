//! Idle connections: open `count` connections, each a WebSocket (a real
//! HTTP/1.1 Upgrade answered by `101`) or a keep-alive HTTP/1.1 connection
//! after one request, print `ready open=… failed=…`, and hold them until
//! stdin closes (or `--hold` passes), then close them all.

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(clap::Args)]
pub struct Args {
    /// The proxy (or backend) to connect to.
    #[arg(long)]
    addr: SocketAddr,
    /// How many WebSockets to open.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Close everything after this long even if stdin stays open.
    #[arg(long, default_value = "600s", value_parser = crate::parse_duration)]
    hold: Duration,
    /// Deadline for one handshake.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// `websocket` (Upgrade, 101, then idle) or `keepalive` (one HTTP/1.1
    /// request and its response, then the connection stays open, idle).
    #[arg(long, default_value = "websocket")]
    kind: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let addr = crate::loopback(args.addr)?;
    let keepalive = match args.kind.as_str() {
        "websocket" => false,
        "keepalive" => true,
        other => anyhow::bail!("--kind {other}: expected websocket or keepalive"),
    };
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..args.count {
        let permit = permits.clone().acquire_owned().await?;
        let timeout = args.timeout;
        tasks.spawn(async move {
            let result = tokio::time::timeout(timeout, open(addr, i, keepalive)).await;
            drop(permit);
            match result {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!("handshake timed out")),
            }
        });
    }
    let (mut open_streams, mut failed, mut first_error) = (Vec::with_capacity(args.count), 0, None);
    while let Some(result) = tasks.join_next().await {
        match result? {
            Ok(stream) => open_streams.push(stream),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    if let Some(error) = first_error {
        eprintln!("ws-idle: first error: {error}");
    }
    println!("ready open={} failed={failed} seconds={:.2}", open_streams.len(), started.elapsed().as_secs_f64());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let _ = tokio::time::timeout(args.hold, lines.next_line()).await;
    drop(open_streams);
    println!("closed");
    Ok(())
}

async fn open(addr: SocketAddr, i: usize, keepalive: bool) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    if keepalive {
        stream.write_all(b"GET / HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: loadgen\r\n\r\n").await?;
        read_response(&mut stream).await?;
        return Ok(stream);
    }
    // A distinct 16-byte nonce per connection, base64-encoded as RFC 6455 asks.
    let key = data_encoding::BASE64.encode(&(i as u128).to_be_bytes());
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: bench.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 << 10 || stream.read_buf(&mut head).await? == 0 {
            anyhow::bail!("closed before the 101");
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(&head[..head.len().min(40)]).into_owned();
        anyhow::bail!("not upgraded: {line:?}");
    }
    Ok(stream)
}

/// Read one HTTP/1.1 200 response with a Content-Length body.
async fn read_response(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > 16 << 10 || stream.read_buf(&mut buf).await? == 0 {
            anyhow::bail!("closed before the response head");
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        anyhow::bail!("unexpected response: {:?}", &head[..head.len().min(40)]);
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no content-length")?;
    while buf.len() < head_end + length {
        if stream.read_buf(&mut buf).await? == 0 {
            anyhow::bail!("closed inside the body");
        }
    }
    Ok(())
}
