//! The generated bindings for both worlds, and what the host provides to
//! every instance: its log import and its memory cap.

use crate::names::PluginName;

/// Bindings for the `sniffer` world; `types` and `host` are generated here
/// once and shared with the `router` world.
pub mod sniffer_world {
    wasmtime::component::bindgen!({ world: "sniffer", path: "../wit" });
}

/// Bindings for the `router` world.
pub mod router_world {
    wasmtime::component::bindgen!({
        world: "router",
        path: "../wit",
        with: {
            "sluice:plugin/types": super::sniffer_world::sluice::plugin::types,
            "sluice:plugin/host": super::sniffer_world::sluice::plugin::host,
        },
    });
}

pub use sniffer_world::sluice::plugin::types as wit;

/// Longest message a plugin may log.
const MAX_LOG_MESSAGE: usize = 1024;

/// Per-instance host state: identity for logs, and the memory cap.
pub struct HostState {
    plugin: PluginName,
    memory_limit: u64,
    /// Set when the limiter refused a growth, to tell a memory-cap trap from others.
    pub memory_cap_hit: bool,
}

impl HostState {
    pub fn new(plugin: PluginName, memory_limit: u64) -> Self {
        Self { plugin, memory_limit, memory_cap_hit: false }
    }
}

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_limit {
            self.memory_cap_hit = true;
            wasmtime::bail!("plugin memory cap of {} bytes reached", self.memory_limit);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl wit::Host for HostState {}

impl sniffer_world::sluice::plugin::host::Host for HostState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let mut end = message.len().min(MAX_LOG_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let (plugin, message) = (self.plugin.as_str(), &message[..end]);
        match level {
            wit::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            wit::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            wit::LogLevel::Info => tracing::info!(plugin, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            wit::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
