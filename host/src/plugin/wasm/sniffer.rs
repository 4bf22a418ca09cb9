//! The `sniffer` world on the runtime: [`WasmSniffer`] implements the core's
//! [`Sniffer`] trait, for components of either contract version.

use super::contract::ContractVersion;
use super::host::sniffer_world::exports::sluice::plugin::setup as wit_setup;
use super::host::sniffer_world::exports::sluice::plugin::sniff::Verdict as WitVerdict;
use super::host::v0_1::sniffer_world as v0_1;
use super::host::{HostState, sniffer_world};
use super::{LoadError, Loaded, Runtime, World, wit_connection_v0_1};
use crate::config::PluginLimits;
use crate::names::{BackendName, PluginName};
use crate::plugin::{ConnFacts, Manifest, PluginError, Sniffer, Verdict};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

/// The bindings of one sniff plugin instance, by contract version.
pub enum SnifferBindings {
    V0_2(sniffer_world::Sniffer),
    V0_1(v0_1::Sniffer),
}

/// A pre-instantiated sniff plugin, by contract version.
pub enum SnifferPre {
    V0_2(sniffer_world::SnifferPre<HostState>),
    V0_1(v0_1::SnifferPre<HostState>),
}

/// A loaded sniff plugin.
pub type WasmSniffer = Loaded<SnifferBindings>;

impl World for SnifferBindings {
    const NAME: &'static str = "sniffer";
    type Pre = SnifferPre;

    fn add_to_linker(linker: &mut Linker<HostState>, version: ContractVersion) -> wasmtime::Result<()> {
        match version {
            ContractVersion::V0_2 => sniffer_world::Sniffer::add_to_linker::<_, HasSelf<_>>(linker, |state| state),
            ContractVersion::V0_1 => v0_1::Sniffer::add_to_linker::<_, HasSelf<_>>(linker, |state| state),
        }
    }

    fn pre(pre: InstancePre<HostState>, version: ContractVersion) -> wasmtime::Result<Self::Pre> {
        Ok(match version {
            ContractVersion::V0_2 => SnifferPre::V0_2(sniffer_world::SnifferPre::new(pre)?),
            ContractVersion::V0_1 => SnifferPre::V0_1(v0_1::SnifferPre::new(pre)?),
        })
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        Ok(match pre {
            SnifferPre::V0_2(pre) => SnifferBindings::V0_2(pre.instantiate(store)?),
            SnifferPre::V0_1(pre) => SnifferBindings::V0_1(pre.instantiate(store)?),
        })
    }

    fn init(&self, store: &mut Store<HostState>, settings: &str) -> wasmtime::Result<Result<Manifest, String>> {
        Ok(match self {
            SnifferBindings::V0_2(bindings) => {
                bindings.sluice_plugin_setup().call_init(store, settings)?.map(|manifest: wit_setup::Manifest| {
                    // A sniff plugin's header interest means nothing: it sees no request.
                    super::declared(manifest.backends, None)
                })
            }
            SnifferBindings::V0_1(bindings) => {
                bindings.sluice_plugin_setup().call_init(store, settings)?.map(|()| Manifest::UNDECLARED)
            }
        })
    }

    fn probe(&self, store: &mut Store<HostState>, _manifest: &Manifest) -> wasmtime::Result<()> {
        classify(self, store, &ConnFacts::probe(), b"", false).map(drop)
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
    match bindings {
        SnifferBindings::V0_2(bindings) => super::scratch::with_connection(conn, |conn| {
            bindings.sluice_plugin_sniff().call_classify(store, conn, head, complete).map(Verdict::from)
        }),
        SnifferBindings::V0_1(bindings) => {
            use v0_1::exports::sluice::plugin::sniff::Verdict as Old;
            let conn = wit_connection_v0_1(conn);
            let verdict = bindings.sluice_plugin_sniff().call_classify(store, &conn, head, complete)?;
            Ok(match verdict {
                Old::NeedMore => Verdict::NeedMore,
                Old::TerminateTls => Verdict::TerminateTls,
                Old::Http => Verdict::Http,
                Old::ForwardDefault => Verdict::ForwardDefault,
                Old::Forward(backend) => Verdict::Forward(BackendName::new(backend)),
                Old::Reply(reply) => Verdict::Reply { data: reply.data, then_close: reply.then_close },
                Old::Reject(reason) => Verdict::Reject(reason),
            })
        }
    }
}

impl WasmSniffer {
    /// Instantiate, initialise and classify once on a fresh instance, as the
    /// first decision after a reload does. For benchmarks.
    pub fn classify_cold(&self, conn: &ConnFacts, head: &[u8], complete: bool) -> Result<Verdict, PluginError> {
        let verdict = self.call_cold(|bindings, store| classify(bindings, store, conn, head, complete))?;
        self.checked(verdict)
    }

    /// The verdict, unless it names a backend the plugin did not declare.
    fn checked(&self, verdict: Verdict) -> Result<Verdict, PluginError> {
        if let Verdict::Forward(backend) = &verdict {
            self.check_backend(backend)?;
        }
        Ok(verdict)
    }
}

impl Sniffer for WasmSniffer {
    fn name(&self) -> &PluginName {
        Loaded::name(self)
    }

    fn version(&self) -> &str {
        &self.digest
    }

    fn manifest(&self) -> &Manifest {
        Loaded::manifest(self)
    }

    fn classify(&self, conn: &ConnFacts, head: &[u8], complete: bool) -> Result<Verdict, PluginError> {
        let verdict = self.call(|bindings, store| classify(bindings, store, conn, head, complete))?;
        self.checked(verdict)
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
