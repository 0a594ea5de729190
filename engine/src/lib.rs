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
//! - `types.rs` — the user-facing vocabulary: names, expected versions, events, metadata.
//! - `error.rs` — one error enum per operation.
//! - `format.rs` — segment header, record frame, entry bodies; decoders never panic.
//! - `segment.rs` — segment files, memory maps, the recovery scan.
//! - `storage.rs` — the file system behind one trait: real, or simulated (`storage/sim.rs`:
//!   power cuts, torn sectors, lost renames, failed writes and syncs).
//! - `io.rs` — the durable write: io_uring, or pwrite + fdatasync through the storage.
//! - `state.rs` — the in-memory index built from the log, tip and committed views.
//! - `engine.rs` — open, append (group commit), delete, metadata, snapshots, checkpoints.
//! - `append.rs` — an append's validation, idempotent retries, version and position assignment.
//! - `recovery.rs` — opening a directory: summaries, replay, torn tail or corruption by the
//!   durable watermark.
//! - `failmark.rs` — the mark a failed sync leaves, so a restart drops the failed batch.
//! - `summary.rs` — per-segment summaries that keep restart work flat.
//! - `ids.rs` — the event-id index of summarized segments, built in the background.
//! - `read.rs` — lazy stream and `$all` reads, listing, snapshots.
//! - `log.rs` — what Raft needs: follower appends, suffix truncation, segment shipping.
//! - `scavenge.rs` — reclaiming the space of deleted and truncated events.
#![warn(missing_docs, unreachable_pub)]

mod append;
mod engine;
mod error;
mod failmark;
pub mod format;
mod ids;
mod io;
mod log;
mod read;
mod recovery;
mod scavenge;
pub mod segment;
mod state;
pub mod storage;
mod summary;
mod types;

#[cfg(test)]
mod fault_tests;

pub use engine::{Engine, EngineConfig, EngineCounters};
pub use error::{
    AppendError, Corruption, DecodeError, Failed, LogError, NameError, OpenError, ReadError,
    ScavengeError,
};
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
