//! sluice: a programmable single-port proxy.
//!
//! A native host owns every socket; sandboxed WebAssembly plugins decide what
//! each connection is and where it goes. The life of a connection, one module
//! per stage:
//!
//! ```text
//! accept ─► sniff ─┬─► reply (bytes, close)            e.g. Flash policy
//!                  ├─► reject
//!                  ├─► forward(backend) ─► relay raw bytes both ways
//!                  └─► http ─► per request: route plugin ─► backend (keep-alive; Upgrade ⇒ tunnel)
//! ```
//!
//! - [`config`]: the TOML file, validated in one step into real types.
//! - [`app`]: `App::bind(config)` → `app.local_addr(..)` → `app.run(shutdown)`.
//! - [`accept`]: the accept loop; one task per connection.
//! - [`connection`]: one connection's stages, ending in a [`connection::Report`].
//! - [`sniff`]: read the head until the sniff plugin decides.
//! - [`http`]: the HTTP stage: hyper, per-request routing, WebSocket tunnels.
//! - [`io`]: a stream that replays the sniffed bytes first.
//! - [`backend`]: backends, server choice (round-robin, rendezvous), connection reuse.
//! - [`relay`]: full duplex with half-close and idle timeouts; splice(2) between plain TCP sockets.
//! - [`plugin`]: what the core needs from plugins; [`plugin::wasm`] runs them
//!   on wasmtime. Nothing else in the crate touches wasmtime.
//! - [`state`]: a snapshot of loaded plugins and backends for one config version.
//! - [`reload`]: watch the config, plugin and certificate files; validate and swap in new versions.
//! - [`tls`]: TLS termination (certificates by SNI) and the ClientHello parser.
//! - [`acme`]: automatic certificates (RFC 8555): renewal, TLS-ALPN-01 and HTTP-01 answers.
//! - [`limits`]: the file-descriptor budget and per-client limits.
//! - [`metrics`]: the Prometheus series; [`access_log`]: request lines, request ids.
//! - [`tenant`]: many tenants on one listener, dispatched by SNI and Host (docs/TENANTS.md).
//! - [`demo`]: tiny servers so the examples run with nothing else installed.

pub mod accept;
pub mod access_log;
pub mod acme;
pub mod admin;
pub mod app;
pub mod backend;
pub mod builtin;
pub mod config;
pub mod connection;
pub mod demo;
pub mod experiment;
pub mod http;
pub mod io;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod plugin;
pub mod proxy_protocol;
pub mod relay;
pub mod reload;
pub mod sniff;
pub mod state;
pub mod tenant;
pub mod text;
pub mod tls;
pub mod workers;

pub use app::{App, Drained, StartError};
pub use config::Config;
