//! `sluice plugin new`: write a plugin project from the templates compiled
//! into the binary (`host/templates/`). The project builds anywhere: it
//! carries its own copy of the contract (`wit/plugin.wit`) and, for Rust, of
//! the SDK, so nothing in it reaches back into this repository.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The contract the projects build against, copied into each one.
const WIT: &str = include_str!("../../../wit/plugin.wit");

/// The JavaScript toolchain's lockfile, shared with the example that CI builds,
/// so a new project gets the same tested versions.
const JS_LOCKFILE: &str = include_str!("../../../examples/plugins/js-router/package-lock.json");
/// componentize-py, pinned with its hash, shared with the Python example.
const PY_REQUIREMENTS: &str = include_str!("../../../examples/plugins/py-router/requirements.txt");

/// The language a project is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

/// The world (kind of plugin) a project targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Sniffer,
    Router,
}

/// Why a project was not written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("unknown language `{0}` (use rust, js or python)")]
    UnknownLang(String),
    #[error("unknown world `{0}` (use sniffer or router)")]
    UnknownWorld(String),
    #[error(
        "`{0}` is not a plugin name: use 1 to 64 lower-case letters, digits and `-`, \
         starting with a letter and not ending with `-`"
    )]
    BadName(String),
    #[error("{0} already exists: choose another directory with --dir, or remove it")]
    Exists(PathBuf),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl FromStr for Lang {
    type Err = ScaffoldError;
    fn from_str(text: &str) -> Result<Self, ScaffoldError> {
        match text {
            "rust" => Ok(Lang::Rust),
            "js" | "javascript" => Ok(Lang::Js),
            "python" | "py" => Ok(Lang::Python),
            _ => Err(ScaffoldError::UnknownLang(text.to_string())),
        }
    }
}

impl FromStr for World {
    type Err = ScaffoldError;
    fn from_str(text: &str) -> Result<Self, ScaffoldError> {
        match text {
            "sniffer" => Ok(World::Sniffer),
            "router" => Ok(World::Router),
            _ => Err(ScaffoldError::UnknownWorld(text.to_string())),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "Rust",
            Lang::Js => "JavaScript",
            Lang::Python => "Python",
        })
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Sniffer => "sniffer",
            World::Router => "router",
        })
    }
}

/// One file of a project: its path inside the project and its text.
pub struct File {
    pub path: String,
    pub text: String,
    /// A script to run (`build.sh`, `test.sh`).
    pub executable: bool,
}

/// A plugin name that works as a config key, an npm package and a crate name.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err(ScaffoldError::BadName(name.to_string())) }
}

/// Write the project for `name` into `dir`, which must not exist yet.
/// Returns the files written, in order.
pub fn write(dir: &Path, name: &str, lang: Lang, world: World) -> Result<Vec<PathBuf>, ScaffoldError> {
    check_name(name)?;
    if dir.symlink_metadata().is_ok() {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Write { path, source }
    };
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    // create_dir (not _all): fails if someone made it in the meantime.
    std::fs::create_dir(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => ScaffoldError::Exists(dir.to_path_buf()),
        _ => ScaffoldError::Write { path: dir.to_path_buf(), source },
    })?;
    let mut written = Vec::new();
    for file in files(name, lang, world) {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, &file.text).map_err(io(&path))?;
        #[cfg(unix)]
        if file.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(io(&path))?;
        }
        written.push(path);
    }
    Ok(written)
}

/// The project's files, rendered.
pub fn files(name: &str, lang: Lang, world: World) -> Vec<File> {
    let vars = Vars::new(name, lang, world);
    let file = |path: &str, template: &str| File { path: path.into(), text: vars.render(template), executable: false };
    let script = |path: &str, template: &str| File { path: path.into(), text: vars.render(template), executable: true };
    let sniffer = world == World::Sniffer;
    let mut files = vec![
        file("README.md", include_str!("../../templates/common/README.md")),
        file(
            "sluice.toml",
            if sniffer {
                include_str!("../../templates/common/sniffer.toml")
            } else {
                include_str!("../../templates/common/router.toml")
            },
        ),
        File { path: "wit/plugin.wit".into(), text: WIT.to_string(), executable: false },
    ];
    match lang {
        Lang::Js => files.extend([
            file("package.json", include_str!("../../templates/js/package.json")),
            File { path: "package-lock.json".into(), text: js_lockfile(name), executable: false },
            file("build.mjs", include_str!("../../templates/js/build.mjs")),
            file(
                "plugin.js",
                if sniffer {
                    include_str!("../../templates/js/sniffer.js")
                } else {
                    include_str!("../../templates/js/router.js")
                },
            ),
            file("test/hooks.mjs", include_str!("../../templates/js/test/hooks.mjs")),
            file("test/host-stub.mjs", include_str!("../../templates/js/test/host-stub.mjs")),
            file(
                "test/plugin.test.mjs",
                if sniffer {
                    include_str!("../../templates/js/test/sniffer.test.mjs")
                } else {
                    include_str!("../../templates/js/test/router.test.mjs")
                },
            ),
            file(".gitignore", include_str!("../../templates/js/gitignore")),
        ]),
        Lang::Python => files.extend([
            File { path: "requirements.txt".into(), text: PY_REQUIREMENTS.to_string(), executable: false },
            script("build.sh", include_str!("../../templates/python/build.sh")),
            script("test.sh", include_str!("../../templates/python/test.sh")),
            file(
                "app.py",
                if sniffer {
                    include_str!("../../templates/python/sniffer.py")
                } else {
                    include_str!("../../templates/python/router.py")
                },
            ),
            file(
                "test_app.py",
                if sniffer {
                    include_str!("../../templates/python/test_sniffer.py")
                } else {
                    include_str!("../../templates/python/test_router.py")
                },
            ),
            file(".gitignore", include_str!("../../templates/python/gitignore")),
        ]),
        Lang::Rust => files.extend(super::scaffold_rust::files(&|t| vars.render(t), sniffer)),
    }
    files
}

/// The lockfile with the project's own name in it.
fn js_lockfile(name: &str) -> String {
    JS_LOCKFILE.replace("\"name\": \"sluice-js-router\"", &format!("\"name\": \"{name}\""))
}

/// The values templates refer to as `{{key}}`.
struct Vars(Vec<(&'static str, String)>);

impl Vars {
    fn new(name: &str, lang: Lang, world: World) -> Self {
        let sniffer = world == World::Sniffer;
        let interpreted = lang != Lang::Rust;
        let memory_limit = if interpreted { "64MiB" } else { "16MiB" };
        let sample = if sniffer { r"--head 'PING\r\n'" } else { "--request 'GET /hello'" };
        let (files, build, test, rebuild) = match lang {
            Lang::Js => (
                "- `plugin.js`: the plugin.\n- `test/plugin.test.mjs`: its tests, run natively in Node \
                 (`sluice:plugin/host` is stubbed by `test/hooks.mjs`).\n- `build.mjs`: builds the component \
                 with componentize-js (pinned in `package-lock.json`)."
                    .to_string(),
                format!("Node.js 20 or later:\n\n```sh\nnpm ci\nnpm run build        # -> {name}.wasm\n```"),
                "```sh\nnpm test\n```".to_string(),
                "`npm run build`",
            ),
            Lang::Python => (
                "- `app.py`: the plugin.\n- `test_app.py`: its tests, run natively with unittest.\n\
                 - `build.sh`: builds the component with componentize-py (pinned with its hash in \
                 `requirements.txt`, installed into `.venv` on first use).\n- `test.sh`: writes the \
                 Python bindings for `wit/` into `.bindings/`, then runs the tests."
                    .to_string(),
                format!(
                    "Python 3.11 or later:\n\n```sh\n./build.sh           # -> {name}.wasm\n```\n\n\
                     `requirements.txt` pins componentize-py with the hash of its Linux x86_64 wheel; \
                     on another platform, add that platform's hash (`pip hash`)."
                ),
                "```sh\n./test.sh\n```".to_string(),
                "`./build.sh`",
            ),
            Lang::Rust => (
                "- `src/lib.rs`: the plugin and its tests.\n- `vendor/sluice-plugin/`: the sluice plugin \
                 SDK (a copy, so the project builds offline).\n- `build.sh`: builds the component."
                    .to_string(),
                format!(
                    "Rust with the `wasm32-wasip2` target (`rustup target add wasm32-wasip2`):\n\n\
                     ```sh\n./build.sh           # -> {name}.wasm\n```"
                ),
                "The tests call the plugin natively, through the SDK's test helper:\n\n```sh\ncargo test\n```"
                    .to_string(),
                "`./build.sh`",
            ),
        };
        let (behaviour, try_it) = if sniffer {
            (
                "It answers `PING\\r\\n` itself with `PONG\\r\\n` and sends every other connection to its \
                 `backend` setting, or the listener's default backend.",
                "printf 'PING\\r\\n' | nc 127.0.0.1 8080    # PONG, from the plugin\n\
                 echo hello | nc 127.0.0.1 8080           # echoed by the demo server",
            )
        } else {
            (
                "It sends requests with `x-beta: 1` to its `beta-backend` setting (default `beta`), \
                 answers `GET /hello` itself, and sends everything else to its `backend` setting \
                 (default `web`).",
                "curl http://127.0.0.1:8080/                  # the demo server `web`\n\
                 curl -H 'x-beta: 1' http://127.0.0.1:8080/   # the demo server `beta`\n\
                 curl http://127.0.0.1:8080/hello             # answered by the plugin",
            )
        };
        let settings = if sniffer { "" } else { r#" --settings '{"backend": "web"}'"# };
        let plugin_test = format!("sluice plugin test {name}.wasm --memory-limit {memory_limit}{settings} {sample}");
        Vars(vec![
            ("name", name.to_string()),
            ("crate", name.replace('-', "_")),
            ("world", world.to_string()),
            ("kind", if sniffer { "sniff" } else { "route" }.to_string()),
            ("language", lang.to_string()),
            ("memory_limit", memory_limit.to_string()),
            ("sample", sample.to_string()),
            ("plugin_test", plugin_test),
            ("behaviour", behaviour.to_string()),
            ("try_it", try_it.to_string()),
            ("files", files),
            ("build", build),
            ("test", test),
            ("rebuild", rebuild.to_string()),
        ])
    }

    /// Replace every `{{key}}` of a known key; other text (`{{` in a Rust
    /// format string) is left alone.
    fn render(&self, template: &str) -> String {
        let mut text = template.to_string();
        for (key, value) in &self.0 {
            text = text.replace(&format!("{{{{{key}}}}}"), value);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "my-router", "r2d2", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "My", "9lives", "a_b", "a-", "a b", "../x", &"x".repeat(65)] {
            assert!(matches!(check_name(bad), Err(ScaffoldError::BadName(_))), "{bad:?}");
        }
        assert!("go".parse::<Lang>().unwrap_err().to_string().contains("use rust, js or python"));
        assert!("proxy".parse::<World>().unwrap_err().to_string().contains("use sniffer or router"));
    }

    #[test]
    fn every_placeholder_is_filled_and_the_wit_is_carried() {
        for lang in [Lang::Js, Lang::Python, Lang::Rust] {
            for world in [World::Sniffer, World::Router] {
                let files = files("my-plugin", lang, world);
                for file in &files {
                    for key in ["name", "world", "kind", "language", "memory_limit", "sample", "crate"] {
                        assert!(!file.text.contains(&format!("{{{{{key}}}}}")), "{key} in {}", file.path);
                    }
                    // Nothing reaches back into the repository (the vendored
                    // SDK's paths stay inside the SDK).
                    let own = !file.path.starts_with("vendor/");
                    assert!(
                        !own || !file.text.contains("../../"),
                        "{} ({lang}, {world}) has a path outside",
                        file.path
                    );
                }
                let wit = files.iter().find(|f| f.path == "wit/plugin.wit").expect("the WIT");
                assert_eq!(wit.text, WIT);
            }
        }
        let lock = js_lockfile("my-plugin");
        assert_eq!(lock.matches("\"name\": \"my-plugin\"").count(), 2);
    }

    #[test]
    fn an_existing_directory_is_refused() {
        let dir = std::env::temp_dir().join(format!("sluice-scaffold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = write(&dir, "x", Lang::Js, World::Router).unwrap_err();
        assert!(matches!(err, ScaffoldError::Exists(_)), "{err}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing written into it");
        let _ = std::fs::remove_dir(&dir);
    }
}
