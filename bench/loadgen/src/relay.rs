//! One relay transfer per direction: a single TCP stream carrying N MiB up,
//! down, or both ways at once, timed until both directions finished.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const CHUNK: usize = 256 << 10;

#[derive(clap::Args)]
pub struct Args {
    /// Where to connect (the proxy, or the backend itself for the direct figure).
    #[arg(long)]
    addr: SocketAddr,
    /// MiB per direction.
    #[arg(long, default_value_t = 2048)]
    mib: usize,
    /// upload, download, both, or all (the three in turn).
    #[arg(long, default_value = "all")]
    direction: String,
    /// Give up on a transfer after this long.
    #[arg(long, default_value = "600s", value_parser = crate::parse_duration)]
    timeout: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let addr = crate::loopback(args.addr)?;
    let directions: &[u8] = match args.direction.as_str() {
        "upload" => b"U",
        "download" => b"D",
        "both" => b"B",
        "all" => b"UDB",
        other => bail!("unknown direction `{other}` (upload, download, both, all)"),
    };
    let bytes = args.mib << 20;
    for &tag in directions {
        let elapsed =
            tokio::time::timeout(args.timeout, transfer(addr, tag, bytes)).await.context("transfer timed out")??;
        let name = match tag {
            b'U' => "upload",
            b'D' => "download",
            _ => "both",
        };
        let mibps = args.mib as f64 / elapsed.as_secs_f64();
        println!("relay direction={name} mib={} seconds={:.3} mibps={mibps:.0}", args.mib, elapsed.as_secs_f64());
    }
    Ok(())
}

async fn transfer(addr: SocketAddr, tag: u8, bytes: usize) -> anyhow::Result<Duration> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let mut header = vec![0u8, tag];
    header.extend_from_slice(&(bytes as u64).to_be_bytes());
    write.write_all(&header).await?;
    let upload = tag != b'D';
    let sender = tokio::spawn(async move {
        if upload {
            send(&mut write, bytes).await?;
        }
        write.shutdown().await
    });
    let mut scratch = vec![0u8; CHUNK];
    let received = sink(&mut read, &mut scratch).await?;
    sender.await??;
    let expected = if tag == b'U' { 0 } else { bytes };
    if received != expected {
        bail!("received {received} bytes, expected {expected}");
    }
    Ok(started.elapsed())
}

pub async fn send(write: &mut OwnedWriteHalf, bytes: usize) -> std::io::Result<()> {
    let chunk = vec![0x5au8; CHUNK];
    let mut sent = 0;
    while sent < bytes {
        let n = CHUNK.min(bytes - sent);
        write.write_all(&chunk[..n]).await?;
        sent += n;
    }
    Ok(())
}

pub async fn sink(read: &mut OwnedReadHalf, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        match read.read(buf).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}
