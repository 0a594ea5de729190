//! The durable log as Raft reads it. The application writes it (from [`crate::Ready`]) and
//! implements this trait over it; in Quiver that is the engine, whose log is the event log
//! and whose sealed segment files are what a far-behind follower is sent.

use crate::message::{DecodeError, Entry, EntryKind, HardState, Membership};
use bytes::Bytes;

/// A sealed segment: committed entries `first..=last` that a leader can ship as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentMeta {
    /// Index of its first entry.
    pub first: u64,
    /// Index of its last entry.
    pub last: u64,
    /// Term of its last entry.
    pub last_term: u64,
    /// Its length in bytes.
    pub size: u64,
}

/// A chunk of a segment to persist (see [`crate::Ready::chunks`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentChunk {
    /// The segment's first index.
    pub first: u64,
    /// Its last index.
    pub last: u64,
    /// Where this chunk goes in the segment's bytes.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// The last chunk: once it is persisted, the segment joins the log, replacing any
    /// entries from `first` on.
    pub done: bool,
}

/// Read access to the persisted log.
pub trait Storage {
    /// What was persisted of the hard state.
    fn hard_state(&self) -> HardState;
    /// Index of the last persisted entry (0 when empty).
    fn last_index(&self) -> u64;
    /// Term of the entry at `index` (`Some(0)` for index 0; `None` beyond the log).
    fn term(&self, index: u64) -> Option<u64>;
    /// Entries `lo..hi` (`lo >= 1`, `hi <= last_index() + 1`), as many as fit in about
    /// `max_bytes` of data, and always at least one when `lo < hi`.
    fn entries(&self, lo: u64, hi: u64, max_bytes: usize) -> Vec<Entry>;
    /// Every persisted membership entry, oldest first (few: one per change).
    fn memberships(&self) -> Vec<(u64, Membership)>;
    /// The first sealed, committed segment that starts at or after `index`, if any.
    fn segment_from(&self, index: u64) -> Option<SegmentMeta>;
    /// The sealed, committed segment that starts at `first`, if there is one.
    fn segment_at(&self, first: u64) -> Option<SegmentMeta> {
        self.segment_from(first).filter(|s| s.first == first)
    }
    /// Up to `max` bytes of segment `first` from `offset`.
    fn segment_bytes(&self, first: u64, offset: u64, max: usize) -> Vec<u8>;
}

/// An in-memory [`Storage`] for tests and the simulator. With `segment_entries` set, every
/// full run of that many entries that is committed counts as a sealed segment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MemStorage {
    hard: HardState,
    log: Vec<Entry>,
    /// Entries per segment (0: no segments).
    pub segment_entries: u64,
    /// A segment being received: (first index, bytes so far).
    staging: Option<(u64, Vec<u8>)>,
}

impl MemStorage {
    /// An empty log whose committed runs of `segment_entries` entries are sealed segments.
    pub fn with_segments(segment_entries: u64) -> MemStorage {
        MemStorage {
            segment_entries,
            ..MemStorage::default()
        }
    }

    /// Persists entries: a first entry at or below the last index first removes the suffix
    /// from there (a leader overwrote uncommitted entries).
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index >= 1 && first.index <= self.last_index() + 1,
            "entries leave a gap"
        );
        self.log.truncate((first.index - 1) as usize);
        self.log.extend_from_slice(entries);
    }

    /// Persists the hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard = hs;
    }

    /// Persists a shipped chunk; the last one installs the segment into the log.
    pub fn write_chunk(&mut self, chunk: &SegmentChunk) -> Result<(), DecodeError> {
        if chunk.offset == 0 {
            self.staging = Some((chunk.first, Vec::new()));
        }
        let Some((first, bytes)) = self.staging.as_mut() else {
            return Err(DecodeError("a chunk of no segment"));
        };
        if *first != chunk.first || bytes.len() as u64 != chunk.offset {
            return Err(DecodeError("a chunk out of order"));
        }
        bytes.extend_from_slice(&chunk.data);
        if !chunk.done {
            return Ok(());
        }
        let (first, bytes) = self.staging.take().expect("checked above");
        let entries = decode_entries(&bytes)?;
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(k, e)| e.index == first + k as u64);
        if !contiguous || entries.last().map(|e| e.index) != Some(chunk.last) {
            return Err(DecodeError("segment entries are not first..=last"));
        }
        if first > self.last_index() + 1 {
            return Err(DecodeError("segment leaves a gap"));
        }
        self.append(&entries);
        Ok(())
    }
}

/// Entry bytes in a [`MemStorage`] segment: index, term (u64), kind (u8), length (u32), data.
fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.index.to_le_bytes());
        out.extend_from_slice(&e.term.to_le_bytes());
        out.push(match e.kind {
            EntryKind::Normal => 0,
            EntryKind::Membership => 1,
        });
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.data);
    }
    out
}

fn decode_entries(mut bytes: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 21 {
            return Err(DecodeError("truncated entry"));
        }
        let index = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let term = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let kind = match bytes[16] {
            0 => EntryKind::Normal,
            1 => EntryKind::Membership,
            _ => return Err(DecodeError("unknown entry kind")),
        };
        let len = u32::from_le_bytes(bytes[17..21].try_into().expect("4 bytes")) as usize;
        let rest = &bytes[21..];
        if rest.len() < len {
            return Err(DecodeError("truncated entry data"));
        }
        out.push(Entry {
            index,
            term,
            kind,
            data: Bytes::copy_from_slice(&rest[..len]),
        });
        bytes = &rest[len..];
    }
    Ok(out)
}

impl Storage for MemStorage {
    fn hard_state(&self) -> HardState {
        self.hard
    }

    fn last_index(&self) -> u64 {
        self.log.len() as u64
    }

    fn term(&self, index: u64) -> Option<u64> {
        match index {
            0 => Some(0),
            i => self.log.get((i - 1) as usize).map(|e| e.term),
        }
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: usize) -> Vec<Entry> {
        let mut bytes = 0;
        self.log[(lo - 1) as usize..(hi - 1) as usize]
            .iter()
            .take_while(|e| {
                let fits = bytes == 0 || bytes + e.data.len() <= max_bytes;
                bytes += e.data.len().max(1);
                fits
            })
            .cloned()
            .collect()
    }

    fn memberships(&self) -> Vec<(u64, Membership)> {
        self.log
            .iter()
            .filter(|e| e.kind == EntryKind::Membership)
            .map(|e| {
                let m = Membership::decode(&e.data).expect("persisted memberships are valid");
                (e.index, m)
            })
            .collect()
    }

    fn segment_from(&self, index: u64) -> Option<SegmentMeta> {
        let k = self.segment_entries;
        if k == 0 {
            return None;
        }
        // Segments start at 1, k + 1, 2k + 1, ...
        let first = (index.max(1) - 1).div_ceil(k) * k + 1;
        let last = first + k - 1;
        if last > self.hard.commit.min(self.last_index()) {
            return None;
        }
        let size = encode_entries(&self.log[(first - 1) as usize..last as usize]).len() as u64;
        Some(SegmentMeta {
            first,
            last,
            last_term: self.log[(last - 1) as usize].term,
            size,
        })
    }

    fn segment_bytes(&self, first: u64, offset: u64, max: usize) -> Vec<u8> {
        let Some(meta) = self.segment_at(first) else {
            return Vec::new();
        };
        let bytes = encode_entries(&self.log[(first - 1) as usize..meta.last as usize]);
        let start = (offset as usize).min(bytes.len());
        let end = (start + max).min(bytes.len());
        bytes[start..end].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_through_chunks() {
        let mut a = MemStorage {
            segment_entries: 3,
            ..MemStorage::default()
        };
        let log: Vec<Entry> = (1..=7)
            .map(|i| Entry::normal(i, 1, vec![i as u8; i as usize]))
            .collect();
        a.append(&log);
        assert_eq!(a.segment_at(1), None, "nothing is committed yet");
        a.set_hard_state(HardState {
            term: 1,
            vote: None,
            commit: 7,
        });
        assert_eq!(a.segment_at(2), None, "segments start at 1, 4, 7, ...");
        assert_eq!(a.segment_from(2).map(|s| s.first), Some(4));
        assert_eq!(a.segment_from(4).map(|s| s.first), Some(4));
        assert_eq!(a.segment_at(7), None, "7..=9 is not full");
        let meta = a.segment_at(4).expect("4..=6 is sealed");
        let mut b = MemStorage::default();
        b.append(&log[..3]);
        let mut offset = 0;
        while offset < meta.size {
            let data = a.segment_bytes(4, offset, 5);
            let done = offset + data.len() as u64 == meta.size;
            let chunk = SegmentChunk {
                first: 4,
                last: 6,
                offset,
                data,
                done,
            };
            offset += chunk.data.len() as u64;
            b.write_chunk(&chunk).unwrap();
        }
        assert_eq!(b.log, log[..6]);
        assert!(decode_entries(&[1, 2, 3]).is_err());
    }

    /// A chunk joins the segment being received only if it is of that segment and starts
    /// where the bytes so far end; a segment installs only if its entries run exactly from
    /// its first index to the last one its chunk names. Anything else is refused whole.
    #[test]
    fn chunks_of_another_segment_or_out_of_order_are_refused() {
        let log: Vec<Entry> = (1..=6)
            .map(|i| Entry::normal(i, 1, vec![i as u8]))
            .collect();
        let bytes = encode_entries(&log[3..6]);
        let chunk = |first, offset: usize, end: usize, last, done| SegmentChunk {
            first,
            last,
            offset: offset as u64,
            data: bytes[offset..end].to_vec(),
            done,
        };
        let fresh = || {
            let mut b = MemStorage::default();
            b.append(&log[..3]);
            b.write_chunk(&chunk(4, 0, 10, 6, false)).unwrap();
            b
        };
        let out_of_order = Err(DecodeError("a chunk out of order"));
        let n = bytes.len();
        // Of another segment, at the right offset.
        assert_eq!(fresh().write_chunk(&chunk(7, 10, n, 6, true)), out_of_order);
        // Of this segment, past the bytes so far (a chunk was lost).
        assert_eq!(fresh().write_chunk(&chunk(4, 11, n, 6, true)), out_of_order);
        // Whole and in order, but naming another last index than its entries end at.
        let mut b = fresh();
        assert_eq!(
            b.write_chunk(&chunk(4, 10, n, 5, true)),
            Err(DecodeError("segment entries are not first..=last"))
        );
        assert_eq!(b.log, log[..3], "nothing installed");
        let mut b = fresh();
        b.write_chunk(&chunk(4, 10, n, 6, true)).unwrap();
        assert_eq!(b.log, log);
    }
}
