//! Run graphs of realistic shapes and any size, for the UI's graph benchmarks and browser
//! tests: wide layers fanning in, parallel chains, repeated diamonds. Deterministic (a small
//! xorshift generator with a fixed seed), with a mix of task states and details.

use weir::ui::graph::{GraphEdge, GraphNode};

const STATES: [&str; 8] = [
    "Succeeded",
    "Succeeded",
    "Succeeded",
    "Running",
    "Pending",
    "Failed",
    "Skipped",
    "Retrying",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as usize
    }
}

fn node(i: usize, rng: &mut Rng) -> GraphNode {
    let id = format!("task-{i:05}");
    let mut details = Vec::new();
    match rng.next() % 10 {
        0 => details.push("trigger: allDone".to_string()),
        1 => details.push("when: '{{ params.mode }}' == 'full'".to_string()),
        2 => details.push(format!("{}/8 succeeded, 1 failed", rng.next() % 8)),
        _ => {}
    }
    GraphNode {
        href: Some(format!("/runs/demo/tasks/{id}")),
        label: id.clone(),
        id,
        state: STATES[rng.next() % STATES.len()].to_string(),
        details,
        finally: false,
    }
}

fn edge(from: usize, to: usize) -> GraphEdge {
    GraphEdge {
        from: format!("task-{from:05}"),
        to: format!("task-{to:05}"),
    }
}

fn nodes(n: usize, rng: &mut Rng) -> Vec<GraphNode> {
    (0..n).map(|i| node(i, rng)).collect()
}

/// A run's graph: its tasks and their edges.
pub type Graph = (Vec<GraphNode>, Vec<GraphEdge>);

/// Layers `width` wide, each task depending on `deps` tasks of the layer before it (and now
/// and then on one two layers back), like a warehouse load: many tables, each built from a
/// few of the previous stage.
pub fn fan_in_layers(n: usize, width: usize, deps: usize) -> Graph {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let width = width.max(1);
    let nodes = nodes(n, &mut rng);
    let mut edges = Vec::new();
    for i in width..n {
        let layer_start = i / width * width;
        for _ in 0..deps {
            edges.push(edge(layer_start - width + rng.next() % width, i));
        }
        if layer_start >= 2 * width && rng.next().is_multiple_of(8) {
            edges.push(edge(layer_start - 2 * width + rng.next() % width, i));
        }
    }
    (nodes, edges)
}

/// `k` chains from one start task to one end task.
pub fn chains(n: usize, k: usize) -> Graph {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let n = n.max(k + 2);
    let nodes = nodes(n, &mut rng);
    let mut edges = Vec::new();
    let end = n - 1;
    let body = n - 2;
    for c in 0..k {
        let members: Vec<usize> = (1..=body).filter(|i| (i - 1) % k == c).collect();
        if let (Some(&first), Some(&last)) = (members.first(), members.last()) {
            edges.push(edge(0, first));
            for w in members.windows(2) {
                edges.push(edge(w[0], w[1]));
            }
            edges.push(edge(last, end));
        }
    }
    (nodes, edges)
}

/// Diamonds one after another: a task fanning out to `width` tasks that join again.
pub fn diamonds(n: usize, width: usize) -> Graph {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let nodes = nodes(n, &mut rng);
    let mut edges = Vec::new();
    let mut head = 0;
    let mut i = 1;
    while i < n {
        let branches: Vec<usize> = (i..(i + width).min(n)).collect();
        i += branches.len();
        for &b in &branches {
            edges.push(edge(head, b));
        }
        if i < n {
            for &b in &branches {
                edges.push(edge(b, i));
            }
            head = i;
            i += 1;
        }
    }
    (nodes, edges)
}

/// The shapes the benchmarks and the browser budget use, at `n` tasks.
pub fn shapes(n: usize) -> Vec<(&'static str, Graph)> {
    vec![
        ("fan_in_layers", fan_in_layers(n, (n / 10).clamp(4, 200), 3)),
        ("chains", chains(n, 12)),
        ("diamonds", diamonds(n, 8)),
    ]
}

/// A validated pipeline's tasks as graph nodes, the task `i` in state `state(i)`, with its
/// trigger rule when it is not the default, linked to `/tasks/NAME`.
pub fn from_pipeline(pipeline: &weir::engine::ValidPipeline, state: impl Fn(usize) -> String) -> Graph {
    let nodes = (0..pipeline.len())
        .map(|t| {
            let name = pipeline.name(t).to_string();
            let rule = pipeline.rule(t);
            let details = if rule == weir::api::TriggerRule::AllSucceeded {
                Vec::new()
            } else {
                vec![format!("trigger: {rule:?}")]
            };
            GraphNode {
                href: Some(format!("/tasks/{name}")),
                label: name.clone(),
                id: name,
                state: state(t),
                details,
                finally: pipeline.is_finally(t),
            }
        })
        .collect();
    let edges = (0..pipeline.len())
        .flat_map(|t| {
            pipeline.dag.upstream(t).iter().map(move |&u| GraphEdge {
                from: pipeline.name(u).to_string(),
                to: pipeline.name(t).to_string(),
            })
        })
        .collect();
    (nodes, edges)
}

/// The pipeline of an example file (`examples/NAME.yaml`), read and validated as
/// `weir validate` does.
pub fn example(name: &str) -> weir::engine::ValidPipeline {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.yaml"));
    let report = weir::manifest::check_file(&path, &weir::manifest::Schemas::new());
    assert!(report.ok(), "{}: {:?}", path.display(), report.problems);
    let selected = report.select(None).expect("one pipeline in the example");
    weir::engine::validate(selected.spec).expect("the example is valid")
}
