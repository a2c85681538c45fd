//! Which Redis server this process trusts (DESIGN.md §2, "Failover"): the master term its connection
//! was verified in, withdrawn on every reconnect until the verifier has asked the new server for its
//! term (`INFO replication`: role master, its replication id). Separate from `redis.rs` because it is
//! the failover-safety decision on its own: the store reads the current term and asks whether a reply
//! still came from that term's connection; how a term is verified stays here.

use std::{
    sync::{Mutex, RwLock, Weak},
    time::Duration,
};

use bytes::Bytes;
use fred::{
    prelude::*,
    types::{CustomCommand, config::Options},
};
use tokio::sync::broadcast::{self, error::TryRecvError};

use super::token::NS_LEN;

/// A master term this process verified: its namespace, and a number no other verification reuses.
#[derive(Clone)]
pub(super) struct Term {
    pub(super) seq: u64,
    pub(super) ns: Bytes,
}

/// What this process trusts about the server its connection leads to.
pub(super) struct Trust {
    /// None while unverified: lookups then fail (BYPASS) instead of trusting an unknown server.
    pub(super) term: RwLock<Option<Term>>,
    /// fred's reconnect notifications the verifier has not taken yet. fred sends one before the new
    /// connection carries any command, so a reply from an unverified connection always finds this
    /// non-empty (or the term changed). None for a cluster.
    pub(super) reconnects: Option<Mutex<broadcast::Receiver<Server>>>,
}

impl Trust {
    pub(super) fn current(&self) -> Option<Term> {
        self.term.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True when a reply that arrived after `term` was read came from the connection that term
    /// verified. Two uncontended locks: no round trip on the hit path.
    pub(super) fn still(&self, term: &Term) -> bool {
        let Some(reconnects) = &self.reconnects else { return true };
        let quiet = reconnects.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        quiet && self.term.read().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|t| t.seq == term.seq)
    }

    pub(super) fn set(&self, term: Option<Term>) {
        *self.term.write().unwrap_or_else(|p| p.into_inner()) = term;
    }

    fn has_reconnects(&self) -> bool {
        self.reconnects.as_ref().is_some_and(|r| !r.lock().unwrap_or_else(|p| p.into_inner()).is_empty())
    }

    /// Takes every pending reconnect notification.
    fn take_reconnects(&self) {
        let Some(reconnects) = &self.reconnects else { return };
        let mut rx = reconnects.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = rx.try_recv() {}
    }
}

/// The master term of the server `client` is connected to: 16 hex digits of its replication id, which
/// a promoted replica changes (and a replica shares with its master, so only a master is accepted).
/// Outer error: no answer; inner error: an answer that cannot be trusted.
async fn probe(client: &Client) -> Result<Result<Bytes, String>, fred::error::Error> {
    let opts = Options {
        fail_fast: true,
        timeout: Some(Duration::from_millis(500)),
        max_attempts: Some(1),
        ..Default::default()
    };
    let info: String = client
        .with_options(&opts)
        .custom(CustomCommand::new_static("INFO", fred::types::ClusterHash::FirstKey, false), vec!["replication"])
        .await?;
    let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    if field("role:") != Some("master") {
        return Ok(Err(format!("Redis answers as {}, not as a master", field("role:").unwrap_or("?"))));
    }
    Ok(match field("master_replid:") {
        Some(id) if id.len() >= NS_LEN && id.is_ascii() => Ok(Bytes::copy_from_slice(&id.as_bytes()[..NS_LEN])),
        _ => Err("INFO replication has no master_replid".into()),
    })
}

/// Verifies each new connection before lookups trust it: withdraws trust, takes the reconnect
/// notifications, asks the server for its term and trusts that. Also re-asks every second on a trusted
/// connection, in case a server changed role without dropping it (Sentinel kills client connections
/// when it reconfigures a server; this bounds the damage if something else does not).
pub(super) async fn verifier(trust: Weak<Trust>, client: Client, mut wake: broadcast::Receiver<Server>) {
    let mut seq = 0;
    let mut last_ns: Option<Bytes> = None;
    loop {
        let Some(t) = trust.upgrade() else { return };
        match t.current() {
            Some(term) if !t.has_reconnects() => match probe(&client).await {
                // Same connection, another term (or no longer a master): stop trusting, verify again now.
                Ok(Ok(ns)) if ns != term.ns => {
                    t.set(None);
                    continue;
                }
                Ok(Err(why)) => {
                    tracing::warn!(why, "Redis no longer verified");
                    t.set(None);
                    continue;
                }
                // Unchanged, or no answer (fred reconnects and notifies; nothing to decide until then).
                _ => {}
            },
            _ => {
                // Withdraw trust first, then take the notifications: a lookup that read the old term fails
                // its check whether it looks before or after this point.
                t.set(None);
                t.take_reconnects();
                match probe(&client).await {
                    Ok(Ok(ns)) => {
                        if last_ns.as_ref().is_some_and(|l| *l != ns) {
                            tracing::warn!(
                                "Redis master term changed (failover?): entries cached before it are ignored"
                            );
                        }
                        seq += 1;
                        last_ns = Some(ns.clone());
                        t.set(Some(Term { seq, ns }));
                    }
                    Ok(Err(why)) => tracing::debug!(why, "Redis not verified yet"),
                    Err(e) => tracing::debug!(error = %e, "Redis not verified yet"),
                }
            }
        }
        let wait = if t.current().is_some() { Duration::from_secs(1) } else { Duration::from_millis(100) };
        drop(t);
        match tokio::time::timeout(wait, wake.recv()).await {
            Err(_) | Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) => return,
        }
    }
}
