//! The background threads: one writes the summaries of sealed, committed segments and
//! prepares the next pre-zeroed segment, off the writer's path, so neither ever delays an
//! append; one builds the event-id index of summarized segments right after open.

use std::sync::Arc;

use crate::error::Failed;
use crate::inner::Inner;
use crate::streamtable::StreamTable;
use crate::{ids, segment, summary};

/// The background thread: writes summaries of sealed, committed segments and prepares the
/// next pre-zeroed segment, off the writer's path, so neither ever delays an append.
pub(crate) fn summarizer_loop(inner: &Inner) {
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
                write_due(inner);
                return;
            }
        }
        write_due(inner);
        if inner.spare.lock().is_none() {
            let (s, size) = (&*inner.config.storage, inner.config.segment_bytes_max);
            match segment::prepare_spare(s, &inner.dir, size) {
                Ok(path) => *inner.spare.lock() = Some(path),
                Err(e) => tracing::warn!(error = %e, "could not prepare a spare segment"),
            }
        }
    }
}

/// Writes the summaries of sealed segments that are now fully committed. Runs on the writer
/// thread between batches; a failure only logs (the segment is scanned on the next open).
pub(crate) fn write_due(inner: &Inner) {
    loop {
        // Held while the summary is built and written: a truncation meanwhile could remove
        // the segment, and a summary left for a segment that is gone would describe the
        // next segment to get that name.
        let _files = inner.files_lock.lock();
        let due = {
            let st = inner.state.read();
            let n = st.segments.len();
            st.segments.iter().take(n.saturating_sub(1)).find_map(|s| {
                let done = s.sealed && !s.summarized && s.next_index() - 1 <= st.commit_index;
                done.then(|| (s.file.clone(), s.records.clone(), s.end))
            })
        };
        let Some((file, records, end)) = due else {
            return;
        };
        let written = summary::build(&file, &records, end)
            .map_err(|c| std::io::Error::other(c.to_string()))
            .and_then(|bytes| {
                let s = &*inner.config.storage;
                summary::write(s, &inner.dir, file.first_index, &bytes)?;
                Ok(summary::body_crc(&bytes))
            });
        let table = match &written {
            Err(e) => {
                tracing::warn!(file = %file.path.display(), error = %e, "could not write a summary");
                None
            }
            Ok(crc) => crc.and_then(|crc| written_table(inner, file.first_index, crc)),
        };
        let mut st = inner.state.write();
        if let Some(s) = st.segments.iter_mut().find(|s| Arc::ptr_eq(&s.file, &file)) {
            // Marked even on failure so the writer does not retry every batch.
            s.summarized = true;
        }
        let Some((table, names)) = table else {
            continue;
        };
        if !st.add_table(table) {
            continue;
        }
        drop(st);
        // A segment may hold hundreds of thousands of streams: a chunk per write lock, so
        // appends are not held up meanwhile.
        for chunk in names.chunks(LET_GO_CHUNK) {
            inner.state.write().let_go(chunk);
        }
    }
}

/// Streams looked at per write lock when letting go of those a new stream table covers.
const LET_GO_CHUNK: usize = 4096;

/// The stream table just written beside a summary, opened, with its streams' names: the
/// streams that need no longer stay in memory.
fn written_table(
    inner: &Inner,
    first_index: u64,
    summary_crc: u32,
) -> Option<(Arc<StreamTable>, Vec<String>)> {
    let table = StreamTable::open(&inner.dir, first_index, summary_crc)?;
    let mut names = Vec::with_capacity(table.streams() as usize);
    let listed = table.names_from(None, |n| {
        names.push(n.to_string());
        true
    });
    if let Err(doubt) = listed {
        tracing::warn!(doubt = %doubt.0, "a stream table just written does not read back");
        return None;
    }
    Some((Arc::new(table), names))
}

/// Runs on the id loader thread: builds the index of what `State::ids_pending` names and
/// merges it with the ids added since open (which are newer, so they win).
pub(crate) fn load_ids(inner: &Inner) {
    let (pending, count) = {
        let mut st = inner.state.write();
        let count = st
            .id_tables
            .as_ref()
            .map(|t| t.iter().map(|t| t.len()).sum());
        (std::mem::take(&mut st.ids_pending), count)
    };
    let started = std::time::Instant::now();
    #[cfg(test)]
    crate::inner::held_loaders::wait(&inner.dir);
    match ids::build(&pending, count) {
        Ok(mut ids) => {
            let mut st = inner.state.write();
            ids.merge(std::mem::take(&mut st.ids));
            st.ids = ids;
            st.ids_whole = true;
            let had_tables = st.id_tables.take().is_some();
            tracing::info!(
                ids = st.ids.len(),
                ms = started.elapsed().as_millis() as u64,
                "event-id index loaded"
            );
            drop(st);
            // Appends and truncations wait for this, and a truncation holds the files lock
            // that writing the tables takes: say the index is whole first.
            *inner.ids_ready.lock() = true;
            inner.ids_cv.notify_all();
            write_missing_tables(inner, &pending, !had_tables);
            return;
        }
        Err(e) => {
            // A summary that loaded a moment ago no longer reads: refuse writes rather than
            // accept appends whose retries could not be recognised.
            tracing::error!(error = %e, "event-id index could not be built");
            let failed = Failed(std::sync::Arc::new(std::io::Error::other(e.to_string())));
            let mut st = inner.state.write();
            st.failed = Some(failed);
            st.id_tables = None;
        }
    }
    *inner.ids_ready.lock() = true;
    inner.ids_cv.notify_all();
}

/// Writes the tables a store opened without (one written before they existed, or whose
/// tables were lost): the id tables when `ids` (the open found one missing), and the stream
/// tables, so that its next open takes appends at once and leaves streams on disk.
fn write_missing_tables(inner: &Inner, summaries: &[crate::state::PendingIds], ids: bool) {
    // Not while a summary is being written or a truncation removes files.
    let _files = inner.files_lock.lock();
    let s = &*inner.config.storage;
    let mut written = 0;
    for p in summaries {
        let (first, crc) = (p.first_index, p.summary_crc);
        let want_ids = ids && crate::idtable::IdTable::open(&inner.dir, first, crc).is_none();
        let want_streams = StreamTable::open(&inner.dir, first, crc).is_none();
        if !want_ids && !want_streams {
            continue;
        }
        // Made from the summary as it is now (a scavenge may have rewritten it since open).
        let made = std::fs::read(&p.path).and_then(|bytes| {
            summary::write_tables(s, &inner.dir, first, &bytes, want_ids, want_streams)
        });
        match made {
            Ok(()) => written += 1,
            Err(e) => tracing::warn!(summary = %p.path.display(), error = %e, "no table"),
        }
    }
    if written > 0 {
        if let Err(e) = crate::storage::sync_dir(s, &inner.dir) {
            tracing::warn!(error = %e, "could not sync the directory after writing tables");
        }
        tracing::info!(summaries = written, "wrote the missing tables");
    }
}
