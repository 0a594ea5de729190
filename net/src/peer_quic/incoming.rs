//! Accepted connections: the acceptor's handshake, then every frame of every data stream,
//! decoded, checked against the authenticated node, and delivered into the channel.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use tracing::{debug, info, warn};

use super::{close, Shared};
use crate::peer::PeerMessage;
use crate::quic::{read_frame, ReadFrameError};

pub(super) async fn accept_loop(shared: Arc<Shared>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(serve_incoming(shared.clone(), incoming));
    }
}

/// One incoming connection: handshake, then every data stream it opens.
async fn serve_incoming(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let refused = |why: &dyn std::fmt::Display| {
        shared.counters.connections_refused.fetch_add(1, Relaxed);
        warn!(%remote, "peer connection refused: {why}");
    };
    // Bounded: each connection still in its handshake holds buffers it has not proven it
    // deserves, so a flood of them is refused rather than served.
    let Ok(permit) = shared.handshakes.clone().try_acquire_owned() else {
        incoming.refuse();
        return refused(&"too many handshakes in progress");
    };
    let deadline = tokio::time::Instant::now() + shared.handshake_timeout;
    let conn = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return refused(&e),
        Err(_) => return refused(&"the TLS handshake timed out"),
    };
    let auth = match tokio::time::timeout_at(deadline, shared.authenticate_from(&conn)).await {
        Ok(Ok(auth)) => auth,
        Ok(Err(r)) => {
            r.close(&conn);
            return refused(&r.reason);
        }
        Err(_) => {
            conn.close(close::HANDSHAKE_TIMEOUT.into(), b"authentication timed out");
            return refused(&"authentication timed out");
        }
    };
    drop(permit);
    let peer = auth.from;
    shared.counters.connections_accepted.fetch_add(1, Relaxed);
    info!(%remote, peer, "peer connection authenticated");
    if let Some(old) = shared.lock_incoming().insert(peer, conn.clone()) {
        old.close(
            close::SUPERSEDED.into(),
            b"a newer connection from this node",
        );
    }
    // The peer restarted if its incarnation changed: our connection to it is to the old
    // process, dead; tell its writer to dial again now rather than after the idle timeout.
    if let Some(p) = shared
        .peers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&peer)
    {
        p.link.incarnation.send_replace(auth.incarnation);
    }
    while let Ok(recv) = conn.accept_uni().await {
        tokio::spawn(read_stream(shared.clone(), conn.clone(), peer, recv));
    }
    let mut incoming = shared.lock_incoming();
    if incoming
        .get(&peer)
        .is_some_and(|c| c.stable_id() == conn.stable_id())
    {
        incoming.remove(&peer);
    }
}

/// Reads frames from one data stream of an authenticated peer and delivers them.
async fn read_stream(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    peer: u64,
    mut recv: quinn::RecvStream,
) {
    let mut buf = BytesMut::new();
    let c = &shared.counters;
    loop {
        let f = match read_frame(&mut recv, &mut buf, shared.frame_max).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(ReadFrameError::Read(e)) => return debug!(peer, "peer stream ended: {e}"),
            Err(e) => return protocol_error(&conn, peer, &e),
        };
        let len = crate::frame::FRAME_HEADER_BYTES + f.payload.len();
        let m = match PeerMessage::decode(&f) {
            Ok(m) => m,
            Err(e) => return protocol_error(&conn, peer, &e),
        };
        if m.from != peer || m.to != shared.id {
            let why = format!(
                "a message from {} to {} on node {peer}'s connection",
                m.from, m.to
            );
            return protocol_error(&conn, peer, &why);
        }
        c.messages_received.fetch_add(1, Relaxed);
        c.bytes_received.fetch_add(len as u64, Relaxed);
        if shared.deliver.send(m).await.is_err() {
            return; // the receiver is gone: the node is stopping
        }
    }
}

fn protocol_error(conn: &quinn::Connection, peer: u64, why: &dyn std::fmt::Display) {
    warn!(peer, "closing the connection from a peer: {why}");
    let reason = why.to_string();
    conn.close(
        close::PROTOCOL.into(),
        &reason.as_bytes()[..reason.len().min(256)],
    );
}
