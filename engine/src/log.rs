//! What Raft needs from the log: its tip and terms, records to send, a follower's append of
//! a leader's records, truncation of an uncommitted suffix, the commit point, and shipping
//! whole sealed segments to a follower that is far behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::engine::Engine;
use crate::error::{DecodeError, Failed, LogError};
use crate::format::{self, decode_entry, EntryKind};
use crate::inner::EnqueueError;
use crate::recovery;
use crate::segment::{self, scan, segment_name, SegmentFile};
use crate::state::{Callback, Origin, Records, Seg};
use crate::storage::{self, Storage};

/// A record as Raft sends it between nodes: the frame's fields and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Global position of its first event slot.
    pub position: u64,
    /// Event slots it consumes.
    pub count: u32,
    /// [`EntryKind`] byte.
    pub kind: u8,
    /// The entry body.
    pub body: Bytes,
}

/// A sealed, fully committed segment file that can be shipped to a follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    /// The file.
    pub path: PathBuf,
    /// Raft index of its first record.
    pub first_index: u64,
    /// Raft index of its last record.
    pub last_index: u64,
    /// Bytes from the start of the file to the end of its last record (the rest of the
    /// file is zeros): what is shipped.
    pub bytes: u64,
}

/// Most bytes one [`Engine::entries`] call returns (besides its first record).
pub const ENTRIES_BYTES_MAX: usize = 8 << 20;

impl Engine {
    /// Index and term of the last record in the log (0, 0 when empty).
    pub fn last_index_term(&self) -> (u64, u64) {
        let st = self.inner.state.read();
        (st.next_index - 1, st.last_term)
    }

    /// The highest committed index.
    pub fn commit_index(&self) -> u64 {
        self.inner.state.read().commit_index
    }

    /// The highest index on stable storage.
    pub fn durable_index(&self) -> u64 {
        self.inner.state.read().durable_index
    }

    /// Term of the record at `index` (`Some(0)` for index 0; `None` if not in the log).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.inner.state.read().term_at(index)
    }

    /// Raises the term stamped on entries this node writes as leader (a lower one is
    /// ignored: terms never decrease).
    pub fn set_term(&self, term: u64) {
        let mut st = self.inner.state.write();
        st.term = st.term.max(term);
    }

    /// Durable records from `from` on, up to about `max_bytes` (always at least one if any
    /// exist).
    pub fn entries(&self, from: u64, max_bytes: usize) -> Result<Vec<RawRecord>, LogError> {
        let max_bytes = max_bytes.min(ENTRIES_BYTES_MAX);
        let st = self.inner.state.read();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut index = from.max(1);
        // Records queued but not yet written are not in the file yet.
        while index <= st.durable_index && (out.is_empty() || bytes < max_bytes) {
            let (s, r) = st
                .locate_index(index)
                .expect("indexes below the tip are in the log");
            let (_, h, body) = st.record(s, r)?;
            bytes += body.len() + format::RECORD_HEADER_BYTES;
            out.push(RawRecord {
                index,
                term: h.term.get(),
                position: h.position.get(),
                count: h.count.get(),
                kind: h.kind,
                body,
            });
            index += 1;
        }
        Ok(out)
    }

    /// A follower's append of records from its leader. They must continue the log exactly
    /// (truncate a conflicting suffix first). Returns once they are durable (not committed).
    pub fn append_entries(&self, records: &[RawRecord]) -> Result<u64, LogError> {
        for r in records {
            let kind = EntryKind::from_byte(r.kind)?;
            decode_entry(kind, &r.body)?;
            if r.body.len() > format::RECORD_BODY_BYTES_MAX {
                return Err(DecodeError::new("record", "body exceeds the record limit").into());
            }
        }
        self.inner.recover_space()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let last = {
            let mut st = self.inner.state.write();
            if let Some(f) = &st.failed {
                return Err(f.clone().into());
            }
            if st.no_space {
                return Err(LogError::NoSpace);
            }
            for r in records {
                if r.index != st.next_index {
                    return Err(LogError::NotContiguous(format!(
                        "record index {}, the log continues at {}",
                        r.index, st.next_index
                    )));
                }
                let kind = EntryKind::from_byte(r.kind)?;
                let h = format::record_header(kind, r.index, r.term, r.position, r.count, &r.body);
                match self.inner.enqueue(&mut st, &h, &r.body, Origin::Foreign) {
                    Ok(()) => {}
                    Err(EnqueueError::Decode(e)) => {
                        return Err(LogError::NotContiguous(e.to_string()))
                    }
                    Err(EnqueueError::Lookup(c)) => return Err(LogError::Corruption(c)),
                    // Refused before anything of this call joined the log: nothing changed.
                    Err(EnqueueError::Io(e))
                        if e.raw_os_error() == Some(libc::ENOSPC)
                            && r.index == records[0].index =>
                    {
                        return Err(LogError::NoSpace);
                    }
                    Err(EnqueueError::Io(e)) => {
                        let f = Failed(Arc::new(e));
                        st.failed = Some(f.clone());
                        return Err(f.into());
                    }
                }
            }
            let last = st.next_index - 1;
            let cb = Callback::new(move |r| {
                let _ = tx.send(r);
            });
            if st.durable_index >= last {
                drop(st);
                cb.call(Ok(last));
            } else {
                st.durable_waiters.push_back((last, cb));
            }
            last
        };
        rx.recv().map_err(|_| LogError::Closed)??;
        Ok(last)
    }

    /// Moves the commit point (Raft mode). It never moves back, and never past what is durable.
    pub fn set_commit_index(&self, index: u64) {
        let (callbacks, moved) = {
            let mut st = self.inner.state.write();
            let before = st.commit_index;
            st.commit_allowed = st.commit_allowed.max(index);
            let callbacks = st.advance_commit();
            (callbacks, st.commit_index != before)
        };
        for (cb, i) in callbacks {
            cb.call(Ok(i));
        }
        self.inner.notify_commit();
        if moved {
            // Sealed segments may have just become fully committed: summarize them (and so
            // make them shippable) without waiting for the next write to wake the thread.
            self.inner.wake_summarizer();
        }
    }

    /// Removes every record from index `from` on. Only uncommitted records may go.
    pub fn truncate_suffix(&self, from: u64) -> Result<(), LogError> {
        // A batch refused for want of space is cut first: the reload below must not find it.
        self.inner.recover_space()?;
        // The reload below replaces every segment in the state: a scavenge or summary write
        // in flight would write a file the state no longer describes.
        let _files = self.inner.files_lock.lock();
        self.inner.wait_ids();
        loop {
            self.inner.wait_idle()?;
            let mut st = self.inner.state.write();
            // The durable floor (Raft's persisted commit index) is committed too, even before
            // Raft has moved the engine's commit point up to it after a restart.
            let commit = st.commit_index.max(self.inner.config.durable_floor);
            if commit >= from {
                return Err(LogError::Committed {
                    index: from,
                    commit,
                });
            }
            if from >= st.next_index {
                return Ok(());
            }
            {
                let q = self.inner.queue.lock();
                if !q.chunks.is_empty() || q.busy {
                    continue;
                }
            }
            let (s, r) = st.locate_index(from).expect("below the tip");
            let cut = self.cut_suffix(&st, s, r).and_then(|()| {
                recovery::load_with_ids(&self.inner.dir, &self.inner.config)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            });
            let mut gone: Vec<_> = st.waiters.drain(..).collect();
            gone.extend(st.durable_waiters.drain(..));
            let mut fresh = match cut {
                Ok(fresh) => fresh,
                Err(e) => {
                    // Cut in part, or not reloaded: the state may describe records that are
                    // gone. Stop; a reopen rebuilds it from what is on disk.
                    let why = std::io::Error::new(e.kind(), e.to_string());
                    let failed = crate::inner::fail(&mut st, why);
                    drop(st);
                    for (cb, r) in failed {
                        cb.call(r);
                    }
                    let f = Failed(Arc::new(std::io::Error::other(
                        "a log truncation failed part way",
                    )));
                    for (_, cb) in gone {
                        cb.call(Err(f.clone()));
                    }
                    return Err(e.into());
                }
            };
            fresh.commit_allowed = st.commit_allowed.max(fresh.commit_allowed);
            fresh.term = st.term;
            let callbacks = fresh.advance_commit();
            assert!(callbacks.is_empty(), "no waiters after a reload");
            *st = fresh;
            drop(st);
            let lost = Failed(Arc::new(std::io::Error::other(
                "entry removed by a log truncation",
            )));
            for (_, cb) in gone {
                cb.call(Err(lost.clone()));
            }
            return Ok(());
        }
    }

    /// Removes the records from (segment `s`, record `r`) on from the files, durably.
    fn cut_suffix(&self, st: &crate::state::State, s: usize, r: usize) -> std::io::Result<()> {
        let disk = &*self.inner.config.storage;
        // The segment that will be the active one again loses its summary (and tables) first:
        // records appended to it later would otherwise be hidden by it on the next open.
        let active = if r == 0 { s.checked_sub(1) } else { Some(s) };
        if let Some(a) = active {
            segment::remove_derived(disk, &st.segments[a].file.path)?;
        }
        // Whole segments go first, newest first, and the directory is synced before the
        // cut: a crash must never leave a cut segment followed by the old later ones.
        let doomed = if r == 0 { s } else { s + 1 };
        for seg in st.segments[doomed..].iter().rev() {
            segment::remove_derived(disk, &seg.file.path)?;
            disk.remove_file(&seg.file.path)?;
        }
        storage::sync_dir(disk, &self.inner.dir)?;
        if r > 0 {
            let seg = &st.segments[s];
            rewrite_prefix(disk, &seg.file, seg.records[r].offset as u64)?;
            storage::sync_dir(disk, &self.inner.dir)?;
        }
        Ok(())
    }

    /// Sealed, committed segments, oldest first: what a leader can ship whole.
    pub fn sealed_segments(&self) -> Vec<SealedSegment> {
        let st = self.inner.state.read();
        st.segments
            .iter()
            .filter(|s| s.sealed && s.summarized && !s.records.is_empty())
            .map(|s| SealedSegment {
                path: s.file.path.clone(),
                first_index: s.first_index(),
                last_index: s.next_index() - 1,
                bytes: s.end,
            })
            .collect()
    }

    /// Position of the next event slot: where the record after the last one starts.
    pub fn next_position(&self) -> u64 {
        self.inner.state.read().next_position
    }

    /// Installs a segment file shipped by the leader. Every record is verified before it
    /// joins. When it continues this log exactly, the file is copied into the data directory;
    /// when this log already holds its first records (their terms must match), only the rest
    /// is appended, as a follower appends (truncate a conflicting suffix first).
    pub fn install_segment(&self, path: &Path) -> Result<u64, LogError> {
        let incoming = SegmentFile::open(path, false).map_err(|e| match e {
            crate::OpenError::Corruption(c) => LogError::Corruption(c),
            other => LogError::Io(std::io::Error::other(other.to_string())),
        })?;
        let next = self.last_index_term().0 + 1;
        if incoming.first_index < next {
            return self.install_segment_tail(&incoming, next);
        }
        // As in truncate_suffix: an undo reloads the state from disk.
        self.inner.recover_space()?;
        let _files = self.inner.files_lock.lock();
        let mut records = 0u64;
        let checked = scan(
            &incoming,
            format::SEGMENT_HEADER_BYTES as u64,
            u64::MAX,
            |rec, body| {
                let kind = EntryKind::from_byte(rec.header.kind)
                    .map_err(|e| incoming.corruption(rec.offset, e.to_string()))?;
                decode_entry(kind, body)
                    .map_err(|e| incoming.corruption(rec.offset, e.to_string()))?;
                records += 1;
                Ok(())
            },
        )?;
        refuse_bad(&incoming, &checked)?;
        self.inner.wait_ids();
        self.inner.wait_idle()?;
        let mut st = self.inner.state.write();
        if incoming.first_index != st.next_index || incoming.first_position != st.next_position {
            return Err(LogError::NotContiguous(format!(
                "segment starts at index {}, the log continues at {}",
                incoming.first_index, st.next_index
            )));
        }
        let dest = self.inner.dir.join(segment_name(incoming.first_index));
        let tmp = dest.with_extension("qseg.tmp");
        let disk = &*self.inner.config.storage;
        let shipped = fs::read(path)?;
        storage::write_file_atomic(disk, &tmp, &dest, &shipped, 0)?;
        storage::sync_dir(disk, &self.inner.dir)?;
        let file = Arc::new(
            SegmentFile::open(&dest, false).map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        if let Some(prev) = st.segments.last_mut() {
            prev.sealed = true;
        }
        st.segments.push(Seg {
            file: file.clone(),
            records: Records::default(),
            end: format::SEGMENT_HEADER_BYTES as u64,
            summarized: false,
            sealed: true,
        });
        let applied = scan(
            &file,
            format::SEGMENT_HEADER_BYTES as u64,
            u64::MAX,
            |rec, body| {
                st.apply_tip(&rec.header, rec.offset, body, Origin::Foreign)
                    .map_err(|e| file.corruption(rec.offset, e.to_string()))
            },
        );
        let applied = applied.and_then(|o| match o.bad {
            Some((at, why)) => Err(file.corruption(at, why)),
            None => Ok(o),
        });
        let outcome = match applied {
            Ok(o) => o,
            Err(c) => {
                // Undo: drop the file and rebuild the state from what is on disk.
                let undone = disk
                    .remove_file(&dest)
                    .and_then(|()| storage::sync_dir(disk, &self.inner.dir))
                    .and_then(|()| {
                        recovery::load_with_ids(&self.inner.dir, &self.inner.config)
                            .map_err(|e| std::io::Error::other(e.to_string()))
                    });
                match undone {
                    Ok(fresh) => {
                        let term = st.term;
                        *st = fresh;
                        st.term = term;
                    }
                    Err(e) => {
                        // The state holds a segment that may be gone: stop (see truncate).
                        let failed = crate::inner::fail(&mut st, e);
                        drop(st);
                        for (cb, r) in failed {
                            cb.call(r);
                        }
                    }
                }
                return Err(c.into());
            }
        };
        st.segments.last_mut().expect("pushed above").end = outcome.end;
        st.durable_index = st.next_index - 1;
        let callbacks = st.advance_commit();
        drop(st);
        for (cb, i) in callbacks {
            cb.call(Ok(i));
        }
        Ok(records)
    }
}

impl Engine {
    /// Appends the records of `incoming` from index `next` on; those before must match.
    fn install_segment_tail(&self, incoming: &SegmentFile, next: u64) -> Result<u64, LogError> {
        let mut rest = Vec::new();
        let mut mismatch = None;
        let checked = scan(
            incoming,
            format::SEGMENT_HEADER_BYTES as u64,
            u64::MAX,
            |rec, body| {
                let h = &rec.header;
                let (index, term) = (h.index.get(), h.term.get());
                if index < next {
                    if self.term_at(index) != Some(term) && mismatch.is_none() {
                        mismatch = Some(index);
                    }
                } else {
                    rest.push(RawRecord {
                        index,
                        term,
                        position: h.position.get(),
                        count: h.count.get(),
                        kind: h.kind,
                        body: Bytes::copy_from_slice(body),
                    });
                }
                Ok(())
            },
        )?;
        refuse_bad(incoming, &checked)?;
        if let Some(index) = mismatch {
            return Err(LogError::NotContiguous(format!(
                "the segment's record {index} has another term than this log's"
            )));
        }
        if !rest.is_empty() {
            self.append_entries(&rest)?;
        }
        Ok(rest.len() as u64)
    }
}

/// Replaces a segment file with a copy of its first `keep` bytes, of the same length (the
/// rest sparse: zeros), by write, sync, rename. The old file is never shrunk or changed:
/// readers may hold `Bytes` into its memory map (`entries`, reads), and shrinking a mapped
/// file turns their next touch into SIGBUS. The old inode lives on, unlinked, until the last
/// of them is dropped.
fn rewrite_prefix(disk: &dyn Storage, old: &SegmentFile, keep: u64) -> std::io::Result<()> {
    let len = old.file.metadata()?.len();
    let keep_bytes = old
        .written()
        .map_err(|c| std::io::Error::other(c.to_string()))?;
    let keep_bytes = &keep_bytes[..(keep as usize).min(keep_bytes.len())];
    let tmp = old.path.with_extension("qseg.tmp");
    storage::write_file_atomic(disk, &tmp, &old.path, keep_bytes, len)
}

/// A shipped segment is whole and verified, or refused: bad bytes in it are corruption.
fn refuse_bad(file: &SegmentFile, outcome: &segment::ScanOutcome) -> Result<(), LogError> {
    match &outcome.bad {
        Some((at, why)) => Err(file.corruption(*at, why.clone()).into()),
        None => Ok(()),
    }
}
