//! A snapshot: everything connections need, built from one config version
//! (listener plans with their loaded plugins, and backends).
//!
//! A connection takes the snapshot that is current when it is accepted and
//! keeps it to the end, so swapping in a new snapshot never disturbs it.

use crate::access_log::{AccessLog, OpenError};
use crate::backend::Backends;
use crate::builtin;
use crate::config::{Config, ListenerConfig, PluginConfig, PluginSource};
use crate::metrics::http::ListenerHttpMetrics;
use crate::names::{ListenerName, PluginName};
use crate::plugin::wasm::{LoadError, Runtime};
use crate::plugin::{Router, Sniffer};
use crate::tls::{CertError, Terminator};
use std::collections::HashMap;
use std::sync::Arc;

/// One listener's config and the plugins it uses.
pub struct ListenerPlan {
    pub config: ListenerConfig,
    pub sniffer: Arc<dyn Sniffer>,
    /// The route plugin for HTTP requests, if the listener serves HTTP.
    pub router: Option<Arc<dyn Router>>,
    /// TLS termination, if the listener has certificates.
    pub tls: Option<Terminator>,
    /// The listener's HTTP series, looked up once here rather than on every request.
    pub http: ListenerHttpMetrics,
    /// Per-client connection and request limits (kept across reloads, see `limits::carry_over`).
    pub per_client: crate::limits::per_client::ClientLimiter,
}

pub struct Snapshot {
    pub listeners: HashMap<ListenerName, Arc<ListenerPlan>>,
    pub backends: Backends,
    /// Global connection limits of this config version.
    pub limits: Arc<ConnLimits>,
    /// Loaded plugins by name, for the status page: (world, SHA-256 of the component).
    pub plugin_versions: Vec<(PluginName, &'static str, String)>,
    /// Where HTTP request lines go.
    pub access_log: AccessLog,
}

/// Permits for open and sniffing connections (see `[limits]`). A reload
/// brings fresh counts: connections accepted before it hold the old ones.
pub struct ConnLimits {
    pub connections: Arc<tokio::sync::Semaphore>,
    pub sniffing: Arc<tokio::sync::Semaphore>,
}

/// A plugin or certificate that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("listener `{listener}`: {error}")]
    Certificates { listener: ListenerName, error: CertError },
    #[error("plugin `{plugin}`: cannot read {path}: {error}")]
    Read { plugin: PluginName, path: String, error: std::io::Error },
    #[error("plugin `{plugin}` ({source_desc}) {error}")]
    Load { plugin: PluginName, source_desc: String, error: LoadError },
    #[error(transparent)]
    AccessLog(#[from] OpenError),
    /// A plugin declared a backend the config does not have.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl Snapshot {
    /// Load every plugin the config uses and build the plans. Compiles
    /// WebAssembly: run it off the async workers.
    pub fn build(config: &Config, runtime: &Runtime) -> Result<Snapshot, BuildError> {
        let mut sniffers: HashMap<PluginName, Arc<dyn Sniffer>> = HashMap::new();
        let mut routers: HashMap<PluginName, Arc<dyn Router>> = HashMap::new();
        for listener in &config.listeners {
            if !sniffers.contains_key(&listener.sniff) {
                let plugin = &config.plugins[&listener.sniff];
                let (wasm, source) = read_plugin(plugin)?;
                let sniffer = runtime
                    .load_sniffer(plugin.name.clone(), &wasm, plugin.settings_json.clone(), plugin.limits)
                    .map_err(|error| load_error(plugin, source, error))?;
                sniffers.insert(listener.sniff.clone(), sniffer);
            }
            if let Some(route) = listener.route.as_ref().filter(|route| !routers.contains_key(*route)) {
                let plugin = &config.plugins[route];
                let (wasm, source) = read_plugin(plugin)?;
                let router = runtime
                    .load_router(plugin.name.clone(), &wasm, plugin.settings_json.clone(), plugin.limits)
                    .map_err(|error| load_error(plugin, source, error))?;
                routers.insert(route.clone(), router);
            }
        }
        check_declared_backends(config, &sniffers, &routers)?;
        for name in config.plugins.keys().filter(|name| !sniffers.contains_key(*name) && !routers.contains_key(*name)) {
            tracing::warn!(plugin = %name, "plugin is configured but no listener uses it");
        }
        let mut listeners = HashMap::new();
        for listener in &config.listeners {
            let tls = match (listener.certificates.as_slice(), &listener.acme) {
                ([], None) => None,
                (certificates, acme) => Some(
                    Terminator::load(certificates, acme.as_ref(), listener.tls_handshake_timeout)
                        .map_err(|error| BuildError::Certificates { listener: listener.name.clone(), error })?,
                ),
            };
            let plan = ListenerPlan {
                config: listener.clone(),
                sniffer: sniffers[&listener.sniff].clone(),
                router: listener.route.as_ref().map(|route| routers[route].clone()),
                tls,
                http: ListenerHttpMetrics::new(listener.name.as_str()),
                per_client: crate::limits::per_client::ClientLimiter::new(listener.name.clone(), listener.per_client),
            };
            listeners.insert(listener.name.clone(), Arc::new(plan));
        }
        let limits = Arc::new(ConnLimits {
            connections: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
            sniffing: Arc::new(tokio::sync::Semaphore::new(config.limits.max_sniffing)),
        });
        let mut plugin_versions: Vec<(PluginName, &'static str, String)> = sniffers
            .iter()
            .map(|(name, plugin)| (name.clone(), "sniffer", plugin.version().to_string()))
            .chain(routers.iter().map(|(name, plugin)| (name.clone(), "router", plugin.version().to_string())))
            .collect();
        plugin_versions.sort();
        let access_log = AccessLog::open(config.access_log.as_ref())?;
        let backends = Backends::new(config.backends.values());
        Ok(Snapshot { listeners, backends, limits, plugin_versions, access_log })
    }
}

/// The plugin's component bytes, and a description of where they came from.
fn read_plugin(plugin: &PluginConfig) -> Result<(Vec<u8>, String), BuildError> {
    let read = read_plugin_bytes(plugin)?;
    tracing::info!(plugin = %plugin.name, source = %read.1, bytes = read.0.len(), "loading plugin");
    Ok(read)
}

fn read_plugin_bytes(plugin: &PluginConfig) -> Result<(Vec<u8>, String), BuildError> {
    match &plugin.source {
        PluginSource::Builtin(name) => match builtin::component(name) {
            Some(bytes) => Ok((bytes.to_vec(), format!("built-in `{name}`"))),
            None => Err(BuildError::Read {
                plugin: plugin.name.clone(),
                path: format!("builtin:{name}"),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such built-in plugin"),
            }),
        },
        PluginSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|error| BuildError::Read {
                plugin: plugin.name.clone(),
                path: path.display().to_string(),
                error,
            })?;
            Ok((bytes, path.display().to_string()))
        }
    }
}

fn load_error(plugin: &PluginConfig, source_desc: String, error: LoadError) -> BuildError {
    BuildError::Load { plugin: plugin.name.clone(), source_desc, error }
}

/// Every backend a loaded plugin declared at `init` must be in the config;
/// all unknown ones are reported at once, against the config file.
fn check_declared_backends(
    config: &Config,
    sniffers: &HashMap<PluginName, Arc<dyn Sniffer>>,
    routers: &HashMap<PluginName, Arc<dyn Router>>,
) -> Result<(), BuildError> {
    use crate::plugin::declared;
    let mut plugins: Vec<_> = sniffers
        .iter()
        .map(|(name, plugin)| (name, plugin.manifest()))
        .chain(routers.iter().map(|(name, plugin)| (name, plugin.manifest())))
        .collect();
    plugins.sort_by(|a, b| a.0.cmp(b.0));
    let known = declared::list(config.backends.keys());
    let problems = declared::unknown_backends(plugins, |backend| config.backends.contains_key(backend), &known);
    if problems.is_empty() {
        return Ok(());
    }
    Err(crate::config::ConfigError { file: config.source.clone(), problems }.into())
}
