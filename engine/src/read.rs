//! Reads: a stream forward or backward, `$all` forward or backward with filters, stream
//! info and listing, snapshots and checkpoints.
//!
//! Reads are lazy: an iterator looks up a chunk of at most [`READ_CHUNK_MAX`] locations under
//! the read lock, then decodes them from the memory map without the lock, so a read of a
//! million events holds a few hundred at a time. Event payloads are `Bytes` slices of the
//! mapping: no copy. Each record's checksum is verified when it is decoded, and a failure is
//! returned as [`ReadError::Corruption`] instead of bad data.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::engine::Engine;
use crate::error::{Corruption, ReadError};
use crate::format::{decode_entry_lazy, Entry, EntryKind};
use crate::inner::Inner;
use crate::segment::SegmentFile;
use crate::state::{State, StreamState};
use crate::types::{AllFilter, DeleteKind, Direction, RecordedEvent, Snapshot, StreamInfo};

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

/// A decoded record's events, kept while a read walks through it.
struct DecodedRecord {
    file: Arc<SegmentFile>,
    offset: u64,
    /// First event slot.
    position: u64,
    /// Event slots.
    count: u32,
    events: Vec<RecordedEvent>,
}

/// Decodes the events of the append record at `offset` of `file`.
fn decode_events(
    file: &Arc<SegmentFile>,
    offset: u64,
    end: u64,
) -> Result<DecodedRecord, Corruption> {
    let (h, body) = file.record_at(offset, end)?;
    let bad = |e: crate::error::DecodeError| file.corruption(offset, e.to_string());
    let mut events = Vec::new();
    if EntryKind::from_byte(h.kind).map_err(bad)? == EntryKind::Append {
        let Entry::Append(view) = decode_entry_lazy(EntryKind::Append, &body).map_err(bad)? else {
            unreachable!("decoded as an append")
        };
        let names: Vec<Arc<str>> = view.streams.iter().map(|s| Arc::from(*s)).collect();
        events.reserve(view.event_count as usize);
        for e in view.events() {
            let e = e.map_err(bad)?;
            let eh = &e.header;
            events.push(RecordedEvent {
                stream: names[eh.stream_slot.get() as usize].clone(),
                version: eh.version.get(),
                position: h.position.get() + eh.pos_delta.get() as u64,
                id: Uuid::from_bytes(eh.id),
                event_type_bytes: body.slice(e.type_range),
                content_type: e.content_type,
                data: body.slice(e.data_range),
                metadata: body.slice(e.meta_range),
                created_us: eh.created_us.get(),
            });
        }
    }
    Ok(DecodedRecord {
        file: file.clone(),
        offset,
        position: h.position.get(),
        count: h.count.get(),
        events,
    })
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

/// Events of one stream, read lazily. Created by [`Engine::read_stream`].
pub struct StreamRead {
    inner: Arc<Inner>,
    stream: Arc<str>,
    direction: Direction,
    /// Next version to look at; `None` when the walk is over.
    next: Option<u64>,
    remaining: u64,
    buffer: VecDeque<RecordedEvent>,
    cached: Option<DecodedRecord>,
    failed: bool,
}

impl StreamRead {
    /// Looks up the next chunk of versions and decodes them.
    fn fill(&mut self) -> Result<(), ReadError> {
        let Some(mut v) = self.next else {
            return Ok(());
        };
        let mut wanted = Vec::new();
        let (max_age, now) = {
            let st = self.inner.state.read();
            let Some(s) = st.streams.get(&self.stream) else {
                self.next = None;
                return Ok(());
            };
            let from = s.visible_from(st.commit_position);
            let upto = s.committed_next_version(st.commit_position);
            let chunk = (READ_CHUNK_MAX as u64).min(self.remaining);
            while (wanted.len() as u64) < chunk {
                let in_range = v >= from.max(s.first_version) && v < upto;
                if !in_range {
                    if self.direction == Direction::Forward && v < from.max(s.first_version) {
                        v = from.max(s.first_version);
                        continue;
                    }
                    self.next = None;
                    break;
                }
                let p = s.position_of(v).expect("versions in range are indexed");
                let (si, ri) = st
                    .locate_position(p)
                    .expect("committed positions are located");
                wanted.push((p, loc(&st, si, ri)));
                match self.direction {
                    Direction::Forward => v += 1,
                    Direction::Backward => match v.checked_sub(1) {
                        Some(prev) => v = prev,
                        None => {
                            self.next = None;
                            break;
                        }
                    },
                }
                self.next = self.next.map(|_| v);
            }
            (s.metadata.max_age_us, State::now_us())
        };
        for (p, l) in wanted {
            let hit = self
                .cached
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(&c.file, &l.file) && c.offset == l.offset);
            if !hit {
                self.cached = Some(decode_events(&l.file, l.offset, l.end)?);
            }
            let rec = self.cached.as_ref().expect("filled above");
            // Events of a record are in position order.
            let found = rec.events.binary_search_by_key(&p, |e| e.position);
            if let Some(e) = found.ok().map(|i| &rec.events[i]) {
                if max_age.is_none_or(|age| e.created_us.saturating_add(age) >= now) {
                    self.buffer.push_back(e.clone());
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
    failed: bool,
}

impl AllRead {
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
        let mut decoded = Vec::with_capacity(locs.len());
        for l in &locs {
            decoded.push(decode_events(&l.file, l.offset, l.end)?);
        }
        let st = self.inner.state.read();
        let now = State::now_us();
        // The stream of the previous event and its visibility bound, looked up once per run.
        type Seen<'a> = Option<(Arc<str>, Option<(&'a StreamState, u64)>)>;
        let mut last_stream: Seen<'_> = None;
        for rec in decoded {
            // Continue after this record's last slot (or before its first, going backward).
            self.next = match self.direction {
                Direction::Forward => Some(rec.position + rec.count as u64),
                Direction::Backward => rec.position.checked_sub(1),
            };
            let mut events = rec.events;
            if self.direction == Direction::Backward {
                events.reverse();
            }
            for e in events {
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
                    let s = st
                        .streams
                        .get(&e.stream)
                        .map(|s| (s, s.visible_from(st.commit_position)));
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
        }
        if locs.is_empty() {
            self.next = None;
        }
        Ok(())
    }
}

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
        let Some((name, s)) = st.streams.get_key_value(stream) else {
            return Err(ReadError::StreamNotFound(stream.to_string()));
        };
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
            stream: name.clone(),
            direction,
            next,
            remaining: max_count,
            buffer: VecDeque::new(),
            cached: None,
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
        let (name, s) = st.streams.get_key_value(stream)?;
        info(&st, name, s)
    }

    /// Streams whose names start with `prefix`, in name order, after `after` (exclusive) when
    /// given, at most `limit`: pass the last name of a page as `after` to get the next one.
    pub fn list_streams(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<StreamInfo> {
        use std::ops::Bound;
        let st = self.inner.state.read();
        let lower = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        st.streams
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, s)| info(&st, k, s))
            .take(limit)
            .collect()
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
