//! The failed-sync mark: after a write or fsync fails, the writer records the first index of
//! the batch that may not have reached the disk in a small file, `sync-failed`. Its pages
//! may still sit in the page cache marked clean (the "fsyncgate" lesson), so a restart
//! without a reboot would read them back as if they were durable; recovery instead drops
//! every record from that index on (none was acknowledged), then removes the mark.
//!
//! Format (20 bytes): magic `QFAIL\x01\0\0`, u64 first index, CRC32C of the 16 bytes before.

use std::fs;
use std::io;
use std::path::Path;

use crate::storage::{self, Storage};

/// The mark's file name.
pub(crate) const NAME: &str = "sync-failed";
const MAGIC: [u8; 8] = *b"QFAIL\x01\0\0";

/// Records durably that records from `first_index` on may not be on disk.
pub(crate) fn write(s: &dyn Storage, dir: &Path, first_index: u64) -> io::Result<()> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("sync-failed.tmp");
    storage::write_file_atomic(s, &tmp, &dir.join(NAME), &bytes, 0)?;
    storage::sync_dir(s, dir)
}

/// The first index the mark names, if there is a mark. A mark that does not decode still
/// means a sync failed, but not where: it is refused (an operator must look).
pub(crate) fn read(dir: &Path) -> io::Result<Option<u64>> {
    let bytes = match fs::read(dir.join(NAME)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let ok = bytes.len() == 20
        && bytes[..8] == MAGIC
        && crc32c::crc32c(&bytes[..16]).to_le_bytes()[..] == bytes[16..];
    if !ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{NAME} is damaged: a sync failed, but where is unknown"),
        ));
    }
    let index = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    Ok(Some(index))
}

/// Removes the mark once recovery has dropped the failed batch durably.
pub(crate) fn clear(s: &dyn Storage, dir: &Path) -> io::Result<()> {
    s.remove_file(&dir.join(NAME))?;
    storage::sync_dir(s, dir)
}
