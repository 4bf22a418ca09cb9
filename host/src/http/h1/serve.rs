//! The lean path's connection loop: one request at a time (pipelined ones
//! wait in the buffer, so answers go out in order), each head within
//! `header-timeout`, each request logged and counted as on hyper's path.

use super::deadline::Deadline;
use super::exchange::{self, Answered};
use super::framing::{self, RelayError};
use super::parse::{self, Body, HeadError, RequestHead};
use super::{Buffered, Sink, pool};
use crate::access_log::{RequestHead as AccessHead, Served as AccessServed, request_id};
use crate::http::{HttpStage, RequestLog, decide};
use crate::io::PrefixedIo;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::BodyExt;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How a connection left the lean path.
pub enum Served<S> {
    /// Finished: hyper's error text, as its path would give it.
    Done(Result<(), String>),
    /// A request for hyper's path, unread, with the stream.
    Handover(PrefixedIo<S>),
}

/// Serve requests on `io` until the client is done or sends one for hyper.
pub async fn serve<S>(io: PrefixedIo<S>, stage: &HttpStage) -> Served<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = &stage.plan.config;
    let (prefix, stream) = io.into_parts();
    let mut client = Buffered::new(stream, prefix);
    let mut deadlines = Deadlines { head: Deadline::new(), response: Deadline::new() };
    loop {
        // Waiting for the next request holds only small buffers (issue 19):
        // the read buffer, shrunk if it grew; the write buffer is the thread's.
        client.release();
        let next = next_request(&mut client, config.max_header_bytes);
        let head = match deadlines.head.within(config.header_timeout, next).await {
            Err(_) => return Served::Done(Err("read header from client timeout".into())),
            Ok(Ok(Some(head))) => head,
            Ok(Ok(None)) => return Served::Done(Ok(())),
            Ok(Err(Refused::Head(HeadError::Unusual))) => {
                let (unread, stream) = client.into_parts();
                return Served::Handover(PrefixedIo::new(unread, stream));
            }
            Ok(Err(Refused::Head(HeadError::TooLarge))) => {
                refuse(
                    client,
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
                return Served::Done(Err("message head is too large".into()));
            }
            Ok(Err(Refused::Head(HeadError::Invalid(why)))) => {
                refuse(client, b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                return Served::Done(Err(why.to_string()));
            }
            Ok(Err(Refused::Io(e))) => return Served::Done(Err(e)),
        };
        let mut out = pool::write_buffer();
        let served = request(stage, &mut client, head, &mut out, &mut deadlines.response).await;
        pool::give_back_write_buffer(out);
        match served {
            Ok(true) => {}
            Ok(false) => {
                let _ = client.io.shutdown().await;
                return Served::Done(Ok(()));
            }
            Err(e) => return Served::Done(Err(e)),
        }
    }
}

/// Answer a head that cannot be served and close: the answer first, then
/// what the client still sends is read and dropped for a moment, so the
/// close does not reset the connection before the client reads the answer.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut client: Buffered<S>, answer: &[u8]) {
    if client.io.write_all(answer).await.is_err() || client.io.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut left: usize = 1 << 20;
        while left > 0 {
            client.consume(client.data().len());
            match client.fill().await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
}

/// The connection's two timers, each reset per request (see [`Deadline`]).
struct Deadlines {
    head: Deadline,
    response: Deadline,
}

enum Refused {
    Head(HeadError),
    Io(String),
}

/// The next request head, consumed from `client`; `None` when the client
/// closed between requests. A chunked body's first size line is checked too.
async fn next_request<S: AsyncRead + Unpin>(
    client: &mut Buffered<S>,
    max: usize,
) -> Result<Option<RequestHead>, Refused> {
    let head = loop {
        if let Some(head) = parse::request(client.data(), max).map_err(Refused::Head)? {
            break head;
        }
        match client.fill().await {
            Ok(0) if client.data().is_empty() => return Ok(None),
            Ok(0) => return Err(Refused::Io("connection closed before message completed".into())),
            Ok(_) => {}
            Err(e) => return Err(Refused::Io(e.to_string())),
        }
    };
    client.consume(head.len);
    if head.body == Body::Chunked
        && let Err(e) = framing::check_first_chunk(client).await
    {
        return Err(Refused::Head(HeadError::Invalid(match e {
            RelayError::Read(_) => "a malformed chunked body",
            RelayError::Write(_) => "a chunked body",
        })));
    }
    Ok(Some(head))
}

/// Serve one request; `Ok(false)` when the connection must close after it.
async fn request<S>(
    stage: &HttpStage,
    client: &mut Buffered<S>,
    head: RequestHead,
    out: &mut Vec<u8>,
    response_deadline: &mut Deadline,
) -> Result<bool, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    stage.requests.fetch_add(1, Ordering::Relaxed);
    let RequestHead { mut request, body, close, .. } = head;
    let http10 = request.version() == Version::HTTP_10;
    let request_id = request_id::ensure(request.headers_mut());
    let access_log = &stage.snapshot.access_log;
    let access = access_log.enabled().then(|| AccessHead::capture(&request));
    let mut log = RequestLog { route: "none", ..RequestLog::default() };
    let answered = match decide(stage, &mut request, &mut log) {
        Ok(to) => exchange::forward(stage, client, (request, body), to, &mut log, response_deadline).await,
        Err(response) => Err(response),
    };
    let duration = started.elapsed();
    let answered = match answered {
        Ok(answered) => answered,
        Err(mut response) => {
            // The body may be unread, or read in part: the connection cannot go on.
            let keep = !close && body == Body::None;
            stage.plan.http.response(response.status(), duration);
            log.responded(stage.router.as_ref(), response.status());
            if stage.plan.tenants.is_some() {
                crate::tenant::http::count(log.tenant.as_deref(), response.status(), duration);
            }
            if let Some(backend) = &log.backend_metrics {
                backend.request(response.status());
            }
            response.headers_mut().insert(request_id::HEADER, request_id.clone());
            let (parts, full) = response.into_parts();
            let bytes = full.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            if let Some(access) = &access {
                let served = served(parts.status.as_u16(), Some(bytes.len() as u64), duration, &log);
                access_log.request(access, &stage.facts, &request_id, served);
            }
            synthetic_head(out, &Response::from_parts(parts, ()), bytes.len(), Reply { keep, http10 });
            out.extend_from_slice(&bytes);
            client.io.write_all(out).await.map_err(|e| e.to_string())?;
            out.clear();
            return Ok(keep);
        }
    };
    let Answered { head, mut backend, server, guard, poolable, set_cookie, backend_ref } = answered;
    let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    stage.plan.http.response(status, duration);
    log.responded(stage.router.as_ref(), status);
    if stage.plan.tenants.is_some() {
        crate::tenant::http::count(log.tenant.as_deref(), status, duration);
    }
    backend_ref.metrics().request(status);
    if let Some(access) = &access {
        let bytes = match head.body {
            Body::Length(n) => Some(n),
            Body::None => Some(0),
            _ => None,
        };
        access_log.request(access, &stage.facts, &request_id, served(head.status, bytes, duration, &log));
    }
    // An HTTP/1.0 client cannot read chunks: a body of unknown length reaches it up to the close.
    let plain = http10 && matches!(head.body, Body::Chunked | Body::ToClose);
    let reply = Reply { keep: !close && !plain, http10 };
    response_head(out, &backend.data()[..head.len], head.body, (set_cookie.as_deref(), &request_id), reply);
    backend.consume(head.len);
    let mut sink = Sink::new(std::mem::take(out));
    sink.plain = plain;
    let relayed = framing::relay(head.body, &mut backend, &mut client.io, &mut sink).await;
    stage.plan.http.bytes_out.fetch_add(sink.body_bytes, Ordering::Relaxed);
    *out = sink.out;
    out.clear();
    drop(guard);
    match relayed {
        Ok(()) => {}
        Err(RelayError::Read(why)) => {
            backend_ref.metrics().body_errors().fetch_add(1, Ordering::Relaxed);
            return Err(format!("server {}: the response body broke off: {why}", server.addr));
        }
        Err(RelayError::Write(e)) => return Err(e.to_string()),
    }
    match backend.into_empty() {
        Ok((stream, buffer)) => {
            if poolable {
                pool::put(server.socket, stream);
            }
            pool::give_back(buffer);
        }
        // Bytes after the response: the connection cannot be trusted with another request.
        Err((_, buffer)) => pool::give_back(buffer),
    }
    Ok(reply.keep)
}

/// How the client's connection is answered.
#[derive(Clone, Copy)]
struct Reply {
    /// The connection stays open for another request.
    keep: bool,
    /// The client speaks HTTP/1.0: the answer says so (as hyper's path does),
    /// and says `keep-alive` when it stays open.
    http10: bool,
}

impl Reply {
    fn status_line(self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    }

    fn connection(self, out: &mut Vec<u8>) {
        match (self.keep, self.http10) {
            (false, _) => out.extend_from_slice(b"connection: close\r\n"),
            (true, true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
            (true, false) => {}
        }
    }
}

fn served<'a>(
    status: u16,
    body_bytes: Option<u64>,
    duration: std::time::Duration,
    log: &'a RequestLog,
) -> AccessServed<'a> {
    AccessServed {
        status,
        body_bytes,
        duration,
        route: log.route,
        backend: log.backend.as_deref(),
        server: log.server.as_deref(),
        detail: log.detail.as_deref(),
        tenant: log.tenant.as_ref().map(|tenant| tenant.name()),
    }
}

/// The head of a response the proxy made itself.
fn synthetic_head(out: &mut Vec<u8>, response: &Response<()>, length: usize, reply: Reply) {
    let status = response.status();
    reply.status_line(out);
    out.extend_from_slice(format!("{} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or("")).as_bytes());
    for (name, value) in response.headers() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    reply.connection(out);
    out.extend_from_slice(b"\r\n");
}

/// The backend's response head as the client gets it: hop-by-hop fields
/// (and those `Connection` names) removed, the sticky cookie and request id
/// added, framing for the client's connection.
fn response_head(out: &mut Vec<u8>, raw: &[u8], body: Body, (cookie, id): (Option<&str>, &HeaderValue), reply: Reply) {
    let mut slots = parse::field_slots();
    let mut parsed = httparse::Response::new(&mut []);
    // Parsed once already: it cannot fail now.
    let _ = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, raw, &mut slots);
    let status = parsed.code.unwrap_or(502);
    reply.status_line(out);
    super::push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(parsed.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // The names `Connection` lists: a few kept on the stack, past that looked up in place.
    let mut listed: [&[u8]; 8] = [&[]; 8];
    let (mut count, mut more) = (0, false);
    for field in parsed.headers.iter().filter(|f| f.name.eq_ignore_ascii_case("connection")) {
        for token in parse::tokens(field.value) {
            match listed.get_mut(count) {
                Some(slot) => (*slot, count) = (token, count + 1),
                None => more = true,
            }
        }
    }
    let named = |name: &[u8]| {
        listed[..count].iter().any(|n| name.eq_ignore_ascii_case(n))
            || more
                && parsed
                    .headers
                    .iter()
                    .filter(|f| f.name.eq_ignore_ascii_case("connection"))
                    .flat_map(|f| parse::tokens(f.value))
                    .any(|n| name.eq_ignore_ascii_case(n))
    };
    for f in parsed.headers.iter() {
        let name = f.name.as_bytes();
        let skip = is_hop_by_hop(name)
            || named(name)
            || name.eq_ignore_ascii_case(b"x-request-id")
            || (body != Body::None && name.eq_ignore_ascii_case(b"content-length"));
        if !skip {
            out.extend(name.iter().map(u8::to_ascii_lowercase));
            out.extend_from_slice(b": ");
            out.extend_from_slice(f.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    if let Some(cookie) = cookie {
        field(out, b"set-cookie", cookie.as_bytes());
    }
    field(out, request_id::HEADER.as_str().as_bytes(), id.as_bytes());
    match body {
        Body::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            super::push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        // HTTP/1.0: no length, the close ends the body.
        Body::Chunked | Body::ToClose if reply.http10 => {}
        Body::Chunked | Body::ToClose => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Body::None => {}
    }
    reply.connection(out);
    out.extend_from_slice(b"\r\n");
}

/// Never passed on (RFC 9110 section 7.6.1): the names of
/// `headers::HOP_BY_HOP`, sorted by length first, as most fields have a
/// length no such name has (a test checks it knows each of them).
fn is_hop_by_hop(name: &[u8]) -> bool {
    let names: &[&[u8]] = match name.len() {
        2 => &[b"te"],
        7 => &[b"trailer", b"upgrade"],
        10 => &[b"connection", b"keep-alive"],
        16 => &[b"proxy-connection"],
        17 => &[b"transfer-encoding"],
        _ => return false,
    };
    names.iter().any(|hop| name.eq_ignore_ascii_case(hop))
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::is_hop_by_hop;
    use crate::http::headers::HOP_BY_HOP;

    #[test]
    fn the_hop_by_hop_check_knows_every_hop_by_hop_name() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_str().as_bytes()), "{name}");
            assert!(is_hop_by_hop(name.as_str().to_ascii_uppercase().as_bytes()), "{name}");
        }
        for other in ["host", "x-te", "content-length", "trailers", "upgrades", ""] {
            assert!(!is_hop_by_hop(other.as_bytes()), "{other}");
        }
    }
}
