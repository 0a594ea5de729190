//! Connections: the accept loop (capped), the `Hello` exchange, and one task per request
//! stream (a `PersistentConnect` stream is handed, both halves, to its group). A peer that
//! sends a malformed or oversized frame is disconnected; its other requests end with it, and
//! nothing else is affected.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use quiver_net::message::{Request, Response};
use quiver_net::quic::{read_frame, ReadFrameError};
use quiver_net::{ErrorCode, Text, PROTOCOL_VERSION};

use crate::cmd;
use crate::ctx::{Ctx, ReadMode};
use crate::persistent::Groups;

/// Everything a connection task needs.
pub struct Shared {
    /// The request context.
    pub ctx: Arc<Ctx>,
    /// Persistent subscription groups.
    pub groups: Arc<Groups>,
    /// Largest frame payload accepted.
    pub frame_bytes_max: usize,
    /// The token clients must present, if any.
    pub token: Option<String>,
    /// How long a request may take to arrive and be answered.
    pub request_timeout: Duration,
}

/// QUIC close codes the server uses.
pub mod close {
    /// A clean close.
    pub const DONE: u32 = 0;
    /// The peer broke the protocol.
    pub const PROTOCOL: u32 = 1;
    /// The peer did not authenticate.
    pub const UNAUTHENTICATED: u32 = 2;
    /// The server is shutting down.
    pub const SHUTDOWN: u32 = 3;
}

async fn reply(send: &mut quinn::SendStream, resp: &Response) {
    let mut out = BytesMut::new();
    resp.encode(&mut out);
    let _ = send.write_all(&out).await;
    let _ = send.finish();
}

/// Answers with an error, then closes the connection once the answer has been delivered
/// (closing at once would discard it) or a second has passed.
async fn refuse(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    resp: &Response,
    code: u32,
) {
    reply(send, resp).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    let reason = match resp {
        Response::Error { message, .. } => message.as_str().as_bytes().to_vec(),
        _ => Vec::new(),
    };
    conn.close(code.into(), &reason);
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: Text::new(message),
        actual: None,
    }
}

/// Serves one connection until the peer leaves, breaks the protocol, or the server stops.
pub async fn serve(conn: quinn::Connection, shared: Arc<Shared>) {
    let peer = conn.remote_address();
    shared.ctx.metrics.connections.inc();
    // Counted down however the connection ends.
    struct Open<'a>(&'a Shared);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            self.0.ctx.metrics.connections.dec();
        }
    }
    let _open = Open(&shared);
    if let Err(why) = hello(&conn, &shared).await {
        tracing::debug!(%peer, why, "connection refused");
        return;
    }
    // The connection's options (`SetOptions`), read by each request as it starts.
    let follower_reads = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection ended");
                return;
            }
        };
        let (conn, shared) = (conn.clone(), shared.clone());
        let follower_reads = follower_reads.clone();
        // From the stream's arrival to its task running: the hop onto a worker.
        let spawned = tracing::trace_span!("stage.server.spawn");
        tokio::spawn(async move {
            drop(spawned);
            request(conn, shared, &follower_reads, send, recv).await
        });
    }
}

/// The first stream must carry a `Hello` with a version we speak and the right token.
/// Anything else is answered with an `Error` frame before the connection is closed.
async fn hello(conn: &quinn::Connection, shared: &Shared) -> Result<(), &'static str> {
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|_| "no hello stream")?;
    let mut buf = BytesMut::new();
    let read = tokio::time::timeout(
        shared.request_timeout,
        read_held(shared, &mut recv, &mut buf),
    );
    let not_hello = |why: String| error(ErrorCode::Malformed, why);
    let frame = match read.await {
        Ok(Ok(Some(f))) => f,
        Ok(Err(Inbound::Frame(ReadFrameError::Read(_)))) => {
            // The client reset the stream or left: nobody to answer.
            conn.close(close::PROTOCOL.into(), b"the Hello stream was reset");
            return Err("hello stream reset");
        }
        outcome => {
            let resp = match outcome {
                Ok(Ok(None)) => {
                    not_hello("the first request must be Hello; its stream was empty".into())
                }
                Ok(Err(Inbound::Frame(e))) => {
                    not_hello(format!("the first request must be Hello: {e}"))
                }
                Ok(Err(Inbound::Dropped)) => error(
                    ErrorCode::Unavailable,
                    "Hello dropped: it was arriving slowest when the server's budget for slow \
                     clients was full; connect again",
                ),
                Ok(Ok(Some(_))) => unreachable!("a frame is handled above"),
                Err(_) => error(ErrorCode::Timeout, "Hello did not arrive in time"),
            };
            refuse(conn, &mut send, &resp, close::PROTOCOL).await;
            return Err("no hello frame");
        }
    };
    let (version, token) = match Request::decode(&frame) {
        Ok(Request::Hello { version, token, .. }) => (version, token),
        Ok(other) => {
            let why = format!("the first request must be Hello, not {:?}", other.kind());
            refuse(conn, &mut send, &not_hello(why), close::PROTOCOL).await;
            return Err("first request was not Hello");
        }
        Err(e) => {
            let why = format!("the first request must be Hello: {e}");
            refuse(conn, &mut send, &not_hello(why), close::PROTOCOL).await;
            return Err("first request did not decode");
        }
    };
    if version != PROTOCOL_VERSION {
        let msg = format!(
            "protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
        );
        refuse(
            conn,
            &mut send,
            &error(ErrorCode::UnsupportedVersion, msg),
            close::PROTOCOL,
        )
        .await;
        return Err("unsupported version");
    }
    if let Some(want) = &shared.token {
        // Constant time: how much of a guess matched must not show in the answer's timing.
        let matches: bool = subtle::ConstantTimeEq::ct_eq(token.as_ref(), want.as_bytes()).into();
        if !matches {
            let msg = if token.is_empty() {
                "this server requires a token"
            } else {
                "wrong token"
            };
            let resp = error(ErrorCode::Unauthenticated, msg);
            refuse(conn, &mut send, &resp, close::UNAUTHENTICATED).await;
            return Err("unauthenticated");
        }
    }
    let ok = Response::HelloOk {
        version: PROTOCOL_VERSION,
        server: Text::new(concat!("quiver ", env!("CARGO_PKG_VERSION"))),
        store_id: Text::new(shared.ctx.store_id.clone()),
        max_frame: shared.frame_bytes_max as u32,
    };
    reply(&mut send, &ok).await;
    Ok(())
}

/// One request stream: read its frame, apply it, finish the stream.
async fn request(
    conn: quinn::Connection,
    shared: Arc<Shared>,
    follower_reads: &std::sync::atomic::AtomicBool,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    // Stage spans (`stage.server.*`, TRACE), each from its creation to its drop: the whole
    // request from its task's start, reading its frame, decoding it. With no subscriber at
    // TRACE they cost a level check.
    let _request = tracing::trace_span!("stage.server.request");
    let reading = tracing::trace_span!("stage.server.read");
    let mut buf = BytesMut::new();
    let read = tokio::time::timeout(
        shared.request_timeout,
        read_held(&shared, &mut recv, &mut buf),
    );
    let frame = match read.await {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(Inbound::Dropped)) => {
            let why = format!(
                "request dropped: it was arriving slowest when the server's budget for slow \
                 clients ({} bytes) was full; send it again",
                shared.ctx.budget.bytes_max()
            );
            let _ = recv.stop(quiver_net::quic::RESET_SLOW_READER.into());
            reply(&mut send, &error(ErrorCode::Unavailable, why)).await;
            return;
        }
        Ok(Err(Inbound::Frame(e))) => Err(e),
        Err(_) => {
            reply(
                &mut send,
                &error(ErrorCode::Timeout, "the request did not arrive in time"),
            )
            .await;
            return;
        }
    };
    let frame = match frame {
        Ok(Some(f)) => f,
        Ok(None) => {
            // Finished with no bytes: no request, but nothing broken either.
            let why = "an empty request stream: each request stream carries one request frame";
            reply(&mut send, &error(ErrorCode::InvalidRequest, why)).await;
            return;
        }
        Err(ReadFrameError::Read(_)) => {
            // The client reset this stream (it gave up on the request) or left: no answer.
            return;
        }
        Err(e) => {
            // Oversized or garbled: answer if we can, then drop the peer.
            let resp = error(ErrorCode::Malformed, e.to_string());
            refuse(&conn, &mut send, &resp, close::PROTOCOL).await;
            return;
        }
    };
    drop(reading);
    let decoding = tracing::trace_span!("stage.server.decode");
    let req = match Request::decode(&frame) {
        Ok(r) => r,
        Err(e) => {
            let resp = error(ErrorCode::Malformed, e.to_string());
            refuse(&conn, &mut send, &resp, close::PROTOCOL).await;
            return;
        }
    };
    drop(decoding);
    if let Request::PersistentConnect { group } = &req {
        // In a cluster, groups run on the leader: elsewhere the consumer is sent there.
        if let Some(refused) = shared.ctx.cluster.as_ref().and_then(cmd::not_leading) {
            if crate::frames::send(&shared.ctx.budget, &mut send, &refused)
                .await
                .is_ok()
            {
                let _ = send.finish();
            }
            return;
        }
        let max = shared.frame_bytes_max;
        let (ctx, groups) = (&shared.ctx, &shared.groups);
        crate::persistent::serve_consumer(ctx, groups, group.as_str(), send, recv, max).await;
        return;
    }
    if let Request::SetOptions { follower_reads: on } = &req {
        follower_reads.store(*on, std::sync::atomic::Ordering::Relaxed);
    }
    let reads = match follower_reads.load(std::sync::atomic::Ordering::Relaxed) {
        true => ReadMode::Follower,
        false => ReadMode::Linearizable,
    };
    if cmd::apply(&shared.ctx, &shared.groups, reads, req, &mut send)
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}

/// Why a request frame was not read.
enum Inbound {
    /// The stream or the frame failed.
    Frame(ReadFrameError),
    /// The budget for slow clients dropped it while it arrived.
    Dropped,
}

/// Reads a request frame, holding its announced size against the budget for slow clients
/// while its payload arrives: a client that trickles large requests (or announces them and
/// stalls) is counted like a reader that does not read, and dropped the same way.
async fn read_held(
    shared: &Shared,
    recv: &mut quinn::RecvStream,
    buf: &mut BytesMut,
) -> Result<Option<quiver_net::frame::Frame>, Inbound> {
    use quiver_net::frame::FRAME_HEADER_BYTES;
    // The header alone first: its length says what the payload will hold.
    while buf.len() < FRAME_HEADER_BYTES {
        let want = FRAME_HEADER_BYTES - buf.len();
        match recv.read_chunk(want, true).await {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            Ok(None) if buf.is_empty() => return Ok(None),
            Ok(None) => return Err(Inbound::Frame(ReadFrameError::Truncated)),
            Err(e) => return Err(Inbound::Frame(e.into())),
        }
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    // A length over the limit is refused by `read_frame` before anything is buffered.
    let held = FRAME_HEADER_BYTES + len.min(shared.frame_bytes_max);
    let mut hold = shared.ctx.budget.hold(held);
    tokio::select! {
        biased;
        () = hold.dropped() => Err(Inbound::Dropped),
        read = read_frame(recv, buf, shared.frame_bytes_max) => read.map_err(Inbound::Frame),
    }
}
