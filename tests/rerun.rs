//! Rerun (Airflow's "clear") on the real control plane: a run with a failed task and a
//! failed fan-out instance is rerun with each option and ends Succeeded; attempt histories,
//! outputs and Job names are checked; a request is applied once even when the operator is
//! killed while applying it.

mod common;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir::api::{AttemptPhase, PipelineRun, RunPhase, TaskPhase, TaskRun};
use weir_testenv::{TestNamespace, unique_marker, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// A pipeline whose `transform` task and `shard` instance `b` fail until the file `gate`
/// exists (tasks run as local processes, so the test can create it); `extract` counts its
/// own runs in `runs`; `load` reads transform's output; `report` runs finally.
fn flaky_pipeline(name: &str, gate: &Path, runs: &Path) -> String {
    let (gate, runs) = (gate.display(), runs.display());
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  defaults: {{image: busybox}}
  tasks:
    - name: extract
      command: [sh, -c, 'echo x >> {runs}; echo "count=$(wc -l < {runs})" > "$WEIR_OUTPUTS"']
      outputs: [{{name: count}}]
    - name: transform
      dependsOn: [extract]
      command: [sh, -c, 'test -e {gate} || exit 3; echo "t=done-$1" > "$WEIR_OUTPUTS"', sh, "{{{{ tasks.extract.outputs.count }}}}"]
      outputs: [{{name: t}}]
    - name: load
      dependsOn: [transform]
      command: [sh, -c, 'echo "loaded=$1" > "$WEIR_OUTPUTS"', sh, "{{{{ tasks.transform.outputs.t }}}}"]
      outputs: [{{name: loaded}}]
    - name: shard
      dependsOn: [extract]
      forEach: {{items: [a, b, c]}}
      command: [sh, -c, 'test "$1" != b || test -e {gate} || exit 4; echo "s=$1-$WEIR_ATTEMPT" > "$WEIR_OUTPUTS"', sh, "{{{{ item }}}}"]
      outputs: [{{name: s}}]
  finally:
    - {{name: report, command: [sh, -c, 'echo report']}}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: {name}}}
spec:
  pipelineRef: {{name: {name}}}
"#
    )
}

struct Flaky {
    gate: PathBuf,
    runs: PathBuf,
}

impl Flaky {
    fn new() -> Flaky {
        let marker = unique_marker("weir-rerun");
        let dir = std::env::temp_dir();
        Flaky {
            gate: dir.join(format!("{marker}.gate")),
            runs: dir.join(format!("{marker}.runs")),
        }
    }

    fn open_gate(&self) {
        std::fs::write(&self.gate, "open").unwrap();
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.gate);
        let _ = std::fs::remove_file(&self.runs);
    }
}

/// Starts the flaky pipeline's run and waits for it to fail.
async fn failed_run(ns: &TestNamespace, name: &str, flaky: &Flaky) -> PipelineRun {
    ns.apply(&flaky_pipeline(name, &flaky.gate, &flaky.runs));
    let run = wait_run_done(ns, name, RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed, "{:?}", run.status);
    run
}

/// Asks for a rerun as `kubectl patch --type json` would: the whole request replaced (a
/// merge patch would keep fields of the previous request that this one leaves out).
async fn ask_rerun(ns: &TestNamespace, run: &str, rerun: serde_json::Value) {
    let api: Api<PipelineRun> = ns.api();
    let patch = serde_json::json!([{ "op": "add", "path": "/spec/rerun", "value": rerun }]);
    let params = PatchParams {
        field_manager: Some("rerun-test".into()),
        ..Default::default()
    };
    let patch: Patch<()> = Patch::Json(serde_json::from_value(patch).unwrap());
    api.patch(run, &params, &patch).await.unwrap();
}

/// Waits until the run applied `request` and finished again.
async fn wait_rerun_done(ns: &TestNamespace, run: &str, request: &str) -> PipelineRun {
    let api: Api<PipelineRun> = ns.api();
    wait_for(
        &format!("{run} to finish rerun {request}"),
        RUN_TIMEOUT,
        || async {
            let r = api.get(run).await.map_err(|e| e.to_string())?;
            let status = r.status.as_ref().ok_or("no status")?;
            let applied = status.rerun.as_ref().map(|a| a.request.as_str());
            match (applied, status.phase) {
                (Some(a), Some(p)) if a == request && p.is_terminal() => Ok(r),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Every TaskRun of the run by task (and instance): attempt phases and outputs.
async fn attempts_by_task(
    ns: &TestNamespace,
) -> BTreeMap<String, (Vec<AttemptPhase>, BTreeMap<String, String>)> {
    let api: Api<TaskRun> = ns.api();
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|tr| {
            let key = match tr.spec.instance {
                Some(k) => format!("{}[{k}]", tr.spec.task_name),
                None => tr.spec.task_name.clone(),
            };
            let status = tr.status.unwrap_or_default();
            let phases = status.attempts.iter().map(|a| a.phase).collect();
            (key, (phases, status.outputs))
        })
        .collect()
}

fn phases(list: &[&str]) -> Vec<AttemptPhase> {
    list.iter()
        .map(|p| match *p {
            "S" => AttemptPhase::Succeeded,
            "F" => AttemptPhase::Failed,
            other => panic!("{other}"),
        })
        .collect()
}

#[tokio::test]
async fn rerunning_what_failed_ends_succeeded_and_keeps_the_history() {
    let (ns, _op) = setup("rerun-failed").await;
    let flaky = Flaky::new();
    let before = failed_run(&ns, "nightly", &flaky).await;
    assert_eq!(summary_phase(&before, "load"), Some(TaskPhase::UpstreamFailed));
    // The finished TaskRuns have left the operator's watch: the rerun brings them back.
    wait_all_marked_finished(&ns, "nightly").await;
    flaky.open_gate();
    ask_rerun(&ns, "nightly", serde_json::json!({"request": "r1"})).await;
    let run = wait_rerun_done(&ns, "nightly", "r1").await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    wait_all_marked_finished(&ns, "nightly").await;
    let applied = run.status.as_ref().unwrap().rerun.clone().unwrap();
    assert_eq!(applied.count, 1);
    let mut rerun_tasks = applied.tasks.clone();
    rerun_tasks.sort();
    assert_eq!(rerun_tasks, ["load", "report", "shard", "transform"]);
    assert_eq!(
        applied.tasks.last().map(String::as_str),
        Some("report"),
        "finally last"
    );
    assert_eq!(
        applied.requested_by.as_deref(),
        Some("rerun-test"),
        "the test's field manager"
    );

    let tasks = attempts_by_task(&ns).await;
    // extract succeeded and did not run again: same output, one attempt.
    assert_eq!(
        tasks["extract"],
        (phases(&["S"]), BTreeMap::from([("count".into(), "1".into())]))
    );
    // transform: its first attempt stays in the history, the rerun is attempt 2.
    assert_eq!(tasks["transform"].0, phases(&["F", "S"]));
    assert_eq!(tasks["transform"].1["t"], "done-1");
    assert_eq!(
        tasks["load"].1["loaded"], "done-1",
        "load ran once, after the rerun"
    );
    // Every instance ran again (failedInstancesOnly not set), numbered on.
    for (k, item) in [(0, "a"), (1, "b"), (2, "c")] {
        let (p, outputs) = &tasks[&format!("shard[{k}]")];
        let expected = if item == "b" { ["F", "S"] } else { ["S", "S"] };
        assert_eq!(p, &phases(&expected), "shard[{k}]");
        assert_eq!(outputs["s"], format!("{item}-2"));
    }
    assert_eq!(tasks["report"].0, phases(&["S", "S"]), "finally runs again");

    // Job names: attempt 2 of transform is its own Job, beside attempt 1's.
    let jobs: Api<Job> = ns.api();
    let transform = task_run(&ns, "nightly", "transform").await;
    let names: Vec<String> = transform
        .status
        .unwrap()
        .attempts
        .iter()
        .map(|a| a.job_name.clone())
        .collect();
    assert_eq!(
        names,
        [
            weir::engine::names::job_name(&transform.metadata.name.clone().unwrap(), 1),
            weir::engine::names::job_name(&transform.metadata.name.clone().unwrap(), 2),
        ]
    );
    assert!(jobs.get_opt(&names[1]).await.unwrap().is_some());
    let events = events_with_reason(&ns, "RunRerun");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("asked by rerun-test"), "{events:?}");
}

#[tokio::test]
async fn failed_instances_only_and_named_tasks_with_downstream() {
    let (ns, _op) = setup("rerun-options").await;
    let flaky = Flaky::new();
    failed_run(&ns, "nightly", &flaky).await;
    flaky.open_gate();
    ask_rerun(
        &ns,
        "nightly",
        serde_json::json!({"request": "r1", "failedInstancesOnly": true}),
    )
    .await;
    let run = wait_rerun_done(&ns, "nightly", "r1").await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    let tasks = attempts_by_task(&ns).await;
    assert_eq!(tasks["shard[0]"].0, phases(&["S"]), "a succeeded: kept");
    assert_eq!(tasks["shard[1]"].0, phases(&["F", "S"]));
    assert_eq!(tasks["shard[2]"].0, phases(&["S"]));

    // Now a succeeded run: extract with everything downstream runs again, reading the new
    // output (extract counts its runs).
    ask_rerun(
        &ns,
        "nightly",
        serde_json::json!({"request": "r2", "tasks": ["extract"], "downstream": true}),
    )
    .await;
    let run = wait_rerun_done(&ns, "nightly", "r2").await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    assert_eq!(run.status.as_ref().unwrap().rerun.as_ref().unwrap().count, 2);
    let tasks = attempts_by_task(&ns).await;
    assert_eq!(
        tasks["extract"],
        (
            phases(&["S", "S"]),
            BTreeMap::from([("count".into(), "2".into())])
        )
    );
    assert_eq!(
        tasks["transform"].1["t"], "done-2",
        "the rerun read extract's new output"
    );
    assert_eq!(tasks["load"].1["loaded"], "done-2");
    assert_eq!(tasks["shard[0]"].0, phases(&["S", "S"]));
    assert_eq!(tasks["report"].0, phases(&["S", "S", "S"]));
}

#[tokio::test]
async fn a_request_is_applied_once_when_the_operator_dies_applying_it() {
    let (ns, mut op) = setup("rerun-crash").await;
    let recorder = JobRecorder::start(&ns).await;
    let flaky = Flaky::new();
    failed_run(&ns, "nightly", &flaky).await;
    flaky.open_gate();
    ask_rerun(&ns, "nightly", serde_json::json!({"request": "r1"})).await;
    // Kill it at once, then again as soon as the request shows in the status or a TaskRun.
    op.kill();
    op.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    op.kill();
    op.restart();
    let run = wait_rerun_done(&ns, "nightly", "r1").await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    assert_eq!(run.status.as_ref().unwrap().rerun.as_ref().unwrap().count, 1);
    let tasks = attempts_by_task(&ns).await;
    assert_eq!(
        tasks["transform"].0,
        phases(&["F", "S"]),
        "one new round, one new attempt"
    );
    assert_eq!(tasks["report"].0, phases(&["S", "S"]));
    recorder.assert_each_created_once(tasks.values().map(|(p, _)| p.len()).sum());
    // Asking again with the same request does nothing.
    ask_rerun(&ns, "nightly", serde_json::json!({"request": "r1"})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(attempts_by_task(&ns).await, tasks);
}

#[tokio::test]
async fn a_bad_request_is_refused_with_the_reason() {
    let (ns, _op) = setup("rerun-bad").await;
    let flaky = Flaky::new();
    failed_run(&ns, "nightly", &flaky).await;
    ask_rerun(
        &ns,
        "nightly",
        serde_json::json!({"request": "r1", "tasks": ["transfrom"]}),
    )
    .await;
    let api: Api<PipelineRun> = ns.api();
    let run = wait_for("the request to be recorded", RUN_TIMEOUT, || async {
        let r = api.get("nightly").await.map_err(|e| e.to_string())?;
        r.status
            .as_ref()
            .and_then(|s| s.rerun.as_ref())
            .is_some()
            .then_some(r)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    assert_eq!(phase(&run), RunPhase::Failed, "nothing ran again");
    let applied = run.status.unwrap().rerun.unwrap();
    assert!(applied.tasks.is_empty());
    // The reason is in the status itself, written with the refusal.
    let why = applied.refused.expect("status.rerun.refused");
    assert!(why.contains("unknown task(s) transfrom"), "{why}");
    let events = events_with_reason(&ns, "RerunRefused");
    assert!(
        events.iter().any(|e| e.contains("unknown task(s) transfrom")),
        "{events:?}"
    );
}
