//! The engine's file I/O, behind one narrow trait: every write, sync, creation, rename and
//! removal the engine makes goes through [`Storage`]. Reads do not: segments are read through
//! memory maps of the real files, and what a live process reads is the page cache's view,
//! which both implementations leave to the kernel.
//!
//! - [`RealStorage`]: the plain system calls.
//! - [`sim::SimDisk`]: the same files, plus a model of what a power cut would keep. It
//!   remembers, per inode, the bytes as of the last successful sync and, per directory, the
//!   entries as of the last directory sync; [`sim::SimDisk::crash_image`] builds the
//!   directory a power cut could leave (unsynced sectors kept, lost or mixed, unsynced
//!   creations and renames lost), and it can fail writes and syncs (EIO, ENOSPC, EINTR),
//!   cut power after a given number of operations, and flip bits in synced bytes. Seeded.
//!
//! Layering: this module and `io.rs` are the bottom (they import nothing of the engine);
//! segments, summaries and recovery sit on them; the engine's API on top.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub mod sim;

/// What the engine asks of the file system. Implementations must be usable from several
/// threads (the writer, the background thread, callers of truncate or scavenge).
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates a file (truncating one that exists), open for reading and writing.
    fn create(&self, path: &Path) -> io::Result<File>;
    /// Creates a file that must not exist yet, open for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<File>;
    /// Writes all of `buf` at `offset`. May fail with `Interrupted` having written nothing;
    /// the caller retries.
    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the file's length.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the size needed to read it) durable: `fdatasync`.
    fn sync_data(&self, file: &File) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Renames a file within a directory, atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file's directory entry.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Whether the writer may bypass this trait with io_uring (only the real file system).
    fn uring_allowed(&self) -> bool {
        false
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

impl Storage for RealStorage {
    fn create(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    fn create_new(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }

    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn uring_allowed(&self) -> bool {
        true
    }
}

/// Writes all of `buf`, retrying a write interrupted by a signal.
pub(crate) fn write_all_at(
    s: &dyn Storage,
    file: &File,
    buf: &[u8],
    offset: u64,
) -> io::Result<()> {
    loop {
        match s.write_at(file, buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `fdatasync`, retried on EINTR: the engine's only way of making file data durable.
/// Feature `mutation-no-fsync`, for the mutation check only, makes it a no-op.
pub(crate) fn sync_data(s: &dyn Storage, file: &File) -> io::Result<()> {
    if cfg!(feature = "mutation-no-fsync") {
        return Ok(());
    }
    loop {
        match s.sync_data(file) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Directory fsync, retried on EINTR (a no-op under `mutation-no-fsync`).
pub(crate) fn sync_dir(s: &dyn Storage, dir: &Path) -> io::Result<()> {
    if cfg!(feature = "mutation-no-fsync") {
        return Ok(());
    }
    loop {
        match s.sync_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Writes a whole new file durably under `path`: to `path.tmp`-style `tmp` first, synced,
/// then renamed into place (the caller syncs the directory when the rename must last).
pub(crate) fn write_file_atomic(
    s: &dyn Storage,
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    len: u64,
) -> io::Result<()> {
    let f = s.create(tmp)?;
    write_all_at(s, &f, bytes, 0)?;
    if len > bytes.len() as u64 {
        s.set_len(&f, len)?;
    }
    sync_data(s, &f)?;
    s.rename(tmp, path)
}

/// Removes a file; one that does not exist is not an error.
pub(crate) fn remove_if_exists(s: &dyn Storage, path: &Path) -> io::Result<()> {
    match s.remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
