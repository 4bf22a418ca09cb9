//! The access log of HTTP requests: one line per request, written when its
//! response head is sent.
//!
//! Without an `[access-log]` table the lines are tracing events (target
//! `sluice::access`) in the process log, as the connection lines are. With
//! one, request lines go to a file (or stdout) in the chosen format —
//! `combined` (Apache/nginx), `json` or `text` — from a writer thread of
//! their own ([`writer`]); SIGUSR1 reopens the file ([`reopen`]).
//!
//! Every request carries an id ([`request_id`]): the client's `x-request-id`
//! when it is sane, else a new one; it is forwarded to the backend, returned
//! to the client and logged.

mod line;
pub mod request_id;
mod writer;

use crate::plugin::ConnFacts;
use http::header::{self, HeaderValue};
use http::{Method, Request, Version};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use writer::Writer;

pub use writer::reopen_all as reopen;

/// How request lines are written (`[access-log] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// The Apache/nginx "combined" format, plus the request id.
    Combined,
    /// One JSON object per line.
    Json,
    /// `key=value` pairs (logfmt).
    Text,
}

impl AccessLogFormat {
    pub fn parse(word: &str) -> Result<Self, String> {
        match word {
            "combined" => Ok(Self::Combined),
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            other => Err(format!("`{other}` is not an access-log format (combined, json, text)")),
        }
    }
}

/// The validated `[access-log]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub format: AccessLogFormat,
    /// The file lines are appended to (created if missing); `None`: stdout.
    pub file: Option<PathBuf>,
}

impl AccessLogConfig {
    /// Validate the table's values; `file` is relative to the config's directory.
    pub fn new(format: Option<&str>, file: Option<&str>, base: &Path) -> Result<Self, (&'static str, String)> {
        let format = AccessLogFormat::parse(format.unwrap_or("combined")).map_err(|e| ("access-log.format", e))?;
        let file = match file {
            None | Some("-") => None,
            Some("") => return Err(("access-log.file", "give a path, or leave `file` out for stdout".into())),
            Some(file) => {
                let path = base.join(file);
                match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                        return Err(("access-log.file", format!("directory {} does not exist", dir.display())));
                    }
                    _ => {}
                }
                if path.is_dir() {
                    return Err(("access-log.file", format!("{} is a directory", path.display())));
                }
                Some(path)
            }
        };
        Ok(Self { format, file })
    }
}

/// Where one config version's request lines go.
pub struct AccessLog {
    lines: Option<(AccessLogFormat, Arc<Writer>)>,
}

/// The access log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("access log {path}: {error}")]
pub struct OpenError {
    path: String,
    error: std::io::Error,
}

impl AccessLog {
    /// The access log a config asks for: its file opened (or its writer
    /// shared with the config version before), or the process log.
    pub fn open(config: Option<&AccessLogConfig>) -> Result<Self, OpenError> {
        let Some(config) = config else { return Ok(Self { lines: None }) };
        let writer = Writer::open(config.file.as_deref()).map_err(|error| OpenError {
            path: config.file.as_deref().map_or("stdout".into(), |p| p.display().to_string()),
            error,
        })?;
        Ok(Self { lines: Some((config.format, writer)) })
    }

    /// Whether request lines are written at all: callers skip collecting
    /// their fields when not.
    pub fn enabled(&self) -> bool {
        self.lines.is_some() || tracing::enabled!(target: "sluice::access", tracing::Level::INFO)
    }

    /// Write the line of one request.
    pub fn request(&self, head: &RequestHead, facts: &ConnFacts, request_id: &HeaderValue, served: Served<'_>) {
        let entry = RequestEntry {
            listener: facts.listener.as_str(),
            client: facts.client_addr,
            method: head.method.as_str(),
            target: &head.target,
            version: head.version,
            host: head.host.as_deref(),
            status: served.status,
            bytes: served.body_bytes,
            duration: served.duration,
            route: served.route,
            backend: served.backend,
            server: served.server,
            request_id: request_id.to_str().unwrap_or("-"),
            referer: head.referer.as_deref(),
            user_agent: head.user_agent.as_deref(),
            detail: served.detail,
            tenant: served.tenant,
        };
        match &self.lines {
            Some((format, writer)) => {
                let at = SystemTime::now().checked_sub(served.duration).unwrap_or_else(SystemTime::now);
                writer.write(line::format(*format, &entry, at));
            }
            None => tracing::info!(
                target: "sluice::access",
                method = entry.method,
                path = entry.target,
                status = entry.status,
                route = entry.route,
                backend = entry.backend,
                server = entry.server,
                duration_ms = served.duration.as_millis() as u64,
                request_id = entry.request_id,
                tenant = entry.tenant,
                detail = entry.detail,
                "request"
            ),
        }
    }
}

/// What the access line needs of a request head, kept before the request
/// moves on (only when the line will be written).
pub struct RequestHead {
    method: Method,
    target: String,
    version: Version,
    host: Option<String>,
    referer: Option<String>,
    user_agent: Option<String>,
}

impl RequestHead {
    pub fn capture<B>(request: &Request<B>) -> Self {
        let header = |name: header::HeaderName| {
            request.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Self {
            method: request.method().clone(),
            target: request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string(),
            version: request.version(),
            host: request.uri().authority().map(|a| a.to_string()).or_else(|| header(header::HOST)),
            referer: header(header::REFERER),
            user_agent: header(header::USER_AGENT),
        }
    }
}

/// How a request was served.
pub struct Served<'a> {
    pub status: u16,
    /// The response body's length when its head says it (`Content-Length`).
    pub body_bytes: Option<u64>,
    /// From the request head to the response head.
    pub duration: Duration,
    /// The route plugin's decision (`forward`, `respond`, `none`).
    pub route: &'static str,
    pub backend: Option<&'a str>,
    pub server: Option<&'a str>,
    /// Why the proxy answered with an error, if it did.
    pub detail: Option<&'a str>,
    /// The tenant that owns the request's name (tenant listeners only).
    pub tenant: Option<&'a str>,
}

/// Every field of one request line.
struct RequestEntry<'a> {
    listener: &'a str,
    client: SocketAddr,
    method: &'a str,
    target: &'a str,
    version: Version,
    host: Option<&'a str>,
    status: u16,
    bytes: Option<u64>,
    duration: Duration,
    route: &'static str,
    backend: Option<&'a str>,
    server: Option<&'a str>,
    request_id: &'a str,
    referer: Option<&'a str>,
    user_agent: Option<&'a str>,
    detail: Option<&'a str>,
    tenant: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_checked() {
        let base = std::env::temp_dir();
        let default = AccessLogConfig::new(None, None, &base).unwrap();
        assert_eq!(default, AccessLogConfig { format: AccessLogFormat::Combined, file: None });
        let json = AccessLogConfig::new(Some("json"), Some("access.log"), &base).unwrap();
        assert_eq!(json.file, Some(base.join("access.log")));
        let (field, message) = AccessLogConfig::new(Some("apache"), None, &base).unwrap_err();
        assert_eq!(field, "access-log.format");
        assert!(message.contains("combined, json, text"), "{message}");
        let (field, message) = AccessLogConfig::new(None, Some("no/such/dir/a.log"), &base).unwrap_err();
        assert_eq!(field, "access-log.file");
        assert!(message.contains("does not exist"), "{message}");
    }
}
