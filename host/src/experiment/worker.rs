//! The experiment worker: one thread per experiment that runs the shadow
//! calls and writes capture lines, fed by a bounded queue. The request path
//! only ever pushes without waiting: a full queue drops the job and counts it.

use super::capture::CaptureFile;
use super::compare;
use super::control::Control;
use super::record::Record;
use crate::metrics;
use crate::names::PluginName;
use crate::plugin::{ConnFacts, PluginError, RouteDecision, RouteRequest, Router, Sniffer, Verdict};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// The request path's end of the queue: a short critical section, never a
/// system call (the worker is not woken per job; it drains the queue in
/// batches, see [`Worker::run`]).
pub struct Queue {
    shared: Arc<Shared>,
    dropped: Arc<AtomicU64>,
}

struct Shared {
    jobs: Mutex<VecDeque<Job>>,
    capacity: usize,
    /// Jobs accepted and jobs done: equal when the worker is idle.
    sent: AtomicU64,
    done: AtomicU64,
    /// Set when the wrapper (the queue's owner) is gone: the worker ends.
    closed: AtomicBool,
}

impl Queue {
    /// Hand `job` to the worker, or drop it (counted) when the queue is full.
    pub fn offer(&self, job: Job) {
        let mut jobs = self.shared.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if jobs.len() < self.shared.capacity {
            jobs.push_back(job);
            self.shared.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            drop(jobs);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether every job handed over so far has been done.
    pub fn idle(&self) -> bool {
        self.shared.done.load(Ordering::Relaxed) == self.shared.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

pub struct Worker {
    pub control: Option<Arc<Control>>,
    pub candidate: Option<Candidate>,
    pub capture: Option<CaptureFile>,
    pub redact: Vec<String>,
    pub log_per_minute: u32,
}

/// How long the worker sleeps between batches: short while there is work,
/// longer when idle (a few wake-ups a second per experiment).
const BUSY_NAP: Duration = Duration::from_millis(2);
const IDLE_NAP: Duration = Duration::from_millis(50);

/// Start the worker thread; it ends once the [`Queue`] is dropped.
pub fn spawn(worker: Worker, capacity: usize, plugin: &PluginName) -> std::io::Result<Queue> {
    let dropped = metrics::counter("sluice_experiment_shadow_dropped_total", vec![("plugin", plugin.to_string())]);
    let shared = Arc::new(Shared {
        jobs: Mutex::new(VecDeque::new()),
        capacity,
        sent: AtomicU64::new(0),
        done: AtomicU64::new(0),
        closed: AtomicBool::new(false),
    });
    let inbox = shared.clone();
    std::thread::Builder::new().name("sluice-experiment".into()).spawn(move || worker.run(&inbox))?;
    Ok(Queue { shared, dropped })
}

/// Disagreement log lines allowed per minute.
struct LogBudget {
    minute: Instant,
    used: u32,
    suppressed: u64,
}

impl Worker {
    fn run(mut self, inbox: &Shared) {
        let mut budget = LogBudget { minute: Instant::now(), used: 0, suppressed: 0 };
        loop {
            // Read before taking the batch: every job handed over before the
            // queue closed is in it (the last capture lines are not lost).
            let closed = inbox.closed.load(Ordering::Acquire);
            let batch = std::mem::take(&mut *inbox.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
            let busy = !batch.is_empty();
            for job in batch {
                self.handle(job, &mut budget);
                inbox.done.fetch_add(1, Ordering::Relaxed);
            }
            if closed {
                return;
            }
            std::thread::sleep(if busy { BUSY_NAP } else { IDLE_NAP });
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
