//! A snapshot: everything connections need, built from one config version
//! (listener plans with their loaded plugins, and backends).
//!
//! A connection takes the snapshot that is current when it is accepted and
//! keeps it to the end, so swapping in a new snapshot never disturbs it.

use crate::backend::Backends;
use crate::builtin;
use crate::config::{Config, ListenerConfig, PluginConfig, PluginSource};
use crate::names::{ListenerName, PluginName};
use crate::plugin::Sniffer;
use crate::plugin::wasm::{LoadError, Runtime};
use std::collections::HashMap;
use std::sync::Arc;

/// One listener's config and the plugins it uses.
pub struct ListenerPlan {
    pub config: ListenerConfig,
    pub sniffer: Arc<dyn Sniffer>,
}

pub struct Snapshot {
    pub listeners: HashMap<ListenerName, Arc<ListenerPlan>>,
    pub backends: Backends,
}

/// A plugin that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    #[error("plugin `{plugin}`: cannot read {path}: {error}")]
    Read { plugin: PluginName, path: String, error: std::io::Error },
    #[error("plugin `{plugin}` ({source_desc}) {error}")]
    Load { plugin: PluginName, source_desc: String, error: LoadError },
}

impl Snapshot {
    /// Load every plugin the config uses and build the plans. Compiles
    /// WebAssembly: run it off the async workers.
    pub fn build(config: &Config, runtime: &Runtime) -> Result<Snapshot, PluginLoadError> {
        let mut sniffers: HashMap<PluginName, Arc<dyn Sniffer>> = HashMap::new();
        for listener in &config.listeners {
            if sniffers.contains_key(&listener.sniff) {
                continue;
            }
            let plugin = &config.plugins[&listener.sniff];
            sniffers.insert(listener.sniff.clone(), load_sniffer(plugin, runtime)?);
        }
        for name in config.plugins.keys().filter(|name| !sniffers.contains_key(*name)) {
            tracing::warn!(plugin = %name, "plugin is configured but no listener uses it");
        }
        let listeners = config
            .listeners
            .iter()
            .map(|listener| {
                let plan = ListenerPlan { config: listener.clone(), sniffer: sniffers[&listener.sniff].clone() };
                (listener.name.clone(), Arc::new(plan))
            })
            .collect();
        Ok(Snapshot { listeners, backends: Backends::new(config.backends.values()) })
    }
}

fn load_sniffer(plugin: &PluginConfig, runtime: &Runtime) -> Result<Arc<dyn Sniffer>, PluginLoadError> {
    let (bytes, source_desc) = match &plugin.source {
        PluginSource::Builtin(name) => {
            let bytes = builtin::component(name).expect("config validation checked the built-in name");
            (bytes.to_vec(), format!("built-in `{name}`"))
        }
        PluginSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|error| PluginLoadError::Read {
                plugin: plugin.name.clone(),
                path: path.display().to_string(),
                error,
            })?;
            (bytes, path.display().to_string())
        }
    };
    let started = std::time::Instant::now();
    let sniffer =
        runtime.load_sniffer(plugin.name.clone(), &bytes, plugin.settings_json.clone(), plugin.limits).map_err(
            |error| PluginLoadError::Load { plugin: plugin.name.clone(), source_desc: source_desc.clone(), error },
        )?;
    tracing::info!(plugin = %plugin.name, source = %source_desc, took = ?started.elapsed(), "plugin loaded");
    Ok(sniffer)
}
