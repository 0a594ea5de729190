//! The `raft` suite: three Raft nodes in one process, each over its own engine (the engine is
//! Raft's storage, `quiver_server::raft_log`), talking through channels instead of QUIC. The
//! leader keeps a window of proposals in flight (after a 1 s warm-up that is not measured, in
//! both runs), each one 1 KiB event (an entry of about
//! 1.1 KiB); proposals made while the nodes are busy go out together, so Raft batches them into
//! one append and one fdatasync per node. Each scenario first runs the bare engine with the
//! same events and window, so the report carries the cost Raft adds, measured in the same run.
//!
//! | scenario | what is measured | latency sample |
//! |---|---|---|
//! | `raft_3nodes_window64` | 3 nodes, 64 proposals in flight | propose to committed on the leader |
//! | `raft_3nodes_window256` | 3 nodes, 256 proposals in flight | propose to committed on the leader |
//!
//! Fields besides the usual: `engine_events_per_sec`, `engine_p50_us`, `engine_p99_us`
//! (bare engine, `append_with` of one event, same window), and `raft_throughput_ratio`
//! (Raft's events/s over the engine's). The three data directories share one disk, so every
//! commit costs that disk two fdatasyncs (leader and the fastest follower) where the bare
//! engine pays one: on separate machines Raft would do better than here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use hdrhistogram::Histogram;
use quiver_engine::format::{encode_stream_append, EntryKind as RecordKind};
use quiver_engine::{
    AppendError, ContentType, Engine, EngineConfig, EventData, ExpectedVersion, StreamWrite,
};
use quiver_raft::{Config, Message, RawNode, Role};
use quiver_server::raft_log::{self, command, EngineLog};

use crate::report::{latency_histogram, Report};
use crate::workload::{nanos_since, scratch_dir, timed, Ids, EVENT_TYPE};

/// Every scenario of the suite, in order.
pub const SCENARIOS: &[&str] = &["raft_3nodes_window64", "raft_3nodes_window256"];

/// Bytes of each event's data.
pub const ENTRY_DATA_BYTES: usize = 1024;
/// Nodes in the cluster.
const NODES: u64 = 3;
/// The nodes' clock.
const TICK: Duration = Duration::from_millis(10);
/// Load before measuring, in both runs: the engines prepare their first spare segment
/// (64 MiB of zeroes) in the background just after opening, which would otherwise take
/// CPU from the first second of the measure.
const WARMUP: Duration = Duration::from_secs(1);

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parent of the scenarios' scratch stores (deleted after each scenario).
    pub data_dir: std::path::PathBuf,
    /// 1 s timed runs instead of 3 s.
    pub quick: bool,
    /// Commit being measured, copied into every report.
    pub git_rev: Option<String>,
}

/// Runs one scenario of [`SCENARIOS`].
pub fn run(scenario: &str, opts: &Options) -> Result<Report> {
    let window = match scenario {
        "raft_3nodes_window64" => 64,
        "raft_3nodes_window256" => 256,
        other => anyhow::bail!("no scenario {other:?}; known: {}", SCENARIOS.join(", ")),
    };
    let duration = timed(opts.quick);
    let (engine_rate, engine_latency) = bare_engine(opts, scenario, window, duration)?;
    let (events, elapsed, latency) = cluster(opts, scenario, window, duration)?;
    let rate = events as f64 / elapsed.as_secs_f64();
    let mut report = Report::new(scenario, events, elapsed, &latency)
        .with("nodes", NODES)
        .with("window", window)
        .with("entry_data_bytes", ENTRY_DATA_BYTES)
        .with("latency_per", "propose to committed on the leader")
        .with("engine_events_per_sec", engine_rate.round() as u64)
        .with("engine_p50_us", us(&engine_latency, 50.0))
        .with("engine_p99_us", us(&engine_latency, 99.0))
        .with(
            "raft_throughput_ratio",
            (rate / engine_rate * 1000.0).round() / 1000.0,
        )
        .with("quick", opts.quick);
    if let Some(rev) = &opts.git_rev {
        report = report.with("git_rev", rev.as_str());
    }
    Ok(report)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    (h.value_at_quantile(q / 100.0) as f64 / 100.0).round() / 10.0
}

fn event(ids: &mut Ids) -> EventData {
    EventData {
        id: ids.id(),
        event_type: EVENT_TYPE.to_string(),
        content_type: ContentType::Binary,
        data: vec![0x5A; ENTRY_DATA_BYTES].into(),
        metadata: Default::default(),
    }
}

/// The bare engine: one thread keeping `window` single-event `append_with` calls in flight.
fn bare_engine(
    opts: &Options,
    scenario: &str,
    window: usize,
    duration: Duration,
) -> Result<(f64, Histogram<u64>)> {
    let dir = scratch_dir(&opts.data_dir, &format!("{scenario}-engine"))?;
    let engine = Engine::open(dir.path(), EngineConfig::default())
        .with_context(|| format!("opening a store in {}", dir.path().display()))?;
    let (done_tx, done_rx) = mpsc::channel::<(Instant, Result<u64, AppendError>)>();
    let mut ids = Ids::new(1);
    let mut start = || {
        let write = StreamWrite {
            stream: "bench".into(),
            expected: ExpectedVersion::Any,
            events: vec![event(&mut ids)],
        };
        let done_tx = done_tx.clone();
        let began = Instant::now();
        engine.append_with(vec![write], move |r| {
            let _ = done_tx.send((began, r.map(|_| nanos_since(began))));
        });
    };
    let mut latency = latency_histogram();
    let measure_from = Instant::now() + WARMUP;
    let until = measure_from + duration;
    (0..window).for_each(|_| start());
    let (mut in_flight, mut events) = (window, 0u64);
    while in_flight > 0 {
        let (began, r) = done_rx.recv().expect("we hold a sender");
        let nanos = r?;
        if began >= measure_from {
            latency.saturating_record(nanos);
            events += 1;
        }
        in_flight -= 1;
        if Instant::now() < until {
            start();
            in_flight += 1;
        }
    }
    let rate = events as f64 / measure_from.elapsed().as_secs_f64();
    drop(engine);
    Ok((rate, latency))
}

enum Input {
    Message(Message),
    Stop,
}

/// What the leader's thread measured.
struct Measured {
    events: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// Three nodes, each on its own thread; once a leader is elected it keeps `window`
/// proposals in flight for `duration`.
fn cluster(
    opts: &Options,
    scenario: &str,
    window: usize,
    duration: Duration,
) -> Result<(u64, Duration, Histogram<u64>)> {
    let dirs = (1..=NODES)
        .map(|id| scratch_dir(&opts.data_dir, &format!("{scenario}-node{id}")))
        .collect::<Result<Vec<_>>>()?;
    let (txs, rxs): (Vec<Sender<Input>>, Vec<Receiver<Input>>) =
        (0..NODES).map(|_| mpsc::channel()).unzip();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (k, rx) in rxs.into_iter().enumerate() {
        let id = k as u64 + 1;
        let log = EngineLog::open(dirs[k].path(), EngineConfig::default())
            .with_context(|| format!("opening node {id}'s store"))?;
        let peers = txs.clone();
        let stop = stop.clone();
        threads.push(thread::spawn(move || {
            node_loop(id, log, rx, peers, stop, window, duration)
        }));
    }
    let mut measured = None;
    let mut failure = None;
    for (k, t) in threads.into_iter().enumerate() {
        if k == 0 {
            // Let the run happen, then stop everyone.
            thread::sleep(WARMUP + duration + Duration::from_secs(2));
            stop.store(true, Ordering::Relaxed);
            for tx in &txs {
                let _ = tx.send(Input::Stop);
            }
        }
        match t.join().map_err(|_| anyhow!("a node thread panicked"))? {
            Ok(Some(m)) => measured = Some(m),
            Ok(None) => {}
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let m = measured.ok_or_else(|| anyhow!("no node led a full run"))?;
    Ok((m.events, m.elapsed, m.latency))
}

/// One node: steps messages, ticks, persists and sends what is ready; as leader, keeps
/// `window` proposals in flight for `duration` and measures them.
fn node_loop(
    id: u64,
    log: EngineLog,
    rx: Receiver<Input>,
    peers: Vec<Sender<Input>>,
    stop: Arc<AtomicBool>,
    window: usize,
    duration: Duration,
) -> Result<Option<Measured>> {
    let mut config = Config::new(id, (1..=NODES).collect(), id);
    // Node 1 campaigns first, so the run does not wait on a split vote. Timeouts of 0.3 s and
    // 1 s (the followers') ride out fsync stalls on a busy disk without an election.
    config.election_ticks = if id == 1 { 30 } else { 100 };
    config.applied = log.applied();
    let mut node = RawNode::new(config, log);
    let mut next_tick = Instant::now() + TICK;
    let mut ids = Ids::new(id);
    let mut version = 0u64;
    let stream = format!("bench-node{id}");
    // Index → when it was proposed, and whether inside the measure.
    let mut proposed: HashMap<u64, (Instant, bool)> = HashMap::new();
    let mut latency = latency_histogram();
    let mut run: Option<(Instant, u64)> = None;
    let mut result = None;
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(input) => Some(input),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut stopping = false;
        for input in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match input {
                Input::Message(m) => node.step(m),
                Input::Stop => stopping = true,
            }
        }
        if stopping || stop.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() >= next_tick {
            node.tick();
            next_tick += TICK;
        }
        if node.role() == Role::Leader {
            let (measure_from, _) = *run.get_or_insert((Instant::now() + WARMUP, 0));
            while Instant::now() < measure_from + duration && proposed.len() < window {
                // A stream per node: a new leader (should one take over) never conflicts
                // with versions its predecessor proposed.
                let body = encode_stream_append(&stream, version, 1, &[event(&mut ids)]);
                let data = command(RecordKind::Append, 1, &body);
                let index = raft_log::propose(&mut node, data)?;
                version += 1;
                let now = Instant::now();
                proposed.insert(index, (now, now >= measure_from));
            }
        }
        while node.has_ready() {
            let ready = node.ready();
            // Appends leave before the leader's own write: the disks work in parallel.
            for m in &ready.early {
                let _ = peers[m.to as usize - 1].send(Input::Message(m.clone()));
            }
            node.storage_mut().persist(&ready)?;
            for m in &ready.messages {
                let _ = peers[m.to as usize - 1].send(Input::Message(m.clone()));
            }
            node.storage_mut().apply(&ready.committed)?;
            for e in &ready.committed {
                if let Some((t, measured)) = proposed.remove(&e.index) {
                    if measured {
                        latency.saturating_record(nanos_since(t));
                        if let Some((_, n)) = run.as_mut() {
                            *n += 1;
                        }
                    }
                }
            }
            node.advance(ready);
        }
        if let Some((measure_from, events)) = run {
            let done = Instant::now() >= measure_from + duration && proposed.is_empty();
            if done && result.is_none() {
                result = Some(Measured {
                    events,
                    elapsed: measure_from.elapsed(),
                    latency: latency.clone(),
                });
            }
        }
    }
    Ok(result)
}
