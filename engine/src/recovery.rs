//! Opening a data directory: load each sealed segment's summary, scan only what no summary
//! covers (the active segment), cut a torn tail, refuse corruption.
//!
//! The work is bounded by the number of records in the unsummarized segments, never by the
//! store's size: [`crate::OpenStats::records_replayed`] counts it.
//!
//! **What recovery trusts** (docs/STORAGE.md, "Recovery"): a record at or below the durable
//! mark must be intact, and any damage to it is corruption; damage above the mark is a torn
//! tail, cut. The mark is the highest of: the watermark carried by any whole record written
//! after the damaged one (the writer stamps each record with the index through which the log
//! was durable when it wrote it), and the caller's floor ([`EngineConfig::durable_floor`],
//! Raft's persisted commit index). A failed sync leaves a mark file naming the failed
//! batch's first index; everything from there is dropped, whatever the page cache says.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::EngineConfig;
use crate::error::{Corruption, OpenError};
use crate::failmark;
use crate::format::SEGMENT_HEADER_BYTES;
use crate::segment::{self, scan, watermark_after, SegmentFile, SEGMENT_EXT, SUMMARY_EXT};
use crate::state::{Origin, Records, Seg, State};
use crate::storage::{self, Storage};
use crate::summary;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Segment files in `dir`, in log order. With `clean`, leftover temporary files from an
/// interrupted scavenge, summary or spare are removed (only on open: a reload while the
/// engine runs must not delete the background thread's file in progress).
pub(crate) fn segment_paths(
    s: &dyn Storage,
    dir: &Path,
    clean: bool,
) -> Result<Vec<PathBuf>, OpenError> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "tmp" && clean {
            storage::remove_if_exists(s, &path).map_err(io_err(&path))?;
        } else if ext == SEGMENT_EXT {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Rebuilds the state from the files in `dir`, with the whole id index (for reloads after a
/// truncation or a failed install, which are rare and must not race a background loader).
pub(crate) fn load_with_ids(dir: &Path, config: &EngineConfig) -> Result<State, OpenError> {
    let mut st = load_files(dir, config, false)?;
    let summaries = std::mem::take(&mut st.ids_pending);
    crate::ids::load_whole(&mut st, dir, &summaries).map_err(|e| OpenError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(st)
}

/// Where the log's recovered end lies, once damage is found.
struct Damage<'a> {
    /// The file and offset of the first bytes that are not the log.
    file: &'a Path,
    offset: u64,
    /// Raft index the log would continue with there.
    index: u64,
    why: String,
}

/// Rebuilds the state from the files in `dir`. Event ids of summarized segments are left in
/// `ids_pending` for the background loader.
pub(crate) fn load(dir: &Path, config: &EngineConfig) -> Result<State, OpenError> {
    load_files(dir, config, true)
}

fn load_files(dir: &Path, config: &EngineConfig, clean: bool) -> Result<State, OpenError> {
    let disk = &*config.storage;
    let paths = segment_paths(disk, dir, clean)?;
    let failed_from = failmark::read(dir).map_err(io_err(dir))?;
    let stop_before = failed_from.unwrap_or(u64::MAX);
    let mut st = State::new(if config.commit_on_durable {
        u64::MAX
    } else {
        0
    });
    let mut summarized_through = 0u64;
    for (i, path) in paths.iter().enumerate() {
        let is_last = i + 1 == paths.len();
        let later = &paths[i + 1..];
        let opened = match SegmentFile::open(path, is_last) {
            Err(OpenError::Corruption(c)) => Err(c.detail),
            Err(e) => return Err(e),
            Ok(f) => Ok(f),
        };
        let problem = match &opened {
            Err(why) => Some(why.clone()),
            Ok(f) if f.first_index != st.next_index || f.first_position != st.next_position => {
                Some(format!(
                    "segment starts at index {} position {}, the log continues at index {} \
                     position {}",
                    f.first_index, f.first_position, st.next_index, st.next_position
                ))
            }
            Ok(f) if f.first_index >= stop_before => {
                Some("created by a batch whose sync failed".to_string())
            }
            Ok(_) => None,
        };
        if let Some(why) = problem {
            // This file does not continue the log: everything from it on is either past a
            // torn end, or damage.
            let bytes = fs::read(path).map_err(io_err(path))?;
            let damage = Damage {
                file: path,
                offset: 0,
                index: st.next_index,
                why,
            };
            judge(&damage, &bytes, later, config, stop_before)?;
            remove_segments(disk, dir, &paths[i..])?;
            reactivate_last(disk, &mut st, dir)?;
            break;
        }
        let file = Arc::new(opened.expect("a bad header is a problem above"));
        st.segments.push(Seg {
            file: file.clone(),
            records: Records::default(),
            end: SEGMENT_HEADER_BYTES as u64,
            summarized: false,
            sealed: !is_last,
        });
        if !is_last {
            if let Some(end) = summary::load(&mut st, &file)? {
                if st.next_index <= stop_before {
                    let seg = st.segments.last_mut().expect("pushed above");
                    seg.end = end;
                    seg.summarized = true;
                    summarized_through = st.next_index - 1;
                    continue;
                }
                // A failed batch cannot be in a summarized segment (summaries are written for
                // committed records); if the mark says otherwise, trust the scan instead.
                return Err(Corruption {
                    file: path.clone(),
                    offset: 0,
                    detail: "a summarized segment holds records of a failed batch".into(),
                }
                .into());
            }
        }
        st.close_tables()?;
        if replay(&mut st, &file, later, config, stop_before)? {
            remove_segments(disk, dir, later)?;
            if !is_last {
                reactivate_last(disk, &mut st, dir)?;
            }
            break;
        }
    }
    st.close_tables()?;
    if st.next_index <= config.durable_floor {
        // A record the caller knows was durable is gone without a trace (not even damage:
        // zeros where it was). The disk lost synced bytes: refuse, never start short.
        let (file, offset) = match st.segments.last() {
            Some(seg) => (seg.file.path.clone(), seg.end),
            None => (dir.to_path_buf(), 0),
        };
        return Err(Corruption {
            file,
            offset,
            detail: format!(
                "the log ends at index {}, below the durable floor {}",
                st.next_index - 1,
                config.durable_floor
            ),
        }
        .into());
    }
    if let Some(seg) = st.segments.last() {
        // What the last segment holds is the log from now on, and the next records' watermark
        // will say so: make sure it is on disk, not only in the page cache (a previous process
        // may have died before its sync).
        storage::sync_data(disk, &seg.file.file).map_err(io_err(&seg.file.path))?;
        storage::sync_dir(disk, dir).map_err(io_err(dir))?;
    }
    if failed_from.is_some() {
        // The failed batch is gone from the files, durably: the mark has done its job.
        failmark::clear(disk, dir).map_err(io_err(dir))?;
    }
    st.durable_index = st.next_index - 1;
    st.term = st.last_term.max(1);
    st.open_stats.stream_entries_read = st.table_runs_read.load(Ordering::Relaxed);
    if !config.commit_on_durable {
        // Summaries are only written for committed segments; Raft moves the rest.
        st.commit_allowed = summarized_through;
    }
    let callbacks = st.advance_commit();
    assert!(callbacks.is_empty(), "nobody waits during open");
    Ok(st)
}

/// Decides whether damage is a torn tail (Ok: cut it) or corruption (Err), by the rule in
/// this module's documentation. `bytes` are the damaged file's; `later` the files after it.
fn judge(
    damage: &Damage<'_>,
    bytes: &[u8],
    later: &[PathBuf],
    config: &EngineConfig,
    stop_before: u64,
) -> Result<(), OpenError> {
    if damage.index >= stop_before {
        tracing::warn!(file = %damage.file.display(), offset = damage.offset,
            index = damage.index, "dropping the records of a batch whose sync failed");
        return Ok(());
    }
    let mut mark = config.durable_floor;
    mark = mark.max(watermark_after(
        bytes,
        damage.offset as usize + 1,
        damage.index,
    ));
    for path in later {
        let later_bytes = fs::read(path).map_err(io_err(path))?;
        mark = mark.max(watermark_after(&later_bytes, 0, damage.index));
    }
    if damage.index <= mark {
        return Err(Corruption {
            file: damage.file.to_path_buf(),
            offset: damage.offset,
            detail: format!(
                "{}; record {} is at or below the durable mark {mark}, so this is damage, \
                 not a torn write",
                damage.why, damage.index
            ),
        }
        .into());
    }
    tracing::warn!(file = %damage.file.display(), offset = damage.offset,
        index = damage.index, durable_mark = mark, reason = %damage.why,
        "cutting a torn tail: nothing durable lies past it");
    Ok(())
}

/// Removes segment files (and their summaries) that lie past the log's end, durably.
fn remove_segments(disk: &dyn Storage, dir: &Path, paths: &[PathBuf]) -> Result<(), OpenError> {
    if paths.is_empty() {
        return Ok(());
    }
    // Newest first, so a crash in the middle leaves a log that still ends in a gap-free way.
    for path in paths.iter().rev() {
        tracing::warn!(file = %path.display(), "removing a segment past the log's end");
        segment::remove_derived(disk, path).map_err(io_err(path))?;
        disk.remove_file(path).map_err(io_err(path))?;
    }
    storage::sync_dir(disk, dir).map_err(io_err(dir))
}

/// The segment before a cut becomes the active one: writable, unsealed, without summary.
fn reactivate_last(disk: &dyn Storage, st: &mut State, dir: &Path) -> Result<(), OpenError> {
    let Some(seg) = st.segments.last() else {
        return Ok(());
    };
    let path = seg.file.path.clone();
    let summary = path.with_extension(SUMMARY_EXT);
    if let Some(at) = st.ids_pending.iter().position(|p| p.path == summary) {
        // Its event ids were left to the background loader, which reads the summary: take
        // them now, before the summary goes.
        st.ids_pending.remove(at);
        let mut ids = crate::idindex::IdMap::default();
        summary::load_ids(&summary, &mut ids).map_err(|e| Corruption {
            file: summary.clone(),
            offset: 0,
            detail: e.to_string(),
        })?;
        let first = st.segments[st.segments.len() - 1].first_index();
        st.ids.recent.add(first, ids);
    }
    let last = st.segments.len() - 1;
    if st.tables.len() == st.segments.len() {
        // Its streams were left in its table: they come back into memory, with its events.
        st.close_tables()?;
        let streams = st.segment_streams(last, None)?;
        st.tables.pop();
        st.open_stats.stream_tables -= 1;
        st.tabled_below = st.segments[last].file.first_position;
        for (name, run) in streams {
            if st.streams.contains_key(name.as_str()) {
                continue; // read back from every table, this one's included
            }
            let (_, s) = st.stream_entry(&name)?;
            for (version, position) in run {
                s.push_event(version, position);
            }
        }
    }
    segment::remove_derived(disk, &path).map_err(io_err(&path))?;
    storage::sync_dir(disk, dir).map_err(io_err(dir))?;
    let seg = st.segments.last_mut().expect("checked above");
    seg.file = Arc::new(SegmentFile::open(&path, true)?);
    seg.sealed = false;
    seg.summarized = false;
    Ok(())
}

/// Scans a segment's records into the state. On damage, judges it: corruption is an error,
/// a torn tail is cut (zeroed) and `true` returned: the log ends in this segment.
fn replay(
    st: &mut State,
    file: &Arc<SegmentFile>,
    later: &[PathBuf],
    config: &EngineConfig,
    stop_before: u64,
) -> Result<bool, OpenError> {
    let start = SEGMENT_HEADER_BYTES as u64;
    let mut replayed = 0u64;
    let outcome = scan(file, start, stop_before, |rec, body| {
        replayed += 1;
        st.apply_tip(&rec.header, rec.offset, body, Origin::Own)
            .map_err(|e| file.corruption(rec.offset, e.to_string()))
    })?;
    st.open_stats.records_replayed += replayed;
    st.segments.last_mut().expect("pushed by the caller").end = outcome.end;
    let Some((at, why)) = outcome.bad else {
        return Ok(false);
    };
    let damage = Damage {
        file: &file.path,
        offset: at,
        index: outcome.next_index,
        why,
    };
    judge(&damage, file.written()?, later, config, stop_before)?;
    // A sealed segment's file was opened read-only; cutting needs it writable.
    let writable = SegmentFile::open(&file.path, true)?;
    let len = file.written()?.len() as u64;
    writable
        .zero_from(&*config.storage, at)
        .map_err(io_err(&file.path))?;
    // Every byte from the cut to the end of the file is no longer part of the log (the file
    // keeps its length: those bytes are zeros now).
    st.open_stats.torn_bytes_cut += len - at;
    Ok(true)
}
