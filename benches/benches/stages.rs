//! What a stage span costs: `tracing::trace_span!` created and dropped with no subscriber
//! (as in every run without `quiver-bench client --stages`), and with the stages layer
//! recording it (`--stages`). An append crosses about a dozen of them.
//!
//! Run with `cargo bench -p quiver-bench --bench stages`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use quiver_bench::stages::{Stages, StagesLayer};
use tracing_subscriber::layer::SubscriberExt as _;

fn spans(c: &mut Criterion) {
    c.bench_function("stage_span_no_subscriber", |b| {
        b.iter(|| drop(black_box(tracing::trace_span!("stage.bench.span"))))
    });
    let stages = Arc::new(Stages::default());
    let subscriber = tracing_subscriber::registry().with(StagesLayer::new(stages.clone()));
    tracing::subscriber::with_default(subscriber, || {
        c.bench_function("stage_span_recorded", |b| {
            b.iter(|| drop(black_box(tracing::trace_span!("stage.bench.span"))))
        });
    });
    black_box(stages.take());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = spans
}
criterion_main!(benches);
