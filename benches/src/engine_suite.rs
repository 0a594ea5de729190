//! The `engine` suite: the storage engine in-process, through its public API, on a fresh
//! store per scenario. Every append is durable before it returns (the engine's only mode).
//!
//! | scenario | what is measured | latency sample |
//! |---|---|---|
//! | `engine_append_batch1` | 1 thread, appends of 1 event (the batch-size sweep: 1, 10, 100, 1,000) | one append call |
//! | `engine_append_batch10` | 1 thread, appends of 10 events | one append call |
//! | `engine_append_batch100` | 1 thread, appends of 100 events | one append call |
//! | `engine_append_batch1000` | 1 thread, appends of 1,000 events | one append call |
//! | `engine_append_batch100_c16` | 16 threads, a stream each, appends of 100 | one append call |
//! | `engine_append_concurrent64` | 64 threads, blocking single-event appends | one append call |
//! | `engine_append_concurrent64_inflight` | 1 thread, 64 `append_with` in flight | to callback |
//! | `engine_read_stream` | forward read of a 1,000,000-event stream | 1,000 events |
//! | `engine_scan_all` | forward `$all` scan of a 1,000,000-event store | 1,000 events |
//! | `engine_many_streams_1m`, `engine_many_streams_10m` | 1 M streams of three events / 10 M streams of one event (2 M `--quick`), appended one event to each of 1,000 streams a call, in rounds; then a restart in a fresh process: `reopen_ms`, `writable_ms`, anonymous memory per stream, cold-stream append and read latency (see [`crate::many_streams`]) | one fill append |
//! | `engine_reopen_1m`, `engine_reopen_10m`, `engine_reopen_30m` | fill 1 M / 10 M / 30 M events (1 M / 1 M / 3 M `--quick`), close, reopen three times, each appending one event (the median restart's `reopen_ms`: open → reads, and `writable_ms`: open → first append acknowledged; all three in `reopen_ms_each`, `writable_ms_each`; `id_tables`: taken from the event-id tables; `writable_ms_without_id_tables`: the same restart with the tables deleted): side by side, whether a restart grows with the store | one fill append |
//!
//! Reads run right after the fill, so the segments are in the page cache: they measure the
//! engine, not the disk. The same holds for the reopen (it reads summaries, not payloads).

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use quiver_engine::{
    AllFilter, AppendError, Direction, Engine, EngineConfig, ExpectedVersion, IoMode, OpenStats,
    ReadFrom, RecordedEvent, StreamWrite,
};

use crate::many_streams;
use crate::report::{latency_histogram, micros, millis, Report};
use crate::workload::{
    fill, nanos_since, run_parallel, scratch_dir, stream_name, timed, Fill, Ids, ReadTimer, Run,
    EVENT_DATA_BYTES, FILL_BATCH, READ_EVENTS,
};

/// Every scenario of the suite, in the order [`run`] is meant to be called.
pub const SCENARIOS: &[&str] = &[
    "engine_append_batch1",
    "engine_append_batch10",
    "engine_append_batch100",
    "engine_append_batch1000",
    "engine_append_batch100_c16",
    "engine_append_concurrent64",
    "engine_append_concurrent64_inflight",
    "engine_read_stream",
    "engine_scan_all",
    "engine_reopen_1m",
    "engine_reopen_10m",
    "engine_reopen_30m",
    "engine_many_streams_1m",
    "engine_many_streams_10m",
];

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parent of the scenarios' scratch stores (each is deleted after its scenario).
    pub data_dir: PathBuf,
    /// Shorter timed scenarios (1 s) and smaller reopens (1, 1 and 3 million events).
    pub quick: bool,
    /// Commit being measured, copied into every report.
    pub git_rev: Option<String>,
    /// Write path the stores are opened with; reports say which one was used.
    pub io_mode: IoMode,
    /// Events in `engine_reopen_10m`'s store, instead of 10,000,000 (1,000,000 with `quick`).
    pub reopen_events: Option<u64>,
}

impl Options {
    fn timed(&self) -> Duration {
        timed(self.quick)
    }

    fn config(&self) -> EngineConfig {
        EngineConfig::default().io_mode(self.io_mode)
    }
}

/// Runs one scenario of [`SCENARIOS`] and returns its report.
pub fn run(scenario: &str, opts: &Options) -> Result<Report> {
    let report = match scenario {
        "engine_append_batch1" => append_timed(opts, scenario, 1, 1)?,
        "engine_append_batch10" => append_timed(opts, scenario, 1, 10)?,
        "engine_append_batch100" => append_timed(opts, scenario, 1, 100)?,
        "engine_append_batch1000" => append_timed(opts, scenario, 1, 1000)?,
        "engine_append_batch100_c16" => append_timed(opts, scenario, 16, 100)?,
        "engine_append_concurrent64" => append_timed(opts, scenario, 64, 1)?
            .with("appenders", 64)
            .with("mode", "64 threads, each a blocking append() of one event"),
        "engine_append_concurrent64_inflight" => append_in_flight(opts, scenario, 64)?,
        "engine_read_stream" => read_stream(opts, scenario)?,
        "engine_scan_all" => scan_all(opts, scenario)?,
        "engine_reopen_1m" => reopen(opts, scenario, 1_000_000)?,
        "engine_reopen_10m" => {
            let events = if opts.quick { 1_000_000 } else { 10_000_000 };
            reopen(opts, scenario, opts.reopen_events.unwrap_or(events))?
        }
        "engine_reopen_30m" => {
            let events = if opts.quick { 3_000_000 } else { 30_000_000 };
            reopen(opts, scenario, events)?
        }
        "engine_many_streams_1m" => {
            many_streams::run(&opts.data_dir, scenario, 1_000_000, 3, opts.io_mode)?
        }
        "engine_many_streams_10m" => {
            let streams = if opts.quick { 2_000_000 } else { 10_000_000 };
            many_streams::run(&opts.data_dir, scenario, streams, 1, opts.io_mode)?
        }
        other => anyhow::bail!("no scenario {other:?}; known: {}", SCENARIOS.join(", ")),
    };
    let report = report.with("quick", opts.quick);
    Ok(match &opts.git_rev {
        Some(rev) => report.with("git_rev", rev.as_str()),
        None => report,
    })
}

/// A fresh store for one scenario; dropping it closes the engine, then deletes the files.
struct Store {
    // Field order is drop order: the engine must be closed before its directory goes.
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl Store {
    fn create(opts: &Options, scenario: &str) -> Result<Store> {
        let dir = scratch_dir(&opts.data_dir, scenario)?;
        let engine = Engine::open(dir.path(), opts.config())
            .with_context(|| format!("opening a store in {}", dir.path().display()))?;
        Ok(Store { engine, _dir: dir })
    }
}

fn report(scenario: &str, run: &Run, engine: &Engine) -> Report {
    Report::new(scenario, run.events, run.elapsed, &run.latency).with(
        "io_mode",
        format!("{:?}", engine.io_mode()).to_ascii_lowercase(),
    )
}

/// `threads` threads, each appending batches of `batch` events to its own stream for the
/// scenario's duration; one latency sample per append call.
fn append_timed(opts: &Options, scenario: &str, threads: usize, batch: usize) -> Result<Report> {
    let store = Store::create(opts, scenario)?;
    let engine = &store.engine;
    let duration = opts.timed();
    let run = run_parallel(threads, |t, latency| {
        let stream = stream_name(t);
        let mut ids = Ids::new(t as u64 + 1);
        let until = Instant::now() + duration;
        let mut events = 0;
        while Instant::now() < until {
            let write = ids.batch(batch);
            let began = Instant::now();
            engine.append(&stream, ExpectedVersion::Any, write)?;
            latency.saturating_record(nanos_since(began));
            events += batch as u64;
        }
        Ok(events)
    })?;
    Ok(report(scenario, &run, engine)
        .with("threads", threads)
        .with("batch", batch)
        .with("latency_per", "append call"))
}

/// One thread keeps `appenders` single-event appends in flight with `append_with`, each to
/// its own stream, starting the next as soon as one completes: 64 appenders without 64
/// threads competing for 2 cores. Latency runs from the call to the completion callback.
fn append_in_flight(opts: &Options, scenario: &str, appenders: usize) -> Result<Report> {
    let store = Store::create(opts, scenario)?;
    let engine = &store.engine;
    let streams: Vec<String> = (0..appenders).map(stream_name).collect();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Result<u64, AppendError>)>();
    let mut ids = Ids::new(1);
    let mut start = |slot: usize| {
        let write = StreamWrite {
            stream: streams[slot].clone(),
            expected: ExpectedVersion::Any,
            events: vec![ids.event()],
        };
        let done_tx = done_tx.clone();
        let began = Instant::now();
        engine.append_with(vec![write], move |r| {
            // Runs on the engine's writer thread, so the sample excludes our wake-up.
            let _ = done_tx.send((slot, r.map(|_| nanos_since(began))));
        });
    };
    let mut latency = latency_histogram();
    let began = Instant::now();
    let until = began + opts.timed();
    (0..appenders).for_each(&mut start);
    let (mut in_flight, mut events) = (appenders, 0u64);
    while in_flight > 0 {
        let (slot, r) = done_rx.recv().expect("we hold a sender");
        latency.saturating_record(r?);
        events += 1;
        in_flight -= 1;
        if Instant::now() < until {
            start(slot);
            in_flight += 1;
        }
    }
    let run = Run {
        latency,
        events,
        elapsed: began.elapsed(),
    };
    Ok(report(scenario, &run, engine)
        .with("appenders", appenders)
        .with("threads", 1)
        .with("batch", 1)
        .with(
            "mode",
            "1 thread keeping 64 append_with() of one event in flight",
        )
        .with("latency_per", "append_with call to its callback"))
}

/// Walks `events`, checking each with `check(i, event)`, and samples the time per
/// 1,000 events. Returns the run and the payload bytes seen.
fn timed_read<I, E>(
    events: I,
    mut check: impl FnMut(u64, &RecordedEvent) -> Result<()>,
) -> Result<(Run, u64)>
where
    I: Iterator<Item = Result<RecordedEvent, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut timer = ReadTimer::start();
    for e in events {
        let e = e?;
        check(timer.events(), &e)?;
        timer.event(e.data.len());
    }
    Ok(timer.finish())
}

/// Fills one stream with [`READ_EVENTS`] events, then reads it forward.
fn read_stream(opts: &Options, scenario: &str) -> Result<Report> {
    let store = Store::create(opts, scenario)?;
    let engine = &store.engine;
    let layout = Fill {
        events: READ_EVENTS,
        batch: FILL_BATCH,
        streams: 1,
        threads: 1,
    };
    fill(engine, layout)?;
    let stream = stream_name(0);
    let events = engine.read_stream(&stream, ReadFrom::Start, Direction::Forward, u64::MAX)?;
    let (run, bytes) = timed_read(events, |i, e| {
        ensure!(
            e.version == i,
            "read version {} where {i} was due",
            e.version
        );
        Ok(())
    })?;
    ensure!(
        run.events == READ_EVENTS,
        "read {} events of {READ_EVENTS}",
        run.events
    );
    ensure!(
        bytes == READ_EVENTS * EVENT_DATA_BYTES as u64,
        "payloads are short"
    );
    Ok(report(scenario, &run, engine)
        .with("written_in_batches_of", FILL_BATCH)
        .with("latency_per", "1000 events read"))
}

/// Fills 16 streams with [`READ_EVENTS`] events from 4 threads, then scans `$all` forward.
fn scan_all(opts: &Options, scenario: &str) -> Result<Report> {
    let store = Store::create(opts, scenario)?;
    let engine = &store.engine;
    let layout = Fill {
        events: READ_EVENTS,
        batch: FILL_BATCH,
        streams: 16,
        threads: 4,
    };
    fill(engine, layout)?;
    let events = engine.read_all(
        ReadFrom::Start,
        Direction::Forward,
        u64::MAX,
        AllFilter::default(),
    );
    let (run, bytes) = timed_read(events, |i, e| {
        ensure!(
            e.position == i,
            "read position {} where {i} was due",
            e.position
        );
        Ok(())
    })?;
    ensure!(
        run.events == READ_EVENTS,
        "scanned {} events of {READ_EVENTS}",
        run.events
    );
    ensure!(
        bytes == READ_EVENTS * EVENT_DATA_BYTES as u64,
        "payloads are short"
    );
    Ok(report(scenario, &run, engine)
        .with("streams", layout.streams)
        .with("written_in_batches_of", FILL_BATCH)
        .with("latency_per", "1000 events read"))
}

/// Restarts timed by each `engine_reopen_*` scenario.
const RESTARTS: u64 = 3;

/// One timed restart of `engine_reopen_*`.
#[derive(Clone, Copy)]
struct Restart {
    /// Open → the first append acknowledged.
    writable: Duration,
    /// Open → the store returned (reads served).
    reopen: Duration,
    first_read: Duration,
    first_append: Duration,
    stats: OpenStats,
}

/// Fills a store of `events` events, closes it, and times [`RESTARTS`] reopens; each reads
/// the last event (through `$all` and its stream) and appends one more, to show the
/// reopened store serves. `events_per_sec` and the latencies are the fill's (batches of
/// 1,000 from 4 threads).
fn reopen(opts: &Options, scenario: &str, events: u64) -> Result<Report> {
    let layout = Fill {
        events,
        batch: FILL_BATCH,
        streams: 1_000,
        threads: 4,
    };
    let dir = scratch_dir(&opts.data_dir, scenario)?;
    let built = {
        let engine = Engine::open(dir.path(), opts.config())?;
        let built = fill(&engine, layout)?;
        report(scenario, &built, &engine)
        // The engine drops here: its writer finishes the queue and stops.
    };
    // The fill leaves gigabytes of dirty pages (segments, spares, summaries) that the kernel
    // writes back over the next seconds; open's own fsyncs would wait behind them. Flushed
    // first, as a restart after a clean stop finds them.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    // Three restarts, each appending one event: the one with the median time to writable
    // is reported (a single restart right after a fill of gigabytes varies by 2-3x with
    // what the kernel is still doing), all three beside it.
    let mut restarts = Vec::with_capacity(RESTARTS as usize);
    let mut last_stream = String::new();
    for k in 0..RESTARTS {
        let opened = Instant::now();
        let engine = Engine::open(dir.path(), opts.config())?;
        let reopen = opened.elapsed();
        let began = Instant::now();
        let last = engine
            .read_all(ReadFrom::End, Direction::Backward, 1, AllFilter::default())
            .next()
            .context("the reopened store is empty")??;
        let first_read = began.elapsed();
        ensure!(
            last.position == events - 1 + k,
            "last position {}",
            last.position
        );
        let in_stream = engine
            .read_stream(&last.stream, ReadFrom::End, Direction::Backward, 1)?
            .next()
            .context("the last event's stream is empty")??;
        ensure!(
            in_stream.id == last.id,
            "the stream's last event is not $all's"
        );
        let began = Instant::now();
        let appended = engine.append(
            &last.stream,
            ExpectedVersion::Exact(in_stream.version),
            Ids::new(u64::MAX - k).batch(1),
        )?;
        let first_append = began.elapsed();
        let writable = opened.elapsed();
        ensure!(
            appended.position_first == events + k,
            "appended at {}",
            appended.position_first
        );
        restarts.push(Restart {
            writable,
            reopen,
            first_read,
            first_append,
            stats: engine.open_stats(),
        });
        last_stream = last.stream.to_string();
    }
    restarts.sort_by_key(|r| r.writable);
    let writable_each: Vec<f64> = restarts.iter().map(|r| millis(r.writable)).collect();
    let reopen_each: Vec<f64> = restarts.iter().map(|r| millis(r.reopen)).collect();
    let Restart {
        writable,
        reopen,
        first_read,
        first_append,
        stats,
    } = restarts[restarts.len() / 2];

    // The same restart without the event-id tables (as before they existed): appends then
    // wait for the in-memory id index, whose build grows with the store.
    for entry in std::fs::read_dir(dir.path())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "qids") {
            std::fs::remove_file(&path)?;
        }
    }
    let opened = Instant::now();
    let engine = Engine::open(dir.path(), opts.config())?;
    let appended = engine.append(
        &last_stream,
        ExpectedVersion::Any,
        Ids::new(u64::MAX - RESTARTS).batch(1),
    )?;
    let writable_without = opened.elapsed();
    ensure!(
        appended.position_first == events + RESTARTS && !engine.open_stats().id_tables,
        "appended at {} without tables",
        appended.position_first
    );
    drop(engine);
    drop(dir);
    Ok(built
        .with("reopen_ms", millis(reopen))
        .with("writable_ms", millis(writable))
        .with("reopen_ms_each", reopen_each)
        .with("writable_ms_each", writable_each)
        .with("writable_ms_without_id_tables", millis(writable_without))
        .with("id_tables", stats.id_tables)
        .with("records_replayed", stats.records_replayed)
        .with("records_from_summaries", stats.records_from_summaries)
        .with("summaries_loaded", stats.summaries_loaded)
        .with("stream_entries_read", stats.stream_entries_read)
        .with("torn_bytes_cut", stats.torn_bytes_cut)
        .with("first_read_us", micros(first_read))
        .with("first_append_us", micros(first_append))
        .with("streams", layout.streams)
        .with("threads", layout.threads)
        .with("batch", layout.batch)
        .with(
            "latency_per",
            "fill append call (events_per_sec is the fill's)",
        ))
}
