//! The two interchangeable stores behind the same token scheme: Redis (`redis`) or the in-process
//! fallback (`memory`), chosen once at start-up. Separate from `mod.rs` so the cache's flow is written
//! once against this one face, whichever store runs.

use bytes::Bytes;

use super::{
    memory::MemoryStore,
    redis::{CacheError, RedisStore},
    token::{LOCAL_NS, Token, new_token},
};

/// The two interchangeable stores behind the same token scheme.
pub(super) enum Backend {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl Backend {
    pub(super) async fn lookup(&self, tok_key: &str, entry_key: &str) -> Result<(Token, Option<Bytes>), CacheError> {
        match self {
            // Not boxed here: `lookup` boxes each fred command itself, so its future is small (poem moves
            // every layer's future by value: a test in `mod.rs` keeps the read future under 1 KiB).
            Self::Redis(s) => s.lookup(tok_key, entry_key).await,
            Self::Memory(s) => Ok(s.lookup(tok_key, entry_key, || new_token(LOCAL_NS))),
        }
    }
    pub(super) async fn fill(
        &self,
        tok_key: &str,
        token: &Token,
        entry_key: &str,
        entry: Bytes,
    ) -> Result<bool, CacheError> {
        match self {
            Self::Redis(s) => Box::pin(s.fill(tok_key, token, entry_key, entry)).await,
            Self::Memory(s) => Ok(s.fill(tok_key, token, entry_key, entry)),
        }
    }
    pub(super) async fn replace_tokens(&self, tok_keys: &[String], dead_entries: &[String]) -> Result<(), CacheError> {
        match self {
            Self::Redis(s) => Box::pin(s.replace_tokens(tok_keys, dead_entries)).await,
            Self::Memory(s) => {
                s.replace_tokens(tok_keys, dead_entries, || new_token(LOCAL_NS));
                Ok(())
            }
        }
    }
    pub(super) async fn ping(&self) -> Result<(), CacheError> {
        match self {
            Self::Redis(s) => s.ping().await,
            Self::Memory(_) => Ok(()),
        }
    }
}
