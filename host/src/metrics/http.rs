//! The HTTP series of one listener and of one backend, looked up in the
//! registry once when a config version is built, so counting a request is a
//! few relaxed atomic adds: no lock, no allocation, no lookup by name.
//!
//! Cardinality: listeners and backends come from the config, status classes
//! (`1xx`…`5xx`) and error kinds ([`BackendErrorKind`]) are fixed sets.

use super::{Histogram, REQUEST_BUCKETS, counter, histogram_with};
use bytes::Bytes;
use http::StatusCode;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// The `class` label values, indexed by [`class_index`].
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// 0 for 1xx … 4 for 5xx (a status outside 100..=599 cannot be built by `http`).
fn class_index(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// One listener's HTTP series.
pub struct ListenerHttpMetrics {
    /// `sluice_http_responses_total` by status class.
    responses: [Arc<AtomicU64>; 5],
    /// `sluice_http_request_duration_seconds` by status class.
    latency: [Arc<Histogram>; 5],
    /// `sluice_bytes_total{direction="in"}`: request bodies and tunnel bytes from clients.
    pub bytes_in: Arc<AtomicU64>,
    /// `sluice_bytes_total{direction="out"}`: response bodies and tunnel bytes to clients.
    pub bytes_out: Arc<AtomicU64>,
}

impl ListenerHttpMetrics {
    pub fn new(listener: &str) -> Self {
        let labels = |class: &str| vec![("listener", listener.to_string()), ("class", class.to_string())];
        let bytes = |direction: &str| {
            counter(
                "sluice_bytes_total",
                vec![("listener", listener.to_string()), ("direction", direction.to_string())],
            )
        };
        Self {
            responses: CLASSES.map(|class| counter("sluice_http_responses_total", labels(class))),
            latency: CLASSES
                .map(|class| histogram_with("sluice_http_request_duration_seconds", labels(class), REQUEST_BUCKETS)),
            bytes_in: bytes("in"),
            bytes_out: bytes("out"),
        }
    }

    /// Count a response whose head is ready `latency` after its request head arrived.
    pub fn response(&self, status: StatusCode, latency: Duration) {
        let class = class_index(status);
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        self.latency[class].observe(latency);
    }

    /// Count the bytes of a WebSocket tunnel when it closes.
    pub fn tunnel(&self, client_to_backend: u64, backend_to_client: u64) {
        self.bytes_in.fetch_add(client_to_backend, Ordering::Relaxed);
        self.bytes_out.fetch_add(backend_to_client, Ordering::Relaxed);
    }
}

/// Why a backend did not give a (complete) answer: the `kind` label of
/// `sluice_backend_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// Every server down, or the queue full or timed out (HTTP 503).
    Unavailable,
    /// No server accepted a connection (HTTP 502, or a raw connection closed).
    Connect,
    /// A connection failed before the response head (HTTP 502).
    Response,
    /// No response head within `response-timeout` (HTTP 504).
    Timeout,
    /// The response body broke off after its head was sent.
    Body,
}

impl BackendErrorKind {
    const ALL: [BackendErrorKind; 5] = [Self::Unavailable, Self::Connect, Self::Response, Self::Timeout, Self::Body];

    pub fn label(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Connect => "connect",
            Self::Response => "response",
            Self::Timeout => "timeout",
            Self::Body => "body",
        }
    }
}

/// One backend's series.
pub struct BackendMetrics {
    /// `sluice_backend_requests_total` by the status class the client got.
    requests: [Arc<AtomicU64>; 5],
    /// `sluice_backend_errors_total` by [`BackendErrorKind`], in `ALL` order.
    errors: [Arc<AtomicU64>; 5],
}

impl BackendMetrics {
    pub fn new(backend: &str) -> Self {
        let labels = |key: &'static str, value: &str| vec![("backend", backend.to_string()), (key, value.to_string())];
        Self {
            requests: CLASSES.map(|class| counter("sluice_backend_requests_total", labels("class", class))),
            errors: BackendErrorKind::ALL
                .map(|kind| counter("sluice_backend_errors_total", labels("kind", kind.label()))),
        }
    }

    /// Count a request sent to this backend, by the status the client got.
    pub fn request(&self, status: StatusCode) {
        self.requests[class_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self, kind: BackendErrorKind) {
        self.error_counter(kind).fetch_add(1, Ordering::Relaxed);
    }

    fn error_counter(&self, kind: BackendErrorKind) -> &Arc<AtomicU64> {
        &self.errors[BackendErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)]
    }

    /// A counter for response bodies that break off, for [`Counted::with_errors`].
    pub fn body_errors(&self) -> Arc<AtomicU64> {
        self.error_counter(BackendErrorKind::Body).clone()
    }
}

/// A body that adds the length of every data frame to a byte counter as it
/// passes (and counts an error once, if asked to).
pub struct Counted<B> {
    inner: B,
    bytes: Arc<AtomicU64>,
    errors: Option<Arc<AtomicU64>>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, bytes: &Arc<AtomicU64>) -> Self {
        Self { inner, bytes: bytes.clone(), errors: None }
    }

    /// Also count a failed frame on `errors` (once: the body ends there).
    pub fn with_errors(mut self, errors: Arc<AtomicU64>) -> Self {
        self.errors = Some(errors);
        self
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(errors) = this.errors.take() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[test]
    fn statuses_fall_into_their_class() {
        assert_eq!(class_index(StatusCode::SWITCHING_PROTOCOLS), 0);
        assert_eq!(class_index(StatusCode::OK), 1);
        assert_eq!(class_index(StatusCode::NOT_FOUND), 3);
        assert_eq!(class_index(StatusCode::GATEWAY_TIMEOUT), 4);
        assert_eq!(class_index(StatusCode::from_u16(599).unwrap()), 4);
    }

    #[tokio::test]
    async fn counted_bodies_add_their_data_and_one_error() {
        let bytes = Arc::new(AtomicU64::new(0));
        let body = Counted::new(Full::new(Bytes::from_static(b"hello")), &bytes);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert_eq!(bytes.load(Ordering::Relaxed), 5);

        let errors = Arc::new(AtomicU64::new(0));
        let frames: Vec<Result<Frame<Bytes>, &str>> =
            vec![Ok(Frame::data(Bytes::from_static(b"abc"))), Err("reset"), Err("reset")];
        let stream = futures_util::stream::iter(frames);
        let mut body = Counted::new(StreamBody::new(stream), &bytes).with_errors(errors.clone());
        while body.frame().await.is_some() {}
        assert_eq!(bytes.load(Ordering::Relaxed), 8);
        assert_eq!(errors.load(Ordering::Relaxed), 1);
    }
}
