//! Segment files: naming, creation, memory maps, and the scan that recovers a segment's
//! records on open (cutting a torn tail, refusing corruption elsewhere).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::MmapOptions;
use zerocopy::IntoBytes;

use crate::error::{Corruption, OpenError};
use crate::format::{
    self, parse_record, RecordHeader, RecordParse, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::storage::{self, Storage};
use crate::table;

/// Extension of segment files.
pub const SEGMENT_EXT: &str = "qseg";
/// Extension of segment summary files.
pub const SUMMARY_EXT: &str = "qidx";

/// The file name of the segment whose first record has Raft index `first_index`: zero-padded
/// so that names sort in log order.
pub fn segment_name(first_index: u64) -> String {
    table::name(first_index, SEGMENT_EXT)
}

/// The file name of a segment's summary.
pub fn summary_name(first_index: u64) -> String {
    table::name(first_index, SUMMARY_EXT)
}

/// Removes what is derived from the segment file at `path`: its summary and its tables,
/// named by the same stem (the caller syncs the directory).
pub(crate) fn remove_derived(s: &dyn Storage, path: &Path) -> io::Result<()> {
    for ext in [SUMMARY_EXT, table::ID_TABLE_EXT, table::STREAM_TABLE_EXT] {
        storage::remove_if_exists(s, &path.with_extension(ext))?;
    }
    Ok(())
}

/// One open segment file and its read-only shared mapping.
///
/// The mapping covers `capacity` bytes even while the file is shorter: the writer extends the
/// file with `pwrite`, and the new bytes appear in the mapping through the page cache. Readers
/// only ever touch bytes below the commit point, which are written, durable and never change.
#[derive(Debug)]
pub struct SegmentFile {
    /// Where it lives.
    pub path: PathBuf,
    /// Opened read-write for the writer (and read-only for sealed segments).
    pub file: File,
    /// The mapping as `Bytes`, so events can be handed out without a copy.
    pub map: Bytes,
    /// Raft index of its first record.
    pub first_index: u64,
    /// Position of its first event slot.
    pub first_position: u64,
    /// Bytes the writer may fill.
    pub capacity: u64,
}

fn io_err(path: &Path, source: io::Error) -> OpenError {
    OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn map(file: &File, len: u64) -> io::Result<Bytes> {
    // SAFETY: the mapping is read-only and shared. The engine appends to segment files and
    // never changes bytes below the commit point, which are the only bytes readers touch; a
    // scavenge writes a new file and renames it, so an existing mapping keeps its contents.
    let mmap = unsafe { MmapOptions::new().len(len as usize).map(file)? };
    Ok(Bytes::from_owner(mmap))
}

/// The whole of a file that is written once and only ever replaced by rename (a summary),
/// mapped read-only: reading it costs page cache, not the process's own memory.
pub(crate) fn map_whole(path: &Path) -> io::Result<Bytes> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    map(&file, len)
}

impl SegmentFile {
    /// Creates a new segment file and writes nothing into it yet: the writer writes the header
    /// together with the first records, in the same durable write. With `spare`, a pre-zeroed
    /// file of at least `capacity` bytes is renamed into place instead of creating an empty
    /// one: overwriting written zeros lets `fdatasync` skip the metadata commit that growing
    /// a file costs (measured: about twice the syncs per second; docs/STORAGE.md).
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        first_index: u64,
        first_position: u64,
        capacity: u64,
        spare: Option<&Path>,
    ) -> io::Result<(SegmentFile, Vec<u8>)> {
        let path = dir.join(segment_name(first_index));
        let file = match spare {
            Some(spare) => {
                if path.exists() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "segment exists",
                    ));
                }
                storage.rename(spare, &path)?;
                OpenOptions::new().read(true).write(true).open(&path)?
            }
            None => storage.create_new(&path)?,
        };
        let map = map(&file, capacity)?;
        let header = format::segment_header(first_index, first_position, capacity);
        let seg = SegmentFile {
            path,
            file,
            map,
            first_index,
            first_position,
            capacity,
        };
        Ok((seg, header.as_bytes().to_vec()))
    }

    /// Opens an existing segment file and checks its header.
    pub fn open(path: &Path, writable: bool) -> Result<SegmentFile, OpenError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        let len = file.metadata().map_err(|e| io_err(path, e))?.len();
        let mut head = [0u8; SEGMENT_HEADER_BYTES];
        let n = read_prefix(&file, &mut head).map_err(|e| io_err(path, e))?;
        let header = format::parse_segment_header(&head[..n]).map_err(|e| Corruption {
            file: path.to_path_buf(),
            offset: 0,
            detail: e.to_string(),
        })?;
        let capacity = header.capacity.get().max(len);
        let map = map(&file, capacity).map_err(|e| io_err(path, e))?;
        Ok(SegmentFile {
            path: path.to_path_buf(),
            file,
            map,
            first_index: header.first_index.get(),
            first_position: header.first_position.get(),
            capacity,
        })
    }

    /// The file's bytes as far as the file goes (the mapping may be longer).
    pub fn written(&self) -> Result<&[u8], Corruption> {
        let len = self
            .file
            .metadata()
            .map_err(|e| self.corruption(0, e.to_string()))?
            .len();
        Ok(&self.map[..(len.min(self.map.len() as u64)) as usize])
    }

    /// Ends the log in this file at `at`: everything from there to the last non-zero byte
    /// is overwritten with zeros, durably. The file keeps its length, so a pre-zeroed
    /// segment stays pre-zeroed, and a memory map of it never loses pages (a shrink would
    /// turn a reader's touch into SIGBUS). Returns the bytes zeroed.
    pub fn zero_from(&self, storage: &dyn Storage, at: u64) -> io::Result<u64> {
        let written = self
            .written()
            .map_err(|c| io::Error::other(c.to_string()))?;
        let at = at.min(written.len() as u64) as usize;
        let end = written[at..]
            .iter()
            .rposition(|b| *b != 0)
            .map_or(at, |p| at + p + 1);
        let zeros = vec![0u8; (end - at).min(1 << 20)];
        let mut off = at;
        while off < end {
            let n = (end - off).min(zeros.len());
            storage::write_all_at(storage, &self.file, &zeros[..n], off as u64)?;
            off += n;
        }
        storage::sync_data(storage, &self.file)?;
        Ok((end - at) as u64)
    }

    /// A corruption error at `offset` of this file.
    pub fn corruption(&self, offset: u64, detail: impl Into<String>) -> Corruption {
        Corruption {
            file: self.path.clone(),
            offset,
            detail: detail.into(),
        }
    }

    /// The record at `offset`, checksum verified. `end` bounds the bytes that may be read.
    pub fn record_at(&self, offset: u64, end: u64) -> Result<(RecordHeader, Bytes), Corruption> {
        let end = end.min(self.map.len() as u64) as usize;
        let start = offset as usize;
        if start > end {
            return Err(self.corruption(offset, "record offset beyond the segment's end"));
        }
        match parse_record(&self.map[start..end]) {
            RecordParse::Ok { header, body } => {
                let b0 = start + RECORD_HEADER_BYTES;
                Ok((header, self.map.slice(b0..b0 + body.len())))
            }
            RecordParse::Bad(why) => Err(self.corruption(offset, why)),
            RecordParse::Truncated => Err(self.corruption(offset, "record cut short")),
            RecordParse::Zero => Err(self.corruption(offset, "zero bytes where a record belongs")),
        }
    }
}

fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One record found by a scan.
#[derive(Debug, Clone, Copy)]
pub struct Scanned {
    /// Byte offset of its header.
    pub offset: u64,
    /// Its header.
    pub header: RecordHeader,
}

/// What a scan of a segment found.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Offset just past the last whole record.
    pub end: u64,
    /// Raft index the next record would have.
    pub next_index: u64,
    /// The first bytes that are neither a whole record nor zeros to the end of the file:
    /// their offset and what is wrong. Whether that is a torn tail or corruption is the
    /// caller's call (recovery asks the durable watermark; a shipped segment is refused).
    pub bad: Option<(u64, String)>,
}

/// Walks the records of `seg` from `start` to the end of the file, calling `each` on every
/// whole record with its body, and stops at the first record with an index of
/// `stop_before` or more, or at the first bad bytes.
///
/// Records must carry consecutive indexes, starting (when `start` is the end of the header)
/// at the header's first index: a whole record with another index is corruption.
pub fn scan(
    seg: &SegmentFile,
    start: u64,
    stop_before: u64,
    mut each: impl FnMut(Scanned, &[u8]) -> Result<(), Corruption>,
) -> Result<ScanOutcome, Corruption> {
    let bytes = seg.written()?;
    let mut at = start as usize;
    // The first record must have the index the header promises: nothing else ties the two.
    let mut expected_index = (start == SEGMENT_HEADER_BYTES as u64).then_some(seg.first_index);
    let outcome = |at: usize, next: Option<u64>, bad| ScanOutcome {
        end: at as u64,
        next_index: next.unwrap_or(seg.first_index),
        bad,
    };
    while at < bytes.len() {
        let problem = match parse_record(&bytes[at..]) {
            RecordParse::Ok { header, body } => {
                let index = header.index.get();
                if let Some(want) = expected_index {
                    if index != want {
                        let why = format!("record index {index}, expected {want}");
                        return Err(seg.corruption(at as u64, why));
                    }
                }
                if index >= stop_before {
                    let why = "written by a batch whose sync failed".to_string();
                    return Ok(outcome(at, Some(index), Some((at as u64, why))));
                }
                expected_index = Some(index + 1);
                each(
                    Scanned {
                        offset: at as u64,
                        header,
                    },
                    body,
                )?;
                at += RECORD_HEADER_BYTES + body.len();
                continue;
            }
            RecordParse::Zero if format::all_zero(&bytes[at..]) => {
                // Zeros to the end of the file: space never written. Segments are pre-zeroed,
                // so this is the normal end of the log, not damage; nothing is cut.
                return Ok(outcome(at, expected_index, None));
            }
            RecordParse::Zero => "zero bytes where a record belongs".to_string(),
            RecordParse::Truncated => "record cut short".to_string(),
            RecordParse::Bad(why) => why,
        };
        return Ok(outcome(at, expected_index, Some((at as u64, problem))));
    }
    Ok(outcome(at, expected_index, None))
}

/// The highest durable watermark carried by any whole, checksummed record with an index of
/// `index` or more that starts at or after `from` in `bytes` (0 if none). Used only once
/// damage is found, to tell a torn tail (nothing written later vouches for the damaged
/// record) from corruption (a record written later says the damaged one was durable).
pub(crate) fn watermark_after(bytes: &[u8], from: usize, index: u64) -> u64 {
    use zerocopy::FromBytes;
    let mut best = 0;
    let mut probe = from;
    while probe + RECORD_HEADER_BYTES <= bytes.len() {
        if let Ok((h, _)) = RecordHeader::read_from_prefix(&bytes[probe..]) {
            let i = h.index.get();
            // Only frames that could belong here are worth a checksum.
            if i >= index.max(1) && i < index.saturating_add(1 << 32) {
                if let RecordParse::Ok { header, body } = parse_record(&bytes[probe..]) {
                    best = best.max(header.durable_through().unwrap_or(0));
                    probe += RECORD_HEADER_BYTES + body.len();
                    continue;
                }
            }
        }
        probe += 1;
    }
    best
}

/// Name of the pre-zeroed file waiting to become the next segment.
pub const SPARE_NAME: &str = "next.spare";

/// Writes a pre-zeroed spare segment file of `capacity` bytes, durably, and returns its path.
/// It is written under a temporary name and renamed, so a spare that exists is whole.
pub fn prepare_spare(storage: &dyn Storage, dir: &Path, capacity: u64) -> io::Result<PathBuf> {
    let path = dir.join(SPARE_NAME);
    let tmp = dir.join("next.spare.tmp");
    let f = storage.create(&tmp)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < capacity {
        let n = (capacity - at).min(zeros.len() as u64) as usize;
        storage::write_all_at(storage, &f, &zeros[..n], at)?;
        at += n as u64;
    }
    storage::sync_data(storage, &f)?;
    storage.rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::{watermark_after, SegmentFile};
    use crate::format::{self, EntryKind};
    use crate::storage::RealStorage;
    use zerocopy::IntoBytes;

    /// `record_at` reads a whole, checksummed record, and reports an offset past the bytes it
    /// may read as corruption of the file (a damaged summary can point there), never panics.
    #[test]
    fn record_at_reads_a_record_and_refuses_an_offset_past_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, mut bytes) =
            SegmentFile::create(&RealStorage, dir.path(), 1, 0, 64 << 10, None).unwrap();
        let body = b"some body";
        let h = format::record_header(EntryKind::Append, 1, 1, 0, 1, body);
        let at = bytes.len() as u64;
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(body);
        seg.file.write_all_at(&bytes, 0).unwrap();
        let end = bytes.len() as u64;
        let (header, read) = seg.record_at(at, end).unwrap();
        assert_eq!((header.index.get(), &read[..]), (1, &body[..]));
        let past = seg.record_at(end + 8, end).unwrap_err();
        assert_eq!((past.file, past.offset), (seg.path.clone(), end + 8));
    }

    /// `zero_from` zeroes every byte from the cut to the last non-zero one, zeros inside
    /// the tail or not, and keeps the file's length, also when the tail is longer than
    /// its 1 MiB buffer of zeros.
    #[test]
    fn zero_from_zeroes_the_whole_tail_and_keeps_the_length() {
        for tail in [vec![7, 0, 0, 9, 0, 5], vec![3; (3 << 20) / 2]] {
            let dir = tempfile::tempdir().unwrap();
            let (seg, header) =
                SegmentFile::create(&RealStorage, dir.path(), 1, 0, 4 << 20, None).unwrap();
            let mut bytes = header;
            let at = bytes.len() as u64 + 1;
            bytes.extend_from_slice(&tail);
            seg.file.write_all_at(&bytes, 0).unwrap();
            assert_eq!(
                seg.zero_from(&RealStorage, at).unwrap(),
                tail.len() as u64 - 1
            );
            let written = seg.written().unwrap();
            assert_eq!(written.len(), bytes.len(), "the file keeps its length");
            assert_eq!(written[..at as usize], bytes[..at as usize]);
            assert!(
                written[at as usize..].iter().all(|b| *b == 0),
                "zeroed from the cut on"
            );
        }
    }

    /// `watermark_after` reads the watermarks of whole frames whose index could follow the
    /// damage, from `index` to below `index + 2^32`, wherever they start, and of no other
    /// frame.
    #[test]
    fn watermark_after_reads_only_frames_that_could_follow_the_damage() {
        let frame = |index: u64, durable: u64| {
            let body = b"x";
            let mut h = format::record_header(EntryKind::Append, index, 1, 0, 1, body);
            h.stamp_durable(durable);
            h.crc.set(format::record_crc(&h, body));
            [h.as_bytes(), &body[..]].concat()
        };
        let index = 10;
        assert_eq!(watermark_after(&frame(12, 11), 0, index), 11);
        let after_junk = [&[0xff, 0xff, 0xff][..], &frame(12, 11), &frame(13, 12)].concat();
        assert_eq!(watermark_after(&after_junk, 1, index), 12);
        assert_eq!(
            watermark_after(&frame(9, 8), 0, index),
            0,
            "an earlier index"
        );
        let far = index + (1 << 32);
        assert_eq!(watermark_after(&frame(far - 1, far - 2), 0, index), far - 2);
        assert_eq!(
            watermark_after(&frame(far, far - 1), 0, index),
            0,
            "too far on"
        );
    }

    /// A spare is a whole file of `capacity` zeros under its final name (more than one
    /// buffer of zeros, and not a multiple of it), and no temporary file is left.
    #[test]
    fn a_spare_is_capacity_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = (5 << 20) / 2 + 3;
        let path = super::prepare_spare(&RealStorage, dir.path(), capacity).unwrap();
        assert_eq!(path, dir.path().join(super::SPARE_NAME));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, capacity);
        assert!(bytes.iter().all(|b| *b == 0));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
