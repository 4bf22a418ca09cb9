//! Process-wide metrics, rendered in the Prometheus text format by the
//! admin listener (`/metrics`).
//!
//! Counters, gauges and histograms are keyed by name and label values and
//! registered on first use. Updating one is an atomic add; hot paths (plugin
//! calls) keep the `Arc` handle so they never touch the registry's lock.
//!
//! The metric names, in one place so the docs and the code agree:
//! see [`render`] for the `# HELP` text of each.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Label pairs, in a fixed order per metric.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(&'static str, Labels), Arc<AtomicU64>>,
    gauges: BTreeMap<(&'static str, Labels), Arc<AtomicI64>>,
    histograms: BTreeMap<(&'static str, Labels), Arc<Histogram>>,
}

/// Upper bounds of the decision-latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1e-2, 1e-1];

/// A latency histogram updated without locks (hot paths hold an `Arc` to it).
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(first) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            // Buckets are cumulative when rendered; store the first matching one only.
            self.buckets[first].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(value.as_nanos() as u64, Ordering::Relaxed);
    }
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    // A panic elsewhere while holding the lock must not stop the metrics.
    let mut registry = registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut registry)
}

/// The counter `name{labels}`, registered on first use. Keep the handle on hot paths.
pub fn counter(name: &'static str, labels: Labels) -> Arc<AtomicU64> {
    with(|r| r.counters.entry((name, labels)).or_default().clone())
}

/// The gauge `name{labels}`, registered on first use.
pub fn gauge(name: &'static str, labels: Labels) -> Arc<AtomicI64> {
    with(|r| r.gauges.entry((name, labels)).or_default().clone())
}

/// The histogram `name{labels}`, registered on first use.
pub fn histogram(name: &'static str, labels: Labels) -> Arc<Histogram> {
    with(|r| r.histograms.entry((name, labels)).or_default().clone())
}

/// Add `n` to a counter (looks it up: for paths that are not hot).
pub fn count(name: &'static str, labels: Labels, n: u64) {
    counter(name, labels).fetch_add(n, Ordering::Relaxed);
}

/// Add `delta` to a gauge.
pub fn gauge_add(name: &'static str, labels: Labels, delta: i64) {
    gauge(name, labels).fetch_add(delta, Ordering::Relaxed);
}

/// Set a gauge.
pub fn gauge_set(name: &'static str, labels: Labels, value: i64) {
    gauge(name, labels).store(value, Ordering::Relaxed);
}

/// Record one observation of a duration.
pub fn observe(name: &'static str, labels: Labels, value: Duration) {
    histogram(name, labels).observe(value);
}

/// A gauge that is incremented now and decremented when dropped.
pub struct GaugeGuard(Arc<AtomicI64>);

impl GaugeGuard {
    pub fn new(gauge: Arc<AtomicI64>) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What each metric means; also the list of every metric sluice exports.
const HELP: &[(&str, &str, &str)] = &[
    ("sluice_connections_total", "counter", "Accepted connections by listener and how they were classified."),
    ("sluice_connections_active", "gauge", "Open client connections by listener."),
    ("sluice_connections_sniffing", "gauge", "Connections still being sniffed."),
    ("sluice_connections_refused_total", "counter", "Connections refused by a global limit, by limit."),
    ("sluice_bytes_total", "counter", "Bytes relayed by listener and direction (in: from clients)."),
    ("sluice_sniff_verdicts_total", "counter", "Sniff plugin verdicts by listener and verdict."),
    ("sluice_plugin_decision_seconds", "histogram", "Plugin decision latency, instance start included."),
    ("sluice_plugin_failures_total", "counter", "Plugin calls that failed, by plugin and reason."),
    ("sluice_tls_handshakes_total", "counter", "TLS handshakes by listener and result."),
    ("sluice_http_responses_total", "counter", "HTTP responses by listener and status class."),
    ("sluice_backend_server_up", "gauge", "1 when a backend server is healthy, else 0."),
    ("sluice_backend_server_active", "gauge", "Open connections and requests per backend server."),
    ("sluice_backend_queued", "gauge", "Requests and connections waiting for a backend server under max-connections."),
    ("sluice_reloads_total", "counter", "Configuration and plugin reloads by result."),
    ("sluice_runtime_alive_tasks", "gauge", "Tasks alive on the async runtime (a count that only grows is a leak)."),
];

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        gauge_set("sluice_runtime_alive_tasks", Vec::new(), runtime.metrics().num_alive_tasks() as i64);
    }
    let (counters, gauges, histograms) = with(|r| (r.counters.clone(), r.gauges.clone(), r.histograms.clone()));
    let mut out = String::new();
    for (name, kind, help) in HELP {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for ((metric, labels), value) in counters.iter().filter(|((n, _), _)| n == name) {
            let _ = writeln!(out, "{metric}{} {}", label_text(labels, None), value.load(Ordering::Relaxed));
        }
        for ((metric, labels), value) in gauges.iter().filter(|((n, _), _)| n == name) {
            let _ = writeln!(out, "{metric}{} {}", label_text(labels, None), value.load(Ordering::Relaxed));
        }
        for ((metric, labels), histogram) in histograms.iter().filter(|((n, _), _)| n == name) {
            let mut cumulative = 0;
            for (bucket, bound) in histogram.buckets.iter().zip(LATENCY_BUCKETS) {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = format!("{bound:e}");
                let _ = writeln!(out, "{metric}_bucket{} {cumulative}", label_text(labels, Some(&le)));
            }
            let count = histogram.count.load(Ordering::Relaxed);
            let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{metric}_bucket{} {count}", label_text(labels, Some("+Inf")));
            let _ = writeln!(out, "{metric}_sum{} {sum}", label_text(labels, None));
            let _ = writeln!(out, "{metric}_count{} {count}", label_text(labels, None));
        }
    }
    out
}

fn label_text(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The value of a counter or gauge, for tests.
pub fn value(name: &'static str, labels: &[(&'static str, &str)]) -> i64 {
    let key: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    with(|r| {
        r.counters
            .get(&(name, key.clone()))
            .map(|v| v.load(Ordering::Relaxed) as i64)
            .or_else(|| r.gauges.get(&(name, key)).map(|v| v.load(Ordering::Relaxed)))
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        count("sluice_reloads_total", vec![("result", "ok".into())], 2);
        gauge_set("sluice_backend_server_up", vec![("backend", "web".into()), ("server", "a:1".into())], 1);
        observe("sluice_plugin_decision_seconds", vec![("plugin", "p\"q".into())], Duration::from_micros(3));
        let text = render();
        assert!(text.contains("sluice_reloads_total{result=\"ok\"} 2"), "{text}");
        assert!(text.contains("sluice_backend_server_up{backend=\"web\",server=\"a:1\"} 1"));
        assert!(text.contains("sluice_plugin_decision_seconds_bucket{plugin=\"p\\\"q\",le=\"2e-6\"} 0"), "{text}");
        assert!(text.contains("sluice_plugin_decision_seconds_bucket{plugin=\"p\\\"q\",le=\"5e-6\"} 1"), "{text}");
        assert!(text.contains("sluice_plugin_decision_seconds_count{plugin=\"p\\\"q\"} 1"));
    }

    #[tokio::test]
    async fn renders_the_runtime_task_count() {
        tokio::spawn(std::future::pending::<()>());
        let text = render();
        let line = text.lines().find(|l| l.starts_with("sluice_runtime_alive_tasks ")).unwrap_or_default();
        assert!(line.ends_with(" 1"), "{line:?} in\n{text}");
    }
}
