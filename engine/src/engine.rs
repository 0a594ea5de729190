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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::append::{prepare_append, prepare_op, AppendPlan, Plan, Prepared, WriteOp};
use crate::config::EngineConfig;
use crate::error::{AppendError, Failed, OpenError};
use crate::format::{self, EntryKind};
use crate::idindex::IdIndexStats;
#[cfg(test)]
use crate::inner::TestFaults;
use crate::inner::{writer_loop, Counters, Inner, Queue};
use crate::io::{IoMode, SyncIo};
use crate::recovery;
use crate::segment;
use crate::state::{Callback, OpenStats};
use crate::types::{AppendResult, DeleteKind, ExpectedVersion, StreamMetadata, StreamWrite};

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
        // For the next open: its id lookups then use this filter at once.
        crate::ids::save(
            &self.inner.state,
            &self.inner.dir,
            &*self.inner.config.storage,
        );
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

/// What the engine has done since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Group commits: one write and one fdatasync each.
    pub syncs: u64,
    /// Bytes written by them.
    pub bytes_written: u64,
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
        let mut state = recovery::load(&dir, &config)?;
        let spare = find_spare(&dir, &config, state.segments.is_empty())?;
        let ids_ready = state.ids_pending.is_empty();
        if !ids_ready {
            // The summarized segments' ids are answered from their id tables at once, if
            // every one has a usable table; the loader checks them meanwhile.
            let summaries = std::mem::take(&mut state.ids_pending);
            state.open_stats.id_tables = state.ids.open_tables(&dir, &summaries);
            state.ids_pending = summaries;
        }
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
            .spawn(move || crate::background::summarizer_loop(&summary_inner))
            .map_err(spawn_err)?;
        let id_loader = match ids_ready {
            true => None,
            false => {
                let ids_inner = inner.clone();
                let t = std::thread::Builder::new()
                    .name("quiver-ids".into())
                    .spawn(move || crate::background::load_ids(&ids_inner))
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

    /// Streams whose index is in memory (being written, with a delete or metadata, or not
    /// yet in a stream table), and stream tables in use: the others are read from disk.
    pub fn streams_in_memory(&self) -> (usize, usize) {
        let st = self.inner.state.read();
        (st.streams.len(), st.tables.len())
    }

    /// Bytes of the log held in segment files (without their unused, pre-zeroed space).
    pub fn data_bytes(&self) -> u64 {
        self.inner.state.read().segments.iter().map(|s| s.end).sum()
    }

    /// Whether appends are served without waiting: the store is open, has not failed, and
    /// its event-id index can answer (it waits only for summaries without an id table).
    pub fn is_writable(&self) -> bool {
        let st = self.inner.state.read();
        st.ids.answers() && st.failed.is_none() && !st.no_space
    }

    /// Whether the event-id index is whole after an open: the background loader has checked
    /// every id table and read the ids of summaries without one.
    pub fn id_index_loaded(&self) -> bool {
        self.inner.state.read().ids.loaded()
    }

    /// What the event-id index holds now (see `ids.rs`).
    pub fn id_index_stats(&self) -> IdIndexStats {
        self.inner.state.read().ids.stats()
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
            // Until the caller runs again: the wake-up of a blocked thread.
            let _ = tx.send((r, tracing::trace_span!("stage.engine.wakeup")));
        });
        rx.recv().map_or(Err(AppendError::Closed), |(r, _woken)| r)
    }

    /// Starts an append and calls `done` with the outcome once it is durable and committed
    /// (or at once, on a validation error). `done` runs on the writer thread or the caller's:
    /// it must be quick, e.g. send on a channel.
    pub fn append_with(
        &self,
        writes: Vec<StreamWrite>,
        done: impl FnOnce(Result<AppendResult, AppendError>) + Send + 'static,
    ) {
        if let Err(f) = self.inner.recover_space() {
            return done(Err(f.into()));
        }
        let waiting = tracing::trace_span!("stage.engine.lock_wait");
        let mut st = self.inner.state.write();
        drop(waiting);
        let planning = tracing::trace_span!("stage.engine.plan");
        let prepared = loop {
            match prepare_append(&st, &writes) {
                Ok(p) => break p,
                // Only right after open, while the id index of old segments is still
                // loading and its id tables cannot answer: wait for it, then plan again.
                Err(AppendError::Loading) => {
                    drop(st);
                    self.inner.wait_ids();
                    st = self.inner.state.write();
                    // A loader that could not build the index failed the store, and one
                    // that stopped for a close never finishes: planning again would only
                    // spin.
                    if let Some(f) = st.failed.clone() {
                        drop(st);
                        return done(Err(f.into()));
                    }
                    if st.closed {
                        drop(st);
                        return done(Err(AppendError::Closed));
                    }
                }
                Err(e) => {
                    drop(st);
                    return done(Err(e));
                }
            }
        };
        drop(planning);
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
            AppendPlan::Write { prepared, result } => {
                match tracing::trace_span!("stage.engine.frame")
                    .in_scope(|| self.inner.frame(&mut st, prepared))
                {
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
                }
            }
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
        self.write_op(&WriteOp::Delete {
            stream,
            expected,
            kind,
        })
    }

    /// Replaces a stream's metadata.
    pub fn set_metadata(&self, stream: &str, metadata: StreamMetadata) -> Result<u64, AppendError> {
        self.write_op(&WriteOp::SetMetadata {
            stream,
            metadata: &metadata,
        })
    }

    /// Stores a snapshot blob of `stream`'s state at `version` (replacing one at the same key).
    pub fn put_snapshot(
        &self,
        stream: &str,
        version: u64,
        data: &[u8],
    ) -> Result<u64, AppendError> {
        self.write_op(&WriteOp::PutSnapshot {
            stream,
            version,
            data,
        })
    }

    /// Removes a snapshot blob; removing one that does not exist is not an error.
    pub fn delete_snapshot(&self, stream: &str, version: u64) -> Result<u64, AppendError> {
        self.write_op(&WriteOp::DeleteSnapshot { stream, version })
    }

    /// Plans a write as a Raft leader does before it proposes it: validated against the
    /// writers' view of this log, which holds every record appended here, committed or not
    /// (the leader's uncommitted tail included), and encoded as the record every node will
    /// store. Nothing is written. The caller must not plan a second write touching the same
    /// streams or event ids until the first is appended here (or dropped): each plan sees
    /// only what the log holds.
    ///
    /// An append whose event ids are all stored already (a retry) plans as
    /// [`Plan::Stored`]: nothing to propose, answer once that record commits.
    pub fn plan(&self, op: &WriteOp<'_>) -> Result<Plan, AppendError> {
        // While the id index loads, an append's ids are checked in the id tables; where
        // they cannot answer, planning says `Loading`.
        let st = self.inner.state.read();
        if let Some(f) = &st.failed {
            return Err(f.clone().into());
        }
        if st.closed {
            return Err(AppendError::Closed);
        }
        match prepare_op(&st, op)? {
            AppendPlan::Write { prepared, result } => {
                if prepared.body.len() > format::RECORD_BODY_BYTES_MAX {
                    return Err(AppendError::TooLarge {
                        bytes: prepared.body.len(),
                        max: format::RECORD_BODY_BYTES_MAX,
                    });
                }
                Ok(Plan::Propose {
                    kind: prepared.kind,
                    count: prepared.count,
                    body: prepared.body,
                    result,
                })
            }
            AppendPlan::Idempotent(mut result) => {
                if result.index == 0 {
                    // Stored, but its record was not located (rewritten by a scavenge): it
                    // is at or below the last index.
                    result.index = st.next_index - 1;
                }
                let term = st.term_at(result.index).unwrap_or(0);
                Ok(Plan::Stored { result, term })
            }
        }
    }

    /// Records a subscription checkpoint (position plus opaque state) in the log.
    pub fn put_checkpoint(
        &self,
        name: &str,
        position: u64,
        state: &[u8],
    ) -> Result<u64, AppendError> {
        self.write_op(&WriteOp::Checkpoint {
            name,
            position,
            state,
        })
    }

    /// Appends a membership change (opaque to the engine; Raft reads it back).
    pub fn put_membership(&self, config: &[u8]) -> Result<u64, AppendError> {
        let body = config.to_vec();
        self.propose(Prepared {
            kind: EntryKind::Membership,
            count: 0,
            body,
            read_back: Vec::new(),
        })
    }

    /// Appends a no-op entry (a new leader's first entry).
    pub fn put_noop(&self) -> Result<u64, AppendError> {
        self.propose(Prepared {
            kind: EntryKind::NoOp,
            count: 0,
            body: Vec::new(),
            read_back: Vec::new(),
        })
    }

    /// A write other than an append, framed here (its names are checked by `prepare_op`).
    fn write_op(&self, op: &WriteOp<'_>) -> Result<u64, AppendError> {
        self.inner.recover_space()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut st = self.inner.state.write();
            let AppendPlan::Write { prepared, .. } = prepare_op(&st, op)? else {
                unreachable!("only appends are idempotent")
            };
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
