//! The config file as written, and its validation into [`super::Config`].

use super::units::{parse_duration, parse_size};
use super::{AdminConfig, Config, DemoKind, DemoServer, Problem};
use crate::access_log::AccessLogConfig;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod backend;
mod listener;
mod plugin;

pub(super) use backend::RawBackend;
use listener::RawListener;
use plugin::RawPlugin;

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
            if raw.name.is_empty() || !listener_names.insert(raw.name.as_str()) {
                problems.add(
                    format!("listeners[{i}].name"),
                    format!("listener names must be unique and non-empty (`{}`)", raw.name),
                );
            }
            if let Some(listener) = raw.validate(i, base, &backend_names, &plugin_names, &limits, &mut problems) {
                listeners.push(listener);
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
            if let Some(plugin) = raw.validate(name, base, &mut problems) {
                plugins.insert(plugin.name.clone(), plugin);
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

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not an address with a port (e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")"))
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
