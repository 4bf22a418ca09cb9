//! When an HTTP connection is idle, for the timeout hyper's HTTP/2 server
//! lacks: a connection with no request in flight and no new request head
//! for `header-timeout` is closed, whether it sent only the preface, stalled
//! inside a HEADERS block (no END_HEADERS) or finished its last exchange.
//! (HTTP/1 connections get the same limit from hyper's `header_read_timeout`.)

use super::ProxyBody;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The requests in flight on one connection, and when the last one ended.
pub struct Activity {
    state: Mutex<State>,
    ended: Notify,
}

struct State {
    in_flight: usize,
    last: Instant,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(State { in_flight: 0, last: Instant::now() }), ended: Notify::new() })
    }

    /// A request head arrived; it is in flight until the returned guard drops
    /// (with the response body, see [`Busy::hold`]).
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.lock().in_flight += 1;
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let mut ended = pin!(self.ended.notified());
            // Registered before looking, so an end between the look and the wait is not missed.
            ended.as_mut().enable();
            let (in_flight, last) = {
                let state = self.lock();
                (state.in_flight, state.last)
            };
            if in_flight > 0 {
                ended.await;
                continue;
            }
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the counts half-updated: use them as they are.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One request in flight.
pub struct Busy(Arc<Activity>);

impl Busy {
    /// The response body, holding the request in flight until it is sent (or dropped).
    pub fn hold(self, body: ProxyBody) -> ProxyBody {
        HeldBody { body, _busy: self }.boxed()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut state = self.0.lock();
            state.in_flight -= 1;
            state.last = Instant::now();
        }
        self.0.ended.notify_waiters();
    }
}

struct HeldBody {
    body: ProxyBody,
    _busy: Busy,
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_ended() {
        let activity = Activity::new();
        let timeout = Duration::from_millis(300);
        let busy = activity.begin();
        let started = Instant::now();
        let ender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(busy);
        });
        activity.idle_for(timeout).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5) + timeout, "a request in flight is not idle");
        ender.await.unwrap();
        // Nothing in flight: idle `timeout` after the last end.
        let again = Instant::now();
        activity.idle_for(timeout).await;
        assert_eq!(again.elapsed(), Duration::ZERO);
    }
}
