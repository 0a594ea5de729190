//! What a leader knows of each follower's log, and how it paces what it sends. Every change
//! of a follower's replication state happens here.

use std::collections::VecDeque;

/// How the leader sends to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    /// Where the logs diverge is unknown: one append at a time, waiting for its answer.
    Probe,
    /// The logs match up to `matched`: appends are pipelined within the in-flight window.
    Replicate,
    /// The follower is far behind: a sealed segment is being shipped to it in chunks.
    Ship(Shipping),
}

/// A segment on its way to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Shipping {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) last_term: u64,
    pub(crate) prev_term: u64,
    pub(crate) size: u64,
    /// Bytes sent (from the start of the segment).
    pub(crate) sent: u64,
    /// Bytes the follower said it persisted.
    pub(crate) acked: u64,
    /// Heartbeats since the follower last acknowledged a chunk.
    pub(crate) stalled: u32,
}

/// A follower, as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log.
    pub(crate) matched: u64,
    /// Next index to send.
    pub(crate) next: u64,
    /// Sending mode.
    pub(crate) mode: Mode,
    /// Appends sent and not yet answered: (last index they carry, bytes).
    in_flight: VecDeque<(u64, usize)>,
    in_flight_bytes: usize,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Highest read round the follower answered in this term (ReadIndex).
    pub(crate) read_acked: u64,
    /// Waiting at a segment boundary for the answers to appends in flight.
    waiting: bool,
}

impl Progress {
    /// A follower about which nothing is known yet; the leader's last index is `last`.
    pub(crate) fn new(last: u64) -> Progress {
        Progress {
            matched: 0,
            next: last + 1,
            mode: Mode::Probe,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            recent_active: true,
            read_acked: 0,
            waiting: false,
        }
    }

    /// Whether another append may be sent now (bounded by count and by bytes).
    pub(crate) fn can_send(&self, count_max: usize, bytes_max: usize) -> bool {
        match self.mode {
            Mode::Probe => self.in_flight.is_empty(),
            Mode::Replicate => self.in_flight.len() < count_max && self.in_flight_bytes < bytes_max,
            Mode::Ship(_) => false,
        }
    }

    /// Whether nothing is in flight and the follower is known to hold everything before
    /// `next`: the moment a segment may be shipped instead of entries.
    pub(crate) fn settled(&self) -> bool {
        self.in_flight.is_empty() && self.next == self.matched + 1
    }

    /// An append carrying entries up to `last` (`bytes` of data) was sent.
    pub(crate) fn sent(&mut self, last: u64, bytes: usize) {
        self.in_flight.push_back((last, bytes));
        self.in_flight_bytes += bytes;
        if self.mode == Mode::Replicate {
            self.next = self.next.max(last + 1);
        }
    }

    fn forget_in_flight(&mut self) {
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.waiting = false;
    }

    /// The follower matches up to `index`. Returns whether that is news.
    pub(crate) fn accepted(&mut self, index: u64) -> bool {
        self.recent_active = true;
        if self.mode == Mode::Probe {
            // The probe (or a heartbeat standing in for a lost one) was answered.
            self.forget_in_flight();
        } else {
            while self
                .in_flight
                .front()
                .is_some_and(|(last, _)| *last <= index)
            {
                let (_, bytes) = self.in_flight.pop_front().expect("checked");
                self.in_flight_bytes -= bytes;
            }
        }
        let news = index > self.matched;
        if news {
            self.matched = index;
        }
        if self.in_flight.is_empty() {
            self.waiting = false;
        }
        let shipped = matches!(self.mode, Mode::Ship(s) if index >= s.last);
        if news && self.mode == Mode::Probe || shipped {
            // What was sent while probing is unknown: continue right after the match.
            self.mode = Mode::Replicate;
            self.forget_in_flight();
            self.next = index + 1;
        }
        self.next = self.next.max(index + 1);
        news
    }

    /// A heartbeat was answered with nothing new while the window is full, or while the
    /// leader waits at a segment boundary for the answers to its appends: appends were
    /// probably lost, so one slot is freed. Once none is left, the follower is sent
    /// everything after `matched` again (after a gap it refuses, which turns it to probing;
    /// entries it holds it ignores).
    pub(crate) fn heartbeat_answered(&mut self, count_max: usize, bytes_max: usize) {
        self.recent_active = true;
        let full = !self.can_send(count_max, bytes_max);
        if self.mode == Mode::Replicate && (full || self.waiting) {
            if let Some((_, bytes)) = self.in_flight.pop_front() {
                self.in_flight_bytes -= bytes;
            }
            if self.in_flight.is_empty() {
                self.next = self.matched + 1;
                self.waiting = false;
            }
        }
    }

    /// Appends are in flight and the next index starts a segment to ship: wait for their
    /// answers (see [`Progress::heartbeat_answered`]).
    pub(crate) fn wait_for_answers(&mut self) {
        self.waiting = true;
    }

    /// Nothing is in flight, yet `next` is past what is known to match (the answers were
    /// lost): start again after `matched`.
    pub(crate) fn resync(&mut self) {
        if self.in_flight.is_empty() {
            self.next = self.matched + 1;
            self.waiting = false;
        }
    }

    /// The follower refused an append before index `rejected` + 1 and hints that its log
    /// ends at (or conflicts from) `hint`. Returns whether `next` moved (a stale refusal of
    /// an older probe changes nothing).
    pub(crate) fn refused(&mut self, rejected: u64, hint: u64) -> bool {
        self.recent_active = true;
        // Only a refusal of what is outstanding counts: a late one (a duplicate, or an answer
        // to an older probe) would move `next` away from where the logs really diverge.
        let stale = match self.mode {
            Mode::Replicate => rejected <= self.matched,
            Mode::Probe => rejected + 1 != self.next,
            Mode::Ship(s) => rejected + 1 != s.first,
        };
        if stale {
            return false;
        }
        // Never below what is known to match; never past what was refused.
        self.next = (hint + 1).min(rejected).max(self.matched + 1).max(1);
        self.mode = Mode::Probe;
        self.forget_in_flight();
        true
    }

    /// Starts shipping a segment.
    pub(crate) fn ship(&mut self, s: Shipping) {
        self.forget_in_flight();
        self.mode = Mode::Ship(s);
    }

    /// The follower persisted `received` bytes of segment `first` (`reject`: it lost a
    /// chunk after those). Returns whether more can be sent.
    pub(crate) fn chunk_answered(&mut self, first: u64, received: u64, reject: bool) -> bool {
        self.recent_active = true;
        let Mode::Ship(s) = &mut self.mode else {
            return false;
        };
        if s.first != first {
            return false;
        }
        if reject {
            // A chunk was lost, or the follower restarted and lost what it had received:
            // continue from what it has. (A stale refusal only costs a few resent chunks,
            // which the follower acknowledges as duplicates.)
            s.acked = received;
            s.sent = received;
            return true;
        }
        if received <= s.acked {
            return false;
        }
        s.stalled = 0;
        s.acked = received;
        s.sent = s.sent.max(received);
        true
    }

    /// A heartbeat went out while shipping: after a few without an acknowledged chunk,
    /// chunks were lost where no later one revealed it, so they are sent again from what
    /// the follower acknowledged.
    pub(crate) fn beat(&mut self) {
        if let Mode::Ship(s) = &mut self.mode {
            s.stalled += 1;
            if s.stalled >= 3 {
                s.stalled = 0;
                s.sent = s.acked;
            }
        }
    }
}
