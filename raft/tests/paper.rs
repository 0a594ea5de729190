//! Scenarios from the Raft paper, driven message by message.

mod common;

use common::{drain, entry, storage_with, to};
use quiver_raft::{Config, Entry, MemStorage, Message, MessageKind, RawNode, Role, Storage};

fn node(id: u64, log: &[Entry], term: u64, commit: u64) -> RawNode<MemStorage> {
    let mut config = Config::new(id, vec![1, 2, 3], id);
    // One entry per append, so an old entry can be acknowledged alone.
    config.entries_per_append_max = 1;
    RawNode::new(config, storage_with(log, term, commit))
}

/// Paper 5.4.2 (Figure 8): a leader does not commit an entry of an earlier term by counting
/// replicas; it commits it only together with an entry of its own term.
#[test]
fn an_old_term_entry_is_not_committed_by_counting_replicas() {
    // Node 1 holds an uncommitted entry of term 1 at index 2; the others only index 1.
    let mut n1 = node(1, &[entry(1, 1), entry(2, 1)], 1, 1);
    let mut n2 = node(2, &[entry(1, 1)], 1, 1);
    // Node 1 times out, wins the pre-vote and the vote of node 2, and leads term 2.
    for _ in 0..40 {
        n1.tick();
        if n1.role() != Role::Follower {
            break;
        }
    }
    let mut inbox = drain(&mut n1);
    for _ in 0..4 {
        let mut replies = Vec::new();
        for m in to(&inbox, 2) {
            n2.step(m);
            replies.extend(drain(&mut n2));
        }
        for m in replies {
            n1.step(m);
        }
        inbox = drain(&mut n1);
        if n1.role() == Role::Leader {
            break;
        }
    }
    assert_eq!((n1.role(), n1.term()), (Role::Leader, 2));
    // The leader appended its no-op at index 3 (term 2). Deliver appends to node 2 one at
    // a time until node 2 holds index 2 (term 1) but not index 3.
    let mut commit_while_only_old = None;
    for _ in 0..20 {
        let mut replies = Vec::new();
        for m in to(&inbox, 2) {
            let carries_3 = matches!(&m.kind, MessageKind::Append { entries, .. }
                if entries.iter().any(|e| e.index == 3));
            if carries_3 && n2.storage().last_index() >= 2 {
                // Hold the no-op back: node 2 has the old entry only.
                commit_while_only_old = Some(n1.commit());
                continue;
            }
            n2.step(m);
            replies.extend(drain(&mut n2));
        }
        for m in replies {
            n1.step(m);
        }
        inbox = drain(&mut n1);
        if commit_while_only_old.is_some() {
            break;
        }
    }
    assert_eq!(
        n2.storage().last_index(),
        2,
        "node 2 holds the old entry and not the no-op"
    );
    assert_eq!(
        commit_while_only_old,
        Some(1),
        "a majority (nodes 1 and 2) holds index 2 of term 1, but it is not committed"
    );
    // The held-back append is lost; the next heartbeat finds the gap and sends the no-op
    // again. Once node 2 holds it, index 2 and 3 commit together.
    n1.tick();
    inbox.extend(drain(&mut n1));
    for _ in 0..20 {
        let mut replies = Vec::new();
        for m in to(&inbox, 2) {
            n2.step(m);
            replies.extend(drain(&mut n2));
        }
        for m in replies {
            n1.step(m);
        }
        inbox = drain(&mut n1);
        if n1.commit() >= 3 {
            break;
        }
    }
    assert_eq!(
        n1.commit(),
        3,
        "index 2 commits with the current term's entry"
    );
}

/// Paper 5.3: an append whose entries already match never truncates, so a stale duplicate
/// arriving after newer entries changes nothing.
#[test]
fn a_stale_duplicate_append_does_not_truncate_newer_entries() {
    let mut n2 = node(2, &[entry(1, 1)], 1, 1);
    let append = |prev: u64, entries: Vec<Entry>, commit: u64| Message {
        from: 1,
        to: 2,
        term: 1,
        kind: MessageKind::Append {
            prev_index: prev,
            prev_term: 1,
            entries,
            commit,
            read: 0,
        },
    };
    n2.step(append(1, vec![entry(2, 1), entry(3, 1)], 1));
    drain(&mut n2);
    assert_eq!(n2.storage().last_index(), 3);
    // The older append (only entry 2) arrives late.
    n2.step(append(1, vec![entry(2, 1)], 1));
    let replies = drain(&mut n2);
    assert_eq!(
        n2.storage().last_index(),
        3,
        "entry 3 survives the duplicate"
    );
    assert!(replies
        .iter()
        .all(|m| matches!(m.kind, MessageKind::AppendResp { reject: false, .. })));
}
