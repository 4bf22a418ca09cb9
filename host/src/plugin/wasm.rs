//! The plugin runtime: runs plugins as sandboxed WebAssembly components.
//!
//! - One [`Runtime`] (one `wasmtime::Engine`) per process, with the pooling
//!   allocator so starting an instance is a few microseconds.
//! - Each plugin version is compiled once and pre-instantiated
//!   ([`WasmSniffer`] holds the `InstancePre`).
//! - Instances are started on demand, initialised once with the plugin's
//!   settings, then kept warm in a small pool and reused; an instance whose
//!   call failed is dropped, never reused.
//! - Every call gets a CPU budget (fuel) and every instance a memory cap.
//!   Nothing else is granted: WASI imports a plugin declares trap when called.

use super::{ConnFacts, PluginError, Sniffer, Verdict};
use crate::config::{MAX_PLUGIN_MEMORY, PluginLimits};
use crate::names::{BackendName, PluginName};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

mod bindings {
    wasmtime::component::bindgen!({ world: "sniffer", path: "../wit" });
}

use bindings::exports::sluice::plugin::sniff::Verdict as WitVerdict;
use bindings::sluice::plugin::types as wit;

/// Instances kept warm per plugin version; more are started when needed.
const MAX_IDLE_INSTANCES: usize = 16;
/// Instance slots in the pooling allocator, shared by all plugins.
const POOL_INSTANCES: u32 = 512;
/// Compiled components kept for reuse.
const MAX_CACHED_COMPONENTS: usize = 64;
/// Longest message a plugin may log.
const MAX_LOG_MESSAGE: usize = 1024;

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
        let mut config = wasmtime::Config::new();
        config
            .consume_fuel(true)
            .max_wasm_stack(512 << 10)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))?;
        Ok(Self { engine, compiled: Arc::default() })
    }

    /// Compile a component, or reuse the compilation of identical bytes.
    fn compile(&self, wasm: &[u8]) -> Result<Component, LoadError> {
        let digest: [u8; 32] = Sha256::digest(wasm).into();
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

    /// Compile a sniff plugin, start one instance with its settings and probe
    /// it. Compilation is CPU-heavy: call this off the async workers.
    pub fn load_sniffer(
        &self,
        name: PluginName,
        wasm: &[u8],
        settings_json: String,
        limits: PluginLimits,
    ) -> Result<Arc<WasmSniffer>, LoadError> {
        let component = self.compile(wasm)?;
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld { world: "sniffer", reason: root_cause(&e) };
        let mut linker = Linker::<HostState>::new(&self.engine);
        bindings::Sniffer::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).map_err(wrong_world)?;
        // No ambient authority: whatever else the component imports (WASI
        // filesystem, sockets, clocks, random…) traps if it is ever called.
        linker.define_unknown_imports_as_traps(&component).map_err(wrong_world)?;
        let pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        let pre = bindings::SnifferPre::new(pre).map_err(wrong_world)?;

        let sniffer = Arc::new(WasmSniffer {
            name,
            engine: self.engine.clone(),
            pre,
            settings_json,
            limits,
            idle: Mutex::new(Vec::new()),
        });
        // The probe: the plugin must start, accept its settings and answer.
        let mut instance = sniffer.start().map_err(|e| match e {
            PluginError::Init(message) => LoadError::Init(message),
            other => LoadError::Probe(other),
        })?;
        let probe = ConnFacts::probe();
        instance.classify(&probe, b"", false).map_err(LoadError::Probe)?;
        sniffer.idle.lock().expect("idle pool lock").push(instance);
        Ok(sniffer)
    }
}

/// One compiled version of a sniff plugin.
pub struct WasmSniffer {
    name: PluginName,
    engine: Engine,
    pre: bindings::SnifferPre<HostState>,
    settings_json: String,
    limits: PluginLimits,
    idle: Mutex<Vec<SnifferInstance>>,
}

impl WasmSniffer {
    /// Start a fresh instance and initialise it with the settings.
    fn start(&self) -> Result<SnifferInstance, PluginError> {
        let state =
            HostState { plugin: self.name.clone(), memory_limit: self.limits.memory_limit, memory_cap_hit: false };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        set_fuel(&mut store, self.limits.cpu_budget)?;
        let bindings = match self.pre.instantiate(&mut store) {
            Ok(bindings) => bindings,
            Err(_) if store.data().memory_cap_hit => return Err(PluginError::MemoryCap),
            Err(e) => return Err(PluginError::Start(root_cause(&e))),
        };
        match bindings.sluice_plugin_setup().call_init(&mut store, &self.settings_json) {
            Ok(Ok(())) => Ok(SnifferInstance { store, bindings, cpu_budget: self.limits.cpu_budget }),
            Ok(Err(message)) => Err(PluginError::Init(message)),
            Err(e) => Err(call_failure(&store, &e)),
        }
    }

    /// Take a warm instance, or start one.
    fn checkout(&self) -> Result<SnifferInstance, PluginError> {
        let warm = self.idle.lock().expect("idle pool lock").pop();
        match warm {
            Some(instance) => Ok(instance),
            None => self.start(),
        }
    }

    fn checkin(&self, instance: SnifferInstance) {
        let mut idle = self.idle.lock().expect("idle pool lock");
        if idle.len() < MAX_IDLE_INSTANCES {
            idle.push(instance);
        }
    }

    /// Instantiate, initialise and classify once on a fresh instance, as the
    /// first decision after a reload does. For benchmarks.
    pub fn classify_cold(&self, conn: &ConnFacts, head: &[u8], complete: bool) -> Result<Verdict, PluginError> {
        self.start()?.classify(conn, head, complete)
    }
}

impl Sniffer for WasmSniffer {
    fn name(&self) -> &PluginName {
        &self.name
    }

    fn classify(&self, conn: &ConnFacts, head: &[u8], complete: bool) -> Result<Verdict, PluginError> {
        let mut instance = self.checkout()?;
        let verdict = instance.classify(conn, head, complete)?;
        self.checkin(instance);
        Ok(verdict)
    }
}

/// A started, initialised instance of a sniff plugin.
struct SnifferInstance {
    store: Store<HostState>,
    bindings: bindings::Sniffer,
    cpu_budget: u64,
}

impl SnifferInstance {
    /// One call; on error the instance must be dropped (it is consumed by
    /// the caller's `?`, never checked back in).
    fn classify(&mut self, conn: &ConnFacts, head: &[u8], complete: bool) -> Result<Verdict, PluginError> {
        set_fuel(&mut self.store, self.cpu_budget)?;
        let conn = wit_connection(conn);
        let sniff = self.bindings.sluice_plugin_sniff();
        match sniff.call_classify(&mut self.store, &conn, head, complete) {
            Ok(verdict) => Ok(verdict.into()),
            Err(e) => Err(call_failure(&self.store, &e)),
        }
    }
}

/// Per-instance host state: identity for logs, and the memory cap.
struct HostState {
    plugin: PluginName,
    memory_limit: u64,
    /// Set when the limiter refused a growth, to tell a memory-cap trap from others.
    memory_cap_hit: bool,
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

impl bindings::sluice::plugin::types::Host for HostState {}

impl bindings::sluice::plugin::host::Host for HostState {
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

fn set_fuel(store: &mut Store<HostState>, fuel: u64) -> Result<(), PluginError> {
    store.set_fuel(fuel).map_err(|e| PluginError::Start(root_cause(&e)))
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

fn wit_connection(conn: &ConnFacts) -> wit::Connection {
    wit::Connection {
        listener: conn.listener.to_string(),
        client_addr: conn.client_addr.to_string(),
        local_addr: conn.local_addr.to_string(),
        tls: conn.tls.as_ref().map(|tls| wit::TlsInfo { server_name: tls.server_name.clone(), alpn: tls.alpn.clone() }),
    }
}

impl From<WitVerdict> for Verdict {
    fn from(verdict: WitVerdict) -> Self {
        match verdict {
            WitVerdict::NeedMore => Verdict::NeedMore,
            WitVerdict::TerminateTls => Verdict::TerminateTls,
            WitVerdict::Http => Verdict::Http,
            WitVerdict::ForwardDefault => Verdict::ForwardDefault,
            WitVerdict::Forward(backend) => Verdict::Forward(BackendName::new(backend)),
            WitVerdict::Reply(reply) => Verdict::Reply { data: reply.data, then_close: reply.then_close },
            WitVerdict::Reject(reason) => Verdict::Reject(reason),
        }
    }
}
