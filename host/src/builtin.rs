//! Plugins compiled into the binary, so the default config works from any
//! directory. Built from `plugins/` by `build.rs`.

/// `builtin = "sniff"`: the default sniff plugin (`plugins/sniff`).
const SNIFF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sniff.wasm"));

/// `builtin = "path"`: the default route plugin (`plugins/path`).
const PATH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/path.wasm"));

/// Names accepted by `builtin = "…"` in a plugin's config.
pub const NAMES: &[&str] = &["sniff", "path"];

/// The component bytes of a built-in plugin.
pub fn component(name: &str) -> Option<&'static [u8]> {
    match name {
        "sniff" => Some(SNIFF),
        "path" => Some(PATH),
        _ => None,
    }
}
