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
//!
//! This file holds the cache's flow (read, miss, fill, invalidate) and its public face. Each sibling
//! owns one decision: `token` what an entry and its token are, `flight` the single-flight of misses,
//! `pending` the undelivered invalidations, `store` which store runs, `redis` and `memory` the two
//! stores, `trust` which Redis server's replies count. Imports run one way, from this file down.

mod flight;
mod memory;
mod pending;
mod redis;
mod store;
mod token;
mod trust;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use opentelemetry::{KeyValue, trace::SpanKind};

use crate::{config::Config, error::ApiError, metrics::Metrics, traces};
use flight::Flights;
use pending::Pending;
use redis::CacheError;
use store::Backend;
pub use token::{Cached, EntryKey, Token};
use token::{decode_entry, encode_entry, keys, list_token_key};

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

/// The cache as the API sees it.
pub struct Cache {
    backend: Backend,
    enabled: bool,
    prefix: String,
    metrics: Metrics,
    pending: Pending,
    /// Set by every failed cache command, cleared by the next one that succeeds: `/ready` reports
    /// `degraded` from the first failure on, not only once the client's connection flag catches up.
    failing: AtomicBool,
    flights: Flights,
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
            pending: Pending::default(),
            failing: AtomicBool::new(false),
            flights: Flights::default(),
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
                if cache.pending.any() {
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
        self.flights.followers()
    }

    /// Flights currently registered (tests check that none leak).
    #[doc(hidden)]
    pub fn flights(&self) -> usize {
        self.flights.registered()
    }

    /// The Redis keys of an entry: its token's and its own (tests check they share a cluster slot).
    #[doc(hidden)]
    pub fn key_names(&self, key: &EntryKey) -> (String, String) {
        self.keys(key)
    }

    fn keys(&self, key: &EntryKey) -> (String, String) {
        keys(&self.prefix, key)
    }

    fn list_token_key(&self) -> String {
        list_token_key(&self.prefix)
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
        if !self.enabled || (self.pending.any() && Box::pin(self.flush_pending()).await.is_err()) {
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
        let flight = self.flights.join((key, token.clone()));
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
        let entry = encode_entry(token, fresh);
        let mut span = self.span("cache fill");
        let filled = self.backend.fill(tok_key, token, entry_key, entry).await;
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
        let deferred = if self.pending.any() {
            // Earlier writes' invalidations are still undelivered: this one joins them and all go together.
            self.pending.add(record);
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
                    self.pending.add(record);
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

    /// Delivers every pending invalidation in one round trip.
    async fn flush_pending(&self) -> Result<(), CacheError> {
        let (records, lists, seq) = self.pending.snapshot();
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
        self.pending.delivered(seq);
        Ok(())
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
