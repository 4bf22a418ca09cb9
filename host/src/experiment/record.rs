//! Decision inputs as JSON lines: what the capture file holds, what a logged
//! disagreement carries, and what `sluice plugin replay` reads back. Values
//! of secret headers are replaced by `<redacted>` before they leave memory.

use crate::names::ListenerName;
use crate::plugin::{ConnFacts, RouteRequest, TlsFacts};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

pub const REDACTED: &str = "<redacted>";

/// One decision's inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub listener: String,
    pub client: SocketAddr,
    pub local: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_alpn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(flatten)]
    pub input: Input,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "world", rename_all = "kebab-case")]
pub enum Input {
    Route {
        method: String,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authority: Option<String>,
        /// Lower-case names; values as text (bytes that are not UTF-8 are replaced).
        headers: Vec<(String, String)>,
    },
    Sniff {
        /// The bytes read so far, hex.
        head_hex: String,
        complete: bool,
    },
}

fn redacted(name: &str, value: &[u8], redact: &[String]) -> String {
    if redact.iter().any(|r| r == name) { REDACTED.to_string() } else { String::from_utf8_lossy(value).into_owned() }
}

impl Record {
    fn new(conn: &ConnFacts, input: Input) -> Record {
        let tls = conn.tls.as_ref();
        Record {
            listener: conn.listener.to_string(),
            client: conn.client_addr,
            local: conn.local_addr,
            tls_server_name: tls.and_then(|t| t.server_name.clone()),
            tls_alpn: tls.and_then(|t| t.alpn.clone()),
            tenant: conn.tenant.clone(),
            input,
        }
    }

    pub fn route(conn: &ConnFacts, request: &RouteRequest, redact: &[String]) -> Record {
        let headers = request.headers.iter().map(|(n, v)| (n.clone(), redacted(n, v, redact))).collect();
        let input = Input::Route {
            method: request.method.clone(),
            path: request.path.clone(),
            authority: request.authority.clone(),
            headers,
        };
        Record::new(conn, input)
    }

    pub fn sniff(conn: &ConnFacts, head: &[u8], complete: bool) -> Record {
        Record::new(conn, Input::Sniff { head_hex: hex(head), complete })
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The connection facts to replay this record with.
    pub fn conn(&self) -> ConnFacts {
        let tls = (self.tls_server_name.is_some() || self.tls_alpn.is_some())
            .then(|| TlsFacts { server_name: self.tls_server_name.clone(), alpn: self.tls_alpn.clone() });
        ConnFacts {
            listener: ListenerName::new(self.listener.as_str()),
            client_addr: self.client,
            local_addr: self.local,
            tls,
            hello: None,
            tenant: self.tenant.clone(),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16).map_err(|_| format!("bad hex at {i}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_records_round_trip() {
        let conn = ConnFacts::probe();
        let request = RouteRequest {
            method: "GET".into(),
            path: "/a".into(),
            authority: Some("x.test".into()),
            headers: vec![("cookie".into(), b"sid=secret".to_vec()), ("x-user".into(), b"ann".to_vec())],
        };
        let redact: Vec<String> = crate::config::experiments::DEFAULT_REDACT.iter().map(|s| s.to_string()).collect();
        let line = Record::route(&conn, &request, &redact).to_line();
        assert!(!line.contains("secret"), "{line}");
        assert!(line.contains("ann"), "{line}");
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(back.conn().client_addr, conn.client_addr);
        let sniff = Record::sniff(&conn, b"GET /\x00", true).to_line();
        let Input::Sniff { head_hex, complete } = serde_json::from_str::<Record>(&sniff).unwrap().input else {
            panic!("{sniff}")
        };
        assert_eq!((unhex(&head_hex).unwrap(), complete), (b"GET /\x00".to_vec(), true));
    }
}
