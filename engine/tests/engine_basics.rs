//! Behaviour of the public API on a real directory: appends with every expected-version kind,
//! reads in both directions, deletes, metadata, snapshots, checkpoints, reopen.

use quiver_engine::*;

fn open(dir: &std::path::Path) -> Engine {
    Engine::open(dir, EngineConfig::default().segment_bytes_max(64 * 1024)).unwrap()
}

fn ev(t: &str, data: &str) -> EventData {
    EventData::json(t, data.as_bytes().to_vec())
}

fn versions(r: StreamRead) -> Vec<u64> {
    r.map(|e| e.unwrap().version).collect()
}

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let r = e
        .append(
            "s-1",
            ExpectedVersion::NoStream,
            vec![ev("A", "1"), ev("B", "2")],
        )
        .unwrap();
    assert_eq!(
        (r.next_expected_version, r.position_first, r.position_last),
        (1, 0, 1)
    );
    let r = e
        .append("s-2", ExpectedVersion::Any, vec![ev("C", "3")])
        .unwrap();
    assert_eq!(r.position_first, 2);
    let err = e
        .append("s-1", ExpectedVersion::Exact(0), vec![ev("A", "x")])
        .unwrap_err();
    assert!(
        matches!(
            err,
            AppendError::WrongExpectedVersion {
                actual: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
    e.append("s-1", ExpectedVersion::Exact(1), vec![ev("D", "4")])
        .unwrap();
    e.append("s-1", ExpectedVersion::StreamExists, vec![ev("E", "5")])
        .unwrap();
    let got: Vec<_> = e
        .read_stream("s-1", ReadFrom::Start, Direction::Forward, 100)
        .unwrap()
        .map(|x| x.unwrap())
        .collect();
    assert_eq!(
        got.iter().map(|x| x.event_type()).collect::<Vec<_>>(),
        ["A", "B", "D", "E"]
    );
    assert_eq!(&got[2].data[..], b"4");
    let back = versions(
        e.read_stream("s-1", ReadFrom::End, Direction::Backward, 2)
            .unwrap(),
    );
    assert_eq!(back, [3, 2]);
    let all: Vec<u64> = e
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            100,
            AllFilter::default(),
        )
        .map(|x| x.unwrap().position)
        .collect();
    assert_eq!(all, [0, 1, 2, 3, 4]);
    let all_back: Vec<u64> = e
        .read_all(
            ReadFrom::End,
            Direction::Backward,
            100,
            AllFilter::default(),
        )
        .map(|x| x.unwrap().position)
        .collect();
    assert_eq!(all_back, [4, 3, 2, 1, 0]);
    drop(e);
    let e = open(dir.path());
    assert_eq!(
        versions(
            e.read_stream("s-1", ReadFrom::Start, Direction::Forward, 100)
                .unwrap()
        ),
        [0, 1, 2, 3]
    );
    assert_eq!(e.stream_info("s-2").unwrap().current_version, Some(0));
    let r = e
        .append("s-2", ExpectedVersion::Exact(0), vec![ev("F", "6")])
        .unwrap();
    assert_eq!(r.position_first, 5);
}

#[test]
fn many_segments_and_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    for i in 0..300u64 {
        let evs = (0..10)
            .map(|k| ev("T", &format!("{i}-{k}-{}", "x".repeat(200))))
            .collect();
        e.append(&format!("s-{}", i % 7), ExpectedVersion::Any, evs)
            .unwrap();
    }
    let total = e
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            u64::MAX,
            AllFilter::default(),
        )
        .count();
    assert_eq!(total, 3000);
    drop(e);
    let e = open(dir.path());
    let stats = e.open_stats();
    assert!(stats.summaries_loaded > 5, "{stats:?}");
    assert!(stats.records_replayed < 300, "{stats:?}");
    let v = versions(
        e.read_stream("s-3", ReadFrom::Start, Direction::Forward, u64::MAX)
            .unwrap(),
    );
    assert_eq!(v, (0..v.len() as u64).collect::<Vec<_>>());
    let total = e
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            u64::MAX,
            AllFilter::default(),
        )
        .count();
    assert_eq!(total, 3000);
}

#[test]
fn a_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let second = Engine::open(dir.path(), EngineConfig::default());
    assert!(matches!(second, Err(OpenError::Locked(_))));
    drop(e);
    assert!(Engine::open(dir.path(), EngineConfig::default()).is_ok());
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let big = EventData::binary("Big", vec![7u8; 200 * 1024]);
    e.append("big", ExpectedVersion::NoStream, vec![big.clone()])
        .unwrap();
    e.append("small", ExpectedVersion::NoStream, vec![ev("S", "1")])
        .unwrap();
    e.append(
        "big",
        ExpectedVersion::Exact(0),
        vec![EventData {
            id: Uuid::new_v4(),
            ..big
        }],
    )
    .unwrap();
    drop(e);
    let e = open(dir.path());
    let got: Vec<_> = e
        .read_stream("big", ReadFrom::Start, Direction::Forward, 10)
        .unwrap()
        .map(|x| x.unwrap())
        .collect();
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|x| x.data.len() == 200 * 1024 && x.data.iter().all(|b| *b == 7)));
    assert_eq!(e.verify().unwrap().records, 3);
}

#[test]
fn checkpoints_by_prefix_keep_the_latest_per_name() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    e.put_checkpoint("psub/a", 1, b"a1").unwrap();
    e.put_checkpoint("psub/b", 2, b"b2").unwrap();
    e.put_checkpoint("other", 3, b"o3").unwrap();
    e.put_checkpoint("psub/a", 7, b"a7").unwrap();
    e.put_checkpoint("psuc", 4, b"x").unwrap();
    let got: Vec<(String, u64, Vec<u8>)> = e
        .checkpoints("psub/")
        .into_iter()
        .map(|(n, p, s)| (n, p, s.to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("psub/a".to_string(), 7, b"a7".to_vec()),
            ("psub/b".to_string(), 2, b"b2".to_vec()),
        ]
    );
    assert_eq!(e.checkpoints("").len(), 4);
    assert!(e.checkpoints("zzz").is_empty());
    drop(e);
    let e = open(dir.path());
    assert_eq!(
        e.checkpoints("psub/").len(),
        2,
        "checkpoints survive a reopen"
    );
    assert_eq!(e.checkpoints("psub/a")[0].1, 7);
}

#[test]
fn a_multi_stream_append_retrying_only_some_of_its_writes_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let stored = ev("A", "1");
    e.append("a", ExpectedVersion::NoStream, vec![stored.clone()])
        .unwrap();
    let write = |stream: &str, event: &EventData| StreamWrite {
        stream: stream.to_string(),
        expected: ExpectedVersion::Any,
        events: vec![event.clone()],
    };
    let fresh = ev("B", "2");
    // Either order: the error names the append's first stream.
    for (writes, first) in [
        (vec![write("a", &stored), write("b", &fresh)], "a"),
        (vec![write("b", &fresh), write("a", &stored)], "b"),
    ] {
        match e.append_multi(writes) {
            Err(AppendError::IdempotencyMismatch(s)) => assert_eq!(s, first),
            other => panic!("expected an idempotency mismatch, got {other:?}"),
        }
    }
    assert!(e.stream_info("b").is_none(), "nothing was written");
    assert_eq!(
        versions(
            e.read_stream("a", ReadFrom::Start, Direction::Forward, 10)
                .unwrap()
        ),
        [0]
    );
}
