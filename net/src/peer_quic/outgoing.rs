//! One writer task per peer: dial, authenticate, then drain the peer's queue onto one data
//! stream in batches; on failure drop what is queued, back off with jitter, dial again.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::handshake::random_u64;
use super::{close, Link, Shared, PEER_SERVER_NAME, WRITE_BATCH_BYTES_MAX};
use crate::peer::PeerMessage;

/// The delay before reconnect attempt number `failures` (from 1): exponential, with half of
/// it random ("equal jitter"), so the delay grows yet peers do not retry in step.
pub(crate) fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let full = min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(max);
    let half = full / 2;
    let nanos = half.as_nanos().min(u64::MAX as u128) as u64;
    let jitter = if nanos == 0 { 0 } else { random_u64() % nanos };
    half + Duration::from_nanos(jitter)
}

/// One peer's writer: connect, authenticate, then drain the queue onto one data stream,
/// batching what is queued into one write; on any failure, back off and dial again.
pub(super) async fn run_link(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    id: u64,
    link: Arc<Link>,
    mut rx: mpsc::Receiver<PeerMessage>,
) {
    let mut restarted = link.incarnation.subscribe();
    let mut failures = 0u32;
    loop {
        match connect(&shared, &endpoint, id, link.addr).await {
            Ok((conn, incarnation)) => {
                failures = 0;
                shared.counters.connects.fetch_add(1, Relaxed);
                link.connected.store(true, Relaxed);
                info!(peer = id, addr = %link.addr, "connected to peer");
                restarted.mark_unchanged();
                let why =
                    write_loop(&shared, &conn, &link, &mut rx, &mut restarted, incarnation).await;
                link.connected.store(false, Relaxed);
                info!(peer = id, "connection to peer lost: {why}");
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                shared.counters.connect_failures.fetch_add(1, Relaxed);
                // What waited for a peer that cannot be reached is stale by the time it is
                // back: drop it (Raft resends), so that the queue holds only fresh messages.
                let mut n = 0u64;
                while let Ok(m) = rx.try_recv() {
                    link.queued_bytes.fetch_sub(m.frame_len(), Relaxed);
                    n += 1;
                }
                shared.counters.messages_dropped.fetch_add(n, Relaxed);
                link.dropped.fetch_add(n, Relaxed);
                // Every attempt of a dead peer would log: only the first, then every 32nd.
                if failures == 1 || failures.trailing_zeros() >= 5 {
                    warn!(peer = id, addr = %link.addr, failures, "cannot reach peer: {why}");
                }
                let delay = backoff(shared.backoff.0, shared.backoff.1, failures);
                // A restarted peer that dials us is worth dialing back at once.
                let _ = tokio::time::timeout(delay, restarted.changed()).await;
            }
        }
    }
}

/// Dials and authenticates; the acceptor's incarnation, or why not.
async fn connect(
    shared: &Shared,
    endpoint: &quinn::Endpoint,
    id: u64,
    addr: SocketAddr,
) -> Result<(quinn::Connection, u64), String> {
    let attempt = async {
        let connecting = endpoint
            .connect_with(shared.client.clone(), addr, PEER_SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let conn = connecting.await.map_err(|e| e.to_string())?;
        match shared.authenticate_to(&conn, id).await {
            Ok(incarnation) => Ok((conn, incarnation)),
            Err(r) => {
                r.close(&conn);
                Err(r.reason)
            }
        }
    };
    tokio::time::timeout(shared.handshake_timeout, attempt)
        .await
        .map_err(|_| "the handshake timed out".to_string())?
}

/// Writes queued messages until the connection fails or the peer restarts; returns why.
async fn write_loop(
    shared: &Shared,
    conn: &quinn::Connection,
    link: &Link,
    rx: &mut mpsc::Receiver<PeerMessage>,
    restarted: &mut watch::Receiver<u64>,
    incarnation: u64,
) -> String {
    let mut send = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => return format!("opening the data stream: {e}"),
    };
    let c = &shared.counters;
    let (mut head, mut chunks) = (BytesMut::new(), Vec::<Bytes>::new());
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return "the endpoint stopped".into(),
            },
            e = conn.closed() => return e.to_string(),
            _ = restarted.changed() => {
                if *restarted.borrow_and_update() == incarnation {
                    continue;
                }
                conn.close(close::SUPERSEDED.into(), b"you restarted");
                return "the peer restarted".into();
            }
        };
        // Take what else is queued, up to a batch: one write call for all of it.
        let (mut n, mut bytes) = (0u64, 0usize);
        let mut next = Some(first);
        while let Some(m) = next.take() {
            let len = m.frame_len();
            m.encode_chunks(&mut head, &mut chunks);
            link.queued_bytes.fetch_sub(len, Relaxed);
            n += 1;
            bytes += len;
            if bytes < WRITE_BATCH_BYTES_MAX {
                next = rx.try_recv().ok();
            }
        }
        if !head.is_empty() {
            chunks.push(head.split().freeze());
        }
        let written = send.write_all_chunks(&mut chunks).await;
        chunks.clear();
        if let Err(e) = written {
            c.messages_dropped.fetch_add(n, Relaxed);
            link.dropped.fetch_add(n, Relaxed);
            return format!("writing: {e}");
        }
        c.messages_sent.fetch_add(n, Relaxed);
        c.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_half_of_it_random() {
        let (min, max) = (Duration::from_millis(50), Duration::from_secs(2));
        for failures in 1..40 {
            let full = (min * 2u32.pow((failures - 1).min(16))).min(max);
            let delays: Vec<Duration> = (0..64).map(|_| backoff(min, max, failures)).collect();
            assert!(
                delays.iter().all(|d| *d >= full / 2 && *d < full),
                "{failures}"
            );
            // Jittered: 64 draws from [full/2, full) are not all the same.
            assert!(delays.iter().any(|d| *d != delays[0]), "{failures}");
        }
    }
}
