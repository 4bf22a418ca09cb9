//! Multi-tenant hosting (docs/TENANTS.md): a listener with `tenants =
//! "dir/"` serves many tenants, each from its own file, with its own names,
//! certificates, backends, route plugin and quotas.
//!
//! ```text
//! TLS ClientHello ─► SNI owner's certificate (else the listener's)
//! request ─► owner of Host (and of SNI: must be the same, else 421)
//!            ├─ unknown name ─► the listener's route plugin, or 404
//!            └─ tenant ─► quotas (connections, requests/s) ─► its plugin
//!                         ─► a backend of its own namespace (else 502)
//! ```
//!
//! - [`load`]: reading a tenant directory; unchanged tenants are reused as
//!   they are (plugin instances, backend pools, health state), a broken file
//!   keeps its previous version live.
//! - [`quota`]: connection and request-rate quotas; the plugin's fuel and
//!   memory quotas are its plugin limits.
//! - [`http`]: the per-request dispatch the HTTP stage calls.
//! - [`metrics`](self::metrics): the `tenant`-labelled series; `/status` via [`status_json`].

pub mod http;
pub mod load;
pub mod metrics;
pub mod quota;

use crate::backend::{Backend, Backends};
use crate::config::tenants::TenantConfig;
use crate::names::BackendName;
use crate::plugin::Router;
use rustls::sign::CertifiedKey;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

pub use load::{LoadError, load_dir};

/// One loaded tenant. Shared by every snapshot until its file changes.
pub struct Tenant {
    pub config: TenantConfig,
    pub router: Arc<dyn Router>,
    /// Its own backends, keyed by the names its plugin uses (each backend is
    /// named `tenant/name` in metrics and logs).
    backends: HashMap<BackendName, Arc<Backend>>,
    /// Kept alive for the backends' health checks and re-resolution.
    _backends: Backends,
    /// Its certificate (the first of `certificates`), for its names.
    pub certificate: Option<Arc<CertifiedKey>>,
    pub quota: quota::QuotaState,
    pub metrics: metrics::TenantMetrics,
    /// SHA-256 over the tenant file and every file it names: unchanged ⇒ reused.
    pub(crate) fingerprint: [u8; 32],
}

impl Tenant {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// A backend of this tenant's namespace, by the name its plugin uses.
    pub fn backend(&self, name: &BackendName) -> Option<&Arc<Backend>> {
        self.backends.get(name)
    }
}

/// The tenants of one listener, by the names they own.
pub struct TenantSet {
    pub dir: PathBuf,
    /// By tenant name.
    pub tenants: BTreeMap<String, Arc<Tenant>>,
    exact: HashMap<String, Arc<Tenant>>,
    /// `*.parent` names, by `parent`.
    wildcard: HashMap<String, Arc<Tenant>>,
    /// Tenant files refused at the last load (file: why); their previous version, if any, is live.
    pub refused: Vec<(PathBuf, String)>,
}

impl TenantSet {
    /// The tenant owning `host` (lower-case or not, without a port): an exact
    /// name first, then a wildcard one label up.
    pub fn owner(&self, host: &str) -> Option<&Arc<Tenant>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.exact.get(&host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent)
        })
    }

    fn new(dir: PathBuf, tenants: BTreeMap<String, Arc<Tenant>>, refused: Vec<(PathBuf, String)>) -> TenantSet {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for tenant in tenants.values() {
            for name in &tenant.config.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.insert(parent.to_string(), tenant.clone()),
                    None => exact.insert(name.clone(), tenant.clone()),
                };
            }
        }
        TenantSet { dir, tenants, exact, wildcard, refused }
    }
}

/// Certificates of the tenants, chosen by SNI before the listener's own.
impl crate::tls::CertSource for TenantSet {
    fn certificate(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        self.owner(server_name)?.certificate.clone()
    }
}

impl std::fmt::Debug for TenantSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSet").field("dir", &self.dir).field("tenants", &self.tenants.len()).finish()
    }
}

/// The tenants of every listener, for `/status`: names, plugin hashes, quotas, usage, refused files.
pub fn status_json(snapshot: &crate::state::Snapshot) -> serde_json::Value {
    let mut listeners: Vec<_> = snapshot
        .listeners
        .values()
        .filter_map(|plan| {
            let set = plan.tenants.as_ref()?;
            let tenants: Vec<_> = set.tenants.values().map(|tenant| tenant_json(tenant)).collect();
            let refused: Vec<_> = set
                .refused
                .iter()
                .map(|(file, why)| serde_json::json!({ "file": file.display().to_string(), "error": why }))
                .collect();
            Some(serde_json::json!({
                "listener": plan.config.name.as_str(),
                "dir": set.dir.display().to_string(),
                "tenants": tenants,
                "refused": refused,
            }))
        })
        .collect();
    listeners.sort_by(|a, b| a["listener"].as_str().cmp(&b["listener"].as_str()));
    serde_json::Value::Array(listeners)
}

fn tenant_json(tenant: &Tenant) -> serde_json::Value {
    let config = &tenant.config;
    let quotas = &config.quotas;
    serde_json::json!({
        "name": config.name,
        "file": config.file.display().to_string(),
        "names": config.names,
        "plugin_sha256": tenant.router.version(),
        "backends": config.backends.keys().map(|b| b.as_str()).collect::<Vec<_>>(),
        "quotas": {
            "cpu_budget": config.route.limits.cpu_budget,
            "memory_limit": config.route.limits.memory_limit,
            "max_connections": quotas.max_connections,
            "requests_per_second": quotas.requests.map(|r| r.per_second),
            "requests_burst": quotas.requests.map(|r| r.burst),
        },
        "usage": tenant.quota.usage_json(),
    })
}
