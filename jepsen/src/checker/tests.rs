//! Hand-made histories: one per anomaly class, each asserting that exact name is reported,
//! and valid histories (concurrent, multi-key, with info and failed operations) asserting
//! that nothing is. A checker that reports everything fails the second kind; one that
//! reports nothing fails the first.

use std::collections::HashMap;

use super::{check, AnomalyKind, Report};
use crate::history::{Event, EventType, History, MicroOp};

use AnomalyKind::*;

/// Builds a history event by event. `invoke` takes the micro-ops as they will complete (reads
/// with their results); the invoke event itself carries null reads.
#[derive(Default)]
struct H {
    events: Vec<Event>,
    in_flight: HashMap<u64, Vec<MicroOp>>,
}

fn a(key: &str, x: u64) -> MicroOp {
    MicroOp::append(key, x)
}

fn r(key: &str, xs: &[u64]) -> MicroOp {
    MicroOp::read(key, Some(xs.to_vec()))
}

fn nulled(mops: &[MicroOp]) -> Vec<MicroOp> {
    mops.iter()
        .map(|m| match m {
            MicroOp::Read { key, .. } => MicroOp::read(key.clone(), None),
            other => other.clone(),
        })
        .collect()
}

impl H {
    fn push(&mut self, kind: EventType, p: u64, value: &[MicroOp]) {
        let n = self.events.len() as u64;
        self.events.push(Event {
            index: n,
            kind,
            process: p,
            time_ns: n * 1000,
            wall_ms: 1_700_000_000_000 + n,
            f: "txn".into(),
            value: serde_json::to_value(value).unwrap(),
            error: match kind {
                EventType::Info => Some("timeout".into()),
                _ => None,
            },
        });
    }

    fn invoke(&mut self, p: u64, mops: &[MicroOp]) -> &mut Self {
        self.push(EventType::Invoke, p, &nulled(mops));
        self.in_flight.insert(p, mops.to_vec());
        self
    }

    fn ok(&mut self, p: u64) -> &mut Self {
        let mops = self.in_flight.remove(&p).expect("ok without invoke");
        self.push(EventType::Ok, p, &mops);
        self
    }

    fn fail(&mut self, p: u64) -> &mut Self {
        let mops = self.in_flight.remove(&p).expect("fail without invoke");
        self.push(EventType::Fail, p, &nulled(&mops));
        self
    }

    fn info(&mut self, p: u64) -> &mut Self {
        let mops = self.in_flight.remove(&p).expect("info without invoke");
        self.push(EventType::Info, p, &nulled(&mops));
        self
    }

    /// Invoke and ok at once: a transaction no other overlaps.
    fn txn(&mut self, p: u64, mops: &[MicroOp]) -> &mut Self {
        self.invoke(p, mops).ok(p)
    }

    fn check(&self) -> Report {
        check(&History {
            events: self.events.clone(),
        })
    }
}

#[track_caller]
fn assert_valid(h: &H) {
    let report = h.check();
    assert!(
        report.valid && report.anomalies.is_empty() && report.history_errors.is_empty(),
        "expected a valid history, got {}",
        serde_json::to_string_pretty(&report).unwrap()
    );
}

#[track_caller]
fn assert_finds(h: &H, kind: AnomalyKind) -> Report {
    let report = h.check();
    assert!(
        !report.valid,
        "expected {kind:?}, the history was judged valid"
    );
    assert!(
        report.has(kind),
        "expected {}, got {:?}\n{}",
        kind.name(),
        report.anomaly_counts,
        serde_json::to_string_pretty(&report).unwrap()
    );
    report
}

// ---- valid histories ----

#[test]
fn an_empty_history_is_valid() {
    assert_valid(&H::default());
}

#[test]
fn serial_appends_and_reads_are_valid() {
    let mut h = H::default();
    h.txn(0, &[r("x", &[])])
        .txn(0, &[a("x", 1)])
        .txn(0, &[r("x", &[1])])
        .txn(1, &[a("x", 2), a("y", 1)])
        .txn(1, &[r("x", &[1, 2]), r("y", &[1])]);
    assert_valid(&h);
    let report = h.check();
    assert_eq!(report.counts.ok, 5);
    assert_eq!(report.counts.reads, 4);
    assert_eq!(report.counts.appends, 3);
    assert_eq!(report.counts.keys, 2);
}

#[test]
fn concurrent_appends_in_either_order_are_valid() {
    // Two overlapping appends; reads overlapping them see either, then both in one order.
    let mut h = H::default();
    h.invoke(0, &[a("x", 1)])
        .invoke(1, &[a("x", 2)])
        .invoke(2, &[r("x", &[2])])
        .ok(1)
        .ok(2)
        .invoke(3, &[r("x", &[2, 1])])
        .ok(0)
        .ok(3)
        .txn(2, &[r("x", &[2, 1])]);
    assert_valid(&h);
}

#[test]
fn a_read_overlapping_an_append_may_miss_it() {
    let mut h = H::default();
    h.txn(0, &[a("x", 1)])
        .invoke(1, &[a("x", 2)])
        .txn(2, &[r("x", &[1])])
        .ok(1)
        .txn(2, &[r("x", &[1, 2])]);
    assert_valid(&h);
}

#[test]
fn multi_key_transactions_seen_whole_are_valid() {
    let mut h = H::default();
    h.invoke(0, &[a("x", 1), a("y", 1), a("x", 2)])
        .invoke(1, &[r("x", &[]), r("y", &[])])
        .ok(1)
        .invoke(1, &[r("x", &[1, 2]), r("y", &[1])])
        .ok(0)
        .ok(1)
        .txn(
            2,
            &[a("y", 2), r("y", &[1, 2]), a("y", 3), r("y", &[1, 2, 3])],
        )
        .txn(1, &[r("y", &[1, 2, 3]), r("x", &[1, 2])]);
    assert_valid(&h);
}

#[test]
fn info_operations_may_or_may_not_have_happened() {
    let mut h = H::default();
    // Process 0 times out on an append that did happen (seen later, even after the info).
    h.invoke(0, &[a("x", 1)]).info(0);
    // Process 1 times out on one that never happens, and is never seen: not lost.
    h.invoke(1, &[a("x", 2)]).info(1);
    h.txn(2, &[r("x", &[])]);
    h.txn(2, &[r("x", &[1])]);
    // An info read tells nothing.
    h.invoke(3, &[r("x", &[])]).info(3);
    // An append still in flight when the history ends, seen by a read.
    h.invoke(4, &[a("x", 3)]);
    h.txn(5, &[a("x", 4)]);
    h.txn(5, &[r("x", &[1, 3, 4])]);
    assert_valid(&h);
    let report = h.check();
    assert_eq!(
        (report.counts.ok, report.counts.fail, report.counts.info),
        (4, 0, 4)
    );
    assert_eq!(report.counts.pending, 1);
    assert_eq!(report.counts.info_appends, 3);
}

#[test]
fn failed_appends_never_seen_are_valid() {
    let mut h = H::default();
    h.invoke(0, &[a("x", 1), a("y", 1)]).fail(0);
    h.txn(0, &[a("x", 2)]);
    h.txn(1, &[r("x", &[2]), r("y", &[])]);
    assert_valid(&h);
    assert_eq!(h.check().counts.fail, 1);
}

#[test]
fn an_acknowledged_append_with_no_later_read_is_not_lost() {
    let mut h = H::default();
    h.invoke(1, &[r("x", &[])]).txn(0, &[a("x", 1)]).ok(1);
    assert_valid(&h);
}

// ---- per-key anomalies ----

#[test]
fn incompatible_orders() {
    let mut h = H::default();
    h.txn(0, &[a("x", 1)])
        .txn(0, &[a("x", 2)])
        .txn(0, &[a("x", 3)]);
    h.txn(1, &[r("x", &[1, 2])]).txn(2, &[r("x", &[1, 3, 2])]);
    assert_finds(&h, IncompatibleOrder);
}

#[test]
fn duplicate_elements() {
    let mut h = H::default();
    h.txn(0, &[a("x", 1)]).txn(1, &[r("x", &[1, 1])]);
    let report = assert_finds(&h, DuplicateElements);
    let dup = report
        .anomalies
        .iter()
        .find(|a| a.kind == DuplicateElements)
        .unwrap();
    assert_eq!(
        (dup.key.as_deref(), dup.elements.as_slice()),
        (Some("x"), &[1][..])
    );
}

#[test]
fn garbage_reads() {
    let mut h = H::default();
    h.txn(0, &[a("x", 1)]).txn(1, &[r("x", &[1, 99])]);
    let report = assert_finds(&h, GarbageRead);
    let g = report
        .anomalies
        .iter()
        .find(|a| a.kind == GarbageRead)
        .unwrap();
    assert_eq!(g.elements, vec![99]);
}

#[test]
fn aborted_reads_g1a() {
    let mut h = H::default();
    h.invoke(0, &[a("x", 1)]).fail(0).txn(1, &[r("x", &[1])]);
    assert_finds(&h, G1a);
}

#[test]
fn intermediate_reads_g1b() {
    let mut h = H::default();
    h.invoke(0, &[a("x", 1), a("x", 2)])
        .txn(1, &[r("x", &[1])])
        .ok(0)
        .txn(1, &[r("x", &[1, 2])]);
    assert_finds(&h, G1b);
}

#[test]
fn lost_appends() {
    let mut h = H::default();
    h.txn(0, &[a("x", 1)])
        .txn(0, &[a("x", 2)])
        .txn(1, &[r("x", &[1])]);
    let report = assert_finds(&h, LostAppend);
    let lost = report
        .anomalies
        .iter()
        .find(|a| a.kind == LostAppend)
        .unwrap();
    assert_eq!(lost.elements, vec![2]);
    assert!(!report.has(StaleRead), "2 is in no read: lost, not stale");
}

#[test]
fn stale_reads_of_an_acknowledged_append() {
    let mut h = H::default();
    h.txn(0, &[a("x", 1)]).txn(0, &[a("x", 2)]);
    h.txn(1, &[r("x", &[1])]).txn(2, &[r("x", &[1, 2])]);
    let report = assert_finds(&h, StaleRead);
    // The same fact as a cycle: the read -rw-> the append -realtime-> the read.
    assert!(report.has(GSingleRealtime), "{:?}", report.anomaly_counts);
    assert!(!report.has(LostAppend));
}

#[test]
fn stale_reads_of_what_another_read_already_saw() {
    let mut h = H::default();
    // The append is never acknowledged, but a completed read saw it: a read after that one
    // must see it too.
    h.invoke(0, &[a("x", 1)])
        .txn(1, &[r("x", &[1])])
        .txn(2, &[r("x", &[])]);
    let report = assert_finds(&h, StaleRead);
    assert!(report.has(GSingleRealtime), "{:?}", report.anomaly_counts);
}

#[test]
fn non_monotonic_reads() {
    let mut h = H::default();
    h.invoke(0, &[a("x", 1)]).invoke(1, &[a("x", 2)]);
    h.txn(2, &[r("x", &[1, 2])]).txn(2, &[r("x", &[1])]);
    h.ok(0).ok(1);
    assert_finds(&h, NonMonotonicRead);
}

// ---- dependency cycles ----

/// Final reads by a process that did nothing else, after everything.
fn final_reads(h: &mut H, reads: &[MicroOp]) {
    h.txn(99, reads);
}

#[test]
fn write_cycles_g0() {
    // Two concurrent transactions append to x and y in opposite orders.
    let mut h = H::default();
    h.invoke(0, &[a("x", 1), a("y", 2)])
        .invoke(1, &[a("x", 3), a("y", 4)])
        .ok(0)
        .ok(1);
    final_reads(&mut h, &[r("x", &[1, 3]), r("y", &[4, 2])]);
    let report = assert_finds(&h, G0);
    let g0 = report.anomalies.iter().find(|a| a.kind == G0).unwrap();
    assert_eq!(g0.cycle.len(), 2);
    assert!(g0.cycle.iter().all(|s| s.rel == "ww"));
    assert!(!report.has(G1c) && !report.has(GSingle) && !report.has(G2));
}

#[test]
fn circular_information_flow_g1c() {
    // Each of two concurrent transactions reads the other's append.
    let mut h = H::default();
    h.invoke(0, &[a("x", 1), r("y", &[2])])
        .invoke(1, &[a("y", 2), r("x", &[1])])
        .ok(0)
        .ok(1);
    final_reads(&mut h, &[r("x", &[1]), r("y", &[2])]);
    let report = assert_finds(&h, G1c);
    assert!(
        !report.has(G0) && !report.has(GSingle),
        "{:?}",
        report.anomaly_counts
    );
}

#[test]
fn read_skew_g_single() {
    // T1 appends to x and y at once; T2 sees its y but not its x.
    let mut h = H::default();
    h.invoke(0, &[a("x", 1), a("y", 1)])
        .invoke(1, &[r("x", &[]), r("y", &[1])])
        .ok(0)
        .ok(1);
    final_reads(&mut h, &[r("x", &[1]), r("y", &[1])]);
    let report = assert_finds(&h, GSingle);
    let c = report.anomalies.iter().find(|a| a.kind == GSingle).unwrap();
    assert_eq!(c.cycle.iter().filter(|s| s.rel == "rw").count(), 1);
    assert!(!report.has(G2));
}

#[test]
fn write_skew_g2() {
    // Each reads the key the other appends to and sees nothing.
    let mut h = H::default();
    h.invoke(0, &[r("x", &[]), a("y", 1)])
        .invoke(1, &[r("y", &[]), a("x", 2)])
        .ok(0)
        .ok(1);
    final_reads(&mut h, &[r("x", &[2]), r("y", &[1])]);
    let report = assert_finds(&h, G2);
    assert!(!report.has(GSingle), "{:?}", report.anomaly_counts);
}

#[test]
fn g0_process() {
    // One process appends 1 then 2, but the order says 2 then 1.
    let mut h = H::default();
    h.txn(0, &[a("x", 1)]).txn(0, &[a("x", 2)]);
    final_reads(&mut h, &[r("x", &[2, 1])]);
    let report = assert_finds(&h, G0Process);
    assert!(
        !report.has(G0) && !report.has(G0Realtime),
        "{:?}",
        report.anomaly_counts
    );
}

#[test]
fn g0_realtime() {
    let mut h = H::default();
    h.txn(0, &[a("x", 1)]).txn(1, &[a("x", 2)]);
    final_reads(&mut h, &[r("x", &[2, 1])]);
    let report = assert_finds(&h, G0Realtime);
    assert!(
        !report.has(G0) && !report.has(G0Process),
        "{:?}",
        report.anomaly_counts
    );
}

#[test]
fn g1c_process() {
    // A process reads an element it appends only later.
    let mut h = H::default();
    h.txn(0, &[r("x", &[1])]).txn(0, &[a("x", 1)]);
    final_reads(&mut h, &[r("x", &[1])]);
    assert_finds(&h, G1cProcess);
}

#[test]
fn g1c_realtime() {
    // A read sees an element whose append began only after the read completed.
    let mut h = H::default();
    h.txn(1, &[r("x", &[1])]).txn(0, &[a("x", 1)]);
    final_reads(&mut h, &[r("x", &[1])]);
    let report = assert_finds(&h, G1cRealtime);
    assert!(!report.has(G1cProcess));
}

#[test]
fn g_single_process() {
    // A process does not read its own acknowledged append.
    let mut h = H::default();
    h.txn(0, &[a("x", 1)]).txn(0, &[r("x", &[])]);
    final_reads(&mut h, &[r("x", &[1])]);
    let report = assert_finds(&h, GSingleProcess);
    assert!(report.has(StaleRead));
}

#[test]
fn g_single_realtime() {
    let mut h = H::default();
    h.txn(0, &[a("x", 1)]).txn(1, &[r("x", &[])]);
    final_reads(&mut h, &[r("x", &[1])]);
    let report = assert_finds(&h, GSingleRealtime);
    assert!(!report.has(GSingleProcess));
}

#[test]
fn realtime_order_survives_concurrent_completions() {
    // A (the append) and B overlap and both complete before C begins: C must follow A in
    // real time even though B completed last (the reduced real-time graph keeps both).
    let mut h = H::default();
    h.invoke(0, &[a("x", 1)])
        .invoke(1, &[a("y", 1)])
        .ok(0)
        .ok(1);
    h.txn(2, &[r("x", &[])]);
    final_reads(&mut h, &[r("x", &[1]), r("y", &[1])]);
    let report = assert_finds(&h, GSingleRealtime);
    assert!(report.has(StaleRead));
}

#[test]
fn g2_process() {
    // T3 (process 0) appends y; then T1 (process 0) reads x empty; T2 (process 1, overlapping
    // both) reads y empty and appends x: T3 -process-> T1 -rw-> T2 -rw-> T3.
    let mut h = H::default();
    h.invoke(1, &[r("y", &[]), a("x", 2)]);
    h.txn(0, &[a("y", 1)]).txn(0, &[r("x", &[])]);
    h.ok(1);
    final_reads(&mut h, &[r("x", &[2]), r("y", &[1])]);
    let report = assert_finds(&h, G2Process);
    assert!(
        !report.has(GSingle) && !report.has(GSingleProcess),
        "{:?}",
        report.anomaly_counts
    );
}

#[test]
fn g2_realtime() {
    let mut h = H::default();
    h.invoke(1, &[r("y", &[]), a("x", 2)]);
    h.txn(0, &[a("y", 1)]).txn(2, &[r("x", &[])]);
    h.ok(1);
    final_reads(&mut h, &[r("x", &[2]), r("y", &[1])]);
    let report = assert_finds(&h, G2Realtime);
    assert!(
        !report.has(G2Process) && !report.has(GSingleRealtime),
        "{:?}",
        report.anomaly_counts
    );
}

#[test]
fn cycles_explain_each_edge() {
    let mut h = H::default();
    h.txn(0, &[a("x", 1)]).txn(1, &[r("x", &[])]);
    final_reads(&mut h, &[r("x", &[1])]);
    let report = h.check();
    let c = report
        .anomalies
        .iter()
        .find(|a| a.kind == GSingleRealtime)
        .unwrap();
    let rels: Vec<&str> = c.cycle.iter().map(|s| s.rel.as_str()).collect();
    assert_eq!(rels, ["rw", "realtime"]);
    assert_eq!(c.cycle[0].from, c.cycle[1].to, "the cycle closes");
    assert!(c.cycle.iter().all(|s| !s.why.is_empty()));
    assert!(c.explanation.contains("-rw->"), "{}", c.explanation);
}

// ---- malformed histories ----

#[test]
fn malformed_histories_are_not_valid() {
    // The same element appended twice.
    let mut h = H::default();
    h.txn(0, &[a("x", 1)]).txn(1, &[a("x", 1)]);
    assert!(!h.check().history_errors.is_empty());
    assert!(!h.check().valid);
    // A process reused after an info.
    let mut h = H::default();
    h.invoke(0, &[a("x", 1)]).info(0).txn(0, &[a("x", 2)]);
    assert!(!h.check().history_errors.is_empty());
    // Two operations in flight on one process, and a completion without an invoke.
    let mut h = H::default();
    h.push(EventType::Invoke, 0, &[a("x", 1)]);
    h.push(EventType::Invoke, 0, &[a("x", 2)]);
    h.push(EventType::Ok, 1, &[a("x", 3)]);
    assert_eq!(
        h.check().history_errors.len(),
        2,
        "{:?}",
        h.check().history_errors
    );
    // An ok value that does not match its invoke.
    let mut h = H::default();
    h.push(EventType::Invoke, 0, &[a("x", 1)]);
    h.push(EventType::Ok, 0, &[a("x", 2)]);
    assert!(!h.check().history_errors.is_empty());
}

#[test]
fn other_workloads_are_counted_not_checked() {
    let mut h = H::default();
    h.txn(0, &[a("x", 1)]);
    for kind in [EventType::Invoke, EventType::Ok] {
        let n = h.events.len() as u64;
        h.events.push(Event {
            index: n,
            kind,
            process: 7,
            time_ns: n * 1000,
            wall_ms: 0,
            f: "subscribe".into(),
            value: serde_json::json!({"stream": "x"}),
            error: None,
        });
    }
    assert_valid(&h);
    assert_eq!(h.check().counts.other_ops, 1);
}
