//! The run step both drivers take (`step_run`): what it starts, with which specs, how it
//! handles tasks that cannot be resolved, and the summary it builds. Children are plain
//! values here, as a driver would observe them.

use super::support::{at, t0, valid};
use crate::api::{ForEach, OutputSpec, ParamSpec, ParamType, PipelineSpec, RunPhase, TaskPhase};
use crate::engine::fixture::pipeline;
use crate::engine::resolve::{MAX_RESOLVED_BYTES, RunContext, RunIdentity};
use crate::engine::step::{MAX_SUMMARY, child_name};
use crate::engine::{Child, RunOutcome, RunStep, StepInput, ValidPipeline, step_run};
use serde_json::json;
use std::collections::BTreeMap;

/// A child as a driver sees it, owned.
#[derive(Clone, Debug)]
struct Kid {
    name: String,
    task: String,
    instance: Option<u32>,
    phase: TaskPhase,
    cancel_requested: bool,
    outputs: BTreeMap<String, String>,
}

/// A run driven by hand: children created from what each step starts, phases set by name.
struct World {
    pipeline: ValidPipeline,
    context: RunContext,
    kids: Vec<Kid>,
    cancel_requested: bool,
}

impl World {
    fn new(spec: PipelineSpec, given: serde_json::Value) -> World {
        let pipeline = valid(&spec);
        let given: BTreeMap<String, serde_json::Value> = serde_json::from_value(given).unwrap();
        let identity = RunIdentity {
            name: "etl-1".into(),
            namespace: "data".into(),
            uid: "u-1".into(),
            pipeline: "etl".into(),
        };
        let context = RunContext::new(identity, &pipeline.spec, None, &given).unwrap();
        World {
            pipeline,
            context,
            kids: Vec::new(),
            cancel_requested: false,
        }
    }

    /// The children as a driver would observe them.
    fn children(&self) -> Vec<Child<'_>> {
        self.kids
            .iter()
            .map(|k| Child {
                name: &k.name,
                task: &k.task,
                instance: k.instance,
                phase: k.phase,
                cancel_requested: k.cancel_requested,
                outputs: &k.outputs,
                attempts: Some(1),
                message: None,
                rerun: None,
                held: false,
            })
            .collect()
    }

    fn step(&self) -> RunStep {
        self.step_over(&self.children(), at(1))
    }

    fn step_over(&self, children: &[Child<'_>], now: jiff::Timestamp) -> RunStep {
        step_run(&StepInput {
            pipeline: &self.pipeline,
            context: &self.context,
            children,
            cancel_requested: self.cancel_requested,
            started_at: t0(),
            timeout: None,
            now,
            refused: &[],
        })
    }

    /// Takes a step and creates the children it starts, as a driver would.
    fn advance(&mut self) -> RunStep {
        let step = self.step();
        for s in &step.start {
            self.kids.push(Kid {
                name: s.name.clone(),
                task: s.spec.task_name.clone(),
                instance: s.instance,
                phase: TaskPhase::Pending,
                cancel_requested: false,
                outputs: BTreeMap::new(),
            });
        }
        for &c in &step.cancel {
            self.kids[c].cancel_requested = true;
        }
        step
    }

    fn finish(&mut self, task: &str, instance: Option<u32>, phase: TaskPhase, outputs: &[(&str, &str)]) {
        let kid = self
            .kids
            .iter_mut()
            .find(|k| k.task == task && k.instance == instance)
            .unwrap_or_else(|| panic!("no child {task} {instance:?}"));
        kid.phase = phase;
        kid.outputs = outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    fn state(&self, step: &RunStep, task: &str) -> TaskPhase {
        step.states[self.pipeline.index[task]]
    }

    fn note(&self, step: &RunStep, task: &str) -> Option<String> {
        let t = self.pipeline.index[task];
        step.notes.iter().find(|(n, _)| *n == t).map(|(_, m)| m.clone())
    }
}

fn list_param(spec: &mut PipelineSpec, name: &str) {
    spec.params.push(ParamSpec {
        name: name.into(),
        type_: ParamType::List,
        ..Default::default()
    });
}

fn for_each(spec: &mut PipelineSpec, task: &str, items: &str) {
    let t = spec.tasks.iter_mut().find(|t| t.name == task).unwrap();
    t.for_each = Some(ForEach {
        items: Some(json!(items)),
        ..Default::default()
    });
}

/// A fan-out over `{{ params.items }}` whose args repeat the item: an item of `big` bytes
/// makes a spec of about `big * repeats` bytes.
fn fan_out_repeating_item(repeats: usize) -> PipelineSpec {
    let mut spec = pipeline().task("prep").task("shard").after(["prep"]).build();
    list_param(&mut spec, "items");
    for_each(&mut spec, "shard", "{{ params.items }}");
    let shard = spec.tasks.iter_mut().find(|t| t.name == "shard").unwrap();
    shard.args = vec!["{{ item }}".to_string(); repeats];
    spec
}

#[test]
fn starts_carry_resolved_specs_and_deterministic_names() {
    let mut spec = pipeline().task("extract").task("load").after(["extract"]).build();
    spec.tasks[0].outputs = vec![OutputSpec {
        name: "rows".into(),
        description: None,
    }];
    spec.tasks[1].args = vec![
        "--rows={{ tasks.extract.outputs.rows }}".into(),
        "{{ run.name }}".into(),
    ];
    let mut world = World::new(spec, json!({}));
    let first = world.advance();
    assert_eq!(first.start.len(), 1);
    assert_eq!(first.start[0].name, child_name("etl-1", "extract", None));
    assert_eq!(first.phase(&[]), RunPhase::Running);
    assert_eq!(world.state(&first, "extract"), TaskPhase::Running);
    assert!(
        world.step().start.is_empty(),
        "a started task is never started twice"
    );

    world.finish("extract", None, TaskPhase::Succeeded, &[("rows", "42")]);
    let second = world.advance();
    assert_eq!(second.start.len(), 1);
    assert_eq!(second.start[0].spec.args, vec!["--rows=42", "etl-1"]);
    assert_eq!(second.summary.progress, "1/2");

    world.finish("load", None, TaskPhase::Succeeded, &[]);
    let last = world.advance();
    assert_eq!(last.outcome, Some(RunOutcome::Succeeded));
    assert_eq!(last.summary.counts.succeeded, 2);
}

/// The operator once fell back to the unrendered spec when one instance of a fan-out could
/// not be resolved, created a TaskRun without an instance index and hung; now the task
/// fails with the reason before any instance starts.
#[test]
fn a_fan_out_with_one_instance_too_large_fails_before_any_instance_starts() {
    let spec = fan_out_repeating_item(200);
    let big = "x".repeat(MAX_RESOLVED_BYTES / 100);
    let mut world = World::new(spec, json!({ "items": ["small", "tiny", big] }));
    world.advance();
    world.finish("prep", None, TaskPhase::Succeeded, &[]);
    let step = world.advance();
    assert!(
        step.start.is_empty(),
        "nothing of the fan-out starts: {:?}",
        step.start
    );
    assert_eq!(world.state(&step, "shard"), TaskPhase::Failed);
    let note = world.note(&step, "shard").expect("a reason");
    assert!(
        note.contains("forEach instance 2") && note.contains("resolved spec"),
        "{note}"
    );
    assert!(matches!(
        step.outcome,
        Some(RunOutcome::Failed {
            reason: "TaskFailed",
            ..
        })
    ));
    let shown = step.summary.tasks.iter().find(|t| t.name == "shard").unwrap();
    assert!(shown.message.as_deref().unwrap().contains("forEach instance 2"));
}

#[test]
fn a_single_task_that_cannot_be_rendered_fails_with_the_reason() {
    let mut spec = pipeline().task("check").task("report").after(["check"]).build();
    spec.tasks[0].outputs = vec![OutputSpec {
        name: "status".into(),
        description: None,
    }];
    spec.tasks[1].args = vec!["{{ tasks.check.outputs.status }}".into()];
    let mut world = World::new(spec, json!({}));
    world.advance();
    // Succeeded, but without the output it declared (a driver would have failed it; this
    // checks the step does not fall back to the unrendered template).
    world.finish("check", None, TaskPhase::Succeeded, &[]);
    let step = world.advance();
    assert!(step.start.is_empty());
    assert_eq!(world.state(&step, "report"), TaskPhase::Failed);
    let note = world.note(&step, "report").unwrap();
    assert!(note.contains(r#"task "check" has no output "status""#), "{note}");
}

#[test]
fn fan_out_instances_run_and_fan_in_reads_every_output() {
    let mut spec = fan_out_repeating_item(1);
    spec.tasks[1].outputs = vec![OutputSpec {
        name: "n".into(),
        description: None,
    }];
    spec.tasks
        .push(pipeline().task("join").after(["shard"]).build().tasks.remove(0));
    spec.tasks[2].args = vec!["{{ tasks.shard.outputs.n }}".into()];
    let mut world = World::new(spec, json!({ "items": ["a", "b", "c"] }));
    world.advance();
    world.finish("prep", None, TaskPhase::Succeeded, &[]);
    let step = world.advance();
    let started: Vec<(Option<u32>, Vec<String>)> = step
        .start
        .iter()
        .map(|s| (s.instance, s.spec.args.clone()))
        .collect();
    assert_eq!(
        started,
        vec![
            (Some(0), vec!["a".to_string()]),
            (Some(1), vec!["b".to_string()]),
            (Some(2), vec!["c".to_string()]),
        ]
    );
    assert_eq!(step.start[2].name, child_name("etl-1", "shard", Some(2)));
    for (k, n) in [(0, "1"), (1, "2"), (2, "3")] {
        world.finish("shard", Some(k), TaskPhase::Succeeded, &[("n", n)]);
    }
    let step = world.advance();
    assert_eq!(step.start.len(), 1);
    assert_eq!(step.start[0].spec.args, vec![r#"["1","2","3"]"#]);
}

#[test]
fn a_started_fan_out_that_can_no_longer_resolve_starts_nothing_more_and_fails() {
    let mut spec = fan_out_repeating_item(1);
    spec.parallelism = Some(1);
    let mut world = World::new(spec, json!({ "items": ["a", "b", "c"] }));
    world.advance();
    world.finish("prep", None, TaskPhase::Succeeded, &[]);
    let step = world.advance();
    assert_eq!(step.start.len(), 1, "parallelism 1");
    // The items no longer resolve (as if the values they read were gone): the running
    // instance is left to finish, nothing more starts, and the task fails once it is done.
    world.context.params.remove("items");
    let step = world.advance();
    assert!(step.start.is_empty() && step.cancel.is_empty());
    assert_eq!(world.state(&step, "shard"), TaskPhase::Running);
    world.finish("shard", Some(0), TaskPhase::Succeeded, &[]);
    let step = world.advance();
    assert!(step.start.is_empty());
    assert_eq!(world.state(&step, "shard"), TaskPhase::Failed);
    assert!(world.note(&step, "shard").unwrap().contains("params.items"));
    assert!(matches!(step.outcome, Some(RunOutcome::Failed { .. })));
}

#[test]
fn strays_are_reported_and_left_alone() {
    let spec = pipeline().task("a").build();
    let mut world = World::new(spec, json!({}));
    world.kids.push(Kid {
        name: "etl-1-gone".into(),
        task: "gone".into(),
        instance: None,
        phase: TaskPhase::Running,
        cancel_requested: false,
        outputs: BTreeMap::new(),
    });
    world.kids.push(Kid {
        name: "etl-1-a-7".into(),
        task: "a".into(),
        instance: Some(7),
        phase: TaskPhase::Running,
        cancel_requested: false,
        outputs: BTreeMap::new(),
    });
    let step = world.step();
    assert_eq!(step.strays, vec![0, 1]);
    assert_eq!(step.start.len(), 1, "task a still starts");
}

#[test]
fn cancelling_names_the_children_to_stop() {
    let spec = pipeline().task("a").task("b").task("c").after(["a"]).build();
    let mut world = World::new(spec, json!({}));
    world.advance();
    world.finish("b", None, TaskPhase::Succeeded, &[]);
    world.cancel_requested = true;
    let step = world.advance();
    assert_eq!(step.cancel, vec![0], "only the running child a");
    assert!(world.kids[0].cancel_requested);
    assert!(world.step().cancel.is_empty(), "asked once");
    world.finish("a", None, TaskPhase::Cancelled, &[]);
    let step = world.advance();
    assert!(matches!(step.outcome, Some(RunOutcome::Cancelled { .. })));
    assert_eq!(world.state(&step, "c"), TaskPhase::Cancelled);
}

#[test]
fn the_summary_is_capped_and_ranks_failures_first() {
    let n = MAX_SUMMARY + 20;
    let mut b = pipeline();
    for i in 0..n {
        b = b.task(&format!("t{i:03}"));
    }
    let mut world = World::new(b.build(), json!({}));
    world.advance();
    for i in 0..n {
        let phase = if i == n - 1 {
            TaskPhase::Failed
        } else {
            TaskPhase::Succeeded
        };
        world.finish(&format!("t{i:03}"), None, phase, &[]);
    }
    let step = world.advance();
    assert_eq!(step.summary.tasks.len(), MAX_SUMMARY);
    assert_eq!(step.summary.omitted, 20);
    assert_eq!(step.summary.tasks[0].name, format!("t{:03}", n - 1));
    assert_eq!(step.summary.tasks[0].phase, TaskPhase::Failed);
    assert_eq!(step.summary.progress, format!("{n}/{n}"));
}

mod rerun {
    use super::*;
    use crate::api::RerunRequest;
    use crate::engine::rerun::plan_rerun;

    fn request(tasks: &[&str], downstream: bool, failed_instances_only: bool) -> RerunRequest {
        RerunRequest {
            request: "r1".into(),
            tasks: tasks.iter().map(|t| t.to_string()).collect(),
            downstream,
            failed_instances_only,
        }
    }

    /// extract → transform(fails) → load (upstream-failed); report (finally).
    fn failed_run() -> World {
        let mut spec = pipeline()
            .task("extract")
            .task("transform")
            .after(["extract"])
            .task("load")
            .after(["transform"])
            .task("audit")
            .after(["extract"])
            .finally("report")
            .build();
        spec.tasks[0].outputs = vec![OutputSpec {
            name: "n".into(),
            description: None,
        }];
        spec.tasks[1].args = vec!["{{ tasks.extract.outputs.n }}".into()];
        let mut world = World::new(spec, json!({}));
        world.advance();
        world.finish("extract", None, TaskPhase::Succeeded, &[("n", "1")]);
        world.advance();
        world.finish("transform", None, TaskPhase::Failed, &[]);
        world.finish("audit", None, TaskPhase::Succeeded, &[]);
        world.advance();
        world.finish("report", None, TaskPhase::Succeeded, &[]);
        let end = world.advance();
        assert!(matches!(end.outcome, Some(RunOutcome::Failed { .. })));
        world
    }

    fn names(world: &World, tasks: &[usize]) -> Vec<String> {
        tasks
            .iter()
            .map(|&t| world.pipeline.name(t).to_string())
            .collect()
    }

    #[test]
    fn by_default_what_did_not_succeed_runs_again_with_every_finally_task() {
        let world = failed_run();
        let states = world.step().states;
        let kids = world.children();
        let rerun = plan_rerun(&world.pipeline, &states, &kids, &request(&[], false, false)).unwrap();
        assert_eq!(names(&world, &rerun.tasks), ["transform", "load", "report"]);
        let held: Vec<&str> = rerun
            .children
            .iter()
            .map(|&c| world.kids[c].task.as_str())
            .collect();
        assert_eq!(
            held,
            ["transform", "report"],
            "load has no TaskRun: it is worked out again"
        );
    }

    #[test]
    fn named_tasks_and_downstream() {
        let world = failed_run();
        let states = world.step().states;
        let kids = world.children();
        let only = plan_rerun(
            &world.pipeline,
            &states,
            &kids,
            &request(&["extract"], false, false),
        )
        .unwrap();
        assert_eq!(names(&world, &only.tasks), ["extract", "report"]);
        let down = plan_rerun(
            &world.pipeline,
            &states,
            &kids,
            &request(&["extract"], true, false),
        )
        .unwrap();
        assert_eq!(
            names(&world, &down.tasks),
            ["extract", "transform", "audit", "load", "report"]
        );
        let e = plan_rerun(
            &world.pipeline,
            &states,
            &kids,
            &request(&["extrakt"], false, false),
        )
        .unwrap_err();
        assert!(
            e.contains("unknown task(s) extrakt (did you mean extract?)"),
            "{e}"
        );
        let e = plan_rerun(
            &world.pipeline,
            &states,
            &kids,
            &request(&["report"], false, false),
        )
        .unwrap_err();
        assert!(e.starts_with("finally tasks only"), "{e}");
    }

    #[test]
    fn a_run_that_succeeded_needs_named_tasks() {
        let spec = pipeline().task("a").build();
        let mut world = World::new(spec, json!({}));
        world.advance();
        world.finish("a", None, TaskPhase::Succeeded, &[]);
        let states = world.advance().states;
        let kids = world.children();
        let e = plan_rerun(&world.pipeline, &states, &kids, &request(&[], false, false)).unwrap_err();
        assert!(e.contains("nothing to rerun"), "{e}");
    }

    #[test]
    fn failed_instances_only_keeps_the_instances_that_succeeded() {
        let mut world = World::new(fan_out_repeating_item(1), json!({ "items": ["a", "b", "c"] }));
        world.advance();
        world.finish("prep", None, TaskPhase::Succeeded, &[]);
        world.advance();
        world.finish("shard", Some(0), TaskPhase::Succeeded, &[]);
        world.finish("shard", Some(1), TaskPhase::Failed, &[]);
        world.finish("shard", Some(2), TaskPhase::Succeeded, &[]);
        let states = world.advance().states;
        let kids = world.children();
        let some = plan_rerun(&world.pipeline, &states, &kids, &request(&[], false, true)).unwrap();
        let picked: Vec<Option<u32>> = some.children.iter().map(|&c| world.kids[c].instance).collect();
        assert_eq!(picked, [Some(1)]);
        let all = plan_rerun(&world.pipeline, &states, &kids, &request(&[], false, false)).unwrap();
        assert_eq!(all.children.len(), 3);
    }

    /// A step over the world's children, `selected` ones picked by request r1 and `held`
    /// ones still waiting for their turn.
    fn step_holding(world: &World, selected: &[usize], held: &[usize], now: jiff::Timestamp) -> RunStep {
        let mut kids = world.children();
        for (c, kid) in kids.iter_mut().enumerate() {
            kid.rerun = selected.contains(&c).then_some("r1");
            kid.held = held.contains(&c);
        }
        world.step_over(&kids, now)
    }

    #[test]
    fn held_children_start_again_in_dag_order_with_specs_resolved_afresh() {
        let mut world = failed_run();
        let states = world.step().states;
        let kids = world.children();
        let rerun = plan_rerun(
            &world.pipeline,
            &states,
            &kids,
            &request(&["extract"], true, false),
        )
        .unwrap();
        drop(kids);
        let held: Vec<usize> = rerun.children.clone();
        let step = step_holding(&world, &held, &held, at(100));
        assert_eq!(step.outcome, None, "the run goes on");
        let started: Vec<(&str, Option<usize>)> = step
            .start
            .iter()
            .map(|s| (world.pipeline.name(s.task), s.resume))
            .collect();
        let extract = world.kids.iter().position(|k| k.task == "extract").unwrap();
        assert_eq!(
            started,
            [("extract", Some(extract))],
            "only the root starts again"
        );
        assert_eq!(world.state(&step, "transform"), TaskPhase::Pending);
        assert_eq!(world.state(&step, "report"), TaskPhase::Pending);
        // Once extract ran again with a new output, transform starts with it.
        world.finish("extract", None, TaskPhase::Succeeded, &[("n", "2")]);
        world.kids[extract].phase = TaskPhase::Succeeded;
        let still_held: Vec<usize> = held.iter().copied().filter(|&c| c != extract).collect();
        let step = step_holding(&world, &held, &still_held, at(200));
        let transform = step
            .start
            .iter()
            .find(|s| world.pipeline.name(s.task) == "transform")
            .unwrap();
        assert_eq!(transform.spec.args, vec!["2"]);
        assert!(transform.resume.is_some());
    }
}
