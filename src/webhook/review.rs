//! What the admission webhook decides about one object: every problem, each with its field
//! path, found by the same checks `weir validate` and the controllers make. No client, no
//! clock: the webhook's handler looks up the referenced Pipeline and passes it in.

use crate::api::{Pipeline, PipelineRun, PipelineSpec};
use crate::controller::pipelinerun::{RunProblem, run_problems};
use crate::engine::quote::q;
use crate::engine::rerun::check_names;
use crate::engine::{RunSource, ValidationErrors, duration, run_source, validate};
use std::fmt;

/// Most problems one denial lists; `weir validate` lists them all.
pub const MAX_LISTED: usize = 50;

/// One problem, at a field path from the object's root (`spec.tasks[1].dependsOn`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    pub path: String,
    pub message: String,
}

impl FieldProblem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> FieldProblem {
        FieldProblem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The Pipeline a PipelineRun names, as the handler found it.
#[derive(Clone, Debug)]
pub enum Referenced {
    /// The run names none (inline spec, or neither).
    NotNeeded,
    Found(Box<PipelineSpec>),
    /// Not there (yet): GitOps tools may apply a run before its Pipeline, so it is allowed;
    /// the controller waits for the Pipeline a while.
    Missing,
    /// The lookup failed; the run is allowed and the controller checks it when it starts.
    Unknown,
}

/// Problems of a Pipeline: engine validation, paths from the object's root.
pub fn pipeline_problems(pipeline: &Pipeline) -> Vec<FieldProblem> {
    match validate(&pipeline.spec) {
        Ok(_) => Vec::new(),
        Err(errors) => from_validation("spec", &errors),
    }
}

fn from_validation(prefix: &str, errors: &ValidationErrors) -> Vec<FieldProblem> {
    errors
        .0
        .iter()
        .map(|e| {
            let message = match &e.task {
                Some(task) => format!("task {}: {}", q(task), e.message),
                None => e.message.clone(),
            };
            FieldProblem::new(format!("{prefix}.{}", e.field), message)
        })
        .collect()
}

/// Whether a run has started: it follows a PipelineRevision.
pub fn is_started(run: &PipelineRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.pipeline_revision.is_some())
}

/// Problems of a PipelineRun being created (`old` None) or updated. A run that has started
/// (it follows a PipelineRevision, which `referenced` then holds) may change only
/// `spec.cancelled` and `spec.rerun`; before that, it is checked as the controller will
/// check it when it starts.
pub fn pipeline_run_problems(
    run: &PipelineRun,
    old: Option<&PipelineRun>,
    referenced: &Referenced,
) -> Vec<FieldProblem> {
    if let Some(old) = old.filter(|o| is_started(o)) {
        let mut problems = started_run_changes(&old.spec, run);
        if let Referenced::Found(pinned) = referenced {
            problems.extend(rerun_problems(old, run, pinned));
        }
        return problems;
    }
    let source = match run_source(&run.spec) {
        Ok(source) => source,
        Err(e) => return vec![FieldProblem::new(e.field, e.message)],
    };
    let (prefix, spec) = match (source, referenced) {
        (RunSource::Inline(spec), _) => ("spec.pipelineSpec", spec),
        (RunSource::Ref(_), Referenced::Found(spec)) => ("", spec.as_ref()),
        (RunSource::Ref(_), _) => {
            // Without the pipeline only the run's own fields can be checked.
            return match run.spec.timeout.as_deref().map(duration::parse) {
                Some(Err(e)) => vec![FieldProblem::new("spec.timeout", e)],
                _ => Vec::new(),
            };
        }
    };
    match run_problems(run, spec) {
        Ok(_) => Vec::new(),
        Err(problems) => problems
            .iter()
            .flat_map(|p| from_run_problem(run, prefix, p))
            .collect(),
    }
}

fn from_run_problem(run: &PipelineRun, prefix: &str, problem: &RunProblem) -> Vec<FieldProblem> {
    match problem {
        RunProblem::Pipeline(errors) if !prefix.is_empty() => from_validation(prefix, errors),
        RunProblem::Pipeline(errors) => {
            let name = run.spec.pipeline_ref.as_ref().map_or("", |r| r.name.as_str());
            vec![FieldProblem::new(
                "spec.pipelineRef",
                format!("Pipeline {} is invalid, so the run would fail: {errors}", q(name)),
            )]
        }
        // The engine's message names the field already.
        RunProblem::Timeout(message) => vec![FieldProblem::new("", message.clone())],
        RunProblem::Params(problems) => problems
            .iter()
            .map(|p| FieldProblem::new("spec.params", p.clone()))
            .collect(),
    }
}

/// The fields of a started run that changed, other than the requests a run takes.
fn started_run_changes(old: &crate::api::PipelineRunSpec, run: &PipelineRun) -> Vec<FieldProblem> {
    const MUTABLE: [&str; 2] = ["cancelled", "rerun"];
    let as_map = |spec| match serde_json::to_value(spec) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (as_map(old), as_map(&run.spec));
    let mut fields: Vec<&String> = before.keys().chain(after.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|f| !MUTABLE.contains(&f.as_str()) && before.get(*f) != after.get(*f))
        .map(|f| {
            FieldProblem::new(
                format!("spec.{f}"),
                "cannot change once the run has started (it runs the pipeline pinned in its status); \
                 only spec.cancelled and spec.rerun can. For other values start a new run \
                 (weir trigger PIPELINE --like RUN)",
            )
        })
        .collect()
}

/// A new rerun request must name tasks of the pinned pipeline, as the operator requires.
fn rerun_problems(old: &PipelineRun, run: &PipelineRun, pinned: &PipelineSpec) -> Vec<FieldProblem> {
    let Some(request) = &run.spec.rerun else {
        return Vec::new();
    };
    if old.spec.rerun.as_ref() == Some(request) {
        return Vec::new();
    }
    match check_names(pinned, &request.tasks) {
        Ok(()) => Vec::new(),
        Err(problem) => vec![FieldProblem::new("spec.rerun.tasks", problem.to_string())],
    }
}

/// The message of a denial, as `kubectl apply` prints it after "denied the request: ".
pub fn denial(kind: &str, name: &str, problems: &[FieldProblem]) -> String {
    let count = problems.len();
    let mut out = format!(
        "{kind} {} is invalid ({count} problem{}):",
        q(name),
        if count == 1 { "" } else { "s" }
    );
    for p in problems.iter().take(MAX_LISTED) {
        out.push_str(&format!("\n  {p}"));
    }
    if count > MAX_LISTED {
        out.push_str(&format!(
            "\n  ... and {} more (weir validate lists every one)",
            count - MAX_LISTED
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PipelineRunSpec, PipelineRunStatus, RerunRequest};
    use serde_json::json;

    fn pipeline(spec: serde_json::Value) -> Pipeline {
        Pipeline::new("etl", serde_json::from_value(spec).unwrap())
    }

    fn run(spec: serde_json::Value) -> PipelineRun {
        PipelineRun::new("etl-1", serde_json::from_value(spec).unwrap())
    }

    fn two_tasks() -> PipelineSpec {
        serde_json::from_value(json!({
            "params": [{"name": "region"}, {"name": "parts", "type": "List", "default": []}],
            "tasks": [
                {"name": "a", "image": "busybox", "command": ["true"]},
                {"name": "b", "image": "busybox", "command": ["true"], "dependsOn": ["a"]},
            ],
        }))
        .unwrap()
    }

    fn started(spec: serde_json::Value) -> PipelineRun {
        let mut r = run(spec);
        r.status = Some(PipelineRunStatus {
            pipeline_revision: Some("etl-0123456789".into()),
            ..Default::default()
        });
        r
    }

    fn paths(problems: &[FieldProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn a_pipeline_lists_every_problem_with_its_path_and_task() {
        let p = pipeline(json!({
            "schedule": {"cron": "61 * * * *"},
            "tasks": [
                {"name": "a", "image": "busybox", "dependsOn": ["b"]},
                {"name": "b", "image": "busybox", "dependsOn": ["a", "nope"]},
            ],
        }));
        let problems = pipeline_problems(&p);
        let text = denial("Pipeline", "etl", &problems);
        assert!(paths(&problems).contains(&"spec.tasks[1].dependsOn"), "{text}");
        assert!(paths(&problems).contains(&"spec.schedule.cron"), "{text}");
        assert!(text.contains(r#"task "b": unknown task "nope""#), "{text}");
        assert!(text.contains("cycle"), "{text}");
        assert!(
            text.starts_with(&format!(
                "Pipeline \"etl\" is invalid ({} problems):\n  spec.",
                problems.len()
            )),
            "{text}"
        );
        assert!(pipeline_problems(&pipeline(serde_json::to_value(two_tasks()).unwrap())).is_empty());
    }

    #[test]
    fn a_run_is_checked_against_its_pipeline_when_it_exists() {
        let r = run(
            json!({"pipelineRef": {"name": "etl"}, "params": {"regoin": "eu", "parts": "a"}, "timeout": "10x"}),
        );
        let found = Referenced::Found(Box::new(two_tasks()));
        let problems = pipeline_run_problems(&r, None, &found);
        let text = denial("PipelineRun", "etl-1", &problems);
        assert!(
            text.contains(r#"spec.params: unknown parameter "regoin""#),
            "{text}"
        );
        assert!(
            text.contains(r#"spec.params: parameter "region" is required"#),
            "{text}"
        );
        assert!(text.contains("spec.timeout: "), "{text}");
        // Missing or unreadable pipelines: the run's own fields only.
        for referenced in [Referenced::Missing, Referenced::Unknown] {
            assert_eq!(
                paths(&pipeline_run_problems(&r, None, &referenced)),
                ["spec.timeout"]
            );
        }
        let fine = run(json!({"pipelineRef": {"name": "etl"}, "params": {"region": "eu"}}));
        assert!(pipeline_run_problems(&fine, None, &found).is_empty());
        assert!(pipeline_run_problems(&fine, None, &Referenced::Missing).is_empty());
    }

    #[test]
    fn a_run_naming_an_invalid_pipeline_or_none_is_refused() {
        let mut bad = two_tasks();
        bad.tasks[1].depends_on = vec!["x".into()];
        let r = run(json!({"pipelineRef": {"name": "etl"}, "params": {"region": "eu"}}));
        let problems = pipeline_run_problems(&r, None, &Referenced::Found(Box::new(bad.clone())));
        assert_eq!(paths(&problems), ["spec.pipelineRef"]);
        assert!(
            problems[0].message.contains(r#"unknown task "x""#),
            "{:?}",
            problems
        );

        let inline =
            run(json!({"pipelineSpec": serde_json::to_value(&bad).unwrap(), "params": {"region": "eu"}}));
        assert_eq!(
            paths(&pipeline_run_problems(&inline, None, &Referenced::NotNeeded)),
            ["spec.pipelineSpec.tasks[1].dependsOn"]
        );

        let neither = PipelineRun::new("r", PipelineRunSpec::default());
        assert_eq!(
            paths(&pipeline_run_problems(&neither, None, &Referenced::NotNeeded)),
            ["spec"]
        );
    }

    #[test]
    fn a_started_run_takes_only_cancel_and_rerun_requests() {
        let old = started(json!({"pipelineRef": {"name": "etl"}, "params": {"region": "eu"}}));
        let mut new = old.clone();
        new.spec.cancelled = true;
        new.spec.rerun = Some(RerunRequest {
            request: "1".into(),
            tasks: vec!["b".into()],
            ..Default::default()
        });
        assert!(pipeline_run_problems(&new, Some(&old), &Referenced::NotNeeded).is_empty());

        new.spec.params.insert("region".into(), json!("us"));
        new.spec.timeout = Some("1h".into());
        new.spec.pipeline_ref = None;
        let problems = pipeline_run_problems(&new, Some(&old), &Referenced::NotNeeded);
        assert_eq!(
            paths(&problems),
            ["spec.params", "spec.pipelineRef", "spec.timeout"]
        );
        assert!(
            problems[0].message.contains("only spec.cancelled and spec.rerun"),
            "{problems:?}"
        );

        // A rerun request naming an unknown task is refused, as the operator would.
        let mut rerun = old.clone();
        rerun.spec.rerun = Some(RerunRequest {
            request: "2".into(),
            tasks: vec!["bb".into()],
            ..Default::default()
        });
        let pinned = Referenced::Found(Box::new(two_tasks()));
        let problems = pipeline_run_problems(&rerun, Some(&old), &pinned);
        assert_eq!(paths(&problems), ["spec.rerun.tasks"]);
        assert!(problems[0].message.contains("unknown task(s) bb"), "{problems:?}");

        // Before the run starts, it is checked as on create.
        let pending = run(json!({"pipelineRef": {"name": "etl"}}));
        let mut edited = pending.clone();
        edited.spec.params.insert("region".into(), json!("us"));
        assert!(
            pipeline_run_problems(&edited, Some(&pending), &Referenced::Found(Box::new(two_tasks())))
                .is_empty()
        );
    }

    #[test]
    fn a_long_list_is_cut_with_a_count() {
        let problems: Vec<FieldProblem> = (0..MAX_LISTED + 7)
            .map(|i| FieldProblem::new(format!("spec.tasks[{i}]"), "bad"))
            .collect();
        let text = denial("Pipeline", "p", &problems);
        assert_eq!(text.lines().count(), MAX_LISTED + 2, "{text}");
        assert!(
            text.ends_with("... and 7 more (weir validate lists every one)"),
            "{text}"
        );
    }
}
