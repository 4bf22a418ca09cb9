//! Serve one HTTP connection with hyper, with the same limits on HTTP/1 and
//! HTTP/2:
//!
//! - a request head must arrive within `header-timeout`, and so must the next
//!   one on an idle keep-alive connection (HTTP/1: hyper's header read
//!   timeout; HTTP/2: the [`idle`](super::idle) watchdog, which closes with a
//!   GOAWAY, then drops the connection if it still lingers);
//! - HTTP/1 half-close: a client that sends its request and then shuts down
//!   its write side (FIN) still gets the whole response;
//! - HTTP/2 streams run in the connection's tracing span, so their log lines
//!   name the client and connection like HTTP/1's.

use super::idle::Activity;
use super::{HttpStage, handle};
use crate::io::PrefixedIo;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

/// How every HTTP/2 connection with prior knowledge starts.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serve HTTP on `io` (the sniffed head, then the client) until the client
/// is done. Returns hyper's error, if any.
pub async fn serve<S>(io: PrefixedIo<S>, stage: Arc<HttpStage>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head = io.unread_prefix();
    if !head.is_empty() && !H2_PREFACE.starts_with(&head[..head.len().min(H2_PREFACE.len())]) {
        // Certainly HTTP/1: the lean path serves what it can, hyper the rest.
        let io = match super::h1::serve(io, &stage).await {
            super::h1::Served::Done(result) => return result,
            super::h1::Served::Handover(io) => io,
        };
        // Boxed, as the HTTP/2 path below: only the connections that reach
        // hyper hold its state (see `connection::serve`).
        return Box::pin(serve_handed_over(io, stage)).await;
    }
    Box::pin(serve_auto(io, stage)).await
}

/// HTTP/1 the lean path handed over (an upgrade, `Expect`, HTTP/1.0 …).
async fn serve_handed_over<S>(io: PrefixedIo<S>, stage: Arc<HttpStage>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &stage.plan.config;
    // Served by hyper's own HTTP/1 connection rather than the
    // auto-detecting one, whose private wrapper would hide our stream type from
    // an upgraded connection. A WebSocket tunnel can then take the client's TCP
    // socket back and splice it (see `forward::tunnel`).
    let handler = stage.clone();
    let service = service_fn(move |request| {
        let stage = handler.clone();
        async move { Ok::<_, Infallible>(handle(&stage, request).await) }
    });
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes)
        .half_close(true);
    http1.serve_connection(TokioIo::new(io), service).with_upgrades().await.map_err(|e| e.to_string())
}

/// HTTP/2, or HTTP/1 not told apart yet: hyper's auto-detecting connection.
async fn serve_auto<S>(io: PrefixedIo<S>, stage: Arc<HttpStage>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &stage.plan.config;
    // HTTP/2 (or not known yet): every request is in flight from its head to
    // the end of its response body, for the idle watchdog.
    let activity = Activity::new();
    let (handler, tracked) = (stage.clone(), activity.clone());
    let service = service_fn(move |request| {
        let (stage, busy) = (handler.clone(), tracked.begin());
        async move { Ok::<_, Infallible>(handle(&stage, request).await.map(|body| busy.hold(body))) }
    });
    let mut builder = auto::Builder::new(SpanExecutor(tracing::Span::current()));
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes)
        .half_close(true);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(config.max_header_bytes as u32);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result.map_err(|e| e.to_string()),
        () = activity.idle_for(config.header_timeout) => {}
    }
    // Idle: a GOAWAY, then whatever is still in flight may finish; a peer that
    // neither finishes nor closes is dropped after another idle period.
    tracing::debug!(timeout = ?config.header_timeout, "idle HTTP connection closed");
    connection.as_mut().graceful_shutdown();
    let linger = async {
        tokio::time::sleep(config.header_timeout).await;
        activity.idle_for(config.header_timeout).await;
    };
    tokio::select! {
        result = connection.as_mut() => result.map_err(|e| e.to_string()),
        () = linger => Err(format!("still open {:?} after closing it for idleness", config.header_timeout)),
    }
}

/// Spawns hyper's HTTP/2 stream tasks in the connection's span.
#[derive(Clone)]
struct SpanExecutor(tracing::Span);

impl<F> hyper::rt::Executor<F> for SpanExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future.instrument(self.0.clone()));
    }
}
