//! Stage timing for `quiver-bench client --stages` and `quiver-bench engine --stages`: where
//! an append's time goes.
//!
//! The client, the server and the engine open `tracing` spans at `TRACE` level named
//! `stage.<side>.<stage>` around the stages of a request (`stage.client.encode`,
//! `stage.server.durable`, `stage.engine.write_sync`, …; the list and what each covers is in
//! docs/BENCHMARKS.md, "Where the client loses to the engine"). A span measures from its
//! creation to its close (its last handle dropped), wherever that happens: a span may be
//! created on one thread and closed on another, and is never entered. With no subscriber
//! listening at `TRACE`, creating one costs a level check and nothing is recorded.
//!
//! [`StagesLayer`] is that subscriber's layer: it notes the creation time of every span
//! whose name starts with [`PREFIX`] and, when the span closes, records the elapsed time
//! into an HDR histogram per span name ([`Stages`]). The suite installs it only with
//! `--stages` ([`install`]), takes the histograms after each scenario ([`Stages::take`]) and
//! adds them to the scenario's JSON line as `stages` ([`Stages::to_json`]): per stage, the
//! count and p50 / p99 / mean in µs. Every other span and every event is refused at its
//! call site, so nothing else is logged while it is installed.
//!
//! Spans cost about a microsecond each when recorded (a registry slot, two clock reads and
//! a lock), a few per request: the end-to-end latency measured with `--stages` is a little
//! higher than without.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::report::latency_histogram;

/// Names of the spans recorded start with this.
pub const PREFIX: &str = "stage.";

/// The histograms, one per stage name, in nanoseconds.
#[derive(Debug, Default)]
pub struct Stages {
    by_name: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
}

impl Stages {
    /// Records one sample of `stage`.
    pub fn record(&self, stage: &'static str, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        by_name
            .entry(stage)
            .or_insert_with(latency_histogram)
            .saturating_record(ns);
    }

    /// The histograms recorded since the last call, emptied.
    pub fn take(&self) -> BTreeMap<&'static str, Histogram<u64>> {
        std::mem::take(&mut *self.by_name.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `taken` as the JSON of a report's `stages` field: per stage name, `count`, `p50_us`,
    /// `p99_us` and `mean_us` (rounded to 0.1 µs).
    pub fn to_json(taken: &BTreeMap<&'static str, Histogram<u64>>) -> Value {
        let us = |ns: f64| (ns / 100.0).round() / 10.0;
        let stages: Map<String, Value> = taken
            .iter()
            .map(|(name, h)| {
                let stats = json!({
                    "count": h.len(),
                    "p50_us": us(h.value_at_quantile(0.5) as f64),
                    "p99_us": us(h.value_at_quantile(0.99) as f64),
                    "mean_us": us(h.mean()),
                });
                (name.to_string(), stats)
            })
            .collect();
        Value::Object(stages)
    }
}

/// The whole process's CPU time and voluntary context switches so far (`getrusage`, all
/// threads: with the in-process server, client and server together).
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Voluntary context switches: a thread blocked (waited for a wake-up, I/O, a lock).
    pub voluntary_switches: u64,
    /// Involuntary ones: a thread was preempted.
    pub involuntary_switches: u64,
}

impl Usage {
    /// The process's usage now.
    pub fn now() -> Usage {
        // SAFETY: getrusage only writes the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a rusage; RUSAGE_SELF cannot fail.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Usage {
            cpu: time(ru.ru_utime) + time(ru.ru_stime),
            voluntary_switches: ru.ru_nvcsw as u64,
            involuntary_switches: ru.ru_nivcsw as u64,
        }
    }

    /// What happened between `before` and `self`, per operation, as JSON: `cpu_us_per_op`,
    /// `voluntary_switches_per_op`, `involuntary_switches_per_op`.
    pub fn per_op_since(&self, before: &Usage, ops: u64) -> Value {
        let ops = ops.max(1) as f64;
        let round1 = |x: f64| (x * 10.0).round() / 10.0;
        json!({
            "ops": ops as u64,
            "cpu_us_per_op": round1((self.cpu.saturating_sub(before.cpu)).as_secs_f64() * 1e6 / ops),
            "voluntary_switches_per_op":
                round1((self.voluntary_switches - before.voluntary_switches) as f64 / ops),
            "involuntary_switches_per_op":
                round1((self.involuntary_switches - before.involuntary_switches) as f64 / ops),
        })
    }
}

/// When a stage span was created; kept in the span's registry slot.
struct Started(Instant);

/// The layer that times `stage.*` spans into [`Stages`].
pub struct StagesLayer {
    stages: Arc<Stages>,
}

impl StagesLayer {
    /// A layer recording into `stages`.
    pub fn new(stages: Arc<Stages>) -> StagesLayer {
        StagesLayer { stages }
    }
}

/// Whether the layer records spans of this call site.
fn wanted(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.name().starts_with(PREFIX)
}

impl<S> Layer<S> for StagesLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if wanted(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        wanted(meta)
    }

    fn on_new_span(&self, _: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Started(Instant::now()));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let started = span.extensions().get::<Started>().map(|s| s.0);
        if let Some(started) = started {
            self.stages
                .record(span.metadata().name(), started.elapsed());
        }
    }
}

/// Installs a global subscriber that records stage spans, and returns what it records into.
/// Fails if a global subscriber is already set.
pub fn install() -> Result<Arc<Stages>> {
    let stages = Arc::new(Stages::default());
    let subscriber = tracing_subscriber::registry().with(StagesLayer::new(stages.clone()));
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| anyhow!("installing the stage-timing subscriber: {e}"))?;
    Ok(stages)
}

/// Runs one scenario; with `stages`, what the scenario's spans recorded is added to its
/// report as `stages`, and the process's CPU and context switches per operation as `usage`.
pub fn measured(
    stages: Option<&Stages>,
    run: impl FnOnce() -> Result<crate::report::Report>,
) -> Result<crate::report::Report> {
    let Some(stages) = stages else {
        return run();
    };
    stages.take();
    let before = Usage::now();
    let report = run()?;
    let usage = Usage::now().per_op_since(&before, report.ops);
    let taken = Stages::to_json(&stages.take());
    Ok(report.with("stages", taken).with("usage", usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscriber with the layer, for `with_default`.
    fn recording() -> (Arc<Stages>, impl Subscriber + Send + Sync) {
        let stages = Arc::new(Stages::default());
        let subscriber = tracing_subscriber::registry().with(StagesLayer::new(stages.clone()));
        (stages, subscriber)
    }

    #[test]
    fn stage_spans_are_timed_from_creation_to_close_per_name() {
        let (stages, subscriber) = recording();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                let _a = tracing::trace_span!("stage.test.a");
                std::thread::sleep(Duration::from_millis(2));
            }
            // Created here, closed on another thread: timed all the same.
            let b = tracing::trace_span!("stage.test.b");
            std::thread::sleep(Duration::from_millis(5));
            std::thread::spawn(move || drop(b)).join().unwrap();
            // Not a stage: not recorded.
            let _other = tracing::trace_span!("other");
        });
        let taken = stages.take();
        assert_eq!(
            taken.keys().copied().collect::<Vec<_>>(),
            ["stage.test.a", "stage.test.b"]
        );
        assert_eq!(taken["stage.test.a"].len(), 3);
        assert!(
            taken["stage.test.a"].min() >= 2_000_000,
            "slept 2 ms in each"
        );
        assert_eq!(taken["stage.test.b"].len(), 1);
        assert!(
            taken["stage.test.b"].min() >= 5_000_000,
            "slept 5 ms before it closed"
        );
        assert!(stages.take().is_empty(), "take empties the histograms");
    }

    #[test]
    fn the_json_gives_count_and_microseconds_per_stage() {
        let stages = Stages::default();
        for us in [100, 200, 300] {
            stages.record("stage.test.x", Duration::from_micros(us));
        }
        let json = Stages::to_json(&stages.take());
        let x = &json["stage.test.x"];
        assert_eq!(x["count"], 3);
        // Within the histogram's 3 significant digits.
        let near = |field: &str, want: f64| {
            let got = x[field].as_f64().unwrap();
            assert!((got - want).abs() <= 0.5, "{field}: {got}, not {want}");
        };
        near("p50_us", 200.0);
        near("p99_us", 300.0);
        near("mean_us", 200.0);
    }
}
