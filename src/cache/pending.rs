//! Invalidations a write could not deliver (contract: "A write that cannot reach Redis"), kept until a
//! flush delivers them. Separate from `mod.rs` because its bookkeeping is a rule of its own: each
//! addition is stamped with a sequence number, so a flush clears only what it delivered; delivering
//! them is the cache's job.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

/// What is undelivered: each record's and the lists' token, with the sequence number of its last addition.
#[derive(Default)]
struct Undelivered {
    seq: u64,
    records: HashMap<i64, u64>,
    lists: Option<u64>,
}

/// The pending invalidations, and a flag the read path checks without taking the lock.
#[derive(Default)]
pub(super) struct Pending {
    undelivered: Mutex<Undelivered>,
    any: AtomicBool,
}

impl Pending {
    /// Whether any invalidation is pending.
    pub(super) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Adds the tokens a write to `record` (or a new record, when None) replaces: the record's and the lists'.
    pub(super) fn add(&self, record: Option<i64>) {
        let mut p = self.undelivered.lock().unwrap_or_else(|p| p.into_inner());
        p.seq += 1;
        let seq = p.seq;
        p.lists = Some(seq);
        if let Some(id) = record {
            p.records.insert(id, seq);
        }
        self.any.store(true, Ordering::Release);
    }

    /// What is pending now: the records, whether the lists are, and the sequence number that covers them.
    pub(super) fn snapshot(&self) -> (Vec<i64>, bool, u64) {
        let p = self.undelivered.lock().unwrap_or_else(|p| p.into_inner());
        (p.records.keys().copied().collect::<Vec<_>>(), p.lists.is_some(), p.seq)
    }

    /// Clears what a flush of the snapshot taken at `seq` delivered: a write that added to the pending
    /// set meanwhile stays pending.
    pub(super) fn delivered(&self, seq: u64) {
        let mut p = self.undelivered.lock().unwrap_or_else(|p| p.into_inner());
        p.records.retain(|_, s| *s > seq);
        if p.lists.is_some_and(|s| s <= seq) {
            p.lists = None;
        }
        self.any.store(p.lists.is_some() || !p.records.is_empty(), Ordering::Release);
    }
}
