//! What nodes say to each other, what they persist, and what they hand the application.

/// A node's id. Ids are never reused.
pub type NodeId = u64;

/// One log entry. `data` is opaque to Raft (in Quiver: an encoded engine record body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 1.
    pub index: u64,
    /// Term of the leader that created it.
    pub term: u64,
    /// The payload; empty for a new leader's no-op.
    pub data: Vec<u8>,
}

/// What must be durable before any message that depends on it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// Whom it voted for in `term`.
    pub vote: Option<NodeId>,
    /// The highest index known committed (may be re-learned; persisting it saves work).
    pub commit: u64,
}

/// A message between two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The message kinds (Raft paper figure 2, plus pre-vote from the dissertation, 9.6).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    },
}
