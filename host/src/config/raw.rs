//! The config file as written, and its validation into [`super::Config`].

use super::units::{parse_duration, parse_size};
use super::{
    AdminConfig, BackendConfig, Balance, CertificateConfig, Config, DemoKind, DemoServer, FORWARDED_HEADER_NAMES,
    Fallback, ForwardedHeaders, HashKey, HealthCheck, ListenerConfig, MAX_INSPECT_BYTES, MAX_PLUGIN_MEMORY,
    PluginConfig, PluginLimits, PluginSource, Problem, ServerSpec, StickyCookie,
};
use crate::access_log::AccessLogConfig;
use crate::builtin;
use crate::names::{BackendName, ListenerName, PluginName};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    listeners: Vec<RawListener>,
    #[serde(default)]
    backends: BTreeMap<String, RawBackend>,
    #[serde(default)]
    plugins: BTreeMap<String, RawPlugin>,
    #[serde(default)]
    demo_servers: Vec<RawDemoServer>,
    admin: Option<RawAdmin>,
    limits: Option<RawLimits>,
    access_log: Option<RawAccessLog>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawAccessLog {
    format: Option<String>,
    file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawAdmin {
    bind: Option<String>,
    header_timeout: Option<String>,
    max_connections: Option<u32>,
    token_file: Option<String>,
    protect_reads: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    max_sniffing: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawListener {
    name: String,
    bind: String,
    sniff: String,
    default_backend: Option<String>,
    inspect_timeout: Option<String>,
    max_inspect_bytes: Option<SizeValue>,
    fallback: Option<RawFallback>,
    route: Option<String>,
    header_timeout: Option<String>,
    max_header_bytes: Option<SizeValue>,
    #[serde(default)]
    certificates: Vec<RawCertificate>,
    tls_handshake_timeout: Option<String>,
    #[serde(default)]
    proxy_protocol_from: Vec<String>,
    /// Automatic certificates (host/src/acme).
    acme: Option<crate::acme::config::RawAcme>,
    #[serde(default)]
    per_client: super::limits::RawPerClient,
    /// A directory of tenant files (config/tenants.rs).
    tenants: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawCertificate {
    cert: String,
    key: String,
    names: Option<Vec<String>>,
    #[serde(default)]
    default: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawFallback {
    /// `fallback = "close"`
    Word(String),
    /// `fallback = { backend = "name" }`
    Backend { backend: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawBackend {
    /// `"host:port"` or `{ address = "host:port", weight = 2, max-connections = 100 }`.
    servers: Vec<toml::Value>,
    resolve_interval: Option<String>,
    max_connections: Option<u64>,
    queue: Option<u64>,
    queue_timeout: Option<String>,
    retries: Option<u64>,
    #[serde(default)]
    retry_idempotent: bool,
    connect_timeout: Option<String>,
    idle_timeout: Option<String>,
    response_timeout: Option<String>,
    forwarded_headers: Option<Vec<String>>,
    balance: Option<String>,
    hash_key: Option<RawHashKey>,
    sticky_cookie: Option<RawStickyCookie>,
    health_check: Option<RawHealthCheck>,
    proxy_protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawHashKey {
    /// `hash-key = "client-ip"`
    Word(String),
    /// `hash-key = { header = "x-user" }` or `{ cookie = "sid" }`
    Source { header: Option<String>, cookie: Option<String> },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawStickyCookie {
    #[serde(default = "default_cookie_name")]
    name: String,
    #[serde(default = "default_cookie_path")]
    path: String,
    #[serde(default = "yes")]
    http_only: bool,
    #[serde(default)]
    secure: bool,
    same_site: Option<String>,
}

fn default_cookie_name() -> String {
    "sluice_server".to_string()
}

fn default_cookie_path() -> String {
    "/".to_string()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawHealthCheck {
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<u32>,
    fall: Option<u32>,
    http_path: Option<String>,
    expect_status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawPlugin {
    file: Option<String>,
    builtin: Option<String>,
    cpu_budget: Option<u64>,
    memory_limit: Option<SizeValue>,
    max_instance_calls: Option<u64>,
    #[serde(default)]
    settings: toml::Table,
    candidate: Option<super::experiments::RawCandidate>,
    capture: Option<super::experiments::RawCapture>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawDemoServer {
    bind: String,
    kind: String,
    name: Option<String>,
}

/// A size written as a number of bytes or a string with a unit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeValue::Bytes(n) => Ok(*n),
            SizeValue::Text(text) => parse_size(text),
        }
    }
}

const DEFAULT_INSPECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_MAX_INSPECT_BYTES: u64 = 8 << 10;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u64 = 3;
const DEFAULT_QUEUE: u64 = 1000;
const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_WEIGHT: u64 = 1000;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_HEADER_BYTES: u64 = 64 << 10;
const MAX_HEADER_BYTES: u64 = 1 << 20;
const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Collects problems while validating, so the operator sees all of them at once.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { field: field.into(), message: message.into() });
    }

    /// Keep the value, or record the error and keep nothing.
    pub(super) fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.add(field, message)).ok()
    }
}

impl RawConfig {
    pub fn validate(self, path: &Path, base: &Path) -> Result<Config, Vec<Problem>> {
        let mut problems = Problems::default();

        let backend_names: HashSet<&str> = self.backends.keys().map(String::as_str).collect();
        let plugin_names: HashSet<&str> = self.plugins.keys().map(String::as_str).collect();
        let known_backend = |problems: &mut Problems, field: &str, name: &str| {
            if backend_names.contains(name) {
                Some(BackendName::new(name))
            } else {
                problems.add(field, format!("no backend named `{name}` (see [backends])"));
                None
            }
        };

        if self.listeners.is_empty() {
            problems.add("listeners", "at least one [[listeners]] entry is required");
        }
        // Limits (config/limits.rs): the global ones first, the per-client defaults derive from them.
        let fd_budget = super::limits::budget(
            self.admin
                .as_ref()
                .map(|admin| admin.max_connections.unwrap_or(super::limits::DEFAULT_ADMIN_MAX_CONNECTIONS)),
            self.listeners.len(),
            self.backends.values().map(|backend| backend.servers.len()).sum(),
        );
        let raw_limits = super::limits::RawGlobal {
            max_connections: self.limits.as_ref().and_then(|l| l.max_connections),
            max_sniffing: self.limits.as_ref().and_then(|l| l.max_sniffing),
        };
        let limits = super::limits::global(raw_limits, &fd_budget, &mut problems.0);
        let mut listener_names = HashSet::new();
        let mut listeners = Vec::new();
        for (i, raw) in self.listeners.iter().enumerate() {
            let at = |key: &str| format!("listeners[{i}].{key}");
            if raw.name.is_empty() || !listener_names.insert(raw.name.as_str()) {
                problems.add(at("name"), format!("listener names must be unique and non-empty (`{}`)", raw.name));
            }
            let bind = problems.check(&at("bind"), parse_socket_addr(&raw.bind));
            if !plugin_names.contains(raw.sniff.as_str()) {
                problems.add(at("sniff"), format!("no plugin named `{}` (see [plugins])", raw.sniff));
            }
            let default_backend = match &raw.default_backend {
                Some(name) => known_backend(&mut problems, &at("default-backend"), name),
                None => None,
            };
            let inspect_timeout = match &raw.inspect_timeout {
                Some(text) => problems.check(&at("inspect-timeout"), positive_duration(text)),
                None => Some(DEFAULT_INSPECT_TIMEOUT),
            };
            let max_inspect_bytes = match &raw.max_inspect_bytes {
                Some(size) => problems
                    .check(&at("max-inspect-bytes"), size.bytes().and_then(|n| in_range(n, 1, MAX_INSPECT_BYTES))),
                None => Some(DEFAULT_MAX_INSPECT_BYTES),
            };
            let fallback = match &raw.fallback {
                None => Some(Fallback::Close),
                Some(RawFallback::Word(word)) if word == "close" => Some(Fallback::Close),
                Some(RawFallback::Word(word)) => {
                    problems.add(
                        at("fallback"),
                        format!("`{word}` is not a fallback (use \"close\" or {{ backend = \"name\" }})"),
                    );
                    None
                }
                Some(RawFallback::Backend { backend }) => {
                    known_backend(&mut problems, &at("fallback.backend"), backend).map(Fallback::Backend)
                }
            };
            let route = match &raw.route {
                Some(name) if plugin_names.contains(name.as_str()) => Some(PluginName::new(name.as_str())),
                Some(name) => {
                    problems.add(at("route"), format!("no plugin named `{name}` (see [plugins])"));
                    None
                }
                None => None,
            };
            let header_timeout = match &raw.header_timeout {
                Some(text) => problems.check(&at("header-timeout"), positive_duration(text)),
                None => Some(DEFAULT_HEADER_TIMEOUT),
            };
            let max_header_bytes = match &raw.max_header_bytes {
                Some(size) => problems
                    .check(&at("max-header-bytes"), size.bytes().and_then(|n| in_range(n, 8 << 10, MAX_HEADER_BYTES))),
                None => Some(DEFAULT_MAX_HEADER_BYTES),
            };
            let tls_handshake_timeout = match &raw.tls_handshake_timeout {
                Some(text) => problems.check(&at("tls-handshake-timeout"), positive_duration(text)),
                None => Some(DEFAULT_TLS_HANDSHAKE_TIMEOUT),
            };
            let mut certificates = Vec::new();
            for (j, raw) in raw.certificates.iter().enumerate() {
                let cert_at = |key: &str| format!("listeners[{i}].certificates[{j}].{key}");
                let cert = problems.check(&cert_at("cert"), existing_file(base, &raw.cert));
                let key = problems.check(&cert_at("key"), existing_file(base, &raw.key));
                if let Some(names) = &raw.names
                    && names.iter().any(|n| n.is_empty() || n.contains(['/', ' ', ':']))
                {
                    problems.add(cert_at("names"), "names are DNS names such as \"a.test\" or \"*.a.test\"");
                }
                if let (Some(cert), Some(key)) = (cert, key) {
                    certificates.push(CertificateConfig { cert, key, names: raw.names.clone(), default: raw.default });
                }
            }
            let mut proxy_protocol_from = Vec::new();
            for (j, net) in raw.proxy_protocol_from.iter().enumerate() {
                if let Some(net) = problems.check(&format!("listeners[{i}].proxy-protocol-from[{j}]"), net.parse()) {
                    proxy_protocol_from.push(net);
                }
            }
            let acme = raw.acme.as_ref().and_then(|acme| {
                let validated = acme.validate(base);
                for (key, message) in validated.as_ref().err().into_iter().flatten() {
                    problems.add(at(&format!("acme.{key}")), message.clone());
                }
                validated.ok()
            });
            let tenants =
                raw.tenants.as_ref().and_then(|dir| problems.check(&at("tenants"), super::tenants::dir(base, dir)));
            let per_client = raw.per_client.validate(&format!("listeners[{i}]"), &limits);
            let per_client = per_client.map_err(|errors| problems.0.extend(errors)).ok();
            if raw.certificates.iter().filter(|c| c.default).count() > 1 {
                problems.add(at("certificates"), "at most one certificate can be the default");
            }
            if let (
                Some(per_client),
                Some(tls_handshake_timeout),
                Some(bind),
                Some(inspect_timeout),
                Some(max_inspect_bytes),
                Some(fallback),
                Some(header_timeout),
                Some(max_header_bytes),
            ) = (
                per_client,
                tls_handshake_timeout,
                bind,
                inspect_timeout,
                max_inspect_bytes,
                fallback,
                header_timeout,
                max_header_bytes,
            ) {
                listeners.push(ListenerConfig {
                    name: ListenerName::new(raw.name.as_str()),
                    bind,
                    sniff: PluginName::new(raw.sniff.as_str()),
                    default_backend,
                    inspect_timeout,
                    max_inspect_bytes: max_inspect_bytes as usize,
                    fallback,
                    route,
                    header_timeout,
                    max_header_bytes: max_header_bytes as usize,
                    certificates,
                    tls_handshake_timeout,
                    proxy_protocol_from,
                    acme,
                    per_client,
                    tenants,
                });
            }
        }

        let mut backends = BTreeMap::new();
        for (name, raw) in &self.backends {
            if let Some(backend) = raw.validate(name, &mut problems) {
                backends.insert(backend.name.clone(), backend);
            }
        }

        let mut plugins = BTreeMap::new();
        for (name, raw) in &self.plugins {
            let at = |key: &str| format!("plugins.{name}.{key}");
            let source = match (&raw.file, &raw.builtin) {
                (Some(file), None) => {
                    let file = base.join(file);
                    if file.is_file() {
                        Some(PluginSource::File(file))
                    } else {
                        problems.add(at("file"), format!("{} does not exist or is not a file", file.display()));
                        None
                    }
                }
                (None, Some(builtin)) if builtin::component(builtin).is_some() => {
                    Some(PluginSource::Builtin(builtin.clone()))
                }
                (None, Some(builtin)) => {
                    let known = builtin::NAMES.join(", ");
                    problems.add(at("builtin"), format!("no built-in plugin `{builtin}` (built-in: {known})"));
                    None
                }
                _ => {
                    problems.add(format!("plugins.{name}"), "set exactly one of `file` or `builtin`");
                    None
                }
            };
            let defaults = PluginLimits::default();
            let cpu_budget = problems.check(
                &at("cpu-budget"),
                in_range(raw.cpu_budget.unwrap_or(defaults.cpu_budget), 1_000, 10_000_000_000),
            );
            let memory_limit = match &raw.memory_limit {
                Some(size) => problems
                    .check(&at("memory-limit"), size.bytes().and_then(|n| in_range(n, 64 << 10, MAX_PLUGIN_MEMORY))),
                None => Some(defaults.memory_limit),
            };
            let max_instance_calls = problems.check(
                &at("max-instance-calls"),
                in_range(raw.max_instance_calls.unwrap_or(defaults.max_instance_calls), 1, u64::MAX),
            );
            let settings_json = problems.check(
                &at("settings"),
                serde_json::to_string(&raw.settings).map_err(|e| format!("cannot encode as JSON: {e}")),
            );
            // Policy experiments (config/experiments.rs).
            let candidate =
                raw.candidate.as_ref().map(|c| c.validate(name, base, source.as_ref(), settings_json.as_deref()));
            let candidate = candidate.transpose().map_err(|errors| problems.0.extend(errors)).ok();
            let capture = raw.capture.as_ref().map(|c| c.validate(name, base)).transpose();
            let capture = capture.map_err(|errors| problems.0.extend(errors)).ok();
            if let (Some(source), Some(cpu_budget), Some(memory_limit), Some(max_instance_calls), Some(settings_json)) =
                (source, cpu_budget, memory_limit, max_instance_calls, settings_json)
            {
                let name = PluginName::new(name.as_str());
                let limits = PluginLimits { cpu_budget, memory_limit, max_instance_calls };
                let (candidate, capture) = (candidate.flatten(), capture.flatten());
                plugins.insert(name.clone(), PluginConfig { name, source, settings_json, limits, candidate, capture });
            }
        }

        let mut demo_servers = Vec::new();
        for (i, raw) in self.demo_servers.iter().enumerate() {
            let bind = problems.check(&format!("demo-servers[{i}].bind"), parse_socket_addr(&raw.bind));
            let kind = match raw.kind.as_str() {
                "echo" => Some(DemoKind::Echo),
                "http" => Some(DemoKind::Http),
                "banner" => Some(DemoKind::Banner),
                other => {
                    let message = format!("unknown demo server kind `{other}` (echo, http, banner)");
                    problems.add(format!("demo-servers[{i}].kind"), message);
                    None
                }
            };
            let name = raw.name.clone().unwrap_or_else(|| raw.kind.clone());
            if name.is_empty() || name.chars().any(char::is_control) {
                problems.add(format!("demo-servers[{i}].name"), "a name must be non-empty text on one line");
            }
            if let (Some(bind), Some(kind)) = (bind, kind) {
                demo_servers.push(DemoServer { bind, kind, name });
            }
        }

        let admin = match &self.admin {
            None => None,
            Some(admin) => {
                let bind = admin.bind.as_deref().unwrap_or("127.0.0.1:9901");
                let bind = problems.check("admin.bind", parse_socket_addr(bind));
                let caps = super::limits::admin(admin.header_timeout.as_deref(), admin.max_connections);
                let caps = caps.map_err(|errors| problems.0.extend(errors)).ok();
                let auth = super::experiments::admin_auth(admin.token_file.as_deref(), admin.protect_reads, base);
                let auth = auth.map_err(|p| problems.0.push(p)).ok();
                bind.zip(caps).zip(auth).map(|((bind, (header_timeout, max_connections)), auth)| AdminConfig {
                    bind,
                    header_timeout,
                    max_connections: max_connections as usize,
                    auth,
                })
            }
        };

        let access_log = self.access_log.as_ref().and_then(|raw| {
            AccessLogConfig::new(raw.format.as_deref(), raw.file.as_deref(), base)
                .map_err(|(field, message)| problems.add(field, message))
                .ok()
        });

        if !problems.0.is_empty() {
            return Err(problems.0);
        }
        Ok(Config { source: path.to_path_buf(), listeners, backends, plugins, demo_servers, admin, limits, access_log })
    }
}

impl RawBackend {
    /// The backend, or nothing when a field is wrong (each problem recorded).
    pub(super) fn validate(&self, name: &str, problems: &mut Problems) -> Option<BackendConfig> {
        let at = |key: &str| format!("backends.{name}.{key}");
        let duration_or = |problems: &mut Problems, key: &str, text: &Option<String>, default: Duration| match text {
            Some(text) => problems.check(&at(key), positive_duration(text)),
            None => Some(default),
        };
        let max_connections = match self.max_connections {
            Some(n) => problems.check(&at("max-connections"), in_range(n, 1, u32::MAX.into())).map(Some),
            None => Some(None),
        };
        if self.servers.is_empty() {
            problems.add(at("servers"), "a backend needs at least one server");
        }
        let servers: Vec<Option<ServerSpec>> = self
            .servers
            .iter()
            .enumerate()
            .map(|(j, entry)| {
                problems.check(&format!("backends.{name}.servers[{j}]"), server_spec(entry, max_connections.flatten()))
            })
            .collect();
        let resolve_interval =
            duration_or(problems, "resolve-interval", &self.resolve_interval, DEFAULT_RESOLVE_INTERVAL);
        let connect_timeout = duration_or(problems, "connect-timeout", &self.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        let idle_timeout = duration_or(problems, "idle-timeout", &self.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        let response_timeout =
            duration_or(problems, "response-timeout", &self.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        let queue_timeout = duration_or(problems, "queue-timeout", &self.queue_timeout, DEFAULT_QUEUE_TIMEOUT);
        let retries = problems.check(&at("retries"), in_range(self.retries.unwrap_or(DEFAULT_RETRIES), 0, 100));
        let queue = problems.check(&at("queue"), in_range(self.queue.unwrap_or(DEFAULT_QUEUE), 0, 1_000_000));
        let forwarded = match &self.forwarded_headers {
            Some(names) => problems.check(&at("forwarded-headers"), forwarded_headers(names)),
            None => Some(ForwardedHeaders::default()),
        };
        let balance = match self.balance.as_deref() {
            None | Some("round-robin") => Some(Balance::RoundRobin),
            Some("least-connections") => Some(Balance::LeastConnections),
            Some(other) => {
                problems.add(at("balance"), format!("`{other}` is not a balance (round-robin, least-connections)"));
                None
            }
        };
        let hash_key = match &self.hash_key {
            None => Some(None),
            Some(RawHashKey::Word(word)) if word == "client-ip" => Some(Some(HashKey::ClientIp)),
            Some(RawHashKey::Source { header: Some(h), cookie: None }) => {
                Some(Some(HashKey::Header(h.to_ascii_lowercase())))
            }
            Some(RawHashKey::Source { header: None, cookie: Some(c) }) => Some(Some(HashKey::Cookie(c.clone()))),
            Some(_) => {
                problems.add(at("hash-key"), "use \"client-ip\", { header = \"name\" } or { cookie = \"name\" }");
                None
            }
        };
        let sticky_cookie = match &self.sticky_cookie {
            None => Some(None),
            Some(cookie) => problems.check(&at("sticky-cookie"), sticky_cookie(cookie)).map(Some),
        };
        let health_check = match &self.health_check {
            None => Some(None),
            Some(check) => problems.check(&at("health-check"), health_check(check)).map(Some),
        };
        let proxy_protocol = match self.proxy_protocol.as_deref() {
            None => Some(None),
            Some("v1") => Some(Some(crate::proxy_protocol::Version::V1)),
            Some("v2") => Some(Some(crate::proxy_protocol::Version::V2)),
            Some(other) => {
                problems.add(at("proxy-protocol"), format!("`{other}` is not a PROXY protocol version (v1, v2)"));
                None
            }
        };
        // Every field has been checked (and its problem recorded) above; only now give up on the first gap.
        Some(BackendConfig {
            name: BackendName::new(name),
            servers: servers.into_iter().collect::<Option<_>>()?,
            resolve_interval: resolve_interval?,
            connect_timeout: connect_timeout?,
            retries: retries? as u32,
            retry_idempotent: self.retry_idempotent,
            queue: queue? as usize,
            queue_timeout: queue_timeout?,
            idle_timeout: idle_timeout?,
            response_timeout: response_timeout?,
            forwarded: forwarded?,
            balance: balance?,
            hash_key: hash_key?,
            sticky_cookie: sticky_cookie?,
            health_check: health_check?,
            proxy_protocol: proxy_protocol?,
        })
    }
}

/// One `servers` entry: `"host:port"` or a table with `address`, `weight`, `max-connections`.
fn server_spec(entry: &toml::Value, default_max_connections: Option<u64>) -> Result<ServerSpec, String> {
    const USAGE: &str = "use \"host:port\" or { address = \"host:port\", weight = 1, max-connections = 100 }";
    let spec = |address: &str, weight: u64, max_connections: Option<u64>| {
        check_server(address)?;
        Ok(ServerSpec {
            address: address.to_string(),
            weight: in_range(weight, 1, MAX_WEIGHT).map_err(|e| format!("weight {e}"))? as u32,
            max_connections: max_connections
                .map(|n| in_range(n, 1, u32::MAX.into()).map_err(|e| format!("max-connections {e}")))
                .transpose()?
                .map(|n| n as usize),
        })
    };
    match entry {
        toml::Value::String(address) => spec(address, 1, default_max_connections),
        toml::Value::Table(table) => {
            if let Some(unknown) =
                table.keys().find(|key| !["address", "weight", "max-connections"].contains(&key.as_str()))
            {
                return Err(format!("unknown key `{unknown}`; {USAGE}"));
            }
            let address = table.get("address").and_then(toml::Value::as_str).ok_or(format!("no `address`; {USAGE}"))?;
            let number = |key: &str| match table.get(key) {
                None => Ok(None),
                Some(toml::Value::Integer(n)) if *n >= 0 => Ok(Some(*n as u64)),
                Some(other) => Err(format!("{key} must be a positive integer, not {other}")),
            };
            spec(address, number("weight")?.unwrap_or(1), number("max-connections")?.or(default_max_connections))
        }
        other => Err(format!("{other} is not a server; {USAGE}")),
    }
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an address with a port (e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")"))
}

/// A server is `ip:port` or `name:port`.
fn check_server(text: &str) -> Result<(), String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => Ok(()),
        _ => Err(format!("`{text}` is not `host:port` (e.g. \"127.0.0.1:9000\" or \"web-1.internal:80\")")),
    }
}

fn forwarded_headers(names: &[String]) -> Result<ForwardedHeaders, String> {
    let mut headers = ForwardedHeaders {
        x_forwarded_for: false,
        x_forwarded_proto: false,
        x_forwarded_host: false,
        forwarded: false,
    };
    for name in names {
        let flag = match name.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => &mut headers.x_forwarded_for,
            "x-forwarded-proto" => &mut headers.x_forwarded_proto,
            "x-forwarded-host" => &mut headers.x_forwarded_host,
            "forwarded" => &mut headers.forwarded,
            _ => return Err(format!("unknown header `{name}` (one of: {})", FORWARDED_HEADER_NAMES.join(", "))),
        };
        *flag = true;
    }
    Ok(headers)
}

fn sticky_cookie(raw: &RawStickyCookie) -> Result<StickyCookie, String> {
    let token_ok =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token_ok(&raw.name) {
        return Err(format!("`{}` is not a cookie name", raw.name));
    }
    if !raw.path.starts_with('/') || raw.path.contains([';', ' ']) {
        return Err(format!("path `{}` must start with '/' and hold no ';' or spaces", raw.path));
    }
    let same_site = match raw.same_site.as_deref() {
        None => None,
        Some(v @ ("Strict" | "Lax" | "None")) => Some(v.to_string()),
        Some(other) => return Err(format!("same-site `{other}` must be Strict, Lax or None")),
    };
    if same_site.as_deref() == Some("None") && !raw.secure {
        return Err("same-site = \"None\" needs secure = true (browsers refuse it otherwise)".to_string());
    }
    Ok(StickyCookie {
        name: raw.name.clone(),
        path: raw.path.clone(),
        http_only: raw.http_only,
        secure: raw.secure,
        same_site,
    })
}

fn health_check(raw: &RawHealthCheck) -> Result<HealthCheck, String> {
    let interval = raw.interval.as_deref().map(positive_duration).transpose()?.unwrap_or(Duration::from_secs(2));
    let timeout = raw.timeout.as_deref().map(positive_duration).transpose()?.unwrap_or(Duration::from_secs(1));
    let rise = raw.rise.unwrap_or(2);
    let fall = raw.fall.unwrap_or(3);
    if rise == 0 || fall == 0 {
        return Err("rise and fall must be at least 1".to_string());
    }
    if let Some(path) = &raw.http_path
        && !path.starts_with('/')
    {
        return Err(format!("http-path `{path}` must start with '/'"));
    }
    let expect_status = raw.expect_status.unwrap_or(200);
    if !(100..=599).contains(&expect_status) {
        return Err(format!("expect-status {expect_status} is not an HTTP status"));
    }
    Ok(HealthCheck { interval, timeout, rise, fall, http_path: raw.http_path.clone(), expect_status })
}

/// A path relative to the config file's directory that names an existing file.
pub(super) fn existing_file(base: &Path, path: &str) -> Result<PathBuf, String> {
    let full = base.join(path);
    if full.is_file() { Ok(full) } else { Err(format!("{} does not exist or is not a file", full.display())) }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("`{text}` must be longer than zero")),
        d => Ok(d),
    }
}

pub(super) fn in_range(value: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&value) { Ok(value) } else { Err(format!("{value} is out of range ({min} to {max})")) }
}
