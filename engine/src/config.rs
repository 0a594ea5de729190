//! [`EngineConfig`]: how an engine is set up (segment size, write path, commit rule, the
//! durable floor recovery trusts, and the storage under it).

use std::sync::Arc;

use crate::io::IoMode;
use crate::storage::{RealStorage, Storage};

/// How the engine is set up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Segment files roll over at this size (a larger single record gets a segment of its own).
    pub segment_bytes_max: u64,
    /// Write path.
    pub io_mode: IoMode,
    /// Single-node mode: an entry is committed as soon as it is durable. Off under Raft,
    /// which moves the commit point with [`crate::Engine::set_commit_index`].
    pub commit_on_durable: bool,
    /// An index the caller knows was durable before this open (Raft's persisted commit
    /// index): recovery treats damage at or below it as corruption, never as a torn tail.
    /// 0: none (recovery then relies on the watermarks the records carry).
    pub durable_floor: u64,
    /// The file system under the engine: [`RealStorage`], or a simulated disk in tests
    /// ([`crate::storage::sim::SimDisk`]). Anything but the real one forces the pwrite path.
    pub storage: Arc<dyn Storage>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            segment_bytes_max: 64 << 20,
            io_mode: IoMode::Auto,
            commit_on_durable: true,
            durable_floor: 0,
            storage: Arc::new(RealStorage),
        }
    }
}

impl EngineConfig {
    /// Sets the segment size.
    pub fn segment_bytes_max(mut self, bytes: u64) -> Self {
        self.segment_bytes_max = bytes;
        self
    }

    /// Sets the write path.
    pub fn io_mode(mut self, mode: IoMode) -> Self {
        self.io_mode = mode;
        self
    }

    /// Sets the storage under the engine.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Sets the index known to be durable (see [`EngineConfig::durable_floor`]).
    pub fn durable_floor(mut self, index: u64) -> Self {
        self.durable_floor = index;
        self
    }

    /// Sets whether durable means committed (single node) or Raft decides.
    pub fn commit_on_durable(mut self, yes: bool) -> Self {
        self.commit_on_durable = yes;
        self
    }
}
