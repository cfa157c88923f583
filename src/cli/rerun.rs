//! `weir rerun RUN`: asks the operator to run part of a run again (Airflow's "clear") by
//! writing `spec.rerun` with a new request id, in one merge patch under the field manager
//! `weir`. The operator applies each request once; this command only asks, after checking
//! the task names against the pipeline the run follows.

use super::cluster::{ClusterArgs, Explain as _, PIPELINE_RUNS, connect, patch_params};
use crate::api::{PipelineRun, PipelineSpec, RunPhase};
use crate::engine::rerun::{NameProblem, check_names, with_hint};
use anyhow::bail;
use kube::api::Patch;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The PipelineRun to rerun part of.
    run: String,
    /// A task to run again; repeat for more (or `a,b`). Default: every task that failed,
    /// was upstream-failed or was cancelled.
    #[arg(short, long = "task", value_name = "TASK", value_delimiter = ',')]
    tasks: Vec<String>,
    /// Also run again every task downstream of those, even those that succeeded.
    #[arg(long)]
    downstream: bool,
    /// Of a fanned-out task, run again only the instances that did not succeed.
    #[arg(long)]
    failed_instances_only: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Wait until the operator applied the request and the run finished again, showing
    /// progress; exit 1 unless it succeeded.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "1h", requires = "wait")]
    timeout: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(rerun(args))
}

async fn rerun(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = connect(&args.cluster).await?;
    let name = &args.run;
    let what = Rerun {
        tasks: args.tasks.clone(),
        downstream: args.downstream,
        failed_instances_only: args.failed_instances_only,
    };
    let (request, spec) = request_rerun(&cluster, name, &what).await?;
    println!(
        "pipelinerun {name}: rerun requested (request {request}): {}",
        describe(&args.tasks, args.downstream, args.failed_instances_only)
    );
    if args.failed_instances_only && !fans_out_any(&spec, &args.tasks) {
        println!("note: --failed-instances-only changes nothing here: none of those tasks fans out");
    }
    if !args.wait {
        println!(
            "the operator applies it; follow with: weir get {name} -n {} --watch",
            cluster.namespace
        );
        return Ok(ExitCode::SUCCESS);
    }
    let timeout =
        crate::engine::duration::parse(&args.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let until = super::wait::Until {
        rerun_request: Some(request),
    };
    super::wait::follow(&cluster, name, timeout, until).await
}

/// What to run again: the tasks (none: every failed, upstream-failed or cancelled task),
/// and whether with everything downstream, and only the failed instances of a fan-out.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rerun {
    pub tasks: Vec<String>,
    pub downstream: bool,
    pub failed_instances_only: bool,
}

/// Writes a rerun request on the run after checking it (`weir rerun` and the UI): the
/// request id and the pipeline the run follows.
pub async fn request_rerun(
    cluster: &super::cluster::Cluster,
    name: &str,
    what: &Rerun,
) -> anyhow::Result<(String, PipelineSpec)> {
    let api = cluster.api::<PipelineRun>();
    let run = api
        .get(name)
        .await
        .explain(cluster, "get", PIPELINE_RUNS, Some(name))?;
    let status = run.status.clone().unwrap_or_default();
    let followed = crate::controller::revision::followed_spec(&cluster.client, &run).await?;
    let Some(spec) = followed.filter(|_| status.pipeline_revision.is_some()) else {
        bail!("pipelinerun {name} has not started (it has no pipeline yet): there is nothing to rerun");
    };
    check_tasks(name, &spec, &what.tasks)?;
    if what.tasks.is_empty() && status.phase == Some(RunPhase::Succeeded) {
        bail!(
            "pipelinerun {name} succeeded: no task failed, so a rerun without --task would run nothing; name the tasks to run again with --task"
        );
    }
    let previous = run.spec.rerun.as_ref().map(|r| r.request.as_str());
    let request = request_id(jiff::Timestamp::now(), previous);
    let patch = rerun_patch(&request, &what.tasks, what.downstream, what.failed_instances_only);
    api.patch(name, &patch_params(), &Patch::Merge(&patch))
        .await
        .explain(cluster, "patch", PIPELINE_RUNS, Some(name))?;
    Ok((request, spec))
}

/// Every named task must be a task (or `finally` task) of the run's pipeline, and not only
/// `finally` ones: the operator's own check, told before the request is written.
fn check_tasks(run: &str, spec: &PipelineSpec, tasks: &[String]) -> anyhow::Result<()> {
    match check_names(spec, tasks) {
        Ok(()) => Ok(()),
        Err(NameProblem::Unknown { names, known }) => {
            let (name, hint) = &names[0];
            bail!(
                "pipelinerun {run} has no task {}; its tasks: {}",
                with_hint(name, hint),
                known.join(", ")
            )
        }
        Err(problem) => bail!("--task {}: {problem}", tasks.join(",")),
    }
}

fn fans_out_any(spec: &PipelineSpec, tasks: &[String]) -> bool {
    spec.tasks
        .iter()
        .chain(&spec.finally)
        .filter(|t| tasks.is_empty() || tasks.contains(&t.name))
        .any(|t| t.for_each.is_some())
}

/// A request id unique within the run: the time in UTC to the millisecond, with a suffix in
/// the unlikely case that it equals the run's last request.
fn request_id(now: jiff::Timestamp, previous: Option<&str>) -> String {
    let id = now.strftime("%Y%m%dT%H%M%S%.3fZ").to_string();
    if previous == Some(id.as_str()) {
        format!("{id}-2")
    } else {
        id
    }
}

/// The merge patch of `spec.rerun`. Every field is written, absent ones as `null`, so that
/// nothing of an earlier request (its tasks, its flags) survives into this one.
fn rerun_patch(
    request: &str,
    tasks: &[String],
    downstream: bool,
    failed_instances_only: bool,
) -> serde_json::Value {
    let or_null = |on: bool| {
        if on {
            serde_json::json!(true)
        } else {
            serde_json::Value::Null
        }
    };
    serde_json::json!({
        "spec": {
            "rerun": {
                "request": request,
                "tasks": if tasks.is_empty() { serde_json::Value::Null } else { serde_json::json!(tasks) },
                "downstream": or_null(downstream),
                "failedInstancesOnly": or_null(failed_instances_only),
            }
        }
    })
}

pub fn describe(tasks: &[String], downstream: bool, failed_instances_only: bool) -> String {
    let mut text = if tasks.is_empty() {
        "every task that failed, was upstream-failed or was cancelled".to_string()
    } else {
        format!("task(s) {}", tasks.join(", "))
    };
    if downstream {
        text.push_str(", and everything downstream");
    }
    if failed_instances_only {
        text.push_str(" (of fanned-out tasks, only the instances that did not succeed)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_clears_what_an_earlier_request_set() {
        assert_eq!(
            rerun_patch("r2", &[], false, false),
            serde_json::json!({"spec": {"rerun": {
                "request": "r2", "tasks": null, "downstream": null, "failedInstancesOnly": null
            }}})
        );
        assert_eq!(
            rerun_patch("r3", &["a".into(), "b".into()], true, true),
            serde_json::json!({"spec": {"rerun": {
                "request": "r3", "tasks": ["a", "b"], "downstream": true, "failedInstancesOnly": true
            }}})
        );
    }

    #[test]
    fn request_ids_are_the_time_and_never_repeat_the_last() {
        let t: jiff::Timestamp = "2026-01-02T14:03:05.123456Z".parse().unwrap();
        assert_eq!(request_id(t, None), "20260102T140305.123Z");
        assert_eq!(
            request_id(t, Some("20260102T140305.123Z")),
            "20260102T140305.123Z-2"
        );
    }

    #[test]
    fn unknown_tasks_are_refused_with_a_suggestion() {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "tasks": [{"name": "extract", "image": "x"}, {"name": "load", "image": "x"}],
            "finally": [{"name": "report", "image": "x"}],
        }))
        .unwrap();
        assert!(check_tasks("r", &spec, &["load".into(), "report".into()]).is_ok());
        let e = check_tasks("r", &spec, &["report".into()])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--task report: finally tasks only"), "{e}");
        let e = check_tasks("r", &spec, &["extrakt".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "pipelinerun r has no task extrakt (did you mean extract?); its tasks: extract, load, report"
        );
    }
}
