//! The generated bindings for both worlds of both contract versions (0.2.0
//! from `wit/`, 0.1.0 from `wit/deps-0.1.0/`), and what the host provides
//! to every instance: its log import, its memory cap and its virtual WASI.

use super::output::{self, PluginLog, Source};
use super::wasi::Wasi;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtxView, WasiView};

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

/// The bindings of `sluice:plugin@0.1.0`, for components built against it.
pub mod v0_1 {
    /// The `sniffer` world of 0.1.0.
    pub mod sniffer_world {
        wasmtime::component::bindgen!({ world: "sniffer", path: "../wit/deps-0.1.0" });
    }

    /// The `router` world of 0.1.0.
    pub mod router_world {
        wasmtime::component::bindgen!({
            world: "router",
            path: "../wit/deps-0.1.0",
            with: {
                "sluice:plugin/types": super::sniffer_world::sluice::plugin::types,
                "sluice:plugin/host": super::sniffer_world::sluice::plugin::host,
            },
        });
    }

    pub use sniffer_world::sluice::plugin::types as wit;
}

/// Per-instance host state: where the plugin's log lines go, its memory cap
/// and the virtual WASI it sees.
pub struct HostState {
    log: Arc<PluginLog>,
    memory_limit: u64,
    /// Set when the limiter refused a growth, to tell a memory-cap trap from others.
    pub memory_cap_hit: bool,
    /// The largest linear memory the instance has, in bytes (to retire it
    /// before it reaches the cap).
    pub largest_memory: u64,
    /// Built on first use.
    wasi: Option<Wasi>,
    pub table: ResourceTable,
}

impl HostState {
    pub fn new(log: Arc<PluginLog>, memory_limit: u64) -> Self {
        Self { log, memory_limit, memory_cap_hit: false, largest_memory: 0, wasi: None, table: ResourceTable::new() }
    }

    /// Log what the plugin wrote without a final newline; after every call.
    pub fn flush_output(&self) {
        if let Some(wasi) = &self.wasi {
            wasi.flush_output();
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = self.wasi.get_or_insert_with(|| Wasi::new(&self.log));
        WasiCtxView { ctx: &mut wasi.ctx, table: &mut self.table }
    }
}

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_limit {
            self.memory_cap_hit = true;
            wasmtime::bail!("plugin memory cap of {} bytes reached", self.memory_limit);
        }
        self.largest_memory = self.largest_memory.max(desired as u64);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl HostState {
    fn log_line(&self, level: tracing::Level, message: &str) {
        self.log.line(Source::Log(level), output::truncate(message));
    }
}

impl wit::Host for HostState {}

impl sniffer_world::sluice::plugin::host::Host for HostState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let level = match level {
            wit::LogLevel::Trace => tracing::Level::TRACE,
            wit::LogLevel::Debug => tracing::Level::DEBUG,
            wit::LogLevel::Info => tracing::Level::INFO,
            wit::LogLevel::Warn => tracing::Level::WARN,
            wit::LogLevel::Error => tracing::Level::ERROR,
        };
        self.log_line(level, &message);
    }
}

impl v0_1::wit::Host for HostState {}

impl v0_1::sniffer_world::sluice::plugin::host::Host for HostState {
    fn log(&mut self, level: v0_1::wit::LogLevel, message: String) {
        use v0_1::wit::LogLevel;
        let level = match level {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        };
        self.log_line(level, &message);
    }
}
