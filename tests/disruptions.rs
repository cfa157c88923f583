//! Disruptions on a real control plane: attempts ended from outside the task (its Job
//! deleted, as the garbage collector does after an API server restart; its pod deleted while
//! it ran) are retried without spending `retries.limit`, up to `retries.disruptions`, and a
//! task whose Jobs keep being deleted can still be cancelled.

mod common;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::api::{AttemptPhase, PipelineRun, RunPhase, TaskPhase, TaskRun, TaskRunStatus};
use weir::engine::names::{job_name, task_run_name};
use weir_testenv::{TestNamespace, pids_with_cmdline, unique_marker, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A task that writes its attempt number as output `attempt`, and on its first attempt then
/// sleeps for a minute (long enough to be disrupted); later attempts end at once.
fn slow_first_attempt(name: &str, marker: &str) -> String {
    format!(
        r#"      - name: {name}
        image: busybox
        command: [sh, -c, 'echo "attempt=$WEIR_ATTEMPT" > "$WEIR_OUTPUTS"; [ "$WEIR_ATTEMPT" -ge 2 ] || sleep 60; : {marker}']
        outputs: [{{name: attempt}}]
"#
    )
}

fn run_of(name: &str, tasks: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {{name: {name}}}\nspec:\n  pipelineSpec:\n    tasks:\n{tasks}"
    )
}

async fn wait_process(marker: &str, what: &str) {
    wait_for(what, Duration::from_secs(60), || async {
        (!pids_with_cmdline(marker).is_empty()).then_some(())
    })
    .await;
}

async fn status_of(ns: &TestNamespace, run: &str, task: &str) -> TaskRunStatus {
    task_run(ns, run, task).await.status.expect("TaskRun status")
}

fn reason_of(status: &TaskRunStatus, attempt: usize) -> Option<&'static str> {
    status.attempts[attempt].reason.map(|r| r.as_str())
}

/// Finding 1 of issue 11: a Job that vanishes (removed by the garbage collector while its
/// TaskRun was briefly unreadable) failed a task that never failed. Now the task runs again
/// without spending its retries, which it has none of.
#[tokio::test]
async fn a_deleted_job_is_retried_as_a_disruption() {
    let (ns, _op) = setup("lostjob").await;
    let (bg, fg) = (unique_marker("weir-lost-bg"), unique_marker("weir-lost-fg"));
    let tasks = slow_first_attempt("bg", &bg) + &slow_first_attempt("fg", &fg);
    ns.apply(&run_of("lost", &tasks));
    wait_process(&bg, "task bg's first attempt to run").await;
    wait_process(&fg, "task fg's first attempt to run").await;
    // The two ways the garbage collector deletes dependents.
    let jobs: Api<Job> = ns.api();
    let trs = [task_run_name("lost", "bg"), task_run_name("lost", "fg")];
    jobs.delete(&job_name(&trs[0], 1), &DeleteParams::background())
        .await
        .unwrap();
    jobs.delete(&job_name(&trs[1], 1), &DeleteParams::foreground())
        .await
        .unwrap();

    let run = wait_run_done(&ns, "lost", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    for task in ["bg", "fg"] {
        let status = status_of(&ns, "lost", task).await;
        assert_eq!(status.phase, Some(TaskPhase::Succeeded), "{task}");
        assert_eq!(status.attempts.len(), 2, "{task}: {:?}", status.attempts);
        assert_eq!(reason_of(&status, 0), Some("Lost"), "{task}");
        let message = status.attempts[0].message.clone().unwrap_or_default();
        assert!(message.contains("was deleted"), "{task}: {message}");
        assert_eq!(status.attempts[1].phase, AttemptPhase::Succeeded, "{task}");
        assert_eq!(status.outputs.get("attempt").map(String::as_str), Some("2"));
    }
    wait_process_gone(&bg, "the deleted Job's process to be gone").await;
    wait_process_gone(&fg, "the deleted Job's process to be gone").await;
    let events = events_with_reason(&ns, "TaskDisrupted");
    assert!(
        events.iter().any(|e| e.contains("task bg") && e.contains("Lost")),
        "{events:?}"
    );
}

/// Finding 3 of issue 11: on Kubernetes 1.20 the Job controller replaces a pod deleted while
/// it runs, and the task started over inside the same attempt. Now the attempt ends as a
/// disruption (`PodDeleted`), its Job (and the replacement) is stopped, and a new attempt
/// runs with `WEIR_ATTEMPT=2`.
#[tokio::test]
async fn a_pod_deleted_while_running_starts_a_new_attempt() {
    let (ns, _op) = setup("podgone").await;
    let marker = unique_marker("weir-pod-deleted");
    ns.apply(&run_of("podgone", &slow_first_attempt("work", &marker)));
    wait_process(&marker, "the first attempt to run").await;
    let pods: Api<Pod> = ns.api();
    let job = job_name(&task_run_name("podgone", "work"), 1);
    let selector = format!("job-name={job}");
    let listed = pods.list(&ListParams::default().labels(&selector)).await.unwrap();
    assert_eq!(listed.items.len(), 1, "{:?}", listed.items);
    let pod = listed.items[0].metadata.name.clone().unwrap();
    // Once the operator has seen the pod, it can tell it from a replacement by name.
    wait_for("the attempt to record its pod", RUN_TIMEOUT, || async {
        let status = status_of(&ns, "podgone", "work").await;
        let recorded = status.attempts.first().and_then(|a| a.pod_name.clone());
        (recorded.as_ref() == Some(&pod))
            .then_some(())
            .ok_or(format!("{recorded:?}"))
    })
    .await;
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();

    // Without the fix, either the replacement pod runs attempt 1 again for another minute,
    // or the Job counts the killed pod as a failure (exit code 143) and the task fails.
    let run = wait_run_done(&ns, "podgone", Duration::from_secs(45)).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    let status = status_of(&ns, "podgone", "work").await;
    assert_eq!(status.attempts.len(), 2, "{:?}", status.attempts);
    assert_eq!(reason_of(&status, 0), Some("PodDeleted"), "{:?}", status.attempts);
    let message = status.attempts[0].message.clone().unwrap_or_default();
    assert!(
        message.starts_with(&format!("pod {pod} was deleted while it ran")),
        "{message}"
    );
    assert_eq!(status.outputs.get("attempt").map(String::as_str), Some("2"));
    let events = events_with_reason(&ns, "TaskDisrupted");
    assert!(
        events
            .iter()
            .any(|e| e.contains("PodDeleted") && e.contains(&pod) && e.contains("attempt 2")),
        "{events:?}"
    );
    // Nothing of attempt 1 keeps running: not the deleted pod, not a replacement.
    wait_process_gone(&marker, "attempt 1's processes to be gone").await;
    wait_for(
        "no pod of attempt 1 to be running",
        Duration::from_secs(30),
        || async {
            let listed = pods.list(&ListParams::default().labels(&selector)).await.ok()?;
            let running: Vec<_> = listed
                .items
                .iter()
                .filter(|p| {
                    let phase = p
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default();
                    phase != "Succeeded" && phase != "Failed"
                })
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            running.is_empty().then_some(())
        },
    )
    .await;
}

/// Deletes every Job of `task` as soon as it appears, until stopped; remembers their names.
struct JobDeleter {
    deleted: Arc<Mutex<BTreeSet<String>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl JobDeleter {
    fn start(ns: &TestNamespace, task: &str) -> JobDeleter {
        let jobs: Api<Job> = ns.api();
        let selector = format!("weir.dev/task={task}");
        let deleted = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = deleted.clone();
        let handle = tokio::spawn(async move {
            loop {
                if let Ok(list) = jobs.list(&ListParams::default().labels(&selector)).await {
                    for job in list.items {
                        let name = job.metadata.name.clone().unwrap_or_default();
                        if job.metadata.deletion_timestamp.is_none()
                            && jobs.delete(&name, &DeleteParams::background()).await.is_ok()
                        {
                            seen.lock().unwrap().insert(name);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        JobDeleter { deleted, handle }
    }

    fn deleted(&self) -> BTreeSet<String> {
        self.deleted.lock().unwrap().clone()
    }

    fn stop(self) -> BTreeSet<String> {
        self.handle.abort();
        self.deleted()
    }
}

/// A task is retried after at most `retries.disruptions` disruptions; one more fails it, and
/// the message says which budget ran out.
#[tokio::test]
async fn disruptions_past_the_budget_fail_the_task() {
    let (ns, _op) = setup("budget").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: budget}
spec:
  pipelineSpec:
    tasks:
      - name: doomed
        image: busybox
        command: [sh, -c, 'sleep 60']
        retries: {disruptions: 1}
"#,
    );
    let deleter = JobDeleter::start(&ns, "doomed");
    let tr = task_run_name("budget", "doomed");
    wait_for("the Jobs of two attempts to be deleted", RUN_TIMEOUT, || async {
        let deleted = deleter.deleted();
        (deleted.len() >= 2).then_some(()).ok_or(format!("{deleted:?}"))
    })
    .await;
    let run = wait_run_done(&ns, "budget", RUN_TIMEOUT).await;
    let deleted = deleter.stop();
    assert_eq!(phase(&run), RunPhase::Failed, "{:?}", run.status);
    let status = status_of(&ns, "budget", "doomed").await;
    assert_eq!(status.phase, Some(TaskPhase::Failed));
    let reasons: Vec<_> = (0..status.attempts.len())
        .map(|i| reason_of(&status, i))
        .collect();
    assert_eq!(reasons, [Some("Lost"), Some("Lost")], "{:?}", status.attempts);
    let want: BTreeSet<String> = [job_name(&tr, 1), job_name(&tr, 2)].into();
    assert_eq!(deleted, want, "no third attempt");
    let condition = weir::api::condition::find(&status.conditions, "Succeeded").unwrap();
    assert_eq!(condition.reason, "Lost");
    assert!(
        condition.message.contains("retries.disruptions") && condition.message.contains("(1)"),
        "{}",
        condition.message
    );
}

/// Deleting a task's Job no longer stops it (the Job comes back as a new attempt); cancelling
/// does, for a TaskRun and for a whole run.
#[tokio::test]
async fn cancelling_stops_a_task_whose_jobs_keep_being_deleted() {
    let (ns, _op) = setup("stubborn").await;
    let marker = unique_marker("weir-stubborn");
    ns.apply(&run_of(
        "stubborn",
        &format!(
            "      - {{name: one, image: busybox, command: [sh, -c, 'sleep 60; : {marker}']}}\n      - {{name: two, image: busybox, command: [sh, -c, 'sleep 60; : {marker}']}}\n"
        ),
    ));
    let deleters = [JobDeleter::start(&ns, "one"), JobDeleter::start(&ns, "two")];
    let trs = [task_run_name("stubborn", "one"), task_run_name("stubborn", "two")];
    for (deleter, tr) in deleters.iter().zip(&trs) {
        let second = job_name(tr, 2);
        wait_for(
            &format!("Job {second} to be made and deleted"),
            RUN_TIMEOUT,
            || async {
                let deleted = deleter.deleted();
                deleted
                    .contains(&second)
                    .then_some(())
                    .ok_or(format!("{deleted:?}"))
            },
        )
        .await;
    }
    // Cancel one TaskRun by itself, then the run.
    let task_runs: Api<TaskRun> = ns.api();
    let cancel = Patch::Merge(serde_json::json!({"spec": {"cancelled": true}}));
    task_runs
        .patch(&trs[0], &PatchParams::default(), &cancel)
        .await
        .unwrap();
    wait_for("TaskRun one to be cancelled", RUN_TIMEOUT, || async {
        let tr = task_runs.get(&trs[0]).await.map_err(|e| e.to_string())?;
        match tr.status.and_then(|s| s.phase) {
            Some(TaskPhase::Cancelled) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let runs: Api<PipelineRun> = ns.api();
    runs.patch("stubborn", &PatchParams::default(), &cancel)
        .await
        .unwrap();
    let run = wait_run_done(&ns, "stubborn", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Cancelled, "{:?}", run.status);
    assert_eq!(summary_phase(&run, "two"), Some(TaskPhase::Cancelled));
    let [one, two] = deleters;
    let (one, two) = (one.stop(), two.stop());

    // No attempt starts after the cancel, even once a disruption's delay has passed.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for (tr, deleted) in trs.iter().zip([one, two]) {
        let status = task_runs.get(tr).await.unwrap().status.unwrap();
        assert_eq!(status.phase, Some(TaskPhase::Cancelled), "{tr}");
        // Cancelled while an attempt ran, or while the next one waited for its delay.
        let last = status.attempts.last().unwrap().reason.map(|r| r.as_str());
        assert!(
            matches!(last, Some("Cancelled" | "Lost")),
            "{tr}: {:?}",
            status.attempts
        );
        let jobs = ns
            .api::<Job>()
            .list(&ListParams::default().labels(&format!("weir.dev/taskrun={tr}")))
            .await
            .unwrap();
        let left: Vec<_> = jobs
            .items
            .iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        assert!(left.is_empty(), "{tr}: Jobs after the cancel: {left:?}");
        assert!(
            status.attempts.len() <= deleted.len() + 1,
            "{tr}: {} attempts, {} Jobs deleted",
            status.attempts.len(),
            deleted.len()
        );
    }
    wait_process_gone(&marker, "the cancelled tasks' processes to be gone").await;
}
