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
//! Errors become short text responses: 404 (the route plugin's), 405 for
//! CONNECT, 502 (no server accepted), 504 (no response head in time); hyper
//! itself answers 400 (malformed) and 431 (head too large) and closes
//! connections whose head does not arrive within `header-timeout`.

mod forward;
pub mod headers;

use crate::config::Fallback;
use crate::io::PrefixedIo;
use crate::plugin::{ConnFacts, ForwardTo, RouteDecision, Router, SyntheticResponse};
use crate::state::{ListenerPlan, Snapshot};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};
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
}

/// How every HTTP/2 connection with prior knowledge starts.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serve HTTP on `io` (the sniffed head, then the client) until the client
/// is done. Returns hyper's error, if any.
pub async fn serve<S>(io: PrefixedIo<S>, stage: Arc<HttpStage>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &stage.plan.config;
    let handler = stage.clone();
    let service = service_fn(move |request| {
        let stage = handler.clone();
        async move { Ok::<_, Infallible>(handle(&stage, request).await) }
    });
    let head = io.unread_prefix();
    if !head.is_empty() && !H2_PREFACE.starts_with(&head[..head.len().min(H2_PREFACE.len())]) {
        // Certainly HTTP/1: served by hyper's own HTTP/1 connection rather than the
        // auto-detecting one, whose private wrapper would hide our stream type from
        // an upgraded connection. A WebSocket tunnel can then take the client's TCP
        // socket back and splice it (see `forward::tunnel`).
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1.timer(TokioTimer::new()).header_read_timeout(config.header_timeout).max_buf_size(config.max_header_bytes);
        return http1.serve_connection(TokioIo::new(io), service).with_upgrades().await.map_err(|e| e.to_string());
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(config.max_header_bytes);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(config.max_header_bytes as u32);
    builder.serve_connection_with_upgrades(TokioIo::new(io), service).await.map_err(|e| e.to_string())
}

/// What the access log says about one request.
#[derive(Default)]
struct RequestLog {
    route: &'static str,
    backend: Option<String>,
    server: Option<String>,
    detail: Option<String>,
}

async fn handle(stage: &HttpStage, request: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    stage.requests.fetch_add(1, Ordering::Relaxed);
    // The access line's method and path are kept only when it will be written.
    let logged = tracing::enabled!(target: "sluice::access", tracing::Level::INFO)
        .then(|| (request.method().clone(), request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string()));
    let mut log = RequestLog { route: "none", ..RequestLog::default() };
    let response = route(stage, request, &mut log).await;
    let class = usize::from(response.status().as_u16() / 100).clamp(1, 5);
    stage.plan.http_responses[class - 1].fetch_add(1, Ordering::Relaxed);
    let Some((method, path)) = logged else { return response };
    tracing::info!(
        target: "sluice::access",
        method = %method,
        path,
        status = response.status().as_u16(),
        route = log.route,
        backend = log.backend.as_deref(),
        server = log.server.as_deref(),
        duration_ms = started.elapsed().as_millis() as u64,
        detail = log.detail.as_deref(),
        "request"
    );
    response
}

async fn route(stage: &HttpStage, request: Request<Incoming>, log: &mut RequestLog) -> Response<ProxyBody> {
    // ACME HTTP-01 tokens are answered by the host, for pending orders only.
    if let Some(answer) = crate::acme::http01_answer(request.uri().path()) {
        log.route = "acme-http-01";
        return Response::new(Full::new(answer).map_err(|never: Infallible| match never {}).boxed());
    }
    // Per-client request rate (docs/LIMITS.md): 429 with Retry-After.
    if let Err(retry_after) = stage.plan.per_client.check_request(stage.facts.client_addr.ip()) {
        log.detail = Some("per-client request rate exceeded".into());
        return crate::limits::too_many_requests(retry_after);
    }
    if request.method() == Method::CONNECT {
        log.detail = Some("CONNECT is not supported".into());
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported here");
    }
    let route_request = headers::route_request(&request);
    let decision = match stage.router.pick(&stage.facts, &route_request) {
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
                Fallback::Close => return error_response(StatusCode::BAD_GATEWAY, "routing failed"),
            }
        }
    };
    log.route = decision.label();
    match decision {
        RouteDecision::Respond(response) => synthetic_response(response, log),
        RouteDecision::Forward(to) => forward::forward(stage, request, to, log).await,
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
