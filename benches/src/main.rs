//! # quiver-bench
//!
//! Quiver's benchmark runner: it measures a component against the targets in DESIGN.md
//! ("How good") and prints **one JSON line per scenario** on stdout (progress goes to
//! stderr), so runs can be saved, diffed and compared side by side:
//!
//! ```text
//! {"scenario":"engine_append_batch100","events_per_sec":…,"p50_us":…,"p99_us":…,
//!  "p999_us":…,"max_us":…,"ops":…,"events":…,"seconds":…, …scenario fields…}
//! ```
//!
//! Latencies are per operation (one append call, or one batch of 1,000 events read), from an
//! HDR histogram. Each scenario gets a fresh store under `--dir` (default
//! `quiver-bench-data` in the working directory, or `$QUIVER_BENCH_DIR`), deleted when it
//! ends. Keep it off /tmp: a tmpfs makes fdatasync free and the numbers meaningless.
//!
//! ## Running
//!
//! ```text
//! cargo run --release -p quiver-bench -- engine            # full suite, a few minutes
//! cargo run --release -p quiver-bench -- engine --quick    # 1 s runs, 1 M-event reopen
//! cargo run --release -p quiver-bench -- engine --scenario engine_scan_all --dir /data/b
//! cargo run --release -p quiver-bench -- engine --io-mode pwrite   # compare write paths
//! cargo bench -p quiver-bench                               # Criterion micro-benchmarks
//! cargo run --release -p quiver-bench -- raft              # 3 Raft nodes over engines
//! cargo run --release -p quiver-bench -- client            # PostgreSQL, then QUIC, in-process
//! cargo run --release -p quiver-bench -- client --quick --dir /data/b   # 1 s runs
//! cargo run --release -p quiver-bench -- client --no-peer  # Quiver only, no PostgreSQL
//! cargo run --release -p quiver-bench -- client --no-peer --stages   # time per request stage
//! cargo run --release -p quiver-bench -- limits --dir /data/b   # fdatasync, QUIC round trip
//! cargo run --release -p quiver-bench -- client --scenario client_append_batch100_c16
//!                                           # and its counterpart, pg_append_batch100_c16
//! cargo run --release -p quiver-bench -- client --server 127.0.0.1:7600 --ca ca.pem
//! cargo run --release -p quiver-bench -- client --scenario subscribe_live_latency
//! cargo build --release -p quiver-server -p quiver-bench    # the cluster suite needs both
//! target/release/quiver-bench cluster                       # 3 quiver processes, etcd beside
//! target/release/quiver-bench cluster --quick --scenario cluster_failover
//! target/release/quiver-bench report       # engine, client + PostgreSQL, cluster + etcd, then
//!                          # docs/BENCHMARKS.md's report section and docs/bench/*.svg rewritten
//! target/release/quiver-bench report --quick --skip-cluster --no-doc   # try it: on stdout
//! ```
//!
//! The suites, whose module docs list the scenarios:
//! - `engine` (`quiver_bench::engine_suite`): the storage engine in-process.
//! - `raft` (`quiver_bench::raft_suite`): three Raft nodes in-process over engines.
//! - `client` (`quiver_bench::client_suite`): the server over QUIC through `quiver-client`,
//!   after the same appends and reads against a throwaway PostgreSQL server used as an event
//!   store (`quiver_bench::postgres_peer`; Debian's `postgresql`, found through `pg_config`)
//!   in the same run, with Quiver's rate over PostgreSQL's (`vs_postgres`); `--no-peer`
//!   skips PostgreSQL, and without it installed the suite says so and runs Quiver alone.
//! - `cluster` (`quiver_bench::cluster_suite`): three `quiver serve --db-type cluster`
//!   processes (the `quiver` binary next to `quiver-bench`) through `quiver-client`, a leader
//!   failover, and a three-member etcd cluster (`etcd` on `PATH`, Debian's `etcd-server`) in
//!   the same run, with Quiver's rate over etcd's (`vs_etcd`).
//!
//! `report` (`quiver_bench::report_doc`) runs `engine`, `client` (with PostgreSQL unless
//! `--no-peer`) and `cluster` (when `quiver` is beside `quiver-bench`, unless
//! `--skip-cluster`) in-process with a progress bar on stderr, saves their JSON lines to
//! `docs/bench/latest.jsonl` instead of printing them, draws the plots there, and rewrites
//! the part of `docs/BENCHMARKS.md` between `<!-- report:begin -->` and
//! `<!-- report:end -->`: machine, date, commit, command, DESIGN.md's targets met or not,
//! Quiver beside PostgreSQL. Run it from the repository's root.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use quiver_bench::client_suite::{self, default_ca_file, Remote, Suite as ClientSuite};
use quiver_bench::report::{git_rev, Report};
use quiver_bench::workload::{DATA_DIR_DEFAULT, DATA_DIR_ENV};
use quiver_bench::{cluster_suite, engine_suite, limits, raft_suite, report_doc};
use quiver_engine::IoMode;

#[derive(Parser)]
#[command(
    version,
    about = "Quiver's benchmarks: one JSON line per scenario on stdout"
)]
struct Cli {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Subcommand)]
enum Suite {
    /// The storage engine in-process: durable appends, stream reads, `$all` scans, reopen.
    Engine(EngineArgs),
    /// Three Raft nodes in-process over engines and channels: committed entries/s and
    /// commit latency, with the bare engine measured alongside.
    Raft(RaftArgs),
    /// The server over QUIC through quiver-client: appends from 1, 16 and 64 connections,
    /// stream reads and `$all` scans, live and catch-up subscriptions, a persistent group's
    /// acks. Starts its own server unless given --server. First, the same appends and reads
    /// against a throwaway PostgreSQL (unless --no-peer), for Quiver's `vs_postgres`.
    Client(ClientArgs),
    /// Three `quiver serve --db-type cluster` processes on loopback through quiver-client:
    /// appends from 1, 16 and 64 connections, leader failover; and a 3-member etcd cluster
    /// in the same run (puts from 16 and 64 connections) to compare with.
    Cluster(ClusterArgs),
    /// The standard suites in one go (engine; client with PostgreSQL; cluster with etcd
    /// when the quiver binary is beside quiver-bench), with a progress bar; then rewrites the
    /// generated section of docs/BENCHMARKS.md and the plots and JSON lines in docs/bench/.
    Report(ReportArgs),
    /// The floors under the client path on this machine: fdatasync after a small and a
    /// 32 kB write, and a QUIC request/response round trip on loopback (Quiver's endpoints,
    /// no engine), to set beside `client --stages`.
    Limits(LimitsArgs),
    /// Internal: the restart half of `engine_many_streams_*`, run in a fresh process so its
    /// memory is the store's alone. Prints one JSON object.
    #[command(hide = true)]
    EngineProbe(ProbeArgs),
}

#[derive(Args)]
struct ProbeArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    streams: u64,
    /// Events per stream.
    #[arg(long, default_value_t = 1)]
    events: u64,
    #[arg(long, value_enum, default_value_t = IoModeArg::Auto)]
    io_mode: IoModeArg,
}

#[derive(Args)]
struct EngineArgs {
    /// Timed scenarios run 1 s instead of 3 s; the reopen store holds 1 M events, not 10 M.
    #[arg(long)]
    quick: bool,
    /// Parent directory of the scratch stores (must be on the disk to measure, not tmpfs).
    #[arg(long, env = DATA_DIR_ENV, default_value = DATA_DIR_DEFAULT)]
    dir: PathBuf,
    /// Write path: io_uring if the kernel allows it (auto), io_uring or fail, pwrite + fdatasync.
    #[arg(long, value_enum, default_value_t = IoModeArg::Auto)]
    io_mode: IoModeArg,
    /// Run only this scenario (repeatable); all of them by default.
    #[arg(long = "scenario", value_parser = PossibleValuesParser::new(engine_suite::SCENARIOS))]
    scenarios: Vec<String>,
    /// Events in `engine_reopen_10m`'s store, instead of 10,000,000 (1,000,000 `--quick`),
    /// e.g. 30000000 to see how a restart grows with the store.
    #[arg(long)]
    reopen_events: Option<u64>,
    /// Time the engine's stages of each append (waiting for the state lock, planning,
    /// framing; the writer's idle time, group commit, write + fdatasync, publishing; the
    /// caller's wake-up) from their `stage.engine.*` spans, and add them to each line as
    /// `stages`, with `usage` (CPU and context switches per operation, whole process).
    #[arg(long)]
    stages: bool,
}

#[derive(Args)]
struct RaftArgs {
    /// Timed scenarios run 1 s instead of 3 s.
    #[arg(long)]
    quick: bool,
    /// Parent directory of the scratch stores (must be on the disk to measure, not tmpfs).
    #[arg(long, env = DATA_DIR_ENV, default_value = DATA_DIR_DEFAULT)]
    dir: PathBuf,
    /// Run only this scenario (repeatable); all of them by default.
    #[arg(long = "scenario", value_parser = PossibleValuesParser::new(raft_suite::SCENARIOS))]
    scenarios: Vec<String>,
}

#[derive(Args)]
struct ClientArgs {
    /// QUIC address of a running server. Default: a server started in-process on
    /// 127.0.0.1:0, on a fresh store per scenario under --dir.
    #[arg(long)]
    server: Option<SocketAddr>,
    /// With --server: PEM file of the CA to trust. Default: $QUIVER_DATA_DIR/tls/ca.pem,
    /// else quiver-data/tls/ca.pem.
    #[arg(long, env = "QUIVER_CA")]
    ca: Option<PathBuf>,
    /// With --server: the token to present, if the server requires one.
    #[arg(long, env = "QUIVER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Timed scenarios run 1 s instead of 3 s; the read store holds 200,000 events, not 1 M.
    #[arg(long)]
    quick: bool,
    /// Parent directory of the in-process servers' stores (on the disk to measure).
    #[arg(long, env = DATA_DIR_ENV, default_value = DATA_DIR_DEFAULT)]
    dir: PathBuf,
    /// Run only this scenario (repeatable); all of them by default. A Quiver scenario
    /// brings its PostgreSQL counterpart (`pg_…`) along, unless --no-peer.
    #[arg(long = "scenario", value_parser = PossibleValuesParser::new(client_suite::SCENARIOS))]
    scenarios: Vec<String>,
    /// Run no PostgreSQL scenario; `vs_postgres` is then null. By default a throwaway
    /// PostgreSQL is started under --dir (initdb and pg_ctl from `pg_config --bindir`,
    /// /usr/lib/postgresql/*/bin or PATH), measured first, and stopped.
    #[arg(long)]
    no_peer: bool,
    /// Time the stages of each request (client encode, send, wait, decode; server read,
    /// decode, engine, answer; the engine's write + fdatasync) from their `stage.*` tracing
    /// spans, and add them to each Quiver line as `stages` (count, p50, p99, mean µs per
    /// stage), with `usage` (CPU and context switches per operation, whole process).
    /// Without it no subscriber is installed and the spans cost a level check.
    #[arg(long)]
    stages: bool,
}

#[derive(Args)]
struct LimitsArgs {
    /// Timed scenarios run 1 s instead of 3 s.
    #[arg(long)]
    quick: bool,
    /// Where the fdatasync probe's file goes (on the disk to measure, not tmpfs).
    #[arg(long, env = DATA_DIR_ENV, default_value = DATA_DIR_DEFAULT)]
    dir: PathBuf,
    /// Run only this scenario (repeatable); all of them by default.
    #[arg(long = "scenario", value_parser = PossibleValuesParser::new(limits::SCENARIOS))]
    scenarios: Vec<String>,
}

#[derive(Args)]
struct ClusterArgs {
    /// Timed scenarios run 1 s instead of 3 s; one leader kill instead of three.
    #[arg(long)]
    quick: bool,
    /// Parent directory of the nodes' data directories (on the disk to measure, not tmpfs).
    #[arg(long, env = DATA_DIR_ENV, default_value = DATA_DIR_DEFAULT)]
    dir: PathBuf,
    /// Leader kills in cluster_failover (default 3, 1 with --quick).
    #[arg(long)]
    kills: Option<usize>,
    /// Per-request deadline of the failover writers' clients, in ms (default: the client's).
    #[arg(long)]
    client_timeout_ms: Option<u64>,
    /// Puts in flight on each of etcd_put_c16's 16 connections.
    #[arg(long, default_value_t = cluster_suite::ETCD_C16_IN_FLIGHT)]
    etcd_c16_in_flight: usize,
    /// Run only this scenario (repeatable); all of them by default.
    #[arg(long = "scenario", value_parser = PossibleValuesParser::new(cluster_suite::SCENARIOS))]
    scenarios: Vec<String>,
}

#[derive(Args)]
struct ReportArgs {
    /// The suites' --quick: 1 s timed runs, smaller read and reopen stores.
    #[arg(long)]
    quick: bool,
    /// Parent directory of the scratch stores (must be on the disk to measure, not tmpfs).
    #[arg(long, env = DATA_DIR_ENV, default_value = DATA_DIR_DEFAULT)]
    dir: PathBuf,
    /// Run no PostgreSQL scenario; the report's PostgreSQL table then says "not run".
    #[arg(long)]
    no_peer: bool,
    /// Leave the cluster suite out even when the quiver binary is beside quiver-bench.
    #[arg(long)]
    skip_cluster: bool,
    /// The document whose part between `<!-- report:begin -->` and `<!-- report:end -->` is
    /// rewritten (the markers are put after its intro if it has none).
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    output_doc: PathBuf,
    /// Leave the document alone and print the generated section on stdout (the plots and
    /// JSON lines are still written to --out-dir).
    #[arg(long)]
    no_doc: bool,
    /// Where latest.jsonl and the SVG plots go.
    #[arg(long, default_value = "docs/bench")]
    out_dir: PathBuf,
    /// A sentence put at the top of the generated section, e.g. what else the machine was
    /// doing during the run.
    #[arg(long)]
    note: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum IoModeArg {
    Auto,
    Uring,
    Pwrite,
}

impl From<IoModeArg> for IoMode {
    fn from(mode: IoModeArg) -> IoMode {
        match mode {
            IoModeArg::Auto => IoMode::Auto,
            IoModeArg::Uring => IoMode::Uring,
            IoModeArg::Pwrite => IoMode::Pwrite,
        }
    }
}

fn main() -> Result<()> {
    let git_rev = git_rev(env!("CARGO_MANIFEST_DIR").as_ref());
    match Cli::parse().suite {
        Suite::Engine(args) => {
            let opts = engine_suite::Options {
                data_dir: args.dir,
                quick: args.quick,
                git_rev,
                io_mode: args.io_mode.into(),
                reopen_events: args.reopen_events,
            };
            let stages = match args.stages {
                true => Some(quiver_bench::stages::install()?),
                false => None,
            };
            let chosen = choose(engine_suite::SCENARIOS, &args.scenarios);
            run_all(&chosen, |scenario| {
                quiver_bench::stages::measured(stages.as_deref(), || {
                    engine_suite::run(scenario, &opts)
                })
            })
        }
        Suite::EngineProbe(args) => quiver_bench::many_streams::probe(
            &args.dir,
            args.streams,
            args.events,
            args.io_mode.into(),
        ),
        Suite::Raft(args) => {
            let opts = raft_suite::Options {
                data_dir: args.dir,
                quick: args.quick,
                git_rev,
            };
            let chosen = choose(raft_suite::SCENARIOS, &args.scenarios);
            run_all(&chosen, |scenario| raft_suite::run(scenario, &opts))
        }
        Suite::Limits(args) => {
            let chosen = choose(limits::SCENARIOS, &args.scenarios);
            run_all(&chosen, |scenario| {
                limits::run(scenario, &args.dir, args.quick).map(|r| match &git_rev {
                    Some(rev) => r.with("git_rev", rev.as_str()),
                    None => r,
                })
            })
        }
        Suite::Client(args) => {
            let remote = args.server.map(|addr| Remote {
                addr,
                ca_file: args.ca.unwrap_or_else(default_ca_file),
                token: args.token,
            });
            if let Some(Remote { ca_file, .. }) = &remote {
                anyhow::ensure!(
                    ca_file.exists(),
                    "no CA file at {}: pass --ca FILE (or QUIVER_CA), or set QUIVER_DATA_DIR to \
                     the server's data directory",
                    ca_file.display()
                );
            }
            let mut suite = ClientSuite::new(client_suite::Options {
                remote,
                data_dir: args.dir,
                quick: args.quick,
                git_rev,
                stages: match args.stages {
                    true => Some(quiver_bench::stages::install()?),
                    false => None,
                },
            })?;
            let chosen = choose(client_suite::SCENARIOS, &args.scenarios);
            let (chosen, _) =
                suite.start_peer_if_chosen(client_suite::with_peer(&chosen, !args.no_peer));
            let ran = run_all(&chosen, |scenario| suite.run(scenario));
            let finished = suite.finish();
            ran.and(finished)
        }
        Suite::Cluster(args) => {
            let kills = args.kills.unwrap_or(if args.quick {
                cluster_suite::KILLS_QUICK
            } else {
                cluster_suite::KILLS_DEFAULT
            });
            let mut suite = cluster_suite::Suite::new(cluster_suite::Options {
                data_dir: args.dir,
                quick: args.quick,
                git_rev,
                kills,
                client_timeout: args.client_timeout_ms.map(std::time::Duration::from_millis),
                etcd_c16_in_flight: args.etcd_c16_in_flight,
            })?;
            let chosen = choose(cluster_suite::SCENARIOS, &args.scenarios);
            run_all(&chosen, |scenario| suite.run(scenario))
        }
        Suite::Report(args) => report_doc::run(report_doc::Options {
            data_dir: args.dir,
            quick: args.quick,
            peer: !args.no_peer,
            skip_cluster: args.skip_cluster,
            output_doc: (!args.no_doc).then_some(args.output_doc),
            out_dir: args.out_dir,
            note: args.note,
            git_rev,
            source_dir: env!("CARGO_MANIFEST_DIR").into(),
            command: report_doc::command_line(),
        }),
    }
}

/// The scenarios asked for, in suite order whatever order they were given in; all of them
/// when none was.
fn choose<'a>(all: &[&'a str], asked: &[String]) -> Vec<&'a str> {
    if asked.is_empty() {
        return all.to_vec();
    }
    all.iter()
        .copied()
        .filter(|s| asked.iter().any(|a| a == s))
        .collect()
}

/// Runs each scenario, printing its JSON line as soon as it is done; a failed scenario is
/// reported on stderr and the others still run.
fn run_all(scenarios: &[&str], mut run: impl FnMut(&str) -> Result<Report>) -> Result<()> {
    let mut failed = 0;
    for &scenario in scenarios {
        eprintln!("quiver-bench: running {scenario}");
        match run(scenario) {
            Ok(report) => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", report.to_json_line())?;
                out.flush()?;
            }
            Err(e) => {
                eprintln!("quiver-bench: {scenario} failed: {e:#}");
                failed += 1;
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} scenario(s) failed");
    Ok(())
}
