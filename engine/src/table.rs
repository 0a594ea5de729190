//! What the per-segment tables beside a summary (`idtable.rs`, `streamtable.rs`) share:
//! their file names, the doubt a lookup can end in, and how a table's header is found bound
//! to its segment and summary.
//!
//! Both headers are 64 bytes and begin and end alike: magic (8 bytes), the segment's first
//! Raft index (8), the CRC32C of the body of the summary the table was made from (4), …,
//! and the CRC32C of the header's first 60 bytes in its last 4.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Extension of event-id table files.
pub(crate) const ID_TABLE_EXT: &str = "qids";

/// Extension of stream table files.
pub(crate) const STREAM_TABLE_EXT: &str = "qstm";

/// Bytes of a table's header.
pub(crate) const HEADER_BYTES: usize = 64;

/// The file name with extension `ext` of the segment whose first record has Raft index
/// `first_index`, or of a file derived from it (its summary, its tables).
pub(crate) fn name(first_index: u64, ext: &str) -> String {
    format!("{first_index:020}.{ext}")
}

/// A table could not say for certain (a part of it failed its check, or could not be read):
/// the caller must ask what it was derived from instead, never guess.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Doubt(pub(crate) String);

/// Opens the table at `path` and reads its header, if the header is intact, has `magic`
/// and is bound to the segment starting at `first_index` and the summary whose body
/// checksum is `summary_crc`; `None` otherwise (missing, damaged or stale: not to be used).
pub(crate) fn open_bound(
    path: &Path,
    magic: [u8; 8],
    first_index: u64,
    summary_crc: u32,
) -> Option<(File, [u8; HEADER_BYTES])> {
    let file = File::open(path).ok()?;
    let mut raw = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut raw, 0).ok()?;
    let word = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
    let sound = raw[..8] == magic
        && word(60) == crc32c::crc32c(&raw[..60])
        && raw[8..16] == first_index.to_le_bytes()
        && word(16) == summary_crc;
    sound.then_some((file, raw))
}
