//! # quiver-jepsen
//!
//! Quiver's Jepsen-style consistency suite. Today it holds the half that judges: a history
//! format and a checker of Elle's list-append model (stream = key, event = element) for
//! strict serializability. The half that acts (running real `quiver` processes, injecting
//! partitions, kill -9, SIGSTOP, lost unsynced writes and damaged segment tails, and
//! recording histories) comes later and will call [`checker::check`].
//!
//! Layout:
//! - [`history`]: the JSON-lines history format (events, list-append micro-ops);
//! - [`checker`]: [`checker::check`] and its [`checker::Report`]; inside it `ops` (pairing
//!   invokes and completions), `elements` (per-key version orders and the anomalies that
//!   need no graph) and `graph` (dependency graph, components, classified cycles);
//! - `main.rs`: the `quiver-jepsen` command (`check HISTORY.jsonl`).
//!
//! `docs/CONSISTENCY.md` documents the format and each anomaly as implemented.
#![warn(missing_docs, unreachable_pub)]

pub mod checker;
pub mod history;

pub use checker::{check, Anomaly, AnomalyKind, Report};
pub use history::{Event, EventType, History, MicroOp};
