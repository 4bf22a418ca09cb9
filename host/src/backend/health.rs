//! Active health checks, and the rise/fall bookkeeping shared with passive
//! marking (failed connects).
//!
//! Every `interval`, each server of a backend is checked: a TCP connect, or,
//! with `http-path`, a `GET` whose status must be `expect-status`. A server
//! goes down after `fall` consecutive failures and comes back after `rise`
//! consecutive successes. Servers start up, so traffic flows before the
//! first check. The checker stops when its backend is dropped (a reload
//! replaced it).

use super::{Backend, Server};
use crate::config::HealthCheck;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn run(backend: Weak<Backend>) {
    loop {
        let Some(check) = backend.upgrade().and_then(|b| b.config.health_check.clone()) else { return };
        tokio::time::sleep(check.interval).await;
        let Some(live) = backend.upgrade() else { return };
        let mut checks = tokio::task::JoinSet::new();
        for server in live.servers().iter() {
            let (check, server) = (check.clone(), server.clone());
            checks.spawn(async move {
                let ok = probe(&server, &check).await;
                (server, ok)
            });
        }
        drop(live); // do not keep a replaced backend alive while checking
        while let Some(Ok((server, ok))) = checks.join_next().await {
            let Some(live) = backend.upgrade() else { return };
            record(&live, &server, ok);
        }
    }
}

/// Count one check result; flip the server's state when the streak is long enough.
pub fn record(backend: &Backend, server: &Server, ok: bool) {
    let Some(check) = &backend.config.health_check else { return };
    let up = server.is_up();
    if ok == up {
        server.streak.store(0, Ordering::Relaxed); // already in that state
        return;
    }
    let streak = server.streak.fetch_add(1, Ordering::Relaxed) + 1;
    let needed = if ok { check.rise } else { check.fall };
    if streak >= needed {
        server.up.store(ok, Ordering::Relaxed);
        server.streak.store(0, Ordering::Relaxed);
        if ok {
            tracing::info!(backend = %backend.config.name, server = %server.addr, "server is up again");
        } else {
            tracing::warn!(backend = %backend.config.name, server = %server.addr, "server is down: no new traffic");
        }
    }
}

async fn probe(server: &Server, check: &HealthCheck) -> bool {
    tokio::time::timeout(check.timeout, async {
        let mut stream = TcpStream::connect(server.socket).await.ok()?;
        let Some(path) = &check.http_path else { return Some(()) };
        // The Host is the entry as configured: a name when the server came from one.
        let host = &server.entry;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-health\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        // "HTTP/1.1 200"
        let status: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        (head.starts_with(b"HTTP/1.") && status == check.expect_status).then_some(())
    })
    .await
    .ok()
    .flatten()
    .is_some()
}
