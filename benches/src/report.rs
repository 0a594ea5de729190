//! The JSON line a scenario prints: throughput, latency percentiles per operation, and
//! whatever else the scenario wants to say.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

/// Longest latency a histogram holds, in nanoseconds (an hour; longer samples saturate).
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// An empty latency histogram: nanoseconds, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// One scenario's result, printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name, e.g. `engine_append_batch100`.
    pub scenario: String,
    /// Events handled per second of wall time.
    pub events_per_sec: u64,
    /// Median latency of one operation (see `latency_per`), µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Slowest operation, µs.
    pub max_us: f64,
    /// Latency samples taken.
    pub ops: u64,
    /// Events handled.
    pub events: u64,
    /// Wall time of the measured part, seconds.
    pub seconds: f64,
    /// Anything else the scenario reports; printed after the fields above, sorted by name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Report {
    /// A report of `events` handled in `elapsed`, with per-operation `latency` in ns.
    pub fn new(scenario: &str, events: u64, elapsed: Duration, latency: &Histogram<u64>) -> Report {
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        let seconds = elapsed.as_secs_f64();
        Report {
            scenario: scenario.to_string(),
            events_per_sec: (events as f64 / seconds.max(1e-9)).round() as u64,
            p50_us: us(latency.value_at_quantile(0.5)),
            p99_us: us(latency.value_at_quantile(0.99)),
            p999_us: us(latency.value_at_quantile(0.999)),
            max_us: us(latency.max()),
            ops: latency.len(),
            events,
            seconds: (seconds * 1000.0).round() / 1000.0,
            extra: Map::new(),
        }
    }

    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Report {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }
}

/// Milliseconds, rounded to µs, for fields such as `reopen_ms`.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Microseconds, rounded to 0.1 µs, for fields such as `first_read_us`.
pub fn micros(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000_000.0).round() / 10.0
}

/// The commit checked out in the git repository holding `start` (or a parent of it), read
/// from `.git` directly; `None` if there is none or it cannot be read. In a worktree, `.git`
/// is a file naming the worktree's git directory (`gitdir: …`), whose `commondir` holds the
/// branches.
pub fn git_rev(start: &Path) -> Option<String> {
    let dot_git = start
        .ancestors()
        .map(|d| d.join(".git"))
        .find(|g| g.exists())?;
    let git = if dot_git.is_dir() {
        dot_git
    } else {
        let pointer = std::fs::read_to_string(&dot_git).ok()?;
        relative_to(
            dot_git.parent()?,
            pointer.trim().strip_prefix("gitdir:")?.trim(),
        )
    };
    let common = match std::fs::read_to_string(git.join("commondir")) {
        Ok(dir) => relative_to(&git, dir.trim()),
        Err(_) => git.clone(),
    };
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return Some(head.to_string());
    };
    for dir in [&git, &common] {
        if let Ok(rev) = std::fs::read_to_string(dir.join(reference)) {
            return Some(rev.trim().to_string());
        }
    }
    // A ref that was packed lives in `packed-refs` as "<rev> <ref>".
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (rev, name) = line.split_once(' ')?;
        (name == reference).then(|| rev.to_string())
    })
}

/// `path` as written in a git file: absolute, or relative to `base`.
fn relative_to(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_the_promised_fields_in_order() {
        let mut h = latency_histogram();
        for ns in [1_000, 2_000, 3_000, 1_000_000] {
            h.record(ns).unwrap();
        }
        let r = Report::new("s", 400, Duration::from_secs(2), &h).with("io_mode", "Uring");
        let line = r.to_json_line();
        assert!(line.starts_with(r#"{"scenario":"s","events_per_sec":200,"p50_us":2.0,"#));
        // 3 significant digits: the slowest sample is reported within 0.1% of 1 ms.
        let parsed: Value = serde_json::from_str(&line).unwrap();
        let max_us = parsed["max_us"].as_f64().unwrap();
        assert!((1000.0..=1001.0).contains(&max_us), "{max_us}");
        assert!(line.ends_with(r#""io_mode":"Uring"}"#), "{line}");
    }

    #[test]
    fn git_rev_reads_a_worktree() {
        let root = tempfile::tempdir().unwrap();
        let common = root.path().join("main/.git");
        let wt_git = common.join("worktrees/wt");
        std::fs::create_dir_all(common.join("refs/heads")).unwrap();
        std::fs::create_dir_all(&wt_git).unwrap();
        std::fs::create_dir_all(root.path().join("wt/sub")).unwrap();
        std::fs::write(common.join("refs/heads/b"), "abc123\n").unwrap();
        std::fs::write(wt_git.join("HEAD"), "ref: refs/heads/b\n").unwrap();
        std::fs::write(wt_git.join("commondir"), "../..\n").unwrap();
        let pointer = format!("gitdir: {}\n", wt_git.display());
        std::fs::write(root.path().join("wt/.git"), pointer).unwrap();
        assert_eq!(
            git_rev(&root.path().join("wt/sub")).as_deref(),
            Some("abc123")
        );
    }
}
