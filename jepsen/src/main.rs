//! The `quiver-jepsen` command.
//!
//! - `run` (the default: the flags may come without it): starts a cluster of real `quiver serve` processes, runs the list-append
//!   workload under the chosen nemeses, heals, reads every stream on every node, checks the
//!   history, and writes the run's directory (`history.jsonl`, `timeline.jsonl`,
//!   `results.json`, `summary.md`, `throughput.svg`, `latency.svg`, the nodes' logs). Exits 1 on any anomaly, on replicas
//!   that differ after healing, or on a run that does not count (no operations, or no fault
//!   when faults were asked for).
//! - `check HISTORY.jsonl`: prints the checker's report as JSON and exits 1 when the history
//!   shows an anomaly (or is malformed), 2 when it cannot be read.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver_jepsen::{check, History};

#[derive(Parser)]
#[command(
    name = "quiver-jepsen",
    about = "Quiver's consistency suite",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, the run's flags: `quiver-jepsen --nodes 3 --time-limit 60 ...`
    /// is `quiver-jepsen run --nodes 3 --time-limit 60 ...`.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Nodes in the cluster (3 or 5).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Seconds of workload.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Faults: `all`, `none`, `partition`, `process`, `storage`, or names (partition-one,
    /// partition-halves, bridge, ring, one-way, degrade, kill, pause, kill-all, transfer,
    /// membership, lose-unsynced, torn-write, garbled-write, bit-rot), comma-separated. The
    /// storage kinds need a quiver built with `--features fault-injection`.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Seconds between faults, and how long each lasts.
    #[arg(long, default_value_t = 5)]
    nemesis_interval: u64,
    /// Workloads, comma-separated: `list-append` (appends to one or two streams in one
    /// write, and whole-stream reads: always on), `registers` (compare-and-append by
    /// expected version), `idempotent` (writes of unknown outcome retried with the same event
    /// ids), `subscriptions` (catch-up subscribers on every node and a persistent group
    /// throughout); `all` for every one.
    #[arg(long, default_value = "all")]
    workload: String,
    /// Client processes at once.
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    /// Operations per second in all (0: as fast as they go).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The seed of every choice (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Run against the Docker compose cluster of this image (built by
    /// examples/docker/build.sh, e.g. `quiver:jepsen`) instead of local processes; only the
    /// faults Docker can make (partition-one as a network disconnect, kill, pause, kill-all,
    /// transfer) are chosen.
    #[arg(long)]
    docker: Option<String>,
    /// The `quiver` binary (default: beside this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Where the run's directory goes (default: jepsen-runs/SEED).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a cluster under faults and check what it did.
    Run(RunArgs),
    /// Check a list-append history (JSON lines) and print the report as JSON.
    Check {
        /// The history file, one event per line.
        history: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(args) => match run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("quiver-jepsen run: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Check { history } => {
            let loaded = File::open(&history)
                .map_err(|e| e.to_string())
                .and_then(|f| History::read_jsonl(BufReader::new(f)).map_err(|e| e.to_string()));
            let history = match loaded {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("quiver-jepsen check {}: {e}", history.display());
                    return ExitCode::from(2);
                }
            };
            let report = check(&history);
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("quiver-jepsen check: cannot print the report: {e}");
                    return ExitCode::from(2);
                }
            }
            if report.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Runs, checks, writes the results; true when the run is valid and counts.
fn run(args: RunArgs) -> anyhow::Result<bool> {
    use anyhow::Context;
    use quiver_jepsen::nemesis::Kind;
    let mut workloads = std::collections::BTreeSet::new();
    for w in args
        .workload
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        match w {
            "all" => workloads.extend(["registers", "idempotent", "subscriptions"]),
            "list-append" => {}
            "registers" | "idempotent" | "subscriptions" => {
                workloads.insert(w);
            }
            other => anyhow::bail!(
                "unknown workload `{other}` (list-append, registers, idempotent, subscriptions, all)"
            ),
        }
    }
    let mut nemesis = Kind::parse_list(&args.nemesis).map_err(anyhow::Error::msg)?;
    if args.docker.is_some() {
        let asked = nemesis.len();
        nemesis.retain(|k| Kind::DOCKER.contains(k));
        if nemesis.len() < asked {
            eprintln!(
                "quiver-jepsen run: the Docker backend makes only {:?}; the other faults asked are left out",
                Kind::DOCKER.map(Kind::name)
            );
        }
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .context("the binary's directory")?
            .join("quiver"),
    };
    anyhow::ensure!(
        binary.exists() || args.docker.is_some(),
        "no quiver binary at {} (build it: cargo build --release -p quiver-server; or --binary)",
        binary.display()
    );
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("jepsen-runs").join(seed.to_string()));
    let opts = quiver_jepsen::run::Options {
        binary,
        nodes: args.nodes,
        time_limit: std::time::Duration::from_secs(args.time_limit),
        nemesis: nemesis.clone(),
        nemesis_interval: std::time::Duration::from_secs(args.nemesis_interval),
        concurrency: args.concurrency,
        rate: args.rate,
        seed,
        out: out.clone(),
        docker: args.docker.clone(),
        registers: workloads.contains("registers"),
        idempotent: workloads.contains("idempotent"),
        subscriptions: workloads.contains("subscriptions"),
    };
    eprintln!(
        "quiver-jepsen run: {} nodes, {} s, nemesis {:?}, seed {seed}, into {}",
        args.nodes,
        args.time_limit,
        args.nemesis,
        out.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(quiver_jepsen::run::run(&opts))?;
    let history = History::read_jsonl(BufReader::new(File::open(out.join("history.jsonl"))?))
        .map_err(|e| anyhow::anyhow!("reading the history: {e}"))?;
    let report = check(&history);
    let mut problems = Vec::new();
    if !report.valid {
        problems.push(format!("anomalies: {:?}", report.anomaly_counts));
    }
    if !outcome.replicas_agree {
        problems.push(format!(
            "replicas differ after healing: {}",
            outcome.differences.join("; ")
        ));
    }
    if outcome.counts.ok == 0 {
        problems.push("no operation succeeded: the run does not count".to_string());
    }
    if let Some(subs) = outcome.subscriptions.as_ref().filter(|s| !s.valid) {
        problems.push(format!("subscriptions: {:?}", subs.finding_counts));
    }
    if outcome.counts.undetected_corruption > 0 {
        problems.push(format!(
            "{} storage faults went undetected (see timeline.jsonl)",
            outcome.counts.undetected_corruption
        ));
    }
    if !nemesis.is_empty() && outcome.counts.faults == 0 {
        problems.push("no fault was injected: the run does not count".to_string());
    }
    let results = serde_json::json!({
        "seed": seed,
        "nodes": args.nodes,
        "time_limit_s": args.time_limit,
        "nemesis": args.nemesis,
        "workload": args.workload,
        "counts": outcome.counts,
        "replicas_agree": outcome.replicas_agree,
        "subscriptions": outcome.subscriptions,
        "valid": problems.is_empty(),
        "problems": problems,
        "checker": report,
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    let c = &outcome.counts;
    let verdict = if problems.is_empty() {
        "VALID"
    } else {
        "INVALID"
    };
    let what = format!(
        "{} ok, {} fail, {} info ({} writes retried with their ids); {} faults, {} leader \
         changes; replicas agree after healing: {}",
        c.ok, c.fail, c.info, c.retries, c.faults, c.leader_changes, outcome.replicas_agree
    );
    let findings = if problems.is_empty() {
        "no anomaly".to_string()
    } else {
        problems.join("; ")
    };
    let summary = format!(
        "# quiver-jepsen run {seed}: {verdict}\n\n\
         {} nodes, {} s, nemesis `{}`, workload {}.\n\n{what}.\n\n{findings}.\n\n\
         Reproduce: `cargo run --release -p quiver-jepsen -- run --nodes {} --time-limit {} \
         --nemesis {} --workload {} --seed {seed}{}`\n",
        args.nodes,
        args.time_limit,
        args.nemesis,
        args.workload,
        args.nodes,
        args.time_limit,
        args.nemesis,
        args.workload,
        args.docker
            .as_ref()
            .map_or(String::new(), |image| format!(" --docker {image}")),
    );
    // Pictures: throughput and latency over time, the fault windows shaded.
    let history_text = std::fs::read_to_string(out.join("history.jsonl"))?;
    let timeline_text = std::fs::read_to_string(out.join("timeline.jsonl")).unwrap_or_default();
    let ops = quiver_jepsen::plot::ops_from_history(&history_text);
    let end = ops.iter().map(|o| o.completed_ns).max().unwrap_or(0);
    let windows = quiver_jepsen::plot::windows_from_timeline(&timeline_text, end);
    std::fs::write(
        out.join("throughput.svg"),
        quiver_jepsen::plot::throughput_svg(&ops, &windows),
    )?;
    std::fs::write(
        out.join("latency.svg"),
        quiver_jepsen::plot::latency_svg(&ops, &windows),
    )?;
    let mut by_kind = std::collections::BTreeMap::<String, u64>::new();
    for line in timeline_text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if v["phase"] == "start" {
            *by_kind
                .entry(v["fault"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
    }
    let faults: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let subscribers = match &outcome.subscriptions {
        Some(r) => {
            let each: Vec<String> = r
                .subscribers
                .iter()
                .map(|s| {
                    format!(
                        "{} delivered {} ({} resubscriptions, {} redeliveries)",
                        s.name, s.delivered, s.resubscriptions, s.redeliveries
                    )
                })
                .collect();
            format!(
                "\nSubscribers ({} elements to deliver; {}): {}.\n",
                r.elements,
                if r.valid {
                    "all delivered, in order, no gap"
                } else {
                    "FINDINGS"
                },
                each.join("; ")
            )
        }
        None => String::new(),
    };
    let summary = summary
        + &format!("\nFaults by kind: {}.\n", faults.join(", "))
        + &subscribers
        + "\n![throughput](throughput.svg)\n\n![latency](latency.svg)\n";
    std::fs::write(out.join("summary.md"), &summary)?;
    println!("quiver-jepsen: {verdict} — {what}; {findings}");
    Ok(problems.is_empty())
}
