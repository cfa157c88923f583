//! Drawings of a pipeline's DAG: a layered text view for terminals, Graphviz DOT and Mermaid
//! for docs and pull requests. Pure functions of a validated pipeline.

use crate::api::TriggerRule;
use crate::engine::ValidPipeline;
use std::fmt::Write as _;

/// The step of each task: 1 for tasks without upstream tasks, else one more than the latest
/// upstream task. Finally tasks come after every main task. Tasks on the same step may run
/// at the same time.
pub fn steps(pipeline: &ValidPipeline) -> Vec<usize> {
    let mut step = vec![0usize; pipeline.len()];
    let order = pipeline.dag.topological_order();
    let mut last_main = 0;
    for &t in order.iter().filter(|&&t| !pipeline.is_finally(t)) {
        step[t] = 1 + pipeline
            .dag
            .upstream(t)
            .iter()
            .map(|&u| step[u])
            .max()
            .unwrap_or(0);
        last_main = last_main.max(step[t]);
    }
    for &t in order.iter().filter(|&&t| pipeline.is_finally(t)) {
        step[t] = 1 + pipeline
            .dag
            .upstream(t)
            .iter()
            .map(|&u| step[u])
            .max()
            .unwrap_or(last_main);
    }
    step
}

/// Tasks grouped by step, each group in the order the pipeline lists them.
pub fn layers(pipeline: &ValidPipeline) -> Vec<Vec<usize>> {
    let step = steps(pipeline);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); step.iter().copied().max().unwrap_or(0)];
    for (t, &s) in step.iter().enumerate() {
        layers[s - 1].push(t);
    }
    layers
}

fn rule_of(pipeline: &ValidPipeline, task: usize) -> Option<TriggerRule> {
    pipeline
        .task(task)
        .trigger_rule
        .filter(|r| *r != TriggerRule::AllSucceeded)
}

/// Most upstream names listed on one line of the text view.
const MAX_LISTED: usize = 8;

/// A layered listing: one line per task, with its step and the tasks it waits for.
///
/// ```text
/// Pipeline diamond: 4 tasks in 3 steps
///
///   1  start
///   2  left    <- start
///      right   <- start
///   3  join    <- left, right
/// ```
pub fn text(name: &str, pipeline: &ValidPipeline) -> String {
    let layers = layers(pipeline);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Pipeline {name}: {} task{} in {} step{}",
        pipeline.len(),
        if pipeline.len() == 1 { "" } else { "s" },
        layers.len(),
        if layers.len() == 1 { "" } else { "s" }
    );
    out.push('\n');
    let width = (0..pipeline.len())
        .map(|t| pipeline.name(t).len())
        .max()
        .unwrap_or(0)
        .min(40);
    let step_width = layers.len().to_string().len();
    let mut in_finally = false;
    for (i, layer) in layers.iter().enumerate() {
        for (j, &t) in layer.iter().enumerate() {
            if pipeline.is_finally(t) && !in_finally {
                in_finally = true;
                let _ = writeln!(
                    out,
                    "  {:step_width$}  finally: after every task above, whatever the outcome",
                    ""
                );
            }
            let step = if j == 0 {
                (i + 1).to_string()
            } else {
                String::new()
            };
            let mut line = format!("  {step:>step_width$}  {:width$}", pipeline.name(t));
            let upstream = pipeline.dag.upstream(t);
            if !upstream.is_empty() {
                let names: Vec<&str> = upstream
                    .iter()
                    .take(MAX_LISTED)
                    .map(|&u| pipeline.name(u))
                    .collect();
                let more = upstream.len().saturating_sub(MAX_LISTED);
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                let _ = write!(line, "  <- {}{more}", names.join(", "));
            }
            if let Some(rule) = rule_of(pipeline, t) {
                let _ = write!(line, "  [{rule:?}]");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

fn dot_id(text: &str) -> String {
    format!(
        "\"{}\"",
        text.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

/// A Graphviz digraph (`weir graph FILE --format dot | dot -Tsvg > dag.svg`). Finally tasks
/// sit in a dashed cluster, reached by dashed edges from the last main tasks.
pub fn dot(name: &str, pipeline: &ValidPipeline) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_id(name));
    out.push_str("  rankdir=LR;\n");
    out.push_str("  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    let node = |t: usize| {
        let label = match rule_of(pipeline, t) {
            Some(rule) => format!(
                " [label={}]",
                dot_id(&format!("{}\n[{rule:?}]", pipeline.name(t)))
            ),
            None => String::new(),
        };
        format!("{}{label};", dot_id(pipeline.name(t)))
    };
    for t in 0..pipeline.main_count {
        let _ = writeln!(out, "  {}", node(t));
    }
    if pipeline.len() > pipeline.main_count {
        out.push_str("  subgraph cluster_finally {\n    label=\"finally\";\n    style=dashed;\n");
        for t in pipeline.main_count..pipeline.len() {
            let _ = writeln!(out, "    {}", node(t));
        }
        out.push_str("  }\n");
    }
    for t in 0..pipeline.len() {
        for &u in pipeline.dag.upstream(t) {
            let _ = writeln!(
                out,
                "  {} -> {};",
                dot_id(pipeline.name(u)),
                dot_id(pipeline.name(t))
            );
        }
    }
    for (leaf, root) in finally_edges(pipeline) {
        let _ = writeln!(
            out,
            "  {} -> {} [style=dashed];",
            dot_id(pipeline.name(leaf)),
            dot_id(pipeline.name(root))
        );
    }
    out.push_str("}\n");
    out
}

/// Main tasks nothing depends on, to finally tasks that depend on nothing: the order the run
/// follows between the two sections.
fn finally_edges(pipeline: &ValidPipeline) -> Vec<(usize, usize)> {
    let leaves: Vec<usize> = (0..pipeline.main_count)
        .filter(|&t| pipeline.dag.downstream(t).is_empty())
        .collect();
    let roots = (pipeline.main_count..pipeline.len()).filter(|&t| pipeline.dag.upstream(t).is_empty());
    roots.flat_map(|r| leaves.iter().map(move |&l| (l, r))).collect()
}

fn mermaid_label(text: &str) -> String {
    // Quotes end a Mermaid label; `#quot;` is its escape for them.
    format!("\"{}\"", text.replace('"', "#quot;"))
}

/// A Mermaid flowchart (GitHub renders it in Markdown). Nodes get short ids (`t0`, `t1`, ...)
/// because task names such as `end` are Mermaid keywords.
pub fn mermaid(name: &str, pipeline: &ValidPipeline) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "---\ntitle: {}\n---", mermaid_label(name));
    out.push_str("flowchart LR\n");
    let node = |t: usize| {
        let label = match rule_of(pipeline, t) {
            Some(rule) => format!("{} ({rule:?})", pipeline.name(t)),
            None => pipeline.name(t).to_string(),
        };
        format!("t{t}[{}]", mermaid_label(&label))
    };
    for t in 0..pipeline.main_count {
        let _ = writeln!(out, "  {}", node(t));
    }
    if pipeline.len() > pipeline.main_count {
        out.push_str("  subgraph finally [\"finally\"]\n");
        for t in pipeline.main_count..pipeline.len() {
            let _ = writeln!(out, "    {}", node(t));
        }
        out.push_str("  end\n");
    }
    for t in 0..pipeline.len() {
        for &u in pipeline.dag.upstream(t) {
            let _ = writeln!(out, "  t{u} --> t{t}");
        }
    }
    for (leaf, root) in finally_edges(pipeline) {
        let _ = writeln!(out, "  t{leaf} -.-> t{root}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixture::pipeline;
    use crate::engine::validate;

    fn diamond() -> ValidPipeline {
        let spec = pipeline()
            .task("start")
            .task("left")
            .after(["start"])
            .task("right")
            .after(["start"])
            .task("join")
            .after(["left", "right"])
            .rule(TriggerRule::AllDone)
            .finally("report")
            .finally("cleanup")
            .after(["report"])
            .build();
        validate(&spec).unwrap()
    }

    #[test]
    fn steps_follow_the_longest_path_and_finally_comes_last() {
        let p = diamond();
        assert_eq!(steps(&p), vec![1, 2, 2, 3, 4, 5]);
        assert_eq!(layers(&p), vec![vec![0], vec![1, 2], vec![3], vec![4], vec![5]]);
    }

    #[test]
    fn text_lists_steps_and_upstream_tasks() {
        assert_eq!(
            text("diamond", &diamond()),
            "Pipeline diamond: 6 tasks in 5 steps

  1  start
  2  left     <- start
     right    <- start
  3  join     <- left, right  [AllDone]
     finally: after every task above, whatever the outcome
  4  report
  5  cleanup  <- report
"
        );
    }

    #[test]
    fn dot_and_mermaid_link_the_last_tasks_to_finally() {
        let p = diamond();
        let d = dot("diamond", &p);
        assert!(d.contains("\"join\" -> \"report\" [style=dashed];"), "{d}");
        assert!(d.contains("\"join\" [label=\"join\\n[AllDone]\"];"), "{d}");
        let m = mermaid("diamond", &p);
        assert!(m.contains("  t3 -.-> t4\n"), "{m}");
        assert!(!m.contains("t3 -.-> t5"), "{m}");
    }
}
