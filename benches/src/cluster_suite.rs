//! The `cluster` suite: three real `quiver serve --db-type cluster` processes on loopback,
//! driven through `quiver-client` as an application would, and a three-member etcd cluster
//! measured in the same run as the peer to compare with.
//!
//! | scenario | what is measured | latency sample |
//! |---|---|---|
//! | `etcd_put_c16` | etcd: 16 gRPC connections, 100 puts in flight on each, one 256-byte put per request | put call |
//! | `etcd_put_concurrent64` | etcd: 64 gRPC connections, one put at a time on each | put call |
//! | `cluster_append_batch100` | Quiver: 1 connection, appends of 100 events in turn | append call |
//! | `cluster_append_batch100_c16` | Quiver: 16 clients (connections), a stream each, appends of 100 | append call |
//! | `cluster_append_concurrent64` | Quiver: 64 clients, 1 event per append | append call |
//! | `cluster_failover` | Quiver: 4 single-event writers while the leader is killed (SIGKILL) and restarted, 3 times (1 `--quick`) | append call, first try to answer |
//!
//! Every scenario starts its own cluster on a fresh set of data directories under the bench
//! directory (`--dir`, default `quiver-bench-data`: on the disk to measure, not a tmpfs), and
//! kills it and deletes the directories when it ends, failed or not. Timed runs last 3 s (1 s
//! with `--quick`), after every client has made one untimed call (connection set up, moved to
//! the leader). Latency is what the caller sees, from an HDR histogram, as in the `client`
//! suite; every Quiver append and every etcd put is on a majority's disks (fdatasync) before
//! it is answered.
//!
//! **Quiver.** The `quiver` binary next to the running `quiver-bench` (so
//! `target/release/quiver`) is started three times with `--db-type cluster`, free loopback
//! ports for clients (QUIC), peers (QUIC) and HTTP, a secret drawn for the run
//! (`QUIVER_CLUSTER_SECRET`), and one client certificate generated for all three
//! (`quiver_server::tls::load_or_generate`), each process with an otherwise empty environment
//! and its log in `nodeN/server.log`. The suite waits until all three agree on a leader
//! (their HTTP `/status`). Clients are given the three client addresses in node order and
//! find the leader themselves (`NotLeader` moves them on).
//!
//! **The peer: etcd.** `etcd` from `$PATH` (Debian's `etcd-server`, 3.4), three members with
//! their own data directories, `--initial-cluster` on loopback, default durability (a WAL
//! fsync per Raft batch). The suite asks each member's `Maintenance/Status` for the leader
//! and sends every put to the **leader's** client URL, as Quiver's clients end up on
//! Quiver's leader: neither side pays a forwarding hop. Puts go over gRPC with `tonic`
//! (`/etcdserverpb.KV/Put`, messages declared by hand with prost), keys unique per put.
//! etcd has no batched put, so `etcd_put_c16` keeps as many puts in flight (16 × 100) as
//! `cluster_append_batch100_c16` keeps events in flight (16 appends of 100;
//! `--etcd-c16-in-flight N` changes the 100); its latency is per put, Quiver's per 100-event
//! append. The etcd scenarios run first, so the Quiver lines
//! can carry `vs_etcd`: Quiver's events/s over etcd's puts/s (`…_c16` over `etcd_put_c16`,
//! `…_concurrent64` over `etcd_put_concurrent64`), with `etcd_events_per_sec` beside it; it
//! is `null` when the etcd scenario did not run or failed (etcd not installed, say).
//!
//! **Failover.** Four writers, each its own `Client` with a per-request timeout of
//! `--client-timeout-ms` (default: the client's own, 30 s), append single events in turn. After a
//! warm-up (1 s), the leader is killed with SIGKILL; `failover_ms` runs from the kill to the
//! first append the writers see acknowledged after it (an answer already on its way from
//! the old leader, to an append sent before the kill and answered within 50 ms of it, does
//! not count: no new leader can be elected that fast). `leader_ms` is when the two
//! survivors' `/status` agree on a new leader (polled every 10 ms). Then the killed node is
//! started again on its data and the suite waits until it has applied everything the leader
//! had committed (`catchup_ms`), writes go on for the warm-up again, and the next leader is
//! killed. A writer whose append fails sends the same events again (same ids: answered
//! `idempotent` if they were stored) and counts the error; the line reports the median and
//! maximum `failover_ms`, every kill's measures, and the errors the writers saw.
//!
//! **Processes.** Every child is killed when its guard drops (scenario end, error, panic)
//! and is started with `PR_SET_PDEATHSIG` = SIGKILL, so it dies with `quiver-bench` even if
//! that is killed; children are started from the thread that runs the suite.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use hdrhistogram::Histogram;
use quiver_client::{Client, ClientConfig, ExpectedVersion};
use quiver_engine::Uuid;
use quiver_server::cluster::{status_cli, ClusterStatus};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use crate::client_suite::{append_loop, close, connect, event, run_tasks};
use crate::report::{latency_histogram, millis, Report};
use crate::workload::{
    nanos_since, scratch_dir, timed, Ids, EVENT_DATA_BYTES, EVENT_TYPE, PAYLOAD,
};

/// Every scenario of the suite, in the order [`Suite::run`] is meant to be called: etcd's
/// first, so that the Quiver scenarios can report the ratio to them.
pub const SCENARIOS: &[&str] = &[
    "etcd_put_c16",
    "etcd_put_concurrent64",
    "cluster_append_batch100",
    "cluster_append_batch100_c16",
    "cluster_append_concurrent64",
    "cluster_failover",
];

/// Leader kills in `cluster_failover`, and with `--quick`.
pub const KILLS_DEFAULT: usize = 3;
/// Leader kills in `cluster_failover` with `--quick`.
pub const KILLS_QUICK: usize = 1;

/// Nodes (or members) of each cluster.
const NODES: u64 = 3;
/// Writers during the failover scenario.
const FAILOVER_WRITERS: usize = 4;
/// Steady writing before each kill (and before the first).
const FAILOVER_WARM: Duration = Duration::from_secs(1);
/// An answer to an append sent before the kill, received this soon after it, came from
/// the old leader.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(50);
/// How long a cluster may take to form, a failover to finish, a node to catch up.
const WAIT_MAX: Duration = Duration::from_secs(60);
/// How often `/status` is polled.
const POLL: Duration = Duration::from_millis(10);
/// How long the writers may take to stop once told to.
const WRITERS_STOP_MAX: Duration = Duration::from_secs(60);
/// Puts in flight on each connection in `etcd_put_c16` unless told otherwise: as many puts
/// as events in flight in `cluster_append_batch100_c16`.
pub const ETCD_C16_IN_FLIGHT: usize = 100;
/// The DESIGN.md targets quoted in the reports.
const TARGET_C16_EVENTS_PER_SEC: u64 = 300_000;
const TARGET_FAILOVER_MS: u64 = 3_000;
/// Lines of each process's log quoted in an error.
const LOG_TAIL_LINES: usize = 15;

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parent of every cluster's scratch directories (on the disk to measure).
    pub data_dir: PathBuf,
    /// Shorter timed scenarios (1 s) and one leader kill.
    pub quick: bool,
    /// Commit being measured, copied into every report.
    pub git_rev: Option<String>,
    /// Leader kills in `cluster_failover`.
    pub kills: usize,
    /// Per-request deadline of the failover writers' clients; `None`: the client's default.
    pub client_timeout: Option<Duration>,
    /// Puts in flight on each of `etcd_put_c16`'s 16 connections ([`ETCD_C16_IN_FLIGHT`]).
    pub etcd_c16_in_flight: usize,
}

/// One run of the suite: the clients' runtime, the run id, and etcd's rates once measured.
pub struct Suite {
    opts: Options,
    quiver: PathBuf,
    runtime: Runtime,
    run_id: u64,
    sources: u64,
    etcd_c16: Option<u64>,
    etcd_c64: Option<u64>,
}

impl Suite {
    /// A suite ready to run scenarios: finds the `quiver` binary and starts the clients'
    /// runtime.
    pub fn new(opts: Options) -> Result<Suite> {
        let quiver = quiver_binary()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench-client")
            .build()
            .context("starting the clients' runtime")?;
        Ok(Suite {
            opts,
            quiver,
            runtime,
            run_id: Uuid::new_v4().as_u64_pair().0,
            sources: 0,
            etcd_c16: None,
            etcd_c64: None,
        })
    }

    /// Runs one scenario of [`SCENARIOS`] and returns its report.
    pub fn run(&mut self, scenario: &str) -> Result<Report> {
        let report = match scenario {
            "etcd_put_c16" => {
                let r = self.etcd_put(scenario, 16, self.opts.etcd_c16_in_flight.max(1))?;
                self.etcd_c16 = Some(r.events_per_sec);
                r
            }
            "etcd_put_concurrent64" => {
                let r = self.etcd_put(scenario, 64, 1)?;
                self.etcd_c64 = Some(r.events_per_sec);
                r
            }
            "cluster_append_batch100" => self.append(scenario, 1, 100)?,
            "cluster_append_batch100_c16" => {
                let r = self.append(scenario, 16, 100)?;
                let r = r.with("target_events_per_sec", TARGET_C16_EVENTS_PER_SEC);
                vs_etcd(r, self.etcd_c16, "etcd_put_c16")
            }
            "cluster_append_concurrent64" => {
                let r = self.append(scenario, 64, 1)?;
                vs_etcd(r, self.etcd_c64, "etcd_put_concurrent64")
            }
            "cluster_failover" => self.failover(scenario)?,
            other => bail!("no scenario {other:?}; known: {}", SCENARIOS.join(", ")),
        };
        let report = report.with("quick", self.opts.quick);
        Ok(match &self.opts.git_rev {
            Some(rev) => report.with("git_rev", rev.as_str()),
            None => report,
        })
    }

    /// An id generator no other appender of this run (or of another run) shares.
    fn ids(&mut self) -> Ids {
        self.sources += 1;
        Ids::new(self.run_id.wrapping_add(self.sources))
    }

    /// The `i`th stream (or etcd key prefix) of `scenario` in this run.
    fn stream(&self, scenario: &str, i: usize) -> String {
        format!("{scenario}-{:08x}-{i}", self.run_id >> 32)
    }

    /// `connections` clients, one appender each, appending batches of `batch` events to
    /// its own stream for the scenario's duration; one latency sample per append call.
    fn append(&mut self, scenario: &str, connections: usize, batch: usize) -> Result<Report> {
        let mut cluster = QuiverCluster::start(&self.quiver, &self.opts.data_dir, scenario)?;
        let leader = cluster.wait_for_leader(WAIT_MAX, None)?;
        let config = cluster.client_config(None);
        let work: Vec<(String, Ids)> = (0..connections)
            .map(|t| (self.stream(scenario, t), self.ids()))
            .collect();
        let mut warm_ids = self.ids();
        let warm_stream = self.stream(scenario, connections);
        let duration = timed(self.opts.quick);
        let run = self.runtime.block_on(async {
            let clients = connect(&config, connections).await?;
            // Untimed: every client finds the leader before the clock starts.
            for client in &clients {
                let warm = vec![event(&mut warm_ids, EVENT_TYPE)];
                client
                    .append(&warm_stream, ExpectedVersion::Any, warm)
                    .await
                    .context("the warm-up append")?;
            }
            let run = run_tasks(work.into_iter().enumerate().map(|(t, (stream, ids))| {
                append_loop(clients[t].clone(), stream, ids, batch, duration)
            }))
            .await;
            close(clients).await;
            run
        });
        let run = run.map_err(|e| e.context(cluster.log_tails()))?;
        cluster.check_running()?;
        let report = Report::new(scenario, run.events, run.elapsed, &run.latency);
        Ok(cluster
            .describe(report)
            .with("leader", leader)
            .with("connections", connections)
            .with("appenders", connections)
            .with("batch", batch)
            .with("event_bytes", EVENT_DATA_BYTES)
            .with("latency_per", "append call, as the client sees it"))
    }

    /// Writers appending single events while the leader is killed and restarted
    /// `opts.kills` times; see the module doc.
    fn failover(&mut self, scenario: &str) -> Result<Report> {
        let mut cluster = QuiverCluster::start(&self.quiver, &self.opts.data_dir, scenario)?;
        cluster.wait_for_leader(WAIT_MAX, None)?;
        let config = cluster.client_config(self.opts.client_timeout);
        let timeout_ms = config.timeout.as_millis() as u64;
        let clients = self.runtime.block_on(connect(&config, FAILOVER_WRITERS))?;
        let log = Arc::new(Mutex::new(WriteLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let began = Instant::now();
        let work: Vec<(String, Ids)> = (0..FAILOVER_WRITERS)
            .map(|w| (self.stream(scenario, w), self.ids()))
            .collect();
        let writers: Vec<_> = clients
            .iter()
            .zip(work)
            .map(|(client, (stream, ids))| {
                let work = failover_writer(client.clone(), stream, ids, stop.clone(), log.clone());
                self.runtime.spawn(work)
            })
            .collect();
        let kills = (0..self.opts.kills)
            .map(|_| kill_leader_once(&mut cluster, &log))
            .collect::<Result<Vec<Kill>>>();
        std::thread::sleep(FAILOVER_WARM);
        stop.store(true, Ordering::Relaxed);
        let written = self.runtime.block_on(async {
            let mut latency = latency_histogram();
            let mut events = 0;
            let mut idempotent = 0;
            for w in writers {
                let abort = w.abort_handle();
                match tokio::time::timeout(WRITERS_STOP_MAX, w).await {
                    Ok(Ok(done)) => {
                        latency.add(&done.latency).expect("histograms share bounds");
                        events += done.events;
                        idempotent += done.idempotent;
                    }
                    Ok(Err(e)) => return Err(anyhow!("a failover writer panicked: {e}")),
                    Err(_) => {
                        abort.abort();
                        bail!("a failover writer did not stop within {WRITERS_STOP_MAX:?}");
                    }
                }
            }
            close(clients).await;
            Ok((latency, events, idempotent))
        });
        let elapsed = began.elapsed();
        let kills = kills.map_err(|e| e.context(cluster.log_tails()))?;
        let (latency, events, idempotent) = written?;
        cluster.check_running()?;
        let log = log.lock().expect("the write log is never poisoned");
        let failover: Vec<f64> = kills.iter().map(|k| k.failover_ms).collect();
        let report = Report::new(scenario, events, elapsed, &latency);
        Ok(cluster
            .describe(report)
            .with("failover_ms_median", median(&failover))
            .with(
                "failover_ms_max",
                failover.iter().copied().fold(0.0, f64::max),
            )
            .with("failover_ms_each", failover)
            .with(
                "leader_ms_each",
                kills.iter().map(|k| k.leader_ms).collect::<Vec<_>>(),
            )
            .with(
                "catchup_ms_each",
                kills.iter().map(|k| k.catchup_ms).collect::<Vec<_>>(),
            )
            .with(
                "killed_then_leader",
                kills
                    .iter()
                    .map(|k| format!("{}->{}", k.killed, k.new_leader))
                    .collect::<Vec<_>>(),
            )
            .with("target_failover_ms", TARGET_FAILOVER_MS)
            .with("kills", kills.len())
            .with("writers", FAILOVER_WRITERS)
            .with("batch", 1)
            .with("client_timeout_ms", timeout_ms)
            .with("append_errors", log.errors)
            .with("error_samples", log.error_samples.clone())
            .with("idempotent_answers", idempotent)
            .with(
                "latency_per",
                "append call as the writer sees it: first try to the answer, retries included",
            ))
    }

    /// A fresh 3-member etcd cluster; `connections` gRPC connections to its leader, each
    /// carrying `in_flight` puts at a time, for the scenario's duration.
    fn etcd_put(&mut self, scenario: &str, connections: usize, in_flight: usize) -> Result<Report> {
        let mut etcd = EtcdCluster::start(&self.opts.data_dir, scenario)?;
        let duration = timed(self.opts.quick);
        let prefixes: Vec<String> = (0..connections * in_flight)
            .map(|t| self.stream(scenario, t))
            .collect();
        let measured = self.runtime.block_on(async {
            let (leader, url) = etcd.leader(WAIT_MAX).await?;
            let mut channels = Vec::with_capacity(connections);
            for _ in 0..connections {
                let channel = Endpoint::from_shared(url.clone())?
                    .connect()
                    .await
                    .with_context(|| format!("connecting to etcd at {url}"))?;
                // Untimed: the connection is up and answering before the clock starts.
                put(
                    &mut Grpc::new(channel.clone()),
                    b"quiver-bench-warm".to_vec(),
                )
                .await?;
                channels.push(channel);
            }
            let run =
                run_tasks(prefixes.into_iter().enumerate().map(|(t, prefix)| {
                    put_loop(channels[t % connections].clone(), prefix, duration)
                }))
                .await?;
            Ok::<_, anyhow::Error>((leader, url, run))
        });
        let (leader, url, run) = measured.map_err(|e| e.context(etcd.log_tails()))?;
        etcd.check_running()?;
        let report = Report::new(scenario, run.events, run.elapsed, &run.latency);
        Ok(report
            .with("server", "etcd, 3 members on loopback")
            .with("etcd_version", etcd.version.as_str())
            .with("sent_to", format!("leader (member {leader:x}) at {url}"))
            .with("connections", connections)
            .with("in_flight", connections * in_flight)
            .with("batch", 1)
            .with("event_bytes", EVENT_DATA_BYTES)
            .with(
                "latency_per",
                "put call (one 256-byte value), as the client sees it",
            ))
    }
}

/// Adds Quiver's ratio to its etcd counterpart, `null` when that did not run.
fn vs_etcd(report: Report, etcd: Option<u64>, counterpart: &str) -> Report {
    let ratio = etcd
        .filter(|&e| e > 0)
        .map(|e| (report.events_per_sec as f64 / e as f64 * 100.0).round() / 100.0);
    report
        .with("vs_etcd", ratio)
        .with("etcd_events_per_sec", etcd)
        .with("etcd_counterpart", counterpart)
}

/// The median of `values` (the mean of the middle two for an even count; 0 when empty).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `target/release/quiver`, next to the running `quiver-bench`; an error saying how to build
/// it if it is not there (the suite cannot run without it).
pub fn quiver_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running quiver-bench")?;
    let quiver = exe.with_file_name("quiver");
    ensure!(
        quiver.is_file(),
        "no quiver binary at {} (next to quiver-bench): run `cargo build --release -p \
         quiver-server -p quiver-bench` first",
        quiver.display()
    );
    Ok(quiver)
}

/// `name` in a directory of `$PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Free loopback addresses: `udp` UDP ones, then `tcp` TCP ones. Every socket stays bound
/// until all are chosen, so no two are the same.
fn free_addrs(udp: usize, tcp: usize) -> Result<Vec<SocketAddr>> {
    let u: Vec<UdpSocket> = (0..udp)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let t: Vec<TcpListener> = (0..tcp)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let mut addrs: Vec<SocketAddr> = u.iter().map(|s| s.local_addr()).collect::<Result<_, _>>()?;
    for l in &t {
        addrs.push(l.local_addr()?);
    }
    Ok(addrs)
}

/// A child process, killed (SIGKILL) and reaped when dropped, and dying with this process
/// in any case (`PR_SET_PDEATHSIG`: call from the thread that outlives the child).
fn spawn(mut cmd: Command, log: &Path) -> Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

/// Kills and reaps `child`, if any.
fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// An error if `child` has exited.
fn check_alive(child: &mut Option<Child>, what: &str, log: &Path) -> Result<()> {
    if let Some(c) = child {
        if let Some(status) = c.try_wait()? {
            bail!("{what} exited ({status}):\n{}", log_tail(log));
        }
    }
    Ok(())
}

/// The last lines of a log file.
fn log_tail(log: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// One `quiver serve --db-type cluster` process and its settings.
struct QuiverNode {
    id: u64,
    dir: PathBuf,
    peer: SocketAddr,
    http: SocketAddr,
    client: SocketAddr,
    child: Option<Child>,
}

impl QuiverNode {
    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// This node's `/status`, if it answers.
    fn status(&self) -> Option<ClusterStatus> {
        status_cli::fetch(self.http, Duration::from_secs(1)).ok()
    }
}

impl Drop for QuiverNode {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Three nodes in a scratch directory, removed after their processes are killed.
struct QuiverCluster {
    // Field order is drop order: the processes go before their directory.
    nodes: Vec<QuiverNode>,
    binary: PathBuf,
    members: String,
    secret: String,
    tls: PathBuf,
    dir: TempDir,
}

impl QuiverCluster {
    /// Starts three nodes on fresh data directories named after `scenario`.
    fn start(binary: &Path, data_dir: &Path, scenario: &str) -> Result<QuiverCluster> {
        let dir = scratch_dir(data_dir, scenario)?;
        // One client certificate for every node (and so one CA for the clients).
        let shared = dir.path().join("shared");
        quiver_server::tls::load_or_generate(
            &shared,
            None,
            None,
            quiver_server::tls::CaKey::Random,
        )?;
        let tls = quiver_server::tls::tls_dir(&shared);
        let addrs = free_addrs(2 * NODES as usize, NODES as usize)?;
        let n = NODES as usize;
        let nodes: Vec<QuiverNode> = (0..n)
            .map(|i| QuiverNode {
                id: i as u64 + 1,
                dir: dir.path().join(format!("node{}", i + 1)),
                peer: addrs[i],
                client: addrs[n + i],
                http: addrs[2 * n + i],
                child: None,
            })
            .collect();
        let members = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.peer))
            .collect::<Vec<_>>()
            .join(",");
        let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let mut cluster = QuiverCluster {
            nodes,
            binary: binary.to_path_buf(),
            members,
            secret,
            tls,
            dir,
        };
        for id in 1..=NODES {
            cluster.start_node(id)?;
        }
        Ok(cluster)
    }

    fn node(&mut self, id: u64) -> &mut QuiverNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node of this cluster")
    }

    /// Starts node `id` (again: its data directory keeps its id and log).
    fn start_node(&mut self, id: u64) -> Result<()> {
        let (binary, members, secret) = (
            self.binary.clone(),
            self.members.clone(),
            self.secret.clone(),
        );
        let (cert, key) = (self.tls.join("server.pem"), self.tls.join("server.key"));
        let node = self.node(id);
        ensure!(node.child.is_none(), "node {id} runs already");
        std::fs::create_dir_all(&node.dir)?;
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("QUIVER_CLUSTER_SECRET", secret)
            .env("NO_COLOR", "1")
            .args([
                "serve",
                "--db-type",
                "cluster",
                "--node-id",
                &id.to_string(),
            ])
            .args(["--initial-members", &members])
            .args(["--peer-listen", &node.peer.to_string()])
            .args(["--http", &node.http.to_string()])
            .args(["--listen", &node.client.to_string()])
            .arg("--data-dir")
            .arg(node.dir.join("data"))
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key);
        node.child = Some(spawn(cmd, &node.log())?);
        Ok(())
    }

    /// A client of all three nodes, in node order.
    fn client_config(&self, timeout: Option<Duration>) -> ClientConfig {
        let config = ClientConfig::local(self.dir.path())
            .ca_file(self.tls.join(quiver_server::tls::CA_FILE))
            .servers(self.nodes.iter().map(|n| n.client));
        match timeout {
            Some(t) => config.timeout(t),
            None => config,
        }
    }

    /// The leader all running nodes agree on (same leader, same term, and it says it
    /// leads), unless it is `not`.
    fn agreed_leader(&self, not: Option<u64>) -> Option<u64> {
        let running: Vec<&QuiverNode> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        let statuses: Vec<ClusterStatus> = running.iter().filter_map(|n| n.status()).collect();
        if statuses.len() != running.len() {
            return None;
        }
        let first = statuses.first()?;
        let (leader, term) = (first.leader?, first.term);
        let agree = statuses
            .iter()
            .all(|s| s.leader == Some(leader) && s.term == term);
        let leads = statuses
            .iter()
            .filter(|s| s.role == "leader")
            .map(|s| s.node_id)
            .collect::<Vec<_>>();
        (agree && leads == [leader] && Some(leader) != not).then_some(leader)
    }

    /// Polls until the running nodes agree on a leader other than `not`.
    fn wait_for_leader(&mut self, limit: Duration, not: Option<u64>) -> Result<u64> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_running()?;
            if let Some(leader) = self.agreed_leader(not) {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the nodes agreed on no leader within {limit:?}\n{}",
                    self.log_tails()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// An error if a node that should run has exited.
    fn check_running(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            let what = format!("quiver node {}", n.id);
            let log = n.log();
            check_alive(&mut n.child, &what, &log)?;
        }
        Ok(())
    }

    /// The end of every node's log, for an error message.
    fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- node {} ({}) ---\n{}\n",
                    n.id,
                    n.log().display(),
                    log_tail(&n.log())
                )
            })
            .collect()
    }

    /// Adds what was measured to `report`.
    fn describe(&self, report: Report) -> Report {
        report
            .with(
                "server",
                "quiver, 3 processes (--db-type cluster) on loopback",
            )
            .with("nodes", NODES)
    }
}

/// What the failover writers saw, shared with the thread that kills leaders.
#[derive(Default)]
struct WriteLog {
    /// Every acknowledged append: when its last try was sent, and when it was answered.
    acks: Vec<(Instant, Instant)>,
    errors: u64,
    /// The first few distinct error messages.
    error_samples: Vec<String>,
}

/// Distinct error messages kept in a [`WriteLog`].
const ERROR_SAMPLES_MAX: usize = 8;

/// What one failover writer did.
struct Written {
    latency: Histogram<u64>,
    events: u64,
    idempotent: u64,
}

/// Appends single events to `stream` until `stop`, sending an append that failed again
/// with the same events (so with the same ids) until it is answered.
async fn failover_writer(
    client: Arc<Client>,
    stream: String,
    mut ids: Ids,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<WriteLog>>,
) -> Written {
    let mut done = Written {
        latency: latency_histogram(),
        events: 0,
        idempotent: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let write = vec![event(&mut ids, EVENT_TYPE)];
        let first = Instant::now();
        loop {
            let sent = Instant::now();
            match client
                .append(&stream, ExpectedVersion::Any, write.clone())
                .await
            {
                Ok(r) => {
                    let answered = Instant::now();
                    done.latency.saturating_record(nanos_since(first));
                    done.events += 1;
                    done.idempotent += u64::from(r.idempotent);
                    let mut log = log.lock().expect("the write log is never poisoned");
                    log.acks.push((sent, answered));
                    break;
                }
                Err(e) => {
                    {
                        let mut log = log.lock().expect("the write log is never poisoned");
                        log.errors += 1;
                        let message = e.to_string();
                        if log.error_samples.len() < ERROR_SAMPLES_MAX
                            && !log.error_samples.contains(&message)
                        {
                            log.error_samples.push(message);
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        return done;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    done
}

/// One leader kill's measures.
struct Kill {
    killed: u64,
    new_leader: u64,
    failover_ms: f64,
    leader_ms: f64,
    catchup_ms: f64,
}

/// Writes go on for the warm-up; then the leader is killed, the failover timed, the node
/// restarted and awaited until it has caught up.
fn kill_leader_once(cluster: &mut QuiverCluster, log: &Mutex<WriteLog>) -> Result<Kill> {
    std::thread::sleep(FAILOVER_WARM);
    let killed = cluster.wait_for_leader(WAIT_MAX, None)?;
    let seen = log
        .lock()
        .expect("the write log is never poisoned")
        .acks
        .len();
    let at = Instant::now();
    kill(&mut cluster.node(killed).child);
    let mut leader = None;
    let mut acked = None;
    while leader.is_none() || acked.is_none() {
        ensure!(
            at.elapsed() < WAIT_MAX,
            "after killing leader {killed}: {} within {WAIT_MAX:?}",
            if leader.is_none() {
                "no new leader"
            } else {
                "no append acknowledged"
            }
        );
        if leader.is_none() {
            leader = cluster
                .agreed_leader(Some(killed))
                .map(|l| (l, at.elapsed()));
        }
        if acked.is_none() {
            let log = log.lock().expect("the write log is never poisoned");
            acked = log.acks[seen..]
                .iter()
                .filter(|(sent, answered)| {
                    *answered > at && !(*sent < at && *answered < at + IN_FLIGHT_GRACE)
                })
                .map(|(_, answered)| *answered - at)
                .min();
        }
        std::thread::sleep(POLL);
    }
    let (new_leader, leader_after) = leader.expect("looped until found");
    let acked_after = acked.expect("looped until found");
    // Back on its data; caught up once it has applied all the leader had committed.
    cluster.start_node(killed)?;
    let restarted = Instant::now();
    loop {
        cluster.check_running()?;
        ensure!(
            restarted.elapsed() < WAIT_MAX,
            "node {killed} did not catch up within {WAIT_MAX:?}"
        );
        let leader_status = cluster
            .nodes
            .iter()
            .find(|n| n.id == new_leader)
            .and_then(QuiverNode::status);
        let node_status = cluster
            .nodes
            .iter()
            .find(|n| n.id == killed)
            .and_then(QuiverNode::status);
        if let (Some(l), Some(n)) = (leader_status, node_status) {
            if n.leader == Some(l.node_id) && n.applied >= l.commit {
                break;
            }
        }
        std::thread::sleep(POLL);
    }
    Ok(Kill {
        killed,
        new_leader,
        failover_ms: millis(acked_after),
        leader_ms: millis(leader_after),
        catchup_ms: millis(restarted.elapsed()),
    })
}

/// etcd's messages, the fields used (field numbers of etcd's `rpc.proto`; unknown fields in
/// answers are skipped).
mod etcd_rpc {
    /// `etcdserverpb.PutRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub(super) key: Vec<u8>,
        #[prost(bytes = "bytes", tag = "2")]
        pub(super) value: prost::bytes::Bytes,
    }

    /// `etcdserverpb.PutResponse`: nothing read.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct PutResponse {}

    /// `etcdserverpb.StatusRequest`: no fields.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct StatusRequest {}

    /// `etcdserverpb.StatusResponse`: who answered, and who it thinks leads.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub(super) header: Option<ResponseHeader>,
        #[prost(string, tag = "2")]
        pub(super) version: String,
        #[prost(uint64, tag = "4")]
        pub(super) leader: u64,
    }

    /// `etcdserverpb.ResponseHeader`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ResponseHeader {
        #[prost(uint64, tag = "2")]
        pub(super) member_id: u64,
    }
}

const PUT_PATH: &str = "/etcdserverpb.KV/Put";
const STATUS_PATH: &str = "/etcdserverpb.Maintenance/Status";

/// One put of the benchmark's payload under `key`.
async fn put(grpc: &mut Grpc<Channel>, key: Vec<u8>) -> Result<()> {
    use etcd_rpc::{PutRequest, PutResponse};
    grpc.ready().await.context("etcd connection")?;
    let request = PutRequest {
        key,
        value: prost::bytes::Bytes::from_static(&PAYLOAD),
    };
    let _: tonic::Response<PutResponse> = grpc
        .unary(
            tonic::Request::new(request),
            PathAndQuery::from_static(PUT_PATH),
            ProstCodec::<PutRequest, PutResponse>::default(),
        )
        .await
        .context("etcd put")?;
    Ok(())
}

/// A member's status.
async fn status(grpc: &mut Grpc<Channel>) -> Result<etcd_rpc::StatusResponse> {
    use etcd_rpc::{StatusRequest, StatusResponse};
    grpc.ready().await.context("etcd connection")?;
    let answer: tonic::Response<StatusResponse> = grpc
        .unary(
            tonic::Request::new(StatusRequest {}),
            PathAndQuery::from_static(STATUS_PATH),
            ProstCodec::<StatusRequest, StatusResponse>::default(),
        )
        .await
        .context("etcd status")?;
    Ok(answer.into_inner())
}

/// Puts under `prefix/N` over `channel`, one at a time, until `duration` has passed.
async fn put_loop(
    channel: Channel,
    prefix: String,
    duration: Duration,
) -> Result<(Histogram<u64>, u64)> {
    let mut grpc = Grpc::new(channel);
    let mut latency = latency_histogram();
    let until = Instant::now() + duration;
    let mut puts = 0u64;
    while Instant::now() < until {
        let key = format!("{prefix}/{puts}").into_bytes();
        let began = Instant::now();
        put(&mut grpc, key).await?;
        latency.saturating_record(nanos_since(began));
        puts += 1;
    }
    Ok((latency, puts))
}

/// One etcd member process.
struct EtcdMember {
    name: String,
    dir: PathBuf,
    client: SocketAddr,
    child: Option<Child>,
}

impl EtcdMember {
    fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn url(&self) -> String {
        format!("http://{}", self.client)
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Three etcd members in a scratch directory, removed after their processes are killed.
struct EtcdCluster {
    // Field order is drop order: the processes go before their directory.
    members: Vec<EtcdMember>,
    version: String,
    _dir: TempDir,
}

impl EtcdCluster {
    /// Starts three members on fresh data directories named after `scenario`.
    fn start(data_dir: &Path, scenario: &str) -> Result<EtcdCluster> {
        let binary = on_path("etcd").context(
            "etcd is not installed (no `etcd` on PATH): `apt-get install -y etcd-server` \
             (Debian bookworm: 3.4.23) to run the etcd scenarios",
        )?;
        let dir = scratch_dir(data_dir, scenario)?;
        let n = NODES as usize;
        let addrs = free_addrs(0, 2 * n)?;
        let peer_url = |i: usize| format!("http://{}", addrs[n + i]);
        let initial = (0..n)
            .map(|i| format!("m{}={}", i + 1, peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("quiver-bench-{}", Uuid::new_v4().simple());
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            version: String::new(),
            _dir: dir,
        };
        for (i, &client) in addrs[..n].iter().enumerate() {
            let mut member = EtcdMember {
                name: format!("m{}", i + 1),
                dir: cluster._dir.path().join(format!("m{}", i + 1)),
                client,
                child: None,
            };
            std::fs::create_dir_all(&member.dir)?;
            let mut cmd = Command::new(&binary);
            cmd.env_clear()
                .args(["--name", &member.name])
                .arg("--data-dir")
                .arg(member.dir.join("data"))
                .args(["--listen-peer-urls", &peer_url(i)])
                .args(["--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--listen-client-urls", &member.url()])
                .args(["--advertise-client-urls", &member.url()])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", &token])
                .args(["--initial-cluster-state", "new"])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .args(["--log-level", "warn"]);
            member.child = Some(spawn(cmd, &member.log())?);
            cluster.members.push(member);
        }
        Ok(cluster)
    }

    /// Asks the members until one knows a leader; returns its member id and client URL.
    async fn leader(&mut self, limit: Duration) -> Result<(u64, String)> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_running()?;
            for m in &self.members {
                let Ok(channel) = Endpoint::from_shared(m.url())?.connect().await else {
                    continue;
                };
                let mut grpc = Grpc::new(channel);
                let Ok(answer) = status(&mut grpc).await else {
                    continue;
                };
                if answer.leader == 0 {
                    continue;
                }
                // The leader's own status names it: its header's member id.
                for l in &self.members {
                    let Ok(channel) = Endpoint::from_shared(l.url())?.connect().await else {
                        continue;
                    };
                    let Ok(s) = status(&mut Grpc::new(channel)).await else {
                        continue;
                    };
                    if s.header.as_ref().map(|h| h.member_id) == Some(answer.leader) {
                        self.version = s.version;
                        return Ok((answer.leader, l.url()));
                    }
                }
            }
            ensure!(
                Instant::now() < deadline,
                "etcd elected no leader within {limit:?}\n{}",
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An error if a member has exited.
    fn check_running(&mut self) -> Result<()> {
        for m in &mut self.members {
            let what = format!("etcd member {}", m.name);
            let log = m.log();
            check_alive(&mut m.child, &what, &log)?;
        }
        Ok(())
    }

    /// The end of every member's log, for an error message.
    fn log_tails(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- etcd {} ({}) ---\n{}\n",
                    m.name,
                    m.log().display(),
                    log_tail(&m.log())
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn ratio_to_etcd_is_null_without_etcd() {
        let r = Report::new("s", 300, Duration::from_secs(1), &latency_histogram());
        let with = vs_etcd(r.clone(), Some(200), "e");
        assert_eq!(with.extra["vs_etcd"], serde_json::json!(1.5));
        let without = vs_etcd(r, None, "e");
        assert!(without.extra["vs_etcd"].is_null());
    }

    #[test]
    fn put_request_encodes_etcd_field_numbers() {
        use prost::Message as _;
        let bytes = etcd_rpc::PutRequest {
            key: b"k".to_vec(),
            value: prost::bytes::Bytes::from_static(b"v"),
        }
        .encode_to_vec();
        // Field 1 and field 2, both length-delimited (wire type 2).
        assert_eq!(bytes, [0x0a, 1, b'k', 0x12, 1, b'v']);
    }
}
