//! How cqrs-es's serialized events and snapshots are stored in Quiver events, and read back.
//!
//! An event's Quiver type is its cqrs-es `event_type`; its data is the JSON `payload`; its
//! metadata is the JSON envelope `{"event_version": …, "metadata": …, "commit": …}`, which
//! carries cqrs-es's `event_version` and `metadata` as given, and the id of the `persist`
//! call that wrote it (to tell its own retry from another writer's events, see
//! `QuiverEventRepository::persist`). Its version in the stream is its cqrs-es `sequence`
//! minus 1 (cqrs-es counts from 1, Quiver from 0).

use cqrs_es::persist::{PersistenceError, SerializedEvent, SerializedSnapshot};
use quiver_client::{EventData, RecordedEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::names::{self, SNAPSHOT_EVENT_TYPE};

/// The metadata of a stored event.
#[derive(Serialize, Deserialize)]
struct Envelope {
    event_version: String,
    metadata: Value,
    /// The `persist` call that wrote it.
    commit: String,
}

/// The data of a stored snapshot.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    aggregate: Value,
    current_sequence: usize,
    current_snapshot: usize,
}

pub(crate) fn unknown(message: impl Into<String>) -> PersistenceError {
    PersistenceError::UnknownError(message.into().into())
}

fn undecodable(message: String) -> PersistenceError {
    PersistenceError::DeserializationError(message.into())
}

/// The Quiver event that stores `event`, written by `persist` call `commit`.
pub(crate) fn event_data(
    event: &SerializedEvent,
    commit: Uuid,
) -> Result<EventData, PersistenceError> {
    let envelope = Envelope {
        event_version: event.event_version.clone(),
        metadata: event.metadata.clone(),
        commit: commit.to_string(),
    };
    let data = EventData::json(
        event.event_type.clone(),
        serde_json::to_vec(&event.payload)?,
    )
    .id(names::event_id(
        &event.aggregate_type,
        &event.aggregate_id,
        event.sequence,
    ))
    .metadata(serde_json::to_vec(&envelope)?);
    Ok(data)
}

/// The `persist` call that wrote a stored event.
pub(crate) fn commit_of(event: &RecordedEvent) -> Option<String> {
    serde_json::from_slice::<Envelope>(&event.metadata)
        .ok()
        .map(|e| e.commit)
}

/// The cqrs-es event a Quiver event of an aggregate's stream holds: aggregate type and id
/// from the stream's name, `sequence` = version + 1, `event_type`, `event_version`, `payload`
/// and `metadata` as they were given to `persist`.
///
/// Use it to feed events from `quiver_client` subscriptions (live projections) to cqrs-es
/// queries. The event's data must be JSON, and its metadata the envelope `persist` writes:
/// `{"event_version": …, "metadata": …, "commit": …}`. Anything else, and an event of a
/// stream that is no aggregate's (a snapshot stream, say), is an error.
///
/// ```
/// use quiver_client::{Bytes, Position, RecordedEvent, StreamVersion};
/// use quiver_cqrs::{event_id, serialized_event};
///
/// // The third event of account 42, as a subscription to `$all` delivers it; its metadata
/// // is the envelope `persist` wrote.
/// let envelope = serde_json::json!({
///     "event_version": "1.0",
///     "metadata": { "teller": "t-7" },
///     "commit": "0b9c4f31-5d0e-4f53-9a0c-2f4b8e1d6a77",
/// });
/// let recorded = RecordedEvent {
///     stream: "account~42".into(),
///     version: StreamVersion(2),
///     position: Position(1_207),
///     id: event_id("account", "42", 3),
///     event_type: "Deposited".into(),
///     json: true,
///     data: Bytes::from_static(br#"{"Deposited":{"amount":50}}"#),
///     metadata: Bytes::from(serde_json::to_vec(&envelope).unwrap()),
///     created_us: 1_700_000_000_000_000,
/// };
/// let event = serialized_event(&recorded).unwrap();
/// assert_eq!((event.aggregate_type.as_str(), event.aggregate_id.as_str()), ("account", "42"));
/// assert_eq!(event.sequence, 3); // cqrs-es counts from 1
/// assert_eq!(event.event_version, "1.0");
/// assert_eq!(event.payload["Deposited"]["amount"], 50);
/// assert_eq!(event.metadata["teller"], "t-7");
///
/// // The same event in a stream that is no aggregate's is refused.
/// let elsewhere = RecordedEvent { stream: "~snapshot~account~42".into(), ..recorded };
/// assert!(serialized_event(&elsewhere).is_err());
/// ```
pub fn serialized_event(event: &RecordedEvent) -> Result<SerializedEvent, PersistenceError> {
    let (aggregate_type, aggregate_id) = names::parse_event_stream(&event.stream)
        .ok_or_else(|| undecodable(format!("{:?} is not an aggregate's stream", event.stream)))?;
    let payload: Value = serde_json::from_slice(&event.data)?;
    let envelope: Envelope = serde_json::from_slice(&event.metadata).map_err(|e| {
        undecodable(format!(
            "event {} of {:?}: its metadata is not a cqrs event's envelope: {e}",
            event.version, event.stream
        ))
    })?;
    let sequence = usize::try_from(event.version.get() + 1)
        .map_err(|_| undecodable(format!("version {} too large", event.version)))?;
    Ok(SerializedEvent {
        aggregate_id: aggregate_id.to_string(),
        sequence,
        aggregate_type: aggregate_type.to_string(),
        event_type: event.event_type.clone(),
        event_version: envelope.event_version,
        payload,
        metadata: envelope.metadata,
    })
}

/// The Quiver event that stores a snapshot of an aggregate instance up to `sequence`.
pub(crate) fn snapshot_data(
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: usize,
    current_snapshot: usize,
    aggregate: Value,
) -> Result<EventData, PersistenceError> {
    let snapshot = Snapshot {
        aggregate,
        current_sequence: sequence,
        current_snapshot,
    };
    Ok(
        EventData::json(SNAPSHOT_EVENT_TYPE, serde_json::to_vec(&snapshot)?)
            .id(names::snapshot_id(aggregate_type, aggregate_id, sequence)),
    )
}

/// The snapshot a snapshot stream's event holds.
pub(crate) fn serialized_snapshot(
    aggregate_id: &str,
    event: &RecordedEvent,
) -> Result<SerializedSnapshot, PersistenceError> {
    let s: Snapshot = serde_json::from_slice(&event.data)?;
    Ok(SerializedSnapshot {
        aggregate_id: aggregate_id.to_string(),
        aggregate: s.aggregate,
        current_sequence: s.current_sequence,
        current_snapshot: s.current_snapshot,
    })
}
