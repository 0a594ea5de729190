//! The rules added to the core after the paper scenarios (membership changes, learners,
//! leadership transfer, ReadIndex, segment shipping, backpressure and byte-bounded pipelining),
//! each checked message by message. Every test names the rule it checks (Raft paper section or
//! Ongaro's dissertation section, "diss.").

use std::collections::{BTreeMap, BTreeSet};

mod common;

use common::{drain, drain_all, entry, storage_with, to};
use quiver_raft::{
    Config, Entry, EntryKind, HardState, MemStorage, Membership, MembershipChange, Message,
    MessageKind, RawNode, ReadState, Refused, Role, Storage,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn membership_entry(index: u64, term: u64, voters: &[u64], learners: &[u64]) -> Entry {
    let m = Membership {
        voters: voters.iter().copied().collect(),
        learners: learners.iter().copied().collect(),
        retired: BTreeSet::new(),
    };
    Entry {
        index,
        term,
        kind: EntryKind::Membership,
        data: m.encode().into(),
    }
}

/// A lone node of the bootstrap cluster {1, 2, 3} over a log that already holds `log`.
fn node(id: u64, log: &[Entry], term: u64, commit: u64) -> RawNode<MemStorage> {
    let storage = storage_with(log, term, commit);
    RawNode::new(Config::new(id, vec![1, 2, 3], id), storage)
}

fn all(_: &Message) -> bool {
    true
}

fn is_vote_request(m: &Message) -> bool {
    matches!(
        m.kind,
        MessageKind::PreVote { .. } | MessageKind::Vote { .. }
    )
}

fn is_timeout_now(m: &Message) -> bool {
    matches!(m.kind, MessageKind::TimeoutNow)
}

/// Indexes of the entries carried by appends in `msgs` to `id`.
fn appended_to(msgs: &[Message], id: u64) -> Vec<u64> {
    msgs.iter()
        .filter(|m| m.to == id)
        .flat_map(|m| match &m.kind {
            MessageKind::Append { entries, .. } => entries.iter().map(|e| e.index).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// The segment chunks in `msgs` to `id`, as (first, offset).
fn chunks_to(msgs: &[Message], id: u64) -> Vec<(u64, u64)> {
    msgs.iter()
        .filter(|m| m.to == id)
        .filter_map(|m| match m.kind {
            MessageKind::Segment { first, offset, .. } => Some((first, offset)),
            _ => None,
        })
        .collect()
}

/// A handful of nodes and a hand-operated network: messages are delivered only when a test
/// says so, and a message to a node that is not running is lost.
struct Net {
    nodes: BTreeMap<u64, RawNode<MemStorage>>,
    reads: BTreeMap<u64, Vec<ReadState>>,
}

impl Net {
    /// Bootstrap `voters` and `learners` over empty logs (`segments`: entries per sealed
    /// segment, 0 for none); `tune` adjusts every node's config.
    fn new(voters: &[u64], learners: &[u64], segments: u64, tune: impl Fn(&mut Config)) -> Net {
        Net::with_storage(voters, learners, tune, |_| {
            MemStorage::with_segments(segments)
        })
    }

    fn with_storage(
        voters: &[u64],
        learners: &[u64],
        tune: impl Fn(&mut Config),
        storage: impl Fn(u64) -> MemStorage,
    ) -> Net {
        let mut net = Net {
            nodes: BTreeMap::new(),
            reads: BTreeMap::new(),
        };
        for &id in voters.iter().chain(learners) {
            net.start(id, voters, learners, &tune, storage(id));
        }
        net
    }

    fn start(
        &mut self,
        id: u64,
        voters: &[u64],
        learners: &[u64],
        tune: &dyn Fn(&mut Config),
        storage: MemStorage,
    ) {
        let mut config = Config::new(id, voters.to_vec(), id);
        config.learners = learners.to_vec();
        tune(&mut config);
        self.nodes.insert(id, RawNode::new(config, storage));
    }

    fn n(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).expect("a running node")
    }

    /// Persists what node `id` has ready; returns its messages and keeps its reads.
    fn drain(&mut self, id: u64) -> Vec<Message> {
        let (out, reads) = drain_all(self.n(id));
        self.reads.entry(id).or_default().extend(reads);
        out
    }

    /// The reads node `id` has confirmed since the last call.
    fn take_reads(&mut self, id: u64) -> Vec<ReadState> {
        self.reads.remove(&id).unwrap_or_default()
    }

    /// Steps each message into its receiver, in order, and returns what the receivers send.
    fn deliver(&mut self, msgs: Vec<Message>) -> Vec<Message> {
        let mut out = Vec::new();
        for m in msgs {
            let id = m.to;
            if let Some(n) = self.nodes.get_mut(&id) {
                n.step(m);
                out.extend(self.drain(id));
            }
        }
        out
    }

    /// Delivers until the network is quiet, losing every message `keep` refuses.
    fn settle(&mut self, mut msgs: Vec<Message>, mut keep: impl FnMut(&Message) -> bool) {
        for _ in 0..10_000 {
            msgs.retain(&mut keep);
            if msgs.is_empty() {
                return;
            }
            msgs = self.deliver(msgs);
        }
        panic!("the network never went quiet");
    }

    /// One tick of node `id`, then deliver until quiet.
    fn tick(&mut self, id: u64, keep: impl FnMut(&Message) -> bool) {
        self.n(id).tick();
        let out = self.drain(id);
        self.settle(out, keep);
    }

    /// Ticks node `id` (only it) until it campaigns, then delivers until quiet: it leads.
    fn elect(&mut self, id: u64, keep: impl FnMut(&Message) -> bool) {
        for _ in 0..100 {
            self.n(id).tick();
            if self.n(id).role() != Role::Follower {
                break;
            }
        }
        let out = self.drain(id);
        self.settle(out, keep);
        assert_eq!(
            self.n(id).role(),
            Role::Leader,
            "node {id} won the election"
        );
    }

    /// Whether `a` and `b` hold the same entries `1..=last`.
    fn same_log(&mut self, a: u64, b: u64, last: u64) -> bool {
        let ea = self.n(a).storage().entries(1, last + 1, usize::MAX);
        let eb = self.n(b).storage().entries(1, last + 1, usize::MAX);
        ea.len() as u64 == last && ea == eb
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Membership changes
// ---------------------------------------------------------------------------------------------

/// Diss. 4.1 (one server at a time) with Ongaro's 2015 correction: a leader proposes a change
/// only after it has committed an entry of its own term (`NotReady` before), only when no
/// earlier change is uncommitted (`ChangePending`), only when the change applies to the
/// current membership (`InvalidChange`: an existing member, or a retired id, since ids are
/// never reused), and promotes a learner only once it has caught up (diss. 4.2.1,
/// `NotCaughtUp`).
#[test]
fn membership_changes_are_refused_until_they_are_safe() {
    let mut net = Net::new(&[1, 2, 3], &[], 0, |_| {});
    // Node 1 wins the election, but its no-op reaches no one, so nothing of term 1 commits.
    net.elect(1, |m| !matches!(m.kind, MessageKind::Append { .. }));
    assert_eq!(net.n(1).commit(), 0);
    assert_eq!(
        net.n(1).propose_membership(MembershipChange::AddLearner(4)),
        Err(Refused::NotReady)
    );
    assert_eq!(net.n(1).membership(), &Membership::with_voters([1, 2, 3]));

    // One heartbeat round later the no-op is committed: the change is accepted, and is in
    // effect on the leader at once, before it commits.
    net.tick(1, all);
    assert_eq!(net.n(1).commit(), 1);
    let add4 = net
        .n(1)
        .propose_membership(MembershipChange::AddLearner(4))
        .expect("the leader committed its no-op");
    assert!(net.n(1).membership().learners.contains(&4));
    assert!(net.n(1).commit() < add4);

    // A second change waits for the first to commit.
    for change in [MembershipChange::AddLearner(5), MembershipChange::Remove(2)] {
        assert_eq!(
            net.n(1).propose_membership(change),
            Err(Refused::ChangePending)
        );
    }
    let out = net.drain(1);
    net.settle(out, all);
    assert!(net.n(1).commit() >= add4);

    // Changes that do not apply to the membership: a voter or a learner added again.
    for existing in [2, 4] {
        assert!(
            matches!(
                net.n(1)
                    .propose_membership(MembershipChange::AddLearner(existing)),
                Err(Refused::InvalidChange(_))
            ),
            "node {existing} is already a member"
        );
    }
    // Node 4 never started: it has caught up with nothing.
    assert_eq!(
        net.n(1).propose_membership(MembershipChange::Promote(4)),
        Err(Refused::NotCaughtUp)
    );

    // Node 4 is removed; its id is retired and can never be added again.
    let rm4 = net
        .n(1)
        .propose_membership(MembershipChange::Remove(4))
        .unwrap();
    let out = net.drain(1);
    net.settle(out, all);
    assert!(net.n(1).commit() >= rm4);
    assert!(net.n(1).membership().retired.contains(&4));
    assert!(matches!(
        net.n(1).propose_membership(MembershipChange::AddLearner(4)),
        Err(Refused::InvalidChange(_))
    ));

    // Node 5 is added but not running: it cannot be promoted...
    let add5 = net
        .n(1)
        .propose_membership(MembershipChange::AddLearner(5))
        .unwrap();
    let out = net.drain(1);
    net.settle(out, all);
    assert!(net.n(1).commit() >= add5);
    assert_eq!(
        net.n(1).propose_membership(MembershipChange::Promote(5)),
        Err(Refused::NotCaughtUp)
    );
    // ...until it has started and caught up.
    net.start(5, &[1, 2, 3], &[], &|_| {}, MemStorage::default());
    for _ in 0..4 {
        net.tick(1, all);
    }
    assert_eq!(net.n(5).last_index(), net.n(1).last_index());
    assert!(net.n(5).membership().learners.contains(&5));
    net.n(1)
        .propose_membership(MembershipChange::Promote(5))
        .expect("node 5 has caught up");
    assert!(net.n(1).membership().voters.contains(&5));
}

// ---------------------------------------------------------------------------------------------
// 2. Learners
// ---------------------------------------------------------------------------------------------

/// Diss. 4.2.1: a learner (non-voting member) never starts an election, however long it
/// hears no leader, and does not campaign when told `TimeoutNow` either.
#[test]
fn a_learner_never_campaigns() {
    let mut net = Net::new(&[1, 2, 3], &[4], 0, |_| {});
    for _ in 0..200 {
        net.n(4).tick();
        let out = net.drain(4);
        assert!(out.is_empty(), "a learner sent {out:?}");
        assert_eq!(net.n(4).role(), Role::Follower);
    }
    assert_eq!(net.n(4).term(), 0);

    // A voter in the same position campaigns within two election timeouts (the check above
    // is not vacuous).
    let mut asked = false;
    for _ in 0..20 {
        net.n(2).tick();
        if net.drain(2).iter().any(is_vote_request) {
            asked = true;
            break;
        }
    }
    assert!(asked, "a voter campaigns");

    // A learner following a leader ignores a TimeoutNow from it.
    let mut net = Net::new(&[1, 2, 3], &[4], 0, |_| {});
    net.elect(1, all);
    assert_eq!(net.n(4).leader(), Some(1));
    let term = net.n(1).term();
    let out = net.deliver(vec![Message {
        from: 1,
        to: 4,
        term,
        kind: MessageKind::TimeoutNow,
    }]);
    assert!(out.is_empty(), "the learner sent {out:?}");
    assert_eq!((net.n(4).role(), net.n(4).term()), (Role::Follower, term));
}

/// Diss. 4.2.1 / paper 5.3: only voters count toward a commit quorum. With voters {1, 2, 3}
/// and learners 4 and 5, the leader and both learners holding an entry are three of five
/// members, a majority of members, but one of three voters: not committed. One voter's
/// acknowledgement commits it.
#[test]
fn learner_acknowledgements_do_not_count_toward_commitment() {
    let mut net = Net::new(&[1, 2, 3], &[4, 5], 0, |_| {});
    net.elect(1, all);
    let commit = net.n(1).commit();
    let index = net.n(1).propose(b"x".to_vec()).unwrap();
    let out = net.drain(1);
    for learner in [4, 5] {
        assert_eq!(appended_to(&out, learner), vec![index]);
        let acks = net.deliver(to(&out, learner));
        assert!(acks.iter().any(|m| m.to == 1
            && matches!(m.kind, MessageKind::AppendResp { reject: false, index: i, .. } if i == index)));
        net.deliver(acks);
    }
    assert_eq!(net.n(1).commit(), commit, "learners' acks committed");

    let acks = net.deliver(to(&out, 2));
    net.deliver(acks);
    assert_eq!(net.n(1).commit(), index, "a voter's ack makes a majority");
}

/// `matched`, the read-only view a status page shows: a leader reports each member's
/// match (learners included, itself at its persisted last index), moving only on
/// acknowledgements; a follower reports nothing.
#[test]
fn the_leader_reports_each_members_match_and_a_follower_none() {
    let mut net = Net::new(&[1, 2, 3], &[4], 0, |_| {});
    net.elect(1, all);
    let start = net.n(1).last_index();
    let ids: Vec<u64> = net.n(1).matched().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    let index = net.n(1).propose(b"x".to_vec()).unwrap();
    let out = net.drain(1);
    let acks = net.deliver(to(&out, 2));
    net.deliver(acks);
    let matched: BTreeMap<u64, u64> = net.n(1).matched().into_iter().collect();
    assert_eq!(matched[&1], index, "the leader, once persisted");
    assert_eq!(matched[&2], index, "acknowledged");
    assert!(matched[&3] <= start && matched[&4] <= start, "{matched:?}");
    assert!(
        net.n(2).matched().is_empty(),
        "a follower has no progress to show"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A membership takes effect when appended
// ---------------------------------------------------------------------------------------------

/// Diss. 4.1: a server uses the latest configuration in its log, committed or not; so when
/// that entry is removed by a conflicting append from a newer leader (paper 5.3), the server
/// falls back to the previous configuration. Checked for an entry already persisted and for
/// one still unpersisted when the conflict arrives.
#[test]
fn a_membership_takes_effect_when_appended_and_reverts_when_truncated() {
    for persist_first in [true, false] {
        let mut n2 = node(2, &[entry(1, 1)], 1, 1);
        let bootstrap = Membership::with_voters([1, 2, 3]);
        assert_eq!(n2.membership(), &bootstrap);

        // Leader 1 (term 1) appends AddLearner(4) at index 2; its commit index is 1.
        n2.step(Message {
            from: 1,
            to: 2,
            term: 1,
            kind: MessageKind::Append {
                prev_index: 1,
                prev_term: 1,
                entries: vec![membership_entry(2, 1, &[1, 2, 3], &[4])],
                commit: 1,
                read: 0,
            },
        });
        assert_eq!(n2.commit(), 1, "the membership entry is not committed");
        assert!(
            n2.membership().learners.contains(&4),
            "in effect as soon as it is in the log (persist_first: {persist_first})"
        );
        if persist_first {
            drain(&mut n2);
            assert_eq!(n2.storage().memberships().len(), 1);
            assert!(n2.membership().learners.contains(&4));
        }

        // Leader 3 of term 2 never had index 2: its entry 2 replaces the membership entry.
        n2.step(Message {
            from: 3,
            to: 2,
            term: 2,
            kind: MessageKind::Append {
                prev_index: 1,
                prev_term: 1,
                entries: vec![entry(2, 2)],
                commit: 1,
                read: 0,
            },
        });
        assert_eq!(
            n2.membership(),
            &bootstrap,
            "the truncated membership is no longer in effect (persist_first: {persist_first})"
        );
        let out = drain(&mut n2);
        assert!(out.iter().any(|m| m.to == 3
            && matches!(
                m.kind,
                MessageKind::AppendResp {
                    reject: false,
                    index: 2,
                    ..
                }
            )));
        assert_eq!(n2.storage().term(2), Some(2));
        assert!(n2.storage().memberships().is_empty());
        assert_eq!(n2.membership(), &bootstrap);

        // A restart reads the same membership from the persisted log.
        let restarted = RawNode::new(Config::new(2, vec![1, 2, 3], 2), n2.storage().clone());
        assert_eq!(restarted.membership(), &bootstrap);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A leader removing itself
// ---------------------------------------------------------------------------------------------

/// Diss. 4.2.2: a leader that removes itself manages the cluster until the removal (which
/// counts only the new configuration's voters) commits, then steps down; as a non-voter it
/// never campaigns, and the remaining voters elect a leader among themselves.
#[test]
fn a_leader_that_removes_itself_leads_until_the_removal_commits() {
    let mut net = Net::new(&[1, 2, 3], &[], 0, |_| {});
    net.elect(1, all);
    let term = net.n(1).term();
    // An entry, then the removal, in separate appends.
    let x = net.n(1).propose(b"x".to_vec()).unwrap();
    let out_x = net.drain(1);
    let rm = net
        .n(1)
        .propose_membership(MembershipChange::Remove(1))
        .unwrap();
    assert_eq!(rm, x + 1);
    let m = net.n(1).membership().clone();
    assert_eq!(m.voters, BTreeSet::from([2, 3]));
    assert!(m.retired.contains(&1));
    let out = net.drain(1);

    // Nodes 2 and 3 acknowledge the entry: it commits (in {2, 3}), the removal does not,
    // and the leader stays.
    for id in [2, 3] {
        let acks = net.deliver(to(&out_x, id));
        net.deliver(acks);
    }
    assert_eq!(net.n(1).commit(), x);
    assert_eq!(net.n(1).role(), Role::Leader);

    // Node 2 holds the removal: in the new configuration {2, 3} that is no majority.
    let acks = net.deliver(to(&out, 2));
    net.deliver(acks);
    assert_eq!(net.n(1).role(), Role::Leader);
    assert!(net.n(1).commit() < rm);
    // Still leading: heartbeats go out.
    net.n(1).tick();
    let beats = net.drain(1);
    assert_eq!(net.n(1).role(), Role::Leader);
    for id in [2, 3] {
        assert!(to(&beats, id)
            .iter()
            .any(|m| matches!(m.kind, MessageKind::Append { .. })));
    }

    // Node 3's acknowledgement commits the removal: the leader steps down.
    let acks = net.deliver(to(&out, 3));
    let after = net.deliver(acks);
    assert!(net.n(1).commit() >= rm);
    assert_eq!((net.n(1).role(), net.n(1).term()), (Role::Follower, term));
    // The heartbeats it sent as it committed tell the others.
    net.settle(after.into_iter().chain(beats).collect(), all);
    for id in [2, 3] {
        assert!(net.n(id).commit() >= rm, "node {id} learned the commit");
    }

    // Node 1 never campaigns again.
    for _ in 0..100 {
        net.n(1).tick();
        let out = net.drain(1);
        assert!(
            !out.iter().any(is_vote_request),
            "node 1 campaigned: {out:?}"
        );
    }
    assert_eq!((net.n(1).role(), net.n(1).term()), (Role::Follower, term));

    // Nodes 2 and 3 elect one of themselves.
    let mut leader = None;
    for _ in 0..100 {
        for id in [2, 3] {
            net.tick(id, all);
        }
        leader = [2, 3]
            .into_iter()
            .find(|id| net.nodes[id].role() == Role::Leader);
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("nodes 2 and 3 elect a leader");
    assert!(net.n(leader).term() > term);
    assert_eq!(net.n(1).role(), Role::Follower);
}

// ---------------------------------------------------------------------------------------------
// 5. Leadership transfer
// ---------------------------------------------------------------------------------------------

/// Diss. 3.10: during a transfer the leader takes no proposals; it brings the target's log up
/// to its last index and only then sends `TimeoutNow`; the target campaigns at once (no
/// pre-vote, `transfer: true`), and a voter that still hears the old leader grants that vote
/// (diss. 9.6 makes the exception for transfers).
#[test]
fn leadership_transfer_waits_for_the_target_then_it_campaigns_at_once() {
    let mut net = Net::new(&[1, 2, 3], &[], 0, |_| {});
    net.elect(1, all);
    // Node 3 misses two entries.
    for data in [b"a", b"b"] {
        net.n(1).propose(data.to_vec()).unwrap();
    }
    let out = net.drain(1);
    net.settle(out, |m| m.to != 3 && m.from != 3);
    let last = net.n(1).last_index();
    assert_eq!(net.n(1).commit(), last);
    assert!(net.n(3).last_index() < last);

    net.n(1).transfer_leadership(3).unwrap();
    assert_eq!(net.n(1).propose(b"c".to_vec()), Err(Refused::Transferring));
    assert_eq!(
        net.n(1).propose_membership(MembershipChange::AddLearner(4)),
        Err(Refused::Transferring)
    );
    let mut out = net.drain(1);
    assert!(!out.iter().any(is_timeout_now), "node 3 is behind: {out:?}");

    // Node 1 and node 3 talk until node 1 says TimeoutNow; whenever it says so, node 3's log
    // ends at the leader's last index.
    let mut rounds_without = 0;
    let timeout_now = loop {
        if let Some(m) = out.iter().find(|m| is_timeout_now(m)) {
            assert_eq!(m.to, 3);
            assert_eq!(net.n(3).last_index(), last);
            assert_eq!(net.n(3).term_of(last), net.n(1).term_of(last));
            break m.clone();
        }
        rounds_without += 1;
        assert!(rounds_without < 20, "no TimeoutNow");
        let replies = net.deliver(to(&out, 3));
        out = net.deliver(replies);
    };
    assert!(
        rounds_without >= 2,
        "TimeoutNow waited for node 3 to catch up"
    );
    assert_eq!(net.n(1).propose(b"c".to_vec()), Err(Refused::Transferring));

    let term = net.n(3).term();
    let votes = net.deliver(vec![timeout_now]);
    assert_eq!(net.n(3).role(), Role::Candidate, "no pre-vote round");
    assert_eq!(net.n(3).term(), term + 1);
    for id in [1, 2] {
        let v = to(&votes, id);
        assert_eq!(v.len(), 1);
        assert!(matches!(
            v[0].kind,
            MessageKind::Vote { transfer: true, .. }
        ));
        assert_eq!(v[0].term, term + 1);
    }

    // Node 2 still hears node 1, yet grants the transfer vote.
    assert_eq!(net.n(2).leader(), Some(1));
    let answers = net.deliver(to(&votes, 2));
    assert_eq!(
        answers,
        vec![Message {
            from: 2,
            to: 3,
            term: term + 1,
            kind: MessageKind::VoteResp { reject: false },
        }]
    );
    let out = net.deliver(answers);
    assert_eq!(net.n(3).role(), Role::Leader);
    net.settle(out.into_iter().chain(to(&votes, 1)).collect(), all);
    assert_eq!(net.n(1).role(), Role::Follower);
    assert_eq!(net.n(1).leader(), Some(3));
    assert_eq!(net.n(3).commit(), net.n(3).last_index());
}

/// Paper 5.2: a follower that voted in a term knows no leader yet; the first append of that
/// term names it (the leader a follower knows is what it forwards reads to, and what makes
/// it ignore disruptive candidates, diss. 9.6).
#[test]
fn a_voter_learns_its_leader_from_the_first_append_of_the_term() {
    let mut n = node(2, &[], 0, 0);
    let msg = |kind| Message {
        from: 1,
        to: 2,
        term: 1,
        kind,
    };
    n.step(msg(MessageKind::Vote {
        last_index: 0,
        last_term: 0,
        transfer: false,
    }));
    drain(&mut n);
    assert_eq!((n.term(), n.leader()), (1, None));
    n.step(msg(MessageKind::Append {
        prev_index: 0,
        prev_term: 0,
        entries: Vec::new(),
        commit: 0,
        read: 0,
    }));
    assert_eq!((n.role(), n.leader()), (Role::Follower, Some(1)));
}

/// Diss. 3.10: a transfer that has not happened within an election timeout is abandoned, and
/// the leader takes proposals again: refused for `election_ticks - 1` ticks, taken at the
/// `election_ticks`-th.
#[test]
fn a_transfer_is_abandoned_after_an_election_timeout() {
    let mut net = Net::new(&[1, 2, 3], &[], 0, |_| {});
    net.elect(1, all);
    let cut_off_3 = |m: &Message| m.to != 3 && m.from != 3;
    net.n(1).propose(b"a".to_vec()).unwrap();
    let out = net.drain(1);
    net.settle(out, cut_off_3);
    net.n(1).transfer_leadership(3).unwrap();
    let out = net.drain(1);
    net.settle(out, cut_off_3);
    let ticks = Config::new(1, vec![1, 2, 3], 1).election_ticks;
    for _ in 1..ticks {
        net.tick(1, cut_off_3);
        assert_eq!(net.n(1).propose(b"b".to_vec()), Err(Refused::Transferring));
    }
    net.tick(1, cut_off_3);
    assert_eq!(net.n(1).role(), Role::Leader, "node 2 keeps it in power");
    assert!(
        net.n(1).propose(b"b".to_vec()).is_ok(),
        "the transfer was abandoned"
    );
}

/// Diss. 6.2 / 9.6: a follower that heard from its leader within the election timeout ignores
/// an ordinary vote request of a higher term (it neither answers nor raises its term); a
/// transfer vote (diss. 3.10) is honoured; and once the leader falls silent for an election
/// timeout an ordinary vote is honoured too.
#[test]
fn an_ordinary_vote_is_ignored_while_the_leader_is_live() {
    let vote = |net: &mut Net, voter: u64, transfer: bool| {
        let n3 = net.n(3);
        let (last_index, term) = (n3.last_index(), n3.term());
        let last_term = n3.term_of(last_index).unwrap();
        Message {
            from: 3,
            to: voter,
            term: term + 1,
            kind: MessageKind::Vote {
                last_index,
                last_term,
                transfer,
            },
        }
    };

    let mut net = Net::new(&[1, 2, 3], &[], 0, |_| {});
    net.elect(1, all);
    let term = net.n(2).term();
    let m = vote(&mut net, 2, false);
    let out = net.deliver(vec![m]);
    assert!(out.is_empty(), "answered {out:?}");
    assert_eq!(net.n(2).term(), term);
    assert_eq!(net.n(2).leader(), Some(1));

    let m = vote(&mut net, 2, true);
    let out = net.deliver(vec![m]);
    assert_eq!(
        out,
        vec![Message {
            from: 2,
            to: 3,
            term: term + 1,
            kind: MessageKind::VoteResp { reject: false },
        }]
    );
    assert_eq!(net.n(2).term(), term + 1);

    // The same ordinary vote, once the follower has not heard the leader for an election
    // timeout, is granted.
    let mut net = Net::new(&[1, 2, 3], &[], 0, |_| {});
    net.elect(1, all);
    let term = net.n(2).term();
    for _ in 0..10 {
        net.n(2).tick();
        drain(net.n(2));
    }
    let m = vote(&mut net, 2, false);
    let out = net.deliver(vec![m]);
    assert!(matches!(
        out.as_slice(),
        [Message {
            to: 3,
            kind: MessageKind::VoteResp { reject: false },
            ..
        }]
    ));
    assert_eq!(net.n(2).term(), term + 1);
}

// ---------------------------------------------------------------------------------------------
// 6. ReadIndex
// ---------------------------------------------------------------------------------------------

fn read_round(m: &Message) -> Option<u64> {
    match m.kind {
        MessageKind::Append { read, .. } | MessageKind::AppendResp { read, .. } => Some(read),
        _ => None,
    }
}

/// Diss. 6.4: the leader records its commit index as the read index and serves the read only
/// after a majority answered a heartbeat sent after the read arrived; an answer to an earlier
/// heartbeat (an earlier read round) does not count.
#[test]
fn a_read_waits_for_a_quorum_round_started_after_it() {
    let mut net = Net::new(&[1, 2, 3], &[], 0, |_| {});
    net.elect(1, all);
    let commit = net.n(1).commit();

    net.n(1).read_index(1).unwrap();
    let round1 = net.drain(1);
    assert!(net.take_reads(1).is_empty(), "served with no quorum round");
    let r1 = read_round(&to(&round1, 2)[0]).unwrap();
    assert!(r1 > 0);
    let answers2 = net.deliver(to(&round1, 2));
    let answers3 = net.deliver(to(&round1, 3));
    assert_eq!(
        read_round(&answers2[0]),
        Some(r1),
        "the answer echoes the round"
    );

    // Node 2 answers round 1: with the leader, a majority; read 1 is served.
    net.deliver(answers2);
    assert_eq!(
        net.take_reads(1),
        vec![ReadState {
            ctx: 1,
            index: commit
        }]
    );

    // Read 2 arrives; node 3's answer to round 1 arrives after it and must not serve it.
    net.n(1).read_index(2).unwrap();
    let round2 = net.drain(1);
    net.deliver(answers3);
    assert!(
        net.take_reads(1).is_empty(),
        "served by an answer to a heartbeat sent before the read"
    );
    let r2 = read_round(&to(&round2, 2)[0]).unwrap();
    assert!(r2 > r1);

    let answers = net.deliver(to(&round2, 2));
    net.deliver(answers);
    assert_eq!(
        net.take_reads(1),
        vec![ReadState {
            ctx: 2,
            index: commit
        }]
    );
}

/// Diss. 6.4: a new leader's commit index may lag what an earlier leader committed, so it hands
/// out no read index until its own no-op commits. Here every log holds index 2 of term 1,
/// which nodes 2 and 3 know committed and the new leader does not: a read index of 1 would be
/// stale.
#[test]
fn a_new_leader_hands_out_no_read_index_before_its_no_op_commits() {
    let mut net = Net::with_storage(
        &[1, 2, 3],
        &[],
        |_| {},
        |id| {
            let mut s = MemStorage::default();
            s.append(&[entry(1, 1), entry(2, 1)]);
            s.set_hard_state(HardState {
                term: 1,
                vote: None,
                commit: if id == 1 { 1 } else { 2 },
            });
            s
        },
    );
    net.elect(1, |m| !matches!(m.kind, MessageKind::Append { .. }));
    assert_eq!((net.n(1).term(), net.n(1).commit()), (2, 1));
    net.n(1).read_index(9).unwrap();
    let out = net.drain(1);
    assert!(net.take_reads(1).is_empty());
    assert!(
        out.iter().all(|m| read_round(m).unwrap_or(0) == 0),
        "no read round starts before the no-op commits: {out:?}"
    );
    // Node 2 answers a heartbeat sent after the read arrived: with the leader that is a
    // quorum, but no round has started, since the no-op (index 3) is not committed.
    net.n(1).tick();
    let out = net.drain(1);
    let answers = net.deliver(to(&out, 2));
    assert!(matches!(
        answers.as_slice(),
        [Message {
            to: 1,
            kind: MessageKind::AppendResp { reject: false, .. },
            ..
        }]
    ));
    net.deliver(answers);
    assert_eq!(net.n(1).commit(), 1);
    assert!(net.take_reads(1).is_empty(), "a read index below the no-op");

    net.tick(1, all);
    assert_eq!(net.n(1).commit(), 3);
    assert_eq!(net.take_reads(1), vec![ReadState { ctx: 9, index: 3 }]);
}

/// Diss. 6.4: a follower forwards a read to its leader (`ReadIndex`), the leader confirms it
/// with a quorum round and answers with `ReadIndexResp`, and the follower hands it out in
/// `Ready.reads`. A follower that knows no leader refuses.
#[test]
fn a_follower_read_goes_through_the_leader() {
    let mut net = Net::new(&[1, 2, 3], &[], 0, |_| {});
    net.elect(1, all);
    let (term, commit) = (net.n(1).term(), net.n(1).commit());

    net.n(2).read_index(42).unwrap();
    let out = net.drain(2);
    assert_eq!(
        out,
        vec![Message {
            from: 2,
            to: 1,
            term,
            kind: MessageKind::ReadIndex { ctx: 42 },
        }]
    );
    assert!(net.take_reads(2).is_empty());

    // The leader starts a round (heartbeats to 2 and 3); node 3 answers it.
    let round = net.deliver(out);
    assert!(
        !round
            .iter()
            .any(|m| matches!(m.kind, MessageKind::ReadIndexResp { .. })),
        "answered before the quorum round"
    );
    let answers = net.deliver(to(&round, 3));
    let resp = net.deliver(answers);
    let resp: Vec<Message> = resp
        .into_iter()
        .filter(|m| matches!(m.kind, MessageKind::ReadIndexResp { .. }))
        .collect();
    assert_eq!(
        resp,
        vec![Message {
            from: 1,
            to: 2,
            term,
            kind: MessageKind::ReadIndexResp {
                ctx: 42,
                index: commit
            },
        }]
    );
    assert!(
        net.take_reads(1).is_empty(),
        "the leader serves it remotely"
    );

    net.deliver(resp);
    assert_eq!(
        net.take_reads(2),
        vec![ReadState {
            ctx: 42,
            index: commit
        }]
    );

    let mut lone = node(2, &[], 0, 0);
    assert_eq!(lone.read_index(1), Err(Refused::NotLeader(None)));
}

/// Diss. 6.4 with 6.2: a leader that hears from no follower serves no read (another leader may
/// exist); check-quorum deposes it, the pending read is dropped, and answers that arrive after
/// that serve nothing.
#[test]
fn a_leader_cut_off_from_its_followers_never_serves_a_read() {
    let mut net = Net::new(&[1, 2, 3], &[], 0, |_| {});
    net.elect(1, all);
    net.n(1).read_index(5).unwrap();
    let round = net.drain(1);
    assert!(net.take_reads(1).is_empty());
    // Everything node 1 sends is lost.
    for _ in 0..40 {
        net.n(1).tick();
        net.drain(1);
        assert!(net.take_reads(1).is_empty(), "served a read alone");
        if net.n(1).role() != Role::Leader {
            break;
        }
    }
    assert_eq!(net.n(1).role(), Role::Follower, "check-quorum deposed it");

    // The round's heartbeats arrive late; their answers find a follower.
    let answers = net.deliver(round);
    assert!(answers.iter().any(|m| read_round(m).unwrap_or(0) > 0));
    let out = net.deliver(answers);
    assert!(net.take_reads(1).is_empty());
    assert!(!out
        .iter()
        .any(|m| matches!(m.kind, MessageKind::ReadIndexResp { .. })));
}

// ---------------------------------------------------------------------------------------------
// 7. Segment shipping
// ---------------------------------------------------------------------------------------------

/// Voters {1, 2, 3} with 4-entry segments; node 1 leads and, with node 2, commits a no-op,
/// `before` (run on the leader once its no-op is committed) and `count` entries of `size`
/// bytes, while node 3 is cut off and holds nothing.
fn behind(
    tune: impl Fn(&mut Config),
    before: impl FnOnce(&mut Net),
    count: usize,
    size: usize,
) -> Net {
    let mut net = Net::new(&[1, 2, 3], &[], 4, tune);
    let cut3 = |m: &Message| m.to != 3 && m.from != 3;
    net.elect(1, cut3);
    before(&mut net);
    for k in 0..count {
        net.n(1).propose(vec![k as u8; size]).unwrap();
        let out = net.drain(1);
        net.settle(out, cut3);
    }
    assert_eq!(net.n(1).commit(), net.n(1).last_index());
    assert_eq!(net.n(3).last_index(), 0);
    net
}

/// Node 3 comes back: a heartbeat reaches it and it answers (it holds nothing). Returns what
/// the leader sends to node 3 next.
fn heal_3(net: &mut Net) -> Vec<Message> {
    net.n(1).tick();
    let out = net.drain(1);
    let answers = net.deliver(to(&out, 3));
    assert!(matches!(
        answers.as_slice(),
        [Message {
            kind: MessageKind::AppendResp {
                reject: false,
                index: 0,
                ..
            },
            ..
        }]
    ));
    to(&net.deliver(answers), 3)
}

fn ship_config(c: &mut Config) {
    c.ship_lag_min = 4;
    c.chunk_bytes = 30;
    c.chunks_in_flight = 2;
}

/// Quiver's snapshots (paper 7 / diss. 5, InstallSnapshot, in sealed-segment form): a
/// follower far behind at the start of a sealed segment is sent the segment in chunks instead
/// of entries, segment after segment while it stays far behind, then entries; once a segment
/// is installed its log equals the leader's up to the segment's last index, and a membership
/// inside the segment is in effect.
#[test]
fn a_far_behind_follower_is_sent_segments_instead_of_entries() {
    // Index 1: no-op; 2: AddLearner(9) (node 9 never runs); 3..=13: data. Sealed segments:
    // 1..=4, 5..=8, 9..=12.
    let mut net = behind(
        ship_config,
        |net| {
            net.n(1)
                .propose_membership(MembershipChange::AddLearner(9))
                .unwrap();
            let out = net.drain(1);
            net.settle(out, |m| m.to != 3 && m.from != 3);
        },
        11,
        10,
    );
    let last = net.n(1).last_index();
    assert_eq!(last, 13);

    let mut out = heal_3(&mut net);
    assert!(net.n(1).is_shipping_to(3));
    assert_eq!(chunks_to(&out, 3), vec![(1, 0), (1, 30)]);
    assert!(appended_to(&out, 3).is_empty(), "entries sent: {out:?}");

    // Chunks of segment 1..=4 go back and forth until node 3 installs it.
    for _ in 0..20 {
        let answers = net.deliver(to(&out, 3));
        if net.n(3).storage().last_index() > 0 {
            break;
        }
        assert!(appended_to(&out, 3).is_empty());
        out = net.deliver(answers);
    }
    assert_eq!(
        net.n(3).storage().last_index(),
        4,
        "segment 1..=4 installed"
    );
    assert!(
        net.same_log(3, 1, 4),
        "node 3's log is the leader's up to 4"
    );
    assert!(
        net.n(3).membership().learners.contains(&9),
        "the segment's membership is in effect"
    );

    // The rest: segments 5..=8 and 9..=12, then entry 13 as an append.
    let mut entries_sent = Vec::new();
    for _ in 0..20 {
        net.tick(1, |m| {
            entries_sent.extend(appended_to(std::slice::from_ref(m), 3));
            true
        });
        if net.n(3).last_index() == last && net.n(3).commit() == last {
            break;
        }
    }
    assert!(net.same_log(3, 1, last));
    assert_eq!(net.n(3).commit(), last);
    assert!(
        entries_sent.iter().all(|&i| i == 13),
        "only entries after the last sealed segment go as entries: {entries_sent:?}"
    );
    assert!(!entries_sent.is_empty());
    assert!(!net.n(1).is_shipping_to(3));
}

/// Segment shipping, off a boundary: a follower far behind in the middle of a segment is sent
/// entries only up to the next sealed segment, then that segment and the following ones whole,
/// then entries again past the last sealed segment.
#[test]
fn a_far_behind_follower_off_a_boundary_gets_entries_up_to_the_next_segment() {
    // Node 3 holds the no-op (index 1), then misses 2..=13. Sealed: 1..=4, 5..=8, 9..=12.
    let mut net = Net::new(&[1, 2, 3], &[], 4, ship_config);
    net.elect(1, all);
    assert_eq!(net.n(3).last_index(), 1);
    for k in 0..12u8 {
        net.n(1).propose(vec![k; 10]).unwrap();
        let out = net.drain(1);
        net.settle(out, |m| m.to != 3 && m.from != 3);
    }
    let last = net.n(1).last_index();
    assert_eq!((last, net.n(1).commit()), (13, 13));

    let (mut entries_sent, mut shipped) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        net.tick(1, |m| {
            let one = std::slice::from_ref(m);
            entries_sent.extend(appended_to(one, 3));
            for (first, offset) in chunks_to(one, 3) {
                if offset == 0 && !shipped.contains(&first) {
                    shipped.push(first);
                }
            }
            true
        });
        if net.n(3).commit() == last {
            break;
        }
    }
    assert!(net.same_log(3, 1, last));
    entries_sent.sort_unstable();
    entries_sent.dedup();
    assert_eq!(
        entries_sent,
        vec![2, 3, 4, 13],
        "entries only around the segments"
    );
    assert_eq!(
        shipped,
        vec![5, 9],
        "segments 5..=8 and 9..=12 shipped whole"
    );
}

/// Segment shipping, resumption: a follower that receives a chunk past what it has persisted
/// (one was lost) refuses it with `SegmentResp { reject: true }` and the offset it holds, and
/// the leader resends from that offset rather than from the start.
#[test]
fn a_lost_chunk_is_refused_and_resent_from_the_acknowledged_offset() {
    // Segment 1..=4: a no-op and 3 entries of 10 bytes, 114 bytes: chunks at 0, 30, 60, 90.
    let mut net = behind(ship_config, |_| {}, 9, 10);
    let out = heal_3(&mut net);
    assert_eq!(chunks_to(&out, 3), vec![(1, 0), (1, 30)]);
    let segment = |msgs: &[Message], offset: u64| {
        msgs.iter()
            .find(|m| matches!(m.kind, MessageKind::Segment { offset: o, .. } if o == offset))
            .cloned()
            .unwrap()
    };
    // Chunk 30 will be lost.
    let c0 = segment(&out, 0);

    // Chunk 0 arrives and is acknowledged: the leader sends chunk 60.
    let ack = net.deliver(vec![c0]);
    assert!(matches!(
        ack[0].kind,
        MessageKind::SegmentResp {
            first: 1,
            received: 30,
            reject: false
        }
    ));
    let out = net.deliver(ack);
    assert_eq!(chunks_to(&out, 3), vec![(1, 60)]);

    // Chunk 30 is lost; chunk 60 arrives and is refused: node 3 holds 30 bytes.
    let refusal = net.deliver(to(&out, 3));
    assert_eq!(
        refusal,
        vec![Message {
            from: 3,
            to: 1,
            term: net.n(1).term(),
            kind: MessageKind::SegmentResp {
                first: 1,
                received: 30,
                reject: true
            },
        }]
    );
    assert_eq!(net.n(3).storage().last_index(), 0, "nothing installed");

    // The leader resends from 30, not from 0.
    let out = net.deliver(refusal);
    assert_eq!(chunks_to(&out, 3), vec![(1, 30), (1, 60)]);

    net.settle(out, all);
    for _ in 0..10 {
        net.tick(1, all);
    }
    let last = net.n(1).last_index();
    assert!(net.same_log(3, 1, last));
}

/// Segment shipping and log matching (paper 5.3): a follower whose entry at the segment's
/// last index already has the segment's last term holds the whole segment, so it answers with
/// an accepting `AppendResp` at the last index and persists no chunk. A follower lacking it
/// would take the chunk.
#[test]
fn a_follower_that_already_holds_the_segment_accepts_without_installing() {
    let chunk = Message {
        from: 1,
        to: 2,
        term: 1,
        kind: MessageKind::Segment {
            first: 1,
            last: 4,
            last_term: 1,
            prev_term: 0,
            offset: 0,
            data: b"not looked at".to_vec(),
            done: true,
        },
    };
    let log: Vec<Entry> = (1..=4).map(|i| entry(i, 1)).collect();
    let mut n2 = node(2, &log, 1, 0);
    n2.step(chunk.clone());
    let ready = n2.ready();
    assert!(
        ready.chunks.is_empty(),
        "installed again: {:?}",
        ready.chunks
    );
    assert!(ready.entries.is_empty());
    assert_eq!(
        ready.messages,
        vec![Message {
            from: 2,
            to: 1,
            term: 1,
            kind: MessageKind::AppendResp {
                reject: false,
                index: 4,
                hint: 0,
                hint_term: 0,
                read: 0
            },
        }]
    );
    n2.advance(ready);
    assert_eq!(n2.storage().entries(1, 5, usize::MAX), log);

    // Holding only 1..=2, the chunk is taken for persisting.
    let mut short = node(2, &log[..2], 1, 0);
    short.step(chunk);
    let ready = short.ready();
    assert_eq!(ready.chunks.len(), 1);
}

/// Segment shipping: every chunk a follower answers counts as a sign of life for check-quorum
/// (diss. 6.2). Node 2 is down; the leader's quorum is itself and node 3, which receives a
/// long segment and answers only with `SegmentResp` (its heartbeat answers are lost). The
/// leader stays in power through three check-quorum rounds; when the chunk answers are lost
/// as well, it steps down.
#[test]
fn chunk_answers_keep_a_shipping_leader_in_power() {
    let run = |answer_chunks: bool| -> (Role, u64) {
        // Tiny chunks, one in flight: segment 1..=4 (21 + 3 × 41 = 144 bytes) takes 36.
        let mut net = behind(
            |c| {
                c.ship_lag_min = 4;
                c.chunk_bytes = 4;
                c.chunks_in_flight = 1;
            },
            |_| {},
            8,
            20,
        );
        let mut out = heal_3(&mut net);
        assert!(net.n(1).is_shipping_to(3));
        let mut answered = 0;
        for _ in 0..30 {
            net.n(1).tick();
            out.extend(net.drain(1));
            // Only chunks reach node 3; node 2 is down.
            let chunks: Vec<Message> = out
                .drain(..)
                .filter(|m| m.to == 3 && matches!(m.kind, MessageKind::Segment { .. }))
                .collect();
            let answers = net.deliver(chunks);
            assert!(answers
                .iter()
                .all(|m| matches!(m.kind, MessageKind::SegmentResp { .. })));
            if answer_chunks {
                answered += answers.len() as u64;
                out = net.deliver(answers);
            }
            if net.n(1).role() != Role::Leader {
                break;
            }
        }
        assert_eq!(
            net.n(3).storage().last_index(),
            0,
            "the segment is still on its way"
        );
        (net.n(1).role(), answered)
    };

    let (role, answered) = run(true);
    assert_eq!(role, Role::Leader, "chunk answers kept the leader in power");
    assert!(answered >= 25);
    let (role, _) = run(false);
    assert_eq!(role, Role::Follower, "without them check-quorum deposes it");
}

// ---------------------------------------------------------------------------------------------
// 8. Backpressure
// ---------------------------------------------------------------------------------------------

/// Flow control (diss. 10.2.1's guidance on bounding a leader's memory): once proposed,
/// uncommitted data would exceed `uncommitted_bytes_max`, proposals are refused with
/// `Backpressure` (changing nothing) until entries commit.
#[test]
fn proposals_are_refused_while_too_much_is_uncommitted() {
    let mut net = Net::new(&[1, 2, 3], &[], 0, |c| c.uncommitted_bytes_max = 10);
    net.elect(1, all);
    net.n(1).propose(vec![1; 6]).unwrap();
    net.n(1).propose(vec![2; 4]).unwrap();
    let last = net.n(1).last_index();
    assert_eq!(net.n(1).propose(vec![3; 1]), Err(Refused::Backpressure));
    assert_eq!(
        net.n(1).last_index(),
        last,
        "a refused proposal appends nothing"
    );

    let out = net.drain(1);
    net.settle(out, all);
    assert_eq!(net.n(1).commit(), last);
    let index = net
        .n(1)
        .propose(vec![3; 6])
        .expect("room again after commit");
    assert_eq!(index, last + 1);
}

// ---------------------------------------------------------------------------------------------
// 9. In-flight bytes
// ---------------------------------------------------------------------------------------------

/// Pipelined replication (diss. 10.2.1): the leader stops sending appends to a follower
/// whose unacknowledged entry data reaches `in_flight_bytes_max` (heartbeats still go, with no
/// entries), and resumes once acknowledgements free room.
#[test]
fn appends_stop_at_the_in_flight_byte_bound_and_resume_on_acknowledgement() {
    let mut net = Net::new(&[1, 2, 3], &[], 0, |c| c.in_flight_bytes_max = 10);
    net.elect(1, all);
    let mut sent = Vec::new();
    let mut indexes = Vec::new();
    for k in 0..4u8 {
        indexes.push(net.n(1).propose(vec![k; 4]).unwrap());
        let out = net.drain(1);
        sent.push(to(&out, 2));
    }
    // 4 + 4 + 4 = 12 bytes reach the bound of 10: the fourth entry is held back.
    for (msgs, index) in sent.iter().zip(&indexes).take(3) {
        assert_eq!(appended_to(msgs, 2), vec![*index]);
    }
    assert!(sent[3].is_empty(), "sent past the bound: {:?}", sent[3]);

    // A heartbeat still goes, carrying no entries.
    net.n(1).tick();
    let beat = to(&net.drain(1), 2);
    assert_eq!(beat.len(), 1);
    assert!(matches!(&beat[0].kind, MessageKind::Append { entries, .. } if entries.is_empty()));

    // Node 2 acknowledges the first append: 8 bytes in flight, the fourth entry goes.
    let ack = net.deliver(sent[0].clone());
    let out = net.deliver(ack);
    assert_eq!(appended_to(&out, 2), vec![indexes[3]]);
}

/// Segment shipping: chunks are joined only to chunks from the same leader in the same term.
/// Another leader's file of the same entries need not hold the same bytes (its own segment
/// boundaries, a scavenge), so a new leader continuing at an offset is refused and starts
/// over, and its first chunk replaces what the old leader had sent.
#[test]
fn chunks_from_another_leader_are_not_joined_to_what_was_received() {
    let mut n3 = node(3, &[], 1, 0);
    let chunk = |from: u64, term: u64, offset: u64| Message {
        from,
        to: 3,
        term,
        kind: MessageKind::Segment {
            first: 1,
            last: 4,
            last_term: 1,
            prev_term: 0,
            offset,
            data: vec![7; 10],
            done: false,
        },
    };
    let answer = |msgs: Vec<Message>| match msgs.last().map(|m| &m.kind) {
        Some(MessageKind::SegmentResp {
            received, reject, ..
        }) => (*received, *reject),
        other => panic!("expected a SegmentResp, got {other:?}"),
    };
    n3.step(chunk(1, 2, 0));
    assert_eq!(
        answer(drain(&mut n3)),
        (10, false),
        "leader 1's first chunk"
    );
    // Node 2 leads term 3 and continues where it believes node 3 is.
    n3.step(chunk(2, 3, 10));
    assert_eq!(
        answer(drain(&mut n3)),
        (0, true),
        "not joined to leader 1's bytes: start over"
    );
    n3.step(chunk(2, 3, 0));
    assert_eq!(answer(drain(&mut n3)), (10, false));
    n3.step(chunk(2, 3, 10));
    assert_eq!(
        answer(drain(&mut n3)),
        (20, false),
        "leader 2's chunks join each other"
    );
}

/// Fast backtracking (paper 5.3): while probing, only the refusal of the outstanding probe
/// moves `next`. A late refusal of an older append (a duplicate, say) would move it away from
/// where the logs diverge, and a network full of them kept a follower from ever catching up.
#[test]
fn a_late_refusal_does_not_move_a_probe() {
    let not_2 = |m: &Message| m.to != 2 && m.from != 2;
    let mut net = Net::new(&[1, 2, 3], &[], 0, |_| {});
    net.elect(1, not_2);
    for k in 0..8u8 {
        net.n(1).propose(vec![k]).unwrap();
    }
    let out = net.drain(1);
    net.settle(out, not_2);
    let term = net.n(1).term();
    // Node 1 probes node 2 from index 1 (its first append, never answered). A refusal of an
    // append after index 5 arrives late.
    net.n(1).step(Message {
        from: 2,
        to: 1,
        term,
        kind: MessageKind::AppendResp {
            reject: true,
            index: 5,
            hint: 5,
            hint_term: 0,
            read: 0,
        },
    });
    let out = net.drain(1);
    assert!(
        !out.iter().any(|m| m.to == 2
            && matches!(m.kind, MessageKind::Append { prev_index, .. } if prev_index > 0)),
        "the probe did not move: {out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Found by `cargo mutants`: rules no other test pinned down
// ---------------------------------------------------------------------------------------------

fn pre_vote(from: u64, term: u64, last_index: u64, last_term: u64) -> Message {
    Message {
        from,
        to: 1,
        term,
        kind: MessageKind::PreVote {
            last_index,
            last_term,
        },
    }
}

/// The answer to a pre-vote in `msgs`: (term, granted).
fn pre_vote_answer(msgs: &[Message], to: u64) -> (u64, bool) {
    msgs.iter()
        .find_map(|m| match m.kind {
            MessageKind::PreVoteResp { reject } if m.to == to => Some((m.term, !reject)),
            _ => None,
        })
        .expect("an answer")
}

/// Diss. 9.6: a pre-vote is granted only for a term beyond the voter's, by a voter that hears
/// no live leader, to a candidate whose log is at least as up to date; each condition alone
/// refuses.
#[test]
fn a_pre_vote_needs_a_later_term_no_live_leader_and_an_up_to_date_log() {
    let mut n = node(1, &[entry(1, 1), entry(2, 2)], 2, 0);
    n.step(pre_vote(2, 3, 2, 2));
    assert_eq!(
        pre_vote_answer(&drain(&mut n), 2),
        (3, true),
        "all three hold"
    );
    n.step(pre_vote(2, 2, 2, 2));
    assert!(!pre_vote_answer(&drain(&mut n), 2).1, "not a later term");
    n.step(pre_vote(3, 3, 1, 1));
    assert!(!pre_vote_answer(&drain(&mut n), 3).1, "a log behind ours");
    n.step(pre_vote(3, 3, 5, 1));
    assert!(
        !pre_vote_answer(&drain(&mut n), 3).1,
        "longer, but of an older term"
    );
    // Node 2 leads term 2: node 1 hears it.
    n.step(Message {
        from: 2,
        to: 1,
        term: 2,
        kind: MessageKind::Append {
            prev_index: 2,
            prev_term: 2,
            entries: Vec::new(),
            commit: 0,
            read: 0,
        },
    });
    drain(&mut n);
    n.step(pre_vote(3, 3, 2, 2));
    assert!(!pre_vote_answer(&drain(&mut n), 3).1, "a live leader");
}

/// Diss. 9.6: a pre-candidate counts only answers to the round it asked (term + 1); a
/// refusal from a node of its own term is one refusal among others, while a refusal from a
/// later term ends the round at once.
#[test]
fn a_pre_candidate_counts_only_its_own_round() {
    let five = |id| {
        RawNode::new(
            Config::new(id, vec![1, 2, 3, 4, 5], id),
            storage_with(&[entry(1, 1)], 2, 1),
        )
    };
    let mut n = five(1);
    while n.role() != Role::PreCandidate {
        n.tick();
    }
    drain(&mut n);
    let answer = |from, term, reject| Message {
        from,
        to: 1,
        term,
        kind: MessageKind::PreVoteResp { reject },
    };
    n.step(answer(2, 2, true));
    assert_eq!(n.role(), Role::PreCandidate, "one refusal of our own term");
    n.step(answer(3, 2, false));
    n.step(answer(4, 2, false));
    assert_eq!(
        n.role(),
        Role::PreCandidate,
        "grants of an earlier round do not count"
    );
    n.step(answer(3, 3, false));
    n.step(answer(4, 3, false));
    assert_eq!(
        (n.role(), n.term()),
        (Role::Candidate, 3),
        "a quorum of this round"
    );

    let mut m = five(1);
    while m.role() != Role::PreCandidate {
        m.tick();
    }
    drain(&mut m);
    m.step(answer(2, 7, true));
    assert_eq!(
        (m.role(), m.term()),
        (Role::Follower, 7),
        "a later term ends it"
    );

    // A follower that asked nothing ignores grants.
    let mut f = five(1);
    f.step(answer(2, 3, false));
    f.step(answer(3, 3, false));
    f.step(answer(4, 3, false));
    assert_eq!(f.role(), Role::Follower);
}

/// Diss. 3.10: leadership goes only to another voter.
#[test]
fn leadership_is_transferred_only_to_another_voter() {
    let mut net = Net::new(&[1, 2, 3], &[4], 0, |_| {});
    net.elect(1, all);
    let invalid = Err(Refused::InvalidChange("the target must be another voter"));
    assert_eq!(net.n(1).transfer_leadership(1), invalid, "itself");
    assert_eq!(net.n(1).transfer_leadership(4), invalid, "a learner");
    assert_eq!(net.n(1).transfer_leadership(9), invalid, "a stranger");
    assert!(net.n(1).propose(b"x".to_vec()).is_ok(), "no transfer began");
}

/// Elects node 1 over `ours` (nodes 1 and 3) and `theirs` (node 2), all with commit index
/// `commit`, and returns node 2's refusals and the first index the leader sent it after them.
fn backtrack(ours: &[Entry], theirs: &[Entry], commit: u64) -> (usize, u64) {
    let mut net = Net::with_storage(
        &[1, 2, 3],
        &[],
        |_| {},
        |id| storage_with(if id == 2 { theirs } else { ours }, 3, commit),
    );
    for _ in 0..100 {
        net.n(1).tick();
        if net.n(1).role() != Role::Follower {
            break;
        }
    }
    let (mut refusals, mut resent_from) = (0, None);
    let out = net.drain(1);
    net.settle(out, |m| {
        match &m.kind {
            MessageKind::AppendResp { reject: true, .. } if m.from == 2 => refusals += 1,
            MessageKind::Append { entries, .. } if m.to == 2 && refusals > 0 => {
                if let (None, Some(e)) = (resent_from, entries.first()) {
                    resent_from = Some(e.index);
                }
            }
            _ => {}
        }
        true
    });
    assert_eq!(net.n(1).role(), Role::Leader);
    let last = net.n(1).last_index();
    assert!(net.same_log(1, 2, last), "node 2 caught up");
    (refusals, resent_from.expect("entries resent"))
}

fn run_of(first: u64, last: u64, term: u64) -> impl Iterator<Item = Entry> {
    (first..=last).map(move |i| entry(i, term))
}

/// Diss. 5.3 with etcd-raft's refinement: a follower whose log holds a long divergent run of
/// an older term is found in one round trip, not one per index: its refusal carries the term
/// at its hint, and the leader skips back to its own last entry of that term, and resends
/// from just after the logs agree (not from the start).
#[test]
fn a_long_divergent_tail_of_an_older_term_is_skipped_at_once() {
    let ours: Vec<Entry> = run_of(1, 9, 1).chain(run_of(10, 100, 3)).collect();
    let theirs: Vec<Entry> = run_of(1, 9, 1).chain(run_of(10, 100, 2)).collect();
    assert_eq!(backtrack(&ours, &theirs, 5), (1, 10));
}

/// The same for a follower whose divergent tail is of a later term than the leader's entries
/// there (a deposed leader's, never committed): the follower's hint skips its own run.
#[test]
fn a_divergent_tail_of_a_later_term_is_skipped_at_once() {
    let ours: Vec<Entry> = run_of(1, 9, 1).chain(run_of(10, 20, 2)).collect();
    let theirs: Vec<Entry> = run_of(1, 9, 1).chain(run_of(10, 30, 3)).collect();
    assert_eq!(backtrack(&ours, &theirs, 5), (1, 10));
}

/// The uncommitted bound never refuses a proposal when nothing is uncommitted: one larger
/// than the bound alone goes through (or it could never be proposed).
#[test]
fn a_proposal_larger_than_the_bound_goes_when_nothing_is_uncommitted() {
    let mut net = Net::new(&[1, 2, 3], &[], 0, |c| c.uncommitted_bytes_max = 10);
    net.elect(1, all);
    let index = net.n(1).propose(vec![1; 25]).expect("alone, it goes");
    assert_eq!(net.n(1).propose(vec![2; 1]), Err(Refused::Backpressure));
    let out = net.drain(1);
    net.settle(out, all);
    assert_eq!(net.n(1).commit(), index);
}

/// Node 3 holds `held` entries (no-op included) of a cluster whose leader then commits up to
/// `last` with node 2 alone (4-entry segments: 1..=4, 5..=8, …). Returns the entries and
/// the segments (by first index) the leader sends node 3 until it has caught up.
fn catch_up(held: u64, last: u64, tune: impl Fn(&mut Config)) -> (Vec<u64>, Vec<u64>) {
    let mut net = Net::new(&[1, 2, 3], &[], 4, tune);
    net.elect(1, all);
    let cut3 = |m: &Message| m.to != 3 && m.from != 3;
    for k in 2..=last {
        net.n(1).propose(vec![k as u8; 10]).unwrap();
        let out = net.drain(1);
        if k <= held {
            net.settle(out, all);
        } else {
            net.settle(out, cut3);
        }
    }
    assert_eq!(net.n(3).last_index(), held);
    assert_eq!(net.n(1).commit(), last);
    let (mut entries, mut segments) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        net.tick(1, |m| {
            let one = std::slice::from_ref(m);
            entries.extend(appended_to(one, 3));
            for (first, offset) in chunks_to(one, 3) {
                if offset == 0 && !segments.contains(&first) {
                    segments.push(first);
                }
            }
            true
        });
        if net.n(3).commit() == last {
            break;
        }
    }
    assert!(net.same_log(3, 1, last), "node 3 caught up");
    entries.sort_unstable();
    entries.dedup();
    (entries, segments)
}

/// Segment shipping starts at `ship_lag_min` entries behind, not before: a follower missing
/// exactly that many at a segment boundary is sent the segment, one missing fewer is sent
/// entries.
#[test]
fn shipping_starts_at_exactly_the_lag_bound() {
    let (entries, segments) = catch_up(4, 8, ship_config);
    assert_eq!((entries, segments), (vec![], vec![5]), "4 behind: shipped");
    let five = |c: &mut Config| {
        ship_config(c);
        c.ship_lag_min = 5;
    };
    let (entries, segments) = catch_up(4, 8, five);
    assert_eq!(
        (entries, segments),
        (vec![5, 6, 7, 8], vec![]),
        "4 behind with a bound of 5: entries, though 5..=8 is sealed"
    );
}

/// Paper 5.3: an append whose entries do not follow `prev_index` one by one is not something
/// a leader sends; it is ignored whole (no answer, nothing taken), as is one carrying a
/// membership that does not decode.
#[test]
fn a_malformed_append_is_ignored_whole() {
    let mut n = node(2, &[entry(1, 1)], 1, 0);
    let append = |entries: Vec<Entry>| Message {
        from: 1,
        to: 2,
        term: 1,
        kind: MessageKind::Append {
            prev_index: 1,
            prev_term: 1,
            entries,
            commit: 0,
            read: 0,
        },
    };
    n.step(append(vec![entry(2, 1), entry(4, 1)]));
    assert_eq!(n.last_index(), 1, "a gap");
    assert!(
        !drain(&mut n)
            .iter()
            .any(|m| matches!(m.kind, MessageKind::AppendResp { .. })),
        "no answer"
    );
    let mut bad = membership_entry(3, 1, &[1, 2, 3], &[]);
    bad.data.truncate(3);
    n.step(append(vec![entry(2, 1), bad]));
    assert_eq!(n.last_index(), 1, "an undecodable membership");
    n.step(append(vec![entry(2, 1), entry(3, 1)]));
    assert_eq!(n.last_index(), 3, "a well-formed one is taken");
}

/// Diss. 4.1: a truncation reverts only the memberships it removes; one before the cut stays
/// in effect.
#[test]
fn a_truncation_keeps_the_memberships_before_it() {
    let log = vec![
        entry(1, 1),
        membership_entry(2, 1, &[1, 2, 3], &[4]),
        entry(3, 1),
        entry(4, 1),
    ];
    let mut n2 = node(2, &log, 1, 2);
    assert!(n2.membership().learners.contains(&4));
    // Leader 3 of term 2 replaces entries 3 and 4.
    n2.step(Message {
        from: 3,
        to: 2,
        term: 2,
        kind: MessageKind::Append {
            prev_index: 2,
            prev_term: 1,
            entries: vec![entry(3, 2)],
            commit: 2,
            read: 0,
        },
    });
    assert_eq!(n2.term_of(3), Some(2));
    assert!(
        n2.membership().learners.contains(&4),
        "the membership at 2 is still in the log"
    );
    drain(&mut n2);
    assert!(n2.membership().learners.contains(&4));
}

/// Pipelining (diss. 10.2.1): the window holds exactly `in_flight_max` appends, and exactly
/// `in_flight_bytes_max` bytes of entry data; the next one waits.
#[test]
fn the_window_holds_exactly_its_bounds() {
    let count_of_appends = |tune: fn(&mut Config), size: usize| {
        let mut net = Net::new(&[1, 2, 3], &[], 0, tune);
        net.elect(1, all);
        let mut sent = 0;
        for k in 0..5u8 {
            net.n(1).propose(vec![k; size]).unwrap();
            sent += appended_to(&net.drain(1), 2).len();
        }
        sent
    };
    assert_eq!(
        count_of_appends(|c| c.in_flight_max = 2, 1),
        2,
        "two appends"
    );
    assert_eq!(
        count_of_appends(|c| c.in_flight_bytes_max = 10, 5),
        2,
        "5 + 5 bytes fill a window of 10"
    );
}

/// Segment shipping with pipelined persistence: from the moment a segment's last chunk is
/// taken until it is persisted, the follower's view of its log lacks the segment (it was cut
/// at the segment's first index), so messages are held and answered once it is installed.
/// Here the follower's commit index (2) lies inside the segment: a heartbeat stepped in that
/// window used to find its commit index missing from the log and panic.
#[test]
fn messages_wait_while_a_segment_is_installed() {
    let log: Vec<Entry> = (1..=4).map(|i| entry(i, 1)).collect();
    let mut leader_disk = storage_with(&log, 1, 4);
    leader_disk.segment_entries = 4;
    let meta = leader_disk.segment_from(1).expect("1..=4 is sealed");
    let bytes = leader_disk.segment_bytes(1, 0, usize::MAX);
    let from_1 = |kind| Message {
        from: 1,
        to: 2,
        term: 1,
        kind,
    };
    let mut n2 = RawNode::new(Config::new(2, vec![1, 2, 3], 2), MemStorage::default());
    n2.step(from_1(MessageKind::Append {
        prev_index: 0,
        prev_term: 0,
        entries: log[..2].to_vec(),
        commit: 2,
        read: 0,
    }));
    n2.step(from_1(MessageKind::Segment {
        first: 1,
        last: meta.last,
        last_term: meta.last_term,
        prev_term: 0,
        offset: 0,
        data: bytes,
        done: true,
    }));
    let heartbeat = MessageKind::Append {
        prev_index: 0,
        prev_term: 0,
        entries: Vec::new(),
        commit: 4,
        read: 7,
    };
    n2.step(from_1(heartbeat));
    let out = drain(&mut n2);
    assert_eq!(n2.storage().entries(1, 5, usize::MAX), log, "installed");
    assert_eq!(n2.last_index(), 4);
    assert!(
        out.iter().any(|m| matches!(
            m.kind,
            MessageKind::AppendResp {
                reject: false,
                read: 7,
                ..
            }
        )),
        "the heartbeat was answered: {out:?}"
    );
}

/// A follower that is merely behind, its log a prefix of the leader's, is resent exactly what
/// it lacks: its hint is its last index, not the start of its last term's run.
#[test]
fn a_follower_behind_is_resent_only_what_it_lacks() {
    let ours: Vec<Entry> = run_of(1, 20, 2).collect();
    let theirs: Vec<Entry> = run_of(1, 12, 2).collect();
    assert_eq!(backtrack(&ours, &theirs, 5), (1, 13));
}

/// Segment shipping, like an append: a segment is taken only if it follows this node's log
/// (the entry before it has `prev_term`), and one that is not well formed (first index 0,
/// or a last index before its first) is refused; nothing is persisted either way.
#[test]
fn a_segment_that_does_not_follow_the_log_is_refused() {
    let chunk = |first, last, prev_term| Message {
        from: 1,
        to: 2,
        term: 1,
        kind: MessageKind::Segment {
            first,
            last,
            last_term: 1,
            prev_term,
            offset: 0,
            data: b"never looked at".to_vec(),
            done: true,
        },
    };
    for (first, last, prev_term, why) in [
        (3, 6, 2, "the entry before it is of another term"),
        (5, 8, 1, "the entry before it is missing"),
        (0, 4, 0, "first index 0"),
        (5, 4, 1, "last before first"),
    ] {
        let mut n2 = node(2, &[entry(1, 1), entry(2, 1)], 1, 1);
        n2.step(chunk(first, last, prev_term));
        let ready = n2.ready();
        assert!(ready.chunks.is_empty(), "{why}: taken");
        assert!(
            ready
                .messages
                .iter()
                .all(|m| matches!(m.kind, MessageKind::AppendResp { reject: true, .. })),
            "{why}: {:?}",
            ready.messages
        );
        assert_eq!(ready.messages.len(), 1, "{why}: answered once");
        n2.advance(ready);
    }
    // A segment of one entry that follows the log is taken.
    let log: Vec<Entry> = (1..=3).map(|i| entry(i, 1)).collect();
    let mut leader_disk = storage_with(&log, 1, 3);
    leader_disk.segment_entries = 1;
    let mut n2 = node(2, &log[..2], 1, 1);
    let mut one = chunk(3, 3, 1);
    if let MessageKind::Segment { data, .. } = &mut one.kind {
        *data = leader_disk.segment_bytes(3, 0, usize::MAX);
    }
    n2.step(one);
    drain(&mut n2);
    assert_eq!(n2.storage().entries(1, 4, usize::MAX), log, "installed");
}
