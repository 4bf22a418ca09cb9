//! Plugins compiled into the binary, so the default config works from any
//! directory. Built from `plugins/` by `build.rs`.

/// `builtin = "sniff"`: the default sniff plugin (`plugins/sniff`).
const SNIFF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sniff.wasm"));

/// Names accepted by `builtin = "…"` in a plugin's config.
pub const NAMES: &[&str] = &["sniff"];

/// The component bytes of a built-in plugin.
pub fn component(name: &str) -> Option<&'static [u8]> {
    match name {
        "sniff" => Some(SNIFF),
        _ => None,
    }
}
