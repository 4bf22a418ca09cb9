//! The admin listener's write actions, and the bearer token that guards them:
//!
//! - `POST /reload`: reload the config and plugins now (the answer says what is live, or why not);
//! - `POST /experiments/NAME/share` with the percentage as the body (`10`, `2.5`);
//! - `POST /experiments/NAME/promote`: the candidate decides everything;
//! - `POST /experiments/NAME/abort`: the candidate is switched off;
//! - `GET /experiments`: every experiment's state (also in `/status`).
//!
//! Writes need `Authorization: Bearer TOKEN`, the token being the content of
//! `[admin] token-file` (read on each request, so it can be rotated). Without
//! a token file in the config, writes are refused (403). With
//! `protect-reads = true`, every path but `/healthz` needs the token too.

use crate::admin::{Admin, text};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

/// Answer one admin request: the write actions here, reads in [`crate::admin`].
pub async fn answer(admin: &Admin, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let write = request.method() != Method::GET;
    let protected = write || (admin.auth.as_ref().is_some_and(|a| a.protect_reads) && path != "/healthz");
    if protected && let Some(refusal) = refusal(admin, &request, write) {
        return refusal;
    }
    if !write {
        if path == "/experiments" {
            let status = crate::experiment::status_json(&admin.snapshot.load());
            return text(StatusCode::OK, &format!("{status:#}\n"), "application/json");
        }
        return crate::admin::answer(admin, &request);
    }
    if request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET, or POST for actions\n", "text/plain");
    }
    if path == "/reload" {
        return match &admin.reload {
            Some(reload) => match reload.reload().await {
                Ok(summary) => text(StatusCode::OK, &format!("reloaded: {summary}\n"), "text/plain"),
                Err(error) => {
                    text(StatusCode::UNPROCESSABLE_ENTITY, &format!("reload refused: {error}\n"), "text/plain")
                }
            },
            None => text(StatusCode::SERVICE_UNAVAILABLE, "reloads are not available here\n", "text/plain"),
        };
    }
    let Some((name, action)) = path.strip_prefix("/experiments/").and_then(|rest| rest.split_once('/')) else {
        return text(
            StatusCode::NOT_FOUND,
            "actions: POST /reload, POST /experiments/NAME/{share,promote,abort}\n",
            "text/plain",
        );
    };
    let (name, action) = (name.to_string(), action.to_string());
    let body = match Limited::new(request.into_body(), 64).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "the body is at most 64 bytes\n", "text/plain"),
    };
    let snapshot = admin.snapshot.load();
    let Some(control) = snapshot.experiments.iter().find(|c| c.plugin.as_str() == name) else {
        return text(StatusCode::NOT_FOUND, &format!("no experiment on plugin `{name}`\n"), "text/plain");
    };
    match action.as_str() {
        "share" => {
            let body = String::from_utf8_lossy(&body);
            match body.trim().trim_end_matches('%').parse::<f64>() {
                Ok(percent) if (0.0..=100.0).contains(&percent) => {
                    control.set_share((percent * 100.0).round() as u32);
                }
                _ => {
                    let message = format!("the body must be a percentage from 0 to 100, not {:?}\n", body.trim());
                    return text(StatusCode::BAD_REQUEST, &message, "text/plain");
                }
            }
        }
        "promote" => control.promote(),
        "abort" => control.abort(),
        other => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("no action `{other}` (share, promote, abort)\n"),
                "text/plain",
            );
        }
    }
    text(StatusCode::OK, &format!("{:#}\n", control.status_json()), "application/json")
}

/// The answer to a request without the configured token; `None` when it has it.
fn refusal(admin: &Admin, request: &Request<Incoming>, write: bool) -> Option<Response<Full<Bytes>>> {
    let Some(auth) = &admin.auth else {
        let message = if write {
            "write actions are disabled: set `token-file` in [admin] to enable them\n"
        } else {
            "forbidden\n"
        };
        return Some(text(StatusCode::FORBIDDEN, message, "text/plain"));
    };
    let token = match std::fs::read_to_string(&auth.token_file) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        Ok(_) | Err(_) => {
            tracing::error!(file = %auth.token_file.display(), "the admin token file is unreadable or empty: actions refused");
            return Some(text(StatusCode::FORBIDDEN, "the admin token file is unreadable or empty\n", "text/plain"));
        }
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").map(str::trim));
    match given {
        Some(given) if same(given.as_bytes(), token.as_bytes()) => None,
        _ => {
            let mut refusal =
                text(StatusCode::UNAUTHORIZED, "a valid `Authorization: Bearer` token is required\n", "text/plain");
            refusal.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            Some(refusal)
        }
    }
}

/// Compare without stopping at the first different byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
