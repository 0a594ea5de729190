//! The engine's core: the state, the writer's queue and the writer thread. Entries are framed
//! under the state lock ([`Inner::frame`], [`Inner::enqueue`]); the writer takes whatever is
//! queued, stamps the durable watermark, writes it in one go, syncs once and publishes; a
//! failed sync stops the engine (leaving the `sync-failed` mark), a write refused for want
//! of space refuses the batch and goes on.
//!
//! Concurrency: one `RwLock<State>` orders every write (validation, index and position
//! assignment, framing into the writer's queue) and serves readers' index lookups; one writer
//! thread owns all disk writes and syncs. Writers never touch the disk themselves, so any
//! number of concurrent appends share one write and one fdatasync.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use zerocopy::IntoBytes;

use crate::append::Prepared;
use crate::config::EngineConfig;
use crate::error::{AppendError, Failed};
use crate::format::{self, RECORD_BODY_BYTES_MAX, RECORD_HEADER_BYTES};
use crate::io::{IoMode, SyncIo, Write, BATCH_WRITES_MAX};
use crate::recovery;
use crate::segment::SegmentFile;
use crate::state::{ApplyError, Callback, Cut, Origin, Records, Seg, State};
use crate::storage;

/// A write queued for the writer thread: bytes for one segment file at one offset.
pub(crate) struct Chunk {
    pub(crate) file: Arc<SegmentFile>,
    pub(crate) offset: u64,
    pub(crate) buf: Vec<u8>,
    pub(crate) new_file: bool,
    /// Each record in `buf`: where its header starts and its body's length. The writer
    /// stamps the durable watermark into each header just before the write.
    pub(crate) records: Vec<(usize, usize)>,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) chunks: Vec<Chunk>,
    /// Highest index framed into `chunks`.
    pub(crate) last_index: u64,
    /// The writer is between taking chunks and publishing them.
    pub(crate) busy: bool,
    pub(crate) shutdown: bool,
    /// Spent buffers, kept to avoid allocating on the hot path.
    pub(crate) free: Vec<Vec<u8>>,
}

/// Spent buffers kept for reuse.
const FREE_BUFFERS_MAX: usize = 8;

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) config: EngineConfig,
    pub(crate) state: RwLock<State>,
    pub(crate) queue: Mutex<Queue>,
    pub(crate) queue_cv: Condvar,
    /// Signalled when the writer finishes a batch (used to wait for the queue to drain).
    pub(crate) idle_cv: Condvar,
    pub(crate) io_mode: IoMode,
    pub(crate) summaries: Mutex<SummarySignal>,
    pub(crate) counters: Counters,
    /// Called with the new commit position whenever it moves (see [`Engine::on_commit`]).
    pub(crate) commit_listeners: Mutex<Vec<CommitListener>>,
    /// Whether the event-id index is whole (see `ids.rs`); appends wait for it.
    pub(crate) ids_ready: Mutex<bool>,
    pub(crate) ids_cv: Condvar,
    /// A pre-zeroed file ready to become the next segment.
    pub(crate) spare: Mutex<Option<PathBuf>>,
    pub(crate) summaries_cv: Condvar,
    /// One change to the set of files at a time: a scavenge, a summary write, and the
    /// truncations and installs that reload the state from disk. A reload replaces every
    /// segment of the state, so a summary or scavenge working from the old state would
    /// write a file that no longer describes the log.
    pub(crate) files_lock: Mutex<()>,
    /// Set while `State::no_space` is: the next write first cuts the refused batch.
    pub(crate) no_space: std::sync::atomic::AtomicBool,
    /// Failures the unit tests inject into the writer.
    #[cfg(test)]
    pub(crate) faults: TestFaults,
    /// Holds an exclusive `flock` on the directory's LOCK file while open.
    pub(crate) _lock: fs::File,
}

/// A function told the commit position each time it moves.
pub(crate) type CommitListener = Box<dyn Fn(u64) + Send + Sync>;

/// Running totals of the writer's work, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) syncs: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
}

/// Wakes the background thread.
#[derive(Default)]
pub(crate) struct SummarySignal {
    pub(crate) pending: bool,
    pub(crate) shutdown: bool,
}

impl Inner {
    /// Frames an entry at the log's tip: assigns its index, places it in a segment, queues its
    /// bytes for the writer and adds it to the in-memory state. The caller holds the state
    /// lock, so entries are framed in index order, and registers any waiter for the returned
    /// index before the writer can publish it.
    pub(crate) fn frame(&self, st: &mut State, prepared: Prepared) -> Result<u64, AppendError> {
        if let Some(f) = &st.failed {
            return Err(f.clone().into());
        }
        if st.closed {
            return Err(AppendError::Closed);
        }
        if st.no_space {
            return Err(AppendError::NoSpace);
        }
        if prepared.body.len() > RECORD_BODY_BYTES_MAX {
            return Err(AppendError::TooLarge {
                bytes: prepared.body.len(),
                max: RECORD_BODY_BYTES_MAX,
            });
        }
        for (name, s) in prepared.read_back {
            st.keep(&name, s);
        }
        let index = st.next_index;
        let term = st.term;
        let header = format::record_header(
            prepared.kind,
            index,
            term,
            st.next_position,
            prepared.count,
            &prepared.body,
        );
        match self.enqueue(st, &header, &prepared.body, Origin::Own) {
            Ok(()) => {}
            // No room for a new segment file: nothing changed, nothing was written.
            Err(EnqueueError::Io(e)) if e.raw_os_error() == Some(libc::ENOSPC) => {
                return Err(AppendError::NoSpace);
            }
            Err(EnqueueError::Io(e)) => {
                let failed = Failed(Arc::new(e));
                st.failed = Some(failed.clone());
                return Err(AppendError::Failed(failed));
            }
            Err(EnqueueError::Decode(e)) => panic!("an entry framed here does not apply: {e}"),
            Err(EnqueueError::Lookup(c)) => return Err(AppendError::Corruption(c)),
        }
        Ok(index)
    }

    /// Applies one framed record (header + body) to the state and queues its bytes. A record
    /// that does not apply changes nothing and queues nothing.
    pub(crate) fn enqueue(
        &self,
        st: &mut State,
        header: &format::RecordHeader,
        body: &[u8],
        origin: Origin,
    ) -> Result<(), EnqueueError> {
        let rec_len = (RECORD_HEADER_BYTES + body.len()) as u64;
        let needs_new = match st.segments.last() {
            None => true,
            Some(s) => s.sealed || s.end + rec_len > s.file.capacity,
        };
        let mut q = self.queue.lock();
        if needs_new
            && st
                .segments
                .last()
                .is_some_and(|s| !s.sealed && s.records.is_empty())
        {
            // An empty segment too small for this record: replace it with one that fits (a
            // new segment would need the same name).
            let empty = st.segments.pop().expect("checked above");
            q.chunks.retain(|c| !Arc::ptr_eq(&c.file, &empty.file));
            self.config
                .storage
                .remove_file(&empty.file.path)
                .map_err(EnqueueError::Io)?;
        }
        if needs_new {
            let capacity = self
                .config
                .segment_bytes_max
                .max(format::SEGMENT_HEADER_BYTES as u64 + rec_len);
            let spare = match capacity == self.config.segment_bytes_max {
                true => self.spare.lock().take(),
                false => None,
            };
            let used_spare = spare.is_some();
            let (file, head) = SegmentFile::create(
                &*self.config.storage,
                &self.dir,
                st.next_index,
                st.next_position,
                capacity,
                spare.as_deref(),
            )
            .map_err(EnqueueError::Io)?;
            if used_spare {
                self.wake_summarizer();
            }
            if let Some(prev) = st.segments.last_mut() {
                prev.sealed = true;
            }
            let file = Arc::new(file);
            let mut buf = q.free.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(&head);
            q.chunks.push(Chunk {
                file: file.clone(),
                offset: 0,
                buf,
                new_file: true,
                records: Vec::new(),
            });
            st.segments.push(Seg {
                file,
                records: Records::default(),
                end: head.len() as u64,
                summarized: false,
                sealed: false,
            });
        }
        let offset = st.segments.last().expect("a segment exists").end;
        st.apply_tip(header, offset, body, origin)
            .map_err(|e| match e {
                ApplyError::Decode(e) => EnqueueError::Decode(e),
                ApplyError::Lookup(c) => EnqueueError::Lookup(c),
            })?;
        let seg = st.segments.last_mut().expect("a segment exists");
        let same = q.chunks.last().is_some_and(|c| {
            Arc::ptr_eq(&c.file, &seg.file) && c.offset + c.buf.len() as u64 == offset
        });
        if !same {
            let mut buf = q.free.pop().unwrap_or_default();
            buf.clear();
            q.chunks.push(Chunk {
                file: seg.file.clone(),
                offset,
                buf,
                new_file: false,
                records: Vec::new(),
            });
        }
        let chunk = q.chunks.last_mut().expect("pushed above");
        chunk.records.push((chunk.buf.len(), body.len()));
        chunk.buf.extend_from_slice(header.as_bytes());
        chunk.buf.extend_from_slice(body);
        seg.end += rec_len;
        q.last_index = header.index.get();
        drop(q);
        self.queue_cv.notify_one();
        Ok(())
    }

    /// Asks the background thread to look for segments to summarize.
    pub(crate) fn wake_summarizer(&self) {
        self.summaries.lock().pending = true;
        self.summaries_cv.notify_one();
    }

    /// Tells every commit listener the current commit position.
    pub(crate) fn notify_commit(&self) {
        let position = self.state.read().commit_position;
        for listener in self.commit_listeners.lock().iter() {
            listener(position);
        }
    }

    /// Blocks until the event-id index is whole.
    pub(crate) fn wait_ids(&self) {
        let mut ready = self.ids_ready.lock();
        while !*ready {
            self.ids_cv.wait(&mut ready);
        }
    }

    /// After a batch was refused for want of space: cuts what reached the files, reloads the
    /// state from disk (the refused records had joined the in-memory log when framed), and
    /// lets writes go on. A write that finds the disk still full is refused again. If the cut
    /// itself fails, the engine fails (stop) as after any failed sync.
    pub(crate) fn recover_space(&self) -> Result<(), Failed> {
        if !self.no_space.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _files = self.files_lock.lock();
        self.wait_idle()?;
        let mut st = self.state.write();
        if !std::mem::take(&mut st.no_space) {
            return Ok(());
        }
        // The writer cut the refused bytes already; the state still holds those records.
        let reloaded = recovery::load_with_ids(&self.dir, &self.config)
            .map_err(|e| io::Error::other(e.to_string()));
        let mut fresh = match reloaded {
            Ok(fresh) => fresh,
            Err(e) => {
                let from = st.durable_index + 1;
                let callbacks = fail(&mut st, e);
                mark_failed(self, from, false);
                let f = st.failed.clone().expect("set by fail");
                drop(st);
                for (cb, r) in callbacks {
                    cb.call(r);
                }
                return Err(f);
            }
        };
        fresh.commit_allowed = fresh.commit_allowed.max(st.commit_allowed);
        fresh.term = st.term;
        fresh.waiters = std::mem::take(&mut st.waiters);
        let callbacks = fresh.advance_commit();
        *st = fresh;
        self.no_space.store(false, Ordering::SeqCst);
        drop(st);
        for (cb, i) in callbacks {
            cb.call(Ok(i));
        }
        tracing::info!("the refused batch is cut; writes go on");
        Ok(())
    }

    /// Cuts the bytes of a refused batch: files it created are removed, the rest zeroed from
    /// where it started, durably.
    pub(crate) fn cut_refused(&self, cuts: &[Cut]) -> io::Result<()> {
        let disk = &*self.config.storage;
        for c in cuts.iter().rev() {
            if c.new_file {
                storage::remove_if_exists(disk, &c.file.path)?;
            } else if c.file.path.exists() {
                c.file.zero_from(disk, c.offset)?;
            }
        }
        storage::sync_dir(disk, &self.dir)
    }

    /// Blocks until the writer has nothing queued and is not mid-batch.
    pub(crate) fn wait_idle(&self) -> Result<(), Failed> {
        let mut q = self.queue.lock();
        while !q.chunks.is_empty() || q.busy {
            self.idle_cv.wait(&mut q);
        }
        drop(q);
        match &self.state.read().failed {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }
}

/// Why [`Inner::enqueue`] refused a record.
#[derive(Debug)]
pub(crate) enum EnqueueError {
    /// A new segment file could not be created.
    Io(io::Error),
    /// The record does not continue the log.
    Decode(crate::error::DecodeError),
    /// A stream it names could not be read back: stored data is damaged.
    Lookup(crate::error::Corruption),
}

/// The writer thread: takes whatever is queued, writes it in one go, syncs once, publishes.
pub(crate) fn writer_loop(inner: &Inner, mut io: SyncIo) {
    loop {
        let (mut chunks, last_index) = {
            let mut q = inner.queue.lock();
            let idle = q
                .chunks
                .is_empty()
                .then(|| tracing::trace_span!("stage.engine.writer_idle"));
            while q.chunks.is_empty() {
                if q.shutdown {
                    return;
                }
                inner.queue_cv.wait(&mut q);
            }
            drop(idle);
            q.busy = true;
            (std::mem::take(&mut q.chunks), q.last_index)
        };
        // One group commit: stamp, write + fdatasync, publish, tell the waiters.
        let commit = tracing::trace_span!("stage.engine.commit");
        let (failed, durable) = {
            let st = inner.state.read();
            (st.failed.is_some(), st.durable_index)
        };
        let result = if failed {
            // After a failed write nothing more is written: what is on disk stays as it was
            // for the next open to judge.
            Err(io::Error::other("the engine failed earlier"))
        } else {
            stamp_durable(&mut chunks, durable);
            write_batch(inner, &mut io, &chunks)
        };
        if result.is_ok() {
            let bytes: usize = chunks.iter().map(|c| c.buf.len()).sum();
            inner.counters.syncs.fetch_add(1, Ordering::Relaxed);
            inner
                .counters
                .bytes_written
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
        let publishing = tracing::trace_span!("stage.engine.publish");
        let (callbacks, moved) = {
            let mut st = inner.state.write();
            let before = st.commit_index;
            let callbacks = match result {
                Ok(()) => {
                    st.durable_index = st.durable_index.max(last_index);
                    st.advance_commit()
                        .into_iter()
                        .map(|(cb, i)| (cb, Ok(i)))
                        .collect()
                }
                Err(e) if crate::error::is_no_space_on_write(&e) => {
                    refuse_no_space(inner, &mut st, &chunks, e)
                }
                Err(e) => {
                    let from = st.durable_index + 1;
                    let callbacks = fail(&mut st, e);
                    // Before anyone hears of the failure: a restart must drop this batch
                    // even if its pages sit in the page cache, marked clean.
                    mark_failed(inner, from, failed);
                    callbacks
                }
            };
            (callbacks, st.commit_index != before)
        };
        drop(publishing);
        let notifying = tracing::trace_span!("stage.engine.notify");
        for (cb, r) in callbacks {
            cb.call(r);
        }
        drop((notifying, commit));
        if moved {
            inner.notify_commit();
        }
        // A new file means a segment was sealed; under Raft a sealed segment may only become
        // committed later. Otherwise there is nothing for the background thread to do.
        if chunks.iter().any(|c| c.new_file) || !inner.config.commit_on_durable {
            inner.wake_summarizer();
        }
        let mut q = inner.queue.lock();
        q.busy = false;
        for c in chunks {
            if q.free.len() < FREE_BUFFERS_MAX {
                q.free.push(c.buf);
            }
        }
        drop(q);
        inner.idle_cv.notify_all();
    }
}

/// Stamps every record of the batch with the index through which the log is durable now
/// (`durable`): the watermark recovery trusts (docs/STORAGE.md, "Recovery"). The checksum is
/// recomputed in one pass over the header's covered bytes and the body, which lie together
/// in the buffer (hardware CRC32C: tens of GB/s; `crc32c_combine` cost microseconds per
/// record, measured as half the throughput of 64 single-event appends in flight).
fn stamp_durable(chunks: &mut [Chunk], durable: u64) {
    use zerocopy::FromBytes;
    for c in chunks {
        for &(at, body_len) in &c.records {
            let bytes = &mut c.buf[at..at + RECORD_HEADER_BYTES];
            let h = format::RecordHeader::mut_from_bytes(bytes).expect("a header's bytes");
            debug_assert!(
                h.index.get() > durable,
                "queued records are not durable yet"
            );
            h.stamp_durable(durable);
            let crc = crc32c::crc32c(&c.buf[at + 8..at + RECORD_HEADER_BYTES + body_len]);
            c.buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// A write of the batch was refused for want of space, before any of it was synced: the
/// batch, and everything queued after it, is refused (their waiters told `NoSpace`). What
/// reached the files is cut first, durably (zeroing allocated bytes and removing files needs
/// no space): a refused record must never turn up after a crash. The state is reloaded
/// before the next write (`Inner::recover_space`). Unlike a failed sync this is not
/// fail-stop: no page the disk was asked to keep was lost. If the cut fails, it is.
fn refuse_no_space(
    inner: &Inner,
    st: &mut State,
    chunks: &[Chunk],
    e: io::Error,
) -> Vec<(Callback, Result<u64, Failed>)> {
    let later = std::mem::take(&mut inner.queue.lock().chunks);
    let cuts: Vec<Cut> = chunks
        .iter()
        .chain(&later)
        .map(|c| Cut {
            file: c.file.clone(),
            offset: c.offset,
            new_file: c.new_file,
        })
        .collect();
    if let Err(cut_failed) = inner.cut_refused(&cuts) {
        let from = st.durable_index + 1;
        let callbacks = fail(st, cut_failed);
        mark_failed(inner, from, false);
        return callbacks;
    }
    st.no_space = true;
    inner.no_space.store(true, Ordering::SeqCst);
    tracing::warn!(error = %e, "disk full: writes are refused until space is freed; reads go on");
    let refused = Failed(Arc::new(e));
    let durable = st.durable_index;
    // Waiters for durable records (under Raft, waiting for the commit) keep waiting.
    let keep = st.waiters.partition_point(|(i, _)| *i <= durable);
    let gone = st.waiters.split_off(keep);
    gone.into_iter()
        .chain(st.durable_waiters.drain(..))
        .map(|(_, cb)| (cb, Err(refused.clone())))
        .collect()
}

/// Writes the failed-sync mark (once: `already` says the engine had failed before).
fn mark_failed(inner: &Inner, from: u64, already: bool) {
    if already {
        return;
    }
    if let Err(e) = crate::failmark::write(&*inner.config.storage, &inner.dir, from) {
        tracing::error!(error = %e, from_index = from,
            "could not record the failed sync; restart this store only after a reboot");
    }
}

/// Failures a unit test can inject into the writer.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct TestFaults {
    /// The next batch is written (it reaches the page cache) but its sync reports EIO, as a
    /// failed writeback does.
    pub(crate) fail_next_sync: std::sync::atomic::AtomicBool,
}

fn write_batch(inner: &Inner, io: &mut SyncIo, chunks: &[Chunk]) -> io::Result<()> {
    #[cfg(test)]
    if inner.faults.fail_next_sync.swap(false, Ordering::SeqCst) {
        use std::os::unix::fs::FileExt;
        for c in chunks {
            c.file.file.write_all_at(&c.buf, c.offset)?;
        }
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    for group in chunks.chunks(BATCH_WRITES_MAX) {
        let writes: Vec<Write<'_>> = group
            .iter()
            .map(|c| Write {
                file: &c.file.file,
                offset: c.offset,
                bytes: &c.buf,
            })
            .collect();
        io.write_and_sync(&*inner.config.storage, &writes)?;
    }
    if chunks.iter().any(|c| c.new_file) {
        storage::sync_dir(&*inner.config.storage, &inner.dir)?;
    }
    Ok(())
}

/// A write or fsync failed: after a failed fsync the page cache cannot be trusted, so the
/// engine stops and tells every waiter.
pub(crate) fn fail(st: &mut State, e: io::Error) -> Vec<(Callback, Result<u64, Failed>)> {
    tracing::error!(error = %e, "write or fsync failed; the engine refuses writes until reopened");
    let f = Failed(Arc::new(e));
    st.failed = Some(f.clone());
    let waiters = st.waiters.drain(..).chain(st.durable_waiters.drain(..));
    waiters.map(|(_, cb)| (cb, Err(f.clone()))).collect()
}

/// Id loaders a test holds back, by data directory: the loader of a store opened in a held
/// directory waits before it reads the summaries until the test releases it (the loader
/// starts inside `Engine::open`, so the hold must be in place before the store exists).
#[cfg(test)]
pub(crate) mod held_loaders {
    use std::path::{Path, PathBuf};

    use parking_lot::{Condvar, Mutex};

    static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    static CV: Condvar = Condvar::new();

    pub(crate) fn hold(dir: &Path) {
        HELD.lock().push(dir.to_path_buf());
    }

    pub(crate) fn release(dir: &Path) {
        HELD.lock().retain(|d| d != dir);
        CV.notify_all();
    }

    pub(crate) fn wait(dir: &Path) {
        let mut held = HELD.lock();
        while held.iter().any(|d| d == dir) {
            CV.wait(&mut held);
        }
    }
}
