//! What the benchmarks write and where: 256-byte events with ids unique within a store,
//! scratch directories on a real disk, runs of many threads released together, and a quick
//! way to fill a store before a read or reopen is measured.

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use hdrhistogram::Histogram;
use quiver_engine::{ContentType, Engine, EventData, ExpectedVersion, Uuid};
use tempfile::TempDir;

use crate::report::latency_histogram;

/// Size of every event's data (DESIGN.md's "How good" figures are for 256-byte events).
pub const EVENT_DATA_BYTES: usize = 256;

/// Event type of every benchmark event.
pub const EVENT_TYPE: &str = "bench-event";

/// Where scratch stores go unless told otherwise: on the disk under test, not /tmp, which
/// may be a tmpfs whose fdatasync costs nothing.
pub const DATA_DIR_DEFAULT: &str = "quiver-bench-data";

/// Environment variable that overrides [`DATA_DIR_DEFAULT`].
pub const DATA_DIR_ENV: &str = "QUIVER_BENCH_DIR";

/// Length of a timed scenario.
pub const TIMED: Duration = Duration::from_secs(3);
/// Length of a timed scenario with `--quick`.
pub const TIMED_QUICK: Duration = Duration::from_secs(1);
/// Events in the store that the read scenarios read.
pub const READ_EVENTS: u64 = 1_000_000;
/// Events read between two latency samples of a read.
pub const READ_SAMPLE_EVENTS: u64 = 1_000;
/// Events per append when filling a store to read or reopen.
pub const FILL_BATCH: usize = 1_000;

/// How long a timed scenario runs: [`TIMED`], or [`TIMED_QUICK`] with `--quick`.
pub fn timed(quick: bool) -> Duration {
    if quick {
        TIMED_QUICK
    } else {
        TIMED
    }
}

/// The payload of every event. Not all zeros, so nothing on the way can shortcut it.
pub static PAYLOAD: [u8; EVENT_DATA_BYTES] = payload();

const fn payload() -> [u8; EVENT_DATA_BYTES] {
    let mut p = [0u8; EVENT_DATA_BYTES];
    let mut i = 0;
    while i < EVENT_DATA_BYTES {
        p[i] = (i * 31 % 251) as u8;
        i += 1;
    }
    p
}

/// Makes events whose ids are unique within a store as long as each generator has its own
/// `source`: the source fills the id's high 64 bits, a counter the low ones. Counting instead
/// of drawing random v4 ids keeps a syscall per event out of the measurement.
#[derive(Debug)]
pub struct Ids {
    source: u64,
    next: u64,
}

impl Ids {
    /// A generator for one thread or appender; give each a different `source`.
    pub fn new(source: u64) -> Self {
        Ids { source, next: 1 }
    }

    /// The next id.
    pub fn id(&mut self) -> Uuid {
        let id = Uuid::from_u128((u128::from(self.source) << 64) | u128::from(self.next));
        self.next += 1;
        id
    }

    /// One event of [`EVENT_DATA_BYTES`] bytes. The payload is shared, not copied.
    pub fn event(&mut self) -> EventData {
        EventData {
            id: self.id(),
            event_type: EVENT_TYPE.to_string(),
            content_type: ContentType::Binary,
            data: PAYLOAD[..].into(),
            metadata: Default::default(),
        }
    }

    /// `n` events for one append.
    pub fn batch(&mut self, n: usize) -> Vec<EventData> {
        (0..n).map(|_| self.event()).collect()
    }
}

/// The base directory for scratch stores: `$QUIVER_BENCH_DIR`, else [`DATA_DIR_DEFAULT`].
pub fn data_dir_from_env() -> std::path::PathBuf {
    std::env::var_os(DATA_DIR_ENV)
        .map(Into::into)
        .unwrap_or_else(|| DATA_DIR_DEFAULT.into())
}

/// A fresh directory `<base>/<name>-XXXX`, removed with everything in it when dropped.
pub fn scratch_dir(base: &Path, name: &str) -> Result<TempDir> {
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(base)
        .with_context(|| format!("creating a scratch directory in {}", base.display()))
}

/// What a run of [`run_parallel`] measured.
#[derive(Debug)]
pub struct Run {
    /// One sample per operation, in nanoseconds, from every thread.
    pub latency: Histogram<u64>,
    /// Events written or read by all threads.
    pub events: u64,
    /// Wall time from the threads' release to the last one finishing.
    pub elapsed: Duration,
}

impl Run {
    /// Events per second of wall time.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `work(thread, latency)` on `threads` threads released together, each recording one
/// latency sample per operation and returning how many events it handled.
pub fn run_parallel<F>(threads: usize, work: F) -> Result<Run>
where
    F: Fn(usize, &mut Histogram<u64>) -> Result<u64> + Sync,
{
    let start = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, work) = (&start, &work);
                scope.spawn(move || {
                    let mut latency = latency_histogram();
                    start.wait();
                    work(t, &mut latency).map(|events| (latency, events))
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let mut run = Run {
            latency: latency_histogram(),
            events: 0,
            elapsed: Duration::ZERO,
        };
        for h in handles {
            let (latency, events) = h.join().expect("a benchmark thread panicked")?;
            run.latency.add(&latency).expect("histograms share bounds");
            run.events += events;
        }
        run.elapsed = began.elapsed();
        Ok(run)
    })
}

/// Times a read as it goes: one latency sample per [`READ_SAMPLE_EVENTS`] events, and the
/// events and payload bytes seen. Whatever iterates (the engine's iterators, the client's
/// `Events`) calls [`ReadTimer::event`] once per event.
#[derive(Debug)]
pub struct ReadTimer {
    latency: Histogram<u64>,
    events: u64,
    bytes: u64,
    began: Instant,
    /// When the last sample ended, and the event count at which the next one does.
    mark: Instant,
    next_sample: u64,
}

impl ReadTimer {
    /// Starts the clock.
    pub fn start() -> Self {
        let began = Instant::now();
        ReadTimer {
            latency: latency_histogram(),
            events: 0,
            bytes: 0,
            began,
            mark: began,
            next_sample: READ_SAMPLE_EVENTS,
        }
    }

    /// Events counted so far: the index of the next one.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Counts one event with `data_bytes` of payload.
    pub fn event(&mut self, data_bytes: usize) {
        self.bytes += data_bytes as u64;
        self.events += 1;
        if self.events == self.next_sample {
            let now = Instant::now();
            self.latency.saturating_record(nanos(now - self.mark));
            self.mark = now;
            self.next_sample += READ_SAMPLE_EVENTS;
        }
    }

    /// Stops the clock: the run, and the payload bytes seen.
    pub fn finish(self) -> (Run, u64) {
        let run = Run {
            latency: self.latency,
            events: self.events,
            elapsed: self.began.elapsed(),
        };
        (run, self.bytes)
    }
}

/// A duration in nanoseconds, for a latency sample.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds since `t`, for a latency sample.
pub fn nanos_since(t: Instant) -> u64 {
    nanos(t.elapsed())
}

/// How to fill a store before measuring something else.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    /// Events to write in all.
    pub events: u64,
    /// Events per append.
    pub batch: usize,
    /// Streams to spread them over (thread `t` writes streams `t`, `t + threads`, …).
    pub streams: usize,
    /// Appending threads; their appends share fsyncs.
    pub threads: usize,
}

/// Name of the `i`th stream a [`Fill`] writes.
pub fn stream_name(i: usize) -> String {
    format!("bench-{i}")
}

/// Writes `fill.events` events (a multiple of `fill.batch`) with durable appends and returns
/// the appends' latencies and rate.
pub fn fill(engine: &Engine, fill: Fill) -> Result<Run> {
    let batches = fill.events / fill.batch as u64;
    ensure!(
        batches * fill.batch as u64 == fill.events,
        "{} events do not split into batches of {}",
        fill.events,
        fill.batch
    );
    ensure!(
        fill.streams >= fill.threads,
        "every filling thread needs a stream"
    );
    let threads = fill.threads as u64;
    run_parallel(fill.threads, |t, latency| {
        let mine: Vec<String> = (t..fill.streams)
            .step_by(fill.threads)
            .map(stream_name)
            .collect();
        let mut ids = Ids::new(t as u64 + 1);
        let calls = batches / threads + u64::from((t as u64) < batches % threads);
        for call in 0..calls {
            let events = ids.batch(fill.batch);
            let stream = &mine[call as usize % mine.len()];
            let began = Instant::now();
            engine.append(stream, ExpectedVersion::Any, events)?;
            latency.saturating_record(nanos_since(began));
        }
        Ok(calls * fill.batch as u64)
    })
}
