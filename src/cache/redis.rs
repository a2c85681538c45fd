//! The Redis store (fred). Every command has a deadline (`CACHE_TIMEOUT_MS`) and fails at once while
//! the client knows it is disconnected, so a dead Redis costs a request milliseconds, not a hang
//! (fred's defaults set no command timeout, and a client whose first connect failed hangs every later
//! command). The pool reconnects on its own. The lookup needs Redis 7.0 (`SET … NX GET`): against an
//! older server the store refuses every lookup, so the cache stays in BYPASS, and says why once.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use bytes::Bytes;
use fred::{
    prelude::*,
    types::{Expiration, SetOptions, Version, config::Options, scripts::Script},
};

use super::{CacheError, Token};

/// Writes the entry only if the token is still the one the reader saw before its database read.
const FILL_IF_TOKEN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// Tokens outlive entries a little; only memory depends on it, never correctness.
pub(super) fn token_ttl(ttl: Duration) -> Duration {
    ttl * 2 + Duration::from_secs(10)
}

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
    /// The server is older than 7.0: lookups are refused without a round trip.
    too_old: AtomicBool,
    warned_too_old: AtomicBool,
}

/// The lookup's atomic token creation is `SET key value NX GET`, which Redis accepts from 7.0 on.
pub(super) fn supports_set_nx_get(version: &Version) -> bool {
    version.major >= 7
}

impl RedisStore {
    /// Builds the pool and connects, waiting at most a second: a Redis that is down at start-up only
    /// means BYPASS until the background reconnect succeeds.
    pub(super) async fn connect(url: &str, ttl: Duration, timeout: Duration) -> Result<Self, String> {
        let mut cfg = Config::from_url(url).map_err(|e| format!("REDIS_URL: {}", e.details()))?;
        // fail_fast=false keeps the client reconnecting instead of dying after a failed first connect.
        cfg.fail_fast = false;
        let pool = Builder::from_config(cfg)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_millis(500);
                c.internal_command_timeout = Duration::from_millis(500);
                c.max_command_attempts = 1;
                // Notice a black-holed socket (no RST) and reconnect instead of waiting forever.
                c.unresponsive.max_timeout = Some(Duration::from_secs(2));
                c.unresponsive.interval = Duration::from_millis(500);
                c.tcp.nodelay = Some(true);
            })
            .with_performance_config(|p| p.default_command_timeout = timeout)
            // Retry forever, 100 ms doubling to 1 s: the cache is back within ~1 s of Redis (contract: 5 s).
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2))
            // One multiplexed connection: fred pipelines concurrent commands on it, so fewer syscalls
            // and wake-ups per request than a pool (measured: ~10 % less CPU per cache hit).
            .build_pool(1)
            .map_err(|e| format!("REDIS_URL: {}", e.details()))?;
        let _connection_task = pool.connect();
        if tokio::time::timeout(Duration::from_secs(1), pool.wait_for_connect()).await.is_err() {
            tracing::warn!("Redis not reachable at start-up; serving from the database until it is");
        }
        let fast = Options { fail_fast: true, timeout: Some(timeout), max_attempts: Some(1), ..Default::default() };
        let store = Self {
            pool,
            ttl,
            timeout,
            fast,
            fill_script: Script::from_lua(FILL_IF_TOKEN),
            too_old: AtomicBool::new(false),
            warned_too_old: AtomicBool::new(false),
        };
        store.check_version();
        Ok(store)
    }

    /// Reads the version fred cached at connect (its INFO) and refuses lookups below 7.0, warning once.
    /// Runs at start-up, whenever a lookup fails and when readiness probes a failing cache, so a server
    /// that connects late, or is replaced by a newer one, is noticed without a command per hit.
    fn check_version(&self) {
        let Some(version) = self.pool.next().server_version() else { return };
        let too_old = !supports_set_nx_get(&version);
        self.too_old.store(too_old, Ordering::Release);
        if too_old && !self.warned_too_old.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                redis_version = %version,
                "Redis {version} is older than 7.0, which the cache needs (SET … NX GET): every read bypasses \
                 the cache and goes to the database (X-Cache: BYPASS) until Redis is upgraded"
            );
        }
    }

    pub(super) fn is_connected(&self) -> bool {
        self.pool.is_connected()
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
            return Err(CacheError("Redis is older than 7.0; the cache needs SET … NX GET".into()));
        }
        Ok(())
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

    /// One round trip for the token and the entry; a second (atomic `SET NX GET`) only when the token
    /// is missing, so two readers racing to create it end up with the same one (DESIGN.md §2, trap 3).
    pub(super) async fn lookup(
        &self,
        tok_key: &str,
        entry_key: &str,
        new_token: fn() -> Token,
    ) -> Result<(Token, Option<Bytes>), CacheError> {
        self.usable()?;
        let looked_up = self.lookup_on_server(tok_key, entry_key, new_token).await;
        if looked_up.is_err() {
            // Rare path: was it a server too old for SET … NX GET that connected after start-up?
            self.check_version();
        }
        looked_up
    }

    async fn lookup_on_server(
        &self,
        tok_key: &str,
        entry_key: &str,
        new_token: fn() -> Token,
    ) -> Result<(Token, Option<Bytes>), CacheError> {
        // The hot path relies on fred's own per-command timeout (`fast`) alone: a second timer around it
        // cost a timer-wheel registration per cache hit and bounded nothing more.
        let client = self.pool.next().with_options(&self.fast);
        let mut found: Vec<Option<Bytes>> = client.mget(vec![tok_key, entry_key]).await?;
        let entry = found.pop().flatten();
        if let Some(Some(token)) = found.pop() {
            return Ok((token, entry));
        }
        let candidate = new_token();
        let ttl = Expiration::EX(token_ttl(self.ttl).as_secs() as i64);
        let previous: Option<Bytes> =
            client.set(tok_key, candidate.clone(), Some(ttl), Some(SetOptions::NX), true).await?;
        // The entry read above predates this token, so it can never match it: a miss either way.
        Ok((previous.unwrap_or(candidate), None))
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
    /// commands, not MULTI: the keys live in different cluster slots and each SET is atomic alone.
    pub(super) async fn replace_tokens(
        &self,
        tok_keys: &[String],
        dead_entries: &[String],
        new_token: fn() -> Token,
    ) -> Result<(), CacheError> {
        self.usable()?;
        let client = self.pool.next();
        if !client.is_connected() {
            return Err(CacheError("cache disconnected".into()));
        }
        let ttl = token_ttl(self.ttl).as_secs() as i64;
        let pipe = client.pipeline();
        for k in tok_keys {
            let () = pipe.set(k.as_str(), new_token(), Some(Expiration::EX(ttl)), None, false).await?;
        }
        for k in dead_entries {
            let () = pipe.del(k.as_str()).await?;
        }
        let _: Vec<Value> = self.bounded(pipe.all()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redis_7_and_later_can_serve_the_lookup() {
        for (v, ok) in
            [("6.2.14", false), ("6.0.0", false), ("5.0.7", false), ("7.0.0", true), ("7.4.2", true), ("8.0.1", true)]
        {
            let version = Version::parse(v).expect("semver");
            assert_eq!(supports_set_nx_get(&version), ok, "{v}");
        }
    }
}
