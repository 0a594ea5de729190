//! # quiver-raft
//!
//! Quiver's Raft: a sans-IO core driven by `tick`, `step` and `propose`, handing out what to
//! persist, send and apply through `ready` / `advance`, in the manner of etcd-raft's
//! `RawNode`. Time arrives as ticks and randomness from a seed, so the core can be simulated
//! deterministically (`tests/sim.rs`).
//!
//! This crate must never depend on tokio, quinn, `quiver-engine` or the file system (CI
//! checks the dependency direction): the server persists what `ready` hands over (into the
//! engine, whose log is the Raft log) and sends the messages (through `quiver-net`).
//!
//! ## Layout
//! - `message.rs` — entries, hard state, memberships, messages.
//! - `storage.rs` — the `Storage` trait the persisted log implements (entries, memberships,
//!   sealed segments); `MemStorage`.
//! - `quorum.rs` — majority arithmetic.
//! - `progress.rs` — a leader's view of each follower and its pacing.
//! - `node.rs` — `RawNode`: roles, elections (with pre-vote and check-quorum), replication,
//!   commitment, membership changes, leadership transfer, ReadIndex, segment shipping.
#![warn(missing_docs, unreachable_pub)]

mod message;
mod node;
mod progress;
mod quorum;
mod storage;

pub use message::{
    DecodeError, Entry, EntryKind, HardState, Membership, MembershipChange, Message, MessageKind,
    NodeId,
};
pub use node::{Config, RawNode, ReadState, Ready, Refused, Role};
pub use storage::{MemStorage, SegmentChunk, SegmentMeta, Storage};
