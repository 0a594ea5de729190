//! Both write paths: a store opened with `IoMode::Pwrite` and one opened with `IoMode::Uring`
//! (skipped, with a message, where the kernel refuses io_uring) take concurrent appends from
//! 16 threads, group-committed across segment rolls; every acknowledged event is readable
//! with dense positions and versions, and survives reopening with either write path.

use std::collections::HashMap;
use std::path::Path;

use quiver_engine::*;

const THREADS: usize = 16;
const APPENDS_PER_THREAD: u64 = 50;

fn config(mode: IoMode) -> EngineConfig {
    EngineConfig::default()
        .segment_bytes_max(64 * 1024)
        .io_mode(mode)
}

fn data(thread: usize, n: u64, k: u64) -> Vec<u8> {
    let len = 10 + ((thread as u64 * 31 + n * 7 + k * 3) % 400) as usize;
    vec![(thread as u64 ^ n ^ k) as u8; len]
}

/// One acknowledged append.
#[derive(Debug, Clone)]
struct Acked {
    stream: String,
    result: AppendResult,
    data: Vec<Vec<u8>>,
}

/// Runs the concurrent appends: each thread writes to its own stream with exact expected
/// versions, and to a shared stream with `Any`.
fn hammer(engine: &Engine) -> Vec<Acked> {
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let own = format!("io-{t}");
                let mut acked = Vec::new();
                let mut next = 0u64;
                for n in 0..APPENDS_PER_THREAD {
                    let shared = n % 3 == 2;
                    let count = 1 + (t as u64 + n) % 12;
                    let payloads: Vec<Vec<u8>> = (0..count).map(|k| data(t, n, k)).collect();
                    let events = payloads
                        .iter()
                        .map(|d| EventData::binary("Written", d.clone()))
                        .collect();
                    let (stream, expected) = if shared {
                        ("shared".to_string(), ExpectedVersion::Any)
                    } else if next == 0 {
                        (own.clone(), ExpectedVersion::NoStream)
                    } else {
                        (own.clone(), ExpectedVersion::Exact(next - 1))
                    };
                    let result = engine.append(&stream, expected, events).expect("append");
                    assert!(!result.idempotent);
                    assert_eq!(result.position_last - result.position_first + 1, count);
                    if !shared {
                        assert_eq!(result.next_expected_version, next + count - 1);
                        next += count;
                    }
                    acked.push(Acked {
                        stream,
                        result,
                        data: payloads,
                    });
                }
                acked
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("appender"))
        .collect()
}

/// Checks that the store holds exactly the acknowledged events, at their positions.
fn verify(engine: &Engine, acked: &[Acked]) {
    let total: u64 = acked.iter().map(|a| a.data.len() as u64).sum();
    assert_eq!(engine.commit_position(), total);
    let all: Vec<RecordedEvent> = engine
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            u64::MAX,
            AllFilter::default(),
        )
        .map(|e| e.expect("read $all"))
        .collect();
    assert_eq!(all.len() as u64, total);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64, "positions are dense");
    }
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for e in &all {
        let next = versions.entry(&e.stream).or_default();
        assert_eq!(
            e.version, *next,
            "{} versions are dense in $all order",
            e.stream
        );
        *next += 1;
    }
    for a in acked {
        for (k, d) in a.data.iter().enumerate() {
            let e = &all[(a.result.position_first + k as u64) as usize];
            assert_eq!(&*e.stream, a.stream);
            assert_eq!(&e.data[..], &d[..], "data at {}", e.position);
        }
        let last = &all[a.result.position_last as usize];
        if a.stream != "shared" {
            assert_eq!(last.version, a.result.next_expected_version);
        }
    }
    for t in 0..THREADS {
        let own: Vec<u64> = engine
            .read_stream(
                &format!("io-{t}"),
                ReadFrom::Start,
                Direction::Forward,
                u64::MAX,
            )
            .unwrap()
            .map(|e| e.unwrap().position)
            .collect();
        let want: Vec<u64> = all
            .iter()
            .filter(|e| *e.stream == *format!("io-{t}"))
            .map(|e| e.position)
            .collect();
        assert_eq!(own, want);
    }
    engine.verify().expect("every record checks out");
}

/// Opens `dir` with `mode`; `None` when the kernel refuses io_uring.
fn open(dir: &Path, mode: IoMode) -> Option<Engine> {
    match Engine::open(dir, config(mode)) {
        Ok(e) => {
            assert_eq!(
                e.io_mode(),
                mode,
                "the write path asked for is the one in use"
            );
            Some(e)
        }
        Err(OpenError::Io { source, .. }) if mode == IoMode::Uring => {
            println!("io_uring refused by the kernel ({source}): only pwrite is tested");
            None
        }
        Err(e) => panic!("open with {mode:?}: {e}"),
    }
}

/// Writes through `mode`, verifies, then reopens with both paths and verifies again.
/// Returns false when the mode is unavailable.
fn exercise(mode: IoMode) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let Some(engine) = open(dir.path(), mode) else {
        return false;
    };
    let acked = hammer(&engine);
    verify(&engine, &acked);
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "qseg")
        })
        .count();
    assert!(
        segments > 3,
        "appends rolled over several segments ({segments})"
    );
    drop(engine);
    for reopen in [mode, IoMode::Pwrite] {
        let engine = open(dir.path(), reopen).expect("reopens with the same path");
        assert_eq!(engine.open_stats().torn_bytes_cut, 0);
        verify(&engine, &acked);
        drop(engine);
    }
    // Appends continue after a reopen on this path too.
    let engine = open(dir.path(), mode).expect("reopens");
    let more = hammer_again(&engine, &acked);
    verify(&engine, &more);
    true
}

/// One more append per thread's stream after a reopen; returns all acknowledged appends.
fn hammer_again(engine: &Engine, acked: &[Acked]) -> Vec<Acked> {
    let mut all = acked.to_vec();
    for t in 0..THREADS {
        let stream = format!("io-{t}");
        let last = all
            .iter()
            .filter(|a| a.stream == stream)
            .map(|a| a.result.next_expected_version)
            .max()
            .expect("written before");
        let payload = data(t, 1000, 0);
        let result = engine
            .append(
                &stream,
                ExpectedVersion::Exact(last),
                vec![EventData::binary("Written", payload.clone())],
            )
            .expect("append after reopen");
        all.push(Acked {
            stream,
            result,
            data: vec![payload],
        });
    }
    all
}

#[test]
fn pwrite_path() {
    assert!(exercise(IoMode::Pwrite));
}

#[test]
fn uring_path() {
    if !exercise(IoMode::Uring) {
        // Refused here (e.g. Docker's seccomp profile): the fallback path must still work.
        assert!(exercise(IoMode::Pwrite));
    }
}

#[test]
fn auto_resolves_to_a_real_path() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), config(IoMode::Auto)).unwrap();
    assert_ne!(e.io_mode(), IoMode::Auto);
    e.append(
        "a",
        ExpectedVersion::NoStream,
        vec![EventData::json("T", &b"{}"[..])],
    )
    .unwrap();
    assert_eq!(e.commit_position(), 1);
}

/// The real file system, counting the writes that carry data (anything but the zeros of a
/// spare segment), and allowing io_uring as the real one does.
#[derive(Debug, Default)]
struct CountingStorage {
    data_writes: std::sync::atomic::AtomicUsize,
}

impl storage::Storage for CountingStorage {
    fn create(&self, path: &Path) -> std::io::Result<std::fs::File> {
        storage::RealStorage.create(path)
    }
    fn create_new(&self, path: &Path) -> std::io::Result<std::fs::File> {
        storage::RealStorage.create_new(path)
    }
    fn write_at(&self, file: &std::fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if buf.iter().any(|b| *b != 0) {
            self.data_writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        storage::RealStorage.write_at(file, buf, offset)
    }
    fn set_len(&self, file: &std::fs::File, len: u64) -> std::io::Result<()> {
        storage::RealStorage.set_len(file, len)
    }
    fn sync_data(&self, file: &std::fs::File) -> std::io::Result<()> {
        storage::RealStorage.sync_data(file)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        storage::RealStorage.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        storage::RealStorage.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        storage::RealStorage.remove_file(path)
    }
    fn uring_allowed(&self) -> bool {
        true
    }
}

/// The records an engine writes on `mode`, counted at the storage; `None` when the kernel
/// refuses io_uring. Few enough that no segment is sealed (a summary is written through the
/// storage).
fn data_writes_through_storage(mode: IoMode) -> Option<usize> {
    let dir = tempfile::tempdir().unwrap();
    let storage = std::sync::Arc::new(CountingStorage::default());
    let engine = match Engine::open(dir.path(), config(mode).storage(storage.clone())) {
        Ok(e) => e,
        Err(OpenError::Io { source, .. }) if mode == IoMode::Uring => {
            println!("io_uring refused by the kernel ({source}): not tested");
            return None;
        }
        Err(e) => panic!("open with {mode:?}: {e}"),
    };
    assert_eq!(engine.io_mode(), mode);
    for i in 0..5u8 {
        let event = EventData::binary("Written", vec![i + 1; 100]);
        engine
            .append("s", ExpectedVersion::Any, vec![event])
            .unwrap();
    }
    assert_eq!(engine.commit_position(), 5);
    Some(
        storage
            .data_writes
            .load(std::sync::atomic::Ordering::SeqCst),
    )
}

#[test]
fn the_uring_path_writes_records_through_the_ring() {
    // The control: on the plain path every batch is written through the storage.
    let plain = data_writes_through_storage(IoMode::Pwrite).unwrap();
    assert!(plain >= 5, "{plain} writes for 5 appends");
    if let Some(through) = data_writes_through_storage(IoMode::Uring) {
        assert_eq!(through, 0, "io_uring mode wrote records through pwrite");
    }
}
