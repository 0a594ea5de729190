//! The list-append checker: [`check`] reads a [`History`] and returns a [`Report`].
//!
//! Layout: `ops` pairs events into operations and checks the history's own shape;
//! `elements` derives one version order per key and finds the anomalies that need no graph
//! (incompatible orders, duplicates, garbage, aborted and intermediate reads, lost appends,
//! stale and non-monotonic reads); `graph` builds the dependency graph (ww, wr, rw, process,
//! realtime), finds its strongly connected components and names one shortest cycle per
//! class. `docs/CONSISTENCY.md` states each rule as implemented.

mod elements;
mod graph;
mod ops;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::{EventType, History, MicroOp};
use ops::{Op, Outcome};

/// The name of an anomaly, as it appears in reports (`"G-single-realtime"`, `"lost-append"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AnomalyKind {
    /// Two reads of one key that are not prefixes of one order.
    #[serde(rename = "incompatible-order")]
    IncompatibleOrder,
    /// One read lists an element more than once.
    #[serde(rename = "duplicate-elements")]
    DuplicateElements,
    /// A read lists an element that no operation ever appended.
    #[serde(rename = "garbage-read")]
    GarbageRead,
    /// Aborted read: a read lists an element whose append definitely failed.
    #[serde(rename = "G1a")]
    G1a,
    /// Intermediate read: a read saw some but not all of one transaction's appends to a key.
    #[serde(rename = "G1b")]
    G1b,
    /// An acknowledged append that no read ever saw, though a read began after it completed.
    #[serde(rename = "lost-append")]
    LostAppend,
    /// A read missed an element acknowledged (or seen by a completed read) before it began.
    #[serde(rename = "stale-read")]
    StaleRead,
    /// A process read a key and later read it again and got something that does not extend it.
    #[serde(rename = "non-monotonic-read")]
    NonMonotonicRead,
    /// A cycle of write-write dependencies.
    #[serde(rename = "G0")]
    G0,
    /// A cycle of write-write and write-read dependencies, at least one write-read.
    #[serde(rename = "G1c")]
    G1c,
    /// A dependency cycle with exactly one anti-dependency (rw).
    #[serde(rename = "G-single")]
    GSingle,
    /// A dependency cycle with two or more anti-dependencies.
    #[serde(rename = "G2")]
    G2,
    /// G0 with process-order edges.
    #[serde(rename = "G0-process")]
    G0Process,
    /// G1c with process-order edges.
    #[serde(rename = "G1c-process")]
    G1cProcess,
    /// G-single with process-order edges.
    #[serde(rename = "G-single-process")]
    GSingleProcess,
    /// G2 with process-order edges.
    #[serde(rename = "G2-process")]
    G2Process,
    /// G0 with real-time edges.
    #[serde(rename = "G0-realtime")]
    G0Realtime,
    /// G1c with real-time edges.
    #[serde(rename = "G1c-realtime")]
    G1cRealtime,
    /// G-single with real-time edges.
    #[serde(rename = "G-single-realtime")]
    GSingleRealtime,
    /// G2 with real-time edges.
    #[serde(rename = "G2-realtime")]
    G2Realtime,
}

impl AnomalyKind {
    /// The name used in reports.
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => s,
            _ => format!("{self:?}"),
        }
    }
}

/// An operation named in an anomaly: where it is in the history and what it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpRef {
    /// The invoke's index.
    pub index: u64,
    /// The completion's index (`None`: still in flight when the history ended).
    pub completion_index: Option<u64>,
    /// The process.
    pub process: u64,
    /// How it ended: `ok`, `fail` or `info` (an unfinished operation is `info`).
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Its micro-ops, with reads filled in when `ok`.
    pub value: Vec<MicroOp>,
}

impl OpRef {
    fn of(op: &Op) -> Self {
        OpRef {
            index: op.invoke_index,
            completion_index: op.complete_index,
            process: op.process,
            kind: match op.outcome {
                Outcome::Ok => EventType::Ok,
                Outcome::Fail => EventType::Fail,
                Outcome::Info => EventType::Info,
            },
            value: op.mops.clone(),
        }
    }
}

/// One edge of a reported cycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The invoke index of the operation the edge leaves.
    pub from: u64,
    /// The invoke index of the operation it reaches.
    pub to: u64,
    /// `ww`, `wr`, `rw`, `process` or `realtime`.
    pub rel: String,
    /// Why the edge exists, in words.
    pub why: String,
}

/// One anomaly found, with the operations that show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Its name.
    #[serde(rename = "type")]
    pub kind: AnomalyKind,
    /// The key concerned, when there is one (cycles may span keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The elements concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<u64>,
    /// The operations involved (for a cycle, in cycle order).
    pub ops: Vec<OpRef>,
    /// For a cycle, its edges in order, the last returning to the first operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cycle: Vec<Step>,
    /// What is wrong, in words.
    pub explanation: String,
}

/// What the history held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// List-append transactions acknowledged (`ok`).
    pub ok: usize,
    /// Transactions that definitely failed (`fail`).
    pub fail: usize,
    /// Transactions with an unknown outcome (`info`, including those still in flight).
    pub info: usize,
    /// Of `info`, the invokes with no completion at all.
    pub pending: usize,
    /// Read micro-ops in `ok` transactions.
    pub reads: usize,
    /// Append micro-ops in `ok` transactions (acknowledged appends).
    pub appends: usize,
    /// Append micro-ops in `info` transactions (maybe applied).
    pub info_appends: usize,
    /// Distinct keys touched.
    pub keys: usize,
    /// Operations of other workloads (`f` other than `txn`), not checked here.
    pub other_ops: usize,
    /// Nodes of the dependency graph (ok transactions and observed info ones).
    pub graph_nodes: usize,
    /// Edges of the dependency graph.
    pub graph_edges: usize,
    /// Strongly connected components of more than one operation.
    pub cyclic_components: usize,
}

/// The checker's verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// True when there is no anomaly and the history is well formed.
    pub valid: bool,
    /// What the history held.
    pub counts: Counts,
    /// How many of each anomaly were found, by name.
    pub anomaly_counts: BTreeMap<String, usize>,
    /// Ways the history breaks its format (the harness's fault, but a verdict on such a
    /// history cannot be trusted, so it is not valid).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history_errors: Vec<String>,
    /// Every anomaly found.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// The names of the anomalies found.
    pub fn kinds(&self) -> BTreeSet<AnomalyKind> {
        self.anomalies.iter().map(|a| a.kind).collect()
    }

    /// Whether an anomaly of this kind was found.
    pub fn has(&self, kind: AnomalyKind) -> bool {
        self.anomalies.iter().any(|a| a.kind == kind)
    }
}

/// Checks a list-append history (operations with `f = "txn"`; others are counted and
/// skipped) for the anomalies of strict serializability listed in [`AnomalyKind`].
pub fn check(history: &History) -> Report {
    let paired = ops::pair(history);
    let ops = &paired.ops;
    let mut counts = Counts {
        pending: paired.pending,
        other_ops: paired.other,
        ..Counts::default()
    };
    for op in ops {
        match op.outcome {
            Outcome::Ok => counts.ok += 1,
            Outcome::Fail => counts.fail += 1,
            Outcome::Info => counts.info += 1,
        }
        for m in &op.mops {
            match (m, op.outcome) {
                (MicroOp::Read { .. }, Outcome::Ok) => counts.reads += 1,
                (MicroOp::Append { .. }, Outcome::Ok) => counts.appends += 1,
                (MicroOp::Append { .. }, Outcome::Info) => counts.info_appends += 1,
                _ => {}
            }
        }
    }

    let mut analysis = elements::analyze(ops);
    counts.keys = analysis.keys.len();
    let mut anomalies = std::mem::take(&mut analysis.anomalies);
    let cycles = graph::cycles(ops, &analysis);
    counts.graph_nodes = cycles.nodes;
    counts.graph_edges = cycles.edges;
    counts.cyclic_components = cycles.components;
    anomalies.extend(cycles.anomalies);

    let mut anomaly_counts = BTreeMap::new();
    for a in &anomalies {
        *anomaly_counts.entry(a.kind.name()).or_insert(0) += 1;
    }
    Report {
        valid: anomalies.is_empty() && paired.errors.is_empty(),
        counts,
        anomaly_counts,
        history_errors: paired.errors,
        anomalies,
    }
}
