//! Loading a listener's tenant directory, one tenant at a time.
//!
//! - Each `*.toml` file is one tenant (config/tenants.rs). Its fingerprint
//!   is the SHA-256 of the file and of every file it names (plugin,
//!   certificate, key); a tenant whose fingerprint did not change since the
//!   previous snapshot is reused as it is: the same plugin instances,
//!   backend connection pools, health state and quota counters. So changing,
//!   adding or removing one file reloads that tenant only.
//! - A changed tenant is loaded whole (file validated, plugin compiled —
//!   identical components are compiled once per process — and probed,
//!   certificate checked) before it replaces the previous version.
//! - At start-up (no previous version of the listener), any refused tenant
//!   file fails the start, with every problem of every file listed. On a
//!   reload, a refused file keeps its previous version live (or stays absent
//!   if it is new), is logged and listed in `/status`; the others load.
//! - Two tenants claiming one name: the one already live keeps it; the
//!   other is refused, and the error names both files.

use super::quota::QuotaState;
use super::{Tenant, TenantSet};
use crate::backend::Backends;
use crate::builtin;
use crate::config::PluginSource;
use crate::config::tenants::{self, TenantConfig};
use crate::names::BackendName;
use crate::plugin::Router;
use crate::plugin::wasm::Runtime;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Tenant files refused at start-up (each entry: the file and why).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("tenants directory {dir}: {error}")]
    Dir { dir: String, error: std::io::Error },
    #[error("{} tenant file{} refused:\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, list(.0))]
    Refused(Vec<(PathBuf, String)>),
}

fn list(refused: &[(PathBuf, String)]) -> String {
    refused.iter().map(|(_, why)| why.as_str()).collect::<Vec<_>>().join("\n")
}

/// Load the tenants of `dir`, reusing the unchanged ones of `previous` (the
/// listener's set in the live snapshot; `None` at start-up). Compiles
/// WebAssembly: run it off the async workers.
pub fn load_dir(dir: &Path, runtime: &Runtime, previous: Option<&TenantSet>) -> Result<TenantSet, LoadError> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let files = tenants::files(&dir).map_err(|error| LoadError::Dir { dir: dir.display().to_string(), error })?;
    let before: HashMap<&Path, &Arc<Tenant>> =
        previous.map(|set| set.tenants.values().map(|t| (t.config.file.as_path(), t)).collect()).unwrap_or_default();
    let mut refused = Vec::new();
    // (tenant, whether it is a new version), the reused ones first: they keep their names.
    let mut candidates = Vec::new();
    for file in &files {
        let old = before.get(file.as_path()).copied();
        match load_one(file, runtime, old) {
            Ok(tenant) => {
                let fresh = !old.is_some_and(|old| Arc::ptr_eq(old, &tenant));
                candidates.push((tenant, fresh, old));
            }
            Err(why) => {
                refused.push((file.clone(), why));
                if let Some(old) = old {
                    candidates.push((old.clone(), false, None));
                }
            }
        }
    }
    candidates.sort_by_key(|(_, fresh, _)| *fresh);
    let mut owners: HashMap<String, Arc<Tenant>> = HashMap::new();
    let mut accepted = BTreeMap::new();
    for (tenant, fresh, old) in candidates {
        let tenant = match clash(&tenant, &owners) {
            None => tenant,
            Some(why) => {
                refused.push((tenant.config.file.clone(), why));
                // A new version that clashes: its previous one stays, if it still fits.
                match old.filter(|old| fresh && clash(old, &owners).is_none()) {
                    Some(old) => old.clone(),
                    None => continue,
                }
            }
        };
        for name in &tenant.config.names {
            owners.insert(name.clone(), tenant.clone());
        }
        accepted.insert(tenant.config.name.clone(), tenant);
    }
    if previous.is_none() && !refused.is_empty() {
        return Err(LoadError::Refused(refused));
    }
    for (file, why) in &refused {
        tracing::error!(file = %file.display(), "tenant refused; its previous version (if any) stays live: {why}");
    }
    Ok(TenantSet::new(dir, accepted, refused))
}

/// Why `tenant` cannot have its names, if another tenant owns one of them.
fn clash(tenant: &Tenant, owners: &HashMap<String, Arc<Tenant>>) -> Option<String> {
    let (name, owner) = tenant.config.names.iter().find_map(|name| Some((name, owners.get(name)?)))?;
    Some(format!(
        "{}: names: `{name}` is also claimed by tenant `{}` ({}); a name has one owner",
        tenant.config.file.display(),
        owner.config.name,
        owner.config.file.display(),
    ))
}

/// Load one tenant file, or reuse `old` when nothing it depends on changed.
fn load_one(file: &Path, runtime: &Runtime, old: Option<&Arc<Tenant>>) -> Result<Arc<Tenant>, String> {
    let config = tenants::load(file).map_err(|e| e.to_string())?;
    let fingerprint = fingerprint(&config);
    if let Some(old) = old.filter(|old| old.fingerprint == fingerprint) {
        return Ok(old.clone());
    }
    let at = file.display();
    let plugin = &config.route;
    let (wasm, source) = match &plugin.source {
        PluginSource::Builtin(name) => {
            (builtin::component(name).ok_or(format!("{at}: route: no built-in `{name}`"))?.to_vec(), name.clone())
        }
        PluginSource::File(path) => (
            std::fs::read(path).map_err(|e| format!("{at}: route.file: cannot read {}: {e}", path.display()))?,
            path.display().to_string(),
        ),
    };
    let router = runtime
        .load_router(plugin.name.clone(), &wasm, plugin.settings_json.clone(), plugin.limits)
        .map_err(|e| format!("{at}: route plugin ({source}) {e}"))?;
    // The backends the plugin declared at `init` must all be the tenant's own.
    if let Some(declared) = &router.manifest().backends
        && let Some(foreign) = declared.iter().find(|name| !config.backends.contains_key(*name))
    {
        return Err(format!(
            "{at}: route.settings: the route plugin declares backend `{foreign}`, which tenant `{}` does not have \
             (its backends: {})",
            config.name,
            config.backends.keys().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    let certificate = match config.certificates.first() {
        None => None,
        Some(certificate) => {
            let provider = rustls::crypto::ring::default_provider();
            let (key, _) = crate::tls::load_certified_key(certificate, &provider)
                .map_err(|e| format!("{at}: certificates[0]: {e}"))?;
            Some(Arc::new(key))
        }
    };
    // Each backend is `tenant/name` in metrics and logs; the plugin names it `name`.
    let renamed: Vec<_> = config
        .backends
        .values()
        .map(|backend| {
            let mut backend = backend.clone();
            backend.name = BackendName::new(format!("{}/{}", config.name, backend.name));
            backend
        })
        .collect();
    let owned = Backends::new(&renamed);
    let backends = config
        .backends
        .keys()
        .filter_map(|name| {
            let qualified = BackendName::new(format!("{}/{}", config.name, name));
            Some((name.clone(), owned.get(&qualified)?.clone()))
        })
        .collect();
    tracing::info!(tenant = %config.name, file = %at, version = %router.version(), "tenant loaded");
    Ok(Arc::new(Tenant {
        quota: QuotaState::new(&config.quotas, old.map(|old| &old.quota)),
        metrics: super::metrics::TenantMetrics::new(&config.name),
        router,
        backends,
        _backends: owned,
        certificate,
        fingerprint,
        config,
    }))
}

/// SHA-256 over the tenant file and every file it names (missing ones hash as empty).
fn fingerprint(config: &TenantConfig) -> [u8; 32] {
    let mut files = vec![config.file.clone()];
    if let PluginSource::File(path) = &config.route.source {
        files.push(path.clone());
    }
    for certificate in &config.certificates {
        files.extend([certificate.cert.clone(), certificate.key.clone()]);
    }
    let mut hash = Sha256::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        hash.update(file.as_os_str().as_encoded_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    hash.finalize().into()
}

/// Every file the tenants of `dir` depend on, and `dir` itself (its listing
/// changes when a tenant is added or removed), for the reloader to watch.
pub fn watched_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![dir.to_path_buf()];
    for file in tenants::files(dir).unwrap_or_default() {
        // Loosely, like the reloader's view of a config that does not load yet.
        let table: Option<toml::Table> =
            std::fs::read_to_string(&file).ok().and_then(|text| toml::from_str(&text).ok());
        let base = file.parent().unwrap_or(dir).to_path_buf();
        files.push(file);
        let Some(table) = table else { continue };
        if let Some(plugin) = table.get("route").and_then(|route| route.get("file")).and_then(|f| f.as_str()) {
            files.push(base.join(plugin));
        }
        let certificates = table.get("certificates").and_then(|c| c.as_array()).into_iter().flatten();
        for certificate in certificates {
            for key in ["cert", "key"] {
                if let Some(path) = certificate.get(key).and_then(|f| f.as_str()) {
                    files.push(base.join(path));
                }
            }
        }
    }
    files
}
