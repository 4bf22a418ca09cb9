//! {{name}}: a sluice route plugin in Rust (world `router` of wit/plugin.wit,
//! sluice:plugin@0.2.0), written with the sluice-plugin SDK
//! (vendor/sluice-plugin). `pick` is called once for every HTTP request.
//!
//!   x-beta: 1      -> the `beta-backend` setting (default `beta`)
//!   GET /hello     -> answered by the plugin itself (and printed to stdout)
//!   anything else  -> the `backend` setting (default `web`)
//!
//! stdout/stderr lines and `sluice_plugin::log` reach the proxy log, tagged
//! with the plugin's name. A plugin gets no files and no network.

use sluice_plugin::{Decision, Forward, Level, Manifest, Request, Response, Router};

/// The plugin's `settings` table from the sluice config.
#[derive(sluice_plugin::serde::Deserialize)]
#[serde(crate = "sluice_plugin::serde", rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "web")]
    backend: String,
    #[serde(default = "beta")]
    beta_backend: String,
}

fn web() -> String {
    "web".into()
}

fn beta() -> String {
    "beta".into()
}

pub struct Plugin(Settings);

impl Router for Plugin {
    type Settings = Settings;
    const NAME: &'static str = "{{name}}";

    /// Called once per instance. An error refuses the settings: sluice then
    /// refuses to load the plugin and prints the message.
    fn init(settings: Settings) -> Result<Self, String> {
        if settings.backend.is_empty() || settings.beta_backend.is_empty() {
            return Err("backend names must not be empty".into());
        }
        sluice_plugin::log(Level::Info, "{{name}} ready");
        Ok(Plugin(settings))
    }

    /// Every backend `pick` can name (sluice checks them against the
    /// config), and the only request header it reads.
    fn manifest(&self) -> Manifest {
        Manifest::new().backends([&self.0.backend, &self.0.beta_backend]).header("x-beta")
    }

    fn pick(&self, request: &Request) -> Decision {
        if request.header_str("x-beta") == Some("1") {
            return Forward::to(&self.0.beta_backend).into();
        }
        if request.path == "/hello" {
            let greeting = format!("hello from {{name}}, {}", request.conn.client_addr);
            println!("{greeting}");
            return Response::new(200)
                .header("content-type", "text/plain; charset=utf-8")
                .body(format!("{greeting}\n"))
                .into();
        }
        Forward::to(&self.0.backend).into()
    }
}

sluice_plugin::export_router!(Plugin);

/// Run natively with `cargo test`: the SDK's test helper applies the host's
/// rules (settings as JSON, only the declared headers and backends).
#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin::testing::{TestRouter, request};

    #[test]
    fn declares_its_backends_and_routes_by_the_x_beta_header() {
        let plugin = TestRouter::<Plugin>::new("{}").unwrap();
        assert!(plugin.manifest().declares_backend("beta"));
        assert_eq!(plugin.pick(request("GET", "/")).unwrap(), Forward::to("web").into());
        assert_eq!(plugin.pick(request("GET", "/").header("x-beta", "1")).unwrap(), Forward::to("beta").into());
    }

    #[test]
    fn answers_hello_itself() {
        let plugin = TestRouter::<Plugin>::new("{}").unwrap();
        let Decision::Respond(response) = plugin.pick(request("GET", "/hello")).unwrap() else {
            panic!("answered by the plugin")
        };
        assert_eq!(response.status, 200);
        assert!(response.body.starts_with(b"hello from {{name}}, "));
    }

    #[test]
    fn takes_its_backends_from_the_settings_and_refuses_unknown_ones() {
        let plugin = TestRouter::<Plugin>::new(r#"{"backend": "app"}"#).unwrap();
        assert_eq!(plugin.pick(request("GET", "/")).unwrap(), Forward::to("app").into());
        let err = TestRouter::<Plugin>::new(r#"{"bakend": "app"}"#).err().unwrap();
        assert!(err.contains("unknown field `bakend`"), "{err}");
    }
}
