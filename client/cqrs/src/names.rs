//! How aggregates map onto Quiver streams, and how events get their ids.
//!
//! An aggregate instance's events are the stream `{aggregate_type}~{aggregate_id}`; its
//! snapshots are the stream `~snapshot~{aggregate_type}~{aggregate_id}`. An aggregate type
//! may not contain `~` (nor be empty, nor start with `$`), so:
//!
//! - the prefix `{aggregate_type}~` selects exactly one type's event streams: `order~` never
//!   matches `order-line~…` (the `~` must follow the whole type), nor a snapshot stream
//!   (those start with `~`, which no type can);
//! - a stream name splits back into type and id at its first `~`, whatever the id holds.

use uuid::Uuid;

/// Separates the aggregate type from the aggregate id in a stream name. Aggregate types may
/// not contain it.
///
/// ```
/// use quiver_cqrs::{event_stream, validate_aggregate_type, SEPARATOR};
/// assert_eq!(event_stream("order", "7").unwrap(), format!("order{SEPARATOR}7"));
/// // Ids may hold it (a stream name splits at its first one); types may not.
/// assert!(event_stream("order", "eu~7").is_ok());
/// assert!(validate_aggregate_type("shop~order").is_err());
/// ```
pub const SEPARATOR: char = '~';

/// Prefix of every snapshot stream: `~snapshot~{aggregate_type}~{aggregate_id}`.
///
/// ```
/// use quiver_cqrs::{parse_event_stream, snapshot_stream, SNAPSHOT_STREAM_PREFIX};
/// let snapshots = snapshot_stream("account", "42").unwrap();
/// assert!(snapshots.starts_with(SNAPSHOT_STREAM_PREFIX));
/// // A reader of `$all` can tell snapshot streams from event streams by their name.
/// assert_eq!(parse_event_stream(&snapshots), None);
/// ```
pub const SNAPSHOT_STREAM_PREFIX: &str = "~snapshot~";

/// Event type of the events that hold snapshots.
///
/// ```
/// use quiver_cqrs::SNAPSHOT_EVENT_TYPE;
/// // A projection fed from all of `$all` skips the snapshots among the domain events.
/// let seen = ["Opened", "Deposited", SNAPSHOT_EVENT_TYPE, "Withdrawn"];
/// let domain: Vec<_> = seen.into_iter().filter(|t| *t != SNAPSHOT_EVENT_TYPE).collect();
/// assert_eq!(domain, ["Opened", "Deposited", "Withdrawn"]);
/// ```
pub const SNAPSHOT_EVENT_TYPE: &str = "cqrs-snapshot";

/// Longest stream name Quiver accepts, in bytes.
///
/// A snapshot stream's name is the longer one, so it bounds the ids of aggregates kept in a
/// snapshot or aggregate store:
///
/// ```
/// use quiver_cqrs::{snapshot_stream, NameError, SNAPSHOT_STREAM_PREFIX, STREAM_NAME_BYTES_MAX};
/// // "~snapshot~" + "account~" + the id.
/// let id_max = STREAM_NAME_BYTES_MAX - SNAPSHOT_STREAM_PREFIX.len() - "account~".len();
/// assert_eq!(id_max, 237);
/// assert!(snapshot_stream("account", &"x".repeat(id_max)).is_ok());
/// assert!(matches!(
///     snapshot_stream("account", &"x".repeat(id_max + 1)),
///     Err(NameError::TooLong { len: 256, .. })
/// ));
/// ```
pub const STREAM_NAME_BYTES_MAX: usize = 255;

/// The namespace of the v5 UUIDs of events and snapshots (fixed: ids must be the same in
/// every process, every release).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0xf9ae2d74_afb8_45df_a0db_34a791777cb3);

/// Why an aggregate type or id cannot name a stream.
///
/// ```
/// use quiver_cqrs::{event_stream, NameError};
/// assert_eq!(event_stream("", "1"), Err(NameError::EmptyType));
/// assert_eq!(event_stream("$order", "1"), Err(NameError::Reserved("$order".into())));
/// match event_stream("order", "line\n1") {
///     Err(e @ NameError::ControlCharacter(_)) => {
///         assert!(e.to_string().contains("control character"))
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The aggregate type is empty.
    #[error("the aggregate type is empty")]
    EmptyType,
    /// The aggregate type contains the separator `~`.
    #[error("aggregate type {0:?} contains '~', which separates type from id in stream names")]
    Separator(String),
    /// The aggregate type starts with `$`, which Quiver reserves.
    #[error("aggregate type {0:?} starts with '$', which Quiver reserves")]
    Reserved(String),
    /// The aggregate type or id holds a control character, which stream names may not.
    #[error("{0:?} contains a control character, which stream names may not")]
    ControlCharacter(String),
    /// The stream name would be longer than Quiver allows.
    #[error("stream name {name:?} is {len} bytes; Quiver allows {STREAM_NAME_BYTES_MAX}")]
    TooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
}

/// Checks that `aggregate_type` can name streams: not empty, no `~`, no leading `$`, no
/// control characters.
///
/// ```
/// use quiver_cqrs::{validate_aggregate_type, NameError};
/// // Check an application's aggregate types once, at start-up.
/// for aggregate_type in ["account", "order", "order-line"] {
///     validate_aggregate_type(aggregate_type).unwrap();
/// }
/// assert_eq!(
///     validate_aggregate_type("bank~account"),
///     Err(NameError::Separator("bank~account".into()))
/// );
/// ```
pub fn validate_aggregate_type(aggregate_type: &str) -> Result<(), NameError> {
    if aggregate_type.is_empty() {
        return Err(NameError::EmptyType);
    }
    if aggregate_type.contains(SEPARATOR) {
        return Err(NameError::Separator(aggregate_type.into()));
    }
    if aggregate_type.starts_with('$') {
        return Err(NameError::Reserved(aggregate_type.into()));
    }
    if aggregate_type.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter(aggregate_type.into()));
    }
    Ok(())
}

fn checked(name: String, aggregate_id: &str) -> Result<String, NameError> {
    if aggregate_id.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter(aggregate_id.into()));
    }
    if name.len() > STREAM_NAME_BYTES_MAX {
        let len = name.len();
        return Err(NameError::TooLong { name, len });
    }
    Ok(name)
}

/// The stream of an aggregate instance's events: `{aggregate_type}~{aggregate_id}`.
///
/// ```
/// assert_eq!(quiver_cqrs::event_stream("account", "42").unwrap(), "account~42");
/// assert!(quiver_cqrs::event_stream("a~b", "42").is_err());
/// ```
pub fn event_stream(aggregate_type: &str, aggregate_id: &str) -> Result<String, NameError> {
    validate_aggregate_type(aggregate_type)?;
    checked(
        format!("{aggregate_type}{SEPARATOR}{aggregate_id}"),
        aggregate_id,
    )
}

/// The stream of an aggregate instance's snapshots:
/// `~snapshot~{aggregate_type}~{aggregate_id}` (10 bytes longer than its event stream).
///
/// ```
/// use quiver_cqrs::{event_stream, snapshot_stream};
/// let snapshots = snapshot_stream("account", "42").unwrap();
/// assert_eq!(snapshots, "~snapshot~account~42");
/// assert_eq!(snapshots.len(), event_stream("account", "42").unwrap().len() + 10);
/// assert!(snapshot_stream("a~b", "42").is_err());
/// ```
pub fn snapshot_stream(aggregate_type: &str, aggregate_id: &str) -> Result<String, NameError> {
    validate_aggregate_type(aggregate_type)?;
    checked(
        format!("{SNAPSHOT_STREAM_PREFIX}{aggregate_type}{SEPARATOR}{aggregate_id}"),
        aggregate_id,
    )
}

/// The stream-name prefix that selects exactly the event streams of `aggregate_type`:
/// `{aggregate_type}~`. Use it with `ReadAllOptions::stream_prefix` or
/// `SubscribeAllOptions::stream_prefix` of `quiver_client`.
///
/// ```
/// let prefix = quiver_cqrs::aggregate_type_prefix("order").unwrap();
/// assert!(quiver_cqrs::event_stream("order", "1").unwrap().starts_with(&prefix));
/// assert!(!quiver_cqrs::event_stream("order-line", "1").unwrap().starts_with(&prefix));
/// ```
pub fn aggregate_type_prefix(aggregate_type: &str) -> Result<String, NameError> {
    validate_aggregate_type(aggregate_type)?;
    Ok(format!("{aggregate_type}{SEPARATOR}"))
}

/// Splits an event stream's name into (aggregate type, aggregate id); `None` for a name that
/// is not an event stream of this mapping (no `~`, or a snapshot stream).
///
/// ```
/// assert_eq!(quiver_cqrs::parse_event_stream("order~a~b"), Some(("order", "a~b")));
/// assert_eq!(quiver_cqrs::parse_event_stream("~snapshot~order~1"), None);
/// ```
pub fn parse_event_stream(stream: &str) -> Option<(&str, &str)> {
    let (aggregate_type, aggregate_id) = stream.split_once(SEPARATOR)?;
    validate_aggregate_type(aggregate_type).ok()?;
    Some((aggregate_type, aggregate_id))
}

/// Name of a v5 UUID: a kind byte, then each part with its length, so no two different
/// (kind, type, id, sequence) share a name.
fn id(kind: u8, aggregate_type: &str, aggregate_id: &str, sequence: u64) -> Uuid {
    let mut name = Vec::with_capacity(aggregate_type.len() + aggregate_id.len() + 25);
    name.push(kind);
    for part in [aggregate_type, aggregate_id] {
        name.extend_from_slice(&(part.len() as u64).to_be_bytes());
        name.extend_from_slice(part.as_bytes());
    }
    name.extend_from_slice(&sequence.to_be_bytes());
    Uuid::new_v5(&ID_NAMESPACE, &name)
}

/// The id of event `sequence` (cqrs-es numbering, from 1) of an aggregate instance: the same
/// in every process, so an append sent twice is recognised by the server.
///
/// ```
/// use quiver_cqrs::event_id;
/// // The first event of account 42, stored at version 0 of the stream `account~42`.
/// let first = event_id("account", "42", 1);
/// assert_eq!(first, event_id("account", "42", 1));
/// assert_ne!(first, event_id("account", "42", 2));
/// assert_ne!(first, event_id("account", "43", 1));
/// assert_eq!(first.get_version_num(), 5); // a name-based (v5) UUID
/// ```
pub fn event_id(aggregate_type: &str, aggregate_id: &str, sequence: usize) -> Uuid {
    id(b'e', aggregate_type, aggregate_id, sequence as u64)
}

/// The id of the snapshot event of an aggregate instance that covers its events up to
/// `sequence`.
///
/// ```
/// use quiver_cqrs::{event_id, snapshot_id};
/// // The snapshot of account 42 after its 3rd event: stable, and never an event's id.
/// let id = snapshot_id("account", "42", 3);
/// assert_eq!(id, snapshot_id("account", "42", 3));
/// assert_ne!(id, event_id("account", "42", 3));
/// assert_ne!(id, snapshot_id("account", "42", 6));
/// ```
pub fn snapshot_id(aggregate_type: &str, aggregate_id: &str, sequence: usize) -> Uuid {
    id(b's', aggregate_type, aggregate_id, sequence as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_never_collide_by_prefix() {
        let order = aggregate_type_prefix("order").unwrap();
        for (t, id) in [("order-line", "1"), ("orders", "1"), ("order", "")] {
            let stream = event_stream(t, id).unwrap();
            assert_eq!(stream.starts_with(&order), t == "order", "{stream}");
        }
        assert!(!snapshot_stream("order", "1").unwrap().starts_with(&order));
        assert_eq!(parse_event_stream("order~~x"), Some(("order", "~x")));
    }

    #[test]
    fn bad_types_and_ids_are_refused() {
        assert_eq!(event_stream("", "1"), Err(NameError::EmptyType));
        assert!(matches!(
            event_stream("a~b", "1"),
            Err(NameError::Separator(_))
        ));
        assert!(matches!(
            event_stream("$a", "1"),
            Err(NameError::Reserved(_))
        ));
        assert!(matches!(
            event_stream("a", "x\ny"),
            Err(NameError::ControlCharacter(_))
        ));
        let long = "x".repeat(250);
        assert!(event_stream("t", &long).is_ok());
        assert!(matches!(
            snapshot_stream("t", &long),
            Err(NameError::TooLong { len: 262, .. })
        ));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(event_id("a", "1", 1), event_id("a", "1", 1));
        let ids = [
            event_id("a", "1", 1),
            event_id("a", "1", 2),
            event_id("a", "2", 1),
            event_id("b", "1", 1),
            event_id("a1", "", 1),
            snapshot_id("a", "1", 1),
        ];
        for (i, x) in ids.iter().enumerate() {
            for y in &ids[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_eq!(ids[0].get_version_num(), 5);
    }
}
