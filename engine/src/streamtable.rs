//! Stream tables (`.qstm`): beside each segment summary, the streams whose events the
//! segment holds, sorted by name, each with the (version, position) of those events, behind
//! a Bloom filter of the names. With them the engine keeps in memory only the streams it is
//! writing to (and those with deletes or metadata): a stream all of whose events lie in
//! summarized segments is looked up here when it is needed, so memory and restart work do
//! not grow with the number of streams (see `state.rs`, [`crate::state::State::stream_tip`]).
//!
//! Opening reads the header, the filter and the block index only (a few bytes per stream):
//! entries stay on disk, read a block at a time, each block checked by its own CRC. A table
//! is derived data, bound to the summary it was made from by that summary's checksum: one
//! that is missing, damaged or stale is not used (the summary is loaded the old way). A
//! block that fails its check when read is a [`Doubt`]: the caller reads the summary
//! instead, never a guess.
//!
//! ```text
//! header (64 bytes, little-endian):
//!   magic "QUIVSTM\x02" | first_index u64 | summary_crc u32 | hashes u32 | streams u64 |
//!   filter_bytes u64 | index_bytes u32 | blocks u32 | max_created_us u64 |
//!   aux_crc u32 (of filter and block index) | header_crc u32 (of bytes 0..60)
//! filter: filter_bytes bytes, a blocked filter (bloom::Blocked), keys bloom::name_key(name)
//! block index: per block: offset u64 (from the file's start) | len u32 | crc32c u32 (of the
//!   block's bytes) | name_len u16 | the block's first name
//! blocks: entries sorted by name, up to 16 a block (fewer past 4 KiB):
//!   name_len u16 | name | count u32 | count × (version u64 | position u64), ascending
//! ```

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::bloom::{self, Blocked};
use crate::error::DecodeError;
use crate::format::Cursor;
use crate::storage::{self, Storage};
use crate::table::{self, Doubt, HEADER_BYTES, STREAM_TABLE_EXT};

/// First bytes of every stream table.
pub(crate) const STREAM_TABLE_MAGIC: [u8; 8] = *b"QUIVSTM\x02";

/// Filter bits per stream: with [`HASHES`] hashes, about 1 % false positives.
const BITS_PER_STREAM: u64 = 10;
const HASHES: u32 = 7;
/// Entries per block, at most.
const BLOCK_ENTRIES: usize = 16;
/// A block is closed once it holds this many bytes.
const BLOCK_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Header {
    magic: [u8; 8],
    first_index: U64,
    summary_crc: U32,
    hashes: U32,
    streams: U64,
    filter_bytes: U64,
    index_bytes: U32,
    blocks: U32,
    max_created_us: U64,
    aux_crc: U32,
    header_crc: U32,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_BYTES);

/// The file name of the stream table of the segment whose first record has Raft index
/// `first_index`.
pub(crate) fn stream_table_name(first_index: u64) -> String {
    table::name(first_index, STREAM_TABLE_EXT)
}

/// The events of one stream in one segment: (version, position), ascending.
pub(crate) type Run = Vec<(u64, u64)>;

/// What a table is made of: every stream of a segment with its events, and the newest
/// creation time among them.
#[derive(Debug, Default)]
pub(crate) struct Contents {
    pub(crate) streams: std::collections::BTreeMap<String, Run>,
    pub(crate) max_created_us: u64,
}

/// Writes the stream table of the segment starting at `first_index` durably (temporary
/// file, sync, rename; the caller syncs the directory), bound to the summary whose body
/// checksum is `summary_crc`.
pub(crate) fn write(
    s: &dyn Storage,
    dir: &Path,
    first_index: u64,
    summary_crc: u32,
    contents: &Contents,
) -> io::Result<()> {
    let keys: Vec<u64> = contents
        .streams
        .keys()
        .map(|n| bloom::name_key(n))
        .collect();
    let filter = Blocked::with_keys(&keys, BITS_PER_STREAM, HASHES).to_bytes();
    let mut blocks: Vec<u8> = Vec::new();
    // (offset in `blocks`, len, first name)
    let mut index: Vec<(usize, usize, &str)> = Vec::new();
    let mut in_block = 0;
    for (name, run) in &contents.streams {
        if in_block == 0 {
            index.push((blocks.len(), 0, name));
        }
        let name_len = u16::try_from(name.len()).map_err(io::Error::other)?;
        let count = u32::try_from(run.len()).map_err(io::Error::other)?;
        blocks.extend_from_slice(&name_len.to_le_bytes());
        blocks.extend_from_slice(name.as_bytes());
        blocks.extend_from_slice(&count.to_le_bytes());
        for (version, position) in run {
            blocks.extend_from_slice(&version.to_le_bytes());
            blocks.extend_from_slice(&position.to_le_bytes());
        }
        in_block += 1;
        let last = index.last_mut().expect("opened above");
        last.1 = blocks.len() - last.0;
        if in_block == BLOCK_ENTRIES || last.1 >= BLOCK_BYTES {
            in_block = 0;
        }
    }
    let mut index_bytes = Vec::new();
    let blocks_at = (HEADER_BYTES + filter.len()) as u64;
    let index_len: usize = index.iter().map(|(_, _, n)| 18 + n.len()).sum();
    for (at, len, first) in &index {
        let offset = blocks_at + index_len as u64 + *at as u64;
        index_bytes.extend_from_slice(&offset.to_le_bytes());
        index_bytes.extend_from_slice(&(*len as u32).to_le_bytes());
        let crc = crc32c::crc32c(&blocks[*at..*at + *len]);
        index_bytes.extend_from_slice(&crc.to_le_bytes());
        index_bytes.extend_from_slice(&(first.len() as u16).to_le_bytes());
        index_bytes.extend_from_slice(first.as_bytes());
    }
    debug_assert_eq!(index_bytes.len(), index_len);
    let mut aux = filter;
    aux.extend_from_slice(&index_bytes);
    let mut header = Header {
        magic: STREAM_TABLE_MAGIC,
        first_index: U64::new(first_index),
        summary_crc: U32::new(summary_crc),
        hashes: U32::new(HASHES),
        streams: U64::new(contents.streams.len() as u64),
        filter_bytes: U64::new((aux.len() - index_bytes.len()) as u64),
        index_bytes: U32::new(u32::try_from(index_bytes.len()).map_err(io::Error::other)?),
        blocks: U32::new(index.len() as u32),
        max_created_us: U64::new(contents.max_created_us),
        aux_crc: U32::new(crc32c::crc32c(&aux)),
        header_crc: U32::new(0),
    };
    header.header_crc = U32::new(crc32c::crc32c(&header.as_bytes()[..60]));
    let mut out = Vec::with_capacity(HEADER_BYTES + aux.len() + blocks.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&aux);
    out.extend_from_slice(&blocks);
    let path = dir.join(stream_table_name(first_index));
    let tmp = path.with_extension("qstm.tmp");
    storage::write_file_atomic(s, &tmp, &path, &out, 0)
}

/// Where one block lies, and the name it starts with (a range of `StreamTable::firsts`).
#[derive(Debug)]
struct Block {
    offset: u64,
    len: u32,
    crc: u32,
    first: std::ops::Range<u32>,
}

/// An open stream table: its filter and block index in memory, its entries on disk.
#[derive(Debug)]
pub(crate) struct StreamTable {
    file: File,
    path: PathBuf,
    first_index: u64,
    filter: Blocked,
    blocks: Vec<Block>,
    /// The blocks' first names, end to end.
    firsts: String,
    streams: u64,
    max_created_us: u64,
}

impl StreamTable {
    /// Opens the table of the segment starting at `first_index` if it exists, its header,
    /// filter and block index are intact, and it was made from the summary whose body
    /// checksum is `summary_crc`; `None` otherwise.
    pub(crate) fn open(dir: &Path, first_index: u64, summary_crc: u32) -> Option<StreamTable> {
        let path = dir.join(stream_table_name(first_index));
        let (file, raw) = table::open_bound(&path, STREAM_TABLE_MAGIC, first_index, summary_crc)?;
        let h = Header::read_from_bytes(&raw).ok()?;
        let len = file.metadata().ok()?.len();
        let aux_len = h
            .filter_bytes
            .get()
            .checked_add(u64::from(h.index_bytes.get()))?;
        if aux_len.checked_add(HEADER_BYTES as u64)? > len {
            return None;
        }
        let mut aux = vec![0u8; usize::try_from(aux_len).ok()?];
        file.read_exact_at(&mut aux, HEADER_BYTES as u64).ok()?;
        if crc32c::crc32c(&aux) != h.aux_crc.get() {
            return None;
        }
        let (filter, index) = aux.split_at(h.filter_bytes.get() as usize);
        let filter = Blocked::from_bytes(filter, h.hashes.get())?;
        let (blocks, firsts) = read_index(index, h.blocks.get(), len).ok()?;
        Some(StreamTable {
            file,
            path,
            first_index,
            filter,
            blocks,
            firsts,
            streams: h.streams.get(),
            max_created_us: h.max_created_us.get(),
        })
    }

    /// First Raft index of the table's segment.
    pub(crate) fn first_index(&self) -> u64 {
        self.first_index
    }

    /// Streams in the table.
    pub(crate) fn streams(&self) -> u64 {
        self.streams
    }

    /// The newest creation time of the segment's events (µs since the epoch).
    pub(crate) fn max_created_us(&self) -> u64 {
        self.max_created_us
    }

    fn first_name(&self, b: &Block) -> &str {
        &self.firsts[b.first.start as usize..b.first.end as usize]
    }

    /// The events of `name`, whose filter key is `key` (`bloom::name_key`, worked out once
    /// for every table), in this segment; empty if it has none.
    pub(crate) fn lookup(&self, name: &str, key: u64) -> Result<Run, Doubt> {
        if !self.filter.may_contain(key) {
            return Ok(Vec::new());
        }
        // The last block starting at or before `name`.
        let b = self.blocks.partition_point(|b| self.first_name(b) <= name);
        let Some(b) = b.checked_sub(1) else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        self.walk_block(b, |n, run| {
            if n == name {
                found = run;
                return false;
            }
            n < name
        })?;
        Ok(found)
    }

    /// Calls `each` with the names of the table from the first at or after `from` (all of
    /// them with `None`), in order, until it returns false.
    pub(crate) fn names_from(
        &self,
        from: Option<&str>,
        mut each: impl FnMut(&str) -> bool,
    ) -> Result<(), Doubt> {
        let start = from.map_or(0, |f| self.block_of(f));
        let mut going = true;
        for b in start..self.blocks.len() {
            self.walk_block(b, |n, _| {
                if from.is_some_and(|f| n < f) {
                    return true;
                }
                going = each(n);
                going
            })?;
            if !going {
                break;
            }
        }
        Ok(())
    }

    /// Blocks in the table.
    pub(crate) fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The block that holds `name` if the table does: the last starting at or before it (0
    /// if none does).
    pub(crate) fn block_of(&self, name: &str) -> usize {
        self.blocks
            .partition_point(|b| self.first_name(b) <= name)
            .saturating_sub(1)
    }

    /// The first name of block `b`.
    pub(crate) fn block_first(&self, b: usize) -> &str {
        self.first_name(&self.blocks[b])
    }

    /// The names of block `b`, in order.
    pub(crate) fn block_names(&self, b: usize) -> Result<Vec<String>, Doubt> {
        let mut names = Vec::with_capacity(BLOCK_ENTRIES);
        self.walk_block(b, |n, _| {
            names.push(n.to_string());
            true
        })?;
        Ok(names)
    }

    /// Reads block `b`, checks it and calls `each` with its entries until it returns false.
    fn walk_block(&self, b: usize, mut each: impl FnMut(&str, Run) -> bool) -> Result<(), Doubt> {
        let block = &self.blocks[b];
        let doubt = |why: String| Doubt(format!("{} block {b}: {why}", self.path.display()));
        let mut bytes = vec![0u8; block.len as usize];
        self.file
            .read_exact_at(&mut bytes, block.offset)
            .map_err(|e| doubt(e.to_string()))?;
        if crc32c::crc32c(&bytes) != block.crc {
            return Err(doubt("checksum mismatch".into()));
        }
        let mut c = Cursor::new(&bytes, "stream table block");
        let decoded: Result<(), DecodeError> = (|| {
            while c.remaining() > 0 {
                let len = c.u16()? as usize;
                let name = std::str::from_utf8(c.take(len)?)
                    .map_err(|_| DecodeError::new("stream table block", "name is not UTF-8"))?;
                let count = c.u32()? as usize;
                let raw = c.take(count.checked_mul(16).ok_or_else(|| {
                    DecodeError::new("stream table block", "event count overflows")
                })?)?;
                let run = raw
                    .chunks_exact(16)
                    .map(|p| {
                        let v = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
                        let pos = u64::from_le_bytes(p[8..].try_into().expect("8 bytes"));
                        (v, pos)
                    })
                    .collect();
                if !each(name, run) {
                    break;
                }
            }
            Ok(())
        })();
        decoded.map_err(|e| doubt(e.to_string()))
    }
}

/// Decodes a block index of `blocks` blocks in a file of `len` bytes.
fn read_index(index: &[u8], blocks: u32, len: u64) -> Result<(Vec<Block>, String), DecodeError> {
    let mut c = Cursor::new(index, "stream table index");
    let mut out = Vec::with_capacity(blocks as usize);
    let mut firsts = String::new();
    for _ in 0..blocks {
        let offset = c.u64()?;
        let block_len = c.u32()?;
        let crc = c.u32()?;
        let name_len = c.u16()? as usize;
        let name = std::str::from_utf8(c.take(name_len)?)
            .map_err(|_| DecodeError::new("stream table index", "name is not UTF-8"))?;
        if offset
            .checked_add(u64::from(block_len))
            .is_none_or(|end| end > len)
        {
            return Err(DecodeError::new("stream table index", "block past the end"));
        }
        let at = firsts.len() as u32;
        firsts.push_str(name);
        out.push(Block {
            offset,
            len: block_len,
            crc,
            first: at..firsts.len() as u32,
        });
    }
    c.end()?;
    let sorted = out.windows(2).all(|w| {
        firsts[w[0].first.start as usize..w[0].first.end as usize]
            < firsts[w[1].first.start as usize..w[1].first.end as usize]
    });
    if !sorted {
        return Err(DecodeError::new(
            "stream table index",
            "blocks out of order",
        ));
    }
    Ok((out, firsts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::RealStorage;

    fn contents(n: u64) -> Contents {
        let mut c = Contents::default();
        for i in 0..n {
            let run = (0..1 + i % 3).map(|k| (i + k, 10 * i + k)).collect();
            c.streams.insert(format!("stream-{i:06}"), run);
        }
        c.max_created_us = 77;
        c
    }

    #[test]
    fn every_stream_is_found_with_its_events_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let c = contents(5_000);
        write(&RealStorage, dir.path(), 41, 0xabcd, &c).unwrap();
        let t = StreamTable::open(dir.path(), 41, 0xabcd).expect("a sound table");
        assert_eq!((t.streams(), t.max_created_us()), (5_000, 77));
        for (name, run) in &c.streams {
            assert_eq!(
                &t.lookup(name, bloom::name_key(name)).unwrap(),
                run,
                "{name}"
            );
        }
        for absent in ["", "a", "stream-", "stream-0000001", "stream-999999", "zzz"] {
            assert_eq!(
                t.lookup(absent, bloom::name_key(absent)).unwrap(),
                Vec::new(),
                "{absent}"
            );
        }
    }

    #[test]
    fn names_are_listed_in_order_from_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let c = contents(1_000);
        write(&RealStorage, dir.path(), 1, 0, &c).unwrap();
        let t = StreamTable::open(dir.path(), 1, 0).unwrap();
        let mut all = Vec::new();
        t.names_from(None, |n| {
            all.push(n.to_string());
            true
        })
        .unwrap();
        assert_eq!(all, c.streams.keys().cloned().collect::<Vec<_>>());
        let mut some = Vec::new();
        t.names_from(Some("stream-000500x"), |n| {
            some.push(n.to_string());
            some.len() < 3
        })
        .unwrap();
        assert_eq!(some, ["stream-000501", "stream-000502", "stream-000503"]);
    }

    #[test]
    fn an_empty_segment_has_a_table_too() {
        let dir = tempfile::tempdir().unwrap();
        write(&RealStorage, dir.path(), 1, 0, &Contents::default()).unwrap();
        let t = StreamTable::open(dir.path(), 1, 0).unwrap();
        assert_eq!(t.lookup("x", bloom::name_key("x")).unwrap(), Vec::new());
        t.names_from(None, |_| panic!("no names")).unwrap();
    }

    #[test]
    fn a_table_of_another_summary_or_segment_or_damaged_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        write(&RealStorage, dir.path(), 41, 7, &contents(100)).unwrap();
        assert!(
            StreamTable::open(dir.path(), 41, 8).is_none(),
            "another summary"
        );
        assert!(
            StreamTable::open(dir.path(), 42, 7).is_none(),
            "another segment"
        );
        let path = dir.path().join(stream_table_name(41));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES + 3] ^= 1; // in the filter
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            StreamTable::open(dir.path(), 41, 7).is_none(),
            "a damaged filter"
        );
        bytes[HEADER_BYTES + 3] ^= 1;
        bytes.truncate(HEADER_BYTES + 10);
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            StreamTable::open(dir.path(), 41, 7).is_none(),
            "a short file"
        );
        assert!(StreamTable::open(dir.path(), 40, 7).is_none(), "no file");
    }

    #[test]
    fn a_damaged_block_is_a_doubt_never_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let c = contents(1_000);
        write(&RealStorage, dir.path(), 1, 0, &c).unwrap();
        let path = dir.path().join(stream_table_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        let t = StreamTable::open(dir.path(), 1, 0).unwrap();
        // One byte of every block flipped (its last: a position).
        for b in &t.blocks {
            bytes[(b.offset + u64::from(b.len) - 1) as usize] ^= 0x40;
        }
        std::fs::write(&path, &bytes).unwrap();
        let t = StreamTable::open(dir.path(), 1, 0).expect("header, filter, index intact");
        for name in c.streams.keys().take(50) {
            assert!(
                t.lookup(name, bloom::name_key(name)).is_err(),
                "a damaged block answered for {name}"
            );
        }
        assert!(t.names_from(None, |_| true).is_err());
    }

    #[test]
    fn any_bytes_as_a_block_index_are_an_error_or_an_index_never_a_panic() {
        let mut seed = 1u64;
        for len in 0..400usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = bloom::mix(seed);
                    seed as u8
                })
                .collect();
            for blocks in [0, 1, 3, 1000] {
                let _ = read_index(&bytes, blocks, 1 << 20);
            }
        }
    }
}
