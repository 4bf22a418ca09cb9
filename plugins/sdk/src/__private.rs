//! The glue between the generated bindings and the SDK's traits, used by
//! `export_router!` / `export_sniffer!`. Not a public API.

pub use sluice_plugin_router_bindings as router;
pub use sluice_plugin_sniffer_bindings as sniffer;

use crate::{Conn, Decision, Header, HeaderInterest, Level, Manifest, Request, TlsHello, TlsInfo, Verdict};
use std::any::Any;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// The plugin of this component, set by the first `init`.
static PLUGIN: OnceLock<Box<dyn Any + Send + Sync>> = OnceLock::new();

fn plugin<P: 'static>() -> &'static P {
    match PLUGIN.get().and_then(|plugin| plugin.downcast_ref::<P>()) {
        Some(plugin) => plugin,
        None => panic!("sluice-plugin: called before `init` accepted the settings"),
    }
}

pub fn log(level: Level, message: &str) {
    use sniffer::sluice::plugin::host;
    use sniffer::sluice::plugin::types::LogLevel;
    let level = match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    host::log(level, message);
}

/// The exports of a [`crate::Router`] `P`.
pub struct RouterExport<P>(PhantomData<P>);

mod router_glue {
    use super::router::exports::sluice::plugin::{route, setup};
    use super::router::sluice::plugin::types as wit;
    use super::*;

    impl<P: crate::Router> setup::Guest for RouterExport<P> {
        fn init(settings: String) -> Result<setup::Manifest, String> {
            let settings = crate::parse_settings::<P::Settings>(P::NAME, &settings)?;
            let plugin = P::init(settings)?;
            let manifest = plugin.manifest();
            let _ = PLUGIN.set(Box::new(plugin));
            Ok(setup::Manifest {
                backends: manifest.backends,
                headers: match manifest.headers {
                    HeaderInterest::All => setup::HeaderInterest::All,
                    HeaderInterest::Only(names) => setup::HeaderInterest::Only(names),
                },
            })
        }
    }

    impl<P: crate::Router> route::Guest for RouterExport<P> {
        fn pick(request: route::Request) -> route::Decision {
            let request = Request {
                method: request.method,
                path: request.path,
                authority: request.authority,
                headers: request.headers.into_iter().map(|h| Header { name: h.name, value: h.value }).collect(),
                conn: conn(request.conn),
            };
            let headers = |list: Vec<Header>| -> Vec<wit::Header> {
                list.into_iter().map(|h| wit::Header { name: h.name, value: h.value }).collect()
            };
            match plugin::<P>().pick(&request) {
                Decision::Forward(f) => route::Decision::Forward(route::Forward {
                    backend: f.backend,
                    affinity: f.affinity,
                    set_headers: headers(f.set_headers),
                    remove_headers: f.remove_headers,
                    rewrite_path: f.rewrite_path,
                }),
                Decision::Respond(r) => route::Decision::Respond(route::Response {
                    status: r.status,
                    headers: headers(r.headers),
                    body: r.body,
                }),
            }
        }
    }

    fn conn(c: wit::Connection) -> Conn {
        Conn {
            listener: c.listener,
            client_addr: c.client_addr,
            local_addr: c.local_addr,
            tls: c.tls.map(|t| TlsInfo { server_name: t.server_name, alpn: t.alpn }),
            hello: c.hello.map(|h| TlsHello { server_name: h.server_name, alpn: h.alpn }),
            tenant: c.tenant,
        }
    }
}

/// The exports of a [`crate::Sniffer`] `P`.
pub struct SnifferExport<P>(PhantomData<P>);

mod sniffer_glue {
    use super::sniffer::exports::sluice::plugin::{setup, sniff};
    use super::sniffer::sluice::plugin::types as wit;
    use super::*;

    impl<P: crate::Sniffer> setup::Guest for SnifferExport<P> {
        fn init(settings: String) -> Result<setup::Manifest, String> {
            let settings = crate::parse_settings::<P::Settings>(P::NAME, &settings)?;
            let plugin = P::init(settings)?;
            let manifest: Manifest = plugin.manifest();
            let _ = PLUGIN.set(Box::new(plugin));
            Ok(setup::Manifest { backends: manifest.backends, headers: setup::HeaderInterest::Only(Vec::new()) })
        }
    }

    impl<P: crate::Sniffer> sniff::Guest for SnifferExport<P> {
        fn classify(conn: wit::Connection, head: Vec<u8>, complete: bool) -> sniff::Verdict {
            let conn = Conn {
                listener: conn.listener,
                client_addr: conn.client_addr,
                local_addr: conn.local_addr,
                tls: conn.tls.map(|t| TlsInfo { server_name: t.server_name, alpn: t.alpn }),
                hello: conn.hello.map(|h| TlsHello { server_name: h.server_name, alpn: h.alpn }),
                tenant: conn.tenant,
            };
            match plugin::<P>().classify(&conn, &head, complete) {
                Verdict::NeedMore => sniff::Verdict::NeedMore,
                Verdict::TerminateTls => sniff::Verdict::TerminateTls,
                Verdict::Http => sniff::Verdict::Http,
                Verdict::ForwardDefault => sniff::Verdict::ForwardDefault,
                Verdict::Forward(backend) => sniff::Verdict::Forward(backend),
                Verdict::Reply { data, then_close } => sniff::Verdict::Reply(sniff::Reply { data, then_close }),
                Verdict::Reject(reason) => sniff::Verdict::Reject(reason),
            }
        }
    }
}
