//! The dependency graph between transactions and its cycles.
//!
//! Nodes are the ok transactions and the info transactions whose appends some read saw
//! (failed ones and unseen info ones took no visible effect). Edges:
//! - `ww`: consecutive elements of a key's version order, from the first's writer to the
//!   second's;
//! - `wr`: from the writer of the last element an external read saw, to the reader;
//! - `rw`: from an external read to the writer of the element that follows, in the version
//!   order, the last one it saw (the first element, when it saw nothing);
//! - `process`: consecutive transactions of one process;
//! - `realtime`: `a` was acknowledged before `b` was invoked. Only a transitive reduction is
//!   kept (each operation links from the "frontier" of operations completed before it began
//!   and not already followed by another completed one), so the graph stays linear in size
//!   but has a path wherever real-time order holds.
//!
//! Cycles: the strongly connected components (Tarjan, iterative), then, in each component of
//! more than one node, for each class of [`SPECS`], a shortest cycle through an edge of the
//! class's closing kind whose other edges are of the allowed kinds and include the needed
//! ones (a breadth-first search over (node, kinds seen so far), keeping only simple cycles;
//! with a needed kind the search is a heuristic: it tries the shortest walk per closing edge
//! and skips it if it repeats a node). An edge that has several
//! kinds counts as the first allowed one of ww, wr, rw, process, realtime, so a cycle is named
//! by the weakest explanation: a data-only cycle is never called `-realtime`.

use std::collections::{HashMap, VecDeque};

use super::elements::Analysis;
use super::ops::{Op, Outcome};
use super::{Anomaly, AnomalyKind, OpRef, Step};

const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const PROC: u8 = 8;
const RT: u8 = 16;
/// Priority of kinds when an edge has several.
const PRIORITY: [u8; 5] = [WW, WR, RW, PROC, RT];
const DATA: u8 = WW | WR | RW;

/// How many closing edges each class tries per component before giving up on it. Bounds the
/// search on a huge component; in one of fewer edges of that kind the search is exhaustive.
const MAX_CANDIDATES: usize = 64;

struct Spec {
    kind: AnomalyKind,
    closing: u8,
    path: u8,
    need: u8,
}

/// The classes, weakest first.
const SPECS: [Spec; 12] = [
    Spec {
        kind: AnomalyKind::G0,
        closing: WW,
        path: WW,
        need: 0,
    },
    Spec {
        kind: AnomalyKind::G1c,
        closing: WR,
        path: WW | WR,
        need: 0,
    },
    Spec {
        kind: AnomalyKind::GSingle,
        closing: RW,
        path: WW | WR,
        need: 0,
    },
    Spec {
        kind: AnomalyKind::G2,
        closing: RW,
        path: DATA,
        need: RW,
    },
    Spec {
        kind: AnomalyKind::G0Process,
        closing: PROC,
        path: WW | PROC,
        need: 0,
    },
    Spec {
        kind: AnomalyKind::G1cProcess,
        closing: PROC,
        path: WW | WR | PROC,
        need: WR,
    },
    Spec {
        kind: AnomalyKind::GSingleProcess,
        closing: RW,
        path: WW | WR | PROC,
        need: PROC,
    },
    Spec {
        kind: AnomalyKind::G2Process,
        closing: RW,
        path: DATA | PROC,
        need: RW | PROC,
    },
    Spec {
        kind: AnomalyKind::G0Realtime,
        closing: RT,
        path: WW | PROC | RT,
        need: 0,
    },
    Spec {
        kind: AnomalyKind::G1cRealtime,
        closing: RT,
        path: WW | WR | PROC | RT,
        need: WR,
    },
    Spec {
        kind: AnomalyKind::GSingleRealtime,
        closing: RW,
        path: WW | WR | PROC | RT,
        need: RT,
    },
    Spec {
        kind: AnomalyKind::G2Realtime,
        closing: RW,
        path: DATA | PROC | RT,
        need: RW | RT,
    },
];

/// The first kind of `kinds` allowed by `mask`, by [`PRIORITY`].
fn label(kinds: u8, mask: u8) -> Option<u8> {
    PRIORITY.into_iter().find(|&k| kinds & mask & k != 0)
}

fn rel_name(kind: u8) -> &'static str {
    match kind {
        WW => "ww",
        WR => "wr",
        RW => "rw",
        PROC => "process",
        _ => "realtime",
    }
}

#[derive(Clone, Copy)]
enum Why {
    Ww {
        key: usize,
        prev: u64,
        next: u64,
    },
    Wr {
        key: usize,
        element: u64,
    },
    Rw {
        key: usize,
        last: Option<u64>,
        next: u64,
    },
    Process {
        process: u64,
    },
    Realtime {
        completed: u64,
        invoked: u64,
    },
}

struct Edge {
    from: usize,
    to: usize,
    kinds: u8,
    /// The first reason found for each kind.
    why: Vec<(u8, Why)>,
}

struct Graph {
    /// Node -> operation.
    ops: Vec<usize>,
    /// Operation -> node.
    node: Vec<Option<usize>>,
    edges: Vec<Edge>,
    index: HashMap<(usize, usize), usize>,
    out: Vec<Vec<usize>>,
}

impl Graph {
    /// Adds a reason for an edge between two operations, if both are nodes and distinct.
    fn link(&mut self, a: usize, b: usize, kind: u8, why: Why) {
        let (Some(from), Some(to)) = (self.node[a], self.node[b]) else {
            return;
        };
        if from == to {
            return;
        }
        let e = *self.index.entry((from, to)).or_insert_with(|| {
            self.edges.push(Edge {
                from,
                to,
                kinds: 0,
                why: Vec::new(),
            });
            self.out[from].push(self.edges.len() - 1);
            self.edges.len() - 1
        });
        let edge = &mut self.edges[e];
        if edge.kinds & kind == 0 {
            edge.kinds |= kind;
            edge.why.push((kind, why));
        }
    }
}

fn build(ops: &[Op], a: &Analysis) -> Graph {
    let mut g = Graph {
        ops: Vec::new(),
        node: vec![None; ops.len()],
        edges: Vec::new(),
        index: HashMap::new(),
        out: Vec::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        let visible = match op.outcome {
            Outcome::Ok => true,
            Outcome::Info => a.observed[i],
            Outcome::Fail => false,
        };
        if visible {
            g.node[i] = Some(g.ops.len());
            g.ops.push(i);
            g.out.push(Vec::new());
        }
    }

    for (key, order) in a.orders.iter().enumerate() {
        for pair in order.windows(2) {
            let (Some(w1), Some(w2)) = (
                a.writers.get(&(key, pair[0])),
                a.writers.get(&(key, pair[1])),
            ) else {
                continue;
            };
            g.link(
                w1.op,
                w2.op,
                WW,
                Why::Ww {
                    key,
                    prev: pair[0],
                    next: pair[1],
                },
            );
        }
    }
    for r in &a.reads {
        if !r.external || !r.compatible {
            continue;
        }
        let order = &a.orders[r.key];
        let last = r.elements.last().copied();
        if let Some(x) = last {
            if let Some(w) = a.writers.get(&(r.key, x)) {
                g.link(
                    w.op,
                    r.op,
                    WR,
                    Why::Wr {
                        key: r.key,
                        element: x,
                    },
                );
            }
        }
        if let Some(&next) = order.get(r.elements.len()) {
            if let Some(w) = a.writers.get(&(r.key, next)) {
                g.link(
                    r.op,
                    w.op,
                    RW,
                    Why::Rw {
                        key: r.key,
                        last,
                        next,
                    },
                );
            }
        }
    }

    let mut last_of: HashMap<u64, usize> = HashMap::new();
    for &i in &g.ops.clone() {
        let p = ops[i].process;
        if let Some(prev) = last_of.insert(p, i) {
            g.link(prev, i, PROC, Why::Process { process: p });
        }
    }

    // Real time: walk invokes and acknowledgements in history order.
    let mut moments: Vec<(u64, bool, usize)> = Vec::new();
    for &i in &g.ops {
        moments.push((ops[i].invoke_index, true, i));
        if let Some(at) = ops[i].acked_at() {
            moments.push((at, false, i));
        }
    }
    moments.sort_unstable();
    let mut frontier: Vec<usize> = Vec::new();
    let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
    for (at, invoke, i) in moments {
        if invoke {
            for &f in &frontier {
                let completed = ops[f].acked_at().unwrap_or_default();
                g.link(
                    f,
                    i,
                    RT,
                    Why::Realtime {
                        completed,
                        invoked: at,
                    },
                );
            }
            preds.insert(i, frontier.clone());
        } else {
            let before = preds.remove(&i).unwrap_or_default();
            frontier.retain(|f| !before.contains(f));
            frontier.push(i);
        }
    }
    g
}

/// Strongly connected components (iterative Tarjan): a component id per node.
fn components(g: &Graph) -> Vec<usize> {
    let n = g.ops.len();
    const UNSEEN: usize = usize::MAX;
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut comp = vec![UNSEEN; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut next_index = 0;
    let mut next_comp = 0;
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        // (node, position in its out-edge list)
        let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut pos)) = calls.last_mut() {
            if let Some(&e) = g.out[v].get(*pos) {
                *pos += 1;
                let w = g.edges[e].to;
                if index[w] == UNSEEN {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = next_comp;
                    if w == v {
                        break;
                    }
                }
                next_comp += 1;
            }
        }
    }
    comp
}

/// A shortest path from `start` to `goal` inside `members`, over edges whose label under
/// `mask` exists, using at least one edge of each kind in `need`. Returns its edges.
fn path(
    g: &Graph,
    local: &HashMap<usize, usize>,
    start: usize,
    goal: usize,
    mask: u8,
    need: u8,
) -> Option<Vec<usize>> {
    let need_kinds: Vec<u8> = PRIORITY.into_iter().filter(|k| need & k != 0).collect();
    let full = (1usize << need_kinds.len()) - 1;
    let states = 1 << need_kinds.len();
    let state = |node: usize, got: usize| local[&node] * states + got;
    // parent[state] = (previous state, edge)
    let mut parent: Vec<Option<(usize, usize)>> = vec![None; local.len() * states];
    let mut seen = vec![false; local.len() * states];
    let mut queue = VecDeque::new();
    seen[state(start, 0)] = true;
    queue.push_back((start, 0usize));
    while let Some((v, got)) = queue.pop_front() {
        if v == goal && got == full {
            let mut edges = Vec::new();
            let mut s = state(v, got);
            while let Some((prev, e)) = parent[s] {
                edges.push(e);
                s = prev;
            }
            edges.reverse();
            return Some(edges);
        }
        for &e in &g.out[v] {
            let edge = &g.edges[e];
            if !local.contains_key(&edge.to) {
                continue;
            }
            let Some(l) = label(edge.kinds, mask) else {
                continue;
            };
            let mut next = got;
            for (bit, &k) in need_kinds.iter().enumerate() {
                if l == k {
                    next |= 1 << bit;
                }
            }
            let s = state(edge.to, next);
            if !seen[s] {
                seen[s] = true;
                parent[s] = Some((state(v, got), e));
                queue.push_back((edge.to, next));
            }
        }
    }
    None
}

pub(crate) struct Cycles {
    pub(crate) nodes: usize,
    pub(crate) edges: usize,
    pub(crate) components: usize,
    pub(crate) anomalies: Vec<Anomaly>,
}

pub(crate) fn cycles(ops: &[Op], a: &Analysis) -> Cycles {
    let g = build(ops, a);
    let comp = components(&g);
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for (v, &c) in comp.iter().enumerate() {
        members.entry(c).or_default().push(v);
    }
    let mut comps: Vec<Vec<usize>> = members.into_values().filter(|m| m.len() > 1).collect();
    comps.sort();
    let mut anomalies = Vec::new();
    for m in &comps {
        let local: HashMap<usize, usize> = m.iter().enumerate().map(|(i, &v)| (v, i)).collect();
        let inner: Vec<usize> = m
            .iter()
            .flat_map(|&v| g.out[v].iter().copied())
            .filter(|&e| local.contains_key(&g.edges[e].to))
            .collect();
        for spec in &SPECS {
            let closing = inner
                .iter()
                .copied()
                .filter(|&e| {
                    label(g.edges[e].kinds, spec.path | spec.closing) == Some(spec.closing)
                })
                .take(MAX_CANDIDATES);
            for e in closing {
                let edge = &g.edges[e];
                let Some(rest) = path(&g, &local, edge.to, edge.from, spec.path, spec.need) else {
                    continue;
                };
                // The search is over (node, kinds seen) states, so it may return a walk that
                // goes twice round a smaller cycle (twice through one rw edge to "see two");
                // only a simple cycle counts.
                let mut visited: Vec<usize> = rest.iter().map(|&r| g.edges[r].to).collect();
                visited.sort_unstable();
                visited.dedup();
                if visited.len() != rest.len() {
                    continue;
                }
                let mut steps = vec![(e, spec.closing)];
                for r in rest {
                    let l = label(g.edges[r].kinds, spec.path).unwrap_or(spec.closing);
                    steps.push((r, l));
                }
                anomalies.push(report(ops, a, &g, spec.kind, &steps));
                break;
            }
        }
    }
    Cycles {
        nodes: g.ops.len(),
        edges: g.edges.len(),
        components: comps.len(),
        anomalies,
    }
}

fn report(
    ops: &[Op],
    a: &Analysis,
    g: &Graph,
    kind: AnomalyKind,
    steps: &[(usize, u8)],
) -> Anomaly {
    let name = |node: usize| ops[g.ops[node]].invoke_index;
    let mut involved = Vec::new();
    let mut cycle = Vec::new();
    let mut text = String::new();
    for &(e, l) in steps {
        let edge = &g.edges[e];
        let (from, to) = (name(edge.from), name(edge.to));
        involved.push(OpRef::of(&ops[g.ops[edge.from]]));
        let why = edge.why.iter().find(|(k, _)| *k == l).map(|(_, w)| *w);
        let why = match why {
            Some(Why::Ww { key, prev, next }) => format!(
                "op {from} appended {prev} to {:?} and op {to} appended {next}, the next element",
                a.keys[key]
            ),
            Some(Why::Wr { key, element }) => format!(
                "op {to} read {:?} ending in {element}, appended by op {from}",
                a.keys[key]
            ),
            Some(Why::Rw { key, last, next }) => format!(
                "op {from} read {:?} {}, missing {next}, which op {to} appended next",
                a.keys[key],
                match last {
                    Some(x) => format!("up to {x}"),
                    None => "empty".to_string(),
                }
            ),
            Some(Why::Process { process }) => {
                format!("op {from} came before op {to} on process {process}")
            }
            Some(Why::Realtime { completed, invoked }) => format!(
                "op {from} was acknowledged (index {completed}) before op {to} was invoked (index {invoked})"
            ),
            None => String::new(),
        };
        if text.is_empty() {
            text = format!("op {from}");
        }
        text.push_str(&format!(" -{}-> op {to}", rel_name(l)));
        cycle.push(Step {
            from,
            to,
            rel: rel_name(l).to_string(),
            why,
        });
    }
    Anomaly {
        kind,
        key: None,
        elements: vec![],
        ops: involved,
        cycle,
        explanation: format!("a dependency cycle: {text}"),
    }
}
