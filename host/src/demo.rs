//! Tiny servers that sluice can run itself (`[[demo-servers]]`), so an
//! example config works on a machine with nothing else installed. They are
//! for trying sluice out, not for production. Each says who it is (its
//! `name` and address) in the first line it sends, so a routing change shows
//! with curl or nc.

use crate::config::{DemoKind, DemoServer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub async fn serve(demo: DemoServer, listener: TcpListener, stop: CancellationToken) {
    let kind = demo.kind;
    // The bound address, not the configured one: port 0 works too.
    let addr = listener.local_addr().unwrap_or(demo.bind);
    tracing::info!(?kind, name = %demo.name, %addr, "demo server listening");
    let who: Arc<str> = format!("\"{}\" ({addr})", demo.name).into();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let stop = stop.clone();
        let who = who.clone();
        tokio::spawn(async move {
            let serve = async {
                match kind {
                    DemoKind::Echo => echo(stream).await,
                    DemoKind::Http => http(stream, peer, &who).await,
                    DemoKind::Banner => banner(stream, &who).await,
                }
            };
            tokio::select! {
                _ = serve => {},
                () = stop.cancelled() => {},
            }
        });
    }
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let (mut read, mut write) = stream.split();
    tokio::io::copy(&mut read, &mut write).await?;
    write.shutdown().await
}

/// `who` is the server's name and address, e.g. `"tcp" (127.0.0.1:9082)`.
async fn banner(mut stream: TcpStream, who: &str) -> std::io::Result<()> {
    let greeting = format!("220 sluice demo backend {who} speaks first; now echoing\r\n");
    stream.write_all(greeting.as_bytes()).await?;
    echo(stream).await
}

/// Answers each HTTP/1 request (keep-alive aware, bodies ignored unless
/// Content-Length says how long they are) with a short text page that
/// starts with who answered.
async fn http(stream: TcpStream, peer: SocketAddr, who: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut close = request_line.ends_with("HTTP/1.0\r\n");
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                content_length = value.trim().parse().unwrap_or(0);
            } else if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0u8; content_length.min(1 << 20)];
        reader.read_exact(&mut body).await?;
        let text =
            format!("hello from the sluice demo backend {who}\nrequest: {}\nfrom: {peer}\n", request_line.trim_end());
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{text}",
            text.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        reader.get_mut().write_all(response.as_bytes()).await?;
        if close {
            return reader.get_mut().shutdown().await;
        }
    }
}
