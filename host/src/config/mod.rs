//! The proxy's configuration: one TOML file, read into [`raw`] structs by
//! serde and turned into a validated [`Config`] of real types in one step,
//! which reports every problem at once, each with the field it is about.

pub mod experiments;
mod limits;
mod raw;
mod syntax_error;
pub mod tenants;
mod units;

pub use limits::{PerClientLimits, Rate};
pub use units::{parse_duration, parse_size};

/// The names `forwarded-headers` accepts.
pub const FORWARDED_HEADER_NAMES: &[&str] = &["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"];

use crate::names::{BackendName, ListenerName, PluginName};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest memory cap a plugin may ask for; the runtime's pool reserves
/// address space for it.
pub const MAX_PLUGIN_MEMORY: u64 = 1 << 30;
/// Largest sniff buffer a listener may ask for.
pub const MAX_INSPECT_BYTES: u64 = 1 << 20;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (relative plugin paths are resolved from its directory).
    pub source: PathBuf,
    pub listeners: Vec<ListenerConfig>,
    pub backends: BTreeMap<BackendName, BackendConfig>,
    pub plugins: BTreeMap<PluginName, PluginConfig>,
    pub demo_servers: Vec<DemoServer>,
    /// The admin listener (metrics, health, status), if configured.
    pub admin: Option<AdminConfig>,
    /// Process-wide connection limits.
    pub limits: GlobalLimits,
    /// Where HTTP request lines go (`None`: the process log).
    pub access_log: Option<crate::access_log::AccessLogConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Loopback by default: the admin endpoints have no authentication.
    pub bind: SocketAddr,
    /// How long a client may take to send a request head (or to send the next one).
    pub header_timeout: Duration,
    /// Admin connections open at once; more are closed right after accept.
    pub max_connections: usize,
    /// The bearer token for write actions (and, optionally, reads).
    pub auth: Option<experiments::AdminAuth>,
}

/// Caps that keep a flood of connections from starving real clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalLimits {
    /// Open client connections; beyond it new ones are refused (and counted).
    /// Default: what the file-descriptor limit can hold (see [`crate::limits::fd_budget`]).
    pub max_connections: usize,
    /// Connections still being sniffed (silent sockets); beyond it new ones are refused.
    pub max_sniffing: usize,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: ListenerName,
    pub bind: SocketAddr,
    /// The sniff plugin that classifies each new connection.
    pub sniff: PluginName,
    /// Where `forward-default` verdicts go.
    pub default_backend: Option<BackendName>,
    /// How long the sniff stage waits for bytes before asking the plugin to decide.
    pub inspect_timeout: Duration,
    /// How many bytes the sniff stage reads at most before asking the plugin to decide.
    pub max_inspect_bytes: usize,
    /// What happens when a plugin fails (trap, CPU budget, memory cap).
    pub fallback: Fallback,
    /// The route plugin that picks a backend for each HTTP request; without
    /// one, `http` verdicts cannot be served on this listener.
    pub route: Option<PluginName>,
    /// How long a client may take to send a complete request head
    /// (including the wait for the next request on a keep-alive connection).
    pub header_timeout: Duration,
    /// Largest HTTP/1 request head accepted (larger: 431).
    pub max_header_bytes: usize,
    /// Certificates for TLS termination, chosen by SNI (none: `terminate-tls`
    /// verdicts cannot be served on this listener).
    pub certificates: Vec<CertificateConfig>,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// When set, every connection must begin with a PROXY protocol header
    /// and come from one of these networks (anything else is refused).
    pub proxy_protocol_from: Vec<crate::proxy_protocol::IpNet>,
    /// Automatic certificates for this listener's names (`[listeners.acme]`).
    pub acme: Option<crate::acme::AcmeConfig>,
    /// What one client address (or prefix) may use of this listener.
    pub per_client: PerClientLimits,
    /// A directory of tenant files (docs/TENANTS.md), dispatched by SNI and Host.
    pub tenants: Option<PathBuf>,
}

/// One certificate (chain) and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The names this certificate answers for (default: its DNS subjectAltNames).
    pub names: Option<Vec<String>>,
    /// Served to clients without SNI or with an unknown name (default: the first certificate).
    pub default: bool,
}

/// What a listener does with a connection whose plugin decision failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    Close,
    Backend(BackendName),
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: BackendName,
    /// The servers as configured; a name stands for every address it resolves to.
    pub servers: Vec<ServerSpec>,
    /// How often server names are resolved again.
    pub resolve_interval: Duration,
    pub connect_timeout: Duration,
    /// Further servers tried after a failed connect (and, with
    /// `retry_idempotent`, after a failed idempotent request).
    pub retries: u32,
    /// Resend an idempotent request without a body to another server when
    /// the one it was sent to failed before answering.
    pub retry_idempotent: bool,
    /// Requests and connections that may wait for a server under
    /// `max-connections` to free up; beyond it they are refused.
    pub queue: usize,
    /// How long one may wait in that queue.
    pub queue_timeout: Duration,
    /// A relayed connection (or upgraded WebSocket) with no bytes in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// How long to wait for a backend's HTTP response head (then 504).
    pub response_timeout: Duration,
    /// Which client-address headers HTTP requests to this backend get.
    pub forwarded: ForwardedHeaders,
    /// How requests without an affinity key are spread over the servers.
    pub balance: Balance,
    /// Where an affinity key comes from when the route plugin gives none.
    pub hash_key: Option<HashKey>,
    /// Cookie-inserted sticky sessions for HTTP.
    pub sticky_cookie: Option<StickyCookie>,
    /// Active health checks.
    pub health_check: Option<HealthCheck>,
    /// Send a PROXY protocol header on each new backend connection.
    pub proxy_protocol: Option<crate::proxy_protocol::Version>,
}

/// One `servers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// `ip:port`, or `name:port` resolved to any number of addresses.
    pub address: String,
    /// Share of new traffic relative to the other servers (1 to 1000).
    pub weight: u32,
    /// Connections (raw relays, HTTP requests in flight, WebSocket tunnels)
    /// open to each of its addresses at once; more wait in the backend's queue.
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConnections,
}

/// A source of affinity keys the backend itself reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(String),
    Cookie(String),
}

/// The cookie sluice sets to pin a client to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyCookie {
    pub name: String,
    pub path: String,
    pub http_only: bool,
    pub secure: bool,
    pub same_site: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a down server back.
    pub rise: u32,
    /// Consecutive failures that take a server down.
    pub fall: u32,
    /// `GET` this path and expect `expect_status` (else a TCP connect is the check).
    pub http_path: Option<String>,
    pub expect_status: u16,
}

/// The client-address and protocol headers added to proxied HTTP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedHeaders {
    /// `X-Forwarded-For`, appended to any the client sent.
    pub x_forwarded_for: bool,
    /// `X-Forwarded-Proto`: `http` or `https`.
    pub x_forwarded_proto: bool,
    /// `X-Forwarded-Host`: the Host the client asked for.
    pub x_forwarded_host: bool,
    /// RFC 7239 `Forwarded`, appended to any the client sent.
    pub forwarded: bool,
}

impl Default for ForwardedHeaders {
    fn default() -> Self {
        Self { x_forwarded_for: true, x_forwarded_proto: true, x_forwarded_host: true, forwarded: false }
    }
}

#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub name: PluginName,
    pub source: PluginSource,
    /// The plugin's `settings` table as JSON, handed to its `init`.
    pub settings_json: String,
    pub limits: PluginLimits,
    /// A candidate version run beside this one (docs/EXPERIMENTS.md).
    pub candidate: Option<experiments::CandidateConfig>,
    /// A sample of this plugin's decision inputs written to a file.
    pub capture: Option<experiments::CaptureConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A component compiled into the binary (`builtin = "sniff"`).
    Builtin(String),
    /// A `.wasm` component on disk.
    File(PathBuf),
}

/// Sandbox limits applied to every call into a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Fuel per call (roughly one unit per WebAssembly instruction).
    pub cpu_budget: u64,
    /// Cap on the instance's linear memory, in bytes.
    pub memory_limit: u64,
    /// Calls an instance serves before it is retired for a fresh one.
    pub max_instance_calls: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self { cpu_budget: 10_000_000, memory_limit: 16 << 20, max_instance_calls: 10_000 }
    }
}

/// A small server sluice runs itself so an example works with nothing else
/// installed (`[[demo-servers]]`). Not for production.
#[derive(Debug, Clone)]
pub struct DemoServer {
    pub bind: SocketAddr,
    pub kind: DemoKind,
    /// What it calls itself in its answers (`name`, default: the kind), so
    /// curl shows which backend a request reached.
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoKind {
    /// Echoes every byte back.
    Echo,
    /// Answers every HTTP/1 request with a short text page.
    Http,
    /// Speaks first: sends a greeting line, then echoes.
    Banner,
}

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

/// One thing wrong with a config, and the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{}: {n} problem{}", self.file.display(), if n == 1 { "" } else { "s" })?;
        for problem in &self.problems {
            if problem.field.is_empty() {
                write!(f, "\n  {}", problem.message)?;
            } else {
                write!(f, "\n  {}: {}", problem.field, problem.message)?;
            }
        }
        Ok(())
    }
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem { field: String::new(), message: format!("cannot read the file: {e}") }],
        })?;
        Self::parse(&text, path)
    }

    /// Parse and validate config text; `path` names it in errors and anchors
    /// relative plugin paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError { file: path.to_path_buf(), problems };
        // Line and column, never the line's content (it may hold a secret).
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| fail(vec![syntax_error::problem(&e, text)]))?;
        let base = path.parent().unwrap_or(Path::new("."));
        raw.validate(path, base).map_err(fail)
    }

    pub fn listener(&self, name: &ListenerName) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| &l.name == name)
    }
}

#[cfg(test)]
mod tests;
