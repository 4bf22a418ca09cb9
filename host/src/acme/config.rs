//! The `[listeners.acme]` table: as written, and validated.
//!
//! Validation never contacts the directory (`sluice check` must pass offline);
//! it checks the shape of every value and that `ca-file` exists.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// One listener's automatic certificate: the names, where from, how to prove them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The DNS names of the certificate (one order, one certificate for all of them).
    pub names: Vec<String>,
    /// The ACME directory URL.
    pub directory: String,
    /// Contact URIs for the account (`mailto:ops@example.com`).
    pub contact: Vec<String>,
    /// Where the account key and the certificates are kept.
    pub state_dir: PathBuf,
    pub challenge: ChallengeKind,
    /// PEM file of the CA that signed the directory's HTTPS certificate
    /// (default: the system's trust store).
    pub ca_file: Option<PathBuf>,
    /// Renew when this much of the lifetime is left, or a third of it if
    /// that is less (short-lived certificates).
    pub renew_before: Duration,
    /// The first retry after a failure; doubled after each further failure.
    pub retry_min: Duration,
    /// The longest wait between retries.
    pub retry_max: Duration,
}

/// How the names are proven to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// RFC 8737: a special certificate answered on this listener's TLS port.
    TlsAlpn01,
    /// RFC 8555 §8.3: `/.well-known/acme-challenge/TOKEN` answered by the HTTP stage of any listener.
    Http01,
}

impl ChallengeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
            ChallengeKind::Http01 => "http-01",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawAcme {
    names: Vec<String>,
    directory: Option<String>,
    #[serde(default)]
    contact: Vec<String>,
    state_dir: String,
    challenge: Option<String>,
    ca_file: Option<String>,
    renew_before: Option<String>,
    retry_min: Option<String>,
    retry_max: Option<String>,
}

impl RawAcme {
    /// The validated table, or every problem as (key, message).
    pub fn validate(&self, base: &Path) -> Result<AcmeConfig, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        if self.names.is_empty() {
            problems.push(("names", "list at least one DNS name".to_string()));
        }
        for name in &self.names {
            if let Err(e) = check_dns_name(name) {
                problems.push(("names", e));
            }
        }
        let directory = self.directory.clone().unwrap_or_else(|| LETS_ENCRYPT.to_string());
        match directory.parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("https" | "http")) && uri.host().is_some() => {}
            _ => problems.push(("directory", format!("`{directory}` is not an https:// URL"))),
        }
        for contact in &self.contact {
            if !contact.starts_with("mailto:") || contact.len() <= "mailto:".len() {
                problems
                    .push(("contact", format!("`{contact}` is not a mailto: URI (e.g. \"mailto:ops@example.com\")")));
            }
        }
        let challenge = match self.challenge.as_deref() {
            None | Some("tls-alpn-01") => ChallengeKind::TlsAlpn01,
            Some("http-01") => ChallengeKind::Http01,
            Some(other) => {
                problems.push(("challenge", format!("`{other}` is not a challenge (tls-alpn-01, http-01)")));
                ChallengeKind::TlsAlpn01
            }
        };
        if self.state_dir.is_empty() {
            problems.push(("state-dir", "name a directory (created if missing)".to_string()));
        }
        let ca_file = self.ca_file.as_ref().map(|file| base.join(file));
        if let Some(file) = &ca_file
            && !file.is_file()
        {
            problems.push(("ca-file", format!("{} does not exist or is not a file", file.display())));
        }
        let mut duration = |key: &'static str, text: &Option<String>, default: Duration| match text {
            None => default,
            Some(text) => match crate::config::parse_duration(text) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    problems.push((key, format!("`{text}` must be longer than zero")));
                    default
                }
                Err(e) => {
                    problems.push((key, e));
                    default
                }
            },
        };
        let renew_before = duration("renew-before", &self.renew_before, Duration::from_secs(30 * 86400));
        let retry_min = duration("retry-min", &self.retry_min, Duration::from_secs(60));
        let retry_max = duration("retry-max", &self.retry_max, Duration::from_secs(6 * 3600));
        if retry_min > retry_max {
            problems.push(("retry-min", "must not be longer than retry-max".to_string()));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(AcmeConfig {
            names: self.names.iter().map(|n| n.trim_end_matches('.').to_ascii_lowercase()).collect(),
            directory,
            contact: self.contact.clone(),
            state_dir: base.join(&self.state_dir),
            challenge,
            ca_file,
            renew_before,
            retry_min,
            retry_max,
        })
    }
}

/// A name a public CA can issue for: DNS labels, no wildcard (wildcards
/// need DNS-01, which sluice does not do), no IP address.
fn check_dns_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{name}` {why}"));
    if name.starts_with("*.") {
        return bad("is a wildcard: wildcards need the DNS-01 challenge, which sluice does not answer");
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return bad("is an IP address; list DNS names");
    }
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return bad("is not a DNS name");
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return bad("is not a DNS name (letters, digits and '-' in dot-separated labels)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(extra: &str) -> Result<AcmeConfig, Vec<(&'static str, String)>> {
        let text = format!("names = [\"a.example.com\"]\nstate-dir = \"acme\"\n{extra}");
        let raw: RawAcme = toml::from_str(&text).unwrap();
        raw.validate(Path::new("/etc/sluice"))
    }

    #[test]
    fn defaults_are_lets_encrypt_tls_alpn_and_thirty_days() {
        let config = raw("").unwrap();
        assert_eq!(config.directory, LETS_ENCRYPT);
        assert_eq!(config.challenge, ChallengeKind::TlsAlpn01);
        assert_eq!(config.state_dir, Path::new("/etc/sluice/acme"));
        assert_eq!(config.renew_before, Duration::from_secs(30 * 86400));
    }

    #[test]
    fn problems_name_the_listener_field() {
        let text = "[[listeners]]\nname = \"web\"\nbind = \"127.0.0.1:443\"\nsniff = \"sniff\"\n\
                    [listeners.acme]\nnames = [\"a.test\"]\nstate-dir = \"acme\"\nchallenge = \"dns-01\"\n\
                    [plugins.sniff]\nbuiltin = \"sniff\"\n";
        let error = crate::config::Config::parse(text, Path::new("/etc/sluice/sluice.toml")).unwrap_err();
        assert_eq!(error.problems.len(), 1, "{error}");
        assert_eq!(error.problems[0].field, "listeners[0].acme.challenge");
        let fixed = text.replace("dns-01", "http-01");
        let config = crate::config::Config::parse(&fixed, Path::new("/etc/sluice/sluice.toml")).unwrap();
        assert_eq!(config.listeners[0].acme.as_ref().unwrap().challenge, ChallengeKind::Http01);
    }

    #[test]
    fn every_bad_value_is_reported() {
        let problems =
            raw("directory = \"ftp://x\"\nchallenge = \"dns-01\"\ncontact = [\"ops@x\"]\nca-file = \"missing.pem\"\n\
             retry-min = \"2h\"\nretry-max = \"1h\"\nrenew-before = \"0s\"")
            .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, ["directory", "contact", "challenge", "ca-file", "renew-before", "retry-min"]);
        let names: RawAcme = toml::from_str("names = [\"*.a.com\", \"1.2.3.4\", \"a..b\"]\nstate-dir = \"s\"").unwrap();
        assert_eq!(names.validate(Path::new(".")).unwrap_err().len(), 3);
    }
}
