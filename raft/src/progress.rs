//! What a leader knows of each follower's log, and how it paces appends to it. Every change
//! of a follower's replication state happens here.

/// How the leader sends to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Where the logs diverge is unknown: one append at a time, waiting for its answer.
    Probe,
    /// The logs match up to `matched`: appends are pipelined, up to the in-flight limit.
    Replicate,
}

/// A follower, as its leader sees it.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log.
    pub(crate) matched: u64,
    /// Next index to send.
    pub(crate) next: u64,
    /// Sending mode.
    pub(crate) mode: Mode,
    /// Appends sent and not yet answered (Replicate: bounded; Probe: at most one).
    pub(crate) in_flight: usize,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
}

impl Progress {
    /// A follower about which nothing is known yet; the leader's last index is `last`.
    pub(crate) fn new(last: u64) -> Progress {
        Progress {
            matched: 0,
            next: last + 1,
            mode: Mode::Probe,
            in_flight: 0,
            recent_active: true,
        }
    }

    /// Whether another append may be sent now.
    pub(crate) fn can_send(&self, in_flight_max: usize) -> bool {
        match self.mode {
            Mode::Probe => self.in_flight == 0,
            Mode::Replicate => self.in_flight < in_flight_max,
        }
    }

    /// An append covering up to `last` was sent.
    pub(crate) fn sent(&mut self, last: u64) {
        self.in_flight += 1;
        if self.mode == Mode::Replicate {
            self.next = self.next.max(last + 1);
        }
    }

    /// The follower matches up to `index`. Returns whether that is news.
    pub(crate) fn accepted(&mut self, index: u64) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.recent_active = true;
        let news = index > self.matched;
        if news {
            self.matched = index;
            self.mode = Mode::Replicate;
        }
        self.next = self.next.max(index + 1);
        news
    }

    /// The follower refused an append before index `rejected` + 1 and hints that its log
    /// ends at (or conflicts from) `hint`. Returns whether `next` moved (a stale refusal of
    /// an older probe changes nothing).
    pub(crate) fn refused(&mut self, rejected: u64, hint: u64) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.recent_active = true;
        if rejected < self.matched {
            return false;
        }
        // Never below what is known to match; never past what was refused.
        self.next = (hint + 1).min(rejected).max(self.matched + 1).max(1);
        self.mode = Mode::Probe;
        self.in_flight = 0;
        true
    }
}
