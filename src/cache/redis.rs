//! The Redis store (fred). Every command has a deadline (`CACHE_TIMEOUT_MS`) and fails at once while
//! the client knows it is disconnected, so a dead Redis costs a request milliseconds, not a hang
//! (fred's defaults set no command timeout, and a client whose first connect failed hangs every later
//! command). The pool reconnects on its own. The cache needs Redis 4.0 or later (`master_replid` in
//! `INFO replication`, which `trust.rs` reads): against an older server the store refuses every
//! command, so the cache stays in BYPASS, and says why once.
//!
//! A reconnect may lead to another server (a Sentinel failover, an address that moved), which can hold
//! tokens and entries older than writes this or another process already acknowledged (DESIGN.md §2,
//! "Failover"). So every token carries the namespace of the master term it was minted in (16 hex digits
//! of the master's replication id), this process only trusts a lookup made on a connection it has
//! verified (role master, that replication id), and tokens of any other term count as missing. That
//! verification is `trust.rs`; this file holds the connection and the commands.

use std::{
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use fred::{
    prelude::*,
    types::{Expiration, Version, config::Options, scripts::Script},
};

use super::{
    token::{NS_LEN, Token, new_token, token_ttl},
    trust::{Term, Trust, verifier},
};

/// Writes the entry only if the token is still the one the reader saw before its database read.
const FILL_IF_TOKEN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// Returns the token if it belongs to this term (ARGV[2] = namespace); otherwise (missing, or minted
/// under another master term) stores ARGV[1] and returns it. One atomic step, so readers racing to
/// create the token agree on it (DESIGN.md §2, trap 3).
const TOKEN_OF_TERM: &str = r"
local t = redis.call('GET', KEYS[1])
if t and string.sub(t, 1, string.len(ARGV[2])) == ARGV[2] then
  return t
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return ARGV[1]";

/// The namespace of a Redis Cluster (whose shards are not verified: DESIGN.md §2, "Failover").
const CLUSTER_NS: &[u8; NS_LEN] = b"c000000000000000";
/// Tokens written by a write while this process has no verified term: any fresh value invalidates.
const UNVERIFIED_NS: &[u8; NS_LEN] = b"u000000000000000";

/// Why a cache command did not complete (only Redis fails: the in-process store cannot).
#[derive(Debug)]
pub(super) struct CacheError(pub(super) String);

impl From<fred::error::Error> for CacheError {
    fn from(e: fred::error::Error) -> Self {
        Self(e.to_string())
    }
}

pub(super) struct RedisStore {
    pool: Pool,
    ttl: Duration,
    timeout: Duration,
    fast: Options,
    fill_script: Script,
    token_script: Script,
    trust: Arc<Trust>,
    /// The server is older than 4.0: every command is refused without a round trip.
    too_old: AtomicBool,
    warned_too_old: AtomicBool,
}

/// The term check reads `master_replid` from `INFO replication`, which Redis has from 4.0 on (Lua
/// scripts and `SET … EX/PX` are older still).
pub(super) fn supports_the_cache(version: &Version) -> bool {
    version.major >= 4
}

impl RedisStore {
    /// Builds the pool and connects, waiting at most a second (connection and verification): a Redis
    /// that is down at start-up only means BYPASS until the background reconnect succeeds.
    pub(super) async fn connect(url: &str, ttl: Duration, timeout: Duration) -> Result<Self, String> {
        let mut cfg = Config::from_url(url).map_err(|e| format!("REDIS_URL: {}", e.details()))?;
        // fail_fast=false keeps the client reconnecting instead of dying after a failed first connect.
        cfg.fail_fast = false;
        let clustered = cfg.server.is_clustered();
        let pool = Builder::from_config(cfg)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_millis(500);
                c.internal_command_timeout = Duration::from_millis(500);
                c.max_command_attempts = 1;
                // Never follow MOVED/ASK: the command fails (BYPASS) instead. On MOVED fred still re-reads
                // the slot map first, so the next command goes to the right node. Following ASK is what
                // wedged the cache after a slot migration (fred 10.1 answers an ASK with ASKING, which
                // with no attempt left fails and ends its routing task; with attempts left, it takes the
                // next reply on that pipelined connection as ASKING's, which can belong to another
                // command). DESIGN.md §2, "Redis Cluster".
                c.max_redirections = 0;
                // Notice a black-holed socket (no RST) and reconnect instead of waiting forever.
                c.unresponsive.max_timeout = Some(Duration::from_secs(2));
                c.unresponsive.interval = Duration::from_millis(500);
                c.tcp.nodelay = Some(true);
            })
            .with_performance_config(|p| p.default_command_timeout = timeout)
            // Retry forever, 100 ms doubling to 1 s: the cache is back within ~1 s of Redis (contract: 5 s).
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2))
            // One multiplexed connection: fred pipelines concurrent commands on it, so fewer syscalls
            // and wake-ups per request than a pool (measured: ~10 % less CPU per cache hit). The trust
            // check below relies on it too (one connection, one stream of reconnect notifications).
            .build_pool(1)
            .map_err(|e| format!("REDIS_URL: {}", e.details()))?;
        let client = pool.next().clone();
        let trust = Arc::new(if clustered {
            // fred follows MOVED/ASK itself; a shard's failover is not verified (DESIGN.md §2).
            Trust { term: RwLock::new(Some(Term { seq: 0, ns: Bytes::from_static(CLUSTER_NS) })), reconnects: None }
        } else {
            // Subscribed before connecting, so the first connection is verified like any later one.
            Trust { term: RwLock::new(None), reconnects: Some(Mutex::new(client.reconnect_rx())) }
        });
        if !clustered {
            tokio::spawn(verifier(Arc::downgrade(&trust), client.clone(), client.reconnect_rx()));
        }
        for client in pool.clients() {
            tokio::spawn(keep_routing(client.clone(), Arc::downgrade(&trust)));
        }
        let started = tokio::time::Instant::now();
        let budget = Duration::from_secs(1);
        let verified = tokio::time::timeout(budget, async {
            let _ = pool.wait_for_connect().await;
            while trust.current().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        if verified.await.is_err() {
            tracing::warn!(
                waited_ms = started.elapsed().as_millis() as u64,
                "Redis not reachable (or not a master) at start-up; serving from the database until it is"
            );
        }
        let fast = Options { fail_fast: true, timeout: Some(timeout), max_attempts: Some(1), ..Default::default() };
        let store = Self {
            pool,
            ttl,
            timeout,
            fast,
            fill_script: Script::from_lua(FILL_IF_TOKEN),
            token_script: Script::from_lua(TOKEN_OF_TERM),
            trust,
            too_old: AtomicBool::new(false),
            warned_too_old: AtomicBool::new(false),
        };
        store.check_version();
        Ok(store)
    }

    /// Reads the version fred cached at connect (its INFO) and refuses the cache below 4.0, warning once.
    /// Runs at start-up, whenever a lookup fails and when readiness probes a failing cache, so a server
    /// that connects late, or is replaced by a newer one, is noticed without a command per hit.
    fn check_version(&self) {
        let Some(version) = self.pool.next().server_version() else { return };
        let too_old = !supports_the_cache(&version);
        self.too_old.store(too_old, Ordering::Release);
        if too_old && !self.warned_too_old.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                redis_version = %version,
                "Redis {version} is older than 4.0, which the cache needs (master_replid in INFO replication): \
                 every read bypasses the cache and goes to the database (X-Cache: BYPASS) until Redis is upgraded"
            );
        }
    }

    /// One PING within the cache budget (readiness asks while commands are failing); an unusable
    /// (too old) server fails it too.
    pub(super) async fn ping(&self) -> Result<(), CacheError> {
        let () = self.pool.next().with_options(&self.fast).ping(None).await?;
        self.check_version();
        self.usable()
    }

    fn usable(&self) -> Result<(), CacheError> {
        if self.too_old.load(Ordering::Relaxed) {
            return Err(CacheError("Redis is older than 4.0; the cache needs master_replid".into()));
        }
        Ok(())
    }

    /// Connected to a server this process has verified.
    pub(super) fn is_connected(&self) -> bool {
        self.pool.is_connected() && self.trust.current().is_some()
    }

    /// Caps a command with the cache budget even if the client's own timeout does not fire.
    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(CacheError("cache command timed out".into())),
        }
    }

    /// One round trip for the token and the entry; a second (the atomic `TOKEN_OF_TERM` script) only when
    /// the token is missing or from another master term. Fails (BYPASS) unless every reply came from the
    /// connection this process verified.
    pub(super) async fn lookup(&self, tok_key: &str, entry_key: &str) -> Result<(Token, Option<Bytes>), CacheError> {
        self.usable()?;
        let looked_up = self.lookup_on_server(tok_key, entry_key).await;
        if looked_up.is_err() {
            // Rare path: was it a server too old for the cache that connected after start-up?
            self.check_version();
        }
        looked_up
    }

    async fn lookup_on_server(&self, tok_key: &str, entry_key: &str) -> Result<(Token, Option<Bytes>), CacheError> {
        let term = self.trust.current().ok_or_else(|| CacheError("Redis not verified since (re)connecting".into()))?;
        // The hot path relies on fred's own per-command timeout (`fast`) alone: a second timer around it
        // cost a timer-wheel registration per cache hit and bounded nothing more.
        let client = self.pool.next().with_options(&self.fast);
        // Boxed here, each command on its own, rather than this whole function by its caller: fred's
        // command futures are ~5 KiB each and this one holds two (the MGET, the rare token script), so a
        // box around it copied ~11 KiB per cache hit (callgrind: a third of a hit's instructions were
        // that memcpy); now a hit copies the MGET's alone.
        let mut found: Vec<Option<Bytes>> = Box::pin(client.mget(vec![tok_key, entry_key])).await?;
        let entry = found.pop().flatten();
        let found = match found.pop().flatten() {
            Some(token) if token.starts_with(&term.ns) => (token, entry),
            _ => {
                let candidate = new_token(&term.ns);
                let ttl = token_ttl(self.ttl).as_secs() as i64;
                let args: Vec<Value> = vec![candidate.into(), term.ns.clone().into(), ttl.into()];
                let client = self.pool.next();
                let token: Bytes =
                    Box::pin(self.bounded(self.token_script.evalsha_with_reload(client, vec![tok_key], args))).await?;
                // The entry read above predates this token, so it can never match it: a miss either way.
                (token, None)
            }
        };
        if !self.trust.still(&term) {
            return Err(CacheError("Redis connection changed during the lookup; not trusted yet".into()));
        }
        Ok(found)
    }

    /// The compare-and-set fill.
    pub(super) async fn fill(
        &self,
        tok_key: &str,
        token: &Token,
        entry_key: &str,
        entry: Bytes,
    ) -> Result<bool, CacheError> {
        self.usable()?;
        let client = self.pool.next();
        if !client.is_connected() {
            return Err(CacheError("cache disconnected".into()));
        }
        let ttl_ms = self.ttl.as_millis() as i64;
        let args: Vec<Value> = vec![token.clone().into(), entry.into(), ttl_ms.into()];
        let done: i64 =
            self.bounded(self.fill_script.evalsha_with_reload(client, vec![tok_key, entry_key], args)).await?;
        Ok(done == 1)
    }

    /// Replaces tokens (and drops now-unreachable entries) in one pipelined round trip. Separate
    /// commands, not MULTI: the keys live in different cluster slots and each SET is atomic alone. Any
    /// fresh token invalidates, whichever server it lands on, so no verification is needed here.
    pub(super) async fn replace_tokens(&self, tok_keys: &[String], dead_entries: &[String]) -> Result<(), CacheError> {
        self.usable()?;
        let client = self.pool.next();
        if !client.is_connected() {
            return Err(CacheError("cache disconnected".into()));
        }
        let ns = self.trust.current().map_or_else(|| Bytes::from_static(UNVERIFIED_NS), |t| t.ns);
        let ttl = token_ttl(self.ttl).as_secs() as i64;
        let pipe = client.pipeline();
        for k in tok_keys {
            let () = pipe.set(k.as_str(), new_token(&ns), Some(Expiration::EX(ttl)), None, false).await?;
        }
        for k in dead_entries {
            let () = pipe.del(k.as_str()).await?;
        }
        let _: Vec<Value> = self.bounded(pipe.all()).await?;
        Ok(())
    }
}

/// Runs fred's routing task for `client` and starts it again whenever it ends with an error. fred ends
/// it on some errors and never restarts it by itself (10.1: a redirection it cannot follow, or a failed
/// cluster re-sync); the client then still looks connected and every later command waits for its timeout,
/// for good. Ends when the client is closed (`quit`). Costs nothing per command.
async fn keep_routing(client: Client, trust: Weak<Trust>) {
    loop {
        let ended = client.connect().await;
        match ended {
            Ok(Err(e)) if !e.is_canceled() => {
                // The new routing task opens new connections: trust none of them until verified (the
                // verifier also gets fred's reconnect notification; this only makes it certain).
                match trust.upgrade() {
                    Some(t) if t.reconnects.is_some() => t.set(None),
                    Some(_) => {}
                    None => return,
                }
                tracing::warn!(error = %e, "Redis connection task ended; starting it again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redis_4_and_later_can_serve_the_cache() {
        for (v, ok) in
            [("3.2.12", false), ("3.0.7", false), ("2.8.24", false), ("4.0.0", true), ("6.2.14", true), ("8.0.1", true)]
        {
            let version = Version::parse(v).expect("semver");
            assert_eq!(supports_the_cache(&version), ok, "{v}");
        }
    }
}
