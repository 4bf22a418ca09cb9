//! Bodies relayed by their framing, through the reading side's buffer:
//! Content-Length bodies are copied as they are; chunked bodies are decoded
//! strictly and written again as plain chunks (extensions and trailers are
//! not passed on); a response read to its backend's close goes to the
//! client chunked, so the client's connection stays usable. For an HTTP/1.0
//! client ([`Sink::plain`]) both go out as bare bytes, ended by the close.

use super::parse::{Body, chunk_line};
use super::{Buffered, Sink};
use tokio::io::{AsyncRead, AsyncWrite};

/// Most bytes of trailer fields after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a body did not get through.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The sending side: malformed framing, or gone before the end.
    #[error("{0}")]
    Read(String),
    /// The receiving side failed.
    #[error("{0}")]
    Write(std::io::Error),
}

/// Relay a body of `kind` from `from` to `to`, after whatever `sink` holds
/// already (a head); everything is written when it returns `Ok`.
pub async fn relay<R, W>(kind: Body, from: &mut Buffered<R>, to: &mut W, sink: &mut Sink) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match kind {
        Body::None => {}
        Body::Length(length) => copy(length, from, to, sink).await?,
        Body::Chunked => chunked(from, to, sink).await?,
        Body::ToClose => to_close(from, to, sink).await?,
    }
    sink.flush(to).await.map_err(RelayError::Write)
}

/// Wait for more bytes, writing what is gathered first.
async fn more<R, W>(from: &mut Buffered<R>, to: &mut W, sink: &mut Sink) -> Result<usize, RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    sink.flush(to).await.map_err(RelayError::Write)?;
    from.fill().await.map_err(|e| RelayError::Read(e.to_string()))
}

async fn copy<R, W>(mut left: u64, from: &mut Buffered<R>, to: &mut W, sink: &mut Sink) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while left > 0 {
        if from.data().is_empty() && more(from, to, sink).await? == 0 {
            return Err(RelayError::Read("closed before the end of the body".into()));
        }
        let take = from.data().len().min(usize::try_from(left).unwrap_or(usize::MAX));
        sink.put(to, &from.data()[..take]).await.map_err(RelayError::Write)?;
        from.consume(take);
        left -= take as u64;
        sink.body_bytes += take as u64;
    }
    Ok(())
}

async fn chunked<R, W>(from: &mut Buffered<R>, to: &mut W, sink: &mut Sink) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let (size, line) = loop {
            match chunk_line(from.data()) {
                Ok(Some(found)) => break found,
                Ok(None) if more(from, to, sink).await? == 0 => {
                    return Err(RelayError::Read("closed inside a chunked body".into()));
                }
                Ok(None) => {}
                Err(why) => return Err(RelayError::Read(why.into())),
            }
        };
        from.consume(line);
        if size == 0 {
            trailers(from, to, sink).await?;
            return last_chunk(to, sink).await;
        }
        if !sink.plain {
            sink.put(to, format!("{size:x}\r\n").as_bytes()).await.map_err(RelayError::Write)?;
        }
        copy(size, from, to, sink).await?;
        while from.data().len() < 2 {
            if more(from, to, sink).await? == 0 {
                return Err(RelayError::Read("closed inside a chunked body".into()));
            }
        }
        if &from.data()[..2] != b"\r\n" {
            return Err(RelayError::Read("a chunk longer than its size".into()));
        }
        from.consume(2);
        if !sink.plain {
            sink.put(to, b"\r\n").await.map_err(RelayError::Write)?;
        }
    }
}

/// The end of a body written as chunks (nothing for a plain one).
async fn last_chunk<W: AsyncWrite + Unpin>(to: &mut W, sink: &mut Sink) -> Result<(), RelayError> {
    if sink.plain {
        return Ok(());
    }
    sink.put(to, b"0\r\n\r\n").await.map_err(RelayError::Write)
}

/// Skip the trailer section up to its empty line; every line must end in CRLF.
async fn trailers<R, W>(from: &mut Buffered<R>, to: &mut W, sink: &mut Sink) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut seen = 0;
    loop {
        let Some(lf) = from.data().iter().position(|&b| b == b'\n') else {
            if from.data().len() + seen > MAX_TRAILERS {
                return Err(RelayError::Read("trailers too large".into()));
            }
            if more(from, to, sink).await? == 0 {
                return Err(RelayError::Read("closed inside the trailers".into()));
            }
            continue;
        };
        if lf == 0 || from.data()[lf - 1] != b'\r' {
            return Err(RelayError::Read("a trailer line without CRLF".into()));
        }
        from.consume(lf + 1);
        seen += lf + 1;
        if lf == 1 {
            return Ok(());
        }
        if seen > MAX_TRAILERS {
            return Err(RelayError::Read("trailers too large".into()));
        }
    }
}

async fn to_close<R, W>(from: &mut Buffered<R>, to: &mut W, sink: &mut Sink) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if from.data().is_empty() && more(from, to, sink).await? == 0 {
            return last_chunk(to, sink).await;
        }
        let len = from.data().len();
        if sink.plain {
            sink.put(to, from.data()).await.map_err(RelayError::Write)?;
        } else {
            sink.put(to, format!("{len:x}\r\n").as_bytes()).await.map_err(RelayError::Write)?;
            sink.put(to, from.data()).await.map_err(RelayError::Write)?;
            sink.put(to, b"\r\n").await.map_err(RelayError::Write)?;
        }
        sink.body_bytes += len as u64;
        from.consume(len);
    }
}

/// Before a chunked request goes anywhere: its first chunk-size line must
/// be valid (read until it is complete), so a body that is malformed from
/// its first byte reaches no backend.
pub async fn check_first_chunk<R: AsyncRead + Unpin>(from: &mut Buffered<R>) -> Result<(), RelayError> {
    loop {
        match chunk_line(from.data()) {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {
                if from.fill().await.map_err(|e| RelayError::Read(e.to_string()))? == 0 {
                    return Err(RelayError::Read("closed inside a chunked body".into()));
                }
            }
            Err(why) => return Err(RelayError::Read(why.into())),
        }
    }
}
