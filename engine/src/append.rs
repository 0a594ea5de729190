//! Validating an append against the writers' view of the log: names, sizes, duplicate ids,
//! idempotent retries, expected versions; then assigning versions, positions and the
//! timestamp, and encoding the body. Runs under the state lock, so what it checks is what the
//! entry is framed against.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::error::AppendError;
use crate::format::{self, EntryKind, EventToEncode, RECORD_BODY_BYTES_MAX};
use crate::idindex::IdUnknown;
use crate::state::{State, StreamState};
use crate::types::{
    validate_event_type, validate_stream_name, AppendResult, DeleteKind, ExpectedVersion,
    StreamMetadata, StreamWrite,
};

/// A write, as planned against the writers' view before it is framed here (one node) or
/// proposed to Raft (a leader: see [`crate::Engine::plan`]).
#[derive(Debug, Clone, Copy)]
pub enum WriteOp<'a> {
    /// An append to one or more streams, all or nothing.
    Append(&'a [StreamWrite]),
    /// A soft or hard delete, with an expected-version check.
    Delete {
        /// The stream.
        stream: &'a str,
        /// What the stream must be at.
        expected: ExpectedVersion,
        /// Soft or hard.
        kind: DeleteKind,
    },
    /// Replaces a stream's metadata.
    SetMetadata {
        /// The stream.
        stream: &'a str,
        /// The new metadata.
        metadata: &'a StreamMetadata,
    },
    /// Stores a snapshot blob.
    PutSnapshot {
        /// The stream.
        stream: &'a str,
        /// The version it captures.
        version: u64,
        /// The blob.
        data: &'a [u8],
    },
    /// Removes a snapshot blob.
    DeleteSnapshot {
        /// The stream.
        stream: &'a str,
        /// Its version.
        version: u64,
    },
    /// Records a subscription checkpoint: a position and opaque state under a name (named
    /// like a stream, and listed among the streams it checks).
    Checkpoint {
        /// Its name.
        name: &'a str,
        /// The position.
        position: u64,
        /// The state.
        state: &'a [u8],
    },
}

impl WriteOp<'_> {
    /// The streams it writes or checks.
    pub fn streams(&self) -> impl Iterator<Item = &str> {
        let (many, one) = match self {
            WriteOp::Append(w) => (*w, None),
            WriteOp::Delete { stream, .. }
            | WriteOp::SetMetadata { stream, .. }
            | WriteOp::PutSnapshot { stream, .. }
            | WriteOp::DeleteSnapshot { stream, .. }
            | WriteOp::Checkpoint { name: stream, .. } => (&[][..], Some(*stream)),
        };
        many.iter().map(|w| w.stream.as_str()).chain(one)
    }
}

/// What an entry proposed by this node turns into before it is framed.
pub(crate) struct Prepared {
    pub(crate) kind: EntryKind,
    pub(crate) count: u32,
    pub(crate) body: Vec<u8>,
    /// Streams this entry writes that validation looked up in the stream tables (read back,
    /// or found in none: new): framing keeps them in memory, instead of looking them up a
    /// second time, when it follows validation under the same lock.
    pub(crate) read_back: Vec<(String, StreamState)>,
}

/// A write planned by a Raft leader ([`crate::Engine::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Propose a record of this kind, consuming `count` positions, with this body. In
    /// `result` the versions are final; the positions are this log's view now and the index
    /// is 0: both are known once the record is in the log.
    Propose {
        /// The record's kind.
        kind: EntryKind,
        /// Positions it consumes (its events).
        count: u32,
        /// The record's body.
        body: Vec<u8>,
        /// What the write answers once committed.
        result: AppendResult,
    },
    /// Every event id is stored already, in the record at `result.index` of term `term`
    /// (committed or not): nothing to propose. The write succeeded if that record commits
    /// with that term.
    Stored {
        /// The stored write's result (`idempotent` set).
        result: AppendResult,
        /// The term of the record that holds it.
        term: u64,
    },
}

pub(crate) enum AppendPlan {
    Write {
        prepared: Prepared,
        result: AppendResult,
    },
    Idempotent(AppendResult),
}

/// Checks an expected version against the writers' view of a stream.
pub(crate) fn check_expected(
    name: &str,
    expected: ExpectedVersion,
    s: Option<&crate::state::StreamState>,
) -> Result<(), AppendError> {
    if s.is_some_and(|s| s.tip_hard) {
        return Err(AppendError::StreamDeleted(name.to_string()));
    }
    let exists = s.is_some_and(|s| s.tip_exists());
    let last = s.and_then(|s| s.next_version.checked_sub(1));
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => !exists,
        ExpectedVersion::StreamExists => exists,
        // After a soft delete versions continue, so the last version still counts.
        ExpectedVersion::Exact(v) => last == Some(v),
    };
    if ok {
        return Ok(());
    }
    Err(AppendError::WrongExpectedVersion {
        stream: name.to_string(),
        expected,
        actual: if exists { last } else { None },
    })
}

/// Validates a (multi-stream) append against the writers' view and encodes its body.
pub(crate) fn prepare_append(
    st: &State,
    writes: &[StreamWrite],
) -> Result<AppendPlan, AppendError> {
    if writes.is_empty() {
        return Err(AppendError::InvalidRequest(
            "an append needs at least one stream".into(),
        ));
    }
    if writes.len() > u16::MAX as usize {
        return Err(AppendError::InvalidRequest(
            "too many streams in one append".into(),
        ));
    }
    let mut names = HashSet::with_capacity(writes.len());
    let events = writes.iter().map(|w| w.events.len()).sum::<usize>();
    let mut ids = HashSet::with_capacity_and_hasher(events, foldhash::fast::RandomState::default());
    let mut total = 0usize;
    for w in writes {
        validate_stream_name(&w.stream).map_err(|source| AppendError::InvalidStreamName {
            name: w.stream.clone(),
            source,
        })?;
        if !names.insert(w.stream.as_str()) {
            return Err(AppendError::InvalidRequest(format!(
                "stream '{}' named twice",
                w.stream
            )));
        }
        if w.events.is_empty() {
            return Err(AppendError::InvalidRequest(format!(
                "no events for '{}'",
                w.stream
            )));
        }
        for e in &w.events {
            validate_event_type(&e.event_type).map_err(|source| AppendError::InvalidEventType {
                event_type: e.event_type.clone(),
                source,
            })?;
            if !ids.insert(e.id) {
                return Err(AppendError::InvalidRequest(format!(
                    "event id {} appears twice",
                    e.id
                )));
            }
            total += format::EVENT_HEADER_BYTES + e.event_type.len() + e.data.len();
            total += e.metadata.len();
        }
    }
    if total > RECORD_BODY_BYTES_MAX {
        return Err(AppendError::TooLarge {
            bytes: total,
            max: RECORD_BODY_BYTES_MAX,
        });
    }
    // Idempotency: a retry resends the same ids; answer with what was stored, write nothing.
    let mut idempotent = 0;
    let mut first_result: Option<AppendResult> = None;
    for w in writes {
        if let Some(r) = find_retry(st, w)? {
            idempotent += 1;
            first_result = Some(match first_result {
                None => r,
                Some(f) => AppendResult {
                    next_expected_version: r.next_expected_version,
                    position_first: f.position_first.min(r.position_first),
                    position_last: f.position_last.max(r.position_last),
                    ..f
                },
            });
        }
    }
    if idempotent == writes.len() {
        return Ok(AppendPlan::Idempotent(
            first_result.expect("at least one write"),
        ));
    }
    if idempotent > 0 {
        return Err(AppendError::IdempotencyMismatch(writes[0].stream.clone()));
    }
    let mut next_versions = Vec::with_capacity(writes.len());
    let mut read_back = Vec::new();
    for w in writes {
        let s = st
            .stream_tip(w.stream.as_str())
            .map_err(AppendError::Corruption)?;
        check_expected(&w.stream, w.expected, s.as_deref())?;
        next_versions.push(s.as_ref().map_or(0, |s| s.next_version));
        match s {
            Some(Cow::Borrowed(_)) => {}
            Some(Cow::Owned(s)) => read_back.push((w.stream.clone(), s)),
            // Not in memory nor in any table: a new stream, as framing would find again.
            None => read_back.push((w.stream.clone(), StreamState::default())),
        }
    }
    let created_us = State::now_us().max(st.last_created_us);
    let count = writes.iter().map(|w| w.events.len()).sum::<usize>();
    let count = u32::try_from(count)
        .map_err(|_| AppendError::InvalidRequest("too many events in one append".into()))?;
    let position_first = st.next_position;
    let names: Vec<&str> = writes.iter().map(|w| w.stream.as_str()).collect();
    let mut body = Vec::with_capacity(total + 64);
    let mut pos_delta = 0u32;
    let events = writes.iter().enumerate().flat_map(|(slot, w)| {
        let base = next_versions[slot];
        w.events
            .iter()
            .enumerate()
            .map(move |(i, event)| (slot, base + i as u64, event))
    });
    let encoded = events.map(|(slot, version, event)| {
        let e = EventToEncode {
            slot: slot as u16,
            version,
            pos_delta,
            created_us,
            event,
        };
        pos_delta += 1;
        e
    });
    format::encode_append(&mut body, &names, ExactLen(encoded, count as usize));
    let last = writes.last().expect("non-empty");
    let last_version = next_versions[writes.len() - 1] + last.events.len() as u64 - 1;
    let result = AppendResult {
        next_expected_version: last_version,
        position_first,
        position_last: position_first + count as u64 - 1,
        index: 0,
        idempotent: false,
    };
    Ok(AppendPlan::Write {
        prepared: Prepared {
            kind: EntryKind::Append,
            count,
            body,
            read_back,
        },
        result,
    })
}

/// Validates any write against the writers' view and encodes its body. Only an append has
/// versions and positions to report; the others' result is all zeros.
pub(crate) fn prepare_op(st: &State, op: &WriteOp<'_>) -> Result<AppendPlan, AppendError> {
    let named = |stream: &str| {
        validate_stream_name(stream).map_err(|source| AppendError::InvalidStreamName {
            name: stream.into(),
            source,
        })
    };
    let mut body = Vec::new();
    let kind = match *op {
        WriteOp::Append(writes) => return prepare_append(st, writes),
        WriteOp::Delete {
            stream,
            expected,
            kind,
        } => {
            named(stream)?;
            let s = st.stream_tip(stream).map_err(AppendError::Corruption)?;
            let s = s.as_deref();
            check_expected(stream, expected, s)?;
            let next_version = s.map_or(0, |s| s.next_version);
            format::encode_delete(&mut body, stream, kind, next_version);
            EntryKind::Delete
        }
        WriteOp::SetMetadata { stream, metadata } => {
            named(stream)?;
            let s = st.stream_tip(stream).map_err(AppendError::Corruption)?;
            check_expected(stream, ExpectedVersion::Any, s.as_deref())?;
            format::encode_metadata(&mut body, stream, metadata);
            EntryKind::Metadata
        }
        WriteOp::PutSnapshot {
            stream,
            version,
            data,
        } => {
            named(stream)?;
            body.reserve(data.len() + stream.len() + 9);
            format::encode_snapshot_put(&mut body, stream, version, data);
            EntryKind::SnapshotPut
        }
        WriteOp::DeleteSnapshot { stream, version } => {
            named(stream)?;
            format::encode_snapshot_delete(&mut body, stream, version);
            EntryKind::SnapshotDelete
        }
        WriteOp::Checkpoint {
            name,
            position,
            state,
        } => {
            named(name)?;
            body.reserve(name.len() + state.len() + 16);
            format::encode_checkpoint(&mut body, name, position, state);
            EntryKind::Checkpoint
        }
    };
    Ok(AppendPlan::Write {
        prepared: Prepared {
            kind,
            count: 0,
            body,
            read_back: Vec::new(),
        },
        result: AppendResult {
            next_expected_version: 0,
            position_first: 0,
            position_last: 0,
            index: 0,
            idempotent: false,
        },
    })
}

/// An iterator with a known length (the events of an append, flattened across streams).
struct ExactLen<I>(I, usize);

impl<I: Iterator> Iterator for ExactLen<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let item = self.0.next()?;
        self.1 -= 1;
        Some(item)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactLen<I> {}

/// If every id of `w` is stored, consecutively, in `w`'s stream, the stored result.
fn find_retry(st: &State, w: &StreamWrite) -> Result<Option<AppendResult>, AppendError> {
    let found: Vec<Option<u64>> = w
        .events
        .iter()
        .map(|e| st.id_position(e.id.as_u128()))
        .collect::<Result<_, _>>()
        .map_err(|e| match e {
            IdUnknown::Loading => AppendError::Loading,
            IdUnknown::Damaged(c) => AppendError::Corruption(c),
        })?;
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mismatch = || AppendError::IdempotencyMismatch(w.stream.clone());
    let first = found[0].ok_or_else(mismatch)?;
    let tip = st
        .stream_tip(w.stream.as_str())
        .map_err(AppendError::Corruption)?;
    // A record lies in one segment: a retry of events below a tail held in memory is
    // wholly in the older tables.
    let s = match tip {
        Some(t) if t.head_tabled && t.positions.first().is_none_or(|p| first < *p) => st
            .read_back(w.stream.as_str())
            .map_err(AppendError::Corruption)?
            .map(Cow::Owned),
        other => other,
    };
    let Some(s) = s.as_deref() else {
        return Err(mismatch());
    };
    let i = s.positions.binary_search(&first).map_err(|_| mismatch())?;
    for (k, p) in found.iter().enumerate() {
        if p.is_none() || *p != s.positions.get(i + k).copied() {
            return Err(mismatch());
        }
    }
    let last = found[found.len() - 1].expect("checked above");
    let index = st
        .locate_position(last)
        .map_or(0, |(si, r)| st.segments[si].first_index() + r as u64);
    Ok(Some(AppendResult {
        next_expected_version: s.first_version + (i + found.len() - 1) as u64,
        position_first: first,
        position_last: last,
        index,
        idempotent: true,
    }))
}
