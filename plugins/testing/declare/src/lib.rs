//! A route plugin for sluice's contract tests (sluice:plugin@0.2.0).
//!
//! Settings:
//! - `backends`: the backends it declares;
//! - `headers`: the headers it declares it reads (absent: every header);
//! - `forward`: where every request goes (declared or not).
//!
//! A request for `/seen` is answered `200` with what the plugin was handed:
//! `headers=<names, comma-separated> tenant=<tenant or ->`.

use sluice_plugin::{Decision, Forward, Manifest, Request, Response};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    backends: Vec<String>,
    headers: Option<Vec<String>>,
    forward: String,
}

struct Plugin(Settings);

impl sluice_plugin::Router for Plugin {
    type Settings = Settings;
    const NAME: &'static str = "declare plugin";

    fn init(settings: Settings) -> Result<Self, String> {
        Ok(Plugin(settings))
    }

    fn manifest(&self) -> Manifest {
        let manifest = Manifest::new().backends(self.0.backends.iter().cloned());
        match &self.0.headers {
            Some(names) => manifest.headers(names.iter().cloned()),
            None => manifest.all_headers(),
        }
    }

    fn pick(&self, request: &Request) -> Decision {
        if request.path == "/seen" {
            let names: Vec<&str> = request.headers.iter().map(|h| h.name.as_str()).collect();
            let tenant = request.conn.tenant.as_deref().unwrap_or("-");
            let body = format!("headers={} tenant={tenant}", names.join(","));
            return Response::new(200).body(body).into();
        }
        Forward::to(&self.0.forward).into()
    }
}

sluice_plugin::export_router!(Plugin);
