//! [`Engine`]: open a data directory, write entries with group commit, and hand readers the
//! committed log. Reads live in `read.rs`, Raft's log operations in `log.rs`, scavenging in
//! `scavenge.rs`.
//!
//! Concurrency: one `RwLock<State>` orders every write (validation, index and position
//! assignment, framing into the writer's queue) and serves readers' index lookups; one writer
//! thread owns all disk writes and syncs. Writers never touch the disk themselves, so any
//! number of concurrent appends share one write and one fdatasync.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};
use zerocopy::IntoBytes;

use crate::append::{check_expected, prepare_append, AppendPlan};
use crate::error::{AppendError, Failed, OpenError};
use crate::format::{self, EntryKind, RECORD_BODY_BYTES_MAX, RECORD_HEADER_BYTES};
use crate::io::{IoMode, SyncIo, Write, BATCH_WRITES_MAX};
use crate::recovery;
use crate::segment::{self, SegmentFile};
use crate::state::{Callback, Cut, OpenStats, Origin, Seg, State};
use crate::storage::{self, RealStorage, Storage};
use crate::summary;
use crate::types::{
    validate_stream_name, AppendResult, DeleteKind, ExpectedVersion, StreamMetadata, StreamWrite,
};

/// How the engine is set up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Segment files roll over at this size (a larger single record gets a segment of its own).
    pub segment_bytes_max: u64,
    /// Write path.
    pub io_mode: IoMode,
    /// Single-node mode: an entry is committed as soon as it is durable. Off under Raft,
    /// which moves the commit point with [`Engine::set_commit_index`].
    pub commit_on_durable: bool,
    /// An index the caller knows was durable before this open (Raft's persisted commit
    /// index): recovery treats damage at or below it as corruption, never as a torn tail.
    /// 0: none (recovery then relies on the watermarks the records carry).
    pub durable_floor: u64,
    /// The file system under the engine: [`RealStorage`], or a simulated disk in tests
    /// ([`crate::storage::sim::SimDisk`]). Anything but the real one forces the pwrite path.
    pub storage: Arc<dyn Storage>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            segment_bytes_max: 64 << 20,
            io_mode: IoMode::Auto,
            commit_on_durable: true,
            durable_floor: 0,
            storage: Arc::new(RealStorage),
        }
    }
}

impl EngineConfig {
    /// Sets the segment size.
    pub fn segment_bytes_max(mut self, bytes: u64) -> Self {
        self.segment_bytes_max = bytes;
        self
    }

    /// Sets the write path.
    pub fn io_mode(mut self, mode: IoMode) -> Self {
        self.io_mode = mode;
        self
    }

    /// Sets the storage under the engine.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Sets the index known to be durable (see [`EngineConfig::durable_floor`]).
    pub fn durable_floor(mut self, index: u64) -> Self {
        self.durable_floor = index;
        self
    }

    /// Sets whether durable means committed (single node) or Raft decides.
    pub fn commit_on_durable(mut self, yes: bool) -> Self {
        self.commit_on_durable = yes;
        self
    }
}

/// A write queued for the writer thread: bytes for one segment file at one offset.
pub(crate) struct Chunk {
    pub(crate) file: Arc<SegmentFile>,
    pub(crate) offset: u64,
    pub(crate) buf: Vec<u8>,
    pub(crate) new_file: bool,
    /// Each record in `buf`: where its header starts, its body's CRC32C and length. The
    /// writer stamps the durable watermark into each header just before the write.
    pub(crate) records: Vec<(usize, u32, usize)>,
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
    _lock: fs::File,
}

/// Takes the directory's lock: two engines writing one log would destroy it.
fn lock_dir(dir: &Path) -> Result<fs::File, OpenError> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| OpenError::Io {
            path: path.clone(),
            source: e,
        })?;
    // SAFETY: flock on a descriptor we own; the lock lives as long as the file.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(OpenError::Locked(path));
    }
    Ok(file)
}

/// The storage engine. Cheap to clone; all clones share one log. Dropping the last clone
/// stops the writer after it has written everything queued.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    _writer: Arc<WriterHandle>,
}

struct WriterHandle {
    inner: Arc<Inner>,
    writer: Mutex<Option<JoinHandle<()>>>,
    summarizer: Mutex<Option<JoinHandle<()>>>,
    id_loader: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.inner.queue.lock().shutdown = true;
        self.inner.queue_cv.notify_all();
        if let Some(t) = self.writer.lock().take() {
            let _ = t.join();
        }
        self.inner.state.write().closed = true;
        self.inner.summaries.lock().shutdown = true;
        self.inner.summaries_cv.notify_all();
        if let Some(t) = self.summarizer.lock().take() {
            let _ = t.join();
        }
        if let Some(t) = self.id_loader.lock().take() {
            let _ = t.join();
        }
    }
}

/// The spare segment left by the last run if it fits, else a new one for an empty store
/// (so that its very first segment is pre-zeroed too), else none yet: the background thread
/// prepares one.
fn find_spare(
    dir: &Path,
    config: &EngineConfig,
    empty: bool,
) -> Result<Option<PathBuf>, OpenError> {
    let path = dir.join(segment::SPARE_NAME);
    let io_err = |e| OpenError::Io {
        path: path.clone(),
        source: e,
    };
    match fs::metadata(&path) {
        Ok(m) if m.len() == config.segment_bytes_max && all_zeros(&path).map_err(io_err)? => {
            return Ok(Some(path))
        }
        Ok(m) => {
            // A roll renames the spare into place, and the rename is durable only at the
            // directory sync after the new segment's data: a power cut in between leaves a
            // "spare" holding a header and records. Those records were never acknowledged
            // (that needs the directory sync), but reused, they would reappear after the new
            // segment's first records.
            if m.len() == config.segment_bytes_max {
                tracing::warn!(file = %path.display(), "discarding a spare that is not all zeros");
            }
            config.storage.remove_file(&path).map_err(io_err)?;
        }
        Err(_) => {}
    }
    if empty {
        return segment::prepare_spare(&*config.storage, dir, config.segment_bytes_max)
            .map(Some)
            .map_err(io_err);
    }
    Ok(None)
}

/// Whether every byte of the file is zero (read in 1 MiB chunks: once per open, and the file
/// is one segment long).
fn all_zeros(path: &Path) -> io::Result<bool> {
    use std::io::Read;
    if cfg!(feature = "mutation-no-spare-check") {
        return Ok(true);
    }
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if !format::all_zero(&buf[..n]) {
            return Ok(false);
        }
    }
}

/// A function told the commit position each time it moves.
pub(crate) type CommitListener = Box<dyn Fn(u64) + Send + Sync>;

/// Running totals of the writer's work, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    syncs: AtomicU64,
    bytes_written: AtomicU64,
}

/// What the engine has done since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Group commits: one write and one fdatasync each.
    pub syncs: u64,
    /// Bytes written by them.
    pub bytes_written: u64,
}

/// Wakes the background thread.
#[derive(Default)]
pub(crate) struct SummarySignal {
    pending: bool,
    shutdown: bool,
}

/// The background thread: writes summaries of sealed, committed segments and prepares the
/// next pre-zeroed segment, off the writer's path, so neither ever delays an append.
fn summarizer_loop(inner: &Inner) {
    loop {
        {
            let mut s = inner.summaries.lock();
            while !s.pending && !s.shutdown {
                inner.summaries_cv.wait(&mut s);
            }
            s.pending = false;
            if s.shutdown {
                // A clean shutdown leaves every summary written, for a fast restart.
                drop(s);
                summary::write_due(inner);
                return;
            }
        }
        summary::write_due(inner);
        if inner.spare.lock().is_none() {
            let (s, size) = (&*inner.config.storage, inner.config.segment_bytes_max);
            match segment::prepare_spare(s, &inner.dir, size) {
                Ok(path) => *inner.spare.lock() = Some(path),
                Err(e) => tracing::warn!(error = %e, "could not prepare a spare segment"),
            }
        }
    }
}

/// What an entry proposed by this node turns into before it is framed.
pub(crate) struct Prepared {
    pub(crate) kind: EntryKind,
    pub(crate) count: u32,
    pub(crate) body: Vec<u8>,
}

impl Engine {
    /// Opens (or creates) the store in `dir`, recovering from whatever a crash left.
    pub fn open(dir: impl AsRef<Path>, config: EngineConfig) -> Result<Engine, OpenError> {
        let dir = dir.as_ref().to_path_buf();
        if config.segment_bytes_max < 4096 || config.segment_bytes_max > (1 << 31) {
            return Err(OpenError::Config(
                "segment_bytes_max must be in 4 KiB ..= 2 GiB".into(),
            ));
        }
        fs::create_dir_all(&dir).map_err(|e| OpenError::Io {
            path: dir.clone(),
            source: e,
        })?;
        let lock = lock_dir(&dir)?;
        let state = recovery::load(&dir, &config)?;
        let spare = find_spare(&dir, &config, state.segments.is_empty())?;
        let ids_ready = state.ids_pending.is_empty();
        let io = SyncIo::new(config.io_mode, &*config.storage).map_err(|e| OpenError::Io {
            path: dir.clone(),
            source: e,
        })?;
        let io_mode = io.mode();
        let inner = Arc::new(Inner {
            dir,
            config,
            state: RwLock::new(state),
            queue: Mutex::new(Queue::default()),
            queue_cv: Condvar::new(),
            idle_cv: Condvar::new(),
            io_mode,
            summaries: Mutex::default(),
            counters: Counters::default(),
            commit_listeners: Mutex::new(Vec::new()),
            summaries_cv: Condvar::new(),
            ids_ready: Mutex::new(ids_ready),
            ids_cv: Condvar::new(),
            spare: Mutex::new(spare),
            files_lock: Mutex::new(()),
            no_space: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            faults: TestFaults::default(),
            _lock: lock,
        });
        let spawn_err = |e| OpenError::Io {
            path: inner.dir.clone(),
            source: e,
        };
        let writer_inner = inner.clone();
        let writer = std::thread::Builder::new()
            .name("quiver-writer".into())
            .spawn(move || writer_loop(&writer_inner, io))
            .map_err(spawn_err)?;
        let summary_inner = inner.clone();
        let summarizer = std::thread::Builder::new()
            .name("quiver-summary".into())
            .spawn(move || summarizer_loop(&summary_inner))
            .map_err(spawn_err)?;
        let id_loader = match ids_ready {
            true => None,
            false => {
                let ids_inner = inner.clone();
                let t = std::thread::Builder::new()
                    .name("quiver-ids".into())
                    .spawn(move || crate::ids::load_pending(&ids_inner))
                    .map_err(spawn_err)?;
                Some(t)
            }
        };
        let handle = WriterHandle {
            inner: inner.clone(),
            writer: Mutex::new(Some(writer)),
            summarizer: Mutex::new(Some(summarizer)),
            id_loader: Mutex::new(id_loader),
        };
        Ok(Engine {
            inner,
            _writer: Arc::new(handle),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The write path in use (Auto resolves to one of the others).
    pub fn io_mode(&self) -> IoMode {
        self.inner.io_mode
    }

    /// Registers `listener`, called with the commit position each time it moves (after the
    /// entries below it are readable). It runs on the writer thread: it must be quick, e.g.
    /// store into a watch channel. Subscriptions use it to learn that there is more to read;
    /// they read it from the log, so a missed or merged notification loses nothing.
    pub fn on_commit(&self, listener: impl Fn(u64) + Send + Sync + 'static) {
        self.inner.commit_listeners.lock().push(Box::new(listener));
    }

    /// Writer totals since open.
    pub fn counters(&self) -> EngineCounters {
        EngineCounters {
            syncs: self.inner.counters.syncs.load(Ordering::Relaxed),
            bytes_written: self.inner.counters.bytes_written.load(Ordering::Relaxed),
        }
    }

    /// Bytes of the log held in segment files (without their unused, pre-zeroed space).
    pub fn data_bytes(&self) -> u64 {
        self.inner.state.read().segments.iter().map(|s| s.end).sum()
    }

    /// Whether appends are served without waiting: the store is open, has not failed, and
    /// its event-id index is whole.
    pub fn is_writable(&self) -> bool {
        let st = self.inner.state.read();
        *self.inner.ids_ready.lock() && st.failed.is_none() && !st.no_space
    }

    /// What the last open did.
    pub fn open_stats(&self) -> OpenStats {
        self.inner.state.read().open_stats
    }

    /// Appends events to one stream; returns once they are durable and committed.
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<crate::EventData>,
    ) -> Result<AppendResult, AppendError> {
        let write = StreamWrite {
            stream: stream.to_string(),
            expected,
            events,
        };
        self.append_multi(vec![write])
    }

    /// Appends to several streams in one atomic entry: all or nothing.
    pub fn append_multi(&self, writes: Vec<StreamWrite>) -> Result<AppendResult, AppendError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.append_with(writes, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or(Err(AppendError::Closed))
    }

    /// Starts an append and calls `done` with the outcome once it is durable and committed
    /// (or at once, on a validation error). `done` runs on the writer thread or the caller's:
    /// it must be quick, e.g. send on a channel.
    pub fn append_with(
        &self,
        writes: Vec<StreamWrite>,
        done: impl FnOnce(Result<AppendResult, AppendError>) + Send + 'static,
    ) {
        // Only right after open, while the id index of old segments is still loading.
        self.inner.wait_ids();
        if let Err(f) = self.inner.recover_space() {
            return done(Err(f.into()));
        }
        let mut st = self.inner.state.write();
        let prepared = match prepare_append(&mut st, &writes) {
            Ok(p) => p,
            Err(e) => {
                drop(st);
                return done(Err(e));
            }
        };
        match prepared {
            AppendPlan::Idempotent(mut result) => {
                // The original may not be committed yet: answer once it is.
                let wait_for = match result.index {
                    0 => st.next_index - 1,
                    i => i,
                };
                result.index = wait_for;
                if st.closed && st.commit_index < wait_for {
                    drop(st);
                    return done(Err(AppendError::Closed));
                }
                let cb = Callback::new(move |r| done(r.map(|_| result).map_err(Into::into)));
                if st.commit_index >= wait_for {
                    drop(st);
                    return cb.call(Ok(wait_for));
                }
                // After fail-stop (or close) nothing more becomes committed: the original's
                // waiters were failed already, and a parked retry would wait for ever.
                if let Some(f) = st.failed.clone() {
                    drop(st);
                    return cb.call(Err(f));
                }
                // Waiters stay in index order: the writer releases them from the front.
                let at = st.waiters.partition_point(|(i, _)| *i <= wait_for);
                st.waiters.insert(at, (wait_for, cb));
            }
            AppendPlan::Write { prepared, result } => match self.inner.frame(&mut st, prepared) {
                Ok(index) => {
                    let cb = Callback::new(move |r| {
                        done(
                            r.map(|index| AppendResult { index, ..result })
                                .map_err(Into::into),
                        )
                    });
                    st.waiters.push_back((index, cb));
                }
                Err(e) => {
                    drop(st);
                    done(Err(e));
                }
            },
        }
    }

    /// Deletes a stream: soft (hidden, may be recreated, versions continue) or hard
    /// (tombstone: reads and appends fail for ever).
    pub fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        kind: DeleteKind,
    ) -> Result<u64, AppendError> {
        self.propose_checked(stream, |st, name| {
            let s = st.streams.get(name);
            check_expected(name, expected, s)?;
            let next_version = s.map_or(0, |s| s.next_version);
            let mut body = Vec::new();
            format::encode_delete(&mut body, name, kind, next_version);
            Ok(Prepared {
                kind: EntryKind::Delete,
                count: 0,
                body,
            })
        })
    }

    /// Replaces a stream's metadata.
    pub fn set_metadata(&self, stream: &str, metadata: StreamMetadata) -> Result<u64, AppendError> {
        self.propose_checked(stream, |st, name| {
            check_expected(name, ExpectedVersion::Any, st.streams.get(name))?;
            let mut body = Vec::new();
            format::encode_metadata(&mut body, name, &metadata);
            Ok(Prepared {
                kind: EntryKind::Metadata,
                count: 0,
                body,
            })
        })
    }

    /// Stores a snapshot blob of `stream`'s state at `version` (replacing one at the same key).
    pub fn put_snapshot(
        &self,
        stream: &str,
        version: u64,
        data: &[u8],
    ) -> Result<u64, AppendError> {
        self.propose_checked(stream, |_, name| {
            let mut body = Vec::with_capacity(data.len() + name.len() + 9);
            format::encode_snapshot_put(&mut body, name, version, data);
            Ok(Prepared {
                kind: EntryKind::SnapshotPut,
                count: 0,
                body,
            })
        })
    }

    /// Removes a snapshot blob; removing one that does not exist is not an error.
    pub fn delete_snapshot(&self, stream: &str, version: u64) -> Result<u64, AppendError> {
        self.propose_checked(stream, |_, name| {
            let mut body = Vec::new();
            format::encode_snapshot_delete(&mut body, name, version);
            Ok(Prepared {
                kind: EntryKind::SnapshotDelete,
                count: 0,
                body,
            })
        })
    }

    /// Records a subscription checkpoint (position plus opaque state) in the log.
    pub fn put_checkpoint(
        &self,
        name: &str,
        position: u64,
        state: &[u8],
    ) -> Result<u64, AppendError> {
        validate_stream_name(name).map_err(|source| AppendError::InvalidStreamName {
            name: name.into(),
            source,
        })?;
        let mut body = Vec::new();
        format::encode_checkpoint(&mut body, name, position, state);
        self.propose(Prepared {
            kind: EntryKind::Checkpoint,
            count: 0,
            body,
        })
    }

    /// Appends a membership change (opaque to the engine; Raft reads it back).
    pub fn put_membership(&self, config: &[u8]) -> Result<u64, AppendError> {
        let body = config.to_vec();
        self.propose(Prepared {
            kind: EntryKind::Membership,
            count: 0,
            body,
        })
    }

    /// Appends a no-op entry (a new leader's first entry).
    pub fn put_noop(&self) -> Result<u64, AppendError> {
        self.propose(Prepared {
            kind: EntryKind::NoOp,
            count: 0,
            body: Vec::new(),
        })
    }

    fn propose_checked(
        &self,
        stream: &str,
        build: impl FnOnce(&mut State, &str) -> Result<Prepared, AppendError>,
    ) -> Result<u64, AppendError> {
        validate_stream_name(stream).map_err(|source| AppendError::InvalidStreamName {
            name: stream.into(),
            source,
        })?;
        self.inner.recover_space()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut st = self.inner.state.write();
            let prepared = build(&mut st, stream)?;
            let index = self.inner.frame(&mut st, prepared)?;
            let cb = Callback::new(move |r| {
                let _ = tx.send(r);
            });
            st.waiters.push_back((index, cb));
        }
        Ok(rx.recv().map_err(|_| AppendError::Closed)??)
    }

    fn propose(&self, prepared: Prepared) -> Result<u64, AppendError> {
        self.inner.recover_space()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut st = self.inner.state.write();
            let index = self.inner.frame(&mut st, prepared)?;
            let cb = Callback::new(move |r| {
                let _ = tx.send(r);
            });
            st.waiters.push_back((index, cb));
        }
        Ok(rx.recv().map_err(|_| AppendError::Closed)??)
    }

    /// Blocks until everything queued so far is durable.
    pub fn flush(&self) -> Result<(), Failed> {
        self.inner.wait_idle()
    }
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
                records: Vec::new(),
                end: head.len() as u64,
                summarized: false,
                sealed: false,
            });
        }
        let offset = st.segments.last().expect("a segment exists").end;
        st.apply_tip(header, offset, body, origin)
            .map_err(EnqueueError::Decode)?;
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
        chunk
            .records
            .push((chunk.buf.len(), crc32c::crc32c(body), body.len()));
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
}

/// The writer thread: takes whatever is queued, writes it in one go, syncs once, publishes.
fn writer_loop(inner: &Inner, mut io: SyncIo) {
    loop {
        let (mut chunks, last_index) = {
            let mut q = inner.queue.lock();
            while q.chunks.is_empty() {
                if q.shutdown {
                    return;
                }
                inner.queue_cv.wait(&mut q);
            }
            q.busy = true;
            (std::mem::take(&mut q.chunks), q.last_index)
        };
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
                Err(e) if crate::io::is_no_space_on_write(&e) => {
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
        for (cb, r) in callbacks {
            cb.call(r);
        }
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
/// (`durable`): the watermark recovery trusts (docs/STORAGE.md, "Recovery").
fn stamp_durable(chunks: &mut [Chunk], durable: u64) {
    use zerocopy::FromBytes;
    for c in chunks {
        for &(at, body_crc, body_len) in &c.records {
            let bytes = &mut c.buf[at..at + RECORD_HEADER_BYTES];
            let h = format::RecordHeader::mut_from_bytes(bytes).expect("a header's bytes");
            debug_assert!(
                h.index.get() > durable,
                "queued records are not durable yet"
            );
            h.stamp_durable(durable, body_crc, body_len);
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
fn fail(st: &mut State, e: io::Error) -> Vec<(Callback, Result<u64, Failed>)> {
    tracing::error!(error = %e, "write or fsync failed; the engine refuses writes until reopened");
    let f = Failed(Arc::new(e));
    st.failed = Some(f.clone());
    let waiters = st.waiters.drain(..).chain(st.durable_waiters.drain(..));
    waiters.map(|(_, cb)| (cb, Err(f.clone()))).collect()
}
