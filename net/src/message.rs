//! Messages: every request a client sends and every response a server returns, with their
//! encodings. `docs/PROTOCOL.md` describes each one byte by byte; this file is its twin.
//!
//! A request is one frame on a fresh bidirectional QUIC stream; its response is one frame, or
//! for reads a sequence of `Events` frames whose last one has no `FLAG_MORE`; a persistent
//! subscription's consumer stream (`PersistentConnect`) stays open both ways, carrying
//! `Delivery` frames one way and `PersistentAck` / `PersistentNack` the other. Encoding writes
//! straight into the outgoing buffer (no per-event allocation); decoding hands out slices of
//! the received payload (no copies) and returns [`DecodeError`] on any malformed input.

use bytes::{BufMut, Bytes, BytesMut};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::frame::{self, Frame};
use crate::wire::{put_bytes32, put_opt_u64, put_str16, put_str8, DecodeError, Reader, Text};

/// The protocol version this crate speaks (also in the ALPN name, `quiver/1`).
pub const PROTOCOL_VERSION: u16 = 1;
/// ALPN protocol name.
pub const ALPN: &[u8] = b"quiver/1";

/// Message kinds: requests are `0x01xx`, responses `0x02xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
#[allow(missing_docs)]
pub enum Kind {
    Hello = 0x0100,
    Append = 0x0101,
    ReadStream = 0x0102,
    ReadAll = 0x0103,
    StreamInfo = 0x0104,
    ListStreams = 0x0105,
    SetMetadata = 0x0106,
    Delete = 0x0107,
    Scavenge = 0x0108,
    SnapshotPut = 0x0109,
    SnapshotGet = 0x010A,
    SnapshotList = 0x010B,
    SnapshotDelete = 0x010C,
    Status = 0x010D,
    Subscribe = 0x010E,
    PersistentCreate = 0x010F,
    PersistentUpdate = 0x0110,
    PersistentDelete = 0x0111,
    PersistentList = 0x0112,
    PersistentInfo = 0x0113,
    PersistentReplayParked = 0x0114,
    PersistentConnect = 0x0115,
    PersistentAck = 0x0116,
    PersistentNack = 0x0117,
    ClusterAdd = 0x0118,
    ClusterRemove = 0x0119,
    ClusterTransfer = 0x011A,
    ClusterMembers = 0x011B,
    SetOptions = 0x011C,
    HelloOk = 0x0200,
    Appended = 0x0201,
    Events = 0x0202,
    StreamInfoReply = 0x0204,
    Streams = 0x0205,
    Done = 0x0206,
    Scavenged = 0x0207,
    SnapshotReply = 0x0208,
    SnapshotVersions = 0x0209,
    StatusReply = 0x020A,
    CaughtUp = 0x020B,
    Checkpoint = 0x020C,
    PersistentGroups = 0x020D,
    PersistentInfoReply = 0x020E,
    Delivery = 0x020F,
    FellBehind = 0x0210,
    Members = 0x0211,
    Error = 0x02FF,
}

impl Kind {
    /// The kind for a frame's kind field.
    pub fn from_u16(k: u16) -> Option<Kind> {
        use Kind::*;
        const ALL: [Kind; 47] = [
            Hello,
            Append,
            ReadStream,
            ReadAll,
            StreamInfo,
            ListStreams,
            SetMetadata,
            Delete,
            Scavenge,
            SnapshotPut,
            SnapshotGet,
            SnapshotList,
            SnapshotDelete,
            Status,
            Subscribe,
            PersistentCreate,
            PersistentUpdate,
            PersistentDelete,
            PersistentList,
            PersistentInfo,
            PersistentReplayParked,
            PersistentConnect,
            PersistentAck,
            PersistentNack,
            ClusterAdd,
            ClusterRemove,
            ClusterTransfer,
            ClusterMembers,
            SetOptions,
            HelloOk,
            Appended,
            Events,
            StreamInfoReply,
            Streams,
            Done,
            Scavenged,
            SnapshotReply,
            SnapshotVersions,
            StatusReply,
            CaughtUp,
            Checkpoint,
            PersistentGroups,
            PersistentInfoReply,
            Delivery,
            FellBehind,
            Members,
            Error,
        ];
        ALL.into_iter().find(|x| *x as u16 == k)
    }
}

/// Expected version of an append or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No check.
    Any,
    /// The stream must not exist.
    NoStream,
    /// The stream must exist.
    StreamExists,
    /// The stream's last version must be this.
    Exact(u64),
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The beginning.
    Start,
    /// The end.
    End,
    /// A version (stream reads) or position (`$all`), inclusive.
    At(u64),
}

/// A test on a string in a `$all` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Starts with.
    Prefix(Text),
    /// Matches a regular expression (checked by the server).
    Regex(Text),
}

/// A test on a field of an event's JSON data, for `by_event_payload` subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicate {
    /// Dot-separated path to the field (`order.total`; array items by index: `lines.0`).
    pub path: Text,
    /// How the field compares with `value`: 0 `==`, 1 `!=`, 2 `<`, 3 `<=`, 4 `>`, 5 `>=`.
    pub op: u8,
    /// JSON text of the value compared with (numbers compare as numbers, strings as text).
    pub value: Text,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Event id (UUID bytes).
    pub id: [u8; 16],
    /// Event type (1–255 bytes).
    pub event_type: Text,
    /// 0 binary, 1 JSON.
    pub content_type: u8,
    /// Payload.
    pub data: Bytes,
    /// User metadata.
    pub metadata: Bytes,
}

/// One stream's part of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamWrite {
    /// Stream name (1–255 bytes).
    pub stream: Text,
    /// Expected version.
    pub expected: Expected,
    /// Events, in order.
    pub events: Vec<NewEvent>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Stream.
    pub stream: Text,
    /// Version in the stream.
    pub version: u64,
    /// Position in `$all`.
    pub position: u64,
    /// Event id.
    pub id: [u8; 16],
    /// Event type.
    pub event_type: Text,
    /// 0 binary, 1 JSON.
    pub content_type: u8,
    /// Payload.
    pub data: Bytes,
    /// User metadata.
    pub metadata: Bytes,
    /// Created, µs since the Unix epoch.
    pub created_us: u64,
}

/// Stream metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Keep the newest N events.
    pub max_count: Option<u64>,
    /// Hide events older than this many µs.
    pub max_age_us: Option<u64>,
    /// Hide versions below this.
    pub truncate_before: Option<u64>,
    /// Opaque user metadata.
    pub custom: Bytes,
}

/// A stream's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Name.
    pub stream: Text,
    /// Last version, if it has events.
    pub current_version: Option<u64>,
    /// 0 live, 1 soft-deleted, 2 hard-deleted.
    pub deleted: u8,
    /// Metadata.
    pub metadata: Metadata,
}

/// Error codes carried by [`Response::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
#[allow(missing_docs)]
pub enum ErrorCode {
    WrongExpectedVersion = 1,
    StreamDeleted = 2,
    StreamNotFound = 3,
    InvalidName = 4,
    InvalidRequest = 5,
    TooLarge = 6,
    IdempotencyMismatch = 7,
    Unauthenticated = 8,
    UnsupportedVersion = 9,
    Malformed = 10,
    Corruption = 11,
    Unavailable = 12,
    Timeout = 13,
    NotLeader = 14,
    Internal = 15,
    AlreadyExists = 16,
}

impl ErrorCode {
    /// The code for a number; unknown numbers (from a newer server) read as `Internal`.
    pub fn from_u16(c: u16) -> ErrorCode {
        use ErrorCode::*;
        const ALL: [ErrorCode; 16] = [
            WrongExpectedVersion,
            StreamDeleted,
            StreamNotFound,
            InvalidName,
            InvalidRequest,
            TooLarge,
            IdempotencyMismatch,
            Unauthenticated,
            UnsupportedVersion,
            Malformed,
            Corruption,
            Unavailable,
            Timeout,
            NotLeader,
            Internal,
            AlreadyExists,
        ];
        ALL.into_iter().find(|x| *x as u16 == c).unwrap_or(Internal)
    }
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Request {
    /// First request of a connection: versions and credentials.
    Hello {
        version: u16,
        client: Text,
        token: Bytes,
    },
    /// Append to one or more streams atomically.
    Append {
        writes: Vec<StreamWrite>,
    },
    ReadStream {
        stream: Text,
        from: ReadFrom,
        backward: bool,
        max_count: u64,
    },
    ReadAll {
        from: ReadFrom,
        backward: bool,
        max_count: u64,
        event_type: Option<Match>,
        stream: Option<Match>,
    },
    StreamInfo {
        stream: Text,
    },
    ListStreams {
        prefix: Text,
        after: Option<Text>,
        limit: u32,
    },
    SetMetadata {
        stream: Text,
        metadata: Metadata,
    },
    /// `hard`: tombstone for ever; otherwise a soft delete.
    Delete {
        stream: Text,
        expected: Expected,
        hard: bool,
    },
    Scavenge,
    SnapshotPut {
        stream: Text,
        version: u64,
        data: Bytes,
    },
    /// `latest`: the newest at or below `version`; otherwise exactly `version`.
    SnapshotGet {
        stream: Text,
        version: u64,
        latest: bool,
    },
    SnapshotList {
        stream: Text,
    },
    SnapshotDelete {
        stream: Text,
        version: u64,
    },
    Status,
    /// A transient subscription: catch up from `from`, then receive new events as they
    /// commit, in position order, with no gap and no duplicate at the switch. `stream`:
    /// one stream (`from` is a version); `None`: `$all` (`from` is a position), filtered by
    /// `event_type` and `stream_filter`. `checkpoint_every`: after at least this many
    /// positions pass without a match, the server sends a `Checkpoint` (0: never).
    Subscribe {
        stream: Option<Text>,
        from: ReadFrom,
        event_type: Option<Match>,
        stream_filter: Option<Match>,
        checkpoint_every: u32,
        /// Every predicate must hold on the event's JSON data (a non-JSON event does not
        /// match).
        payload: Vec<Predicate>,
    },
    /// Creates a persistent subscription group; `definition` is its JSON definition.
    PersistentCreate {
        definition: Text,
    },
    /// Changes a group's settings; `definition` is its whole new JSON definition.
    PersistentUpdate {
        definition: Text,
    },
    PersistentDelete {
        group: Text,
    },
    PersistentList,
    PersistentInfo {
        group: Text,
    },
    /// Delivers the group's parked events again.
    PersistentReplayParked {
        group: Text,
    },
    /// Joins a group as a consumer: the stream stays open both ways; the server sends
    /// `Delivery` frames, the client sends `PersistentAck` / `PersistentNack` frames.
    PersistentConnect {
        group: Text,
    },
    /// On a consumer stream: these positions are handled.
    PersistentAck {
        positions: Vec<u64>,
    },
    /// On a consumer stream: these positions failed; `action` 0 retry, 1 park, 2 skip.
    PersistentNack {
        action: u8,
        positions: Vec<u64>,
    },
    /// Cluster: adds node `id`, at peer address `peer` (and client address `client`, empty
    /// if not given), as a learner, promoted to voter once caught up.
    ClusterAdd {
        id: u64,
        peer: Text,
        client: Text,
    },
    /// Cluster: removes node `id` (its id is retired).
    ClusterRemove {
        id: u64,
    },
    /// Cluster: hands leadership to voter `to` (absent: the most caught-up one).
    ClusterTransfer {
        to: Option<u64>,
    },
    /// Cluster: the members, their client addresses, and the leader.
    ClusterMembers,
    /// This connection's options from now on. `follower_reads`: reads are served from the
    /// node's own committed state without a read index (they may miss writes acknowledged
    /// elsewhere just before; cheaper, and possible without a leader).
    SetOptions {
        follower_reads: bool,
    },
}

/// A cluster member, as `Members` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// A voter (else a learner).
    pub voter: bool,
    /// Its client address (`host:port`), empty when not known.
    pub client: Text,
}

/// What a server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Response {
    HelloOk {
        version: u16,
        server: Text,
        store_id: Text,
        max_frame: u32,
    },
    Appended {
        next_expected_version: u64,
        position_first: u64,
        position_last: u64,
        index: u64,
        idempotent: bool,
    },
    /// A batch of a read's events; `more` (the frame flag) says whether others follow.
    Events {
        events: Vec<Event>,
        more: bool,
    },
    StreamInfo(Option<StreamInfo>),
    Streams(Vec<StreamInfo>),
    /// A write without a richer result: the Raft index of its entry.
    Done {
        index: u64,
    },
    Scavenged {
        segments_scanned: u64,
        segments_rewritten: u64,
        events_removed: u64,
        bytes_reclaimed: u64,
    },
    Snapshot(Option<(Text, u64, Bytes)>),
    SnapshotVersions(Vec<u64>),
    Status {
        store_id: Text,
        server: Text,
        role: Text,
        commit_position: u64,
        last_index: u64,
        streams: u64,
    },
    /// `actual`: the stream's version, for `WrongExpectedVersion`.
    Error {
        code: ErrorCode,
        message: Text,
        actual: Option<u64>,
    },
    /// A cluster's members and leader.
    Members {
        leader: Option<u64>,
        members: Vec<Member>,
    },
    /// A subscription has delivered everything committed so far; live events follow.
    /// `position`: where it would resume (a position for `$all`, a version for a stream).
    CaughtUp {
        position: u64,
    },
    /// A subscription has scanned up to `position` (exclusive) with nothing more to deliver:
    /// resume from here.
    Checkpoint {
        position: u64,
    },
    /// A live subscription is more than the server's lag limit behind the commit point: it
    /// is catching up from storage again (a `CaughtUp` follows when it is back). Nothing is
    /// dropped; this says only that the subscriber is slow.
    FellBehind {
        position: u64,
    },
    /// The persistent subscription groups, as JSON text (an array of group infos).
    PersistentGroups(Text),
    /// One persistent subscription group, as JSON text.
    PersistentInfo(Text),
    /// One event for a consumer of a persistent subscription, and how many times it was
    /// retried before (0 on its first delivery). Always sent with `FLAG_MORE`.
    Delivery {
        retry_count: u32,
        event: Event,
    },
}

/// Fixed part of each event in an `Append` request.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct NewEventHeader {
    /// Event id.
    pub id: [u8; 16],
    /// Data length.
    pub data_len: U32,
    /// Metadata length.
    pub meta_len: U32,
    /// Event type length.
    pub type_len: u8,
    /// Content type.
    pub content_type: u8,
    /// Zero.
    pub reserved: [u8; 2],
}

/// Fixed part of each event in an `Events` response.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EventHeader {
    /// Event id.
    pub id: [u8; 16],
    /// Version in its stream.
    pub version: U64,
    /// Position in `$all`.
    pub position: U64,
    /// Created, µs.
    pub created_us: U64,
    /// Data length.
    pub data_len: U32,
    /// Metadata length.
    pub meta_len: U32,
    /// Stream name length.
    pub stream_len: u8,
    /// Event type length.
    pub type_len: u8,
    /// Content type.
    pub content_type: u8,
    /// Zero.
    pub reserved: u8,
}

/// Size of [`NewEventHeader`].
pub const NEW_EVENT_HEADER_BYTES: usize = 28;
/// Size of [`EventHeader`].
pub const EVENT_HEADER_BYTES: usize = 52;
const _: () = assert!(std::mem::size_of::<NewEventHeader>() == NEW_EVENT_HEADER_BYTES);
const _: () = assert!(std::mem::size_of::<EventHeader>() == EVENT_HEADER_BYTES);

fn put_expected(out: &mut BytesMut, e: Expected) {
    let (tag, v) = match e {
        Expected::Any => (0, 0),
        Expected::NoStream => (1, 0),
        Expected::StreamExists => (2, 0),
        Expected::Exact(v) => (3, v),
    };
    out.put_u8(tag);
    out.put_u64_le(v);
}

fn get_expected(r: &mut Reader) -> Result<Expected, DecodeError> {
    let tag = r.u8()?;
    let v = r.u64()?;
    Ok(match tag {
        0 => Expected::Any,
        1 => Expected::NoStream,
        2 => Expected::StreamExists,
        3 => Expected::Exact(v),
        t => return Err(r.error(format!("expected-version tag {t}"))),
    })
}

fn put_from(out: &mut BytesMut, f: ReadFrom) {
    let (tag, v) = match f {
        ReadFrom::Start => (0, 0),
        ReadFrom::End => (1, 0),
        ReadFrom::At(v) => (2, v),
    };
    out.put_u8(tag);
    out.put_u64_le(v);
}

fn get_from(r: &mut Reader) -> Result<ReadFrom, DecodeError> {
    let tag = r.u8()?;
    let v = r.u64()?;
    Ok(match tag {
        0 => ReadFrom::Start,
        1 => ReadFrom::End,
        2 => ReadFrom::At(v),
        t => return Err(r.error(format!("read-from tag {t}"))),
    })
}

fn put_match(out: &mut BytesMut, m: &Option<Match>) {
    match m {
        None => out.put_u8(0),
        Some(Match::Prefix(t)) => {
            out.put_u8(1);
            put_str16(out, t.as_str());
        }
        Some(Match::Regex(t)) => {
            out.put_u8(2);
            put_str16(out, t.as_str());
        }
    }
}

fn get_match(r: &mut Reader) -> Result<Option<Match>, DecodeError> {
    Ok(match r.u8()? {
        0 => None,
        1 => Some(Match::Prefix(r.str16()?)),
        2 => Some(Match::Regex(r.str16()?)),
        t => return Err(r.error(format!("filter tag {t}"))),
    })
}

fn put_metadata(out: &mut BytesMut, m: &Metadata) {
    put_opt_u64(out, m.max_count);
    put_opt_u64(out, m.max_age_us);
    put_opt_u64(out, m.truncate_before);
    put_bytes32(out, &m.custom);
}

fn get_metadata(r: &mut Reader) -> Result<Metadata, DecodeError> {
    Ok(Metadata {
        max_count: r.opt_u64()?,
        max_age_us: r.opt_u64()?,
        truncate_before: r.opt_u64()?,
        custom: r.bytes32()?,
    })
}

fn put_info(out: &mut BytesMut, i: &StreamInfo) {
    put_str8(out, i.stream.as_str());
    put_opt_u64(out, i.current_version);
    out.put_u8(i.deleted);
    put_metadata(out, &i.metadata);
}

fn get_info(r: &mut Reader) -> Result<StreamInfo, DecodeError> {
    let stream = r.str8()?;
    let current_version = r.opt_u64()?;
    let deleted = r.u8()?;
    if deleted > 2 {
        return Err(r.error(format!("deleted state {deleted}")));
    }
    Ok(StreamInfo {
        stream,
        current_version,
        deleted,
        metadata: get_metadata(r)?,
    })
}

/// Writes one stored event into an `Events` payload; servers call it per event while they
/// stream a read, so nothing is allocated per event.
#[allow(clippy::too_many_arguments)]
pub fn put_event(
    out: &mut BytesMut,
    stream: &str,
    version: u64,
    position: u64,
    id: [u8; 16],
    event_type: &str,
    content_type: u8,
    data: &[u8],
    metadata: &[u8],
    created_us: u64,
) {
    let h = EventHeader {
        id,
        version: U64::new(version),
        position: U64::new(position),
        created_us: U64::new(created_us),
        data_len: U32::new(u32::try_from(data.len()).expect("events are below 4 GiB")),
        meta_len: U32::new(u32::try_from(metadata.len()).expect("events are below 4 GiB")),
        stream_len: u8::try_from(stream.len()).expect("stream names are at most 255 bytes"),
        type_len: u8::try_from(event_type.len()).expect("event types are at most 255 bytes"),
        content_type,
        reserved: 0,
    };
    out.put_slice(h.as_bytes());
    out.put_slice(stream.as_bytes());
    out.put_slice(event_type.as_bytes());
    out.put_slice(data);
    out.put_slice(metadata);
}

fn get_event(r: &mut Reader) -> Result<Event, DecodeError> {
    let raw = r.take(EVENT_HEADER_BYTES)?;
    let h = EventHeader::read_from_bytes(&raw).map_err(|_| r.error("short event header"))?;
    Ok(Event {
        stream: r.text(h.stream_len as usize)?,
        event_type: r.text(h.type_len as usize)?,
        data: r.take(h.data_len.get() as usize)?,
        metadata: r.take(h.meta_len.get() as usize)?,
        version: h.version.get(),
        position: h.position.get(),
        id: h.id,
        content_type: h.content_type,
        created_us: h.created_us.get(),
    })
}

fn put_new_event(out: &mut BytesMut, e: &NewEvent) {
    let h = NewEventHeader {
        id: e.id,
        data_len: U32::new(u32::try_from(e.data.len()).expect("events are below 4 GiB")),
        meta_len: U32::new(u32::try_from(e.metadata.len()).expect("events are below 4 GiB")),
        type_len: u8::try_from(e.event_type.len()).expect("event types are at most 255 bytes"),
        content_type: e.content_type,
        reserved: [0; 2],
    };
    out.put_slice(h.as_bytes());
    out.put_slice(e.event_type.as_str().as_bytes());
    out.put_slice(&e.data);
    out.put_slice(&e.metadata);
}

fn get_new_event(r: &mut Reader) -> Result<NewEvent, DecodeError> {
    let raw = r.take(NEW_EVENT_HEADER_BYTES)?;
    let h = NewEventHeader::read_from_bytes(&raw).map_err(|_| r.error("short event header"))?;
    Ok(NewEvent {
        id: h.id,
        event_type: r.text(h.type_len as usize)?,
        content_type: h.content_type,
        data: r.take(h.data_len.get() as usize)?,
        metadata: r.take(h.meta_len.get() as usize)?,
    })
}

fn put_positions(out: &mut BytesMut, positions: &[u64]) {
    out.put_u32_le(u32::try_from(positions.len()).expect("below 4 G positions"));
    for p in positions {
        out.put_u64_le(*p);
    }
}

fn get_positions(r: &mut Reader) -> Result<Vec<u64>, DecodeError> {
    let n = r.u32()? as usize;
    let n = r.count(n, 8)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(r.u64()?);
    }
    Ok(v)
}

fn get_text32(r: &mut Reader) -> Result<Text, DecodeError> {
    let b = r.bytes32()?;
    Text::from_utf8(b).map_err(|_| r.error("text is not UTF-8"))
}

impl Request {
    /// The frame kind.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Hello { .. } => Kind::Hello,
            Request::Append { .. } => Kind::Append,
            Request::ReadStream { .. } => Kind::ReadStream,
            Request::ReadAll { .. } => Kind::ReadAll,
            Request::StreamInfo { .. } => Kind::StreamInfo,
            Request::ListStreams { .. } => Kind::ListStreams,
            Request::SetMetadata { .. } => Kind::SetMetadata,
            Request::Delete { .. } => Kind::Delete,
            Request::Scavenge => Kind::Scavenge,
            Request::SnapshotPut { .. } => Kind::SnapshotPut,
            Request::SnapshotGet { .. } => Kind::SnapshotGet,
            Request::SnapshotList { .. } => Kind::SnapshotList,
            Request::SnapshotDelete { .. } => Kind::SnapshotDelete,
            Request::Status => Kind::Status,
            Request::Subscribe { .. } => Kind::Subscribe,
            Request::PersistentCreate { .. } => Kind::PersistentCreate,
            Request::PersistentUpdate { .. } => Kind::PersistentUpdate,
            Request::PersistentDelete { .. } => Kind::PersistentDelete,
            Request::PersistentList => Kind::PersistentList,
            Request::PersistentInfo { .. } => Kind::PersistentInfo,
            Request::PersistentReplayParked { .. } => Kind::PersistentReplayParked,
            Request::PersistentConnect { .. } => Kind::PersistentConnect,
            Request::PersistentAck { .. } => Kind::PersistentAck,
            Request::PersistentNack { .. } => Kind::PersistentNack,
            Request::ClusterAdd { .. } => Kind::ClusterAdd,
            Request::ClusterRemove { .. } => Kind::ClusterRemove,
            Request::ClusterTransfer { .. } => Kind::ClusterTransfer,
            Request::ClusterMembers => Kind::ClusterMembers,
            Request::SetOptions { .. } => Kind::SetOptions,
        }
    }

    /// Appends this request as one frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        frame::encode(out, self.kind() as u16, 0, |out| self.encode_payload(out));
    }

    fn encode_payload(&self, out: &mut BytesMut) {
        match self {
            Request::Hello {
                version,
                client,
                token,
            } => {
                out.put_u16_le(*version);
                put_str16(out, client.as_str());
                put_bytes32(out, token);
            }
            Request::Append { writes } => {
                out.put_u16_le(u16::try_from(writes.len()).expect("at most 65,535 streams"));
                for w in writes {
                    put_str8(out, w.stream.as_str());
                    put_expected(out, w.expected);
                    out.put_u32_le(u32::try_from(w.events.len()).expect("below 4 G events"));
                    for e in &w.events {
                        put_new_event(out, e);
                    }
                }
            }
            Request::ReadStream {
                stream,
                from,
                backward,
                max_count,
            } => {
                put_str8(out, stream.as_str());
                put_from(out, *from);
                out.put_u8(u8::from(*backward));
                out.put_u64_le(*max_count);
            }
            Request::ReadAll {
                from,
                backward,
                max_count,
                event_type,
                stream,
            } => {
                put_from(out, *from);
                out.put_u8(u8::from(*backward));
                out.put_u64_le(*max_count);
                put_match(out, event_type);
                put_match(out, stream);
            }
            Request::StreamInfo { stream } | Request::SnapshotList { stream } => {
                put_str8(out, stream.as_str());
            }
            Request::ListStreams {
                prefix,
                after,
                limit,
            } => {
                put_str8(out, prefix.as_str());
                match after {
                    None => out.put_u8(0),
                    Some(a) => {
                        out.put_u8(1);
                        put_str8(out, a.as_str());
                    }
                }
                out.put_u32_le(*limit);
            }
            Request::SetMetadata { stream, metadata } => {
                put_str8(out, stream.as_str());
                put_metadata(out, metadata);
            }
            Request::Delete {
                stream,
                expected,
                hard,
            } => {
                put_str8(out, stream.as_str());
                put_expected(out, *expected);
                out.put_u8(u8::from(*hard));
            }
            Request::Scavenge
            | Request::Status
            | Request::PersistentList
            | Request::ClusterMembers => {}
            Request::PersistentCreate { definition } | Request::PersistentUpdate { definition } => {
                put_str16(out, definition.as_str());
            }
            Request::PersistentDelete { group }
            | Request::PersistentInfo { group }
            | Request::PersistentReplayParked { group }
            | Request::PersistentConnect { group } => put_str8(out, group.as_str()),
            Request::PersistentAck { positions } => put_positions(out, positions),
            Request::PersistentNack { action, positions } => {
                out.put_u8(*action);
                put_positions(out, positions);
            }
            Request::ClusterAdd { id, peer, client } => {
                out.put_u64_le(*id);
                put_str8(out, peer.as_str());
                put_str8(out, client.as_str());
            }
            Request::ClusterRemove { id } => out.put_u64_le(*id),
            Request::ClusterTransfer { to } => put_opt_u64(out, *to),
            Request::SetOptions { follower_reads } => out.put_u8(u8::from(*follower_reads)),
            Request::SnapshotPut {
                stream,
                version,
                data,
            } => {
                put_str8(out, stream.as_str());
                out.put_u64_le(*version);
                put_bytes32(out, data);
            }
            Request::SnapshotGet {
                stream,
                version,
                latest,
            } => {
                put_str8(out, stream.as_str());
                out.put_u64_le(*version);
                out.put_u8(u8::from(*latest));
            }
            Request::SnapshotDelete { stream, version } => {
                put_str8(out, stream.as_str());
                out.put_u64_le(*version);
            }
            Request::Subscribe {
                stream,
                from,
                event_type,
                stream_filter,
                checkpoint_every,
                payload,
            } => {
                match stream {
                    None => out.put_u8(0),
                    Some(s) => {
                        out.put_u8(1);
                        put_str8(out, s.as_str());
                    }
                }
                put_from(out, *from);
                put_match(out, event_type);
                put_match(out, stream_filter);
                out.put_u32_le(*checkpoint_every);
                out.put_u16_le(u16::try_from(payload.len()).expect("at most 65,535 predicates"));
                for p in payload {
                    put_str16(out, p.path.as_str());
                    out.put_u8(p.op);
                    put_str16(out, p.value.as_str());
                }
            }
        }
    }

    /// Decodes a request frame.
    pub fn decode(f: &Frame) -> Result<Request, DecodeError> {
        let mut r = Reader::new(f.payload.clone(), "request");
        if f.flags != 0 {
            return Err(r.error(format!("request frames carry no flags ({:#06x})", f.flags)));
        }
        let kind =
            Kind::from_u16(f.kind).ok_or_else(|| r.error(format!("kind {:#06x}", f.kind)))?;
        let req = match kind {
            Kind::Hello => Request::Hello {
                version: r.u16()?,
                client: r.str16()?,
                token: r.bytes32()?,
            },
            Kind::Append => {
                let n = r.u16()? as usize;
                let n = r.count(n, 14)?;
                let mut writes = Vec::with_capacity(n);
                for _ in 0..n {
                    let stream = r.str8()?;
                    let expected = get_expected(&mut r)?;
                    let k = r.u32()? as usize;
                    let k = r.count(k, NEW_EVENT_HEADER_BYTES)?;
                    let mut events = Vec::with_capacity(k);
                    for _ in 0..k {
                        events.push(get_new_event(&mut r)?);
                    }
                    writes.push(StreamWrite {
                        stream,
                        expected,
                        events,
                    });
                }
                Request::Append { writes }
            }
            Kind::ReadStream => Request::ReadStream {
                stream: r.str8()?,
                from: get_from(&mut r)?,
                backward: r.bool()?,
                max_count: r.u64()?,
            },
            Kind::ReadAll => Request::ReadAll {
                from: get_from(&mut r)?,
                backward: r.bool()?,
                max_count: r.u64()?,
                event_type: get_match(&mut r)?,
                stream: get_match(&mut r)?,
            },
            Kind::StreamInfo => Request::StreamInfo { stream: r.str8()? },
            Kind::ListStreams => Request::ListStreams {
                prefix: r.str8()?,
                after: if r.bool()? { Some(r.str8()?) } else { None },
                limit: r.u32()?,
            },
            Kind::SetMetadata => Request::SetMetadata {
                stream: r.str8()?,
                metadata: get_metadata(&mut r)?,
            },
            Kind::Delete => Request::Delete {
                stream: r.str8()?,
                expected: get_expected(&mut r)?,
                hard: r.bool()?,
            },
            Kind::Scavenge => Request::Scavenge,
            Kind::SnapshotPut => Request::SnapshotPut {
                stream: r.str8()?,
                version: r.u64()?,
                data: r.bytes32()?,
            },
            Kind::SnapshotGet => Request::SnapshotGet {
                stream: r.str8()?,
                version: r.u64()?,
                latest: r.bool()?,
            },
            Kind::SnapshotList => Request::SnapshotList { stream: r.str8()? },
            Kind::SnapshotDelete => Request::SnapshotDelete {
                stream: r.str8()?,
                version: r.u64()?,
            },
            Kind::Status => Request::Status,
            Kind::Subscribe => Request::Subscribe {
                stream: if r.bool()? { Some(r.str8()?) } else { None },
                from: get_from(&mut r)?,
                event_type: get_match(&mut r)?,
                stream_filter: get_match(&mut r)?,
                checkpoint_every: r.u32()?,
                payload: {
                    let n = r.u16()? as usize;
                    let n = r.count(n, 5)?;
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        let path = r.str16()?;
                        let op = r.u8()?;
                        if op > 5 {
                            return Err(r.error(format!("predicate operator {op}")));
                        }
                        v.push(Predicate {
                            path,
                            op,
                            value: r.str16()?,
                        });
                    }
                    v
                },
            },
            Kind::PersistentCreate => Request::PersistentCreate {
                definition: r.str16()?,
            },
            Kind::PersistentUpdate => Request::PersistentUpdate {
                definition: r.str16()?,
            },
            Kind::PersistentDelete => Request::PersistentDelete { group: r.str8()? },
            Kind::PersistentList => Request::PersistentList,
            Kind::PersistentInfo => Request::PersistentInfo { group: r.str8()? },
            Kind::PersistentReplayParked => Request::PersistentReplayParked { group: r.str8()? },
            Kind::PersistentConnect => Request::PersistentConnect { group: r.str8()? },
            Kind::PersistentAck => Request::PersistentAck {
                positions: get_positions(&mut r)?,
            },
            Kind::PersistentNack => {
                let action = r.u8()?;
                if action > 2 {
                    return Err(r.error(format!("nack action {action}")));
                }
                Request::PersistentNack {
                    action,
                    positions: get_positions(&mut r)?,
                }
            }
            Kind::ClusterAdd => Request::ClusterAdd {
                id: r.u64()?,
                peer: r.str8()?,
                client: r.str8()?,
            },
            Kind::ClusterMembers => Request::ClusterMembers,
            Kind::SetOptions => Request::SetOptions {
                follower_reads: r.bool()?,
            },
            Kind::ClusterRemove => Request::ClusterRemove { id: r.u64()? },
            Kind::ClusterTransfer => Request::ClusterTransfer { to: r.opt_u64()? },
            other => return Err(r.error(format!("{other:?} is a response, not a request"))),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    /// The frame kind.
    pub fn kind(&self) -> Kind {
        match self {
            Response::HelloOk { .. } => Kind::HelloOk,
            Response::Appended { .. } => Kind::Appended,
            Response::Events { .. } => Kind::Events,
            Response::StreamInfo(_) => Kind::StreamInfoReply,
            Response::Streams(_) => Kind::Streams,
            Response::Done { .. } => Kind::Done,
            Response::Scavenged { .. } => Kind::Scavenged,
            Response::Snapshot(_) => Kind::SnapshotReply,
            Response::SnapshotVersions(_) => Kind::SnapshotVersions,
            Response::Status { .. } => Kind::StatusReply,
            Response::Error { .. } => Kind::Error,
            Response::CaughtUp { .. } => Kind::CaughtUp,
            Response::FellBehind { .. } => Kind::FellBehind,
            Response::Members { .. } => Kind::Members,
            Response::Checkpoint { .. } => Kind::Checkpoint,
            Response::PersistentGroups(_) => Kind::PersistentGroups,
            Response::PersistentInfo(_) => Kind::PersistentInfoReply,
            Response::Delivery { .. } => Kind::Delivery,
        }
    }

    /// Appends this response as one frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let flags = match self {
            Response::Events { more: true, .. } | Response::Delivery { .. } => frame::FLAG_MORE,
            _ => 0,
        };
        frame::encode(out, self.kind() as u16, flags, |out| {
            self.encode_payload(out)
        });
    }

    fn encode_payload(&self, out: &mut BytesMut) {
        match self {
            Response::HelloOk {
                version,
                server,
                store_id,
                max_frame,
            } => {
                out.put_u16_le(*version);
                put_str16(out, server.as_str());
                put_str8(out, store_id.as_str());
                out.put_u32_le(*max_frame);
            }
            Response::Appended {
                next_expected_version,
                position_first,
                position_last,
                index,
                idempotent,
            } => {
                out.put_u64_le(*next_expected_version);
                out.put_u64_le(*position_first);
                out.put_u64_le(*position_last);
                out.put_u64_le(*index);
                out.put_u8(u8::from(*idempotent));
            }
            Response::Events { events, .. } => {
                out.put_u32_le(u32::try_from(events.len()).expect("below 4 G events"));
                for e in events {
                    put_event(
                        out,
                        e.stream.as_str(),
                        e.version,
                        e.position,
                        e.id,
                        e.event_type.as_str(),
                        e.content_type,
                        &e.data,
                        &e.metadata,
                        e.created_us,
                    );
                }
            }
            Response::StreamInfo(info) => match info {
                None => out.put_u8(0),
                Some(i) => {
                    out.put_u8(1);
                    put_info(out, i);
                }
            },
            Response::Streams(list) => {
                out.put_u32_le(u32::try_from(list.len()).expect("below 4 G streams"));
                for i in list {
                    put_info(out, i);
                }
            }
            Response::Done { index } => out.put_u64_le(*index),
            Response::Members { leader, members } => {
                put_opt_u64(out, *leader);
                out.put_u16_le(u16::try_from(members.len()).expect("below 64 K members"));
                for m in members {
                    out.put_u64_le(m.id);
                    out.put_u8(u8::from(m.voter));
                    put_str8(out, m.client.as_str());
                }
            }
            Response::Scavenged {
                segments_scanned,
                segments_rewritten,
                events_removed,
                bytes_reclaimed,
            } => {
                for v in [
                    segments_scanned,
                    segments_rewritten,
                    events_removed,
                    bytes_reclaimed,
                ] {
                    out.put_u64_le(*v);
                }
            }
            Response::Snapshot(s) => match s {
                None => out.put_u8(0),
                Some((stream, version, data)) => {
                    out.put_u8(1);
                    put_str8(out, stream.as_str());
                    out.put_u64_le(*version);
                    put_bytes32(out, data);
                }
            },
            Response::SnapshotVersions(v) => {
                out.put_u32_le(u32::try_from(v.len()).expect("below 4 G snapshots"));
                for x in v {
                    out.put_u64_le(*x);
                }
            }
            Response::Status {
                store_id,
                server,
                role,
                commit_position,
                last_index,
                streams,
            } => {
                put_str8(out, store_id.as_str());
                put_str16(out, server.as_str());
                put_str8(out, role.as_str());
                out.put_u64_le(*commit_position);
                out.put_u64_le(*last_index);
                out.put_u64_le(*streams);
            }
            Response::Error {
                code,
                message,
                actual,
            } => {
                out.put_u16_le(*code as u16);
                put_str16(out, message.as_str());
                put_opt_u64(out, *actual);
            }
            Response::CaughtUp { position }
            | Response::Checkpoint { position }
            | Response::FellBehind { position } => out.put_u64_le(*position),
            Response::PersistentGroups(json) | Response::PersistentInfo(json) => {
                put_bytes32(out, json.as_str().as_bytes());
            }
            Response::Delivery { retry_count, event } => {
                out.put_u32_le(*retry_count);
                put_event(
                    out,
                    event.stream.as_str(),
                    event.version,
                    event.position,
                    event.id,
                    event.event_type.as_str(),
                    event.content_type,
                    &event.data,
                    &event.metadata,
                    event.created_us,
                );
            }
        }
    }

    /// Decodes a response frame.
    pub fn decode(f: &Frame) -> Result<Response, DecodeError> {
        let mut r = Reader::new(f.payload.clone(), "response");
        let kind =
            Kind::from_u16(f.kind).ok_or_else(|| r.error(format!("kind {:#06x}", f.kind)))?;
        let resp = match kind {
            Kind::HelloOk => Response::HelloOk {
                version: r.u16()?,
                server: r.str16()?,
                store_id: r.str8()?,
                max_frame: r.u32()?,
            },
            Kind::Appended => Response::Appended {
                next_expected_version: r.u64()?,
                position_first: r.u64()?,
                position_last: r.u64()?,
                index: r.u64()?,
                idempotent: r.bool()?,
            },
            Kind::Events => {
                let n = r.u32()? as usize;
                let n = r.count(n, EVENT_HEADER_BYTES)?;
                let mut events = Vec::with_capacity(n);
                for _ in 0..n {
                    events.push(get_event(&mut r)?);
                }
                Response::Events {
                    events,
                    more: f.flags & frame::FLAG_MORE != 0,
                }
            }
            Kind::StreamInfoReply => Response::StreamInfo(if r.bool()? {
                Some(get_info(&mut r)?)
            } else {
                None
            }),
            Kind::Streams => {
                let n = r.u32()? as usize;
                let n = r.count(n, 2)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push(get_info(&mut r)?);
                }
                Response::Streams(list)
            }
            Kind::Done => Response::Done { index: r.u64()? },
            Kind::Members => {
                let leader = r.opt_u64()?;
                let n = r.u16()? as usize;
                let n = r.count(n, 10)?;
                let mut members = Vec::with_capacity(n);
                for _ in 0..n {
                    members.push(Member {
                        id: r.u64()?,
                        voter: r.bool()?,
                        client: r.str8()?,
                    });
                }
                Response::Members { leader, members }
            }
            Kind::Scavenged => Response::Scavenged {
                segments_scanned: r.u64()?,
                segments_rewritten: r.u64()?,
                events_removed: r.u64()?,
                bytes_reclaimed: r.u64()?,
            },
            Kind::SnapshotReply => Response::Snapshot(if r.bool()? {
                Some((r.str8()?, r.u64()?, r.bytes32()?))
            } else {
                None
            }),
            Kind::SnapshotVersions => {
                let n = r.u32()? as usize;
                let n = r.count(n, 8)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(r.u64()?);
                }
                Response::SnapshotVersions(v)
            }
            Kind::StatusReply => Response::Status {
                store_id: r.str8()?,
                server: r.str16()?,
                role: r.str8()?,
                commit_position: r.u64()?,
                last_index: r.u64()?,
                streams: r.u64()?,
            },
            Kind::Error => Response::Error {
                code: ErrorCode::from_u16(r.u16()?),
                message: r.str16()?,
                actual: r.opt_u64()?,
            },
            Kind::CaughtUp => Response::CaughtUp { position: r.u64()? },
            Kind::FellBehind => Response::FellBehind { position: r.u64()? },
            Kind::Checkpoint => Response::Checkpoint { position: r.u64()? },
            Kind::PersistentGroups => Response::PersistentGroups(get_text32(&mut r)?),
            Kind::PersistentInfoReply => Response::PersistentInfo(get_text32(&mut r)?),
            Kind::Delivery => Response::Delivery {
                retry_count: r.u32()?,
                event: get_event(&mut r)?,
            },
            other => return Err(r.error(format!("{other:?} is a request, not a response"))),
        };
        if f.flags & frame::FLAG_MORE != 0 && !matches!(kind, Kind::Events | Kind::Delivery) {
            return Err(r.error("only Events and Delivery frames may carry FLAG_MORE"));
        }
        r.finish()?;
        Ok(resp)
    }
}
