//! Event-id tables (`.qids`): beside each segment summary, the segment's event ids sorted,
//! each with its position, behind a Bloom filter. Once a segment is summarized its ids live
//! here, not in memory: the event-id index (`idindex.rs`) asks a table only when its
//! store-wide filter says an id may be stored.
//!
//! Opening reads only each table's header and filter (about 1.3 bytes per event); a lookup
//! skips a table whose filter says no, and otherwise binary-searches its entries on disk,
//! each entry checked by its own CRC. A table is derived data, bound to the summary it was
//! made from by that summary's checksum: one that is missing, damaged or stale is not used,
//! and its segment's ids are read from the summary into memory instead. A lookup that meets
//! a damaged entry answers [`Doubt`]: never a guess.
//!
//! ```text
//! header (64 bytes, little-endian):
//!   magic "QUIVIDT\x01" | first_index u64 | summary_crc u32 | hashes u32 | count u64 |
//!   filter_bytes u64 | reserved [u8; 16] | filter_crc u32 | header_crc u32 (of bytes 0..60)
//! filter: filter_bytes bytes (a multiple of 8), bit i of the filter is bit i % 64 of the
//!   little-endian u64 at i / 64
//! entries: count × 28 bytes, sorted by id: id u128 big-endian | position u64 | crc32c u32
//!   (of the entry's first 24 bytes)
//! ```

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::bloom::{self, Bloom};
use crate::storage::{self, Storage};
use crate::table::{self, Doubt, HEADER_BYTES, ID_TABLE_EXT};

/// First bytes of every event-id table.
pub(crate) const ID_TABLE_MAGIC: [u8; 8] = *b"QUIVIDT\x01";

/// Filter bits per id: with [`HASHES`] hashes, about 1 % false positives.
const BITS_PER_ID: u64 = 10;
/// Hashes per id in the filter.
const HASHES: u32 = 7;
/// Bytes of one entry.
const ENTRY_BYTES: u64 = 28;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Header {
    magic: [u8; 8],
    first_index: U64,
    summary_crc: U32,
    hashes: U32,
    count: U64,
    filter_bytes: U64,
    reserved: [u8; 16],
    filter_crc: U32,
    header_crc: U32,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_BYTES);

/// The file name of the id table of the segment whose first record has Raft index
/// `first_index`.
pub(crate) fn id_table_name(first_index: u64) -> String {
    table::name(first_index, ID_TABLE_EXT)
}

/// Writes the id table of the segment starting at `first_index` durably (temporary file,
/// sync, rename; the caller syncs the directory), for `ids` (id, position) of the summary
/// whose body checksum is `summary_crc`.
pub(crate) fn write(
    s: &dyn Storage,
    dir: &Path,
    first_index: u64,
    summary_crc: u32,
    mut ids: Vec<(u128, u64)>,
) -> io::Result<()> {
    ids.sort_unstable_by_key(|(id, _)| *id);
    let keys: Vec<u64> = ids.iter().map(|(id, _)| bloom::id_key(*id)).collect();
    let filter = Bloom::with_keys(&keys, BITS_PER_ID, HASHES).to_bytes();
    let mut header = Header {
        magic: ID_TABLE_MAGIC,
        first_index: U64::new(first_index),
        summary_crc: U32::new(summary_crc),
        hashes: U32::new(HASHES),
        count: U64::new(ids.len() as u64),
        filter_bytes: U64::new(filter.len() as u64),
        reserved: [0; 16],
        filter_crc: U32::new(crc32c::crc32c(&filter)),
        header_crc: U32::new(0),
    };
    header.header_crc = U32::new(crc32c::crc32c(&header.as_bytes()[..60]));
    let mut out = Vec::with_capacity(HEADER_BYTES + filter.len() + ids.len() * 28);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&filter);
    for (id, position) in &ids {
        let at = out.len();
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&position.to_le_bytes());
        let crc = crc32c::crc32c(&out[at..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    let path = dir.join(id_table_name(first_index));
    let tmp = path.with_extension("qids.tmp");
    storage::write_file_atomic(s, &tmp, &path, &out, 0)
}

/// An open id table: its filter in memory, its entries on disk.
#[derive(Debug)]
pub(crate) struct IdTable {
    file: File,
    path: PathBuf,
    first_index: u64,
    summary_crc: u32,
    filter: Bloom,
    count: u64,
    entries_at: u64,
}

impl IdTable {
    /// Opens the table of the segment starting at `first_index` if it exists, is intact and
    /// was made from the summary whose body checksum is `summary_crc`; `None` otherwise.
    pub(crate) fn open(dir: &Path, first_index: u64, summary_crc: u32) -> Option<IdTable> {
        let path = dir.join(id_table_name(first_index));
        let (file, raw) = table::open_bound(&path, ID_TABLE_MAGIC, first_index, summary_crc)?;
        let h = Header::read_from_bytes(&raw).ok()?;
        if h.filter_bytes.get() < 8 {
            return None;
        }
        let filter_bytes = h.filter_bytes.get();
        let entries_at = HEADER_BYTES as u64 + filter_bytes;
        let len = file.metadata().ok()?.len();
        let want = h
            .count
            .get()
            .checked_mul(ENTRY_BYTES)?
            .checked_add(entries_at)?;
        if len != want || filter_bytes > len {
            return None;
        }
        let mut bytes = vec![0u8; filter_bytes as usize];
        file.read_exact_at(&mut bytes, HEADER_BYTES as u64).ok()?;
        if crc32c::crc32c(&bytes) != h.filter_crc.get() {
            return None;
        }
        let filter = Bloom::from_bytes(&bytes, h.hashes.get())?;
        Some(IdTable {
            file,
            path,
            first_index,
            summary_crc,
            filter,
            count: h.count.get(),
            entries_at,
        })
    }

    /// Ids in the table.
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// Its file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The body checksum of the summary it was made from.
    pub(crate) fn summary_crc(&self) -> u32 {
        self.summary_crc
    }

    /// The Raft index of its segment's first record.
    pub(crate) fn first_index(&self) -> u64 {
        self.first_index
    }

    /// Calls `each` with every (id, position) of the table in id order, each entry checked;
    /// a [`Doubt`] at the first that fails its check or cannot be read.
    pub(crate) fn for_each(&self, mut each: impl FnMut(u128, u64)) -> Result<(), Doubt> {
        const CHUNK: u64 = 1 << 15;
        let mut raw = vec![0u8; (CHUNK * ENTRY_BYTES) as usize];
        let mut done = 0u64;
        while done < self.count {
            let n = CHUNK.min(self.count - done);
            let raw = &mut raw[..(n * ENTRY_BYTES) as usize];
            self.file
                .read_exact_at(raw, self.entries_at + done * ENTRY_BYTES)
                .map_err(|e| self.doubt(done, e.to_string()))?;
            for (k, e) in raw.chunks_exact(ENTRY_BYTES as usize).enumerate() {
                let (id, position) = parse_entry(e)
                    .ok_or_else(|| self.doubt(done + k as u64, "checksum mismatch".into()))?;
                each(id, position);
            }
            done += n;
        }
        Ok(())
    }

    fn doubt(&self, i: u64, why: String) -> Doubt {
        Doubt(format!("{} entry {i}: {why}", self.path.display()))
    }

    /// The position of event `id` if this table holds it.
    pub(crate) fn lookup(&self, id: u128) -> Result<Option<u64>, Doubt> {
        let maybe = self.filter.may_contain(bloom::id_key(id));
        if !maybe || cfg!(feature = "mutation-id-table-blind") {
            return Ok(None);
        }
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (found, position) = self.entry(mid)?;
            match found.cmp(&id) {
                std::cmp::Ordering::Equal => return Ok(Some(position)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }

    fn entry(&self, i: u64) -> Result<(u128, u64), Doubt> {
        let mut raw = [0u8; ENTRY_BYTES as usize];
        self.file
            .read_exact_at(&mut raw, self.entries_at + i * ENTRY_BYTES)
            .map_err(|e| self.doubt(i, e.to_string()))?;
        parse_entry(&raw).ok_or_else(|| self.doubt(i, "checksum mismatch".into()))
    }
}

/// The id and position of an entry's bytes, if its checksum holds.
fn parse_entry(raw: &[u8]) -> Option<(u128, u64)> {
    let crc = u32::from_le_bytes(raw[24..28].try_into().expect("4 bytes"));
    if crc32c::crc32c(&raw[..24]) != crc {
        return None;
    }
    let id = u128::from_be_bytes(raw[..16].try_into().expect("16 bytes"));
    let position = u64::from_le_bytes(raw[16..24].try_into().expect("8 bytes"));
    Some((id, position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::RealStorage;

    fn ids(n: u64) -> Vec<(u128, u64)> {
        (0..n)
            .map(|i| {
                let (hi, lo) = (bloom::mix(i), bloom::mix(i + 7));
                (u128::from(hi) << 64 | u128::from(lo), 1_000 + i)
            })
            .collect()
    }

    #[test]
    fn every_id_is_found_at_its_position_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let all = ids(5_000);
        write(&RealStorage, dir.path(), 41, 0xabcd, all.clone()).unwrap();
        let t = IdTable::open(dir.path(), 41, 0xabcd).expect("a sound table");
        for (id, position) in &all {
            assert_eq!(t.lookup(*id), Ok(Some(*position)));
        }
        let absent = (0..5_000u64).filter(|i| t.lookup(u128::from(*i)).unwrap().is_some());
        assert_eq!(absent.count(), 0);
        let mut listed = Vec::new();
        t.for_each(|id, position| listed.push((id, position)))
            .unwrap();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        assert_eq!(listed, sorted, "every entry, in id order");
    }

    #[test]
    fn a_table_of_another_summary_or_segment_or_damaged_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        write(&RealStorage, dir.path(), 41, 7, ids(100)).unwrap();
        assert!(
            IdTable::open(dir.path(), 41, 8).is_none(),
            "another summary"
        );
        assert!(
            IdTable::open(dir.path(), 42, 7).is_none(),
            "another segment"
        );
        let path = dir.path().join(id_table_name(41));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 3] ^= 1; // in the filter
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            IdTable::open(dir.path(), 41, 7).is_none(),
            "a damaged filter"
        );
        bytes[HEADER_BYTES + 3] ^= 1;
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, &bytes).unwrap();
        assert!(IdTable::open(dir.path(), 41, 7).is_none(), "a short file");
        assert!(IdTable::open(dir.path(), 40, 7).is_none(), "no file");
    }

    #[test]
    fn a_damaged_entry_is_a_doubt_never_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let all = ids(1_000);
        write(&RealStorage, dir.path(), 1, 0, all.clone()).unwrap();
        let path = dir.path().join(id_table_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        let t = IdTable::open(dir.path(), 1, 0).unwrap();
        let entries_at = t.entries_at as usize;
        // Every entry's position byte flipped: whatever a lookup probes fails its check.
        for i in 0..all.len() {
            bytes[entries_at + i * ENTRY_BYTES as usize + 16] ^= 0x40;
        }
        std::fs::write(&path, &bytes).unwrap();
        let t = IdTable::open(dir.path(), 1, 0).expect("header and filter are intact");
        for (id, _) in all.iter().take(50) {
            assert!(t.lookup(*id).is_err(), "a damaged entry answered");
        }
        assert!(t.for_each(|_, _| {}).is_err(), "a damaged entry listed");
    }
}
