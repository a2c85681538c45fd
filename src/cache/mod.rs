//! The read-through cache (contract: "The cache"), with the generation-token scheme of DESIGN.md §2
//! ("The cache"), which also holds the argument for why it never serves data older than an acknowledged
//! write and the traps it avoids (numbered there as the comments below cite them); in short:
//!
//! - Every cached entry is stamped with the random 128-bit token that was current when its reader
//!   looked the token up *before* reading the database. A lookup is a HIT only when the entry's stamp
//!   equals the current token.
//! - A write commits, then replaces the tokens of everything it could have changed, then answers. Old
//!   entries become unreachable at once; tokens never repeat, so eviction only causes misses.
//! - A fill is a compare-and-set: it lands only if the token is still the one read before the database
//!   read (the slow-miss race), and concurrent misses share one database read per (entry, token).
//! - A write that cannot reach the cache leaves its invalidation pending; this process applies pending
//!   invalidations before it reads the cache again, and retries them in the background.
//! - A token starts with the namespace of the Redis master term it was minted in; a lookup trusts only
//!   tokens of the term this process verified on its current connection, so a failover that lost writes
//!   (the promoted replica holds older tokens and entries) causes misses, never stale hits.

mod memory;
mod redis;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use opentelemetry::{KeyValue, trace::SpanKind};

use crate::{config::Config, error::ApiError, metrics::Metrics, traces};

/// How a GET was answered; sent as `X-Cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Bypass,
}

impl CacheOutcome {
    /// The `X-Cache` header value.
    pub fn header(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

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
pub(crate) const NS_LEN: usize = 16;
const TOKEN_LEN: usize = NS_LEN + 32;
/// The in-process store has one term, forever.
const LOCAL_NS: &[u8; NS_LEN] = b"l000000000000000";

fn new_token(ns: &[u8]) -> Token {
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

/// Lower-case hex of `bytes` (tokens and ETags; `format!` per byte was an allocation each).
fn push_hex(out: &mut BytesMut, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
}

/// Why a cache command did not complete.
#[derive(Debug)]
pub(crate) struct CacheError(String);

/// The two interchangeable stores behind the same token scheme.
enum Backend {
    Redis(redis::RedisStore),
    Memory(memory::MemoryStore),
}

impl Backend {
    async fn lookup(&self, tok_key: &str, entry_key: &str) -> Result<(Token, Option<Bytes>), CacheError> {
        match self {
            // Not boxed here: `lookup` boxes each fred command itself, so its future is small (poem moves
            // every layer's future by value: a test below keeps the read future under 1 KiB).
            Self::Redis(s) => s.lookup(tok_key, entry_key).await,
            Self::Memory(s) => Ok(s.lookup(tok_key, entry_key, || new_token(LOCAL_NS))),
        }
    }
    async fn fill(&self, tok_key: &str, token: &Token, entry_key: &str, entry: Bytes) -> Result<bool, CacheError> {
        match self {
            Self::Redis(s) => Box::pin(s.fill(tok_key, token, entry_key, entry)).await,
            Self::Memory(s) => Ok(s.fill(tok_key, token, entry_key, entry)),
        }
    }
    async fn replace_tokens(&self, tok_keys: &[String], dead_entries: &[String]) -> Result<(), CacheError> {
        match self {
            Self::Redis(s) => Box::pin(s.replace_tokens(tok_keys, dead_entries)).await,
            Self::Memory(s) => {
                s.replace_tokens(tok_keys, dead_entries, || new_token(LOCAL_NS));
                Ok(())
            }
        }
    }
    async fn ping(&self) -> Result<(), CacheError> {
        match self {
            Self::Redis(s) => s.ping().await,
            Self::Memory(_) => Ok(()),
        }
    }
}

/// Invalidations a write could not deliver (contract: "A write that cannot reach Redis").
/// Each addition is stamped with a sequence number so a flush clears only what it delivered.
#[derive(Default)]
struct Pending {
    seq: u64,
    records: HashMap<i64, u64>,
    lists: Option<u64>,
}

type Flight = Arc<OnceCell<Result<Option<Cached>, ApiError>>>;

/// One request's place in a flight. Dropping it (done, or the request cancelled) unregisters the
/// flight, so the map never keeps finished or abandoned flights.
struct FlightTicket<'a> {
    cache: &'a Cache,
    key: (EntryKey, Token),
    cell: Flight,
    leader: bool,
}

impl Drop for FlightTicket<'_> {
    fn drop(&mut self) {
        if !self.leader {
            self.cache.followers.fetch_sub(1, Ordering::AcqRel);
        }
        // Whoever finishes first removes it; a cancelled leader's followers still share the cell.
        if self.leader || self.cell.initialized() {
            let mut flights = self.cache.flights.lock().unwrap_or_else(|p| p.into_inner());
            if flights.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &self.cell)) {
                flights.remove(&self.key);
            }
        }
    }
}

/// The cache as the API sees it.
pub struct Cache {
    backend: Backend,
    enabled: bool,
    prefix: String,
    metrics: Metrics,
    pending: Mutex<Pending>,
    has_pending: AtomicBool,
    /// Set by every failed cache command, cleared by the next one that succeeds: `/ready` reports
    /// `degraded` from the first failure on, not only once the client's connection flag catches up.
    failing: AtomicBool,
    flights: Mutex<HashMap<(EntryKey, Token), Flight>>,
    followers: AtomicUsize,
    fill_hook: Option<FillHook>,
}

/// A hook the tests use to pause a cache fill between the database read and the write to the cache,
/// which makes the slow-miss race deterministic. Not configuration: `App::build_with` takes it.
pub type FillHook =
    std::sync::Arc<dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

impl Cache {
    /// Connects to Redis (waiting at most a second) or builds the in-process store.
    pub async fn new(config: &Config, metrics: Metrics, fill_hook: Option<FillHook>) -> Result<Arc<Self>, String> {
        let backend = match &config.redis_url {
            Some(url) => Backend::Redis(redis::RedisStore::connect(url, config.cache_ttl, config.cache_timeout).await?),
            None => Backend::Memory(memory::MemoryStore::new(config.cache_ttl)),
        };
        let cache = Arc::new(Self {
            backend,
            enabled: config.cache_enabled,
            prefix: config.cache_prefix.clone(),
            metrics,
            pending: Mutex::default(),
            has_pending: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            flights: Mutex::default(),
            followers: AtomicUsize::new(0),
            fill_hook,
        });
        // Deliver pending invalidations soon after Redis returns, not only on this replica's next read,
        // so other replicas stop serving the old entry quickly too.
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { break };
                if cache.has_pending.load(Ordering::Acquire) {
                    let _ = cache.flush_pending().await;
                }
            }
        });
        Ok(cache)
    }

    /// `ok`, `degraded` (Redis unreachable) or `disabled` (`CACHE_ENABLED=false`), for `/ready`.
    /// Degraded from the first failed command until one succeeds; while failing, `/ready` itself tries
    /// a PING, so an idle replica does not stay `degraded` after Redis is back.
    pub async fn status(&self) -> &'static str {
        if !self.enabled {
            return "disabled";
        }
        if let Backend::Redis(s) = &self.backend
            && !s.is_connected()
        {
            return "degraded";
        }
        if self.failing.load(Ordering::Acquire) {
            match self.backend.ping().await {
                Ok(()) => self.command_succeeded(),
                Err(_) => return "degraded",
            }
        }
        "ok"
    }

    /// A child span of the request for one cache step, when the request is traced.
    fn span(&self, name: &'static str) -> Option<traces::ChildSpan> {
        traces::child(name, SpanKind::Client, || {
            let backend = match self.backend {
                Backend::Redis(_) => "redis",
                Backend::Memory(_) => "memory",
            };
            vec![KeyValue::new("aside.cache.backend", backend)]
        })
    }

    fn command_failed(&self) {
        self.failing.store(true, Ordering::Release);
        self.metrics.cache_error();
    }

    fn command_succeeded(&self) {
        // Load first: a cache hit then only reads the shared flag, never writes its cache line.
        if self.failing.load(Ordering::Relaxed) {
            self.failing.store(false, Ordering::Release);
        }
    }

    /// How many requests are waiting on another request's database read right now (tests use this to
    /// make the stampede deterministic).
    #[doc(hidden)]
    pub fn followers(&self) -> usize {
        self.followers.load(Ordering::Acquire)
    }

    /// Flights currently registered (tests check that none leak).
    #[doc(hidden)]
    pub fn flights(&self) -> usize {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The Redis keys of an entry: its token's and its own (tests check they share a cluster slot).
    #[doc(hidden)]
    pub fn key_names(&self, key: &EntryKey) -> (String, String) {
        self.keys(key)
    }

    fn keys(&self, key: &EntryKey) -> (String, String) {
        let p = &self.prefix;
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
            EntryKey::Page { after, limit, key: None } => {
                (self.list_token_key(), format!("{p}{{list}}:page:{after}:{limit}"))
            }
            EntryKey::Page { after, limit, key: Some(k) } => {
                (self.list_token_key(), format!("{p}{{list}}:key:{after}:{limit}:{k}"))
            }
        }
    }

    fn list_token_key(&self) -> String {
        format!("{}{{list}}:tok", self.prefix)
    }

    /// Answers a GET through the cache. `load` reads the database and returns the serialized response
    /// (None = not found, never cached).
    pub async fn read<F, Fut>(&self, key: EntryKey, load: F) -> Result<Option<(Cached, CacheOutcome)>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Cached>, ApiError>>,
    {
        // The rare paths are boxed so a cache hit's future stays small (poem moves futures between its
        // layers by value; profiling showed those copies at ~10 % of a hit's CPU).
        if !self.enabled || (self.has_pending.load(Ordering::Acquire) && Box::pin(self.flush_pending()).await.is_err())
        {
            return Box::pin(self.bypass(load)).await;
        }
        let (tok_key, entry_key) = self.keys(&key);
        let mut span = self.span("cache lookup");
        let (token, entry) = match self.backend.lookup(&tok_key, &entry_key).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e.0, "cache lookup failed; reading the database");
                if let Some(s) = &mut span {
                    s.fail("cache unavailable");
                }
                drop(span);
                self.command_failed();
                return Box::pin(self.bypass(load)).await;
            }
        };
        self.command_succeeded();
        let hit = entry.and_then(|e| decode_entry(&e, &token));
        if let Some(mut s) = span {
            s.set(KeyValue::new("aside.cache.hit", hit.is_some()));
        }
        if let Some(hit) = hit {
            self.metrics.cache_lookup(CacheOutcome::Hit.label());
            return Ok(Some((hit, CacheOutcome::Hit)));
        }
        self.metrics.cache_lookup(CacheOutcome::Miss.label());
        Box::pin(self.miss(key, token, tok_key, entry_key, load)).await
    }

    /// Single-flight per (entry, token): a request only shares a read that began after it saw the same
    /// token, i.e. after every write acknowledged before it started (contract: read-your-writes).
    async fn miss<F, Fut>(
        &self,
        key: EntryKey,
        token: Token,
        tok_key: String,
        entry_key: String,
        load: F,
    ) -> Result<Option<(Cached, CacheOutcome)>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Cached>, ApiError>>,
    {
        let flight = self.join_flight((key, token.clone()));
        let result = flight
            .cell
            .get_or_init(|| async {
                let loaded = load().await;
                if let Ok(Some(fresh)) = &loaded {
                    self.fill(&tok_key, &token, &entry_key, fresh).await;
                }
                loaded
            })
            .await
            .clone();
        Ok(result?.map(|c| (c, CacheOutcome::Miss)))
    }

    fn join_flight(&self, key: (EntryKey, Token)) -> FlightTicket<'_> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        let (cell, leader) = match flights.get(&key) {
            Some(cell) => (cell.clone(), false),
            None => {
                let cell = Flight::default();
                flights.insert(key.clone(), cell.clone());
                (cell, true)
            }
        };
        if !leader {
            self.followers.fetch_add(1, Ordering::AcqRel);
        }
        FlightTicket { cache: self, key, cell, leader }
    }

    async fn bypass<F, Fut>(&self, load: F) -> Result<Option<(Cached, CacheOutcome)>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Cached>, ApiError>>,
    {
        self.metrics.cache_lookup(CacheOutcome::Bypass.label());
        Ok(load().await?.map(|c| (c, CacheOutcome::Bypass)))
    }

    async fn fill(&self, tok_key: &str, token: &Token, entry_key: &str, fresh: &Cached) {
        if let Some(hook) = &self.fill_hook {
            hook(entry_key.to_owned()).await;
        }
        let mut entry = BytesMut::with_capacity(TOKEN_LEN + fresh.etag.len() + 1 + fresh.body.len());
        entry.extend_from_slice(token);
        entry.extend_from_slice(&fresh.etag);
        entry.extend_from_slice(b"\n");
        entry.extend_from_slice(&fresh.body);
        let mut span = self.span("cache fill");
        let filled = self.backend.fill(tok_key, token, entry_key, entry.freeze()).await;
        if let Some(s) = &mut span {
            match &filled {
                Ok(stored) => s.set(KeyValue::new("aside.cache.filled", *stored)),
                Err(_) => s.fail("cache unavailable"),
            }
        }
        drop(span);
        match filled {
            Ok(true) => self.command_succeeded(),
            // A write replaced the token while we read the database: our bytes may be older than it.
            Ok(false) => {
                self.command_succeeded();
                tracing::debug!(entry_key, "fill skipped: token changed during the miss");
            }
            Err(e) => {
                tracing::debug!(error = %e.0, "cache fill failed");
                self.command_failed();
            }
        }
    }

    /// Invalidates everything a write to `record` (or a new record, when None) could have changed.
    /// Never fails the write: an undeliverable invalidation is kept pending (see module docs).
    pub async fn invalidate(&self, record: Option<i64>) {
        let mut span = self.span("cache invalidate");
        let deferred = if self.has_pending.load(Ordering::Acquire) {
            // Earlier writes' invalidations are still undelivered: this one joins them and all go together.
            self.add_pending(record);
            self.flush_pending().await.err()
        } else {
            // The common case: only this write's keys, in one round trip. (Queuing them as pending first
            // made every concurrent write re-send the others' keys too: ~4.6 tokens per PUT at 8
            // connections.) Pending only if delivery fails, before the write answers: a read of this
            // replica that starts after the answer finds it and delivers it first, as before.
            let mut tok_keys = Vec::with_capacity(2);
            let mut dead = Vec::with_capacity(1);
            if let Some(id) = record {
                let (t, e) = self.keys(&EntryKey::Record(id));
                tok_keys.push(t);
                dead.push(e);
            }
            tok_keys.push(self.list_token_key());
            match self.backend.replace_tokens(&tok_keys, &dead).await {
                Ok(()) => {
                    self.command_succeeded();
                    self.metrics.cache_invalidations(tok_keys.len() as u64);
                    None
                }
                Err(e) => {
                    self.command_failed();
                    self.add_pending(record);
                    Some(e)
                }
            }
        };
        if let Some(e) = deferred {
            if let Some(s) = &mut span {
                s.set(KeyValue::new("aside.cache.deferred", true));
                s.fail("cache unavailable");
            }
            tracing::warn!(error = %e.0, ?record, "cache invalidation deferred: the cache did not take it");
        }
    }

    fn add_pending(&self, record: Option<i64>) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.seq += 1;
        let seq = p.seq;
        p.lists = Some(seq);
        if let Some(id) = record {
            p.records.insert(id, seq);
        }
        self.has_pending.store(true, Ordering::Release);
    }

    /// Delivers every pending invalidation in one round trip.
    async fn flush_pending(&self) -> Result<(), CacheError> {
        let (records, lists, seq) = {
            let p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            (p.records.keys().copied().collect::<Vec<_>>(), p.lists.is_some(), p.seq)
        };
        let mut tok_keys = Vec::with_capacity(records.len() + 1);
        let mut dead = Vec::with_capacity(records.len());
        for id in &records {
            let (t, e) = self.keys(&EntryKey::Record(*id));
            tok_keys.push(t);
            dead.push(e);
        }
        if lists {
            tok_keys.push(self.list_token_key());
        }
        if tok_keys.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.backend.replace_tokens(&tok_keys, &dead).await {
            self.command_failed();
            return Err(e);
        }
        self.command_succeeded();
        self.metrics.cache_invalidations(tok_keys.len() as u64);
        // Clear only what this flush delivered: a write that added to `pending` meanwhile stays pending.
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.records.retain(|_, s| *s > seq);
        if p.lists.is_some_and(|s| s <= seq) {
            p.lists = None;
        }
        self.has_pending.store(p.lists.is_some() || !p.records.is_empty(), Ordering::Release);
        Ok(())
    }
}

/// Returns the entry's payload when it was filled under `token`.
fn decode_entry(entry: &Bytes, token: &[u8]) -> Option<Cached> {
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
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let cache = rt.block_on(Cache::new(&cfg, Metrics::new().expect("metrics"), None)).expect("cache");
        let (tok, body) = cache.keys(&EntryKey::Record(-42));
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
#[cfg(test)]
mod size_tests {
    /// poem copies each layer's future by value; a cache read that carries fred's ~10 KiB command
    /// futures inline was measurably slower (see DESIGN.md, "Performance").
    #[tokio::test]
    async fn a_cache_read_future_stays_small() {
        let cfg = crate::config::Config::from_vars(&Default::default()).expect("defaults");
        let cache =
            super::Cache::new(&cfg, crate::metrics::Metrics::new().expect("metrics"), None).await.expect("cache");
        let read = cache.read(super::EntryKey::Record(1), || async { Ok(None) });
        assert!(std::mem::size_of_val(&read) <= 1024, "read future is {} bytes", std::mem::size_of_val(&read));
    }
}
