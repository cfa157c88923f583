//! Params, templates, outputs, conditions and fan-out on the real control plane.

mod common;

use common::*;
use kube::api::{Api, ListParams};
use std::time::Duration;
use weir::api::{FailureReason, Pipeline, RunPhase, TaskPhase, TaskRun};
use weir_testenv::wait_for;

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn params_reach_tasks_and_outputs_reach_the_next_task() {
    let (ns, _op) = setup("params").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: flow}
spec:
  params:
    - {name: region, default: eu}
    - {name: date}
  defaults: {image: busybox}
  tasks:
    - name: extract
      env: [{name: REGION, value: "{{ params.region }}"}]
      command: [sh, -c, 'echo "{\"rows\": 42, \"region\": \"$REGION\"}" > "$WEIR_OUTPUTS"']
      outputs: [{name: rows}, {name: region}]
    - name: load
      dependsOn: [extract]
      command: [sh, -c, 'echo "loaded=$1 rows for $2 on $3" > "$WEIR_OUTPUTS"', sh]
      args: ["{{ tasks.extract.outputs.rows }}", "{{ tasks.extract.outputs.region }}", "{{ params.date }}"]
      outputs: [{name: loaded}]
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: flow-us}
spec:
  pipelineRef: {name: flow}
  params: {region: us, date: "2026-11-20"}
"#,
    );
    let run = wait_run_done(&ns, "flow-us", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    let extract = task_run(&ns, "flow-us", "extract").await;
    assert_eq!(
        extract
            .spec
            .env
            .iter()
            .find(|e| e.name == "REGION")
            .and_then(|e| e.value.clone())
            .as_deref(),
        Some("us")
    );
    let outputs = extract.status.unwrap().outputs;
    assert_eq!(
        (outputs["rows"].as_str(), outputs["region"].as_str()),
        ("42", "us")
    );
    let load = task_run(&ns, "flow-us", "load").await;
    // The TaskRun's spec holds the resolved values.
    assert_eq!(load.spec.args, vec!["42", "us", "2026-11-20"]);
    assert_eq!(
        load.status.unwrap().outputs["loaded"],
        "42 rows for us on 2026-11-20"
    );
}

#[tokio::test]
async fn missing_params_and_bad_templates_are_refused_before_anything_runs() {
    let (ns, _op) = setup("badparams").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: needs-date}
spec:
  params: [{name: date}]
  tasks:
    - {name: a, image: busybox, command: [sh, -c, 'echo {{ params.date }}']}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: no-date}
spec:
  pipelineRef: {name: needs-date}
  params: {dat: "2026-01-01"}
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: bad-refs}
spec:
  tasks:
    - {name: a, image: busybox, command: [sh, -c, 'echo {{ params.nope }}'], outputs: [{name: x}]}
    - {name: b, image: busybox, command: [sh, -c, 'echo {{ tasks.a.outputs.x }}']}
"#,
    );
    let run = wait_run_done(&ns, "no-date", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    assert_eq!(condition_reason(&run), "InvalidParams");
    let message = weir::api::condition::find(&run.status.unwrap().conditions, "Succeeded")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains(r#"unknown parameter "dat""#) && message.contains(r#"parameter "date" is required"#),
        "{message}"
    );

    let pipelines: Api<Pipeline> = ns.api();
    let message = wait_for(
        "bad-refs to be marked invalid",
        Duration::from_secs(60),
        || async {
            let p = pipelines.get("bad-refs").await.ok()?;
            let ready = weir::api::condition::find(&p.status?.conditions, "Ready")?.clone();
            (ready.status == "False").then_some(ready.message)
        },
    )
    .await;
    assert!(
        message.contains(r#"no parameter "nope" is declared"#),
        "{message}"
    );
    assert!(
        message.contains(r#"task "a" is not upstream of "b""#),
        "{message}"
    );
    assert!(
        ns.api::<TaskRun>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn missing_declared_output_fails_the_task_clearly() {
    let (ns, _op) = setup("nooutput").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: forgetful}
spec:
  pipelineSpec:
    tasks:
      - {name: a, image: busybox, command: [sh, -c, 'echo "other=1" > "$WEIR_OUTPUTS"'], outputs: [{name: rows}]}
"#,
    );
    let run = wait_run_done(&ns, "forgetful", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    let a = task_run(&ns, "forgetful", "a").await.status.unwrap();
    assert_eq!(a.attempts[0].reason, Some(FailureReason::OutputError));
    let message = a.attempts[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("rows missing") && message.contains("WEIR_OUTPUTS"),
        "{message}"
    );
}

#[tokio::test]
async fn fan_out_over_twenty_items_respects_parallelism_and_fans_in() {
    let (ns, _op) = setup("fanout").await;
    let jobs = JobRecorder::start(&ns).await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: wide}
spec:
  params: {parts: ["p00","p01","p02","p03","p04","p05","p06","p07","p08","p09","p10","p11","p12","p13","p14","p15","p16","p17","p18","p19"]}
  pipelineSpec:
    params: [{name: parts, type: List}]
    parallelism: 4
    defaults: {image: busybox}
    tasks:
      - name: process
        forEach: {items: "{{ params.parts }}"}
        command: [sh, -c, 'sleep 0.3; echo "size=${#1}$1" > "$WEIR_OUTPUTS"', sh, "{{ item }}"]
        outputs: [{name: size}]
      - name: aggregate
        dependsOn: [process]
        env: [{name: SIZES, value: "{{ tasks.process.outputs.size }}"}]
        command: [sh, -c, 'echo "$SIZES"']
"#,
    );
    let run = wait_run_done(&ns, "wide", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    let process_jobs: Vec<_> = jobs
        .created()
        .into_iter()
        .filter(|(_, t, _)| t == "process")
        .collect();
    assert_eq!(process_jobs.len(), 20, "{process_jobs:?}");
    let most = jobs.max_concurrent();
    assert!(most <= 4, "{most} Jobs at once with parallelism 4");
    let instance: TaskRun = ns.api().get("wide-process-7").await.unwrap();
    assert_eq!(instance.spec.instance, Some(7));
    assert_eq!(instance.spec.command.last().map(String::as_str), Some("p07"));
    let aggregate = task_run(&ns, "wide", "aggregate").await;
    let sizes = aggregate
        .spec
        .env
        .iter()
        .find(|e| e.name == "SIZES")
        .and_then(|e| e.value.clone())
        .unwrap();
    let sizes: Vec<String> = serde_json::from_str(&sizes).unwrap();
    let expected: Vec<String> = (0..20).map(|i| format!("3p{i:02}")).collect();
    assert_eq!(
        sizes, expected,
        "fan-in receives every instance's output, in order"
    );
}

#[tokio::test]
async fn when_condition_skips_a_branch_and_the_example_runs() {
    let (ns, _op) = setup("when").await;
    // A quality check that fails: publish is skipped, its downstream too.
    ns.apply(&example("partitioned-etl").replace(r#"default: "10""#, r#"default: "1000""#));
    let run = wait_run_done(&ns, "partitioned-etl-manual", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    assert_eq!(summary_phase(&run, "quality-check"), Some(TaskPhase::Succeeded));
    assert_eq!(summary_phase(&run, "publish"), Some(TaskPhase::Skipped));
    let publish = run
        .status
        .as_ref()
        .unwrap()
        .tasks
        .iter()
        .find(|t| t.name == "publish")
        .unwrap()
        .message
        .clone();
    assert!(publish.unwrap_or_default().contains("when[0] is false"));
    assert!(
        task_run_opt(&ns, "partitioned-etl-manual", "publish")
            .await
            .is_none()
    );
    let aggregate = task_run(&ns, "partitioned-etl-manual", "aggregate")
        .await
        .status
        .unwrap();
    assert_eq!(aggregate.outputs["total"], "16");
}

/// Every instance of a fan-out is resolved before any starts: one whose spec is too large
/// fails the task with the reason, as a summary message and an Event. (The operator once
/// fell back to the unrendered spec, created a TaskRun without its instance index, and the
/// run hung.)
#[tokio::test]
async fn a_fan_out_instance_too_large_to_start_fails_the_task_with_the_reason() {
    let (ns, _op) = setup("oversized").await;
    ns.apply(&manifests::oversized_fan_out("oversized"));
    let run = wait_run_done(&ns, "oversized", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed, "{:?}", run.status);
    assert_eq!(condition_reason(&run), "TaskFailed");
    let status = run.status.unwrap();
    let shard = status
        .tasks
        .iter()
        .find(|t| t.name == "shard")
        .expect("shard in the summary");
    assert_eq!(shard.phase, TaskPhase::Failed);
    let message = shard.message.clone().unwrap_or_default();
    assert!(
        message.contains("forEach instance 1") && message.contains("resolved spec"),
        "{message}"
    );
    let task_runs: Api<TaskRun> = Api::namespaced(ns.client(), ns.name());
    let names: Vec<String> = task_runs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|tr| tr.spec.task_name.clone())
        .collect();
    assert_eq!(names, vec!["prep"], "no instance of shard was created");
    let events = events_with_reason(&ns, "TaskNotStarted");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("task shard failed without running: forEach instance 1"),
        "{events:?}"
    );
}

/// Outputs over the 4 KiB a termination message keeps are refused as cut, not passed on
/// shortened: a `key=value` line cut short still parses, so the value once arrived
/// downstream 4,094 characters long and the attempt was recorded `Succeeded`.
#[tokio::test]
async fn outputs_over_the_termination_message_limit_fail_the_attempt() {
    let (ns, _op) = setup("longout").await;
    ns.apply(&manifests::long_output("longout"));
    let run = wait_run_done(&ns, "longout", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed, "{:?}", run.status);
    let big = task_run(&ns, "longout", "big").await;
    let status = big.status.unwrap();
    assert_eq!(status.phase, Some(TaskPhase::Failed));
    let attempt = &status.attempts[0];
    assert_eq!(attempt.reason, Some(FailureReason::OutputError));
    let message = attempt.message.clone().unwrap_or_default();
    assert!(message.contains("4096-byte limit"), "{message}");
    assert!(status.outputs.is_empty(), "{:?}", status.outputs);
    assert!(task_run_opt(&ns, "longout", "use").await.is_none());
}

/// A TaskRun the API server refuses as invalid fails its task with the API server's
/// message, where the operator once retried the create forever and the run hung. The test
/// control plane's kube-apiserver (1.20.2 built with Go 1.19) refuses an empty string in a
/// list of a custom resource (kubernetes/kubernetes#99804), which an empty param in `args`
/// makes; on other clusters an admission webhook denying TaskRuns ends the same way.
#[tokio::test]
async fn a_task_run_the_api_server_refuses_fails_its_task_instead_of_hanging() {
    let (ns, _op) = setup("refused").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: refused}
spec:
  params: [{name: extra, default: ""}]
  defaults: {image: busybox}
  tasks:
    - {name: first, command: [sh, -c, "true"]}
    - {name: echo, dependsOn: [first], command: [echo], args: ["{{ params.extra }}"]}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: refused}
spec:
  pipelineRef: {name: refused}
"#,
    );
    let run = wait_run_done(&ns, "refused", RUN_TIMEOUT).await;
    let status = run.status.clone().unwrap();
    if status.refused.is_empty() {
        // An API server that accepts the empty string runs the task: nothing to refuse.
        assert_eq!(phase(&run), RunPhase::Succeeded, "{status:?}");
        return;
    }
    assert_eq!(phase(&run), RunPhase::Failed, "{status:?}");
    assert_eq!(status.refused[0].task, "echo");
    let echo = status.tasks.iter().find(|t| t.name == "echo").unwrap();
    assert_eq!(echo.phase, TaskPhase::Failed);
    assert!(
        echo.message
            .as_deref()
            .unwrap_or_default()
            .contains("the API server refused its TaskRun"),
        "{echo:?}"
    );
    let events = events_with_reason(&ns, "TaskNotStarted");
    assert!(
        events.iter().any(|e| e.contains("refused its TaskRun")),
        "{events:?}"
    );
}
