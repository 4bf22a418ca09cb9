//! Forward one request to a backend and stream the response back.
//!
//! The request takes a place on the chosen server (waiting in the backend's
//! queue if every server is at `max-connections`), then reuses an idle
//! HTTP/1.1 connection to it when one is ready (a pooled connection that
//! turns out closed hands the request back untouched, and the next one is
//! tried); otherwise a new connection is made, trying the servers in order.
//! Once request bytes reached a server, only a bodiless idempotent request is
//! sent again, and only to a server that never answered: on a new connection
//! when a pooled one died under it, or to another server when the backend
//! sets `retry-idempotent`. A WebSocket upgrade answered with `101` becomes a
//! byte tunnel with the backend's idle timeout.

use super::client_body;
use super::headers::{self, add_forwarded, apply_edits, remove_hop_by_hop};
use super::{HttpStage, ProxyBody, RequestLog, error_response};
use crate::backend::{ActiveGuard, Backend, BackendError, Server};
use crate::config::{HashKey, StickyCookie};
use crate::metrics::http::{BackendErrorKind, Counted};
use crate::plugin::ForwardTo;
use crate::proxy_protocol::{self, ProxiedAddrs};
use crate::relay::tunnel;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

/// Why no response came from the backend.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Connect(#[from] BackendError),
    #[error("server {server}: {error}")]
    Exchange { server: String, error: hyper::Error },
    #[error("server {server}: sending the PROXY header: {error}")]
    Proxy { server: String, error: std::io::Error },
}

impl SendError {
    /// The `kind` of `sluice_backend_errors_total` it counts as.
    fn kind(&self) -> BackendErrorKind {
        match self {
            SendError::Connect(e) if e.is_unavailable() => BackendErrorKind::Unavailable,
            SendError::Connect(_) | SendError::Proxy { .. } => BackendErrorKind::Connect,
            SendError::Exchange { .. } => BackendErrorKind::Response,
        }
    }
}

pub(super) async fn forward(
    stage: &HttpStage,
    mut request: Request<Incoming>,
    to: ForwardTo,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    log.backend = Some(to.backend.to_string());
    // A tenant's decision names a backend of its own namespace (checked in `tenant::http::decide`).
    let backend = match &log.tenant {
        Some(tenant) => tenant.backend(&to.backend),
        None => stage.snapshot.backends.get(&to.backend),
    };
    let Some(backend) = backend else {
        log.detail = Some(format!("the route plugin chose an unknown backend `{}`", to.backend));
        return error_response(StatusCode::BAD_GATEWAY, "no such backend");
    };
    log.backend_metrics = Some(backend.metrics().clone());
    let websocket = headers::is_websocket_upgrade(&request);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
    let host = headers::authority(&request);

    let (mut parts, body) = request.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    let refused = apply_edits(&mut parts.headers, &to.remove_headers, &to.set_headers);
    if !refused.is_empty() {
        tracing::warn!(headers = ?refused, "route plugin header edits refused (invalid names or values)");
    }
    add_forwarded(&mut parts.headers, &stage.facts, host.as_deref(), backend.config().forwarded);
    if !parts.headers.contains_key(header::HOST)
        && let Some(value) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
    {
        parts.headers.insert(header::HOST, value);
    }
    let path = to.rewrite_path.as_deref().or(parts.uri.path_and_query().map(|p| p.as_str())).unwrap_or("/");
    parts.uri = match path.parse::<Uri>() {
        Ok(uri) if uri.scheme().is_none() && uri.authority().is_none() => uri,
        _ => {
            log.detail = Some(format!("invalid path `{path}`"));
            return error_response(StatusCode::BAD_GATEWAY, "the route plugin rewrote the path to an invalid one");
        }
    };
    parts.version = http::Version::HTTP_11;
    if websocket {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let config = backend.config();
    // Stickiness: the cookie sluice set names the server; else an affinity key
    // from the route plugin, else from the backend's own `hash-key`.
    let pinned = config.sticky_cookie.as_ref().and_then(|sticky| cookie_value(&parts.headers, &sticky.name));
    let affinity = to.affinity.clone().or_else(|| match &config.hash_key {
        Some(HashKey::ClientIp) => Some(stage.facts.client_addr.ip().to_string()),
        Some(HashKey::Header(name)) => {
            parts.headers.get(name.as_str()).and_then(|v| v.to_str().ok()).map(str::to_string)
        }
        Some(HashKey::Cookie(name)) => cookie_value(&parts.headers, name),
        None => None,
    });
    let order = backend.server_order(affinity.as_deref(), pinned.as_deref());
    // The client's own server (by cookie or key) is waited for when full, not swapped.
    let keyed = affinity.is_some() || order.first().is_some_and(|s| pinned.as_deref() == Some(s.cookie_id.as_str()));
    let (body, body_failed) = client_body::watch(body);
    let request = Request::from_parts(parts, Counted::new(body, &stage.plan.http.bytes_in).boxed());
    let proxy_header = config.proxy_protocol.map(|version| {
        proxy_protocol::encode(
            version,
            ProxiedAddrs { client: stage.facts.client_addr, server: stage.facts.local_addr },
        )
    });

    let timeout = config.response_timeout;
    let exchange = send(backend, (&order, keyed), request, websocket, proxy_header);
    let Answered { mut response, server, guard } = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answered)) => answered,
        Ok(Err(SendError::Connect(e))) if e.is_unavailable() => {
            backend.metrics().error(BackendErrorKind::Unavailable);
            log.detail = Some(e.to_string());
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "no server is available");
        }
        Ok(Err(e)) if body_failed.get() => {
            log.detail = Some(format!("the client's request body failed: {e}"));
            return error_response(StatusCode::BAD_REQUEST, "the request body is malformed or incomplete");
        }
        Ok(Err(e)) => {
            backend.metrics().error(e.kind());
            log.detail = Some(e.to_string());
            return error_response(StatusCode::BAD_GATEWAY, "the backend could not be reached");
        }
        Err(_) => {
            backend.metrics().error(BackendErrorKind::Timeout);
            log.detail = Some(format!("no response head within {timeout:?}"));
            return error_response(StatusCode::GATEWAY_TIMEOUT, "the backend did not answer in time");
        }
    };
    if let Some(sticky) = &config.sticky_cookie
        && pinned.as_deref() != Some(server.cookie_id.as_str())
    {
        // First visit, or the pinned server is gone: pin the client to this one.
        let cookie = sticky_set_cookie(sticky, &server.cookie_id);
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    log.server = Some(server.addr.clone());

    if let Some(client_upgrade) = client_upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let backend_upgrade = hyper::upgrade::on(&mut response);
        let idle = backend.idle_timeout();
        let close_all = stage.close_all.clone();
        let plan = stage.plan.clone();
        let tunnel = async move {
            // The tunnel counts as a connection on its server while it is open.
            let _guard = guard;
            let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
                (Ok(client), Ok(backend)) => (client, backend),
                (client, backend) => {
                    let error = client.err().or(backend.err()).map(|e| e.to_string());
                    tracing::warn!(error, "WebSocket upgrade did not complete");
                    return;
                }
            };
            tokio::select! {
                stats = tunnel(client, backend, idle) => {
                    plan.http.tunnel(stats.client_to_backend, stats.backend_to_client);
                    tracing::info!(
                        target: "sluice::access",
                        bytes_in = stats.client_to_backend,
                        bytes_out = stats.backend_to_client,
                        outcome = stats.end.label(),
                        "websocket closed"
                    )
                }
                () = close_all.cancelled() => {}
            }
        };
        // The tunnel outlives the request: keep the connection's span on its log lines.
        stage.tasks.spawn(tunnel.instrument(tracing::Span::current()));
        return response.map(|body| body.boxed());
    }
    remove_hop_by_hop(response.headers_mut());
    // The request counts as active on its server until its response body is done.
    let body_errors = backend.metrics().body_errors();
    let bytes_out = &stage.plan.http.bytes_out;
    response.map(|body| Counted::new(GuardedBody { body, _guard: guard }, bytes_out).with_errors(body_errors).boxed())
}

/// A response body that keeps its server counted as active until it ends.
struct GuardedBody {
    body: Incoming,
    _guard: ActiveGuard,
}

impl hyper::body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The value of cookie `name` in the request's Cookie headers.
/// The `Set-Cookie` value that pins a client to the server `cookie_id`.
pub(super) fn sticky_set_cookie(sticky: &StickyCookie, cookie_id: &str) -> String {
    let mut cookie = format!("{}={}; Path={}", sticky.name, cookie_id, sticky.path);
    if sticky.http_only {
        cookie.push_str("; HttpOnly");
    }
    if sticky.secure {
        cookie.push_str("; Secure");
    }
    if let Some(same_site) = &sticky.same_site {
        cookie.push_str("; SameSite=");
        cookie.push_str(same_site);
    }
    cookie
}

pub(super) fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

/// A response, the server that sent it, and its place on that server.
struct Answered {
    response: Response<Incoming>,
    server: Arc<Server>,
    guard: ActiveGuard,
}

/// Send to the servers of `order` in turn: on an idle pooled connection to
/// the server when one is ready, else on a new connection. With a PROXY
/// header, connections carry one client's address and are never pooled.
async fn send(
    backend: &Backend,
    (order, keyed): (&[Arc<Server>], bool),
    request: Request<ProxyBody>,
    upgrade: bool,
    proxy_header: Option<Vec<u8>>,
) -> Result<Answered, SendError> {
    let config = backend.config();
    let pool = !upgrade && proxy_header.is_none();
    // A request with no body and an idempotent method can be sent again.
    let replay = Replay::of(&request);
    let mut request = Some(request);
    let mut candidates = order.to_vec();
    // Servers tried and why they failed, for the error and the retry budget.
    let mut failures: Vec<String> = Vec::new();
    loop {
        let only_first = keyed && failures.is_empty();
        let (at, guard) =
            backend.reserve(&candidates, only_first).await.map_err(|e| backend.unreachable_or(e, &failures))?;
        let server = candidates.remove(at);
        let mut outgoing = request.take().expect("a request to send");
        if pool {
            while let Some(mut sender) = backend.take_idle_http(&server.addr) {
                match sender.try_send_request(outgoing).await {
                    Ok(response) => {
                        backend.put_idle_http(&server.addr, sender);
                        return Ok(Answered { response, server, guard });
                    }
                    Err(mut e) => match (e.take_message(), &replay) {
                        // Not sent: the pooled connection was closing. Try another.
                        (Some(unsent), _) => outgoing = unsent,
                        // Sent on a connection that died under it (the server closed
                        // it, or was killed): a replayable request goes again on a
                        // new connection. Always on: the server never answered.
                        (None, Some(replay)) => {
                            tracing::debug!(server = %server.addr, error = %e.into_error(), "pooled connection failed; resending the request");
                            outgoing = replay.request();
                            break;
                        }
                        (None, None) => {
                            return Err(SendError::Exchange { server: server.addr.clone(), error: e.into_error() });
                        }
                    },
                }
            }
        }
        let mut stream = match backend.connect_to(&server).await {
            Ok(stream) => stream,
            Err(e) => {
                failures.push(format!("{}: {e}", server.addr));
                if failures.len() > config.retries as usize {
                    return Err(backend.unreachable(failures).into());
                }
                request = Some(outgoing);
                continue;
            }
        };
        if let Some(header) = &proxy_header {
            stream.write_all(header).await.map_err(|error| SendError::Proxy { server: server.addr.clone(), error })?;
        }
        let exchange_error = |error| SendError::Exchange { server: server.addr.clone(), error };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(exchange_error)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "backend connection ended");
            }
        });
        match sender.try_send_request(outgoing).await {
            Ok(response) => {
                if pool {
                    backend.put_idle_http(&server.addr, sender);
                }
                return Ok(Answered { response, server, guard });
            }
            Err(mut e) => {
                // Unsent requests can always go elsewhere; sent ones only when
                // the backend opted in and the request is replayable.
                let again = e
                    .take_message()
                    .or_else(|| replay.as_ref().filter(|_| config.retry_idempotent).map(Replay::request));
                let error = e.into_error();
                match again {
                    Some(again) if failures.len() < config.retries as usize && !candidates.is_empty() => {
                        tracing::warn!(server = %server.addr, %error, "request failed before an answer; retrying on another server");
                        failures.push(format!("{}: {error}", server.addr));
                        request = Some(again);
                    }
                    _ => return Err(SendError::Exchange { server: server.addr.clone(), error }),
                }
            }
        }
    }
}

/// What it takes to send a bodiless idempotent request again.
struct Replay {
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
}

impl Replay {
    fn of(request: &Request<ProxyBody>) -> Option<Self> {
        let replayable = request.method().is_idempotent() && hyper::body::Body::is_end_stream(request.body());
        replayable.then(|| Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        })
    }

    fn request(&self) -> Request<ProxyBody> {
        let mut again = Request::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed());
        *again.method_mut() = self.method.clone();
        *again.uri_mut() = self.uri.clone();
        *again.headers_mut() = self.headers.clone();
        again
    }
}
