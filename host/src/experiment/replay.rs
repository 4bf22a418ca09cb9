//! `sluice plugin replay`: run two versions of a plugin over a capture file
//! offline and report how their decisions differ, grouped by kind, with
//! examples. The world (route or sniff) comes from the records.

use super::compare;
use super::record::{Input, Record, unhex};
use crate::config::PluginLimits;
use crate::names::PluginName;
use crate::plugin::wasm::Runtime;
use crate::plugin::{RouteRequest, Router, Sniffer};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

/// Examples shown per kind of difference.
const EXAMPLES: usize = 3;

/// One example of a difference: the input line, the live and the candidate outcome.
pub type Example = (String, String, String);

/// The two versions and their settings (JSON).
pub struct Versions<'a> {
    pub live: &'a [u8],
    pub live_settings: &'a str,
    pub candidate: &'a [u8],
    pub candidate_settings: &'a str,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Report {
    pub decisions: u64,
    pub changed: u64,
    /// Per kind: how many, and a few examples (input line, live, candidate).
    pub kinds: BTreeMap<&'static str, (u64, Vec<Example>)>,
    /// Lines that are not records, with their line number.
    pub skipped: Vec<(usize, String)>,
}

impl Report {
    fn add(&mut self, kind: Option<&'static str>, example: impl FnOnce() -> Example) {
        self.decisions += 1;
        let Some(kind) = kind else { return };
        self.changed += 1;
        let entry = self.kinds.entry(kind).or_default();
        entry.0 += 1;
        if entry.1.len() < EXAMPLES {
            entry.1.push(example());
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let share = if self.decisions == 0 { 0.0 } else { self.changed as f64 * 100.0 / self.decisions as f64 };
        let _ = writeln!(out, "{} decisions replayed, {} changed ({share:.1}%)", self.decisions, self.changed);
        for (kind, (count, examples)) in &self.kinds {
            let _ = writeln!(out, "\n{kind}: {count}");
            for (input, live, candidate) in examples {
                let _ = writeln!(out, "  live: {live}\n  candidate: {candidate}\n  input: {input}");
            }
        }
        for (line, why) in &self.skipped {
            let _ = writeln!(out, "skipped line {line}: {why}");
        }
        out
    }
}

enum Loaded {
    Route(Arc<dyn Router>, Arc<dyn Router>),
    Sniff(Arc<dyn Sniffer>, Arc<dyn Sniffer>),
}

fn load(runtime: &Runtime, versions: &Versions, route: bool) -> Result<Loaded, String> {
    let limits = PluginLimits::default();
    let name = |n: &str| PluginName::new(n);
    if route {
        let live = runtime.load_router(name("live"), versions.live, versions.live_settings.into(), limits);
        let live = live.map_err(|e| format!("the live plugin {e}"))?;
        let candidate =
            runtime.load_router(name("candidate"), versions.candidate, versions.candidate_settings.into(), limits);
        let candidate = candidate.map_err(|e| format!("the candidate plugin {e}"))?;
        Ok(Loaded::Route(live, candidate))
    } else {
        let live = runtime.load_sniffer(name("live"), versions.live, versions.live_settings.into(), limits);
        let live = live.map_err(|e| format!("the live plugin {e}"))?;
        let candidate =
            runtime.load_sniffer(name("candidate"), versions.candidate, versions.candidate_settings.into(), limits);
        let candidate = candidate.map_err(|e| format!("the candidate plugin {e}"))?;
        Ok(Loaded::Sniff(live, candidate))
    }
}

/// Replay every record of `capture` (JSON lines) through both versions.
pub fn run(capture: &str, versions: &Versions) -> Result<Report, String> {
    let mut report = Report::default();
    let mut records = Vec::new();
    for (i, line) in capture.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str::<Record>(line) {
            Ok(record) => records.push((line, record)),
            Err(e) => report.skipped.push((i + 1, e.to_string())),
        }
    }
    let Some((_, first)) = records.first() else {
        return Err("the capture holds no decision records".into());
    };
    let route = matches!(first.input, Input::Route { .. });
    let runtime = Runtime::new().map_err(|e| format!("{e:#}"))?;
    let (runtime, _log) = runtime.capturing_logs();
    let loaded = load(&runtime, versions, route)?;
    for (line, record) in records {
        let conn = record.conn();
        match (&loaded, record.input) {
            (Loaded::Route(live, candidate), Input::Route { method, path, authority, headers }) => {
                let headers = headers.into_iter().map(|(n, v)| (n, v.into_bytes())).collect();
                let request = RouteRequest { method, path, authority, headers };
                let (a, b) = (live.pick(&conn, &request), candidate.pick(&conn, &request));
                let kind = compare::outcomes(&a, &b, compare::route);
                report.add(kind, || (line.to_string(), compare::describe_route(&a), compare::describe_route(&b)));
            }
            (Loaded::Sniff(live, candidate), Input::Sniff { head_hex, complete }) => {
                let head = unhex(&head_hex).map_err(|e| format!("a sniff record's head_hex: {e}"))?;
                let (a, b) = (live.classify(&conn, &head, complete), candidate.classify(&conn, &head, complete));
                let kind = compare::outcomes(&a, &b, compare::sniff);
                report.add(kind, || (line.to_string(), compare::describe_sniff(&a), compare::describe_sniff(&b)));
            }
            _ => return Err("the capture mixes route and sniff records: replay one plugin's capture".into()),
        }
    }
    Ok(report)
}
