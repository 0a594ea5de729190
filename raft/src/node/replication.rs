//! Replication and commitment: proposals, appends paced per follower, their answers, and
//! the commit index.
//!
//! - an append whose entries already match is never a reason to truncate; only a term
//!   conflict truncates, and never below the commit index (5.3), so reordered or duplicated
//!   appends are harmless;
//! - a leader counts its own entries toward a quorum only once persisted (`advance`);
//! - only entries of the current term are committed by counting replicas (5.4.2, Figure 8);
//! - a refusal hints at the last index whose term is not after the leader's (fast
//!   backtracking); pipelining within a window of appends and bytes (`progress.rs`);
//! - the uncommitted tail is bounded (`Refused::Backpressure`).

use super::{RawNode, Refused, Role};
use crate::message::{Entry, EntryKind, Membership, MessageKind, NodeId};
use crate::progress::{Mode, Shipping};
use crate::quorum;
use crate::storage::Storage;
use bytes::Bytes;

impl<S: Storage> RawNode<S> {
    pub(super) fn append_local(&mut self, kind: EntryKind, data: Bytes) -> u64 {
        let index = self.last_index() + 1;
        self.uncommitted.push_back((index, data.len()));
        self.uncommitted_bytes += data.len();
        if kind == EntryKind::Membership {
            let m = Membership::decode(&data).expect("encoded by this leader");
            self.confs.push((index, m));
        }
        self.unstable.push(Entry {
            index,
            term: self.term,
            kind,
            data,
        });
        if kind == EntryKind::Membership {
            self.sync_progress();
        }
        index
    }

    pub(super) fn may_propose(&self) -> Result<(), Refused> {
        if self.role != Role::Leader {
            return Err(Refused::NotLeader(self.leader));
        }
        if self.transfer.is_some() {
            return Err(Refused::Transferring);
        }
        Ok(())
    }

    /// Appends `data` to the log if this node leads. Returns its index; it is committed once
    /// it appears in a `Ready`'s `committed`. Proposals made between two `ready` calls go
    /// out in the same appends.
    pub fn propose(&mut self, data: impl Into<Bytes>) -> Result<u64, Refused> {
        let data = data.into();
        self.may_propose()?;
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + data.len() > self.config.uncommitted_bytes_max
        {
            return Err(Refused::Backpressure);
        }
        let index = self.append_local(EntryKind::Normal, data);
        self.broadcast_due = true;
        Ok(index)
    }

    pub(super) fn broadcast_append(&mut self, heartbeat: bool) {
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|n| *n != self.config.id)
            .collect();
        for to in peers {
            self.send_append(to, heartbeat);
        }
    }

    /// Sends `to` what it is missing, within its pacing; a heartbeat goes regardless.
    pub(super) fn send_append(&mut self, to: NodeId, heartbeat: bool) {
        let last = self.last_index();
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        if p.mode == Mode::Replicate {
            p.resync();
        }
        let p = self.progress.get(&to).expect("checked above");
        let mut can = p.can_send(self.config.in_flight_max, self.config.in_flight_bytes_max);
        // A follower far behind is sent entries up to the next sealed segment, then that
        // segment and the ones after it whole.
        let mut boundary = None;
        if can && last + 1 >= p.next + self.config.ship_lag_min {
            boundary = self.storage.segment_from(p.next);
        }
        if let Some(meta) = boundary.filter(|m| m.first == p.next) {
            if p.settled() {
                let prev_term = self
                    .term_at(meta.first - 1)
                    .expect("below the commit index");
                let p = self.progress.get_mut(&to).expect("checked above");
                p.ship(Shipping {
                    first: meta.first,
                    last: meta.last,
                    last_term: meta.last_term,
                    prev_term,
                    size: meta.size,
                    sent: 0,
                    acked: 0,
                    stalled: 0,
                });
                can = false;
            } else if p.mode == Mode::Replicate {
                // Appends in flight: wait for their answers, then ship.
                self.progress
                    .get_mut(&to)
                    .expect("checked above")
                    .wait_for_answers();
                can = false;
            }
            // Probing: an empty probe finds out whether the follower holds what precedes.
        }
        if let Some(Mode::Ship(_)) = self.progress.get(&to).map(|p| p.mode) {
            if heartbeat {
                self.progress.get_mut(&to).expect("checked").beat();
            }
            self.send_chunks(to);
        }
        if !can && !heartbeat {
            return;
        }
        let p = self.progress.get(&to).expect("checked above");
        // A heartbeat to a follower with appends in flight carries only what is known to
        // match, so it never races them into a spurious refusal.
        let next = if can {
            p.next.min(last + 1)
        } else {
            p.matched + 1
        };
        let prev_index = next - 1;
        let Some(prev_term) = self.term_at(prev_index) else {
            return;
        };
        let entries = if can {
            let mut hi = (last + 1).min(next + self.config.entries_per_append_max as u64);
            if let Some(meta) = boundary {
                hi = hi.min(meta.first.max(next));
            }
            self.entries(next, hi, self.config.append_bytes_max)
        } else {
            Vec::new()
        };
        // Commit only what the follower is known to hold, so it never applies unmatched.
        let sent_last = prev_index + entries.len() as u64;
        let commit = self.commit.min(sent_last);
        if can {
            let bytes = entries.iter().map(|e| e.data.len()).sum();
            let p = self.progress.get_mut(&to).expect("checked above");
            p.sent(sent_last, bytes);
        }
        let read = self.read_seq;
        self.send(
            to,
            MessageKind::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read,
            },
        );
    }

    /// The refusal hint for an append after (`prev_index`, `prev_term`): the last index whose
    /// term is not after `prev_term`, so the leader skips a whole conflicting term at once,
    /// and the term there, so the leader can skip back over this node's run of that term.
    pub(super) fn refusal_hint(&self, prev_index: u64, prev_term: u64) -> (u64, u64) {
        let mut hint = prev_index.min(self.last_index());
        while hint > self.commit && self.term_at(hint).is_some_and(|t| t > prev_term) {
            hint -= 1;
        }
        (hint, self.term_at(hint).unwrap_or(0))
    }

    /// Where the leader's log could match a follower that refused with (`hint`, `hint_term`):
    /// the leader's last index at or below `hint` whose term is not after `hint_term` (an
    /// entry of a later term there cannot be the follower's), never below `matched`.
    fn match_hint(&self, hint: u64, hint_term: u64, matched: u64) -> u64 {
        let mut i = hint.min(self.last_index());
        while i > matched && self.term_at(i).is_some_and(|t| t > hint_term) {
            i -= 1;
        }
        i
    }

    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit: u64,
        read: u64,
    ) {
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(k, e)| e.index == prev_index + 1 + k as u64);
        let memberships_valid = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Membership)
            .all(|e| Membership::decode(&e.data).is_ok());
        if !contiguous || !memberships_valid {
            // Not something a leader sends: ignore it rather than take any of it.
            return;
        }
        let (mut prev_index, mut prev_term, mut entries) = (prev_index, prev_term, entries);
        if prev_index < self.commit {
            // Up to the commit index the logs match (Raft's invariants): start from there.
            let skip = (self.commit - prev_index).min(entries.len() as u64) as usize;
            entries.drain(..skip);
            prev_index = self.commit;
            prev_term = self
                .term_at(prev_index)
                .expect("the commit index is in the log");
        }
        if self.term_at(prev_index) != Some(prev_term) {
            let (hint, hint_term) = self.refusal_hint(prev_index, prev_term);
            let kind = MessageKind::AppendResp {
                reject: true,
                index: prev_index,
                hint,
                hint_term,
                read,
            };
            return self.send(from, kind);
        }
        let last_new = prev_index + entries.len() as u64;
        for e in entries {
            match self.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    assert!(e.index > self.commit, "a conflict below the commit index");
                    self.truncate_from(e.index);
                    self.push_unstable(e);
                }
                None => self.push_unstable(e),
            }
        }
        if commit > self.commit {
            self.commit = commit.min(last_new);
        }
        let kind = MessageKind::AppendResp {
            reject: false,
            index: last_new,
            hint: 0,
            hint_term: 0,
            read,
        };
        self.send(from, kind);
    }

    pub(super) fn push_unstable(&mut self, e: Entry) {
        if e.kind == EntryKind::Membership {
            let m = Membership::decode(&e.data).expect("checked by handle_append");
            self.confs.push((e.index, m));
        }
        self.unstable.push(e);
    }

    /// Drops entries from `index` on; those already persisted are replaced when the next
    /// `Ready`'s entries (or segment, starting at `index`) are persisted.
    pub(super) fn truncate_from(&mut self, index: u64) {
        self.confs.retain(|(i, _)| *i == 0 || *i < index);
        if let Some(first) = self.unstable.first() {
            if index >= first.index {
                self.unstable.truncate((index - first.index) as usize);
                return;
            }
        }
        // The conflicting suffix is persisted: re-send everything from `index` as unstable.
        self.unstable.clear();
        debug_assert!(index <= self.storage.last_index() + 1);
    }

    pub(super) fn handle_append_resp(
        &mut self,
        from: NodeId,
        reject: bool,
        index: u64,
        (hint, hint_term): (u64, u64),
        read: u64,
    ) {
        let Some(matched) = self.progress.get(&from).map(|p| p.matched) else {
            return;
        };
        let hint = self.match_hint(hint, hint_term, matched);
        let p = self.progress.get_mut(&from).expect("checked above");
        p.read_acked = p.read_acked.max(read);
        if reject {
            if p.refused(index, hint) {
                self.send_append(from, false);
            }
        } else {
            if p.accepted(index) {
                self.maybe_commit();
            } else if let Some(p) = self.progress.get_mut(&from) {
                p.heartbeat_answered(self.config.in_flight_max, self.config.in_flight_bytes_max);
            }
            self.maybe_timeout_now(from);
            // Keep the pipe full.
            if self
                .progress
                .get(&from)
                .is_some_and(|p| p.next <= self.last_index())
            {
                self.send_append(from, false);
            }
        }
        if read > 0 && self.role == Role::Leader {
            self.confirm_reads();
        }
    }

    pub(super) fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut matched: Vec<u64> = self
            .membership()
            .voters
            .iter()
            .map(|v| self.progress.get(v).map_or(0, |p| p.matched))
            .collect();
        let n = quorum::committed_index(&mut matched);
        // Only entries of this term commit by counting (paper 5.4.2).
        if n <= self.commit || self.term_at(n) != Some(self.term) {
            return;
        }
        self.commit = n;
        while self.uncommitted.front().is_some_and(|(i, _)| *i <= n) {
            let (_, bytes) = self.uncommitted.pop_front().expect("checked");
            self.uncommitted_bytes -= bytes;
        }
        self.broadcast_append(true);
        self.start_reads();
        let conf_index = self.confs.last().expect("bootstrap").0;
        if !self.is_voter(self.config.id) && self.commit >= conf_index {
            // Removed, and the removal is committed: step down (dissertation 4.2.2).
            let term = self.term;
            self.become_follower(term, None);
        }
    }
}
