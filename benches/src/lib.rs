//! # quiver-bench
//!
//! The pieces Quiver's benchmarks share: the workload (256-byte events with unique ids, data
//! directories on a real disk, stores filled quickly), latency histograms turned into one JSON
//! line per scenario, and the scenarios of each suite. The `quiver-bench` binary (`main.rs`)
//! runs a suite; the Criterion benchmarks in `benches/` reuse the workload.
//!
//! Benchmarks measure the public API only, the way a user of each crate would call it.
//!
//! ## Layout
//! - `workload.rs` — events and ids, data directories, parallel timed runs, filling a store.
//! - `report.rs` — latency histograms and the JSON line a scenario prints.
//! - `engine_suite.rs` — the `engine` suite: appends, reads, `$all` scans, reopen.
//! - `client_suite.rs` — the `client` suite: the server over QUIC through `quiver-client`,
//!   started in-process or already running.
//! - `postgres_peer.rs` — the `client` suite's peer: a throwaway PostgreSQL used as an event
//!   store, the same workloads, run first so that Quiver's lines carry `vs_postgres`.
//! - `raft_suite.rs` — the `raft` suite: three Raft nodes in-process over engines.
//! - `cluster_suite.rs` — the `cluster` suite: three `quiver serve --db-type cluster`
//!   processes, their failover, and a three-member etcd cluster measured beside them.
//! - `limits.rs` — the `limits` command: fdatasync and a loopback QUIC round trip, the
//!   floors under the client path.
//! - `stages.rs` — `client --stages`: a `tracing` layer timing the `stage.*` spans of the
//!   client, the server and the engine into a histogram per stage.
//! - `report_doc/` — the `report` command: runs the engine, client and cluster suites and
//!   turns their lines into docs/BENCHMARKS.md's generated section and SVG plots.
#![warn(missing_docs, unreachable_pub)]

pub mod client_suite;
pub mod cluster_suite;
pub mod engine_suite;
pub mod limits;
pub mod many_streams;
pub mod postgres_peer;
pub mod raft_suite;
pub mod report;
pub mod report_doc;
pub mod stages;
pub mod workload;
