//! Which files a config depends on, and the content hashes that tell whether they changed.

use crate::config::Config;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every file a config depends on, as absolute paths.
pub(super) fn files_of(config: &Config) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::from([config.source.clone()]);
    for plugin in config.plugins.values() {
        if let crate::config::PluginSource::File(path) = &plugin.source {
            files.insert(path.clone());
        }
    }
    for listener in &config.listeners {
        for certificate in &listener.certificates {
            files.insert(certificate.cert.clone());
            files.insert(certificate.key.clone());
        }
        // The tenant directory (its listing: tenants added, removed) and each tenant's files.
        files.extend(listener.tenants.iter().flat_map(|dir| crate::tenant::load::watched_files(dir)));
    }
    files.into_iter().map(|file| std::path::absolute(&file).unwrap_or(file)).collect()
}

/// The files a config file names, read loosely from its TOML (no
/// validation), so a config that does not load yet still gets the files it
/// names watched: when the missing or broken one is fixed, that is noticed.
pub(super) fn files_named_in(path: &Path) -> BTreeSet<PathBuf> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut files = BTreeSet::from([path.to_path_buf()]);
    let table: Option<toml::Table> = std::fs::read_to_string(path).ok().and_then(|text| toml::from_str(&text).ok());
    if let Some(table) = table {
        let plugins = table.get("plugins").and_then(|p| p.as_table()).into_iter().flat_map(|p| p.values());
        for file in plugins.filter_map(|plugin| plugin.get("file")?.as_str()) {
            files.insert(base.join(file));
        }
        let listeners = table.get("listeners").and_then(|l| l.as_array()).into_iter().flatten();
        let certificates = listeners.filter_map(|l| l.get("certificates")?.as_array()).flatten();
        for certificate in certificates {
            for key in ["cert", "key"] {
                if let Some(file) = certificate.get(key).and_then(|f| f.as_str()) {
                    files.insert(base.join(file));
                }
            }
        }
    }
    files.into_iter().map(|file| std::path::absolute(&file).unwrap_or(file)).collect()
}

/// The content hash of each file (`None`: it cannot be read).
pub(super) type Fingerprint = BTreeMap<PathBuf, Option<[u8; 32]>>;

pub(super) async fn fingerprint(files: &BTreeSet<PathBuf>) -> Fingerprint {
    let files = files.clone();
    tokio::task::spawn_blocking(move || hash_files(&files)).await.unwrap_or_default()
}

fn hash_files(files: &BTreeSet<PathBuf>) -> Fingerprint {
    files.iter().map(|file| (file.clone(), read_or_list(file).map(|bytes| Sha256::digest(&bytes).into()))).collect()
}

/// A file's bytes, or a directory's sorted entry names (a watched tenant directory).
pub(super) fn read_or_list(path: &Path) -> Option<Vec<u8>> {
    if !path.is_dir() {
        return std::fs::read(path).ok();
    }
    let mut names: Vec<_> = std::fs::read_dir(path).ok()?.filter_map(|e| Some(e.ok()?.file_name())).collect();
    names.sort();
    Some(names.iter().flat_map(|name| [name.as_encoded_bytes(), b"\0"].concat()).collect())
}

/// The content of the files `config` depends on, as it is before the first
/// snapshot is built from them: the reloader's starting point, so that a
/// change made before it starts watching is still noticed.
#[derive(Default)]
pub(crate) struct Baseline(pub(super) Fingerprint);

impl Baseline {
    /// Blocking: call it where the plugins are read anyway.
    pub(crate) fn of(config: &Config) -> Baseline {
        Baseline(hash_files(&files_of(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_that_does_not_validate_still_names_its_files() {
        let dir = std::env::temp_dir().join(format!("sluice-reload-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sluice.toml");
        std::fs::write(
            &config,
            "[[listeners]]\nname = 1\n[[listeners.certificates]]\ncert = \"tls/a.crt\"\nkey = \"tls/a.key\"\n\
             [plugins.route]\nfile = \"plugins/route.wasm\"\nunknown = true\n",
        )
        .unwrap();
        let named = files_named_in(&config);
        let _ = std::fs::remove_dir_all(&dir);
        let expected: BTreeSet<PathBuf> =
            [config.clone(), dir.join("tls/a.crt"), dir.join("tls/a.key"), dir.join("plugins/route.wasm")].into();
        assert_eq!(named, expected);
    }
}
