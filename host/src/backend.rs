//! Backends: named groups of servers, and connecting to one of them.
//!
//! Servers are tried in round-robin order; a server that refuses or does not
//! answer within the connect timeout is skipped and the next one is tried, so
//! one dead server costs a client nothing but the failed attempt.

use crate::config::BackendConfig;
use crate::names::BackendName;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// Every backend of a config, by name.
#[derive(Clone, Default)]
pub struct Backends {
    by_name: HashMap<BackendName, Arc<Backend>>,
}

impl Backends {
    pub fn new<'a>(configs: impl IntoIterator<Item = &'a BackendConfig>) -> Self {
        let by_name = configs
            .into_iter()
            .map(|config| {
                (config.name.clone(), Arc::new(Backend { config: config.clone(), next: AtomicUsize::new(0) }))
            })
            .collect();
        Self { by_name }
    }

    pub fn get(&self, name: &BackendName) -> Option<&Arc<Backend>> {
        self.by_name.get(name)
    }
}

/// One backend and its round-robin cursor.
pub struct Backend {
    config: BackendConfig,
    next: AtomicUsize,
}

/// A connection to one server of a backend.
pub struct BackendConn {
    pub stream: TcpStream,
    /// The server as written in the config.
    pub server: String,
}

/// Every server of the backend failed.
#[derive(Debug, thiserror::Error)]
#[error("backend `{backend}`: no server accepted the connection ({})", .failures.join("; "))]
pub struct BackendError {
    pub backend: BackendName,
    /// One line per server tried: "addr: reason".
    pub failures: Vec<String>,
}

impl Backend {
    pub fn name(&self) -> &BackendName {
        &self.config.name
    }

    pub fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout
    }

    /// Connect to the next server in turn, trying each server at most once.
    pub async fn connect(&self) -> Result<BackendConn, BackendError> {
        let servers = &self.config.servers;
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut failures = Vec::new();
        for offset in 0..servers.len() {
            let server = &servers[(first + offset) % servers.len()];
            match connect_one(server, self.config.connect_timeout).await {
                Ok(stream) => return Ok(BackendConn { stream, server: server.clone() }),
                Err(e) => {
                    tracing::warn!(backend = %self.config.name, server, error = %e, "backend server refused");
                    failures.push(format!("{server}: {e}"));
                }
            }
        }
        Err(BackendError { backend: self.config.name.clone(), failures })
    }
}

async fn connect_one(server: &str, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
