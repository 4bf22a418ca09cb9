//! Idle WebSockets: open `count` connections, each with a real HTTP/1.1
//! Upgrade handshake answered by `101`, print `ready open=… failed=…`, and
//! hold them until stdin closes (or `--hold` passes), then close them all.

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
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let addr = crate::loopback(args.addr)?;
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 0..args.count {
        let permit = permits.clone().acquire_owned().await?;
        let timeout = args.timeout;
        tasks.spawn(async move {
            let result = tokio::time::timeout(timeout, open(addr, i)).await;
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

async fn open(addr: SocketAddr, i: usize) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
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
