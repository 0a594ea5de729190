//! `quiver-bench report`: runs the suites in-process, one after the other, with a progress
//! bar on stderr (one tick per scenario), then writes the JSON lines, the plots and the
//! document. A failed scenario is reported and the others still run; the report says which
//! failed, and the command then exits with an error.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use quiver_engine::IoMode;

use super::machine::{fsync_samples, load_average, FsyncLatency, Machine};
use super::markdown::{section, RunInfo};
use super::markers::replace_section;
use super::plots::render_all;
use super::Results;
use crate::client_suite::{self, Suite as ClientSuite};
use crate::report::Report;
use crate::{cluster_suite, engine_suite};

/// The raw JSON lines of the last report, in the report's directory.
pub const JSON_LINES_FILE: &str = "latest.jsonl";

/// How the report runs and where it writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parent of the scenarios' scratch stores (on the disk to measure, not a tmpfs).
    pub data_dir: PathBuf,
    /// The suites' `--quick`.
    pub quick: bool,
    /// Whether to run PostgreSQL beside the client suite.
    pub peer: bool,
    /// Whether to leave the cluster suite out even if it could run.
    pub skip_cluster: bool,
    /// The document to rewrite between the markers; `None`: print the section on stdout.
    pub output_doc: Option<PathBuf>,
    /// Where `latest.jsonl` and the plots go.
    pub out_dir: PathBuf,
    /// A sentence for the top of the section.
    pub note: Option<String>,
    /// The commit measured.
    pub git_rev: Option<String>,
    /// A directory of the work tree measured, to ask git whether it has uncommitted changes.
    pub source_dir: PathBuf,
    /// The command line, as the report quotes it ([`command_line`]).
    pub command: String,
}

/// This process's command line, each argument quoted for a POSIX shell where it needs it.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| shell_word(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the report (see the module doc).
pub fn run(opts: Options) -> Result<()> {
    // Find out now, not after minutes of measuring, whether the results have somewhere to go.
    if let Some(doc) = &opts.output_doc {
        let text = std::fs::read_to_string(doc).with_context(|| {
            format!(
                "reading {} (run from the repository's root, or pass --output-doc PATH or \
                 --no-doc)",
                doc.display()
            )
        })?;
        replace_section(&text, "").with_context(|| format!("the markers of {}", doc.display()))?;
    }
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;

    let started = SystemTime::now();
    let began = Instant::now();
    let git_dirty = git_dirty(&opts.source_dir);
    let mut machine = Machine::probe(&opts.data_dir);
    let mut fsyncs = probe_fsync(&opts.data_dir);
    let (results, not_run) = run_suites(&opts);
    machine.load_end = load_average();
    fsyncs.extend(probe_fsync(&opts.data_dir));
    machine.fsync = FsyncLatency::from_samples(fsyncs);

    let jsonl = opts.out_dir.join(JSON_LINES_FILE);
    std::fs::write(&jsonl, results.to_json_lines())
        .with_context(|| format!("writing {}", jsonl.display()))?;
    render_all(&results, &opts.out_dir)?;
    let info = RunInfo {
        command: opts.command.clone(),
        started_unix_secs: started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        duration: began.elapsed(),
        git_rev: opts.git_rev.clone(),
        git_dirty,
        machine,
        data_dir: opts.data_dir.clone(),
        quick: opts.quick,
        note: opts.note.clone(),
        not_run,
        files_href: files_href(opts.output_doc.as_deref(), &opts.out_dir),
    };
    let section = section(&info, &results);
    match &opts.output_doc {
        Some(doc) => {
            let text = std::fs::read_to_string(doc)?;
            let rewritten = replace_section(&text, &section)?;
            std::fs::write(doc, rewritten).with_context(|| format!("writing {}", doc.display()))?;
            eprintln!(
                "quiver-bench: rewrote the report section of {}; plots and {JSON_LINES_FILE} in {}",
                doc.display(),
                opts.out_dir.display()
            );
        }
        None => print!("{section}"),
    }
    eprintln!(
        "quiver-bench: report done in {:.0} s",
        began.elapsed().as_secs_f64()
    );
    let failed = results.failures();
    ensure!(
        failed == 0,
        "{failed} scenario(s) failed: the report says which"
    );
    Ok(())
}

/// Runs the engine suite, the client suite (PostgreSQL first, unless told not to) and the
/// cluster suite (when the `quiver` binary is beside this one and not skipped); returns what
/// they measured and the parts left out, each with why.
fn run_suites(opts: &Options) -> (Results, Vec<String>) {
    let mut not_run = Vec::new();
    let cluster = if opts.skip_cluster {
        not_run.push("the cluster suite (`--skip-cluster`)".to_string());
        false
    } else if let Err(e) = cluster_suite::quiver_binary() {
        not_run.push(format!("the cluster suite: {e}"));
        false
    } else {
        true
    };
    if !opts.peer {
        not_run.push("PostgreSQL (`--no-peer`)".to_string());
    }
    let engine = engine_suite::SCENARIOS;
    let client = client_suite::with_peer(client_suite::SCENARIOS, opts.peer);
    let clustered: &[&str] = if cluster {
        cluster_suite::SCENARIOS
    } else {
        &[]
    };
    let progress = Progress::new(engine.len() + client.len() + clustered.len());
    let mut results = Results::default();

    let engine_opts = engine_suite::Options {
        data_dir: opts.data_dir.clone(),
        quick: opts.quick,
        git_rev: opts.git_rev.clone(),
        io_mode: IoMode::Auto,
        reopen_events: None,
    };
    for &scenario in engine {
        progress.run(&mut results, scenario, || {
            engine_suite::run(scenario, &engine_opts)
        });
    }

    let client_opts = client_suite::Options {
        remote: None,
        data_dir: opts.data_dir.clone(),
        quick: opts.quick,
        git_rev: opts.git_rev.clone(),
        stages: None,
    };
    match ClientSuite::new(client_opts) {
        Ok(mut suite) => {
            let planned = client.len();
            let (chosen, peer_failed) = progress.suspend(|| suite.start_peer_if_chosen(client));
            if let Some(e) = peer_failed {
                not_run.push(format!("PostgreSQL: {e:#}"));
                progress.drop_planned(planned - chosen.len());
            }
            for scenario in chosen {
                progress.run(&mut results, scenario, || suite.run(scenario));
            }
            if let Err(e) = suite.finish() {
                progress.say(&format!("stopping the client suite's servers: {e:#}"));
            }
        }
        Err(e) => progress.fail_all(&mut results, &client, &e),
    }

    if cluster {
        let cluster_opts = cluster_suite::Options {
            data_dir: opts.data_dir.clone(),
            quick: opts.quick,
            git_rev: opts.git_rev.clone(),
            kills: if opts.quick {
                cluster_suite::KILLS_QUICK
            } else {
                cluster_suite::KILLS_DEFAULT
            },
            client_timeout: None,
            etcd_c16_in_flight: cluster_suite::ETCD_C16_IN_FLIGHT,
        };
        match cluster_suite::Suite::new(cluster_opts) {
            Ok(mut suite) => {
                for &scenario in clustered {
                    progress.run(&mut results, scenario, || suite.run(scenario));
                }
            }
            Err(e) => progress.fail_all(&mut results, clustered, &e),
        }
    }
    progress.finish();
    (results, not_run)
}

/// The progress bar: one tick per scenario, the running scenario's name as its message. On a
/// terminal it redraws in place; otherwise (a log file, CI) it prints one line per scenario.
struct Progress {
    bar: ProgressBar,
    lines: bool,
}

impl Progress {
    fn new(scenarios: usize) -> Progress {
        let bar = ProgressBar::new(scenarios as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        let lines = !std::io::stderr().is_terminal();
        if !lines {
            bar.enable_steady_tick(Duration::from_millis(250));
        }
        Progress { bar, lines }
    }

    /// Runs one scenario under the bar and records its report or its failure.
    fn run(&self, results: &mut Results, scenario: &str, run: impl FnOnce() -> Result<Report>) {
        self.bar.set_message(scenario.to_string());
        if self.lines {
            let length = self.bar.length().unwrap_or(0);
            let at = self.bar.position() + 1;
            eprintln!("quiver-bench: [{at}/{length}] {scenario}");
        }
        match run() {
            Ok(report) => results.push(&report),
            Err(e) => {
                self.say(&format!("{scenario} failed: {e:#}"));
                results.push_failure(scenario, &format!("{e:#}"));
            }
        }
        self.bar.inc(1);
    }

    /// Records every one of `scenarios` as failed for the same reason (its suite could not
    /// start).
    fn fail_all(&self, results: &mut Results, scenarios: &[&str], error: &anyhow::Error) {
        self.say(&format!("the suite could not start: {error:#}"));
        for scenario in scenarios {
            results.push_failure(scenario, &format!("{error:#}"));
            self.bar.inc(1);
        }
    }

    /// `planned` fewer scenarios will run than the bar was made for.
    fn drop_planned(&self, planned: usize) {
        let length = self.bar.length().unwrap_or(0);
        self.bar.set_length(length.saturating_sub(planned as u64));
    }

    /// Prints a line on stderr without tearing the bar.
    fn say(&self, message: &str) {
        self.bar.suspend(|| eprintln!("quiver-bench: {message}"));
    }

    /// Runs `f` with the bar out of the way, for code that prints on stderr itself.
    fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        self.bar.suspend(f)
    }

    fn finish(&self) {
        self.bar.finish_with_message("done");
    }
}

/// `fdatasync` samples in the bench directory; none (and a line on stderr) if it cannot be
/// timed there.
fn probe_fsync(dir: &Path) -> Vec<Duration> {
    fsync_samples(dir).unwrap_or_else(|e| {
        eprintln!(
            "quiver-bench: could not time fdatasync in {}: {e:#}",
            dir.display()
        );
        Vec::new()
    })
}

/// Whether the git work tree holding `dir` has uncommitted changes to tracked files; `None`
/// if git is not there or `dir` is not in a work tree.
fn git_dirty(dir: &Path) -> Option<bool> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(!out.stdout.is_empty())
}

/// How the document links to the report's directory: relative to the document's own
/// directory when it is under it (`bench` for docs/BENCHMARKS.md and docs/bench), else the
/// directory as given.
fn files_href(doc: Option<&Path>, out_dir: &Path) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let relative = doc.and_then(|doc| {
        let doc_dir = absolute(doc).parent()?.to_path_buf();
        let rel = absolute(out_dir).strip_prefix(&doc_dir).ok()?.to_path_buf();
        Some(rel)
    });
    match relative {
        Some(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Some(rel) => rel.display().to_string(),
        None => out_dir.display().to_string(),
    }
}

/// `word` as a POSIX shell reads it back: bare when it holds only safe characters, else in
/// single quotes.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_linked_relative_to_the_document() {
        let doc = Path::new("docs/BENCHMARKS.md");
        assert_eq!(files_href(Some(doc), Path::new("docs/bench")), "bench");
        assert_eq!(files_href(Some(doc), Path::new("docs")), ".");
        assert_eq!(
            files_href(Some(doc), Path::new("/elsewhere/b")),
            "/elsewhere/b"
        );
        assert_eq!(files_href(None, Path::new("out")), "out");
    }

    #[test]
    fn command_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("--dir"), "--dir");
        assert_eq!(shell_word("/work/b-1"), "/work/b-1");
        assert_eq!(shell_word("shared with a build"), "'shared with a build'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
