//! Traffic splits: a rule may send a share of its requests to other backends
//! (`split = [{ backend = "v2", percent = 10 }]`), chosen by a stable key
//! (`split-key`, default the client IP) so that a client stays on one side.
//! A request without the key stays on the rule's own backend.

use crate::AffinitySettings;
use crate::rules::{Request, client_ip, cookie, query_param};
use serde::Deserialize;

/// One `split` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SplitSettings {
    pub backend: String,
    /// Share of the rule's requests, 0 to 100 (decimals allowed: 0.5).
    pub percent: f64,
}

/// A checked split: cumulative upper bounds in basis points, and the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// (backend, upper bound of its buckets), in order; buckets past the last
    /// bound keep the rule's backend.
    shares: Vec<(String, u32)>,
    key: AffinitySettings,
}

impl Split {
    pub fn new(entries: Vec<SplitSettings>, key: Option<AffinitySettings>) -> Result<Split, String> {
        let mut bound = 0u32;
        let mut shares = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            if entry.backend.trim().is_empty() {
                return Err(format!("split entry {}: backend is empty", i + 1));
            }
            if !(0.0..=100.0).contains(&entry.percent) {
                return Err(format!("split entry {}: percent {} is not 0 to 100", i + 1, entry.percent));
            }
            bound += (entry.percent * 100.0).round() as u32;
            if bound > 10_000 {
                return Err("split: the percentages add up to more than 100".to_string());
            }
            shares.push((entry.backend, bound));
        }
        Ok(Split { shares, key: key.unwrap_or(AffinitySettings::ClientIp) })
    }

    /// The backend this request is split to, if it is not the rule's own.
    pub fn pick(&self, req: &Request) -> Option<&str> {
        let bucket = self.bucket(req)?;
        self.shares.iter().find(|(_, bound)| bucket < *bound).map(|(backend, _)| backend.as_str())
    }

    fn bucket(&self, req: &Request) -> Option<u32> {
        let key: Vec<u8> = match &self.key {
            AffinitySettings::ClientIp => client_ip(req.client_addr)?.into_bytes(),
            AffinitySettings::Cookie(name) => cookie(req, name)?.to_vec(),
            AffinitySettings::Header(name) => {
                req.headers.iter().find(|(n, v)| n.eq_ignore_ascii_case(name) && !v.is_empty())?.1.to_vec()
            }
            AffinitySettings::Query(name) => query_param(req.path, name)?.as_bytes().to_vec(),
        };
        Some(bucket(&key))
    }

    /// The backends the split can name.
    pub fn backends(&self) -> impl Iterator<Item = &str> {
        self.shares.iter().map(|(backend, _)| backend.as_str())
    }

    /// The request header the key is read from, if any (lower-case).
    pub fn header_read(&self) -> Option<String> {
        match &self.key {
            AffinitySettings::Cookie(_) => Some("cookie".to_string()),
            AffinitySettings::Header(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        }
    }
}

/// A stable bucket in 0..10000: FNV-1a, then splitmix64's finaliser so the
/// low digits are well spread.
pub fn bucket(key: &[u8]) -> u32 {
    let mut h = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((h ^ (h >> 31)) % 10_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(headers: &'a [(&'a str, &'a [u8])], client: &'a str) -> Request<'a> {
        Request { method: "GET", path: "/", authority: None, headers, client_addr: client }
    }

    #[test]
    fn splits_a_stable_share_by_key() {
        let split = Split::new(
            vec![SplitSettings { backend: "v2".into(), percent: 10.0 }],
            Some(AffinitySettings::Cookie("sid".into())),
        )
        .unwrap();
        let mut to_v2 = 0;
        for i in 0..2000 {
            let cookie = format!("sid=user{i}");
            let headers = [("cookie", cookie.as_bytes())];
            let first = split.pick(&request(&headers, "10.0.0.1:1"));
            assert_eq!(first, split.pick(&request(&headers, "10.0.0.2:2")), "same cookie, same side");
            to_v2 += usize::from(first == Some("v2"));
        }
        assert!((140..260).contains(&to_v2), "{to_v2} of 2000");
        assert_eq!(split.pick(&request(&[], "10.0.0.1:1")), None, "no key: the rule's backend");
    }

    #[test]
    fn refuses_bad_shares() {
        let entry = |percent| SplitSettings { backend: "b".into(), percent };
        assert!(Split::new(vec![entry(60.0), entry(50.0)], None).unwrap_err().contains("more than 100"));
        assert!(Split::new(vec![entry(-1.0)], None).is_err());
    }
}
