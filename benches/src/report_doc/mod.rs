//! The report a person reads: `quiver-bench report` runs the standard suites (engine; client
//! with its PostgreSQL peer; cluster with etcd when the `quiver` binary is beside
//! `quiver-bench`) and turns their JSON lines into the generated part of
//! `docs/BENCHMARKS.md` and three SVG plots in `docs/bench/`, so that the numbers a reader
//! sees are the numbers a command printed, with the machine, date, commit and command beside
//! them.
//!
//! - `machine.rs` — what the numbers were measured on: CPU, cores, memory, kernel, the
//!   filesystem of the bench directory and its `fdatasync` latency, load average.
//! - `markdown.rs` — the generated section: run facts, DESIGN.md's targets with met / not
//!   met, Quiver beside PostgreSQL (and etcd), every scenario, the plots.
//! - `targets.rs` — DESIGN.md's targets that a scenario measures, and their verdicts.
//! - `markers.rs` — the rewrite of the part of a document between [`BEGIN_MARKER`] and
//!   [`END_MARKER`], leaving the rest byte for byte.
//! - `format.rs` — numbers, dates and table cells as the report writes them.
//! - `plots.rs` — the plots: throughput against events per append, latency percentiles
//!   against concurrent writers, Quiver beside PostgreSQL per workload.
//! - `run.rs` — the command: runs the suites in-process with a progress bar on stderr,
//!   saves the JSON lines (`latest.jsonl`), writes the plots and the document.
//!
//! Everything but `run.rs` is a pure function of [`Results`] (and the machine facts), so the
//! tests render fixed JSON lines and check the tables and plots exactly.

#[cfg(test)]
mod fixture;
mod format;
mod machine;
mod markdown;
mod markers;
mod plots;
mod run;
mod targets;

pub use machine::{FsyncLatency, Machine};
pub use markdown::{section, RunInfo};
pub use markers::{replace_section, BEGIN_MARKER, END_MARKER};
pub use plots::{render_all, Plot};
pub use run::{command_line, run, Options, JSON_LINES_FILE};

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::report::Report;

/// What one run measured: each scenario's JSON line, or why it failed, in run order.
#[derive(Debug, Clone, Default)]
pub struct Results {
    entries: Vec<Entry>,
}

/// One scenario of a run.
#[derive(Debug, Clone)]
enum Entry {
    /// The line as the suite printed it (field order kept), and parsed.
    Ran {
        line: String,
        value: Value,
    },
    Failed {
        scenario: String,
        error: String,
    },
}

/// What became of one scenario in a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome<'a> {
    /// It ran; its JSON line.
    Ran(&'a Value),
    /// It failed; the error, on one line.
    Failed(&'a str),
    /// It was not part of the run (skipped, or its suite was not run).
    NotRun,
}

impl Results {
    /// Results read from JSON lines as the suites print them (blank lines skipped).
    pub fn from_json_lines(text: &str) -> Result<Results> {
        let mut results = Results::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value =
                serde_json::from_str(line).with_context(|| format!("JSON line {}", i + 1))?;
            anyhow::ensure!(
                value.get("scenario").and_then(Value::as_str).is_some(),
                "JSON line {} has no scenario",
                i + 1
            );
            results.entries.push(Entry::Ran {
                line: line.trim().to_string(),
                value,
            });
        }
        Ok(results)
    }

    /// Records a scenario's report.
    pub fn push(&mut self, report: &Report) {
        let line = report.to_json_line();
        let value = serde_json::from_str(&line).expect("a report's line is JSON");
        self.entries.push(Entry::Ran { line, value });
    }

    /// Records a scenario that failed, and why (put on one line).
    pub fn push_failure(&mut self, scenario: &str, error: &str) {
        self.entries.push(Entry::Failed {
            scenario: scenario.to_string(),
            error: error.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }

    /// Every scenario in run order, with what became of it.
    pub fn outcomes(&self) -> impl Iterator<Item = (&str, Outcome<'_>)> {
        self.entries.iter().map(|e| match e {
            Entry::Ran { value, .. } => (scenario_of(value), Outcome::Ran(value)),
            Entry::Failed { scenario, error } => (scenario.as_str(), Outcome::Failed(error)),
        })
    }

    /// How many scenarios failed.
    pub fn failures(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e, Entry::Failed { .. }))
            .count()
    }

    /// What became of `scenario`: its last outcome in the run (a later run of the same
    /// scenario wins), or not run.
    pub fn get(&self, scenario: &str) -> Outcome<'_> {
        self.outcomes()
            .filter(|(s, _)| *s == scenario)
            .last()
            .map_or(Outcome::NotRun, |(_, o)| o)
    }

    /// A number field of `scenario`'s line, if it ran and the field is a number.
    pub fn number(&self, scenario: &str, field: &str) -> Option<f64> {
        match self.get(scenario) {
            Outcome::Ran(line) => number(line, field),
            _ => None,
        }
    }

    /// The JSON lines of the scenarios that ran, one per line, as saved in `latest.jsonl`.
    pub fn to_json_lines(&self) -> String {
        self.entries
            .iter()
            .filter_map(|e| match e {
                Entry::Ran { line, .. } => Some(format!("{line}\n")),
                Entry::Failed { .. } => None,
            })
            .collect()
    }
}

/// The `scenario` field of a JSON line.
fn scenario_of(line: &Value) -> &str {
    line.get("scenario").and_then(Value::as_str).unwrap_or("")
}

/// A number field of a JSON line; `None` if absent, `null` or not a number.
fn number(line: &Value, field: &str) -> Option<f64> {
    line.get(field).and_then(Value::as_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_run_of_a_scenario_wins_and_failures_keep_their_place() {
        let mut results = Results::from_json_lines(
            "{\"scenario\":\"a\",\"events_per_sec\":1}\n\n{\"scenario\":\"a\",\"events_per_sec\":2}\n",
        )
        .unwrap();
        results.push_failure("b", "no\n  server");
        assert_eq!(results.number("a", "events_per_sec"), Some(2.0));
        assert_eq!(results.get("b"), Outcome::Failed("no server"));
        assert_eq!(results.get("c"), Outcome::NotRun);
        assert_eq!(results.number("b", "events_per_sec"), None);
        let order: Vec<&str> = results.outcomes().map(|(s, _)| s).collect();
        assert_eq!(order, ["a", "a", "b"]);
        assert_eq!(results.failures(), 1);
        // Failures are not JSON lines: latest.jsonl holds what the suites printed, as printed.
        assert_eq!(
            results.to_json_lines(),
            "{\"scenario\":\"a\",\"events_per_sec\":1}\n{\"scenario\":\"a\",\"events_per_sec\":2}\n"
        );
    }

    #[test]
    fn a_line_without_a_scenario_is_refused() {
        let err = Results::from_json_lines("{\"events_per_sec\":1}").unwrap_err();
        assert!(err.to_string().contains("no scenario"), "{err}");
    }
}
