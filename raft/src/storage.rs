//! The durable log as Raft reads it. The application writes it (from [`crate::Ready`]) and
//! implements this trait over it; in Quiver that is the engine, whose log is the event log.

use crate::message::{Entry, HardState};

/// Read access to the persisted log.
pub trait Storage {
    /// What was persisted of the hard state.
    fn hard_state(&self) -> HardState;
    /// Index of the last persisted entry (0 when empty).
    fn last_index(&self) -> u64;
    /// Term of the entry at `index` (`Some(0)` for index 0; `None` beyond the log).
    fn term(&self, index: u64) -> Option<u64>;
    /// Entries `lo..hi` (`lo >= 1`, `hi <= last_index() + 1`).
    fn entries(&self, lo: u64, hi: u64) -> Vec<Entry>;
}

/// An in-memory [`Storage`] for tests and the simulator.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    hard: HardState,
    log: Vec<Entry>,
}

impl MemStorage {
    /// Persists entries: a first entry at or below the last index first removes the suffix
    /// from there (a leader overwrote uncommitted entries).
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index >= 1 && first.index <= self.last_index() + 1,
            "entries leave a gap"
        );
        self.log.truncate((first.index - 1) as usize);
        self.log.extend_from_slice(entries);
    }

    /// Persists the hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard = hs;
    }
}

impl Storage for MemStorage {
    fn hard_state(&self) -> HardState {
        self.hard
    }

    fn last_index(&self) -> u64 {
        self.log.len() as u64
    }

    fn term(&self, index: u64) -> Option<u64> {
        match index {
            0 => Some(0),
            i => self.log.get((i - 1) as usize).map(|e| e.term),
        }
    }

    fn entries(&self, lo: u64, hi: u64) -> Vec<Entry> {
        self.log[(lo - 1) as usize..(hi - 1) as usize].to_vec()
    }
}
