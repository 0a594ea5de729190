//! # quiver-jepsen
//!
//! Quiver's Jepsen-style consistency suite: it runs real `quiver serve` processes, injects
//! faults from outside them (network faults on harness-owned relays, kill -9, SIGSTOP,
//! leadership transfers), records a history of appends and reads, and checks it as Elle's
//! list-append model (stream = key, event = element) for strict serializability.
//!
//! Layout:
//! - [`control`]: cluster control: real `quiver serve` processes; kill, restart, pause.
//! - [`docker`]: the Docker backend: the compose cluster's containers; docker kill, start,
//!   pause, network disconnect.
//! - [`relay`]: the network: a UDP relay on every directed peer link (cuts, delays, loss,
//!   duplication, reordering), enforced outside the server.
//! - [`nemesis`]: the faults and the seeded scheduler's choices.
//! - [`run`]: one run: workload processes recording the history, the nemesis, healing,
//!   final reads on every node.
//! - [`subscribers`]: the subscription workload: transient subscribers on every node and a
//!   persistent group's consumer under the same faults, and the rules their deliveries are
//!   checked by (every committed event delivered, in order per stream, with no gap).
//! - [`plot`]: throughput and latency over time with the fault windows shaded (SVG).
//! - [`history`]: the JSON-lines history format (events, list-append micro-ops);
//! - [`checker`]: [`checker::check`] and its [`checker::Report`]; inside it `ops` (pairing
//!   invokes and completions), `elements` (per-key version orders and the anomalies that
//!   need no graph) and `graph` (dependency graph, components, classified cycles);
//! - `main.rs`: the `quiver-jepsen` command (`run`, `check HISTORY.jsonl`).
//!
//! `docs/CONSISTENCY.md` documents the format, each anomaly as implemented, and the runs.
#![warn(missing_docs, unreachable_pub)]

pub mod checker;
pub mod control;
pub mod docker;
pub mod history;
pub mod nemesis;
pub mod plot;
pub mod relay;
pub mod run;
pub mod subscribers;

pub use checker::{check, Anomaly, AnomalyKind, Report};
pub use history::{Event, EventType, History, MicroOp};
