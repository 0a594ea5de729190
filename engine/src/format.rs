//! The on-disk format: segment header, record frame, entry bodies. `docs/STORAGE.md` is the
//! byte-by-byte description; this file is its executable twin. Fixed-size parts are
//! `zerocopy` structs of little-endian, unaligned integers, so they can be read in place from
//! a memory map. Every decoder returns [`DecodeError`] on any malformed input, never panics.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::DecodeError;
use crate::types::{ContentType, DeleteKind, EventData, StreamMetadata};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"QUIVSEG\x01";
/// First bytes of every segment summary (`.qidx`) file. Version 2 added the spine checksum;
/// version 3 the records' locations as one array before the entries. An older summary is
/// not read (its segment is scanned and the summary written anew).
pub const SUMMARY_MAGIC: [u8; 8] = *b"QUIVIDX\x03";
/// Format version written in segment headers.
pub const FORMAT_VERSION: u32 = 1;
/// Size of [`SegmentHeader`].
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// Size of [`RecordHeader`].
pub const RECORD_HEADER_BYTES: usize = 40;
/// Size of [`EventHeader`].
pub const EVENT_HEADER_BYTES: usize = 48;
/// Largest record body the engine writes or accepts (64 MiB).
pub const RECORD_BODY_BYTES_MAX: usize = 64 << 20;

/// The header at offset 0 of each segment file.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SegmentHeader {
    /// [`SEGMENT_MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: U32,
    /// [`SEGMENT_HEADER_BYTES`].
    pub header_bytes: U32,
    /// Raft index of the first record this segment holds.
    pub first_index: U64,
    /// Global position of the first event slot this segment holds.
    pub first_position: U64,
    /// Bytes the writer may fill (records are never split across segments).
    pub capacity: U64,
    /// Zero.
    pub reserved: [u8; 20],
    /// CRC32C of bytes 0..60.
    pub crc: U32,
}

/// The frame in front of every record body.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    /// Length of the body that follows, in bytes.
    pub len: U32,
    /// CRC32C of header bytes 8..40 followed by the body.
    pub crc: U32,
    /// Raft index: dense, starts at 1.
    pub index: U64,
    /// Raft term of the leader that created the entry.
    pub term: U64,
    /// Global position of this record's first event slot.
    pub position: U64,
    /// Event slots (positions) this record consumes; stays fixed when a scavenge drops events.
    pub count: U32,
    /// [`EntryKind`] as a byte.
    pub kind: u8,
    /// The durable watermark this record carries, as a 24-bit little-endian distance back
    /// from its own index: every record with an index at or below `index - lag` was durable
    /// when this record was written. 0: no claim (stores written before the watermark). The
    /// writer stamps it just before the write; recovery trusts it (docs/STORAGE.md).
    pub durable_lag: [u8; 3],
}

/// Largest distance a record's watermark can express; a larger one is stored as this (which
/// claims less than the truth, so it is always safe).
pub const DURABLE_LAG_MAX: u64 = (1 << 24) - 1;

impl RecordHeader {
    /// The index through which the log was durable when this record was written, if the
    /// record says.
    pub fn durable_through(&self) -> Option<u64> {
        let [a, b, c] = self.durable_lag;
        let lag = u64::from_le_bytes([a, b, c, 0, 0, 0, 0, 0]);
        (lag != 0).then(|| self.index.get().saturating_sub(lag))
    }

    /// Stamps the watermark `durable` (below this record's index). The caller recomputes the
    /// checksum ([`record_crc`]) over the stamped header and the body.
    pub fn stamp_durable(&mut self, durable: u64) {
        let lag = self
            .index
            .get()
            .saturating_sub(durable)
            .min(DURABLE_LAG_MAX);
        let b = lag.to_le_bytes();
        self.durable_lag = [b[0], b[1], b[2]];
    }
}

/// The fixed part of each event inside an append body.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EventHeader {
    /// Event id (UUID bytes, big-endian as UUIDs are written).
    pub id: [u8; 16],
    /// Version within its stream.
    pub version: U64,
    /// Created timestamp, µs since the Unix epoch.
    pub created_us: U64,
    /// Position minus the record's first position.
    pub pos_delta: U32,
    /// Bytes of data.
    pub data_len: U32,
    /// Bytes of metadata.
    pub meta_len: U32,
    /// Index into the body's stream table.
    pub stream_slot: U16,
    /// Bytes of event type.
    pub type_len: u8,
    /// [`ContentType`] as a byte.
    pub content_type: u8,
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == SEGMENT_HEADER_BYTES);
const _: () = assert!(std::mem::size_of::<RecordHeader>() == RECORD_HEADER_BYTES);
const _: () = assert!(std::mem::size_of::<EventHeader>() == EVENT_HEADER_BYTES);
const _: () = assert!(RECORD_BODY_BYTES_MAX < u32::MAX as usize);

/// What one log entry is. One entry is one atomic write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// Events appended to one or more streams.
    Append = 1,
    /// A soft or hard delete of a stream.
    Delete = 2,
    /// New stream metadata.
    Metadata = 3,
    /// A snapshot blob stored.
    SnapshotPut = 4,
    /// A snapshot blob removed.
    SnapshotDelete = 5,
    /// A subscription checkpoint.
    Checkpoint = 6,
    /// A cluster membership change (opaque to the engine).
    Membership = 7,
    /// Nothing; a new leader's first entry.
    NoOp = 8,
}

impl EntryKind {
    /// Parses the kind byte.
    pub fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            1 => EntryKind::Append,
            2 => EntryKind::Delete,
            3 => EntryKind::Metadata,
            4 => EntryKind::SnapshotPut,
            5 => EntryKind::SnapshotDelete,
            6 => EntryKind::Checkpoint,
            7 => EntryKind::Membership,
            8 => EntryKind::NoOp,
            other => return Err(DecodeError::new("record", format!("unknown kind {other}"))),
        })
    }
}

/// CRC of a record: header bytes 8..40, then the body.
pub fn record_crc(header: &RecordHeader, body: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header.as_bytes()[8..]);
    crc32c::crc32c_append(crc, body)
}

/// Builds a record header with its checksum filled in.
pub fn record_header(
    kind: EntryKind,
    index: u64,
    term: u64,
    position: u64,
    count: u32,
    body: &[u8],
) -> RecordHeader {
    let mut h = RecordHeader {
        len: U32::new(body.len() as u32),
        crc: U32::new(0),
        index: U64::new(index),
        term: U64::new(term),
        position: U64::new(position),
        count: U32::new(count),
        kind: kind as u8,
        durable_lag: [0; 3],
    };
    h.crc = U32::new(record_crc(&h, body));
    h
}

/// Builds a segment header.
pub fn segment_header(first_index: u64, first_position: u64, capacity: u64) -> SegmentHeader {
    let mut h = SegmentHeader {
        magic: SEGMENT_MAGIC,
        version: U32::new(FORMAT_VERSION),
        header_bytes: U32::new(SEGMENT_HEADER_BYTES as u32),
        first_index: U64::new(first_index),
        first_position: U64::new(first_position),
        capacity: U64::new(capacity),
        reserved: [0; 20],
        crc: U32::new(0),
    };
    h.crc = U32::new(crc32c::crc32c(&h.as_bytes()[..60]));
    h
}

/// Reads and checks a segment header.
pub fn parse_segment_header(bytes: &[u8]) -> Result<SegmentHeader, DecodeError> {
    let (h, _) = SegmentHeader::read_from_prefix(bytes)
        .map_err(|_| DecodeError::new("segment header", "file shorter than its header"))?;
    if h.magic != SEGMENT_MAGIC {
        return Err(DecodeError::new("segment header", "bad magic"));
    }
    if h.crc.get() != crc32c::crc32c(&h.as_bytes()[..60]) {
        return Err(DecodeError::new("segment header", "checksum mismatch"));
    }
    if h.version.get() != FORMAT_VERSION || h.header_bytes.get() as usize != SEGMENT_HEADER_BYTES {
        return Err(DecodeError::new(
            "segment header",
            "unsupported format version",
        ));
    }
    Ok(h)
}

/// What [`parse_record`] found at an offset.
#[derive(Debug)]
pub enum RecordParse<'a> {
    /// A whole record whose checksum matches.
    Ok {
        /// Its header.
        header: RecordHeader,
        /// Its body.
        body: &'a [u8],
    },
    /// Only zero bytes from here on (pre-zeroed or never written).
    Zero,
    /// Fewer bytes than the frame claims.
    Truncated,
    /// A frame whose checksum or length is wrong.
    Bad(String),
}

/// Whether every byte is zero (compared a page at a time: `memcmp` is fast even in debug
/// builds, and pre-zeroed segments have megabytes of zeros to check on open).
pub fn all_zero(bytes: &[u8]) -> bool {
    const PAGE: [u8; 4096] = [0; 4096];
    bytes.chunks(PAGE.len()).all(|c| c == &PAGE[..c.len()])
}

/// Parses one record at the start of `bytes`.
pub fn parse_record(bytes: &[u8]) -> RecordParse<'_> {
    let Ok((header, rest)) = RecordHeader::read_from_prefix(bytes) else {
        if all_zero(bytes) {
            return RecordParse::Zero;
        }
        return RecordParse::Truncated;
    };
    if header.len.get() == 0 && header.crc.get() == 0 && header.index.get() == 0 {
        return RecordParse::Zero;
    }
    let len = header.len.get() as usize;
    if len > RECORD_BODY_BYTES_MAX {
        return RecordParse::Bad(format!("length {len} exceeds the record limit"));
    }
    if rest.len() < len {
        return RecordParse::Truncated;
    }
    let body = &rest[..len];
    if record_crc(&header, body) != header.crc.get() {
        return RecordParse::Bad("checksum mismatch".into());
    }
    RecordParse::Ok { header, body }
}

/// A cursor over a byte slice whose every read is checked.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Cursor { bytes, at: 0, what }
    }

    pub(crate) fn offset(&self) -> usize {
        self.at
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn err(&self, detail: impl Into<String>) -> DecodeError {
        DecodeError::new(self.what, format!("at byte {}: {}", self.at, detail.into()))
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.err(format!("needs {n} bytes, {} left", self.remaining())));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn str8(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| self.err("name is not UTF-8"))
    }

    pub(crate) fn end(&self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(self.err(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

/// One event inside an append body, borrowed; byte ranges are relative to the body.
#[derive(Debug, Clone)]
pub struct EventView<'a> {
    /// Its fixed header.
    pub header: EventHeader,
    /// The event type.
    pub event_type: &'a str,
    /// Content type.
    pub content_type: ContentType,
    /// Range of the type bytes within the body.
    pub type_range: std::ops::Range<usize>,
    /// Range of the data within the body.
    pub data_range: std::ops::Range<usize>,
    /// Range of the metadata within the body.
    pub meta_range: std::ops::Range<usize>,
}

/// An append body, borrowed: its stream table and an iterator over its events.
#[derive(Debug, Clone)]
pub struct AppendView<'a> {
    /// Names of the streams written, indexed by `stream_slot`.
    pub streams: Vec<&'a str>,
    /// Events it holds.
    pub event_count: u32,
    body: &'a [u8],
    events_at: usize,
}

impl<'a> AppendView<'a> {
    /// Iterates the fixed headers of the events in order, stepping over types and payloads
    /// without looking at them: for records already checked (framed here, read back under a
    /// matching checksum, or decoded in full on receipt).
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            cursor: Cursor {
                bytes: self.body,
                at: self.events_at,
                what: "event",
            },
            left: self.event_count,
        }
    }

    /// Byte offset, within the body, of the first event.
    pub fn events_offset(&self) -> usize {
        self.events_at
    }

    /// Iterates the events in order; each item is checked.
    pub fn events(&self) -> EventIter<'a> {
        EventIter {
            cursor: Cursor {
                bytes: self.body,
                at: self.events_at,
                what: "event",
            },
            left: self.event_count,
            streams: self.streams.len(),
        }
    }
}

/// Iterator over the event headers of an [`AppendView`] (see [`AppendView::headers`]).
pub struct HeaderIter<'a> {
    cursor: Cursor<'a>,
    left: u32,
}

impl Iterator for HeaderIter<'_> {
    type Item = Result<EventHeader, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let c = &mut self.cursor;
        let r = c.take(EVENT_HEADER_BYTES).and_then(|raw| {
            let h = EventHeader::read_from_bytes(raw)
                .map_err(|_| DecodeError::new("event", "short header"))?;
            let skip = h.type_len as usize + h.data_len.get() as usize + h.meta_len.get() as usize;
            c.take(skip)?;
            Ok(h)
        });
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

/// Iterator over the events of an [`AppendView`].
pub struct EventIter<'a> {
    cursor: Cursor<'a>,
    left: u32,
    streams: usize,
}

impl<'a> Iterator for EventIter<'a> {
    type Item = Result<EventView<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = self.decode_one();
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

/// Decodes and checks the one event that starts `at` bytes into an append `body` whose
/// stream table has `streams` names; the event ends at its `meta_range.end`. This lets a
/// reader walk a large record one event at a time, keeping only an offset.
pub fn decode_event_at(
    body: &[u8],
    at: usize,
    streams: usize,
) -> Result<EventView<'_>, DecodeError> {
    if at > body.len() {
        return Err(DecodeError::new("event", "offset beyond the body"));
    }
    let mut one = EventIter {
        cursor: Cursor {
            bytes: body,
            at,
            what: "event",
        },
        left: 1,
        streams,
    };
    one.decode_one()
}

impl<'a> EventIter<'a> {
    fn decode_one(&mut self) -> Result<EventView<'a>, DecodeError> {
        let c = &mut self.cursor;
        let raw = c.take(EVENT_HEADER_BYTES)?;
        let header = EventHeader::read_from_bytes(raw)
            .map_err(|_| DecodeError::new("event", "short header"))?;
        if header.stream_slot.get() as usize >= self.streams {
            return Err(DecodeError::new("event", "stream slot out of range"));
        }
        let content_type = ContentType::from_byte(header.content_type)
            .ok_or_else(|| DecodeError::new("event", "unknown content type"))?;
        let t0 = c.offset();
        let tb = c.take(header.type_len as usize)?;
        let event_type =
            std::str::from_utf8(tb).map_err(|_| DecodeError::new("event", "type is not UTF-8"))?;
        let d0 = c.offset();
        c.take(header.data_len.get() as usize)?;
        let m0 = c.offset();
        c.take(header.meta_len.get() as usize)?;
        Ok(EventView {
            header,
            event_type,
            content_type,
            type_range: t0..d0,
            data_range: d0..m0,
            meta_range: m0..c.offset(),
        })
    }
}

/// A decoded entry body, borrowing from the record.
#[derive(Debug, Clone)]
pub enum Entry<'a> {
    /// Events appended.
    Append(AppendView<'a>),
    /// A stream deleted.
    Delete {
        /// The stream.
        stream: &'a str,
        /// Soft or hard.
        kind: DeleteKind,
        /// The stream's next version when it was deleted.
        next_version: u64,
    },
    /// Stream metadata set.
    Metadata {
        /// The stream.
        stream: &'a str,
        /// The new metadata (`custom` copied; it is small).
        metadata: StreamMetadata,
    },
    /// A snapshot stored.
    SnapshotPut {
        /// The stream.
        stream: &'a str,
        /// The version it captures.
        version: u64,
        /// Range of the blob within the body.
        data_range: std::ops::Range<usize>,
    },
    /// A snapshot removed.
    SnapshotDelete {
        /// The stream.
        stream: &'a str,
        /// The version.
        version: u64,
    },
    /// A subscription checkpoint.
    Checkpoint {
        /// The subscription's name.
        name: &'a str,
        /// Its position.
        position: u64,
        /// Opaque state.
        state: &'a [u8],
    },
    /// A membership change.
    Membership(&'a [u8]),
    /// Nothing.
    NoOp,
}

/// Decodes and fully checks an entry body (every event is walked for appends).
pub fn decode_entry(kind: EntryKind, body: &[u8]) -> Result<Entry<'_>, DecodeError> {
    let entry = decode_entry_lazy(kind, body)?;
    if let Entry::Append(view) = &entry {
        let mut cursor_end = view.events_at;
        for e in view.events() {
            cursor_end = e?.meta_range.end;
        }
        if cursor_end != body.len() {
            return Err(DecodeError::new(
                "append",
                "trailing bytes after the last event",
            ));
        }
    }
    Ok(entry)
}

/// Decodes an entry body; for appends only the stream table is checked here and the events
/// are checked as they are iterated.
pub fn decode_entry_lazy(kind: EntryKind, body: &[u8]) -> Result<Entry<'_>, DecodeError> {
    let mut c = Cursor::new(body, "entry");
    let entry = match kind {
        EntryKind::Append => {
            let n = c.u16()? as usize;
            let mut streams = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                streams.push(c.str8()?);
            }
            let event_count = c.u32()?;
            let events_at = c.offset();
            return Ok(Entry::Append(AppendView {
                streams,
                event_count,
                body,
                events_at,
            }));
        }
        EntryKind::Delete => {
            let stream = c.str8()?;
            let kind = match c.u8()? {
                0 => DeleteKind::Soft,
                1 => DeleteKind::Hard,
                _ => return Err(DecodeError::new("delete", "unknown delete kind")),
            };
            let next_version = c.u64()?;
            Entry::Delete {
                stream,
                kind,
                next_version,
            }
        }
        EntryKind::Metadata => {
            let stream = c.str8()?;
            let flags = c.u8()?;
            let max_count = c.u64()?;
            let max_age_us = c.u64()?;
            let truncate_before = c.u64()?;
            let n = c.u32()? as usize;
            let custom = bytes::Bytes::copy_from_slice(c.take(n)?);
            let pick = |bit: u8, v: u64| (flags & bit != 0).then_some(v);
            let metadata = StreamMetadata {
                max_count: pick(1, max_count),
                max_age_us: pick(2, max_age_us),
                truncate_before: pick(4, truncate_before),
                custom,
            };
            Entry::Metadata { stream, metadata }
        }
        EntryKind::SnapshotPut => {
            let stream = c.str8()?;
            let version = c.u64()?;
            let start = c.offset();
            return Ok(Entry::SnapshotPut {
                stream,
                version,
                data_range: start..body.len(),
            });
        }
        EntryKind::SnapshotDelete => {
            let stream = c.str8()?;
            let version = c.u64()?;
            Entry::SnapshotDelete { stream, version }
        }
        EntryKind::Checkpoint => {
            let name = c.str8()?;
            let position = c.u64()?;
            let n = c.remaining();
            return Ok(Entry::Checkpoint {
                name,
                position,
                state: c.take(n)?,
            });
        }
        EntryKind::Membership => return Ok(Entry::Membership(body)),
        EntryKind::NoOp => Entry::NoOp,
    };
    c.end()?;
    Ok(entry)
}

fn put_str8(buf: &mut Vec<u8>, s: &str) {
    debug_assert!(s.len() <= 255);
    buf.push(s.len() as u8);
    buf.extend_from_slice(s.as_bytes());
}

/// One event to encode, with what the leader assigned to it.
pub(crate) struct EventToEncode<'a> {
    pub(crate) slot: u16,
    pub(crate) version: u64,
    pub(crate) pos_delta: u32,
    pub(crate) created_us: u64,
    pub(crate) event: &'a EventData,
}

/// Encodes an append body at the end of `buf`.
pub(crate) fn encode_append<'a>(
    buf: &mut Vec<u8>,
    streams: &[&str],
    events: impl ExactSizeIterator<Item = EventToEncode<'a>>,
) {
    buf.extend_from_slice(&(streams.len() as u16).to_le_bytes());
    for s in streams {
        put_str8(buf, s);
    }
    buf.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        let ev = e.event;
        let h = EventHeader {
            id: *ev.id.as_bytes(),
            version: U64::new(e.version),
            created_us: U64::new(e.created_us),
            pos_delta: U32::new(e.pos_delta),
            data_len: U32::new(ev.data.len() as u32),
            meta_len: U32::new(ev.metadata.len() as u32),
            stream_slot: U16::new(e.slot),
            type_len: ev.event_type.len() as u8,
            content_type: ev.content_type.to_byte(),
        };
        buf.extend_from_slice(h.as_bytes());
        buf.extend_from_slice(ev.event_type.as_bytes());
        buf.extend_from_slice(&ev.data);
        buf.extend_from_slice(&ev.metadata);
    }
}

/// The body of an append of `events` to one `stream`, the first at version `first_version`
/// (0 for a new stream): what a Raft leader frames as a record of kind [`EntryKind::Append`]
/// with `events.len()` slots. The caller checked the stream's expected version.
pub fn encode_stream_append(
    stream: &str,
    first_version: u64,
    created_us: u64,
    events: &[EventData],
) -> Vec<u8> {
    let mut buf = Vec::new();
    let encoded = events.iter().enumerate().map(|(k, event)| EventToEncode {
        slot: 0,
        version: first_version + k as u64,
        pos_delta: k as u32,
        created_us,
        event,
    });
    encode_append(&mut buf, &[stream], encoded);
    buf
}

/// Re-encodes an append body keeping only the events for which `keep` is true; with
/// `strip` it also drops types, data and metadata (the form kept in segment summaries).
pub(crate) fn filter_append(
    out: &mut Vec<u8>,
    body: &[u8],
    view: &AppendView<'_>,
    strip: bool,
    mut keep: impl FnMut(&EventView<'_>) -> bool,
) -> Result<u32, DecodeError> {
    out.clear();
    out.extend_from_slice(&(view.streams.len() as u16).to_le_bytes());
    for s in &view.streams {
        put_str8(out, s);
    }
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut kept = 0u32;
    for e in view.events() {
        let e = e?;
        if !keep(&e) {
            continue;
        }
        kept += 1;
        let mut h = e.header;
        if strip {
            h.type_len = 0;
            h.data_len = U32::new(0);
            h.meta_len = U32::new(0);
            out.extend_from_slice(h.as_bytes());
        } else {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&body[e.type_range.start..e.meta_range.end]);
        }
    }
    out[count_at..count_at + 4].copy_from_slice(&kept.to_le_bytes());
    Ok(kept)
}

/// Encodes a delete body at the end of `buf`.
pub(crate) fn encode_delete(buf: &mut Vec<u8>, stream: &str, kind: DeleteKind, next: u64) {
    put_str8(buf, stream);
    buf.push(match kind {
        DeleteKind::Soft => 0,
        DeleteKind::Hard => 1,
    });
    buf.extend_from_slice(&next.to_le_bytes());
}

/// Encodes a metadata body (a Raft leader proposes it; tests build logs with it).
pub fn encode_metadata(buf: &mut Vec<u8>, stream: &str, m: &StreamMetadata) {
    put_str8(buf, stream);
    let flags = u8::from(m.max_count.is_some())
        | (u8::from(m.max_age_us.is_some()) << 1)
        | (u8::from(m.truncate_before.is_some()) << 2);
    buf.push(flags);
    for v in [m.max_count, m.max_age_us, m.truncate_before] {
        buf.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
    }
    buf.extend_from_slice(&(m.custom.len() as u32).to_le_bytes());
    buf.extend_from_slice(&m.custom);
}

/// Encodes a snapshot-put body.
pub(crate) fn encode_snapshot_put(buf: &mut Vec<u8>, stream: &str, version: u64, data: &[u8]) {
    put_str8(buf, stream);
    buf.extend_from_slice(&version.to_le_bytes());
    buf.extend_from_slice(data);
}

/// Encodes a snapshot-delete body.
pub(crate) fn encode_snapshot_delete(buf: &mut Vec<u8>, stream: &str, version: u64) {
    put_str8(buf, stream);
    buf.extend_from_slice(&version.to_le_bytes());
}

/// Encodes a checkpoint body.
pub(crate) fn encode_checkpoint(buf: &mut Vec<u8>, name: &str, position: u64, state: &[u8]) {
    put_str8(buf, name);
    buf.extend_from_slice(&position.to_le_bytes());
    buf.extend_from_slice(state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn append_round_trips() {
        let ev = EventData::json("Created", &b"{\"a\":1}"[..]);
        let mut buf = Vec::new();
        let events = [EventToEncode {
            slot: 0,
            version: 7,
            pos_delta: 0,
            created_us: 9,
            event: &ev,
        }];
        encode_append(&mut buf, &["s"], events.into_iter());
        let Entry::Append(v) = decode_entry(EntryKind::Append, &buf).unwrap() else {
            panic!()
        };
        assert_eq!(v.streams, vec!["s"]);
        let e = v.events().next().unwrap().unwrap();
        assert_eq!(e.header.version.get(), 7);
        assert_eq!(e.event_type, "Created");
        assert_eq!(&buf[e.data_range], &b"{\"a\":1}"[..]);
    }

    #[test]
    fn record_checksum_catches_a_flip() {
        let body = b"hello".to_vec();
        let h = record_header(EntryKind::NoOp, 1, 1, 0, 0, &body);
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&body);
        assert!(matches!(parse_record(&bytes), RecordParse::Ok { .. }));
        bytes[RECORD_HEADER_BYTES + 1] ^= 4;
        assert!(matches!(parse_record(&bytes), RecordParse::Bad(_)));
        assert!(matches!(parse_record(&bytes[..20]), RecordParse::Truncated));
        assert!(matches!(parse_record(&[0u8; 100]), RecordParse::Zero));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(
            kind in 0u8..12,
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Ok(k) = EntryKind::from_byte(kind) {
                let _ = decode_entry(k, &body);
            }
            let _ = parse_record(&body);
            let _ = parse_segment_header(&body);
        }
    }
}
