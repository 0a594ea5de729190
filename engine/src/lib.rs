//! # quiver-engine
//!
//! Quiver's storage engine: an append-only log of checksummed records in fixed-size segment
//! files, read through memory maps, with a per-stream index, a stream table and an event-id
//! index built from it. The log is shaped for Raft (every record carries its Raft index and
//! term) because the Raft log **is** the event log: events are written once.
//!
//! This crate knows nothing of the network or of Raft's protocol; it must never import tokio,
//! quinn or `quiver-raft`. `docs/STORAGE.md` describes the on-disk format byte by byte.
//!
//! ## Layout
//! Modules import one way only, from the bottom up (`tests/layers.rs` checks it):
//!
//! 0. The vocabulary. `types.rs`: names, expected versions, events, metadata; `error.rs`: one
//!    error enum per operation.
//! 1. Bytes and files. `format.rs`: segment header, record frame (with its durable
//!    watermark), entry bodies, decoders that never panic; `storage.rs`: the file system
//!    behind one trait, real or simulated (`storage/sim.rs`: power cuts, torn sectors, lost
//!    renames, failed writes and syncs); `io.rs`: the durable write (io_uring, or pwrite +
//!    fdatasync through the storage); `segment.rs`: segment files, memory maps, the scan;
//!    `failmark.rs`: the mark a failed sync leaves; `idtable.rs`: per-segment sorted event-id
//!    tables, where a summarized segment's event ids live; `streamtable.rs`:
//!    per-segment stream tables, so that streams not being written need not stay in memory;
//!    `bloom.rs`: the filters both kinds of table put in front of their entries; `table.rs`:
//!    what the two kinds of table share (names, the header's binding, `Doubt`); `config.rs`:
//!    `EngineConfig`; `idindex.rs`: the event-id index (recent ids in memory, the rest in
//!    the id tables behind one store-wide filter).
//! 2. The log's state. `state.rs`: the in-memory index built from the log, tip and committed
//!    views; `summary.rs`: per-segment summaries that keep restart work flat; `append.rs`: an
//!    append's validation, idempotent retries, versions and positions; `ids.rs`: the id
//!    index's loader after open and the hand-over of a summarized segment's ids to its
//!    table; `recovery.rs`: opening a directory, torn tail or corruption by the durable
//!    watermark.
//! 3. The core. `inner.rs`: the state lock, framing, the writer's queue and thread (group
//!    commit, fail-stop, refusing a batch on a full disk); `background.rs`: summaries (and
//!    their ids handed to their tables), the next spare, the id loader, off the writer's path.
//! 4. The API. `engine.rs`: open, append, delete, metadata, snapshots, checkpoints;
//!    `read.rs`: lazy stream and `$all` reads, listing, snapshots; `log.rs`: what Raft needs
//!    (follower appends, suffix truncation, segment shipping); `scavenge.rs`: reclaiming the
//!    space of deleted and truncated events.
#![warn(missing_docs, unreachable_pub)]

mod append;
mod background;
mod bloom;
mod config;
mod engine;
mod error;
mod failmark;
pub mod format;
mod idindex;
mod ids;
mod idtable;
mod inner;
mod io;
mod log;
mod read;
mod recovery;
mod scavenge;
pub mod segment;
mod state;
pub mod storage;
mod streamtable;
mod summary;
mod table;
mod types;

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod open_tests;

pub use append::{Plan, WriteOp};
pub use config::EngineConfig;
pub use engine::{Engine, EngineCounters};
pub use error::{
    AppendError, Corruption, DecodeError, Failed, LogError, NameError, OpenError, ReadError,
    ScavengeError,
};
pub use idindex::IdIndexStats;
pub use io::IoMode;
pub use log::{RawRecord, SealedSegment, ENTRIES_BYTES_MAX};
pub use read::{AllRead, ReadFrom, StreamRead, VerifyStats, READ_CHUNK_MAX};
pub use scavenge::ScavengeStats;
pub use state::OpenStats;
pub use types::{
    validate_event_type, validate_stream_name, AllFilter, AppendResult, ContentType, DeleteKind,
    Direction, EventData, ExpectedVersion, Matcher, RecordedEvent, Snapshot, StreamInfo,
    StreamMetadata, StreamWrite, EVENT_TYPE_BYTES_MAX, STREAM_NAME_BYTES_MAX,
};
pub use uuid::Uuid;
