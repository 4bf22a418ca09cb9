//! sluice's default route plugin.
//!
//! Routes each HTTP request with an ordered list of rules: the first rule
//! whose conditions all hold decides, either forwarding the request to a
//! backend (optionally with a sticky-session key, header edits and a path
//! rewrite) or answering it directly. A request no rule matches goes to
//! `default-backend`, or gets the `not-found` response when there is none.
//!
//! Settings (all optional), from the plugin's `settings` table:
//!
//! ```toml
//! default-backend = "web"   # unmatched requests go here; without it they get `not-found`
//! not-found = { status = 404, body = "no route\n", headers = { … } }
//!                           # the answer to unmatched requests (so not with
//!                           # `default-backend`); every field optional: status 404,
//!                           # body "sluice: no route for this request\n", no headers
//!
//! [[rules]]                 # ordered; the first rule that matches wins
//! # Conditions: a rule matches when all of those it sets hold (none set: always).
//! host = "api.test"         # the request's host, ignoring case and any :port; "*.example.com"
//!                           # matches every subdomain (a.example.com, a.b.example.com) but
//!                           # not example.com itself; never matches a request without one
//! path-prefix = "/socket.io/"  # the path (before any '?') starts with this, byte for byte
//!                           # (case-sensitive, not percent-decoded); must start with '/'
//! method = "GET"            # exactly this method (case-sensitive)
//! headers = { x-canary = "1" }  # each named header (name case-insensitive) is present with
//!                           # exactly this value (one of its values, if repeated); "*"
//!                           # means present with any value
//!
//! # Action: exactly one of `backend` or `respond`.
//! backend = "socketio"      # forward to this backend from the proxy config
//! affinity = "client-ip"    # optional sticky-session key, one of:
//!                           #   "client-ip"          the client's IP address, without the port
//!                           #                        (IPv4-mapped IPv6 given as IPv4)
//!                           #   { cookie = "sid" }   the value of this cookie
//!                           #   { header = "x-user" }  the value of this header
//!                           #   { query = "sid" }    the value of this query-string parameter
//!                           # when the source is absent (or empty) the request is balanced
//!                           # without a key
//! strip-prefix = true       # needs `path-prefix`: remove it from the path sent to the backend
//!                           # ("/api/users?x=1" with prefix "/api" -> "/users?x=1"; the
//!                           # result always starts with '/', the query string is kept)
//! set-headers = { x-routed-by = "sluice" }  # set (replacing) these request headers
//! remove-headers = ["x-internal"]           # remove these request headers
//!
//! respond = { status = 301, headers = { location = "https://example.test/" }, body = "" }
//!                           # answer directly: `status` (200..=599) is required,
//!                           # `headers` and `body` (default "") are optional
//! ```
//!
//! `affinity`, `strip-prefix`, `set-headers` and `remove-headers` are only
//! allowed with `backend`. Header names may be written in any case and are
//! sent lower-case; `content-length` and `transfer-encoding` cannot be set or
//! removed, because the host frames messages itself. A response with a body
//! and no `content-type` header gets `content-type: text/plain; charset=utf-8`.
//! Settings are checked once, at `init`: an unknown or misspelt key, a rule
//! with both or neither of `backend` and `respond`, or a bad status, header
//! name or path prefix refuses the plugin with a message naming the problem.
//!
//! Socket.IO behind one listener, with its long-polling requests kept on one
//! server per client:
//!
//! ```toml
//! default-backend = "web"
//! [[rules]]
//! path-prefix = "/socket.io/"
//! backend = "socketio"
//! affinity = "client-ip"
//! ```

pub mod rules;
#[cfg(test)]
mod tests;

pub use rules::{Decision, Forward, Header, Request, Response, Router};

use serde::Deserialize;
use std::collections::BTreeMap;

/// The plugin's settings, as they arrive (JSON from the proxy's TOML table).
/// [`Router::new`] checks them and compiles them into a router.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    pub default_backend: Option<String>,
    pub not_found: Option<ResponseSettings>,
    #[serde(default)]
    pub rules: Vec<RuleSettings>,
}

/// One `[[rules]]` entry. The options that only make sense with `backend`
/// are `Option`s so that setting them with `respond`, even empty, is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RuleSettings {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub method: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub backend: Option<String>,
    pub affinity: Option<AffinitySettings>,
    pub strip_prefix: Option<bool>,
    pub set_headers: Option<BTreeMap<String, String>>,
    pub remove_headers: Option<Vec<String>>,
    pub respond: Option<ResponseSettings>,
}

/// Where a sticky-session key comes from: `"client-ip"`, or a one-key table
/// `{ cookie = "name" }`, `{ header = "name" }`, `{ query = "name" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AffinitySettings {
    ClientIp,
    Cookie(String),
    Header(String),
    Query(String),
}

/// A synthetic response: a rule's `respond`, or `not-found`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ResponseSettings {
    pub status: Option<u16>,
    pub headers: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
}

/// Parse and check the JSON settings `init` receives.
pub fn init(settings_json: &str) -> Result<Router, String> {
    let settings: Settings = serde_json::from_str(settings_json).map_err(|e| format!("path plugin settings: {e}"))?;
    Router::new(settings).map_err(|e| format!("path plugin settings: {e}"))
}

/// The plugin as the SDK runs it: the compiled rules.
pub struct PathPlugin(pub Router);

impl sluice_plugin::Router for PathPlugin {
    type Settings = Settings;
    const NAME: &'static str = "path plugin";

    fn init(settings: Settings) -> Result<Self, String> {
        Router::new(settings).map(PathPlugin).map_err(|e| format!("path plugin settings: {e}"))
    }

    /// The backends of its rules and `default-backend`; the headers its
    /// rules match on and take affinity keys from (`cookie` for cookies).
    fn manifest(&self) -> sluice_plugin::Manifest {
        sluice_plugin::Manifest::new().backends(self.0.backends()).headers(self.0.headers_read())
    }

    fn pick(&self, req: &sluice_plugin::Request) -> sluice_plugin::Decision {
        let request_headers: Vec<(&str, &[u8])> =
            req.headers.iter().map(|h| (h.name.as_str(), h.value.as_slice())).collect();
        let request = Request {
            method: &req.method,
            path: &req.path,
            authority: req.authority.as_deref(),
            headers: &request_headers,
            client_addr: &req.conn.client_addr,
        };
        let headers = |list: Vec<Header>| -> Vec<sluice_plugin::Header> {
            list.into_iter().map(|(name, value)| sluice_plugin::Header { name, value }).collect()
        };
        match self.0.pick(&request) {
            Decision::Forward(f) => sluice_plugin::Decision::Forward(sluice_plugin::Forward {
                backend: f.backend,
                affinity: f.affinity,
                set_headers: headers(f.set_headers),
                remove_headers: f.remove_headers,
                rewrite_path: f.rewrite_path,
            }),
            Decision::Respond(r) => sluice_plugin::Decision::Respond(sluice_plugin::Response {
                status: r.status,
                headers: headers(r.headers),
                body: r.body,
            }),
        }
    }
}

sluice_plugin::export_router!(PathPlugin);
