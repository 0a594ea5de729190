//! From events to operations: pairs each invoke with its completion, checks the harness's side
//! of the format (increasing indices, one operation at a time per process, no process reused
//! after an `info`, completions that match their invokes, no element appended twice), and
//! gives each list-append transaction its micro-ops: the completion's on `ok` (reads carry
//! what they saw), the invoke's otherwise (an `info` or `fail` tells nothing about reads).

use std::collections::{HashMap, HashSet};

use crate::history::{Event, EventType, History, MicroOp, F_TXN};

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Fail,
    /// `info`, or an invoke with no completion before the history ends (the same thing: its
    /// effect is unknown).
    Info,
}

/// One list-append transaction, invoke and completion together.
#[derive(Clone, Debug)]
pub(crate) struct Op {
    pub(crate) process: u64,
    pub(crate) invoke_index: u64,
    /// `None` when the history ended with the operation in flight.
    pub(crate) complete_index: Option<u64>,
    pub(crate) outcome: Outcome,
    pub(crate) mops: Vec<MicroOp>,
}

impl Op {
    /// The completion's index for an `ok` operation (the moment it was acknowledged).
    pub(crate) fn acked_at(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok => self.complete_index,
            _ => None,
        }
    }
}

/// The operations of a history, in invoke order, and what was wrong with its shape.
pub(crate) struct Ops {
    pub(crate) ops: Vec<Op>,
    pub(crate) errors: Vec<String>,
    /// Operations whose `f` is not `txn` (other workloads), not checked here.
    pub(crate) other: usize,
    /// Invokes with no completion (counted as `info`).
    pub(crate) pending: usize,
}

struct InFlight {
    /// Position in `ops`, or `usize::MAX` for another workload's operation.
    op: usize,
    invoke_index: u64,
    f: String,
}

pub(crate) fn pair(history: &History) -> Ops {
    let mut ops: Vec<Op> = Vec::new();
    let mut errors = Vec::new();
    let mut other = 0;
    let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
    // Processes whose last operation ended in `info`: they must not be used again.
    let mut crashed: HashSet<u64> = HashSet::new();
    // (key, element) -> invoke index of the append, to refuse elements appended twice.
    let mut appended: HashMap<(String, u64), u64> = HashMap::new();
    let mut last: Option<&Event> = None;

    for e in &history.events {
        if let Some(prev) = last {
            if e.index <= prev.index {
                errors.push(format!(
                    "event index {} follows index {}: indices must increase",
                    e.index, prev.index
                ));
            }
            if e.time_ns < prev.time_ns {
                errors.push(format!(
                    "event {} has time_ns {} before the previous event's {}",
                    e.index, e.time_ns, prev.time_ns
                ));
            }
        }
        last = Some(e);
        match e.kind {
            EventType::Invoke => {
                if crashed.contains(&e.process) {
                    errors.push(format!(
                        "event {}: process {} is used again after an info (it needs a new id)",
                        e.index, e.process
                    ));
                }
                if let Some(prev) = in_flight.get(&e.process) {
                    errors.push(format!(
                        "event {}: process {} invokes while operation {} is in flight",
                        e.index, e.process, prev.invoke_index
                    ));
                }
                if e.f != F_TXN {
                    other += 1;
                    // Keep the process busy so its completion pairs up, but check nothing.
                    in_flight.insert(
                        e.process,
                        InFlight {
                            op: usize::MAX,
                            invoke_index: e.index,
                            f: e.f.clone(),
                        },
                    );
                    continue;
                }
                let mops = match e.txn() {
                    Ok(m) => m,
                    Err(err) => {
                        errors.push(format!("event {}: value is not a txn: {err}", e.index));
                        Vec::new()
                    }
                };
                for m in &mops {
                    match m {
                        MicroOp::Append { key, element } => {
                            if let Some(first) = appended.insert((key.clone(), *element), e.index) {
                                errors.push(format!(
                                    "element {element} is appended to {key:?} by both event {first} and event {}: elements must be unique per key",
                                    e.index
                                ));
                            }
                        }
                        MicroOp::Read {
                            elements: Some(_), ..
                        } => {
                            errors.push(format!("event {}: an invoke's read must be null", e.index))
                        }
                        MicroOp::Read { .. } => {}
                    }
                }
                in_flight.insert(
                    e.process,
                    InFlight {
                        op: ops.len(),
                        invoke_index: e.index,
                        f: e.f.clone(),
                    },
                );
                ops.push(Op {
                    process: e.process,
                    invoke_index: e.index,
                    complete_index: None,
                    outcome: Outcome::Info,
                    mops,
                });
            }
            EventType::Ok | EventType::Fail | EventType::Info => {
                let Some(fl) = in_flight.remove(&e.process) else {
                    errors.push(format!(
                        "event {}: a completion on process {} with no operation in flight",
                        e.index, e.process
                    ));
                    continue;
                };
                if fl.f != e.f {
                    errors.push(format!(
                        "event {}: completion f {:?} does not match its invoke's {:?}",
                        e.index, e.f, fl.f
                    ));
                }
                if e.kind == EventType::Info {
                    crashed.insert(e.process);
                }
                if fl.op == usize::MAX {
                    continue;
                }
                let op = &mut ops[fl.op];
                op.complete_index = Some(e.index);
                op.outcome = match e.kind {
                    EventType::Ok => Outcome::Ok,
                    EventType::Fail => Outcome::Fail,
                    _ => Outcome::Info,
                };
                if e.kind == EventType::Ok {
                    match e.txn() {
                        Ok(done) => match completes(&op.mops, &done) {
                            Ok(()) => op.mops = done,
                            Err(why) => errors.push(format!(
                                "event {}: the ok value does not complete invoke {}: {why}",
                                e.index, op.invoke_index
                            )),
                        },
                        Err(err) => {
                            errors.push(format!("event {}: value is not a txn: {err}", e.index))
                        }
                    }
                }
            }
        }
    }
    let pending = in_flight.values().filter(|f| f.op != usize::MAX).count();
    Ops {
        ops,
        errors,
        other,
        pending,
    }
}

/// Whether `done` (an ok value) is `invoked` with every read filled in.
fn completes(invoked: &[MicroOp], done: &[MicroOp]) -> Result<(), String> {
    if invoked.len() != done.len() {
        return Err(format!(
            "{} micro-ops, invoked {}",
            done.len(),
            invoked.len()
        ));
    }
    for (i, (a, b)) in invoked.iter().zip(done).enumerate() {
        match (a, b) {
            (MicroOp::Append { .. }, MicroOp::Append { .. }) if a == b => {}
            (
                MicroOp::Read { key: ka, .. },
                MicroOp::Read {
                    key: kb,
                    elements: Some(_),
                },
            ) if ka == kb => {}
            (MicroOp::Read { .. }, MicroOp::Read { elements: None, .. }) => {
                return Err(format!("micro-op {i}: an ok read must list what it saw"))
            }
            _ => return Err(format!("micro-op {i} differs from the invoke's")),
        }
    }
    Ok(())
}
