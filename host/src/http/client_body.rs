//! The client's request body on its way to a backend, noting whether it
//! failed (malformed chunked framing, a stream reset, a client gone mid-body):
//! a backend exchange that fails because of it is the client's fault, a 400,
//! not a 502.

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

pub struct ClientBody {
    body: Incoming,
    failed: Arc<AtomicBool>,
}

/// Set once the client's body has failed.
#[derive(Clone)]
pub struct Failed(Arc<AtomicBool>);

impl Failed {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub fn watch(body: Incoming) -> (ClientBody, Failed) {
    let failed = Arc::new(AtomicBool::new(false));
    (ClientBody { body, failed: failed.clone() }, Failed(failed))
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let Some(Err(_)) = &frame {
            this.failed.store(true, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
