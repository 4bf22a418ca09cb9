//! Shared harness for the integration tests: the real proxy started from the
//! library on port 0, and small real backends on loopback.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod http_backend;
pub mod log_capture;
pub mod raw_http;

use sluice::{App, Config, Drained};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where build.rs put the compiled in-tree plugins.
pub fn plugin_path(name: &str) -> PathBuf {
    Path::new(env!("SLUICE_PLUGIN_DIR")).join(format!("{name}.wasm"))
}

/// A file under `tests/testdata/`.
pub fn testdata(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A running proxy; stopped (and drained) when `stop` is called.
pub struct Proxy {
    app_addrs: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Drained>,
}

impl Proxy {
    /// Parse `config` (relative paths resolve from the repository root), bind
    /// and start serving.
    pub async fn start(config: &str) -> Proxy {
        Self::start_with_grace(config, Duration::from_secs(5)).await
    }

    pub async fn start_with_grace(config: &str, grace: Duration) -> Proxy {
        let config = Config::parse(config, &repo_root().join("test.toml")).unwrap_or_else(|e| panic!("{e}"));
        let app = App::bind(config).await.unwrap_or_else(|e| panic!("proxy failed to start: {e}"));
        let app_addrs = app.local_addrs().into_iter().map(|(name, addr)| (name.to_string(), addr)).collect();
        let admin = app.admin_addr();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.with_grace(grace).run(async {
            let _ = stopped.await;
        }));
        Proxy { app_addrs, admin, stop: Some(stop), task }
    }

    /// The address of a listener by name.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.app_addrs.iter().find(|(name, _)| name == listener).map(|(_, addr)| *addr).expect("listener exists")
    }

    /// The admin listener, when the config has `[admin]`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub async fn connect(&self, listener: &str) -> TcpStream {
        TcpStream::connect(self.addr(listener)).await.expect("connect to the proxy")
    }

    pub async fn stop(mut self) -> Drained {
        let _ = self.stop.take().expect("stopped once").send(());
        self.task.await.expect("proxy task")
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ is in the repo").to_path_buf()
}

/// A backend that announces `tag` on every connection, then echoes.
pub async fn tagged_echo(tag: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                stream.write_all(format!("{tag}\n").as_bytes()).await?;
                let (mut read, mut write) = stream.split();
                tokio::io::copy(&mut read, &mut write).await?;
                write.shutdown().await
            });
        }
    });
    addr
}

/// Read from `stream` until `want` bytes arrived (or EOF), with a deadline.
pub async fn read_exactly(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = vec![0u8; want];
    let mut filled = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while filled < want {
            match stream.read(&mut got[filled..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
    })
    .await
    .expect("reading timed out");
    got.truncate(filled);
    got
}

/// Read until the peer closes, with a deadline.
pub async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
        .await
        .expect("reading timed out")
        .expect("reading");
    got
}

/// True when the proxy closed the connection without sending anything.
pub async fn closed_without_data(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("the connection stayed open"),
    }
}

/// The body of `GET path` on the admin listener (one request, `Connection: close`).
pub async fn admin_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let response = String::from_utf8(read_to_end(&mut stream).await).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    body.to_string()
}
