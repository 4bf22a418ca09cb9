//! Write sluice plugins in Rust.
//!
//! A plugin is a type that implements [`Router`] (route HTTP requests) or
//! [`Sniffer`] (classify new connections), plus one macro call that exports
//! it as a WebAssembly component for `sluice:plugin@0.2.0`:
//!
//! ```
//! use sluice_plugin::{Decision, Forward, Manifest, Request, Router};
//!
//! #[derive(sluice_plugin::serde::Deserialize)]
//! #[serde(crate = "sluice_plugin::serde", rename_all = "kebab-case", deny_unknown_fields)]
//! pub struct Settings {
//!     beta_backend: String,
//! }
//!
//! pub struct Beta(Settings);
//!
//! impl Router for Beta {
//!     type Settings = Settings;
//!
//!     fn init(settings: Settings) -> Result<Self, String> {
//!         Ok(Beta(settings))
//!     }
//!
//!     fn manifest(&self) -> Manifest {
//!         Manifest::new().backends(["web", self.0.beta_backend.as_str()]).header("x-beta")
//!     }
//!
//!     fn pick(&self, request: &Request) -> Decision {
//!         match request.header("x-beta") {
//!             Some(b"1") => Forward::to(&self.0.beta_backend).into(),
//!             _ => Forward::to("web").into(),
//!         }
//!     }
//! }
//!
//! sluice_plugin::export_router!(Beta);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (crate type
//! `cdylib`) and point a plugin's `file` at the `.wasm`. Unit-test the same
//! type natively with [`testing`], which applies the host's rules (settings
//! as JSON, only the declared headers, only declared backends).
//!
//! The plugin's lifecycle: the host calls `init` once per instance with the
//! settings table of the proxy config, then `pick`/`classify` any number of
//! times. Instances are reused and replaced at the host's discretion: keep
//! no per-connection state.

pub mod testing;
mod types;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private;

pub use serde;
pub use types::*;

/// A route plugin: picks a backend for each HTTP request, or answers it.
pub trait Router: Sized + Send + Sync + 'static {
    /// The plugin's `settings` table from the proxy config (received as
    /// JSON; an empty table when there is none).
    type Settings: serde::de::DeserializeOwned;

    /// What the plugin is called in its settings errors ("path plugin
    /// settings: unknown field …").
    const NAME: &'static str = "plugin";

    /// Accept the settings (or refuse them with a message: the host then
    /// refuses to load the plugin). Runs once per instance.
    fn init(settings: Self::Settings) -> Result<Self, String>;

    /// The backends `pick` can name and the headers it reads. The host
    /// lowers only those headers into [`Request::headers`], checks the
    /// backends against its config, and refuses a decision naming another.
    fn manifest(&self) -> Manifest;

    /// Decide one request. Runs under the plugin's CPU budget.
    fn pick(&self, request: &Request) -> Decision;
}

/// A sniff plugin: classifies a connection from its first bytes.
pub trait Sniffer: Sized + Send + Sync + 'static {
    /// The plugin's `settings` table from the proxy config.
    type Settings: serde::de::DeserializeOwned;

    /// What the plugin is called in its settings errors.
    const NAME: &'static str = "plugin";

    /// Accept the settings, or refuse them with a message.
    fn init(settings: Self::Settings) -> Result<Self, String>;

    /// The backends `classify` can name in [`Verdict::Forward`] (headers
    /// mean nothing to a sniff plugin).
    fn manifest(&self) -> Manifest;

    /// Classify `head`, every byte read so far; when `complete` is true no
    /// more bytes will come and [`Verdict::NeedMore`] is an error.
    fn classify(&self, conn: &Conn, head: &[u8], complete: bool) -> Verdict;
}

/// Parse the JSON settings the host hands to `init`.
pub fn parse_settings<S: serde::de::DeserializeOwned>(plugin: &str, json: &str) -> Result<S, String> {
    serde_json::from_str(json).map_err(|e| format!("{plugin} settings: {e}"))
}

/// Write a line to the proxy's log, tagged with the plugin's name (cut at
/// 1024 bytes). Outside WebAssembly (unit tests) it goes to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    __private::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Export `$plugin`, a [`Router`], as the component's `router` world.
#[macro_export]
macro_rules! export_router {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __SluiceRouterExport = $crate::__private::RouterExport<$plugin>;
            $crate::__private::router::export_router!(
                __SluiceRouterExport with_types_in $crate::__private::router
            );
        };
    };
}

/// Export `$plugin`, a [`Sniffer`], as the component's `sniffer` world.
#[macro_export]
macro_rules! export_sniffer {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __SluiceSnifferExport = $crate::__private::SnifferExport<$plugin>;
            $crate::__private::sniffer::export_sniffer!(
                __SluiceSnifferExport with_types_in $crate::__private::sniffer
            );
        };
    };
}
