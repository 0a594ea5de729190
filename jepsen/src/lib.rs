//! # quiver-jepsen
//!
//! Quiver's Jepsen-style consistency harness: it runs real `quiver` processes (in Docker
//! networks or network namespaces), injects faults (partitions, kill -9, SIGSTOP, lost
//! unsynced writes, damaged segment tails), records a history of appends and reads, and
//! checks it as Elle's list-append (stream = key, event = element).
//!
//! ## Layout
//! - `control.rs` — cluster control: real `quiver serve` processes; kill, restart, pause.
//! - `relay.rs` — the network: a UDP relay on every directed peer link (cuts, delays,
//!   loss, duplication, reordering), enforced outside the server.
//! - `nemesis.rs` — the faults and the seeded scheduler's choices.
//! - `run.rs` — one run: workload processes recording the history, the nemesis, healing,
//!   final reads on every node.
#![warn(missing_docs, unreachable_pub)]

pub mod control;
pub mod nemesis;
pub mod relay;
pub mod run;
