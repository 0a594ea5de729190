//! The engine as Raft's log: [`quiver_raft::Storage`] over [`quiver_engine::Engine`], and the
//! writes a Raft `Ready` asks of a node. There is one log: a Raft entry is an engine record,
//! a sealed segment file is what a far-behind follower is sent, and the Raft hard state (term,
//! vote) is the only other file (`raft-state` in the data directory).
//!
//! An entry's data maps to a record as follows: a membership entry is a record of kind
//! `Membership` whose body is the encoded membership; an empty normal entry (a new leader's
//! no-op) is a `NoOp` record; any other normal entry is a command, `[kind u8][slots u32 LE]
//! [body]` (see [`command`]), whose record takes the next free positions. Positions follow
//! from the log itself, so every node derives the same ones.
//!
//! Reading the log is infallible in the `Storage` trait: a read the engine cannot do (an I/O
//! error or a checksum failure) returns what it could read and keeps the error, which the
//! node's driver takes ([`EngineLog::take_failure`]) right after each `ready()`, before
//! anything built on that read leaves the node, and stops on it (fail-stop, one clear log
//! line): Raft never acts on a log it cannot see.
//!
//! Proposals are checked before they enter Raft ([`propose`]): a leader's appends may leave
//! before its own write, so a command the engine would refuse must never be proposed, or
//! every node would fail-stop on it. The commit index is kept in `raft-commit` as well (see
//! [`EngineLog::apply`]) so that what was readable before a restart is readable after it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use quiver_engine::format::{self, EntryKind as RecordKind};
use quiver_engine::{DecodeError, Engine, EngineConfig, LogError, OpenError, RawRecord};
use quiver_raft::{
    Entry, EntryKind, HardState, Membership, RawNode, Ready, Refused, SegmentChunk, SegmentMeta,
};

/// The file holding the Raft hard state, in the engine's data directory.
pub const HARD_STATE_FILE: &str = "raft-state";
const HARD_STATE_MAGIC: &[u8; 4] = b"QRHS";
const HARD_STATE_BYTES: usize = 4 + 8 + 8 + 8 + 4;
/// Where shipped segments are received before they join the log.
const INCOMING_DIR: &str = "incoming";
/// The commit index as last applied: two slots of (sequence u64, commit u64, CRC32C u32),
/// written in place in turn; the valid slot with the higher sequence is the mark.
pub const COMMIT_FILE: &str = "raft-commit";
const COMMIT_SLOT_BYTES: usize = 8 + 8 + 4;

/// A command entry's data: a record of `kind` consuming `slots` positions, with `body`.
/// `kind` must be an engine record kind other than `Membership` and `NoOp`.
pub fn command(kind: RecordKind, slots: u32, body: &[u8]) -> Vec<u8> {
    debug_assert!(!matches!(kind, RecordKind::Membership | RecordKind::NoOp));
    let mut data = Vec::with_capacity(5 + body.len());
    data.push(kind as u8);
    data.extend_from_slice(&slots.to_le_bytes());
    data.extend_from_slice(body);
    data
}

fn bad(detail: impl Into<String>) -> LogError {
    LogError::Decode(DecodeError {
        what: "raft entry",
        detail: detail.into(),
    })
}

/// (kind, slots, body) of the record that stores `e`; the body shares the entry's bytes.
fn to_record(e: &Entry) -> Result<(u8, u32, Bytes), LogError> {
    match e.kind {
        EntryKind::Membership => {
            Membership::decode(&e.data).map_err(|err| bad(err.to_string()))?;
            Ok((RecordKind::Membership as u8, 0, e.data.clone()))
        }
        EntryKind::Normal if e.data.is_empty() => Ok((RecordKind::NoOp as u8, 0, Bytes::new())),
        EntryKind::Normal => {
            let (kind, slots, body) = check_command(&e.data)?;
            let at = e.data.len() - body.len();
            Ok((kind, slots, e.data.slice(at..)))
        }
    }
}

/// A command's (kind, slots, body), checked as the engine will check its record.
fn check_command(data: &[u8]) -> Result<(u8, u32, &[u8]), LogError> {
    let Some((&kind, rest)) = data.split_first() else {
        return Err(bad("empty command"));
    };
    let Some((slots, body)) = rest.split_first_chunk::<4>() else {
        return Err(bad("command shorter than its header"));
    };
    let k = RecordKind::from_byte(kind)?;
    if matches!(k, RecordKind::Membership | RecordKind::NoOp) {
        return Err(bad("a command may not be a membership or a no-op"));
    }
    if body.len() > format::RECORD_BODY_BYTES_MAX {
        return Err(bad("command body exceeds the record limit"));
    }
    format::decode_entry(k, body)?;
    Ok((kind, u32::from_le_bytes(*slots), body))
}

/// Why the Raft log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenLogError {
    /// The engine refused to open (a damaged or short log is `Corruption`, naming the file
    /// and offset).
    #[error(transparent)]
    Engine(#[from] OpenError),
    /// The Raft files (`raft-state`, `raft-commit`) could not be read, or do not fit the log.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why a proposal was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The command is not one the engine would store; nothing was proposed.
    #[error("invalid command: {0}")]
    Invalid(LogError),
    /// Raft refused it (not the leader, back-pressure, …); nothing was proposed.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// Proposes a command (see [`command`]) to `node`, after checking that the engine would store
/// it: every node writes what a leader proposes, so a command the engine refuses is refused
/// here, before any node has seen it.
pub fn propose(node: &mut RawNode<EngineLog>, data: Vec<u8>) -> Result<u64, ProposeError> {
    check_command(&data).map_err(ProposeError::Invalid)?;
    Ok(node.propose(data)?)
}

/// The entry a record stores. A command's data is its 5-byte header and the record's body,
/// copied once into one buffer (the core and every follower's message share it from here);
/// a membership shares the record's body.
fn from_record(r: &RawRecord) -> Entry {
    let (kind, data) = match RecordKind::from_byte(r.kind) {
        Ok(RecordKind::Membership) => (EntryKind::Membership, r.body.clone()),
        Ok(RecordKind::NoOp) => (EntryKind::Normal, Bytes::new()),
        _ => {
            let mut data = Vec::with_capacity(5 + r.body.len());
            data.push(r.kind);
            data.extend_from_slice(&r.count.to_le_bytes());
            data.extend_from_slice(&r.body);
            (EntryKind::Normal, Bytes::from(data))
        }
    };
    Entry {
        index: r.index,
        term: r.term,
        kind,
        data,
    }
}

/// Raft's view of an engine opened with `commit_on_durable(false)`.
pub struct EngineLog {
    engine: Engine,
    hard: HardState,
    /// `raft-commit`, and the sequence and commit of its newest slot.
    commit_file: File,
    commit_mark: (u64, u64),
    /// Membership entries in the log, oldest first.
    memberships: Vec<(u64, Membership)>,
    /// A segment being received: (first index, file).
    staging: Option<(u64, PathBuf, File)>,
    /// The first read that failed, kept for the driver (reads take `&self`).
    failure: std::sync::Mutex<Option<LogError>>,
}

impl EngineLog {
    /// Opens the engine in `dir` as Raft's log (`config` with `commit_on_durable(false)`),
    /// reads the hard state and finds the membership entries (a scan of the log at start-up;
    /// few logs hold many records of that kind, but all are read).
    ///
    /// The commit index known before the engine opens (the hard state's, and the
    /// `raft-commit` mark's) is the engine's durable floor: every entry up to it was synced
    /// before it was committed here, so a record at or below it that is damaged or missing
    /// is corruption, never a torn tail to cut (`OpenError::Corruption` with file and
    /// offset), and the engine refuses to truncate below it.
    pub fn open(dir: &Path, config: EngineConfig) -> Result<EngineLog, OpenLogError> {
        let hard = read_hard_state(&dir.join(HARD_STATE_FILE))?;
        let mark = read_commit_mark(dir)?;
        let floor = hard.commit.max(mark.1);
        let config = config.commit_on_durable(false).durable_floor(floor);
        let engine = Engine::open(dir, config)?;
        Ok(EngineLog::over(engine, hard, mark)?)
    }

    fn over(
        engine: Engine,
        mut hard: HardState,
        commit_mark: (u64, u64),
    ) -> Result<EngineLog, LogError> {
        engine.set_term(hard.term.max(engine.last_index_term().1));
        let commit_file = open_commit_file(engine.dir())?;
        // The engine's commit point only ever moved on Raft's word, and sealed, summarized
        // segments are committed: take whichever knows more.
        let last = engine.last_index_term().0;
        let commit = hard.commit.max(commit_mark.1).max(engine.commit_index());
        if commit > last {
            // Every commit mark is written after the entries it covers were durable: a log
            // that ends before it lost entries that were acknowledged. Refuse, loudly.
            return Err(bad(format!(
                "the commit index is {commit} but the log ends at {last}: committed entries \
                 were lost"
            )));
        }
        hard.commit = commit;
        engine.set_commit_index(hard.commit);
        let mut log = EngineLog {
            engine,
            hard,
            commit_file,
            commit_mark,
            memberships: Vec::new(),
            staging: None,
            failure: std::sync::Mutex::new(None),
        };
        log.scan_memberships(1)?;
        Ok(log)
    }

    /// The first read of the log that failed since the last call, if any: the node must stop
    /// (whatever was built on that read is incomplete).
    pub fn take_failure(&mut self) -> Option<LogError> {
        self.failure
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The last index the engine has applied (made visible to reads): give it to Raft as
    /// `Config::applied`, so a restart does not hand the whole log out again.
    pub fn applied(&self) -> u64 {
        self.engine.commit_index()
    }

    fn scan_memberships(&mut self, from: u64) -> Result<(), LogError> {
        let last = self.engine.last_index_term().0;
        let mut next = from.max(1);
        while next <= last {
            let records = self
                .engine
                .entries(next, quiver_engine::ENTRIES_BYTES_MAX)?;
            let Some(r) = records.last() else { break };
            next = r.index + 1;
            for r in records
                .iter()
                .filter(|r| r.kind == RecordKind::Membership as u8)
            {
                let m = Membership::decode(&r.body).map_err(|e| bad(e.to_string()))?;
                self.memberships.push((r.index, m));
            }
        }
        Ok(())
    }

    /// Persists what `ready` asks, in the order Raft requires: entries (replacing a
    /// conflicting suffix), segment chunks (a last chunk installs its segment), then the hard
    /// state. Returns once all is durable. Entries are all checked before anything is
    /// written or truncated: a bad one is an error that changes nothing.
    pub fn persist(&mut self, ready: &Ready) -> Result<(), LogError> {
        self.append(&ready.entries)?;
        for c in &ready.chunks {
            self.write_chunk(c)?;
        }
        if let Some(hs) = ready.hard_state {
            self.set_hard_state(hs)?;
        }
        Ok(())
    }

    /// Moves the engine's commit point past `committed` (what Raft says is committed): the
    /// events become visible to reads and subscriptions. The commit index is first written
    /// to `raft-commit` (in place, without a sync: a process that restarts finds it in the
    /// page cache, so what was readable stays readable; after a power cut an older mark may
    /// be found and the leader's next append brings the rest, and never a mark beyond the
    /// durable log, since the entries were synced before they were applied).
    pub fn apply(&mut self, committed: &[Entry]) -> Result<(), LogError> {
        let Some(last) = committed.last() else {
            return Ok(());
        };
        if last.index > self.commit_mark.1 {
            let seq = self.commit_mark.0 + 1;
            let mut slot = [0u8; COMMIT_SLOT_BYTES];
            slot[..8].copy_from_slice(&seq.to_le_bytes());
            slot[8..16].copy_from_slice(&last.index.to_le_bytes());
            let crc = crc32c::crc32c(&slot[..16]);
            slot[16..].copy_from_slice(&crc.to_le_bytes());
            let at = (seq % 2) * COMMIT_SLOT_BYTES as u64;
            self.commit_file.write_all_at(&slot, at)?;
            self.commit_mark = (seq, last.index);
        }
        self.engine.set_commit_index(last.index);
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let checked = entries
            .iter()
            .map(to_record)
            .collect::<Result<Vec<_>, _>>()?;
        if first.index <= self.engine.last_index_term().0 {
            self.engine.truncate_suffix(first.index)?;
            self.memberships.retain(|(i, _)| *i < first.index);
        }
        let mut position = self.engine.next_position();
        let mut records = Vec::with_capacity(entries.len());
        for (e, (kind, count, body)) in entries.iter().zip(checked) {
            records.push(RawRecord {
                index: e.index,
                term: e.term,
                position,
                count,
                kind,
                body,
            });
            position += u64::from(count);
        }
        self.engine.append_entries(&records)?;
        for e in entries.iter().filter(|e| e.kind == EntryKind::Membership) {
            let m = Membership::decode(&e.data).map_err(|err| bad(err.to_string()))?;
            self.memberships.push((e.index, m));
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hs: HardState) -> Result<(), LogError> {
        // The commit index can always be learned again from the leader: it is written only
        // along with a new term or vote, which must be durable before anyone hears of them.
        if (hs.term, hs.vote) != (self.hard.term, self.hard.vote) {
            if hs.term > self.hard.term {
                self.engine.set_term(hs.term);
            }
            write_hard_state(self.engine.dir(), &hs)?;
        }
        self.hard = hs;
        Ok(())
    }

    fn write_chunk(&mut self, c: &SegmentChunk) -> Result<(), LogError> {
        if c.offset == 0 {
            let dir = self.engine.dir().join(INCOMING_DIR);
            fs::create_dir_all(&dir)?;
            let path = dir.join(quiver_engine::segment::segment_name(c.first));
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)?;
            self.staging = Some((c.first, path, file));
        }
        let Some((first, path, file)) = &self.staging else {
            return Err(LogError::NotContiguous("a chunk of no segment".into()));
        };
        if *first != c.first || file.metadata()?.len() != c.offset {
            return Err(LogError::NotContiguous(format!(
                "chunk of segment {} at {} does not continue what was received",
                c.first, c.offset
            )));
        }
        file.write_all_at(&c.data, c.offset)?;
        // Answered as persisted: make it so (a restart discards a half-received segment all
        // the same, since the core starts a segment over after one).
        file.sync_data()?;
        if c.offset == 0 {
            File::open(path.parent().expect("in incoming/"))?.sync_all()?;
        }
        if !c.done {
            return Ok(());
        }
        let path = path.clone();
        self.staging = None;
        // The segment replaces the log from its first index, except committed entries,
        // which it holds too: the engine appends only what follows them.
        let from = c.first.max(self.engine.commit_index() + 1);
        if from <= self.engine.last_index_term().0 {
            self.engine.truncate_suffix(from)?;
        }
        let last = self.engine.install_segment(&path)?;
        tracing::info!(
            first = c.first,
            last,
            bytes = c.offset + c.data.len() as u64,
            "installed a segment shipped by the leader"
        );
        fs::remove_file(&path)?;
        self.memberships.retain(|(i, _)| *i < c.first);
        self.scan_memberships(c.first)
    }
}

fn read_hard_state(path: &Path) -> Result<HardState, LogError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HardState::default()),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |detail: &str| {
        LogError::Decode(DecodeError {
            what: "raft hard state",
            detail: format!("{}: {detail}", path.display()),
        })
    };
    if bytes.len() != HARD_STATE_BYTES || &bytes[..4] != HARD_STATE_MAGIC {
        return Err(corrupt("wrong length or magic"));
    }
    let (body, crc) = bytes.split_at(HARD_STATE_BYTES - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let u = |k: usize| u64::from_le_bytes(body[k..k + 8].try_into().expect("8 bytes"));
    Ok(HardState {
        term: u(4),
        vote: Some(u(12)).filter(|v| *v != 0),
        commit: u(20),
    })
}

/// Opens (creating) `raft-commit` for writing marks.
fn open_commit_file(dir: &Path) -> Result<File, LogError> {
    Ok(OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(COMMIT_FILE))?)
}

/// The mark in `raft-commit`, without creating it: (0, 0) if there is none.
fn read_commit_mark(dir: &Path) -> Result<(u64, u64), LogError> {
    match File::open(dir.join(COMMIT_FILE)) {
        Ok(f) => commit_mark_of(&f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(e.into()),
    }
}

/// The valid slot with the higher sequence: (sequence, commit).
fn commit_mark_of(file: &File) -> Result<(u64, u64), LogError> {
    let mut bytes = [0; 2 * COMMIT_SLOT_BYTES];
    let len = (file.metadata()?.len() as usize).min(bytes.len());
    file.read_exact_at(&mut bytes[..len], 0)?;
    let mark = bytes
        .chunks_exact(COMMIT_SLOT_BYTES)
        .filter_map(|slot| {
            let (body, crc) = slot.split_at(16);
            (crc32c::crc32c(body).to_le_bytes() == crc).then(|| {
                let u = |k: usize| u64::from_le_bytes(body[k..k + 8].try_into().expect("8"));
                (u(0), u(8))
            })
        })
        .max()
        .unwrap_or((0, 0));
    Ok(mark)
}

/// Writes the hard state to a new file, syncs it, and renames it over the old one.
fn write_hard_state(dir: &Path, hs: &HardState) -> Result<(), LogError> {
    if hs.vote == Some(0) {
        return Err(bad("node id 0 is reserved (a vote of 0 is stored as none)"));
    }
    let mut body = Vec::with_capacity(HARD_STATE_BYTES);
    body.extend_from_slice(HARD_STATE_MAGIC);
    body.extend_from_slice(&hs.term.to_le_bytes());
    body.extend_from_slice(&hs.vote.unwrap_or(0).to_le_bytes());
    body.extend_from_slice(&hs.commit.to_le_bytes());
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{HARD_STATE_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(HARD_STATE_FILE))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl EngineLog {
    /// The first sealed, committed segment starting at or after `index`.
    fn sealed_from(&self, index: u64) -> Option<quiver_engine::SealedSegment> {
        self.engine
            .sealed_segments()
            .into_iter()
            .find(|s| s.first_index >= index)
    }
}

impl quiver_raft::Storage for EngineLog {
    fn hard_state(&self) -> HardState {
        self.hard
    }

    fn last_index(&self) -> u64 {
        self.engine.last_index_term().0
    }

    fn term(&self, index: u64) -> Option<u64> {
        self.engine.term_at(index)
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: usize) -> Vec<Entry> {
        let records = match self.engine.entries(lo, max_bytes) {
            Ok(r) => r,
            Err(e) => {
                let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
                failure.get_or_insert(e);
                return Vec::new();
            }
        };
        records
            .iter()
            .take_while(|r| r.index < hi)
            .map(from_record)
            .collect()
    }

    fn memberships(&self) -> Vec<(u64, Membership)> {
        self.memberships.clone()
    }

    fn segment_from(&self, index: u64) -> Option<SegmentMeta> {
        let s = self.sealed_from(index)?;
        Some(SegmentMeta {
            first: s.first_index,
            last: s.last_index,
            last_term: self.engine.term_at(s.last_index)?,
            size: s.bytes,
        })
    }

    fn segment_bytes(&self, first: u64, offset: u64, max: usize) -> Vec<u8> {
        let Some(s) = self.sealed_from(first).filter(|s| s.first_index == first) else {
            return Vec::new();
        };
        let len = s.bytes.saturating_sub(offset).min(max as u64) as usize;
        let mut buf = vec![0; len];
        match File::open(&s.path).and_then(|f| f.read_exact_at(&mut buf, offset)) {
            Ok(()) => buf,
            // Gone (a scavenge replaced it): the leader falls back to sending entries.
            Err(_) => Vec::new(),
        }
    }
}
