//! Opening a data directory: load each sealed segment's summary, scan only what no summary
//! covers (the active segment), cut a torn tail, refuse corruption.
//!
//! The work is bounded by the number of records in the unsummarized segments, never by the
//! store's size: [`crate::OpenStats::records_replayed`] counts it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::EngineConfig;
use crate::error::{Corruption, OpenError};
use crate::segment::{self, scan, SegmentFile, SEGMENT_EXT};
use crate::state::{Origin, Seg, State};
use crate::summary;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Segment files in `dir`, in log order. Leftover temporary files from an interrupted
/// scavenge or summary are removed.
pub(crate) fn segment_paths(dir: &Path) -> Result<Vec<PathBuf>, OpenError> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "tmp" {
            fs::remove_file(&path).map_err(io_err(&path))?;
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
    let mut st = load(dir, config)?;
    let pending = std::mem::take(&mut st.ids_pending);
    let tail = std::mem::take(&mut st.ids);
    st.ids = crate::ids::build(&pending).map_err(|e| OpenError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    st.ids.extend(tail);
    Ok(st)
}

/// Rebuilds the state from the files in `dir`. Event ids of summarized segments are left in
/// `ids_pending` for the background loader.
pub(crate) fn load(dir: &Path, config: &EngineConfig) -> Result<State, OpenError> {
    let paths = segment_paths(dir)?;
    let mut st = State::new(if config.commit_on_durable {
        u64::MAX
    } else {
        0
    });
    let mut summarized_through = 0u64;
    for (i, path) in paths.iter().enumerate() {
        let is_last = i + 1 == paths.len();
        let file = match SegmentFile::open(path, is_last) {
            Ok(f) => f,
            Err(OpenError::Corruption(c)) if is_last && !holds_records(path, st.next_index) => {
                // A segment whose creation was cut short: its header never became durable,
                // so no record in it was ever acknowledged.
                tracing::warn!(file = %path.display(), detail = %c.detail,
                    "removing a segment whose header was never completed");
                fs::remove_file(path).map_err(io_err(path))?;
                segment::sync_dir(dir).map_err(io_err(dir))?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if file.first_index != st.next_index || file.first_position != st.next_position {
            return Err(Corruption {
                file: path.clone(),
                offset: 0,
                detail: format!(
                    "segment starts at index {} position {}, the log continues at index {} \
                     position {}",
                    file.first_index, file.first_position, st.next_index, st.next_position
                ),
            }
            .into());
        }
        let file = Arc::new(file);
        st.segments.push(Seg {
            file: file.clone(),
            records: Vec::new(),
            end: crate::format::SEGMENT_HEADER_BYTES as u64,
            summarized: false,
            sealed: !is_last,
        });
        if !is_last {
            if let Some(end) = summary::load(&mut st, &file)? {
                let seg = st.segments.last_mut().expect("pushed above");
                seg.end = end;
                seg.summarized = true;
                summarized_through = st.next_index - 1;
                continue;
            }
        }
        replay(&mut st, &file, is_last)?;
    }
    st.durable_index = st.next_index - 1;
    st.term = st.last_term.max(1);
    if !config.commit_on_durable {
        // Summaries are only written for committed segments; Raft moves the rest.
        st.commit_allowed = summarized_through;
    }
    let callbacks = st.advance_commit();
    assert!(callbacks.is_empty(), "nobody waits during open");
    Ok(st)
}

/// Whether any whole record with an index at or after `index` is in the file.
fn holds_records(path: &Path, index: u64) -> bool {
    match fs::read(path) {
        Ok(bytes) => segment::valid_record_follows(&bytes, 0, index),
        Err(_) => true,
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// Scans a segment's records into the state, cutting a torn tail of the last segment.
fn replay(st: &mut State, file: &Arc<SegmentFile>, is_last: bool) -> Result<(), OpenError> {
    let start = crate::format::SEGMENT_HEADER_BYTES as u64;
    let mut replayed = 0u64;
    let outcome = scan(file, start, is_last, |rec, body| {
        replayed += 1;
        st.apply_tip(&rec.header, rec.offset, body, Origin::Own)
            .map_err(|e| file.corruption(rec.offset, e.to_string()))
    })?;
    st.open_stats.records_replayed += replayed;
    if let Some((at, why)) = outcome.torn_at {
        let len = file_len(&file.path);
        tracing::warn!(file = %file.path.display(), offset = at, cut_bytes = len - at,
            reason = %why, "cutting a torn tail");
        file.file.set_len(at).map_err(io_err(&file.path))?;
        file.file.sync_all().map_err(io_err(&file.path))?;
        st.open_stats.torn_bytes_cut += len - at;
    }
    st.segments.last_mut().expect("pushed by the caller").end = outcome.end;
    Ok(())
}
