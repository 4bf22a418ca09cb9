//! Policy experiments (docs/EXPERIMENTS.md): run a candidate version of a
//! plugin beside the live one.
//!
//! - [`wrap`]: the [`Router`]/[`Sniffer`] wrappers on the request path
//!   (rollout share by stable key, fallback to live when the candidate fails).
//! - [`worker`]: the shadow calls and capture writes, off the request path.
//! - [`control`]: share, state and rollback rules; carried over reloads.
//! - [`compare`]: what kind of difference two decisions have.
//! - [`record`], [`capture`]: decision inputs as JSON lines, and their file.
//! - [`replay`]: `sluice plugin replay`, the offline diff of two versions.
//! - [`admin_api`]: the admin listener's write actions and their token.

pub mod admin_api;
pub mod capture;
pub mod compare;
pub mod control;
pub mod record;
pub mod replay;
pub mod replay_cli;
pub mod worker;
pub mod wrap;

use crate::config::PluginConfig;
use crate::config::experiments::SplitKey;
use crate::plugin::wasm::Runtime;
use crate::plugin::{Router, Sniffer};
use crate::state::{BuildError, Snapshot};
use control::Control;
use std::sync::Arc;
use worker::{Candidate, Worker};
use wrap::{Experiment, ExperimentRouter, ExperimentSniffer};

/// Queue length for an experiment that only captures.
const CAPTURE_QUEUE: usize = 1024;

/// The candidate's settings and component hash: what identifies it across reloads.
fn identity(version: &str, settings: &str) -> String {
    format!("{version} {settings}")
}

fn experiment(
    plugin: &PluginConfig,
    candidate: Option<Candidate>,
    version: Option<&str>,
) -> Result<(Experiment, Option<Arc<Control>>), BuildError> {
    let config = plugin.candidate.as_ref();
    let control = config.zip(version).map(|(config, version)| {
        Arc::new(Control::new(plugin.name.clone(), identity(version, &config.settings_json), config))
    });
    let worker = Worker {
        control: control.clone(),
        candidate,
        capture: plugin.capture.clone().map(capture::CaptureFile::new),
        redact: config.map(|c| c.redact.clone()).unwrap_or_default(),
        log_per_minute: config.map_or(0, |c| c.log_per_minute),
    };
    let capacity = config.map_or(CAPTURE_QUEUE, |c| c.queue);
    let queue = worker::spawn(worker, capacity, &plugin.name).map_err(|error| BuildError::Read {
        plugin: plugin.name.clone(),
        path: "(experiment worker thread)".into(),
        error,
    })?;
    let key = config.map_or(SplitKey::ClientIp, |c| c.key.clone());
    let shadow = config.is_some_and(|c| c.shadow);
    Ok((Experiment::new(control.clone(), key, shadow, queue, plugin.capture.clone(), &plugin.name), control))
}

/// The candidate's own plugin config (its component and settings, the live limits).
fn candidate_config(plugin: &PluginConfig) -> Option<PluginConfig> {
    let candidate = plugin.candidate.as_ref()?;
    Some(PluginConfig {
        source: candidate.source.clone(),
        settings_json: candidate.settings_json.clone(),
        candidate: None,
        capture: None,
        ..plugin.clone()
    })
}

/// Wrap a loaded route plugin when its config has a candidate or a capture.
pub fn router(
    plugin: &PluginConfig,
    live: Arc<dyn Router>,
    runtime: &Runtime,
    controls: &mut Vec<Arc<Control>>,
) -> Result<Arc<dyn Router>, BuildError> {
    if plugin.candidate.is_none() && plugin.capture.is_none() {
        return Ok(live);
    }
    let candidate: Option<Arc<dyn Router>> = match candidate_config(plugin) {
        Some(config) => {
            let (wasm, source) = crate::state::read_plugin(&config)?;
            let loaded = runtime
                .load_router(plugin.name.clone(), &wasm, config.settings_json.clone(), config.limits)
                .map_err(|error| crate::state::load_error(&config, format!("candidate {source}"), error))?;
            Some(loaded as Arc<dyn Router>)
        }
        None => None,
    };
    let version = candidate.as_ref().map(|c| c.version().to_string());
    let (experiment, control) = experiment(plugin, candidate.clone().map(Candidate::Router), version.as_deref())?;
    controls.extend(control);
    let manifest = wrap::merged(live.manifest(), candidate.as_ref().map(|c| c.manifest()));
    Ok(Arc::new(ExperimentRouter { live, candidate, experiment, manifest }))
}

/// Wrap a loaded sniff plugin when its config has a candidate or a capture.
pub fn sniffer(
    plugin: &PluginConfig,
    live: Arc<dyn Sniffer>,
    runtime: &Runtime,
    controls: &mut Vec<Arc<Control>>,
) -> Result<Arc<dyn Sniffer>, BuildError> {
    if plugin.candidate.is_none() && plugin.capture.is_none() {
        return Ok(live);
    }
    let candidate: Option<Arc<dyn Sniffer>> = match candidate_config(plugin) {
        Some(config) => {
            let (wasm, source) = crate::state::read_plugin(&config)?;
            let loaded = runtime
                .load_sniffer(plugin.name.clone(), &wasm, config.settings_json.clone(), config.limits)
                .map_err(|error| crate::state::load_error(&config, format!("candidate {source}"), error))?;
            Some(loaded as Arc<dyn Sniffer>)
        }
        None => None,
    };
    let version = candidate.as_ref().map(|c| c.version().to_string());
    let (experiment, control) = experiment(plugin, candidate.clone().map(Candidate::Sniffer), version.as_deref())?;
    controls.extend(control);
    let manifest = wrap::merged(live.manifest(), candidate.as_ref().map(|c| c.manifest()));
    Ok(Arc::new(ExperimentSniffer { live, candidate, experiment, manifest }))
}

/// A reload keeps each experiment's share and state (a rollback stays in
/// force) when its candidate and configured share are unchanged.
pub fn carry_over(fresh: &Snapshot, previous: &Snapshot) {
    for control in &fresh.experiments {
        if let Some(old) = previous.experiments.iter().find(|old| old.plugin == control.plugin) {
            control.continue_from(old);
        }
    }
}

/// The experiments for `/status`.
pub fn status_json(snapshot: &Snapshot) -> serde_json::Value {
    serde_json::Value::Array(snapshot.experiments.iter().map(|c| c.status_json()).collect())
}
