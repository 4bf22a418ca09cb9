//! An upgraded HTTP/1.1 connection (a WebSocket after its `101`) relayed as
//! bytes for as long as both sides keep it open.
//!
//! Most tunnels sit idle for minutes or hours, so what one holds while it
//! waits is what thousands of them cost:
//!
//! - When both ends are plain TCP (the common case), the sockets are taken
//!   back from hyper with the bytes it read past each head, hyper's wrappers
//!   and buffers are dropped, and the pair is relayed by [`relay_tcp`]
//!   (splice, no buffer while idle).
//! - The other cases (a TLS client, a backend reached some other way) copy
//!   through the upgraded streams; their futures are boxed, so they do not
//!   make every tunnel's task as large as theirs.

use super::{Pending, RelayStats, forget_previous_task, relay, relay_copy, relay_tcp};
use crate::io::PrefixedIo;
use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// What `http::serve` serves a plain TCP client on.
type ClientTcp = TokioIo<PrefixedIo<TcpStream>>;
/// What the HTTP stage connects backends with.
type BackendTcp = TokioIo<TcpStream>;

/// Relay an upgraded connection until either side ends it or it is idle for `idle`.
pub async fn tunnel(client: Upgraded, backend: Upgraded, idle: Duration) -> RelayStats {
    match take_tcp(client, backend, idle) {
        Ok((client, backend, pending)) => relay_tcp(client, backend, pending, idle).await,
        Err(other) => other.await,
    }
}

type Boxed = std::pin::Pin<Box<dyn Future<Output = RelayStats> + Send>>;

/// The two plain TCP sockets under the upgraded streams, and the bytes hyper
/// read past each head; or, when they are not both plain TCP, the (boxed)
/// relay through the upgraded streams.
fn take_tcp(client: Upgraded, backend: Upgraded, idle: Duration) -> Result<(TcpStream, TcpStream, Pending), Boxed> {
    let backend = match backend.downcast::<BackendTcp>() {
        Ok(backend) => backend,
        Err(backend) => {
            return Err(Box::pin(relay(TokioIo::new(client), TokioIo::new(backend), idle)));
        }
    };
    let client = match client.downcast::<ClientTcp>() {
        Ok(client) => client,
        Err(client) => {
            let pending = Pending { to_backend: Bytes::new(), to_client: backend.read_buf };
            let backend = backend.io.into_inner();
            return Err(Box::pin(relay_copy(TokioIo::new(client), backend, pending, idle)));
        }
    };
    // hyper read `read_buf` from the stream before whatever the stream still holds.
    let (unread, client_tcp) = client.io.into_inner().into_parts();
    let to_backend =
        if unread.is_empty() { client.read_buf } else { [&client.read_buf[..], &unread[..]].concat().into() };
    // `unread` is what is left of the sniff buffer: not kept alive for the tunnel's whole life.
    drop(unread);
    let pending = Pending { to_backend, to_client: backend.read_buf };
    let backend_tcp = backend.io.into_inner();
    // Both sockets come from tasks that have finished (the client's HTTP
    // connection, the backend's client connection): let those tasks go.
    forget_previous_task(&client_tcp);
    forget_previous_task(&backend_tcp);
    Ok((client_tcp, backend_tcp, pending))
}
