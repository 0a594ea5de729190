//! Crash consistency on the simulated disk (`quiver_engine::storage::sim::SimDisk`): a power
//! cut, not a SIGKILL (whose page cache survives), at a random point of a random workload,
//! with injected write and sync failures on some seeds; then the image a real disk could
//! hold is opened and checked against a model:
//!
//! - the store opens (no bit was flipped: everything on it is a torn tail or intact);
//! - every acknowledged append is there, exactly once, with its bytes and in its order;
//! - an append that was not acknowledged is there whole or not at all;
//! - no event appears that was never written;
//! - `$all` positions are 0, 1, 2, … and every stream's versions 0, 1, 2, …;
//! - the recovered store takes more appends across segment rolls, and after a clean close
//!   and reopen all of it is still there.
//!
//! `QUIVER_SIM_SEEDS=n` runs n seeds (default 600), `QUIVER_SIM_SEED=s` replays one.
//! A failure prints the seed and what the simulator chose.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use quiver_engine::storage::sim::{SimDisk, SimFaults, SimRng};
use quiver_engine::*;

const STREAMS: u64 = 3;

fn config(disk: &Arc<SimDisk>) -> EngineConfig {
    EngineConfig::default()
        .segment_bytes_max(4096)
        .storage(disk.clone())
}

/// One append the workload tried: its events' payloads (each starts with a unique tag).
#[derive(Debug, Clone)]
struct Tried {
    stream: String,
    events: Vec<Vec<u8>>,
    acked: bool,
    /// Refused for want of space: must never be in the log.
    refused: bool,
}

fn payload(rng: &mut SimRng, tag: u64, uniform: bool) -> Vec<u8> {
    // Few sizes, or one: records of equal length make stale bytes line up with new ones,
    // which is what a reused file full of old records needs to fool a scan.
    let len = match uniform {
        true => 400,
        false => [120, 400, 900][rng.below(3) as usize],
    };
    let mut data = tag.to_le_bytes().to_vec();
    data.extend((0..len - 8).map(|i| (tag as usize * 31 + i) as u8));
    data
}

fn tag_of(data: &[u8]) -> u64 {
    u64::from_le_bytes(data[..8].try_into().expect("a tag"))
}

/// Runs steps of 1–4 appends submitted together (so one group commit often holds several
/// records), and a checkpoint now and then, until `steps` are done or the engine fails.
/// With `uniform`, every record has the same length.
fn workload(
    engine: &Engine,
    rng: &mut SimRng,
    steps: u64,
    next_tag: &mut u64,
    uniform: bool,
) -> Vec<Tried> {
    let mut tried = Vec::new();
    for _ in 0..steps {
        if rng.chance(100) {
            if engine.put_checkpoint("sub", *next_tag, b"state").is_err() {
                break;
            }
            continue;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let together = 1 + rng.below(4) as usize;
        let first = tried.len();
        for k in 0..together {
            let stream = format!("s-{}", rng.below(STREAMS));
            let count = if uniform { 1 } else { 1 + rng.below(2) };
            let events: Vec<Vec<u8>> = (0..count)
                .map(|_| {
                    *next_tag += 1;
                    payload(rng, *next_tag, uniform)
                })
                .collect();
            let write = StreamWrite {
                stream: stream.clone(),
                expected: ExpectedVersion::Any,
                events: events
                    .iter()
                    .map(|d| EventData::binary("E", d.clone()))
                    .collect(),
            };
            let tx = tx.clone();
            engine.append_with(vec![write], move |r| {
                let _ = tx.send((k, r));
            });
            tried.push(Tried {
                stream,
                events,
                acked: false,
                refused: false,
            });
        }
        let mut failed = false;
        for _ in 0..together {
            let (k, r) = rx.recv().expect("every append is answered");
            tried[first + k].acked = r.is_ok();
            match r {
                Ok(_) => {}
                // Refused, not failed: the engine goes on.
                Err(AppendError::NoSpace) => tried[first + k].refused = true,
                Err(_) => failed = true,
            }
        }
        if failed {
            // Fail-stop (or power off): nothing more can be written.
            break;
        }
    }
    tried
}

/// Checks the store against everything tried; returns the tries that are in it.
fn check(engine: &Engine, tried: &[Tried], ctx: &str) -> Vec<Tried> {
    let all: Vec<RecordedEvent> = engine
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            u64::MAX,
            AllFilter::default(),
        )
        .map(|e| e.unwrap_or_else(|e| panic!("{ctx}: read $all: {e}")))
        .collect();
    let mut by_tag: HashMap<u64, &RecordedEvent> = HashMap::new();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64, "{ctx}: $all positions are dense");
        assert!(
            by_tag.insert(tag_of(&e.data), e).is_none(),
            "{ctx}: event {} appears twice",
            tag_of(&e.data)
        );
    }
    let mut versions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in &all {
        versions.entry(&e.stream).or_default().push(e.version);
    }
    for (stream, v) in &versions {
        let dense: Vec<u64> = (0..v.len() as u64).collect();
        assert_eq!(v, &dense, "{ctx}: versions of {stream} are dense");
    }
    let mut present = Vec::new();
    let mut known = 0usize;
    for t in tried {
        let found: Vec<Option<&&RecordedEvent>> =
            t.events.iter().map(|d| by_tag.get(&tag_of(d))).collect();
        let n = found.iter().filter(|f| f.is_some()).count();
        if t.acked {
            assert_eq!(
                n,
                t.events.len(),
                "{ctx}: an acknowledged append is lost: {t:?}"
            );
        } else if t.refused {
            assert_eq!(
                n, 0,
                "{ctx}: an append refused for want of space is in the log"
            );
        } else {
            assert!(
                n == 0 || n == t.events.len(),
                "{ctx}: an unacknowledged append is half there ({n} of {})",
                t.events.len()
            );
        }
        if n == 0 {
            continue;
        }
        known += n;
        let first = found[0].expect("present").version;
        for (k, (f, d)) in found.iter().zip(&t.events).enumerate() {
            let e = f.expect("all present");
            assert_eq!(&*e.stream, t.stream, "{ctx}: stream of event {}", tag_of(d));
            assert_eq!(e.version, first + k as u64, "{ctx}: an append's versions");
            assert!(e.data[..] == d[..], "{ctx}: bytes of event {}", tag_of(d));
        }
        present.push(Tried {
            acked: true,
            refused: false,
            ..t.clone()
        });
    }
    assert_eq!(
        known,
        all.len(),
        "{ctx}: events that were never written appeared"
    );
    present
}

/// A scratch directory in memory where there is one: the simulator never needs a real disk,
/// and thousands of seeds create, rename and remove many files.
fn scratch() -> tempfile::TempDir {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

fn run_seed(seed: u64) {
    let root = scratch();
    let live = root.path().join("live");
    let disk = Arc::new(SimDisk::new(&live, seed).unwrap());
    let mut rng = SimRng::new(seed ^ 0x5157_4552);
    if seed % 3 == 1 {
        disk.set_faults(SimFaults {
            write_eio: 5,
            write_enospc: 5,
            sync_eio: 10,
            eintr: 30,
        });
    }
    let ctx = format!("seed {seed} (replay: QUIVER_SIM_SEED={seed})");
    let engine = match Engine::open(&live, config(&disk)) {
        Ok(e) => e,
        // A fault while creating the store: nothing was acknowledged.
        Err(_) => return,
    };
    disk.power_cut_after(rng.below(120));
    let mut next_tag = 0u64;
    let uniform = seed.is_multiple_of(2);
    let tried = workload(&engine, &mut rng, 30, &mut next_tag, uniform);
    let image = root.path().join("image");
    let report = disk.crash_image(&image).unwrap();
    drop(engine);
    let ctx = format!("{ctx}, {report:?}");
    // The machine comes back: the image on a fresh simulated disk without faults.
    let disk2 = Arc::new(SimDisk::new(&image, seed).unwrap());
    let mut engine = Engine::open(&image, config(&disk2))
        .unwrap_or_else(|e| panic!("{ctx}: the crashed store must open: {e}"));
    let mut kept = check(&engine, &tried, &format!("{ctx}, after the crash"));
    // One step, a clean close and a reopen (what the recovered files hold right after the
    // first new writes, e.g. a reused spare, is checked before more writes cover it), then
    // more steps across rolls, and again.
    for (round, steps) in [(1, 1), (2, 15)] {
        let more = workload(&engine, &mut rng, steps, &mut next_tag, uniform);
        assert!(
            more.iter().all(|t| t.acked),
            "{ctx}: appends fail after recovery"
        );
        kept.extend(more);
        drop(engine);
        engine = Engine::open(&image, config(&disk2))
            .unwrap_or_else(|e| panic!("{ctx}: reopen {round} after recovery: {e}"));
        let again = check(&engine, &kept, &format!("{ctx}, reopen {round}"));
        assert_eq!(
            again.len(),
            kept.len(),
            "{ctx}: something recovered was lost later"
        );
    }
}

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("QUIVER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("QUIVER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    (0..n).collect()
}

#[test]
fn power_cuts_lose_no_acknowledged_append() {
    let seeds = seeds();
    for &seed in &seeds {
        run_seed(seed);
    }
    eprintln!("{} seeds", seeds.len());
}

/// Every record of the segment files in `dir`: (file, offset, length, index), and the
/// highest durable watermark any of them carries.
fn records_in(dir: &std::path::Path) -> (Vec<(std::path::PathBuf, u64, u64, u64)>, u64) {
    use quiver_engine::format::{parse_record, RecordParse, RECORD_HEADER_BYTES};
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "qseg"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut mark = 0;
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        let mut at = quiver_engine::format::SEGMENT_HEADER_BYTES;
        while let RecordParse::Ok { header, body } = parse_record(&bytes[at..]) {
            let len = (RECORD_HEADER_BYTES + body.len()) as u64;
            out.push((path.clone(), at as u64, len, header.index.get()));
            mark = mark.max(header.durable_through().unwrap_or(0));
            at += len as usize;
        }
    }
    (out, mark)
}

/// Damage to synced bytes: after a workload and a clean close on the simulated disk, one bit
/// is flipped in a record that a later record's durable watermark covers. The store must
/// then either refuse to open with `Corruption` naming that file and the record's offset,
/// or (the segment is summarized, so open reads no payload) open and have `verify` report
/// exactly that; no read may ever return bytes other than those written.
#[test]
fn flipped_bits_in_synced_records_are_reported() {
    let seeds = seeds();
    let mut refused = 0;
    let mut found_by_verify = 0;
    for &seed in seeds.iter().take(300) {
        let root = scratch();
        let live = root.path().join("live");
        let disk = Arc::new(SimDisk::new(&live, seed).unwrap());
        let mut rng = SimRng::new(seed ^ 0xF11B);
        let engine = Engine::open(&live, config(&disk)).unwrap();
        let mut next_tag = 0;
        let tried = workload(&engine, &mut rng, 12, &mut next_tag, false);
        assert!(tried.iter().all(|t| t.acked));
        drop(engine);
        let image = root.path().join("image");
        disk.crash_image(&image).unwrap();
        let (records, mark) = records_in(&image);
        let covered: Vec<_> = records.iter().filter(|r| r.3 <= mark).collect();
        if covered.is_empty() {
            continue;
        }
        let (file, offset, len, index) = covered[rng.below(covered.len() as u64) as usize].clone();
        let at = offset + rng.below(len);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[at as usize] ^= 1 << rng.below(8);
        std::fs::write(&file, bytes).unwrap();
        let ctx = format!(
            "seed {seed}: bit flipped at {} byte {at} (record {index} at {offset})",
            file.display()
        );

        let disk2 = Arc::new(SimDisk::new(&image, seed).unwrap());
        match Engine::open(&image, config(&disk2)) {
            Err(OpenError::Corruption(c)) => {
                assert_eq!((&c.file, c.offset), (&file, offset), "{ctx}: {c}");
                refused += 1;
            }
            Err(e) => panic!("{ctx}: expected corruption, got {e}"),
            Ok(engine) => {
                let c = engine
                    .verify()
                    .expect_err(&format!("{ctx}: verify finds it"));
                assert_eq!((&c.file, c.offset), (&file, offset), "{ctx}: {c}");
                found_by_verify += 1;
                // Reads return the written bytes or an error, never other bytes.
                let written: HashMap<u64, &Vec<u8>> = tried
                    .iter()
                    .flat_map(|t| t.events.iter().map(|d| (tag_of(d), d)))
                    .collect();
                for e in engine.read_all(
                    ReadFrom::Start,
                    Direction::Forward,
                    u64::MAX,
                    AllFilter::default(),
                ) {
                    match e {
                        Ok(e) => {
                            let d = written.get(&tag_of(&e.data)).expect("a written event");
                            assert!(e.data[..] == d[..], "{ctx}: wrong bytes served");
                        }
                        Err(ReadError::Corruption(c)) => {
                            assert_eq!((&c.file, c.offset), (&file, offset), "{ctx}: {c}");
                            break;
                        }
                        Err(e) => panic!("{ctx}: {e}"),
                    }
                }
            }
        }
    }
    eprintln!("refused to open: {refused}, found by verify: {found_by_verify}");
    if seeds.len() >= 100 {
        assert!(
            refused > 0 && found_by_verify > 0,
            "both paths were exercised"
        );
    }
}

/// A scavenge cut short by a power cut: a store with a hard-deleted stream among kept ones is
/// scavenged with the power going off at a random storage call; the image must open, keep
/// every event of the kept streams at its version and position with its bytes, pass
/// `verify`, and keep the deleted stream deleted.
#[test]
fn power_cuts_during_a_scavenge_lose_nothing_kept() {
    let seeds = seeds();
    let mut rewritten = 0;
    for &seed in seeds.iter().take(300) {
        let root = scratch();
        let live = root.path().join("live");
        let disk = Arc::new(SimDisk::new(&live, seed).unwrap());
        let mut rng = SimRng::new(seed ^ 0x5CA7);
        let engine = Engine::open(&live, config(&disk)).unwrap();
        let mut kept = Vec::new();
        for i in 0..30u64 {
            let gone = rng.chance(400);
            let stream = if gone { "gone" } else { "kept" };
            let data = payload(&mut rng, i + 1, false);
            let r = engine
                .append(
                    stream,
                    ExpectedVersion::Any,
                    vec![EventData::binary("E", data.clone())],
                )
                .unwrap();
            if !gone {
                kept.push((r.next_expected_version, r.position_first, data));
            }
        }
        let _ = engine.delete_stream("gone", ExpectedVersion::Any, DeleteKind::Hard);
        // Sealed segments are summarized (and so scavengeable) once written: close, reopen.
        drop(engine);
        let engine = Engine::open(&live, config(&disk)).unwrap();
        let ctx = format!("scavenge seed {seed} (replay: QUIVER_SIM_SEED={seed})");
        disk.power_cut_after(rng.below(60));
        if let Ok(stats) = engine.scavenge() {
            rewritten += stats.segments_rewritten;
        }
        let image = root.path().join("image");
        let report = disk.crash_image(&image).unwrap();
        drop(engine);
        let disk2 = Arc::new(SimDisk::new(&image, seed).unwrap());
        let engine = Engine::open(&image, config(&disk2))
            .unwrap_or_else(|e| panic!("{ctx}, {report:?}: open: {e}"));
        engine
            .verify()
            .unwrap_or_else(|c| panic!("{ctx}, {report:?}: verify: {c}"));
        let read = engine
            .read_stream("kept", ReadFrom::Start, Direction::Forward, u64::MAX)
            .unwrap_or_else(|e| panic!("{ctx}: read: {e}"));
        let got: Vec<(u64, u64, Vec<u8>)> = read
            .map(|e| {
                let e = e.unwrap_or_else(|e| panic!("{ctx}: read: {e}"));
                (e.version, e.position, e.data.to_vec())
            })
            .collect();
        assert!(got == kept, "{ctx}, {report:?}: the kept stream changed");
        assert!(
            engine
                .stream_info("gone")
                .is_none_or(|i| i.deleted == Some(DeleteKind::Hard)),
            "{ctx}: the deleted stream came back"
        );
    }
    if seeds.len() >= 100 {
        assert!(rewritten > 0, "some scavenges rewrote segments");
    }
}
