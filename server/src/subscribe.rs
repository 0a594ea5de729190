//! Transient subscriptions: catch up from a start point, then follow new commits.
//!
//! Catch-up and live delivery are one loop over the log: read what is committed from the
//! next position (or version), send it, and when there is nothing more, wait for the commit
//! position to move. Because live events are read back from the log by position, exactly
//! like catch-up ones, the switch has no gap and no duplicate by construction, however
//! appends race with it. A slow subscriber holds no buffer: the loop reads only when QUIC
//! flow control lets it send, so it simply falls behind and catches up again from storage.

use std::sync::Arc;

use bytes::BytesMut;
use quiver_engine::{AllFilter, Direction, Engine, ReadError, ReadFrom, RecordedEvent};
use quiver_net::message::{self, Response};
use quiver_net::{ErrorCode, Text};

use crate::budget::SendError;
use crate::ctx::Ctx;
use crate::frames::{encode_events, send, READ_STATE_BYTES};

/// A caught-up subscriber further than this many positions behind the commit point is told
/// it fell behind.
pub const LAG_POSITIONS_MAX: u64 = 10_000;

/// Events read and sent per step.
pub const SUBSCRIBE_CHUNK_EVENTS: usize = 512;

/// What to follow.
pub enum Target {
    /// `$all`, filtered.
    All(AllFilter),
    /// One stream.
    Stream(String),
}

fn error(e: &ReadError) -> Response {
    let code = match e {
        ReadError::StreamDeleted(_) => ErrorCode::StreamDeleted,
        ReadError::Corruption(_) => ErrorCode::Corruption,
        ReadError::StreamNotFound(_) => ErrorCode::StreamNotFound,
    };
    Response::Error {
        code,
        message: Text::new(e.to_string()),
        actual: None,
    }
}

/// One step's read: up to a chunk of events from `next`, and where the next step starts.
/// The third value says whether the chunk was full (more may be waiting right now).
pub(crate) fn step(
    engine: &Engine,
    target: &Target,
    next: u64,
) -> Result<(Vec<RecordedEvent>, u64, bool), ReadError> {
    // Read the commit position first: everything below it is scanned by the read below.
    let committed = engine.commit_position();
    let events: Vec<RecordedEvent> = match target {
        Target::All(filter) => {
            if next >= committed {
                return Ok((Vec::new(), next, false));
            }
            let max = SUBSCRIBE_CHUNK_EVENTS as u64;
            let read = engine.read_all(ReadFrom::At(next), Direction::Forward, max, filter.clone());
            read.collect::<Result<_, _>>()?
        }
        Target::Stream(name) => {
            let max = SUBSCRIBE_CHUNK_EVENTS as u64;
            match engine.read_stream(name, ReadFrom::At(next), Direction::Forward, max) {
                Ok(read) => read.collect::<Result<_, _>>()?,
                Err(ReadError::StreamNotFound(_)) => Vec::new(),
                Err(e) => return Err(e),
            }
        }
    };
    let full = events.len() == SUBSCRIBE_CHUNK_EVENTS;
    let after_last = |e: &RecordedEvent| match target {
        Target::All(_) => e.position + 1,
        Target::Stream(_) => e.version + 1,
    };
    let next = match (events.last(), target) {
        (Some(last), _) if full => after_last(last),
        // A short read scanned every position below `committed` (and maybe more).
        (Some(last), Target::All(_)) => after_last(last).max(committed),
        (None, Target::All(_)) => next.max(committed),
        (Some(last), Target::Stream(_)) => after_last(last),
        (None, Target::Stream(_)) => next,
    };
    Ok((events, next, full))
}

/// Serves one subscription until the client stops reading, the server shuts down, or the
/// stream is deleted. `next` is the first position (`$all`) or version (stream) to deliver.
pub async fn run(
    ctx: &Arc<Ctx>,
    target: Target,
    payload: &[crate::payload::Compiled],
    mut next: u64,
    checkpoint_every: u32,
    out: &mut quinn::SendStream,
) -> Result<(), SendError> {
    let mut commits = ctx.commits.clone();
    ctx.metrics.subscriptions.inc();
    // Counted down however the subscription ends.
    struct Open<'a>(&'a Ctx);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            self.0.metrics.subscriptions.dec();
        }
    }
    let _open = Open(ctx);
    let mut caught_up = false;
    let mut scanned = 0u64;
    loop {
        // Seen before reading: a commit after this point wakes the wait below.
        let seen = *commits.borrow_and_update();
        let (mut events, after, full) = match step(&ctx.engine, &target, next) {
            Ok(s) => s,
            Err(e) => return send(&ctx.budget, out, &error(&e)).await,
        };
        events.retain(|e| {
            let json = e.content_type == quiver_engine::ContentType::Json;
            crate::payload::matches(payload, json, &e.data)
        });
        scanned += after - next;
        next = after;
        if !events.is_empty() {
            let mut frame = BytesMut::new();
            encode_events(&mut frame, &events, true);
            let delivered = events.len() as u64;
            // Positions scanned past the last delivery still count toward a checkpoint.
            scanned = match (&target, events.last()) {
                (Target::All(_), Some(last)) => next.saturating_sub(last.position + 1),
                _ => 0,
            };
            // Only the encoded frame waits for the client, not the events it was made from.
            drop(events);
            crate::budget::write(out, &ctx.budget, &frame, READ_STATE_BYTES).await?;
            drop(frame);
            ctx.metrics.subscription_deliveries.inc_by(delivered);
        }
        // A live `$all` subscriber that lags too far is told so; it keeps catching up from
        // storage (there is no buffer to overflow) and hears `CaughtUp` again when back.
        let lagging = ctx.engine.commit_position().saturating_sub(next) > LAG_POSITIONS_MAX;
        if caught_up && lagging && matches!(target, Target::All(_)) {
            caught_up = false;
            send(&ctx.budget, out, &Response::FellBehind { position: next }).await?;
        }
        if full {
            continue;
        }
        if !caught_up {
            caught_up = true;
            scanned = 0;
            send(&ctx.budget, out, &Response::CaughtUp { position: next }).await?;
        } else if checkpoint_every > 0 && scanned >= u64::from(checkpoint_every) {
            scanned = 0;
            send(&ctx.budget, out, &Response::Checkpoint { position: next }).await?;
        }
        // Wait for a commit newer than the one this step started from.
        if *commits.borrow() == seen {
            tokio::select! {
                changed = commits.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                _ = out.stopped() => return Ok(()),
            }
        }
    }
}

/// Where a subscription starts, from the request's `from`.
pub fn start(ctx: &Ctx, target: &Target, from: message::ReadFrom) -> u64 {
    match (from, target) {
        (message::ReadFrom::Start, _) => 0,
        (message::ReadFrom::At(v), _) => v,
        (message::ReadFrom::End, Target::All(_)) => ctx.engine.commit_position(),
        (message::ReadFrom::End, Target::Stream(name)) => ctx
            .engine
            .stream_info(name)
            .and_then(|i| i.current_version)
            .map_or(0, |v| v + 1),
    }
}
