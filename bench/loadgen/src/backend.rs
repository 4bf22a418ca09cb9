//! The test backend all three proxies face. One port, three behaviours chosen
//! by the first bytes a connection sends:
//!
//! - `\0`, a direction byte (`U`, `D`, `B`) and a big-endian u64 byte count:
//!   a relay transfer. The backend sinks whatever arrives until EOF and, for
//!   `D` and `B`, sends the byte count, then closes its side.
//! - an HTTP/1.x request: a fixed-size `200` (keep-alive for HTTP/1.1 unless
//!   `Connection: close`; HTTP/1.0 closes after the response).
//! - an HTTP/1.1 `Upgrade: websocket` request: `101` with the proper
//!   `Sec-WebSocket-Accept`, then idle until the peer closes.

use crate::relay::{CHUNK, send, sink};
use anyhow::Context;
use sha1::{Digest, Sha1};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(clap::Args)]
pub struct Args {
    /// Port on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// HTTP response body size in bytes.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
}

const MAX_HEAD: usize = 64 << 10;
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await.context("binding the backend")?;
    println!("listening {}", listener.local_addr()?);
    let body: Arc<[u8]> = vec![b'x'; args.body_bytes].into();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors: back off instead of spinning.
                eprintln!("backend accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let body = body.clone();
        tokio::spawn(async move {
            let _ = serve(stream, &body).await;
        });
    }
}

async fn serve(mut stream: TcpStream, body: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    if stream.read_buf(&mut buf).await? == 0 {
        return Ok(());
    }
    if buf[0] == 0 { relay(stream, buf).await } else { http(stream, buf, body).await }
}

async fn relay(mut stream: TcpStream, mut buf: Vec<u8>) -> std::io::Result<()> {
    while buf.len() < 10 {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
    let source = matches!(buf[1], b'D' | b'B');
    let bytes = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")) as usize;
    let (mut read, mut write) = stream.into_split();
    let sender = tokio::spawn(async move {
        if source {
            send(&mut write, bytes).await?;
        }
        write.shutdown().await
    });
    let mut scratch = vec![0u8; CHUNK];
    sink(&mut read, &mut scratch).await?;
    sender.await.map_err(std::io::Error::other)?
}

struct Head {
    len: usize,
    keep_alive: bool,
    content_length: usize,
    websocket_key: Option<String>,
}

fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let http11 = lines.next()?.ends_with("HTTP/1.1");
    let (mut connection, mut upgrade, mut key, mut content_length) = (String::new(), false, None, 0);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "connection" => connection = value.to_ascii_lowercase(),
            "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
            "sec-websocket-key" => key = Some(value.to_string()),
            "content-length" => content_length = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let keep_alive = if http11 { !connection.contains("close") } else { connection.contains("keep-alive") };
    Some(Head { len: end, keep_alive, content_length, websocket_key: key.filter(|_| upgrade && http11) })
}

async fn http(mut stream: TcpStream, mut buf: Vec<u8>, body: &[u8]) -> std::io::Result<()> {
    let ok_keep = [
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
        body,
    ]
    .concat();
    let ok_close = [
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        body,
    ]
    .concat();
    loop {
        let head = loop {
            if let Some(head) = parse_head(&buf) {
                break head;
            }
            if buf.len() > MAX_HEAD || stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        if let Some(key) = head.websocket_key {
            let accept = data_encoding::BASE64.encode(&Sha1::digest(format!("{key}{WS_GUID}").as_bytes()));
            let reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
            );
            stream.write_all(reply.as_bytes()).await?;
            // Idle: discard anything (frames) until the peer closes.
            let mut scratch = [0u8; 1024];
            while stream.read(&mut scratch).await? > 0 {}
            return Ok(());
        }
        while buf.len() < head.len + head.content_length {
            if head.content_length > (1 << 20) || stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.drain(..head.len + head.content_length);
        if head.keep_alive {
            stream.write_all(&ok_keep).await?;
        } else {
            stream.write_all(&ok_close).await?;
            return stream.shutdown().await;
        }
    }
}
