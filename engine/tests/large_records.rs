//! Reads that walk a record too large to hold decoded: one append of thousands of events
//! across several streams, read forward and backward, by stream and through `$all` with
//! filters, from starting points inside it (on and off the cursor's marks), against a model.

use quiver_engine::*;

/// (stream, version, position, data) of an event, as the model and the reads see it.
type Seen = (String, u64, u64, Vec<u8>);

fn seen(e: RecordedEvent) -> Seen {
    (e.stream.to_string(), e.version, e.position, e.data.to_vec())
}

const PER_STREAM: u64 = 1_500;

/// A small record, a large one (three streams of `PER_STREAM` events), a small one.
fn store(dir: &std::path::Path) -> (Engine, Vec<Seen>) {
    let e = Engine::open(dir, EngineConfig::default()).unwrap();
    let mut model = Vec::new();
    let mut position = 0;
    let mut add = |model: &mut Vec<Seen>, stream: &str, version: u64, data: &[u8]| {
        model.push((stream.to_string(), version, position, data.to_vec()));
        position += 1;
    };
    e.append(
        "a",
        ExpectedVersion::NoStream,
        vec![EventData::binary("T", &b"first"[..])],
    )
    .unwrap();
    add(&mut model, "a", 0, b"first");
    let mut writes = Vec::new();
    for (s, first) in [("a", 1), ("b", 0), ("c", 0)] {
        let mut events = Vec::new();
        for v in first..first + PER_STREAM {
            let data = format!("{s}-{v}").into_bytes();
            add(&mut model, s, v, &data);
            events.push(EventData::binary(
                if v % 2 == 0 { "Even" } else { "Odd" },
                data,
            ));
        }
        writes.push(StreamWrite {
            stream: s.into(),
            expected: ExpectedVersion::Any,
            events,
        });
    }
    e.append_multi(writes).unwrap();
    e.append(
        "b",
        ExpectedVersion::Any,
        vec![EventData::binary("T", &b"last"[..])],
    )
    .unwrap();
    add(&mut model, "b", PER_STREAM, b"last");
    (e, model)
}

/// Starting points: both ends, each side of a mark, and the middle of the big record.
fn starts(n: u64) -> Vec<u64> {
    let mut s = vec![
        0,
        1,
        2,
        63,
        64,
        65,
        127,
        128,
        129,
        700,
        n / 2,
        n - 2,
        n - 1,
        n,
        n + 5,
    ];
    s.retain(|&x| x <= n + 5);
    s
}

#[test]
fn stream_reads_inside_a_large_record_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (e, model) = store(dir.path());
    for stream in ["a", "b", "c"] {
        let events: Vec<&Seen> = model.iter().filter(|m| m.0 == stream).collect();
        let n = events.len() as u64;
        for from in starts(n) {
            for max in [1, 3, 600, u64::MAX] {
                let fwd: Vec<Seen> = e
                    .read_stream(stream, ReadFrom::At(from), Direction::Forward, max)
                    .unwrap()
                    .map(|x| seen(x.unwrap()))
                    .collect();
                let want: Vec<Seen> = events
                    .iter()
                    .filter(|m| m.1 >= from)
                    .take(max.min(n) as usize)
                    .map(|m| (*m).clone())
                    .collect();
                assert_eq!(fwd, want, "{stream} forward from {from}, max {max}");
                let back: Vec<Seen> = e
                    .read_stream(stream, ReadFrom::At(from), Direction::Backward, max)
                    .unwrap()
                    .map(|x| seen(x.unwrap()))
                    .collect();
                let want: Vec<Seen> = events
                    .iter()
                    .rev()
                    .filter(|m| m.1 <= from)
                    .take(max.min(n) as usize)
                    .map(|m| (*m).clone())
                    .collect();
                assert_eq!(back, want, "{stream} backward from {from}, max {max}");
            }
        }
    }
}

#[test]
fn all_reads_inside_a_large_record_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (e, model) = store(dir.path());
    let n = model.len() as u64;
    let only_b = || AllFilter {
        event_type: None,
        stream: Some(Matcher::Prefix("b".into())),
    };
    for from in starts(n)
        .into_iter()
        .chain([1_500, 1_501, 3_000, 3_001, 4_000])
    {
        for (filtered, filter) in [(false, AllFilter::default()), (true, only_b())] {
            let keep = |m: &&Seen| !filtered || m.0 == "b";
            for max in [1, 513, u64::MAX] {
                let fwd: Vec<Seen> = e
                    .read_all(ReadFrom::At(from), Direction::Forward, max, filter.clone())
                    .map(|x| seen(x.unwrap()))
                    .collect();
                let want: Vec<Seen> = model
                    .iter()
                    .filter(|m| m.2 >= from)
                    .filter(keep)
                    .take(max.min(n) as usize)
                    .cloned()
                    .collect();
                assert_eq!(fwd.len(), want.len(), "$all forward from {from}, max {max}");
                assert_eq!(fwd, want, "$all forward from {from}, max {max}, {filtered}");
                let back: Vec<Seen> = e
                    .read_all(ReadFrom::At(from), Direction::Backward, max, filter.clone())
                    .map(|x| seen(x.unwrap()))
                    .collect();
                let want: Vec<Seen> = model
                    .iter()
                    .rev()
                    .filter(|m| m.2 <= from)
                    .filter(keep)
                    .take(max.min(n) as usize)
                    .cloned()
                    .collect();
                assert_eq!(
                    back.len(),
                    want.len(),
                    "$all backward from {from}, max {max}"
                );
                assert_eq!(
                    back, want,
                    "$all backward from {from}, max {max}, {filtered}"
                );
            }
        }
    }
}
