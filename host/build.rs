//! Builds the in-tree plugins (`plugins/`) for `wasm32-wasip2` as part of the
//! host's normal build, so a fresh clone needs nothing but `cargo build`.
//!
//! The plugins are their own cargo workspace, built by a nested `cargo` into
//! `target/wasm-plugins` (a separate target directory, so the nested build
//! never waits on the outer build's lock). The resulting components are copied
//! into `OUT_DIR`, where `src/builtin.rs` embeds them, and their directory is
//! exported to the tests as `SLUICE_PLUGIN_DIR`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

const WASM_TARGET: &str = "wasm32-wasip2";
/// Components embedded in the binary and used by the tests.
const PLUGINS: &[&str] = &["sniff", "path", "misbehave", "leak", "wasi_guest", "declare"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let repo = manifest_dir.parent().expect("host/ sits in the repository");
    let plugins_dir = repo.join("plugins");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));

    for watched in [
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "plugins/sdk",
        "plugins/sniff",
        "plugins/path",
        "plugins/testing",
        "wit",
    ] {
        println!("cargo::rerun-if-changed={}", repo.join(watched).display());
    }

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    if !target_installed(&rustc) {
        println!(
            "cargo::error=the {WASM_TARGET} target is not installed; add it with `rustup target add {WASM_TARGET}`"
        );
        exit(1);
    }

    let target_dir = plugin_target_dir(&out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&plugins_dir)
        .args(["build", "--release", "--target", WASM_TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's flags and target are meant for the host, not wasm.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        build.env_remove(var);
    }
    let status = build.status().unwrap_or_else(|e| {
        println!("cargo::error=could not run cargo to build the plugins: {e}");
        exit(1);
    });
    if !status.success() {
        println!("cargo::error=building the plugins in {} failed (see above)", plugins_dir.display());
        exit(1);
    }

    let built = target_dir.join(WASM_TARGET).join("release");
    for plugin in PLUGINS {
        let from = built.join(format!("{plugin}.wasm"));
        let to = out_dir.join(format!("{plugin}.wasm"));
        if let Err(e) = std::fs::copy(&from, &to) {
            println!("cargo::error=copying {} failed: {e}", from.display());
            exit(1);
        }
    }
    println!("cargo::rustc-env=SLUICE_PLUGIN_DIR={}", out_dir.display());
}

/// True when the standard library for the wasm target is in rustc's sysroot.
fn target_installed(rustc: &std::ffi::OsStr) -> bool {
    let Ok(output) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return true; // let the nested build report whatever is wrong
    };
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    Path::new(&sysroot).join("lib/rustlib").join(WASM_TARGET).exists()
}

/// `<target>/wasm-plugins`, found from `OUT_DIR` (`<target>/<profile>/build/<pkg>/out`).
fn plugin_target_dir(out_dir: &Path) -> PathBuf {
    let target = out_dir
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent) // <target>/<profile>
        .and_then(Path::parent) // <target>
        .unwrap_or(out_dir);
    target.join("wasm-plugins")
}
