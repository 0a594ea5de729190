//! `Engine::plan`, what a Raft leader runs before it proposes a write: each kind of write is
//! validated against this log and encoded as the record to propose, a retry is found stored,
//! and nothing is written. Also `WriteOp::streams`, which the leader uses to keep two writes to
//! the same streams from being planned at once.

use quiver_engine::format::{decode_entry, Entry, EntryKind, RECORD_BODY_BYTES_MAX};
use quiver_engine::*;

fn open(dir: &std::path::Path) -> Engine {
    Engine::open(dir, EngineConfig::default().segment_bytes_max(64 * 1024)).unwrap()
}

fn ev(t: &str) -> EventData {
    EventData::json(t, &b"{}"[..])
}

fn write(stream: &str, expected: ExpectedVersion, events: Vec<EventData>) -> StreamWrite {
    StreamWrite {
        stream: stream.to_string(),
        expected,
        events,
    }
}

/// The plan's proposal, or a panic naming what it was instead.
fn proposal(plan: Result<Plan, AppendError>) -> (EntryKind, u32, Vec<u8>, AppendResult) {
    match plan {
        Ok(Plan::Propose {
            kind,
            count,
            body,
            result,
        }) => (kind, count, body, result),
        other => panic!("expected a proposal, got {other:?}"),
    }
}

#[test]
fn streams_lists_every_stream_a_write_touches() {
    let writes = [
        write("a", ExpectedVersion::Any, vec![ev("A")]),
        write("b", ExpectedVersion::Any, vec![ev("B")]),
        write("c", ExpectedVersion::Any, vec![ev("C")]),
    ];
    let append = WriteOp::Append(&writes);
    assert_eq!(append.streams().collect::<Vec<_>>(), ["a", "b", "c"]);
    let metadata = StreamMetadata::default();
    let ops = [
        WriteOp::Delete {
            stream: "d",
            expected: ExpectedVersion::Any,
            kind: DeleteKind::Soft,
        },
        WriteOp::SetMetadata {
            stream: "d",
            metadata: &metadata,
        },
        WriteOp::PutSnapshot {
            stream: "d",
            version: 1,
            data: b"x",
        },
        WriteOp::DeleteSnapshot {
            stream: "d",
            version: 1,
        },
    ];
    for op in ops {
        assert_eq!(op.streams().collect::<Vec<_>>(), ["d"], "{op:?}");
    }
}

#[test]
fn every_kind_of_write_has_its_stream_name_checked() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let metadata = StreamMetadata::default();
    for (name, why) in [("$all", NameError::Reserved), ("", NameError::Empty)] {
        let writes = [write(name, ExpectedVersion::Any, vec![ev("A")])];
        let ops = [
            WriteOp::Append(&writes),
            WriteOp::Delete {
                stream: name,
                expected: ExpectedVersion::Any,
                kind: DeleteKind::Hard,
            },
            WriteOp::SetMetadata {
                stream: name,
                metadata: &metadata,
            },
            WriteOp::PutSnapshot {
                stream: name,
                version: 0,
                data: b"x",
            },
            WriteOp::DeleteSnapshot {
                stream: name,
                version: 0,
            },
        ];
        for op in ops {
            match e.plan(&op) {
                Err(AppendError::InvalidStreamName { name: n, source }) => {
                    assert_eq!((n.as_str(), source), (name, why.clone()), "{op:?}");
                }
                other => panic!("{op:?}: expected an invalid name, got {other:?}"),
            }
        }
    }
    assert_eq!(e.last_index_term(), (0, 0), "planning writes nothing");
}

#[test]
fn a_plan_checks_expected_versions_and_assigns_versions_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    e.append("a", ExpectedVersion::NoStream, vec![ev("A"), ev("B")])
        .unwrap();
    e.append("other", ExpectedVersion::NoStream, vec![ev("C")])
        .unwrap();
    let stale = [write("a", ExpectedVersion::Exact(0), vec![ev("D")])];
    match e.plan(&WriteOp::Append(&stale)) {
        Err(AppendError::WrongExpectedVersion { stream, actual, .. }) => {
            assert_eq!((stream.as_str(), actual), ("a", Some(1)))
        }
        other => panic!("expected a wrong expected version, got {other:?}"),
    }
    let delete = WriteOp::Delete {
        stream: "a",
        expected: ExpectedVersion::NoStream,
        kind: DeleteKind::Soft,
    };
    assert!(
        matches!(
            e.plan(&delete),
            Err(AppendError::WrongExpectedVersion {
                actual: Some(1),
                ..
            })
        ),
        "a delete checks its expected version"
    );

    let current = [write(
        "a",
        ExpectedVersion::Exact(1),
        vec![ev("D"), ev("E")],
    )];
    let (kind, count, body, result) = proposal(e.plan(&WriteOp::Append(&current)));
    assert_eq!((kind, count), (EntryKind::Append, 2));
    assert_eq!(
        result,
        AppendResult {
            next_expected_version: 3,
            position_first: 3,
            position_last: 4,
            index: 0,
            idempotent: false,
        }
    );
    let Entry::Append(view) = decode_entry(kind, &body).unwrap() else {
        panic!("not an append body")
    };
    assert_eq!(view.streams, ["a"]);
    let versions: Vec<u64> = view
        .events()
        .map(|x| x.unwrap().header.version.get())
        .collect();
    assert_eq!(versions, [2, 3]);

    let delete = WriteOp::Delete {
        stream: "a",
        expected: ExpectedVersion::Exact(1),
        kind: DeleteKind::Hard,
    };
    let (kind, count, body, _) = proposal(e.plan(&delete));
    assert_eq!((kind, count), (EntryKind::Delete, 0));
    assert!(matches!(
        decode_entry(kind, &body).unwrap(),
        Entry::Delete {
            stream: "a",
            kind: DeleteKind::Hard,
            next_version: 2,
        }
    ));
    assert_eq!(e.last_index_term().0, 2, "planning writes nothing");

    e.delete_stream("a", ExpectedVersion::Any, DeleteKind::Hard)
        .unwrap();
    let metadata = StreamMetadata::default();
    let set = WriteOp::SetMetadata {
        stream: "a",
        metadata: &metadata,
    };
    assert!(
        matches!(e.plan(&set), Err(AppendError::StreamDeleted(s)) if s == "a"),
        "a hard-deleted stream takes no metadata"
    );
}

#[test]
fn a_retry_plans_as_stored_with_its_record_index_and_term() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    e.put_noop().unwrap();
    e.set_term(3);
    let writes = vec![
        write("a", ExpectedVersion::NoStream, vec![ev("A"), ev("B")]),
        write("b", ExpectedVersion::NoStream, vec![ev("C")]),
    ];
    let stored = e.append_multi(writes.clone()).unwrap();
    assert_eq!(stored.index, 2);
    e.set_term(5);
    e.put_noop().unwrap();
    let expected = AppendResult {
        next_expected_version: 0,
        position_first: 0,
        position_last: 2,
        index: 2,
        idempotent: true,
    };
    assert_eq!(
        e.plan(&WriteOp::Append(&writes)).unwrap(),
        Plan::Stored {
            result: expected,
            term: 3
        }
    );
    // The same retry listing its streams the other way round: the same events, the same
    // positions; the version answered is the last stream's.
    let reversed = [writes[1].clone(), writes[0].clone()];
    assert_eq!(
        e.plan(&WriteOp::Append(&reversed)).unwrap(),
        Plan::Stored {
            result: AppendResult {
                next_expected_version: 1,
                ..expected
            },
            term: 3
        }
    );
    assert_eq!(e.last_index_term(), (3, 5), "planning writes nothing");
}

#[test]
fn an_append_may_name_up_to_65535_streams() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let mut writes: Vec<StreamWrite> = (0..u16::MAX)
        .map(|i| write(&format!("s{i}"), ExpectedVersion::NoStream, vec![ev("E")]))
        .collect();
    let (kind, count, body, result) = proposal(e.plan(&WriteOp::Append(&writes)));
    assert_eq!((kind, count), (EntryKind::Append, 65535));
    assert_eq!((result.position_first, result.position_last), (0, 65534));
    let Entry::Append(view) = decode_entry(kind, &body).unwrap() else {
        panic!("not an append body")
    };
    assert_eq!(view.streams.len(), 65535);
    assert_eq!(view.streams[65534], "s65534");

    writes.push(write("one-more", ExpectedVersion::NoStream, vec![ev("E")]));
    assert!(matches!(
        e.plan(&WriteOp::Append(&writes)),
        Err(AppendError::InvalidRequest(_))
    ));
}

#[test]
fn a_body_of_exactly_the_size_limit_is_planned_and_one_byte_more_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    // One event with a long type and metadata as large as its data: each part counts.
    let event_type = "T".repeat(100);
    let metadata = vec![b'm'; RECORD_BODY_BYTES_MAX / 2];
    // The body: the stream table (2 + 1 + 3 + 4 bytes), a 48-byte event header, the type,
    // the data and the metadata.
    let data_len = RECORD_BODY_BYTES_MAX - 10 - 48 - event_type.len() - metadata.len();
    let event = |data_len: usize| EventData {
        metadata: metadata.clone().into(),
        ..EventData::binary(event_type.clone(), vec![b'd'; data_len])
    };
    let fits = [write("big", ExpectedVersion::Any, vec![event(data_len)])];
    let (kind, count, body, _) = proposal(e.plan(&WriteOp::Append(&fits)));
    assert_eq!(
        (kind, count, body.len()),
        (EntryKind::Append, 1, RECORD_BODY_BYTES_MAX)
    );
    let Entry::Append(view) = decode_entry(kind, &body).unwrap() else {
        panic!("not an append body")
    };
    let stored = view.events().next().unwrap().unwrap();
    assert_eq!(stored.event_type, event_type);
    assert_eq!(
        (stored.data_range.len(), stored.meta_range.len()),
        (data_len, metadata.len())
    );
    drop(body);

    let over = [write(
        "big",
        ExpectedVersion::Any,
        vec![event(data_len + 1)],
    )];
    match e.plan(&WriteOp::Append(&over)) {
        Err(AppendError::TooLarge { bytes, max }) => {
            assert_eq!(max, RECORD_BODY_BYTES_MAX);
            assert!(bytes > max, "{bytes}");
        }
        other => panic!("expected too large, got {other:?}"),
    }
}

#[test]
fn an_empty_snapshot_of_a_short_stream_is_planned_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let put = WriteOp::PutSnapshot {
        stream: "s",
        version: 4,
        data: b"",
    };
    let (kind, count, body, _) = proposal(e.plan(&put));
    assert_eq!((kind, count), (EntryKind::SnapshotPut, 0));
    match decode_entry(kind, &body).unwrap() {
        Entry::SnapshotPut {
            stream,
            version,
            data_range,
        } => assert_eq!((stream, version, data_range.len()), ("s", 4, 0)),
        other => panic!("not a snapshot put: {other:?}"),
    }
    e.put_snapshot("s", 4, b"").unwrap();
    let got = e.get_snapshot("s", 4).unwrap().expect("stored");
    assert!(got.data.is_empty());
}
