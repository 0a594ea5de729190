//! One run: a cluster, the list-append workload on several client processes, the nemesis
//! on its schedule, then healing, final reads on every node, and the files of the result.
//!
//! The workload is Elle's list-append with stream = key and event = element: a process
//! either appends unique elements to one or two streams (a multi-stream append is one
//! atomic write: a transaction) or reads one stream whole. Streams rotate: a stream takes a
//! bounded number of appends, then a new one replaces it, so reads stay short. Every
//! operation is recorded as an `invoke` and its completion: `ok`, `fail` (the server said
//! it did not happen) or `info` (unknown: a timeout, a lost connection, a lost leader; the
//! process is then replaced by a new one, as in Jepsen).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use quiver_client::{Client, ClientConfig, Error, EventData, ExpectedVersion, ReadStreamOptions};
use quiver_net::ErrorCode;
use serde_json::{json, Value};

use crate::control::{wait_for_leader, Backend, Cluster, DockerBackend};
use crate::nemesis::{self, Kind, Rng};
use crate::subscribers::{ConfigSource, Subscribers, SubscriptionReport};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `quiver` binary.
    pub binary: PathBuf,
    /// Nodes (3 or 5).
    pub nodes: u64,
    /// Seconds of workload.
    pub time_limit: Duration,
    /// Faults to choose from (empty: none).
    pub nemesis: Vec<Kind>,
    /// Seconds between faults, and how long each lasts.
    pub nemesis_interval: Duration,
    /// Client processes running at once.
    pub concurrency: usize,
    /// Operations per second, all processes together (0: as fast as they go).
    pub rate: u64,
    /// The seed of every choice.
    pub seed: u64,
    /// Where the run's files go.
    pub out: PathBuf,
    /// Run against the Docker compose cluster of this image instead of local processes
    /// (`binary` is then unused; faults the backend cannot make are skipped).
    pub docker: Option<String>,
    /// Workload `registers`: one append in three is a compare-and-append (read, then append
    /// expecting exactly the version read).
    pub registers: bool,
    /// Workload `idempotent`: a write whose outcome is unknown is sent again with the same
    /// event ids (up to [`RETRIES`] times) before it is given up.
    pub idempotent: bool,
    /// Workload `subscriptions`: catch-up subscribers on every node and a persistent-group
    /// consumer run throughout, and must deliver what the healed cluster holds.
    pub subscriptions: bool,
}

/// What a run did, beside its history.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counts {
    /// Operations by completion type.
    pub ok: u64,
    /// Definitely did not happen.
    pub fail: u64,
    /// Unknown outcome.
    pub info: u64,
    /// Faults started.
    pub faults: u64,
    /// Leader changes seen by the nemesis's polls.
    pub leader_changes: u64,
    /// Writes sent again, with the same event ids, after an unknown outcome.
    pub retries: u64,
    /// Storage faults a node did not detect (it started on rotten data, or refused without
    /// naming corruption): findings.
    pub undetected_corruption: u64,
}

/// The recorder: appends history events as JSON lines, numbering them.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<(std::io::BufWriter<std::fs::File>, u64)>>,
    start: Instant,
    counts: Arc<Mutex<Counts>>,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Recorder {
    fn new(path: &Path) -> Result<Recorder> {
        let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
        Ok(Recorder {
            inner: Arc::new(Mutex::new((std::io::BufWriter::new(file), 0))),
            start: Instant::now(),
            counts: Arc::new(Mutex::new(Counts::default())),
        })
    }

    /// Records one event.
    pub fn record(&self, kind: &str, process: u64, f: &str, value: Value, error: Option<String>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let index = g.1;
        g.1 += 1;
        let mut event = json!({
            "index": index,
            "type": kind,
            "process": process,
            "time_ns": self.start.elapsed().as_nanos() as u64,
            "wall_ms": wall_ms(),
            "f": f,
            "value": value,
        });
        if let Some(e) = error {
            event["error"] = Value::String(e);
        }
        let _ = writeln!(g.0, "{event}");
        drop(g);
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            "ok" => c.ok += 1,
            "fail" => c.fail += 1,
            "info" => c.info += 1,
            _ => {}
        }
    }

    fn flush(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = g.0.flush();
    }
}

/// Whether an operation that ended in `e` definitely did not happen (`fail`) rather than
/// that its outcome is unknown (`info`). A read changes nothing, so a failed read is always
/// `fail`. An append is `fail` only when the request could never have been proposed (a bad
/// name, a bad request, too large, refused credentials): the client retries an append after
/// an unknown outcome (a lost leader, a timeout) on another node, so a later `NotLeader` or
/// `Unavailable` says nothing of the first attempt.
pub fn definite(e: &Error, read: bool) -> bool {
    if read {
        return true;
    }
    match e {
        Error::Unauthenticated(_) | Error::TooLarge { .. } | Error::UnsupportedVersion(_) => true,
        Error::Server { code, .. } => {
            matches!(code, ErrorCode::InvalidName | ErrorCode::InvalidRequest)
        }
        _ => false,
    }
}

/// The streams appended to: a few at a time, each retired after `APPENDS_PER_KEY`.
struct Keys {
    active: Vec<(u64, u64)>,
    next_key: u64,
    next_element: u64,
}

const ACTIVE_KEYS: usize = 5;
const APPENDS_PER_KEY: u64 = 120;

impl Keys {
    fn new() -> Keys {
        Keys {
            active: (0..ACTIVE_KEYS as u64).map(|k| (k, 0)).collect(),
            next_key: ACTIVE_KEYS as u64,
            next_element: 1,
        }
    }

    /// A key to read.
    fn read(&self, rng: &mut Rng) -> u64 {
        self.active[rng.below(self.active.len() as u64) as usize].0
    }

    /// One key and a fresh element for it.
    fn append_one(&mut self, rng: &mut Rng) -> (u64, u64) {
        self.append_n(rng, 1)[0]
    }

    /// Keys (1 or 2, distinct) and a fresh element for each.
    fn append(&mut self, rng: &mut Rng) -> Vec<(u64, u64)> {
        let n = if rng.below(3) == 0 { 2 } else { 1 };
        self.append_n(rng, n)
    }

    /// `n` distinct keys and a fresh element for each.
    fn append_n(&mut self, rng: &mut Rng, n: usize) -> Vec<(u64, u64)> {
        let mut picks: Vec<usize> = (0..self.active.len()).collect();
        rng.shuffle(&mut picks);
        let mut out = Vec::new();
        for slot in picks.into_iter().take(n) {
            let (key, count) = &mut self.active[slot];
            out.push((*key, self.next_element));
            self.next_element += 1;
            *count += 1;
            if *count >= APPENDS_PER_KEY {
                *key = self.next_key;
                *count = 0;
                self.next_key += 1;
            }
        }
        out
    }
}

fn stream(key: u64) -> String {
    format!("la-{key}")
}

/// The elements of stream `key`, in order; a stream never written reads as empty.
async fn read_elements(client: &Client, key: u64) -> Result<Vec<u64>, Error> {
    let mut events = match client
        .read_stream(&stream(key), ReadStreamOptions::default())
        .await
    {
        Ok(events) => events,
        Err(Error::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    while let Some(e) = events.next().await? {
        let v: Value = serde_json::from_slice(&e.data).unwrap_or(Value::Null);
        out.push(v["e"].as_u64().unwrap_or(u64::MAX));
    }
    Ok(out)
}

/// How a write whose outcome is unknown is retried: the same request, the same event ids,
/// on a fresh connection (the leader may have moved), up to this many more times.
const RETRIES: u32 = 3;

/// One client process's loop until `stop`. Its appends go to any member (the client finds
/// the leader); its reads go to one member, the `slot`-th of `view` when it connects
/// (linearizable reads must be right on every node, followers included). A write whose
/// outcome is unknown is retried with the same event ids before it is given up as `info`:
/// the server must store it once (an event in a stream twice is a `duplicate-elements`
/// finding).
#[allow(clippy::too_many_arguments)]
async fn worker(
    base: ClientConfig,
    view: Arc<Mutex<Vec<SocketAddr>>>,
    slot: usize,
    rec: Recorder,
    keys: Arc<Mutex<Keys>>,
    processes: Arc<AtomicU64>,
    mut rng: Rng,
    stop: tokio::sync::watch::Receiver<bool>,
    pace: Duration,
    (registers, retries): (bool, u32),
) {
    let mut process = processes.fetch_add(1, Relaxed);
    let mut client: Option<Client> = None;
    let mut reader: Option<Client> = None;
    while !*stop.borrow() {
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        // Half reads; of the appends, one in three a compare-and-append.
        let (read, cas) = match rng.below(6) {
            0..=2 => (true, false),
            3 => (false, registers),
            _ => (false, false),
        };
        let slot_ref = if read { &mut reader } else { &mut client };
        let Some(c) = connect(slot_ref, &base, &view, read.then_some(slot)).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (value, outcome) = if read {
            let key = lock(&keys).read(&mut rng);
            let invoke = json!([["r", stream(key), null]]);
            rec.record("invoke", process, "txn", invoke, None);
            match read_elements(c, key).await {
                Ok(elements) => (json!([["r", stream(key), elements]]), Ok(())),
                Err(e) => (json!([["r", stream(key), null]]), Err(e)),
            }
        } else if cas {
            // Read a stream, then append to it expecting exactly what was read. When the
            // append succeeds the stream held exactly the read elements at that moment, so
            // the pair is one atomic transaction: [r k prefix] [append k e]. Two of them
            // succeeding on one prefix is a lost update (the checker sees a cycle).
            let (key, element) = lock(&keys).append_one(&mut rng);
            let k = stream(key);
            let invoke = json!([["r", &k, null], ["append", &k, element]]);
            rec.record("invoke", process, "txn", invoke.clone(), None);
            match read_elements(c, key).await {
                Err(e) => (invoke, Err(e)),
                Ok(prefix) => {
                    let expected = match prefix.len() {
                        0 => ExpectedVersion::NoStream,
                        n => ExpectedVersion::Exact(n as u64 - 1),
                    };
                    let write = vec![(k.clone(), expected, vec![event(element)])];
                    match write_retrying(&mut client, &base, &view, write, &rec, retries).await {
                        Ok(()) => (json!([["r", &k, prefix], ["append", &k, element]]), Ok(())),
                        // Even a wrong expected version is `info`: after a retry it may
                        // follow a first attempt whose outcome is unknown.
                        Err(e) => (invoke, Err(e)),
                    }
                }
            }
        } else {
            let picks = lock(&keys).append(&mut rng);
            let value = json!(picks
                .iter()
                .map(|(k, e)| json!(["append", stream(*k), e]))
                .collect::<Vec<_>>());
            rec.record("invoke", process, "txn", value.clone(), None);
            let writes = picks
                .iter()
                .map(|(k, e)| (stream(*k), ExpectedVersion::Any, vec![event(*e)]))
                .collect();
            let done = write_retrying(&mut client, &base, &view, writes, &rec, retries).await;
            (value, done)
        };
        match outcome {
            Ok(()) => rec.record("ok", process, "txn", value, None),
            Err(e) if definite(&e, read) => {
                rec.record("fail", process, "txn", value, Some(e.to_string()))
            }
            Err(e) => {
                rec.record("info", process, "txn", value, Some(e.to_string()));
                // Its operation may still happen: a new process takes its place, and a fresh
                // connection with it.
                process = processes.fetch_add(1, Relaxed);
                client = None;
                reader = None;
            }
        }
    }
}

/// An event carrying `element`, with a fresh id (kept across the write's retries).
fn event(element: u64) -> EventData {
    EventData::json("appended", format!("{{\"e\":{element}}}"))
}

/// The client in `slot`, connected now if it is not: to every member, or to the
/// `pinned`-th member only.
async fn connect<'a>(
    slot: &'a mut Option<Client>,
    base: &ClientConfig,
    view: &Mutex<Vec<SocketAddr>>,
    pinned: Option<usize>,
) -> Option<&'a Client> {
    if slot.is_none() {
        let members = lock(view).clone();
        let servers = match pinned {
            Some(i) if !members.is_empty() => vec![members[i % members.len()]],
            _ => members,
        };
        *slot = Client::connect(base.clone().servers(servers)).await.ok();
    }
    slot.as_ref()
}

/// Appends `writes` (one atomic write), sending it again with the same events (so the same
/// ids) on a fresh connection, up to `retries` more times, after what may succeed if sent
/// again ([`Error::is_retryable`]: a timeout, a lost connection, a node not the leader or
/// unavailable). A conflict is not re-sent: it would be refused again.
async fn write_retrying(
    client: &mut Option<Client>,
    base: &ClientConfig,
    view: &Mutex<Vec<SocketAddr>>,
    writes: Vec<(String, ExpectedVersion, Vec<EventData>)>,
    rec: &Recorder,
    retries: u32,
) -> Result<(), Error> {
    let mut tries = 0;
    loop {
        let result = match connect(client, base, view, None).await {
            Some(c) if writes.len() == 1 => {
                let (stream, expected, events) = &writes[0];
                c.append(stream, *expected, events.clone())
                    .await
                    .map(|_| ())
            }
            Some(c) => c.append_multi(writes.clone()).await.map(|_| ()),
            None => Err(Error::Timeout),
        };
        match result {
            Err(e) if e.is_retryable() && tries < retries => {
                tries += 1;
                lock(&rec.counts).retries += 1;
                *client = None;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => return other,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The nemesis's loop: a fault every interval, held for an interval, then healed; a line
/// per start and end in `timeline.jsonl`.
#[allow(clippy::too_many_arguments)]
async fn nemesis_loop(
    cluster: Arc<tokio::sync::Mutex<Box<dyn Backend>>>,
    kinds: Vec<Kind>,
    interval: Duration,
    seed: u64,
    rec: Recorder,
    timeline: PathBuf,
    root: PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(&timeline)?);
    let mut rng = Rng::new(seed ^ 0x6E65_6D65_7369_7321);
    let mut last_leader = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
        let leader = cluster.lock().await.leader();
        if leader.is_some() && leader != last_leader {
            if last_leader.is_some() {
                lock(&rec.counts).leader_changes += 1;
            }
            last_leader = leader;
        }
        if *stop.borrow() || kinds.is_empty() {
            break;
        }
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let t0 = rec.start.elapsed().as_nanos() as u64;
        let (what, active) = {
            let mut c = cluster.lock().await;
            nemesis::start(kind, &mut **c, &mut rng, leader, &root).await?
        };
        if active != nemesis::Active::Skipped {
            lock(&rec.counts).faults += 1;
        }
        writeln!(
            out,
            "{}",
            json!({"time_ns": t0, "wall_ms": wall_ms(), "phase": "start", "fault": kind, "detail": what})
        )?;
        out.flush()?;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
        let done = {
            let mut c = cluster.lock().await;
            c.heal()?;
            let done = nemesis::stop(&active, &mut **c, &root).await?;
            lock(&rec.counts).undetected_corruption = c.undetected();
            done
        };
        let t1 = rec.start.elapsed().as_nanos() as u64;
        writeln!(
            out,
            "{}",
            json!({"time_ns": t1, "wall_ms": wall_ms(), "phase": "stop", "fault": kind, "detail": what, "healing": done})
        )?;
        out.flush()?;
    }
    out.flush()?;
    Ok(())
}

/// What a run leaves: where its files are and what it counted.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    /// The run's directory.
    pub dir: PathBuf,
    /// Counts.
    pub counts: Counts,
    /// Per node, per stream: the elements each node holds after healing (follower reads,
    /// once every node has applied the leader's commit index).
    pub replicas: BTreeMap<u64, BTreeMap<String, Vec<u64>>>,
    /// Whether every node holds the same elements for every stream.
    pub replicas_agree: bool,
    /// Where they do not: nodes that had not caught up, and streams that differ.
    pub differences: Vec<String>,
    /// What the subscribers delivered, checked (when the workload ran them).
    pub subscriptions: Option<SubscriptionReport>,
}

/// Runs the workload and the nemesis; heals; reads every stream on every node; writes
/// `history.jsonl`, `timeline.jsonl` and the logs into `opts.out`.
pub async fn run(opts: &Options) -> Result<Outcome> {
    std::fs::create_dir_all(&opts.out)?;
    let data = opts.out.join("nodes");
    // Nodes started on what an earlier run left would join its store to this one's (found the
    // hard way: a run whose directory an aborted run's harness had refilled read that run's
    // events as garbage). A run starts from nothing.
    if std::fs::read_dir(&data).is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!(
            "{} holds an earlier run's nodes: give another --out, or remove it",
            data.display()
        );
    }
    let cluster: Box<dyn Backend> = match &opts.docker {
        None => Box::new(Cluster::start(&opts.binary, opts.nodes, &data, opts.seed).await?),
        Some(image) => Box::new(DockerBackend::new(
            crate::docker::DockerCluster::start(image, opts.nodes, &data, opts.seed).await?,
        )),
    };
    wait_for_leader(&*cluster, Duration::from_secs(90))
        .await
        .context("no leader within 90 s of starting the cluster")?;
    let config = cluster.client_config(&opts.out);
    let view = cluster.view();
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let rec = Recorder::new(&opts.out.join("history.jsonl"))?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let keys = Arc::new(Mutex::new(Keys::new()));
    let processes = Arc::new(AtomicU64::new(0));
    let pace = match opts.rate {
        0 => Duration::ZERO,
        r => Duration::from_secs_f64(opts.concurrency as f64 / r as f64),
    };
    // Subscribers from the start, each catch-up one on its own node first; they run on
    // through healing (their own stop: only `finish` ends them).
    let (_abandon, abandoned) = tokio::sync::watch::channel(false);
    let subscribers = if opts.subscriptions {
        let ids = cluster.lock().await.ids();
        // Each transient subscriber prefers the member in its slot, and reconnects to the
        // members of the moment (its first node may be removed and replaced).
        let source = |slot: usize| -> ConfigSource {
            let (config, view) = (config.clone(), view.clone());
            Arc::new(move || {
                let mut order = lock(&view).clone();
                if !order.is_empty() {
                    let at = slot % order.len();
                    order.rotate_left(at);
                }
                config.clone().servers(order)
            })
        };
        let per_node = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, source(i)))
            .collect();
        Some(Subscribers::start(per_node, source(0), &opts.out, abandoned).await?)
    } else {
        None
    };
    let mut workers = Vec::new();
    for i in 0..opts.concurrency {
        workers.push(tokio::spawn(worker(
            config.clone(),
            view.clone(),
            i,
            rec.clone(),
            keys.clone(),
            processes.clone(),
            Rng::new(opts.seed.wrapping_add(i as u64 * 7919)),
            stop.clone(),
            pace,
            (opts.registers, if opts.idempotent { RETRIES } else { 0 }),
        )));
    }
    let nemesis = tokio::spawn(nemesis_loop(
        cluster.clone(),
        opts.nemesis.clone(),
        opts.nemesis_interval,
        opts.seed,
        rec.clone(),
        opts.out.join("timeline.jsonl"),
        opts.out.join("nemesis-client"),
        stop.clone(),
    ));
    let started = Instant::now();
    while started.elapsed() < opts.time_limit {
        tokio::time::sleep(Duration::from_secs(5).min(opts.time_limit)).await;
        let c = lock(&rec.counts).clone();
        eprintln!(
            "[{:>4}s] ok {} fail {} info {}; faults {}, leader changes {}",
            started.elapsed().as_secs(),
            c.ok,
            c.fail,
            c.info,
            c.faults,
            c.leader_changes
        );
    }
    stop_tx.send_replace(true);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    nemesis.await??;
    // Healed: every node up, every link clear; wait for one leader and for every node to
    // apply its commit index, then read every stream on every node.
    let mut cluster = cluster.lock().await;
    cluster.heal()?;
    let leader = wait_for_leader(&**cluster, Duration::from_secs(30))
        .await
        .context("no leader within 30 s after healing")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let behind = loop {
        let commit = cluster.status(leader).map_or(u64::MAX, |s| s.commit);
        let behind: Vec<(u64, Option<u64>, u64)> = cluster
            .ids()
            .into_iter()
            .map(|id| (id, cluster.status(id).map(|s| s.applied), commit))
            .filter(|(_, applied, commit)| applied.is_none_or(|a| a < *commit))
            .collect();
        if behind.is_empty() || Instant::now() > deadline {
            break behind;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let behind: Vec<String> = behind
        .iter()
        .map(|(id, applied, commit)| match applied {
            Some(a) => format!("node {id} applied {a} of the leader's commit {commit} after 60 s"),
            None => format!("node {id} did not answer after healing"),
        })
        .collect();
    let streams: Vec<u64> = (0..lock(&keys).next_key).collect();
    let mut replicas = BTreeMap::new();
    for id in cluster.ids() {
        let config = cluster
            .client_config(&opts.out)
            .servers([cluster.client(id)])
            .follower_reads(true);
        let client = Client::connect(config).await?;
        let mut held = BTreeMap::new();
        for key in &streams {
            let elements = read_elements(&client, *key)
                .await
                .with_context(|| format!("final read of {} on node {id}", stream(*key)))?;
            held.insert(stream(*key), elements);
        }
        replicas.insert(id, held);
    }
    // The final reads enter the history too, as reads by one more process, so the checker
    // sees what the healed cluster holds.
    let final_process = processes.fetch_add(1, Relaxed);
    if let Some(held) = replicas.get(&leader) {
        for (name, elements) in held {
            rec.record(
                "invoke",
                final_process,
                "txn",
                json!([["r", name, null]]),
                None,
            );
            rec.record(
                "ok",
                final_process,
                "txn",
                json!([["r", name, elements]]),
                None,
            );
        }
    }
    rec.flush();
    cluster.save_logs(&data);
    // The subscribers must deliver what the healed cluster holds (the leader's streams).
    let subscriptions = match (subscribers, replicas.get(&leader)) {
        (Some(subs), Some(held)) => Some(subs.finish(held, Duration::from_secs(60)).await),
        _ => None,
    };
    let first = replicas.values().next().cloned();
    let replicas_agree = replicas.values().all(|r| Some(r) == first.as_ref());
    let mut differences = behind;
    if let (Some(lead), false) = (replicas.get(&leader), replicas_agree) {
        for (id, held) in &replicas {
            for (name, elements) in held {
                let theirs = lead.get(name).map_or(&[][..], |v| v.as_slice());
                if elements.as_slice() != theirs && differences.len() < 20 {
                    let common = elements
                        .iter()
                        .zip(theirs)
                        .take_while(|(a, b)| a == b)
                        .count();
                    differences.push(format!(
                        "{name}: node {id} holds {} elements, leader {leader} {}; they part after {common}",
                        elements.len(),
                        theirs.len()
                    ));
                }
            }
        }
    }
    let counts = lock(&rec.counts).clone();
    Ok(Outcome {
        dir: opts.out.clone(),
        counts,
        replicas,
        replicas_agree,
        differences,
        subscriptions,
    })
}
