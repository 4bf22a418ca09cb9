//! The plugin runtime: runs plugins as sandboxed WebAssembly components.
//!
//! - One [`Runtime`] (one `wasmtime::Engine`) per process, with the pooling
//!   allocator so starting an instance is a few microseconds.
//! - Each plugin version is compiled once (identical bytes are compiled once
//!   per process) and pre-instantiated: a [`Loaded`] holds the `InstancePre`.
//! - Instances are started on demand, initialised once with the plugin's
//!   settings, then kept warm in a small pool and reused; an instance whose
//!   call failed is dropped, never reused.
//! - Every call gets a CPU budget (fuel) and every instance a memory cap.
//!   Nothing else is granted: WASI imports a plugin declares trap when called.
//!
//! [`sniffer`] and [`router`] adapt the two worlds of the contract to the
//! core's [`Sniffer`](super::Sniffer) and [`Router`](super::Router) traits.

mod host;
pub mod router;
pub mod sniffer;

use super::{ConnFacts, PluginError};
use crate::config::{MAX_PLUGIN_MEMORY, PluginLimits};
use crate::metrics;
use crate::names::PluginName;
use host::HostState;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

pub use router::WasmRouter;
pub use sniffer::WasmSniffer;

/// Instances kept warm per plugin version; more are started when needed.
const MAX_IDLE_INSTANCES: usize = 16;
/// Instance slots in the pooling allocator, shared by all plugins.
const POOL_INSTANCES: u32 = 512;
/// Dirty bytes of a freed memory or table slot reset by copying instead of
/// `madvise`, when the kernel can tell which pages were written (Linux 6.7+
/// `PAGEMAP_SCAN`). A decision dirties a few pages; resetting them in place
/// avoids the syscall, the TLB flush and a page fault per page on the next
/// instance. At most this much stays resident per used slot.
const KEEP_RESIDENT: usize = 1 << 20;
/// Compiled components kept for reuse.
const MAX_CACHED_COMPONENTS: usize = 64;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    #[error("does not fit the `{world}` world of sluice:plugin@0.1.0: {reason}")]
    WrongWorld { world: &'static str, reason: String },
    #[error("refused its settings: {0}")]
    Init(String),
    #[error("failed its probe call: {0}")]
    Probe(PluginError),
}

/// The WebAssembly engine shared by every plugin, and the components it has
/// compiled (by content hash), so reloading an unchanged file costs nothing.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    compiled: Arc<Mutex<HashMap<[u8; 32], Component>>>,
}

impl Runtime {
    /// The process's runtime: one engine (and one instance pool) per process.
    pub fn new() -> anyhow::Result<Self> {
        static SHARED: OnceLock<Runtime> = OnceLock::new();
        if let Some(runtime) = SHARED.get() {
            return Ok(runtime.clone());
        }
        let runtime = Self::build()?;
        Ok(SHARED.get_or_init(|| runtime).clone())
    }

    fn build() -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size(MAX_PLUGIN_MEMORY as usize);
        // Without the scan, keep-resident would `memset` the whole prefix on
        // every reset, slower than `madvise` for a mostly untouched memory.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT);
        }
        let mut config = wasmtime::Config::new();
        config
            .consume_fuel(true)
            .max_wasm_stack(512 << 10)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))?;
        Ok(Self { engine, compiled: Arc::default() })
    }

    /// Compile a component, or reuse the compilation of identical bytes.
    fn compile(&self, wasm: &[u8], digest: [u8; 32]) -> Result<Component, LoadError> {
        if let Some(component) = self.compiled.lock().expect("compile cache lock").get(&digest) {
            return Ok(component.clone());
        }
        let component = Component::new(&self.engine, wasm).map_err(|e| LoadError::Compile(root_cause(&e)))?;
        let mut compiled = self.compiled.lock().expect("compile cache lock");
        if compiled.len() >= MAX_CACHED_COMPONENTS {
            compiled.clear(); // plenty for the plugins in use; old versions go
        }
        compiled.insert(digest, component.clone());
        Ok(component)
    }

    /// Compile, link and pre-instantiate a plugin for world `W`, then start
    /// one instance with its settings and probe it. CPU-heavy: call this off
    /// the async workers.
    fn load<W: World>(
        &self,
        name: PluginName,
        wasm: &[u8],
        settings_json: String,
        limits: PluginLimits,
    ) -> Result<Loaded<W>, LoadError> {
        let digest: [u8; 32] = Sha256::digest(wasm).into();
        let component = self.compile(wasm, digest)?;
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld { world: W::NAME, reason: root_cause(&e) };
        let mut linker = Linker::<HostState>::new(&self.engine);
        W::add_to_linker(&mut linker).map_err(wrong_world)?;
        // No ambient authority: whatever else the component imports (WASI
        // filesystem, sockets, clocks, random…) traps if it is ever called.
        linker.define_unknown_imports_as_traps(&component).map_err(wrong_world)?;
        let pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        let pre = W::pre(pre).map_err(wrong_world)?;

        let digest = digest.iter().map(|b| format!("{b:02x}")).collect();
        let labels = vec![("plugin", name.to_string()), ("world", W::NAME.to_string())];
        let latency = metrics::histogram("sluice_plugin_decision_seconds", labels);
        let engine = self.engine.clone();
        let loaded = Loaded { name, digest, latency, engine, pre, settings_json, limits, idle: Mutex::default() };
        let mut instance = loaded.start().map_err(|e| match e {
            PluginError::Init(message) => LoadError::Init(message),
            other => LoadError::Probe(other),
        })?;
        instance.call(|bindings: &W, store| bindings.probe(store)).map_err(LoadError::Probe)?;
        loaded.checkin(instance);
        Ok(loaded)
    }
}

/// What the runtime needs to know about one world of the contract.
trait World: Sized + Send + 'static {
    const NAME: &'static str;
    type Pre: Send + Sync;
    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self>;
    fn init(&self, store: &mut Store<HostState>, settings: &str) -> wasmtime::Result<Result<(), String>>;
    /// A harmless call the plugin must answer at load time.
    fn probe(&self, store: &mut Store<HostState>) -> wasmtime::Result<()>;
}

/// One compiled version of a plugin for world `W`, with its pool of warm
/// instances. Used from outside as [`WasmSniffer`] or [`WasmRouter`]; the
/// `World` trait that ties it to the generated bindings stays private.
#[allow(private_bounds)]
pub struct Loaded<W: World> {
    name: PluginName,
    /// SHA-256 of the component, hex: which version is loaded.
    digest: String,
    latency: Arc<metrics::Histogram>,
    engine: Engine,
    pre: W::Pre,
    settings_json: String,
    limits: PluginLimits,
    idle: Mutex<Vec<Instance<W>>>,
}

#[allow(private_bounds)]
impl<W: World> Loaded<W> {
    pub fn name(&self) -> &PluginName {
        &self.name
    }

    /// Start a fresh instance and initialise it with the settings.
    fn start(&self) -> Result<Instance<W>, PluginError> {
        let state = HostState::new(self.name.clone(), self.limits.memory_limit);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        store.set_fuel(self.limits.cpu_budget).map_err(|e| PluginError::Start(root_cause(&e)))?;
        let bindings = match W::instantiate(&self.pre, &mut store) {
            Ok(bindings) => bindings,
            Err(_) if store.data().memory_cap_hit => return Err(PluginError::MemoryCap),
            Err(e) => return Err(PluginError::Start(root_cause(&e))),
        };
        match bindings.init(&mut store, &self.settings_json) {
            Ok(Ok(())) => Ok(Instance { store, bindings, cpu_budget: self.limits.cpu_budget }),
            Ok(Err(message)) => Err(PluginError::Init(message)),
            Err(e) => Err(call_failure(&store, &e)),
        }
    }

    fn checkin(&self, instance: Instance<W>) {
        let mut idle = self.idle.lock().expect("idle pool lock");
        if idle.len() < MAX_IDLE_INSTANCES {
            idle.push(instance);
        }
    }

    /// Run one call on a warm instance (or a fresh one); a failed instance
    /// is dropped instead of going back to the pool.
    fn call<T>(&self, f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<T>) -> Result<T, PluginError> {
        let started = std::time::Instant::now();
        let result = self.call_unmeasured(f);
        self.latency.observe(started.elapsed());
        if let Err(e) = &result {
            let labels = vec![
                ("plugin", self.name.to_string()),
                ("world", W::NAME.to_string()),
                ("reason", e.label().to_string()),
            ];
            metrics::count("sluice_plugin_failures_total", labels, 1);
        }
        result
    }

    fn call_unmeasured<T>(
        &self,
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let warm = self.idle.lock().expect("idle pool lock").pop();
        let mut instance = match warm {
            Some(instance) => instance,
            None => self.start()?,
        };
        let result = instance.call(f)?;
        self.checkin(instance);
        Ok(result)
    }

    /// Run one call on a freshly started instance, as the first decision
    /// after a reload does. For benchmarks.
    fn call_cold<T>(&self, f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<T>) -> Result<T, PluginError> {
        self.start()?.call(f)
    }
}

/// A started, initialised instance.
struct Instance<W> {
    store: Store<HostState>,
    bindings: W,
    cpu_budget: u64,
}

impl<W> Instance<W> {
    fn call<T>(&mut self, f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<T>) -> Result<T, PluginError> {
        self.store.set_fuel(self.cpu_budget).map_err(|e| PluginError::Start(root_cause(&e)))?;
        f(&self.bindings, &mut self.store).map_err(|e| call_failure(&self.store, &e))
    }
}

/// Name the reason a call into the plugin failed.
fn call_failure(store: &Store<HostState>, error: &wasmtime::Error) -> PluginError {
    if store.data().memory_cap_hit {
        return PluginError::MemoryCap;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::CpuBudget,
        Some(trap) => PluginError::Trap(trap.to_string()),
        None => PluginError::Trap(root_cause(error)),
    }
}

fn root_cause(error: &wasmtime::Error) -> String {
    error.root_cause().to_string()
}

/// The `connection` record handed to plugins.
fn wit_connection(conn: &ConnFacts) -> host::wit::Connection {
    host::wit::Connection {
        listener: conn.listener.to_string(),
        client_addr: conn.client_addr.to_string(),
        local_addr: conn.local_addr.to_string(),
        tls: conn
            .tls
            .as_ref()
            .map(|tls| host::wit::TlsInfo { server_name: tls.server_name.clone(), alpn: tls.alpn.clone() }),
        hello: conn
            .hello
            .as_ref()
            .map(|hello| host::wit::TlsHello { server_name: hello.server_name.clone(), alpn: hello.alpn.clone() }),
    }
}
