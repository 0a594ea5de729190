//! Per-key analysis: everything that needs the reads of one key but no dependency graph.
//!
//! A key's *version order* is its longest ok read (the first one, if several are as long).
//! A read is *compatible* when it is a prefix of that order; incompatible reads are reported
//! and take no further part (no stale-read verdict, no graph edges). See docs/CONSISTENCY.md
//! for each rule in words.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::ops::{Op, Outcome};
use super::{Anomaly, AnomalyKind, OpRef};
use crate::history::MicroOp;

/// Who appended an element: the operation, and how many elements it appended to that key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Writer {
    pub(crate) op: usize,
    /// How many appends to this key the operation made.
    pub(crate) of: usize,
}

/// A read micro-op of an ok transaction.
#[derive(Clone, Debug)]
pub(crate) struct Read {
    pub(crate) op: usize,
    pub(crate) key: usize,
    pub(crate) elements: Vec<u64>,
    /// No append to this key earlier in the same transaction: the read shows others' writes
    /// only, so it can carry wr and rw edges.
    pub(crate) external: bool,
    /// A prefix of the key's version order.
    pub(crate) compatible: bool,
}

pub(crate) struct Analysis {
    pub(crate) keys: Vec<String>,
    pub(crate) writers: HashMap<(usize, u64), Writer>,
    pub(crate) reads: Vec<Read>,
    /// The version order of each key.
    pub(crate) orders: Vec<Vec<u64>>,
    /// Operations with at least one appended element seen by some ok read.
    pub(crate) observed: Vec<bool>,
    pub(crate) anomalies: Vec<Anomaly>,
}

/// The earliest moment an element was known to exist: an acknowledgement or a completed read.
#[derive(Clone, Copy)]
struct Known {
    at: u64,
    op: usize,
    by_read: bool,
}

fn earlier(a: Option<Known>, b: Option<Known>) -> Option<Known> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.at < x.at { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

pub(crate) fn analyze(ops: &[Op]) -> Analysis {
    let mut key_ids: HashMap<&str, usize> = HashMap::new();
    let mut keys: Vec<String> = Vec::new();
    for op in ops {
        for m in &op.mops {
            if !key_ids.contains_key(m.key()) {
                key_ids.insert(m.key(), keys.len());
                keys.push(m.key().to_string());
            }
        }
    }

    // Writers of every append ever invoked, whatever its outcome.
    let mut writers: HashMap<(usize, u64), Writer> = HashMap::new();
    let mut reads: Vec<Read> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let mut per_key: HashMap<usize, usize> = HashMap::new();
        for m in &op.mops {
            let k = key_ids[m.key()];
            if let MicroOp::Append { .. } = m {
                *per_key.entry(k).or_insert(0) += 1;
            }
        }
        let mut seen: HashSet<usize> = HashSet::new();
        for m in &op.mops {
            let k = key_ids[m.key()];
            match m {
                MicroOp::Append { element, .. } => {
                    seen.insert(k);
                    writers.insert(
                        (k, *element),
                        Writer {
                            op: i,
                            of: per_key[&k],
                        },
                    );
                }
                MicroOp::Read {
                    elements: Some(els),
                    ..
                } if op.outcome == Outcome::Ok => {
                    reads.push(Read {
                        op: i,
                        key: k,
                        elements: els.clone(),
                        external: !seen.contains(&k),
                        compatible: false,
                    });
                }
                MicroOp::Read { .. } => {}
            }
        }
    }

    let mut anomalies = Vec::new();
    let key_name = |k: usize| Some(keys[k].clone());

    // Element-level anomalies of each read.
    for r in &reads {
        let reader = &ops[r.op];
        let mut counted: BTreeMap<u64, usize> = BTreeMap::new();
        for &x in &r.elements {
            *counted.entry(x).or_insert(0) += 1;
        }
        let dups: Vec<u64> = counted
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(&x, _)| x)
            .collect();
        if !dups.is_empty() {
            anomalies.push(Anomaly {
                kind: AnomalyKind::DuplicateElements,
                key: key_name(r.key),
                elements: dups.clone(),
                ops: vec![OpRef::of(reader)],
                cycle: vec![],
                explanation: format!(
                    "a read of {:?} lists {:?} more than once: {:?}",
                    keys[r.key], dups, r.elements
                ),
            });
        }
        let garbage: Vec<u64> = counted
            .keys()
            .copied()
            .filter(|x| !writers.contains_key(&(r.key, *x)))
            .collect();
        if !garbage.is_empty() {
            anomalies.push(Anomaly {
                kind: AnomalyKind::GarbageRead,
                key: key_name(r.key),
                elements: garbage.clone(),
                ops: vec![OpRef::of(reader)],
                cycle: vec![],
                explanation: format!(
                    "a read of {:?} saw {:?}, which no operation ever appended",
                    keys[r.key], garbage
                ),
            });
        }
        // Group the elements read by the operation that wrote them.
        let mut by_writer: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for &x in counted.keys() {
            if let Some(w) = writers.get(&(r.key, x)) {
                by_writer.entry(w.op).or_default().push(x);
            }
        }
        for (w, els) in by_writer {
            let writer = &ops[w];
            if writer.outcome == Outcome::Fail {
                anomalies.push(Anomaly {
                    kind: AnomalyKind::G1a,
                    key: key_name(r.key),
                    elements: els.clone(),
                    ops: vec![OpRef::of(reader), OpRef::of(writer)],
                    cycle: vec![],
                    explanation: format!(
                        "a read of {:?} saw {:?}, appended by operation {} which failed",
                        keys[r.key], els, writer.invoke_index
                    ),
                });
                continue;
            }
            let of = writers[&(r.key, els[0])].of;
            if w != r.op && els.len() < of {
                anomalies.push(Anomaly {
                    kind: AnomalyKind::G1b,
                    key: key_name(r.key),
                    elements: els.clone(),
                    ops: vec![OpRef::of(reader), OpRef::of(writer)],
                    cycle: vec![],
                    explanation: format!(
                        "a read of {:?} saw {:?} but not the rest of the {} elements operation {} appended to it: an intermediate state",
                        keys[r.key], els, of, writer.invoke_index
                    ),
                });
            }
        }
    }

    // Version orders and compatibility.
    let mut by_key: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
    for (i, r) in reads.iter().enumerate() {
        by_key[r.key].push(i);
    }
    let mut orders: Vec<Vec<u64>> = vec![Vec::new(); keys.len()];
    for (k, rs) in by_key.iter().enumerate() {
        let Some(&longest) = rs
            .iter()
            .max_by_key(|&&i| (reads[i].elements.len(), usize::MAX - i))
        else {
            continue;
        };
        orders[k] = reads[longest].elements.clone();
        for &i in rs {
            let compatible = orders[k].starts_with(&reads[i].elements);
            reads[i].compatible = compatible;
            if !compatible {
                let r = &reads[i];
                let lr = &reads[longest];
                anomalies.push(Anomaly {
                    kind: AnomalyKind::IncompatibleOrder,
                    key: key_name(k),
                    elements: vec![],
                    ops: vec![OpRef::of(&ops[r.op]), OpRef::of(&ops[lr.op])],
                    cycle: vec![],
                    explanation: format!(
                        "reads of {:?} disagree on its order: {:?} is not a prefix of {:?}",
                        keys[k], r.elements, lr.elements
                    ),
                });
            }
        }
    }

    // Stale reads: a compatible read that stops before an element known before it began.
    for (k, rs) in by_key.iter().enumerate() {
        let order = &orders[k];
        let n = order.len();
        if n == 0 {
            continue;
        }
        // seen[i]: earliest completed compatible read that includes position i.
        let mut by_len: Vec<Option<Known>> = vec![None; n + 1];
        for &i in rs {
            let r = &reads[i];
            if !r.compatible || r.elements.is_empty() {
                continue;
            }
            let op = &ops[r.op];
            if let Some(at) = op.complete_index {
                let k = Some(Known {
                    at,
                    op: r.op,
                    by_read: true,
                });
                by_len[r.elements.len()] = earlier(by_len[r.elements.len()], k);
            }
        }
        let mut known: Vec<Option<Known>> = vec![None; n];
        let mut longer: Option<Known> = None;
        for i in (0..n).rev() {
            longer = earlier(longer, by_len[i + 1]);
            let acked = writers.get(&(k, order[i])).and_then(|w| {
                ops[w.op].acked_at().map(|at| Known {
                    at,
                    op: w.op,
                    by_read: false,
                })
            });
            known[i] = earlier(acked, longer);
        }
        // suffix[i]: the earliest-known element at position i or later.
        let mut suffix: Vec<Option<(Known, usize)>> = vec![None; n + 1];
        for i in (0..n).rev() {
            suffix[i] = match (suffix[i + 1], known[i]) {
                (Some((s, j)), Some(kn)) if s.at <= kn.at => Some((s, j)),
                (_, Some(kn)) => Some((kn, i)),
                (s, None) => s,
            };
        }
        for &i in rs {
            let r = &reads[i];
            if !r.compatible {
                continue;
            }
            let op = &ops[r.op];
            let Some((kn, j)) = suffix[r.elements.len()] else {
                continue;
            };
            if kn.at >= op.invoke_index {
                continue;
            }
            let how = if kn.by_read {
                format!("seen by a read that completed at index {}", kn.at)
            } else {
                format!("acknowledged at index {}", kn.at)
            };
            anomalies.push(Anomaly {
                kind: AnomalyKind::StaleRead,
                key: key_name(k),
                elements: vec![order[j]],
                ops: vec![OpRef::of(op), OpRef::of(&ops[kn.op])],
                cycle: vec![],
                explanation: format!(
                    "a read of {:?} invoked at index {} saw {:?}, but {} had been {}, before the read began",
                    keys[k], op.invoke_index, r.elements, order[j], how
                ),
            });
        }
    }

    // Lost appends: acknowledged, never in the version order, though a read began after.
    let order_sets: Vec<HashSet<u64>> =
        orders.iter().map(|o| o.iter().copied().collect()).collect();
    for op in ops {
        let Some(acked) = op.acked_at() else { continue };
        let mut lost: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for m in &op.mops {
            if let MicroOp::Append { key, element } = m {
                let k = key_ids[key.as_str()];
                if !order_sets[k].contains(element) {
                    lost.entry(k).or_default().push(*element);
                }
            }
        }
        for (k, els) in lost {
            let rs = &by_key[k];
            let first_after = rs.partition_point(|&r| ops[reads[r].op].invoke_index <= acked);
            let Some(&r) = rs.get(first_after) else {
                continue;
            };
            let reader = &ops[reads[r].op];
            anomalies.push(Anomaly {
                kind: AnomalyKind::LostAppend,
                key: key_name(k),
                elements: els.clone(),
                ops: vec![OpRef::of(op), OpRef::of(reader)],
                cycle: vec![],
                explanation: format!(
                    "{:?} appended to {:?} was acknowledged at index {} but no read ever saw it, though a read began after (index {}, saw {:?})",
                    els, keys[k], acked, reader.invoke_index, reads[r].elements
                ),
            });
        }
    }

    // Non-monotonic reads: per process and key, each read must extend the previous one.
    let mut last: HashMap<(u64, usize), usize> = HashMap::new();
    for (i, r) in reads.iter().enumerate() {
        let op = &ops[r.op];
        if let Some(prev) = last.insert((op.process, r.key), i) {
            let p = &reads[prev];
            if !r.elements.starts_with(&p.elements) {
                let mut involved = vec![OpRef::of(&ops[p.op])];
                if p.op != r.op {
                    involved.push(OpRef::of(op));
                }
                anomalies.push(Anomaly {
                    kind: AnomalyKind::NonMonotonicRead,
                    key: key_name(r.key),
                    elements: vec![],
                    ops: involved,
                    cycle: vec![],
                    explanation: format!(
                        "process {} read {:?} as {:?}, then as {:?}, which does not extend it",
                        op.process, keys[r.key], p.elements, r.elements
                    ),
                });
            }
        }
    }

    // Operations whose appends someone saw.
    let mut observed = vec![false; ops.len()];
    for r in &reads {
        for &x in &r.elements {
            if let Some(w) = writers.get(&(r.key, x)) {
                observed[w.op] = true;
            }
        }
    }

    Analysis {
        keys,
        writers,
        reads,
        orders,
        observed,
        anomalies,
    }
}
