//! The HTTP stage: serve a connection the sniff plugin classified as HTTP.
//!
//! hyper serves HTTP/1.0, HTTP/1.1 (keep-alive, pipelining) and HTTP/2 with
//! prior knowledge on the same connection type. Every request is routed on
//! its own by the listener's route plugin, so one keep-alive connection can
//! reach several backends:
//!
//! ```text
//! request head ─► route plugin ─┬─► respond (synthetic response)
//!                               ├─► forward ─► strip hop-by-hop, edits, X-Forwarded-*
//!                               │             ─► pooled HTTP/1.1 connection to a server
//!                               │             ─► response streamed back (101 ⇒ byte tunnel)
//!                               └─► plugin failed ─► the listener's fallback backend, or 502
//! ```
//!
//! Bodies stream both ways with backpressure; nothing is buffered whole.
//! Errors become short text responses: 400 (a confusing host, see
//! `authority`; a malformed request body), 404 (the route plugin's), 405 for
//! CONNECT, 502 (no server accepted), 504 (no response head in time); hyper
//! itself answers 400 (malformed head) and 431 (head too large). Connections
//! whose next request head does not arrive within `header-timeout` are
//! closed, over HTTP/1 and HTTP/2 alike (see `serve`).

mod authority;
mod client_body;
mod forward;
mod h1;
pub mod headers;
mod idle;
mod serve;

pub use serve::serve;

use crate::access_log::{RequestHead, Served, request_id};
use crate::config::Fallback;
use crate::metrics::http::BackendMetrics;
use crate::plugin::{ConnFacts, ForwardTo, HeaderInterest, RouteDecision, Router, SyntheticResponse};
use crate::state::{ListenerPlan, Snapshot};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The body type of everything the proxy sends: streamed or synthetic.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What one HTTP connection needs to serve its requests.
pub struct HttpStage {
    pub facts: ConnFacts,
    pub plan: Arc<ListenerPlan>,
    pub snapshot: Arc<Snapshot>,
    pub router: Arc<dyn Router>,
    /// Upgraded (WebSocket) tunnels are tracked with the connections, so a
    /// shutdown drains them too.
    pub tasks: TaskTracker,
    pub close_all: CancellationToken,
    pub requests: AtomicU64,
    /// The tenants this connection counts against (their `max-connections` quota).
    pub tenant_conn: crate::tenant::quota::ConnSlot,
}

/// What the access log says about one request.
#[derive(Default)]
struct RequestLog {
    route: &'static str,
    backend: Option<String>,
    server: Option<String>,
    detail: Option<String>,
    /// The chosen backend's series, counted once the status is known.
    backend_metrics: Option<Arc<BackendMetrics>>,
    /// Which version of an experiment decided (`Router::attribution`).
    experiment: Option<bool>,
    /// The tenant that owns the request's name, on a tenant listener.
    tenant: Option<Arc<crate::tenant::Tenant>>,
}

impl RequestLog {
    /// Tell an experiment the status its decision led to.
    fn responded(&self, router: &dyn Router, status: StatusCode) {
        if let Some(candidate) = self.experiment {
            router.responded(candidate, status.as_u16());
        }
    }
}

/// Route and answer one request, and log it.
async fn handle(stage: &HttpStage, mut request: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    stage.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = request_id::ensure(request.headers_mut());
    let access_log = &stage.snapshot.access_log;
    // The access line's fields are kept only when it will be written.
    let head = access_log.enabled().then(|| RequestHead::capture(&request));
    let mut log = RequestLog { route: "none", ..RequestLog::default() };
    let mut response = route(stage, request, &mut log).await;
    let duration = started.elapsed();
    stage.plan.http.response(response.status(), duration);
    log.responded(stage.router.as_ref(), response.status());
    if let Some(backend) = &log.backend_metrics {
        backend.request(response.status());
    }
    if stage.plan.tenants.is_some() {
        crate::tenant::http::count(log.tenant.as_deref(), response.status(), duration);
    }
    response.headers_mut().insert(request_id::HEADER, request_id.clone());
    let Some(head) = head else { return response };
    let served = Served {
        status: response.status().as_u16(),
        body_bytes: hyper::body::Body::size_hint(response.body()).exact(),
        duration,
        route: log.route,
        backend: log.backend.as_deref(),
        server: log.server.as_deref(),
        detail: log.detail.as_deref(),
        tenant: log.tenant.as_ref().map(|tenant| tenant.name()),
    };
    access_log.request(&head, &stage.facts, &request_id, served);
    response
}

async fn route(stage: &HttpStage, mut request: Request<Incoming>, log: &mut RequestLog) -> Response<ProxyBody> {
    match decide(stage, &mut request, log) {
        Ok(to) => forward::forward(stage, request, to, log).await,
        Err(response) => response,
    }
}

/// Everything before the backend exchange, shared by hyper's path and the
/// lean HTTP/1 path (`h1`): host answers, limits, the host rules and the
/// route plugin's decision. `Err` is the response to send instead.
#[allow(clippy::result_large_err, reason = "the Err is the response itself, built once and sent at once")]
fn decide<B>(
    stage: &HttpStage,
    request: &mut Request<B>,
    log: &mut RequestLog,
) -> Result<ForwardTo, Response<ProxyBody>> {
    // ACME HTTP-01 tokens are answered by the host, for pending orders only.
    if let Some(answer) = crate::acme::http01_answer(request.uri().path()) {
        log.route = "acme-http-01";
        return Err(Response::new(Full::new(answer).map_err(|never: Infallible| match never {}).boxed()));
    }
    // Per-client request rate (docs/LIMITS.md): 429 with Retry-After.
    if let Err(retry_after) = stage.plan.per_client.check_request(stage.facts.client_addr.ip()) {
        log.detail = Some("per-client request rate exceeded".into());
        return Err(crate::limits::too_many_requests(retry_after));
    }
    if request.method() == Method::CONNECT {
        log.detail = Some("CONNECT is not supported".into());
        return Err(error_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported here"));
    }
    // The host the plugin routes on is the Host the backend gets, or a 400.
    if let Err(e) = authority::settle(request) {
        log.detail = Some(e.to_string());
        return Err(error_response(StatusCode::BAD_REQUEST, &e.to_string()));
    }
    // Tenants (docs/TENANTS.md): the owner of the name routes, in its own namespace, within its quotas.
    if let Some(set) = &stage.plan.tenants {
        match crate::tenant::http::dispatch(stage, set, request) {
            Ok(tenant) => log.tenant = tenant,
            Err(refused) => {
                (log.detail, log.tenant) = (Some(refused.detail), refused.tenant);
                return Err(refused.response);
            }
        }
    }
    // A tenant's plugin filters what it reads itself; an experiment's manifest asks for every header.
    let interest = match &log.tenant {
        Some(_) => &HeaderInterest::All,
        None => &stage.router.manifest().headers,
    };
    let route_request = headers::route_request(request, interest);
    let picked = match &log.tenant {
        Some(tenant) => match crate::tenant::http::decide(tenant, &stage.facts, &route_request) {
            Ok(decision) => Ok(decision),
            Err(detail) => {
                log.detail = Some(detail);
                return Err(error_response(StatusCode::BAD_GATEWAY, "routing failed for this site"));
            }
        },
        None => stage.router.pick(&stage.facts, &route_request),
    };
    let decision = match picked {
        Ok(decision) => decision,
        Err(e) => {
            tracing::warn!(plugin = %stage.router.name(), reason = e.label(), "route plugin failed: {e}");
            log.detail = Some(format!("route plugin failed: {e}"));
            match &stage.plan.config.fallback {
                Fallback::Backend(backend) => RouteDecision::Forward(ForwardTo {
                    backend: backend.clone(),
                    affinity: None,
                    set_headers: Vec::new(),
                    remove_headers: Vec::new(),
                    rewrite_path: None,
                }),
                Fallback::Close => return Err(error_response(StatusCode::BAD_GATEWAY, "routing failed")),
            }
        }
    };
    log.route = decision.label();
    log.experiment = stage.router.attribution();
    match decision {
        RouteDecision::Respond(response) => Err(synthetic_response(response, log)),
        RouteDecision::Forward(to) => Ok(to),
    }
}

/// The route plugin's own response.
fn synthetic_response(response: SyntheticResponse, log: &mut RequestLog) -> Response<ProxyBody> {
    let Ok(status) = StatusCode::from_u16(response.status) else {
        log.detail = Some(format!("route plugin answered with invalid status {}", response.status));
        return error_response(StatusCode::BAD_GATEWAY, "the route plugin gave an invalid status");
    };
    let mut built = Response::new(full(response.body));
    *built.status_mut() = status;
    let refused = headers::apply_edits(built.headers_mut(), &[], &response.headers);
    if !refused.is_empty() {
        log.detail = Some(format!("route plugin response headers refused: {}", refused.join(", ")));
    }
    built
}

/// A short text response for an error the proxy answers itself.
pub fn error_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(format!("sluice: {message}\n").into_bytes()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn full(body: Vec<u8>) -> ProxyBody {
    Full::new(Bytes::from(body)).map_err(|never: Infallible| match never {}).boxed()
}
