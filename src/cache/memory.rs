//! The in-process store used when `REDIS_URL` is unset: the same token scheme and TTL as Redis, with
//! every operation atomic under one mutex. Bounded in size; dropping entries only ever causes misses,
//! because tokens never repeat.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::token::{Token, token_ttl};

/// Past this many keys, expired ones are swept; if that is not enough, everything is dropped.
const MAX_KEYS: usize = 200_000;

pub(super) struct MemoryStore {
    ttl: Duration,
    token_ttl: Duration,
    map: Mutex<HashMap<String, (Bytes, Instant)>>,
}

impl MemoryStore {
    pub(super) fn new(ttl: Duration) -> Self {
        Self { ttl, token_ttl: token_ttl(ttl), map: Mutex::default() }
    }

    fn live(map: &HashMap<String, (Bytes, Instant)>, key: &str, now: Instant) -> Option<Bytes> {
        map.get(key).filter(|(_, exp)| *exp > now).map(|(v, _)| v.clone())
    }

    fn insert(&self, map: &mut HashMap<String, (Bytes, Instant)>, key: &str, val: Bytes, ttl: Duration) {
        let now = Instant::now();
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, (_, exp)| *exp > now);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        map.insert(key.to_owned(), (val, now + ttl));
    }

    pub(super) fn lookup(&self, tok_key: &str, entry_key: &str, new_token: fn() -> Token) -> (Token, Option<Bytes>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let token = match Self::live(&map, tok_key, now) {
            Some(t) => t,
            None => {
                let t = new_token();
                self.insert(&mut map, tok_key, t.clone(), self.token_ttl);
                t
            }
        };
        let entry = Self::live(&map, entry_key, now);
        (token, entry)
    }

    pub(super) fn fill(&self, tok_key: &str, token: &Token, entry_key: &str, entry: Bytes) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if Self::live(&map, tok_key, Instant::now()).as_ref() != Some(token) {
            return false;
        }
        self.insert(&mut map, entry_key, entry, self.ttl);
        true
    }

    pub(super) fn replace_tokens(&self, tok_keys: &[String], dead_entries: &[String], new_token: fn() -> Token) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for k in tok_keys {
            self.insert(&mut map, k, new_token(), self.token_ttl);
        }
        for k in dead_entries {
            map.remove(k);
        }
    }
}
