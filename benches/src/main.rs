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
//! ```
//!
//! The suites: `engine` (`quiver_bench::engine_suite`; its module doc lists the scenarios).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use quiver_bench::engine_suite::{self, SCENARIOS};
use quiver_bench::report::git_rev;
use quiver_bench::workload::{DATA_DIR_DEFAULT, DATA_DIR_ENV};
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
    #[arg(long = "scenario", value_parser = PossibleValuesParser::new(SCENARIOS))]
    scenarios: Vec<String>,
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
    let Suite::Engine(args) = Cli::parse().suite;
    let opts = engine_suite::Options {
        data_dir: args.dir,
        quick: args.quick,
        git_rev: git_rev(env!("CARGO_MANIFEST_DIR").as_ref()),
        io_mode: args.io_mode.into(),
    };
    let chosen: Vec<&str> = if args.scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        // In suite order, whatever order they were given in.
        SCENARIOS
            .iter()
            .copied()
            .filter(|s| args.scenarios.iter().any(|a| a == s))
            .collect()
    };
    let mut failed = 0;
    for scenario in chosen {
        eprintln!("quiver-bench: running {scenario}");
        match engine_suite::run(scenario, &opts) {
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
