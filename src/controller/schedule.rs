//! Schedules and history limits, on the Kubernetes side. The Pipeline controller calls
//! [`reconcile_pipeline`] on every reconcile; it goes in steps:
//!
//! - `observe` (reads): the pipeline's runs and its `lastScheduleTime`, fresh from the API
//!   server;
//! - `tick_input`, `changes` (no client): what `engine::schedule::plan_ticks` is told, and
//!   what its plan and the history limits (`runs_past_history_limits`) change;
//! - `apply`: deletes the runs past the history limits, creates the runs of due intervals,
//!   cancels the runs they replace;
//! - `scheduled_status`, `requeue_after` (no client): the schedule and run fields of the
//!   Pipeline's status, and when to look again (at the next cron time).
//!
//! Whether a run may start under `maxActiveRuns` is decided on the run's side
//! (`super::admission`); the status lists the active and queued runs in the same order.

use super::admission::{QUEUED_REQUEUE, created, is_finished, queue_entry, runs_of};
use super::{ApiResultExt, Context, Error, Result};
use crate::api::{
    Pipeline, PipelineRef, PipelineRun, PipelineRunSpec, PipelineStatus, RunPhase, Trigger, actions, labels,
    reasons,
};
use crate::engine::names;
use crate::engine::schedule::{
    FinishedRun, Interval, MAX_INTERVALS, ParsedSchedule, QueuedRun, RunQueue, SkipReason, TickInput,
    TickPlan, WaitReason, plan_ticks, run_name, runs_to_prune,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most run names listed in `status.activeRuns` and `status.queuedRuns`.
pub const MAX_LISTED: usize = 20;
/// Longest a Pipeline with a schedule or queued runs waits before looking again, whatever
/// happens (a safety net under the watches).
const FALLBACK_REQUEUE: Duration = Duration::from_secs(300);
/// How long after a cron time the Pipeline looks, so the clock has surely passed it.
const AFTER_CRON_TIME: Duration = Duration::from_millis(50);

/// The schedule, history and queue part of a Pipeline's reconcile. Fills the schedule and
/// run fields of `status`; returns when to look again.
pub async fn reconcile_pipeline(
    ctx: &Context,
    pipeline: &Pipeline,
    status: &mut PipelineStatus,
    valid: bool,
    now: jiff::Timestamp,
) -> Result<Option<Duration>> {
    let schedule = parsed_schedule(pipeline, valid);
    let observed = observe(ctx, pipeline, schedule.is_some()).await?;
    // Set before anything is created: the status is written even when a step below fails.
    status.last_schedule_time = newest(status.last_schedule_time.take(), observed.last_schedule_time);
    let input = tick_input(pipeline, &observed.runs, status.last_schedule_time.as_ref(), now);
    let plan = schedule.map(|schedule| plan_ticks(&schedule, &input));
    let changes = changes(pipeline, &observed.runs, plan.as_ref())?;
    let runs = apply(ctx, pipeline, observed.runs, changes).await?;
    report_held_back(ctx, pipeline, plan.as_ref()).await;
    *status = scheduled_status(std::mem::take(status), pipeline, plan.as_ref(), &runs);
    let queued = status.queued_run_count.is_some();
    Ok(requeue_after(plan.as_ref(), queued, now))
}

/// What a reconcile reads from the API server.
struct Observed {
    /// The pipeline's runs, leaving out the ones being deleted.
    runs: Vec<PipelineRun>,
    /// The Pipeline's `status.lastScheduleTime` (read only when it has a schedule).
    last_schedule_time: Option<Time>,
}

/// Reads fresh from the API server what decides which runs to create, delete or cancel.
async fn observe(ctx: &Context, pipeline: &Pipeline, with_schedule: bool) -> Result<Observed> {
    let ns = namespace(pipeline)?;
    let name = pipeline.name_any();
    let runs = runs_of(&Api::namespaced(ctx.client.clone(), &ns), &name).await?;
    // The watch cache may not hold our own last status write yet: a stale
    // lastScheduleTime would plan intervals already handled again.
    let last_schedule_time = if with_schedule {
        let fresh = Api::<Pipeline>::namespaced(ctx.client.clone(), &ns)
            .get(&name)
            .await?;
        fresh.status.and_then(|s| s.last_schedule_time)
    } else {
        None
    };
    Ok(Observed {
        runs,
        last_schedule_time,
    })
}

/// The schedule the pipeline follows now: none without one or while the pipeline is invalid.
fn parsed_schedule(pipeline: &Pipeline, valid: bool) -> Option<ParsedSchedule> {
    pipeline
        .spec
        .schedule
        .as_ref()
        .filter(|_| valid)
        .and_then(|s| ParsedSchedule::parse(s).ok())
}

/// The later of two times; unset counts as earliest.
fn newest(a: Option<Time>, b: Option<Time>) -> Option<Time> {
    if b.as_ref().map(|t| t.0) > a.as_ref().map(|t| t.0) {
        b
    } else {
        a
    }
}

/// What `plan_ticks` is told about the pipeline and its runs.
fn tick_input(
    pipeline: &Pipeline,
    runs: &[PipelineRun],
    last_schedule: Option<&Time>,
    now: jiff::Timestamp,
) -> TickInput {
    TickInput {
        created: pipeline
            .creation_timestamp()
            .map(|t| t.0)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        last_schedule: last_schedule.map(|t| t.0),
        unfinished: scheduled_unfinished(pipeline, runs).count() as u32,
        max_active_runs: pipeline.spec.max_active_runs,
        now,
    }
}

/// The runs the pipeline's schedule made (owned by the Pipeline and labelled so) that have
/// not finished; the only ones `concurrencyPolicy` is about.
fn scheduled_unfinished<'a>(
    pipeline: &'a Pipeline,
    runs: &'a [PipelineRun],
) -> impl Iterator<Item = &'a PipelineRun> {
    runs.iter().filter(|r| {
        !is_finished(r) && owned_by(r, pipeline) && trigger_of(r) == Some(Trigger::Schedule.as_str())
    })
}

/// The runs one reconcile deletes, creates and cancels.
#[derive(Debug, Default)]
struct Changes {
    /// Finished runs past the history limits.
    prune: Vec<String>,
    /// Runs for due intervals, oldest first.
    create: Vec<(PipelineRun, Interval)>,
    /// Scheduled runs that `concurrencyPolicy: Replace` cancels once the new run exists.
    replace: Vec<String>,
}

/// What the history limits and the schedule's `plan` change among the pipeline's `runs`.
fn changes(pipeline: &Pipeline, runs: &[PipelineRun], plan: Option<&TickPlan>) -> Result<Changes> {
    let due = plan.map_or(&[][..], |p| &p.create[..]);
    let create = due
        .iter()
        .map(|interval| Ok((scheduled_run(pipeline, *interval)?, *interval)))
        .collect::<Result<_>>()?;
    Ok(Changes {
        prune: runs_past_history_limits(pipeline, runs),
        create,
        replace: plan.map_or_else(Vec::new, |p| runs_to_replace(pipeline, runs, p)),
    })
}

/// The finished runs the Pipeline owns beyond its history limits, the ones that finished
/// longest ago. Runs made by hand are never deleted.
fn runs_past_history_limits(pipeline: &Pipeline, runs: &[PipelineRun]) -> Vec<String> {
    let spec = &pipeline.spec;
    let finished: Vec<FinishedRun> = runs
        .iter()
        .filter(|r| is_finished(r) && owned_by(r, pipeline))
        .map(|r| {
            let status = r.status.as_ref();
            FinishedRun {
                name: r.name_any(),
                succeeded: status.and_then(|s| s.phase) == Some(RunPhase::Succeeded),
                finished_at: status
                    .and_then(|s| s.completion_time.as_ref())
                    .map_or_else(|| created(r), |t| t.0),
            }
        })
        .collect();
    runs_to_prune(
        &finished,
        spec.successful_runs_history_limit,
        spec.failed_runs_history_limit,
    )
}

/// The run of a due interval, named after its logical date.
fn scheduled_run(pipeline: &Pipeline, interval: Interval) -> Result<PipelineRun> {
    let name = run_name(&pipeline.name_any(), interval.start);
    new_run(pipeline, &name, Trigger::Schedule, interval.start, Some(interval))
}

/// The unfinished scheduled runs `concurrencyPolicy: Replace` cancels: only runs of older
/// intervals than the newest one created now, and not cancelled yet.
fn runs_to_replace(pipeline: &Pipeline, runs: &[PipelineRun], plan: &TickPlan) -> Vec<String> {
    if !plan.cancel_unfinished {
        return Vec::new();
    }
    let newest = plan.create.last().map(|i| i.start);
    scheduled_unfinished(pipeline, runs)
        .filter(|r| r.spec.logical_date.as_ref().map(|t| t.0) < newest && !r.spec.cancelled)
        .map(ResourceExt::name_any)
        .collect()
}

/// Deletes the runs past the history limits, creates the due runs, then cancels the runs
/// they replace (only once the replacement exists). Returns the pipeline's runs as they are
/// now: without the deleted ones, with the created ones.
async fn apply(
    ctx: &Context,
    pipeline: &Pipeline,
    mut runs: Vec<PipelineRun>,
    changes: Changes,
) -> Result<Vec<PipelineRun>> {
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace(pipeline)?);
    let regarding = pipeline.object_ref(&());
    for name in &changes.prune {
        api.delete(name, &DeleteParams::background())
            .await
            .ignore_not_found()?;
    }
    if !changes.prune.is_empty() {
        tracing::info!(pipeline = %pipeline.name_any(), runs = ?changes.prune, "deleted runs past the history limits");
        runs.retain(|r| !changes.prune.contains(&r.name_any()));
    }
    for (run, interval) in changes.create {
        if create_run(&api, &run).await? {
            let note = format!(
                "created run {} for the interval {} to {}",
                run.name_any(),
                interval.start,
                interval.end
            );
            ctx.event(
                &regarding,
                None,
                EventType::Normal,
                reasons::RUN_SCHEDULED,
                actions::SCHEDULE,
                note,
            )
            .await;
            runs.push(run);
        }
    }
    if !changes.replace.is_empty() {
        for name in &changes.replace {
            cancel(&api, name).await?;
        }
        let note = format!(
            "concurrencyPolicy Replace: cancelling {}",
            changes.replace.join(", ")
        );
        ctx.event(
            &regarding,
            None,
            EventType::Normal,
            reasons::RUNS_REPLACED,
            actions::SCHEDULE,
            note,
        )
        .await;
    }
    Ok(runs)
}

/// Tells about due intervals given up (a Warning Event per reason) or held back for now.
async fn report_held_back(ctx: &Context, pipeline: &Pipeline, plan: Option<&TickPlan>) {
    let Some(plan) = plan else { return };
    for &(skip, count) in &plan.skipped {
        let note = skipped_note(skip, count);
        ctx.event(
            &pipeline.object_ref(&()),
            None,
            EventType::Warning,
            reasons::INTERVALS_SKIPPED,
            actions::SCHEDULE,
            note,
        )
        .await;
    }
    if let Some(wait) = plan.waiting {
        tracing::debug!(pipeline = %pipeline.name_any(), ?wait, "due intervals wait");
    }
}

fn skipped_note(reason: SkipReason, count: usize) -> String {
    let or_more = if count >= MAX_INTERVALS { " or more" } else { "" };
    format!("skipped {count}{or_more} interval(s): {}", reason.describe())
}

/// `status` with the schedule and run fields filled: the last and next schedule time from
/// the `plan` (none without a schedule), and the active and queued runs among `runs`, at most
/// [`MAX_LISTED`] names each.
fn scheduled_status(
    status: PipelineStatus,
    pipeline: &Pipeline,
    plan: Option<&TickPlan>,
    runs: &[PipelineRun],
) -> PipelineStatus {
    let entries: Vec<QueuedRun> = runs.iter().map(queue_entry).collect();
    let queue = RunQueue::new(&entries);
    let names = |indexes: &[usize], most: usize| -> Vec<String> {
        indexes
            .iter()
            .take(most)
            .map(|&i| entries[i].name.clone())
            .collect()
    };
    // Without a limit nothing waits: runs not started yet are merely starting.
    let queued = match pipeline.spec.max_active_runs {
        Some(_) => queue.waiting.len(),
        None => 0,
    };
    let last_schedule_time = match plan {
        Some(plan) => plan.last_schedule.map(Time),
        None => status.last_schedule_time.clone(),
    };
    PipelineStatus {
        last_schedule_time,
        next_schedule_time: plan.and_then(|p| p.next_schedule).map(Time),
        active_run_count: Some(queue.active.len() as u32),
        active_runs: names(&queue.active, MAX_LISTED),
        queued_run_count: (queued > 0).then_some(queued as u32),
        queued_runs: names(&queue.waiting, queued.min(MAX_LISTED)),
        ..status
    }
}

/// When to look again: just after the next cron time, within [`QUEUED_REQUEUE`] while runs
/// are queued, and within [`FALLBACK_REQUEUE`] while due intervals wait for runs to finish
/// (finishing runs wake the Pipeline; this is the safety net). `None`: at the next change.
fn requeue_after(plan: Option<&TickPlan>, queued: bool, now: jiff::Timestamp) -> Option<Duration> {
    let held_back = plan
        .and_then(|p| p.waiting)
        .filter(|w| matches!(w, WaitReason::CatchupWindow | WaitReason::Forbid))
        .map(|_| FALLBACK_REQUEUE);
    let next_cron_time = plan.and_then(|p| p.next_schedule).map(|next| {
        let wait = Duration::try_from(next.duration_since(now)).unwrap_or_default();
        (wait + AFTER_CRON_TIME).min(FALLBACK_REQUEUE)
    });
    let queued = queued.then_some(QUEUED_REQUEUE);
    [held_back, next_cron_time, queued].into_iter().flatten().min()
}

/// A new run of `pipeline`, owned by it (so its history limits apply and deleting the
/// Pipeline deletes it), labelled with its pipeline and what triggered it.
pub fn new_run(
    pipeline: &Pipeline,
    name: &str,
    trigger: Trigger,
    logical_date: jiff::Timestamp,
    interval: Option<Interval>,
) -> Result<PipelineRun> {
    let mut owner = pipeline
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    // Blocking the owner's deletion needs permission on pipelines/finalizers, which people
    // running `weir trigger` may not have; garbage collection works without it.
    owner.block_owner_deletion = None;
    let (start, end) = match interval {
        Some(i) => (i.start, i.end),
        None => (logical_date, logical_date),
    };
    Ok(PipelineRun {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: pipeline.namespace(),
            labels: Some(BTreeMap::from([
                (
                    labels::MANAGED_BY.to_string(),
                    labels::MANAGED_BY_VALUE.to_string(),
                ),
                (
                    labels::PIPELINE.to_string(),
                    names::label_value(&pipeline.name_any()),
                ),
                (labels::TRIGGER.to_string(), trigger.as_str().to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: PipelineRunSpec {
            pipeline_ref: Some(PipelineRef {
                name: pipeline.name_any(),
            }),
            logical_date: Some(Time(logical_date)),
            data_interval_start: Some(Time(start)),
            data_interval_end: Some(Time(end)),
            ..Default::default()
        },
        status: None,
    })
}

/// Creates a run unless one of that name exists. Returns whether it was created.
pub async fn create_run(api: &Api<PipelineRun>, run: &PipelineRun) -> Result<bool> {
    let created = api
        .create(&PostParams::default(), run)
        .await
        .ignore_already_exists()?;
    Ok(created.is_some())
}

/// Asks a run to stop (its `finally` tasks still run); a run gone already needs nothing.
async fn cancel(api: &Api<PipelineRun>, name: &str) -> Result<()> {
    let patch = serde_json::json!({ "spec": { "cancelled": true } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .ignore_not_found()?;
    Ok(())
}

fn namespace(pipeline: &Pipeline) -> Result<String> {
    pipeline
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))
}

fn owned_by(run: &PipelineRun, pipeline: &Pipeline) -> bool {
    let uid = pipeline.uid();
    run.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

fn trigger_of(run: &PipelineRun) -> Option<&str> {
    run.labels().get(labels::TRIGGER).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PipelineSpec;
    use crate::api::RunPhase::{Cancelled, Failed, Pending, Running, Succeeded};
    use crate::api::condition_types::READY;
    use crate::controller::fixture::{RunBuilder, mk_pipeline, mk_run, names, ts};

    fn pipeline(max: Option<u32>, active: u32, queued: &[&str]) -> Pipeline {
        let mut p = Pipeline::new(
            "etl",
            PipelineSpec {
                max_active_runs: max,
                ..Default::default()
            },
        );
        p.metadata.namespace = Some("data".into());
        p.metadata.uid = Some("uid-1".into());
        p.status = Some(PipelineStatus {
            active_run_count: Some(active),
            queued_runs: queued.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        p
    }

    #[test]
    fn new_runs_are_owned_labelled_and_carry_their_interval() {
        let p = pipeline(None, 0, &[]);
        let start: jiff::Timestamp = "2024-03-01T00:00:00Z".parse().unwrap();
        let end: jiff::Timestamp = "2024-03-02T00:00:00Z".parse().unwrap();
        let run = new_run(
            &p,
            "etl-20240301-000000",
            Trigger::Backfill,
            start,
            Some(Interval { start, end }),
        )
        .unwrap();
        assert_eq!(run.labels()[labels::TRIGGER], "backfill");
        assert_eq!(run.labels()[labels::PIPELINE], "etl");
        let owner = &run.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Pipeline", "uid-1"));
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, None);
        assert_eq!(run.spec.data_interval_end, Some(Time(end)));
        assert_eq!(run.spec.logical_date, Some(Time(start)));
        // A manual run's interval is the moment it was triggered.
        let manual = new_run(&p, "etl-manual", Trigger::Manual, start, None).unwrap();
        assert_eq!(manual.spec.data_interval_start, manual.spec.data_interval_end);
    }

    fn interval(start: &str, end: &str) -> Interval {
        Interval {
            start: ts(start),
            end: ts(end),
        }
    }

    /// A plan that creates runs for `create` and changes nothing else.
    fn plan(create: &[Interval]) -> TickPlan {
        TickPlan {
            create: create.to_vec(),
            cancel_unfinished: false,
            skipped: Vec::new(),
            waiting: None,
            last_schedule: create.last().map(|i| i.end),
            next_schedule: None,
        }
    }

    fn with_limits(succeeded: Option<u32>, failed: Option<u32>) -> Pipeline {
        let mut p = mk_pipeline();
        p.spec.successful_runs_history_limit = succeeded;
        p.spec.failed_runs_history_limit = failed;
        p
    }

    #[test]
    fn history_limits_delete_the_owned_runs_that_finished_longest_ago() {
        let runs = [
            mk_run("etl-ok-1", Succeeded, "2024-03-01T01:00:00Z"),
            mk_run("etl-ok-2", Succeeded, "2024-03-01T02:00:00Z"),
            // Finished last although its interval is the oldest.
            mk_run("etl-ok-0", Succeeded, "2024-03-01T00:00:00Z").finished_at("2024-03-02T00:00:00Z"),
            mk_run("etl-failed", Failed, "2024-03-01T03:00:00Z"),
            mk_run("etl-cancelled", Cancelled, "2024-03-01T04:00:00Z"),
            mk_run("etl-running", Running, "2024-03-01T00:00:00Z"),
            mk_run("etl-queued", Pending, "2024-03-01T00:00:00Z"),
            mk_run("by-hand", Succeeded, "2024-02-01T00:00:00Z").not_owned(),
            mk_run("other-owner", Failed, "2024-02-01T00:00:00Z").owned_by_uid("uid-other"),
        ];
        // (successfulRunsHistoryLimit, failedRunsHistoryLimit, the runs deleted)
        let cases: [(Option<u32>, Option<u32>, &[&str]); 6] = [
            (None, None, &[]),
            (Some(1), None, &["etl-ok-2", "etl-ok-1"]),
            (Some(2), None, &["etl-ok-1"]),
            (Some(3), None, &[]),
            // Cancelled runs count as failed.
            (None, Some(1), &["etl-failed"]),
            (
                Some(0),
                Some(0),
                &["etl-ok-0", "etl-cancelled", "etl-failed", "etl-ok-2", "etl-ok-1"],
            ),
        ];
        for (succeeded, failed, expected) in cases {
            let pruned = runs_past_history_limits(&with_limits(succeeded, failed), &runs);
            assert_eq!(pruned, expected, "limits {succeeded:?} / {failed:?}");
        }
    }

    #[test]
    fn a_finished_run_without_completion_time_counts_as_finished_when_created() {
        let mut old = mk_run("etl-old", Succeeded, "2024-03-01T05:00:00Z").created_at("2024-03-01T00:00:00Z");
        old.status.as_mut().unwrap().completion_time = None;
        let new = mk_run("etl-new", Succeeded, "2024-03-01T01:00:00Z");
        let pruned = runs_past_history_limits(&with_limits(Some(1), None), &[old, new]);
        assert_eq!(pruned, ["etl-old"]);
    }

    #[test]
    fn the_tick_input_counts_only_unfinished_runs_the_schedule_made() {
        let scheduled =
            |name, phase| mk_run(name, phase, "2024-03-01T00:00:00Z").triggered_by(Trigger::Schedule);
        // (the runs, how many count as unfinished scheduled runs)
        let cases = [
            (vec![], 0),
            (vec![scheduled("etl-a", Running), scheduled("etl-b", Pending)], 2),
            (
                vec![scheduled("etl-a", Running), scheduled("etl-done", Succeeded)],
                1,
            ),
            (vec![scheduled("etl-stopping", Running).cancelled()], 1),
            (
                vec![
                    mk_run("etl-manual", Running, "2024-03-01T00:00:00Z").triggered_by(Trigger::Manual),
                    mk_run("etl-unlabelled", Running, "2024-03-01T00:00:00Z"),
                    scheduled("by-hand", Running).not_owned(),
                ],
                0,
            ),
        ];
        let mut p = mk_pipeline();
        p.spec.max_active_runs = Some(3);
        let last = Time(ts("2024-03-01T06:00:00Z"));
        let now = ts("2024-03-01T06:30:00Z");
        for (runs, unfinished) in cases {
            let input = tick_input(&p, &runs, Some(&last), now);
            assert_eq!(input.unfinished, unfinished, "{:?}", names(&runs));
            assert_eq!(input.created, ts("2024-03-01T00:00:00Z"));
            assert_eq!(input.last_schedule, Some(last.0));
            assert_eq!(input.max_active_runs, Some(3));
            assert_eq!(input.now, now);
        }
        p.metadata.creation_timestamp = None;
        assert_eq!(
            tick_input(&p, &[], None, now).created,
            jiff::Timestamp::UNIX_EPOCH
        );
    }

    #[test]
    fn due_intervals_become_scheduled_runs_named_after_their_logical_date() {
        let p = mk_pipeline();
        let due = [
            interval("2024-03-01T01:00:00Z", "2024-03-01T02:00:00Z"),
            interval("2024-03-01T02:00:00Z", "2024-03-01T03:00:00Z"),
        ];
        let changes = changes(&p, &[], Some(&plan(&due))).unwrap();
        let created: Vec<_> = changes
            .create
            .iter()
            .map(|(run, i)| (run.name_any(), *i))
            .collect();
        assert_eq!(
            created,
            [
                ("etl-20240301-010000".to_string(), due[0]),
                ("etl-20240301-020000".to_string(), due[1])
            ]
        );
        let (run, _) = &changes.create[0];
        assert_eq!(run.labels()[labels::TRIGGER], "schedule");
        assert_eq!(run.spec.data_interval_end, Some(Time(due[0].end)));
        assert!(changes.prune.is_empty() && changes.replace.is_empty());
        // Without a schedule only the history limits change anything.
        let done = [mk_run("etl-done", Succeeded, "2024-03-01T00:00:00Z")];
        let changes = super::changes(&with_limits(Some(0), None), &done, None).unwrap();
        assert_eq!(
            (changes.create.len(), changes.prune, changes.replace.len()),
            (0, vec!["etl-done".to_string()], 0)
        );
    }

    #[test]
    fn replace_cancels_only_older_unfinished_scheduled_runs_once_a_newer_one_is_created() {
        let scheduled = |name, logical| mk_run(name, Running, logical).triggered_by(Trigger::Schedule);
        let runs = [
            scheduled("etl-old", "2024-03-01T00:00:00Z"),
            scheduled("etl-older", "2023-03-01T00:00:00Z"),
            scheduled("etl-stopping", "2024-03-01T00:00:00Z").cancelled(),
            scheduled("etl-same", "2024-03-01T02:00:00Z"),
            mk_run("etl-done", Succeeded, "2024-03-01T00:00:00Z").triggered_by(Trigger::Schedule),
            mk_run("etl-manual", Running, "2024-03-01T00:00:00Z").triggered_by(Trigger::Manual),
            scheduled("by-hand", "2024-03-01T00:00:00Z").not_owned(),
        ];
        let newest = interval("2024-03-01T02:00:00Z", "2024-03-01T03:00:00Z");
        // (cancelUnfinished, the intervals created, the runs cancelled)
        let cases: [(bool, &[Interval], &[&str]); 3] = [
            (true, &[newest], &["etl-old", "etl-older"]),
            (false, &[newest], &[]),
            // Nothing created, nothing replaced.
            (true, &[], &[]),
        ];
        for (cancel_unfinished, create, expected) in cases {
            let plan = TickPlan {
                cancel_unfinished,
                ..plan(create)
            };
            let changes = changes(&mk_pipeline(), &runs, Some(&plan)).unwrap();
            assert_eq!(changes.replace, expected, "{cancel_unfinished} {create:?}");
        }
    }

    /// `n` runs in `phase`, an hour apart, named `<prefix>-<i>`, listed newest first.
    fn many(prefix: &str, phase: RunPhase, n: usize) -> Vec<PipelineRun> {
        let base = ts("2024-03-01T00:00:00Z");
        (0..n)
            .rev()
            .map(|i| {
                let logical = base + jiff::SignedDuration::from_hours(i as i64);
                mk_run(&format!("{prefix}-{i:02}"), phase, &logical.to_string())
            })
            .collect()
    }

    #[test]
    fn the_status_lists_active_and_queued_runs_oldest_first_and_at_most_max_listed() {
        let listed =
            |prefix: &str, n: usize| -> Vec<String> { (0..n).map(|i| format!("{prefix}-{i:02}")).collect() };
        let many_listed = MAX_LISTED as u32;
        // (maxActiveRuns, runs running, pending, finished) and what the status says:
        // (activeRunCount, active runs listed, queuedRunCount, queued runs listed)
        let cases = [
            ((Some(2), 0, 0, 3), (Some(0), 0, None, 0)),
            ((Some(2), 2, 3, 1), (Some(2), 2, Some(3), 3)),
            // Without a limit nothing waits: runs not started yet are merely starting.
            ((None, 2, 3, 0), (Some(2), 2, None, 0)),
            (
                (Some(1), MAX_LISTED + 5, 0, 0),
                (Some(many_listed + 5), MAX_LISTED, None, 0),
            ),
            (
                (Some(1), 1, MAX_LISTED + 1, 0),
                (Some(1), 1, Some(many_listed + 1), MAX_LISTED),
            ),
        ];
        for ((max, running, pending, finished), (active_count, active, queued_count, queued)) in cases {
            let mut p = mk_pipeline();
            p.spec.max_active_runs = max;
            let runs = [
                many("wait", Pending, pending),
                many("done", Succeeded, finished),
                many("run", Running, running),
            ]
            .concat();
            let status = scheduled_status(PipelineStatus::default(), &p, None, &runs);
            let case = format!("{max:?}: {running} running, {pending} pending, {finished} finished");
            assert_eq!(status.active_run_count, active_count, "{case}");
            assert_eq!(status.active_runs, listed("run", active), "{case}");
            assert_eq!(status.queued_run_count, queued_count, "{case}");
            assert_eq!(status.queued_runs, listed("wait", queued), "{case}");
        }
    }

    #[test]
    fn the_status_takes_schedule_times_from_the_plan_and_keeps_what_validation_wrote() {
        let p = mk_pipeline();
        let earlier = Time(ts("2024-03-01T00:00:00Z"));
        let validated = PipelineStatus {
            observed_generation: Some(1),
            task_count: Some(2),
            last_schedule_time: Some(earlier.clone()),
            next_schedule_time: Some(Time(ts("2024-03-01T01:00:00Z"))),
            ..Default::default()
        };
        let mut validated = validated;
        set_ready(&mut validated);
        let due = [interval("2024-03-01T00:00:00Z", "2024-03-01T01:00:00Z")];
        let next = ts("2024-03-01T02:00:00Z");
        let ticked = TickPlan {
            next_schedule: Some(next),
            ..plan(&due)
        };
        let suspended = TickPlan {
            last_schedule: Some(earlier.0),
            ..plan(&[])
        };
        // (the plan, lastScheduleTime, nextScheduleTime)
        let cases = [
            (Some(&ticked), Some(Time(due[0].end)), Some(Time(next))),
            (Some(&suspended), Some(earlier.clone()), None),
            // No schedule (or an invalid pipeline): the last time stays, there is no next.
            (None, Some(earlier.clone()), None),
        ];
        for (plan, last, next) in cases {
            let status = scheduled_status(validated.clone(), &p, plan, &[]);
            assert_eq!(
                (&status.last_schedule_time, &status.next_schedule_time),
                (&last, &next),
                "{plan:?}"
            );
            assert_eq!(status.conditions, validated.conditions);
            assert_eq!(
                (status.observed_generation, status.task_count),
                (Some(1), Some(2))
            );
        }
    }

    fn set_ready(status: &mut PipelineStatus) {
        crate::api::set_condition(
            &mut status.conditions,
            READY,
            crate::api::ConditionStatus::True,
            reasons::VALID,
            "2 task(s), valid",
            Some(1),
            ts("2024-03-01T00:00:00Z"),
        );
    }

    #[test]
    fn the_pipeline_looks_again_after_the_next_cron_time_or_sooner() {
        let now = ts("2024-03-01T00:00:00Z");
        let at = |next: &str| TickPlan {
            next_schedule: Some(ts(next)),
            ..plan(&[])
        };
        let waiting = |reason| TickPlan {
            waiting: Some(reason),
            ..at("2024-03-02T00:00:00Z")
        };
        let secs = Duration::from_secs;
        // (the plan, runs queued, when to look again)
        let cases = [
            (None, false, None),
            (Some(plan(&[])), false, None),
            (None, true, Some(QUEUED_REQUEUE)),
            (
                Some(at("2024-03-01T00:00:10Z")),
                false,
                Some(secs(10) + AFTER_CRON_TIME),
            ),
            (
                Some(at("2024-03-01T00:00:10Z")),
                true,
                Some(secs(10) + AFTER_CRON_TIME),
            ),
            (Some(at("2024-03-01T00:30:00Z")), true, Some(QUEUED_REQUEUE)),
            // Far away: the safety net.
            (Some(at("2024-03-02T00:00:00Z")), false, Some(FALLBACK_REQUEUE)),
            // Already passed (a slow reconcile): at once.
            (Some(at("2024-02-29T23:59:00Z")), false, Some(AFTER_CRON_TIME)),
            (Some(waiting(WaitReason::Forbid)), false, Some(FALLBACK_REQUEUE)),
            (
                Some(waiting(WaitReason::CatchupWindow)),
                true,
                Some(QUEUED_REQUEUE),
            ),
        ];
        for (plan, queued, expected) in cases {
            assert_eq!(
                requeue_after(plan.as_ref(), queued, now),
                expected,
                "{plan:?} {queued}"
            );
        }
    }

    #[test]
    fn skipped_intervals_are_counted_up_to_the_engine_cap() {
        let cases = [
            (
                SkipReason::NoCatchup,
                3,
                "skipped 3 interval(s): catchup is off, so only the newest missed interval runs",
            ),
            (
                SkipReason::Forbid,
                MAX_INTERVALS - 1,
                &format!(
                    "skipped {} interval(s): {}",
                    MAX_INTERVALS - 1,
                    SkipReason::Forbid.describe()
                ),
            ),
            (
                SkipReason::StartingDeadline,
                MAX_INTERVALS,
                &format!(
                    "skipped {MAX_INTERVALS} or more interval(s): {}",
                    SkipReason::StartingDeadline.describe()
                ),
            ),
        ];
        for (reason, count, expected) in cases {
            assert_eq!(skipped_note(reason, count), expected);
        }
    }

    #[test]
    fn the_fresher_last_schedule_time_wins() {
        let (early, late) = (Time(ts("2024-03-01T00:00:00Z")), Time(ts("2024-03-01T01:00:00Z")));
        let cases = [
            (None, None, None),
            (Some(early.clone()), None, Some(early.clone())),
            (None, Some(late.clone()), Some(late.clone())),
            (Some(early.clone()), Some(late.clone()), Some(late.clone())),
            // A stale answer never moves the time back.
            (Some(late.clone()), Some(early.clone()), Some(late.clone())),
        ];
        for (cached, fresh, expected) in cases {
            assert_eq!(
                newest(cached.clone(), fresh.clone()),
                expected,
                "{cached:?} {fresh:?}"
            );
        }
    }

    #[test]
    fn only_a_valid_pipeline_with_a_working_schedule_is_scheduled() {
        let with_cron = |cron: &str| {
            let mut p = mk_pipeline();
            p.spec.schedule = Some(crate::api::Schedule {
                cron: cron.into(),
                ..Default::default()
            });
            p
        };
        assert!(parsed_schedule(&with_cron("0 * * * *"), true).is_some());
        assert!(parsed_schedule(&with_cron("0 * * * *"), false).is_none());
        assert!(parsed_schedule(&with_cron("not cron"), true).is_none());
        assert!(parsed_schedule(&mk_pipeline(), true).is_none());
    }
}
