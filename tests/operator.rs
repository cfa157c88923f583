//! The operator against a real control plane: Pipelines, PipelineRuns and TaskRuns run as
//! Jobs in DAG order, with retries, trigger rules, parallelism, timeouts, cancellation,
//! validation, restart safety and garbage collection.

mod common;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use std::time::Duration;
use weir::api::{AttemptPhase, FailureReason, Pipeline, PipelineRun, RunPhase, TaskPhase, TaskRun};
use weir_testenv::{pids_with_cmdline, unique_marker, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn diamond_jobs_are_created_in_dag_order() {
    let (ns, _op) = setup("diamond").await;
    let jobs = JobRecorder::start(&ns).await;
    ns.apply(&example("diamond"));
    let run = wait_run_done(&ns, "diamond-manual", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);

    // A task's Job appears only after the Jobs of everything it depends on completed.
    for (task, upstream) in [
        ("left", "start"),
        ("right", "start"),
        ("join", "left"),
        ("join", "right"),
    ] {
        assert!(
            jobs.created_index(task) > jobs.finished_index(upstream),
            "{task} started before {upstream} finished: {:?}",
            jobs.events()
        );
    }
    assert_eq!(jobs.created().len(), 4, "one Job per task: {:?}", jobs.created());
    let status = run.status.unwrap();
    assert_eq!(status.progress.as_deref(), Some("4/4"));
    assert!(status.duration.is_some() && status.completion_time.is_some());
    // Owner references all the way down: Job -> TaskRun -> PipelineRun.
    let job: Job = ns.api::<Job>().get("diamond-manual-join-1").await.unwrap();
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("TaskRun", "diamond-manual-join")
    );
    let tr = task_run(&ns, "diamond-manual", "join").await;
    assert_eq!(tr.metadata.owner_references.unwrap()[0].kind, "PipelineRun");
}

#[tokio::test]
async fn failing_task_is_retried_with_backoff_and_every_attempt_recorded() {
    let (ns, _op) = setup("retry").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: flaky}
spec:
  pipelineSpec:
    tasks:
      - name: fetch
        image: busybox
        command: [sh, -c, 'echo "try $WEIR_ATTEMPT"; [ "$WEIR_ATTEMPT" -ge 3 ] || exit 75']
        retries: {limit: 4, delay: 2s, backoffFactor: 2}
      - name: bad-input
        image: busybox
        command: [sh, -c, 'exit 2']
        retries: {limit: 4, delay: 1s, retryOn: {exceptExitCodes: [2]}}
"#,
    );
    let run = wait_run_done(&ns, "flaky", RUN_TIMEOUT).await;
    // bad-input fails without retry (exit code 2 is excluded), so the run fails.
    assert_eq!(phase(&run), RunPhase::Failed);
    assert_eq!(condition_reason(&run), "TaskFailed");

    let fetch = task_run(&ns, "flaky", "fetch").await.status.unwrap();
    assert_eq!(fetch.phase, Some(TaskPhase::Succeeded));
    let codes: Vec<Option<i32>> = fetch.attempts.iter().map(|a| a.exit_code).collect();
    assert_eq!(codes, vec![Some(75), Some(75), Some(0)]);
    assert_eq!(fetch.attempts[0].reason, Some(FailureReason::Error));
    assert_eq!(fetch.attempts[2].phase, AttemptPhase::Succeeded);
    let jobs: Vec<&str> = fetch.attempts.iter().map(|a| a.job_name.as_str()).collect();
    assert_eq!(jobs, vec!["flaky-fetch-1", "flaky-fetch-2", "flaky-fetch-3"]);
    // Delays of 2s then 4s between one attempt's end and the next one's start (timestamps
    // have whole-second precision, hence the second of slack).
    for (i, want) in [(1usize, 2i64), (2, 4)] {
        let ended = fetch.attempts[i - 1].completion_time.as_ref().unwrap().0;
        let started = fetch.attempts[i].start_time.as_ref().unwrap().0;
        let gap = started.duration_since(ended).as_secs();
        assert!(
            gap >= want - 1,
            "attempt {} started {gap}s after attempt {i} ended; want >= {want}s",
            i + 1
        );
    }

    let bad = task_run(&ns, "flaky", "bad-input").await.status.unwrap();
    assert_eq!(
        bad.attempts.len(),
        1,
        "exit code 2 must not be retried: {:?}",
        bad.attempts
    );
    assert_eq!(bad.phase, Some(TaskPhase::Failed));
    assert!(!events_with_reason(&ns, "TaskRetrying").is_empty());
    // Warnings about tasks are on the run; routine news only on each task's TaskRun.
    for (reason, on) in [
        ("TaskRetrying", "PipelineRun"),
        ("TaskFailed", "PipelineRun"),
        ("TaskStarted", "TaskRun"),
        ("TaskSucceeded", "TaskRun"),
    ] {
        let kinds = kinds_of_events(&ns, reason);
        assert!(
            !kinds.is_empty() && kinds.iter().all(|k| k == on),
            "{reason} Events are about {kinds:?}, want {on}"
        );
    }
    assert!(
        events_with_reason(&ns, "TaskFailed")
            .iter()
            .any(|e| e.contains("bad-input"))
    );
}

#[tokio::test]
async fn gate_failure_stops_deploy_and_finally_still_reports() {
    let s3 = common::s3::S3Server::start("mlgate");
    let (ns, _op) = common::s3::setup_with_store("mlgate", &s3, common::s3::SECRET_KEY).await;
    let jobs = JobRecorder::start(&ns).await;
    ns.apply(&example("ml-training").replace(r#"value: "0.90""#, r#"value: "0.99""#));
    let run = wait_run_done(&ns, "ml-training-manual", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    assert_eq!(condition_reason(&run), "TaskFailed");
    assert_eq!(summary_phase(&run, "validate"), Some(TaskPhase::Failed));
    assert_eq!(summary_phase(&run, "deploy"), Some(TaskPhase::UpstreamFailed));
    assert_eq!(summary_phase(&run, "report"), Some(TaskPhase::Succeeded));
    assert!(
        task_run_opt(&ns, "ml-training-manual", "deploy").await.is_none(),
        "deploy must never get a TaskRun"
    );
    assert!(jobs.created().iter().all(|(_, task, _)| task != "deploy"));
    // The finally task ran after every other task was done.
    assert!(jobs.created_index("report") > jobs.finished_index("validate"));
    let validate = task_run(&ns, "ml-training-manual", "validate")
        .await
        .status
        .unwrap();
    let message = validate.attempts[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("below 0.99"),
        "the failure's log tail is the attempt message: {message:?}"
    );
}

#[tokio::test]
async fn trigger_rules_run_the_alert_only_when_a_check_failed() {
    let (ns, _op) = setup("quality").await;
    // All checks pass: the alert is skipped.
    ns.apply(&example("data-quality"));
    let run = wait_run_done(&ns, "data-quality-manual", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded);
    assert_eq!(summary_phase(&run, "alert"), Some(TaskPhase::Skipped));
    assert_eq!(summary_phase(&run, "report"), Some(TaskPhase::Succeeded));

    // One check fails: the report still runs (AllDone), the alert fires (OneFailed), and the
    // handled failure does not fail the run.
    let failing = example("data-quality")
        .replace("value: none", "value: check-duplicates")
        .replace("name: data-quality-manual", "name: data-quality-failing");
    ns.apply(&failing);
    let run = wait_run_done(&ns, "data-quality-failing", RUN_TIMEOUT).await;
    assert_eq!(summary_phase(&run, "check-duplicates"), Some(TaskPhase::Failed));
    assert_eq!(summary_phase(&run, "alert"), Some(TaskPhase::Succeeded));
    assert_eq!(summary_phase(&run, "report"), Some(TaskPhase::Succeeded));
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
}

#[tokio::test]
async fn parallelism_limit_is_never_exceeded() {
    let (ns, _op) = setup("parallel").await;
    let jobs = JobRecorder::start(&ns).await;
    let tasks: String = (0..6)
        .map(|i| format!("      - {{name: t{i}, image: busybox, command: [sh, -c, 'sleep 1']}}\n"))
        .collect();
    ns.apply(&format!(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {{name: wide}}\nspec:\n  pipelineSpec:\n    parallelism: 2\n    tasks:\n{tasks}"
    ));
    let run = wait_run_done(&ns, "wide", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded);
    assert_eq!(jobs.created().len(), 6);
    let most = jobs.max_concurrent();
    assert!(
        most <= 2,
        "{most} Jobs ran at once with parallelism 2: {:?}",
        jobs.events()
    );
    assert_eq!(most, 2, "parallelism 2 should be used fully");
}

#[tokio::test]
async fn task_timeout_fails_the_attempt_with_deadline_exceeded() {
    let (ns, _op) = setup("tasktimeout").await;
    let marker = unique_marker("weir-task-timeout");
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: slow}}
spec:
  pipelineSpec:
    tasks:
      - name: sleepy
        image: busybox
        command: [sh, -c, 'sleep 60; : {marker}']
        timeout: 2s
"#
    ));
    let run = wait_run_done(&ns, "slow", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    let tr = task_run(&ns, "slow", "sleepy").await.status.unwrap();
    assert_eq!(
        tr.attempts[0].reason,
        Some(FailureReason::DeadlineExceeded),
        "{:?}",
        tr.attempts
    );
    wait_process_gone(&marker, "the timed-out process to be gone").await;
}

#[tokio::test]
async fn run_timeout_cancels_running_tasks_and_finally_still_runs() {
    let (ns, _op) = setup("runtimeout").await;
    let marker = unique_marker("weir-run-timeout");
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: late}}
spec:
  timeout: 3s
  pipelineSpec:
    tasks:
      - {{name: long, image: busybox, command: [sh, -c, 'sleep 60; : {marker}']}}
      - {{name: after, image: busybox, command: [sh, -c, 'true'], dependsOn: [long]}}
    finally:
      - {{name: cleanup, image: busybox, command: [sh, -c, 'echo cleaning up']}}
"#
    ));
    let run = wait_run_done(&ns, "late", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    assert_eq!(condition_reason(&run), "RunTimeout");
    assert_eq!(summary_phase(&run, "long"), Some(TaskPhase::Cancelled));
    assert_eq!(summary_phase(&run, "cleanup"), Some(TaskPhase::Succeeded));
    assert!(task_run_opt(&ns, "late", "after").await.is_none());
    let jobs: Api<Job> = ns.api();
    wait_for(
        "the cancelled Job to be deleted",
        Duration::from_secs(30),
        || async {
            match jobs.get_opt("late-long-1").await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("Job late-long-1 still exists".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    wait_process_gone(&marker, "the cancelled process to be gone").await;
}

#[tokio::test]
async fn cancel_stops_running_jobs_and_runs_finally() {
    let (ns, _op) = setup("cancel").await;
    let marker = unique_marker("weir-cancel");
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: stopme}}
spec:
  pipelineSpec:
    tasks:
      - {{name: long, image: busybox, command: [sh, -c, 'sleep 120; : {marker}']}}
      - {{name: next, image: busybox, command: [sh, -c, 'true'], dependsOn: [long]}}
    finally:
      - {{name: notify, image: busybox, command: [sh, -c, 'echo run ended']}}
"#
    ));
    wait_for(
        "the long task's process to start",
        Duration::from_secs(60),
        || async {
            if pids_with_cmdline(&marker).is_empty() {
                None
            } else {
                Some(())
            }
        },
    )
    .await;
    let runs: Api<PipelineRun> = ns.api();
    runs.patch(
        "stopme",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"cancelled": true}})),
    )
    .await
    .unwrap();
    let run = wait_run_done(&ns, "stopme", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Cancelled);
    assert_eq!(condition_reason(&run), "Cancelled");
    assert_eq!(summary_phase(&run, "long"), Some(TaskPhase::Cancelled));
    assert_eq!(summary_phase(&run, "next"), Some(TaskPhase::Cancelled));
    assert_eq!(summary_phase(&run, "notify"), Some(TaskPhase::Succeeded));
    let long = task_run(&ns, "stopme", "long").await.status.unwrap();
    assert_eq!(long.attempts[0].reason, Some(FailureReason::Cancelled));
    wait_process_gone(&marker, "the cancelled process to be gone").await;
}

#[tokio::test]
async fn invalid_pipeline_gets_condition_and_event_and_never_a_job() {
    let (ns, _op) = setup("invalid").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: broken}
spec:
  tasks:
    - {name: a, image: busybox, dependsOn: [c]}
    - {name: b, image: busybox, dependsOn: [a]}
    - {name: c, image: busybox, dependsOn: [b]}
    - {name: d, image: busybox, dependsOn: [extrct]}
    - {name: extract, image: busybox}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: broken-run}
spec:
  pipelineRef: {name: broken}
"#,
    );
    let pipelines: Api<Pipeline> = ns.api();
    let message = wait_for(
        "the Pipeline's Ready condition",
        Duration::from_secs(60),
        || async {
            let p = pipelines.get("broken").await.map_err(|e| e.to_string())?;
            let status = p.status.ok_or("no status")?;
            let ready = weir::api::condition::find(&status.conditions, "Ready")
                .ok_or("no Ready condition")?
                .clone();
            if ready.status == "False" && ready.reason == "InvalidPipeline" {
                Ok(ready.message)
            } else {
                Err(format!("{ready:?}"))
            }
        },
    )
    .await;
    assert!(
        message.contains("dependency cycle: a -> b -> c -> a"),
        "{message}"
    );
    assert!(
        message.contains(r#"unknown task "extrct" (did you mean "extract"?)"#),
        "{message}"
    );

    let run = wait_run_done(&ns, "broken-run", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    assert_eq!(condition_reason(&run), "InvalidPipeline");
    wait_for("InvalidPipeline events", Duration::from_secs(30), || async {
        let events = events_with_reason(&ns, "InvalidPipeline");
        if events.len() >= 2 && events.iter().all(|e| e.contains("dependency cycle")) {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    let jobs = ns.api::<Job>().list(&ListParams::default()).await.unwrap();
    assert!(
        jobs.items.is_empty(),
        "an invalid pipeline must never create a Job"
    );
    let trs = ns.api::<TaskRun>().list(&ListParams::default()).await.unwrap();
    assert!(trs.items.is_empty());

    // Fixing the pipeline flips Ready to True.
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: broken}
spec:
  tasks:
    - {name: extract, image: busybox}
"#,
    );
    wait_for("Ready=True after the fix", Duration::from_secs(60), || async {
        let p = pipelines.get("broken").await.ok()?;
        let ready = weir::api::condition::find(&p.status?.conditions, "Ready")?.clone();
        (ready.status == "True").then_some(())
    })
    .await;
}

#[tokio::test]
async fn operator_killed_mid_run_finishes_the_run_without_duplicate_jobs() {
    let (ns, mut op) = setup("restart").await;
    let jobs = JobRecorder::start(&ns).await;
    ns.apply(&chain_with_flaky_run("chain", 6, "sleep 0.5"));
    // Kill it at a few different moments of the run.
    for delay_ms in [700u64, 1100, 900, 1300] {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        op.restart();
    }
    let run = wait_run_done(&ns, "chain", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    // One Job per task, two for the task that fails once.
    jobs.assert_each_created_once(8);
    let flaky = task_run(&ns, "chain", "flaky").await.status.unwrap();
    assert_eq!(flaky.attempts.len(), 2);
}

#[tokio::test]
async fn deleting_a_run_removes_its_task_runs_and_jobs() {
    let (ns, _op) = setup("gc").await;
    ns.apply(&example("diamond"));
    let run = wait_run_done(&ns, "diamond-manual", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded);
    assert_eq!(
        ns.api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        4
    );
    ns.api::<PipelineRun>()
        .delete("diamond-manual", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(
        "TaskRuns and Jobs to be garbage-collected",
        Duration::from_secs(90),
        || async {
            let trs = ns
                .api::<TaskRun>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            let jobs = ns
                .api::<Job>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if trs == 0 && jobs == 0 {
                Ok(())
            } else {
                Err(format!("{trs} TaskRuns, {jobs} Jobs left"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn run_follows_its_snapshot_when_the_pipeline_changes_or_goes() {
    let (ns, _op) = setup("snapshot").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: two-steps}
spec:
  tasks:
    - {name: first, image: busybox, command: [sh, -c, 'sleep 2']}
    - {name: second, image: busybox, command: [sh, -c, 'echo original'], dependsOn: [first]}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: pinned}
spec:
  pipelineRef: {name: two-steps}
"#,
    );
    let runs: Api<PipelineRun> = ns.api();
    wait_for(
        "the run to take its snapshot",
        Duration::from_secs(60),
        || async {
            runs.get("pinned")
                .await
                .ok()?
                .status?
                .pipeline_revision
                .map(|_| ())
        },
    )
    .await;
    // Break the pipeline and then delete it: the run in flight must not notice.
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: two-steps}
spec:
  tasks:
    - {name: first, image: busybox, command: [sh, -c, 'exit 1']}
    - {name: second, image: busybox, command: [sh, -c, 'exit 1'], dependsOn: [first]}
"#,
    );
    ns.api::<Pipeline>()
        .delete("two-steps", &DeleteParams::default())
        .await
        .unwrap();
    let run = wait_run_done(&ns, "pinned", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    let second = task_run(&ns, "pinned", "second").await;
    assert_eq!(second.spec.command, vec!["sh", "-c", "echo original"]);
}

/// Every example in `examples/`, each a Pipeline plus a PipelineRun named `<example>-manual`.
const EXAMPLES: [&str; 8] = [
    "daily-sales-etl",
    "ml-training",
    "data-quality",
    "diamond",
    "flaky-task",
    "partitioned-etl",
    "warehouse-loads",
    "retrain-churn",
];

#[tokio::test]
async fn examples_run_to_completion_and_kubectl_wait_works() {
    // ml-training passes its model through artifacts.
    let s3 = common::s3::S3Server::start("examples");
    let (ns, _op) = common::s3::setup_with_store("examples", &s3, common::s3::SECRET_KEY).await;
    for name in EXAMPLES {
        ns.apply(&example(name));
    }
    for name in EXAMPLES {
        let run = format!("pipelinerun/{name}-manual");
        let out = ns.kubectl(["wait", "--for=condition=Succeeded", "--timeout=120s", &run]);
        assert!(
            out.status.success(),
            "kubectl wait {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let table = ns.kubectl_ok(["get", "pipelineruns"]);
    assert!(
        table.contains("PROGRESS") && table.contains("DURATION"),
        "{table}"
    );
    assert!(table.contains("3/3"), "progress column: {table}");
    // The pool of warehouse-loads, with its printer columns, empty once its run is done.
    wait_for("kubectl get pools", Duration::from_secs(30), || async {
        let pools = ns.kubectl_ok(["get", "pools"]);
        let words = |line: Option<&str>| -> Vec<String> {
            line.unwrap_or_default()
                .split_whitespace()
                .take(5)
                .map(String::from)
                .collect()
        };
        let (header, row) = (words(pools.lines().next()), words(pools.lines().nth(1)));
        (header == ["NAME", "SLOTS", "OCCUPIED", "QUEUED", "AGE"]
            && row
                .iter()
                .take(4)
                .map(String::as_str)
                .eq(["warehouse", "2", "0", "0"]))
        .then_some(())
        .ok_or(pools)
    })
    .await;
    // Every examples/*.yaml (examples/sensors/ holds cluster-only examples that wait for
    // other pipelines and objects: tests/sensors.rs checks them).
    let listed = example_names();
    for name in &listed {
        assert!(
            EXAMPLES.contains(&name.as_str()),
            "example {name} is not run by this test"
        );
    }
    let flaky = task_run(&ns, "flaky-task-manual", "fetch").await.status.unwrap();
    assert_eq!(flaky.attempts.len(), 3);
    let explain = ns.kubectl_ok(["explain", "pipeline.spec.tasks"]);
    assert!(
        explain.contains("dependsOn") && explain.contains("triggerRule"),
        "{explain}"
    );
}

/// Issue 14 (memory): a TaskRun the operator is done with is marked `weir.dev/finished`
/// and leaves its watch; an operator started again beside finished runs neither
/// reconciles their TaskRuns nor changes them.
#[tokio::test]
async fn finished_task_runs_are_marked_and_left_alone_by_a_restarted_operator() {
    let (ns, mut op) = setup("finished-mark").await;
    ns.apply(&chain_with_flaky_run("done", 2, "true"));
    let run = wait_run_done(&ns, "done", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    let before = wait_all_marked_finished(&ns, "done").await;
    assert_eq!(before.len(), 3);
    let listed = ns.kubectl_ok(["get", "taskruns", "-l", "weir.dev/finished!=true", "-o", "name"]);
    assert!(listed.trim().is_empty(), "still at work: {listed}");
    let run = ns.api::<PipelineRun>().get("done").await.unwrap();

    op.restart();
    let addr = op.http_addr().await;
    // The run's reconcile is the sign that the restarted operator has looked.
    let metrics = wait_for("the finished run reconciled", RUN_TIMEOUT, || async {
        let metrics = scrape(addr).await;
        let runs = sample(
            &metrics,
            "weir_reconcile_duration_seconds_count{controller=\"pipelinerun\"}",
        );
        if runs.unwrap_or(0.0) >= 1.0 {
            Ok(metrics)
        } else {
            Err(metrics)
        }
    })
    .await;
    assert_eq!(
        sample(
            &metrics,
            "weir_reconcile_duration_seconds_count{controller=\"taskrun\"}"
        ),
        Some(0.0),
        "finished TaskRuns are not even in the operator's watch"
    );
    let versions = |trs: &[TaskRun]| -> Vec<Option<String>> {
        trs.iter().map(|t| t.metadata.resource_version.clone()).collect()
    };
    assert_eq!(versions(&task_runs_of(&ns, "done").await), versions(&before));
    let after = ns.api::<PipelineRun>().get("done").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, run.metadata.resource_version,
        "the finished run is as it was"
    );
}
