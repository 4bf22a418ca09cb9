//! The admin listener: `/metrics` (Prometheus text), `/healthz`, and a JSON
//! `/status` (listeners, loaded plugins with the hash of each version,
//! backends with server health, the last reload). Bind it to loopback: reads
//! need no token unless `protect-reads` is set; write actions need the
//! `token-file` token (experiment/admin_api.rs). `sluice check` warns otherwise. It has its own
//! small connection cap and header timeout (`[admin]`, docs/LIMITS.md).

use crate::accept::accepted_or_back_off;
use crate::config::AdminConfig;
use crate::limits::Throttled;
use crate::metrics;
use crate::state::Snapshot;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Extra status the app adds to `/status` (e.g. the last reload).
pub type StatusExtra = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

pub struct Admin {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub extra: StatusExtra,
    pub started: Instant,
    /// The token for write actions (experiment/admin_api.rs); none: writes refused.
    pub auth: Option<crate::config::experiments::AdminAuth>,
    pub reload: Option<crate::reload::ReloadHandle>,
}

/// Serve the admin endpoints until `stop`. At most `limits.max_connections`
/// connections are open at once (more are closed right after accept), each
/// closed when a request head does not arrive within `limits.header_timeout`
/// (waiting for the next request on a keep-alive connection included); out
/// of file descriptors, the accept loop backs off like the main one.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, limits: AdminConfig, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, max_connections = limits.max_connections, "admin listening");
    }
    let open = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Some((stream, _)) = accepted_or_back_off(accepted, &"admin").await else { continue };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            static LOG: Throttled = Throttled::new();
            if let Some(suppressed) = LOG.ready() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    suppressed,
                    "admin connection refused: cap reached"
                );
            }
            crate::limits::count_refusal("admin-max-connections");
            continue; // dropping `stream` closes it
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(crate::experiment::admin_api::answer(&admin, request).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

pub(crate) fn answer(admin: &Admin, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n", "text/plain");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/metrics" => {
            update_backend_gauges(&admin.snapshot.load());
            text(StatusCode::OK, &metrics::render(), "text/plain; version=0.0.4; charset=utf-8")
        }
        "/status" => text(StatusCode::OK, &format!("{:#}\n", status(admin)), "application/json"),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /status\n", "text/plain"),
    }
}

/// Server health and load are read live from the backends when scraped.
fn update_backend_gauges(snapshot: &Snapshot) {
    for backend in snapshot.backends.iter() {
        let queued = backend.queued() as i64;
        metrics::gauge_set("sluice_backend_queued", vec![("backend", backend.name().to_string())], queued);
        for server in backend.servers().iter() {
            let labels = || vec![("backend", backend.name().to_string()), ("server", server.addr.clone())];
            metrics::gauge_set("sluice_backend_server_up", labels(), i64::from(server.is_up()));
            metrics::gauge_set("sluice_backend_server_active", labels(), server.active() as i64);
        }
    }
}

fn status(admin: &Admin) -> serde_json::Value {
    let snapshot = admin.snapshot.load();
    let mut listeners: Vec<_> = snapshot
        .listeners
        .values()
        .map(|plan| {
            json!({
                "name": plan.config.name.as_str(),
                "bind": plan.config.bind.to_string(),
                "sniff": plan.config.sniff.as_str(),
                "route": plan.config.route.as_ref().map(|r| r.as_str()),
                "tls": plan.tls.is_some(),
                "default_backend": plan.config.default_backend.as_ref().map(|b| b.as_str()),
            })
        })
        .collect();
    listeners.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let plugins: Vec<_> = snapshot
        .plugin_versions
        .iter()
        .map(|(name, world, sha256)| json!({ "name": name.as_str(), "world": world, "sha256": sha256 }))
        .collect();
    let mut backends: Vec<_> = snapshot
        .backends
        .iter()
        .map(|backend| {
            let servers: Vec<_> = backend
                .servers()
                .iter()
                .map(|s| {
                    json!({
                        "addr": s.addr,
                        "entry": s.entry,
                        "weight": s.weight,
                        "max_connections": s.max_connections,
                        "up": s.is_up(),
                        "active": s.active(),
                    })
                })
                .collect();
            json!({ "name": backend.name().as_str(), "queued": backend.queued(), "servers": servers })
        })
        .collect();
    backends.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": admin.started.elapsed().as_secs(),
        "listeners": listeners,
        "plugins": plugins,
        "backends": backends,
        "reload": (admin.extra)(),
        "acme": crate::acme::status_json(),
        "experiments": crate::experiment::status_json(&snapshot),
        "tenants": crate::tenant::status_json(&snapshot),
    })
}

pub(crate) fn text(status: StatusCode, body: &str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}
