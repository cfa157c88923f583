//! Sensors against the real control plane: each kind (`delay`, `time`, `pipelineRun`,
//! `object`, `asset`) holds and times out as documented, and fails fast where it says so,
//! without creating a Job or a pod; a waiting sensor shows reason `Waiting` and takes no
//! `parallelism` slot.

mod common;

use common::cli::*;
use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;
use std::time::Duration;
use weir::api::condition::find;
use weir::api::{AttemptPhase, FailureReason, RunPhase, TaskPhase, TaskRun, labels};
use weir_testenv::{TestNamespace, wait_for};

const LONG: Duration = Duration::from_secs(120);

/// The attempt reason of a task's last attempt.
fn last_reason(tr: &TaskRun) -> Option<FailureReason> {
    tr.status.as_ref()?.attempts.last()?.reason
}

fn last_message(tr: &TaskRun) -> String {
    let status = tr.status.as_ref();
    status
        .and_then(|s| s.attempts.last())
        .and_then(|a| a.message.clone())
        .unwrap_or_default()
}

fn task_phase(tr: &TaskRun) -> Option<TaskPhase> {
    tr.status.as_ref()?.phase
}

/// No Job and no pod carries the TaskRun's uid, and no attempt names a Job.
async fn assert_no_pod(ns: &TestNamespace, tr: &TaskRun) {
    let selector = format!("{}={}", labels::TASK_RUN_UID, tr.uid().unwrap());
    let lp = ListParams::default().labels(&selector);
    let jobs = ns.api::<Job>().list(&lp).await.unwrap().items;
    let pods = ns.api::<Pod>().list(&lp).await.unwrap().items;
    assert!(jobs.is_empty(), "sensor {} made Jobs: {jobs:?}", tr.name_any());
    assert!(pods.is_empty(), "sensor {} made pods", tr.name_any());
    let attempts = &tr.status.as_ref().unwrap().attempts;
    assert!(!attempts.is_empty());
    assert!(attempts.iter().all(|a| a.job_name.is_empty()), "{attempts:?}");
}

/// Waits until the task's TaskRun says `Waiting` with a message that has `what` (the first
/// look fills in what for), and returns the message.
async fn seen_waiting(ns: &TestNamespace, run: &str, task: &str, what: &str) -> String {
    wait_for(
        &format!("{task} of {run} to be waiting: {what}"),
        LONG,
        || async {
            let tr = task_run_opt(ns, run, task).await.ok_or("no TaskRun yet")?;
            let status = tr.status.unwrap_or_default();
            match find(&status.conditions, "Succeeded") {
                Some(c) if c.reason == "Waiting" && c.message.contains(what) => Ok(c.message.clone()),
                c => Err(format!("condition {c:?}")),
            }
        },
    )
    .await
}

async fn done_task(ns: &TestNamespace, run: &str, task: &str) -> TaskRun {
    wait_for(&format!("{task} of {run} to finish"), LONG, || async {
        let tr = task_run_opt(ns, run, task).await.ok_or("no TaskRun yet")?;
        match task_phase(&tr) {
            Some(p) if p.is_terminal() => Ok(tr),
            p => Err(format!("phase {p:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_and_delay_sensors_hold_at_their_moment_and_time_out_without_a_pod() {
    let (ns, _op) = setup("sensors-time").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: clock}
spec:
  tasks:
    - name: soon
      wait: {pokeInterval: 1s, time: {from: runStart, offset: 3s}}
    - name: late
      timeout: 3s
      wait: {pokeInterval: 1s, time: {from: logicalDate, offset: 1h}}
    - name: pause
      wait: {pokeInterval: 1s, delay: 2s}
    - name: after
      dependsOn: [soon, pause]
      image: busybox
      command: [sh, -c, 'echo after']
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: clock-1}
spec:
  pipelineRef: {name: clock}
"#,
    );
    seen_waiting(&ns, "clock-1", "late", "waiting until").await;
    let table = ns.kubectl_ok(["get", "tr", "-o", "wide"]);
    assert!(
        table.contains("Waiting"),
        "kubectl get tr -o wide shows the reason:\n{table}"
    );

    let run = wait_run_done(&ns, "clock-1", LONG).await;
    assert_eq!(phase(&run), RunPhase::Failed, "late timed out");
    let started = run.status.as_ref().unwrap().start_time.clone().unwrap().0;

    let soon = task_run(&ns, "clock-1", "soon").await;
    assert_eq!(task_phase(&soon), Some(TaskPhase::Succeeded));
    let at = soon
        .spec
        .wait
        .as_ref()
        .unwrap()
        .time
        .as_ref()
        .unwrap()
        .at
        .clone()
        .unwrap()
        .0;
    assert_eq!(
        at,
        started + jiff::SignedDuration::from_secs(3),
        "resolved from the run's start"
    );
    let attempt = &soon.status.as_ref().unwrap().attempts[0];
    assert_eq!(attempt.phase, AttemptPhase::Succeeded);
    assert!(
        attempt.completion_time.as_ref().unwrap().0 >= at,
        "held only from its moment"
    );

    let late = task_run(&ns, "clock-1", "late").await;
    assert_eq!(task_phase(&late), Some(TaskPhase::Failed));
    assert_eq!(last_reason(&late), Some(FailureReason::DeadlineExceeded));
    assert!(
        last_message(&late).starts_with("timed out after 3s: still waiting until"),
        "{}",
        last_message(&late)
    );

    let pause = task_run(&ns, "clock-1", "pause").await;
    assert_eq!(task_phase(&pause), Some(TaskPhase::Succeeded));
    for tr in [&soon, &late, &pause] {
        assert_no_pod(&ns, tr).await;
    }
    let after = task_run(&ns, "clock-1", "after").await;
    assert_eq!(
        task_phase(&after),
        Some(TaskPhase::Succeeded),
        "downstream of sensors runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_run_sensor_waits_for_the_run_of_its_date_and_fails_fast_when_it_failed() {
    let (ns, _op) = setup("sensors-run").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: load}
spec:
  tasks:
    - name: copy
      image: busybox
      command: [sh, -c, 'echo copied']
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: broken}
spec:
  tasks:
    - name: copy
      image: busybox
      command: [sh, -c, 'exit 3']
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: report}
spec:
  params:
    - {name: upstream, default: load}
  tasks:
    - name: ready
      timeout: 60s
      wait:
        pokeInterval: 1s
        pipelineRun: {pipeline: '{{ params.upstream }}', task: copy}
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: report-yesterday}
spec:
  tasks:
    - name: ready
      timeout: 3s
      wait:
        pokeInterval: 1s
        pipelineRun: {pipeline: load, logicalDateOffset: -24h}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: report-1}
spec:
  pipelineRef: {name: report}
  logicalDate: "2026-12-01T00:00:00Z"
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: report-broken}
spec:
  pipelineRef: {name: report}
  params: {upstream: broken}
  logicalDate: "2026-12-01T00:00:00Z"
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: report-yesterday-1}
spec:
  pipelineRef: {name: report-yesterday}
  logicalDate: "2026-12-01T00:00:00Z"
"#,
    );
    seen_waiting(&ns, "report-1", "ready", "no such run yet").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: load-other-day}
spec:
  pipelineRef: {name: load}
  logicalDate: "2026-11-29T00:00:00Z"
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: load-1}
spec:
  pipelineRef: {name: load}
  logicalDate: "2026-12-01T00:00:00Z"
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: broken-1}
spec:
  pipelineRef: {name: broken}
  logicalDate: "2026-12-01T00:00:00Z"
"#,
    );
    let report = wait_run_done(&ns, "report-1", LONG).await;
    assert_eq!(phase(&report), RunPhase::Succeeded);
    let ready = task_run(&ns, "report-1", "ready").await;
    assert!(
        last_message(&ready).contains("(load-1) succeeded"),
        "{}",
        last_message(&ready)
    );
    assert_eq!(
        ready
            .spec
            .wait
            .as_ref()
            .unwrap()
            .pipeline_run
            .as_ref()
            .unwrap()
            .pipeline,
        "load"
    );
    assert_no_pod(&ns, &ready).await;

    // The upstream task failed: the sensor fails at once, long before its 60s timeout.
    let broken = wait_run_done(&ns, "report-broken", Duration::from_secs(50)).await;
    assert_eq!(phase(&broken), RunPhase::Failed);
    let ready = task_run(&ns, "report-broken", "ready").await;
    assert_eq!(last_reason(&ready), Some(FailureReason::WaitFailed));
    assert!(
        last_message(&ready).contains(
            "task \"copy\" of pipeline \"broken\"'s run for 2026-12-01T00:00:00Z (broken-1) ended Failed"
        ),
        "{}",
        last_message(&ready)
    );
    assert_no_pod(&ns, &ready).await;

    // The day before has no run of `load`: a timeout.
    let yesterday = wait_run_done(&ns, "report-yesterday-1", LONG).await;
    assert_eq!(phase(&yesterday), RunPhase::Failed);
    let ready = task_run(&ns, "report-yesterday-1", "ready").await;
    assert_eq!(last_reason(&ready), Some(FailureReason::DeadlineExceeded));
    assert!(
        last_message(&ready).contains("run for 2026-11-30T00:00:00Z"),
        "{}",
        last_message(&ready)
    );
    assert_no_pod(&ns, &ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_sensor_waits_for_a_field_or_a_condition_and_names_an_unknown_kind() {
    let (ns, _op) = setup("sensors-object").await;
    ns.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: flag}
data: {ready: "no"}
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: gate}
spec:
  tasks:
    - name: flag
      timeout: 90s
      wait:
        pokeInterval: 1s
        object: {apiVersion: v1, kind: ConfigMap, name: flag, field: {path: data.ready, value: "yes"}}
    - name: other-run
      timeout: 90s
      wait:
        pokeInterval: 1s
        object: {apiVersion: weir.dev/v1alpha1, kind: PipelineRun, name: quick-1, condition: {type: Succeeded}}
    - name: missing
      timeout: 3s
      wait: {pokeInterval: 1s, object: {apiVersion: v1, kind: Service, name: nowhere}}
    - name: unknown
      timeout: 90s
      wait: {pokeInterval: 1s, object: {apiVersion: example.com/v1, kind: Widget, name: w}}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: gate-1}
spec:
  pipelineRef: {name: gate}
"#,
    );
    let expected = "waiting for ConfigMap \"flag\"'s data.ready to be \"yes\" (now \"no\")";
    seen_waiting(&ns, "gate-1", "flag", expected).await;
    seen_waiting(&ns, "gate-1", "other-run", "PipelineRun \"quick-1\" to exist").await;
    ns.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: flag}
data: {ready: "yes"}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: quick-1}
spec:
  pipelineSpec:
    tasks:
      - {name: hello, image: busybox, command: [sh, -c, 'echo hi']}
"#,
    );
    let flag = done_task(&ns, "gate-1", "flag").await;
    assert_eq!(
        task_phase(&flag),
        Some(TaskPhase::Succeeded),
        "{}",
        last_message(&flag)
    );
    let other = done_task(&ns, "gate-1", "other-run").await;
    assert_eq!(
        task_phase(&other),
        Some(TaskPhase::Succeeded),
        "{}",
        last_message(&other)
    );
    let missing = done_task(&ns, "gate-1", "missing").await;
    assert_eq!(last_reason(&missing), Some(FailureReason::DeadlineExceeded));
    assert!(last_message(&missing).contains("Service \"nowhere\" to exist"));
    let unknown = done_task(&ns, "gate-1", "unknown").await;
    assert_eq!(last_reason(&unknown), Some(FailureReason::WaitFailed));
    assert!(
        last_message(&unknown).contains("no kind Widget in apiVersion example.com/v1"),
        "{}",
        last_message(&unknown)
    );
    for tr in [&flag, &other, &missing, &unknown] {
        assert_no_pod(&ns, tr).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asset_sensor_holds_on_an_update_after_the_run_started() {
    let (ns, _op) = setup("sensors-asset").await;
    // An update before the run does not count. Asset event times are whole seconds, and
    // only an event of a later second than the run's start counts: each update here is
    // made in a second of its own.
    stdout_ok(&weir(&ns, &["asset", "update", "sales/daily"]));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: consume}
spec:
  tasks:
    - name: fresh
      timeout: 90s
      wait: {pokeInterval: 1s, asset: {name: sales/daily, since: runStart}}
    - name: never
      timeout: 3s
      wait: {pokeInterval: 1s, asset: {name: sales/never}}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: consume-1}
spec:
  pipelineRef: {name: consume}
"#,
    );
    let expected = "waiting for asset \"sales/daily\" to be updated after";
    let message = seen_waiting(&ns, "consume-1", "fresh", expected).await;
    assert!(
        message.contains("last update"),
        "the earlier update is known: {message}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    stdout_ok(&weir(&ns, &["asset", "update", "sales/daily"]));
    let fresh = done_task(&ns, "consume-1", "fresh").await;
    assert_eq!(
        task_phase(&fresh),
        Some(TaskPhase::Succeeded),
        "{}",
        last_message(&fresh)
    );
    assert!(
        last_message(&fresh).contains("(event 2)"),
        "{}",
        last_message(&fresh)
    );
    let never = done_task(&ns, "consume-1", "never").await;
    assert_eq!(last_reason(&never), Some(FailureReason::DeadlineExceeded));
    assert!(
        last_message(&never).contains("(never updated)"),
        "{}",
        last_message(&never)
    );
    for tr in [&fresh, &never] {
        assert_no_pod(&ns, tr).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_sensor_takes_no_parallelism_slot() {
    let (ns, _op) = setup("sensors-slot").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: narrow}
spec:
  parallelism: 1
  tasks:
    - name: hold
      wait: {pokeInterval: 1s, delay: 10m}
    - name: first
      image: busybox
      command: [sh, -c, 'echo one']
    - name: second
      image: busybox
      command: [sh, -c, 'echo two']
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: narrow-1}
spec:
  pipelineRef: {name: narrow}
"#,
    );
    seen_waiting(&ns, "narrow-1", "hold", "waiting 10m").await;
    let first = done_task(&ns, "narrow-1", "first").await;
    let second = done_task(&ns, "narrow-1", "second").await;
    assert_eq!(task_phase(&first), Some(TaskPhase::Succeeded));
    assert_eq!(task_phase(&second), Some(TaskPhase::Succeeded));
    let hold = task_run(&ns, "narrow-1", "hold").await;
    assert_eq!(
        task_phase(&hold),
        Some(TaskPhase::Running),
        "still waiting meanwhile"
    );
    // parallelism 1 still held for pods: the two pod tasks never ran at once.
    let (a, b) = (first.status.unwrap(), second.status.unwrap());
    let (a_end, b_start) = (a.completion_time.unwrap().0, b.start_time.unwrap().0);
    let (b_end, a_start) = (b.completion_time.unwrap().0, a.start_time.unwrap().0);
    assert!(a_end <= b_start || b_end <= a_start, "one pod task at a time");
    let out = stdout_ok(&weir(&ns, &["get", "narrow-1"]));
    assert!(
        out.contains("Waiting"),
        "weir get shows the sensor waiting:\n{out}"
    );
    assert!(out.contains("waiting 10m"), "and what for:\n{out}");
    stdout_ok(&weir(&ns, &["cancel", "narrow-1"]));
    let run = wait_run_done(&ns, "narrow-1", LONG).await;
    assert_eq!(phase(&run), RunPhase::Cancelled);
    let hold = task_run(&ns, "narrow-1", "hold").await;
    assert_eq!(
        task_phase(&hold),
        Some(TaskPhase::Cancelled),
        "a waiting sensor can be cancelled"
    );
    assert_no_pod(&ns, &hold).await;
}

#[test]
fn the_sensor_example_is_a_valid_pipeline() {
    let text = std::fs::read_to_string(repo_root().join("examples/sensors/daily-report.yaml")).unwrap();
    let pipeline: weir::api::Pipeline = serde_saphyr::from_str(&text).expect("a Pipeline");
    let valid = weir::engine::validate(&pipeline.spec).expect("valid");
    let sensors: Vec<&str> = (0..valid.len())
        .filter(|&i| valid.waits(i))
        .map(|i| valid.name(i))
        .collect();
    assert_eq!(sensors, ["sales-loaded", "model-ready", "settled"]);
}
