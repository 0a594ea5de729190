//! Segment summaries (`.qidx`): for a sealed, fully committed segment, every record's header
//! and offset with its payloads stripped (event types, data, metadata and snapshot blobs).
//! Opening a store loads summaries instead of scanning segments, so restart work does not
//! depend on how many payload bytes the store holds, and only the active segment is replayed.
//!
//! A summary holds its records' locations (term, position, offset, event count) as one
//! array after the header, the entry offsets of the records that are not appends, then the
//! entries. Two checksums cover it. The body checksum covers the entries and is checked by
//! whoever reads the events (the id loader, the tables' writer). The spine checksum covers
//! what an open reads when the segment's stream table holds its streams: the locations,
//! the control offsets, and the entries of records that are not appends (deletes,
//! metadata, snapshots, checkpoints, membership). So such an open checks 24 bytes per
//! record, uses the location array where the file is mapped, and decodes only the control
//! records: its time does not grow with the events a record holds, and barely with the
//! records.
//!
//! A summary is derived data: one that is missing or fails its checksum is ignored (the
//! segment is scanned instead) and rewritten later. An event region that fails the body
//! checksum after its spine loaded is read from the segment's own checked records instead
//! ([`load_ids`]).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Corruption, DecodeError, OpenError};
use crate::format::{self, decode_entry_lazy, Entry, EntryKind, RecordHeader, RECORD_HEADER_BYTES};
use crate::idindex::PendingIds;
use crate::segment::{self, summary_name, SegmentFile};
use crate::state::{ApplyError, Origin, RecLoc, Records, State};
use crate::storage::{self, Storage};
use crate::streamtable::StreamTable;
use crate::{idtable, streamtable};

/// The header of a summary file.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct SummaryHeader {
    /// [`format::SUMMARY_MAGIC`].
    pub(crate) magic: [u8; 8],
    /// First Raft index of the segment.
    pub(crate) first_index: U64,
    /// Records summarized.
    pub(crate) record_count: U64,
    /// Offset just past the segment's last record.
    pub(crate) end: U64,
    /// Bytes of entries that follow the header.
    pub(crate) body_len: U64,
    /// CRC32C of those bytes.
    pub(crate) body_crc: U32,
    /// CRC32C of the spine: see [`spine_crc`].
    pub(crate) spine_crc: U32,
    /// Records that are not appends (their entries' offsets follow the locations).
    pub(crate) controls: U32,
    /// CRC32C of the header's first 52 bytes.
    pub(crate) header_crc: U32,
}

/// Size of [`SummaryHeader`].
pub(crate) const SUMMARY_HEADER_BYTES: usize = 56;
const _: () = assert!(std::mem::size_of::<SummaryHeader>() == SUMMARY_HEADER_BYTES);
/// Bytes of the header its checksum covers.
const HEADER_CHECKED_BYTES: usize = 52;

/// One record's location, stored after the header: the records' locations are read at open
/// as one array, not entry by entry, and used in place where the summary is mapped (the
/// in-memory [`RecLoc`] has this layout on a little-endian machine).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Location {
    term: U64,
    position: U64,
    offset: U32,
    count: U32,
}

/// Size of [`Location`].
const LOCATION_BYTES: usize = 24;
const _: () = assert!(std::mem::size_of::<Location>() == LOCATION_BYTES);

impl From<Location> for RecLoc {
    fn from(l: Location) -> RecLoc {
        RecLoc {
            term: l.term.get(),
            position: l.position.get(),
            offset: l.offset.get(),
            count: l.count.get(),
        }
    }
}

/// The locations of a summary's location section (a whole number of them: its size was
/// checked against the header).
fn locations_of(section: &[u8]) -> impl Iterator<Item = Location> + '_ {
    section
        .chunks_exact(LOCATION_BYTES)
        .filter_map(|raw| Location::read_from_bytes(raw).ok())
}

/// A summary's parts after its header: the records' locations, the entry offsets of the
/// records that are not appends, and the entries.
struct Sections<'a> {
    locations: &'a [u8],
    controls: &'a [u8],
    entries: &'a [u8],
}

/// Builds the summary of a segment from its records.
pub(crate) fn build(
    file: &SegmentFile,
    records: &[RecLoc],
    end: u64,
) -> Result<Vec<u8>, Corruption> {
    let mut body = Vec::with_capacity(records.len() * 96);
    let mut locations = Vec::with_capacity(records.len() * LOCATION_BYTES);
    let mut controls = Vec::new();
    let mut stripped = Vec::new();
    for r in records {
        let (h, rec) = file.record_at(r.offset as u64, end)?;
        strip(&mut stripped, &h, &rec)
            .map_err(|e| file.corruption(r.offset as u64, e.to_string()))?;
        let location = Location {
            term: h.term,
            position: h.position,
            offset: U32::new(r.offset),
            count: h.count,
        };
        locations.extend_from_slice(location.as_bytes());
        if h.kind != EntryKind::Append as u8 {
            controls.extend_from_slice(&(body.len() as u32).to_le_bytes());
        }
        body.extend_from_slice(&r.offset.to_le_bytes());
        body.extend_from_slice(&(stripped.len() as u32).to_le_bytes());
        body.extend_from_slice(h.as_bytes());
        body.extend_from_slice(&stripped);
    }
    let sections = Sections {
        locations: &locations,
        controls: &controls,
        entries: &body,
    };
    let spine = spine_crc(&sections).map_err(|e| file.corruption(0, e.to_string()))?;
    let mut header = SummaryHeader {
        magic: format::SUMMARY_MAGIC,
        first_index: U64::new(file.first_index),
        record_count: U64::new(records.len() as u64),
        end: U64::new(end),
        body_len: U64::new(body.len() as u64),
        body_crc: U32::new(crc32c::crc32c(&body)),
        spine_crc: U32::new(spine),
        controls: U32::new((controls.len() / 4) as u32),
        header_crc: U32::new(0),
    };
    header.header_crc = U32::new(crc32c::crc32c(&header.as_bytes()[..HEADER_CHECKED_BYTES]));
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(&locations);
    out.extend_from_slice(&controls);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The part of a record body the index needs.
fn strip(out: &mut Vec<u8>, h: &RecordHeader, body: &[u8]) -> Result<(), DecodeError> {
    out.clear();
    match decode_entry_lazy(EntryKind::from_byte(h.kind)?, body)? {
        Entry::Append(view) => {
            format::filter_append(out, body, &view, true, |_| true)?;
        }
        Entry::SnapshotPut {
            stream, version, ..
        } => {
            format::encode_snapshot_put(out, stream, version, &[]);
        }
        _ => out.extend_from_slice(body),
    }
    Ok(())
}

/// Writes a summary durably: temporary file, fsync, rename, fsync of the directory; and,
/// beside it, the segment's event-id and stream tables (`idtable.rs`, `streamtable.rs`),
/// derived from it. Failing to write those is logged, not an error: the segment's ids and
/// streams then stay in memory.
pub(crate) fn write(
    s: &dyn Storage,
    dir: &Path,
    first_index: u64,
    bytes: &[u8],
) -> std::io::Result<()> {
    let path = dir.join(summary_name(first_index));
    let tmp = path.with_extension("qidx.tmp");
    storage::write_file_atomic(s, &tmp, &path, bytes, 0)?;
    if let Err(e) = write_tables(s, dir, first_index, bytes, true, true) {
        tracing::warn!(summary = %path.display(), error = %e, "could not write its tables");
    }
    storage::sync_dir(s, dir)
}

/// Writes the event-id table (with `ids`) and the stream table (with `streams`) of the
/// summary `bytes` (which was just written, or checked when loaded).
pub(crate) fn write_tables(
    s: &dyn Storage,
    dir: &Path,
    first_index: u64,
    bytes: &[u8],
    ids: bool,
    streams: bool,
) -> std::io::Result<()> {
    let (header, entries) = check(bytes, first_index)
        .ok_or_else(|| std::io::Error::other("the summary does not check"))?;
    let crc = header.body_crc.get();
    if ids {
        let mut ids = Vec::with_capacity(header.record_count.get() as usize);
        walk_events(entries, |_, e, position| {
            ids.push((u128::from_be_bytes(e.id), position));
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        idtable::write(s, dir, first_index, crc, ids)?;
    }
    if streams {
        let contents =
            stream_contents(entries).map_err(|e| std::io::Error::other(e.to_string()))?;
        streamtable::write(s, dir, first_index, crc, &contents)?;
    }
    Ok(())
}

/// The streams of a summary's entries with their events.
fn stream_contents(entries: &[u8]) -> Result<streamtable::Contents, DecodeError> {
    let mut c = streamtable::Contents::default();
    walk_events(entries, |name, e, position| {
        c.max_created_us = c.max_created_us.max(e.created_us.get());
        // Names repeat across records: look up before allocating.
        let item = (e.version.get(), position);
        match c.streams.get_mut(name) {
            Some(run) => run.push(item),
            None => {
                c.streams.insert(name.to_string(), vec![item]);
            }
        }
    })?;
    Ok(c)
}

/// The checksum of a summary's body, which its tables are bound to.
pub(crate) fn body_crc(bytes: &[u8]) -> Option<u32> {
    SummaryHeader::read_from_prefix(bytes)
        .ok()
        .map(|(h, _)| h.body_crc.get())
}

/// Loads the summary of `file` into the state if it exists and is intact; returns the
/// segment's end offset, or `None` when the segment must be scanned instead.
pub(crate) fn load(st: &mut State, file: &Arc<SegmentFile>) -> Result<Option<u64>, OpenError> {
    let dir = file.path.parent().unwrap_or(Path::new("."));
    let path = dir.join(summary_name(file.first_index));
    let bytes = match segment::map_whole(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(OpenError::Io { path, source }),
    };
    let Some((header, sections)) = check_header(&bytes, file.first_index) else {
        tracing::warn!(file = %path.display(), "ignoring a damaged segment summary; scanning");
        return Ok(None);
    };
    if !ends_the_segment(file, header.end.get()) {
        // Records follow the summarized end: the segment grew after the summary was written
        // (a truncation made it the active segment again). The summary is stale.
        tracing::warn!(file = %path.display(), "ignoring a stale segment summary; scanning");
        return Ok(None);
    }
    let corrupt = |offset: u64, e: DecodeError| Corruption {
        file: path.clone(),
        offset,
        detail: e.to_string(),
    };
    let apply_err = |base: u64| {
        let corrupt = &corrupt;
        move |e| match e {
            ApplyError::Decode(e) => OpenError::from(corrupt(base, e)),
            ApplyError::Lookup(c) => OpenError::from(c),
        }
    };
    // Its streams stay on disk if every summarized segment before it had a stream table
    // and it has one: they are looked up there when needed, and the open reads only the
    // summary's spine (the records' locations, and the records that are not appends).
    // Otherwise it reads every event, so the whole body must check.
    let table = if st.tables_open {
        StreamTable::open(dir, file.first_index, header.body_crc.get())
    } else {
        None
    };
    let entries = sections.entries;
    // Where the entries start in the file, for errors' offsets.
    let entries_at = SUMMARY_HEADER_BYTES + sections.locations.len() + sections.controls.len();
    let origin = match table {
        Some(t) => {
            let Some(spine) = Spine::read(&header, &bytes, &sections, file, st.next_position)
            else {
                tracing::warn!(file = %path.display(), "ignoring a damaged segment summary; scanning");
                return Ok(None);
            };
            st.last_created_us = st.last_created_us.max(t.max_created_us());
            st.tables.push(Arc::new(t));
            st.open_stats.stream_tables += 1;
            // Appends change nothing but the records' list here (their streams are in the
            // table): the control records are applied, then the locations go in whole.
            for c in &spine.controls {
                let base = (entries_at + c.at) as u64;
                st.apply_entry(&c.header, c.body, Origin::Tabled)
                    .map_err(apply_err(base))?;
            }
            st.push_locations(spine.locations);
            Origin::Tabled
        }
        None => {
            if !body_checks(&header, entries) {
                tracing::warn!(file = %path.display(), "ignoring a damaged segment summary; scanning");
                return Ok(None);
            }
            st.close_tables()?;
            let mut at = 0usize;
            let mut count = 0u64;
            while at < entries.len() {
                let base = (entries_at + at) as u64;
                let (offset, h, body, next) =
                    entry_at(entries, at).map_err(|e| corrupt(base, e))?;
                st.apply_tip(&h, offset as u64, body, Origin::Summary)
                    .map_err(apply_err(base))?;
                at = next;
                count += 1;
            }
            if count != header.record_count.get() {
                let e = DecodeError::new("summary", "record count does not match");
                return Err(corrupt(0, e).into());
            }
            Origin::Summary
        }
    };
    let count = header.record_count.get();
    if origin == Origin::Tabled {
        st.tabled_below = st.next_position;
    }
    st.ids_pending.push(PendingIds {
        path: path.clone(),
        first_index: file.first_index,
        summary_crc: header.body_crc.get(),
    });
    st.open_stats.summaries_loaded += 1;
    st.open_stats.records_from_summaries += count;
    Ok(Some(header.end.get()))
}

/// Whether `end` is where the segment's records stop: past it the file holds only zeros
/// (pre-zeroed space) or nothing. Checking one record header's worth is enough: a record
/// written after the summary starts exactly at `end`, and a record header is never all zeros.
fn ends_the_segment(file: &SegmentFile, end: u64) -> bool {
    let Ok(meta) = file.file.metadata() else {
        return false;
    };
    let len = meta.len().min(file.map.len() as u64);
    if end > len || end < format::SEGMENT_HEADER_BYTES as u64 {
        return false;
    }
    let stop = (end + RECORD_HEADER_BYTES as u64).min(len);
    format::all_zero(&file.map[end as usize..stop as usize])
}

/// Adds the event ids of a summary to `ids`. Used by the background id loader. An open that
/// had the segment's stream table checked only the summary's spine, so its events may fail
/// the body checksum here: they are then read from the segment's own checked records.
pub(crate) fn load_ids(path: &Path, ids: &mut crate::idindex::IdMap) -> Result<(), DecodeError> {
    let bytes = segment::map_whole(path).map_err(|e| DecodeError::new("summary", e.to_string()))?;
    let first_index = SummaryHeader::read_from_prefix(&bytes)
        .map_err(|_| DecodeError::new("summary", "short header"))?
        .0
        .first_index
        .get();
    match check(&bytes, first_index) {
        Some((_, entries)) => walk_events(entries, |_, e, position| {
            ids.insert(u128::from_be_bytes(e.id), position);
        }),
        None => {
            tracing::warn!(file = %path.display(), "a summary's events do not check; reading its segment's");
            segment_ids(&path.with_extension(segment::SEGMENT_EXT), ids)
        }
    }
}

/// Adds the event ids of a sealed segment's records to `ids`, each record checked.
fn segment_ids(path: &Path, ids: &mut crate::idindex::IdMap) -> Result<(), DecodeError> {
    let seg =
        SegmentFile::open(path, false).map_err(|e| DecodeError::new("segment", e.to_string()))?;
    let start = format::SEGMENT_HEADER_BYTES as u64;
    let outcome = segment::scan(&seg, start, u64::MAX, |rec, body| {
        let bad = |e: DecodeError| seg.corruption(rec.offset, e.to_string());
        let kind = EntryKind::from_byte(rec.header.kind).map_err(bad)?;
        if let Entry::Append(view) = decode_entry_lazy(kind, body).map_err(bad)? {
            for h in view.headers() {
                let h = h.map_err(bad)?;
                let position = rec.header.position.get() + h.pos_delta.get() as u64;
                ids.insert(u128::from_be_bytes(h.id), position);
            }
        }
        Ok(())
    })
    .map_err(|c| DecodeError::new("segment", c.to_string()))?;
    match outcome.bad {
        None => Ok(()),
        Some((at, why)) => Err(DecodeError::new("segment", format!("at {at}: {why}"))),
    }
}

/// Calls `add` with the stream, header and position of every event of a summary's entries.
fn walk_events(
    entries: &[u8],
    mut add: impl FnMut(&str, &format::EventHeader, u64),
) -> Result<(), DecodeError> {
    let mut at = 0usize;
    while at < entries.len() {
        let (_, h, body, next) = entry_at(entries, at)?;
        if EntryKind::from_byte(h.kind)? == EntryKind::Append {
            add_events(body, h.position.get(), &mut add)?;
        }
        at = next;
    }
    Ok(())
}

/// The events of a stripped append body. Stripped events are bare event headers, so this
/// walks them at a fixed stride instead of decoding each one.
fn add_events(
    body: &[u8],
    position: u64,
    add: &mut impl FnMut(&str, &format::EventHeader, u64),
) -> Result<(), DecodeError> {
    use crate::format::{EventHeader, EVENT_HEADER_BYTES};
    let mut c = format::Cursor::new(body, "summary append");
    let names = (0..c.u16()?)
        .map(|_| c.str8())
        .collect::<Result<Vec<_>, _>>()?;
    let n = c.u32()? as usize;
    let len = n
        .checked_mul(EVENT_HEADER_BYTES)
        .ok_or_else(|| DecodeError::new("summary append", "event count overflows"))?;
    let events = c.take(len)?;
    c.end()?;
    for raw in events.chunks_exact(EVENT_HEADER_BYTES) {
        let e = EventHeader::read_from_bytes(raw)
            .map_err(|_| DecodeError::new("summary append", "short event header"))?;
        let name = names
            .get(e.stream_slot.get() as usize)
            .ok_or_else(|| DecodeError::new("summary append", "stream slot out of range"))?;
        add(name, &e, position + e.pos_delta.get() as u64);
    }
    Ok(())
}

/// The header and entries of a summary whose header checks and whose entries, all of them,
/// match the body checksum.
fn check(bytes: &[u8], first_index: u64) -> Option<(SummaryHeader, &[u8])> {
    let (h, s) = check_header(bytes, first_index)?;
    body_checks(&h, s.entries).then_some((h, s.entries))
}

/// Whether every byte of a summary's entries matches its header's body checksum.
fn body_checks(h: &SummaryHeader, entries: &[u8]) -> bool {
    h.body_crc.get() == crc32c::crc32c(entries)
}

/// The header and sections of a summary of the segment starting at `first_index` whose
/// header checks and whose sections have the sizes it gives; nothing after it is checked.
fn check_header(bytes: &[u8], first_index: u64) -> Option<(SummaryHeader, Sections<'_>)> {
    let (h, rest) = SummaryHeader::read_from_prefix(bytes).ok()?;
    let ok = h.magic == format::SUMMARY_MAGIC
        && h.header_crc.get() == crc32c::crc32c(&h.as_bytes()[..HEADER_CHECKED_BYTES])
        && h.first_index.get() == first_index;
    let locations = usize::try_from(h.record_count.get())
        .ok()?
        .checked_mul(LOCATION_BYTES)?;
    let controls = usize::try_from(h.controls.get()).ok()?.checked_mul(4)?;
    let entries = usize::try_from(h.body_len.get()).ok()?;
    let sizes = locations.checked_add(controls)?.checked_add(entries)? == rest.len();
    if !(ok && sizes) {
        return None;
    }
    let (locations, rest) = rest.split_at(locations);
    let (controls, entries) = rest.split_at(controls);
    Some((
        h,
        Sections {
            locations,
            controls,
            entries,
        },
    ))
}

/// The spine checksum of a summary: CRC32C over the records' locations, the offsets of the
/// entries that are not appends, and those entries whole (offset, length, record header,
/// body). An error means a control offset that does not lead to an entry.
fn spine_crc(s: &Sections<'_>) -> Result<u32, DecodeError> {
    let mut crc = crc32c::crc32c(s.locations);
    crc = crc32c::crc32c_append(crc, s.controls);
    for raw in s.controls.chunks_exact(4) {
        let at = u32::from_le_bytes(raw.try_into().expect("chunks of 4")) as usize;
        if at >= s.entries.len() {
            return Err(DecodeError::new("summary", "control entry out of range"));
        }
        let (.., next) = entry_at(s.entries, at)?;
        crc = crc32c::crc32c_append(crc, &s.entries[at..next]);
    }
    Ok(crc)
}

/// What an open with the stream table takes from a summary: every record's location, and
/// the records that are not appends, each matching its location.
struct Spine<'a> {
    locations: Records,
    controls: Vec<Control<'a>>,
}

/// A record of a summary that is not an append.
struct Control<'a> {
    /// Its place in the segment's records.
    record: usize,
    /// Where its entry starts among the summary's entries.
    at: usize,
    header: RecordHeader,
    body: &'a [u8],
}

impl<'a> Spine<'a> {
    /// The spine of a summary whose header checked (`s`, sections of `whole`), if it
    /// matches its checksum and its locations continue the log from `next_position`, in
    /// order, inside the segment. The locations are used where `whole` is mapped.
    fn read(
        h: &SummaryHeader,
        whole: &Bytes,
        s: &Sections<'a>,
        file: &SegmentFile,
        next_position: u64,
    ) -> Option<Spine<'a>> {
        if spine_crc(s).ok()? != h.spine_crc.get() {
            return None;
        }
        let mut position = next_position;
        let mut floor = format::SEGMENT_HEADER_BYTES as u64;
        for l in locations_of(s.locations) {
            let (offset, count) = (l.offset.get(), l.count.get());
            if l.position.get() != position || u64::from(offset) < floor {
                return None;
            }
            position += u64::from(count);
            floor = u64::from(offset) + RECORD_HEADER_BYTES as u64;
        }
        if floor > h.end.get() {
            return None;
        }
        // Used where the summary is mapped; copied where the byte order or the alignment
        // does not allow it.
        let locations = Records::in_place(whole.slice_ref(s.locations)).unwrap_or_else(|| {
            Records::Owned(locations_of(s.locations).map(RecLoc::from).collect())
        });
        let mut controls: Vec<Control<'a>> = Vec::with_capacity(s.controls.len() / 4);
        for raw in s.controls.chunks_exact(4) {
            let at = u32::from_le_bytes(raw.try_into().ok()?) as usize;
            let (offset, header, body, _) = entry_at(s.entries, at).ok()?;
            let record = usize::try_from(header.index.get().checked_sub(file.first_index)?).ok()?;
            let l = locations.get(record)?;
            let matches = l.term == header.term.get()
                && l.position == header.position.get()
                && l.offset == offset
                && l.count == header.count.get()
                && header.kind != EntryKind::Append as u8;
            if !matches || controls.last().is_some_and(|c| c.record >= record) {
                return None;
            }
            controls.push(Control {
                record,
                at,
                header,
                body,
            });
        }
        Some(Spine {
            locations,
            controls,
        })
    }
}

fn entry_at(b: &[u8], at: usize) -> Result<(u32, RecordHeader, &[u8], usize), DecodeError> {
    let mut c = format::Cursor::new(&b[at..], "summary entry");
    let offset = c.u32()?;
    let len = c.u32()? as usize;
    let h = RecordHeader::read_from_bytes(c.take(RECORD_HEADER_BYTES)?)
        .map_err(|_| DecodeError::new("summary entry", "short header"))?;
    let body = c.take(len)?;
    Ok((offset, h, body, at + c.offset()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the location array cannot be used in place it is copied: the same locations.
    #[test]
    fn a_location_section_reads_as_written() {
        let written: Vec<Location> = (0..50u32)
            .map(|i| Location {
                term: U64::new(3 + u64::from(i / 7)),
                position: U64::new(500 + u64::from(i) * 4),
                offset: U32::new(64 + i * 300),
                count: U32::new(4),
            })
            .collect();
        let section = written.as_bytes();
        let read: Vec<RecLoc> = locations_of(section).map(RecLoc::from).collect();
        assert_eq!(read.len(), written.len());
        for (r, w) in read.iter().zip(&written) {
            assert_eq!(
                (r.term, r.position, r.offset, r.count),
                (
                    w.term.get(),
                    w.position.get(),
                    w.offset.get(),
                    w.count.get()
                )
            );
        }
    }
}
