//! Call a plugin natively in unit tests, under the host's rules: settings
//! arrive as JSON and are parsed as in the proxy, `pick` sees only the
//! headers the manifest declares, and a decision naming an undeclared
//! backend is an error (as it is in the proxy, label `undeclared-backend`).
//!
//! ```
//! # use sluice_plugin::*;
//! # struct Web;
//! # impl Router for Web {
//! #     type Settings = ();
//! #     fn init(_: ()) -> Result<Self, String> { Ok(Web) }
//! #     fn manifest(&self) -> Manifest { Manifest::new().backend("web") }
//! #     fn pick(&self, _: &Request) -> Decision { Forward::to("web").into() }
//! # }
//! use sluice_plugin::testing::{TestRouter, request};
//! let plugin = TestRouter::<Web>::new("null").unwrap();
//! let decision = plugin.pick(request("GET", "/").header("x-beta", "1")).unwrap();
//! assert_eq!(decision, Forward::to("web").into());
//! ```

use crate::{Conn, Decision, Header, Manifest, Request, Router, Sniffer, Verdict};

/// A route plugin started as the host starts one.
pub struct TestRouter<P> {
    plugin: P,
    manifest: Manifest,
}

impl<P: Router> TestRouter<P> {
    /// `init` with settings given as JSON (the proxy's TOML table, as JSON).
    pub fn new(settings_json: &str) -> Result<Self, String> {
        Self::with_settings(crate::parse_settings(P::NAME, settings_json)?)
    }

    /// `init` with typed settings.
    pub fn with_settings(settings: P::Settings) -> Result<Self, String> {
        let plugin = P::init(settings)?;
        let manifest = plugin.manifest();
        Ok(Self { plugin, manifest })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The plugin itself.
    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    /// `pick`, with only the declared headers, and the decision checked
    /// against the declared backends.
    pub fn pick(&self, request: impl Into<Request>) -> Result<Decision, String> {
        let mut request = request.into();
        request.headers.retain(|h| self.manifest.reads_header(&h.name));
        let decision = self.plugin.pick(&request);
        if let Decision::Forward(forward) = &decision
            && !self.manifest.declares_backend(&forward.backend)
        {
            return Err(undeclared(&forward.backend, &self.manifest));
        }
        Ok(decision)
    }
}

/// A sniff plugin started as the host starts one.
pub struct TestSniffer<P> {
    plugin: P,
    manifest: Manifest,
}

impl<P: Sniffer> TestSniffer<P> {
    /// `init` with settings given as JSON.
    pub fn new(settings_json: &str) -> Result<Self, String> {
        Self::with_settings(crate::parse_settings(P::NAME, settings_json)?)
    }

    /// `init` with typed settings.
    pub fn with_settings(settings: P::Settings) -> Result<Self, String> {
        let plugin = P::init(settings)?;
        let manifest = plugin.manifest();
        Ok(Self { plugin, manifest })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    /// `classify`, with the verdict checked against the declared backends
    /// and `need-more` refused when `complete`, as the host does.
    pub fn classify(&self, conn: &Conn, head: &[u8], complete: bool) -> Result<Verdict, String> {
        let verdict = self.plugin.classify(conn, head, complete);
        match &verdict {
            Verdict::Forward(backend) if !self.manifest.declares_backend(backend) => {
                Err(undeclared(backend, &self.manifest))
            }
            Verdict::NeedMore if complete => Err("answered need-more to a complete head".to_string()),
            _ => Ok(verdict),
        }
    }
}

fn undeclared(backend: &str, manifest: &Manifest) -> String {
    format!(
        "undeclared-backend: named backend `{backend}`, which it did not declare (declared: {:?})",
        manifest.backends
    )
}

/// A request to build up for [`TestRouter::pick`]: `request("GET", "/")`.
pub fn request(method: &str, path: &str) -> RequestBuilder {
    RequestBuilder(Request { method: method.to_string(), path: path.to_string(), conn: conn(), ..Request::default() })
}

/// The connection facts tests get by default: listener `test`, client
/// 192.0.2.1:40000, local 127.0.0.1:80, no TLS, no tenant.
pub fn conn() -> Conn {
    Conn {
        listener: "test".to_string(),
        client_addr: "192.0.2.1:40000".to_string(),
        local_addr: "127.0.0.1:80".to_string(),
        ..Conn::default()
    }
}

/// Builds a [`Request`].
#[derive(Debug, Clone)]
pub struct RequestBuilder(Request);

impl RequestBuilder {
    /// The authority (HTTP/2 `:authority` or `Host`).
    pub fn authority(mut self, authority: &str) -> Self {
        self.0.authority = Some(authority.to_string());
        self
    }

    /// Add a header (the name is lower-cased).
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.0.headers.push(Header::new(name, value));
        self
    }

    /// The client's address, "ip:port".
    pub fn client(mut self, addr: &str) -> Self {
        self.0.conn.client_addr = addr.to_string();
        self
    }

    /// The connection facts.
    pub fn conn(mut self, conn: Conn) -> Self {
        self.0.conn = conn;
        self
    }

    pub fn build(self) -> Request {
        self.0
    }
}

impl From<RequestBuilder> for Request {
    fn from(builder: RequestBuilder) -> Self {
        builder.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Forward, Manifest, Response};

    /// Forwards `x-to`'s value, or answers with the header names it saw.
    struct Echo;

    impl Router for Echo {
        type Settings = Vec<String>;

        fn init(_: Vec<String>) -> Result<Self, String> {
            Ok(Echo)
        }

        fn manifest(&self) -> Manifest {
            Manifest::new().backends(["web"]).headers(["X-To", "x-seen"])
        }

        fn pick(&self, request: &Request) -> Decision {
            match request.header_str("x-to") {
                Some(to) => Forward::to(to).into(),
                None => {
                    let names: Vec<&str> = request.headers.iter().map(|h| h.name.as_str()).collect();
                    Response::new(200).body(names.join(",")).into()
                }
            }
        }
    }

    #[test]
    fn pick_sees_only_declared_headers_and_names_only_declared_backends() {
        let plugin = TestRouter::<Echo>::new("[]").unwrap();
        assert_eq!(plugin.manifest().headers, crate::HeaderInterest::Only(vec!["x-to".into(), "x-seen".into()]));
        let seen = plugin.pick(request("GET", "/").header("X-Seen", "1").header("cookie", "a=b")).unwrap();
        assert_eq!(seen, Response::new(200).body("x-seen").into());
        assert_eq!(plugin.pick(request("GET", "/").header("x-to", "web")).unwrap(), Forward::to("web").into());
        let err = plugin.pick(request("GET", "/").header("x-to", "api")).unwrap_err();
        assert!(err.contains("undeclared-backend") && err.contains("`api`"), "{err}");
    }

    #[test]
    fn bad_settings_are_refused_with_the_plugins_name() {
        let err = TestRouter::<Echo>::new("{}").err().unwrap();
        assert!(err.starts_with("plugin settings: invalid type"), "{err}");
    }
}
