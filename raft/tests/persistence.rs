//! The rules that tie the core to what its application persisted, each checked by driving
//! the `Ready` contract as a real application may: sending `early` messages before the write,
//! crashing between the two, stepping while a `Ready` is being persisted, restarting from a
//! log whose hard state is behind it.

mod common;

use common::{drain, entry, storage_with};
use quiver_raft::{Config, Entry, MemStorage, Message, MessageKind, RawNode, Ready, Role, Storage};

fn persist(n: &mut RawNode<MemStorage>, ready: &Ready) {
    n.storage_mut().append(&ready.entries);
    if let Some(hs) = ready.hard_state {
        n.storage_mut().set_hard_state(hs);
    }
}

fn lone_voter_with_learner(id: u64, storage: MemStorage) -> RawNode<MemStorage> {
    let mut c = Config::new(id, vec![1], 1);
    c.learners = vec![2];
    RawNode::new(c, storage)
}

fn tick_until_leader(n: &mut RawNode<MemStorage>) {
    for _ in 0..100 {
        if n.role() == Role::Leader {
            return;
        }
        n.tick();
    }
    panic!("node {} never led", n.id());
}

/// Delivers `msgs` to `n` (those addressed to it) and persists what it has ready, returning
/// what it applied and what it sent.
fn deliver(n: &mut RawNode<MemStorage>, msgs: &[Message]) -> (Vec<Entry>, Vec<Message>) {
    let (mut applied, mut sent) = (Vec::new(), Vec::new());
    let id = n.id();
    for m in msgs.iter().filter(|m| m.to == id) {
        n.step(m.clone());
        while n.has_ready() {
            let ready = n.ready();
            persist(n, &ready);
            applied.extend(ready.committed.iter().cloned());
            sent.extend(ready.early.iter().chain(&ready.messages).cloned());
            n.advance(ready);
        }
    }
    (applied, sent)
}

/// Paper 5.2 with diss. 10.2.1: a leader's appends may precede its own write only when the
/// write changes neither term nor vote. A lone voter campaigns and leads in one step; had
/// its appends left before its new term was durable, a crash would let it lead the same
/// term again with other entries, and its learner would hold "A" at (2, term 1) while the
/// leader holds "B" there: two committed entries at one index and term.
#[test]
fn a_lone_voter_sends_nothing_before_its_new_term_is_durable() {
    let mut n1 = lone_voter_with_learner(1, MemStorage::default());
    let mut n2 = lone_voter_with_learner(2, MemStorage::default());
    tick_until_leader(&mut n1);
    n1.propose(b"A".to_vec()).unwrap();
    let ready = n1.ready();
    assert!(ready.hard_state.is_some_and(|hs| hs.term == 1));
    // Whatever may leave early does; then the leader crashes before its write.
    let sent_early = ready.early.clone();
    assert!(
        sent_early.is_empty(),
        "sent before the term was durable: {sent_early:?}"
    );
    deliver(&mut n2, &sent_early);
    let disk = n1.storage().clone();
    drop(n1);

    // Restarted, it leads again (term 1 or later), proposes B, and runs to completion.
    let mut n1 = lone_voter_with_learner(1, disk);
    tick_until_leader(&mut n1);
    n1.propose(b"B".to_vec()).unwrap();
    let mut applied_1 = Vec::new();
    let mut applied_2 = Vec::new();
    for _ in 0..10 {
        let mut out = Vec::new();
        while n1.has_ready() {
            let ready = n1.ready();
            out.extend(ready.early.iter().cloned());
            persist(&mut n1, &ready);
            out.extend(ready.messages.iter().cloned());
            applied_1.extend(ready.committed.iter().cloned());
            n1.advance(ready);
        }
        let (applied, answers) = deliver(&mut n2, &out);
        applied_2.extend(applied);
        for m in answers {
            n1.step(m);
        }
        n1.tick();
    }
    assert!(applied_2.len() >= 2, "the learner applied {applied_2:?}");
    for e in &applied_2 {
        let mine = applied_1.iter().find(|m| m.index == e.index);
        assert_eq!(
            Some(e),
            mine,
            "learner and leader applied different entries"
        );
    }
}

/// etcd-raft's `stableTo(index, term)`: `advance` takes entries as persisted only if the log
/// still holds them. Node 2 hands out entries 1..=3 of term 1 to persist; before it is done,
/// the leader of term 2 replaces entry 3. The write of the old entry 3 completes, but the new
/// one must still be written, and the answer to the new leader must not go out unbacked.
#[test]
fn a_suffix_replaced_while_a_ready_is_persisted_is_written_again() {
    let mut n2 = RawNode::new(Config::new(2, vec![1, 2, 3], 2), MemStorage::default());
    let t1: Vec<Entry> = (1..=3).map(|i| entry(i, 1)).collect();
    n2.step(Message {
        from: 1,
        to: 2,
        term: 1,
        kind: MessageKind::Append {
            prev_index: 0,
            prev_term: 0,
            entries: t1.clone(),
            commit: 0,
            read: 0,
        },
    });
    let first = n2.ready();
    assert_eq!(first.entries, t1);

    // While `first` is being persisted, the leader of term 2 replaces entry 3.
    n2.step(Message {
        from: 3,
        to: 2,
        term: 2,
        kind: MessageKind::Append {
            prev_index: 2,
            prev_term: 1,
            entries: vec![entry(3, 2)],
            commit: 0,
            read: 0,
        },
    });
    persist(&mut n2, &first);
    n2.advance(first);
    assert_eq!(
        n2.last_index(),
        3,
        "the node's log still ends at the new entry"
    );
    assert_eq!(n2.term_of(3), Some(2));

    let second = n2.ready();
    persist(&mut n2, &second);
    let answers: Vec<Message> = second
        .messages
        .iter()
        .filter(|m| m.to == 3)
        .cloned()
        .collect();
    n2.advance(second);
    assert_eq!(
        n2.storage().term(3),
        Some(2),
        "the entry acknowledged to the term-2 leader is on disk"
    );
    assert!(
        answers.iter().any(|m| matches!(
            m.kind,
            MessageKind::AppendResp {
                reject: false,
                index: 3,
                ..
            }
        )),
        "answered {answers:?}"
    );
}

/// A leader counts its own entries only once persisted, and only while its log still holds
/// them: while a `Ready` with its entries is outstanding, acknowledgements of followers alone
/// commit nothing in a cluster of three (the leader plus one follower is the quorum).
#[test]
fn a_leader_does_not_count_entries_it_has_not_persisted() {
    let mut n1 = RawNode::new(Config::new(1, vec![1, 2, 3], 1), MemStorage::default());
    tick_until_leader_of_three(&mut n1);
    let commit = n1.commit();
    n1.propose(b"x".to_vec()).unwrap();
    let ready = n1.ready();
    let index = ready.entries.last().expect("the proposal").index;
    // Followers answer before the leader's own write is done.
    let term = n1.term();
    n1.step(Message {
        from: 2,
        to: 1,
        term,
        kind: MessageKind::AppendResp {
            reject: false,
            index,
            hint: 0,
            hint_term: 0,
            read: 0,
        },
    });
    assert_eq!(n1.commit(), commit, "committed on a follower's word alone");
    persist(&mut n1, &ready);
    n1.advance(ready);
    assert_eq!(n1.commit(), index, "committed once persisted here too");
}

/// Dissertation 10.2.1: a leader whose term and vote are durable sends the appends of a new
/// proposal in `early`, before its own write of the entry (which it counts only once
/// persisted, above); nothing else it sends is early.
#[test]
fn a_leaders_appends_leave_before_its_own_write() {
    let mut n1 = RawNode::new(Config::new(1, vec![1, 2, 3], 1), MemStorage::default());
    tick_until_leader_of_three(&mut n1);
    n1.propose(b"x".to_vec()).unwrap();
    let ready = n1.ready();
    assert!(ready.hard_state.is_none(), "term and vote are durable");
    let index = ready.entries.last().expect("the proposal").index;
    for id in [2, 3] {
        assert!(
            ready.early.iter().any(|m| m.to == id
                && matches!(&m.kind, MessageKind::Append { entries, .. }
                    if entries.iter().any(|e| e.index == index))),
            "the proposal's append to {id} is early: {:?}",
            ready.early
        );
    }
    assert!(
        ready
            .messages
            .iter()
            .all(|m| !matches!(m.kind, MessageKind::Append { .. })),
        "no append waits for the write: {:?}",
        ready.messages
    );
    persist(&mut n1, &ready);
    n1.advance(ready);
}

fn tick_until_leader_of_three(n1: &mut RawNode<MemStorage>) {
    for _ in 0..100 {
        n1.tick();
        let mut queue = drain(n1);
        while !queue.is_empty() {
            let term = n1.term();
            for m in std::mem::take(&mut queue) {
                let kind = match m.kind {
                    MessageKind::PreVote { .. } => MessageKind::PreVoteResp { reject: false },
                    MessageKind::Vote { .. } => MessageKind::VoteResp { reject: false },
                    MessageKind::Append {
                        ref entries,
                        prev_index,
                        ..
                    } => MessageKind::AppendResp {
                        reject: false,
                        index: entries.last().map_or(prev_index, |e| e.index),
                        hint: 0,
                        hint_term: 0,
                        read: 0,
                    },
                    _ => continue,
                };
                let term = if matches!(kind, MessageKind::PreVoteResp { .. }) {
                    m.term
                } else {
                    term
                };
                n1.step(Message {
                    from: m.to,
                    to: 1,
                    term,
                    kind,
                });
            }
            queue = drain(n1);
        }
        if n1.role() == Role::Leader && n1.commit() >= 1 {
            return;
        }
    }
    panic!("node 1 never led with its no-op committed");
}

/// A log holding entries of a later term than its hard state (an application that wrote
/// entries before their hard state stopped between the two): the node takes that term, and,
/// not knowing whom it voted for there, votes for no other candidate in it.
#[test]
fn a_restart_raises_the_term_to_the_last_entry_and_grants_no_second_vote() {
    let log: Vec<Entry> = (1..=3).map(|i| entry(i, 4)).collect();
    let mut n = RawNode::new(Config::new(1, vec![1, 2, 3], 1), storage_with(&log, 2, 0));
    assert_eq!(n.term(), 4);
    n.step(Message {
        from: 2,
        to: 1,
        term: 4,
        kind: MessageKind::Vote {
            last_index: 9,
            last_term: 4,
            transfer: false,
        },
    });
    let msgs = drain(&mut n);
    assert!(
        msgs.iter()
            .any(|m| m.to == 2 && m.kind == MessageKind::VoteResp { reject: true }),
        "{msgs:?}"
    );
    assert_eq!(
        n.storage().hard_state().term,
        4,
        "the raised term is persisted"
    );
}

/// `Config::applied`: what the application applied in an earlier run is not handed out
/// again, and counts as committed even when the persisted commit index is behind it.
#[test]
fn a_restart_resumes_applying_after_what_was_applied() {
    let log: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
    let mut c = Config::new(1, vec![1, 2, 3], 1);
    c.applied = 3;
    let mut n = RawNode::new(c, storage_with(&log, 1, 1));
    assert_eq!(n.commit(), 3);
    let ready = n.ready();
    assert!(ready.committed.is_empty(), "{:?}", ready.committed);
    assert_eq!(ready.hard_state.map(|hs| hs.commit), Some(3));
    n.advance(ready);
}

/// Node id 0 is reserved: a persisted vote of 0 reads as no vote.
#[test]
#[should_panic(expected = "node id 0 is reserved")]
fn node_id_zero_is_refused() {
    RawNode::new(Config::new(0, vec![0, 1, 2], 1), MemStorage::default());
}
