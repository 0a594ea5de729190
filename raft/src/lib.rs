//! # quiver-raft
//!
//! Quiver's Raft: a sans-IO core driven by `tick`, `step`, `propose`, `ready` and
//! `advance`, in the manner of etcd-raft's `RawNode`. Time arrives as ticks and randomness
//! from a seed, so the core can be simulated deterministically.
//!
//! This crate must never depend on tokio, quinn, `quiver-engine` or `std::fs`: the server
//! persists what `ready` hands over (into the engine, whose log is the Raft log) and sends
//! the messages (through `quiver-net`).
//!
//! Status: not built yet. The issue "A hand-written Raft, proven by deterministic
//! simulation" fills this crate; until then the workspace keeps its place in the layout.
#![warn(missing_docs, unreachable_pub)]
