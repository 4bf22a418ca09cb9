//! One request to a backend over the lean path, with the rules of
//! `http::forward` (docs/HTTP.md): the same header edits, server order,
//! stickiness, PROXY header and failover; the head is written once by hand.
//!
//! A pooled connection is checked before use; if it still fails before any
//! response byte, only a bodiless idempotent request is sent again (on a new
//! connection to the same server, or to another server with
//! `retry-idempotent`). A request whose bytes may have been read is never
//! sent twice otherwise.

use super::deadline::Deadline;
use super::framing::{self, RelayError};
use super::parse::{self, Body, HeadError, ResponseHead};
use super::{Buffered, Sink, pool};
use crate::backend::{ActiveGuard, Backend, BackendError, Server};
use crate::config::HashKey;
use crate::http::forward::{cookie_value, sticky_set_cookie};
use crate::http::headers::{add_forwarded, apply_edits, remove_hop_by_hop};
use crate::http::{HttpStage, ProxyBody, RequestLog, error_response};
use crate::metrics::http::BackendErrorKind;
use crate::plugin::ForwardTo;
use crate::proxy_protocol::{self, ProxiedAddrs};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest response head read from a backend (hyper's client default).
const MAX_RESPONSE_HEAD: usize = 400 * 1024;

/// A response head from a server, its connection and its place on it.
pub struct Answered {
    pub head: ResponseHead,
    pub backend: Buffered<TcpStream>,
    pub server: Arc<Server>,
    pub guard: ActiveGuard,
    /// The connection may go back to the pool once the body is read.
    pub poolable: bool,
    /// A sticky cookie to set on the response.
    pub set_cookie: Option<String>,
    pub backend_ref: Arc<Backend>,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Connect(#[from] BackendError),
    #[error("server {server}: {error}")]
    Exchange { server: String, error: String },
    #[error("server {server}: invalid response: {error}")]
    Invalid { server: String, error: HeadError },
    #[error("{0}")]
    ClientBody(String),
}

/// Forward `request` (its body still in `client`) as `to` says. `Err`: the
/// error response to send instead (logged in `log`).
pub async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
    stage: &HttpStage,
    client: &mut Buffered<S>,
    (mut request, body): (Request<()>, Body),
    to: ForwardTo,
    log: &mut RequestLog,
    deadline: &mut Deadline,
) -> Result<Answered, Response<ProxyBody>> {
    log.backend = Some(to.backend.to_string());
    // A tenant's decision names a backend of its own namespace (checked in `tenant::http::decide`).
    let backend = match &log.tenant {
        Some(tenant) => tenant.backend(&to.backend),
        None => stage.snapshot.backends.get(&to.backend),
    };
    let Some(backend) = backend else {
        log.detail = Some(format!("the route plugin chose an unknown backend `{}`", to.backend));
        return Err(error_response(StatusCode::BAD_GATEWAY, "no such backend"));
    };
    log.backend_metrics = Some(backend.metrics().clone());
    // `http::decide` settled the one Host (a clone shares the parsed head's bytes).
    let host = request.headers().get(header::HOST).cloned();
    let host = host.as_ref().and_then(|value| value.to_str().ok());
    let config = backend.config();
    let headers = request.headers_mut();
    remove_hop_by_hop(headers);
    let refused = apply_edits(headers, &to.remove_headers, &to.set_headers);
    if !refused.is_empty() {
        tracing::warn!(headers = ?refused, "route plugin header edits refused (invalid names or values)");
    }
    add_forwarded(headers, &stage.facts, host, config.forwarded);
    if !headers.contains_key(header::HOST)
        && let Some(value) = host.and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert(header::HOST, value);
    }
    // The lean path writes its own framing header.
    headers.remove(header::CONTENT_LENGTH);
    let path = to.rewrite_path.as_deref().or(request.uri().path_and_query().map(|p| p.as_str())).unwrap_or("/");
    // The request's own target was checked when its head was parsed; only a rewrite is checked here.
    if to.rewrite_path.is_some() {
        match path.parse::<Uri>() {
            Ok(uri) if uri.scheme().is_none() && uri.authority().is_none() => {}
            _ => {
                log.detail = Some(format!("invalid path `{path}`"));
                return Err(error_response(
                    StatusCode::BAD_GATEWAY,
                    "the route plugin rewrote the path to an invalid one",
                ));
            }
        }
    }
    let head = write_head(&request, path, body);
    let headers = request.headers();
    let pinned = config.sticky_cookie.as_ref().and_then(|sticky| cookie_value(headers, &sticky.name));
    let affinity = to.affinity.clone().or_else(|| match &config.hash_key {
        Some(HashKey::ClientIp) => Some(stage.facts.client_addr.ip().to_string()),
        Some(HashKey::Header(name)) => headers.get(name.as_str()).and_then(|v| v.to_str().ok()).map(str::to_string),
        Some(HashKey::Cookie(name)) => cookie_value(headers, name),
        None => None,
    });
    let order = backend.server_order(affinity.as_deref(), pinned.as_deref());
    let keyed = affinity.is_some() || order.first().is_some_and(|s| pinned.as_deref() == Some(s.cookie_id.as_str()));
    let proxy_header = config.proxy_protocol.map(|version| {
        proxy_protocol::encode(
            version,
            ProxiedAddrs { client: stage.facts.client_addr, server: stage.facts.local_addr },
        )
    });
    let attempt = Attempt {
        backend,
        head: &head,
        body,
        replayable: request.method().is_idempotent() && body == Body::None,
        head_request: request.method() == Method::HEAD,
        proxy_header: proxy_header.as_deref(),
    };
    // The head is written: the next request on this worker reuses the map.
    pool::give_back_header_map(std::mem::take(request.headers_mut()));
    let timeout = config.response_timeout;
    let (response, server, guard, connection, poolable, bytes_in) =
        match deadline.within(timeout, attempt.send(client, (&order, keyed))).await {
            Ok(Ok(sent)) => sent,
            Ok(Err(SendError::Connect(e))) if e.is_unavailable() => {
                backend.metrics().error(BackendErrorKind::Unavailable);
                log.detail = Some(e.to_string());
                return Err(error_response(StatusCode::SERVICE_UNAVAILABLE, "no server is available"));
            }
            Ok(Err(SendError::ClientBody(why))) => {
                log.detail = Some(format!("the client's request body failed: {why}"));
                return Err(error_response(StatusCode::BAD_REQUEST, "the request body is malformed or incomplete"));
            }
            Ok(Err(e)) => {
                let kind = match &e {
                    SendError::Connect(_) => BackendErrorKind::Connect,
                    _ => BackendErrorKind::Response,
                };
                backend.metrics().error(kind);
                log.detail = Some(e.to_string());
                return Err(error_response(StatusCode::BAD_GATEWAY, "the backend could not be reached"));
            }
            Err(_) => {
                backend.metrics().error(BackendErrorKind::Timeout);
                log.detail = Some(format!("no response head within {timeout:?}"));
                return Err(error_response(StatusCode::GATEWAY_TIMEOUT, "the backend did not answer in time"));
            }
        };
    stage.plan.http.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
    let set_cookie =
        config.sticky_cookie.as_ref().filter(|_| pinned.as_deref() != Some(server.cookie_id.as_str())).map(|sticky| {
            // First visit, or the pinned server is gone: pin the client to this one.
            sticky_set_cookie(sticky, &server.cookie_id)
        });
    log.server = Some(server.addr.clone());
    Ok(Answered {
        head: response,
        backend: connection,
        server,
        guard,
        poolable: poolable && proxy_header.is_none(),
        set_cookie,
        backend_ref: backend.clone(),
    })
}

/// The request head as the backend gets it.
fn write_head(request: &Request<()>, path: &str, body: Body) -> pool::SpareWrite {
    let mut head = pool::SpareWrite::new();
    head.extend_from_slice(request.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match body {
        Body::Length(length) => {
            head.extend_from_slice(b"content-length: ");
            super::push_decimal(&mut head, length);
            head.extend_from_slice(b"\r\n");
        }
        Body::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Body::None | Body::ToClose => {}
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// What sending one request needs.
struct Attempt<'a> {
    backend: &'a Arc<Backend>,
    head: &'a [u8],
    body: Body,
    replayable: bool,
    head_request: bool,
    proxy_header: Option<&'a [u8]>,
}

/// What a server that answered gives back.
type Sent = (ResponseHead, Arc<Server>, ActiveGuard, Buffered<TcpStream>, bool, u64);

/// How one try on one connection ended.
enum Try {
    Answered(ResponseHead, Buffered<TcpStream>, u64),
    /// Failed before any answer (may be tried again when the request is replayable).
    Failed(String),
    Fatal(SendError),
}

impl Attempt<'_> {
    async fn send<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut Buffered<S>,
        (order, keyed): (&[Arc<Server>], bool),
    ) -> Result<Sent, SendError> {
        let backend = self.backend;
        let config = backend.config();
        let mut candidates = order.to_vec();
        let mut failures: Vec<String> = Vec::new();
        loop {
            let only_first = keyed && failures.is_empty();
            let (at, guard) =
                backend.reserve(&candidates, only_first).await.map_err(|e| backend.unreachable_or(e, &failures))?;
            let server = candidates.remove(at);
            let mut pooled =
                if self.proxy_header.is_none() { pool::take(server.socket, self.replayable) } else { None };
            loop {
                let was_pooled = pooled.is_some();
                let stream = match pooled.take() {
                    Some(stream) => stream,
                    None => match backend.connect_to(&server).await {
                        Ok(stream) => stream,
                        Err(e) => {
                            failures.push(format!("{}: {e}", server.addr));
                            if failures.len() > config.retries as usize {
                                return Err(backend.unreachable(failures).into());
                            }
                            break;
                        }
                    },
                };
                let error = match self.try_on(stream, client).await {
                    Try::Answered(head, connection, bytes_in) => {
                        let poolable = head.reusable;
                        return Ok((head, server, guard, connection, poolable, bytes_in));
                    }
                    Try::Fatal(SendError::Exchange { error, .. }) => {
                        return Err(SendError::Exchange { server: server.addr.clone(), error });
                    }
                    Try::Fatal(SendError::Invalid { error, .. }) => {
                        return Err(SendError::Invalid { server: server.addr.clone(), error });
                    }
                    Try::Fatal(fatal) => return Err(fatal),
                    Try::Failed(error) => error,
                };
                if was_pooled && self.replayable {
                    // The pooled connection died under it: always again, on a new one.
                    tracing::debug!(server = %server.addr, %error, "pooled connection failed; resending the request");
                    continue;
                }
                if self.replayable
                    && config.retry_idempotent
                    && failures.len() < config.retries as usize
                    && !candidates.is_empty()
                {
                    tracing::warn!(server = %server.addr, %error, "request failed before an answer; retrying on another server");
                    failures.push(format!("{}: {error}", server.addr));
                    break;
                }
                return Err(SendError::Exchange { server: server.addr.clone(), error });
            }
            drop(guard);
        }
    }

    /// Write the request on `stream` and read the response head.
    async fn try_on<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: TcpStream, client: &mut Buffered<S>) -> Try {
        let mut connection = Buffered::reuse(stream, pool::buffer());
        let mut sink = Sink::new(Vec::with_capacity(self.head.len() + self.proxy_header.map_or(0, <[u8]>::len)));
        if let Some(header) = self.proxy_header {
            sink.out.extend_from_slice(header);
        }
        sink.out.extend_from_slice(self.head);
        match framing::relay(self.body, client, &mut connection.io, &mut sink).await {
            Ok(()) => {}
            Err(RelayError::Read(why)) => return Try::Fatal(SendError::ClientBody(why)),
            Err(RelayError::Write(e)) if self.body == Body::None => return Try::Failed(e.to_string()),
            Err(RelayError::Write(e)) => {
                return Try::Fatal(SendError::Exchange { server: String::new(), error: e.to_string() });
            }
        }
        loop {
            match parse::response(connection.data(), self.head_request, MAX_RESPONSE_HEAD) {
                // Informational answers (100, 103) are not passed on; the final one follows.
                Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                    connection.consume(head.len);
                }
                Ok(Some(head)) if head.status == 101 => {
                    let error = HeadError::Invalid("a 101 to a request that asked for no upgrade");
                    return Try::Fatal(SendError::Invalid { server: String::new(), error });
                }
                Ok(Some(head)) if head.body == Body::Chunked => {
                    // The first chunk-size line is checked before the head goes on, so
                    // a body malformed from its start is a 502, not a cut-off response.
                    match parse::chunk_line(&connection.data()[head.len..]) {
                        Ok(Some(_)) => return Try::Answered(head, connection, sink.body_bytes),
                        Ok(None) => match connection.fill().await {
                            Ok(n) if n > 0 => {}
                            _ => {
                                let error = HeadError::Invalid("closed before the first chunk");
                                return Try::Fatal(SendError::Invalid { server: String::new(), error });
                            }
                        },
                        Err(why) => {
                            return Try::Fatal(SendError::Invalid {
                                server: String::new(),
                                error: HeadError::Invalid(why),
                            });
                        }
                    }
                }
                Ok(Some(head)) => return Try::Answered(head, connection, sink.body_bytes),
                Ok(None) => match connection.fill().await {
                    Ok(0) if connection.data().is_empty() => return Try::Failed("closed before answering".into()),
                    Ok(0) => {
                        let error = HeadError::Invalid("closed inside the response head");
                        return Try::Fatal(SendError::Invalid { server: String::new(), error });
                    }
                    Ok(_) => {}
                    Err(e) if connection.data().is_empty() => return Try::Failed(e.to_string()),
                    Err(e) => return Try::Fatal(SendError::Exchange { server: String::new(), error: e.to_string() }),
                },
                Err(error) => return Try::Fatal(SendError::Invalid { server: String::new(), error }),
            }
        }
    }
}
