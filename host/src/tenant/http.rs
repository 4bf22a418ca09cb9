//! Per-request dispatch on a tenant listener, called by the HTTP stage once
//! the request's Host is settled and before any plugin runs:
//!
//! - the owner of the Host name is the tenant; with TLS, the SNI must name
//!   the same tenant (or none), else `421 Misdirected Request` (a client
//!   cannot reach one tenant through another's certificate);
//! - a name no tenant owns goes to the listener's own route plugin, or gets
//!   `404` when the listener has none ([`NoSite`]);
//! - the tenant's quotas: connections (`503`; HTTP/1 closes), requests
//!   per second (`429` with `Retry-After`);
//! - its plugin's decision must name one of the tenant's own backends; any
//!   other name is an error (`502`), never a route to another tenant.
//!
//! Every refusal is counted per tenant and affects that tenant's clients only.

use super::quota::QuotaKind;
use super::{Tenant, TenantSet};
use crate::http::{HttpStage, ProxyBody, error_response};
use crate::names::PluginName;
use crate::plugin::{ConnFacts, PluginError, RouteDecision, RouteRequest, Router, SyntheticResponse};
use http::{HeaderValue, Request, Response, StatusCode, header};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A request refused before its tenant's plugin ran.
pub struct Refusal {
    pub response: Response<ProxyBody>,
    pub detail: String,
    pub tenant: Option<Arc<Tenant>>,
}

/// The tenant that serves `request` (`None`: the listener's default), or why it is refused.
pub fn dispatch<B>(
    stage: &HttpStage,
    set: &TenantSet,
    request: &Request<B>,
) -> Result<Option<Arc<Tenant>>, Box<Refusal>> {
    let host = crate::http::headers::authority(request);
    let owner = host.as_deref().map(without_port).and_then(|host| set.owner(host));
    let sni = stage.facts.tls.as_ref().and_then(|tls| tls.server_name.as_deref());
    if let Some(sni_owner) = sni.and_then(|sni| set.owner(sni))
        && !owner.is_some_and(|owner| Arc::ptr_eq(owner, sni_owner))
    {
        let detail = format!(
            "Host `{}` is not served on a connection for tenant `{}` (SNI `{}`)",
            host.as_deref().unwrap_or("-"),
            sni_owner.name(),
            sni.unwrap_or("-")
        );
        let response = error_response(StatusCode::MISDIRECTED_REQUEST, "this connection is for another site");
        return Err(Box::new(Refusal { response, detail, tenant: Some(sni_owner.clone()) }));
    }
    let Some(tenant) = owner else { return Ok(None) };
    if tenant.config.quotas.max_connections.is_some() && !stage.tenant_conn.hold(tenant.name(), &tenant.quota) {
        tenant.metrics.quota_exceeded(QuotaKind::Connections);
        let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, "this site has too many open connections");
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        let detail = format!("tenant `{}` is at its max-connections quota", tenant.name());
        return Err(Box::new(Refusal { response, detail, tenant: Some(tenant.clone()) }));
    }
    if let Err(retry_after) = tenant.quota.request() {
        tenant.metrics.quota_exceeded(QuotaKind::Requests);
        let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "this site is over its request quota");
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        let detail = format!("tenant `{}` is over its requests-per-second quota", tenant.name());
        return Err(Box::new(Refusal { response, detail, tenant: Some(tenant.clone()) }));
    }
    Ok(Some(tenant.clone()))
}

/// The tenant plugin's decision, held to the tenant's own backends; `Err`
/// is the access-log detail of a `502`.
pub fn decide(tenant: &Tenant, facts: &ConnFacts, request: &RouteRequest) -> Result<RouteDecision, String> {
    // Plugins see which tenant they route for (`connection.tenant`).
    let facts = ConnFacts { tenant: Some(tenant.config.name.clone()), ..facts.clone() };
    let decision = tenant.router.pick(&facts, request).map_err(|e: PluginError| {
        tenant.metrics.plugin_failed(&e);
        tracing::warn!(tenant = tenant.name(), reason = e.label(), "tenant route plugin failed: {e}");
        format!("tenant `{}`: route plugin failed: {e}", tenant.name())
    })?;
    if let RouteDecision::Forward(to) = &decision
        && tenant.backend(&to.backend).is_none()
    {
        tenant.metrics.foreign_backend();
        return Err(format!(
            "tenant `{}`: route plugin named backend `{}`, which is not one of the tenant's own",
            tenant.name(),
            to.backend
        ));
    }
    Ok(decision)
}

/// Count a response in the tenant series (`tenant="-"` when none owned it).
pub fn count(tenant: Option<&Tenant>, status: StatusCode, duration: Duration) {
    match tenant {
        Some(tenant) => tenant.metrics.response(status, duration),
        None => super::metrics::unowned_response(status),
    }
}

fn without_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return &host[..=end]; // an IPv6 literal, which no tenant owns
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The route "plugin" of a tenant listener without one of its own: 404 for
/// names no tenant owns. Native, it needs no sandbox.
pub struct NoSite {
    name: PluginName,
}

impl NoSite {
    pub fn shared() -> Arc<dyn Router> {
        static SHARED: OnceLock<Arc<NoSite>> = OnceLock::new();
        SHARED.get_or_init(|| Arc::new(NoSite { name: PluginName::new("no-site") })).clone()
    }
}

impl Router for NoSite {
    fn name(&self) -> &PluginName {
        &self.name
    }

    fn version(&self) -> &str {
        "built-in"
    }

    fn pick(&self, _conn: &ConnFacts, request: &RouteRequest) -> Result<RouteDecision, PluginError> {
        let host = request.authority.as_deref().unwrap_or("(none)");
        Ok(RouteDecision::Respond(SyntheticResponse {
            status: 404,
            headers: vec![("content-type".into(), b"text/plain; charset=utf-8".to_vec())],
            body: format!("sluice: no site is configured for {host}\n").into_bytes(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_not_part_of_the_name() {
        assert_eq!(super::without_port("a.test:8443"), "a.test");
        assert_eq!(super::without_port("a.test"), "a.test");
        assert_eq!(super::without_port("[::1]:80"), "[::1]");
    }
}
