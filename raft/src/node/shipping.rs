//! Segment shipping: a far-behind follower is sent sealed segments in chunks instead of
//! entries; it resumes from what it acknowledged, and every chunk it answers counts as a sign
//! of life. Chunks are joined only to chunks from the same leader in the same term.

use super::{Incoming, RawNode};
use crate::message::{MessageKind, NodeId};
use crate::progress::Mode;
use crate::storage::{SegmentChunk, Storage};

impl<S: Storage> RawNode<S> {
    /// Sends the next chunks of the segment being shipped to `to`, within the window.
    pub(super) fn send_chunks(&mut self, to: NodeId) {
        let window = (self.config.chunk_bytes * self.config.chunks_in_flight) as u64;
        let mut out = Vec::new();
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        let Mode::Ship(s) = &mut p.mode else { return };
        while s.sent < s.size && s.sent - s.acked < window {
            let data = self
                .storage
                .segment_bytes(s.first, s.sent, self.config.chunk_bytes);
            if data.is_empty() {
                // The segment is gone (replaced on disk): find the follower again.
                p.mode = Mode::Probe;
                p.next = p.matched + 1;
                break;
            }
            let offset = s.sent;
            s.sent += data.len() as u64;
            out.push(MessageKind::Segment {
                first: s.first,
                last: s.last,
                last_term: s.last_term,
                prev_term: s.prev_term,
                offset,
                done: s.sent == s.size,
                data,
            });
        }
        for kind in out {
            self.send(to, kind);
        }
    }

    pub(super) fn handle_segment(
        &mut self,
        from: NodeId,
        chunk: SegmentChunk,
        last_term: u64,
        prev_term: u64,
    ) {
        let (first, last) = (chunk.first, chunk.last);
        let accept = MessageKind::AppendResp {
            reject: false,
            index: last,
            hint: 0,
            hint_term: 0,
            read: 0,
        };
        // A stale chunk of another segment must not disturb the one being received.
        let receiving = self.incoming.is_some_and(|inc| inc.first == first);
        if self.term_at(last) == Some(last_term) {
            // Already here (log matching): nothing to install.
            if receiving {
                self.incoming = None;
            }
            return self.send(from, accept);
        }
        if first == 0 || last < first || self.term_at(first - 1) != Some(prev_term) {
            if receiving {
                self.incoming = None;
            }
            let prev = first.saturating_sub(1);
            let (hint, hint_term) = self.refusal_hint(prev, prev_term);
            let kind = MessageKind::AppendResp {
                reject: true,
                index: prev,
                hint,
                hint_term,
                read: 0,
            };
            return self.send(from, kind);
        }
        let received = match self.incoming {
            Some(inc)
                if (inc.first, inc.last, inc.last_term) == (first, last, last_term)
                    && (inc.from, inc.term) == (from, self.term) =>
            {
                inc.received
            }
            _ => 0,
        };
        if chunk.offset != received {
            // A lost chunk (resend from `received`) or a duplicate (already persisted).
            let kind = MessageKind::SegmentResp {
                first,
                received,
                reject: chunk.offset > received,
            };
            return self.send(from, kind);
        }
        let received = received + chunk.data.len() as u64;
        let done = chunk.done;
        self.chunks_out.push(chunk);
        if done {
            // The segment replaces the log from `first` on once persisted; its entries are
            // committed on the leader, so anything of ours it replaces was not.
            self.incoming = None;
            self.truncate_from(first);
            self.installing = true;
            self.send(from, accept);
        } else {
            self.incoming = Some(Incoming {
                first,
                last,
                last_term,
                from,
                term: self.term,
                received,
            });
            let kind = MessageKind::SegmentResp {
                first,
                received,
                reject: false,
            };
            self.send(from, kind);
        }
    }
}
