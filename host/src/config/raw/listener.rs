//! A `[[listeners]]` entry as written, and its validation into a [`ListenerConfig`].

use super::{Problems, SizeValue, existing_file, in_range, parse_socket_addr, positive_duration};
use crate::config::{CertificateConfig, Fallback, GlobalLimits, ListenerConfig, MAX_INSPECT_BYTES, tenants};
use crate::names::{BackendName, ListenerName, PluginName};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: String,
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
    per_client: crate::config::limits::RawPerClient,
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

const DEFAULT_INSPECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_MAX_INSPECT_BYTES: u64 = 8 << 10;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_HEADER_BYTES: u64 = 64 << 10;
const MAX_HEADER_BYTES: u64 = 1 << 20;
const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl RawListener {
    /// The `i`th listener, or nothing when a field is wrong (each problem recorded).
    pub(super) fn validate(
        &self,
        i: usize,
        base: &Path,
        backend_names: &HashSet<&str>,
        plugin_names: &HashSet<&str>,
        limits: &GlobalLimits,
        problems: &mut Problems,
    ) -> Option<ListenerConfig> {
        let known_backend = |problems: &mut Problems, field: &str, name: &str| {
            if backend_names.contains(name) {
                Some(BackendName::new(name))
            } else {
                problems.add(field, format!("no backend named `{name}` (see [backends])"));
                None
            }
        };
        let at = |key: &str| format!("listeners[{i}].{key}");
        let bind = problems.check(&at("bind"), parse_socket_addr(&self.bind));
        if !plugin_names.contains(self.sniff.as_str()) {
            problems.add(at("sniff"), format!("no plugin named `{}` (see [plugins])", self.sniff));
        }
        let default_backend = match &self.default_backend {
            Some(name) => known_backend(problems, &at("default-backend"), name),
            None => None,
        };
        let inspect_timeout = match &self.inspect_timeout {
            Some(text) => problems.check(&at("inspect-timeout"), positive_duration(text)),
            None => Some(DEFAULT_INSPECT_TIMEOUT),
        };
        let max_inspect_bytes = match &self.max_inspect_bytes {
            Some(size) => {
                problems.check(&at("max-inspect-bytes"), size.bytes().and_then(|n| in_range(n, 1, MAX_INSPECT_BYTES)))
            }
            None => Some(DEFAULT_MAX_INSPECT_BYTES),
        };
        let fallback = match &self.fallback {
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
                known_backend(problems, &at("fallback.backend"), backend).map(Fallback::Backend)
            }
        };
        let route = match &self.route {
            Some(name) if plugin_names.contains(name.as_str()) => Some(PluginName::new(name.as_str())),
            Some(name) => {
                problems.add(at("route"), format!("no plugin named `{name}` (see [plugins])"));
                None
            }
            None => None,
        };
        let header_timeout = match &self.header_timeout {
            Some(text) => problems.check(&at("header-timeout"), positive_duration(text)),
            None => Some(DEFAULT_HEADER_TIMEOUT),
        };
        let max_header_bytes = match &self.max_header_bytes {
            Some(size) => problems
                .check(&at("max-header-bytes"), size.bytes().and_then(|n| in_range(n, 8 << 10, MAX_HEADER_BYTES))),
            None => Some(DEFAULT_MAX_HEADER_BYTES),
        };
        let tls_handshake_timeout = match &self.tls_handshake_timeout {
            Some(text) => problems.check(&at("tls-handshake-timeout"), positive_duration(text)),
            None => Some(DEFAULT_TLS_HANDSHAKE_TIMEOUT),
        };
        let mut certificates = Vec::new();
        for (j, raw) in self.certificates.iter().enumerate() {
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
        for (j, net) in self.proxy_protocol_from.iter().enumerate() {
            if let Some(net) = problems.check(&format!("listeners[{i}].proxy-protocol-from[{j}]"), net.parse()) {
                proxy_protocol_from.push(net);
            }
        }
        let acme = self.acme.as_ref().and_then(|acme| {
            let validated = acme.validate(base);
            for (key, message) in validated.as_ref().err().into_iter().flatten() {
                problems.add(at(&format!("acme.{key}")), message.clone());
            }
            validated.ok()
        });
        let tenants = self.tenants.as_ref().and_then(|dir| problems.check(&at("tenants"), tenants::dir(base, dir)));
        let per_client = self.per_client.validate(&format!("listeners[{i}]"), limits);
        let per_client = per_client.map_err(|errors| problems.0.extend(errors)).ok();
        if self.certificates.iter().filter(|c| c.default).count() > 1 {
            problems.add(at("certificates"), "at most one certificate can be the default");
        }
        let (
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
        )
        else {
            return None;
        };
        Some(ListenerConfig {
            name: ListenerName::new(self.name.as_str()),
            bind,
            sniff: PluginName::new(self.sniff.as_str()),
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
        })
    }
}
