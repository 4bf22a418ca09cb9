//! `loadgen`: the load generator and the loopback test backend behind
//! `bench/compare.sh`, which puts sluice, HAProxy and nginx side by side in
//! front of the same backends.
//!
//! - `backend`: one port serving every test: a sink/source for relay
//!   transfers (a stream starting with a NUL byte), a tiny HTTP/1.x responder
//!   (keep-alive for HTTP/1.1) and a WebSocket endpoint that accepts the
//!   Upgrade and then stays idle.
//! - `relay`: one stream, N MiB up, down or both ways; MiB/s.
//! - `conn-rate`, `flash-rate`, `tls-rate`: closed-loop new connections per
//!   second (HTTP/1.0 request; Flash policy request; full TLS handshake with
//!   resumption off, then an HTTP/1.0 request).
//! - `ws-idle`: open N WebSockets, hold them until stdin closes.
//! - `free-ports`: print N free loopback ports for the proxies' configs.
//!
//! Every loop is bounded by a count and a deadline, and every address must be
//! a loopback address.

mod backend;
mod rate;
mod relay;
mod ws;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Load generator and loopback backend for bench/compare.sh")]
struct Cli {
    /// Worker threads of this process.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the test backend on 127.0.0.1.
    Backend(backend::Args),
    /// One relay transfer per direction through ADDR; prints MiB/s.
    Relay(relay::Args),
    /// New connections per second, each one HTTP/1.0 request read to close.
    ConnRate(rate::Args),
    /// Flash policy requests per second, each on a new connection.
    FlashRate(rate::Args),
    /// TLS handshakes per second (full, or resumed with --resume), each followed by one HTTP/1.0 request.
    TlsRate(rate::TlsArgs),
    /// Open COUNT idle WebSockets (or keep-alive connections) and hold them until stdin closes.
    WsIdle(ws::Args),
    /// Print COUNT free TCP ports on 127.0.0.1, one a line.
    FreePorts {
        #[arg(default_value_t = 1)]
        count: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .context("starting tokio")?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Backend(args) => backend::run(args).await,
            Command::Relay(args) => relay::run(args).await,
            Command::ConnRate(args) => rate::conn_rate(args).await,
            Command::FlashRate(args) => rate::flash_rate(args).await,
            Command::TlsRate(args) => rate::tls_rate(args).await,
            Command::WsIdle(args) => ws::run(args).await,
            Command::FreePorts { count } => free_ports(count),
        }
    });
    // A blocked stdin reader must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Refuse anything but loopback: this tool only ever measures this machine.
pub fn loopback(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address");
    }
    Ok(addr)
}

/// Parse "500ms", "10s", "2m".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 10s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn free_ports(count: usize) -> anyhow::Result<()> {
    let listeners = (0..count.min(1000))
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("binding 127.0.0.1:0")?;
    for listener in &listeners {
        println!("{}", listener.local_addr()?.port());
    }
    Ok(())
}
