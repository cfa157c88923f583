//! Deadlines, the pure part: when a run is due (its `deadline` from the moment it counts
//! from), how that reads in a message, and what `onMiss: Fail` makes of the run's timeout;
//! for tasks' own deadlines, which of them passed now while their task was not done.

use super::duration;
use crate::api::{Deadline, DeadlineFrom, MissedDeadline, OnMiss};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

/// The moments a deadline can count from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunTimes {
    pub logical_date: Option<Timestamp>,
    pub data_interval_end: Option<Timestamp>,
    /// When the run took its snapshot.
    pub started: Option<Timestamp>,
    /// When the run was created (for a run without a logical date).
    pub created: Option<Timestamp>,
    /// When the task started (for a task's deadline counting from `TaskStart`).
    pub task_started: Option<Timestamp>,
}

/// When the run should be done by; `None` while the moment it counts from is unknown (a
/// run not started yet, for `RunStart`). A `within` that does not parse is an error.
pub fn due_at(deadline: &Deadline, times: &RunTimes) -> Result<Option<Timestamp>, String> {
    let within = duration::parse(&deadline.within).map_err(|e| format!("deadline.within: {e}"))?;
    let from = match deadline.from.unwrap_or_default() {
        DeadlineFrom::LogicalDate => times.logical_date.or(times.created),
        DeadlineFrom::ScheduledTime => times.data_interval_end.or(times.logical_date).or(times.created),
        DeadlineFrom::RunStart => times.started,
        DeadlineFrom::TaskStart => times.task_started,
    };
    let within = SignedDuration::try_from(within).map_err(|e| format!("deadline.within: {e}"))?;
    Ok(from.map(|f| f.checked_add(within).unwrap_or(Timestamp::MAX)))
}

/// "2h after its scheduled time".
pub fn describe(deadline: &Deadline) -> String {
    let from = match deadline.from.unwrap_or_default() {
        DeadlineFrom::LogicalDate => "its logical date",
        DeadlineFrom::ScheduledTime => "its scheduled time",
        DeadlineFrom::RunStart => "its start",
        DeadlineFrom::TaskStart => "the task's start",
    };
    format!("{} after {from}", deadline.within)
}

/// Whether the deadline has passed at `now` for a run not finished.
pub fn missed(at: Timestamp, now: Timestamp) -> bool {
    now >= at
}

/// The run timeout that stops a run at `at` (`onMiss: Fail`): the time from its start,
/// or the run's own timeout when that comes first.
pub fn timeout_with(at: Timestamp, started: Timestamp, timeout: Option<Duration>) -> Duration {
    let until = Duration::try_from(at.duration_since(started)).unwrap_or(Duration::ZERO);
    timeout.map_or(until, |t| t.min(until))
}

/// How long until `at`, for a requeue (zero once passed).
pub fn wait_until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// Problems of a deadline, with their field under `field`; `of_task` when it is a task's
/// (only a task's can count from `TaskStart`).
pub fn check(deadline: &Deadline, field: &str, of_task: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Err(e) = duration::parse(&deadline.within) {
        out.push((format!("{field}.within"), e));
    }
    if !of_task && deadline.from == Some(DeadlineFrom::TaskStart) {
        out.push((
            format!("{field}.from"),
            "TaskStart is for a task's deadline (tasks[].deadline); a run's counts from \
             ScheduledTime, LogicalDate or RunStart"
                .into(),
        ));
    }
    out
}

/// A task with a deadline, as a run sees it now.
#[derive(Clone, Debug)]
pub struct TaskClock<'a> {
    pub task: &'a str,
    pub deadline: &'a Deadline,
    /// When its first attempt started; `None` while it waits.
    pub started: Option<Timestamp>,
    /// It reached a final state (succeeded, failed, skipped, ...).
    pub done: bool,
}

/// What the tasks' deadlines call for now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskMisses {
    /// Deadlines that passed now (not in `recorded` yet), in the tasks' order.
    pub new: Vec<MissedDeadline>,
    /// The next deadline still to come, of a task not done.
    pub next: Option<Timestamp>,
}

/// Which tasks' deadlines passed at `now` while the task was not done, and were not
/// recorded yet (each is said once per run). A deadline that does not parse is skipped
/// (validation refuses it).
pub fn task_misses(
    tasks: &[TaskClock<'_>],
    run: &RunTimes,
    recorded: &[MissedDeadline],
    now: Timestamp,
) -> TaskMisses {
    let mut out = TaskMisses::default();
    for clock in tasks {
        if clock.done || recorded.iter().any(|m| m.task == clock.task) {
            continue;
        }
        let times = RunTimes {
            task_started: clock.started,
            ..*run
        };
        let Ok(Some(at)) = due_at(clock.deadline, &times) else {
            continue;
        };
        if !missed(at, now) {
            out.next = Some(out.next.map_or(at, |n| n.min(at)));
            continue;
        }
        let fail = clock.deadline.on_miss == Some(OnMiss::Fail);
        let then = if fail { "it is stopped" } else { "it goes on" };
        let state = if clock.started.is_some() {
            "was not done"
        } else {
            "had not even started"
        };
        out.new.push(MissedDeadline {
            task: clock.task.to_string(),
            due_time: Time(at),
            message: format!(
                "task {} {state} by {at} ({}); {then}",
                super::quote::q(clock.task),
                describe(clock.deadline)
            ),
            failed: fail,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn deadline(within: &str, from: Option<DeadlineFrom>) -> Deadline {
        Deadline {
            within: within.into(),
            from,
            on_miss: None,
        }
    }

    #[test]
    fn a_deadline_counts_from_the_moment_it_names_and_falls_back_when_a_run_has_no_interval() {
        let scheduled = RunTimes {
            logical_date: Some(t("2026-01-01T00:00:00Z")),
            data_interval_end: Some(t("2026-01-02T00:00:00Z")),
            started: Some(t("2026-01-02T00:00:05Z")),
            created: Some(t("2026-01-02T00:00:01Z")),
            task_started: None,
        };
        let at = |d: &Deadline, times: &RunTimes| due_at(d, times).unwrap();
        assert_eq!(
            at(&deadline("2h", None), &scheduled),
            Some(t("2026-01-02T02:00:00Z"))
        );
        assert_eq!(
            at(&deadline("2h", Some(DeadlineFrom::LogicalDate)), &scheduled),
            Some(t("2026-01-01T02:00:00Z"))
        );
        assert_eq!(
            at(&deadline("90s", Some(DeadlineFrom::RunStart)), &scheduled),
            Some(t("2026-01-02T00:01:35Z"))
        );
        let by_hand = RunTimes {
            created: Some(t("2026-01-05T10:00:00Z")),
            ..Default::default()
        };
        assert_eq!(
            at(&deadline("1h", None), &by_hand),
            Some(t("2026-01-05T11:00:00Z"))
        );
        assert_eq!(at(&deadline("1h", Some(DeadlineFrom::RunStart)), &by_hand), None);
        assert!(
            due_at(&deadline("soon", None), &by_hand)
                .unwrap_err()
                .contains("deadline.within")
        );
    }

    #[test]
    fn a_task_deadline_is_said_once_while_the_task_is_not_done_and_waits_for_its_start() {
        let run = RunTimes {
            logical_date: Some(t("2026-01-01T00:00:00Z")),
            started: Some(t("2026-01-01T00:00:10Z")),
            ..Default::default()
        };
        let from_run = deadline("1m", Some(DeadlineFrom::RunStart));
        let from_task = Deadline {
            on_miss: Some(OnMiss::Fail),
            ..deadline("30s", Some(DeadlineFrom::TaskStart))
        };
        let clocks = |load_started: Option<Timestamp>, done: bool| {
            vec![
                TaskClock {
                    task: "extract",
                    deadline: &from_run,
                    started: None,
                    done,
                },
                TaskClock {
                    task: "load",
                    deadline: &from_task,
                    started: load_started,
                    done: false,
                },
            ]
        };
        // Before: nothing missed; the next look is at the run-start deadline. `load` has
        // not started, so its deadline is not known yet.
        let early = task_misses(&clocks(None, false), &run, &[], t("2026-01-01T00:00:30Z"));
        assert_eq!(early.new, []);
        assert_eq!(early.next, Some(t("2026-01-01T00:01:10Z")));
        // After: a task not even started misses its deadline too.
        let late = task_misses(
            &clocks(Some(t("2026-01-01T00:00:50Z")), false),
            &run,
            &[],
            t("2026-01-01T00:01:20Z"),
        );
        let names: Vec<&str> = late.new.iter().map(|m| m.task.as_str()).collect();
        assert_eq!(names, ["extract", "load"]);
        assert!(
            late.new[0].message.contains("had not even started")
                && late.new[0].message.ends_with("it goes on")
                && !late.new[0].failed,
            "{:?}",
            late.new[0]
        );
        assert!(
            late.new[1].message.contains("30s after the task's start") && late.new[1].failed,
            "{:?}",
            late.new[1]
        );
        assert_eq!(late.new[1].due_time, Time(t("2026-01-01T00:01:20Z")));
        // Once recorded, never again; a task done in time never misses.
        let again = task_misses(
            &clocks(Some(t("2026-01-01T00:00:50Z")), false),
            &run,
            &late.new,
            t("2026-01-01T00:05:00Z"),
        );
        assert_eq!(again, TaskMisses::default());
        let done = task_misses(&clocks(None, true), &run, &[], t("2026-01-01T00:05:00Z"));
        assert_eq!(done.new, []);
    }

    #[test]
    fn task_start_is_only_for_a_tasks_deadline() {
        let d = deadline("1m", Some(DeadlineFrom::TaskStart));
        assert_eq!(check(&d, "tasks[0].deadline", true), []);
        let run_level = check(&d, "deadline", false);
        assert_eq!(run_level.len(), 1);
        assert_eq!(run_level[0].0, "deadline.from");
    }

    #[test]
    fn a_miss_is_at_the_deadline_and_fail_turns_it_into_a_timeout_from_the_start() {
        let at = t("2026-01-01T01:00:00Z");
        assert!(!missed(at, t("2026-01-01T00:59:59Z")));
        assert!(missed(at, at));
        let start = t("2026-01-01T00:30:00Z");
        assert_eq!(timeout_with(at, start, None), Duration::from_secs(1800));
        assert_eq!(
            timeout_with(at, start, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        // A run that starts after its deadline stops at once.
        assert_eq!(timeout_with(at, t("2026-01-01T02:00:00Z"), None), Duration::ZERO);
        assert_eq!(wait_until(at, t("2026-01-01T00:59:00Z")), Duration::from_secs(60));
        assert_eq!(wait_until(at, t("2026-01-01T02:00:00Z")), Duration::ZERO);
        assert_eq!(describe(&deadline("2h", None)), "2h after its scheduled time");
    }
}
