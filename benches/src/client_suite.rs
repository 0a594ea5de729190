//! The `client` suite: the server over QUIC, driven through `quiver-client` as an application
//! would drive it: TLS, loopback UDP, one QUIC stream per request, every append durable on
//! the server before its answer.
//!
//! | scenario | what is measured | latency sample |
//! |---|---|---|
//! | `client_append_batch1` | 1 connection, appends of 1 event in turn (the batch-size sweep: 1, 10, 100, 1,000) | append call |
//! | `client_append_batch10` | 1 connection, appends of 10 events in turn | append call |
//! | `client_append_batch100` | 1 connection, appends of 100 events in turn | append call |
//! | `client_append_batch1000` | 1 connection, appends of 1,000 events in turn | append call |
//! | `client_append_batch100_c16` | 16 connections, a stream each, appends of 100 | append call |
//! | `client_append_concurrent64` | 64 tasks, a connection each, 1 event per append | append call |
//! | `client_append_shared64` | 64 tasks sharing one `Client` (one connection), a stream each, 1 event per append | append call |
//! | `client_read_stream` | read a 1,000,000-event stream (200,000 `--quick`) | 1,000 events |
//! | `client_scan_all` | read `$all` over the same store, from its first event | 1,000 events |
//! | `subscribe_live_latency` | 1 subscriber on `$all` from its end, 1 writer of single events | append call → event received |
//! | `subscribe_catchup` | subscribe to `$all` over the read store, from its first event, until caught up | 1,000 events |
//! | `subscribe_catchup_filtered` | the same with a type prefix that 1 event in 10 matches | 1,000 events delivered |
//! | `persistent_ack_throughput` | 1 consumer of a group on `$all` acks 200,000 events (50,000 `--quick`) | 1,000 events |
//!
//! **PostgreSQL beside it.** Before those, the suite runs the PostgreSQL counterparts of the
//! append and read scenarios (`pg_append_batch100`, `pg_append_batch100_c16`,
//! `pg_append_concurrent64`, `pg_read_stream`, `pg_scan_all`: see
//! [`crate::postgres_peer`]) on a throwaway PostgreSQL server it starts under the bench
//! directory, and stops that server before the first Quiver scenario. The Quiver lines with
//! a counterpart then carry `vs_postgres` (Quiver's events/s over PostgreSQL's in the same
//! run, 2 decimals), `postgres_events_per_sec` and `postgres_counterpart`; both are `null`
//! when the counterpart did not run (`--no-peer`, PostgreSQL missing or not starting: one
//! message on stderr says so, and the Quiver scenarios run all the same). Choosing Quiver
//! scenarios with `--scenario` brings their counterparts along ([`with_peer`]). With
//! `--server`, PostgreSQL still runs on this machine: pass `--no-peer` when the Quiver
//! server is elsewhere, or the ratio compares two machines.
//!
//! Latency is what the caller sees: from the call to its answer, a round trip plus the
//! server's work and fsync. The read store is written beforehand in appends of 1,000 events
//! over one connection (`fill_events_per_sec` in the read reports); one event in
//! [`TENTH_EVERY`] has the type [`TENTH_TYPE`] (as long as [`EVENT_TYPE`]), for the filtered
//! catch-up. The live subscriber's writer awaits each append and then the event's arrival
//! before the next, so its latency holds no queueing. The persistent group is created after
//! its store is filled, starting at the fill's first event, with 256 events in flight; the
//! consumer acks in batches of 64, and the run ends when the group's checkpoint has passed
//! the last event.
//!
//! **Which server.** With `--server ADDR` the clients connect to a running server. Without
//! it, each append scenario starts a server in-process on `127.0.0.1:0`, on a fresh store
//! under the bench data directory (deleted afterwards) with the TLS CA it generates there;
//! the two read scenarios share one server and its store, filled once. That server runs on
//! its own tokio runtime (threads named `quiver-server`), the clients on another
//! (`bench-client`), each with one worker per core, as two processes on the machine would:
//! `perf report --sort comm` then splits the CPU between them.
//!
//! **Ids and names.** Each run draws a random run id. Event ids and stream names derive from
//! it, so a second run against the same server neither collides with the first nor is
//! answered as an idempotent retry of it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use hdrhistogram::Histogram;
use quiver_client::{
    Client, ClientConfig, EventData, ExpectedVersion, PersistentDefinition, ReadAllOptions,
    ReadStreamOptions, SubscribeAllOptions, SubscriptionMessage,
};
use quiver_engine::Uuid;
use quiver_server::ServerConfig;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, Barrier};

use crate::postgres_peer::{self, Peer};
use crate::report::{latency_histogram, micros, Report};
use crate::workload::{
    nanos, nanos_since, scratch_dir, timed, Ids, ReadTimer, Run, EVENT_DATA_BYTES, EVENT_TYPE,
    FILL_BATCH, PAYLOAD, READ_EVENTS,
};

/// Every scenario of the suite, in the order [`Suite::run`] is meant to be called:
/// PostgreSQL's first ([`postgres_peer::SCENARIOS`]), so that Quiver's can report the ratio
/// to them.
pub const SCENARIOS: &[&str] = &[
    "pg_append_batch100",
    "pg_append_batch100_c16",
    "pg_append_concurrent64",
    "pg_read_stream",
    "pg_scan_all",
    "client_append_batch1",
    "client_append_batch10",
    "client_append_batch100",
    "client_append_batch1000",
    "client_append_batch100_c16",
    "client_append_concurrent64",
    "client_append_shared64",
    "client_read_stream",
    "client_scan_all",
    "subscribe_live_latency",
    "subscribe_catchup",
    "subscribe_catchup_filtered",
    "persistent_ack_throughput",
];

/// Event type of one event in [`TENTH_EVERY`] of a fill (as long as [`EVENT_TYPE`]); the
/// filtered catch-up subscribes with it as the type prefix.
pub const TENTH_TYPE: &str = "bench-tenth";
/// A fill's events of type [`TENTH_TYPE`]: the last of every this many.
pub const TENTH_EVERY: u64 = 10;
/// Events the persistent group's consumer acks.
const PERSISTENT_EVENTS: u64 = 200_000;
/// The same with `--quick`.
const PERSISTENT_EVENTS_QUICK: u64 = 50_000;
/// Most events the persistent group has in flight.
const PERSISTENT_MAX_IN_FLIGHT: u32 = 256;
/// Positions per ack the consumer sends (well under [`PERSISTENT_MAX_IN_FLIGHT`], so the
/// group always has more to deliver while the consumer holds a batch).
const ACK_BATCH: usize = 64;
/// Longest wait for a subscription or a group to deliver before the scenario fails.
const WAIT_MAX: Duration = Duration::from_secs(10);

/// Events in the read store with `--quick`.
const READ_EVENTS_QUICK: u64 = 200_000;
/// Thread name of the in-process server's runtime (workers and blocking pool).
const SERVER_THREADS: &str = "quiver-server";
/// Thread name of the clients' runtime.
const CLIENT_THREADS: &str = "bench-client";
/// How long a stopping in-process server may take to drain before its runtime is dropped.
const SERVER_STOP_MAX: Duration = Duration::from_secs(10);

/// A server that is already running.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// The PEM file of the CA to trust (see [`default_ca_file`]).
    pub ca_file: PathBuf,
    /// Token, when the server requires one.
    pub token: Option<String>,
}

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// A running server; `None`: start one in-process per scenario.
    pub remote: Option<Remote>,
    /// Parent of the in-process servers' scratch stores.
    pub data_dir: PathBuf,
    /// Shorter timed scenarios (1 s) and a 200,000-event read store.
    pub quick: bool,
    /// Commit being measured, copied into every report.
    pub git_rev: Option<String>,
    /// Stage timing (`--stages`): what the installed [`crate::stages::StagesLayer`] records
    /// into. Each Quiver scenario's line then carries `stages` (per stage span: count, p50,
    /// p99, mean µs) and `usage` (the process's CPU and context switches per operation).
    pub stages: Option<Arc<crate::stages::Stages>>,
}

/// The CA to trust when none is given (`--ca`, `$QUIVER_CA`): the one a server on this
/// machine generated in its data directory, `$QUIVER_DATA_DIR/tls/ca.pem`, else
/// `quiver-data/tls/ca.pem`, as the server's own defaults put it.
pub fn default_ca_file() -> PathBuf {
    let data_dir: PathBuf = std::env::var_os("QUIVER_DATA_DIR")
        .map(Into::into)
        .unwrap_or_else(|| "quiver-data".into());
    quiver_server::tls::tls_dir(&data_dir).join(quiver_server::tls::CA_FILE)
}

/// The scenarios to run, in suite order: the `chosen` ones and, with `peer`, the PostgreSQL
/// counterpart of each chosen Quiver scenario; without `peer`, no PostgreSQL scenario.
pub fn with_peer(chosen: &[&str], peer: bool) -> Vec<&'static str> {
    SCENARIOS
        .iter()
        .copied()
        .filter(|&s| {
            if !postgres_peer::is_peer_scenario(s) {
                return chosen.contains(&s);
            }
            peer && (chosen.contains(&s)
                || chosen
                    .iter()
                    .any(|&q| postgres_peer::counterpart(q) == Some(s)))
        })
        .collect()
}

/// One run of the suite: the clients' runtime, the run id, the store the read scenarios
/// share once one of them has filled it, and the PostgreSQL peer with its rates.
pub struct Suite {
    opts: Options,
    // Field order is drop order: the read store's server and PostgreSQL stop before the
    // clients' runtime.
    reads: Option<ReadStore>,
    peer: Option<Peer>,
    /// events/s of each PostgreSQL scenario that ran.
    postgres_rates: Vec<(String, u64)>,
    runtime: Runtime,
    run_id: u64,
    sources: u64,
}

impl Suite {
    /// A suite ready to run scenarios; starts the clients' runtime.
    pub fn new(opts: Options) -> Result<Suite> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(CLIENT_THREADS)
            .build()
            .context("starting the clients' runtime")?;
        Ok(Suite {
            opts,
            reads: None,
            peer: None,
            postgres_rates: Vec::new(),
            runtime,
            run_id: Uuid::new_v4().as_u64_pair().0,
            sources: 0,
        })
    }

    /// Starts the throwaway PostgreSQL server the `pg_*` scenarios run on (under the bench
    /// directory); an error says why it could not, and those scenarios cannot run then.
    pub fn start_peer(&mut self) -> Result<()> {
        if self.peer.is_none() {
            let opts = postgres_peer::Options {
                quick: self.opts.quick,
                read_events: self.read_events(),
            };
            self.peer = Some(Peer::start(&self.opts.data_dir, opts, &self.runtime)?);
        }
        Ok(())
    }

    /// Starts PostgreSQL if `chosen` holds one of its scenarios. When it cannot start, says
    /// why on stderr and returns `chosen` without them, with the reason, so that Quiver's
    /// scenarios still run (their `vs_postgres` is then null).
    pub fn start_peer_if_chosen(
        &mut self,
        mut chosen: Vec<&'static str>,
    ) -> (Vec<&'static str>, Option<anyhow::Error>) {
        if !chosen.iter().any(|s| postgres_peer::is_peer_scenario(s)) {
            return (chosen, None);
        }
        eprintln!(
            "quiver-bench: starting a throwaway PostgreSQL under {}",
            self.opts.data_dir.display()
        );
        match self.start_peer() {
            Ok(()) => (chosen, None),
            Err(e) => {
                eprintln!(
                    "quiver-bench: skipping the PostgreSQL scenarios (vs_postgres will be \
                     null): {e:#}\nquiver-bench: {}",
                    postgres_peer::INSTALL_HINT
                );
                chosen.retain(|s| !postgres_peer::is_peer_scenario(s));
                (chosen, Some(e))
            }
        }
    }

    /// Stops the PostgreSQL server, if running; a failure to stop it is printed, not
    /// returned, since nothing measured depends on it.
    fn stop_peer(&mut self) {
        if let Some(peer) = self.peer.take() {
            if let Err(e) = peer.stop() {
                eprintln!("quiver-bench: {e:#}");
            }
        }
    }

    /// Events in the read store: [`READ_EVENTS`], or [`READ_EVENTS_QUICK`] with `--quick`.
    fn read_events(&self) -> u64 {
        if self.opts.quick {
            READ_EVENTS_QUICK
        } else {
            READ_EVENTS
        }
    }

    /// Runs one scenario of [`SCENARIOS`] and returns its report. A `pg_*` scenario needs
    /// [`Suite::start_peer`] first; the first Quiver scenario stops PostgreSQL.
    pub fn run(&mut self, scenario: &str) -> Result<Report> {
        let report = if postgres_peer::is_peer_scenario(scenario) {
            let peer = self
                .peer
                .as_mut()
                .context("the PostgreSQL peer is not running")?;
            let report = peer.run(scenario, &self.runtime)?;
            self.postgres_rates
                .push((scenario.to_string(), report.events_per_sec));
            report
        } else {
            // Quiver runs on a machine where PostgreSQL is not running.
            self.stop_peer();
            let stages = self.opts.stages.clone();
            let report = crate::stages::measured(stages.as_deref(), || self.run_quiver(scenario))?;
            match postgres_peer::counterpart(scenario) {
                Some(pg) => {
                    let rate = self
                        .postgres_rates
                        .iter()
                        .rev()
                        .find(|(s, _)| s == pg)
                        .map(|(_, r)| *r);
                    postgres_peer::vs_postgres(report, rate, pg)
                }
                None => report,
            }
        };
        let report = report.with("quick", self.opts.quick);
        Ok(match &self.opts.git_rev {
            Some(rev) => report.with("git_rev", rev.as_str()),
            None => report,
        })
    }

    /// Runs one of Quiver's scenarios.
    fn run_quiver(&mut self, scenario: &str) -> Result<Report> {
        Ok(match scenario {
            "client_append_batch1" => self.append(scenario, 1, 1, 1)?,
            "client_append_batch10" => self.append(scenario, 1, 1, 10)?,
            "client_append_batch100" => self.append(scenario, 1, 1, 100)?,
            "client_append_batch1000" => self.append(scenario, 1, 1, 1000)?,
            "client_append_batch100_c16" => self.append(scenario, 16, 16, 100)?,
            "client_append_concurrent64" => self.append(scenario, 64, 64, 1)?.with(
                "mode",
                "64 tasks, each with its own Client (connection), one single-event append \
                 awaited at a time",
            ),
            // How a service uses the client: one connection, shared by its request handlers.
            "client_append_shared64" => self.append(scenario, 64, 1, 1)?.with(
                "mode",
                "64 tasks sharing one Client (one connection), one single-event append \
                 awaited at a time in each",
            ),
            "client_read_stream" => self.read_stream(scenario)?,
            "client_scan_all" => self.scan_all(scenario)?,
            "subscribe_live_latency" => self.live_latency(scenario)?,
            "subscribe_catchup" => self.catch_up(scenario, None)?,
            "subscribe_catchup_filtered" => self.catch_up(scenario, Some(TENTH_TYPE))?,
            "persistent_ack_throughput" => self.persistent_ack(scenario)?,
            other => anyhow::bail!("no scenario {other:?}; known: {}", SCENARIOS.join(", ")),
        })
    }

    /// Stops PostgreSQL if it still runs, and the in-process server the read scenarios
    /// shared, if any, and says whether that stopped cleanly (dropping the suite stops both
    /// too, but can only print a failure).
    pub fn finish(mut self) -> Result<()> {
        self.stop_peer();
        match self.reads.take().and_then(|r| r.server.local) {
            Some(mut local) => local.stop(),
            None => Ok(()),
        }
    }

    /// An id generator no other appender of this run (or of another run) shares.
    fn ids(&mut self) -> Ids {
        self.sources += 1;
        Ids::new(self.run_id.wrapping_add(self.sources))
    }

    /// The `i`th stream of `scenario` in this run.
    fn stream(&self, scenario: &str, i: usize) -> String {
        format!("{scenario}-{:08x}-{i}", self.run_id >> 32)
    }

    /// `appenders` tasks over `connections` clients (task `t` uses client
    /// `t % connections`), each appending batches of `batch` events to its own stream for the
    /// scenario's duration; one latency sample per append call.
    fn append(
        &mut self,
        scenario: &str,
        appenders: usize,
        connections: usize,
        batch: usize,
    ) -> Result<Report> {
        let server = Target::start(&self.opts, scenario)?;
        let work: Vec<(String, Ids)> = (0..appenders)
            .map(|t| (self.stream(scenario, t), self.ids()))
            .collect();
        let duration = timed(self.opts.quick);
        let run = self.runtime.block_on(async {
            let clients = connect(&server.config, connections).await?;
            let run = run_tasks(work.into_iter().enumerate().map(|(t, (stream, ids))| {
                let client = clients[t % connections].clone();
                append_loop(client, stream, ids, batch, duration)
            }))
            .await;
            close(clients).await;
            run
        })?;
        let report = Report::new(scenario, run.events, run.elapsed, &run.latency);
        Ok(server
            .stop_and_describe(report)?
            .with("connections", connections)
            .with("appenders", appenders)
            .with("batch", batch)
            .with("latency_per", "append call, as the client sees it"))
    }

    /// The read store, filled on first use.
    fn read_store(&mut self) -> Result<&ReadStore> {
        if self.reads.is_none() {
            let server = Target::start(&self.opts, "client_read")?;
            let stream = self.stream("client_read", 0);
            let events = self.read_events();
            let ids = self.ids();
            let filled = self
                .runtime
                .block_on(fill(&server.config, &stream, ids, events))?;
            self.reads = Some(ReadStore {
                server,
                stream,
                events,
                first_position: filled.first_position,
                fill_events_per_sec: filled.run.events_per_sec().round() as u64,
            });
        }
        Ok(self.reads.as_ref().expect("filled just above"))
    }

    /// Reads the read store's stream forward, checking every version and payload.
    fn read_stream(&mut self, scenario: &str) -> Result<Report> {
        self.read_store()?;
        let store = self.reads.as_ref().expect("filled by read_store");
        let (run, bytes) = self.runtime.block_on(async {
            let client = Client::connect(store.server.config.clone()).await?;
            let mut timer = ReadTimer::start();
            let mut events = client
                .read_stream(&store.stream, ReadStreamOptions::default())
                .await?;
            while let Some(e) = events.next().await? {
                let due = timer.events();
                ensure!(
                    e.version.get() == due,
                    "read version {} where {due} was due",
                    e.version
                );
                timer.event(e.data.len());
            }
            let read = timer.finish();
            client.close().await;
            Ok::<_, anyhow::Error>(read)
        })?;
        store.report(scenario, &run, bytes, store.events)
    }

    /// Reads `$all` forward from the read store's first event, as many events as it holds.
    fn scan_all(&mut self, scenario: &str) -> Result<Report> {
        self.read_store()?;
        let store = self.reads.as_ref().expect("filled by read_store");
        let first = store.first_position;
        let (run, bytes) = self.runtime.block_on(async {
            let client = Client::connect(store.server.config.clone()).await?;
            let options = ReadAllOptions::default()
                .from(first)
                .max_count(store.events);
            let mut timer = ReadTimer::start();
            let mut events = client.read_all(options).await?;
            while let Some(e) = events.next().await? {
                let due = first + timer.events();
                ensure!(
                    e.position.get() == due,
                    "read position {} where {due} was due",
                    e.position
                );
                timer.event(e.data.len());
            }
            let read = timer.finish();
            client.close().await;
            Ok::<_, anyhow::Error>(read)
        })?;
        store.report(scenario, &run, bytes, store.events)
    }

    /// A subscriber on `$all` from its end and a writer appending single events, each
    /// awaited and then awaited at the subscriber; one sample per event, from just before
    /// its append call to the subscriber receiving it.
    fn live_latency(&mut self, scenario: &str) -> Result<Report> {
        let server = Target::start(&self.opts, scenario)?;
        let stream = self.stream(scenario, 0);
        let ids = self.ids();
        let duration = timed(self.opts.quick);
        let live = self.runtime.block_on(async {
            let clients = connect(&server.config, 2).await?;
            let (arrived, arrivals) = mpsc::unbounded_channel();
            let (is_live, live) = oneshot::channel();
            let subscriber = tokio::spawn(follow_live(clients[0].clone(), is_live, arrived));
            let measured = match within("the subscriber going live", live).await {
                Ok(Ok(())) => write_live(&clients[1], &stream, ids, arrivals, duration).await,
                _ => Err(anyhow!("the subscriber did not go live")),
            };
            subscriber.abort();
            let followed = subscriber.await;
            close(clients).await;
            if let Ok(Err(e)) = followed {
                return Err(e.context("the live subscriber failed"));
            }
            measured
        })?;
        let run = &live.run;
        let report = Report::new(scenario, run.events, run.elapsed, &run.latency);
        Ok(server
            .stop_and_describe(report)?
            .with("connections", 2)
            .with("event_bytes", EVENT_DATA_BYTES)
            .with(
                "latency_per",
                "event: just before its append call to the subscriber receiving it",
            )
            .with("target_p99_us", 1000)
            .with("append_p50_us", live.append_p50_us)
            .with("append_p99_us", live.append_p99_us)
            .with("received_before_append_answer", live.before_answer))
    }

    /// Subscribes to `$all` from the read store's first event (with a type prefix, if given)
    /// and counts the events delivered until the subscription says it has caught up.
    fn catch_up(&mut self, scenario: &str, type_prefix: Option<&str>) -> Result<Report> {
        self.read_store()?;
        let store = self.reads.as_ref().expect("filled by read_store");
        let first = store.first_position;
        // The store's events only: on a running server, other scenarios (or other runs) may
        // have written after it, and a catch-up to the head would deliver theirs too.
        let last = first + store.events - 1;
        let mut options = SubscribeAllOptions::default().from(first);
        if let Some(prefix) = type_prefix {
            options = options.type_prefix(prefix);
        }
        let (run, bytes) = self.runtime.block_on(async {
            let client = Client::connect(store.server.config.clone()).await?;
            let mut timer = ReadTimer::start();
            let mut sub = client.subscribe_all(options).await?;
            loop {
                let message = within("the catch-up subscription", sub.next())
                    .await??
                    .context("the subscription ended before catching up")?;
                match message {
                    SubscriptionMessage::Event(e) if e.position.get() > last => break,
                    SubscriptionMessage::Event(e) => {
                        let due = first + timer.events();
                        ensure!(
                            type_prefix.is_some() || e.position.get() == due,
                            "delivered position {} where {due} was due",
                            e.position
                        );
                        ensure!(
                            type_prefix.is_none_or(|p| e.event_type.starts_with(p)),
                            "delivered an event of type {:?}",
                            e.event_type
                        );
                        timer.event(e.data.len());
                        if e.position.get() == last {
                            break;
                        }
                    }
                    SubscriptionMessage::CaughtUp { .. } => break,
                    SubscriptionMessage::Checkpoint { at } if at.get() > last => break,
                    // FellBehind only ever follows a CaughtUp.
                    SubscriptionMessage::Checkpoint { .. }
                    | SubscriptionMessage::FellBehind { .. } => {}
                }
            }
            let read = timer.finish();
            drop(sub);
            client.close().await;
            Ok::<_, anyhow::Error>(read)
        })?;
        let Some(prefix) = type_prefix else {
            return Ok(store
                .report(scenario, &run, bytes, store.events)?
                .with("latency_per", "1000 events delivered"));
        };
        let scanned_per_sec = store.events as f64 / run.elapsed.as_secs_f64();
        Ok(store
            .report(scenario, &run, bytes, store.events / TENTH_EVERY)?
            .with("type_prefix", prefix)
            .with("positions_scanned", store.events)
            .with("scanned_per_sec", scanned_per_sec.round() as u64)
            .with("latency_per", "1000 matching events delivered"))
    }

    /// Fills a fresh store, creates a group on `$all` from the fill's first event, and
    /// times one consumer receiving and acking every event until the group's checkpoint
    /// has passed the last one.
    fn persistent_ack(&mut self, scenario: &str) -> Result<Report> {
        let server = Target::start(&self.opts, scenario)?;
        let stream = self.stream(scenario, 0);
        let group = format!("{stream}-group");
        let events = if self.opts.quick {
            PERSISTENT_EVENTS_QUICK
        } else {
            PERSISTENT_EVENTS
        };
        let ids = self.ids();
        let (filled, (run, bytes)) = self.runtime.block_on(async {
            let filled = fill(&server.config, &stream, ids, events).await?;
            let client = Client::connect(server.config.clone()).await?;
            let first = filled.first_position;
            let definition = PersistentDefinition::all(group.as_str())
                .start(first)
                .max_in_flight(PERSISTENT_MAX_IN_FLIGHT);
            client.create_persistent(&definition).await?;
            let consumed = consume_and_ack(&client, &group, first..first + events).await;
            client.delete_persistent(&group).await?;
            client.close().await;
            Ok::<_, anyhow::Error>((filled, consumed?))
        })?;
        ensure!(
            bytes == events * EVENT_DATA_BYTES as u64,
            "payloads are short"
        );
        let report = Report::new(scenario, run.events, run.elapsed, &run.latency);
        Ok(server
            .stop_and_describe(report)?
            .with("consumers", 1)
            .with("max_in_flight", PERSISTENT_MAX_IN_FLIGHT)
            .with("ack_batch", ACK_BATCH)
            .with("written_in_batches_of", FILL_BATCH)
            .with(
                "fill_events_per_sec",
                filled.run.events_per_sec().round() as u64,
            )
            .with("latency_per", "1000 events delivered and acked"))
    }
}

/// The store the read and catch-up scenarios read: one stream of `events` events, written in appends of
/// [`FILL_BATCH`] with nothing else in between in `$all`.
struct ReadStore {
    server: Target,
    stream: String,
    events: u64,
    first_position: u64,
    fill_events_per_sec: u64,
}

impl ReadStore {
    /// The report of a read of the store that should have seen `events` events, after
    /// checking it saw them whole.
    fn report(&self, scenario: &str, run: &Run, bytes: u64, events: u64) -> Result<Report> {
        let report = whole_read_report(scenario, run, bytes, events)?;
        Ok(self
            .server
            .describe(report)
            .with("connections", 1)
            .with("streams", 1)
            .with("written_in_batches_of", FILL_BATCH)
            .with("fill_events_per_sec", self.fill_events_per_sec)
            .with("latency_per", "1000 events read"))
    }
}

/// The report of a read that should have seen `events` events of this suite's payload size,
/// after checking that it did (Quiver's reads and the PostgreSQL peer's alike).
pub(crate) fn whole_read_report(
    scenario: &str,
    run: &Run,
    bytes: u64,
    events: u64,
) -> Result<Report> {
    ensure!(
        run.events == events,
        "read {} events of {events}",
        run.events
    );
    ensure!(
        bytes == events * EVENT_DATA_BYTES as u64,
        "payloads are short"
    );
    Ok(Report::new(scenario, run.events, run.elapsed, &run.latency))
}

/// Where the clients connect: a running server, or one started in-process for the purpose.
struct Target {
    config: ClientConfig,
    local: Option<LocalServer>,
}

impl Target {
    /// The remote server of `opts`, or a fresh in-process one named after `scenario`.
    fn start(opts: &Options, scenario: &str) -> Result<Target> {
        let Some(remote) = &opts.remote else {
            let (local, config) = LocalServer::start(opts, scenario)?;
            return Ok(Target {
                config,
                local: Some(local),
            });
        };
        let mut config = ClientConfig::local(".")
            .server(remote.addr)
            .ca_file(remote.ca_file.clone());
        if let Some(token) = &remote.token {
            config = config.token(token);
        }
        Ok(Target {
            config,
            local: None,
        })
    }

    /// Adds which server was measured to `report`.
    fn describe(&self, report: Report) -> Report {
        let report = report.with("server_addr", self.config.server.to_string());
        match &self.local {
            Some(local) => report
                .with("server", "in-process")
                .with("io_mode", local.io_mode.as_str()),
            None => report.with("server", "remote"),
        }
    }

    /// Stops an in-process server (failing if it failed), then describes it in `report`.
    fn stop_and_describe(mut self, report: Report) -> Result<Report> {
        if let Some(local) = &mut self.local {
            local.stop()?;
        }
        Ok(self.describe(report))
    }
}

/// A server started in-process on a fresh store, on its own runtime.
struct LocalServer {
    io_mode: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    // Field order is drop order: the runtime (and the store with it) goes before its files.
    runtime: Option<Runtime>,
    _dir: TempDir,
}

impl LocalServer {
    /// Starts a server on `127.0.0.1:0` with a fresh store; returns it and how to reach it.
    fn start(opts: &Options, scenario: &str) -> Result<(LocalServer, ClientConfig)> {
        let dir = scratch_dir(&opts.data_dir, scenario)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(SERVER_THREADS)
            .build()
            .context("starting the server's runtime")?;
        // No HTTP operations endpoint: nothing here reads it, and its default port would
        // collide with a real server on this machine.
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            http: None,
            ..ServerConfig::new(dir.path())
        };
        // Binding the endpoint needs the runtime.
        let server = runtime.block_on(async { quiver_server::Server::start(&config) })?;
        let addr = server.local_addr();
        let io_mode = format!("{:?}", server.engine().io_mode()).to_ascii_lowercase();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(server.run(async move {
            let _ = stopped.await;
        }));
        let client = ClientConfig::local(dir.path()).server(addr);
        let local = LocalServer {
            io_mode,
            stop: Some(stop),
            task: Some(task),
            runtime: Some(runtime),
            _dir: dir,
        };
        Ok((local, client))
    }

    /// Asks the server to stop, waits for it to drain and flush, and stops its runtime.
    fn stop(&mut self) -> Result<()> {
        let (Some(stop), Some(task), Some(runtime)) =
            (self.stop.take(), self.task.take(), self.runtime.take())
        else {
            return Ok(());
        };
        let _ = stop.send(());
        let ran = runtime.block_on(async { tokio::time::timeout(SERVER_STOP_MAX, task).await });
        runtime.shutdown_timeout(SERVER_STOP_MAX);
        ran.context("the server did not stop in time")?
            .context("the server task panicked")?
            .context("the server failed")
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("quiver-bench: stopping the in-process server: {e:#}");
        }
    }
}

/// `n` connected clients.
pub(crate) async fn connect(config: &ClientConfig, n: usize) -> Result<Vec<Arc<Client>>> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let client = Client::connect(config.clone())
            .await
            .with_context(|| format!("connecting client {i} to {}", config.server))?;
        clients.push(Arc::new(client));
    }
    Ok(clients)
}

/// Closes the clients no task holds any more, so the server sees them leave.
pub(crate) async fn close(clients: Vec<Arc<Client>>) {
    let mut closing = tokio::task::JoinSet::new();
    for client in clients.into_iter().filter_map(Arc::into_inner) {
        closing.spawn(client.close());
    }
    closing.join_all().await;
}

/// Runs the `tasks`, released together, each returning its latency samples and how many
/// events it handled: the async counterpart of `workload::run_parallel`.
pub(crate) async fn run_tasks<F>(tasks: impl IntoIterator<Item = F>) -> Result<Run>
where
    F: Future<Output = Result<(Histogram<u64>, u64)>> + Send + 'static,
{
    let tasks: Vec<F> = tasks.into_iter().collect();
    let start = Arc::new(Barrier::new(tasks.len() + 1));
    let handles: Vec<_> = tasks
        .into_iter()
        .map(|work| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                work.await
            })
        })
        .collect();
    start.wait().await;
    let began = Instant::now();
    let mut run = Run {
        latency: latency_histogram(),
        events: 0,
        elapsed: Duration::ZERO,
    };
    for h in handles {
        let (latency, events) = h.await.context("a benchmark task panicked")??;
        run.latency.add(&latency).expect("histograms share bounds");
        run.events += events;
    }
    run.elapsed = began.elapsed();
    Ok(run)
}

/// One event for the client: the workload's id and payload (shared, not copied).
pub(crate) fn event(ids: &mut Ids, event_type: &str) -> EventData {
    EventData {
        id: ids.id(),
        event_type: event_type.to_string(),
        json: false,
        data: PAYLOAD[..].into(),
        metadata: Default::default(),
    }
}

/// `n` events for one append.
fn batch(ids: &mut Ids, n: usize) -> Vec<EventData> {
    (0..n).map(|_| event(ids, EVENT_TYPE)).collect()
}

/// The type of a fill's `i`th event: [`TENTH_TYPE`] for one in [`TENTH_EVERY`], else
/// [`EVENT_TYPE`].
pub(crate) fn fill_type(i: u64) -> &'static str {
    if i % TENTH_EVERY == TENTH_EVERY - 1 {
        TENTH_TYPE
    } else {
        EVENT_TYPE
    }
}

/// Appends batches of `batch` events to `stream` until `duration` has passed.
pub(crate) async fn append_loop(
    client: Arc<Client>,
    stream: String,
    mut ids: Ids,
    batch_events: usize,
    duration: Duration,
) -> Result<(Histogram<u64>, u64)> {
    let mut latency = latency_histogram();
    let until = Instant::now() + duration;
    let mut events = 0;
    while Instant::now() < until {
        let write = batch(&mut ids, batch_events);
        let began = Instant::now();
        client
            .append(&stream, ExpectedVersion::Any, write)
            .await
            .with_context(|| format!("appending to {stream}"))?;
        latency.saturating_record(nanos_since(began));
        events += batch_events as u64;
    }
    Ok((latency, events))
}

/// What filling the read store did.
struct Filled {
    run: Run,
    first_position: u64,
}

/// Writes `events` events (a multiple of [`FILL_BATCH`], typed by [`fill_type`]) to
/// `stream` over one connection, checking that nothing else lands in `$all` between them.
async fn fill(config: &ClientConfig, stream: &str, mut ids: Ids, events: u64) -> Result<Filled> {
    let calls = events / FILL_BATCH as u64;
    ensure!(
        calls * FILL_BATCH as u64 == events,
        "{events} events do not split into batches of {FILL_BATCH}"
    );
    let client = Client::connect(config.clone())
        .await
        .with_context(|| format!("connecting to {}", config.server))?;
    let mut latency = latency_histogram();
    let mut first_position = None;
    let mut next_position = None;
    let began = Instant::now();
    for call in 0..calls {
        let first = call * FILL_BATCH as u64;
        let write = (first..first + FILL_BATCH as u64)
            .map(|i| event(&mut ids, fill_type(i)))
            .collect();
        let sent = Instant::now();
        let r = client.append(stream, ExpectedVersion::Any, write).await?;
        latency.saturating_record(nanos_since(sent));
        ensure!(
            next_position.is_none_or(|p| p == r.position_first.get()),
            "another writer's events landed in $all between the fill's appends"
        );
        first_position.get_or_insert(r.position_first.get());
        next_position = Some(r.position_last.get() + 1);
    }
    let elapsed = began.elapsed();
    client.close().await;
    let run = Run {
        latency,
        events,
        elapsed,
    };
    Ok(Filled {
        run,
        first_position: first_position.context("the fill wrote nothing")?,
    })
}

/// `work`, or an error if it takes longer than [`WAIT_MAX`].
async fn within<T>(what: &str, work: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(WAIT_MAX, work)
        .await
        .map_err(|_| anyhow!("{what}: nothing within {WAIT_MAX:?}"))
}

/// Follows `$all` from its end: says when it is live (caught up), then sends each event's
/// position and the moment it was received, until the receiving side goes away.
async fn follow_live(
    client: Arc<Client>,
    is_live: oneshot::Sender<()>,
    arrived: mpsc::UnboundedSender<(u64, Instant)>,
) -> Result<()> {
    let mut sub = client
        .subscribe_all(SubscribeAllOptions::default().from_end())
        .await?;
    let mut is_live = Some(is_live);
    while let Some(message) = sub.next().await? {
        match message {
            SubscriptionMessage::Event(e) => {
                if arrived.send((e.position.get(), Instant::now())).is_err() {
                    return Ok(());
                }
            }
            SubscriptionMessage::CaughtUp { .. } => {
                if let Some(tx) = is_live.take() {
                    let _ = tx.send(());
                }
            }
            // A writer awaiting each event cannot leave the subscriber behind; if it did
            // fall behind, its events still come, with their (late) arrival times.
            SubscriptionMessage::Checkpoint { .. } | SubscriptionMessage::FellBehind { .. } => {}
        }
    }
    bail!("the server ended the subscription")
}

/// What the live subscriber's writer measured.
struct Live {
    /// Append call → event received at the subscriber, one sample per event.
    run: Run,
    /// The append calls alone (call → answer), µs.
    append_p50_us: f64,
    append_p99_us: f64,
    /// Events the subscriber received before the writer had the append's answer.
    before_answer: u64,
}

/// Appends single events to `stream` for `duration`, each awaited and then awaited at the
/// subscriber (`arrivals`, matched by position), so no event waits behind another.
async fn write_live(
    client: &Client,
    stream: &str,
    mut ids: Ids,
    mut arrivals: mpsc::UnboundedReceiver<(u64, Instant)>,
    duration: Duration,
) -> Result<Live> {
    let mut latency = latency_histogram();
    let mut append = latency_histogram();
    let mut before_answer = 0;
    let began = Instant::now();
    let until = began + duration;
    let mut events = 0;
    while Instant::now() < until {
        let write = vec![event(&mut ids, EVENT_TYPE)];
        let sent = Instant::now();
        let written = client
            .append(stream, ExpectedVersion::Any, write)
            .await
            .with_context(|| format!("appending to {stream}"))?;
        let answered = Instant::now();
        append.saturating_record(nanos(answered - sent));
        let position = written.position_first.get();
        let received = loop {
            let (p, at) = within("the live subscriber", arrivals.recv())
                .await?
                .context("the live subscriber stopped")?;
            // Positions below come from other writers (a shared `--server`).
            if p == position {
                break at;
            }
            ensure!(p < position, "the subscriber skipped position {position}");
        };
        latency.saturating_record(nanos(received.saturating_duration_since(sent)));
        before_answer += u64::from(received < answered);
        events += 1;
    }
    let p_us = |q: f64| micros(Duration::from_nanos(append.value_at_quantile(q)));
    Ok(Live {
        run: Run {
            latency,
            events,
            elapsed: began.elapsed(),
        },
        append_p50_us: p_us(0.5),
        append_p99_us: p_us(0.99),
        before_answer,
    })
}

/// Joins `group` as its one consumer and acks every event delivered, in batches of
/// [`ACK_BATCH`], until the group's checkpoint has passed `positions`; returns the run
/// (one sample per 1,000 events) and the payload bytes received.
async fn consume_and_ack(
    client: &Client,
    group: &str,
    positions: std::ops::Range<u64>,
) -> Result<(Run, u64)> {
    let events = positions.end - positions.start;
    let mut timer = ReadTimer::start();
    let mut consumer = client.connect_persistent(group).await?;
    let mut unacked = Vec::with_capacity(ACK_BATCH);
    while timer.events() < events {
        let delivery = within("the persistent group", consumer.next())
            .await??
            .context("the server ended the membership")?;
        let position = delivery.event.position.get();
        ensure!(
            positions.contains(&position),
            "delivered position {position}, outside {positions:?}"
        );
        ensure!(
            delivery.retry_count == 0,
            "position {position} was delivered again"
        );
        timer.event(delivery.event.data.len());
        unacked.push(delivery.event.position);
        if unacked.len() == ACK_BATCH || timer.events() == events {
            consumer.ack(&unacked).await?;
            unacked.clear();
        }
    }
    // The acks are one-way: done when the group's checkpoint says they all arrived.
    within("the group's checkpoint", async {
        while client.persistent_info(group).await?.checkpoint < positions.end {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    let consumed = timer.finish();
    consumer.close();
    Ok(consumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_scenarios_lead_the_suite_in_the_peer_order() {
        assert_eq!(
            &SCENARIOS[..postgres_peer::SCENARIOS.len()],
            postgres_peer::SCENARIOS
        );
    }

    #[test]
    fn chosen_quiver_scenarios_bring_their_postgres_counterparts() {
        let all = with_peer(SCENARIOS, true);
        assert_eq!(all, SCENARIOS);
        let chosen = with_peer(&["client_scan_all", "client_append_batch100"], true);
        assert_eq!(
            chosen,
            [
                "pg_append_batch100",
                "pg_scan_all",
                "client_append_batch100",
                "client_scan_all"
            ]
        );
        // A scenario without a counterpart starts no PostgreSQL.
        assert_eq!(
            with_peer(&["subscribe_catchup"], true),
            ["subscribe_catchup"]
        );
        assert_eq!(with_peer(&["pg_read_stream"], true), ["pg_read_stream"]);
    }

    #[test]
    fn no_peer_runs_no_postgres_scenario() {
        let without = with_peer(SCENARIOS, false);
        assert!(without.iter().all(|s| !postgres_peer::is_peer_scenario(s)));
        assert_eq!(
            without.len(),
            SCENARIOS.len() - postgres_peer::SCENARIOS.len()
        );
    }
}
