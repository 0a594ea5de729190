//! Real crash test: a child process (this test binary, re-executed with `QUIVER_CRASH_CHILD`
//! set) appends batches from 8 threads and prints one line per acknowledged append; the
//! parent kills it with SIGKILL at a random moment, reopens the store and checks that every
//! acknowledged event is there and intact, that every stream's versions are dense and its
//! bytes are exactly what was written, and that `$all` positions are gap-free. Several rounds
//! run on the same directory, each child continuing where the log ends.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quiver_engine::*;

/// SIGKILL's number on Linux (what `Child::kill` sends).
const SIGKILL: i32 = 9;
const CHILD_ENV: &str = "QUIVER_CRASH_CHILD";
const TEST_NAME: &str = "kill_9_loses_no_acknowledged_append";
const THREADS: usize = 8;
const ROUNDS: usize = 10;
/// A child that is never killed (its parent died) stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);

fn config() -> EngineConfig {
    EngineConfig::default().segment_bytes_max(256 * 1024)
}

fn stream_name(thread: usize) -> String {
    format!("crash-{thread}")
}

/// FNV-1a, 64 bits.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The data of `stream`'s event at `version`: 1–300 bytes, a function of both, so any
/// event can be checked without remembering it.
fn event_bytes(stream: &str, version: u64) -> Vec<u8> {
    let seed = fnv(fnv(FNV_START, stream.as_bytes()), &version.to_le_bytes()) | 1;
    let mut rng = XorShift(seed);
    let len = 1 + (rng.next() % 300) as usize;
    (0..len).map(|_| rng.next() as u8).collect()
}

/// One acknowledged append, as the child reported it.
#[derive(Debug, Clone)]
struct Ack {
    stream: String,
    first: u64,
    count: u64,
    hash: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let rest = &line[line.find("ACK ")? + 4..];
    let mut f = rest.split_whitespace();
    Some(Ack {
        stream: f.next()?.to_string(),
        first: f.next()?.parse().ok()?,
        count: f.next()?.parse().ok()?,
        hash: u64::from_str_radix(f.next()?, 16).ok()?,
    })
}

#[test]
fn kill_9_loses_no_acknowledged_append() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }
    parent();
}

// ---------------------------------------------------------------------------------------
// The child: append until killed, report each acknowledged append.

fn child(dir: &Path) -> ! {
    // Any failure in any thread ends the child at once (SIGABRT), for the parent to see.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    let engine = Engine::open(dir, config()).expect("child: open");
    let deadline = Instant::now() + CHILD_LIFETIME;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || append_until(&engine, t, deadline))
        })
        .collect();
    for t in threads {
        t.join().expect("child: appender panicked");
    }
    std::process::exit(0);
}

/// Writes one whole line to stdout (not through the test harness's capture) and flushes it.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let ok = out.write_all(format!("\n{line}\n").as_bytes()).is_ok() && out.flush().is_ok();
    if !ok {
        // The parent is gone.
        std::process::exit(1);
    }
}

fn append_until(engine: &Engine, thread: usize, deadline: Instant) {
    let name = stream_name(thread);
    let mut next = engine
        .stream_info(&name)
        .and_then(|i| i.current_version)
        .map_or(0, |v| v + 1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut rng = XorShift((nanos ^ (thread as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
    while Instant::now() < deadline {
        let count = 1 + rng.next() % 50;
        let mut hash = FNV_START;
        let events = (next..next + count)
            .map(|v| {
                let data = event_bytes(&name, v);
                hash = fnv(hash, &data);
                EventData {
                    id: Uuid::new_v4(),
                    event_type: "Crashed".into(),
                    content_type: ContentType::Binary,
                    data: data.into(),
                    metadata: v.to_le_bytes().to_vec().into(),
                }
            })
            .collect();
        let expected = match next {
            0 => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(n - 1),
        };
        let r = engine
            .append(&name, expected, events)
            .expect("child: append");
        assert_eq!(r.next_expected_version, next + count - 1);
        assert_eq!(r.position_last - r.position_first + 1, count);
        say(&format!("ACK {name} {next} {count} {hash:016x}"));
        next += count;
    }
}

// ---------------------------------------------------------------------------------------
// The parent: run, kill, verify, repeat.

/// Kills the child if the parent's test fails while it runs.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = XorShift(seed);
    let mut acked: Vec<Ack> = Vec::new();
    for round in 0..ROUNDS {
        let new = run_and_kill(dir.path(), 50 + rng.next() % 251, round);
        acked.extend(new);
        let engine = Engine::open(dir.path(), config())
            .unwrap_or_else(|e| panic!("round {round}: reopen after SIGKILL failed: {e}"));
        let total = verify(&engine, &acked, round);
        eprintln!(
            "round {round}: {} acknowledged appends so far, {total} events stored, {:?}",
            acked.len(),
            engine.open_stats()
        );
    }
    // Every appender made progress (a thread that panics aborts the child, which is caught
    // above as an exit by a signal other than SIGKILL).
    for t in 0..THREADS {
        let name = stream_name(t);
        assert!(
            acked.iter().any(|a| a.stream == name),
            "{name} never acknowledged an append"
        );
    }
}

/// Runs one child until `kill_after_ms` after its first acknowledged append, kills it with
/// SIGKILL, and returns the appends it acknowledged (only whole lines count).
fn run_and_kill(dir: &Path, kill_after_ms: u64, round: usize) -> Vec<Ack> {
    let stderr_path = dir.join(format!("child-{round}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn child");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill has no newline: it was never fully reported.
                Ok(_) if line.ends_with('\n') => {
                    if tx.send(line.clone()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
            }
        }
    });
    // The clock starts at the first acknowledgement: after an open the first appends may
    // wait for the engine's background loading, and the kill should land among appends.
    let mut lines = Vec::new();
    let ready_by = Instant::now() + Duration::from_secs(30);
    while !lines.iter().any(|l: &String| l.contains("ACK ")) {
        let left = ready_by.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => {
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("round {round}: the child acknowledged nothing in 30 s; stderr:\n{err}");
            }
        }
    }
    std::thread::sleep(Duration::from_millis(kill_after_ms));
    child.0.kill().expect("SIGKILL");
    let status = child.0.wait().expect("wait");
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    if status.signal() != Some(SIGKILL) {
        let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        panic!(
            "round {round}: the child ended by itself ({status}) before the kill; stderr:\n{err}"
        );
    }
    lines.iter().filter_map(|l| parse_ack(l)).collect()
}

/// Checks the reopened store against everything acknowledged; returns the events stored.
fn verify(engine: &Engine, acked: &[Ack], round: usize) -> u64 {
    let mut stored = std::collections::HashMap::new();
    let mut total = 0u64;
    for t in 0..THREADS {
        let name = stream_name(t);
        let events: Vec<RecordedEvent> =
            match engine.read_stream(&name, ReadFrom::Start, Direction::Forward, u64::MAX) {
                Ok(r) => r
                    .map(|e| e.unwrap_or_else(|e| panic!("round {round}: {name}: {e}")))
                    .collect(),
                Err(ReadError::StreamNotFound(_)) => Vec::new(),
                Err(e) => panic!("round {round}: {name}: {e}"),
            };
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.version, i as u64,
                "round {round}: {name} versions are dense"
            );
            assert_eq!(
                &e.data[..],
                &event_bytes(&name, e.version)[..],
                "round {round}: {name} v{} data",
                e.version
            );
            assert_eq!(&e.metadata[..], &e.version.to_le_bytes()[..]);
            assert_eq!(e.event_type(), "Crashed");
        }
        total += events.len() as u64;
        stored.insert(name, events);
    }
    for a in acked {
        let events = &stored[&a.stream];
        let end = a.first + a.count;
        assert!(
            end <= events.len() as u64,
            "round {round}: acknowledged {a:?} lost: {} holds {} events",
            a.stream,
            events.len()
        );
        let hash = events[a.first as usize..end as usize]
            .iter()
            .fold(FNV_START, |h, e| fnv(h, &e.data));
        assert_eq!(hash, a.hash, "round {round}: content of {a:?}");
    }
    let positions: Vec<u64> = engine
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            u64::MAX,
            AllFilter::default(),
        )
        .map(|e| e.expect("read $all").position)
        .collect();
    assert_eq!(
        positions.len() as u64,
        total,
        "round {round}: $all holds every event"
    );
    assert!(
        positions.iter().enumerate().all(|(i, p)| *p == i as u64),
        "round {round}: $all positions are gap-free"
    );
    assert_eq!(engine.commit_position(), total);
    let stats = engine.verify().expect("every record checks out");
    assert!(stats.records > 0);
    total
}
