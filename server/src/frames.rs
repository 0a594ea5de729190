//! Response frames as the request paths write them: one answer held against the budget for
//! slow clients, and stored events in the wire's layout, batched into `Events` frames.

use std::sync::Arc;

use bytes::BytesMut;
use quiver_engine::RecordedEvent;
use quiver_net::message::{self, Response};

use crate::budget::{Budget, SendError};

/// Sends one response frame, held against the budget until the client takes it.
pub async fn send(
    budget: &Arc<Budget>,
    stream: &mut quinn::SendStream,
    resp: &Response,
) -> Result<(), SendError> {
    let mut out = BytesMut::new();
    resp.encode(&mut out);
    crate::budget::write(stream, budget, &out, 0).await
}

/// Writes one stored event in the wire's event layout (no allocation).
pub fn put_recorded(payload: &mut BytesMut, e: &RecordedEvent) {
    message::put_event(
        payload,
        &e.stream,
        e.version,
        e.position,
        *e.id.as_bytes(),
        e.event_type(),
        e.content_type as u8,
        &e.data,
        &e.metadata,
        e.created_us,
    );
}

/// Appends one `Events` frame of `events` to `frame`.
pub fn encode_events<'a>(
    frame: &mut BytesMut,
    events: impl IntoIterator<Item = &'a RecordedEvent>,
    more: bool,
) {
    let flags = if more {
        quiver_net::frame::FLAG_MORE
    } else {
        0
    };
    quiver_net::frame::encode(frame, message::Kind::Events as u16, flags, |payload| {
        let at = payload.len();
        payload.extend_from_slice(&[0; 4]);
        let mut n = 0u32;
        for e in events {
            put_recorded(payload, e);
            n += 1;
        }
        payload[at..at + 4].copy_from_slice(&n.to_le_bytes());
    });
}

/// What a read holds besides its frame while it waits for its client, counted against the
/// budget: the engine's look-ahead of at most [`quiver_engine::READ_CHUNK_MAX`] events (their
/// payloads are slices of the mapping, not copies).
pub const READ_STATE_BYTES: usize =
    quiver_engine::READ_CHUNK_MAX * std::mem::size_of::<RecordedEvent>();
