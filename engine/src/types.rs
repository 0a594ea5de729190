//! The vocabulary users program against: stream names, expected versions, events going in
//! and events coming out, stream metadata, read directions and filters.

use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::error::NameError;

/// Longest stream name, in bytes (DESIGN.md: 1–255 bytes of UTF-8).
pub const STREAM_NAME_BYTES_MAX: usize = 255;
/// Longest event type, in bytes.
pub const EVENT_TYPE_BYTES_MAX: usize = 255;

/// Checks a stream name: 1–255 bytes of UTF-8 without control characters.
///
/// Names starting with `$` are reserved for the store (`$all`), so they are refused too.
pub fn validate_stream_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > STREAM_NAME_BYTES_MAX {
        return Err(NameError::TooLong {
            len: name.len(),
            max: STREAM_NAME_BYTES_MAX,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    if name.starts_with('$') {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// Checks an event type: 1–255 bytes of UTF-8 without control characters.
pub fn validate_event_type(event_type: &str) -> Result<(), NameError> {
    if event_type.is_empty() {
        return Err(NameError::Empty);
    }
    if event_type.len() > EVENT_TYPE_BYTES_MAX {
        return Err(NameError::TooLong {
            len: event_type.len(),
            max: EVENT_TYPE_BYTES_MAX,
        });
    }
    if event_type.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(())
}

/// What the writer expects a stream's version to be before its append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have no events (never written, or soft-deleted).
    NoStream,
    /// The stream must exist and not be deleted.
    StreamExists,
    /// The stream's current version (its last event's version) must be exactly this.
    Exact(u64),
}

/// How an event's data is encoded; carried, not interpreted, by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// Opaque bytes.
    Binary,
    /// UTF-8 JSON (not validated by the engine).
    Json,
}

impl ContentType {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            ContentType::Binary => 0,
            ContentType::Json => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(ContentType::Binary),
            1 => Some(ContentType::Json),
            _ => None,
        }
    }
}

/// An event as a writer proposes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// Unique id; retrying an append with the same ids is idempotent.
    pub id: Uuid,
    /// Event type, 1–255 bytes.
    pub event_type: String,
    /// How `data` is encoded.
    pub content_type: ContentType,
    /// The payload.
    pub data: Bytes,
    /// User metadata.
    pub metadata: Bytes,
}

impl EventData {
    /// A JSON event with a fresh random id and no metadata.
    pub fn json(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        EventData {
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            content_type: ContentType::Json,
            data: data.into(),
            metadata: Bytes::new(),
        }
    }

    /// A binary event with a fresh random id and no metadata.
    pub fn binary(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        EventData {
            content_type: ContentType::Binary,
            ..EventData::json(event_type, data)
        }
    }
}

/// An event as stored, read back without copying its payload: `data`, `metadata` and the
/// type's bytes point into the memory-mapped segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: Arc<str>,
    /// 0-based version within the stream.
    pub version: u64,
    /// Dense, gap-free, 0-based position in `$all`.
    pub position: u64,
    /// The id the writer gave it.
    pub id: Uuid,
    /// Raw UTF-8 bytes of the event type (see [`RecordedEvent::event_type`]).
    pub event_type_bytes: Bytes,
    /// How `data` is encoded.
    pub content_type: ContentType,
    /// The payload.
    pub data: Bytes,
    /// User metadata.
    pub metadata: Bytes,
    /// When the leader accepted it, in µs since the Unix epoch.
    pub created_us: u64,
}

impl RecordedEvent {
    /// The event type. Checked as UTF-8 when the record was read, so this never fails.
    pub fn event_type(&self) -> &str {
        std::str::from_utf8(&self.event_type_bytes).unwrap_or("")
    }
}

/// The outcome of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Version of the last event written (for a multi-stream append: of the last stream).
    pub next_expected_version: u64,
    /// Position of the first event written.
    pub position_first: u64,
    /// Position of the last event written.
    pub position_last: u64,
    /// The Raft index of the entry that holds the events.
    pub index: u64,
    /// True when every event id was already stored: nothing was written this time.
    pub idempotent: bool,
}

/// Stream metadata that the engine honours on reads and scavenges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamMetadata {
    /// Keep only the newest `max_count` events.
    pub max_count: Option<u64>,
    /// Hide (and let scavenge reclaim) events older than this many µs.
    pub max_age_us: Option<u64>,
    /// Hide events with a lower version.
    pub truncate_before: Option<u64>,
    /// Opaque user metadata (often JSON).
    pub custom: Bytes,
}

impl StreamMetadata {
    /// No metadata: what a stream has until some is set.
    pub(crate) const NONE: StreamMetadata = StreamMetadata {
        max_count: None,
        max_age_us: None,
        truncate_before: None,
        custom: Bytes::new(),
    };
}

/// A stream's state as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: Arc<str>,
    /// Version of its last committed event; `None` for a stream with none.
    pub current_version: Option<u64>,
    /// Soft- or hard-deleted.
    pub deleted: Option<DeleteKind>,
    /// Its metadata.
    pub metadata: StreamMetadata,
}

/// How a stream was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteKind {
    /// Hidden, may be recreated; versions continue after the last one.
    Soft,
    /// Tombstoned: reads and appends fail forever.
    Hard,
}

/// Which way a read walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// A test on a string: prefix or regular expression.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Starts with this.
    Prefix(String),
    /// Matches this regular expression (anywhere, unless anchored).
    Regex(regex::Regex),
}

impl Matcher {
    /// Builds a regex matcher, or a typed error for a bad pattern.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Matcher::Regex(regex::Regex::new(pattern)?))
    }

    /// Whether `s` passes.
    pub fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Prefix(p) => s.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(s),
        }
    }
}

/// A server-side filter for `$all` reads. Every present matcher must pass.
#[derive(Debug, Clone, Default)]
pub struct AllFilter {
    /// Test on the event type.
    pub event_type: Option<Matcher>,
    /// Test on the stream name.
    pub stream: Option<Matcher>,
}

impl AllFilter {
    pub(crate) fn passes(&self, stream: &str, event_type: &str) -> bool {
        self.event_type
            .as_ref()
            .is_none_or(|m| m.matches(event_type))
            && self.stream.as_ref().is_none_or(|m| m.matches(stream))
    }
}

/// A snapshot blob of an aggregate's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream whose state it captures.
    pub stream: Arc<str>,
    /// The stream version it was taken at.
    pub version: u64,
    /// The blob, pointing into the mapped segment.
    pub data: Bytes,
}

/// One stream's part of a multi-stream append.
#[derive(Debug, Clone)]
pub struct StreamWrite {
    /// Target stream.
    pub stream: String,
    /// What its version must be.
    pub expected: ExpectedVersion,
    /// Events to add, in order.
    pub events: Vec<EventData>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_checked() {
        assert!(validate_stream_name("order-1").is_ok());
        assert_eq!(validate_stream_name(""), Err(NameError::Empty));
        assert_eq!(
            validate_stream_name("a\nb"),
            Err(NameError::ControlCharacter)
        );
        assert_eq!(validate_stream_name("$all"), Err(NameError::Reserved));
        let long = "x".repeat(256);
        assert_eq!(
            validate_stream_name(&long),
            Err(NameError::TooLong { len: 256, max: 255 })
        );
        assert!(validate_stream_name(&"é".repeat(127)).is_ok());
    }
}
