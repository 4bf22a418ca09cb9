//! {{name}}: a sluice sniff plugin in Rust (world `sniffer` of wit/plugin.wit,
//! sluice:plugin@0.2.0), written with the sluice-plugin SDK
//! (vendor/sluice-plugin). `classify` is called with the first bytes of each
//! new connection, again each time more arrive, until it decides.
//!
//!   "PING\r\n"     -> answered by the plugin itself with "PONG\r\n", then closed
//!   anything else  -> the `backend` setting, or the listener's default backend
//!
//! stdout/stderr lines and `sluice_plugin::log` reach the proxy log, tagged
//! with the plugin's name. A plugin gets no files and no network.

use sluice_plugin::{Conn, Level, Manifest, Sniffer, Verdict};

const PING: &[u8] = b"PING\r\n";

/// The plugin's `settings` table from the sluice config.
#[derive(sluice_plugin::serde::Deserialize)]
#[serde(crate = "sluice_plugin::serde", rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    backend: Option<String>,
}

pub struct Plugin(Settings);

impl Sniffer for Plugin {
    type Settings = Settings;
    const NAME: &'static str = "{{name}}";

    /// Called once per instance. An error refuses the settings: sluice then
    /// refuses to load the plugin and prints the message.
    fn init(settings: Settings) -> Result<Self, String> {
        if settings.backend.as_deref() == Some("") {
            return Err("setting `backend` must be a backend name".into());
        }
        sluice_plugin::log(Level::Info, "{{name}} ready");
        Ok(Plugin(settings))
    }

    /// Every backend `classify` can name (sluice checks them against the config).
    fn manifest(&self) -> Manifest {
        Manifest::new().backends(self.0.backend.iter())
    }

    fn classify(&self, conn: &Conn, head: &[u8], complete: bool) -> Verdict {
        let starts_like_ping = PING.starts_with(&head[..head.len().min(PING.len())]);
        if starts_like_ping && head.len() >= PING.len() {
            println!("ping from {}", conn.client_addr);
            return Verdict::Reply { data: b"PONG\r\n".to_vec(), then_close: true };
        }
        if starts_like_ping && !complete {
            return Verdict::NeedMore;
        }
        match &self.0.backend {
            Some(backend) => Verdict::Forward(backend.clone()),
            None => Verdict::ForwardDefault,
        }
    }
}

sluice_plugin::export_sniffer!(Plugin);

/// Run natively with `cargo test`: the SDK's test helper applies the host's
/// rules (settings as JSON, only declared backends).
#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::testing::{TestSniffer, conn};

    #[test]
    fn answers_ping_itself_waiting_for_the_whole_line() {
        let plugin = TestSniffer::<Plugin>::new("{}").unwrap();
        assert_eq!(plugin.classify(&conn(), b"PI", false).unwrap(), Verdict::NeedMore);
        let reply = plugin.classify(&conn(), b"PING\r\n", false).unwrap();
        assert_eq!(reply, Verdict::Reply { data: b"PONG\r\n".to_vec(), then_close: true });
    }

    #[test]
    fn sends_everything_else_to_the_default_backend_or_the_configured_one() {
        let plugin = TestSniffer::<Plugin>::new("{}").unwrap();
        assert_eq!(plugin.classify(&conn(), b"GET / HTTP/1.1\r\n", false).unwrap(), Verdict::ForwardDefault);
        assert_eq!(plugin.classify(&conn(), b"PI", true).unwrap(), Verdict::ForwardDefault);
        let plugin = TestSniffer::<Plugin>::new(r#"{"backend": "ssh"}"#).unwrap();
        assert_eq!(plugin.classify(&conn(), b"SSH-2.0", false).unwrap(), Verdict::Forward("ssh".into()));
        let err = TestSniffer::<Plugin>::new(r#"{"backnd": "ssh"}"#).err().unwrap();
        assert!(err.contains("unknown field `backnd`"), "{err}");
    }
}
