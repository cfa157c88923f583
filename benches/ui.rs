//! The UI's run graph: layout and SVG rendering of DAGs of 200, 2,000 and 10,000 tasks in
//! realistic shapes (wide layers fanning in, parallel chains, repeated diamonds), each beside
//! a baseline measured in the same run on the same graph: serialising its node and edge list
//! to JSON with serde_json, the least a page showing the run must do anyway. The summary table
//! at the end gives the median time of both, their ratio and the size of the SVG.
//!
//! `cargo bench --bench ui` (add `-- --quick` for a fast look); figures are in docs/ui.md.

#[allow(dead_code)]
#[path = "../tests/common/dags.rs"]
mod dags;

use criterion::{BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};
use weir::ui::graph::{GraphEdge, GraphNode, render_svg};
use weir::ui::layout::{Options, layout};

const SIZES: [usize; 3] = [200, 2_000, 10_000];

fn baseline(nodes: &[GraphNode], edges: &[GraphEdge]) -> String {
    let nodes: Vec<_> = nodes
        .iter()
        .map(|n| (&n.id, &n.label, &n.state, &n.details, n.finally, &n.href))
        .collect();
    let edges: Vec<_> = edges.iter().map(|e| (&e.from, &e.to)).collect();
    serde_json::to_string(&(nodes, edges)).expect("plain data serialises")
}

fn median(mut f: impl FnMut(), budget: Duration) -> Duration {
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || (start.elapsed() < budget && times.len() < 50) {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn criterion_runs(c: &mut Criterion) {
    for n in SIZES {
        let mut group = c.benchmark_group(format!("ui_graph_{n}"));
        if n >= 10_000 {
            group.sample_size(10);
        }
        for (shape, (nodes, edges)) in dags::shapes(n) {
            group.bench_with_input(BenchmarkId::new("render_svg", shape), &(), |b, _| {
                b.iter(|| render_svg(black_box(&nodes), black_box(&edges)))
            });
            group.bench_with_input(BenchmarkId::new("json_baseline", shape), &(), |b, _| {
                b.iter(|| baseline(black_box(&nodes), black_box(&edges)))
            });
        }
        group.finish();
    }
}

/// The summary table; under `cargo test --benches` (no `--bench` argument) only the smallest
/// size, as a quick check that it runs.
fn summary(sizes: &[usize]) {
    println!();
    println!(
        "{:<14} {:>6} {:>7} {:>8} {:>6} {:>11} {:>11} {:>9} {:>7} {:>10}",
        "shape", "tasks", "edges", "layers", "cross", "layout", "render_svg", "json", "ratio", "svg bytes"
    );
    for &n in sizes {
        for (shape, (nodes, edges)) in dags::shapes(n) {
            let budget = Duration::from_secs(2);
            let index: std::collections::HashMap<&str, usize> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.id.as_str(), i))
                .collect();
            let pairs: Vec<(usize, usize)> = edges
                .iter()
                .map(|e| (index[e.from.as_str()], index[e.to.as_str()]))
                .collect();
            let sizes = vec![
                weir::ui::layout::Size {
                    width: 160.0,
                    height: 52.0
                };
                nodes.len()
            ];
            let drawn = layout(&sizes, &pairs, &Options::default());
            let layout_time = median(
                || drop(black_box(layout(&sizes, &pairs, &Options::default()))),
                budget,
            );
            let svg = render_svg(&nodes, &edges);
            let render = median(|| drop(black_box(render_svg(&nodes, &edges))), budget);
            let json = median(|| drop(black_box(baseline(&nodes, &edges))), budget);
            println!(
                "{:<14} {:>6} {:>7} {:>8} {:>6} {:>9.2}ms {:>9.2}ms {:>7.2}ms {:>6.0}x {:>10}",
                shape,
                nodes.len(),
                edges.len(),
                drawn.layers,
                drawn.crossings,
                layout_time.as_secs_f64() * 1e3,
                render.as_secs_f64() * 1e3,
                json.as_secs_f64() * 1e3,
                render.as_secs_f64() / json.as_secs_f64(),
                svg.len()
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
        .configure_from_args();
    criterion_runs(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        summary(&SIZES);
    } else {
        summary(&SIZES[..1]);
    }
}
