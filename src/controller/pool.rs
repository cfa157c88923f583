//! Pools on the operator's side. The slots a pool has given out are written in its status
//! (`holders`), one attempt each, and every write of that status is a replace under the
//! resourceVersion just read: two reconciles, or two operator processes, that both saw the
//! last slot free cannot both take it (the second gets a conflict, reads again and queues).
//!
//! The status is never trusted on its own: each writer derives it again from the live
//! TaskRuns of the namespace ([`recount`]). A holder whose TaskRun is gone, finished, or
//! whose attempt ended is dropped (a crashed operator never loses a slot), and a TaskRun
//! with a running attempt that the status does not list is counted as a holder all the
//! same (a pool deleted and made again, or written by an older status, never overshoots).
//!
//! The TaskRun reconcile asks [`acquire`] before it creates an attempt's Job. The Pool
//! controller ([`reconcile`]) is woken by every change of a TaskRun that names the pool and
//! writes the status again, which frees the slots of attempts that ended; the TaskRun
//! controller watches Pools and wakes the tasks first in line for the free slots
//! ([`tasks_to_wake`]).

use super::{Context, Error, Result};
use crate::api::{
    AttemptPhase, Pool, PoolHolder, PoolStatus, QueuedTask, TaskPhase, TaskRun, annotations, reasons,
};
use crate::engine::pool::{self, Candidate, Place};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;
use std::time::Duration;

/// Longest queue the status lists.
const MAX_LISTED: usize = 50;
/// A pool looks again this often by itself (it is normally woken by its TaskRuns).
const RESYNC: Duration = Duration::from_secs(60);
/// A task waiting for slots looks again this often by itself (it is normally woken sooner).
pub const QUEUED_REQUEUE: Duration = Duration::from_secs(30);

/// Whether a TaskRun may create the Job of its next attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// It uses no pool, or it holds the slots.
    Go,
    /// It waits: the reason of its condition (`Queued`, `PoolNotFound`, `PoolTooSmall`) and
    /// why, naming the pool.
    Wait { reason: &'static str, message: String },
}

/// How many times [`acquire`] reads the pool again after losing a race to another writer,
/// before it leaves the retry to the controller's backoff.
const CONFLICT_RETRIES: usize = 4;

/// Takes the slots attempt `attempt` of `tr` needs, if they are free: the hold is stored in
/// the Pool's status (under its resourceVersion) before this returns [`Gate::Go`].
pub async fn acquire(
    ctx: &Context,
    ns: &str,
    tr: &TaskRun,
    attempt: u32,
    now: jiff::Timestamp,
) -> Result<Gate> {
    let mut tries = 0;
    loop {
        match try_acquire(ctx, ns, tr, attempt, now).await {
            Err(e) if e.category() == "conflict" && tries < CONFLICT_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// One try of [`acquire`]: read the pool and its TaskRuns, decide, write.
async fn try_acquire(
    ctx: &Context,
    ns: &str,
    tr: &TaskRun,
    attempt: u32,
    now: jiff::Timestamp,
) -> Result<Gate> {
    let Some(name) = tr.spec.pool.as_deref() else {
        return Ok(Gate::Go);
    };
    let pools = Api::<Pool>::namespaced(ctx.client.clone(), ns);
    let Some(found) = pools.get_opt(name).await? else {
        return Ok(Gate::Wait {
            reason: reasons::POOL_NOT_FOUND,
            message: pool::missing_pool_message(name, ns),
        });
    };
    if holds(&found, tr, attempt) {
        // Taken by an earlier reconcile that stopped before the Job was made.
        return Ok(Gate::Go);
    }
    let task_runs = task_runs_of(ctx, ns).await?;
    let (status, place) = recount(&found, &task_runs, Some((tr, attempt)), now);
    let place = place.unwrap_or(Place::TooLarge);
    if status != found.status.clone().unwrap_or_default() {
        let written = write_status(&pools, &found, status.clone()).await;
        match (place, written) {
            (Place::Admitted, Err(e)) => return Err(e),
            // Only the queue it shows is lost; the next writer shows it again.
            (_, Err(e)) => {
                tracing::debug!(%e, pool = name, "pool status not written; another writer was first")
            }
            _ => {}
        }
    }
    if place == Place::Admitted {
        ctx.metrics.pool_admitted();
        return Ok(Gate::Go);
    }
    let reason = match place {
        Place::TooLarge => reasons::POOL_TOO_SMALL,
        _ => reasons::QUEUED,
    };
    let message = pool::waiting_message(name, found.spec.slots, status.occupied, slots_of(tr), place);
    Ok(Gate::Wait { reason, message })
}

/// Whether the pool's status lists attempt `attempt` of `tr` among its holders.
fn holds(pool: &Pool, tr: &TaskRun, attempt: u32) -> bool {
    let uid = tr.uid().unwrap_or_default();
    pool.status
        .as_ref()
        .is_some_and(|s| s.holders.iter().any(|h| h.uid == uid && h.attempt == attempt))
}

/// One look at a Pool: its status derived again from the live TaskRuns.
pub async fn reconcile(found: Arc<Pool>, ctx: Arc<Context>) -> Result<Action> {
    if found.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = found
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let task_runs = task_runs_of(&ctx, &ns).await?;
    let (status, _) = recount(&found, &task_runs, None, super::now());
    if Some(&status) != found.status.as_ref() {
        let pools = Api::<Pool>::namespaced(ctx.client.clone(), &ns);
        write_status(&pools, &found, status).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// The TaskRuns of a namespace, fresh from the API server (they decide what is held), but
/// those marked finished: they hold nothing, and a namespace keeps thousands of them.
async fn task_runs_of(ctx: &Context, ns: &str) -> Result<Vec<TaskRun>> {
    let api = Api::<TaskRun>::namespaced(ctx.client.clone(), ns);
    let unfinished = ListParams::default().labels(super::finished::UNFINISHED);
    Ok(api.list(&unfinished).await?.items)
}

/// Replaces the pool's status, on the condition that the pool is still as it was read.
async fn write_status(pools: &Api<Pool>, found: &Pool, status: PoolStatus) -> Result<()> {
    let mut next = found.clone();
    next.status = Some(status);
    next.metadata.managed_fields = None;
    // `next` carries the resourceVersion read: the API server refuses it (409) if the pool
    // changed since.
    pools
        .replace_status(&found.name_any(), &PostParams::default(), &next)
        .await?;
    Ok(())
}

fn slots_of(tr: &TaskRun) -> u32 {
    tr.spec.pool_slots.unwrap_or(1)
}

fn uses(tr: &TaskRun, pool: &str) -> bool {
    tr.spec.pool.as_deref() == Some(pool)
}

/// Whether the hold of `attempt` by `tr` still stands: while the attempt is recorded as
/// running, or, not recorded yet (its Job is being made), while the task has not ended or is
/// asked to run again. A TaskRun being deleted keeps it until it is gone.
fn still_holds(tr: &TaskRun, attempt: u32) -> bool {
    let Some(status) = tr.status.as_ref() else {
        return true;
    };
    match status.attempts.iter().find(|a| a.number == attempt) {
        Some(recorded) => recorded.phase == AttemptPhase::Running,
        None => !status.phase.is_some_and(TaskPhase::is_terminal) || rerun_asked(tr),
    }
}

/// The run asked the task to run again and it has not begun to.
fn rerun_asked(tr: &TaskRun) -> bool {
    let taken = tr.status.as_ref().and_then(|s| s.rerun.as_ref());
    tr.spec.rerun.is_some() && tr.spec.rerun.as_ref() != taken
}

/// The attempt of `tr` that runs, as its status says.
fn running_attempt(tr: &TaskRun) -> Option<u32> {
    let status = tr.status.as_ref()?;
    if status.phase.is_some_and(TaskPhase::is_terminal) {
        return None;
    }
    status
        .attempts
        .iter()
        .rev()
        .find(|a| a.phase == AttemptPhase::Running)
        .map(|a| a.number)
}

/// Whether `tr` waits for a slot now: not finished (or asked to run again), not cancelled,
/// no attempt running, and not waiting for a retry delay (which holds no slot).
fn wants_slot(tr: &TaskRun, now: jiff::Timestamp) -> bool {
    if tr.spec.stop_requested() || tr.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = tr.status.as_ref() else {
        return true;
    };
    let rerun = rerun_asked(tr);
    if status.phase.is_some_and(TaskPhase::is_terminal) && !rerun {
        return false;
    }
    let retry_due = status.next_retry_time.as_ref().is_none_or(|t| t.0 <= now);
    running_attempt(tr).is_none() && (retry_due || rerun)
}

fn holder(tr: &TaskRun, attempt: u32, since: jiff::Timestamp) -> PoolHolder {
    PoolHolder {
        task_run: tr.name_any(),
        uid: tr.uid().unwrap_or_default(),
        pipeline_run: tr.annotations().get(annotations::PIPELINE_RUN).cloned(),
        task: tr.spec.task_name.clone(),
        attempt,
        slots: slots_of(tr),
        priority: tr.spec.priority.unwrap_or(pool::DEFAULT_WEIGHT),
        since: Some(Time(since)),
    }
}

/// The pool's status derived from the live TaskRuns of its namespace, and, when `want` is
/// given (a TaskRun about to start an attempt), where that TaskRun stands; if admitted, the
/// status holds its slots.
fn recount(
    found: &Pool,
    task_runs: &[TaskRun],
    want: Option<(&TaskRun, u32)>,
    now: jiff::Timestamp,
) -> (PoolStatus, Option<Place>) {
    let name = found.name_any();
    let old = found.status.clone().unwrap_or_default();
    let mut holders = live_holders(&old.holders, &name, task_runs, now);
    if let Some((tr, _)) = want {
        // It starts a new attempt only once the earlier ones ended, whatever the stored
        // status of the TaskRun still says.
        holders.retain(|h| Some(&h.uid) != tr.uid().as_ref());
    }
    let held = |uid: &str, holders: &[PoolHolder]| holders.iter().any(|h| h.uid == uid);
    let mut waiting: Vec<&TaskRun> = task_runs
        .iter()
        .filter(|tr| uses(tr, &name) && !held(&tr.uid().unwrap_or_default(), &holders) && wants_slot(tr, now))
        .collect();
    let want_uid = want.and_then(|(tr, _)| tr.uid());
    if let Some((tr, _)) = want
        && !waiting.iter().any(|w| w.uid() == want_uid)
    {
        waiting.push(tr);
    }
    let names: Vec<String> = waiting.iter().map(|tr| tr.name_any()).collect();
    let candidates: Vec<Candidate<'_>> = waiting
        .iter()
        .zip(&names)
        .map(|(tr, key)| Candidate {
            key,
            slots: slots_of(tr),
            priority: tr.spec.priority.unwrap_or(pool::DEFAULT_WEIGHT),
            since: tr
                .creation_timestamp()
                .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0),
        })
        .collect();
    let slots = found.spec.slots;
    let decision = pool::admit(
        slots,
        pool::occupied(holders.iter().map(|h| h.slots)),
        &candidates,
    );
    let mine = waiting
        .iter()
        .position(|tr| tr.uid() == want_uid && want_uid.is_some());
    let place = mine.map(|i| decision.places[i]);
    if let (Some(Place::Admitted), Some((tr, attempt))) = (place, want) {
        holders.push(holder(tr, attempt, now));
    }
    let in_line: Vec<usize> = decision
        .order
        .iter()
        .copied()
        .filter(|&i| Some(i) != mine || place != Some(Place::Admitted))
        .collect();
    let too_large = decision.places.iter().filter(|p| **p == Place::TooLarge).count();
    let status = PoolStatus {
        observed_generation: found.metadata.generation,
        slots,
        occupied: pool::occupied(holders.iter().map(|h| h.slots)),
        queued: (in_line.len() + too_large) as u32,
        holders,
        queue: in_line
            .iter()
            .take(MAX_LISTED)
            .map(|&i| QueuedTask {
                task_run: names[i].clone(),
                slots: candidates[i].slots,
                priority: candidates[i].priority,
            })
            .collect(),
    };
    (status, place)
}

/// The holders that still hold: those listed whose TaskRun still holds, then the TaskRuns
/// of the pool with a running attempt that are not listed (adopted, so what runs is always
/// counted), oldest first.
fn live_holders(
    listed: &[PoolHolder],
    pool: &str,
    task_runs: &[TaskRun],
    now: jiff::Timestamp,
) -> Vec<PoolHolder> {
    let by_uid = |uid: &str| task_runs.iter().find(|tr| tr.uid().as_deref() == Some(uid));
    let mut holders: Vec<PoolHolder> = listed
        .iter()
        .filter(|h| by_uid(&h.uid).is_some_and(|tr| still_holds(tr, h.attempt)))
        .cloned()
        .collect();
    for tr in task_runs.iter().filter(|tr| uses(tr, pool)) {
        let uid = tr.uid().unwrap_or_default();
        if let Some(attempt) = running_attempt(tr)
            && !holders.iter().any(|h| h.uid == uid)
        {
            holders.push(holder(tr, attempt, now));
        }
    }
    holders
}

/// For the TaskRun controller's watch of Pools: the queued TaskRuns that fit in the free
/// slots, first in line first.
pub fn tasks_to_wake(found: Pool) -> Vec<ObjectRef<TaskRun>> {
    let (Some(status), Some(ns)) = (found.status.as_ref(), found.namespace()) else {
        return Vec::new();
    };
    let mut free = found.spec.slots.saturating_sub(status.occupied);
    let mut wake = Vec::new();
    for task in &status.queue {
        if task.slots > free {
            break;
        }
        free -= task.slots;
        wake.push(ObjectRef::new(&task.task_run).within(&ns));
    }
    wake
}

/// For the Pool controller's watch of TaskRuns: the pool a TaskRun uses.
pub fn pool_of_task_run(tr: TaskRun) -> Option<ObjectRef<Pool>> {
    let ns = tr.namespace()?;
    Some(ObjectRef::new(tr.spec.pool.as_deref()?).within(&ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Attempt, PoolSpec, TaskRunSpec, TaskRunStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const NOW: i64 = 10_000;

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    fn mk_pool(slots: u32, holders: Vec<PoolHolder>) -> Pool {
        let mut p = Pool::new(
            "gpu",
            PoolSpec {
                slots,
                description: None,
            },
        );
        p.metadata.namespace = Some("data".into());
        p.metadata.generation = Some(1);
        p.status = Some(PoolStatus {
            holders,
            ..Default::default()
        });
        p
    }

    /// A TaskRun of pool `gpu` created at `created`; `attempts` by phase, oldest first.
    fn mk_tr(name: &str, slots: u32, priority: i64, created: i64, attempts: &[AttemptPhase]) -> TaskRun {
        let mut tr = TaskRun::new(
            name,
            TaskRunSpec {
                task_name: name.into(),
                image: "busybox".into(),
                pool: Some("gpu".into()),
                pool_slots: Some(slots),
                priority: Some(priority),
                ..Default::default()
            },
        );
        tr.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("data".into()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(Time(ts(created))),
            ..Default::default()
        };
        let attempts: Vec<Attempt> = attempts
            .iter()
            .enumerate()
            .map(|(i, phase)| Attempt {
                number: i as u32 + 1,
                job_name: format!("{name}-{}", i + 1),
                phase: *phase,
                ..Default::default()
            })
            .collect();
        let phase = match attempts.last().map(|a| a.phase) {
            Some(AttemptPhase::Running) => TaskPhase::Running,
            Some(AttemptPhase::Succeeded) => TaskPhase::Succeeded,
            Some(AttemptPhase::Failed) => TaskPhase::Failed,
            None => TaskPhase::Pending,
        };
        tr.status = Some(TaskRunStatus {
            phase: Some(phase),
            attempts,
            ..Default::default()
        });
        tr
    }

    fn held(status: &PoolStatus) -> Vec<(&str, u32)> {
        status
            .holders
            .iter()
            .map(|h| (h.task_run.as_str(), h.attempt))
            .collect()
    }

    fn queue(status: &PoolStatus) -> Vec<&str> {
        status.queue.iter().map(|q| q.task_run.as_str()).collect()
    }

    #[test]
    fn the_last_slot_goes_to_the_first_in_line_only() {
        use AttemptPhase::Running;
        let running = mk_tr("a", 1, 1, 1, &[Running]);
        let low = mk_tr("low", 1, 1, 2, &[]);
        let high = mk_tr("high", 1, 5, 3, &[]);
        let all = [running.clone(), low.clone(), high.clone()];
        let found = mk_pool(2, vec![holder(&running, 1, ts(1))]);
        // The low one asks first, but the high one is first in line for the one free slot.
        let (status, place) = recount(&found, &all, Some((&low, 1)), ts(NOW));
        assert_eq!(place, Some(Place::Queued { position: 1 }));
        assert_eq!(held(&status), [("a", 1)]);
        assert_eq!(queue(&status), ["high", "low"]);
        assert_eq!((status.occupied, status.queued), (1, 2));
        let (status, place) = recount(&found, &all, Some((&high, 1)), ts(NOW));
        assert_eq!(place, Some(Place::Admitted));
        assert_eq!(held(&status), [("a", 1), ("high", 1)]);
        assert_eq!(queue(&status), ["low"]);
        assert_eq!((status.slots, status.occupied, status.queued), (2, 2, 1));
    }

    #[test]
    fn slots_of_ended_attempts_and_vanished_task_runs_are_freed() {
        use AttemptPhase::{Failed, Running, Succeeded};
        let done = mk_tr("done", 1, 1, 1, &[Succeeded]);
        let mut retrying = mk_tr("retrying", 1, 1, 2, &[Failed]);
        if let Some(s) = retrying.status.as_mut() {
            s.phase = Some(TaskPhase::Retrying);
            s.next_retry_time = Some(Time(ts(NOW + 60)));
        }
        let gone = mk_tr("gone", 1, 1, 3, &[Running]);
        let taken = mk_tr("taken", 1, 1, 4, &[]);
        let found = mk_pool(
            3,
            vec![
                holder(&done, 1, ts(1)),
                holder(&retrying, 1, ts(2)),
                holder(&gone, 1, ts(3)),
                // Taken for attempt 1 by a reconcile that stopped before making the Job.
                holder(&taken, 1, ts(4)),
            ],
        );
        let (status, _) = recount(&found, &[done, retrying, taken], None, ts(NOW));
        assert_eq!(held(&status), [("taken", 1)]);
        assert!(
            status.queue.is_empty(),
            "a task waiting for its retry delay is not in line: {status:?}"
        );
    }

    #[test]
    fn a_hold_taken_for_a_rerun_stands_before_the_task_run_records_it() {
        use AttemptPhase::Succeeded;
        let mut rerun = mk_tr("again", 1, 1, 1, &[Succeeded]);
        rerun.spec.rerun = Some("r1".into());
        let mut cancelled = mk_tr("stopped", 1, 1, 2, &[]);
        if let Some(s) = cancelled.status.as_mut() {
            s.phase = Some(TaskPhase::Cancelled);
        }
        let found = mk_pool(2, vec![holder(&rerun, 2, ts(1)), holder(&cancelled, 1, ts(2))]);
        let (status, _) = recount(&found, &[rerun, cancelled], None, ts(NOW));
        // Cancelled before its Job was made: nothing of it runs.
        assert_eq!(held(&status), [("again", 2)]);
    }

    #[test]
    fn a_running_attempt_the_status_does_not_list_is_counted_all_the_same() {
        use AttemptPhase::Running;
        // The pool was deleted and made again while a and b ran: its status lists nothing.
        let a = mk_tr("a", 1, 1, 1, &[Running]);
        let b = mk_tr("b", 1, 1, 2, &[Running]);
        let c = mk_tr("c", 1, 1, 3, &[]);
        let found = mk_pool(2, Vec::new());
        let (status, place) = recount(&found, &[a, b, c.clone()], Some((&c, 1)), ts(NOW));
        assert_eq!(place, Some(Place::Queued { position: 1 }));
        assert_eq!(held(&status), [("a", 1), ("b", 1)]);
    }

    #[test]
    fn a_new_attempt_replaces_the_hold_of_the_one_before() {
        use AttemptPhase::Running;
        // The stored status still shows attempt 1 running; the reconcile knows it ended.
        let tr = mk_tr("a", 1, 1, 1, &[Running]);
        let found = mk_pool(1, vec![holder(&tr, 1, ts(1))]);
        let (status, place) = recount(&found, std::slice::from_ref(&tr), Some((&tr, 2)), ts(NOW));
        assert_eq!(place, Some(Place::Admitted));
        assert_eq!(held(&status), [("a", 2)]);
    }

    #[test]
    fn freed_slots_wake_the_tasks_first_in_line_that_fit() {
        let mut found = mk_pool(3, Vec::new());
        found.status = Some(PoolStatus {
            occupied: 1,
            queue: ["x", "y", "z"]
                .iter()
                .zip([1, 2, 1])
                .map(|(name, slots)| QueuedTask {
                    task_run: name.to_string(),
                    slots,
                    priority: 1,
                })
                .collect(),
            ..Default::default()
        });
        let names: Vec<String> = tasks_to_wake(found).into_iter().map(|r| r.name).collect();
        // x takes one of the two free slots; y needs two and stops the line.
        assert_eq!(names, ["x"]);
    }
}
