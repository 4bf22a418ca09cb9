//! What the proxy core needs from plugins, independent of how they run.
//!
//! The stages (`sniff`, `http`) only see the [`Sniffer`] and [`Router`] traits and
//! the plain types here; [`wasm`] implements it over wasmtime. Tests of the
//! stages can use small fakes.

pub mod declared;
pub mod scaffold;
mod scaffold_rust;
pub mod try_out;
pub mod wasm;

use crate::names::{BackendName, ListenerName, PluginName};
pub use crate::tls::client_hello::ClientHello;
use std::net::SocketAddr;

/// Facts about a client connection, handed to plugins with each decision.
#[derive(Debug, Clone)]
pub struct ConnFacts {
    pub listener: ListenerName,
    pub client_addr: SocketAddr,
    pub local_addr: SocketAddr,
    pub tls: Option<TlsFacts>,
    /// The ClientHello at the start of a not-yet-terminated stream, once complete.
    pub hello: Option<ClientHello>,
    /// The tenant that owns the connection's server name, when the listener
    /// hosts tenants; None otherwise.
    pub tenant: Option<String>,
}

impl ConnFacts {
    /// The connection facts used for a plugin's probe call at load time.
    pub fn probe() -> Self {
        let unspecified = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            listener: ListenerName::new("probe"),
            client_addr: unspecified,
            local_addr: unspecified,
            tls: None,
            hello: None,
            tenant: None,
        }
    }
}

/// What a plugin declared at `init` (the `manifest` of sluice:plugin@0.2.0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Every backend the plugin's decisions can name; None for a 0.1.0
    /// component (not declared: unchecked).
    pub backends: Option<Vec<BackendName>>,
    /// The request headers a route plugin reads.
    pub headers: HeaderInterest,
}

impl Manifest {
    /// What a 0.1.0 component gets: no backend list, every header.
    pub const UNDECLARED: Manifest = Manifest { backends: None, headers: HeaderInterest::All };

    /// Whether a decision may name `backend`: declared, or nothing declared at all.
    pub fn allows(&self, backend: &BackendName) -> bool {
        self.backends.as_ref().is_none_or(|declared| declared.contains(backend))
    }
}

/// Which request headers a route plugin reads, so the host lowers only those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HeaderInterest {
    /// Every header (0.1.0 components, or a plugin that asks for all).
    #[default]
    All,
    /// Only these lower-case names; empty: no header at all.
    Only(Vec<String>),
}

impl HeaderInterest {
    /// Whether the plugin reads the header `name` (lower-case).
    pub fn wants(&self, name: &str) -> bool {
        match self {
            HeaderInterest::All => true,
            HeaderInterest::Only(names) => names.iter().any(|wanted| wanted == name),
        }
    }
}

/// What the host learned from a TLS handshake.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    pub server_name: Option<String>,
    pub alpn: Option<String>,
}

/// A sniff plugin's answer about the first bytes of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    NeedMore,
    TerminateTls,
    Http,
    ForwardDefault,
    Forward(BackendName),
    Reply { data: Vec<u8>, then_close: bool },
    Reject(String),
}

impl Verdict {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::NeedMore => "need-more",
            Verdict::TerminateTls => "terminate-tls",
            Verdict::Http => "http",
            Verdict::ForwardDefault => "forward-default",
            Verdict::Forward(_) => "forward",
            Verdict::Reply { .. } => "reply",
            Verdict::Reject(_) => "reject",
        }
    }
}

/// Why a plugin call produced no decision. Each variant is a reason label.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("trapped: {0}")]
    Trap(String),
    #[error("ran out of its CPU budget")]
    CpuBudget,
    #[error("went over its memory cap")]
    MemoryCap,
    #[error("could not start an instance: {0}")]
    Start(String),
    #[error("refused its settings: {0}")]
    Init(String),
    #[error("called `exit` (status {0}) instead of returning a decision")]
    Exit(i32),
    /// A decision named a backend the plugin's manifest did not declare.
    #[error("named backend `{0}`, which it did not declare at `init`")]
    UndeclaredBackend(String),
}

impl PluginError {
    pub fn label(&self) -> &'static str {
        match self {
            PluginError::Trap(_) => "trap",
            PluginError::CpuBudget => "cpu-budget",
            PluginError::MemoryCap => "memory-cap",
            PluginError::Start(_) => "start",
            PluginError::Init(_) => "init",
            PluginError::Exit(_) => "exit",
            PluginError::UndeclaredBackend(_) => "undeclared-backend",
        }
    }
}

/// An HTTP request head as a route plugin sees it.
#[derive(Debug, Clone)]
pub struct RouteRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// HTTP/2 `:authority` or the `Host` header.
    pub authority: Option<String>,
    /// Lower-case names, raw values.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A route plugin's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    Forward(ForwardTo),
    Respond(SyntheticResponse),
}

impl RouteDecision {
    pub fn label(&self) -> &'static str {
        match self {
            RouteDecision::Forward(_) => "forward",
            RouteDecision::Respond(_) => "respond",
        }
    }
}

/// Send the request to a backend, edited so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardTo {
    pub backend: BackendName,
    /// A key that should reach the same server each time.
    pub affinity: Option<String>,
    pub set_headers: Vec<(String, Vec<u8>)>,
    pub remove_headers: Vec<String>,
    pub rewrite_path: Option<String>,
}

/// Answer the client directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Routes HTTP requests.
pub trait Router: Send + Sync {
    fn name(&self) -> &PluginName;

    /// The SHA-256 of the loaded component, hex.
    fn version(&self) -> &str;

    /// What the plugin declared at `init`. Fakes may keep the default
    /// (nothing declared: any backend, every header).
    fn manifest(&self) -> &Manifest {
        &Manifest::UNDECLARED
    }

    /// Decide where one request goes. Synchronous and bounded by the plugin's
    /// CPU budget. Only the headers the manifest names reach the plugin; a
    /// decision naming an undeclared backend is [`PluginError::UndeclaredBackend`].
    fn pick(&self, conn: &ConnFacts, request: &RouteRequest) -> Result<RouteDecision, PluginError>;

    /// Right after `pick`, on the same thread: whether an experiment's candidate
    /// (`Some(true)`) or its live version (`Some(false)`) made that decision;
    /// `None` when no experiment watches response statuses.
    fn attribution(&self) -> Option<bool> {
        None
    }

    /// The status the client got for a request attributed so.
    fn responded(&self, _candidate: bool, _status: u16) {}
}

/// Classifies a connection from its first bytes.
pub trait Sniffer: Send + Sync {
    /// The plugin's name, for logs.
    fn name(&self) -> &PluginName;

    /// The SHA-256 of the loaded component, hex.
    fn version(&self) -> &str;

    /// What the plugin declared at `init`. Fakes may keep the default
    /// (nothing declared: any backend).
    fn manifest(&self) -> &Manifest {
        &Manifest::UNDECLARED
    }

    /// Classify `head`, every byte read so far; `complete` means no more
    /// bytes will be offered. Runs synchronously: calls are bounded by the
    /// plugin's CPU budget and take microseconds.
    fn classify(&self, conn: &ConnFacts, head: &[u8], complete: bool) -> Result<Verdict, PluginError>;
}
