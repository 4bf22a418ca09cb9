//! Checking what plugins declared at `init` against the config they run
//! under: every backend a plugin's decisions can name must exist, so a typo
//! in a plugin's settings is a config error at `sluice check`, start-up or
//! reload, never a 502 in production.

use super::Manifest;
use crate::config::Problem;
use crate::names::{BackendName, PluginName};

/// One problem for each backend a plugin declared that `known` does not
/// have, in the plugins' order, each naming the plugin and the backend.
/// `known_list` describes the backends there are, for the message.
pub fn unknown_backends<'a>(
    plugins: impl IntoIterator<Item = (&'a PluginName, &'a Manifest)>,
    known: impl Fn(&BackendName) -> bool,
    known_list: &str,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (plugin, manifest) in plugins {
        let Some(declared) = &manifest.backends else { continue }; // 0.1.0: not declared
        for backend in declared.iter().filter(|backend| !known(backend)) {
            problems.push(Problem {
                field: format!("plugins.{plugin}.settings"),
                message: format!(
                    "plugin `{plugin}` can route to backend `{backend}`, which is not defined (backends: {known_list})"
                ),
            });
        }
    }
    problems
}

/// "`a`, `b`" for a message, or "none".
pub fn list<'a>(names: impl IntoIterator<Item = &'a BackendName>) -> String {
    let names: Vec<String> = names.into_iter().map(|name| format!("`{name}`")).collect();
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::HeaderInterest;

    #[test]
    fn only_declared_unknown_backends_are_problems() {
        let web = BackendName::new("web");
        let declares = |names: &[&str]| Manifest {
            backends: Some(names.iter().map(|n| BackendName::new(*n)).collect()),
            headers: HeaderInterest::All,
        };
        let (path, sniff, old) = (PluginName::new("path"), PluginName::new("sniff"), PluginName::new("old"));
        let (typo, fine) = (declares(&["web", "wbe"]), declares(&["web"]));
        let plugins = [(&path, &typo), (&sniff, &fine), (&old, &Manifest::UNDECLARED)];
        let problems = unknown_backends(plugins, |b| *b == web, &list([&web]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "plugins.path.settings");
        assert!(problems[0].message.contains("`wbe`") && problems[0].message.contains("`web`"), "{problems:?}");
    }
}
