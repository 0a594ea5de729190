//! Reads: a stream forward or backward, `$all` forward or backward with filters, stream
//! info and listing, snapshots and checkpoints.
//!
//! Reads are lazy: an iterator looks up a chunk of at most [`READ_CHUNK_MAX`] locations under
//! the read lock, then decodes them from the memory map without the lock, so a read of a
//! million events holds a few hundred at a time. Event payloads are `Bytes` slices of the
//! mapping: no copy. Each record's checksum is verified when it is decoded, and a failure is
//! returned as [`ReadError::Corruption`] instead of bad data.

use std::collections::VecDeque;
use std::ops::{Bound, Range};
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::engine::Engine;
use crate::error::{Corruption, ReadError};
use crate::format::{decode_entry_lazy, decode_event_at, Entry, EntryKind, EventHeader};
use crate::inner::Inner;
use crate::segment::SegmentFile;
use crate::state::{State, StreamState};
use crate::types::{
    AllFilter, ContentType, DeleteKind, Direction, RecordedEvent, Snapshot, StreamInfo,
};

/// Most locations looked up under one hold of the read lock.
pub const READ_CHUNK_MAX: usize = 512;

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The first event (version 0 / position 0).
    Start,
    /// The last committed event (backward reads), or just past it (forward reads: nothing).
    End,
    /// This version (stream reads) or position (`$all` reads), inclusive.
    At(u64),
}

/// A [`RecordCursor`] keeps a mark every this many events: a seek backward rewinds to the
/// nearest mark and walks forward at most this many events.
const MARK_EVERY: u32 = 64;

/// One event found by a [`RecordCursor`], before it is made a [`RecordedEvent`].
struct Found {
    header: EventHeader,
    content_type: ContentType,
    type_range: Range<usize>,
    data_range: Range<usize>,
    meta_range: Range<usize>,
}

/// An append record walked one event at a time, straight from the mapping.
///
/// It keeps the record's body (a `Bytes` slice of the mapping, its checksum verified once),
/// the stream table's byte ranges, the byte offset of the next event and a mark every
/// [`MARK_EVERY`] events: never the decoded events. So a read that waits on a slow client in
/// the middle of a 200,000-event record holds a few kilobytes (a mark is 16 bytes), where
/// decoding the whole record held about 30 MiB.
struct RecordCursor {
    file: Arc<SegmentFile>,
    offset: u64,
    /// First event slot.
    position: u64,
    /// Event slots.
    count: u32,
    body: Bytes,
    /// Each stream name's byte range in `body`, by stream slot.
    names: Vec<Range<usize>>,
    /// Events in the record (0 for entries other than appends).
    events: u32,
    /// Byte offset of the first event.
    first_at: usize,
    /// Index and byte offset of the next event.
    index: u32,
    at: usize,
    /// Position delta of the event before `index`, if the cursor has stepped over one.
    last_delta: Option<u32>,
    /// `marks[k]`: byte offset and position delta of event `k * MARK_EVERY`.
    marks: Vec<(usize, u32)>,
    /// The name handed out last, shared by the events of one stream that follow each other.
    name: Option<(u16, Arc<str>)>,
}

impl RecordCursor {
    /// Opens the record at `offset` of `file` (checksum verified), before its first event.
    fn open(file: &Arc<SegmentFile>, offset: u64, end: u64) -> Result<RecordCursor, Corruption> {
        let (h, body) = file.record_at(offset, end)?;
        let bad = |e: crate::error::DecodeError| file.corruption(offset, e.to_string());
        let (mut names, mut events, mut first_at) = (Vec::new(), 0, 0);
        if EntryKind::from_byte(h.kind).map_err(bad)? == EntryKind::Append {
            let Entry::Append(view) = decode_entry_lazy(EntryKind::Append, &body).map_err(bad)?
            else {
                unreachable!("decoded as an append")
            };
            // The names borrow from `body`: keep where they are, not the borrows.
            let base = body.as_ptr() as usize;
            names = view
                .streams
                .iter()
                .map(|s| {
                    let at = s.as_ptr() as usize - base;
                    at..at + s.len()
                })
                .collect();
            events = view.event_count;
            first_at = view.events_offset();
        }
        Ok(RecordCursor {
            file: file.clone(),
            offset,
            position: h.position.get(),
            count: h.count.get(),
            body,
            names,
            events,
            first_at,
            index: 0,
            at: first_at,
            last_delta: None,
            marks: Vec::new(),
            name: None,
        })
    }

    fn is(&self, l: &Loc) -> bool {
        Arc::ptr_eq(&self.file, &l.file) && self.offset == l.offset
    }

    /// Decodes the event at the cursor without moving.
    fn peek(&self) -> Result<Option<Found>, Corruption> {
        if self.index >= self.events {
            return Ok(None);
        }
        let v = decode_event_at(&self.body, self.at, self.names.len())
            .map_err(|e| self.file.corruption(self.offset, e.to_string()))?;
        Ok(Some(Found {
            header: v.header,
            content_type: v.content_type,
            type_range: v.type_range,
            data_range: v.data_range,
            meta_range: v.meta_range,
        }))
    }

    /// Decodes the event at the cursor and moves past it.
    fn step(&mut self) -> Result<Option<Found>, Corruption> {
        let Some(f) = self.peek()? else {
            return Ok(None);
        };
        let delta = f.header.pos_delta.get();
        let next_mark = (self.index / MARK_EVERY) as usize == self.marks.len();
        if self.index.is_multiple_of(MARK_EVERY) && next_mark {
            self.marks.push((self.at, delta));
        }
        self.at = f.meta_range.end;
        self.index += 1;
        self.last_delta = Some(delta);
        Ok(Some(f))
    }

    /// Moves to mark `k` (which exists), or to the first event.
    fn rewind(&mut self, k: Option<usize>) {
        (self.index, self.at) = match k {
            Some(k) => (k as u32 * MARK_EVERY, self.marks[k].0),
            None => (0, self.first_at),
        };
        self.last_delta = None;
    }

    /// Moves to the first event whose position is at least `position` (or to the end).
    fn seek_position(&mut self, position: u64) -> Result<(), Corruption> {
        let delta = position.saturating_sub(self.position).min(u32::MAX as u64) as u32;
        // Marks at or before the target: the last of them is the closest start.
        let k = self
            .marks
            .partition_point(|&(_, d)| d <= delta)
            .checked_sub(1);
        let past = self.last_delta.is_some_and(|d| d >= delta);
        let ahead = k.is_some_and(|k| k as u32 * MARK_EVERY > self.index);
        if past || ahead {
            self.rewind(k);
        }
        while let Some(f) = self.peek()? {
            if f.header.pos_delta.get() >= delta {
                break;
            }
            self.step()?;
        }
        Ok(())
    }

    /// Moves to event `index` (or to the end).
    fn seek_index(&mut self, index: u32) -> Result<(), Corruption> {
        let index = index.min(self.events);
        let k = ((index / MARK_EVERY) as usize).min(self.marks.len());
        if index < self.index || (k > 0 && (k - 1) as u32 * MARK_EVERY > self.index) {
            self.rewind(k.checked_sub(1));
        }
        while self.index < index && self.step()?.is_some() {}
        Ok(())
    }

    /// The event at `position`, if this record holds it (a scavenge may have dropped it).
    fn event_at(&mut self, position: u64) -> Result<Option<RecordedEvent>, Corruption> {
        self.seek_position(position)?;
        match self.peek()? {
            Some(f) if self.position + f.header.pos_delta.get() as u64 == position => {
                self.step()?;
                Ok(Some(self.recorded(f)))
            }
            _ => Ok(None),
        }
    }

    /// Makes a found event a [`RecordedEvent`]: its payloads are slices of the mapping.
    fn recorded(&mut self, f: Found) -> RecordedEvent {
        let slot = f.header.stream_slot.get();
        let stream = match &self.name {
            Some((s, name)) if *s == slot => name.clone(),
            _ => {
                // The slot was checked against the table when the event was decoded, and
                // the table's names were checked as UTF-8 when the record was opened.
                let raw = &self.body[self.names[slot as usize].clone()];
                let name: Arc<str> = Arc::from(std::str::from_utf8(raw).unwrap_or(""));
                self.name = Some((slot, name.clone()));
                name
            }
        };
        let h = &f.header;
        RecordedEvent {
            stream,
            version: h.version.get(),
            position: self.position + h.pos_delta.get() as u64,
            id: Uuid::from_bytes(h.id),
            event_type_bytes: self.body.slice(f.type_range),
            content_type: f.content_type,
            data: self.body.slice(f.data_range),
            metadata: self.body.slice(f.meta_range),
            created_us: h.created_us.get(),
        }
    }
}

/// A place to read: the record holding some position.
struct Loc {
    file: Arc<SegmentFile>,
    offset: u64,
    end: u64,
}

fn loc(st: &State, s: usize, r: usize) -> Loc {
    let seg = &st.segments[s];
    Loc {
        file: seg.file.clone(),
        offset: seg.records[r].offset as u64,
        end: seg.end,
    }
}

/// A stream as a reader walks it: `tail` from memory (or read back whole), and `head`, the
/// stream read back from every table, when that entry holds only the stream's tail.
struct Walk<'a> {
    tail: &'a StreamState,
    head: Option<&'a StreamState>,
}

impl Walk<'_> {
    fn first_version(&self) -> u64 {
        match self.head {
            Some(h) if StreamState::reaches(h, self.tail) => h.first_version,
            _ => self.tail.first_version,
        }
    }

    fn position_of(&self, version: u64) -> Option<u64> {
        match self.head {
            Some(h) if version < self.tail.first_version => h.position_of(version),
            _ => self.tail.position_of(version),
        }
    }
}

/// Events of one stream, read lazily. Created by [`Engine::read_stream`].
pub struct StreamRead {
    inner: Arc<Inner>,
    stream: Arc<str>,
    direction: Direction,
    /// Next version to look at; `None` when the walk is over.
    next: Option<u64>,
    remaining: u64,
    buffer: VecDeque<RecordedEvent>,
    cached: Option<RecordCursor>,
    /// The stream read back from the stream tables, with the number of tables it was read
    /// from: the whole stream while it is not in memory, or the head of one whose entry in
    /// memory holds only its tail. Tables hold only finished segments and a stream not in
    /// memory gets no events, so this stays true until a table is added.
    cold: Option<(usize, StreamState)>,
    failed: bool,
}

impl StreamRead {
    /// The stream as it is now, for versions from `below` on: in memory, or read back from
    /// the stream tables (once), joined to its head in the tables when the entry in memory
    /// holds only a tail that starts above `below`.
    fn state<'a>(&'a mut self, st: &'a State, below: u64) -> Result<Option<Walk<'a>>, ReadError> {
        let in_memory = st.streams.get(&self.stream);
        let need_cold = in_memory.is_none_or(|s| s.head_tabled && below < s.first_version);
        let n = st.tables.len();
        if need_cold && self.cold.as_ref().is_none_or(|(k, _)| *k != n) {
            self.cold = st.read_back(&self.stream)?.map(|s| (n, s));
        }
        let cold = self.cold.as_ref().map(|(_, s)| s);
        Ok(match in_memory {
            Some(tail) => Some(Walk {
                tail,
                head: cold.filter(|_| need_cold),
            }),
            None => cold.map(|tail| Walk { tail, head: None }),
        })
    }

    /// Looks up the next chunk of versions and decodes them.
    fn fill(&mut self) -> Result<(), ReadError> {
        let Some(mut v) = self.next else {
            return Ok(());
        };
        let mut wanted = Vec::new();
        let inner = self.inner.clone();
        let direction = self.direction;
        let remaining = self.remaining;
        let mut next = self.next;
        let chunk = (READ_CHUNK_MAX as u64).min(remaining);
        let below = match direction {
            Direction::Forward => v,
            Direction::Backward => v.saturating_sub(chunk),
        };
        let (max_age, now) = {
            let st = inner.state.read();
            let Some(walk) = self.state(&st, below)? else {
                self.next = None;
                return Ok(());
            };
            let s = walk.tail;
            let from = s.visible_from(st.commit_position);
            let upto = s.committed_next_version(st.commit_position);
            let first = walk.first_version();
            while (wanted.len() as u64) < chunk {
                let in_range = v >= from.max(first) && v < upto;
                if !in_range {
                    if direction == Direction::Forward && v < from.max(first) {
                        v = from.max(first);
                        continue;
                    }
                    next = None;
                    break;
                }
                let p = walk.position_of(v).expect("versions in range are indexed");
                let (si, ri) = st
                    .locate_position(p)
                    .expect("committed positions are located");
                wanted.push((p, loc(&st, si, ri)));
                match direction {
                    Direction::Forward => v += 1,
                    Direction::Backward => match v.checked_sub(1) {
                        Some(prev) => v = prev,
                        None => {
                            next = None;
                            break;
                        }
                    },
                }
                next = next.map(|_| v);
            }
            (s.metadata.max_age_us, State::now_us())
        };
        self.next = next;
        for (p, l) in wanted {
            if !self.cached.as_ref().is_some_and(|c| c.is(&l)) {
                self.cached = Some(RecordCursor::open(&l.file, l.offset, l.end)?);
            }
            let rec = self.cached.as_mut().expect("opened above");
            if let Some(e) = rec.event_at(p)? {
                if max_age.is_none_or(|age| e.created_us.saturating_add(age) >= now) {
                    self.buffer.push_back(e);
                }
            }
        }
        Ok(())
    }
}

impl Iterator for StreamRead {
    type Item = Result<RecordedEvent, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.buffer.is_empty() && self.next.is_some() && self.remaining > 0 && !self.failed {
            if let Err(e) = self.fill() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        if self.remaining == 0 {
            return None;
        }
        let e = self.buffer.pop_front()?;
        self.remaining -= 1;
        Some(Ok(e))
    }
}

/// Events of `$all`, read lazily and filtered. Created by [`Engine::read_all`].
pub struct AllRead {
    inner: Arc<Inner>,
    direction: Direction,
    filter: AllFilter,
    /// Next position to look at; `None` when the walk is over.
    next: Option<u64>,
    remaining: u64,
    buffer: VecDeque<RecordedEvent>,
    /// The record the walk is in, when a chunk ended inside it.
    cursor: Option<RecordCursor>,
    failed: bool,
}

impl AllRead {
    /// Looks at the next [`READ_CHUNK_MAX`] events at most (a large record is walked over
    /// several calls) and buffers those that are visible and pass the filter.
    fn fill(&mut self) -> Result<(), ReadError> {
        let Some(p) = self.next else { return Ok(()) };
        let mut locs = Vec::new();
        {
            let st = self.inner.state.read();
            if p >= st.commit_position {
                match self.direction {
                    Direction::Forward => {
                        self.next = None;
                        return Ok(());
                    }
                    Direction::Backward if st.commit_position == 0 => {
                        self.next = None;
                        return Ok(());
                    }
                    Direction::Backward => {}
                }
            }
            let p = p.min(st.commit_position.saturating_sub(1));
            let Some((mut s, mut r)) = st.locate_position(p) else {
                self.next = None;
                return Ok(());
            };
            let mut slots = 0usize;
            while slots < READ_CHUNK_MAX {
                let rec = st.segments[s].records[r];
                if rec.position >= st.commit_position {
                    break;
                }
                if rec.count > 0 {
                    locs.push(loc(&st, s, r));
                    slots += rec.count as usize;
                }
                let step = match self.direction {
                    Direction::Forward => step_forward(&st, s, r),
                    Direction::Backward => step_backward(&st, s, r),
                };
                match step {
                    Some((s2, r2)) => (s, r) = (s2, r2),
                    None => break,
                }
            }
        }
        if locs.is_empty() {
            self.next = None;
            return Ok(());
        }
        // Events looked at, in walk order; `self.next` follows the last one.
        let mut found = Vec::new();
        for l in &locs {
            if found.len() >= READ_CHUNK_MAX {
                break;
            }
            let mut rec = match self.cursor.take() {
                Some(c) if c.is(l) => c,
                _ => RecordCursor::open(&l.file, l.offset, l.end)?,
            };
            let room = (READ_CHUNK_MAX - found.len()) as u32;
            let done = match self.direction {
                Direction::Forward => {
                    rec.seek_position(p)?;
                    let mut n = 0;
                    while n < room {
                        let Some(f) = rec.step()? else { break };
                        found.push(rec.recorded(f));
                        n += 1;
                    }
                    rec.peek()?.is_none()
                }
                Direction::Backward => {
                    // The events at or before `p`, the last `room` of them, newest first.
                    rec.seek_position(p.saturating_add(1))?;
                    let hi = rec.index;
                    let lo = hi.saturating_sub(room);
                    rec.seek_index(lo)?;
                    let at = found.len();
                    while rec.index < hi {
                        let Some(f) = rec.step()? else { break };
                        found.push(rec.recorded(f));
                    }
                    found[at..].reverse();
                    lo == 0
                }
            };
            self.next = match (self.direction, done, found.last()) {
                (Direction::Forward, true, _) => Some(rec.position + rec.count as u64),
                (Direction::Backward, true, _) => rec.position.checked_sub(1),
                (Direction::Forward, false, Some(e)) => Some(e.position + 1),
                (Direction::Backward, false, Some(e)) => e.position.checked_sub(1),
                (_, false, None) => unreachable!("a chunk that ends inside a record took events"),
            };
            if !done {
                self.cursor = Some(rec);
            }
        }
        let st = self.inner.state.read();
        let now = State::now_us();
        // The stream of the previous event and its visibility bound, looked up once per run.
        type Seen<'a> = Option<(Arc<str>, Option<(&'a StreamState, u64)>)>;
        let mut last_stream: Seen<'_> = None;
        for e in found {
            let in_range = match self.direction {
                Direction::Forward => e.position >= p,
                Direction::Backward => e.position <= p,
            };
            if !in_range || e.position >= st.commit_position {
                continue;
            }
            let same = last_stream
                .as_ref()
                .is_some_and(|(n, _)| Arc::ptr_eq(n, &e.stream));
            if !same {
                // A stream not in memory has neither deletes nor metadata (see
                // `State::streams`): all of its committed events are visible.
                let s = st.streams.get(&e.stream).unwrap_or(&PLAIN);
                let s = Some((s, s.visible_from(st.commit_position)));
                last_stream = Some((e.stream.clone(), s));
            }
            let Some((_, Some((s, from)))) = &last_stream else {
                continue;
            };
            if s.event_visible(e.version, e.created_us, *from, now)
                && self.filter.passes(&e.stream, e.event_type())
            {
                self.buffer.push_back(e);
            }
        }
        Ok(())
    }
}

/// What a stream without deletes or metadata looks like to a `$all` reader.
static PLAIN: StreamState = StreamState {
    first_version: 0,
    positions: Vec::new(),
    next_version: 0,
    tip_hard: false,
    tip_soft_before: None,
    vis_deleted: None,
    vis_soft_before: 0,
    metadata: crate::types::StreamMetadata::NONE,
    head_tabled: false,
};

fn step_forward(st: &State, s: usize, r: usize) -> Option<(usize, usize)> {
    if r + 1 < st.segments[s].records.len() {
        return Some((s, r + 1));
    }
    let s2 = (s + 1..st.segments.len()).find(|i| !st.segments[*i].records.is_empty())?;
    Some((s2, 0))
}

fn step_backward(st: &State, s: usize, r: usize) -> Option<(usize, usize)> {
    if r > 0 {
        return Some((s, r - 1));
    }
    let s2 = (0..s).rev().find(|i| !st.segments[*i].records.is_empty())?;
    Some((s2, st.segments[s2].records.len() - 1))
}

impl Iterator for AllRead {
    type Item = Result<RecordedEvent, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.buffer.is_empty() && self.next.is_some() && self.remaining > 0 && !self.failed {
            if let Err(e) = self.fill() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        if self.remaining == 0 {
            return None;
        }
        let e = self.buffer.pop_front()?;
        self.remaining -= 1;
        Some(Ok(e))
    }
}

impl Engine {
    /// Reads a stream from `from`, walking `direction`, at most `max_count` events. Only
    /// committed events that are not deleted, truncated or expired are returned.
    pub fn read_stream(
        &self,
        stream: &str,
        from: ReadFrom,
        direction: Direction,
        max_count: u64,
    ) -> Result<StreamRead, ReadError> {
        let st = self.inner.state.read();
        let Some(s) = st.stream_tip(stream)? else {
            return Err(ReadError::StreamNotFound(stream.to_string()));
        };
        let name = st
            .streams
            .get_key_value(stream)
            .map_or_else(|| Arc::from(stream), |(k, _)| k.clone());
        let upto = s.committed_next_version(st.commit_position);
        match s.vis_deleted {
            Some(DeleteKind::Hard) => return Err(ReadError::StreamDeleted(stream.to_string())),
            _ if upto == 0 || upto <= s.vis_soft_before => {
                return Err(ReadError::StreamNotFound(stream.to_string()))
            }
            _ => {}
        }
        let next = match (from, direction) {
            (ReadFrom::Start, Direction::Forward) => Some(0),
            (ReadFrom::Start, Direction::Backward) => Some(0),
            (ReadFrom::End, Direction::Forward) => None,
            (ReadFrom::End, Direction::Backward) => Some(upto - 1),
            (ReadFrom::At(v), Direction::Backward) => Some(v.min(upto - 1)),
            (ReadFrom::At(v), Direction::Forward) => Some(v),
        };
        Ok(StreamRead {
            inner: self.inner.clone(),
            stream: name,
            direction,
            next,
            remaining: max_count,
            buffer: VecDeque::new(),
            cached: None,
            cold: None,
            failed: false,
        })
    }

    /// Reads `$all` from `from`, walking `direction`, at most `max_count` events that pass
    /// `filter`.
    pub fn read_all(
        &self,
        from: ReadFrom,
        direction: Direction,
        max_count: u64,
        filter: AllFilter,
    ) -> AllRead {
        let commit = self.inner.state.read().commit_position;
        let next = match (from, direction) {
            (ReadFrom::Start, Direction::Forward) => Some(0),
            (ReadFrom::Start, Direction::Backward) => Some(0),
            (ReadFrom::End, Direction::Forward) => None,
            (ReadFrom::End, Direction::Backward) => commit.checked_sub(1),
            (ReadFrom::At(p), _) => Some(p),
        };
        AllRead {
            inner: self.inner.clone(),
            direction,
            filter,
            next,
            remaining: max_count,
            buffer: VecDeque::new(),
            cursor: None,
            failed: false,
        }
    }

    /// Position just past the last committed event: the number of positions in `$all`.
    pub fn commit_position(&self) -> u64 {
        self.inner.state.read().commit_position
    }

    /// A stream's state as readers see it, or `None` for a stream never written.
    pub fn stream_info(&self, stream: &str) -> Option<StreamInfo> {
        let st = self.inner.state.read();
        let s = match st.stream_tip(stream) {
            Ok(s) => s?,
            Err(c) => {
                tracing::error!(stream, error = %c, "a stream could not be read back");
                return None;
            }
        };
        info(&st, &Arc::from(stream), &s)
    }

    /// Streams whose names start with `prefix`, in name order, after `after` (exclusive) when
    /// given, at most `limit`: pass the last name of a page as `after` to get the next one.
    pub fn list_streams(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<StreamInfo> {
        let st = self.inner.state.read();
        let mut from = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut out = Vec::new();
        while out.len() < limit {
            // Deleted or empty streams are not listed, so a page may need more names than
            // it shows: take them a batch at a time.
            let batch = (limit - out.len()).saturating_add(16);
            let names = names_after(&st, prefix, &from, batch);
            for name in &names {
                from = Bound::Excluded(name.to_string());
                let s = match st.stream_tip(name) {
                    Ok(Some(s)) => s,
                    Ok(None) => continue,
                    Err(c) => {
                        tracing::error!(stream = %name, error = %c, "a stream could not be read back");
                        continue;
                    }
                };
                if let Some(i) = info(&st, name, &s) {
                    out.push(i);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            if names.len() < batch {
                break;
            }
        }
        out
    }

    /// How many streams [`Engine::list_streams`] would list in all. The stream tables are
    /// merged a block at a time, outside the state lock but for short looks at memory, so
    /// counting a large store does not hold up writers.
    pub fn stream_count(&self) -> u64 {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let (tables, mut count) = {
            let st = self.inner.state.read();
            let listed = st.streams.iter().filter(|(k, s)| info(&st, k, s).is_some());
            (st.tables.clone(), listed.count() as u64)
        };
        // Each table's names in order, a block at a time (its segment's when it is damaged).
        let from_segment = |i| segment_names(&self.inner.state.read(), i);
        let mut sources: Vec<_> = tables
            .iter()
            .enumerate()
            .map(|(i, t)| NameSource::new(t, i, None, &from_segment))
            .collect();
        let mut heap = BinaryHeap::new();
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(n) = s.next() {
                heap.push(Reverse((n, i)));
            }
        }
        let mut last: Option<String> = None;
        let mut batch: Vec<String> = Vec::new();
        let mut settle = |batch: &mut Vec<String>| {
            // Names in memory were counted above (by their state there).
            let st = self.inner.state.read();
            count += batch
                .iter()
                .filter(|n| !st.streams.contains_key(n.as_str()))
                .count() as u64;
            batch.clear();
        };
        while let Some(Reverse((name, i))) = heap.pop() {
            if let Some(n) = sources[i].next() {
                heap.push(Reverse((n, i)));
            }
            if last.as_deref() != Some(name.as_str()) {
                last = Some(name.clone());
                batch.push(name);
                if batch.len() == 4096 {
                    settle(&mut batch);
                }
            }
        }
        settle(&mut batch);
        count
    }

    /// The snapshot stored at exactly (`stream`, `version`).
    pub fn get_snapshot(&self, stream: &str, version: u64) -> Result<Option<Snapshot>, ReadError> {
        self.snapshot_where(stream, |v| v == version)
    }

    /// The newest snapshot of `stream` at or below `version`.
    pub fn latest_snapshot(
        &self,
        stream: &str,
        version: u64,
    ) -> Result<Option<Snapshot>, ReadError> {
        self.snapshot_where(stream, |v| v <= version)
    }

    /// Versions at which `stream` has snapshots, ascending.
    pub fn list_snapshots(&self, stream: &str) -> Vec<u64> {
        let st = self.inner.state.read();
        let key: Arc<str> = Arc::from(stream);
        st.snapshots
            .range((key.clone(), 0)..=(key, u64::MAX))
            .map(|((_, v), _)| *v)
            .collect()
    }

    fn snapshot_where(
        &self,
        stream: &str,
        ok: impl Fn(u64) -> bool,
    ) -> Result<Option<Snapshot>, ReadError> {
        let (name, version, l) = {
            let st = self.inner.state.read();
            let key: Arc<str> = Arc::from(stream);
            let found = st
                .snapshots
                .range((key.clone(), 0)..=(key, u64::MAX))
                .rev()
                .find(|((_, v), _)| ok(*v));
            let Some(((name, version), index)) = found else {
                return Ok(None);
            };
            let (s, r) = st
                .locate_index(*index)
                .expect("snapshot records are in the log");
            (name.clone(), *version, loc(&st, s, r))
        };
        let (h, body) = l.file.record_at(l.offset, l.end)?;
        let bad = |e: crate::error::DecodeError| l.file.corruption(l.offset, e.to_string());
        match decode_entry_lazy(EntryKind::from_byte(h.kind).map_err(bad)?, &body).map_err(bad)? {
            Entry::SnapshotPut { data_range, .. } => Ok(Some(Snapshot {
                stream: name,
                version,
                data: body.slice(data_range),
            })),
            _ => Err(l
                .file
                .corruption(l.offset, "snapshot index points at another entry")
                .into()),
        }
    }

    /// A subscription checkpoint: its position and opaque state.
    pub fn checkpoint(&self, name: &str) -> Option<(u64, Bytes)> {
        self.inner.state.read().checkpoints.get(name).cloned()
    }

    /// The latest checkpoint of every name starting with `prefix`, in name order: (name,
    /// position, state).
    pub fn checkpoints(&self, prefix: &str) -> Vec<(String, u64, Bytes)> {
        let st = self.inner.state.read();
        st.checkpoints
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, (position, state))| (name.clone(), *position, state.clone()))
            .collect()
    }
}

/// The names of one stream table in order, from the first at or after a bound, read a block
/// at a time. When a block is damaged, the rest come from its segment's records instead
/// (`segment_names`, given the segment's place): never a guess, and never out of order.
struct NameSource<'a, F: Fn(usize) -> Vec<String>> {
    table: &'a crate::streamtable::StreamTable,
    segment: usize,
    from: Option<&'a str>,
    block: usize,
    names: std::vec::IntoIter<String>,
    segment_names: &'a F,
}

impl<'a, F: Fn(usize) -> Vec<String>> NameSource<'a, F> {
    fn new(
        table: &'a crate::streamtable::StreamTable,
        segment: usize,
        from: Option<&'a str>,
        segment_names: &'a F,
    ) -> Self {
        NameSource {
            table,
            segment,
            from,
            block: from.map_or(0, |f| table.block_of(f)),
            names: Vec::new().into_iter(),
            segment_names,
        }
    }
}

impl<F: Fn(usize) -> Vec<String>> Iterator for NameSource<'_, F> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if let Some(n) = self.names.next() {
                if self.from.is_some_and(|f| n.as_str() < f) {
                    continue;
                }
                return Some(n);
            }
            if self.block >= self.table.blocks() {
                return None;
            }
            let b = self.block;
            self.block += 1;
            self.names = match self.table.block_names(b) {
                Ok(names) => names.into_iter(),
                Err(doubt) => {
                    tracing::warn!(doubt = %doubt.0, "a stream table block is damaged; reading its segment");
                    // The segment's names from the damaged block's first on (those before
                    // it were given already), once: no block of this table is read again.
                    self.block = self.table.blocks();
                    let first = self.table.block_first(b);
                    let rest = (self.segment_names)(self.segment).into_iter();
                    rest.filter(|n| n.as_str() >= first)
                        .collect::<Vec<_>>()
                        .into_iter()
                }
            };
        }
    }
}

/// The names of the streams of segment `s`, read from its records (each checked); none,
/// logged, if they cannot be read.
fn segment_names(st: &State, s: usize) -> Vec<String> {
    match st.segment_streams(s, None) {
        Ok(all) => all.into_keys().collect(),
        Err(c) => {
            tracing::error!(error = %c, "stream names could not be read");
            Vec::new()
        }
    }
}

/// The first `batch` stream names starting with `prefix` past `from`, from memory and the
/// stream tables. Each source gives its own first `batch`, so the merged first `batch` are
/// the true ones.
fn names_after(
    st: &State,
    prefix: &str,
    from: &Bound<String>,
    batch: usize,
) -> std::collections::BTreeSet<Arc<str>> {
    let past = |n: &str| match from {
        Bound::Excluded(f) => n > f.as_str(),
        Bound::Included(f) => n >= f.as_str(),
        Bound::Unbounded => true,
    };
    let start = match from {
        Bound::Excluded(f) | Bound::Included(f) => f.as_str(),
        Bound::Unbounded => "",
    };
    let mut names = std::collections::BTreeSet::new();
    let in_memory = st
        .streams
        .range::<str, _>((Bound::Included(start), Bound::Unbounded))
        .map(|(k, _)| k.clone());
    let tables = st.tables.iter().enumerate();
    let from_segment = |i| segment_names(st, i);
    let in_tables = tables.map(|(i, t)| {
        NameSource::new(t, i, Some(start), &from_segment).map(|n| Arc::<str>::from(n.as_str()))
    });
    for source in std::iter::once(Box::new(in_memory) as Box<dyn Iterator<Item = Arc<str>>>)
        .chain(in_tables.map(|s| Box::new(s) as Box<dyn Iterator<Item = Arc<str>>>))
    {
        let own = source
            .filter(|n| past(n))
            .take_while(|n| n.starts_with(prefix))
            .take(batch);
        names.extend(own);
    }
    names.into_iter().take(batch).collect()
}

fn info(st: &State, name: &Arc<str>, s: &StreamState) -> Option<StreamInfo> {
    let next = s.committed_next_version(st.commit_position);
    let deleted = match s.vis_deleted {
        Some(DeleteKind::Hard) => Some(DeleteKind::Hard),
        Some(DeleteKind::Soft) if next <= s.vis_soft_before => Some(DeleteKind::Soft),
        _ => None,
    };
    if next == 0 && deleted.is_none() {
        return None;
    }
    Some(StreamInfo {
        name: name.clone(),
        current_version: (deleted.is_none()).then(|| next.checked_sub(1)).flatten(),
        deleted,
        metadata: s.metadata.clone(),
    })
}

/// What [`Engine::verify`] checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyStats {
    /// Segment files read.
    pub segments: u64,
    /// Records whose checksum matched and whose body decoded.
    pub records: u64,
}

impl Engine {
    /// Reads every record of every segment, checking its checksum and decoding its body:
    /// the first failure is returned with its file and offset. Runs beside reads and writes,
    /// over the durable log as it was when it started.
    pub fn verify(&self) -> Result<VerifyStats, Corruption> {
        let segments: Vec<_> = {
            let st = self.inner.state.read();
            // Records queued but not yet written are not in the file yet.
            let durable = |s: &crate::state::Seg| {
                let n = (st.durable_index + 1).saturating_sub(s.first_index());
                s.records[..(n as usize).min(s.records.len())].to_vec()
            };
            st.segments
                .iter()
                .map(|s| (s.file.clone(), durable(s), s.end))
                .collect()
        };
        let mut stats = VerifyStats::default();
        for (file, records, end) in segments {
            stats.segments += 1;
            for r in records {
                let (h, body) = file.record_at(r.offset as u64, end)?;
                let bad =
                    |e: crate::error::DecodeError| file.corruption(r.offset as u64, e.to_string());
                crate::format::decode_entry(EntryKind::from_byte(h.kind).map_err(bad)?, &body)
                    .map_err(bad)?;
                stats.records += 1;
            }
        }
        Ok(stats)
    }
}
