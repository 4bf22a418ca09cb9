//! A `[plugins.NAME]` table as written, and its validation into a [`PluginConfig`].

use super::{Problems, SizeValue, in_range};
use crate::builtin;
use crate::config::{MAX_PLUGIN_MEMORY, PluginConfig, PluginLimits, PluginSource};
use crate::names::PluginName;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct RawPlugin {
    file: Option<String>,
    builtin: Option<String>,
    cpu_budget: Option<u64>,
    memory_limit: Option<SizeValue>,
    max_instance_calls: Option<u64>,
    #[serde(default)]
    settings: toml::Table,
    candidate: Option<crate::config::experiments::RawCandidate>,
    capture: Option<crate::config::experiments::RawCapture>,
}

impl RawPlugin {
    /// The plugin named `name`, or nothing when a field is wrong (each problem recorded).
    pub(super) fn validate(&self, name: &str, base: &Path, problems: &mut Problems) -> Option<PluginConfig> {
        let at = |key: &str| format!("plugins.{name}.{key}");
        let source = match (&self.file, &self.builtin) {
            (Some(file), None) => {
                let file = base.join(file);
                if file.is_file() {
                    Some(PluginSource::File(file))
                } else {
                    problems.add(at("file"), format!("{} does not exist or is not a file", file.display()));
                    None
                }
            }
            (None, Some(builtin)) if builtin::component(builtin).is_some() => {
                Some(PluginSource::Builtin(builtin.clone()))
            }
            (None, Some(builtin)) => {
                let known = builtin::NAMES.join(", ");
                problems.add(at("builtin"), format!("no built-in plugin `{builtin}` (built-in: {known})"));
                None
            }
            _ => {
                problems.add(format!("plugins.{name}"), "set exactly one of `file` or `builtin`");
                None
            }
        };
        let defaults = PluginLimits::default();
        let cpu_budget = problems
            .check(&at("cpu-budget"), in_range(self.cpu_budget.unwrap_or(defaults.cpu_budget), 1_000, 10_000_000_000));
        let memory_limit = match &self.memory_limit {
            Some(size) => {
                problems.check(&at("memory-limit"), size.bytes().and_then(|n| in_range(n, 64 << 10, MAX_PLUGIN_MEMORY)))
            }
            None => Some(defaults.memory_limit),
        };
        let max_instance_calls = problems.check(
            &at("max-instance-calls"),
            in_range(self.max_instance_calls.unwrap_or(defaults.max_instance_calls), 1, u64::MAX),
        );
        let settings_json = problems.check(
            &at("settings"),
            serde_json::to_string(&self.settings).map_err(|e| format!("cannot encode as JSON: {e}")),
        );
        // Policy experiments (config/experiments.rs).
        let candidate =
            self.candidate.as_ref().map(|c| c.validate(name, base, source.as_ref(), settings_json.as_deref()));
        let candidate = candidate.transpose().map_err(|errors| problems.0.extend(errors)).ok();
        let capture = self.capture.as_ref().map(|c| c.validate(name, base)).transpose();
        let capture = capture.map_err(|errors| problems.0.extend(errors)).ok();
        let (Some(source), Some(cpu_budget), Some(memory_limit), Some(max_instance_calls), Some(settings_json)) =
            (source, cpu_budget, memory_limit, max_instance_calls, settings_json)
        else {
            return None;
        };
        let name = PluginName::new(name);
        let limits = PluginLimits { cpu_budget, memory_limit, max_instance_calls };
        let (candidate, capture) = (candidate.flatten(), capture.flatten());
        Some(PluginConfig { name, source, settings_json, limits, candidate, capture })
    }
}
