//! One request, applied: decode has happened, this maps the request onto the engine and
//! writes the response frame(s) to the stream. Reads stream their results in frames of at
//! most [`READ_FRAME_EVENTS_MAX`] events or [`READ_FRAME_BYTES_MAX`] bytes, so a read of a
//! million events never sits in memory at once.

use std::sync::Arc;

use bytes::BytesMut;
use quiver_engine::{
    AllFilter, AppendError, AppendResult, ContentType, DeleteKind, Direction, Engine, EventData,
    ExpectedVersion, Matcher, ReadError, ReadFrom, RecordedEvent, StreamMetadata, StreamWrite,
};
use quiver_net::message::{self, Expected, Match, Metadata, Request, Response, StreamInfo};
use quiver_net::{ErrorCode, Text};

use crate::budget::SendError;
use crate::cluster::{ClusterHandle, RequestError, Write, WriteError};
use crate::ctx::{Ctx, ReadMode};
use crate::persistent::Groups;
use quiver_raft::Refused;

/// Most events in one `Events` frame.
pub const READ_FRAME_EVENTS_MAX: usize = 1024;
/// A frame is sent once its payload passes this size.
pub const READ_FRAME_BYTES_MAX: usize = 1 << 20;

fn error(code: ErrorCode, message: impl Into<String>, actual: Option<u64>) -> Response {
    Response::Error {
        code,
        message: Text::new(message),
        actual,
    }
}

fn append_error(e: AppendError) -> Response {
    let code = match &e {
        AppendError::WrongExpectedVersion { actual, .. } => {
            return error(ErrorCode::WrongExpectedVersion, e.to_string(), *actual)
        }
        AppendError::StreamDeleted(_) => ErrorCode::StreamDeleted,
        AppendError::InvalidStreamName { .. } | AppendError::InvalidEventType { .. } => {
            ErrorCode::InvalidName
        }
        AppendError::InvalidRequest(_) => ErrorCode::InvalidRequest,
        AppendError::IdempotencyMismatch(_) => ErrorCode::IdempotencyMismatch,
        AppendError::TooLarge { .. } => ErrorCode::TooLarge,
        AppendError::Corruption(_) => ErrorCode::Corruption,
        AppendError::Failed(_)
        | AppendError::NoSpace
        | AppendError::Closed
        | AppendError::Loading => ErrorCode::Unavailable,
    };
    error(code, e.to_string(), None)
}

fn read_error(e: ReadError) -> Response {
    let code = match &e {
        ReadError::StreamNotFound(_) => ErrorCode::StreamNotFound,
        ReadError::StreamDeleted(_) => ErrorCode::StreamDeleted,
        ReadError::Corruption(_) => ErrorCode::Corruption,
    };
    error(code, e.to_string(), None)
}

fn persistent_done(r: Result<u64, crate::persistent::GroupError>) -> Response {
    match r {
        Ok(index) => Response::Done { index },
        Err(e) => e.response(),
    }
}

fn expected(e: Expected) -> ExpectedVersion {
    match e {
        Expected::Any => ExpectedVersion::Any,
        Expected::NoStream => ExpectedVersion::NoStream,
        Expected::StreamExists => ExpectedVersion::StreamExists,
        Expected::Exact(v) => ExpectedVersion::Exact(v),
    }
}

fn read_from(f: message::ReadFrom) -> ReadFrom {
    match f {
        message::ReadFrom::Start => ReadFrom::Start,
        message::ReadFrom::End => ReadFrom::End,
        message::ReadFrom::At(v) => ReadFrom::At(v),
    }
}

/// A filter's matcher, or why its regular expression is refused.
fn matcher(m: Option<Match>) -> Result<Option<Matcher>, String> {
    match m {
        None => Ok(None),
        Some(Match::Prefix(p)) => Ok(Some(Matcher::Prefix(p.as_str().to_string()))),
        Some(Match::Regex(r)) => Matcher::regex(r.as_str())
            .map(Some)
            .map_err(|e| format!("bad regex: {e}")),
    }
}

fn metadata_in(m: Metadata) -> StreamMetadata {
    StreamMetadata {
        max_count: m.max_count,
        max_age_us: m.max_age_us,
        truncate_before: m.truncate_before,
        custom: m.custom,
    }
}

fn info_out(i: quiver_engine::StreamInfo) -> StreamInfo {
    StreamInfo {
        stream: Text::new(i.name.to_string()),
        current_version: i.current_version,
        deleted: match i.deleted {
            None => 0,
            Some(DeleteKind::Soft) => 1,
            Some(DeleteKind::Hard) => 2,
        },
        metadata: Metadata {
            max_count: i.metadata.max_count,
            max_age_us: i.metadata.max_age_us,
            truncate_before: i.metadata.truncate_before,
            custom: i.metadata.custom,
        },
    }
}

/// Runs a blocking engine call off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("engine calls do not panic")
}

/// Applies one request (never `Hello`, which the connection handles), writes its answer and
/// counts it.
pub async fn apply(
    ctx: &Arc<Ctx>,
    groups: &Groups,
    reads: ReadMode,
    req: Request,
    out: &mut quinn::SendStream,
) -> Result<(), SendError> {
    let started = std::time::Instant::now();
    let kind = req.kind();
    let appended = match &req {
        Request::Append { writes } => {
            let events = writes.iter().map(|w| w.events.len() as u64).sum::<u64>();
            let bytes = writes.iter().flat_map(|w| &w.events);
            Some((
                events,
                bytes
                    .map(|e| (e.data.len() + e.metadata.len()) as u64)
                    .sum::<u64>(),
            ))
        }
        _ => None,
    };
    let resp = answer(ctx, groups, reads, req, out).await?;
    if let Some(resp) = &resp {
        match resp {
            Response::Error { code, .. } => ctx.metrics.error(&format!("{code:?}")),
            Response::Appended {
                idempotent: false, ..
            } => {
                let (events, bytes) = appended.expect("an Appended answers an Append");
                ctx.metrics.events_appended.inc_by(events);
                ctx.metrics.bytes_appended.inc_by(bytes);
            }
            _ => {}
        }
    }
    // Counted before the answer leaves: a client that has its answer sees it counted.
    ctx.metrics
        .request(&format!("{kind:?}"), started.elapsed().as_secs_f64());
    if let Some(resp) = &resp {
        let _answering = tracing::trace_span!("stage.server.answer");
        crate::frames::send(&ctx.budget, out, resp).await?;
    }
    Ok(())
}

/// The answer to a request; `None` when it was already streamed (reads).
async fn answer(
    ctx: &Arc<Ctx>,
    groups: &Groups,
    reads: ReadMode,
    req: Request,
    out: &mut quinn::SendStream,
) -> Result<Option<Response>, SendError> {
    let engine = ctx.engine.clone();
    let req = match &ctx.cluster {
        None => req,
        Some(cluster) => match in_cluster(ctx, cluster, reads, req).await {
            Routed::Local(local) => local,
            Routed::Answered(answer) => return Ok(Some(answer)),
        },
    };
    let resp = match req {
        Request::Hello { .. } => error(ErrorCode::InvalidRequest, "Hello was already done", None),
        Request::Subscribe {
            stream,
            from,
            event_type,
            stream_filter,
            checkpoint_every,
            payload,
        } => {
            let payload = match crate::payload::compile(&payload) {
                Ok(p) => p,
                Err(e) => return Ok(Some(error(ErrorCode::InvalidRequest, e, None))),
            };
            let target = match stream {
                Some(s) => crate::subscribe::Target::Stream(s.as_str().to_string()),
                None => match (matcher(event_type), matcher(stream_filter)) {
                    (Ok(event_type), Ok(stream)) => {
                        crate::subscribe::Target::All(AllFilter { event_type, stream })
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        return Ok(Some(error(ErrorCode::InvalidRequest, e, None)))
                    }
                },
            };
            let next = crate::subscribe::start(ctx, &target, from);
            crate::subscribe::run(ctx, target, &payload, next, checkpoint_every, out).await?;
            return Ok(None);
        }
        Request::Append { writes } => append(&engine, writes).await,
        Request::PersistentCreate { definition } => {
            let done = match crate::persistent::parse_definition(definition.as_str()) {
                Ok(d) => groups.create(d).await,
                Err(e) => Err(e),
            };
            persistent_done(done)
        }
        Request::PersistentUpdate { definition } => {
            let done = match crate::persistent::parse_definition(definition.as_str()) {
                Ok(d) => groups.update(d).await,
                Err(e) => Err(e),
            };
            persistent_done(done)
        }
        Request::PersistentDelete { group } => persistent_done(groups.delete(group.as_str()).await),
        Request::PersistentReplayParked { group } => {
            persistent_done(groups.replay_parked(group.as_str()).await)
        }
        Request::PersistentList => {
            let list = groups.list().await;
            let json = serde_json::to_string(&list).expect("infos serialize");
            Response::PersistentGroups(Text::new(json))
        }
        Request::PersistentInfo { group } => match groups.info(group.as_str()).await {
            Ok(info) => {
                let json = serde_json::to_string(&info).expect("infos serialize");
                Response::PersistentInfo(Text::new(json))
            }
            Err(e) => e.response(),
        },
        Request::PersistentConnect { .. }
        | Request::PersistentAck { .. }
        | Request::PersistentNack { .. } => error(
            ErrorCode::InvalidRequest,
            "acks and nacks belong on a PersistentConnect stream",
            None,
        ),
        Request::ReadStream {
            stream,
            from,
            backward,
            max_count,
        } => {
            let dir = if backward {
                Direction::Backward
            } else {
                Direction::Forward
            };
            match engine.read_stream(stream.as_str(), read_from(from), dir, max_count) {
                Ok(read) => return stream_events(ctx, read, out).await.map(|()| None),
                Err(e) => read_error(e),
            }
        }
        Request::ReadAll {
            from,
            backward,
            max_count,
            event_type,
            stream,
        } => {
            let filter = match (matcher(event_type), matcher(stream)) {
                (Ok(event_type), Ok(stream)) => AllFilter { event_type, stream },
                (Err(e), _) | (_, Err(e)) => {
                    return Ok(Some(error(ErrorCode::InvalidRequest, e, None)))
                }
            };
            let dir = if backward {
                Direction::Backward
            } else {
                Direction::Forward
            };
            let read = engine.read_all(read_from(from), dir, max_count, filter);
            return stream_events(ctx, read, out).await.map(|()| None);
        }
        Request::StreamInfo { stream } => {
            Response::StreamInfo(engine.stream_info(stream.as_str()).map(info_out))
        }
        Request::ListStreams {
            prefix,
            after,
            limit,
        } => {
            let after = after.as_ref().map(Text::as_str);
            let list = engine.list_streams(prefix.as_str(), after, limit.min(10_000) as usize);
            Response::Streams(list.into_iter().map(info_out).collect())
        }
        Request::SetMetadata { stream, metadata } => {
            let m = metadata_in(metadata);
            let r = blocking(move || engine.set_metadata(stream.as_str(), m)).await;
            r.map_or_else(append_error, |index| Response::Done { index })
        }
        Request::Delete {
            stream,
            expected: e,
            hard,
        } => {
            let kind = if hard {
                DeleteKind::Hard
            } else {
                DeleteKind::Soft
            };
            let r =
                blocking(move || engine.delete_stream(stream.as_str(), expected(e), kind)).await;
            r.map_or_else(append_error, |index| Response::Done { index })
        }
        Request::Scavenge => match blocking(move || engine.scavenge()).await {
            Ok(s) => Response::Scavenged {
                segments_scanned: s.segments_scanned,
                segments_rewritten: s.segments_rewritten,
                events_removed: s.events_removed,
                bytes_reclaimed: s.bytes_reclaimed,
            },
            Err(e) => error(ErrorCode::Internal, e.to_string(), None),
        },
        Request::SnapshotPut {
            stream,
            version,
            data,
        } => {
            let r = blocking(move || engine.put_snapshot(stream.as_str(), version, &data)).await;
            r.map_or_else(append_error, |index| Response::Done { index })
        }
        Request::SnapshotGet {
            stream,
            version,
            latest,
        } => {
            let r = if latest {
                engine.latest_snapshot(stream.as_str(), version)
            } else {
                engine.get_snapshot(stream.as_str(), version)
            };
            match r {
                Ok(s) => Response::Snapshot(
                    s.map(|s| (Text::new(s.stream.to_string()), s.version, s.data)),
                ),
                Err(e) => read_error(e),
            }
        }
        Request::SnapshotList { stream } => {
            Response::SnapshotVersions(engine.list_snapshots(stream.as_str()))
        }
        Request::SnapshotDelete { stream, version } => {
            let r = blocking(move || engine.delete_snapshot(stream.as_str(), version)).await;
            r.map_or_else(append_error, |index| Response::Done { index })
        }
        Request::ClusterAdd { .. }
        | Request::ClusterRemove { .. }
        | Request::ClusterTransfer { .. }
        | Request::ClusterMembers => error(
            ErrorCode::InvalidRequest,
            "this server is a single node, not a cluster node",
            None,
        ),
        // Taken by the connection (it holds the options).
        Request::SetOptions { .. } => Response::Done { index: 0 },
        Request::Status => Response::Status {
            store_id: Text::new(ctx.store_id.clone()),
            server: Text::new(concat!("quiver ", env!("CARGO_PKG_VERSION"))),
            role: Text::new(match &ctx.cluster {
                None => "leader".to_string(),
                Some(c) => c.status().role,
            }),
            commit_position: engine.commit_position(),
            last_index: engine.last_index_term().0,
            streams: engine.stream_count(),
        },
    };
    Ok(Some(resp))
}

/// The engine's form of an append's writes, or why they are refused (`InvalidRequest`).
fn stream_writes(writes: Vec<message::StreamWrite>) -> Result<Vec<StreamWrite>, String> {
    let mut out = Vec::with_capacity(writes.len());
    for w in writes {
        let mut events = Vec::with_capacity(w.events.len());
        for e in w.events {
            let content_type = match e.content_type {
                0 => ContentType::Binary,
                1 => ContentType::Json,
                c => return Err(format!("content type {c}")),
            };
            events.push(EventData {
                id: quiver_engine::Uuid::from_bytes(e.id),
                event_type: e.event_type.as_str().to_string(),
                content_type,
                data: e.data,
                metadata: e.metadata,
            });
        }
        out.push(StreamWrite {
            stream: w.stream.as_str().to_string(),
            expected: expected(w.expected),
            events,
        });
    }
    Ok(out)
}

fn appended(r: AppendResult) -> Response {
    Response::Appended {
        next_expected_version: r.next_expected_version,
        position_first: r.position_first,
        position_last: r.position_last,
        index: r.index,
        idempotent: r.idempotent,
    }
}

async fn append(engine: &Engine, writes: Vec<message::StreamWrite>) -> Response {
    // Stage spans (TRACE): the wire's writes turned into the engine's (`convert`), the
    // engine's synchronous part (`engine_call`: planned and framed under its lock), the wait
    // for the durable callback (`durable`: from the call to the callback, write and
    // fdatasync included) and the hop from that callback back to this task (`wakeup`).
    let converting = tracing::trace_span!("stage.server.convert");
    let out = match stream_writes(writes) {
        Ok(w) => w,
        Err(why) => return error(ErrorCode::InvalidRequest, why, None),
    };
    drop(converting);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let engine = engine.clone();
    let durable = tracing::trace_span!("stage.server.durable");
    let done = move |r| {
        drop(durable);
        let _ = tx.send((r, tracing::trace_span!("stage.server.wakeup")));
    };
    // `append_with` frames under a short lock and returns; it blocks only while the id
    // index loads after open, and only then is the call moved off the async workers.
    if engine.is_writable() {
        let _calling = tracing::trace_span!("stage.server.engine_call");
        engine.append_with(out, done);
    } else {
        blocking(move || engine.append_with(out, done)).await;
    }
    match rx.await {
        Ok((Ok(r), _woken)) => appended(r),
        Ok((Err(e), _woken)) => append_error(e),
        Err(_) => error(ErrorCode::Unavailable, "the engine stopped", None),
    }
}

/// The answer to a request Raft did not take, or whose outcome is unknown.
fn request_error(e: RequestError) -> Response {
    let (code, message, leader) = match e {
        RequestError::Refused(Refused::NotLeader(Some(id))) => (
            ErrorCode::NotLeader,
            format!("this node is not the leader; the leader is node {id}"),
            Some(id),
        ),
        RequestError::Refused(Refused::NotLeader(None)) => (
            ErrorCode::NotLeader,
            "this node is not the leader and knows of none yet (an election is under way)"
                .to_string(),
            None,
        ),
        RequestError::Timeout => (ErrorCode::Timeout, e.to_string(), None),
        RequestError::LeadershipLost(_) | RequestError::Stopped => (
            ErrorCode::Unavailable,
            format!("{e}; retry the same write (with the same event ids) to learn its outcome"),
            None,
        ),
        RequestError::Invalid(_) => (ErrorCode::Internal, e.to_string(), None),
        RequestError::Refused(Refused::InvalidChange(why)) => (
            ErrorCode::InvalidRequest,
            format!("membership change refused: {why}"),
            None,
        ),
        RequestError::Refused(_)
        | RequestError::Overwritten(_)
        | RequestError::ReadLost
        | RequestError::Busy => (ErrorCode::Unavailable, format!("{e}; retry"), None),
    };
    error(code, message, leader)
}

/// `NotLeader`, naming the leader if known, unless this node leads.
pub(crate) fn not_leading(cluster: &ClusterHandle) -> Option<Response> {
    let status = cluster.status();
    if status.role == "leader" {
        return None;
    }
    Some(request_error(RequestError::Refused(Refused::NotLeader(
        status.leader.filter(|l| *l != status.node_id),
    ))))
}

fn not_in_cluster(what: &str) -> Response {
    error(
        ErrorCode::Unavailable,
        format!("{what} is not available in cluster mode yet (docs/CLUSTER.md)"),
        None,
    )
}

/// Where a request on a cluster node goes.
enum Routed {
    /// Served from this node's engine.
    Local(Request),
    /// Answered already.
    Answered(Response),
}

/// A request on a cluster node: a write goes through Raft and is answered here; a read waits
/// for a read index (so that it sees every write acknowledged before it began) and is given
/// back to be served from this node's engine; a subscription is given back at once (it
/// delivers what this node has committed, in order, from where it is asked to start).
async fn in_cluster(ctx: &Ctx, cluster: &ClusterHandle, reads: ReadMode, req: Request) -> Routed {
    let write = match req {
        Request::Append { writes } => match stream_writes(writes) {
            Ok(w) => Write::Append(w),
            Err(why) => return Routed::Answered(error(ErrorCode::InvalidRequest, why, None)),
        },
        Request::SetMetadata { stream, metadata } => Write::SetMetadata {
            stream: stream.as_str().to_string(),
            metadata: metadata_in(metadata),
        },
        Request::Delete {
            stream,
            expected: e,
            hard,
        } => Write::Delete {
            stream: stream.as_str().to_string(),
            expected: expected(e),
            kind: if hard {
                DeleteKind::Hard
            } else {
                DeleteKind::Soft
            },
        },
        Request::SnapshotPut {
            stream,
            version,
            data,
        } => Write::PutSnapshot {
            stream: stream.as_str().to_string(),
            version,
            data,
        },
        Request::SnapshotDelete { stream, version } => Write::DeleteSnapshot {
            stream: stream.as_str().to_string(),
            version,
        },
        Request::Scavenge => return Routed::Answered(not_in_cluster("scavenging")),
        Request::ClusterAdd { id, peer, client } => {
            let parse = |a: &Text| a.as_str().parse::<std::net::SocketAddr>().ok();
            let client_addr = parse(&client);
            let bad = |what: &str, a: &Text| {
                let why = format!("{what} address {:?} is not IP:PORT", a.as_str());
                error(ErrorCode::InvalidRequest, why, None)
            };
            let answer = match parse(&peer) {
                None => bad("peer", &peer),
                Some(_) if !client.as_str().is_empty() && client_addr.is_none() => {
                    bad("client", &client)
                }
                Some(peer) => {
                    let added = cluster.add_member(id, peer, client_addr, ctx.request_timeout);
                    match added.await {
                        Ok(index) => Response::Done { index },
                        Err(WriteError::Append(e)) => append_error(e),
                        Err(WriteError::Request(e)) => request_error(e),
                    }
                }
            };
            return Routed::Answered(answer);
        }
        Request::ClusterRemove { id } => {
            return Routed::Answered(match cluster.remove_member(id, ctx.request_timeout).await {
                Ok(index) => Response::Done { index },
                Err(e) => request_error(e),
            })
        }
        Request::ClusterMembers => {
            let (leader, members) = cluster.members();
            let members = members
                .into_iter()
                .map(|m| message::Member {
                    id: m.id,
                    voter: m.voter,
                    client: Text::new(m.client.map(|c| c.to_string()).unwrap_or_default()),
                })
                .collect();
            return Routed::Answered(Response::Members { leader, members });
        }
        Request::ClusterTransfer { to } => {
            let to = cluster.transfer_leader(to, ctx.request_timeout).await;
            return Routed::Answered(match to {
                Ok(to) => Response::Done { index: to },
                Err(e) => request_error(e),
            });
        }
        // Groups run on the leader, which writes their records through Raft.
        r @ (Request::PersistentCreate { .. }
        | Request::PersistentUpdate { .. }
        | Request::PersistentDelete { .. }
        | Request::PersistentReplayParked { .. }
        | Request::PersistentList
        | Request::PersistentInfo { .. }) => {
            return match not_leading(cluster) {
                Some(refused) => Routed::Answered(refused),
                None => Routed::Local(r),
            }
        }
        r @ (Request::Hello { .. }
        | Request::Subscribe { .. }
        | Request::PersistentConnect { .. }
        | Request::PersistentAck { .. }
        | Request::PersistentNack { .. }
        | Request::SetOptions { .. }) => return Routed::Local(r),
        // The `mutation-stale-reads` feature (a test-only build, for the consistency suite's
        // check that it catches a real bug) serves every read without a read index.
        read if reads == ReadMode::Follower || cfg!(feature = "mutation-stale-reads") => {
            return Routed::Local(read)
        }
        read => {
            return match cluster.read_index(ctx.request_timeout).await {
                Ok(_) => Routed::Local(read),
                Err(e) => Routed::Answered(request_error(e)),
            }
        }
    };
    let is_append = matches!(write, Write::Append(_));
    Routed::Answered(match cluster.write(write, ctx.request_timeout).await {
        Ok(r) if is_append => appended(r),
        Ok(r) => Response::Done { index: r.index },
        Err(WriteError::Append(e)) => append_error(e),
        Err(WriteError::Request(e)) => request_error(e),
    })
}

/// Streams a read's events in frames of at most [`READ_FRAME_EVENTS_MAX`] events or about
/// [`READ_FRAME_BYTES_MAX`] bytes; the last frame has no `FLAG_MORE`. A failure part way ends
/// the response with an `Error` frame after the events already sent. Each frame is held
/// against the budget until the client takes it; a reader the budget drops ends there.
async fn stream_events(
    ctx: &Ctx,
    events: impl Iterator<Item = Result<RecordedEvent, ReadError>>,
    out: &mut quinn::SendStream,
) -> Result<(), SendError> {
    let mut events = events.peekable();
    loop {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut failure = None;
        while batch.len() < READ_FRAME_EVENTS_MAX && bytes < READ_FRAME_BYTES_MAX {
            match events.next() {
                None => break,
                Some(Ok(e)) => {
                    bytes += e.data.len() + e.metadata.len() + message::EVENT_HEADER_BYTES;
                    batch.push(e);
                }
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let more = failure.is_some() || events.peek().is_some();
        let mut frame = BytesMut::with_capacity(bytes + 64);
        crate::frames::encode_events(&mut frame, &batch, more);
        // Only the encoded frame waits for the client, not the events it was made from.
        drop(batch);
        crate::budget::write(out, &ctx.budget, &frame, crate::frames::READ_STATE_BYTES).await?;
        drop(frame);
        if let Some(e) = failure {
            return crate::frames::send(&ctx.budget, out, &read_error(e)).await;
        }
        if !more {
            return Ok(());
        }
    }
}
