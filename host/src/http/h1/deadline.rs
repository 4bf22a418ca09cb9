//! A timeout reused for a connection's life.
//!
//! `tokio::time::timeout` per request registers a new timer each time: the
//! timer wheel's lock, and a wake-up of the driver (an eventfd write and one
//! more `epoll_wait`) whenever the new deadline is the earliest, as it is on
//! every request of a lone connection. Moving an existing timer's deadline
//! later is one atomic store; the wheel re-files it when the old deadline
//! passes.

use std::future::Future;
use std::pin::Pin;
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

    /// Run `work` with `limit` to finish, counted from now.
    pub async fn within<F: Future>(&mut self, limit: Duration, work: F) -> Result<F::Output, Elapsed> {
        self.sleep.as_mut().reset(Instant::now() + limit);
        tokio::select! {
            biased;
            done = work => Ok(done),
            () = &mut self.sleep => Err(Elapsed),
        }
    }
}
