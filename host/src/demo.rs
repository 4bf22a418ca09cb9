//! Tiny servers that sluice can run itself (`[[demo-servers]]`), so an
//! example config works on a machine with nothing else installed. They are
//! for trying sluice out, not for production.

use crate::config::DemoKind;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub async fn serve(kind: DemoKind, listener: TcpListener, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(?kind, %addr, "demo server listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let serve = async {
                match kind {
                    DemoKind::Echo => echo(stream).await,
                    DemoKind::Http => http(stream, peer).await,
                    DemoKind::Banner => banner(stream).await,
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

async fn banner(mut stream: TcpStream) -> std::io::Result<()> {
    stream.write_all(b"220 sluice demo server speaks first; now echoing\r\n").await?;
    echo(stream).await
}

/// Answers each HTTP/1 request (keep-alive aware, bodies ignored unless
/// Content-Length says how long they are) with a short text page.
async fn http(stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
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
            format!("hello from the sluice demo web backend\nrequest: {}\nfrom: {peer}\n", request_line.trim_end());
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
