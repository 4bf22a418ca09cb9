//! Single-stream relay throughput through the real `sluice` binary, against
//! the same transfer straight to the backend (the loopback limit).
//!
//! `cargo bench --bench relay` (or `bench/relay.sh`). The transfer size per
//! direction is `RELAY_MIB` (default 2048). The proxy runs as its own process
//! with the release binary; this process is the client and the backend.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 256 << 10;

#[derive(Clone, Copy, Debug)]
enum Direction {
    Upload,
    Download,
    Both,
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let mib: usize = std::env::var("RELAY_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(run(mib));
}

async fn run(mib: usize) {
    let bytes = mib << 20;
    let backend = start_backend(bytes).await;
    let (proxy_addr, mut proxy) = start_proxy(backend).await;
    println!("relay throughput, {mib} MiB per direction, one TCP stream, loopback");
    println!("{:<10} {:>14} {:>14} {:>8}", "direction", "direct MiB/s", "sluice MiB/s", "ratio");
    for direction in [Direction::Upload, Direction::Download, Direction::Both] {
        let direct = transfer(backend, direction, bytes).await;
        let proxied = transfer(proxy_addr, direction, bytes).await;
        let rate = |elapsed: Duration| (bytes as f64 / (1 << 20) as f64) / elapsed.as_secs_f64();
        println!(
            "{:<10} {:>14.0} {:>14.0} {:>7.0}%",
            format!("{direction:?}").to_lowercase(),
            rate(direct),
            rate(proxied),
            100.0 * direct.as_secs_f64() / proxied.as_secs_f64()
        );
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
}

/// A backend that reads the direction from the first byte, then sinks
/// and/or sources `bytes` bytes.
async fn start_backend(bytes: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let (mut read, mut write) = stream.into_split();
                let mut first = [0u8; 1];
                read.read_exact(&mut first).await?;
                let source = matches!(first[0], b'D' | b'B');
                let sender = tokio::spawn(async move {
                    if source {
                        send(&mut write, bytes).await?;
                    }
                    write.shutdown().await
                });
                sink(&mut read).await?;
                sender.await.unwrap()
            });
        }
    });
    addr
}

/// One transfer; returns how long it took until both directions finished.
async fn transfer(addr: SocketAddr, direction: Direction, bytes: usize) -> Duration {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let tag = match direction {
        Direction::Upload => b'U',
        Direction::Download => b'D',
        Direction::Both => b'B',
    };
    write.write_all(&[tag]).await.unwrap();
    let upload = !matches!(direction, Direction::Download);
    let sender = tokio::spawn(async move {
        if upload {
            send(&mut write, bytes).await.unwrap();
        }
        write.shutdown().await.unwrap();
    });
    let received = sink(&mut read).await.unwrap();
    sender.await.unwrap();
    let expected = if matches!(direction, Direction::Upload) { 0 } else { bytes };
    assert_eq!(received, expected, "{direction:?}: every byte arrived");
    started.elapsed()
}

async fn send(write: &mut tokio::net::tcp::OwnedWriteHalf, bytes: usize) -> std::io::Result<()> {
    let chunk = vec![0x5au8; CHUNK];
    let mut sent = 0;
    while sent < bytes {
        let n = CHUNK.min(bytes - sent);
        write.write_all(&chunk[..n]).await?;
        sent += n;
    }
    Ok(())
}

async fn sink(read: &mut tokio::net::tcp::OwnedReadHalf) -> std::io::Result<usize> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        match read.read(&mut buf).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

/// Start the release `sluice` binary in front of `backend`, on port 0.
async fn start_proxy(backend: SocketAddr) -> (SocketAddr, std::process::Child) {
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sluice");
    assert!(binary.exists(), "build it first: cargo build --release");
    let config = std::env::temp_dir().join(format!("sluice-relay-bench-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nname = \"bench\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\ndefault-backend = \"sink\"\n\
             [backends.sink]\nservers = [\"{backend}\"]\n[plugins.sniff]\nbuiltin = \"sniff\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        // The "listening" line (with `addr=`) comes from the reload module, which binds listeners.
        .env("SLUICE_LOG", "warn,sluice::reload=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = tokio::process::ChildStderr::from_std(child.stderr.take().unwrap()).unwrap();
    let mut lines = BufReader::new(stderr).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(at) = line.find("addr=") {
            let addr = line[at + 5..].split_whitespace().next().unwrap().parse().unwrap();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (addr, child);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("sluice exited before listening");
}
