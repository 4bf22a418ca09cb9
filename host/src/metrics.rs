//! Process-wide metrics, rendered in the Prometheus text format by the
//! admin listener (`/metrics`).
//!
//! Counters, gauges and histograms are keyed by name and label values and
//! registered on first use. Updating one is an atomic add; hot paths (plugin
//! calls) keep the `Arc` handle so they never touch the registry's lock.
//!
//! The metric names, in one place so the docs and the code agree:
//! see [`HELP`] for the `# HELP` text of each (docs/OPERATING.md lists them
//! with their labels). Label values come from the config (listener, backend,
//! plugin names) or from fixed sets (status class, error kind): the number of
//! series is bounded by the config, never by traffic.
//!
//! - [`http`]: the per-listener and per-backend HTTP handles, looked up once
//!   per config version.
//! - [`process`]: `sluice_build_info` and the standard `process_*` series,
//!   read from `/proc` when scraped.

pub mod http;
mod process;

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

/// Upper bounds of the plugin decision-latency buckets, in seconds.
pub const DECISION_BUCKETS: &[f64] = &[1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1e-2, 1e-1];

/// Upper bounds of the HTTP request latency buckets, in seconds: 0.5 ms to 30 s.
pub const REQUEST_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A latency histogram updated without locks (hot paths hold an `Arc` to it).
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(first) = self.bounds.iter().position(|bound| seconds <= *bound) {
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
/// Each thread remembers the handles it used, so that counting per connection
/// on the worker threads does not take the registry's lock.
pub fn counter(name: &'static str, labels: Labels) -> Arc<AtomicU64> {
    thread_local! {
        static SEEN: std::cell::RefCell<BTreeMap<(&'static str, Labels), Arc<AtomicU64>>> = Default::default();
    }
    let key = (name, labels);
    SEEN.with_borrow_mut(|seen| {
        if let Some(counter) = seen.get(&key) {
            return counter.clone();
        }
        let counter = with(|r| r.counters.entry(key.clone()).or_default().clone());
        seen.insert(key, counter.clone());
        counter
    })
}

/// The gauge `name{labels}`, registered on first use.
pub fn gauge(name: &'static str, labels: Labels) -> Arc<AtomicI64> {
    with(|r| r.gauges.entry((name, labels)).or_default().clone())
}

/// The histogram `name{labels}` with the plugin decision buckets, registered on first use.
pub fn histogram(name: &'static str, labels: Labels) -> Arc<Histogram> {
    histogram_with(name, labels, DECISION_BUCKETS)
}

/// The histogram `name{labels}` with these bucket bounds, registered on first
/// use (an existing histogram keeps the bounds it was registered with).
pub fn histogram_with(name: &'static str, labels: Labels, bounds: &'static [f64]) -> Arc<Histogram> {
    with(|r| r.histograms.entry((name, labels)).or_insert_with(|| Arc::new(Histogram::new(bounds))).clone())
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
    // Limits (docs/LIMITS.md).
    ("sluice_connections_refused_total", "counter", "Connections closed right after accept by a limit, by limit."),
    ("sluice_http_requests_refused_total", "counter", "HTTP requests answered 429 by a per-client rate, by listener."),
    (
        "sluice_accept_errors_total",
        "counter",
        "Accept errors other than a failed single connection (e.g. out of file descriptors), by listener.",
    ),
    (
        "sluice_memory_trims_total",
        "counter",
        "Times freed memory was returned to the system after a flood of connections ended.",
    ),
    (
        "sluice_bytes_total",
        "counter",
        "Bytes relayed by listener and direction (in: from clients); HTTP counts bodies and WebSocket tunnels.",
    ),
    ("sluice_sniff_verdicts_total", "counter", "Sniff plugin verdicts by listener and verdict."),
    ("sluice_plugin_decision_seconds", "histogram", "Plugin decision latency, instance start included."),
    ("sluice_plugin_failures_total", "counter", "Plugin calls that failed, by plugin and reason."),
    ("sluice_tls_handshakes_total", "counter", "TLS handshakes by listener and result."),
    ("sluice_http_responses_total", "counter", "HTTP responses by listener and status class."),
    ("sluice_backend_server_up", "gauge", "1 when a backend server is healthy, else 0."),
    ("sluice_backend_server_active", "gauge", "Open connections and requests per backend server."),
    ("sluice_backend_queued", "gauge", "Requests and connections waiting for a backend server under max-connections."),
    ("sluice_reloads_total", "counter", "Configuration and plugin reloads by result."),
    // HTTP requests, per listener and per backend (see `http`).
    (
        "sluice_http_request_duration_seconds",
        "histogram",
        "Time from a request head to its response head (time to first byte), by listener and status class.",
    ),
    (
        "sluice_backend_requests_total",
        "counter",
        "HTTP requests sent to a backend, by backend and the status class the client got.",
    ),
    ("sluice_backend_errors_total", "counter", "Requests and connections a backend failed, by backend and kind."),
    ("sluice_access_log_dropped_total", "counter", "Access-log lines dropped because the writer fell behind."),
    ("sluice_acme_orders_total", "counter", "ACME certificate orders by listener and result (issued, failed)."),
    (
        "sluice_acme_certificate_expiry_timestamp_seconds",
        "gauge",
        "Unix time the ACME certificate served expires (0: none yet).",
    ),
    (
        "sluice_acme_next_attempt_timestamp_seconds",
        "gauge",
        "Unix time of the next ACME order (renewal or retry; 0 while one runs).",
    ),
    ("sluice_acme_consecutive_failures", "gauge", "ACME orders failed in a row, by listener (0 after a success)."),
    ("sluice_runtime_alive_tasks", "gauge", "Tasks alive on the async runtime (a count that only grows is a leak)."),
];

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        // The control runtime's tasks and every worker's.
        let alive = runtime.metrics().num_alive_tasks() + crate::workers::alive_tasks();
        gauge_set("sluice_runtime_alive_tasks", Vec::new(), alive as i64);
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
            for (bucket, bound) in histogram.buckets.iter().zip(histogram.bounds) {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = bound.to_string();
                let _ = writeln!(out, "{metric}_bucket{} {cumulative}", label_text(labels, Some(&le)));
            }
            let count = histogram.count.load(Ordering::Relaxed);
            let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{metric}_bucket{} {count}", label_text(labels, Some("+Inf")));
            let _ = writeln!(out, "{metric}_sum{} {sum}", label_text(labels, None));
            let _ = writeln!(out, "{metric}_count{} {count}", label_text(labels, None));
        }
    }
    process::render(&mut out);
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
        assert!(text.contains("sluice_plugin_decision_seconds_bucket{plugin=\"p\\\"q\",le=\"0.000002\"} 0"), "{text}");
        assert!(text.contains("sluice_plugin_decision_seconds_bucket{plugin=\"p\\\"q\",le=\"0.000005\"} 1"), "{text}");
        assert!(text.contains("sluice_plugin_decision_seconds_count{plugin=\"p\\\"q\"} 1"));
    }

    #[test]
    fn request_histograms_use_their_own_buckets() {
        let labels = || vec![("listener", "h".to_string()), ("class", "2xx".to_string())];
        let latency = histogram_with("sluice_http_request_duration_seconds", labels(), REQUEST_BUCKETS);
        latency.observe(Duration::from_millis(3));
        latency.observe(Duration::from_secs(60));
        let text = render();
        let bucket = |le: &str| {
            format!("sluice_http_request_duration_seconds_bucket{{listener=\"h\",class=\"2xx\",le=\"{le}\"}}")
        };
        assert!(text.contains(&format!("{} 0\n", bucket("0.0025"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", bucket("0.005"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", bucket("30"))), "{text}");
        assert!(text.contains(&format!("{} 2\n", bucket("+Inf"))), "{text}");
        assert!(
            text.contains("sluice_http_request_duration_seconds_sum{listener=\"h\",class=\"2xx\"} 60.003\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn renders_the_runtime_task_count() {
        tokio::spawn(std::future::pending::<()>());
        let text = render();
        let line = text.lines().find(|l| l.starts_with("sluice_runtime_alive_tasks ")).unwrap_or_default();
        assert!(line.ends_with(" 1"), "{line:?} in\n{text}");
    }
}
