//! Membership changes, one server at a time (diss. 4.1): a configuration takes effect once
//! it is in the log (committed or not) and is reverted if truncated; a leader proposes one
//! only after committing an entry of its own term, and only when no earlier change is
//! uncommitted (Ongaro's 2015 correction); a learner is promoted only once caught up.

use super::{RawNode, Refused, Role};
use crate::message::{EntryKind, Membership, MembershipChange, NodeId};
use crate::progress::Progress;
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    /// Rebuilds the memberships from the persisted log and the unstable tail.
    pub(super) fn reload_confs(&mut self) {
        self.confs.truncate(1);
        self.confs.extend(self.storage.memberships());
        let first_unstable = self.unstable.first().map_or(u64::MAX, |e| e.index);
        self.confs.retain(|(i, _)| *i < first_unstable);
        for e in &self.unstable {
            if e.kind == EntryKind::Membership {
                let m = Membership::decode(&e.data).expect("checked when it arrived");
                self.confs.push((e.index, m));
            }
        }
    }

    /// A leader keeps one progress per member, and none for anyone else.
    pub(super) fn sync_progress(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let members: Vec<NodeId> = self.membership().members().collect();
        self.progress.retain(|n, _| members.contains(n));
        let (last, persisted, id) = (self.last_index(), self.persisted_last(), self.config.id);
        for n in members {
            self.progress.entry(n).or_insert_with(|| {
                let mut p = Progress::new(last);
                if n == id {
                    // The leader's own match follows what it has persisted (see `advance`).
                    p.accepted(persisted);
                }
                p
            });
        }
        // A transfer's target stays a voter: while one runs, every proposal (membership
        // changes too) is refused, and a leader's memberships change only by its proposals.
    }

    /// Proposes one membership change. It takes effect as soon as it is in the log; the
    /// next may be proposed once it is committed.
    pub fn propose_membership(&mut self, change: MembershipChange) -> Result<u64, Refused> {
        self.may_propose()?;
        if !self.committed_in_term() {
            return Err(Refused::NotReady);
        }
        if self.confs.last().is_some_and(|(i, _)| *i > self.commit) {
            return Err(Refused::ChangePending);
        }
        let next = self
            .membership()
            .apply(change)
            .map_err(Refused::InvalidChange)?;
        if let MembershipChange::Promote(id) = change {
            if self
                .progress
                .get(&id)
                .is_none_or(|p| p.matched < self.commit)
            {
                return Err(Refused::NotCaughtUp);
            }
        }
        let index = self.append_local(EntryKind::Membership, next.encode().into());
        self.broadcast_due = true;
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use crate::message::{Entry, EntryKind, Membership};
    use crate::storage::MemStorage;
    use crate::{Config, RawNode};

    /// A persisted membership that the unstable tail replaces is not in effect: the log
    /// being written no longer holds it.
    #[test]
    fn a_membership_being_replaced_is_not_in_effect() {
        let wider = Membership {
            voters: [1, 2, 3, 4].into_iter().collect(),
            ..Membership::default()
        };
        let mut storage = MemStorage::default();
        storage.append(&[
            Entry::normal(1, 1, b"a".to_vec()),
            Entry {
                index: 2,
                term: 1,
                kind: EntryKind::Membership,
                data: wider.encode().into(),
            },
        ]);
        let mut n = RawNode::new(Config::new(1, vec![1, 2, 3], 1), storage);
        assert_eq!(n.membership(), &wider);
        n.unstable = vec![Entry::normal(2, 2, b"b".to_vec())];
        n.reload_confs();
        let voters: Vec<u64> = n.membership().voters.iter().copied().collect();
        assert_eq!(voters, vec![1, 2, 3], "back to the bootstrap");
    }
}
