//! Scavenging: rewriting sealed, committed segments without the events that no reader can
//! see any more (hard-deleted streams, soft-deleted or truncated versions, events past a
//! stream's max count or max age) and without removed snapshot blobs.
//!
//! Nothing moves: every record keeps its Raft index, term and first position, and every
//! surviving event keeps its position and version (each event carries its own position
//! delta). The new file replaces the old one by rename, so a crash leaves one or the other.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use zerocopy::IntoBytes;

use crate::engine::Engine;
use crate::error::{DecodeError, ScavengeError};
use crate::format::{self, decode_entry_lazy, Entry, EntryKind, SEGMENT_HEADER_BYTES};
use crate::idindex::PendingIds;
use crate::segment::{summary_name, SegmentFile};
use crate::state::{RecLoc, Records, State};
use crate::storage;
use crate::{ids, summary};

/// What a scavenge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScavengeStats {
    /// Segments examined.
    pub segments_scanned: u64,
    /// Segments rewritten.
    pub segments_rewritten: u64,
    /// Events dropped.
    pub events_removed: u64,
    /// Bytes no longer on disk.
    pub bytes_reclaimed: u64,
}

/// Whether a stream's events are still visible, captured at the start of a scavenge.
#[derive(Debug, Clone, Copy)]
struct Live {
    hard: bool,
    from: u64,
    /// The stream's newest committed version. Its event stays on disk even when hidden: on
    /// open a stream's next version is rebuilt from its events, so the last one must remain,
    /// and only committed versions are safe from a `truncate_suffix`.
    newest: Option<u64>,
    max_age_us: Option<u64>,
}

impl Live {
    fn keeps(&self, version: u64, created_us: u64, now: u64) -> bool {
        let live = version >= self.from
            && self
                .max_age_us
                .is_none_or(|age| created_us.saturating_add(age) >= now);
        !self.hard && (live || Some(version) == self.newest)
    }
}

/// A rewritten segment, ready to swap in.
struct Rewritten {
    bytes: Vec<u8>,
    records: Vec<RecLoc>,
    removed_ids: Vec<u128>,
    events_removed: u64,
}

impl Engine {
    /// Reclaims the space of events no reader can see. Runs beside reads and appends; only
    /// sealed, committed segments are rewritten.
    pub fn scavenge(&self) -> Result<ScavengeStats, ScavengeError> {
        let _one_at_a_time = self.inner.files_lock.lock();
        // Removing ids must not race the loader that adds them.
        self.inner.wait_ids();
        let (live, snapshots, targets, kept_from) = {
            let st = self.inner.state.read();
            let live: HashMap<Arc<str>, Live> = st
                .streams
                .iter()
                .map(|(k, s)| {
                    let live = Live {
                        hard: s.vis_deleted == Some(crate::DeleteKind::Hard),
                        from: s.visible_from(st.commit_position),
                        // Committed, not the writers' tip: under Raft the tip's newest
                        // version may be truncated away later, and the stream's versions
                        // must still continue from what stays.
                        newest: s.committed_next_version(st.commit_position).checked_sub(1),
                        max_age_us: s.metadata.max_age_us,
                    };
                    (k.clone(), live)
                })
                .collect();
            let targets: Vec<_> = st
                .segments
                .iter()
                .filter(|s| s.sealed && s.summarized)
                .map(|s| (s.file.clone(), s.records.clone(), s.end))
                .collect();
            // Events at or past this position are in segments no scavenge rewrites now, so
            // they stay on disk and in the index even when hidden.
            let kept_from = st
                .segments
                .iter()
                .filter(|s| !(s.sealed && s.summarized))
                .map(|s| s.file.first_position)
                .min()
                .unwrap_or(u64::MAX);
            (live, st.snapshots.clone(), targets, kept_from)
        };
        let now = State::now_us();
        let mut stats = ScavengeStats::default();
        for (file, records, end) in targets {
            stats.segments_scanned += 1;
            let Some(new) = rewrite(&file, &records, end, &live, &snapshots, now)? else {
                continue;
            };
            stats.segments_rewritten += 1;
            stats.events_removed += new.events_removed;
            stats.bytes_reclaimed += end - new.bytes.len() as u64;
            self.swap_in(&file, new)?;
        }
        let mut st = self.inner.state.write();
        for (name, l) in &live {
            if let Some(s) = st.streams.get_mut(name) {
                // Drop from the index exactly what the rewrite dropped from disk: hidden
                // versions below the newest, in rewritten segments.
                let cut = if l.hard {
                    s.next_version
                } else {
                    l.from.min(l.newest.unwrap_or(0))
                };
                if cut > s.first_version {
                    let removed = s.positions.partition_point(|p| *p < kept_from);
                    let n = ((cut - s.first_version) as usize).min(removed);
                    s.positions.drain(..n);
                    s.first_version += n as u64;
                }
            }
        }
        Ok(stats)
    }

    /// Replaces a segment file with its rewritten form, durably, then in memory.
    fn swap_in(&self, old: &Arc<SegmentFile>, new: Rewritten) -> Result<(), ScavengeError> {
        let dir = &self.inner.dir;
        let s = &*self.inner.config.storage;
        let tmp = old.path.with_extension("qseg.tmp");
        let f = s.create(&tmp)?;
        storage::write_all_at(s, &f, &new.bytes, 0)?;
        storage::sync_data(s, &f)?;
        drop(f);
        // The old summary describes old offsets: remove it first, so a crash before the new
        // one is written leaves a segment that is scanned, never a wrong summary.
        let summary_path = dir.join(summary_name(old.first_index));
        storage::remove_if_exists(s, &summary_path)?;
        storage::sync_dir(s, dir)?;
        s.rename(&tmp, &old.path)?;
        storage::sync_dir(s, dir)?;
        let file = Arc::new(SegmentFile::open(&old.path, false).map_err(|e| match e {
            crate::OpenError::Corruption(c) => ScavengeError::Corruption(c),
            other => ScavengeError::Io(std::io::Error::other(other.to_string())),
        })?);
        let end = new.bytes.len() as u64;
        let bytes = summary::build(&file, &new.records, end)?;
        summary::write(s, dir, file.first_index, &bytes)?;
        if let Some(summary_crc) = summary::body_crc(&bytes) {
            let rewritten = PendingIds {
                path: summary_path.clone(),
                first_index: file.first_index,
                summary_crc,
            };
            ids::replace(&self.inner.state, dir, &rewritten)
                .map_err(|e| ScavengeError::Io(std::io::Error::other(e.to_string())))?;
        }
        let mut st = self.inner.state.write();
        if let Some(seg) = st.segments.iter_mut().find(|s| Arc::ptr_eq(&s.file, old)) {
            seg.file = file;
            seg.records = Records::Owned(new.records);
            seg.end = end;
        }
        for id in new.removed_ids {
            st.ids.recent.remove(id);
        }
        Ok(())
    }
}

/// The segment without its dead events, or `None` if nothing in it is dead.
fn rewrite(
    file: &SegmentFile,
    records: &[RecLoc],
    end: u64,
    live: &HashMap<Arc<str>, Live>,
    snapshots: &BTreeMap<(Arc<str>, u64), u64>,
    now: u64,
) -> Result<Option<Rewritten>, ScavengeError> {
    let header = format::segment_header(file.first_index, file.first_position, file.capacity);
    let mut out = header.as_bytes().to_vec();
    let mut new_records = Vec::with_capacity(records.len());
    let mut removed_ids = Vec::new();
    let mut events_removed = 0u64;
    let mut body_out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let index = file.first_index + i as u64;
        let (h, body) = file.record_at(r.offset as u64, end)?;
        let bad = |e: DecodeError| file.corruption(r.offset as u64, e.to_string());
        let kind = EntryKind::from_byte(h.kind).map_err(bad)?;
        let (kind, new_body): (EntryKind, &[u8]) =
            match decode_entry_lazy(kind, &body).map_err(bad)? {
                Entry::Append(view) => {
                    let mut dropped = 0u64;
                    format::filter_append(&mut body_out, &body, &view, false, |e| {
                        let name = view.streams[e.header.stream_slot.get() as usize];
                        let keep = live.get(name).is_none_or(|l| {
                            l.keeps(e.header.version.get(), e.header.created_us.get(), now)
                        });
                        if !keep {
                            dropped += 1;
                            removed_ids.push(u128::from_be_bytes(e.header.id));
                        }
                        keep
                    })
                    .map_err(bad)?;
                    events_removed += dropped;
                    if dropped == 0 {
                        (kind, &body[..])
                    } else {
                        (kind, &body_out[..])
                    }
                }
                Entry::SnapshotPut {
                    stream, version, ..
                } => {
                    let key = (Arc::<str>::from(stream), version);
                    if snapshots.get(&key) == Some(&index) {
                        (kind, &body[..])
                    } else {
                        // Replaced or removed: the record stays (its index is part of the log),
                        // its blob goes.
                        (EntryKind::NoOp, &[][..])
                    }
                }
                _ => (kind, &body[..]),
            };
        let offset = out.len() as u64;
        let mut nh = format::record_header(
            kind,
            index,
            h.term.get(),
            h.position.get(),
            h.count.get(),
            new_body,
        );
        // The watermark is part of what the record says about the log: it stays.
        nh.durable_lag = h.durable_lag;
        nh.crc = zerocopy::little_endian::U32::new(format::record_crc(&nh, new_body));
        out.extend_from_slice(nh.as_bytes());
        out.extend_from_slice(new_body);
        new_records.push(RecLoc {
            offset: offset as u32,
            ..*r
        });
    }
    if out.len() as u64 == end {
        return Ok(None);
    }
    debug_assert!((out.len() as u64) < end && out.len() >= SEGMENT_HEADER_BYTES);
    Ok(Some(Rewritten {
        bytes: out,
        records: new_records,
        removed_ids,
        events_removed,
    }))
}
