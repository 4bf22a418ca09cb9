//! The `router` world on the runtime: [`WasmRouter`] implements the core's
//! [`Router`] trait.

use super::host::router_world::exports::sluice::plugin::route as wit_route;
use super::host::router_world::{Router as RouterBindings, RouterPre};
use super::host::{HostState, wit};
use super::{LoadError, Loaded, Runtime, World, wit_connection};
use crate::config::PluginLimits;
use crate::names::{BackendName, PluginName};
use crate::plugin::{ConnFacts, ForwardTo, PluginError, RouteDecision, RouteRequest, Router, SyntheticResponse};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

/// A loaded route plugin.
pub type WasmRouter = Loaded<RouterBindings>;

impl World for RouterBindings {
    const NAME: &'static str = "router";
    type Pre = RouterPre<HostState>;

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        RouterBindings::add_to_linker::<_, HasSelf<_>>(linker, |state| state)
    }

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        RouterPre::new(pre)
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate(store)
    }

    fn init(&self, store: &mut Store<HostState>, settings: &str) -> wasmtime::Result<Result<(), String>> {
        self.sluice_plugin_setup().call_init(store, settings)
    }

    fn probe(&self, store: &mut Store<HostState>) -> wasmtime::Result<()> {
        let request = RouteRequest { method: "GET".into(), path: "/".into(), authority: None, headers: Vec::new() };
        pick(self, store, &ConnFacts::probe(), &request).map(drop)
    }
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

fn pick(
    bindings: &RouterBindings,
    store: &mut Store<HostState>,
    conn: &ConnFacts,
    request: &RouteRequest,
) -> wasmtime::Result<RouteDecision> {
    let request = wit_route::Request {
        method: request.method.clone(),
        path: request.path.clone(),
        authority: request.authority.clone(),
        headers: request
            .headers
            .iter()
            .map(|(name, value)| wit::Header { name: name.clone(), value: value.clone() })
            .collect(),
        conn: wit_connection(conn),
    };
    bindings.sluice_plugin_route().call_pick(store, &request).map(RouteDecision::from)
}

impl WasmRouter {
    /// Instantiate, initialise and pick once on a fresh instance. For benchmarks.
    pub fn pick_cold(&self, conn: &ConnFacts, request: &RouteRequest) -> Result<RouteDecision, PluginError> {
        self.call_cold(|bindings, store| pick(bindings, store, conn, request))
    }
}

impl Router for WasmRouter {
    fn name(&self) -> &PluginName {
        Loaded::name(self)
    }

    fn version(&self) -> &str {
        &self.digest
    }

    fn pick(&self, conn: &ConnFacts, request: &RouteRequest) -> Result<RouteDecision, PluginError> {
        self.call(|bindings, store| pick(bindings, store, conn, request))
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
