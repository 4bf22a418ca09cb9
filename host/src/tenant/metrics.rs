//! The `tenant`-labelled series. Label values are the names of configured
//! tenants (file stems) or `-` (a request on a tenant listener that no
//! tenant owns), so the number of series is bounded by the tenant files,
//! never by traffic: a client sending random Host names only ever adds to
//! `tenant="-"`. A removed tenant's series stay until restart.

use super::quota::QuotaKind;
use crate::metrics::{REQUEST_BUCKETS, counter, histogram_with};
use crate::plugin::PluginError;
use http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The label of requests no tenant owns.
pub const NO_TENANT: &str = "-";

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One tenant's series, looked up once when the tenant is loaded.
pub struct TenantMetrics {
    tenant: String,
    /// `sluice_tenant_http_responses_total{tenant, class}`.
    responses: [Arc<AtomicU64>; 5],
    /// `sluice_tenant_http_request_duration_seconds{tenant}`.
    latency: Arc<crate::metrics::Histogram>,
}

impl TenantMetrics {
    pub fn new(tenant: &str) -> TenantMetrics {
        let labels = |class: &str| vec![("tenant", tenant.to_string()), ("class", class.to_string())];
        TenantMetrics {
            tenant: tenant.to_string(),
            responses: CLASSES.map(|class| counter("sluice_tenant_http_responses_total", labels(class))),
            latency: histogram_with(
                "sluice_tenant_http_request_duration_seconds",
                vec![("tenant", tenant.to_string())],
                REQUEST_BUCKETS,
            ),
        }
    }

    pub fn response(&self, status: StatusCode, latency: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(latency);
    }

    /// `sluice_tenant_quota_exceeded_total{tenant, quota}`.
    pub fn quota_exceeded(&self, kind: QuotaKind) {
        quota_exceeded(&self.tenant, kind);
    }

    /// `sluice_tenant_plugin_failures_total{tenant, reason}`; fuel and
    /// memory failures also count as their quota.
    pub fn plugin_failed(&self, error: &PluginError) {
        let labels = vec![("tenant", self.tenant.clone()), ("reason", error.label().to_string())];
        crate::metrics::count("sluice_tenant_plugin_failures_total", labels, 1);
        match error {
            PluginError::CpuBudget => self.quota_exceeded(QuotaKind::Cpu),
            PluginError::MemoryCap => self.quota_exceeded(QuotaKind::Memory),
            _ => {}
        }
    }

    /// A decision named a backend outside the tenant's namespace.
    pub fn foreign_backend(&self) {
        let labels = vec![("tenant", self.tenant.clone()), ("reason", "undeclared-backend".to_string())];
        crate::metrics::count("sluice_tenant_plugin_failures_total", labels, 1);
    }
}

pub fn quota_exceeded(tenant: &str, kind: QuotaKind) {
    let labels = vec![("tenant", tenant.to_string()), ("quota", kind.label().to_string())];
    crate::metrics::count("sluice_tenant_quota_exceeded_total", labels, 1);
}

/// A response to a request no tenant owns (`tenant="-"`).
pub fn unowned_response(status: StatusCode) {
    let class = CLASSES[usize::from(status.as_u16() / 100).clamp(1, 5) - 1];
    let labels = vec![("tenant", NO_TENANT.to_string()), ("class", class.to_string())];
    crate::metrics::count("sluice_tenant_http_responses_total", labels, 1);
}
