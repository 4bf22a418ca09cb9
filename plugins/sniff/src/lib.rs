//! sluice's default sniff plugin.
//!
//! Recognises, on the first bytes of a connection:
//! - the Flash policy request (`<policy-file-request/>`, NUL optional), and
//!   answers it with the cross-domain policy from the settings, then closes;
//! - a TLS ClientHello: terminate TLS, or pass it through untouched to the
//!   backend `tls-passthrough` names for its server name (or to `tls-backend`);
//! - an HTTP/1.x request line or the HTTP/2 preface: serve it as HTTP (or
//!   relay it raw to `http-backend`);
//! - anything else, including silence until the inspect deadline: the
//!   listener's default backend (or `other-backend`).
//!
//! Settings (all optional), from the plugin's `settings` table:
//!
//! ```toml
//! flash-policy = "<cross-domain-policy>…</cross-domain-policy>"
//! tls-passthrough = { "db.example.com" = "db", "*.legacy.example.com" = "legacy" }
//!                         # pass TLS for these server names through untouched
//! tls-backend = "name"    # pass all other TLS through untouched instead of terminating
//! http-backend = "name"   # relay HTTP raw (TCP mode) instead of serving it
//! other-backend = "name"  # instead of the listener's default backend
//! ```

pub mod detect;

use detect::Protocol;
use serde::Deserialize;

/// Answered to a Flash policy request when the settings give none: allows
/// every domain on every port, which is what Socket.IO's Flash transport needs.
pub const DEFAULT_FLASH_POLICY: &str = "<?xml version=\"1.0\"?>\
<!DOCTYPE cross-domain-policy SYSTEM \"http://www.adobe.com/xml/dtds/cross-domain-policy.dtd\">\
<cross-domain-policy><allow-access-from domain=\"*\" to-ports=\"*\"/></cross-domain-policy>";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    pub flash_policy: Option<String>,
    pub tls_backend: Option<String>,
    #[serde(default)]
    pub tls_passthrough: std::collections::BTreeMap<String, String>,
    pub http_backend: Option<String>,
    pub other_backend: Option<String>,
}

/// What the plugin decides, independent of the generated bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    NeedMore,
    TerminateTls,
    Http,
    ForwardDefault,
    Forward(String),
    /// Reply with these bytes, then close.
    Reply(Vec<u8>),
}

/// What the host parsed of a TLS ClientHello at the start of the stream.
pub struct Hello<'a> {
    pub server_name: Option<&'a str>,
}

/// The passthrough backend for a server name: an exact entry, else the
/// `*.parent` entry one label up.
fn passthrough<'a>(settings: &'a Settings, server_name: &str) -> Option<&'a String> {
    let name = server_name.to_ascii_lowercase();
    settings.tls_passthrough.get(&name).or_else(|| {
        let (_, parent) = name.split_once('.')?;
        settings.tls_passthrough.get(&format!("*.{parent}"))
    })
}

pub fn decide(settings: &Settings, head: &[u8], complete: bool, hello: Option<Hello<'_>>) -> Decision {
    let found = if complete {
        detect::detect_final(head)
    } else {
        match detect::detect(head) {
            detect::Detection::Found(protocol) => Some(protocol),
            detect::Detection::NoMatch => None,
            detect::Detection::NeedMore => return Decision::NeedMore,
        }
    };
    let forward_or = |backend: &Option<String>, otherwise: Decision| match backend {
        Some(name) => Decision::Forward(name.clone()),
        None => otherwise,
    };
    match found {
        Some(Protocol::FlashPolicy) => {
            let policy = settings.flash_policy.as_deref().unwrap_or(DEFAULT_FLASH_POLICY);
            // Flash reads the policy up to a NUL terminator.
            let mut data = policy.as_bytes().to_vec();
            data.push(0);
            Decision::Reply(data)
        }
        Some(Protocol::Tls) => {
            if !settings.tls_passthrough.is_empty() {
                match &hello {
                    // Wait for the whole ClientHello to learn the server name.
                    None if !complete => return Decision::NeedMore,
                    Some(Hello { server_name: Some(name) }) => {
                        if let Some(backend) = passthrough(settings, name) {
                            return Decision::Forward(backend.clone());
                        }
                    }
                    _ => {}
                }
            }
            forward_or(&settings.tls_backend, Decision::TerminateTls)
        }
        Some(Protocol::Http1 | Protocol::Http2) => forward_or(&settings.http_backend, Decision::Http),
        None => forward_or(&settings.other_backend, Decision::ForwardDefault),
    }
}

impl Settings {
    /// Every backend a verdict can name, for the manifest.
    pub fn backends(&self) -> Vec<&str> {
        let named = [&self.tls_backend, &self.http_backend, &self.other_backend];
        named.into_iter().flatten().chain(self.tls_passthrough.values()).map(String::as_str).collect()
    }
}

/// The plugin as the SDK runs it.
pub struct SniffPlugin(pub Settings);

impl sluice_plugin::Sniffer for SniffPlugin {
    type Settings = Settings;
    const NAME: &'static str = "sniff plugin";

    fn init(settings: Settings) -> Result<Self, String> {
        Ok(SniffPlugin(settings))
    }

    fn manifest(&self) -> sluice_plugin::Manifest {
        sluice_plugin::Manifest::new().backends(self.0.backends())
    }

    fn classify(&self, conn: &sluice_plugin::Conn, head: &[u8], complete: bool) -> sluice_plugin::Verdict {
        use sluice_plugin::Verdict;
        let hello = conn.hello.as_ref().map(|h| Hello { server_name: h.server_name.as_deref() });
        match decide(&self.0, head, complete, hello) {
            Decision::NeedMore => Verdict::NeedMore,
            Decision::TerminateTls => Verdict::TerminateTls,
            Decision::Http => Verdict::Http,
            Decision::ForwardDefault => Verdict::ForwardDefault,
            Decision::Forward(name) => Verdict::Forward(name),
            Decision::Reply(data) => Verdict::Reply { data, then_close: true },
        }
    }
}

sluice_plugin::export_sniffer!(SniffPlugin);

#[cfg(test)]
mod manifest_tests {
    use super::SniffPlugin;
    use sluice_plugin::Verdict;
    use sluice_plugin::testing::{TestSniffer, conn};

    #[test]
    fn declares_every_backend_its_settings_name() {
        let settings = r#"{"tls-backend": "tls", "http-backend": "raw", "tls-passthrough": {"db.test": "db"}}"#;
        let plugin = TestSniffer::<SniffPlugin>::new(settings).unwrap();
        assert_eq!(plugin.manifest().backends, ["tls", "raw", "db"]);
        let verdict = plugin.classify(&conn(), b"GET / HTTP/1.1\r\n", false).unwrap();
        assert_eq!(verdict, Verdict::Forward("raw".into()));
        assert!(TestSniffer::<SniffPlugin>::new("{}").unwrap().manifest().backends.is_empty());
    }
}
