//! Share-nothing workers: N threads, each running its own single-threaded
//! tokio runtime, each accepting on its own listening socket.
//!
//! - **One socket per worker.** Every listener is bound once per worker; with
//!   more than one worker the sockets share the port through `SO_REUSEPORT`
//!   and the kernel spreads new connections over them. Port 0 works: the first
//!   socket is bound to the configured address, the others to the port it got.
//! - **A connection never leaves its worker.** The accept loop runs on the
//!   worker's runtime and spawns the connection's task there (`tokio::spawn`
//!   on a current-thread runtime stays on it), and so do the backend
//!   connections it opens; idle backend connections are pooled per worker
//!   ([`shard`]), so a request never hands work to another thread.
//! - **Everything else** (reloads, the admin listener, ACME, demo servers,
//!   health checks, signals) runs on the control runtime that called
//!   [`App::run`](crate::App::run). Plugin compilation goes to that runtime's
//!   blocking pool, as before.
//! - **Stopping.** Dropping [`Workers`] ends every worker thread; their
//!   runtimes drop the tasks still on them. [`App::run`](crate::App::run)
//!   drains first, so in a clean shutdown nothing is left by then.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// 1-based index of the worker this thread is, 0 on any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The largest worker count started or announced in this process (for sizing
/// per-worker pools before the workers start).
static MOST_WORKERS: AtomicUsize = AtomicUsize::new(0);

/// One worker per CPU available to the process.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Say that up to `count` workers will run, before anything sized by
/// [`shard_count`] is built.
pub fn announce(count: usize) {
    MOST_WORKERS.fetch_max(count, Ordering::Relaxed);
}

/// How many shards a per-worker structure needs: one per worker plus one for
/// threads that are not workers (the control runtime, tests).
pub fn shard_count() -> usize {
    MOST_WORKERS.load(Ordering::Relaxed).max(default_count()) + 1
}

/// The shard of the calling thread among `len`: its worker index, or 0.
pub fn shard(len: usize) -> usize {
    WORKER.with(Cell::get) % len.max(1)
}

/// Runtimes of the workers alive in this process, for metrics.
fn live() -> &'static Mutex<Vec<(u64, Handle)>> {
    static LIVE: OnceLock<Mutex<Vec<(u64, Handle)>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

/// Tasks alive on every worker runtime (the control runtime not included).
pub fn alive_tasks() -> usize {
    let live = live().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    live.iter().map(|(_, handle)| handle.metrics().num_alive_tasks()).sum()
}

/// The running worker threads. Dropping it stops them.
pub struct Workers {
    id: u64,
    handles: Vec<Handle>,
    /// Dropped to stop the workers.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Start `count` (at least one) worker threads, each with its own runtime.
    pub fn start(count: usize) -> io::Result<Workers> {
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        let count = count.max(1);
        announce(count);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) as u64;
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 1..=count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("sluice-worker-{index}"))
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new().name(format!("sluice-worker-{index}")).spawn(move || {
                WORKER.with(|worker| worker.set(index));
                // Returns when the sender is dropped; dropping the runtime
                // then drops whatever tasks are left on it.
                let _ = runtime.block_on(stopped);
            })?;
        }
        let mut live = live().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        live.extend(handles.iter().map(|handle| (id, handle.clone())));
        Ok(Workers { id, handles, _stop: stops })
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }

    /// Each worker's runtime, in worker order.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let mut live = live().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        live.retain(|(id, _)| *id != self.id);
    }
}

/// A listener's sockets, one per worker, all on the same address.
pub struct Sockets {
    sockets: Vec<std::net::TcpListener>,
}

impl Sockets {
    /// Bind `count` sockets to `addr` (non-blocking, listening). With more
    /// than one they share the port through `SO_REUSEPORT`; the first one
    /// decides the port when `addr` has port 0.
    pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Sockets> {
        let count = count.max(1);
        let first = listen(addr, count > 1)?;
        let bound = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..count {
            sockets.push(listen(bound, true)?);
        }
        Ok(Sockets { sockets })
    }

    /// The address actually bound (the port chosen for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sockets[0].local_addr()
    }

    /// Duplicates of the same sockets (not new ones), so another listener can
    /// take them over without a moment of not listening.
    pub fn try_clone(&self) -> io::Result<Sockets> {
        let sockets = self.sockets.iter().map(std::net::TcpListener::try_clone).collect::<io::Result<_>>()?;
        Ok(Sockets { sockets })
    }

    pub fn into_vec(self) -> Vec<std::net::TcpListener> {
        self.sockets
    }
}

/// One listening socket, as `TcpListener::bind` would make it (address
/// reuse for TIME_WAIT, backlog 1024), plus `SO_REUSEPORT` when shared.
fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_binds_every_socket_to_the_same_port() {
        let sockets = Sockets::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 3).expect("bind");
        let addr = sockets.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let all = sockets.into_vec();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|s| s.local_addr().unwrap() == addr));
    }

    #[test]
    fn a_single_socket_does_not_share_its_port() {
        let one = Sockets::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 1).expect("bind");
        let addr = one.local_addr().unwrap();
        assert!(Sockets::bind(addr, 2).is_err(), "without SO_REUSEPORT on the first, the port is taken");
    }

    #[test]
    fn each_worker_knows_its_shard() {
        let workers = Workers::start(2).expect("workers");
        let shards: Vec<usize> = workers
            .handles()
            .iter()
            .map(|handle| {
                let (tx, rx) = std::sync::mpsc::channel();
                handle.spawn(async move { tx.send(shard(100)).unwrap() });
                rx.recv().unwrap()
            })
            .collect();
        assert_eq!(shards, [1, 2]);
        assert_eq!(shard(100), 0, "not a worker");
    }
}
