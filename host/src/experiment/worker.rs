//! The experiment worker: one thread per experiment that runs the shadow
//! calls and writes capture lines, fed by a bounded queue. The request path
//! only ever `try_send`s: a full queue drops the job and counts it.

use super::capture::CaptureFile;
use super::compare;
use super::control::Control;
use super::record::Record;
use crate::metrics;
use crate::names::PluginName;
use crate::plugin::{ConnFacts, PluginError, RouteDecision, RouteRequest, Router, Sniffer, Verdict};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub enum Job {
    Route { conn: ConnFacts, request: RouteRequest, live: Result<RouteDecision, PluginError> },
    Sniff { conn: ConnFacts, head: Vec<u8>, complete: bool, live: Result<Verdict, PluginError> },
    Capture(String),
}

/// The candidate the worker runs shadow calls on.
pub enum Candidate {
    Router(Arc<dyn Router>),
    Sniffer(Arc<dyn Sniffer>),
}

/// The request path's end of the queue.
pub struct Queue {
    sender: SyncSender<Job>,
    dropped: Arc<AtomicU64>,
    /// Jobs sent and jobs done: equal when the worker is idle (tests wait on it).
    sent: AtomicU64,
    done: Arc<AtomicU64>,
}

impl Queue {
    /// Hand `job` to the worker, or drop it (counted) when the queue is full.
    pub fn offer(&self, job: Job) {
        // Counted before the send, so `done` never runs ahead of `sent`.
        self.sent.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.sender.try_send(job) {
            self.sent.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether every job handed over so far has been done.
    pub fn idle(&self) -> bool {
        self.done.load(Ordering::Relaxed) == self.sent.load(Ordering::Relaxed)
    }
}

pub struct Worker {
    pub control: Option<Arc<Control>>,
    pub candidate: Option<Candidate>,
    pub capture: Option<CaptureFile>,
    pub redact: Vec<String>,
    pub log_per_minute: u32,
}

/// Start the worker thread; it ends when the queue's sender is dropped.
pub fn spawn(worker: Worker, capacity: usize, plugin: &PluginName) -> std::io::Result<Queue> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(capacity);
    let dropped = metrics::counter("sluice_experiment_shadow_dropped_total", vec![("plugin", plugin.to_string())]);
    let done = Arc::new(AtomicU64::new(0));
    let finished = done.clone();
    std::thread::Builder::new().name("sluice-experiment".into()).spawn(move || worker.run(receiver, &finished))?;
    Ok(Queue { sender, dropped, sent: AtomicU64::new(0), done })
}

/// Disagreement log lines allowed per minute.
struct LogBudget {
    minute: Instant,
    used: u32,
    suppressed: u64,
}

impl Worker {
    fn run(mut self, jobs: Receiver<Job>, done: &AtomicU64) {
        let mut budget = LogBudget { minute: Instant::now(), used: 0, suppressed: 0 };
        while let Ok(job) = jobs.recv() {
            self.handle(job, &mut budget);
            done.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn handle(&mut self, job: Job, budget: &mut LogBudget) {
        match job {
            Job::Capture(line) => {
                if let Some(capture) = &mut self.capture
                    && let Err(e) = capture.write(&line)
                {
                    static LOG: crate::limits::Throttled = crate::limits::Throttled::new();
                    if LOG.ready().is_some() {
                        tracing::warn!(error = %e, "cannot write the decision capture file");
                    }
                }
            }
            Job::Route { conn, request, live } => {
                let (Some(control), Some(Candidate::Router(candidate))) = (&self.control, &self.candidate) else {
                    return;
                };
                if !control.is_on() || control.is_promoted() {
                    return;
                }
                let shadow = candidate.pick(&conn, &request);
                if let Err(e) = &shadow {
                    control.failure(e);
                }
                let kind = compare::outcomes(&live, &shadow, compare::route);
                self.count(control, kind);
                if let Some(kind) = kind {
                    let describe = || {
                        let input = Record::route(&conn, &request, &self.redact).to_line();
                        (compare::describe_route(&live), compare::describe_route(&shadow), input)
                    };
                    self.log(control, kind, budget, describe);
                }
            }
            Job::Sniff { conn, head, complete, live } => {
                let (Some(control), Some(Candidate::Sniffer(candidate))) = (&self.control, &self.candidate) else {
                    return;
                };
                if !control.is_on() || control.is_promoted() {
                    return;
                }
                let shadow = candidate.classify(&conn, &head, complete);
                if let Err(e) = &shadow {
                    control.failure(e);
                }
                let kind = compare::outcomes(&live, &shadow, compare::sniff);
                self.count(control, kind);
                if let Some(kind) = kind {
                    let describe = || {
                        let input = Record::sniff(&conn, &head, complete).to_line();
                        (compare::describe_sniff(&live), compare::describe_sniff(&shadow), input)
                    };
                    self.log(control, kind, budget, describe);
                }
            }
        }
    }

    fn count(&self, control: &Control, kind: Option<&'static str>) {
        let labels = vec![("plugin", control.plugin.to_string()), ("result", kind.unwrap_or("agree").to_string())];
        metrics::count("sluice_experiment_comparisons_total", labels, 1);
    }

    fn log(
        &self,
        control: &Control,
        kind: &'static str,
        budget: &mut LogBudget,
        describe: impl FnOnce() -> (String, String, String),
    ) {
        if budget.minute.elapsed() > Duration::from_secs(60) {
            *budget = LogBudget { minute: Instant::now(), used: 0, suppressed: budget.suppressed };
        }
        if budget.used >= self.log_per_minute {
            budget.suppressed += 1;
            return;
        }
        budget.used += 1;
        let (live, candidate, input) = describe();
        let suppressed = std::mem::take(&mut budget.suppressed);
        tracing::info!(
            plugin = %control.plugin, kind, %live, %candidate, %input, suppressed,
            "candidate disagrees (replay the input with `sluice plugin replay`)"
        );
    }
}
