//! The `sluice plugin replay` command line (the binary only parses and calls [`run`]).

use super::replay::{self, Versions};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// A capture file (JSON lines, from `[plugins.NAME.capture]` or a logged disagreement's `input`).
    #[arg(long, value_name = "FILE")]
    capture: PathBuf,
    /// The live version's component (.wasm, or `builtin:NAME`).
    #[arg(long, value_name = "A.wasm")]
    live: PathBuf,
    /// The candidate's component (.wasm; default: the live one, with other settings).
    #[arg(long, value_name = "B.wasm")]
    candidate: Option<PathBuf>,
    /// The live version's settings as JSON, or @FILE.
    #[arg(long, default_value = "{}")]
    settings: String,
    /// The candidate's settings as JSON, or @FILE (default: --settings).
    #[arg(long)]
    candidate_settings: Option<String>,
}

fn settings(text: &str) -> anyhow::Result<String> {
    let json = match text.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?,
        None => text.to_string(),
    };
    serde_json::from_str::<serde_json::Value>(&json).with_context(|| format!("settings {json:?} are not JSON"))?;
    Ok(json)
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    // `builtin:NAME` stands for a plugin compiled into the binary.
    let read = |path: &PathBuf| match path.to_str().and_then(|p| p.strip_prefix("builtin:")) {
        Some(name) => crate::builtin::component(name).map(<[u8]>::to_vec).ok_or_else(|| {
            anyhow::anyhow!("no built-in plugin `{name}` (built-in: {})", crate::builtin::NAMES.join(", "))
        }),
        None => std::fs::read(path).with_context(|| format!("reading {}", path.display())),
    };
    let capture = std::fs::read_to_string(&args.capture)
        .with_context(|| format!("reading the capture {}", args.capture.display()))?;
    let live = read(&args.live)?;
    let candidate = match &args.candidate {
        Some(path) => read(path)?,
        None => live.clone(),
    };
    let live_settings = settings(&args.settings)?;
    let candidate_settings = match &args.candidate_settings {
        Some(text) => settings(text)?,
        None => live_settings.clone(),
    };
    let versions = Versions {
        live: &live,
        live_settings: &live_settings,
        candidate: &candidate,
        candidate_settings: &candidate_settings,
    };
    let report = replay::run(&capture, &versions).map_err(anyhow::Error::msg)?;
    print!("{}", report.render());
    Ok(ExitCode::SUCCESS)
}
