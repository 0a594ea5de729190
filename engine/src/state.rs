//! The in-memory state built from the log: where each record lives, the per-stream index,
//! the stream table, event ids, snapshots, checkpoints and membership.
//!
//! Every record goes through [`State::apply_tip`] when it joins the log (written by this
//! node, received from a leader, or replayed on open): that updates what writers validate
//! against. Changes that readers must not see before the commit point (deletes, metadata,
//! snapshots, checkpoints) are queued and applied by [`State::advance_commit`].

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::error::{Corruption, DecodeError, Failed};
use crate::format::{decode_entry_lazy, Entry, EntryKind, RecordHeader};
use crate::idindex::{IdIndex, IdUnknown, PendingIds};
use crate::segment::SegmentFile;
use crate::streamtable::{Run, StreamTable};
use crate::types::{DeleteKind, StreamMetadata};

/// Where one record lives inside its segment. Its Raft index is the segment's first index
/// plus its place in the segment's list. Laid out as a summary stores it (little-endian),
/// so a summary's array can be used where it is mapped ([`Records::Mapped`]).
#[derive(Debug, Clone, Copy, FromBytes, KnownLayout, Immutable)]
#[repr(C)]
pub(crate) struct RecLoc {
    pub(crate) term: u64,
    pub(crate) position: u64,
    pub(crate) offset: u32,
    pub(crate) count: u32,
}

/// A segment's records' locations: in memory, or, for a summarized segment, the summary's
/// location array where the file is mapped (checked when the summary was loaded), which
/// costs no anonymous memory and no copy at open.
#[derive(Debug, Clone)]
pub(crate) enum Records {
    Owned(Vec<RecLoc>),
    /// Bytes that [`Records::in_place`] found to be a whole, aligned array of [`RecLoc`].
    Mapped(Bytes),
}

impl Default for Records {
    fn default() -> Self {
        Records::Owned(Vec::new())
    }
}

impl Records {
    /// The location array `bytes` (a summary's, already checked) used in place, if this
    /// machine's byte order and the bytes' alignment allow it.
    pub(crate) fn in_place(bytes: Bytes) -> Option<Records> {
        let usable =
            cfg!(target_endian = "little") && <[RecLoc]>::ref_from_bytes(&bytes[..]).is_ok();
        usable.then_some(Records::Mapped(bytes))
    }

    /// The locations as a list that records can be added to (copied out of a mapping).
    pub(crate) fn to_mut(&mut self) -> &mut Vec<RecLoc> {
        if let Records::Mapped(_) = self {
            *self = Records::Owned(self.to_vec());
        }
        match self {
            Records::Owned(v) => v,
            Records::Mapped(_) => unreachable!("copied out above"),
        }
    }
}

impl std::ops::Deref for Records {
    type Target = [RecLoc];

    fn deref(&self) -> &[RecLoc] {
        match self {
            Records::Owned(v) => v,
            Records::Mapped(bytes) => {
                <[RecLoc]>::ref_from_bytes(&bytes[..]).expect("checked by Records::in_place")
            }
        }
    }
}

/// A segment and the records in it.
#[derive(Debug)]
pub(crate) struct Seg {
    pub(crate) file: Arc<SegmentFile>,
    pub(crate) records: Records,
    /// Bytes of the file that hold records (written or queued).
    pub(crate) end: u64,
    /// A summary file exists for it (it is sealed and fully committed).
    pub(crate) summarized: bool,
    /// No more records go into it.
    pub(crate) sealed: bool,
}

impl Seg {
    pub(crate) fn first_index(&self) -> u64 {
        self.file.first_index
    }

    /// One past the last index it holds.
    pub(crate) fn next_index(&self) -> u64 {
        self.file.first_index + self.records.len() as u64
    }
}

/// A stream in the index and table.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamState {
    /// Version of `positions[0]`.
    pub(crate) first_version: u64,
    /// Global position of each stored version from `first_version` on (a scavenge may trim
    /// the front; the rest are always contiguous).
    pub(crate) positions: Vec<u64>,
    /// Version the next event gets.
    pub(crate) next_version: u64,
    /// Writers' view: hard-deleted in the log (committed or not).
    pub(crate) tip_hard: bool,
    /// Writers' view: `next_version` when last soft-deleted.
    pub(crate) tip_soft_before: Option<u64>,
    /// Readers' view: committed delete state.
    pub(crate) vis_deleted: Option<DeleteKind>,
    /// Readers' view: versions below this were soft-deleted.
    pub(crate) vis_soft_before: u64,
    /// Readers' view: committed metadata.
    pub(crate) metadata: StreamMetadata,
    /// Versions below `first_version` may be in the stream tables, not read back: the entry
    /// holds only the stream's tail (its events in the newest table that has it, and any
    /// after), which is all a writer needs. Readers join the rest from the tables
    /// ([`State::read_back`]).
    pub(crate) head_tabled: bool,
}

impl StreamState {
    /// Writers' view: the stream has events that are not soft-deleted.
    pub(crate) fn tip_exists(&self) -> bool {
        !self.tip_hard && self.next_version > self.tip_soft_before.unwrap_or(0)
    }

    /// Number of versions whose position is below `commit_position`.
    pub(crate) fn committed_next_version(&self, commit_position: u64) -> u64 {
        // A scavenge that trims a stream's whole index leaves `first_version` at its next
        // version, so an empty index still answers right.
        self.first_version + self.positions.partition_point(|p| *p < commit_position) as u64
    }

    /// Lowest version a reader may see (ignoring max age).
    pub(crate) fn visible_from(&self, commit_position: u64) -> u64 {
        let mut from = self
            .vis_soft_before
            .max(self.metadata.truncate_before.unwrap_or(0));
        if let Some(max) = self.metadata.max_count {
            from = from.max(
                self.committed_next_version(commit_position)
                    .saturating_sub(max),
            );
        }
        from
    }

    /// Whether an event of this stream at `version` created at `created_us` is visible now.
    pub(crate) fn event_visible(&self, version: u64, created_us: u64, from: u64, now: u64) -> bool {
        if self.vis_deleted == Some(DeleteKind::Hard) || version < from {
            return false;
        }
        match self.metadata.max_age_us {
            Some(age) => created_us.saturating_add(age) >= now,
            None => true,
        }
    }

    /// Nothing about it but its events: no delete (in the log or committed) and no metadata.
    /// Such a stream is the same whether kept in memory or read back from stream tables.
    pub(crate) fn plain(&self) -> bool {
        !self.tip_hard
            && self.tip_soft_before.is_none()
            && self.vis_deleted.is_none()
            && self.vis_soft_before == 0
            && self.metadata == StreamMetadata::default()
    }

    /// Adds an event, by the rule every loader follows: a version that does not continue the
    /// stored ones means everything before it was scavenged away.
    pub(crate) fn push_event(&mut self, version: u64, position: u64) {
        if version != self.first_version + self.positions.len() as u64 {
            self.positions.clear();
            self.first_version = version;
        }
        self.positions.push(position);
        self.next_version = version + 1;
    }

    pub(crate) fn position_of(&self, version: u64) -> Option<u64> {
        let i = version.checked_sub(self.first_version)?;
        self.positions.get(usize::try_from(i).ok()?).copied()
    }

    /// Whether `head` (the stream read back from every table) reaches this tail's first
    /// version, so that its versions below it continue into the tail. A head that stops
    /// short was scavenged between them: the tail is then all there is.
    pub(crate) fn reaches(head: &StreamState, tail: &StreamState) -> bool {
        head.first_version <= tail.first_version && head.next_version >= tail.first_version
    }

    /// Marks a stream built from its newest events alone as holding a tail if versions
    /// before them may be in tables: it starts above version 0 and older tables exist.
    fn mark_tail(&mut self, older_tables: bool) {
        self.head_tabled =
            older_tables && self.first_version > 0 && !cfg!(feature = "mutation-stream-tail-whole");
    }
}

/// A change readers see only once its entry is committed.
#[derive(Debug)]
pub(crate) enum CommitAction {
    Delete(Arc<str>, DeleteKind, u64),
    Metadata(Arc<str>, StreamMetadata),
    SnapshotPut(Arc<str>, u64),
    SnapshotDelete(Arc<str>, u64),
    Checkpoint(String, u64, Bytes),
}

/// Called once with the outcome of a write, on the writer thread: keep it short.
pub(crate) struct Callback(Box<dyn FnOnce(Result<u64, Failed>) + Send>);

impl Callback {
    pub(crate) fn new(f: impl FnOnce(Result<u64, Failed>) + Send + 'static) -> Self {
        Callback(Box::new(f))
    }

    pub(crate) fn call(self, r: Result<u64, Failed>) {
        (self.0)(r)
    }
}

// SAFETY: a `Callback` exposes nothing through `&self`; it can only be called by value, so
// sharing references to it across threads cannot race (the same reasoning as `SyncWrapper`).
unsafe impl Sync for Callback {}

/// Where a record comes from, which decides how much it is checked before it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Framed by this engine, or read back from its own checksummed files.
    Own,
    /// Read from a segment summary on open: like `Own`, but event ids are left to the
    /// background id loader (see `ids.rs`), so that opening does not wait for them.
    Summary,
    /// A record that is not an append, read from a segment summary whose stream table is in
    /// [`State::tables`]: like `Summary`, and the streams it names are filled in from the
    /// tables once all are known ([`State::close_tables`]).
    Tabled,
    /// Received from another node: every event is checked before anything changes.
    Foreign,
}

/// Why a record did not apply.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// The record is not a valid continuation of the log (damaged, or foreign and wrong).
    Decode(DecodeError),
    /// A stream it names could not be read back from the stream tables nor from its
    /// segments: stored data is damaged. The record itself may be fine.
    Lookup(Corruption),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Decode(e) => e.fmt(f),
            ApplyError::Lookup(c) => write!(f, "reading a stream back: {c}"),
        }
    }
}

impl From<DecodeError> for ApplyError {
    fn from(e: DecodeError) -> Self {
        ApplyError::Decode(e)
    }
}

/// Counters that tests and benchmarks read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenStats {
    /// Records read from segment files on open (not covered by a summary).
    pub records_replayed: u64,
    /// Records loaded from summaries (no payload bytes read).
    pub records_from_summaries: u64,
    /// Segment summaries loaded.
    pub summaries_loaded: u64,
    /// Bytes cut from a torn tail.
    pub torn_bytes_cut: u64,
    /// Every summarized segment had a usable event-id table: appends were taken at once,
    /// before the id index was loaded (else they waited for it).
    pub id_tables: bool,
    /// Summaries loaded with their stream tables: their streams were not loaded into memory.
    pub stream_tables: u64,
    /// Stream-table entries read back while opening (a stream's events in one table): the
    /// streams that the unsummarized records and the control entries name, each from the
    /// newest table that has it, however many tables hold it.
    pub stream_entries_read: u64,
}

/// Bytes of a batch refused for want of space, to be cut before the log goes on.
#[derive(Debug)]
pub(crate) struct Cut {
    pub(crate) file: Arc<SegmentFile>,
    pub(crate) offset: u64,
    /// The batch created the file: remove it.
    pub(crate) new_file: bool,
}

/// Everything the engine knows, guarded by one lock.
pub(crate) struct State {
    pub(crate) segments: Vec<Seg>,
    pub(crate) next_index: u64,
    pub(crate) next_position: u64,
    pub(crate) last_term: u64,
    /// Term stamped on entries this node writes as leader.
    pub(crate) term: u64,
    /// Highest index on stable storage.
    pub(crate) durable_index: u64,
    /// Highest index readers see.
    pub(crate) commit_index: u64,
    /// Events below this position are committed.
    pub(crate) commit_position: u64,
    /// Highest commit index Raft allowed (`u64::MAX` in single-node mode).
    pub(crate) commit_allowed: u64,
    /// The streams kept in memory: those with events past [`State::tabled_below`], with a
    /// delete or metadata, or looked up for a write. Any other stream is read back from
    /// [`State::tables`] when needed ([`State::stream_tip`], [`State::read_back`]).
    pub(crate) streams: BTreeMap<Arc<str>, StreamState>,
    /// The stream tables of the first `tables.len()` segments, in order.
    pub(crate) tables: Vec<Arc<StreamTable>>,
    /// Events below this position are in `tables`.
    pub(crate) tabled_below: u64,
    /// While opening: tables may still be added (every summarized segment so far had one).
    pub(crate) tables_open: bool,
    /// Streams that summaries loaded with their tables gave an entry (a delete, metadata, a
    /// snapshot) whose events are still to be read from the tables: see
    /// [`State::close_tables`].
    pub(crate) unmaterialized: Vec<Arc<str>>,
    /// Event id → position (`ids.rs`).
    pub(crate) ids: IdIndex,
    /// The summaries loaded on open, whose event ids the id index takes from their id
    /// tables (or, without one, the background loader reads into memory).
    pub(crate) ids_pending: Vec<PendingIds>,
    /// (stream, version) → Raft index of the snapshot's record.
    pub(crate) snapshots: BTreeMap<(Arc<str>, u64), u64>,
    pub(crate) checkpoints: BTreeMap<String, (u64, Bytes)>,
    pub(crate) membership: Option<(u64, Bytes)>,
    /// Callbacks waiting for an index to be durable (Raft followers acknowledge at that point).
    pub(crate) durable_waiters: VecDeque<(u64, Callback)>,
    pub(crate) pending_commit: VecDeque<(u64, CommitAction)>,
    pub(crate) waiters: VecDeque<(u64, Callback)>,
    pub(crate) last_created_us: u64,
    pub(crate) failed: Option<Failed>,
    /// A batch was refused for want of space (and cut from the files): the state still holds
    /// its records until `Inner::recover_space` reloads it. New writes are refused meanwhile.
    pub(crate) no_space: bool,
    pub(crate) closed: bool,
    pub(crate) open_stats: OpenStats,
    /// Stream-table entries read back (each one block of one table), for
    /// [`OpenStats::stream_entries_read`].
    pub(crate) table_runs_read: AtomicU64,
}

impl State {
    pub(crate) fn new(commit_allowed: u64) -> State {
        State {
            segments: Vec::new(),
            next_index: 1,
            next_position: 0,
            last_term: 0,
            term: 1,
            durable_index: 0,
            commit_index: 0,
            commit_position: 0,
            commit_allowed,
            streams: BTreeMap::new(),
            tables: Vec::new(),
            tabled_below: 0,
            tables_open: true,
            unmaterialized: Vec::new(),
            ids: IdIndex::default(),
            ids_pending: Vec::new(),
            snapshots: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            membership: None,
            durable_waiters: VecDeque::new(),
            pending_commit: VecDeque::new(),
            waiters: VecDeque::new(),
            last_created_us: 0,
            failed: None,
            no_space: false,
            closed: false,
            open_stats: OpenStats::default(),
            table_runs_read: AtomicU64::new(0),
        }
    }

    /// The position of the stored event whose id is `id`, if any (`ids.rs`).
    pub(crate) fn id_position(&self, id: u128) -> Result<Option<u64>, IdUnknown> {
        self.ids.position(id)
    }

    /// A stream as writers see it: its versions, deletes and metadata right, its positions
    /// perhaps only a tail ([`StreamState::head_tabled`]): from memory, or read back from the
    /// newest stream table that has it, whatever the number of tables. `None` for a stream
    /// never written.
    pub(crate) fn stream_tip(
        &self,
        name: &str,
    ) -> Result<Option<Cow<'_, StreamState>>, Corruption> {
        if let Some(s) = self.streams.get(name) {
            return Ok(Some(Cow::Borrowed(s)));
        }
        Ok(self.read_back_tail(name)?.map(Cow::Owned))
    }

    /// Table `i`'s events of stream `name` (whose [`crate::bloom::name_key`] is `key`); from
    /// the segment's own checked records when the table's block is damaged.
    fn table_run(&self, i: usize, name: &str, key: u64) -> Result<Run, Corruption> {
        let run = match self.tables[i].lookup(name, key) {
            Ok(run) => run,
            Err(_) if cfg!(feature = "mutation-stream-table-guess") => Vec::new(),
            Err(doubt) => {
                tracing::warn!(doubt = %doubt.0, "a stream table block is damaged; reading its segment");
                self.segment_streams(i, Some(name))?
                    .remove(name)
                    .unwrap_or_default()
            }
        };
        if !run.is_empty() {
            self.table_runs_read.fetch_add(1, Ordering::Relaxed);
        }
        Ok(run)
    }

    /// A stream's events read back from every stream table. `None` if no table has it.
    pub(crate) fn read_back(&self, name: &str) -> Result<Option<StreamState>, Corruption> {
        let mut out = None::<StreamState>;
        let key = crate::bloom::name_key(name);
        for i in 0..self.tables.len() {
            let run = self.table_run(i, name, key)?;
            if run.is_empty() {
                continue;
            }
            let s = out.get_or_insert_with(StreamState::default);
            for (version, position) in run {
                s.push_event(version, position);
            }
        }
        Ok(out)
    }

    /// A stream's tail read back from the newest stream table that has it: one table's
    /// entry, however many hold the stream. `None` if no table has it.
    fn read_back_tail(&self, name: &str) -> Result<Option<StreamState>, Corruption> {
        let key = crate::bloom::name_key(name);
        for i in (0..self.tables.len()).rev() {
            let run = self.table_run(i, name, key)?;
            if run.is_empty() {
                continue;
            }
            let mut s = StreamState::default();
            for (version, position) in run {
                s.push_event(version, position);
            }
            s.mark_tail(i > 0);
            return Ok(Some(s));
        }
        Ok(None)
    }

    /// The streams of segment `s` with their events, read from its records (each checked):
    /// only `only`'s when given. What its stream table says, for when it cannot.
    pub(crate) fn segment_streams(
        &self,
        s: usize,
        only: Option<&str>,
    ) -> Result<BTreeMap<String, Run>, Corruption> {
        let seg = &self.segments[s];
        let mut out: BTreeMap<String, Run> = BTreeMap::new();
        for rec in seg.records.iter() {
            let (h, body) = seg.file.record_at(rec.offset as u64, seg.end)?;
            let bad = |e: DecodeError| seg.file.corruption(rec.offset as u64, e.to_string());
            let kind = EntryKind::from_byte(h.kind).map_err(bad)?;
            let Entry::Append(view) = decode_entry_lazy(kind, &body).map_err(bad)? else {
                continue;
            };
            for e in view.headers() {
                let e = e.map_err(bad)?;
                let Some(name) = view.streams.get(e.stream_slot.get() as usize) else {
                    return Err(bad(DecodeError::new("event", "stream slot out of range")));
                };
                if only.is_some_and(|o| o != *name) {
                    continue;
                }
                let item = (e.version.get(), h.position.get() + e.pos_delta.get() as u64);
                out.entry(name.to_string()).or_default().push(item);
            }
        }
        Ok(out)
    }

    /// The interned name of a stream and its entry in memory, read back from the stream
    /// tables or created if needed.
    pub(crate) fn stream_entry(
        &mut self,
        name: &str,
    ) -> Result<(Arc<str>, &mut StreamState), Corruption> {
        let key = match self.streams.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(name);
                let s = self.read_back_tail(name)?.unwrap_or_default();
                self.streams.insert(k.clone(), s);
                k
            }
        };
        let v = self.streams.get_mut(&key).expect("inserted above");
        Ok((key, v))
    }

    /// Keeps in memory a stream just read back from the tables by a write's validation under
    /// this same lock, so that applying the write does not read it back again. A stream
    /// already in memory stays as it is.
    pub(crate) fn keep(&mut self, name: &str, s: StreamState) {
        if !self.streams.contains_key(name) {
            self.streams.insert(Arc::from(name), s);
        }
    }

    /// Like [`State::stream_entry`] while summaries are loaded with their tables: the entry
    /// is created empty and read back from the tables by [`State::close_tables`], once
    /// every table is known.
    fn stream_entry_deferred(&mut self, name: &str) -> (Arc<str>, &mut StreamState) {
        let key = match self.streams.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(name);
                self.streams.insert(k.clone(), StreamState::default());
                self.unmaterialized.push(k.clone());
                k
            }
        };
        let v = self.streams.get_mut(&key).expect("inserted above");
        (key, v)
    }

    /// Ends the loading of summaries with tables: the streams they gave entries get their
    /// events from the tables, and no more tables are added until the next open.
    pub(crate) fn close_tables(&mut self) -> Result<(), Corruption> {
        self.tables_open = false;
        for name in std::mem::take(&mut self.unmaterialized) {
            let Some(found) = self.read_back_tail(&name)? else {
                continue;
            };
            let s = self.streams.get_mut(&name).expect("entered when deferred");
            // The entries (deletes) may only have raised the next version.
            s.next_version = s.next_version.max(found.next_version);
            s.first_version = found.first_version;
            s.positions = found.positions;
            s.head_tabled = found.head_tabled;
        }
        Ok(())
    }

    /// Adds the stream table of the next segment that has none; false if `table` is not
    /// that segment's (a table is missing before it: no more are added until the next open).
    pub(crate) fn add_table(&mut self, table: Arc<StreamTable>) -> bool {
        let i = self.tables.len();
        let Some(next) = self.segments.get(i + 1) else {
            return false;
        };
        if self.segments[i].first_index() != table.first_index() {
            return false;
        }
        self.tables.push(table);
        self.tabled_below = next.file.first_position;
        true
    }

    /// Lets go of those of `names` in memory that the stream tables make unneeded: plain
    /// streams (no delete, no metadata, no entry waiting for commit) whose events are all in
    /// tables. Returns how many went.
    pub(crate) fn let_go(&mut self, names: &[String]) -> usize {
        let pending: std::collections::HashSet<&str> = self
            .pending_commit
            .iter()
            .map(|(_, a)| match a {
                CommitAction::Delete(n, ..)
                | CommitAction::Metadata(n, _)
                | CommitAction::SnapshotPut(n, _)
                | CommitAction::SnapshotDelete(n, _) => &**n,
                CommitAction::Checkpoint(..) => "",
            })
            .collect();
        let below = self.tabled_below;
        let gone: Vec<&String> = names
            .iter()
            .filter(|n| !pending.contains(n.as_str()))
            .filter(|n| {
                self.streams.get(n.as_str()).is_some_and(|s| {
                    (s.plain() || cfg!(feature = "mutation-stream-let-go-all"))
                        && s.positions.last().is_none_or(|p| *p < below)
                        && s.next_version == s.first_version + s.positions.len() as u64
                })
            })
            .collect();
        for n in &gone {
            self.streams.remove(n.as_str());
        }
        gone.len()
    }

    /// Adds a record to the log's in-memory view: index, stream versions, ids, and the
    /// commit-time actions. `body` may be a summary's stripped body. (A summary with its
    /// stream table adds its records' locations whole, [`State::push_locations`], and
    /// applies only its control records, [`State::apply_entry`].)
    pub(crate) fn apply_tip(
        &mut self,
        header: &RecordHeader,
        offset: u64,
        body: &[u8],
        origin: Origin,
    ) -> Result<(), ApplyError> {
        self.continues(header)?;
        self.apply_entry(header, body, origin)?;
        self.push_record(header, offset);
        Ok(())
    }

    /// What a record's entry changes besides the log's list of records: stream versions,
    /// ids, commit-time actions. The caller has checked that the record continues the log.
    pub(crate) fn apply_entry(
        &mut self,
        header: &RecordHeader,
        body: &[u8],
        origin: Origin,
    ) -> Result<(), ApplyError> {
        let (index, position) = (header.index.get(), header.position.get());
        let kind = EntryKind::from_byte(header.kind)?;
        let entry = decode_entry_lazy(kind, body)?;
        match entry {
            Entry::Append(view) => {
                // Check every event before changing anything, so a bad record (from a faulty
                // leader or a damaged summary) leaves the state as it was.
                if origin == Origin::Foreign {
                    self.check_append(&view, header.count.get())?;
                }
                // A stream not in memory is plain (deletes and metadata keep theirs there),
                // so a checked record's versions say all a writer needs of it: version 0 is a
                // new stream, a higher one continues events in the tables. Only a record
                // from another node, not yet trusted, has its streams looked up.
                let mut fresh = Vec::new();
                let mut names = Vec::with_capacity(view.streams.len());
                for s in &view.streams {
                    match self.streams.get_key_value(*s) {
                        Some((k, _)) => names.push(k.clone()),
                        None if origin == Origin::Foreign => {
                            names.push(self.stream_entry(s).map_err(ApplyError::Lookup)?.0)
                        }
                        None => {
                            let k: Arc<str> = Arc::from(*s);
                            self.streams.insert(k.clone(), StreamState::default());
                            fresh.push(k.clone());
                            names.push(k);
                        }
                    }
                }
                let single = (names.len() == 1).then(|| names[0].clone());
                // The record goes into the last segment (`push_record`).
                let segment = self.segments.last().map_or(0, Seg::first_index);
                for h in view.headers() {
                    let h = h?;
                    if h.stream_slot.get() as usize >= names.len() {
                        return Err(DecodeError::new("event", "stream slot out of range").into());
                    }
                    let name = single
                        .as_ref()
                        .unwrap_or_else(|| &names[h.stream_slot.get() as usize]);
                    let st = self.streams.get_mut(name).expect("interned above");
                    let pos = position + h.pos_delta.get() as u64;
                    st.push_event(h.version.get(), pos);
                    if origin == Origin::Own || origin == Origin::Foreign {
                        self.ids
                            .recent
                            .insert(segment, u128::from_be_bytes(h.id), pos);
                    }
                    self.last_created_us = self.last_created_us.max(h.created_us.get());
                }
                let tabled = !self.tables.is_empty();
                for k in fresh {
                    let s = self.streams.get_mut(&k).expect("inserted above");
                    if s.positions.is_empty() {
                        // Named without events (not what this engine writes): no versions to
                        // go by, so the tables say.
                        let found = self.read_back_tail(&k).map_err(ApplyError::Lookup)?;
                        self.streams.insert(k, found.unwrap_or_default());
                        continue;
                    }
                    s.mark_tail(tabled);
                }
            }
            Entry::Delete {
                stream,
                kind,
                next_version,
            } => {
                let (name, st) = self.control_entry(stream, origin)?;
                // The record carries the stream's next version, so versions continue after
                // a soft delete even once a scavenge has removed every older event.
                st.next_version = st.next_version.max(next_version);
                match kind {
                    DeleteKind::Hard => st.tip_hard = true,
                    DeleteKind::Soft => st.tip_soft_before = Some(next_version),
                }
                let action = CommitAction::Delete(name, kind, next_version);
                self.pending_commit.push_back((index, action));
            }
            Entry::Metadata { stream, metadata } => {
                let (name, _) = self.control_entry(stream, origin)?;
                self.pending_commit
                    .push_back((index, CommitAction::Metadata(name, metadata)));
            }
            Entry::SnapshotPut {
                stream, version, ..
            } => {
                let (name, _) = self.control_entry(stream, origin)?;
                self.pending_commit
                    .push_back((index, CommitAction::SnapshotPut(name, version)));
            }
            Entry::SnapshotDelete { stream, version } => {
                let (name, _) = self.control_entry(stream, origin)?;
                let action = CommitAction::SnapshotDelete(name, version);
                self.pending_commit.push_back((index, action));
            }
            Entry::Checkpoint {
                name,
                position,
                state,
            } => {
                let action = CommitAction::Checkpoint(
                    name.to_string(),
                    position,
                    Bytes::copy_from_slice(state),
                );
                self.pending_commit.push_back((index, action));
            }
            Entry::Membership(config) => {
                // Raft acts on the newest configuration in its log, committed or not.
                self.membership = Some((index, Bytes::copy_from_slice(config)));
            }
            Entry::NoOp => {}
        }
        Ok(())
    }

    /// The record's index and position, if it continues the log. Reachable with damaged or
    /// hostile input (a summary, a shipped segment): an error, never a panic.
    fn continues(&self, header: &RecordHeader) -> Result<(u64, u64), ApplyError> {
        let index = header.index.get();
        let position = header.position.get();
        if index != self.next_index {
            return Err(DecodeError::new(
                "record",
                format!("index {index}, expected {}", self.next_index),
            )
            .into());
        }
        if position != self.next_position {
            return Err(DecodeError::new(
                "record",
                format!("position {position}, expected {}", self.next_position),
            )
            .into());
        }
        Ok((index, position))
    }

    /// Adds a record that continues the log, at `offset` in the last segment.
    fn push_record(&mut self, header: &RecordHeader, offset: u64) {
        let location = RecLoc {
            term: header.term.get(),
            position: header.position.get(),
            offset: u32::try_from(offset).expect("segments are below 4 GiB"),
            count: header.count.get(),
        };
        let seg = self
            .segments
            .last_mut()
            .expect("a record lives in a segment");
        debug_assert_eq!(seg.next_index(), header.index.get());
        seg.records.to_mut().push(location);
        self.advance(1, &location);
    }

    /// Adds the locations of records that continue the log, in the last segment: a summary's
    /// (checked to continue it), taken whole when the segment has none yet.
    pub(crate) fn push_locations(&mut self, locations: Records) {
        let Some(&last) = locations.last() else {
            return;
        };
        let n = locations.len();
        let records = &mut self
            .segments
            .last_mut()
            .expect("a record lives in a segment")
            .records;
        if records.is_empty() {
            *records = locations;
        } else {
            records.to_mut().extend_from_slice(&locations);
        }
        self.advance(n as u64, &last);
    }

    /// Moves the log's end past `n` records, `last` the newest of them.
    fn advance(&mut self, n: u64, last: &RecLoc) {
        self.next_index += n;
        self.next_position = last.position + last.count as u64;
        self.last_term = last.term;
    }

    /// The entry of a stream named by a delete, metadata or snapshot record.
    fn control_entry(
        &mut self,
        name: &str,
        origin: Origin,
    ) -> Result<(Arc<str>, &mut StreamState), ApplyError> {
        if origin == Origin::Tabled {
            return Ok(self.stream_entry_deferred(name));
        }
        self.stream_entry(name).map_err(ApplyError::Lookup)
    }

    /// Checks that an append's events continue their streams and stay inside their record.
    fn check_append(
        &self,
        view: &crate::format::AppendView<'_>,
        count: u32,
    ) -> Result<(), ApplyError> {
        let mut next: Vec<Option<u64>> = view
            .streams
            .iter()
            .map(|s| Ok(self.stream_tip(s)?.map(|st| st.next_version)))
            .collect::<Result<_, Corruption>>()
            .map_err(ApplyError::Lookup)?;
        let mut last_delta = None::<u32>;
        for e in view.events() {
            let h = e?.header;
            let delta = h.pos_delta.get();
            if delta >= count || last_delta.is_some_and(|d| delta <= d) {
                return Err(
                    DecodeError::new("event", "position outside its record or unordered").into(),
                );
            }
            last_delta = Some(delta);
            let slot = h.stream_slot.get() as usize;
            let version = h.version.get();
            // A version may skip ahead only where a scavenge dropped the dead events before it.
            let want = next[slot].unwrap_or(0);
            let stream = view.streams[slot];
            if version < want {
                return Err(DecodeError::new(
                    "event",
                    format!("version {version} of '{stream}' does not continue the stream"),
                )
                .into());
            }
            next[slot] = Some(version + 1);
        }
        Ok(())
    }

    /// Moves the commit point to `min(durable, allowed)` and applies what waited for it.
    /// Returns the callbacks to run (outside the lock).
    pub(crate) fn advance_commit(&mut self) -> Vec<(Callback, u64)> {
        let target = self.durable_index.min(self.commit_allowed);
        if target > self.commit_index {
            self.commit_index = target;
            self.commit_position = self.position_after(target);
            while let Some((i, _)) = self.pending_commit.front() {
                if *i > target {
                    break;
                }
                let (index, action) = self.pending_commit.pop_front().expect("peeked");
                self.apply_commit(index, action);
            }
        }
        let mut done = Vec::new();
        while let Some((i, _)) = self.durable_waiters.front() {
            if *i > self.durable_index {
                break;
            }
            let (i, cb) = self.durable_waiters.pop_front().expect("peeked");
            done.push((cb, i));
        }
        while let Some((i, _)) = self.waiters.front() {
            if *i > self.commit_index {
                break;
            }
            let (i, cb) = self.waiters.pop_front().expect("peeked");
            done.push((cb, i));
        }
        done
    }

    fn apply_commit(&mut self, index: u64, action: CommitAction) {
        match action {
            CommitAction::Delete(name, kind, next_version) => {
                let st = self
                    .streams
                    .get_mut(&name)
                    .expect("delete of an interned stream");
                match kind {
                    DeleteKind::Hard => st.vis_deleted = Some(DeleteKind::Hard),
                    DeleteKind::Soft => {
                        // The versions that existed when the delete entered the log.
                        st.vis_soft_before = next_version;
                        if st.vis_deleted.is_none() {
                            st.vis_deleted = Some(DeleteKind::Soft);
                        }
                    }
                }
            }
            CommitAction::Metadata(name, m) => {
                self.streams.get_mut(&name).expect("interned").metadata = m;
            }
            CommitAction::SnapshotPut(name, version) => {
                self.snapshots.insert((name, version), index);
            }
            CommitAction::SnapshotDelete(name, version) => {
                self.snapshots.remove(&(name, version));
            }
            CommitAction::Checkpoint(name, position, state) => {
                self.checkpoints.insert(name, (position, state));
            }
        }
    }

    /// Position just after the record with Raft index `index` (0: before everything).
    pub(crate) fn position_after(&self, index: u64) -> u64 {
        match self.locate_index(index) {
            Some((s, r)) => {
                let rec = &self.segments[s].records[r];
                rec.position + rec.count as u64
            }
            None => 0,
        }
    }

    /// (segment, record) holding Raft index `index`.
    pub(crate) fn locate_index(&self, index: u64) -> Option<(usize, usize)> {
        let s = self
            .segments
            .partition_point(|s| s.first_index() <= index)
            .checked_sub(1)?;
        let seg = &self.segments[s];
        let r = usize::try_from(index - seg.first_index()).ok()?;
        (r < seg.records.len()).then_some((s, r))
    }

    /// (segment, record) whose event slots hold `position`.
    pub(crate) fn locate_position(&self, position: u64) -> Option<(usize, usize)> {
        // Segments may hold no event slots at all; take the last one starting at or before.
        let s = self
            .segments
            .partition_point(|s| s.file.first_position <= position && !s.records.is_empty())
            .checked_sub(1)?;
        let seg = &self.segments[s];
        let r = seg
            .records
            .partition_point(|r| r.position + r.count as u64 <= position);
        let rec = seg.records.get(r)?;
        (rec.position <= position && position < rec.position + rec.count as u64).then_some((s, r))
    }

    /// Term of the record at `index` (0 for index 0).
    pub(crate) fn term_at(&self, index: u64) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.locate_index(index)
            .map(|(s, r)| self.segments[s].records[r].term)
    }

    /// Reads the record at (segment, record) and checks its checksum.
    pub(crate) fn record(
        &self,
        s: usize,
        r: usize,
    ) -> Result<(Arc<SegmentFile>, RecordHeader, Bytes), Corruption> {
        let seg = &self.segments[s];
        let (h, body) = seg.file.record_at(seg.records[r].offset as u64, seg.end)?;
        Ok((seg.file.clone(), h, body))
    }

    /// Wall-clock time in µs since the Unix epoch.
    pub(crate) fn now_us() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn locations() -> Vec<RecLoc> {
        (0..100u32)
            .map(|i| RecLoc {
                term: 7 + u64::from(i / 10),
                position: 1_000 + u64::from(i) * 3,
                offset: 4_096 + i * 200,
                count: 3,
            })
            .collect()
    }

    /// As a summary stores them: term, position (u64), offset, count (u32), little-endian.
    fn stored(locations: &[RecLoc]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in locations {
            out.extend_from_slice(&l.term.to_le_bytes());
            out.extend_from_slice(&l.position.to_le_bytes());
            out.extend_from_slice(&l.offset.to_le_bytes());
            out.extend_from_slice(&l.count.to_le_bytes());
        }
        out
    }

    fn same(a: &[RecLoc], b: &[RecLoc]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                (x.term, x.position, x.offset, x.count) == (y.term, y.position, y.offset, y.count)
            })
    }

    struct Words(Vec<u64>);

    impl AsRef<[u8]> for Words {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }

    #[test]
    fn a_summarys_location_array_is_used_in_place_and_reads_as_stored() {
        let want = locations();
        // Owned by a buffer of u64s, so that the bytes are aligned as a mapping's are.
        let bytes = stored(&want);
        let mut words = vec![0u64; bytes.len() / 8];
        words.as_mut_bytes().copy_from_slice(&bytes);
        let aligned = Bytes::from_owner(Words(words));
        if cfg!(target_endian = "big") {
            assert!(Records::in_place(aligned).is_none());
            return;
        }
        let mut records = Records::in_place(aligned).expect("aligned, little-endian");
        assert!(matches!(records, Records::Mapped(_)), "copied");
        assert!(same(&records, &want));
        // Not aligned: not used in place.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        let unaligned = Bytes::from(shifted).slice(1..);
        assert!(Records::in_place(unaligned).is_none());
        // Adding a record copies the array out first.
        let more = RecLoc {
            term: 9,
            position: 1_300,
            offset: 30_000,
            count: 1,
        };
        records.to_mut().push(more);
        assert!(matches!(records, Records::Owned(_)));
        let mut all = want;
        all.push(more);
        assert!(same(&records, &all));
    }
}
