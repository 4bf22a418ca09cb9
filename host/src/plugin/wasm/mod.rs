//! The plugin runtime: runs plugins as sandboxed WebAssembly components.
//!
//! - One [`Runtime`] (one `wasmtime::Engine`) per process, with the pooling
//!   allocator so starting an instance is a few microseconds.
//! - Each plugin version is compiled once (identical bytes are compiled once
//!   per process) and pre-instantiated: a [`Loaded`] holds the `InstancePre`.
//! - Instances are started on demand, initialised once with the plugin's
//!   settings, then kept warm in a small pool and reused; an instance whose
//!   call failed is dropped, never reused.
//! - An instance is retired between calls once it has served
//!   `max-instance-calls` calls or its memory passed 3/4 of its cap, so a
//!   plugin that leaks slowly never fails a request.
//! - Every call gets a CPU budget (fuel) and every instance a memory cap.
//! - Plugins see a virtual WASI ([`wasi`]): clocks, random, an empty
//!   environment, stdout/stderr into the log ([`output`]); no files, no
//!   network. A component importing anything else is refused at load.
//!
//! [`sniffer`] and [`router`] adapt the two worlds of the contract to the
//! core's [`Sniffer`](super::Sniffer) and [`Router`](super::Router) traits;
//! [`contract`] tells which version of the contract (0.2.0 or 0.1.0) a
//! component was built against.

pub mod contract;
mod host;
pub mod output;
pub mod router;
mod scratch;
pub mod sniffer;
pub mod wasi;

use super::{ConnFacts, Manifest, PluginError};
use crate::config::{MAX_PLUGIN_MEMORY, PluginLimits};
use crate::metrics;
use crate::names::{BackendName, PluginName};
use contract::ContractVersion;
use host::HostState;
use output::{LogTarget, PluginLog};
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
/// Idle instances kept warm across all plugins. Calls are synchronous, so at
/// most one instance per worker thread is in use besides these: however
/// many plugins are loaded (a thousand tenants each have their own), the
/// pool's [`POOL_INSTANCES`] slots never run out. Beyond it, an instance is
/// dropped after its call instead of kept warm.
const MAX_IDLE_TOTAL: usize = POOL_INSTANCES as usize / 2;

/// One of the [`MAX_IDLE_TOTAL`] places, held by an idle instance.
struct IdleSlot;

static IDLE_TOTAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl IdleSlot {
    fn take() -> Option<IdleSlot> {
        use std::sync::atomic::Ordering::Relaxed;
        IDLE_TOTAL.fetch_update(Relaxed, Relaxed, |n| (n < MAX_IDLE_TOTAL).then_some(n + 1)).ok().map(|_| IdleSlot)
    }
}

impl Drop for IdleSlot {
    fn drop(&mut self) {
        IDLE_TOTAL.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Compiled components kept for reuse.
const MAX_CACHED_COMPONENTS: usize = 64;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("is not a valid WebAssembly component: {0}")]
    Compile(String),
    #[error("imports `{import}`, which sluice does not provide: {why}")]
    UnprovidedImport { import: String, why: &'static str },
    #[error("does not fit the `{world}` world of sluice:plugin@{version}: {reason}")]
    WrongWorld { world: &'static str, version: &'static str, reason: String },
    /// The component exports no version of the contract this host knows.
    #[error("is not a sluice `{world}` plugin: {reason}")]
    UnknownContract { world: &'static str, reason: String },
    #[error("refused its settings: {0}")]
    Init(String),
    /// `init` trapped, ran out of fuel or memory, or exited.
    #[error("`init` {0}")]
    InitFailed(PluginError),
    #[error("failed its probe call: {0}")]
    Probe(PluginError),
}

/// The WebAssembly engine shared by every plugin, and the components it has
/// compiled (by content hash), so reloading an unchanged file costs nothing.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    compiled: Arc<Mutex<HashMap<[u8; 32], Component>>>,
    /// Where the plugins' log lines and stdout/stderr go.
    log_target: LogTarget,
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
        config.consume_fuel(true).max_wasm_stack(512 << 10);
        // The pool reserves terabytes of address space up front, which
        // valgrind cannot map: `SLUICE_WASM_ON_DEMAND=1` allocates instances
        // one by one instead, for profiling under callgrind (docs/PERFORMANCE.md).
        if std::env::var_os("SLUICE_WASM_ON_DEMAND").is_none() {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))?;
        Ok(Self { engine, compiled: Arc::default(), log_target: LogTarget::Tracing })
    }

    /// This runtime, with the log lines of the plugins it loads from now on
    /// collected in a list instead of the proxy log (`sluice plugin test`).
    pub fn capturing_logs(&self) -> (Runtime, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (Runtime { log_target: LogTarget::Capture(lines.clone()), ..self.clone() }, lines)
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
        wasi::check_imports(&component, &self.engine)
            .map_err(|e| LoadError::UnprovidedImport { import: e.import, why: e.why })?;
        let version = ContractVersion::of(&component, &self.engine)
            .map_err(|reason| LoadError::UnknownContract { world: W::NAME, reason })?;
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            world: W::NAME,
            version: version.number(),
            reason: root_cause(&e),
        };
        let mut linker = Linker::<HostState>::new(&self.engine);
        W::add_to_linker(&mut linker, version).map_err(wrong_world)?;
        wasi::add_to_linker(&mut linker).map_err(wrong_world)?;
        wasi::deny_network(&component, &self.engine, &mut linker).map_err(wrong_world)?;
        let pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        let pre = W::pre(pre, version).map_err(wrong_world)?;

        let digest = digest.iter().map(|b| format!("{b:02x}")).collect();
        let labels = vec![("plugin", name.to_string()), ("world", W::NAME.to_string())];
        let latency = metrics::histogram("sluice_plugin_decision_seconds", labels);
        let engine = self.engine.clone();
        let log = Arc::new(PluginLog::new(name.clone(), self.log_target.clone()));
        let idle = Mutex::default();
        let manifest = Manifest::UNDECLARED;
        let mut loaded = Loaded { name, digest, latency, engine, pre, settings_json, limits, log, idle, manifest };
        let (mut instance, manifest) = loaded.start().map_err(|e| match e {
            StartError { error: PluginError::Init(message), .. } => LoadError::Init(message),
            StartError { in_init: true, error } => LoadError::InitFailed(error),
            StartError { in_init: false, error } => LoadError::Probe(error),
        })?;
        if version == ContractVersion::V0_1 {
            contract::note_old_contract(&loaded.name, &loaded.digest);
        }
        loaded.manifest = manifest;
        let manifest = &loaded.manifest;
        instance.call(|bindings: &W, store| bindings.probe(store, manifest)).map_err(LoadError::Probe)?;
        // Kept warm for the first decision, unless loaded plugins already hold half the
        // idle places: the rest stay for instances that serve decisions.
        if IDLE_TOTAL.load(std::sync::atomic::Ordering::Relaxed) < MAX_IDLE_TOTAL / 2 {
            loaded.checkin(instance);
        }
        Ok(loaded)
    }
}

/// What the runtime needs to know about one world of the contract.
trait World: Sized + Send + 'static {
    const NAME: &'static str;
    type Pre: Send + Sync;
    fn add_to_linker(linker: &mut Linker<HostState>, version: ContractVersion) -> wasmtime::Result<()>;
    fn pre(pre: InstancePre<HostState>, version: ContractVersion) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self>;
    /// `init`, with its answer as the host's [`Manifest`] (0.1.0: undeclared).
    fn init(&self, store: &mut Store<HostState>, settings: &str) -> wasmtime::Result<Result<Manifest, String>>;
    /// A harmless call the plugin must answer at load time.
    fn probe(&self, store: &mut Store<HostState>, manifest: &Manifest) -> wasmtime::Result<()>;
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
    log: Arc<PluginLog>,
    idle: Mutex<Vec<Instance<W>>>,
    /// What the first instance's `init` declared.
    manifest: Manifest,
}

#[allow(private_bounds)]
impl<W: World> Loaded<W> {
    pub fn name(&self) -> &PluginName {
        &self.name
    }

    /// The linear memory of a warm instance, in bytes, if one is idle. For
    /// measurements.
    pub fn warm_instance_memory(&self) -> Option<u64> {
        self.idle.lock().expect("idle pool lock").last().map(|instance| instance.store.data().largest_memory)
    }

    /// What the plugin declared at `init`.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Start a fresh instance and initialise it with the settings; with the
    /// manifest its `init` answered.
    fn start(&self) -> Result<(Instance<W>, Manifest), StartError> {
        let instantiating = |error| StartError { in_init: false, error };
        let state = HostState::new(self.log.clone(), self.limits.memory_limit);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state);
        store.set_fuel(self.limits.cpu_budget).map_err(|e| instantiating(PluginError::Start(root_cause(&e))))?;
        let bindings = match W::instantiate(&self.pre, &mut store) {
            Ok(bindings) => bindings,
            Err(e) => {
                store.data().flush_output();
                return Err(instantiating(match call_failure(&store, &e) {
                    PluginError::Trap(message) => PluginError::Start(message),
                    other => other,
                }));
            }
        };
        let result = bindings.init(&mut store, &self.settings_json);
        store.data().flush_output();
        let error = match result {
            Ok(Ok(manifest)) => {
                let instance =
                    Instance { store, bindings, cpu_budget: self.limits.cpu_budget, calls: 0, idle_slot: None };
                return Ok((instance, manifest));
            }
            Ok(Err(message)) => PluginError::Init(message),
            Err(e) => call_failure(&store, &e),
        };
        Err(StartError { in_init: true, error })
    }

    /// Put an instance back in the pool, or retire it if it served its
    /// share of calls or its memory nears the cap: a fresh instance then
    /// starts with the plugin's initial memory, before a slow leak can make
    /// a call fail.
    fn checkin(&self, mut instance: Instance<W>) {
        let retire = if instance.calls >= self.limits.max_instance_calls {
            Some("calls")
        } else if instance.store.data().largest_memory > self.limits.memory_limit / 4 * 3 {
            Some("memory")
        } else {
            None
        };
        if let Some(reason) = retire {
            let labels = vec![("plugin", self.name.to_string()), ("reason", reason.to_string())];
            metrics::count("sluice_plugin_instances_retired_total", labels, 1);
            return;
        }
        let mut idle = self.idle.lock().expect("idle pool lock");
        if idle.len() < MAX_IDLE_INSTANCES
            && let Some(slot) = IdleSlot::take()
        {
            instance.idle_slot = Some(slot);
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
            self.count_failure(e);
        }
        result
    }

    /// Count a call that produced no decision, by reason.
    fn count_failure(&self, error: &PluginError) {
        let labels = vec![
            ("plugin", self.name.to_string()),
            ("world", W::NAME.to_string()),
            ("reason", error.label().to_string()),
        ];
        metrics::count("sluice_plugin_failures_total", labels, 1);
    }

    /// A decision naming `backend`, refused unless the manifest declared it.
    fn check_backend(&self, backend: &BackendName) -> Result<(), PluginError> {
        if self.manifest.allows(backend) {
            return Ok(());
        }
        let error = PluginError::UndeclaredBackend(backend.to_string());
        self.count_failure(&error);
        Err(error)
    }

    fn call_unmeasured<T>(
        &self,
        f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let warm = self.idle.lock().expect("idle pool lock").pop();
        let mut instance = match warm {
            Some(mut instance) => {
                instance.idle_slot = None;
                instance
            }
            None => self.start()?.0,
        };
        let result = instance.call(f)?;
        self.checkin(instance);
        Ok(result)
    }

    /// Run one call on a freshly started instance, as the first decision
    /// after a reload does. For benchmarks.
    fn call_cold<T>(&self, f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<T>) -> Result<T, PluginError> {
        self.start()?.0.call(f)
    }
}

/// A started, initialised instance.
struct Instance<W> {
    store: Store<HostState>,
    bindings: W,
    cpu_budget: u64,
    /// Calls served, for retiring it.
    calls: u64,
    /// Held while it waits in the idle pool.
    idle_slot: Option<IdleSlot>,
}

impl<W> Instance<W> {
    fn call<T>(&mut self, f: impl FnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<T>) -> Result<T, PluginError> {
        self.store.set_fuel(self.cpu_budget).map_err(|e| PluginError::Start(root_cause(&e)))?;
        self.calls += 1;
        let result = f(&self.bindings, &mut self.store);
        // Whatever the plugin wrote reaches the log, also when it then trapped.
        self.store.data().flush_output();
        result.map_err(|e| call_failure(&self.store, &e))
    }
}

/// Why an instance could not be started, and whether `init` had begun.
struct StartError {
    in_init: bool,
    error: PluginError,
}

impl From<StartError> for PluginError {
    fn from(e: StartError) -> Self {
        e.error
    }
}

/// Name the reason a call into the plugin failed.
fn call_failure(store: &Store<HostState>, error: &wasmtime::Error) -> PluginError {
    if store.data().memory_cap_hit {
        return PluginError::MemoryCap;
    }
    if let Some(status) = wasi::exit_status(error) {
        return PluginError::Exit(status);
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

/// The host's manifest from what a 0.2.0 plugin declared: its backends, and
/// the headers it reads (None: all).
fn declared(backends: Vec<String>, headers: Option<Vec<String>>) -> Manifest {
    Manifest {
        backends: Some(backends.into_iter().map(BackendName::new).collect()),
        headers: match headers {
            None => super::HeaderInterest::All,
            Some(names) => super::HeaderInterest::Only(names.into_iter().map(|n| n.to_ascii_lowercase()).collect()),
        },
    }
}

/// The `connection` record handed to plugins.
fn wit_connection(conn: &ConnFacts) -> host::wit::Connection {
    host::wit::Connection {
        tenant: conn.tenant.clone(),
        listener: conn.listener.to_string(),
        client_addr: addr_text(conn.client_addr),
        local_addr: addr_text(conn.local_addr),
        tls: wit_tls(conn),
        hello: wit_hello(conn),
    }
}

/// The `tls` field of the connection record (TLS terminated here).
fn wit_tls(conn: &ConnFacts) -> Option<host::wit::TlsInfo> {
    conn.tls.as_ref().map(|tls| host::wit::TlsInfo { server_name: tls.server_name.clone(), alpn: tls.alpn.clone() })
}

/// The `hello` field of the connection record (a ClientHello seen while sniffing).
fn wit_hello(conn: &ConnFacts) -> Option<host::wit::TlsHello> {
    conn.hello
        .as_ref()
        .map(|hello| host::wit::TlsHello { server_name: hello.server_name.clone(), alpn: hello.alpn.clone() })
}

/// A socket address as the plugin gets it, by the digit writer (`Display` costs more).
fn addr_text(addr: std::net::SocketAddr) -> String {
    let mut text = String::new();
    crate::text::rewrite(&mut text, |out| crate::text::push_socket_addr(out, addr));
    text
}

/// The `connection` record of sluice:plugin@0.1.0 (no tenant).
fn wit_connection_v0_1(conn: &ConnFacts) -> host::v0_1::wit::Connection {
    use host::v0_1::wit;
    wit::Connection {
        listener: conn.listener.to_string(),
        client_addr: addr_text(conn.client_addr),
        local_addr: addr_text(conn.local_addr),
        tls: conn.tls.as_ref().map(|tls| wit::TlsInfo { server_name: tls.server_name.clone(), alpn: tls.alpn.clone() }),
        hello: conn
            .hello
            .as_ref()
            .map(|hello| wit::TlsHello { server_name: hello.server_name.clone(), alpn: hello.alpn.clone() }),
    }
}
