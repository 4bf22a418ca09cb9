//! Request ids: the client's `x-request-id` when it is a sane value, else one
//! made here. Ids are a random per-process prefix and a counter, so making
//! one costs an atomic add and no system call.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-given id kept; a longer one is replaced.
pub const MAX_LEN: usize = 128;

/// The request's id: the client's `x-request-id` when it is one value of
/// 1 to [`MAX_LEN`] visible ASCII characters, else a new id, which replaces
/// whatever the client sent so the backend sees the id that is logged.
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    let mut given = headers.get_all(&HEADER).iter();
    if let (Some(value), None) = (given.next(), given.next())
        && is_valid(value.as_bytes())
    {
        return value.clone();
    }
    let id = generate();
    headers.insert(HEADER, id.clone());
    id
}

fn is_valid(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// `<16 hex digits of process prefix>-<16 hex digits of counter>`.
fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(random_prefix);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = [b'-'; 33];
    hex(prefix, &mut id[..16]);
    hex(n, &mut id[17..]);
    // One allocation that clones share (the id goes in the request and the response).
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id)).unwrap_or(HeaderValue::from_static("invalid-id"))
}

fn hex(mut value: u64, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Random without a new dependency: std's hasher keys come from the OS's
/// random source; the pid and clock make restarts differ even if they did not.
fn random_prefix() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_client_id_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("abc-123_XYZ"));
        assert_eq!(ensure(&mut headers), "abc-123_XYZ");
        assert_eq!(headers.get_all(&HEADER).iter().count(), 1);
    }

    #[test]
    fn missing_or_bad_ids_are_replaced_by_new_ones() {
        let long = "a".repeat(MAX_LEN + 1);
        for bad in [None, Some(""), Some("has space"), Some("tab\there"), Some(long.as_str()), Some("é")] {
            let mut headers = HeaderMap::new();
            if let Some(bad) = bad {
                headers.insert(HEADER, HeaderValue::from_bytes(bad.as_bytes()).unwrap());
            }
            let id = ensure(&mut headers);
            assert_eq!(id.len(), 33, "{bad:?} -> {id:?}");
            assert!(is_valid(id.as_bytes()));
            assert_eq!(headers.get(&HEADER), Some(&id));
        }
        // Two values: neither is trusted.
        let mut headers = HeaderMap::new();
        headers.append(HEADER, HeaderValue::from_static("one"));
        headers.append(HEADER, HeaderValue::from_static("two"));
        let id = ensure(&mut headers);
        assert_eq!(id.len(), 33);
        assert_eq!(headers.get_all(&HEADER).iter().collect::<Vec<_>>(), vec![&id]);
    }

    #[test]
    fn generated_ids_share_a_prefix_and_differ() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[..17], b.as_bytes()[..17]);
    }
}
