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
use std::task::{Context, Poll};
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
    pub fn within<F: Future>(&mut self, limit: Duration, work: F) -> Within<'_, F> {
        Within { work, sleep: &mut self.sleep, deadline: Instant::now() + limit, armed: false }
    }
}

pin_project_lite::pin_project! {
    /// [`Deadline::within`]'s future. A struct rather than an `async fn`: an
    /// `async fn` would keep `work` twice in its state (the argument and the
    /// pinned copy it polls), and every connection's task holds that state.
    pub struct Within<'a, F> {
        #[pin]
        work: F,
        sleep: &'a mut Pin<Box<Sleep>>,
        deadline: Instant,
        armed: bool,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.work.poll(cx) {
            return Poll::Ready(Ok(done));
        }
        if !*this.armed {
            this.sleep.as_mut().reset(*this.deadline);
            *this.armed = true;
        }
        this.sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
    }
}
