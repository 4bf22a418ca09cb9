//! A timeout reused for a connection's life.
//!
//! `tokio::time::timeout` per request registers a new timer each time: the
//! timer wheel's lock, and a wake-up of the driver (an eventfd write and one
//! more `epoll_wait`) whenever the new deadline is the earliest, as it is on
//! every request of a lone connection. Moving an existing timer's deadline
//! later is one atomic store; the wheel re-files it when the old deadline
//! passes. Work that is done at its first poll sets no timer at all.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
}

/// The deadline passed before the work finished.
#[derive(Debug)]
pub struct Elapsed;

impl Deadline {
    pub fn new() -> Self {
        // Far enough never to fire before the first `within` sets it.
        Self { sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))) }
    }

    /// Run `work` with `limit` to finish, counted from now. The timer is
    /// set only if `work` cannot finish at once: a head already read (the
    /// first request of most connections) costs no trip to the timer wheel.
    pub async fn within<F: Future>(&mut self, limit: Duration, work: F) -> Result<F::Output, Elapsed> {
        let deadline = Instant::now() + limit;
        let mut work = std::pin::pin!(work);
        let mut armed = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
            if !armed {
                self.sleep.as_mut().reset(deadline);
                armed = true;
            }
            self.sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
        })
        .await
    }
}
