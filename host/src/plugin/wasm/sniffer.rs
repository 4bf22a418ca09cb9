//! The `sniffer` world on the runtime: [`WasmSniffer`] implements the core's
//! [`Sniffer`] trait.

use super::host::sniffer_world::Sniffer as SnifferBindings;
use super::host::sniffer_world::SnifferPre;
use super::host::sniffer_world::exports::sluice::plugin::sniff::Verdict as WitVerdict;
use super::host::{HostState, sniffer_world};
use super::{LoadError, Loaded, Runtime, World, wit_connection};
use crate::config::PluginLimits;
use crate::names::{BackendName, PluginName};
use crate::plugin::{ConnFacts, PluginError, Sniffer, Verdict};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

/// A loaded sniff plugin.
pub type WasmSniffer = Loaded<SnifferBindings>;

impl World for SnifferBindings {
    const NAME: &'static str = "sniffer";
    type Pre = SnifferPre<HostState>;

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        sniffer_world::Sniffer::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
    }

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        SnifferPre::new(pre)
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate(store)
    }

    fn init(&self, store: &mut Store<HostState>, settings: &str) -> wasmtime::Result<Result<(), String>> {
        self.sluice_plugin_setup().call_init(store, settings)
    }

    fn probe(&self, store: &mut Store<HostState>) -> wasmtime::Result<()> {
        let conn = wit_connection(&ConnFacts::probe());
        self.sluice_plugin_sniff().call_classify(store, &conn, b"", false).map(drop)
    }
}

impl Runtime {
    /// Load a sniff plugin: compile, start one instance with its settings,
    /// probe it. CPU-heavy: call this off the async workers.
    pub fn load_sniffer(
        &self,
        name: PluginName,
        wasm: &[u8],
        settings_json: String,
        limits: PluginLimits,
    ) -> Result<Arc<WasmSniffer>, LoadError> {
        self.load::<SnifferBindings>(name, wasm, settings_json, limits).map(Arc::new)
    }
}

fn classify(
    bindings: &SnifferBindings,
    store: &mut Store<HostState>,
    conn: &ConnFacts,
    head: &[u8],
    complete: bool,
) -> wasmtime::Result<Verdict> {
    let conn = wit_connection(conn);
    bindings.sluice_plugin_sniff().call_classify(store, &conn, head, complete).map(Verdict::from)
}

impl WasmSniffer {
    /// Instantiate, initialise and classify once on a fresh instance, as the
    /// first decision after a reload does. For benchmarks.
    pub fn classify_cold(&self, conn: &ConnFacts, head: &[u8], complete: bool) -> Result<Verdict, PluginError> {
        self.call_cold(|bindings, store| classify(bindings, store, conn, head, complete))
    }
}

impl Sniffer for WasmSniffer {
    fn name(&self) -> &PluginName {
        Loaded::name(self)
    }

    fn version(&self) -> &str {
        &self.digest
    }

    fn classify(&self, conn: &ConnFacts, head: &[u8], complete: bool) -> Result<Verdict, PluginError> {
        self.call(|bindings, store| classify(bindings, store, conn, head, complete))
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
