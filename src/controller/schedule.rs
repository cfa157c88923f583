//! Schedules and history limits, on the Kubernetes side. The Pipeline controller calls
//! [`reconcile_pipeline`] on every reconcile: it lists the pipeline's runs, deletes the
//! ones past the history limits, creates the runs of due intervals (`engine::schedule`
//! decides which) and reports active and queued runs in the Pipeline's status, then asks to
//! be woken at the next cron time. Whether a run may start under `maxActiveRuns` is decided
//! on the run's side (`super::admission`).

use super::admission::{QUEUED_REQUEUE, created, is_finished, queue_entry, runs_of};
use super::{Context, Error, Result, is_already_exists, is_not_found};
use crate::api::{
    Pipeline, PipelineRef, PipelineRun, PipelineRunSpec, PipelineStatus, RunPhase, Trigger, labels,
};
use crate::engine::names;
use crate::engine::schedule::{
    FinishedRun, Interval, ParsedSchedule, QueuedRun, RunQueue, TickInput, WaitReason, plan_ticks,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most run names listed in `status.activeRuns` and `status.queuedRuns`.
pub const MAX_LISTED: usize = 20;
/// Longest a Pipeline with a schedule or queued runs waits before looking again, whatever
/// happens (a safety net under the watches).
const FALLBACK_REQUEUE: Duration = Duration::from_secs(300);

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
    match api.create(&PostParams::default(), run).await {
        Ok(_) => Ok(true),
        Err(e) if is_already_exists(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
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

/// The schedule, history and queue part of a Pipeline's reconcile. Fills the schedule and
/// run fields of `status`; returns when to look again.
pub async fn reconcile_pipeline(
    ctx: &Context,
    pipeline: &Pipeline,
    status: &mut PipelineStatus,
    valid: bool,
    now: jiff::Timestamp,
) -> Result<Option<Duration>> {
    let ns = pipeline
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = pipeline.name_any();
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &ns);
    let mut runs = runs_of(&api, &name).await?;
    let regarding = pipeline.object_ref(&());

    // History limits: delete the owned finished runs past them.
    let spec = &pipeline.spec;
    if spec.successful_runs_history_limit.is_some() || spec.failed_runs_history_limit.is_some() {
        let finished: Vec<FinishedRun> = runs
            .iter()
            .filter(|r| is_finished(r) && owned_by(r, pipeline))
            .map(|r| {
                let s = r.status.as_ref();
                FinishedRun {
                    name: r.name_any(),
                    succeeded: s.and_then(|s| s.phase) == Some(RunPhase::Succeeded),
                    finished_at: s
                        .and_then(|s| s.completion_time.as_ref())
                        .map(|t| t.0)
                        .unwrap_or_else(|| created(r)),
                }
            })
            .collect();
        let prune = crate::engine::schedule::runs_to_prune(
            &finished,
            spec.successful_runs_history_limit,
            spec.failed_runs_history_limit,
        );
        for run_name in &prune {
            match api.delete(run_name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !prune.is_empty() {
            tracing::info!(pipeline = %name, runs = ?prune, "deleted runs past the history limits");
            runs.retain(|r| !prune.contains(&r.name_any()));
        }
    }

    // The schedule.
    let mut requeue = None;
    let schedule = spec
        .schedule
        .as_ref()
        .filter(|_| valid)
        .and_then(|s| ParsedSchedule::parse(s).ok());
    match schedule {
        None => {
            status.next_schedule_time = None;
        }
        Some(schedule) => {
            // The watch cache may not hold our own last status write yet: a stale
            // lastScheduleTime would plan intervals already handled again.
            let fresh = Api::<Pipeline>::namespaced(ctx.client.clone(), &ns)
                .get(&name)
                .await?;
            let fresh_last = fresh.status.and_then(|s| s.last_schedule_time);
            if fresh_last.as_ref().map(|t| t.0) > status.last_schedule_time.as_ref().map(|t| t.0) {
                status.last_schedule_time = fresh_last;
            }
            let scheduled_unfinished: Vec<PipelineRun> = runs
                .iter()
                .filter(|r| {
                    !is_finished(r)
                        && owned_by(r, pipeline)
                        && trigger_of(r) == Some(Trigger::Schedule.as_str())
                })
                .cloned()
                .collect();
            let plan = plan_ticks(
                &schedule,
                &TickInput {
                    created: created_of(pipeline),
                    last_schedule: status.last_schedule_time.as_ref().map(|t| t.0),
                    unfinished: scheduled_unfinished.len() as u32,
                    max_active_runs: spec.max_active_runs,
                    now,
                },
            );
            for interval in &plan.create {
                let run_name = crate::engine::schedule::run_name(&name, interval.start);
                let run = new_run(
                    pipeline,
                    &run_name,
                    Trigger::Schedule,
                    interval.start,
                    Some(*interval),
                )?;
                if create_run(&api, &run).await? {
                    ctx.event(
                        &regarding,
                        None,
                        EventType::Normal,
                        "RunScheduled",
                        "Schedule",
                        format!(
                            "created run {run_name} for the interval {} to {}",
                            interval.start, interval.end
                        ),
                    )
                    .await;
                    runs.push(run);
                }
            }
            // Replaced only once the replacement exists, and only by a newer interval.
            let newest = plan.create.last().map(|i| i.start);
            let replaced: Vec<&PipelineRun> = scheduled_unfinished
                .iter()
                .filter(|r| {
                    plan.cancel_unfinished
                        && r.spec.logical_date.as_ref().map(|t| t.0) < newest
                        && !r.spec.cancelled
                })
                .collect();
            if !replaced.is_empty() {
                for run in &replaced {
                    cancel(&api, run).await?;
                }
                let replaced: Vec<String> = replaced.iter().map(|r| r.name_any()).collect();
                ctx.event(
                    &regarding,
                    None,
                    EventType::Normal,
                    "RunsReplaced",
                    "Schedule",
                    format!("concurrencyPolicy Replace: cancelling {}", replaced.join(", ")),
                )
                .await;
            }
            for (reason, count) in &plan.skipped {
                ctx.event(
                    &regarding,
                    None,
                    EventType::Warning,
                    "IntervalsSkipped",
                    "Schedule",
                    format!(
                        "skipped {count}{} interval(s): {}",
                        if *count >= crate::engine::schedule::MAX_INTERVALS {
                            " or more"
                        } else {
                            ""
                        },
                        reason.describe()
                    ),
                )
                .await;
            }
            if let Some(wait) = plan.waiting {
                tracing::debug!(pipeline = %name, ?wait, "due intervals wait");
                if wait == WaitReason::CatchupWindow || wait == WaitReason::Forbid {
                    // Runs finishing wake the Pipeline; this is the safety net.
                    requeue = Some(FALLBACK_REQUEUE);
                }
            }
            status.last_schedule_time = plan.last_schedule.map(Time);
            status.next_schedule_time = plan.next_schedule.map(Time);
            if let Some(next) = plan.next_schedule {
                let wait = Duration::try_from(next.duration_since(now)).unwrap_or_default();
                // A little after the cron time, so the clock has surely passed it.
                let wait = (wait + Duration::from_millis(50)).min(FALLBACK_REQUEUE);
                requeue = Some(requeue.map_or(wait, |r: Duration| r.min(wait)));
            }
        }
    }

    // Active and queued runs.
    let entries: Vec<QueuedRun> = runs.iter().map(queue_entry).collect();
    let queue = RunQueue::new(&entries);
    status.active_run_count = Some(queue.active.len() as u32);
    status.active_runs = queue
        .active
        .iter()
        .take(MAX_LISTED)
        .map(|&i| entries[i].name.clone())
        .collect();
    // Without a limit nothing waits: runs not started yet are merely starting.
    let queued = if spec.max_active_runs.is_some() {
        queue.waiting.len()
    } else {
        0
    };
    status.queued_run_count = (queued > 0).then_some(queued as u32);
    status.queued_runs = queue
        .waiting
        .iter()
        .take(queued.min(MAX_LISTED))
        .map(|&i| entries[i].name.clone())
        .collect();
    if queued > 0 {
        requeue = Some(requeue.map_or(QUEUED_REQUEUE, |r| r.min(QUEUED_REQUEUE)));
    }
    Ok(requeue)
}

fn created_of(pipeline: &Pipeline) -> jiff::Timestamp {
    pipeline
        .creation_timestamp()
        .map(|t| t.0)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

async fn cancel(api: &Api<PipelineRun>, run: &PipelineRun) -> Result<()> {
    if run.spec.cancelled {
        return Ok(());
    }
    let patch = serde_json::json!({ "spec": { "cancelled": true } });
    match api
        .patch(&run.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// For the Pipeline controller's watch of runs: the Pipeline a run belongs to. Runs that
/// are merely making progress are left out (their Pipeline has nothing to do about them);
/// runs that appear, wait, start or finish are not.
pub fn pipeline_of_run(run: PipelineRun) -> Option<ObjectRef<Pipeline>> {
    let running = run.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Running);
    if running && !run.spec.cancelled {
        return None;
    }
    let name = &run.spec.pipeline_ref.as_ref()?.name;
    Some(ObjectRef::new(name).within(&run.namespace()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PipelineRunStatus, PipelineSpec};

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

    #[test]
    fn only_runs_that_appear_wait_start_or_finish_move_their_pipeline() {
        let mut run = PipelineRun::new(
            "r",
            PipelineRunSpec {
                pipeline_ref: Some(PipelineRef { name: "etl".into() }),
                ..Default::default()
            },
        );
        run.metadata.namespace = Some("data".into());
        assert_eq!(pipeline_of_run(run.clone()).map(|r| r.name), Some("etl".into()));
        run.status = Some(PipelineRunStatus {
            phase: Some(RunPhase::Running),
            ..Default::default()
        });
        assert!(pipeline_of_run(run.clone()).is_none());
        run.spec.cancelled = true;
        assert!(pipeline_of_run(run.clone()).is_some());
        run.status.as_mut().unwrap().phase = Some(RunPhase::Succeeded);
        assert!(pipeline_of_run(run).is_some());
    }
}
