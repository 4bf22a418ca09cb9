//! Tenant files: `tenants = "tenants.d/"` in a listener names a directory
//! with one TOML file per tenant (docs/TENANTS.md). The tenant's name is the
//! file's stem (`acme.toml` is tenant `acme`), so two tenants can never have
//! one name. Each file is read and validated on its own, with every problem
//! reported at once against that file, so one broken tenant never stops the
//! others from loading.
//!
//! ```toml
//! # fragment
//! names = ["acme.test", "*.acme.test"]     # SNI and Host names it owns
//! [[certificates]]                         # like [[listeners.certificates]]
//! cert = "acme.crt"
//! key = "acme.key"
//! [backends.web]                           # like [backends.*], in the tenant's own namespace
//! servers = ["127.0.0.1:9001"]
//! [route]                                  # its route plugin: `file` or `builtin`, and settings
//! builtin = "path"
//! settings = { default-backend = "web" }
//! [quotas]                                 # all optional
//! cpu-budget = 5_000_000                   # fuel per decision
//! memory-limit = "8MiB"                    # per plugin instance
//! max-connections = 1000                   # connections open at once
//! requests-per-second = 200                # token bucket (beyond: 429 with Retry-After)
//! requests-burst = 400
//! ```

use super::raw::{Problems, RawBackend, existing_file, in_range};
use super::units::parse_size;
use super::{
    BackendConfig, CertificateConfig, ConfigError, MAX_PLUGIN_MEMORY, PluginConfig, PluginLimits, PluginSource, Problem,
};
use crate::builtin;
use crate::names::{BackendName, PluginName};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A validated tenant file.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// The file's stem.
    pub name: String,
    pub file: PathBuf,
    /// Lower-case DNS names, `*.parent` for one label below `parent`.
    pub names: Vec<String>,
    pub certificates: Vec<CertificateConfig>,
    /// The tenant's own backends: its route plugin can name these and no others.
    pub backends: BTreeMap<BackendName, BackendConfig>,
    /// Its route plugin, named `tenant.<name>` in logs and metrics; its limits are the quotas.
    pub route: PluginConfig,
    pub quotas: Quotas,
}

/// What one tenant may use. The plugin limits are in `route.limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quotas {
    /// Connections open at once (TLS: by SNI; plain HTTP: by the first request's Host).
    pub max_connections: Option<usize>,
    /// Requests per second and the burst above it.
    pub requests: Option<super::Rate>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawTenant {
    names: Vec<String>,
    #[serde(default)]
    certificates: Vec<RawTenantCertificate>,
    #[serde(default)]
    backends: BTreeMap<String, RawBackend>,
    route: RawRoute,
    #[serde(default)]
    quotas: RawQuotas,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawTenantCertificate {
    cert: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRoute {
    file: Option<String>,
    builtin: Option<String>,
    max_instance_calls: Option<u64>,
    #[serde(default)]
    settings: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawQuotas {
    cpu_budget: Option<u64>,
    memory_limit: Option<toml::Value>,
    max_connections: Option<u64>,
    requests_per_second: Option<u64>,
    requests_burst: Option<u64>,
}

/// The `tenants` directory of a listener, which must exist.
pub(super) fn dir(base: &Path, dir: &str) -> Result<PathBuf, String> {
    let full = base.join(dir);
    if full.is_dir() { Ok(full) } else { Err(format!("{} does not exist or is not a directory", full.display())) }
}

/// The tenant files of a directory (`*.toml`, sorted; hidden files skipped).
pub fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "toml")
                && path.file_name().is_some_and(|name| !name.as_encoded_bytes().starts_with(b"."))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Read and validate one tenant file.
pub fn load(path: &Path) -> Result<TenantConfig, ConfigError> {
    let fail = |problems| ConfigError { file: path.to_path_buf(), problems };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(vec![Problem { field: String::new(), message: format!("cannot read the file: {e}") }]))?;
    let raw: RawTenant = toml::from_str(&text).map_err(|e| fail(vec![super::syntax_error::problem(&e, &text)]))?;
    raw.validate(path).map_err(fail)
}

impl RawTenant {
    fn validate(self, path: &Path) -> Result<TenantConfig, Vec<Problem>> {
        let mut problems = Problems::default();
        let base = path.parent().unwrap_or(Path::new("."));
        let name = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            problems
                .add("", format!("the file name `{name}` is the tenant's name: use letters, digits, '-', '_', '.'"));
        }
        if self.names.is_empty() {
            problems.add("names", "a tenant owns at least one name (\"a.test\" or \"*.a.test\")");
        }
        let mut names = Vec::new();
        for (i, host) in self.names.iter().enumerate() {
            let host = host.to_ascii_lowercase();
            match check_name(&host) {
                Ok(()) if names.contains(&host) => {
                    problems.add(format!("names[{i}]"), format!("`{host}` is listed twice"))
                }
                Ok(()) => names.push(host),
                Err(message) => problems.add(format!("names[{i}]"), message),
            }
        }
        let mut certificates = Vec::new();
        for (j, raw) in self.certificates.iter().enumerate() {
            let cert = problems.check(&format!("certificates[{j}].cert"), existing_file(base, &raw.cert));
            let key = problems.check(&format!("certificates[{j}].key"), existing_file(base, &raw.key));
            if let (Some(cert), Some(key)) = (cert, key) {
                // A tenant's certificate answers for the tenant's names only.
                certificates.push(CertificateConfig { cert, key, names: Some(names.clone()), default: false });
            }
        }
        let mut backends = BTreeMap::new();
        for (backend, raw) in &self.backends {
            if let Some(backend) = raw.validate(backend, &mut problems) {
                backends.insert(backend.name.clone(), backend);
            }
        }
        let limits = self.quotas.plugin_limits(self.route.max_instance_calls, &mut problems);
        let source = self.route.source(base, &mut problems);
        let settings_json = problems.check(
            "route.settings",
            serde_json::to_string(&self.route.settings).map_err(|e| format!("cannot encode as JSON: {e}")),
        );
        let quotas = self.quotas.quotas(&mut problems);
        if !problems.0.is_empty() {
            return Err(problems.0);
        }
        let (Some(source), Some(settings_json), Some(limits), Some(quotas)) = (source, settings_json, limits, quotas)
        else {
            return Err(vec![Problem { field: String::new(), message: "incomplete tenant".into() }]);
        };
        let route = PluginConfig {
            name: PluginName::new(format!("tenant.{name}")),
            source,
            settings_json,
            limits,
            candidate: None,
            capture: None,
        };
        Ok(TenantConfig { name, file: path.to_path_buf(), names, certificates, backends, route, quotas })
    }
}

impl RawRoute {
    fn source(&self, base: &Path, problems: &mut Problems) -> Option<PluginSource> {
        match (&self.file, &self.builtin) {
            (Some(file), None) => problems.check("route.file", existing_file(base, file)).map(PluginSource::File),
            (None, Some(name)) if builtin::component(name).is_some() => Some(PluginSource::Builtin(name.clone())),
            (None, Some(name)) => {
                let known = builtin::NAMES.join(", ");
                problems.add("route.builtin", format!("no built-in plugin `{name}` (built-in: {known})"));
                None
            }
            _ => {
                problems.add("route", "set exactly one of `file` or `builtin`");
                None
            }
        }
    }
}

impl RawQuotas {
    fn plugin_limits(&self, max_instance_calls: Option<u64>, problems: &mut Problems) -> Option<PluginLimits> {
        let defaults = PluginLimits::default();
        let cpu_budget = problems.check(
            "quotas.cpu-budget",
            in_range(self.cpu_budget.unwrap_or(defaults.cpu_budget), 1_000, 10_000_000_000),
        );
        let memory_limit = match &self.memory_limit {
            None => Some(defaults.memory_limit),
            Some(value) => {
                let bytes = match value {
                    toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
                    toml::Value::String(text) => parse_size(text),
                    other => Err(format!("{other} is not a size (e.g. \"8MiB\")")),
                };
                problems.check("quotas.memory-limit", bytes.and_then(|n| in_range(n, 64 << 10, MAX_PLUGIN_MEMORY)))
            }
        };
        let max_instance_calls = problems.check(
            "route.max-instance-calls",
            in_range(max_instance_calls.unwrap_or(defaults.max_instance_calls), 1, u64::MAX),
        );
        Some(PluginLimits {
            cpu_budget: cpu_budget?,
            memory_limit: memory_limit?,
            max_instance_calls: max_instance_calls?,
        })
    }

    fn quotas(&self, problems: &mut Problems) -> Option<Quotas> {
        let max_connections = match self.max_connections {
            Some(n) => Some(problems.check("quotas.max-connections", in_range(n, 1, u32::MAX.into()))? as usize),
            None => None,
        };
        let requests = match (self.requests_per_second, self.requests_burst) {
            (None, None) => None,
            (None, Some(_)) => {
                problems.add("quotas.requests-burst", "needs `requests-per-second`");
                return None;
            }
            (Some(rate), burst) => {
                let per_second = problems.check("quotas.requests-per-second", in_range(rate, 1, u32::MAX.into()));
                let burst =
                    problems.check("quotas.requests-burst", in_range(burst.unwrap_or(rate), 1, u32::MAX.into()));
                Some(super::Rate { per_second: per_second? as u32, burst: burst? as u32 })
            }
        };
        Some(Quotas { max_connections, requests })
    }
}

/// A DNS name, or `*.` and a DNS name; lower-case, no port.
fn check_name(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let label_ok = |label: &str| {
        !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if bare.len() > 253 || !bare.split('.').all(label_ok) {
        return Err(format!("`{name}` is not a DNS name such as \"a.test\" or \"*.a.test\" (no port, no scheme)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn every_problem_of_a_tenant_file_is_reported_with_its_field() {
        let dir = std::env::temp_dir().join(format!("sluice-tenant-unit-{}", std::process::id()));
        let path = write(
            &dir,
            "bad.toml",
            "names = [\"ok.test\", \"http://x\", \"ok.test\"]\n[[certificates]]\ncert = \"nope.crt\"\nkey = \"nope.key\"\n\
             [backends.web]\nservers = []\n[route]\nbuiltin = \"nope\"\n[quotas]\ncpu-budget = 1\nrequests-burst = 5\n",
        );
        let error = load(&path).unwrap_err();
        let fields: Vec<&str> = error.problems.iter().map(|p| p.field.as_str()).collect();
        for field in [
            "names[1]",
            "names[2]",
            "certificates[0].cert",
            "certificates[0].key",
            "backends.web.servers",
            "route.builtin",
            "quotas.cpu-budget",
            "quotas.requests-burst",
        ] {
            assert!(fields.contains(&field), "{field} missing from {fields:?}");
        }
        assert_eq!(error.file, path);

        let good = write(
            &dir,
            "good.toml",
            "names = [\"Good.test\", \"*.good.test\"]\n[backends.web]\nservers = [\"127.0.0.1:9\"]\n\
             [route]\nbuiltin = \"path\"\nsettings = { default-backend = \"web\" }\n\
             [quotas]\nrequests-per-second = 10\nmemory-limit = \"4MiB\"\n",
        );
        let tenant = load(&good).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(tenant.name, "good");
        assert_eq!(tenant.names, ["good.test", "*.good.test"]);
        assert_eq!(tenant.route.name.as_str(), "tenant.good");
        assert_eq!(tenant.route.limits.memory_limit, 4 << 20);
        assert_eq!(tenant.quotas.requests, Some(super::super::Rate { per_second: 10, burst: 10 }));
    }
}
