//! The budget for memory held on behalf of slow clients.
//!
//! A response frame the server has encoded but its client has not taken yet is held in
//! memory: QUIC flow control lets the server hand a stream only as much as the client's
//! window allows, and a client that does not read never opens it. Each such frame is counted
//! here from the moment it is encoded until QUIC has accepted its last byte, together with
//! the fixed state of the request that waits with it (a read's look-ahead of events). A
//! request frame is counted the same way while it arrives, from its header (which announces
//! its length) to its last byte: a client that trickles or stalls a large request holds
//! memory just as one that does not read (`connection::read_held`; a dropped request is
//! answered `Unavailable` and its stream stopped).
//!
//! The total never passes [`Budget::bytes_max`] (except by one frame larger than the whole
//! budget, which is then held alone). When a new frame would pass it, the holders that have
//! waited longest for their clients — the slowest readers — are dropped until it fits: their
//! frames are freed at once and they are told, with an `Error` frame (`Unavailable`, the
//! message says why) when the stream is between two frames and the client has room for it,
//! and otherwise with a reset of the stream (`RESET_STREAM`) carrying the application error
//! code [`SLOW_READER_RESET`]. A client that reads keeps its frames for microseconds and is
//! never the one dropped while a stalled one holds memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use quiver_net::message::Response;
use quiver_net::{ErrorCode, Text};
use tokio::sync::oneshot;

/// Default budget: 256 MiB.
pub const BYTES_MAX_DEFAULT: usize = 256 << 20;

/// The application error code of the `RESET_STREAM` that ends a response whose reader was
/// dropped in the middle of a frame (when an `Error` frame could not be sent).
pub const SLOW_READER_RESET: u32 = quiver_net::quic::RESET_SLOW_READER;

/// Why a response could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The stream or the connection failed (the client stopped reading it, or left).
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    /// The reader was dropped to keep the server within its budget; it has been told.
    #[error("dropped as the slowest reader: the budget for slow clients is full")]
    Dropped,
}

/// What the budget counts, shared with the metrics.
#[derive(Clone, Default)]
pub struct BudgetMetrics {
    /// Bytes held now.
    pub held_bytes: Gauge,
    /// Responses holding bytes now.
    pub holders: Gauge,
    /// Readers dropped to stay within the budget.
    pub dropped: Counter,
}

/// Holders in the order they started waiting: the first is the slowest.
type Key = (Instant, u64);

struct Holder {
    bytes: usize,
    tell: oneshot::Sender<()>,
}

#[derive(Default)]
struct State {
    used: usize,
    next_id: u64,
    holders: BTreeMap<Key, Holder>,
}

/// Memory held for clients that have not taken their responses yet, with a ceiling.
pub struct Budget {
    bytes_max: usize,
    state: Mutex<State>,
    metrics: BudgetMetrics,
}

/// Bytes held for one response; released when dropped.
pub struct Hold {
    budget: Arc<Budget>,
    key: Key,
    /// Fires when the budget dropped this holder.
    dropped: oneshot::Receiver<()>,
}

impl Budget {
    /// A budget of `bytes_max` bytes.
    pub fn new(bytes_max: usize, metrics: BudgetMetrics) -> Arc<Budget> {
        Arc::new(Budget {
            bytes_max,
            state: Mutex::new(State::default()),
            metrics,
        })
    }

    /// The ceiling.
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.state.lock().expect("never poisoned").used
    }

    /// Counts `bytes` as held until the returned hold is dropped, first dropping the
    /// holders that have waited longest while the total would pass the ceiling.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Hold {
        let (tx, rx) = oneshot::channel();
        let mut st = self.state.lock().expect("never poisoned");
        while st.used + bytes > self.bytes_max {
            // Nobody left to drop: a frame larger than the whole budget is held alone.
            let Some((_, victim)) = st.holders.pop_first() else {
                break;
            };
            st.used -= victim.bytes;
            self.metrics.holders.dec();
            self.metrics.dropped.inc();
            let _ = victim.tell.send(());
        }
        let key = (Instant::now(), st.next_id);
        st.next_id += 1;
        st.used += bytes;
        st.holders.insert(key, Holder { bytes, tell: tx });
        self.metrics.holders.inc();
        self.metrics.held_bytes.set(st.used as i64);
        Hold {
            budget: self.clone(),
            key,
            dropped: rx,
        }
    }
}

impl Hold {
    /// Completes when the budget drops this holder (never, if it is not dropped).
    pub async fn dropped(&mut self) {
        if (&mut self.dropped).await.is_err() {
            // The budget is gone without dropping it: wait for ever.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut st = self.budget.state.lock().expect("never poisoned");
        // Absent when the budget dropped this holder (and already took its bytes back).
        if let Some(h) = st.holders.remove(&self.key) {
            st.used -= h.bytes;
            self.budget.metrics.holders.dec();
        }
        self.budget.metrics.held_bytes.set(st.used as i64);
    }
}

/// Writes `frame` to `out`, holding `frame.len() + state_bytes` against `budget` until QUIC
/// has accepted all of it. If the budget drops this reader meanwhile, the client is told
/// (see the module documentation) and the answer is [`SendError::Dropped`]: the caller must
/// not write to the stream again.
pub async fn write(
    out: &mut quinn::SendStream,
    budget: &Arc<Budget>,
    frame: &[u8],
    state_bytes: usize,
) -> Result<(), SendError> {
    let mut hold = budget.hold(frame.len() + state_bytes);
    let mut at = 0;
    while at < frame.len() {
        tokio::select! {
            biased;
            () = hold.dropped() => {
                drop(hold);
                tell(out, at == 0, budget.bytes_max).await;
                return Err(SendError::Dropped);
            }
            n = out.write(&frame[at..]) => at += n?,
        }
    }
    Ok(())
}

/// Tells a dropped reader why: an `Error` frame if the stream is between frames and QUIC
/// takes the whole frame at once, else a reset with [`SLOW_READER_RESET`].
async fn tell(out: &mut quinn::SendStream, between_frames: bool, bytes_max: usize) {
    if between_frames {
        let mut frame = BytesMut::new();
        Response::Error {
            code: ErrorCode::Unavailable,
            message: Text::new(format!(
                "dropped as the slowest reader: the server holds at most {bytes_max} bytes for \
                 clients that do not read their responses, and this one had waited longest; \
                 read faster, or ask for less at a time"
            )),
            actual: None,
        }
        .encode(&mut frame);
        // Only what the client has room for now: a stalled client would never take it.
        let now = tokio::time::timeout(Duration::ZERO, out.write(&frame)).await;
        if matches!(now, Ok(Ok(n)) if n == frame.len()) {
            let _ = out.finish();
            return;
        }
    }
    let _ = out.reset(SLOW_READER_RESET.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_waiting_holders_are_dropped_to_make_room() {
        let b = Budget::new(100, BudgetMetrics::default());
        let mut first = b.hold(40);
        let mut second = b.hold(40);
        assert_eq!(b.held(), 80);
        let third = b.hold(30);
        // The first had waited longest: it alone is dropped.
        assert!(first.dropped.try_recv().is_ok());
        assert!(second.dropped.try_recv().is_err());
        assert_eq!(b.held(), 70);
        drop(first);
        assert_eq!(b.held(), 70, "a dropped hold was already taken back");
        drop(second);
        drop(third);
        assert_eq!(b.held(), 0);
        assert_eq!(b.metrics.dropped.get(), 1);
        assert_eq!(b.metrics.holders.get(), 0);
    }

    #[test]
    fn a_frame_larger_than_the_budget_is_held_alone() {
        let b = Budget::new(100, BudgetMetrics::default());
        let mut small = b.hold(10);
        let big = b.hold(150);
        assert!(small.dropped.try_recv().is_ok());
        assert_eq!(b.held(), 150);
        drop(big);
        assert_eq!(b.held(), 0);
    }
}
