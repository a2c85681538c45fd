//! Single-flight for misses: concurrent misses of one entry under one token share one database read
//! (DESIGN.md §2, "The cache"). A request only joins a flight keyed by the token it saw, so it never
//! shares a read that began before a write it must observe (contract: read-your-writes). Separate from
//! `mod.rs` because the registry has its own lock and its own cleanup rule (a ticket unregisters its
//! flight when dropped); the read path only joins it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::OnceCell;

use super::token::{Cached, EntryKey, Token};
use crate::error::ApiError;

pub(super) type Flight = Arc<OnceCell<Result<Option<Cached>, ApiError>>>;

/// The flights in progress, and how many requests wait on one they do not lead.
#[derive(Default)]
pub(super) struct Flights {
    map: Mutex<HashMap<(EntryKey, Token), Flight>>,
    followers: AtomicUsize,
}

impl Flights {
    /// Joins the flight of `key`, leading it when there is none yet.
    pub(super) fn join(&self, key: (EntryKey, Token)) -> FlightTicket<'_> {
        let mut flights = self.map.lock().unwrap_or_else(|p| p.into_inner());
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
        FlightTicket { flights: self, key, cell, leader }
    }

    /// Requests waiting on another request's database read right now.
    pub(super) fn followers(&self) -> usize {
        self.followers.load(Ordering::Acquire)
    }

    /// Flights currently registered.
    pub(super) fn registered(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One request's place in a flight. Dropping it (done, or the request cancelled) unregisters the
/// flight, so the map never keeps finished or abandoned flights.
pub(super) struct FlightTicket<'a> {
    flights: &'a Flights,
    key: (EntryKey, Token),
    pub(super) cell: Flight,
    leader: bool,
}

impl Drop for FlightTicket<'_> {
    fn drop(&mut self) {
        if !self.leader {
            self.flights.followers.fetch_sub(1, Ordering::AcqRel);
        }
        // Whoever finishes first removes it; a cancelled leader's followers still share the cell.
        if self.leader || self.cell.initialized() {
            let mut flights = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
            if flights.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &self.cell)) {
                flights.remove(&self.key);
            }
        }
    }
}
