use quiver_engine::*;

fn ev(t: &str, n: usize) -> EventData {
    EventData::json(t, vec![b'x'; n])
}
fn cfg() -> EngineConfig {
    EngineConfig::default().segment_bytes_max(8 * 1024)
}

#[test]
fn probe_retry_trailing() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), cfg()).unwrap();
    let a = ev("A", 10);
    e.append("s", ExpectedVersion::Any, vec![a.clone()])
        .unwrap();
    let r = e.append("s", ExpectedVersion::Any, vec![a, ev("B", 10)]);
    println!("{r:?}");
}

#[test]
fn probe_soft_delete_scavenge_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), cfg()).unwrap();
    e.append(
        "s",
        ExpectedVersion::Any,
        vec![ev("A", 10), ev("A", 10), ev("A", 10)],
    )
    .unwrap();
    e.delete_stream("s", ExpectedVersion::Any, DeleteKind::Soft)
        .unwrap();
    for _ in 0..10 {
        e.append("o", ExpectedVersion::Any, vec![ev("A", 3000)])
            .unwrap();
    }
    let st = e.scavenge().unwrap();
    println!("{st:?}");
    println!(
        "before reopen {:?}",
        e.append("s", ExpectedVersion::Exact(2), vec![ev("A", 1)])
            .map(|r| r.next_expected_version)
    );
    drop(e);
    let e = Engine::open(dir.path(), cfg()).unwrap();
    println!("{:?}", e.stream_info("s"));
    println!(
        "after reopen Exact(3) {:?}",
        e.append("s", ExpectedVersion::Exact(3), vec![ev("A", 1)])
    );
}

#[test]
fn probe_soft_delete_scavenge_reopen2() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), cfg()).unwrap();
    e.append(
        "s",
        ExpectedVersion::Any,
        vec![ev("A", 10), ev("A", 10), ev("A", 10)],
    )
    .unwrap();
    e.delete_stream("s", ExpectedVersion::Any, DeleteKind::Soft)
        .unwrap();
    for _ in 0..10 {
        e.append("o", ExpectedVersion::Any, vec![ev("A", 3000)])
            .unwrap();
    }
    let st = e.scavenge().unwrap();
    println!("{st:?}");
    drop(e);
    let e = Engine::open(dir.path(), cfg()).unwrap();
    println!(
        "after reopen Exact(2) {:?}",
        e.append("s", ExpectedVersion::Exact(2), vec![ev("A", 1)])
    );
    println!(
        "after reopen NoStream {:?}",
        e.append("s", ExpectedVersion::NoStream, vec![ev("A", 1)])
    );
}

#[test]
fn probe_relax_after_scavenge() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), cfg()).unwrap();
    e.append(
        "s",
        ExpectedVersion::Any,
        vec![ev("A", 10), ev("A", 10), ev("A", 10)],
    )
    .unwrap();
    e.set_metadata(
        "s",
        StreamMetadata {
            truncate_before: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    e.scavenge().unwrap(); // nothing sealed: nothing rewritten
    e.set_metadata("s", StreamMetadata::default()).unwrap();
    let a: Vec<u64> = e
        .read_stream("s", ReadFrom::Start, Direction::Forward, 100)
        .unwrap()
        .map(|x| x.unwrap().version)
        .collect();
    let b: Vec<u64> = e
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            100,
            AllFilter::default(),
        )
        .map(|x| x.unwrap().version)
        .collect();
    println!("stream {a:?} all {b:?}");
    drop(e);
    let e = Engine::open(dir.path(), cfg()).unwrap();
    let a: Vec<u64> = e
        .read_stream("s", ReadFrom::Start, Direction::Forward, 100)
        .unwrap()
        .map(|x| x.unwrap().version)
        .collect();
    println!("after reopen stream {a:?}");
}
