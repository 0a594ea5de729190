//! DESIGN.md's targets ("How good") that a scenario measures, and how each is decided from
//! that scenario's JSON line: met, not met, not run, or failed. A target whose scenario did
//! not run or failed says so, so a reader never mistakes a missing figure for a met target.

use super::format::{grouped, micros, millis, shorten, times};
use super::{number, Outcome};

/// DESIGN.md's single-node targets that a scenario measures, in DESIGN.md's order; rows
/// with the same `design` text are one target measured several ways.
pub(super) const SINGLE_NODE_TARGETS: &[Target] = &[
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
    Target::reopen("engine_reopen_1m", 1_000_000),
    Target::reopen("engine_reopen_10m", 10_000_000),
    Target::reopen("engine_reopen_30m", 30_000_000),
    Target {
        design: "10 million streams of a few events each (one per aggregate)",
        scenario: "engine_many_streams_10m",
        check: Check::ManyStreams {
            bytes_max: 64.0,
            ms_max: 2_000.0,
            streams: 10_000_000,
        },
    },
    Target {
        design: "10 million streams of a few events each (one per aggregate)",
        scenario: "engine_many_streams_1m",
        check: Check::ManyStreams {
            bytes_max: 64.0,
            ms_max: 2_000.0,
            streams: 1_000_000,
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
pub(super) const CLUSTER_TARGETS: &[Target] = &[
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

/// One of DESIGN.md's targets and the scenario that measures it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    /// DESIGN.md's words for it.
    pub(super) design: &'static str,
    /// The scenario that measures it.
    pub(super) scenario: &'static str,
    check: Check,
}

impl Target {
    /// The target decided from `outcome` (its scenario's), `fsync_p50_us` being the bench
    /// directory's fdatasync median if measured.
    pub(super) fn decide(&self, outcome: Outcome<'_>, fsync_p50_us: Option<f64>) -> Decided {
        self.check.decide(outcome, fsync_p50_us)
    }

    /// "Flat in store size": the same 2 s bound at 1 M, 10 M and 30 M events, side by side.
    const fn reopen(scenario: &'static str, events: u64) -> Target {
        Target {
            design: "restart with 10 million events stored",
            scenario,
            check: Check::Reopen {
                ms_max: 2_000.0,
                events,
            },
        }
    }

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
    /// `resident_bytes_per_stream` ≤ `bytes_max` and `writable_ms` ≤ `ms_max`, for a store
    /// of `streams` streams.
    ManyStreams {
        bytes_max: f64,
        ms_max: f64,
        streams: u64,
    },
}

/// Whether a target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
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

    /// How the verdict reads in a table.
    pub(super) fn word(self) -> &'static str {
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
pub(super) struct Decided {
    /// The figure, e.g. "348,634 events/s".
    pub(super) measured: String,
    /// What DESIGN.md asks, e.g. "≥ 400,000 events/s".
    pub(super) target: String,
    pub(super) verdict: Verdict,
    /// Said after the verdict: why the verdict holds only in part.
    pub(super) caveat: Option<String>,
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
            Check::ManyStreams {
                bytes_max,
                ms_max,
                streams,
            } => format!(
                "≤ {bytes_max} B per stream, ≤ {} ms to writable, {} streams",
                millis(ms_max),
                grouped(streams)
            ),
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
            Check::ManyStreams {
                bytes_max,
                ms_max,
                streams,
            } => {
                let bytes = field("resident_bytes_per_stream").unwrap_or(f64::INFINITY);
                let writable = field("writable_ms").unwrap_or(f64::INFINITY);
                let stored = field("streams").unwrap_or(0.0) as u64;
                let each = field("events_per_stream").unwrap_or(1.0);
                let measured = format!(
                    "{bytes} B resident per stream, {} ms to writable, {} streams of {each} event{}",
                    millis(writable),
                    grouped(stored),
                    if each == 1.0 { "" } else { "s" }
                );
                let caveat = (stored < streams)
                    .then(|| format!("at {} streams, not {}", grouped(stored), grouped(streams)));
                let met = bytes <= bytes_max && writable <= ms_max;
                (measured, Verdict::of(met), caveat)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client_suite, cluster_suite, engine_suite};
    use serde_json::Value;

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
        let many = Check::ManyStreams {
            bytes_max: 64.0,
            ms_max: 2_000.0,
            streams: 10_000_000,
        };
        let ok = "\"resident_bytes_per_stream\":64.0,\"writable_ms\":603.0,\"streams\":10000000";
        assert_eq!(verdict(many, ok, None), Verdict::Met);
        let fat = "\"resident_bytes_per_stream\":65.0,\"writable_ms\":603.0,\"streams\":10000000";
        assert_eq!(verdict(many, fat, None), Verdict::NotMet);
        let slow = "\"resident_bytes_per_stream\":9.0,\"writable_ms\":2000.5,\"streams\":10000000";
        assert_eq!(verdict(many, slow, None), Verdict::NotMet);
        let small = "\"resident_bytes_per_stream\":9.0,\"writable_ms\":20.0,\"streams\":2000000";
        let d = many.decide(Outcome::Ran(&line(small)), None);
        assert_eq!(
            d.caveat.as_deref(),
            Some("at 2,000,000 streams, not 10,000,000")
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
        for target in SINGLE_NODE_TARGETS.iter().chain(CLUSTER_TARGETS) {
            let scenario = target.scenario;
            assert!(known.contains(&scenario), "{scenario} is in no suite");
        }
    }
}
