//! ReadIndex (diss. 6.4): a read index is the commit index once an entry of the leader's
//! term is committed, released after a quorum answers a heartbeat round sent after the read
//! arrived; followers forward their reads to the leader. No lease reads.

use super::{PendingRead, RawNode, ReadState, Refused, Role};
use crate::message::{MessageKind, NodeId};
use crate::quorum;
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    /// Asks for a linearizable read index. It arrives in a `Ready`'s `reads` with `ctx`;
    /// serve the read once applied up to it. A follower forwards the request to its leader.
    /// Requests can be lost (a leader change, a lost message): retry after a timeout.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), Refused> {
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.leader_read(ctx, self.config.id);
                Ok(())
            }
            (_, Some(leader)) => {
                self.send(leader, MessageKind::ReadIndex { ctx });
                Ok(())
            }
            (_, None) => Err(Refused::NotLeader(None)),
        }
    }

    pub(super) fn leader_read(&mut self, ctx: u64, from: NodeId) {
        self.reads.push_back(PendingRead {
            ctx,
            from,
            index: 0,
            seq: 0,
        });
        self.start_reads();
    }

    /// Gives waiting reads the commit index and starts a quorum round for them, once the
    /// leader has committed an entry of its term (before that its commit index may lag).
    pub(super) fn start_reads(&mut self) {
        if !self.committed_in_term() || self.reads.back().is_none_or(|r| r.seq != 0) {
            return;
        }
        self.read_seq += 1;
        let (seq, commit) = (self.read_seq, self.commit);
        for r in self.reads.iter_mut().filter(|r| r.seq == 0) {
            r.seq = seq;
            r.index = commit;
        }
        self.broadcast_append(true);
        self.confirm_reads();
    }

    /// Releases the reads whose round a quorum of voters has answered.
    pub(super) fn confirm_reads(&mut self) {
        let id = self.config.id;
        let mut acked: Vec<u64> = self
            .membership()
            .voters
            .iter()
            .map(|v| match self.progress.get(v) {
                _ if *v == id => self.read_seq,
                Some(p) => p.read_acked,
                None => 0,
            })
            .collect();
        let confirmed = quorum::committed_index(&mut acked);
        while self
            .reads
            .front()
            .is_some_and(|r| r.seq != 0 && r.seq <= confirmed)
        {
            let r = self.reads.pop_front().expect("checked");
            if r.from == id {
                self.reads_out.push(ReadState {
                    ctx: r.ctx,
                    index: r.index,
                });
            } else {
                let kind = MessageKind::ReadIndexResp {
                    ctx: r.ctx,
                    index: r.index,
                };
                self.send(r.from, kind);
            }
        }
    }
}
