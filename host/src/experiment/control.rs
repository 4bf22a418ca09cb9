//! One experiment's live state: the candidate's share, whether it is on, and
//! the rollback rules watching it. Shared by the plugin wrapper (request
//! path), its shadow worker, the admin API and `/status`; carried over
//! reloads that keep the same candidate and configured share.

use crate::config::experiments::{CandidateConfig, RollbackRules};
use crate::metrics;
use crate::names::PluginName;
use crate::plugin::PluginError;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Where the experiment stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The candidate shadows and/or decides its share.
    Running,
    /// A rollback rule switched it off; it stays off until the operator acts.
    RolledBack { rule: &'static str, reason: String, at: SystemTime },
    /// The operator switched it off.
    Aborted,
    /// The candidate decides everything (until the config changes).
    Promoted,
}

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            State::Running => "running",
            State::RolledBack { .. } => "rolled-back",
            State::Aborted => "aborted",
            State::Promoted => "promoted",
        }
    }
}

/// Responses per side in the current 5xx window.
#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    live: (u64, u64),
    candidate: (u64, u64),
}

pub struct Control {
    pub plugin: PluginName,
    /// The candidate component's SHA-256 and settings: a new one starts afresh.
    identity: String,
    /// The share in the config this control was made from.
    config_share_bp: u32,
    share_bp: AtomicU32,
    /// Fast check on the request path: false while rolled back or aborted.
    on: AtomicBool,
    promoted: AtomicBool,
    state: Mutex<State>,
    rules: RollbackRules,
    failures: Mutex<VecDeque<Instant>>,
    window: Mutex<Window>,
    /// Requests or connections decided by each version (metrics handles).
    pub decided_live: Arc<AtomicU64>,
    pub decided_candidate: Arc<AtomicU64>,
}

impl Control {
    pub fn new(plugin: PluginName, identity: String, config: &CandidateConfig) -> Control {
        let label = |version: &str| vec![("plugin", plugin.to_string()), ("version", version.to_string())];
        let control = Control {
            identity,
            config_share_bp: config.share_bp,
            share_bp: AtomicU32::new(config.share_bp),
            on: AtomicBool::new(true),
            promoted: AtomicBool::new(false),
            state: Mutex::new(State::Running),
            rules: config.rollback,
            failures: Mutex::default(),
            window: Mutex::default(),
            decided_live: metrics::counter("sluice_experiment_decisions_total", label("live")),
            decided_candidate: metrics::counter("sluice_experiment_decisions_total", label("candidate")),
            plugin,
        };
        control.publish();
        control
    }

    /// After a reload: keep what the operator or a rollback set, unless the
    /// candidate or its configured share changed (editing the config is acting).
    pub fn continue_from(&self, old: &Control) {
        if old.identity != self.identity || old.config_share_bp != self.config_share_bp {
            return;
        }
        self.share_bp.store(old.share_bp.load(Ordering::Relaxed), Ordering::Relaxed);
        self.on.store(old.on.load(Ordering::Relaxed), Ordering::Relaxed);
        self.promoted.store(old.promoted.load(Ordering::Relaxed), Ordering::Relaxed);
        *self.state.lock().expect("state lock") = old.state();
        *self.failures.lock().expect("failures lock") = old.failures.lock().expect("failures lock").clone();
        self.publish();
    }

    pub fn state(&self) -> State {
        self.state.lock().expect("state lock").clone()
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub fn is_promoted(&self) -> bool {
        self.promoted.load(Ordering::Relaxed)
    }

    pub fn share_bp(&self) -> u32 {
        self.share_bp.load(Ordering::Relaxed)
    }

    /// Whether the candidate decides for a client whose key lands in `bucket` (0..10000).
    pub fn candidate_decides(&self, bucket: Option<u32>) -> bool {
        self.is_promoted() || (self.is_on() && bucket.is_some_and(|b| b < self.share_bp()))
    }

    /// Operator: give the candidate this share and switch it (back) on.
    pub fn set_share(&self, share_bp: u32) {
        self.share_bp.store(share_bp.min(10_000), Ordering::Relaxed);
        self.promoted.store(false, Ordering::Relaxed);
        self.failures.lock().expect("failures lock").clear();
        *self.window.lock().expect("window lock") = Window::default();
        self.set_state(State::Running);
        tracing::warn!(plugin = %self.plugin, share_percent = f64::from(share_bp) / 100.0, "experiment share set");
    }

    /// Operator: switch the candidate off.
    pub fn abort(&self) {
        self.promoted.store(false, Ordering::Relaxed);
        self.set_state(State::Aborted);
        tracing::warn!(plugin = %self.plugin, "experiment aborted: the live version decides everything");
    }

    /// Operator: the candidate decides everything from now on.
    pub fn promote(&self) {
        self.promoted.store(true, Ordering::Relaxed);
        self.set_state(State::Promoted);
        tracing::warn!(
            plugin = %self.plugin,
            "candidate promoted: it decides every request until the config changes (make it the plugin's `file` to keep it)"
        );
    }

    fn set_state(&self, state: State) {
        self.on.store(matches!(state, State::Running | State::Promoted), Ordering::Relaxed);
        *self.state.lock().expect("state lock") = state;
        self.publish();
    }

    fn publish(&self) {
        let labels = || vec![("plugin", self.plugin.to_string())];
        metrics::gauge_set("sluice_experiment_share_basis_points", labels(), i64::from(self.share_bp()));
        metrics::gauge_set("sluice_experiment_candidate_on", labels(), i64::from(self.is_on()));
    }

    /// A candidate call failed (on the request path or in shadow).
    pub fn failure(&self, error: &PluginError) {
        metrics::count(
            "sluice_experiment_candidate_failures_total",
            vec![("plugin", self.plugin.to_string()), ("reason", error.label().to_string())],
            1,
        );
        let Some(max) = self.rules.max_failures_per_minute else { return };
        let now = Instant::now();
        let count = {
            let mut failures = self.failures.lock().expect("failures lock");
            failures.push_back(now);
            while failures.front().is_some_and(|at| now.duration_since(*at) > Duration::from_secs(60)) {
                failures.pop_front();
            }
            failures.len()
        };
        if count > max as usize {
            self.roll_back(
                "failures",
                format!("{count} candidate failures within a minute (at most {max}); last: {error}"),
            );
        }
    }

    /// A response to a request routed by `candidate` (else live) had this status.
    pub fn response(&self, candidate: bool, status: u16) {
        let Some(max_points) = self.rules.max_5xx_increase else { return };
        if self.is_promoted() || !self.is_on() {
            return;
        }
        let verdict = {
            let mut window = self.window.lock().expect("window lock");
            let now = Instant::now();
            if window.started.is_none_or(|started| now.duration_since(started) > self.rules.window) {
                *window = Window { started: Some(now), ..Window::default() };
            }
            let side = if candidate { &mut window.candidate } else { &mut window.live };
            side.0 += 1;
            side.1 += u64::from(status >= 500);
            five_xx_verdict(window.live, window.candidate, self.rules.min_requests, max_points)
        };
        if let Some(reason) = verdict {
            self.roll_back("5xx-rate", reason);
        }
    }

    fn roll_back(&self, rule: &'static str, reason: String) {
        {
            let mut state = self.state.lock().expect("state lock");
            if *state != State::Running {
                return;
            }
            *state = State::RolledBack { rule, reason: reason.clone(), at: SystemTime::now() };
            self.on.store(false, Ordering::Relaxed);
        }
        self.publish();
        metrics::count(
            "sluice_experiment_rollbacks_total",
            vec![("plugin", self.plugin.to_string()), ("rule", rule.into())],
            1,
        );
        tracing::error!(plugin = %self.plugin, rule, %reason, "candidate rolled back: the live version decides everything until an operator acts");
    }

    pub fn status_json(&self) -> serde_json::Value {
        let state = self.state();
        let mut value = json!({
            "plugin": self.plugin.as_str(),
            "state": state.label(),
            "share_percent": f64::from(self.share_bp()) / 100.0,
            "decided": {
                "live": self.decided_live.load(Ordering::Relaxed),
                "candidate": self.decided_candidate.load(Ordering::Relaxed),
            },
        });
        if let State::RolledBack { rule, reason, at } = state {
            let at = at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            value["rollback"] = json!({ "rule": rule, "reason": reason, "at_unix": at });
        }
        value
    }
}

/// `Some(reason)` when the candidate's 5xx rate exceeds live's by more than
/// `max_points` percentage points, both sides having `min` responses.
fn five_xx_verdict(live: (u64, u64), candidate: (u64, u64), min: u64, max_points: f64) -> Option<String> {
    if live.0 < min || candidate.0 < min {
        return None;
    }
    let rate = |(total, errors): (u64, u64)| errors as f64 * 100.0 / total as f64;
    let (live_rate, candidate_rate) = (rate(live), rate(candidate));
    (candidate_rate - live_rate > max_points).then(|| {
        format!(
            "candidate 5xx rate {candidate_rate:.1}% over {} responses vs live {live_rate:.1}% over {} (at most +{max_points} points)",
            candidate.0, live.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_xx_rule_needs_enough_responses_and_a_real_gap() {
        assert_eq!(five_xx_verdict((10, 0), (10, 10), 20, 5.0), None, "too few responses");
        assert_eq!(five_xx_verdict((100, 1), (100, 5), 20, 5.0), None, "4 points");
        assert!(five_xx_verdict((100, 1), (100, 7), 20, 5.0).is_some(), "6 points");
    }
}
