//! The `router` world on the runtime: [`WasmRouter`] implements the core's
//! [`Router`] trait, for components of either contract version.

use super::contract::ContractVersion;
use super::host::router_world::exports::sluice::plugin::route as wit_route;
use super::host::router_world::exports::sluice::plugin::setup as wit_setup;
use super::host::v0_1::router_world as v0_1;
use super::host::{HostState, router_world, wit};
use super::{LoadError, Loaded, Runtime, World, scratch, wit_connection_v0_1};
use crate::config::PluginLimits;
use crate::names::{BackendName, PluginName};
use crate::plugin::{
    ConnFacts, ForwardTo, HeaderInterest, Manifest, PluginError, RouteDecision, RouteRequest, Router, SyntheticResponse,
};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

/// The bindings of one route plugin instance, by contract version.
pub enum RouterBindings {
    V0_2(router_world::Router),
    V0_1(v0_1::Router),
}

/// A pre-instantiated route plugin, by contract version.
pub enum RouterPre {
    V0_2(router_world::RouterPre<HostState>),
    V0_1(v0_1::RouterPre<HostState>),
}

/// A loaded route plugin.
pub type WasmRouter = Loaded<RouterBindings>;

impl World for RouterBindings {
    const NAME: &'static str = "router";
    type Pre = RouterPre;

    fn add_to_linker(linker: &mut Linker<HostState>, version: ContractVersion) -> wasmtime::Result<()> {
        match version {
            ContractVersion::V0_2 => router_world::Router::add_to_linker::<_, HasSelf<_>>(linker, |state| state),
            ContractVersion::V0_1 => v0_1::Router::add_to_linker::<_, HasSelf<_>>(linker, |state| state),
        }
    }

    fn pre(pre: InstancePre<HostState>, version: ContractVersion) -> wasmtime::Result<Self::Pre> {
        Ok(match version {
            ContractVersion::V0_2 => RouterPre::V0_2(router_world::RouterPre::new(pre)?),
            ContractVersion::V0_1 => RouterPre::V0_1(v0_1::RouterPre::new(pre)?),
        })
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        Ok(match pre {
            RouterPre::V0_2(pre) => RouterBindings::V0_2(pre.instantiate(store)?),
            RouterPre::V0_1(pre) => RouterBindings::V0_1(pre.instantiate(store)?),
        })
    }

    fn init(&self, store: &mut Store<HostState>, settings: &str) -> wasmtime::Result<Result<Manifest, String>> {
        Ok(match self {
            RouterBindings::V0_2(bindings) => {
                bindings.sluice_plugin_setup().call_init(store, settings)?.map(manifest_from_wit)
            }
            RouterBindings::V0_1(bindings) => {
                bindings.sluice_plugin_setup().call_init(store, settings)?.map(|()| Manifest::UNDECLARED)
            }
        })
    }

    fn probe(&self, store: &mut Store<HostState>, manifest: &Manifest) -> wasmtime::Result<()> {
        let request = RouteRequest { method: "GET".into(), path: "/".into(), authority: None, headers: Vec::new() };
        pick(self, store, &ConnFacts::probe(), &request, &manifest.headers).map(drop)
    }
}

/// The host's manifest from the one a 0.2.0 plugin answered.
fn manifest_from_wit(manifest: wit_setup::Manifest) -> Manifest {
    let headers = match manifest.headers {
        wit_setup::HeaderInterest::All => None,
        wit_setup::HeaderInterest::Only(names) => Some(names),
    };
    super::declared(manifest.backends, headers)
}

impl Runtime {
    /// Load a route plugin: compile, start one instance with its settings,
    /// probe it. CPU-heavy: call this off the async workers.
    pub fn load_router(
        &self,
        name: PluginName,
        wasm: &[u8],
        settings_json: String,
        limits: PluginLimits,
    ) -> Result<Arc<WasmRouter>, LoadError> {
        self.load::<RouterBindings>(name, wasm, settings_json, limits).map(Arc::new)
    }
}

/// Lower the request (only the headers the plugin reads) and call `pick`.
fn pick(
    bindings: &RouterBindings,
    store: &mut Store<HostState>,
    conn: &ConnFacts,
    request: &RouteRequest,
    interest: &HeaderInterest,
) -> wasmtime::Result<RouteDecision> {
    match bindings {
        RouterBindings::V0_2(bindings) => scratch::with_request(conn, request, interest, |request| {
            bindings.sluice_plugin_route().call_pick(store, request).map(RouteDecision::from)
        }),
        RouterBindings::V0_1(bindings) => {
            let headers = request
                .headers
                .iter()
                .filter(|(name, _)| interest.wants(name))
                .map(|(name, value)| wit::Header { name: name.clone(), value: value.clone() });
            use v0_1::exports::sluice::plugin::route as old;
            let request = old::Request {
                method: request.method.clone(),
                path: request.path.clone(),
                authority: request.authority.clone(),
                headers: headers.map(|h| super::host::v0_1::wit::Header { name: h.name, value: h.value }).collect(),
                conn: wit_connection_v0_1(conn),
            };
            let decision = bindings.sluice_plugin_route().call_pick(store, &request)?;
            Ok(decision_from_v0_1(decision))
        }
    }
}

impl WasmRouter {
    /// Instantiate, initialise and pick once on a fresh instance. For benchmarks.
    pub fn pick_cold(&self, conn: &ConnFacts, request: &RouteRequest) -> Result<RouteDecision, PluginError> {
        let interest = &self.manifest().headers;
        let decision = self.call_cold(|bindings, store| pick(bindings, store, conn, request, interest))?;
        self.checked(decision)
    }

    /// The decision, unless it names a backend the plugin did not declare.
    fn checked(&self, decision: RouteDecision) -> Result<RouteDecision, PluginError> {
        if let RouteDecision::Forward(forward) = &decision {
            self.check_backend(&forward.backend)?;
        }
        Ok(decision)
    }
}

impl Router for WasmRouter {
    fn name(&self) -> &PluginName {
        Loaded::name(self)
    }

    fn version(&self) -> &str {
        &self.digest
    }

    fn manifest(&self) -> &Manifest {
        Loaded::manifest(self)
    }

    fn pick(&self, conn: &ConnFacts, request: &RouteRequest) -> Result<RouteDecision, PluginError> {
        let interest = &Loaded::manifest(self).headers;
        let decision = self.call(|bindings, store| pick(bindings, store, conn, request, interest))?;
        self.checked(decision)
    }
}

fn headers(list: Vec<wit::Header>) -> Vec<(String, Vec<u8>)> {
    list.into_iter().map(|header| (header.name, header.value)).collect()
}

impl From<wit_route::Decision> for RouteDecision {
    fn from(decision: wit_route::Decision) -> Self {
        match decision {
            wit_route::Decision::Forward(forward) => RouteDecision::Forward(ForwardTo {
                backend: BackendName::new(forward.backend),
                affinity: forward.affinity,
                set_headers: headers(forward.set_headers),
                remove_headers: forward.remove_headers,
                rewrite_path: forward.rewrite_path,
            }),
            wit_route::Decision::Respond(response) => RouteDecision::Respond(SyntheticResponse {
                status: response.status,
                headers: headers(response.headers),
                body: response.body,
            }),
        }
    }
}

fn decision_from_v0_1(decision: v0_1::exports::sluice::plugin::route::Decision) -> RouteDecision {
    use v0_1::exports::sluice::plugin::route::Decision;
    let headers = |list: Vec<super::host::v0_1::wit::Header>| -> Vec<(String, Vec<u8>)> {
        list.into_iter().map(|header| (header.name, header.value)).collect()
    };
    match decision {
        Decision::Forward(forward) => RouteDecision::Forward(ForwardTo {
            backend: BackendName::new(forward.backend),
            affinity: forward.affinity,
            set_headers: headers(forward.set_headers),
            remove_headers: forward.remove_headers,
            rewrite_path: forward.rewrite_path,
        }),
        Decision::Respond(response) => RouteDecision::Respond(SyntheticResponse {
            status: response.status,
            headers: headers(response.headers),
            body: response.body,
        }),
    }
}
