//! A `[backends.NAME]` table as written, and its validation into a [`BackendConfig`].

use super::{Problems, in_range, positive_duration};
use crate::config::{
    BackendConfig, Balance, FORWARDED_HEADER_NAMES, ForwardedHeaders, HashKey, HealthCheck, ServerSpec, StickyCookie,
};
use crate::names::BackendName;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(in crate::config) struct RawBackend {
    /// `"host:port"` or `{ address = "host:port", weight = 2, max-connections = 100 }`.
    pub(super) servers: Vec<toml::Value>,
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

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u64 = 3;
const DEFAULT_QUEUE: u64 = 1000;
const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_WEIGHT: u64 = 1000;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

impl RawBackend {
    /// The backend, or nothing when a field is wrong (each problem recorded).
    pub(in crate::config) fn validate(&self, name: &str, problems: &mut Problems) -> Option<BackendConfig> {
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
