//! Reading one PROXY header off a listener's accepted stream, under a deadline.

use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::v2::{V2_FIXED_LEN, V2_MAX_BODY};
use super::{Parsed, ProxiedAddrs, ProxyHeaderError, parse};

/// The longest header [`read_header`] accepts.
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + V2_MAX_BODY as usize;

/// Why [`read_header`] got no header.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
    #[error("no complete PROXY header before the deadline")]
    Timeout,
    #[error("connection closed before a complete PROXY header")]
    Closed,
    #[error(transparent)]
    Invalid(#[from] ProxyHeaderError),
}

impl ReadError {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ReadError::Io(_) => "proxy-header-io",
            ReadError::Timeout => "proxy-header-timeout",
            ReadError::Closed => "proxy-header-closed",
            ReadError::Invalid(_) => "proxy-header-invalid",
        }
    }
}

/// Read one PROXY header from `stream` before `timeout` elapses. Returns the
/// addresses (None: use the real peer) and the bytes read after the header,
/// which the caller must replay. Reads at most [`MAX_HEADER_LEN`] bytes.
pub async fn read_header<S>(stream: &mut S, timeout: Duration) -> Result<(Option<ProxiedAddrs>, Vec<u8>), ReadError>
where
    S: AsyncRead + Unpin,
{
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; MAX_HEADER_LEN];
    let mut filled = 0;
    loop {
        // `parse` is Incomplete only below MAX_HEADER_LEN bytes, so there is
        // always room here; were there none, the read would return 0 (Closed).
        let room = buf.get_mut(filled..).unwrap_or_default();
        let n = match tokio::time::timeout_at(deadline, stream.read(room)).await {
            Err(_elapsed) => return Err(ReadError::Timeout),
            Ok(read) => read?,
        };
        if n == 0 {
            return Err(ReadError::Closed);
        }
        filled += n;
        let got = &buf[..filled];
        if let Parsed::Header { len, addrs, .. } = parse(got)? {
            return Ok((addrs, got.get(len..).unwrap_or_default().to_vec()));
        }
    }
}
