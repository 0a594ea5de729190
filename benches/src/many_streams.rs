//! `engine_many_streams_1m` and `engine_many_streams_10m`: the event-sourcing shape, one
//! stream per aggregate with a few events each, as a new user would write it with the
//! engine's own API: appends to 1,000 streams of one 256-byte event each, in rounds (round 0
//! creates every stream, expected `NoStream`; round k appends each stream's k-th event,
//! expected `Exact(k - 1)`), so that a stream's events lie far apart in the log, as an
//! aggregate's do. `_10m` has one event per stream (one round), `_1m` three.
//!
//! The fill is measured here; the restart in a fresh process (`quiver-bench engine-probe`),
//! so that its memory is the reopened store's alone, not what the fill left in this
//! process's allocator. The probe reports:
//! - `reopen_ms`: open returns; `writable_ms`: open → first append acknowledged (to a stream
//!   read back from disk, with its true expected version);
//! - `rss_anon_open_mb`: anonymous memory the open added, right after the first append;
//!   `rss_anon_mb`: the same once the background event-id loader is done (it checks every
//!   id table into the store-wide filter of event ids: about 2 bytes per event);
//!   `rss_anon_empty_store_mb`:
//!   the latter for an empty store (the engine's own queues and buffers, whatever the store);
//!   `resident_bytes_per_stream_open` and `resident_bytes_per_stream`: the first two less the
//!   empty store's, per stream;
//! - `streams_in_memory`, `stream_tables`: streams whose index is in memory, tables in use;
//! - `id_index_in_memory`, `id_tables`: event ids held in memory (those of the segments not
//!   yet summarized), and id tables in use;
//! - `cold_append_p50_us`/`_p99_us`: appends to 1,000 streams not written since the restart
//!   (with their true expected version); `cold_read_p50_us`/`_p99_us`: reading 1,000 others
//!   whole.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context as _, Result};
use quiver_engine::{
    Direction, Engine, EngineConfig, ExpectedVersion, IoMode, ReadFrom, StreamWrite,
};
use serde_json::{Map, Value};

use crate::report::{latency_histogram, micros, millis, Report};
use crate::workload::{nanos_since, scratch_dir, Ids};

/// New streams per append.
const PER_APPEND: usize = 1_000;
/// Streams the cold appends and reads each touch.
const COLD: usize = 1_000;

fn name(i: u64) -> String {
    format!("aggregate-{i:010}")
}

/// The `i`th of `COLD` streams spread over `streams`, from `offset`.
fn spread(i: usize, streams: u64, offset: u64) -> u64 {
    (i as u64 * (streams / COLD as u64) + offset) % streams
}

/// Fills a store with `streams` streams of `events` events each, restarts it in a probe
/// process and reports both.
pub fn run(
    data_dir: &Path,
    scenario: &str,
    streams: u64,
    events: u64,
    io_mode: IoMode,
) -> Result<Report> {
    ensure!(streams >= (PER_APPEND * 2) as u64 && streams.is_multiple_of(PER_APPEND as u64));
    let dir = scratch_dir(data_dir, scenario)?;
    let config = EngineConfig::default().io_mode(io_mode);
    let mut latency = latency_histogram();
    let began = Instant::now();
    {
        let engine = Engine::open(dir.path(), config)?;
        let mut ids = Ids::new(7);
        for round in 0..events {
            let expected = match round {
                0 => ExpectedVersion::NoStream,
                k => ExpectedVersion::Exact(k - 1),
            };
            for first in (0..streams).step_by(PER_APPEND) {
                let writes = (first..first + PER_APPEND as u64)
                    .map(|i| StreamWrite {
                        stream: name(i),
                        expected,
                        events: ids.batch(1),
                    })
                    .collect();
                let t = Instant::now();
                engine.append_multi(writes)?;
                latency.record(nanos_since(t)).ok();
            }
        }
        // Dropped here: a clean close writes every due summary and table.
    }
    let elapsed = began.elapsed();
    let mut probe = run_probe(dir.path(), streams, events, io_mode)?;
    // The same restart of an empty store: what the engine holds whatever the store (its
    // queues, buffers, threads), so that what is left is what the streams cost.
    let empty = scratch_dir(data_dir, &format!("{scenario}-empty"))?;
    let fixed = run_probe(empty.path(), 0, 0, io_mode)?;
    drop(empty);
    let rss = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let fixed_mb = rss(&fixed, "rss_anon_mb");
    let per_stream = |mb: f64| ((mb - fixed_mb).max(0.0) * 1e6 / streams as f64).round();
    let open = per_stream(rss(&probe, "rss_anon_open_mb"));
    let loaded = per_stream(rss(&probe, "rss_anon_mb"));
    probe.insert("rss_anon_empty_store_mb".into(), fixed_mb.into());
    probe.insert("resident_bytes_per_stream_open".into(), open.into());
    probe.insert("resident_bytes_per_stream".into(), loaded.into());
    let disk_mb = dir_bytes(dir.path())? as f64 / 1e6;
    drop(dir);
    let mut report = Report::new(scenario, streams * events, elapsed, &latency)
        .with("streams", streams)
        .with("events_per_stream", events)
        .with("disk_mb", (disk_mb * 10.0).round() / 10.0)
        .with(
            "latency_per",
            "fill append call of one event to each of 1,000 streams (events_per_sec is the fill's)",
        );
    report.extra.extend(probe);
    Ok(report)
}

/// Runs `quiver-bench engine-probe` on `dir` and returns what it printed.
fn run_probe(dir: &Path, streams: u64, events: u64, io_mode: IoMode) -> Result<Map<String, Value>> {
    let exe = std::env::current_exe().context("finding quiver-bench for the probe")?;
    let out = Command::new(exe)
        .arg("engine-probe")
        .arg("--dir")
        .arg(dir)
        .arg("--streams")
        .arg(streams.to_string())
        .arg("--events")
        .arg(events.to_string())
        .arg("--io-mode")
        .arg(format!("{io_mode:?}").to_ascii_lowercase())
        .output()
        .context("running the restart probe")?;
    ensure!(
        out.status.success(),
        "the restart probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("probe said {:?}", String::from_utf8_lossy(&out.stdout)))
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

/// Anonymous memory of this process, bytes (`RssAnon` of /proc/self/status).
pub fn rss_anon() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .context("no RssAnon in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()?;
    Ok(kb * 1024)
}

/// The restart half, in its own process: prints one JSON object on stdout.
pub fn probe(dir: &Path, streams: u64, events: u64, io_mode: IoMode) -> Result<()> {
    let before = rss_anon()?;
    let opened = Instant::now();
    let engine = Engine::open(dir, EngineConfig::default().io_mode(io_mode))?;
    let reopen = opened.elapsed();
    let mut ids = Ids::new(8);
    let first = name(streams / 2);
    // The stream's true version: its last event's.
    let tip = |events: u64| match events {
        0 => ExpectedVersion::NoStream,
        n => ExpectedVersion::Exact(n - 1),
    };
    let expected = tip(if streams == 0 { 0 } else { events });
    engine.append(&first, expected, ids.batch(1))?;
    let writable = opened.elapsed();
    let (in_memory, tables) = engine.streams_in_memory();
    let open_rss = rss_anon()?.saturating_sub(before);
    let waited = Instant::now();
    while !engine.id_index_loaded() {
        ensure!(
            waited.elapsed().as_secs() < 600,
            "the id index did not load"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let id_loaded = waited.elapsed();
    let rss = rss_anon()?.saturating_sub(before);
    let id_index = engine.id_index_stats();
    let (mut appends, mut reads) = (latency_histogram(), latency_histogram());
    let cold = if streams == 0 { 0 } else { COLD };
    for i in 0..cold {
        let s = name(spread(i, streams, 1));
        let t = Instant::now();
        let r = engine.append(&s, tip(events), ids.batch(1))?;
        appends.record(nanos_since(t)).ok();
        ensure!(
            r.next_expected_version == events,
            "{s} was at {}",
            r.next_expected_version
        );
    }
    for i in 0..cold {
        let s = name(spread(i, streams, 2));
        let t = Instant::now();
        let n = engine
            .read_stream(&s, ReadFrom::Start, Direction::Forward, u64::MAX)?
            .collect::<Result<Vec<_>, _>>()?
            .len();
        reads.record(nanos_since(t)).ok();
        ensure!(n as u64 == events, "{s} read {n} events");
    }
    let us = |h: &hdrhistogram::Histogram<u64>, q: f64| {
        (h.value_at_quantile(q) as f64 / 100.0).round() / 10.0
    };
    let mb = |b: u64| (b as f64 / 1e5).round() / 10.0;
    let line = serde_json::json!({
        "reopen_ms": millis(reopen),
        "writable_ms": millis(writable),
        "id_index_loaded_ms": millis(reopen + id_loaded),
        "rss_anon_open_mb": mb(open_rss),
        "rss_anon_mb": mb(rss),
        "streams_in_memory": in_memory,
        "stream_tables": tables,
        "id_index_in_memory": id_index.in_memory,
        "id_tables": id_index.tables,
        "cold_append_p50_us": us(&appends, 0.5),
        "cold_append_p99_us": us(&appends, 0.99),
        "cold_read_p50_us": us(&reads, 0.5),
        "cold_read_p99_us": us(&reads, 0.99),
        "first_append_us": micros(writable - reopen),
    });
    println!("{line}");
    Ok(())
}
