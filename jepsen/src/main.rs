//! The `quiver-jepsen` command. Today one subcommand, `check HISTORY.jsonl`: prints the
//! checker's report as JSON and exits 1 when the history shows an anomaly (or is malformed),
//! 2 when it cannot be read. Running clusters under faults comes later as another subcommand.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver_jepsen::{check, History};

#[derive(Parser)]
#[command(name = "quiver-jepsen", about = "Quiver's consistency suite")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a list-append history (JSON lines) and print the report as JSON.
    Check {
        /// The history file, one event per line.
        history: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
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
