//! Forward one request to a backend and stream the response back.
//!
//! The request reuses an idle HTTP/1.1 connection to the chosen server when
//! one is ready (a pooled connection that turns out closed hands the request
//! back untouched, and the next one is tried); otherwise a new connection is
//! made, trying the servers in order. Nothing is retried once request bytes
//! reached a server. A WebSocket upgrade answered with `101` becomes a byte
//! tunnel with the backend's idle timeout.

use super::headers::{self, add_forwarded, apply_edits, remove_hop_by_hop};
use super::{HttpStage, ProxyBody, RequestLog, error_response};
use crate::backend::{Backend, BackendError};
use crate::plugin::ForwardTo;
use crate::relay::relay;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// Why no response came from the backend.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Connect(#[from] BackendError),
    #[error("server {server}: {error}")]
    Exchange { server: String, error: hyper::Error },
}

pub(super) async fn forward(
    stage: &HttpStage,
    mut request: Request<Incoming>,
    to: ForwardTo,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    log.backend = Some(to.backend.to_string());
    let Some(backend) = stage.snapshot.backends.get(&to.backend) else {
        log.detail = Some(format!("the route plugin chose an unknown backend `{}`", to.backend));
        return error_response(StatusCode::BAD_GATEWAY, "no such backend");
    };
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
    let request = Request::from_parts(parts, body.boxed());

    let order = backend.server_order(to.affinity.as_deref());
    let timeout = backend.config().response_timeout;
    let (mut response, server) = match tokio::time::timeout(timeout, send(backend, &order, request, websocket)).await {
        Ok(Ok(answered)) => answered,
        Ok(Err(e)) => {
            log.detail = Some(e.to_string());
            return error_response(StatusCode::BAD_GATEWAY, "the backend could not be reached");
        }
        Err(_) => {
            log.detail = Some(format!("no response head within {timeout:?}"));
            return error_response(StatusCode::GATEWAY_TIMEOUT, "the backend did not answer in time");
        }
    };
    log.server = Some(server);

    if let Some(client_upgrade) = client_upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let backend_upgrade = hyper::upgrade::on(&mut response);
        let idle = backend.idle_timeout();
        let close_all = stage.close_all.clone();
        stage.tasks.spawn(async move {
            let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
                (Ok(client), Ok(backend)) => (client, backend),
                (client, backend) => {
                    let error = client.err().or(backend.err()).map(|e| e.to_string());
                    tracing::warn!(error, "WebSocket upgrade did not complete");
                    return;
                }
            };
            tokio::select! {
                stats = relay(TokioIo::new(client), TokioIo::new(backend), idle) => tracing::info!(
                    target: "sluice::access",
                    bytes_in = stats.client_to_backend,
                    bytes_out = stats.backend_to_client,
                    outcome = stats.end.label(),
                    "websocket closed"
                ),
                () = close_all.cancelled() => {}
            }
        });
        return response.map(|body| body.boxed());
    }
    remove_hop_by_hop(response.headers_mut());
    response.map(|body| body.boxed())
}

/// Send on a pooled connection to the preferred server, or on a new one.
async fn send(
    backend: &Backend,
    order: &[&str],
    mut request: Request<ProxyBody>,
    upgrade: bool,
) -> Result<(Response<Incoming>, String), SendError> {
    if let Some(&preferred) = order.first() {
        while let Some(mut sender) = backend.take_idle_http(preferred) {
            match sender.try_send_request(request).await {
                Ok(response) => {
                    if !upgrade {
                        backend.put_idle_http(preferred, sender);
                    }
                    return Ok((response, preferred.to_string()));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: the pooled connection was closing. Try another.
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Exchange { server: preferred.to_string(), error: e.into_error() }),
                },
            }
        }
    }
    let conn = backend.connect_in_order(order).await?;
    let server = conn.server;
    let exchange_error = |error| SendError::Exchange { server: server.clone(), error };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(conn.stream)).await.map_err(exchange_error)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "backend connection ended");
        }
    });
    let response = sender.send_request(request).await.map_err(exchange_error)?;
    if !upgrade {
        backend.put_idle_http(&server, sender);
    }
    Ok((response, server))
}
