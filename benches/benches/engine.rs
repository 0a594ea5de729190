//! Criterion micro-benchmarks of the storage engine: durable appends by batch size, a
//! forward read of 1,000 events, a `$all` scan of 10,000 events, and the reopen of a
//! 100,000-event store. Stores live under `$QUIVER_BENCH_DIR` (default `quiver-bench-data`
//! in the working directory) and are deleted afterwards. Samples are few and short so the
//! whole run takes a few minutes; `quiver-bench engine` is the long-form, JSON-reporting
//! counterpart.
//!
//! Run with `cargo bench -p quiver-bench` (add `-- --quick` for an even shorter run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use quiver_bench::workload::{
    data_dir_from_env, fill, scratch_dir, stream_name, Fill, Ids, EVENT_DATA_BYTES,
};
use quiver_engine::{
    AllFilter, Direction, Engine, EngineConfig, ExpectedVersion, ReadFrom, RecordedEvent,
};
use tempfile::TempDir;

/// A fresh store, and the directory to delete after the engine is closed.
fn store(name: &str) -> (Engine, TempDir) {
    let dir = scratch_dir(&data_dir_from_env(), name).expect("a scratch directory");
    let engine = Engine::open(dir.path(), EngineConfig::default()).expect("the store opens");
    (engine, dir)
}

/// A store filled with `events` events over `streams` streams, in batches of 1,000.
fn filled(name: &str, events: u64, streams: usize) -> (Engine, TempDir) {
    let (engine, dir) = store(name);
    let layout = Fill {
        events,
        batch: 1_000,
        streams,
        threads: streams.min(4),
    };
    fill(&engine, layout).expect("the store fills");
    (engine, dir)
}

/// Reads every event, touching its payload, and returns how many there were.
fn drain<E: std::fmt::Debug>(events: impl Iterator<Item = Result<RecordedEvent, E>>) -> u64 {
    let mut n = 0;
    for e in events {
        let e = e.expect("event");
        assert_eq!(e.data.len(), EVENT_DATA_BYTES);
        black_box(&e.data[EVENT_DATA_BYTES - 1]);
        n += 1;
    }
    n
}

fn append(c: &mut Criterion) {
    let (engine, dir) = store("criterion-append");
    let mut ids = Ids::new(1);
    let mut group = c.benchmark_group("engine_append");
    for batch in [1usize, 10, 100, 1_000] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &n| {
            b.iter_batched(
                || ids.batch(n),
                |events| {
                    engine
                        .append("bench-append", ExpectedVersion::Any, events)
                        .expect("append")
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
    drop(engine);
    drop(dir);
}

fn read(c: &mut Criterion) {
    let (engine, dir) = filled("criterion-read", 10_000, 1);
    let stream = stream_name(0);
    let mut group = c.benchmark_group("engine_read");
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("stream_forward_1000", |b| {
        b.iter(|| {
            let events = engine
                .read_stream(&stream, ReadFrom::Start, Direction::Forward, 1_000)
                .expect("the stream exists");
            assert_eq!(drain(events), 1_000);
        });
    });
    group.throughput(Throughput::Elements(10_000));
    let (all_engine, all_dir) = filled("criterion-scan", 10_000, 10);
    group.bench_function("all_forward_10000", |b| {
        b.iter(|| {
            let events = all_engine.read_all(
                ReadFrom::Start,
                Direction::Forward,
                u64::MAX,
                AllFilter::default(),
            );
            assert_eq!(drain(events), 10_000);
        });
    });
    group.finish();
    drop((engine, all_engine));
    drop((dir, all_dir));
}

fn reopen(c: &mut Criterion) {
    let (engine, dir) = filled("criterion-reopen", 100_000, 100);
    drop(engine);
    let mut group = c.benchmark_group("engine_reopen");
    group.bench_function("events_100000", |b| {
        // Timed by hand: only the open counts, and two engines must never share the directory,
        // so each one is closed before the next open starts.
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let began = Instant::now();
                let engine = Engine::open(dir.path(), EngineConfig::default()).expect("reopen");
                total += began.elapsed();
                assert_eq!(engine.commit_position(), 100_000);
                drop(engine);
            }
            total
        });
    });
    group.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

criterion_group! {
    name = engine;
    config = short();
    targets = append, read, reopen
}
criterion_main!(engine);
