//! What a cache entry is: the generation token it is stamped with (DESIGN.md §2, "The cache"), its
//! two keys in the store, its bytes (token, ETag, body) and the check that makes a stored entry a hit.
//! Separate from `mod.rs` because the cache's flow and both stores share these rules, and none of them
//! does I/O: the token and key-scheme tests run without a store.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

/// What a cache entry holds besides its token: the exact response bytes and their ETag.
#[derive(Clone, Debug)]
pub struct Cached {
    /// The quoted strong ETag, e.g. `"0a1b…"` (bytes: a hit slices it out of the entry, no copy).
    pub etag: Bytes,
    pub body: Bytes,
}

impl Cached {
    /// Wraps serialized response bytes, computing their ETag once (hits reuse the stored one).
    pub fn new(body: Vec<u8>) -> Self {
        let digest = Sha256::digest(&body);
        let mut etag = BytesMut::with_capacity(34);
        etag.extend_from_slice(b"\"");
        push_hex(&mut etag, &digest[..16]);
        etag.extend_from_slice(b"\"");
        Self { etag: etag.freeze(), body: Bytes::from(body) }
    }
}

/// What a GET reads: one record, or one list page (optionally filtered by key).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntryKey {
    Record(i64),
    Page { after: i64, limit: u64, key: Option<String> },
}

/// A generation token: the namespace of the master term it was minted in (`NS_LEN` bytes, DESIGN.md
/// §2, "Failover"), then 32 hex characters of OS randomness. Never a counter (DESIGN.md §2, trap 2).
pub type Token = Bytes;

/// Length of a token's term namespace.
pub(super) const NS_LEN: usize = 16;
const TOKEN_LEN: usize = NS_LEN + 32;
/// The in-process store has one term, forever.
pub(super) const LOCAL_NS: &[u8; NS_LEN] = b"l000000000000000";

/// A fresh token of the term `ns`.
pub(super) fn new_token(ns: &[u8]) -> Token {
    let mut raw = [0u8; 16];
    // getrandom only fails when the OS has no entropy source at all; a UUIDv4 is the fallback.
    if getrandom::fill(&mut raw).is_err() {
        raw = *uuid::Uuid::new_v4().as_bytes();
    }
    let mut token = BytesMut::with_capacity(TOKEN_LEN);
    token.extend_from_slice(ns);
    push_hex(&mut token, &raw);
    token.freeze()
}

/// Tokens outlive entries a little; only memory depends on it, never correctness.
pub(super) fn token_ttl(ttl: Duration) -> Duration {
    ttl * 2 + Duration::from_secs(10)
}

/// Lower-case hex of `bytes` (tokens and ETags; `format!` per byte was an allocation each).
fn push_hex(out: &mut BytesMut, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
}

/// The store keys of an entry under `p` (the cache prefix): its token's and its own.
pub(super) fn keys(p: &str, key: &EntryKey) -> (String, String) {
    // Hash tags keep a token and its entries in one Redis Cluster slot, as the fill script needs.
    match key {
        EntryKey::Record(id) => {
            // Pushed, not format!ted: this runs on every cache hit.
            let mut id_text = itoa::Buffer::new();
            let mut tok = String::with_capacity(p.len() + 32);
            tok.push_str(p);
            tok.push_str("{rec:");
            tok.push_str(id_text.format(*id));
            tok.push_str("}:");
            let mut body = tok.clone();
            tok.push_str("tok");
            body.push_str("body");
            (tok, body)
        }
        EntryKey::Page { after, limit, key: None } => (list_token_key(p), format!("{p}{{list}}:page:{after}:{limit}")),
        EntryKey::Page { after, limit, key: Some(k) } => {
            (list_token_key(p), format!("{p}{{list}}:key:{after}:{limit}:{k}"))
        }
    }
}

/// The key of the one token all list pages share (any write replaces it).
pub(super) fn list_token_key(prefix: &str) -> String {
    format!("{prefix}{{list}}:tok")
}

/// The stored form of a fresh response: the token it was read under, its ETag, a newline, its body.
pub(super) fn encode_entry(token: &Token, fresh: &Cached) -> Bytes {
    let mut entry = BytesMut::with_capacity(TOKEN_LEN + fresh.etag.len() + 1 + fresh.body.len());
    entry.extend_from_slice(token);
    entry.extend_from_slice(&fresh.etag);
    entry.extend_from_slice(b"\n");
    entry.extend_from_slice(&fresh.body);
    entry.freeze()
}

/// Returns the entry's payload when it was filled under `token`.
pub(super) fn decode_entry(entry: &Bytes, token: &[u8]) -> Option<Cached> {
    if entry.len() <= TOKEN_LEN || &entry[..TOKEN_LEN] != token {
        return None;
    }
    let rest = entry.slice(TOKEN_LEN..);
    let nl = rest.iter().position(|b| *b == b'\n')?;
    Some(Cached { etag: rest.slice(..nl), body: rest.slice(nl + 1..) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_never_repeat() {
        let a = new_token(b"0123456789abcdef");
        let b = new_token(b"0123456789abcdef");
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(a.starts_with(b"0123456789abcdef"), "a token starts with its term's namespace");
        assert!(a.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }

    #[test]
    fn an_entry_matches_only_its_own_token() {
        let t = new_token(LOCAL_NS);
        let c = Cached::new(b"{\"id\":1}".to_vec());
        let mut raw = BytesMut::new();
        raw.extend_from_slice(&t);
        raw.extend_from_slice(&c.etag);
        raw.extend_from_slice(b"\n");
        raw.extend_from_slice(&c.body);
        let raw = raw.freeze();
        let hit = decode_entry(&raw, &t).expect("same token hits");
        assert_eq!((hit.etag, hit.body), (c.etag, c.body));
        assert!(decode_entry(&raw, &new_token(LOCAL_NS)).is_none());
        assert!(decode_entry(&Bytes::from_static(b"short"), &t).is_none());
    }

    #[test]
    fn record_keys_are_namespaced_and_share_a_hash_tag() {
        let cfg = crate::config::Config::from_vars(&Default::default()).expect("defaults");
        let (tok, body) = keys(&cfg.cache_prefix, &EntryKey::Record(-42));
        assert_eq!(tok, format!("{}{{rec:-42}}:tok", cfg.cache_prefix));
        assert_eq!(body, format!("{}{{rec:-42}}:body", cfg.cache_prefix));
    }

    #[test]
    fn etag_is_a_quoted_hex_digest() {
        let e = Cached::new(b"x".to_vec()).etag;
        assert_eq!((e.len(), e[0], e[33]), (34, b'"', b'"'));
        assert!(e[1..33].iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn etag_depends_only_on_the_bytes() {
        assert_eq!(Cached::new(b"x".to_vec()).etag, Cached::new(b"x".to_vec()).etag);
        assert_ne!(Cached::new(b"x".to_vec()).etag, Cached::new(b"y".to_vec()).etag);
    }
}
