//! Config loading (`host/src/config`): TOML text parsed and validated in one
//! step, exactly as `sluice check` and every reload do, from bytes: nothing
//! is read from disk (certificate paths are only looked up, under a
//! directory that does not exist unless the input names an absolute path).
//!
//! Beyond "no panic":
//! - a refusal names at least one problem, each with a message;
//! - an accepted config is consistent: every name a listener refers to
//!   exists, and each plugin's settings are valid JSON;
//! - the built-in route plugin accepts or refuses those settings without
//!   panicking (the same code `sluice check` runs inside the sandbox).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::{Config, Fallback, PluginSource};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let config = match Config::parse(text, Path::new("/nonexistent-sluice-fuzz/sluice.toml")) {
        Ok(config) => config,
        Err(error) => {
            assert!(!error.problems.is_empty(), "a refusal without a problem");
            assert!(error.problems.iter().all(|p| !p.message.trim().is_empty()), "{error}");
            return;
        }
    };
    assert!(!config.listeners.is_empty());
    for listener in &config.listeners {
        assert!(config.plugins.contains_key(&listener.sniff), "{:?}", listener.sniff);
        if let Some(route) = &listener.route {
            assert!(config.plugins.contains_key(route), "{route:?}");
        }
        if let Some(backend) = &listener.default_backend {
            assert!(config.backends.contains_key(backend), "{backend:?}");
        }
        if let Fallback::Backend(backend) = &listener.fallback {
            assert!(config.backends.contains_key(backend), "{backend:?}");
        }
    }
    for plugin in config.plugins.values() {
        let settings: serde_json::Value = serde_json::from_str(&plugin.settings_json).expect("settings are JSON");
        assert!(settings.is_object(), "{settings}");
        match &plugin.source {
            PluginSource::Builtin(name) if name == "path" => drop(path::init(&plugin.settings_json)),
            PluginSource::Builtin(name) if name == "sniff" => {
                drop(serde_json::from_str::<sniff::Settings>(&plugin.settings_json))
            }
            _ => {}
        }
    }
});
