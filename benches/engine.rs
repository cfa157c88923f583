//! How validation and planning scale: both must stay linear in tasks + edges, since the
//! operator plans a run on every change of any of its TaskRuns.
//!
//! `cargo bench --bench engine -- --quick` for a fast look. Each benchmark reports its
//! throughput in graph elements (tasks + edges) per second: flat across sizes means linear.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;
use weir::api::{self, PipelineSpec, TaskPhase};
use weir::engine::resolve::RunContext;
use weir::engine::{Child, ObservedTask, RunInput, StepInput, ValidPipeline, plan_run, step_run, validate};

// The engine's test fixtures are compiled only for tests; the benchmark takes the same file
// (its `crate::api` paths resolve through the `api` import above).
#[allow(dead_code)]
#[path = "../src/engine/fixture.rs"]
mod fixture;

const SIZES: [usize; 3] = [100, 1_000, 10_000];

fn shapes(n: usize) -> [(&'static str, PipelineSpec); 3] {
    [
        ("chain", fixture::chain(n)),
        ("fan_out", fixture::fan_out(n)),
        ("random", fixture::random(n, 3, 42)),
    ]
}

fn elements(spec: &PipelineSpec) -> u64 {
    let edges: usize = spec.tasks.iter().map(|t| t.depends_on.len()).sum();
    (spec.tasks.len() + edges) as u64
}

/// A run half way through: the first half of the tasks (in dependency order) succeeded,
/// and whatever that lets start is running.
fn half_done(pipeline: &ValidPipeline, started_at: Timestamp) -> Vec<Option<ObservedTask>> {
    let mut observed = vec![None; pipeline.len()];
    let order = pipeline.dag.topological_order();
    for &t in &order[..order.len() / 2] {
        observed[t] = Some(ObservedTask {
            phase: TaskPhase::Succeeded,
            cancel_requested: false,
        });
    }
    let plan = plan_run(&input(pipeline, &observed, started_at));
    for t in plan.start {
        observed[t] = Some(ObservedTask {
            phase: TaskPhase::Running,
            cancel_requested: false,
        });
    }
    observed
}

fn input<'a>(
    pipeline: &'a ValidPipeline,
    observed: &'a [Option<ObservedTask>],
    started_at: Timestamp,
) -> RunInput<'a> {
    RunInput {
        pipeline,
        observed,
        cancel_requested: false,
        started_at,
        timeout: Some(Duration::from_secs(3600)),
        now: started_at,
        instances: &[],
        prepare: &weir::engine::always_run,
    }
}

fn bench_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    for n in SIZES {
        for (shape, spec) in shapes(n) {
            group.throughput(Throughput::Elements(elements(&spec)));
            group.bench_with_input(BenchmarkId::new(shape, n), &spec, |b, spec| {
                b.iter(|| validate(black_box(spec)).unwrap())
            });
        }
    }
    group.finish();
}

/// A chain whose every task reads an output of the first: each reference is checked to come
/// from upstream, which must not cost a graph search per reference.
fn reading_an_early_output(n: usize) -> PipelineSpec {
    let mut spec = fixture::chain(n);
    spec.tasks[0].outputs =
        vec![serde_json::from_value(serde_json::json!({ "name": "rows" })).expect("an output spec")];
    for task in spec.tasks.iter_mut().skip(1) {
        task.args = vec!["--rows={{ tasks.t0.outputs.rows }}".into()];
    }
    spec
}

fn bench_validate_outputs(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_outputs");
    for n in SIZES {
        let spec = reading_an_early_output(n);
        group.throughput(Throughput::Elements(elements(&spec)));
        group.bench_with_input(BenchmarkId::new("chain", n), &spec, |b, spec| {
            b.iter(|| validate(black_box(spec)).unwrap())
        });
    }
    group.finish();
}

fn bench_plan_run(c: &mut Criterion) {
    let started_at: Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
    let mut group = c.benchmark_group("plan_run");
    for n in SIZES {
        for (shape, spec) in shapes(n) {
            let pipeline = validate(&spec).unwrap();
            let observed = half_done(&pipeline, started_at);
            group.throughput(Throughput::Elements(elements(&spec)));
            group.bench_with_input(BenchmarkId::new(shape, n), &observed, |b, observed| {
                b.iter(|| plan_run(black_box(&input(&pipeline, observed, started_at))))
            });
        }
    }
    group.finish();
}

/// The run step both drivers take, over the same half-done runs as `plan_run`: planning
/// plus the resolution of what starts and the status summary. Read beside `plan_run`.
fn bench_step_run(c: &mut Criterion) {
    let started_at: Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
    let context = RunContext {
        name: "bench-1".into(),
        ..Default::default()
    };
    let none = BTreeMap::new();
    let mut group = c.benchmark_group("step_run");
    for n in SIZES {
        for (shape, spec) in shapes(n) {
            let pipeline = validate(&spec).unwrap();
            let observed = half_done(&pipeline, started_at);
            let children: Vec<Child<'_>> = observed
                .iter()
                .enumerate()
                .filter_map(|(t, o)| {
                    o.map(|o| Child {
                        name: "",
                        task: pipeline.name(t),
                        instance: None,
                        phase: o.phase,
                        cancel_requested: false,
                        outputs: &none,
                        attempts: Some(1),
                        message: None,
                        rerun: None,
                        held: false,
                    })
                })
                .collect();
            group.throughput(Throughput::Elements(elements(&spec)));
            group.bench_with_input(BenchmarkId::new(shape, n), &children, |b, children| {
                b.iter(|| {
                    step_run(black_box(&StepInput {
                        pipeline: &pipeline,
                        context: &context,
                        children,
                        cancel_requested: false,
                        started_at,
                        timeout: Some(Duration::from_secs(3600)),
                        now: started_at,
                        refused: &[],
                    }))
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench_validate, bench_validate_outputs, bench_plan_run, bench_step_run
}
criterion_main!(benches);
