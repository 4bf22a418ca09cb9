//! Policy experiments in the config (docs/EXPERIMENTS.md): a plugin's
//! `[plugins.NAME.candidate]` (a second version run in shadow and/or given a
//! share of traffic, with rollback rules), its `[plugins.NAME.capture]`
//! (a sample of decision inputs written to a file), and the admin token.

use super::units::{parse_duration, parse_size};
use super::{PluginSource, Problem};
use crate::builtin;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Headers whose values never reach a log line or a capture file unless the
/// operator names the headers to redact themselves (`redact = [...]`).
pub const DEFAULT_REDACT: &[&str] =
    &["cookie", "set-cookie", "authorization", "proxy-authorization", "x-api-key", "x-auth-token", "x-csrf-token"];

/// A candidate version of a plugin, beside the live one.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateConfig {
    /// The candidate's component (default: the live plugin's).
    pub source: PluginSource,
    /// Its settings as JSON (default: the live plugin's).
    pub settings_json: String,
    /// Run the candidate on the decisions the live version makes, off the
    /// client's path, and compare.
    pub shadow: bool,
    /// The share of connections (sniff) or requests (route) the candidate
    /// decides, in basis points (0..=10000).
    pub share_bp: u32,
    /// What chooses the side a client is on.
    pub key: SplitKey,
    /// Shadow calls waiting for the worker; more are dropped and counted.
    pub queue: usize,
    /// Disagreements logged per minute at most (the rest only counted).
    pub log_per_minute: u32,
    /// Header names (lower-case) whose values are replaced by `<redacted>`.
    pub redact: Vec<String>,
    pub rollback: RollbackRules,
}

/// Where the stable key that picks a client's side comes from. Requests
/// without it stay on the live version; sniff plugins always use the client IP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitKey {
    ClientIp,
    Cookie(String),
    Header(String),
}

/// When the candidate is switched off by itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollbackRules {
    /// Candidate failures (traps, CPU budget, memory cap…) tolerated within
    /// any minute; one more rolls it back.
    pub max_failures_per_minute: Option<u32>,
    /// Roll back when the candidate's routed requests get 5xx more often than
    /// the live version's by more than this many percentage points…
    pub max_5xx_increase: Option<f64>,
    /// …over this window…
    pub window: Duration,
    /// …once each side has at least this many responses in it.
    pub min_requests: u64,
}

/// A sample of decision inputs written as JSON lines.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    pub file: PathBuf,
    /// The share of decisions recorded, in basis points.
    pub sample_bp: u32,
    /// The file is rotated (to `FILE.1`, `FILE.2`…) when it would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
    pub redact: Vec<String>,
}

/// The admin listener's bearer token (`[admin] token-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAuth {
    pub token_file: PathBuf,
    /// Also require the token for `/metrics` and `/status` (`/healthz` stays open).
    pub protect_reads: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawCandidate {
    file: Option<String>,
    builtin: Option<String>,
    settings: Option<toml::Table>,
    shadow: Option<bool>,
    share: Option<f64>,
    key: Option<SplitKey>,
    queue: Option<usize>,
    log_disagreements_per_minute: Option<u32>,
    redact: Option<Vec<String>>,
    rollback: Option<RawRollback>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRollback {
    max_failures_per_minute: Option<u32>,
    #[serde(rename = "max-5xx-increase")]
    max_5xx_increase: Option<f64>,
    window: Option<String>,
    min_requests: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawCapture {
    file: String,
    percent: Option<f64>,
    max_size: Option<String>,
    keep: Option<u32>,
    redact: Option<Vec<String>>,
}

const DEFAULT_QUEUE: usize = 1024;
const DEFAULT_LOG_PER_MINUTE: u32 = 10;
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_MIN_REQUESTS: u64 = 20;
const DEFAULT_CAPTURE_MAX: u64 = 10 << 20;
const DEFAULT_CAPTURE_KEEP: u32 = 2;

fn problem(field: String, message: impl Into<String>) -> Problem {
    Problem { field, message: message.into() }
}

/// A percentage written in the config as basis points.
fn percent_bp(value: f64, field: String, problems: &mut Vec<Problem>) -> Option<u32> {
    if (0.0..=100.0).contains(&value) {
        Some((value * 100.0).round() as u32)
    } else {
        problems.push(problem(field, format!("{value} is not a percentage from 0 to 100")));
        None
    }
}

fn redact_list(raw: &Option<Vec<String>>, field: String, problems: &mut Vec<Problem>) -> Vec<String> {
    match raw {
        None => DEFAULT_REDACT.iter().map(|s| s.to_string()).collect(),
        Some(names) => {
            for name in names.iter().filter(|n| n.is_empty() || n.chars().any(|c| c.is_whitespace() || c == ':')) {
                problems.push(problem(field.clone(), format!("{name:?} is not a header name")));
            }
            names.iter().map(|n| n.to_ascii_lowercase()).collect()
        }
    }
}

impl RawCandidate {
    /// The candidate of plugin `name`, whose live version is `live` with `live_settings`.
    pub fn validate(
        &self,
        name: &str,
        base: &Path,
        live: Option<&PluginSource>,
        live_settings: Option<&str>,
    ) -> Result<CandidateConfig, Vec<Problem>> {
        let at = |key: &str| format!("plugins.{name}.candidate.{key}");
        let mut problems = Vec::new();
        let source = match (&self.file, &self.builtin) {
            (Some(file), None) => {
                let file = base.join(file);
                if !file.is_file() {
                    problems.push(problem(at("file"), format!("{} does not exist or is not a file", file.display())));
                }
                Some(PluginSource::File(file))
            }
            (None, Some(name)) if builtin::component(name).is_some() => Some(PluginSource::Builtin(name.clone())),
            (None, Some(other)) => {
                problems.push(problem(at("builtin"), format!("no built-in plugin `{other}`")));
                None
            }
            (None, None) => live.cloned(),
            (Some(_), Some(_)) => {
                problems.push(problem(format!("plugins.{name}.candidate"), "set at most one of `file` or `builtin`"));
                None
            }
        };
        let settings_json = match &self.settings {
            Some(table) => serde_json::to_string(table).ok(),
            None => live_settings.map(str::to_string),
        };
        if self.file.is_none() && self.builtin.is_none() && self.settings.is_none() {
            problems.push(problem(
                format!("plugins.{name}.candidate"),
                "a candidate needs another `file`, `builtin` or `settings` than the live version",
            ));
        }
        let share_bp = percent_bp(self.share.unwrap_or(0.0), at("share"), &mut problems);
        let queue = self.queue.unwrap_or(DEFAULT_QUEUE);
        if !(1..=1_000_000).contains(&queue) {
            problems.push(problem(at("queue"), format!("{queue} is not between 1 and 1000000")));
        }
        let redact = redact_list(&self.redact, at("redact"), &mut problems);
        let rollback = self.rollback.as_ref();
        let window = match rollback.and_then(|r| r.window.as_deref()) {
            Some(text) => match parse_duration(text) {
                Ok(window) if !window.is_zero() => Some(window),
                Ok(_) => {
                    problems.push(problem(at("rollback.window"), "must be longer than zero"));
                    None
                }
                Err(e) => {
                    problems.push(problem(at("rollback.window"), e));
                    None
                }
            },
            None => Some(DEFAULT_WINDOW),
        };
        let max_5xx_increase = rollback.and_then(|r| r.max_5xx_increase);
        if let Some(points) = max_5xx_increase.filter(|p| !(0.0..=100.0).contains(p)) {
            problems.push(problem(at("rollback.max-5xx-increase"), format!("{points} is not 0 to 100 points")));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CandidateConfig {
            source: source.expect("checked above"),
            settings_json: settings_json.unwrap_or_else(|| "{}".to_string()),
            shadow: self.shadow.unwrap_or(true),
            share_bp: share_bp.expect("checked above"),
            key: self.key.clone().unwrap_or(SplitKey::ClientIp),
            queue,
            log_per_minute: self.log_disagreements_per_minute.unwrap_or(DEFAULT_LOG_PER_MINUTE),
            redact,
            rollback: RollbackRules {
                max_failures_per_minute: rollback.and_then(|r| r.max_failures_per_minute),
                max_5xx_increase,
                window: window.expect("checked above"),
                min_requests: rollback.and_then(|r| r.min_requests).unwrap_or(DEFAULT_MIN_REQUESTS).max(1),
            },
        })
    }
}

impl RawCapture {
    pub fn validate(&self, name: &str, base: &Path) -> Result<CaptureConfig, Vec<Problem>> {
        let at = |key: &str| format!("plugins.{name}.capture.{key}");
        let mut problems = Vec::new();
        let sample_bp = percent_bp(self.percent.unwrap_or(100.0), at("percent"), &mut problems);
        let max_bytes = match self.max_size.as_deref().map(parse_size) {
            None => Some(DEFAULT_CAPTURE_MAX),
            Some(Ok(n)) if n >= 4096 => Some(n),
            Some(Ok(n)) => {
                problems.push(problem(at("max-size"), format!("{n} bytes is too small (at least 4 KiB)")));
                None
            }
            Some(Err(e)) => {
                problems.push(problem(at("max-size"), e));
                None
            }
        };
        let file = base.join(&self.file);
        if file.parent().is_some_and(|dir| !dir.as_os_str().is_empty() && !dir.is_dir()) {
            problems.push(problem(at("file"), format!("the directory of {} does not exist", file.display())));
        }
        let redact = redact_list(&self.redact, at("redact"), &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CaptureConfig {
            file,
            sample_bp: sample_bp.expect("checked above"),
            max_bytes: max_bytes.expect("checked above"),
            keep: self.keep.unwrap_or(DEFAULT_CAPTURE_KEEP),
            redact,
        })
    }
}

/// `[admin] token-file` and `protect-reads`.
pub fn admin_auth(
    token_file: Option<&str>,
    protect_reads: Option<bool>,
    base: &Path,
) -> Result<Option<AdminAuth>, Problem> {
    match (token_file, protect_reads) {
        (None, Some(true)) => Err(problem("admin.protect-reads".into(), "needs `token-file`")),
        (None, _) => Ok(None),
        (Some(file), protect) => {
            let token_file = base.join(file);
            if !token_file.is_file() {
                return Err(problem(
                    "admin.token-file".into(),
                    format!("{} does not exist or is not a file", token_file.display()),
                ));
            }
            Ok(Some(AdminAuth { token_file, protect_reads: protect.unwrap_or(false) }))
        }
    }
}
