//! The route request record, and the sniff call's connection record,
//! refilled in place for every call on a thread.
//!
//! wasmtime lowers a request from the bindings' owned record. Building that
//! record anew for every decision costs a dozen allocations and two address
//! formattings; refilling one kept per thread reuses every string's and
//! list's capacity, so lowering a request allocates nothing on the host.

use super::host::router_world::exports::sluice::plugin::route as wit_route;
use super::host::wit;
use crate::plugin::{ConnFacts, HeaderInterest, RouteRequest};
use crate::text;
use std::cell::RefCell;
use std::net::SocketAddr;

thread_local! {
    static REQUEST: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The record, and the addresses its text fields were last written from:
/// the local address rarely changes between calls, nor does the client's
/// on a keep-alive connection, so neither is formatted again.
struct Scratch {
    record: wit_route::Request,
    written: Option<(SocketAddr, SocketAddr)>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch { record: empty(), written: None }
    }
}

/// Call `f` with `request` as the plugin sees it: the connection facts and
/// only the headers it reads.
pub fn with_request<T>(
    conn: &ConnFacts,
    request: &RouteRequest,
    interest: &HeaderInterest,
    f: impl FnOnce(&wit_route::Request) -> T,
) -> T {
    REQUEST.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.fill(conn, request, interest);
            f(&scratch.record)
        }
        // A call inside a call on this thread (none today): a record of its own.
        Err(_) => {
            let mut scratch = Scratch::default();
            scratch.fill(conn, request, interest);
            f(&scratch.record)
        }
    })
}

fn empty() -> wit_route::Request {
    wit_route::Request {
        method: String::new(),
        path: String::new(),
        authority: None,
        headers: Vec::new(),
        conn: wit::Connection {
            tenant: None,
            listener: String::new(),
            client_addr: String::new(),
            local_addr: String::new(),
            tls: None,
            hello: None,
        },
    }
}

impl Scratch {
    fn fill(&mut self, conn: &ConnFacts, request: &RouteRequest, interest: &HeaderInterest) {
        fill(&mut self.record, request, interest);
        fill_connection(&mut self.record.conn, &mut self.written, conn);
    }
}

thread_local! {
    static SNIFF_CONNECTION: RefCell<(wit::Connection, Option<(SocketAddr, SocketAddr)>)> =
        RefCell::new((empty().conn, None));
}

/// Call `f` with the connection record of a sniff call, refilled in place
/// like the route request's.
pub fn with_connection<T>(conn: &ConnFacts, f: impl FnOnce(&wit::Connection) -> T) -> T {
    SNIFF_CONNECTION.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let (record, written) = &mut *scratch;
            fill_connection(record, written, conn);
            f(record)
        }
        Err(_) => f(&super::wit_connection(conn)),
    })
}

/// The connection record; its addresses are formatted only when they
/// differ from the ones it was last `written` from.
fn fill_connection(facts: &mut wit::Connection, written: &mut Option<(SocketAddr, SocketAddr)>, conn: &ConnFacts) {
    set_option(&mut facts.tenant, conn.tenant.as_deref());
    set(&mut facts.listener, conn.listener.as_str());
    let (client, local) = written.get_or_insert((conn.client_addr, conn.local_addr));
    if *client != conn.client_addr || facts.client_addr.is_empty() {
        set_addr(&mut facts.client_addr, conn.client_addr);
        *client = conn.client_addr;
    }
    if *local != conn.local_addr || facts.local_addr.is_empty() {
        set_addr(&mut facts.local_addr, conn.local_addr);
        *local = conn.local_addr;
    }
    // Only on TLS connections, and small: rebuilt.
    facts.tls = super::wit_tls(conn);
    facts.hello = super::wit_hello(conn);
}

/// The request's own fields (the connection's: [`fill_connection`]).
fn fill(record: &mut wit_route::Request, request: &RouteRequest, interest: &HeaderInterest) {
    set(&mut record.method, &request.method);
    set(&mut record.path, &request.path);
    set_option(&mut record.authority, request.authority.as_deref());
    let mut used = 0;
    for (name, value) in request.headers.iter().filter(|(name, _)| interest.wants(name)) {
        match record.headers.get_mut(used) {
            Some(header) => {
                set(&mut header.name, name);
                header.value.clear();
                header.value.extend_from_slice(value);
            }
            None => record.headers.push(wit::Header { name: name.clone(), value: value.clone() }),
        }
        used += 1;
    }
    record.headers.truncate(used);
}

fn set(to: &mut String, from: &str) {
    to.clear();
    to.push_str(from);
}

fn set_option(to: &mut Option<String>, from: Option<&str>) {
    match (to.as_mut(), from) {
        (Some(to), Some(from)) => set(to, from),
        (None, Some(from)) => *to = Some(from.to_string()),
        (_, None) => *to = None,
    }
}

fn set_addr(to: &mut String, addr: SocketAddr) {
    text::rewrite(to, |out| text::push_socket_addr(out, addr));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ListenerName;

    #[test]
    fn a_refilled_record_holds_only_this_request() {
        let mut conn = ConnFacts::probe();
        conn.listener = ListenerName::new("public");
        let header = |name: &str, value: &str| (name.to_string(), value.as_bytes().to_vec());
        let first = RouteRequest {
            method: "POST".into(),
            path: "/a/long/path?with=query".into(),
            authority: Some("example.test".into()),
            headers: vec![header("host", "example.test"), header("cookie", "a=1"), header("x-extra", "1")],
        };
        let second = RouteRequest {
            method: "GET".into(),
            path: "/".into(),
            authority: None,
            headers: vec![header("cookie", "b=2")],
        };
        let mut scratch = Scratch::default();
        scratch.fill(&conn, &first, &HeaderInterest::All);
        assert_eq!(scratch.record.headers.len(), 3);
        assert_eq!(scratch.record.conn.client_addr, "127.0.0.1:0");
        conn.tenant = Some("acme".into());
        conn.client_addr = "[::1]:4321".parse().unwrap();
        scratch.fill(&conn, &second, &HeaderInterest::All);
        let record = &scratch.record;
        assert_eq!((record.method.as_str(), record.path.as_str(), record.authority.as_deref()), ("GET", "/", None));
        assert_eq!(record.headers.len(), 1);
        assert_eq!((record.headers[0].name.as_str(), record.headers[0].value.as_slice()), ("cookie", &b"b=2"[..]));
        assert_eq!((record.conn.listener.as_str(), record.conn.tenant.as_deref()), ("public", Some("acme")));
        assert_eq!((record.conn.client_addr.as_str(), record.conn.local_addr.as_str()), ("[::1]:4321", "127.0.0.1:0"));
        let only_host = HeaderInterest::Only(vec!["host".into()]);
        scratch.fill(&conn, &first, &only_host);
        assert_eq!(scratch.record.headers.len(), 1);
        assert_eq!(scratch.record.headers[0].name, "host");
    }
}
