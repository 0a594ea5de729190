//! One error enum per operation, every variant documented. A bug panics; bad input, a
//! conflict, a failed disk or corrupted bytes come back as one of these.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a stream name or event type was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Zero bytes long.
    #[error("name is empty")]
    Empty,
    /// Longer than allowed.
    #[error("name is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Holds a control character.
    #[error("name contains a control character")]
    ControlCharacter,
    /// Starts with `$`, which the store keeps for itself.
    #[error("names starting with '$' are reserved")]
    Reserved,
}

/// Bytes that do not decode as what they claim to be. Decoders return this, never panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {detail}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl DecodeError {
    pub(crate) fn new(what: &'static str, detail: impl Into<String>) -> Self {
        DecodeError {
            what,
            detail: detail.into(),
        }
    }
}

/// Stored bytes that fail their checksum or do not decode, away from the log's tail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corruption in {} at byte offset {offset}: {detail}", file.display())]
pub struct Corruption {
    /// The segment file.
    pub file: PathBuf,
    /// Byte offset of the bad record in that file.
    pub offset: u64,
    /// What was wrong.
    pub detail: String,
}

/// Why [`crate::Engine::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file system refused an operation.
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A checksum or format failure that is not a torn tail.
    #[error(transparent)]
    Corruption(#[from] Corruption),
    /// Another process (or engine) has the data directory open.
    #[error("the data directory is in use: {} is locked", .0.display())]
    Locked(PathBuf),
    /// The configuration makes no sense.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The engine has stopped accepting writes: a write or fsync failed, and after a failed
/// fsync the page cache can no longer be trusted (the "fsyncgate" lesson), so it refuses to
/// go on as if nothing happened. Reopen to recover from what is on disk.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the engine failed and refuses writes until reopened: {0}")]
pub struct Failed(pub Arc<io::Error>);

impl Failed {
    /// Whether this is a refusal for want of space (the engine goes on), not a failure.
    pub(crate) fn is_no_space(&self) -> bool {
        is_no_space_on_write(&self.0)
    }
}

/// A write refused for want of space, before any sync: nothing of the batch was made
/// durable and the page cache holds nothing the disk was told to keep, so the engine can
/// refuse the batch, cut what reached the file, and go on (unlike a failed sync).
#[derive(Debug)]
pub(crate) struct NoSpaceOnWrite;

impl std::fmt::Display for NoSpaceOnWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no space left on the device for a write")
    }
}

impl std::error::Error for NoSpaceOnWrite {}

/// Whether `e` is a write refused for want of space (see [`NoSpaceOnWrite`]).
pub(crate) fn is_no_space_on_write(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<NoSpaceOnWrite>())
}

/// A version conflict in a person's words: what the writer expected, and what the stream is.
fn conflict(expected: crate::ExpectedVersion, actual: Option<u64>) -> String {
    use crate::ExpectedVersion as E;
    let wanted = match expected {
        E::Any => "any version".to_string(),
        E::NoStream => "no stream".to_string(),
        E::StreamExists => "the stream to exist".to_string(),
        E::Exact(v) => format!("version {v}"),
    };
    let found = match (expected, actual) {
        (E::NoStream, Some(a)) => format!("it exists at version {a}"),
        (E::StreamExists, None) => "it does not".to_string(),
        (_, Some(a)) => format!("the stream is at version {a}"),
        (_, None) => "the stream does not exist".to_string(),
    };
    format!("expected {wanted}, but {found}")
}

/// Why an append (single or multi-stream) failed. Nothing was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The stream's version is not what the writer expected.
    #[error("wrong expected version for '{stream}': {}", conflict(*.expected, *.actual))]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the writer expected.
        expected: crate::ExpectedVersion,
        /// The stream's current version (`None`: no stream).
        actual: Option<u64>,
    },
    /// The stream was hard-deleted.
    #[error("stream '{0}' is deleted for ever")]
    StreamDeleted(String),
    /// A bad stream name.
    #[error("invalid stream name {name:?}: {source}")]
    InvalidStreamName {
        /// The name given.
        name: String,
        /// What was wrong.
        source: crate::NameError,
    },
    /// A bad event type.
    #[error("invalid event type {event_type:?}: {source}")]
    InvalidEventType {
        /// The type given.
        event_type: String,
        /// What was wrong.
        source: crate::NameError,
    },
    /// An empty append, or a multi-stream append naming one stream twice.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Some, but not all, of the event ids are already stored in that stream: a retry must
    /// resend exactly the same events.
    #[error("event ids partly match events already in '{0}'")]
    IdempotencyMismatch(String),
    /// The entry would exceed the engine's record size limit.
    #[error("entry of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The disk is full: the write was refused and nothing of it is in the log. Reads go on,
    /// and writes succeed again once space is freed.
    #[error("no space left on the device: the write was refused and nothing of it is stored")]
    NoSpace,
    /// The engine cannot write (see [`Failed`]).
    #[error(transparent)]
    Failed(Failed),
    /// The engine is shutting down.
    #[error("the engine is closed")]
    Closed,
    /// The event-id index is still loading after open: a write cannot be checked yet.
    /// Nothing was written; retry shortly.
    #[error("the store is still loading its event-id index: retry shortly")]
    Loading,
    /// A stream the write names could not be read back from disk (its stream table and its
    /// segment are both damaged): it cannot be checked. Nothing was written.
    #[error("cannot check the write: {0}")]
    Corruption(Corruption),
}

impl From<Failed> for AppendError {
    fn from(f: Failed) -> Self {
        match f.is_no_space() {
            true => AppendError::NoSpace,
            false => AppendError::Failed(f),
        }
    }
}

/// Why a read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The stream has no visible events and never had (or was soft-deleted).
    #[error("stream '{0}' not found")]
    StreamNotFound(String),
    /// The stream was hard-deleted.
    #[error("stream '{0}' is deleted for ever")]
    StreamDeleted(String),
    /// Stored bytes failed their checksum: the engine will not serve them.
    #[error(transparent)]
    Corruption(#[from] Corruption),
}

/// Why a Raft-facing log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The entries do not continue the log (wrong index or position).
    #[error("entries do not continue the log: {0}")]
    NotContiguous(String),
    /// The request would touch committed entries.
    #[error("index {index} is committed (commit index {commit}); committed entries never change")]
    Committed {
        /// The index asked for.
        index: u64,
        /// The commit index.
        commit: u64,
    },
    /// A received entry or segment does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A received segment failed verification.
    #[error(transparent)]
    Corruption(#[from] Corruption),
    /// The file system refused.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The disk is full: the entries were refused (see [`AppendError::NoSpace`]).
    #[error("no space left on the device: the entries were refused")]
    NoSpace,
    /// The engine cannot write (see [`Failed`]).
    #[error(transparent)]
    Failed(Failed),
    /// The engine is shutting down.
    #[error("the engine is closed")]
    Closed,
    /// The event-id index is still loading after open: a write cannot be checked yet.
    /// Nothing was written; retry shortly.
    #[error("the store is still loading its event-id index: retry shortly")]
    Loading,
}

impl From<Failed> for LogError {
    fn from(f: Failed) -> Self {
        match f.is_no_space() {
            true => LogError::NoSpace,
            false => LogError::Failed(f),
        }
    }
}

/// Why a scavenge failed. Nothing is lost: the old segments stay until their replacements
/// are durable.
#[derive(Debug, thiserror::Error)]
pub enum ScavengeError {
    /// The file system refused.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A segment to rewrite failed its checksum.
    #[error(transparent)]
    Corruption(#[from] Corruption),
}

#[cfg(test)]
mod conflict_tests {
    use super::*;
    use crate::ExpectedVersion as E;

    #[test]
    fn a_version_conflict_reads_as_a_person_would_say_it() {
        let says = |expected, actual| {
            AppendError::WrongExpectedVersion {
                stream: "acct-1".into(),
                expected,
                actual,
            }
            .to_string()
        };
        assert_eq!(
            says(E::Exact(0), Some(1)),
            "wrong expected version for 'acct-1': expected version 0, but the stream is at version 1"
        );
        assert_eq!(
            says(E::NoStream, Some(4)),
            "wrong expected version for 'acct-1': expected no stream, but it exists at version 4"
        );
        assert_eq!(
            says(E::StreamExists, None),
            "wrong expected version for 'acct-1': expected the stream to exist, but it does not"
        );
        assert_eq!(
            says(E::Exact(3), None),
            "wrong expected version for 'acct-1': expected version 3, but the stream does not exist"
        );
    }
}
