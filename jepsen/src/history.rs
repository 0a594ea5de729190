//! The history format: one [`Event`] per line of JSON (JSON lines), written by the harness and
//! read by the checker. An operation is an `invoke` event followed, on the same process, by
//! exactly one completion: `ok` (it happened), `fail` (it definitely did not happen) or `info`
//! (unknown: it may or may not have happened, now or later). `docs/CONSISTENCY.md` describes
//! the format for people; this module is its definition.
//!
//! The list-append workload (`f = "txn"`) carries a list of [`MicroOp`]s as its value:
//! `["append", key, element]` and `["r", key, null]` on invoke, `["r", key, [elements…]]` on ok.

use std::fmt;
use std::io::{BufRead, Write};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// The `f` of a list-append transaction.
pub const F_TXN: &str = "txn";

/// What an event says about its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation begins.
    Invoke,
    /// The operation happened; its value holds its results (the elements each read saw).
    Ok,
    /// The operation definitely did not happen (the server refused it before any effect).
    Fail,
    /// Unknown: a timeout, a crash, a lost connection. It may have happened, or may yet.
    Info,
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history: strictly increasing. The harness assigns it under one lock, so
    /// index order is real-time order.
    pub index: u64,
    /// Invoke or one of the three completions.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The logical client doing the operation; one operation at a time per process, and a new
    /// process id after an `info`.
    pub process: u64,
    /// Monotonic nanoseconds since the run began (non-decreasing along the history).
    pub time_ns: u64,
    /// Unix milliseconds, for people and for lining events up with server logs.
    pub wall_ms: u64,
    /// The operation's function: [`F_TXN`] for list-append; other workloads add their own.
    pub f: String,
    /// The operation's value: for `txn`, a list of micro-ops (see [`Event::txn`]).
    pub value: serde_json::Value,
    /// Why a `fail` or `info` happened, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Event {
    /// This event's value read as a list-append transaction.
    pub fn txn(&self) -> Result<Vec<MicroOp>, serde_json::Error> {
        Vec::<MicroOp>::deserialize(&self.value)
    }
}

/// One step of a list-append transaction. Keys are stream names; elements are integers that
/// the generator never appends twice to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MicroOp {
    /// `["append", key, element]`: append one element at the end of the key's list.
    Append {
        /// The stream.
        key: String,
        /// The element appended (an event of the stream).
        element: u64,
    },
    /// `["r", key, null]` on invoke, `["r", key, [elements…]]` on ok: a full read, in order.
    Read {
        /// The stream.
        key: String,
        /// The whole list as read, or `None` when unknown (invoke, fail, info).
        elements: Option<Vec<u64>>,
    },
}

impl MicroOp {
    /// An append micro-op.
    pub fn append(key: impl Into<String>, element: u64) -> Self {
        MicroOp::Append {
            key: key.into(),
            element,
        }
    }

    /// A read micro-op with its result (`None` for an invoke).
    pub fn read(key: impl Into<String>, elements: Option<Vec<u64>>) -> Self {
        MicroOp::Read {
            key: key.into(),
            elements,
        }
    }

    /// The key this micro-op touches.
    pub fn key(&self) -> &str {
        match self {
            MicroOp::Append { key, .. } | MicroOp::Read { key, .. } => key,
        }
    }
}

impl Serialize for MicroOp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        match self {
            MicroOp::Append { key, element } => {
                t.serialize_element("append")?;
                t.serialize_element(key)?;
                t.serialize_element(element)?;
            }
            MicroOp::Read { key, elements } => {
                t.serialize_element("r")?;
                t.serialize_element(key)?;
                t.serialize_element(elements)?;
            }
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for MicroOp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MicroOp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"["append", key, element] or ["r", key, null | [elements...]]"#)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MicroOp, A::Error> {
                let f: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let key: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let op = match f.as_str() {
                    "append" => {
                        let element: u64 = seq
                            .next_element()?
                            .ok_or_else(|| de::Error::invalid_length(2, &self))?;
                        MicroOp::Append { key, element }
                    }
                    "r" => {
                        let elements: Option<Vec<u64>> = seq
                            .next_element()?
                            .ok_or_else(|| de::Error::invalid_length(2, &self))?;
                        MicroOp::Read { key, elements }
                    }
                    other => {
                        return Err(de::Error::unknown_variant(other, &["append", "r"]));
                    }
                };
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                Ok(op)
            }
        }
        d.deserialize_seq(V)
    }
}

/// A whole history, in index order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The events, as recorded.
    pub events: Vec<Event>,
}

/// A history file that cannot be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// A line is not an event; `line` counts from 1.
    Json {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        error: serde_json::Error,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "reading the history: {e}"),
            ReadError::Json { line, error } => write!(f, "history line {line}: {error}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl History {
    /// Reads JSON lines; blank lines are skipped.
    pub fn read_jsonl(r: impl BufRead) -> Result<History, ReadError> {
        let mut events = Vec::new();
        for (i, line) in r.lines().enumerate() {
            let line = line.map_err(ReadError::Io)?;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str(&line)
                .map_err(|error| ReadError::Json { line: i + 1, error })?;
            events.push(event);
        }
        Ok(History { events })
    }

    /// Writes one event per line.
    pub fn write_jsonl(&self, mut w: impl Write) -> std::io::Result<()> {
        for e in &self.events {
            serde_json::to_writer(&mut w, e)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_in_the_documented_shape() {
        let line = r#"{"index":3,"type":"ok","process":2,"time_ns":10,"wall_ms":1700000000000,"f":"txn","value":[["append","a",1],["r","b",[4,5]],["r","c",null]]}"#;
        let e: Event = serde_json::from_str(line).unwrap();
        assert_eq!(e.kind, EventType::Ok);
        assert_eq!(
            e.txn().unwrap(),
            vec![
                MicroOp::append("a", 1),
                MicroOp::read("b", Some(vec![4, 5])),
                MicroOp::read("c", None)
            ]
        );
        assert_eq!(serde_json::to_string(&e).unwrap(), line);
        let info = r#"{"index":4,"type":"info","process":2,"time_ns":11,"wall_ms":1,"f":"txn","value":null,"error":"timeout"}"#;
        let e: Event = serde_json::from_str(info).unwrap();
        assert_eq!(e.error.as_deref(), Some("timeout"));
        assert_eq!(serde_json::to_string(&e).unwrap(), info);
    }

    #[test]
    fn malformed_micro_ops_are_refused() {
        for bad in [
            r#"[["write","a",1]]"#,
            r#"[["append","a"]]"#,
            r#"[["append","a",1,2]]"#,
            r#"[["append","a",-1]]"#,
            r#"[["r","a",[1,"x"]]]"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(bad).unwrap();
            assert!(Vec::<MicroOp>::deserialize(&v).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn jsonl_reading_names_the_bad_line() {
        let text = "{\"index\":0,\"type\":\"invoke\",\"process\":0,\"time_ns\":0,\"wall_ms\":0,\"f\":\"txn\",\"value\":[]}\n\nnot json\n";
        match History::read_jsonl(text.as_bytes()) {
            Err(ReadError::Json { line: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
