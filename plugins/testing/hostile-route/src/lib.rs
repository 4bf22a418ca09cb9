//! A route plugin that misbehaves on request, for sluice's tenant tests.
//!
//! The request path chooses the behaviour:
//! - `/trap`    executes `unreachable` (a trap);
//! - `/loop`    loops forever (must be stopped by the CPU budget);
//! - `/hog`     allocates and touches 1 GiB (must hit the memory cap);
//! - `/foreign` forwards to the backend named by the `foreign` setting
//!   (another tenant's, to test that tenants stay in their namespace);
//! - anything else forwards to the backend named by the `backend` setting
//!   and adds `x-plugin: <the tag setting>` so tests can tell versions apart.
//!
//! It declares (sluice:plugin@0.2.0) the `backend` setting, and the
//! `declare` setting when there is one. Settings are a flat JSON object of
//! strings, read without a JSON parser.

wit_bindgen::generate!({ world: "router", path: "../../../wit" });

use exports::sluice::plugin::route::{self, Decision, Forward, Header, Request};
use exports::sluice::plugin::setup::{self, HeaderInterest, Manifest};
use std::hint::black_box;
use std::sync::OnceLock;

static SETTINGS: OnceLock<String> = OnceLock::new();

/// The string value of `"key":"value"` in the settings JSON.
fn setting(key: &str) -> String {
    let settings = SETTINGS.get().map(String::as_str).unwrap_or("");
    let pattern = format!("\"{key}\":\"");
    settings
        .find(&pattern)
        .map(|at| &settings[at + pattern.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
        .to_string()
}

struct Plugin;

impl setup::Guest for Plugin {
    fn init(settings: String) -> Result<Manifest, String> {
        let _ = SETTINGS.set(settings);
        if setting("backend").is_empty() {
            return Err("the `backend` setting is required".to_string());
        }
        let backends = [setting("backend"), setting("declare")].into_iter().filter(|b| !b.is_empty()).collect();
        Ok(Manifest { backends, headers: HeaderInterest::All })
    }
}

impl route::Guest for Plugin {
    fn pick(req: Request) -> Decision {
        let backend = match req.path.as_str() {
            "/trap" => core::arch::wasm32::unreachable(),
            "/loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "/hog" => {
                let hog = vec![1u8; 1 << 30];
                black_box(&hog);
                setting("backend")
            }
            "/foreign" => setting("foreign"),
            _ => setting("backend"),
        };
        Decision::Forward(Forward {
            backend,
            affinity: None,
            set_headers: vec![Header { name: "x-plugin".into(), value: setting("tag").into_bytes() }],
            remove_headers: Vec::new(),
            rewrite_path: None,
        })
    }
}

export!(Plugin);
