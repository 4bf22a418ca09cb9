//! `sluice plugin new`: each language's project, written into a directory
//! outside the repository, passes its own tests, builds into a component,
//! and that component decides as its README says under `sluice plugin test`
//! with the project's own `sluice.toml`.
//!
//! The toolchains are the ones `.ci/run` installs for the language examples
//! (tests/lang_plugins.rs): the project's `node_modules` (JavaScript, from
//! the same lockfile) and `.venv` (Python, from the same pinned
//! requirements) are links to the examples' installs. Without them the
//! tests skip with a message; with `CI=true` they fail instead. The Rust
//! project builds offline with the repository's pinned toolchain: its
//! dependencies are the in-tree plugins', already in the cargo cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ is in the repo").to_path_buf()
}

/// A fresh directory outside the repository, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sluice-plugin-new-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        assert!(!dir.starts_with(repo_root().canonicalize().unwrap()), "{} is outside the repository", dir.display());
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The example's toolchain install, or `None` (after saying why) outside CI.
fn toolchain(example: &str, installed: &str) -> Option<PathBuf> {
    let path = repo_root().join("examples/plugins").join(example).join(installed);
    if path.exists() {
        return Some(path);
    }
    let why = format!("{} is missing (.ci/run installs it)", path.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipping: {why}");
    None
}

fn new_project(scratch: &Scratch, name: &str, lang: &str, world: &str) -> PathBuf {
    let dir = scratch.0.join(name);
    let output = run(sluice().args(["plugin", "new", name, "--lang", lang, "--world", world, "--dir"]).arg(&dir));
    assert!(String::from_utf8_lossy(&output.stdout).contains("wrote a"), "{output:?}");
    // The project carries the contract and reaches nothing outside itself.
    let wit = std::fs::read_to_string(dir.join("wit/plugin.wit")).unwrap();
    assert_eq!(wit, std::fs::read_to_string(repo_root().join("wit/plugin.wit")).unwrap());
    // Its sluice.toml is a valid config once the component is there (a
    // stand-in here: the config only needs the file to exist).
    let wasm = dir.join(format!("{name}.wasm"));
    std::fs::write(&wasm, b"").unwrap();
    sluice::Config::load(&dir.join("sluice.toml")).unwrap_or_else(|e| panic!("{name}/sluice.toml: {e}"));
    std::fs::remove_file(&wasm).unwrap();
    dir
}

/// `sluice plugin test` with the project's own config; returns stdout.
fn plugin_test(dir: &Path, name: &str, input: &[&str]) -> String {
    let output = run(sluice()
        .current_dir(dir)
        .args(["plugin", "test", "--config", "sluice.toml", "--plugin", name])
        .args(input));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn javascript_projects_build_outside_the_repository() {
    let Some(node_modules) = toolchain("js-router", "node_modules/@bytecodealliance/componentize-js") else { return };
    let node_modules = node_modules.parent().unwrap().parent().unwrap();
    let scratch = Scratch::new("js");
    for world in ["sniffer", "router"] {
        let name = format!("js-{world}");
        let dir = new_project(&scratch, &name, "js", world);
        // The pinned versions are the example's: its install serves.
        let lock = std::fs::read_to_string(dir.join("package-lock.json")).unwrap();
        let example =
            std::fs::read_to_string(repo_root().join("examples/plugins/js-router/package-lock.json")).unwrap();
        assert_eq!(lock.replace(&format!("\"name\": \"{name}\""), "\"name\": \"sluice-js-router\""), example);
        std::os::unix::fs::symlink(node_modules, dir.join("node_modules")).unwrap();
        run(Command::new("npm").arg("test").current_dir(&dir));
        if world == "router" {
            // One component build per language keeps the test bounded.
            run(Command::new("npm").args(["run", "build"]).current_dir(&dir));
            let out = plugin_test(&dir, &name, &["--request", "GET /hello"]);
            assert!(out.starts_with("decision: respond 200\n"), "{out}");
            assert!(out.contains("hello from js-router, 127.0.0.1:50000"), "{out}");
            assert!(out.contains("log: [info] js-router ready\n"), "the init log line, under the decision: {out}");
            assert!(out.contains("log: [stdout] hello from js-router"), "console.log, under the decision: {out}");
        }
    }
}

#[test]
fn python_projects_build_outside_the_repository() {
    let Some(venv_tool) = toolchain("py-router", ".venv/bin/componentize-py") else { return };
    let venv = venv_tool.parent().unwrap().parent().unwrap();
    let scratch = Scratch::new("py");
    for world in ["router", "sniffer"] {
        let name = format!("py-{world}");
        let dir = new_project(&scratch, &name, "python", world);
        std::os::unix::fs::symlink(venv, dir.join(".venv")).unwrap();
        run(Command::new(dir.join("test.sh")).current_dir(&dir));
        if world == "sniffer" {
            run(Command::new(dir.join("build.sh")).current_dir(&dir));
            let out = plugin_test(&dir, &name, &["--head", r"PING\r\n"]);
            assert!(out.starts_with("verdict: reply (6 bytes, then close)\nPONG\\r\\n\n"), "{out}");
            assert!(out.contains("log: [info] py-sniffer ready\n"), "the init log line, under the decision: {out}");
            assert!(out.contains("log: [stdout] ping from 127.0.0.1:50000"), "print(), under the decision: {out}");
        }
    }
}

#[test]
fn rust_projects_build_outside_the_repository() {
    // The toolchain this repository pins (rust-toolchain.toml), which has the
    // wasm32-wasip2 target; outside the repository rustup would pick its default.
    let pinned = std::fs::read_to_string(repo_root().join("rust-toolchain.toml")).unwrap();
    let channel = pinned
        .lines()
        .find_map(|line| line.strip_prefix("channel = "))
        .map(|quoted| quoted.trim_matches('"').to_string())
        .expect("rust-toolchain.toml names a channel");
    // Kept between runs: the SDK's dependencies build once.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-new-rust");
    let cargo = |dir: &Path| {
        let mut command = Command::new("cargo");
        command.current_dir(dir).env("RUSTUP_TOOLCHAIN", &channel).env("CARGO_TARGET_DIR", &target);
        command
    };
    let scratch = Scratch::new("rust");
    for world in ["sniffer", "router"] {
        let name = format!("rs-{world}");
        let dir = new_project(&scratch, &name, "rust", world);
        // Offline: the SDK's dependencies are the in-tree plugins' and already
        // in the cargo cache.
        run(cargo(&dir).args(["test", "--offline"]));
        if world == "router" {
            let wasm = dir.join(format!("{name}.wasm"));
            run(Command::new(dir.join("build.sh"))
                .arg(&wasm)
                .arg("--offline")
                .current_dir(&dir)
                .env("RUSTUP_TOOLCHAIN", &channel)
                .env("CARGO_TARGET_DIR", &target));
            let out = plugin_test(&dir, &name, &["--request", "GET /hello"]);
            assert!(out.starts_with("decision: respond 200\n"), "{out}");
            assert!(out.contains("log: [info] rs-router ready\n"), "the init log line, under the decision: {out}");
            assert!(out.contains("log: [stdout] hello from rs-router, 127.0.0.1:50000"), "println!: {out}");
            let out = plugin_test(&dir, &name, &["--request", "GET /", "--header", "x-beta: 1"]);
            assert!(out.starts_with("decision: forward to backend `beta`\n"), "{out}");
        }
    }
}

/// A config with the built-in route plugin, routing everything to `api`.
const CONFIG: &str = r#"
[[listeners]]
name = "edge"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"

[backends.api]
servers = ["127.0.0.1:9"]

[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "api"
"#;

#[test]
fn bad_requests_get_clear_errors() {
    let scratch = Scratch::new("errors");
    let fails = |args: &[&str]| {
        let output = sluice().current_dir(&scratch.0).args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let err = fails(&["plugin", "new", "My_Plugin", "--lang", "js", "--world", "router"]);
    assert!(err.contains("`My_Plugin` is not a plugin name"), "{err}");
    let err = fails(&["plugin", "new", "p", "--lang", "go", "--world", "router"]);
    assert!(err.contains("unknown language `go` (use rust, js or python)"), "{err}");
    let err = fails(&["plugin", "new", "p", "--lang", "js", "--world", "proxy"]);
    assert!(err.contains("unknown world `proxy` (use sniffer or router)"), "{err}");
    std::fs::create_dir(scratch.0.join("taken")).unwrap();
    let err = fails(&["plugin", "new", "taken", "--lang", "python", "--world", "sniffer"]);
    assert!(err.contains("taken already exists"), "{err}");
    assert_eq!(std::fs::read_dir(scratch.0.join("taken")).unwrap().count(), 0, "nothing written into it");

    // `plugin test` refuses what it cannot use, saying what is wrong.
    let path = repo_root().join("host/tests-data-does-not-exist.toml");
    let err = fails(&["plugin", "test", "--config", path.to_str().unwrap(), "--plugin", "x", "--request", "GET /"]);
    assert!(err.contains("cannot read the file"), "{err}");
    let config = scratch.0.join("sluice.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let err = fails(&["plugin", "test", "--config", "sluice.toml", "--plugin", "nope", "--request", "GET /"]);
    assert!(err.contains("has no plugin named `nope` (its plugins: path, sniff)"), "{err}");
    for (request, expected) in [
        ("GET", "is not a request line"),
        ("GET index.html", "is not a request path"),
        ("G(T /", "is not an HTTP method"),
    ] {
        let err = fails(&["plugin", "test", "--config", "sluice.toml", "--plugin", "path", "--request", request]);
        assert!(err.contains(expected), "{request}: {err}");
    }
    let err = fails(&[
        "plugin",
        "test",
        "--config",
        "sluice.toml",
        "--plugin",
        "path",
        "--settings",
        "{oops",
        "--request",
        "GET /",
    ]);
    assert!(err.contains("--settings is neither a JSON object"), "{err}");
}

/// Settings from a config, from TOML and from JSON reach the plugin alike.
#[test]
fn plugin_test_takes_settings_from_a_config_or_as_toml() {
    let scratch = Scratch::new("settings");
    std::fs::write(scratch.0.join("sluice.toml"), CONFIG).unwrap();
    let decide = |extra: &[&str]| {
        let output = run(sluice()
            .current_dir(&scratch.0)
            .args(["plugin", "test", "--config", "sluice.toml", "--plugin", "path", "--request", "GET /"])
            .args(extra));
        String::from_utf8(output.stdout).unwrap()
    };
    // The decision, then what the plugin declared.
    let out = decide(&[]);
    assert!(out.starts_with("decision: forward to backend `api`\nmanifest: backends api; reads "), "{out}");
    let first_line = |out: String| out.lines().next().unwrap_or_default().to_string();
    assert_eq!(first_line(decide(&["--settings", "default-backend = \"web\""])), "decision: forward to backend `web`");
    assert_eq!(
        first_line(decide(&["--settings-toml", "default-backend = \"toml\""])),
        "decision: forward to backend `toml`"
    );
    assert_eq!(
        first_line(decide(&["--settings", r#"{"default-backend": "json"}"#])),
        "decision: forward to backend `json`"
    );
}
