//! Which version of the plugin contract a component targets.
//!
//! sluice speaks `sluice:plugin@0.2.0` (`wit/plugin.wit`) and still loads
//! components built against 0.1.0 (`wit/deps-0.1.0/plugin.wit`): their
//! `init` declares nothing, so they get every header and their backends are
//! not checked. The version is read from the `setup` interface the component
//! exports, before linking, so a mismatch is reported against the version
//! the component asked for.

use crate::names::PluginName;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The current contract version.
pub const CURRENT: &str = "0.2.0";

/// A version of the contract this host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractVersion {
    V0_1,
    V0_2,
}

impl ContractVersion {
    /// The version as written in the WIT package, e.g. "0.2.0".
    pub fn number(self) -> &'static str {
        match self {
            ContractVersion::V0_1 => "0.1.0",
            ContractVersion::V0_2 => CURRENT,
        }
    }

    /// The version of `sluice:plugin/setup` that `component` exports.
    pub fn of(component: &Component, engine: &Engine) -> Result<Self, String> {
        let ty = component.component_type();
        let mut other = None;
        for (name, _) in ty.exports(engine) {
            let Some(version) = name.strip_prefix("sluice:plugin/setup@") else { continue };
            match version {
                "0.2.0" => return Ok(ContractVersion::V0_2),
                "0.1.0" => return Ok(ContractVersion::V0_1),
                _ => other = Some(version.to_string()),
            }
        }
        Err(match other {
            Some(version) => {
                format!("it targets sluice:plugin@{version}; this sluice runs {CURRENT} (and still loads 0.1.0)")
            }
            None => format!("it exports no `sluice:plugin/setup` interface (build it against sluice:plugin@{CURRENT})"),
        })
    }
}

/// Log, once per plugin version and process, that a component targets 0.1.0.
pub fn note_old_contract(plugin: &PluginName, digest: &str) {
    static NOTED: OnceLock<Mutex<HashSet<(String, String)>>> = OnceLock::new();
    let first = NOTED
        .get_or_init(Mutex::default)
        .lock()
        .expect("noted plugins lock")
        .insert((plugin.to_string(), digest.to_string()));
    if first {
        tracing::warn!(
            plugin = %plugin,
            "plugin {plugin} targets sluice:plugin@0.1.0; rebuild against {CURRENT} to declare its backends"
        );
    }
}
