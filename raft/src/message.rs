//! What nodes say to each other, what they persist, and what they hand the application.

use bytes::Bytes;

/// A node's id. Ids are never reused: a removed id stays retired (see [`Membership`]).
pub type NodeId = u64;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data (in Quiver: an encoded engine record body); empty for a new
    /// leader's no-op.
    Normal,
    /// A new [`Membership`], encoded with [`Membership::encode`]. It takes effect on a node as
    /// soon as it is in that node's log, committed or not (dissertation 4.1).
    Membership,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Position in the log, from 1.
    pub index: u64,
    /// Term of the leader that created it.
    pub term: u64,
    /// What `data` is.
    pub kind: EntryKind,
    /// The payload, shared (a clone for each follower's message copies nothing).
    pub data: Bytes,
}

impl Entry {
    /// An application entry.
    pub fn normal(index: u64, term: u64, data: impl Into<Bytes>) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: data.into(),
        }
    }
}

/// What must be durable before any message that depends on it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// Whom it voted for in `term`.
    pub vote: Option<NodeId>,
    /// The highest index known committed (may be re-learned; persisting it saves work).
    pub commit: u64,
}

/// Who is in the cluster: voters elect and count toward commitment; learners only receive
/// the log (a new node catches up as a learner before it is promoted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// Voting members.
    pub voters: std::collections::BTreeSet<NodeId>,
    /// Non-voting members.
    pub learners: std::collections::BTreeSet<NodeId>,
    /// Ids that were removed and may never be used again.
    pub retired: std::collections::BTreeSet<NodeId>,
}

/// One change of membership (one server at a time, dissertation 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// Add a new node as a learner. Its id must never have been used.
    AddLearner(NodeId),
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a voter or a learner; its id is retired.
    Remove(NodeId),
}

/// A membership entry's bytes are not a membership.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad membership entry: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl Membership {
    /// Voters `voters`, no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters and learners.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The membership after `change`, or why it cannot be made.
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, &'static str> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner(id) => {
                if self.contains(id) || self.retired.contains(&id) || id == 0 {
                    return Err("the id is in use or was used before");
                }
                next.learners.insert(id);
            }
            MembershipChange::Promote(id) => {
                if !next.learners.remove(&id) {
                    return Err("only a learner can be promoted");
                }
                next.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if !next.voters.remove(&id) && !next.learners.remove(&id) {
                    return Err("not a member");
                }
                if next.voters.is_empty() {
                    return Err("the last voter cannot be removed");
                }
                next.retired.insert(id);
            }
        }
        Ok(next)
    }

    /// Encodes as three lists (voters, learners, retired), each a little-endian u32 count
    /// followed by that many little-endian u64 ids.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for set in [&self.voters, &self.learners, &self.retired] {
            out.extend_from_slice(&(set.len() as u32).to_le_bytes());
            for id in set {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out
    }

    /// Decodes what [`Membership::encode`] wrote; any other bytes are an error, never a panic.
    pub fn decode(mut bytes: &[u8]) -> Result<Membership, DecodeError> {
        let mut sets: [std::collections::BTreeSet<NodeId>; 3] = Default::default();
        for set in sets.iter_mut() {
            let (count, rest) = bytes
                .split_first_chunk::<4>()
                .ok_or(DecodeError("truncated count"))?;
            let count = u32::from_le_bytes(*count) as usize;
            if rest.len() / 8 < count {
                return Err(DecodeError("count exceeds the bytes"));
            }
            for k in 0..count {
                let id: [u8; 8] = rest[k * 8..k * 8 + 8].try_into().expect("8 bytes");
                if !set.insert(u64::from_le_bytes(id)) {
                    return Err(DecodeError("an id is listed twice"));
                }
            }
            bytes = &rest[count * 8..];
        }
        if !bytes.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        let [voters, learners, retired] = sets;
        if voters.is_empty() || !voters.is_disjoint(&learners) {
            return Err(DecodeError("no voter, or a voter is also a learner"));
        }
        Ok(Membership {
            voters,
            learners,
            retired,
        })
    }
}

/// A message between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term (for a pre-vote: the term it would campaign in).
    pub term: u64,
    /// What it says.
    pub kind: MessageKind,
}

impl Message {
    /// Whether this kind of message may leave before the `Ready` it came in is persisted,
    /// given that the `Ready` changes neither term nor vote (the core decides: `Ready.early`).
    /// A leader's appends and segment chunks may (dissertation 10.2.1: the leader writes its
    /// own log in parallel with its followers, and counts itself only once persisted);
    /// everything else (answers, votes, vote requests) depends on the term, vote or entries
    /// being durable.
    pub(crate) fn may_precede_persistence(&self) -> bool {
        matches!(
            self.kind,
            MessageKind::Append { .. } | MessageKind::Segment { .. }
        )
    }
}

/// The message kinds: Raft paper figure 2, pre-vote (dissertation 9.6), leadership transfer
/// (3.10), ReadIndex (6.4), and segment shipping (Quiver's snapshots are sealed segments).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Would you vote for me in `term`? Changes no one's term.
    PreVote {
        /// Candidate's last log index.
        last_index: u64,
        /// Candidate's last log term.
        last_term: u64,
    },
    /// Answer to a pre-vote.
    PreVoteResp {
        /// Refused.
        reject: bool,
    },
    /// Vote for me in `term`.
    Vote {
        /// Candidate's last log index.
        last_index: u64,
        /// Candidate's last log term.
        last_term: u64,
        /// The leader handed over to this candidate: voters that still hear that leader
        /// vote anyway.
        transfer: bool,
    },
    /// Answer to a vote.
    VoteResp {
        /// Refused.
        reject: bool,
    },
    /// Entries after (`prev_index`, `prev_term`), and the leader's commit index. Empty
    /// entries make a heartbeat.
    Append {
        /// Index before the first entry.
        prev_index: u64,
        /// Its term.
        prev_term: u64,
        /// New entries.
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: u64,
        /// The leader's latest read round (ReadIndex); echoed in the answer.
        read: u64,
    },
    /// Answer to an append.
    AppendResp {
        /// The previous entry did not match.
        reject: bool,
        /// Accepted: the last index now known to match. Rejected: the refused `prev_index`.
        index: u64,
        /// Rejected only: where the follower's log could match from (its last index, or the
        /// index before the conflicting term's first entry), for fast backtracking.
        hint: u64,
        /// Rejected only: the term of the follower's entry at `hint` (0: none). The leader
        /// goes back to its own last entry of that term or earlier, skipping the follower's
        /// whole run of an older term in one round trip (etcd-raft's `findConflictByTerm`).
        hint_term: u64,
        /// The `read` of the append this answers.
        read: u64,
    },
    /// The leader hands over: campaign now, without a pre-vote.
    TimeoutNow,
    /// A follower asks its leader for a read index on behalf of a client (`ctx` is the
    /// follower's own tag for the request).
    ReadIndex {
        /// The follower's tag.
        ctx: u64,
    },
    /// The leader's answer: reads that see everything up to `index` are linearizable.
    ReadIndexResp {
        /// The follower's tag.
        ctx: u64,
        /// The read index.
        index: u64,
    },
    /// A chunk of a sealed segment holding entries `first..=last`, shipped to a follower
    /// that is far behind. The follower's entry at `first - 1` must have term `prev_term`.
    Segment {
        /// Index of the segment's first entry.
        first: u64,
        /// Index of its last entry.
        last: u64,
        /// Term of its last entry.
        last_term: u64,
        /// Term of the entry before `first`.
        prev_term: u64,
        /// Where in the segment's bytes this chunk starts.
        offset: u64,
        /// The chunk.
        data: Vec<u8>,
        /// This is the last chunk.
        done: bool,
    },
    /// A follower has persisted `received` bytes of segment `first` (a completed segment is
    /// answered with an accepting `AppendResp` instead).
    SegmentResp {
        /// The segment.
        first: u64,
        /// Bytes persisted, from its start.
        received: u64,
        /// A chunk arrived past `received` (one was lost): resend from `received`.
        reject: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::{DecodeError, Membership};

    /// A bad membership entry reads as what is wrong with it (the driver logs it).
    #[test]
    fn decode_errors_are_described() {
        assert_eq!(
            DecodeError("trailing bytes").to_string(),
            "bad membership entry: trailing bytes"
        );
    }

    /// `decode` takes back what `encode` wrote, and refuses, without a panic, a count larger
    /// than the bytes that follow it, a membership without voters, and a voter that is also
    /// a learner.
    #[test]
    fn a_membership_decodes_only_what_encode_wrote() {
        let mut m = Membership::with_voters([1, 2, 3]);
        m.learners.insert(4);
        m.retired.insert(5);
        assert_eq!(Membership::decode(&m.encode()), Ok(m));

        // A count of 3 voters followed by one id and the two empty lists' counts: 16 bytes,
        // two ids' worth, fewer than the count says.
        let mut short = 3u32.to_le_bytes().to_vec();
        short.extend_from_slice(&1u64.to_le_bytes());
        short.extend_from_slice(&[0; 8]);
        assert_eq!(
            Membership::decode(&short),
            Err(DecodeError("count exceeds the bytes"))
        );

        let no_voter = Membership::default();
        assert_eq!(
            Membership::decode(&no_voter.encode()),
            Err(DecodeError("no voter, or a voter is also a learner"))
        );
        let mut both = Membership::with_voters([1, 2]);
        both.learners.insert(2);
        assert_eq!(
            Membership::decode(&both.encode()),
            Err(DecodeError("no voter, or a voter is also a learner"))
        );
    }
}
