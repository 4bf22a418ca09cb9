//! How two decisions differ, as one kind label (the most significant
//! difference): `verdict` (a different kind of answer), `backend`,
//! `affinity`, `headers` (edits or path rewrite), `status`, `body`, `reply`,
//! or `error` (one side failed). `None`: they agree.

use crate::plugin::{PluginError, RouteDecision, Verdict};

/// Every kind label, for reports.
pub const KINDS: &[&str] = &["verdict", "backend", "affinity", "headers", "status", "body", "reply", "error"];

pub fn route(live: &RouteDecision, candidate: &RouteDecision) -> Option<&'static str> {
    match (live, candidate) {
        (RouteDecision::Forward(a), RouteDecision::Forward(b)) => {
            if a.backend != b.backend {
                Some("backend")
            } else if a.affinity != b.affinity {
                Some("affinity")
            } else if a.set_headers != b.set_headers
                || a.remove_headers != b.remove_headers
                || a.rewrite_path != b.rewrite_path
            {
                Some("headers")
            } else {
                None
            }
        }
        (RouteDecision::Respond(a), RouteDecision::Respond(b)) => {
            if a.status != b.status {
                Some("status")
            } else if a.headers != b.headers {
                Some("headers")
            } else if a.body != b.body {
                Some("body")
            } else {
                None
            }
        }
        _ => Some("verdict"),
    }
}

pub fn sniff(live: &Verdict, candidate: &Verdict) -> Option<&'static str> {
    match (live, candidate) {
        (a, b) if a == b => None,
        (Verdict::Forward(_), Verdict::Forward(_)) => Some("backend"),
        (Verdict::Reply { .. }, Verdict::Reply { .. }) => Some("reply"),
        (Verdict::Reject(_), Verdict::Reject(_)) => Some("reply"),
        _ => Some("verdict"),
    }
}

/// Compare two outcomes that may have failed.
pub fn outcomes<T>(
    live: &Result<T, PluginError>,
    candidate: &Result<T, PluginError>,
    same: impl Fn(&T, &T) -> Option<&'static str>,
) -> Option<&'static str> {
    match (live, candidate) {
        (Ok(a), Ok(b)) => same(a, b),
        (Err(a), Err(b)) if a.label() == b.label() => None,
        _ => Some("error"),
    }
}

/// A short description of an outcome, for logs and reports.
pub fn describe_route(outcome: &Result<RouteDecision, PluginError>) -> String {
    match outcome {
        Ok(RouteDecision::Forward(to)) => {
            let mut text = format!("forward to {}", to.backend);
            if let Some(key) = &to.affinity {
                text.push_str(&format!(" (affinity {key:?})"));
            }
            if !to.set_headers.is_empty() || !to.remove_headers.is_empty() || to.rewrite_path.is_some() {
                text.push_str(" with edits");
            }
            text
        }
        Ok(RouteDecision::Respond(response)) => format!("respond {}", response.status),
        Err(e) => format!("failed: {e}"),
    }
}

pub fn describe_sniff(outcome: &Result<Verdict, PluginError>) -> String {
    match outcome {
        Ok(Verdict::Forward(backend)) => format!("forward to {backend}"),
        Ok(Verdict::Reject(reason)) => format!("reject ({reason})"),
        Ok(Verdict::Reply { data, .. }) => format!("reply ({} bytes)", data.len()),
        Ok(verdict) => verdict.label().to_string(),
        Err(e) => format!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::BackendName;
    use crate::plugin::ForwardTo;

    fn to(backend: &str, affinity: Option<&str>) -> RouteDecision {
        RouteDecision::Forward(ForwardTo {
            backend: BackendName::new(backend),
            affinity: affinity.map(str::to_string),
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            rewrite_path: None,
        })
    }

    #[test]
    fn kinds() {
        assert_eq!(route(&to("a", None), &to("a", None)), None);
        assert_eq!(route(&to("a", None), &to("b", None)), Some("backend"));
        assert_eq!(route(&to("a", Some("k")), &to("a", None)), Some("affinity"));
        assert_eq!(sniff(&Verdict::Http, &Verdict::TerminateTls), Some("verdict"));
        assert_eq!(
            sniff(&Verdict::Forward(BackendName::new("x")), &Verdict::Forward(BackendName::new("y"))),
            Some("backend")
        );
        let failed: Result<Verdict, PluginError> = Err(PluginError::CpuBudget);
        assert_eq!(outcomes(&Ok(Verdict::Http), &failed, sniff), Some("error"));
    }
}
