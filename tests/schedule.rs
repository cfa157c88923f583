//! Schedules, catch-up, backfill and `maxActiveRuns` against the real control plane. The
//! schedules use seconds (six-field cron) so that several intervals pass within a test;
//! assertions are about what happened and in which order, never about how long it took
//! (timeouts are generous).

mod common;

use common::cli::*;
use common::*;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::api::{Pipeline, PipelineRun, RunPhase};
use weir::engine::schedule::run_name;
use weir_testenv::{TestNamespace, wait_for};

const LONG: Duration = Duration::from_secs(180);

fn ts(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Timestamp {
    t.as_ref().expect("time is set").0
}

fn logical(run: &PipelineRun) -> Timestamp {
    ts(&run.spec.logical_date)
}

fn started(run: &PipelineRun) -> Timestamp {
    ts(&run.status.as_ref().expect("status").start_time)
}

fn completed(run: &PipelineRun) -> Timestamp {
    ts(&run.status.as_ref().expect("status").completion_time)
}

fn created(run: &PipelineRun) -> Timestamp {
    run.creation_timestamp().expect("creation time").0
}

fn reason(run: &PipelineRun) -> String {
    run.status
        .as_ref()
        .and_then(|s| weir::api::condition::find(&s.conditions, "Succeeded"))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

fn is_done(run: &PipelineRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(RunPhase::is_terminal)
}

/// Every PipelineRun seen in the namespace, in its latest state, including runs deleted
/// since (history limits), so tests can reason about everything the scheduler made.
#[derive(Clone, Default)]
struct RunRecorder {
    runs: Arc<Mutex<BTreeMap<String, PipelineRun>>>,
    queued_seen: Arc<Mutex<Vec<String>>>,
}

impl RunRecorder {
    async fn start(ns: &TestNamespace) -> RunRecorder {
        let recorder = RunRecorder::default();
        let (runs, queued) = (recorder.runs.clone(), recorder.queued_seen.clone());
        let api: Api<PipelineRun> = ns.api();
        let ready = Arc::new(tokio::sync::Notify::new());
        let ready_tx = ready.clone();
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(run)) | Ok(watcher::Event::InitApply(run)) => {
                        if reason(&run) == "Queued" {
                            queued.lock().unwrap().push(run.name_any());
                        }
                        runs.lock().unwrap().insert(run.name_any(), run);
                    }
                    Ok(watcher::Event::InitDone) => ready_tx.notify_one(),
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready.notified())
            .await
            .expect("run watcher started");
        recorder
    }

    /// The runs of `pipeline` made by its schedule, oldest logical date first.
    fn scheduled(&self, pipeline: &str) -> Vec<PipelineRun> {
        let mut runs: Vec<PipelineRun> = self
            .runs
            .lock()
            .unwrap()
            .values()
            .filter(|r| {
                r.labels().get("weir.dev/pipeline").map(String::as_str) == Some(pipeline)
                    && r.labels().get("weir.dev/trigger").map(String::as_str) == Some("schedule")
            })
            .cloned()
            .collect();
        runs.sort_by_key(logical);
        runs
    }

    fn queued_seen(&self) -> Vec<String> {
        self.queued_seen.lock().unwrap().clone()
    }
}

async fn pipeline(ns: &TestNamespace, name: &str) -> Pipeline {
    ns.api::<Pipeline>().get(name).await.unwrap()
}

async fn set_suspend(ns: &TestNamespace, name: &str, suspend: bool) {
    let patch = serde_json::json!({ "spec": { "schedule": { "suspend": suspend } } });
    ns.api::<Pipeline>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Intervals of consecutive runs follow each other without gap or overlap.
fn assert_consecutive(runs: &[PipelineRun]) {
    for pair in runs.windows(2) {
        assert_eq!(
            ts(&pair[0].spec.data_interval_end),
            ts(&pair[1].spec.data_interval_start),
            "a gap or overlap between {} and {}",
            pair[0].name_any(),
            pair[1].name_any()
        );
    }
}

#[tokio::test]
async fn scheduled_runs_appear_on_time_with_their_interval_and_old_ones_are_pruned() {
    let (ns, _op) = setup("sched-tick").await;
    let recorder = RunRecorder::start(&ns).await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: tick}
spec:
  schedule: {cron: "*/3 * * * * *"}
  successfulRunsHistoryLimit: 2
  tasks:
    - name: echo
      image: busybox
      command: [sh, -c, 'echo "{{ run.logicalDate }}|{{ run.dataIntervalStart }}|{{ run.dataIntervalEnd }}"']
"#,
    );
    // The template values reach the task: check on a run before history limits take it.
    let checked = wait_for("a TaskRun with the run's dates expanded", LONG, || async {
        for run in recorder.scheduled("tick") {
            if let Some(tr) = task_run_opt(&ns, &run.name_any(), "echo").await {
                let want = format!(
                    "{}|{}|{}",
                    logical(&run),
                    ts(&run.spec.data_interval_start),
                    ts(&run.spec.data_interval_end)
                );
                return tr.spec.command[2]
                    .contains(&want)
                    .then_some(run.name_any())
                    .ok_or(format!("{:?} does not contain {want}", tr.spec.command));
            }
        }
        Err::<String, String>("no TaskRun yet".into())
    })
    .await;
    let runs = wait_for("five scheduled runs", LONG, || async {
        let runs = recorder.scheduled("tick");
        (runs.len() >= 5).then_some(runs)
    })
    .await;
    assert!(runs.iter().any(|r| r.name_any() == checked));
    for run in &runs {
        let (start, end) = (ts(&run.spec.data_interval_start), ts(&run.spec.data_interval_end));
        assert_eq!(logical(run), start, "the logical date is the interval start");
        assert_eq!(end.duration_since(start), SignedDuration::from_secs(3));
        assert_eq!(start.as_second() % 3, 0, "intervals are on the cron times");
        assert_eq!(run.name_any(), run_name("tick", start));
        // Created once its interval ended, not before (timestamps are whole seconds).
        assert!(
            created(run) >= end,
            "{} created before its interval ended",
            run.name_any()
        );
        let owner = &run.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Pipeline", "tick"));
    }
    assert_consecutive(&runs);

    let status = pipeline(&ns, "tick").await.status.unwrap();
    let last = ts(&status.last_schedule_time);
    let next = ts(&status.next_schedule_time);
    assert!(
        next > last && next.as_second() % 3 == 0,
        "last {last}, next {next}"
    );

    // History limit: no more than two succeeded runs remain.
    wait_for("succeeded runs pruned to two", LONG, || async {
        let live = ns.api::<PipelineRun>().list(&Default::default()).await.unwrap();
        let succeeded: Vec<String> = live
            .items
            .iter()
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Succeeded))
            .map(ResourceExt::name_any)
            .collect();
        (succeeded.len() <= 2 && recorder.scheduled("tick").len() >= 6)
            .then_some(())
            .ok_or(format!("succeeded: {succeeded:?}"))
    })
    .await;

    // Suspended: no new run, no next time.
    set_suspend(&ns, "tick", true).await;
    wait_for("nextScheduleTime to go", LONG, || async {
        pipeline(&ns, "tick")
            .await
            .status
            .unwrap()
            .next_schedule_time
            .is_none()
            .then_some(())
    })
    .await;
    let before = recorder.scheduled("tick").len();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        recorder.scheduled("tick").len(),
        before,
        "a run was made while suspended"
    );
}

#[tokio::test]
async fn forbid_never_overlaps_scheduled_runs_and_skips_intervals() {
    let (ns, _op) = setup("sched-forbid").await;
    let recorder = RunRecorder::start(&ns).await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: forbid}
spec:
  schedule: {cron: "*/2 * * * * *", concurrencyPolicy: Forbid}
  tasks:
    - {name: slow, image: busybox, command: [sh, -c, 'sleep 5']}
"#,
    );
    let runs = wait_for("three finished scheduled runs", LONG, || async {
        let runs = recorder.scheduled("forbid");
        (runs.iter().filter(|r| is_done(r)).count() >= 3).then_some(runs)
    })
    .await;
    set_suspend(&ns, "forbid", true).await;
    let done: Vec<&PipelineRun> = runs.iter().filter(|r| is_done(r)).collect();
    for pair in done.windows(2) {
        assert!(
            created(pair[1]) >= completed(pair[0]),
            "{} was created before {} finished",
            pair[1].name_any(),
            pair[0].name_any()
        );
    }
    // The intervals that ended while a run was going were skipped.
    assert!(
        done.windows(2)
            .any(|p| ts(&p[0].spec.data_interval_end) < ts(&p[1].spec.data_interval_start)),
        "no interval was skipped"
    );
    let skipped = events_with_reason(&ns, "IntervalsSkipped");
    assert!(skipped.iter().any(|e| e.contains("Forbid")), "{skipped:?}");
}

#[tokio::test]
async fn replace_cancels_the_running_scheduled_run() {
    let (ns, _op) = setup("sched-replace").await;
    let recorder = RunRecorder::start(&ns).await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: replace}
spec:
  schedule: {cron: "*/5 * * * * *", concurrencyPolicy: Replace}
  tasks:
    - {name: slow, image: busybox, command: [sh, -c, 'sleep 120']}
"#,
    );
    let runs = wait_for("a scheduled run cancelled by a newer one", LONG, || async {
        let runs = recorder.scheduled("replace");
        runs.iter()
            .any(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Cancelled))
            .then_some(runs)
    })
    .await;
    set_suspend(&ns, "replace", true).await;
    // Every cancelled run was replaced by the run of a newer interval, which existed
    // before it was cancelled.
    for cancelled in runs
        .iter()
        .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Cancelled))
    {
        assert!(cancelled.spec.cancelled);
        assert!(
            runs.iter()
                .any(|r| logical(r) > logical(cancelled) && created(r) <= completed(cancelled)),
            "{} was cancelled without a newer run",
            cancelled.name_any()
        );
    }
    assert!(!events_with_reason(&ns, "RunsReplaced").is_empty());
}

#[tokio::test]
async fn backfill_creates_one_run_per_interval_even_when_run_twice() {
    let (ns, _op) = setup("sched-backfill").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: daily}
spec:
  schedule: {cron: "@daily", timezone: Europe/Berlin, suspend: true}
  tasks:
    - {name: load, image: busybox, command: [sh, -c, 'echo loading {{ run.dataIntervalStart }}']}
"#,
    );
    wait_for("the Pipeline to be ready", LONG, || async {
        let p = pipeline(&ns, "daily").await;
        let ready = p
            .status
            .as_ref()
            .and_then(|s| weir::api::condition::find(&s.conditions, "Ready"));
        ready.is_some_and(|c| c.status == "True").then_some(())
    })
    .await;
    // Five days over the spring daylight-saving change (March 31st).
    let args = ["backfill", "daily", "--from", "2024-03-29", "--to", "2024-04-02"];
    let first = stdout_ok(&weir(&ns, &args));
    assert!(
        first.contains("5 interval(s): 5 run(s) created, 0 already existed"),
        "{first}"
    );
    let second = stdout_ok(&weir(&ns, &[&args[..], &["--wait", "--timeout", "3m"]].concat()));
    assert!(
        second.contains("5 interval(s): 0 run(s) created, 5 already existed"),
        "{second}"
    );
    assert!(second.contains("5/5 finished: 5 Succeeded"), "{second}");

    let mut runs = ns
        .api::<PipelineRun>()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    runs.sort_by_key(logical);
    let names: Vec<String> = runs.iter().map(ResourceExt::name_any).collect();
    // Local midnights, named in UTC: CET (+1) before the change, CEST (+2) after.
    assert_eq!(
        names,
        [
            "daily-20240328-230000",
            "daily-20240329-230000",
            "daily-20240330-230000",
            "daily-20240331-220000",
            "daily-20240401-220000"
        ]
    );
    // The day of the change has 23 hours.
    let short = &runs[2];
    assert_eq!(
        ts(&short.spec.data_interval_end).duration_since(ts(&short.spec.data_interval_start)),
        SignedDuration::from_hours(23)
    );
    assert_consecutive(&runs);
    for run in &runs {
        assert_eq!(run.labels()["weir.dev/trigger"], "backfill");
        assert_eq!(run.status.as_ref().unwrap().phase, Some(RunPhase::Succeeded));
    }
    // A dry run reports every interval as covered.
    let dry = stdout_ok(&weir(&ns, &[&args[..], &["--dry-run"]].concat()));
    assert!(dry.contains("5 already have a run, 0 would be created"), "{dry}");
}

#[tokio::test]
async fn max_active_runs_queues_backfill_and_manual_runs() {
    let (ns, _op) = setup("sched-queue").await;
    let recorder = RunRecorder::start(&ns).await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: queue}
spec:
  maxActiveRuns: 1
  schedule: {cron: "@hourly", suspend: true}
  tasks:
    - {name: work, image: busybox, command: [sh, -c, 'sleep 2']}
"#,
    );
    wait_for("the Pipeline to be ready", LONG, || async {
        pipeline(&ns, "queue").await.status.map(|_| ())
    })
    .await;
    let out = stdout_ok(&weir(
        &ns,
        &[
            "backfill",
            "queue",
            "--from",
            "2024-01-01T00:00:00Z",
            "--to",
            "2024-01-01T03:00:00Z",
        ],
    ));
    assert!(out.contains("4 run(s) created"), "{out}");
    let out = stdout_ok(&weir(&ns, &["trigger", "queue", "--name", "queue-by-hand"]));
    assert!(out.contains("pipelinerun/queue-by-hand created"), "{out}");

    // Runs beyond the limit wait, visibly.
    wait_for("queued runs in the Pipeline's status", LONG, || async {
        let status = pipeline(&ns, "queue").await.status.unwrap_or_default();
        (status.queued_run_count.unwrap_or(0) >= 2).then_some(())
    })
    .await;
    let runs = wait_for("all five runs to finish", LONG, || async {
        let runs = ns
            .api::<PipelineRun>()
            .list(&Default::default())
            .await
            .unwrap()
            .items;
        (runs.len() == 5 && runs.iter().all(is_done)).then_some(runs)
    })
    .await;
    assert!(
        recorder.queued_seen().len() >= 3,
        "runs were not seen queued: {:?}",
        recorder.queued_seen()
    );
    let mut by_start = runs.clone();
    by_start.sort_by_key(|r| (started(r), logical(r)));
    for run in &by_start {
        assert_eq!(run.status.as_ref().unwrap().phase, Some(RunPhase::Succeeded));
    }
    // One at a time ...
    for pair in by_start.windows(2) {
        assert!(
            started(&pair[1]) >= completed(&pair[0]),
            "{} started before {} finished",
            pair[1].name_any(),
            pair[0].name_any()
        );
    }
    // ... oldest logical date first; the manual run (logical date: now) last.
    let order: Vec<String> = by_start.iter().map(ResourceExt::name_any).collect();
    assert_eq!(
        order,
        [
            "queue-20240101-000000",
            "queue-20240101-010000",
            "queue-20240101-020000",
            "queue-20240101-030000",
            "queue-by-hand"
        ]
    );
    let manual = runs.iter().find(|r| r.name_any() == "queue-by-hand").unwrap();
    assert_eq!(manual.labels()["weir.dev/trigger"], "manual");
    assert_eq!(manual.owner_references()[0].name, "queue");
}

#[tokio::test]
async fn trigger_starts_a_run_with_params_and_waits_for_it() {
    let (ns, _op) = setup("sched-trigger").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: hello}
spec:
  params:
    - {name: region, default: eu}
  tasks:
    - {name: greet, image: busybox, command: [sh, -c, 'echo "hello {{ params.region }}"']}
"#,
    );
    let out = stdout_ok(&weir(
        &ns,
        &[
            "trigger",
            "hello",
            "--param",
            "region=us",
            "--name",
            "hello-us",
            "--wait",
        ],
    ));
    assert!(out.contains("run hello-us succeeded in"), "{out}");
    let tr = task_run(&ns, "hello-us", "greet").await;
    assert!(tr.spec.command[2].contains("hello us"), "{:?}", tr.spec.command);
    let run = ns.api::<PipelineRun>().get("hello-us").await.unwrap();
    assert!(run.spec.logical_date.is_some());
    // The same name again is refused, not a second run.
    let again = weir(&ns, &["trigger", "hello", "--name", "hello-us"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // A Pipeline that does not exist is an error that says so.
    let missing = weir(&ns, &["trigger", "nope"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
}

#[tokio::test]
async fn operator_down_across_ticks_catches_up_or_runs_only_the_latest() {
    let (ns, mut op) = setup("sched-down").await;
    let recorder = RunRecorder::start(&ns).await;
    for (name, catchup) in [("all", true), ("latest", false)] {
        ns.apply(&format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  schedule: {{cron: "*/2 * * * * *", catchup: {catchup}}}
  tasks:
    - {{name: quick, image: busybox, command: [sh, -c, 'true']}}
"#
        ));
    }
    wait_for("a scheduled run of each pipeline", LONG, || async {
        (!recorder.scheduled("all").is_empty() && !recorder.scheduled("latest").is_empty()).then_some(())
    })
    .await;
    op.kill();
    let down_at = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    op.restart();
    let up_at = Timestamp::now();
    let target = up_at + SignedDuration::from_secs(2);
    wait_for("runs for intervals after the restart", LONG, || async {
        let after = |p| recorder.scheduled(p).iter().any(|r| logical(r) >= target);
        (after("all") && after("latest")).then_some(())
    })
    .await;
    set_suspend(&ns, "all", true).await;
    set_suspend(&ns, "latest", true).await;

    // With catchup, every interval of the downtime got its run.
    let all = recorder.scheduled("all");
    assert_consecutive(&all);
    let covered = all
        .iter()
        .filter(|r| logical(r) >= down_at && ts(&r.spec.data_interval_end) <= up_at)
        .count();
    assert!(
        covered >= 3,
        "only {covered} intervals of the downtime have a run"
    );

    // Without it, the downtime's intervals were skipped but for the latest.
    let latest = recorder.scheduled("latest");
    let gap = latest.windows(2).find(|p| {
        ts(&p[1].spec.data_interval_start).duration_since(ts(&p[0].spec.data_interval_end))
            >= SignedDuration::from_secs(4)
    });
    assert!(gap.is_some(), "no interval was skipped without catchup");
    let skipped = events_with_reason(&ns, "IntervalsSkipped");
    assert!(
        skipped.iter().any(|e| e.contains("catchup is off")),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn invalid_cron_or_timezone_makes_the_pipeline_not_ready() {
    let (ns, _op) = setup("sched-invalid").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: bad}
spec:
  schedule: {cron: "0 25 * * *", timezone: Europe/Berln}
  tasks:
    - {name: a, image: busybox, command: [sh, -c, 'true']}
"#,
    );
    let message = wait_for("Ready=False", LONG, || async {
        let p = pipeline(&ns, "bad").await;
        let status = p.status?;
        let ready = weir::api::condition::find(&status.conditions, "Ready")?.clone();
        (ready.status == "False").then_some((ready.reason, ready.message, status))
    })
    .await;
    let (reason, message, status) = message;
    assert_eq!(reason, "InvalidPipeline");
    assert!(message.contains("schedule.cron"), "{message}");
    assert!(
        message.contains("schedule.timezone: unknown time zone \"Europe/Berln\""),
        "{message}"
    );
    assert!(status.next_schedule_time.is_none());
    assert!(!events_with_reason(&ns, "InvalidPipeline").is_empty());

    // Fixed: ready, with a next time.
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: bad}
spec:
  schedule: {cron: "0 2 * * *", timezone: Europe/Berlin}
  tasks:
    - {name: a, image: busybox, command: [sh, -c, 'true']}
"#,
    );
    let next = wait_for("Ready=True with a next schedule time", LONG, || async {
        let status = pipeline(&ns, "bad").await.status?;
        let ready = weir::api::condition::find(&status.conditions, "Ready")?;
        (ready.status == "True").then_some(status.next_schedule_time)?
    })
    .await;
    // 02:00 in Berlin is 00:00 or 01:00 UTC.
    let hour = next.0.to_zoned(jiff::tz::TimeZone::UTC).hour();
    assert!(hour == 0 || hour == 1, "{next:?}");
    assert!(
        ns.api::<PipelineRun>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
