//! The durable write: a batch of contiguous writes followed by `fdatasync`, through io_uring
//! when the kernel allows it and through `pwrite` + `fdatasync` when it does not.
//!
//! io_uring is no faster per fsync on these machines (the host's flush round trip dominates);
//! its value is submitting the writes and the sync in one system call with no thread pool.
//! Docker's default seccomp profile refuses `io_uring_setup`, so [`IoMode::Auto`] probes once
//! at open and falls back.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use crate::error::NoSpaceOnWrite;
use crate::storage::{self, RealStorage, Storage};

/// Which write path to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring if the kernel allows it, else pwrite.
    Auto,
    /// io_uring or fail to open.
    Uring,
    /// pwrite + fdatasync.
    Pwrite,
}

/// One write of a batch.
pub(crate) struct Write<'a> {
    pub(crate) file: &'a File,
    pub(crate) offset: u64,
    pub(crate) bytes: &'a [u8],
}

/// Ring size: a batch has at most a few writes (one per segment touched) plus their syncs.
const RING_ENTRIES: u32 = 16;
/// Largest number of writes in one batch (one per segment a batch touches).
pub(crate) const BATCH_WRITES_MAX: usize = 4;

/// The writer's I/O path, chosen once at open.
pub(crate) enum SyncIo {
    Uring(Box<io_uring::IoUring>),
    Pwrite,
}

impl SyncIo {
    /// The write path for `mode`; always pwrite when `storage` is not the real file system
    /// (io_uring would bypass it).
    pub(crate) fn new(mode: IoMode, storage: &dyn Storage) -> io::Result<SyncIo> {
        if !storage.uring_allowed() {
            return Ok(SyncIo::Pwrite);
        }
        match mode {
            IoMode::Pwrite => Ok(SyncIo::Pwrite),
            IoMode::Uring => Ok(SyncIo::Uring(Box::new(io_uring::IoUring::new(
                RING_ENTRIES,
            )?))),
            IoMode::Auto => match io_uring::IoUring::new(RING_ENTRIES) {
                Ok(ring) => Ok(SyncIo::Uring(Box::new(ring))),
                Err(e) => {
                    tracing::info!(error = %e, "io_uring refused; writing with pwrite + fdatasync");
                    Ok(SyncIo::Pwrite)
                }
            },
        }
    }

    /// The mode actually in use.
    pub(crate) fn mode(&self) -> IoMode {
        match self {
            SyncIo::Uring(_) => IoMode::Uring,
            SyncIo::Pwrite => IoMode::Pwrite,
        }
    }

    /// Writes every buffer at its offset, then makes the data of every file written durable.
    /// Returns only when all of it is on stable storage, or with the first error.
    pub(crate) fn write_and_sync(
        &mut self,
        storage: &dyn Storage,
        writes: &[Write<'_>],
    ) -> io::Result<()> {
        assert!(
            writes.len() <= BATCH_WRITES_MAX,
            "a batch touches at most {BATCH_WRITES_MAX} files"
        );
        // One group commit's write and fdatasync, for stage timing (TRACE: a level check
        // when nobody records it).
        let _writing = tracing::trace_span!("stage.engine.write_sync");
        let done = match self {
            SyncIo::Pwrite => pwrite_and_sync(storage, writes),
            // The mutation check runs the plain path, whose syncs it switches off.
            SyncIo::Uring(_) if cfg!(feature = "mutation-no-fsync") => {
                pwrite_and_sync(storage, writes)
            }
            SyncIo::Uring(ring) => uring_write_and_sync(ring, writes),
        };
        // Under the no-fsync mutation nothing was synced, so no mark moves.
        #[cfg(all(feature = "fault-sync-marks", not(feature = "mutation-no-fsync")))]
        if done.is_ok() {
            sync_marks::record(writes);
        }
        done
    }
}

/// Feature `fault-sync-marks`, for the consistency suite only: after each durable write,
/// `SEGMENT.synced` holds the end offset of the last synced write to `SEGMENT` (8 bytes,
/// little-endian, written in place by one `pwrite`). A harness that kills the process can
/// then throw away exactly what no fsync covered, as a power cut would (jepsen/, the
/// storage nemeses). Never in a release: it costs an open and a write per group commit.
#[cfg(feature = "fault-sync-marks")]
mod sync_marks {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;

    pub(super) fn record(writes: &[super::Write<'_>]) {
        for w in writes {
            let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", w.file.as_raw_fd()))
            else {
                continue;
            };
            let mut mark = path.into_os_string();
            mark.push(".synced");
            let end = w.offset + w.bytes.len() as u64;
            if let Ok(f) = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&mark)
            {
                let _ = f.write_all_at(&end.to_le_bytes(), 0);
            }
        }
    }
}

/// Marks ENOSPC from a write (not from a sync) as [`NoSpaceOnWrite`].
fn write_stage(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => io::Error::new(io::ErrorKind::StorageFull, NoSpaceOnWrite),
        _ => e,
    }
}

fn pwrite_and_sync(storage: &dyn Storage, writes: &[Write<'_>]) -> io::Result<()> {
    for w in writes {
        storage::write_all_at(storage, w.file, w.bytes, w.offset).map_err(write_stage)?;
    }
    for w in writes {
        storage::sync_data(storage, w.file)?;
    }
    Ok(())
}

fn uring_write_and_sync(ring: &mut io_uring::IoUring, writes: &[Write<'_>]) -> io::Result<()> {
    use io_uring::{opcode, squeue, types};
    // Writes first, each linked to the next, then one datasync per file: a link makes each
    // operation start only after the previous one completed successfully.
    let n = writes.len() * 2;
    {
        let mut sq = ring.submission();
        for (i, w) in writes.iter().enumerate() {
            let fd = types::Fd(w.file.as_raw_fd());
            let len = u32::try_from(w.bytes.len()).expect("batch buffers are below 4 GiB");
            let sqe = opcode::Write::new(fd, w.bytes.as_ptr(), len)
                .offset(w.offset)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(i as u64);
            // SAFETY: the buffer outlives the submission: we wait for every completion below.
            unsafe { sq.push(&sqe) }.map_err(|_| io::Error::other("io_uring queue full"))?;
        }
        for (i, w) in writes.iter().enumerate() {
            let fd = types::Fd(w.file.as_raw_fd());
            let mut sqe = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data((writes.len() + i) as u64);
            if i + 1 < writes.len() {
                sqe = sqe.flags(squeue::Flags::IO_LINK);
            }
            // SAFETY: no buffer is involved.
            unsafe { sq.push(&sqe) }.map_err(|_| io::Error::other("io_uring queue full"))?;
        }
    }
    let results = wait_all(ring, n)?;
    // A short write or a cancelled link is finished the plain way: correctness first.
    let mut redo = false;
    for (i, w) in writes.iter().enumerate() {
        let r = results[i];
        if r < 0 && !redo_plainly(r) {
            return Err(write_stage(io::Error::from_raw_os_error(-r)));
        }
        if r < 0 || r as usize != w.bytes.len() {
            let done = r.max(0) as usize;
            w.file
                .write_all_at(&w.bytes[done..], w.offset + done as u64)
                .map_err(write_stage)?;
            redo = true;
        }
    }
    for (i, w) in writes.iter().enumerate() {
        let r = results[writes.len() + i];
        if redo || redo_plainly(r) {
            storage::sync_data(&RealStorage, w.file)?;
        } else if r < 0 {
            return Err(io::Error::from_raw_os_error(-r));
        }
    }
    Ok(())
}

/// A completion that is finished the plain way (pwrite, fdatasync) rather than failed: a link
/// cancelled after a short write, or an operation interrupted by a signal.
fn redo_plainly(result: i32) -> bool {
    result == -libc::ECANCELED || result == -libc::EINTR || result == -libc::EAGAIN
}

/// Submits what is queued and waits until all `n` operations have completed; returns their
/// results by `user_data`.
///
/// The kernel reads the batch's buffers until each operation completes, so this never returns
/// while any is in flight: a signal (EINTR, even with SA_RESTART: `io_uring_enter` is not
/// restarted) or a full completion queue (EBUSY) only means "wait again". An error with
/// nothing in flight is returned; with operations in flight there is no sound way out (the
/// buffers would be freed under the kernel), so the process aborts.
fn wait_all(ring: &mut io_uring::IoUring, n: usize) -> io::Result<[i32; 2 * BATCH_WRITES_MAX]> {
    let mut results = [0i32; 2 * BATCH_WRITES_MAX];
    let mut submitted = 0usize;
    let mut seen = 0usize;
    while seen < n {
        match ring.submit_and_wait(n - seen) {
            Ok(k) => submitted += k,
            Err(e) if retry_wait(&e) => {}
            Err(e) if submitted == seen => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, in_flight = submitted - seen,
                    "io_uring wait failed with writes in flight; aborting");
                std::process::abort();
            }
        }
        for cqe in ring.completion() {
            let slot = cqe.user_data() as usize;
            assert!(slot < n, "a completion of this batch");
            results[slot] = cqe.result();
            seen += 1;
        }
    }
    Ok(results)
}

fn retry_wait(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
        || matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EBUSY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    /// Both paths, or only pwrite where the kernel refuses io_uring.
    fn paths() -> Vec<SyncIo> {
        let mut paths = vec![SyncIo::Pwrite];
        match SyncIo::new(IoMode::Uring, &RealStorage) {
            Ok(ring) => paths.push(ring),
            Err(e) => println!("io_uring refused by the kernel ({e}): only pwrite is tested"),
        }
        paths
    }

    /// A file whose writes succeed and whose syncs fail: `/dev/null` (EINVAL).
    fn unsyncable() -> File {
        OpenOptions::new().write(true).open("/dev/null").unwrap()
    }

    #[test]
    fn a_batch_is_written_and_synced() {
        for mut io in paths() {
            let dir = tempfile::tempdir().unwrap();
            let a = storage::RealStorage.create(&dir.path().join("a")).unwrap();
            let b = storage::RealStorage.create(&dir.path().join("b")).unwrap();
            let writes = [
                Write {
                    file: &a,
                    offset: 3,
                    bytes: b"first",
                },
                Write {
                    file: &b,
                    offset: 0,
                    bytes: b"second",
                },
            ];
            io.write_and_sync(&RealStorage, &writes).unwrap();
            assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"\0\0\0first");
            assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), b"second");
        }
    }

    #[test]
    fn a_failed_sync_is_reported_with_its_error_on_both_paths() {
        for mut io in paths() {
            let mode = io.mode();
            let dir = tempfile::tempdir().unwrap();
            let file = storage::RealStorage.create(&dir.path().join("a")).unwrap();
            let null = unsyncable();
            // The failing file first, then last: each file's sync result is its own.
            for order in [[&null, &file], [&file, &null]] {
                let writes = order.map(|f| Write {
                    file: f,
                    offset: 0,
                    bytes: b"bytes",
                });
                let e = io.write_and_sync(&RealStorage, &writes).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{mode:?}: {e}");
            }
        }
    }

    #[test]
    fn a_failed_write_is_reported_with_its_error_on_both_paths() {
        for mut io in paths() {
            let mode = io.mode();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("a"), b"").unwrap();
            let read_only = File::open(dir.path().join("a")).unwrap();
            let writes = [Write {
                file: &read_only,
                offset: 0,
                bytes: b"bytes",
            }];
            let e = io.write_and_sync(&RealStorage, &writes).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{mode:?}: {e}");
        }
    }
}
