//! The plugin wrappers: [`ExperimentRouter`] and [`ExperimentSniffer`]
//! implement the core's traits over the live plugin and its candidate.
//!
//! For each decision: when the client's stable key puts it in the
//! candidate's share (and the candidate is on), the candidate decides; if
//! that call fails, the live version decides that request instead (and the
//! failure counts towards rollback). Otherwise the live version decides and,
//! in shadow mode, the same inputs go to the worker for the candidate. A
//! sample of inputs goes to the capture file.

use super::control::Control;
use super::record::Record;
use super::worker::{Job, Queue};
use crate::config::experiments::{CaptureConfig, SplitKey};
use crate::names::PluginName;
use crate::plugin::{
    ConnFacts, HeaderInterest, Manifest, PluginError, RouteDecision, RouteRequest, Router, Sniffer, Verdict,
};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the two wrappers share.
pub struct Experiment {
    pub control: Option<Arc<Control>>,
    pub key: SplitKey,
    pub shadow: bool,
    pub queue: Queue,
    pub capture: Option<CaptureConfig>,
    /// Mixed into every key hash, so two experiments split clients independently.
    pub salt: u64,
    captured: AtomicU64,
}

impl Experiment {
    pub fn new(
        control: Option<Arc<Control>>,
        key: SplitKey,
        shadow: bool,
        queue: Queue,
        capture: Option<CaptureConfig>,
        plugin: &PluginName,
    ) -> Experiment {
        let salt = fnv(0xcbf2_9ce4_8422_2325, plugin.as_str().as_bytes());
        Experiment { control, key, shadow, queue, capture, salt, captured: AtomicU64::new(0) }
    }

    /// The client's bucket (0..10000) from the configured key, `None` when the request has no key.
    fn route_bucket(&self, conn: &ConnFacts, request: &RouteRequest) -> Option<u32> {
        match &self.key {
            SplitKey::ClientIp => Some(self.ip_bucket(conn.client_addr.ip())),
            SplitKey::Header(name) => request
                .headers
                .iter()
                .find(|(n, v)| n.eq_ignore_ascii_case(name) && !v.is_empty())
                .map(|(_, value)| bucket(self.salt, value)),
            SplitKey::Cookie(name) => cookie(request, name).map(|value| bucket(self.salt, value)),
        }
    }

    fn ip_bucket(&self, ip: IpAddr) -> u32 {
        match ip.to_canonical() {
            IpAddr::V4(v4) => bucket(self.salt, &v4.octets()),
            IpAddr::V6(v6) => bucket(self.salt, &v6.octets()),
        }
    }

    /// Whether this decision is sampled into the capture file.
    fn sampled(&self) -> Option<&CaptureConfig> {
        let capture = self.capture.as_ref()?;
        let n = self.captured.fetch_add(1, Ordering::Relaxed);
        ((mix(n ^ self.salt) % 10_000) < u64::from(capture.sample_bp)).then_some(capture)
    }

    fn shadowing(&self) -> Option<&Control> {
        self.control.as_deref().filter(|c| self.shadow && c.is_on() && !c.is_promoted())
    }
}

/// A route plugin with a candidate and/or a capture.
pub struct ExperimentRouter {
    pub live: Arc<dyn Router>,
    pub candidate: Option<Arc<dyn Router>>,
    pub experiment: Experiment,
    /// Both versions' backends, so start-up and reloads check the candidate's too.
    pub manifest: Manifest,
}

/// The manifest of the two versions together: every backend either may name
/// (unchecked when either declares none), and every header (each version
/// filters what it reads itself).
pub fn merged(live: &Manifest, candidate: Option<&Manifest>) -> Manifest {
    let backends = match (&live.backends, candidate.map(|c| &c.backends)) {
        (Some(live), Some(Some(candidate))) => {
            let mut all = live.clone();
            all.extend(candidate.iter().filter(|b| !live.contains(b)).cloned());
            Some(all)
        }
        (Some(live), None) => Some(live.clone()),
        _ => None,
    };
    Manifest { backends, headers: HeaderInterest::All }
}

thread_local! {
    /// Which version made this thread's last experiment decision, for `attribution`.
    static LAST_SIDE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

impl Router for ExperimentRouter {
    fn name(&self) -> &PluginName {
        self.live.name()
    }

    fn version(&self) -> &str {
        self.live.version()
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn pick(&self, conn: &ConnFacts, request: &RouteRequest) -> Result<RouteDecision, PluginError> {
        let experiment = &self.experiment;
        if let Some(capture) = experiment.sampled() {
            experiment.queue.offer(Job::Capture(Record::route(conn, request, &capture.redact).to_line()));
        }
        if let (Some(candidate), Some(control)) = (&self.candidate, &experiment.control)
            && control.candidate_decides(experiment.route_bucket(conn, request))
        {
            match candidate.pick(conn, request) {
                Ok(decision) => {
                    control.decided_candidate.fetch_add(1, Ordering::Relaxed);
                    LAST_SIDE.set(Some(true));
                    return Ok(decision);
                }
                Err(e) => control.failure(&e),
            }
        }
        let live = self.live.pick(conn, request);
        if let Some(control) = &experiment.control {
            control.decided_live.fetch_add(1, Ordering::Relaxed);
            LAST_SIDE.set(Some(false));
        }
        if experiment.shadowing().is_some() {
            experiment.queue.offer(Job::Route { conn: conn.clone(), request: request.clone(), live: live.clone() });
        }
        live
    }

    fn attribution(&self) -> Option<bool> {
        LAST_SIDE.take()
    }

    fn responded(&self, candidate: bool, status: u16) {
        if let Some(control) = &self.experiment.control {
            control.response(candidate, status);
        }
    }
}

/// A sniff plugin with a candidate and/or a capture. Sniff experiments are
/// keyed by client IP whatever `key` says: nothing else is known yet.
pub struct ExperimentSniffer {
    pub live: Arc<dyn Sniffer>,
    pub candidate: Option<Arc<dyn Sniffer>>,
    pub experiment: Experiment,
    pub manifest: Manifest,
}

impl Sniffer for ExperimentSniffer {
    fn name(&self) -> &PluginName {
        self.live.name()
    }

    fn version(&self) -> &str {
        self.live.version()
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn classify(&self, conn: &ConnFacts, head: &[u8], complete: bool) -> Result<Verdict, PluginError> {
        let experiment = &self.experiment;
        let decided = |outcome: &Result<Verdict, PluginError>| complete || !matches!(outcome, Ok(Verdict::NeedMore));
        if let (Some(candidate), Some(control)) = (&self.candidate, &experiment.control)
            && control.candidate_decides(Some(experiment.ip_bucket(conn.client_addr.ip())))
        {
            match candidate.classify(conn, head, complete) {
                Ok(verdict) => {
                    if decided(&Ok(verdict.clone())) {
                        control.decided_candidate.fetch_add(1, Ordering::Relaxed);
                        self.capture(conn, head, complete);
                    }
                    return Ok(verdict);
                }
                Err(e) => control.failure(&e),
            }
        }
        let live = self.live.classify(conn, head, complete);
        // Only the call that decides is compared and captured: one per connection.
        if decided(&live) {
            if let Some(control) = &experiment.control {
                control.decided_live.fetch_add(1, Ordering::Relaxed);
            }
            if experiment.shadowing().is_some() {
                let job = Job::Sniff { conn: conn.clone(), head: head.to_vec(), complete, live: live.clone() };
                experiment.queue.offer(job);
            }
            self.capture(conn, head, complete);
        }
        live
    }
}

impl ExperimentSniffer {
    fn capture(&self, conn: &ConnFacts, head: &[u8], complete: bool) {
        if self.experiment.sampled().is_some() {
            self.experiment.queue.offer(Job::Capture(Record::sniff(conn, head, complete).to_line()));
        }
    }
}

/// The first non-empty value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(request: &'a RouteRequest, name: &str) -> Option<&'a [u8]> {
    let trim = |b: &'a [u8]| b.trim_ascii();
    request.headers.iter().filter(|(n, _)| n == "cookie").flat_map(|(_, v)| v.split(|&b| b == b';')).find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
        (key == name.as_bytes() && !value.is_empty()).then_some(value)
    })
}

fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// splitmix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stable bucket in 0..10000 for a key (basis points of the share).
pub fn bucket(salt: u64, key: &[u8]) -> u32 {
    (mix(fnv(salt, key)) % 10_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket(1, b"client-7"), bucket(1, b"client-7"));
        let below = (0..10_000).filter(|i| bucket(42, format!("c{i}").as_bytes()) < 1000).count();
        assert!((800..1200).contains(&below), "{below} of 10000 keys under 10%");
        let request = RouteRequest {
            method: "GET".into(),
            path: "/".into(),
            authority: None,
            headers: vec![("cookie".into(), b"a=1; sid=xyz ; b=".to_vec())],
        };
        assert_eq!(cookie(&request, "sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&request, "b"), None);
    }
}
