//! The generated section of `docs/BENCHMARKS.md`, and its place in the document.
//!
//! The section is a pure function of the run's facts ([`RunInfo`]) and its [`Results`]:
//! what ran where; DESIGN.md's targets ("How good"), each with the scenario that measures
//! it, the figure, and met / not met; Quiver beside PostgreSQL (and beside etcd when the
//! cluster suite ran); every scenario's throughput and latency; the plots. A target whose
//! scenario did not run says "not run", one whose scenario failed says "failed": a reader
//! never mistakes a missing figure for a met target.
//!
//! [`replace_section`] puts it between [`BEGIN_MARKER`] and [`END_MARKER`], leaving every
//! byte outside them as it was, so the hand-written analysis around it survives each run.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;

use super::machine::{Machine, FSYNC_WRITE_BYTES};
use super::plots::Plot;
use super::{number, Outcome, Results};
use crate::postgres_peer;

/// Where the generated section starts; everything before it (this line included) is kept.
pub const BEGIN_MARKER: &str = "<!-- report:begin -->";
/// Where the generated section ends; everything from this line on is kept.
pub const END_MARKER: &str = "<!-- report:end -->";

/// The facts of a run that are not in its JSON lines.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The command line, as typed.
    pub command: String,
    /// When the run started, seconds since the Unix epoch.
    pub started_unix_secs: u64,
    /// How long it took.
    pub duration: Duration,
    /// The commit measured.
    pub git_rev: Option<String>,
    /// Whether the work tree had uncommitted changes (`None`: unknown).
    pub git_dirty: Option<bool>,
    /// The machine.
    pub machine: Machine,
    /// The bench directory (`--dir`).
    pub data_dir: PathBuf,
    /// Whether the suites ran with `--quick`.
    pub quick: bool,
    /// A sentence from whoever ran it (`--note`), e.g. what else the machine was doing.
    pub note: Option<String>,
    /// Suites left out, each with why.
    pub not_run: Vec<String>,
    /// The directory of the plots and `latest.jsonl`, as a link from the document.
    pub files_href: String,
}

/// DESIGN.md's single-node targets that a scenario measures, in DESIGN.md's order; rows
/// with the same `design` text are one target measured several ways.
const SINGLE_NODE_TARGETS: &[Target] = &[
    Target::rate(
        "engine, 1 caller, batches of 100, durable",
        "engine_append_batch100",
        400_000,
    ),
    Target::rate(
        "engine, 16 callers, batches of 100",
        "engine_append_batch100_c16",
        2_000_000,
    ),
    Target::rate(
        "engine, 64 concurrent single-event appenders",
        "engine_append_concurrent64",
        150_000,
    ),
    Target::rate(
        "engine, 64 concurrent single-event appenders",
        "engine_append_concurrent64_inflight",
        150_000,
    ),
    Target::rate(
        "engine, read a stream / scan `$all`",
        "engine_read_stream",
        3_000_000,
    ),
    Target::rate(
        "engine, read a stream / scan `$all`",
        "engine_scan_all",
        3_000_000,
    ),
    Target::rate(
        "client over QUIC, 1 connection, batches of 100",
        "client_append_batch100",
        300_000,
    ),
    Target::rate(
        "client over QUIC, 16 connections, batches of 100",
        "client_append_batch100_c16",
        1_000_000,
    ),
    Target::rate(
        "client over QUIC, 64 concurrent single-event clients",
        "client_append_concurrent64",
        50_000,
    ),
    Target::rate(
        "client over QUIC, 64 concurrent single-event clients",
        "client_append_shared64",
        50_000,
    ),
    Target::rate(
        "client over QUIC, read / catch-up",
        "client_read_stream",
        1_000_000,
    ),
    Target::rate(
        "client over QUIC, read / catch-up",
        "client_scan_all",
        1_000_000,
    ),
    Target::rate(
        "client over QUIC, read / catch-up",
        "subscribe_catchup",
        1_000_000,
    ),
    Target {
        design: "single-event append latency, 1 client",
        scenario: "client_append_batch1",
        check: Check::SingleAppend {
            over_fsync_us: 150.0,
            p99_us_max: 2_000.0,
        },
    },
    Target {
        design: "append → live subscriber, 1 node",
        scenario: "subscribe_live_latency",
        check: Check::P99 { us_max: 1_000.0 },
    },
    Target {
        design: "restart with 10 million events stored",
        scenario: "engine_reopen_10m",
        check: Check::Reopen {
            ms_max: 2_000.0,
            events: 10_000_000,
        },
    },
    Target {
        design: "versus PostgreSQL as an event store, same machine, same run",
        scenario: "client_append_batch100",
        check: Check::VsPostgres { min: 10.0 },
    },
    Target {
        design: "versus PostgreSQL as an event store, same machine, same run",
        scenario: "client_append_batch100_c16",
        check: Check::VsPostgres { min: 10.0 },
    },
];

/// DESIGN.md's cluster targets that the cluster suite measures.
const CLUSTER_TARGETS: &[Target] = &[
    Target::rate(
        "3-node cluster on this machine, 16 connections, batches of 100",
        "cluster_append_batch100_c16",
        300_000,
    ),
    Target {
        design: "leader killed → writes accepted again",
        scenario: "cluster_failover",
        check: Check::Failover { ms_max: 3_000.0 },
    },
];

/// The workloads Quiver and PostgreSQL both run (`postgres_peer::COUNTERPARTS`), named for
/// a reader.
const POSTGRES_WORKLOADS: &[(&str, &str)] = &[
    (
        "client_append_batch100",
        "appends of 100 events, 1 connection",
    ),
    (
        "client_append_batch100_c16",
        "appends of 100 events, 16 connections",
    ),
    (
        "client_append_concurrent64",
        "single-event appends, 64 connections",
    ),
    ("client_read_stream", "read one stream"),
    ("client_scan_all", "read `$all` (PostgreSQL: the table)"),
];

/// Quiver's cluster scenarios with their etcd counterparts, named for a reader.
const ETCD_WORKLOADS: &[(&str, &str, &str)] = &[
    (
        "cluster_append_batch100_c16",
        "etcd_put_c16",
        "16 connections (Quiver: appends of 100; etcd: 1,600 puts in flight)",
    ),
    (
        "cluster_append_concurrent64",
        "etcd_put_concurrent64",
        "64 connections, one single-event write each in turn",
    ),
];

/// One of DESIGN.md's targets and the scenario that measures it.
#[derive(Debug, Clone, Copy)]
struct Target {
    /// DESIGN.md's words for it.
    design: &'static str,
    scenario: &'static str,
    check: Check,
}

impl Target {
    const fn rate(design: &'static str, scenario: &'static str, min: u64) -> Target {
        Target {
            design,
            scenario,
            check: Check::Rate { min },
        }
    }
}

/// How a target is decided from a scenario's line.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// `events_per_sec` ≥ `min`.
    Rate { min: u64 },
    /// `vs_postgres` ≥ `min`.
    VsPostgres { min: f64 },
    /// `p99_us` ≤ `us_max`.
    P99 { us_max: f64 },
    /// `p50_us` ≤ the machine's fdatasync p50 + `over_fsync_us`, and `p99_us` ≤ `p99_us_max`.
    SingleAppend { over_fsync_us: f64, p99_us_max: f64 },
    /// `reopen_ms` ≤ `ms_max`, for a store of `events` events.
    Reopen { ms_max: f64, events: u64 },
    /// `failover_ms_max` ≤ `ms_max`.
    Failover { ms_max: f64 },
}

/// Whether a target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Met,
    NotMet,
    NotRun,
    Failed,
}

impl Verdict {
    fn of(met: bool) -> Verdict {
        if met {
            Verdict::Met
        } else {
            Verdict::NotMet
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "**not met**",
            Verdict::NotRun => "not run",
            Verdict::Failed => "failed",
        }
    }
}

/// A target decided: the cells of its row.
#[derive(Debug, Clone, PartialEq)]
struct Decided {
    measured: String,
    target: String,
    verdict: Verdict,
    /// Said after the verdict: why the verdict holds only in part.
    caveat: Option<String>,
}

impl Check {
    /// What the target asks, for its row.
    fn target_text(self, fsync_p50_us: Option<f64>) -> String {
        match self {
            Check::Rate { min } => format!("≥ {} events/s", grouped(min)),
            Check::VsPostgres { min } => format!("≥ {min}× PostgreSQL's events/s"),
            Check::P99 { us_max } => format!("p99 ≤ {} µs", micros(us_max)),
            Check::SingleAppend {
                over_fsync_us,
                p99_us_max,
            } => match fsync_p50_us {
                Some(f) => format!(
                    "p50 ≤ {} µs (fdatasync p50 {} + {}); p99 ≤ {} µs",
                    micros(f + over_fsync_us),
                    micros(f),
                    micros(over_fsync_us),
                    micros(p99_us_max)
                ),
                None => format!(
                    "p50 ≤ fdatasync p50 + {} µs; p99 ≤ {} µs",
                    micros(over_fsync_us),
                    micros(p99_us_max)
                ),
            },
            Check::Reopen { ms_max, events } => {
                format!(
                    "≤ {} ms to serving, {} events",
                    millis(ms_max),
                    grouped(events)
                )
            }
            Check::Failover { ms_max } => format!("≤ {} ms", millis(ms_max)),
        }
    }

    /// Decides the target from the scenario's outcome.
    fn decide(self, outcome: Outcome<'_>, fsync_p50_us: Option<f64>) -> Decided {
        let target = self.target_text(fsync_p50_us);
        let line = match outcome {
            Outcome::Ran(line) => line,
            Outcome::Failed(error) => {
                return Decided {
                    measured: format!("failed: {}", shorten(error, 160)),
                    target,
                    verdict: Verdict::Failed,
                    caveat: None,
                }
            }
            Outcome::NotRun => {
                return Decided {
                    measured: "—".to_string(),
                    target,
                    verdict: Verdict::NotRun,
                    caveat: None,
                }
            }
        };
        let field = |name: &str| number(line, name);
        let eps = field("events_per_sec").unwrap_or(0.0);
        let (measured, verdict, caveat) = match self {
            Check::Rate { min } => (
                format!("{} events/s", grouped(eps as u64)),
                Verdict::of(eps >= min as f64),
                None,
            ),
            Check::VsPostgres { min } => match field("vs_postgres") {
                Some(ratio) => (
                    format!(
                        "{} (PostgreSQL {} events/s)",
                        times(ratio),
                        field("postgres_events_per_sec")
                            .map_or_else(|| "?".to_string(), |p| grouped(p as u64))
                    ),
                    Verdict::of(ratio >= min),
                    None,
                ),
                None => (
                    "no PostgreSQL in this run".to_string(),
                    Verdict::NotRun,
                    None,
                ),
            },
            Check::P99 { us_max } => {
                let p99 = field("p99_us").unwrap_or(f64::INFINITY);
                (
                    format!(
                        "p99 {} µs (p50 {})",
                        micros(p99),
                        micros(field("p50_us").unwrap_or(f64::NAN))
                    ),
                    Verdict::of(p99 <= us_max),
                    None,
                )
            }
            Check::SingleAppend {
                over_fsync_us,
                p99_us_max,
            } => {
                let p50 = field("p50_us").unwrap_or(f64::INFINITY);
                let p99 = field("p99_us").unwrap_or(f64::INFINITY);
                let measured = format!("p50 {} µs, p99 {} µs", micros(p50), micros(p99));
                match fsync_p50_us {
                    Some(f) => (
                        measured,
                        Verdict::of(p50 <= f + over_fsync_us && p99 <= p99_us_max),
                        None,
                    ),
                    None => (
                        measured,
                        Verdict::of(p99 <= p99_us_max),
                        Some("p99 only: fdatasync was not measured".to_string()),
                    ),
                }
            }
            Check::Reopen { ms_max, events } => {
                let reopen = field("reopen_ms").unwrap_or(f64::INFINITY);
                let stored = field("events").unwrap_or(0.0) as u64;
                let measured = format!(
                    "{} ms to serving, {} ms to writable, {} events",
                    millis(reopen),
                    millis(field("writable_ms").unwrap_or(f64::NAN)),
                    grouped(stored)
                );
                let caveat = (stored < events)
                    .then(|| format!("at {} events, not {}", grouped(stored), grouped(events)));
                (measured, Verdict::of(reopen <= ms_max), caveat)
            }
            Check::Failover { ms_max } => {
                let worst = field("failover_ms_max").unwrap_or(f64::INFINITY);
                let measured = format!(
                    "slowest {} ms, median {} ms, {} kills",
                    millis(worst),
                    millis(field("failover_ms_median").unwrap_or(f64::NAN)),
                    field("kills").unwrap_or(0.0)
                );
                (measured, Verdict::of(worst <= ms_max), None)
            }
        };
        Decided {
            measured,
            target,
            verdict,
            caveat,
        }
    }
}

/// The generated section: everything between the markers, ending with a newline.
pub fn section(info: &RunInfo, results: &Results) -> String {
    let mut out = String::new();
    let w = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(w, "## Latest report\n");
    let _ = writeln!(
        w,
        "Generated by `quiver-bench report`; the next run rewrites everything between the \
         `report:begin` and `report:end` markers (the hand-written sections after them keep \
         their own dates). The JSON lines as printed: [{href}/latest.jsonl]({href}/latest.jsonl).\n",
        href = info.files_href
    );
    if let Some(note) = &info.note {
        let _ = writeln!(w, "**Note**: {}\n", note.trim());
    }
    run_facts(w, info);
    let fsync = info.machine.fsync.map(|f| f.p50_us);
    let _ = writeln!(w, "### DESIGN.md's targets, one node\n");
    targets_table(w, SINGLE_NODE_TARGETS, results, fsync);
    let _ = writeln!(w, "### Quiver beside PostgreSQL\n");
    postgres_table(w, results);
    cluster(w, results, fsync);
    let _ = writeln!(w, "### Every scenario\n");
    scenarios_table(w, results);
    let _ = writeln!(w, "### Plots\n");
    for plot in Plot::ALL {
        let _ = writeln!(
            w,
            "![{title}]({href}/{file})\n\n{caption}\n",
            title = plot.title(),
            href = info.files_href,
            file = plot.file_name(),
            caption = plot.caption()
        );
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// The table of what ran where.
fn run_facts(w: &mut String, info: &RunInfo) {
    let m = &info.machine;
    let _ = writeln!(w, "| run | |\n|---|---|");
    let _ = writeln!(w, "| command | {} |", code(&info.command));
    let _ = writeln!(
        w,
        "| date | {}, took {} |",
        utc_date_time(info.started_unix_secs),
        minutes_seconds(info.duration)
    );
    let commit = match (&info.git_rev, info.git_dirty) {
        (None, _) => "unknown".to_string(),
        (Some(rev), dirty) => {
            let short = code(&rev[..rev.len().min(12)]);
            match dirty {
                Some(true) => format!("{short} with uncommitted changes"),
                _ => short,
            }
        }
    };
    let _ = writeln!(w, "| commit | {commit} |");
    let mut machine = vec![
        m.cpu.clone().unwrap_or_else(|| "CPU unknown".to_string()),
        format!("{} cores", m.cores),
    ];
    if let Some(bytes) = m.memory_bytes {
        machine.push(format!(
            "{:.1} GiB memory",
            bytes as f64 / (1u64 << 30) as f64
        ));
    }
    if let Some(kernel) = &m.kernel {
        machine.push(format!("Linux {kernel}"));
    }
    machine.push(
        if m.release_build {
            "release build"
        } else {
            "**debug build** (numbers meaningless)"
        }
        .to_string(),
    );
    let _ = writeln!(w, "| machine | {} |", machine.join(", "));
    let mut dir = code(&info.data_dir.display().to_string());
    if let Some(mount) = &m.mount {
        let _ = write!(dir, ": {} on {}", mount.fs_type(), code(&mount.device));
    }
    if let Some(f) = m.fsync {
        let _ = write!(
            dir,
            "; fdatasync after a {FSYNC_WRITE_BYTES}-byte overwrite: p50 {} µs (p10 {}, p90 {}; \
             {} syncs, before and after the suites)",
            micros(f.p50_us),
            micros(f.p10_us),
            micros(f.p90_us),
            grouped(f.samples as u64)
        );
    }
    let _ = writeln!(w, "| bench directory | {dir} |");
    let load = |l: Option<f64>| l.map_or_else(|| "?".to_string(), |l| format!("{l:.2}"));
    let _ = writeln!(
        w,
        "| load average (1 min) | {} at the start, {} at the end |",
        load(m.load_start),
        load(m.load_end)
    );
    let durations = if info.quick {
        "`--quick`: 1 s timed runs, 200,000-event client reads, 1,000,000-event reopen"
    } else {
        "3 s timed runs, 1,000,000-event reads, 10,000,000-event reopen"
    };
    let _ = writeln!(w, "| durations | {durations} |");
    if !info.not_run.is_empty() {
        let _ = writeln!(w, "| not run | {} |", cell(&info.not_run.join("; ")));
    }
    let _ = writeln!(w);
}

/// One row per target: DESIGN.md's words (once per target), the scenario, the figure, the
/// target, the verdict.
fn targets_table(w: &mut String, targets: &[Target], results: &Results, fsync: Option<f64>) {
    let _ = writeln!(w, "| DESIGN.md | scenario | measured | target | verdict |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    let mut previous = "";
    for t in targets {
        let d = t.check.decide(results.get(t.scenario), fsync);
        let design = if t.design == previous { "" } else { t.design };
        previous = t.design;
        let verdict = match &d.caveat {
            Some(c) => format!("{} ({c})", d.verdict.word()),
            None => d.verdict.word().to_string(),
        };
        let _ = writeln!(
            w,
            "| {design} | `{}` | {} | {} | {verdict} |",
            t.scenario,
            cell(&d.measured),
            d.target
        );
    }
    let _ = writeln!(w);
}

/// Quiver's events/s beside PostgreSQL's for each workload both run, and the ratio.
fn postgres_table(w: &mut String, results: &Results) {
    let _ = writeln!(
        w,
        "| workload | Quiver scenario | Quiver events/s | PostgreSQL events/s | Quiver / PostgreSQL |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|");
    for &(quiver, pg) in postgres_peer::COUNTERPARTS {
        let label = POSTGRES_WORKLOADS
            .iter()
            .find(|(q, _)| *q == quiver)
            .map_or(quiver, |(_, label)| label);
        let _ = writeln!(
            w,
            "| {label} | `{quiver}` | {} |",
            pair_cells(results, quiver, pg)
        );
    }
    let _ = writeln!(w);
}

/// The cluster's targets and etcd beside it, or one sentence when the suite did not run.
fn cluster(w: &mut String, results: &Results, fsync: Option<f64>) {
    let any = CLUSTER_TARGETS
        .iter()
        .map(|t| t.scenario)
        .chain(ETCD_WORKLOADS.iter().flat_map(|(q, e, _)| [*q, *e]))
        .any(|s| results.get(s) != Outcome::NotRun);
    let _ = writeln!(w, "### Cluster\n");
    if !any {
        let _ = writeln!(w, "The cluster suite did not run in this report.\n");
        return;
    }
    targets_table(w, CLUSTER_TARGETS, results, fsync);
    let _ = writeln!(
        w,
        "| workload | Quiver scenario | Quiver events/s | etcd puts/s | Quiver / etcd |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|");
    for &(quiver, etcd, label) in ETCD_WORKLOADS {
        let _ = writeln!(
            w,
            "| {label} | `{quiver}` | {} |",
            pair_cells(results, quiver, etcd)
        );
    }
    let _ = writeln!(w);
}

/// The last three cells of a side-by-side row: each side's rate and their ratio.
fn pair_cells(results: &Results, quiver: &str, peer: &str) -> String {
    let rate = |s: &str| match results.get(s) {
        Outcome::Ran(line) => number(line, "events_per_sec"),
        _ => None,
    };
    let shown = |s: &str| match results.get(s) {
        Outcome::Ran(line) => grouped(number(line, "events_per_sec").unwrap_or(0.0) as u64),
        Outcome::Failed(_) => "failed".to_string(),
        Outcome::NotRun => "not run".to_string(),
    };
    let ratio = match (rate(quiver), rate(peer)) {
        (Some(q), Some(p)) if p > 0.0 => format!("**{}**", times(q / p)),
        _ => "—".to_string(),
    };
    format!("{} | {} | {ratio}", shown(quiver), shown(peer))
}

/// Every scenario in run order: throughput and latency percentiles, or why it failed.
fn scenarios_table(w: &mut String, results: &Results) {
    let _ = writeln!(
        w,
        "| scenario | events/s | p50 / p99 / p99.9 µs | latency per |"
    );
    let _ = writeln!(w, "|---|---|---|---|");
    let mut any = false;
    for (scenario, outcome) in results.outcomes() {
        any = true;
        match outcome {
            Outcome::Ran(line) => {
                let f = |name: &str| number(line, name).unwrap_or(f64::NAN);
                let per = line
                    .get("latency_per")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let _ = writeln!(
                    w,
                    "| `{scenario}` | {} | {} / {} / {} | {} |",
                    grouped(f("events_per_sec") as u64),
                    micros(f("p50_us")),
                    micros(f("p99_us")),
                    micros(f("p999_us")),
                    cell(per)
                );
            }
            Outcome::Failed(error) => {
                let _ = writeln!(
                    w,
                    "| `{scenario}` | failed: {} | | |",
                    cell(&shorten(error, 300))
                );
            }
            Outcome::NotRun => {}
        }
    }
    if !any {
        let _ = writeln!(w, "| (none ran) | | | |");
    }
    let _ = writeln!(w);
}

/// Puts `section` between the markers of `doc`, leaving every byte outside them as it was.
/// A marker counts only as a line of its own outside fenced code blocks, so prose or code
/// that mentions one (as the document's intro does) is left alone. Without markers, inserts
/// them with the section before the first `## ` heading (after the intro), or at the end if
/// there is none. A document with only one marker, either of them twice, or the end before
/// the begin is refused rather than guessed at.
pub fn replace_section(doc: &str, section: &str) -> Result<String> {
    let body = format!("\n{}\n", section.trim_end_matches('\n'));
    let begins = marker_lines(doc, BEGIN_MARKER);
    let ends = marker_lines(doc, END_MARKER);
    match (begins.as_slice(), ends.as_slice()) {
        ([begin], [end]) => {
            let kept_to = begin + BEGIN_MARKER.len();
            if *end < kept_to {
                bail!("{END_MARKER} comes before {BEGIN_MARKER}");
            }
            Ok(format!("{}{body}{}", &doc[..kept_to], &doc[*end..]))
        }
        ([], []) => {
            let at = lines_outside_fences(doc)
                .find(|(_, line)| line.starts_with("## "))
                .map_or(doc.len(), |(offset, _)| offset);
            let (before, after) = doc.split_at(at);
            let gap = if before.is_empty() || before.ends_with('\n') {
                ""
            } else {
                "\n"
            };
            let trailing = if after.is_empty() { "" } else { "\n" };
            Ok(format!(
                "{before}{gap}{BEGIN_MARKER}{body}{END_MARKER}\n{trailing}{after}"
            ))
        }
        _ => bail!(
            "the document has {} {BEGIN_MARKER} and {} {END_MARKER} lines: want one of each \
             (or none, to insert them)",
            begins.len(),
            ends.len()
        ),
    }
}

/// Byte offsets of the lines of `doc` that are `marker` alone (trailing whitespace allowed),
/// outside fenced code blocks.
fn marker_lines(doc: &str, marker: &str) -> Vec<usize> {
    lines_outside_fences(doc)
        .filter(|(_, line)| line.trim_end() == marker)
        .map(|(offset, _)| offset)
        .collect()
}

/// Each line of `doc` (with its line ending) and its byte offset, leaving out the lines of
/// fenced code blocks (from a line starting with three backticks to the next).
fn lines_outside_fences(doc: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    let mut fenced = false;
    doc.split_inclusive('\n').filter_map(move |line| {
        let at = offset;
        offset += line.len();
        if line.starts_with("```") {
            fenced = !fenced;
            return None;
        }
        (!fenced).then_some((at, line))
    })
}

/// `n` with thousands separated by commas: 1,234,567.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .map(|g| std::str::from_utf8(g).expect("ASCII digits"))
        .collect();
    groups.reverse();
    groups.join(",")
}

/// Microseconds for a table: whole numbers with separators, one decimal under 100.
fn micros(us: f64) -> String {
    if !us.is_finite() {
        "?".to_string()
    } else if us < 100.0 {
        format!("{us:.1}")
    } else {
        grouped(us.round() as u64)
    }
}

/// Milliseconds for a table, the same way.
fn millis(ms: f64) -> String {
    micros(ms)
}

/// A ratio: 4.24×.
fn times(ratio: f64) -> String {
    format!("{ratio:.2}×")
}

/// `text` as inline code, safe inside a table cell.
fn code(text: &str) -> String {
    let fence = if text.contains('`') { "``" } else { "`" };
    cell(&format!("{fence}{text}{fence}"))
}

/// `text` safe inside a table cell: no line breaks, pipes escaped.
fn cell(text: &str) -> String {
    text.replace(['\n', '\r'], " ").replace('|', "\\|")
}

/// At most `max` characters of `text`, with an ellipsis if cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// "4 min 12 s", or "12 s" under a minute.
fn minutes_seconds(d: Duration) -> String {
    let secs = d.as_secs_f64().round() as u64;
    match secs / 60 {
        0 => format!("{secs} s"),
        m => format!("{m} min {} s", secs % 60),
    }
}

/// `secs` since the Unix epoch as "2026-11-28 10:12:03 UTC".
pub(super) fn utc_date_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01: counted in 400-year eras of
/// 146,097 days, each starting on 1 March so that the leap day ends its year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report_doc::fixture;
    use crate::{client_suite, cluster_suite, engine_suite};

    /// The lines of `section` from the heading `title` to the next heading, trimmed.
    fn part<'a>(section: &'a str, title: &str) -> &'a str {
        let start = section.find(title).unwrap_or_else(|| panic!("no {title}")) + title.len();
        let rest = &section[start..];
        let end = rest.find("\n### ").unwrap_or(rest.len());
        rest[..end].trim()
    }

    #[test]
    fn targets_are_decided_from_the_fixed_run() {
        let section = section(&fixture::info(), &fixture::results());
        let expected = "\
| DESIGN.md | scenario | measured | target | verdict |
|---|---|---|---|---|
| engine, 1 caller, batches of 100, durable | `engine_append_batch100` | 348,634 events/s | ≥ 400,000 events/s | **not met** |
| engine, 16 callers, batches of 100 | `engine_append_batch100_c16` | 2,000,000 events/s | ≥ 2,000,000 events/s | met |
| engine, 64 concurrent single-event appenders | `engine_append_concurrent64` | failed: opening a store in /b/x: Permission denied \\| (os error 13) | ≥ 150,000 events/s | failed |
|  | `engine_append_concurrent64_inflight` | 152,163 events/s | ≥ 150,000 events/s | met |
| engine, read a stream / scan `$all` | `engine_read_stream` | 4,622,736 events/s | ≥ 3,000,000 events/s | met |
|  | `engine_scan_all` | — | ≥ 3,000,000 events/s | not run |
| client over QUIC, 1 connection, batches of 100 | `client_append_batch100` | 157,351 events/s | ≥ 300,000 events/s | **not met** |
| client over QUIC, 16 connections, batches of 100 | `client_append_batch100_c16` | 618,151 events/s | ≥ 1,000,000 events/s | **not met** |
| client over QUIC, 64 concurrent single-event clients | `client_append_concurrent64` | 35,320 events/s | ≥ 50,000 events/s | **not met** |
|  | `client_append_shared64` | 52,000 events/s | ≥ 50,000 events/s | met |
| client over QUIC, read / catch-up | `client_read_stream` | 1,107,485 events/s | ≥ 1,000,000 events/s | met |
|  | `client_scan_all` | 1,109,992 events/s | ≥ 1,000,000 events/s | met |
|  | `subscribe_catchup` | 796,420 events/s | ≥ 1,000,000 events/s | **not met** |
| single-event append latency, 1 client | `client_append_batch1` | p50 400 µs, p99 1,900 µs | p50 ≤ 350 µs (fdatasync p50 200 + 150); p99 ≤ 2,000 µs | **not met** |
| append → live subscriber, 1 node | `subscribe_live_latency` | p99 1,483 µs (p50 502) | p99 ≤ 1,000 µs | **not met** |
| restart with 10 million events stored | `engine_reopen_10m` | 97.5 ms to serving, 98.1 ms to writable, 1,000,000 events | ≤ 2,000 ms to serving, 10,000,000 events | met (at 1,000,000 events, not 10,000,000) |
| versus PostgreSQL as an event store, same machine, same run | `client_append_batch100` | 1.77× (PostgreSQL 88,944 events/s) | ≥ 10× PostgreSQL's events/s | **not met** |
|  | `client_append_batch100_c16` | 4.24× (PostgreSQL 145,942 events/s) | ≥ 10× PostgreSQL's events/s | **not met** |";
        assert_eq!(
            part(&section, "### DESIGN.md's targets, one node"),
            expected
        );
    }

    #[test]
    fn postgres_table_pairs_each_workload_and_says_what_did_not_run() {
        let section = section(&fixture::info(), &fixture::results());
        let expected = "\
| workload | Quiver scenario | Quiver events/s | PostgreSQL events/s | Quiver / PostgreSQL |
|---|---|---|---|---|
| appends of 100 events, 1 connection | `client_append_batch100` | 157,351 | 88,944 | **1.77×** |
| appends of 100 events, 16 connections | `client_append_batch100_c16` | 618,151 | 145,942 | **4.24×** |
| single-event appends, 64 connections | `client_append_concurrent64` | 35,320 | 8,538 | **4.14×** |
| read one stream | `client_read_stream` | 1,107,485 | 564,126 | **1.96×** |
| read `$all` (PostgreSQL: the table) | `client_scan_all` | 1,109,992 | not run | — |";
        assert_eq!(part(&section, "### Quiver beside PostgreSQL"), expected);
    }

    #[test]
    fn the_run_facts_head_the_section() {
        let section = section(&fixture::info(), &fixture::results());
        let head = section.split("### ").next().unwrap();
        for row in [
            "**Note**: The machine was shared with a build.",
            "| command | `quiver-bench report --quick --note 'shared machine'` |",
            "| date | 2026-11-18 11:06:40 UTC, took 4 min 12 s |",
            "| commit | `3566882aabbc` |",
            "| machine | AMD EPYC 7B13, 2 cores, 24.0 GiB memory, Linux 6.18.5, release build |",
            "| bench directory | `/work/bench-data`: ext4 on `/dev/vda1`; fdatasync after a \
             300-byte overwrite: p50 200 µs (p10 120, p90 3,990; 1,000 syncs, before and after \
             the suites) |",
            "| load average (1 min) | 1.50 at the start, 2.25 at the end |",
            "| not run | the cluster suite (`--skip-cluster`) |",
            "[bench/latest.jsonl](bench/latest.jsonl)",
        ] {
            assert!(head.contains(row), "missing {row:?} in\n{head}");
        }
        assert!(section.starts_with("## Latest report\n\n"));
        assert!(section.contains(
            "![Durable appends: events/s against events per append](bench/throughput_vs_batch.svg)"
        ));
        assert!(section.ends_with(".\n") && !section.ends_with("\n\n"));
    }

    #[test]
    fn every_scenario_is_listed_in_run_order_failures_included() {
        let section = section(&fixture::info(), &fixture::results());
        let table = part(&section, "### Every scenario");
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), 23);
        assert_eq!(
            rows[0],
            "| `engine_append_batch1` | 5,180 | 193 / 310 / 1,200 | append call |"
        );
        assert_eq!(
            rows[6],
            "| `engine_append_concurrent64` | failed: opening a store in /b/x: Permission \
             denied \\| (os error 13) | | |"
        );
        assert_eq!(
            rows[9],
            "| `pg_append_batch100` | 88,944 | 855 / 4,420 / 14,467 | append call, as the \
             client sees it |"
        );
    }

    #[test]
    fn an_empty_run_says_not_run_everywhere() {
        let section = section(&fixture::info(), &Results::default());
        let targets = part(&section, "### DESIGN.md's targets, one node");
        let verdicts: Vec<&str> = targets
            .lines()
            .skip(2)
            .map(|row| row.trim_end_matches(" |").rsplit(" | ").next().unwrap())
            .collect();
        assert_eq!(verdicts.len(), SINGLE_NODE_TARGETS.len());
        assert!(verdicts.iter().all(|v| *v == "not run"), "{verdicts:?}");
        assert!(part(&section, "### Cluster").contains("did not run"));
        assert!(part(&section, "### Every scenario").ends_with("| (none ran) | | | |"));
        let postgres = part(&section, "### Quiver beside PostgreSQL");
        assert_eq!(postgres.matches("| not run | not run | — |").count(), 5);
    }

    #[test]
    fn the_cluster_tables_appear_once_a_cluster_scenario_ran() {
        let mut results = Results::from_json_lines(
            "{\"scenario\":\"etcd_put_c16\",\"events_per_sec\":8445}\n\
             {\"scenario\":\"cluster_append_batch100_c16\",\"events_per_sec\":74218}\n\
             {\"scenario\":\"cluster_failover\",\"events_per_sec\":796,\"failover_ms_max\":2059.2,\
             \"failover_ms_median\":2056.0,\"kills\":3}\n",
        )
        .unwrap();
        results.push_failure("etcd_put_concurrent64", "no etcd on PATH");
        let section = section(&fixture::info(), &results);
        let expected = "\
| DESIGN.md | scenario | measured | target | verdict |
|---|---|---|---|---|
| 3-node cluster on this machine, 16 connections, batches of 100 | `cluster_append_batch100_c16` | 74,218 events/s | ≥ 300,000 events/s | **not met** |
| leader killed → writes accepted again | `cluster_failover` | slowest 2,059 ms, median 2,056 ms, 3 kills | ≤ 3,000 ms | met |

| workload | Quiver scenario | Quiver events/s | etcd puts/s | Quiver / etcd |
|---|---|---|---|---|
| 16 connections (Quiver: appends of 100; etcd: 1,600 puts in flight) | `cluster_append_batch100_c16` | 74,218 | 8,445 | **8.79×** |
| 64 connections, one single-event write each in turn | `cluster_append_concurrent64` | not run | failed | — |";
        assert_eq!(part(&section, "### Cluster"), expected);
    }

    #[test]
    fn targets_are_met_at_their_bound_and_not_past_it() {
        let line = |fields: &str| -> Value {
            serde_json::from_str(&format!("{{\"scenario\":\"s\",{fields}}}")).unwrap()
        };
        let verdict = |check: Check, fields: &str, fsync: Option<f64>| {
            check.decide(Outcome::Ran(&line(fields)), fsync).verdict
        };
        let rate = Check::Rate { min: 400_000 };
        assert_eq!(
            verdict(rate, "\"events_per_sec\":400000", None),
            Verdict::Met
        );
        assert_eq!(
            verdict(rate, "\"events_per_sec\":399999", None),
            Verdict::NotMet
        );
        let p99 = Check::P99 { us_max: 1_000.0 };
        assert_eq!(verdict(p99, "\"p99_us\":1000.0", None), Verdict::Met);
        assert_eq!(verdict(p99, "\"p99_us\":1000.1", None), Verdict::NotMet);
        assert_eq!(
            verdict(p99, "\"p50_us\":10.0", None),
            Verdict::NotMet,
            "no p99"
        );
        let vs = Check::VsPostgres { min: 10.0 };
        assert_eq!(verdict(vs, "\"vs_postgres\":10.0", None), Verdict::Met);
        assert_eq!(verdict(vs, "\"vs_postgres\":9.99", None), Verdict::NotMet);
        assert_eq!(verdict(vs, "\"vs_postgres\":null", None), Verdict::NotRun);
        let single = Check::SingleAppend {
            over_fsync_us: 150.0,
            p99_us_max: 2_000.0,
        };
        let fast = "\"p50_us\":350.0,\"p99_us\":2000.0";
        assert_eq!(verdict(single, fast, Some(200.0)), Verdict::Met);
        assert_eq!(verdict(single, fast, Some(199.0)), Verdict::NotMet);
        let slow_tail = "\"p50_us\":300.0,\"p99_us\":2000.5";
        assert_eq!(verdict(single, slow_tail, Some(200.0)), Verdict::NotMet);
        // Without a measured fdatasync only the p99 is checked, and the row says so.
        let d = single.decide(Outcome::Ran(&line(fast)), None);
        assert_eq!(
            (d.verdict, d.caveat.as_deref()),
            (Verdict::Met, Some("p99 only: fdatasync was not measured"))
        );
        let reopen = Check::Reopen {
            ms_max: 2_000.0,
            events: 10_000_000,
        };
        let d = reopen.decide(
            Outcome::Ran(&line("\"reopen_ms\":2000.0,\"events\":10000000")),
            None,
        );
        assert_eq!((d.verdict, d.caveat), (Verdict::Met, None));
        assert_eq!(
            verdict(reopen, "\"reopen_ms\":2000.5,\"events\":10000000", None),
            Verdict::NotMet
        );
        let failover = Check::Failover { ms_max: 3_000.0 };
        assert_eq!(
            verdict(failover, "\"failover_ms_max\":3000.0", None),
            Verdict::Met
        );
        assert_eq!(
            verdict(failover, "\"failover_ms_max\":3618.4", None),
            Verdict::NotMet
        );
    }

    #[test]
    fn every_target_names_a_scenario_of_a_suite() {
        let known: Vec<&str> = [
            engine_suite::SCENARIOS,
            client_suite::SCENARIOS,
            cluster_suite::SCENARIOS,
        ]
        .concat();
        let named = SINGLE_NODE_TARGETS
            .iter()
            .chain(CLUSTER_TARGETS)
            .map(|t| t.scenario)
            .chain(ETCD_WORKLOADS.iter().flat_map(|(q, e, _)| [*q, *e]));
        for scenario in named {
            assert!(known.contains(&scenario), "{scenario} is in no suite");
        }
        for (quiver, _) in postgres_peer::COUNTERPARTS {
            assert!(
                POSTGRES_WORKLOADS.iter().any(|(q, _)| q == quiver),
                "{quiver} has no workload name"
            );
        }
    }

    const DOC: &str = "# Benchmarks\n\nIntro, kept: the `<!-- report:begin -->` and \
                       `<!-- report:end -->` markers.  \n\n```sh\n## not a heading\n\
                       <!-- report:begin -->\n```\n\n## Storage engine\n\n\
                       Hand-written | analysis.\r\n\n## Raft\n";

    #[test]
    fn missing_markers_are_inserted_once_after_the_intro() {
        let doc = replace_section(DOC, "## Latest report\n\nfigures\n").unwrap();
        // Markers named in prose or shown in a code block are not markers: the section
        // goes in after the intro, and the intro is untouched.
        assert_eq!(
            doc,
            "# Benchmarks\n\nIntro, kept: the `<!-- report:begin -->` and \
             `<!-- report:end -->` markers.  \n\n```sh\n## not a heading\n\
             <!-- report:begin -->\n```\n\n\
             <!-- report:begin -->\n## Latest report\n\nfigures\n<!-- report:end -->\n\n\
             ## Storage engine\n\nHand-written | analysis.\r\n\n## Raft\n"
        );
        // A document with no heading gets the section at its end.
        assert_eq!(
            replace_section("no heading", "s").unwrap(),
            "no heading\n<!-- report:begin -->\ns\n<!-- report:end -->\n"
        );
    }

    #[test]
    fn text_outside_the_markers_is_kept_byte_for_byte() {
        let doc = "before \u{2014} `<!-- report:end -->` \r\n<!-- report:begin -->  \n\
                   old\nold table\n<!-- report:end -->\r\nafter\n\n## Hand-written\n\ttab";
        let new = replace_section(doc, "new\n\n").unwrap();
        assert_eq!(
            new,
            "before \u{2014} `<!-- report:end -->` \r\n<!-- report:begin -->\nnew\n\
             <!-- report:end -->\r\nafter\n\n## Hand-written\n\ttab"
        );
        let begin = doc.find("<!-- report:begin -->  ").unwrap() + BEGIN_MARKER.len();
        assert_eq!(new[..begin], doc[..begin]);
        let tail = &doc[doc.rfind(END_MARKER).unwrap()..];
        assert!(new.ends_with(tail));
    }

    #[test]
    fn running_twice_gives_the_same_document() {
        let section = section(&fixture::info(), &fixture::results());
        let once = replace_section(DOC, &section).unwrap();
        let twice = replace_section(&once, &section).unwrap();
        assert_eq!(once, twice);
        assert_eq!(marker_lines(&twice, BEGIN_MARKER).len(), 1);
        assert_eq!(marker_lines(&twice, END_MARKER).len(), 1);
        // And the hand-written part after the section is untouched.
        assert!(twice.ends_with("## Storage engine\n\nHand-written | analysis.\r\n\n## Raft\n"));
    }

    #[test]
    fn a_document_with_broken_markers_is_refused() {
        for doc in [
            "a\n<!-- report:begin -->\nb `<!-- report:end -->`\n",
            "a\n<!-- report:end -->\nb\n",
            "<!-- report:end -->\n<!-- report:begin -->\n",
            "<!-- report:begin -->\n<!-- report:begin -->\n<!-- report:end -->\n",
        ] {
            assert!(replace_section(doc, "s").is_err(), "{doc:?}");
        }
    }

    #[test]
    fn dates_numbers_and_durations_read_right() {
        assert_eq!(utc_date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_date_time(4_107_542_399), "2100-02-28 23:59:59 UTC");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(micros(97.46), "97.5");
        assert_eq!(micros(7_470.6), "7,471");
        assert_eq!(micros(f64::NAN), "?");
        assert_eq!(minutes_seconds(Duration::from_secs(59)), "59 s");
        assert_eq!(minutes_seconds(Duration::from_secs(252)), "4 min 12 s");
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
