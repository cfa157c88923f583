//! `plan_task`: attempts, retries with their delays, and cancellation of one task.

use super::support::at;
use crate::api::{AttemptPhase, FailureReason, RetryOn, RetryPolicy, TaskPhase};
use crate::engine::{AttemptAction, Disruption, ObservedAttempt, TaskInput, TaskPlan, plan_task};
use jiff::{SignedDuration, Timestamp};

fn running(number: u32) -> ObservedAttempt {
    ObservedAttempt {
        number,
        phase: AttemptPhase::Running,
        reason: None,
        exit_code: None,
        finished_at: None,
    }
}

fn succeeded(number: u32, finished: Timestamp) -> ObservedAttempt {
    ObservedAttempt {
        phase: AttemptPhase::Succeeded,
        exit_code: Some(0),
        finished_at: Some(finished),
        ..running(number)
    }
}

fn failed(
    number: u32,
    reason: FailureReason,
    exit_code: Option<i32>,
    finished: Timestamp,
) -> ObservedAttempt {
    ObservedAttempt {
        number,
        phase: AttemptPhase::Failed,
        reason: Some(reason),
        exit_code,
        finished_at: Some(finished),
    }
}

/// Attempt `number` failed with exit code 1 at `finished`.
fn error(number: u32, finished: Timestamp) -> ObservedAttempt {
    failed(number, FailureReason::Error, Some(1), finished)
}

fn policy(limit: u32, delay: &str) -> RetryPolicy {
    RetryPolicy {
        limit,
        delay: Some(delay.into()),
        ..Default::default()
    }
}

fn plan(retries: Option<&RetryPolicy>, attempts: &[ObservedAttempt], now: Timestamp) -> TaskPlan {
    plan_task(&TaskInput {
        retries,
        attempts,
        cancel_requested: false,
        now,
    })
}

fn cancelled_plan(retries: Option<&RetryPolicy>, attempts: &[ObservedAttempt], now: Timestamp) -> TaskPlan {
    plan_task(&TaskInput {
        retries,
        attempts,
        cancel_requested: true,
        now,
    })
}

fn settled(phase: TaskPhase) -> TaskPlan {
    TaskPlan {
        phase,
        action: AttemptAction::None,
        next_retry_at: None,
        retrying: false,
        disruption: None,
    }
}

#[test]
fn first_attempt_is_created() {
    assert_eq!(
        plan(None, &[], at(0)),
        TaskPlan {
            phase: TaskPhase::Running,
            action: AttemptAction::Create(1),
            next_retry_at: None,
            retrying: false,
            disruption: None,
        }
    );
}

#[test]
fn running_then_succeeded() {
    assert_eq!(plan(None, &[running(1)], at(5)), settled(TaskPhase::Running));
    assert_eq!(
        plan(None, &[succeeded(1, at(5))], at(6)),
        settled(TaskPhase::Succeeded)
    );
    let p = policy(3, "10s");
    let attempts = [error(1, at(5)), error(2, at(20)), succeeded(3, at(40))];
    assert_eq!(plan(Some(&p), &attempts, at(41)), settled(TaskPhase::Succeeded));
}

#[test]
fn a_failure_without_retries_fails_the_task() {
    assert_eq!(plan(None, &[error(1, at(5))], at(5)), settled(TaskPhase::Failed));
    let p = policy(0, "10s");
    assert_eq!(
        plan(Some(&p), &[error(1, at(5))], at(100)),
        settled(TaskPhase::Failed)
    );
}

#[test]
fn retries_up_to_the_limit_then_fail() {
    let p = policy(2, "10s");
    let mut attempts = vec![];
    let mut now = at(0);
    let mut created = vec![];
    for _ in 0..10 {
        let plan = plan(Some(&p), &attempts, now);
        match plan.action {
            AttemptAction::Create(n) => {
                created.push(n);
                attempts.push(running(n));
            }
            AttemptAction::None if plan.phase == TaskPhase::Running => {
                let n = attempts.len() as u32;
                now += SignedDuration::from_secs(3);
                *attempts.last_mut().unwrap() = error(n, now);
            }
            AttemptAction::None if plan.phase == TaskPhase::Retrying => now = plan.next_retry_at.unwrap(),
            AttemptAction::None => {
                assert_eq!(plan, settled(TaskPhase::Failed));
                break;
            }
            AttemptAction::Stop(_) => unreachable!(),
        }
    }
    assert_eq!(created, [1, 2, 3], "limit + 1 attempts, never more");
    assert_eq!(plan(Some(&p), &attempts, at(10_000)), settled(TaskPhase::Failed));
}

#[test]
fn a_retry_waits_for_its_delay() {
    let p = policy(3, "30s");
    let attempts = [error(1, at(100))];
    let waiting = TaskPlan {
        phase: TaskPhase::Retrying,
        action: AttemptAction::None,
        next_retry_at: Some(at(130)),
        retrying: true,
        disruption: None,
    };
    assert_eq!(plan(Some(&p), &attempts, at(100)), waiting);
    assert_eq!(
        plan(Some(&p), &attempts, at(130) - SignedDuration::from_millis(1)),
        waiting
    );
    let retry = TaskPlan {
        phase: TaskPhase::Running,
        action: AttemptAction::Create(2),
        next_retry_at: None,
        retrying: true,
        disruption: None,
    };
    assert_eq!(plan(Some(&p), &attempts, at(130)), retry);
    assert_eq!(
        plan(Some(&p), &attempts, at(500)),
        retry,
        "a late look still makes one attempt"
    );
}

#[test]
fn default_delay_is_ten_seconds() {
    let p = RetryPolicy {
        limit: 1,
        ..Default::default()
    };
    assert_eq!(
        plan(Some(&p), &[error(1, at(0))], at(1)).next_retry_at,
        Some(at(10))
    );
}

#[test]
fn exponential_backoff_is_capped_exactly() {
    let p = RetryPolicy {
        limit: 10,
        delay: Some("10s".into()),
        backoff_factor: Some(2.0),
        max_delay: Some("1m".into()),
        retry_on: None,
        disruptions: None,
    };
    let mut attempts = vec![];
    let mut waits = vec![];
    for n in 1..=6 {
        let finished = at(1000 * i64::from(n));
        attempts.push(error(n, finished));
        let next = plan(Some(&p), &attempts, finished).next_retry_at.unwrap();
        waits.push(next.duration_since(finished).as_secs());
    }
    assert_eq!(waits, [10, 20, 40, 60, 60, 60]);

    // Fractional factors land on whole milliseconds.
    let p = RetryPolicy {
        backoff_factor: Some(1.5),
        delay: Some("100ms".into()),
        max_delay: None,
        ..p
    };
    let attempts = [error(1, at(0)), error(2, at(0)), error(3, at(0))];
    let next = plan(Some(&p), &attempts, at(0)).next_retry_at.unwrap();
    assert_eq!(next.duration_since(at(0)), SignedDuration::from_millis(225));
}

#[test]
fn the_delay_counts_from_when_the_attempt_finished() {
    let p = policy(1, "1m");
    assert_eq!(
        plan(Some(&p), &[error(1, at(7))], at(30)).next_retry_at,
        Some(at(67))
    );
}

#[test]
fn an_attempt_without_a_finish_time_is_retried_at_once() {
    // Counting the delay from `now` would move the target on every look: never retried.
    let p = policy(1, "1m");
    let attempt = ObservedAttempt {
        finished_at: None,
        ..error(1, at(0))
    };
    assert_eq!(
        plan(Some(&p), &[attempt], at(30)).action,
        AttemptAction::Create(2)
    );
}

#[test]
fn which_failures_are_retried() {
    let on = |reasons: Vec<FailureReason>, exit_codes: Vec<i32>, except: Vec<i32>| RetryPolicy {
        limit: 1,
        delay: Some("1s".into()),
        retry_on: Some(RetryOn {
            reasons,
            exit_codes,
            except_exit_codes: except,
        }),
        ..Default::default()
    };
    let retried = |p: &RetryPolicy, reason: Option<FailureReason>, code: Option<i32>| {
        let attempt = ObservedAttempt {
            reason,
            exit_code: code,
            ..error(1, at(0))
        };
        let plan = plan(Some(p), &[attempt], at(1));
        assert_eq!(plan.phase != TaskPhase::Failed, plan.retrying, "{plan:?}");
        plan.retrying
    };
    use FailureReason::*;
    let any = RetryPolicy {
        limit: 1,
        ..Default::default()
    };
    for reason in [
        Error,
        OOMKilled,
        DeadlineExceeded,
        Evicted,
        ImagePullError,
        ConfigError,
        Lost,
        Unknown,
    ] {
        assert!(retried(&any, Some(reason), None), "{reason:?}");
    }
    assert!(retried(&any, None, None), "a failure without a reason is retried");
    assert!(
        !retried(&any, Some(Cancelled), None),
        "a cancelled attempt never is"
    );

    let oom_only = on(vec![OOMKilled], vec![], vec![]);
    assert!(retried(&oom_only, Some(OOMKilled), Some(137)));
    assert!(!retried(&oom_only, Some(Error), Some(1)));
    assert!(
        !retried(&oom_only, None, None),
        "an unknown reason is not OOMKilled"
    );

    let codes = on(vec![], vec![75, 76], vec![]);
    assert!(retried(&codes, Some(Error), Some(75)));
    assert!(!retried(&codes, Some(Error), Some(1)));
    assert!(
        retried(&codes, Some(Evicted), None),
        "exit codes only filter reason Error"
    );

    let except = on(vec![], vec![], vec![2]);
    assert!(!retried(&except, Some(Error), Some(2)));
    assert!(retried(&except, Some(Error), Some(1)));
    assert!(
        retried(&except, Some(Error), None),
        "no exit code: nothing to exclude"
    );
    assert!(retried(&except, Some(OOMKilled), Some(2)));
}

#[test]
fn cancel_while_running_stops_the_attempt() {
    let p = policy(3, "10s");
    assert_eq!(
        cancelled_plan(Some(&p), &[error(1, at(0)), running(2)], at(20)),
        TaskPlan {
            phase: TaskPhase::Cancelled,
            action: AttemptAction::Stop(2),
            next_retry_at: None,
            retrying: false,
            disruption: None,
        }
    );
}

#[test]
fn cancel_while_waiting_for_a_retry_ends_the_task() {
    let p = policy(3, "10s");
    assert_eq!(
        cancelled_plan(Some(&p), &[error(1, at(0))], at(1)),
        settled(TaskPhase::Cancelled)
    );
    assert_eq!(
        cancelled_plan(Some(&p), &[error(1, at(0))], at(60)),
        settled(TaskPhase::Cancelled)
    );
    let stopped = failed(2, FailureReason::Cancelled, None, at(30));
    assert_eq!(
        cancelled_plan(Some(&p), &[error(1, at(0)), stopped], at(31)),
        settled(TaskPhase::Cancelled)
    );
}

#[test]
fn cancel_before_the_first_attempt_or_after_the_end() {
    assert_eq!(cancelled_plan(None, &[], at(0)), settled(TaskPhase::Cancelled));
    assert_eq!(
        cancelled_plan(None, &[succeeded(1, at(0))], at(1)),
        settled(TaskPhase::Succeeded),
        "a finished task keeps its outcome"
    );
}

fn disrupted(number: u32, reason: FailureReason, finished: Timestamp) -> ObservedAttempt {
    failed(number, reason, None, finished)
}

fn waiting(until: Timestamp, disruption: Option<Disruption>) -> TaskPlan {
    TaskPlan {
        phase: TaskPhase::Retrying,
        action: AttemptAction::None,
        next_retry_at: Some(until),
        retrying: true,
        disruption,
    }
}

fn disruption(count: u32, budget: u32) -> Option<Disruption> {
    Some(Disruption { count, budget })
}

#[test]
fn a_disruption_is_retried_shortly_even_without_retries() {
    use FailureReason::*;
    for reason in [Lost, Evicted, PodDeleted, NodeLost, Preempted] {
        let attempts = [disrupted(1, reason, at(10))];
        assert_eq!(
            plan(None, &attempts, at(10)),
            waiting(at(15), disruption(1, 3)),
            "{reason:?}"
        );
        let retry = plan(None, &attempts, at(15));
        assert_eq!(retry.action, AttemptAction::Create(2), "{reason:?}");
        assert_eq!((retry.phase, retry.retrying), (TaskPhase::Running, true));
    }
    assert_eq!(
        plan(None, &[error(1, at(10))], at(10)).disruption,
        None,
        "an ordinary failure is no disruption"
    );
}

#[test]
fn disruptions_spend_nothing_of_the_limit_or_the_backoff() {
    use FailureReason::{Evicted, Lost};
    let p = RetryPolicy {
        limit: 1,
        delay: Some("30s".into()),
        backoff_factor: Some(2.0),
        ..Default::default()
    };
    let mut attempts = vec![disrupted(1, Lost, at(0))];
    assert_eq!(plan(Some(&p), &attempts, at(0)), waiting(at(5), disruption(1, 3)));
    attempts.push(error(2, at(100)));
    assert_eq!(
        plan(Some(&p), &attempts, at(100)),
        waiting(at(130), None),
        "the first failure waits the first delay, not the second"
    );
    attempts.push(disrupted(3, Evicted, at(200)));
    assert_eq!(
        plan(Some(&p), &attempts, at(200)),
        waiting(at(205), disruption(2, 3))
    );
    attempts.push(error(4, at(300)));
    assert_eq!(
        plan(Some(&p), &attempts, at(300)),
        settled(TaskPhase::Failed),
        "two failures: the one retry is spent"
    );
}

#[test]
fn past_the_budget_a_disruption_is_an_ordinary_failure() {
    use FailureReason::{Error, Lost};
    // No retries: the default budget of three, then the task fails.
    let lost = |n: u32| disrupted(n, Lost, at(i64::from(n) * 100));
    let three: Vec<_> = (1..=3).map(lost).collect();
    assert_eq!(plan(None, &three, at(300)), waiting(at(305), disruption(3, 3)));
    let four: Vec<_> = (1..=4).map(lost).collect();
    assert_eq!(
        plan(None, &four, at(400)),
        TaskPlan {
            disruption: disruption(4, 3),
            ..settled(TaskPhase::Failed)
        }
    );
    // A budget of one, then the disruption spends a retry (with its delay), then fails.
    let p = RetryPolicy {
        limit: 1,
        delay: Some("1m".into()),
        disruptions: Some(1),
        ..Default::default()
    };
    assert_eq!(
        plan(Some(&p), &[lost(1)], at(100)),
        waiting(at(105), disruption(1, 1))
    );
    assert_eq!(
        plan(Some(&p), &[lost(1), lost(2)], at(200)),
        waiting(at(260), disruption(2, 1))
    );
    assert_eq!(
        plan(Some(&p), &[lost(1), lost(2), lost(3)], at(300)),
        TaskPlan {
            disruption: disruption(3, 1),
            ..settled(TaskPhase::Failed)
        }
    );
    // A budget of none, and `retryOn` decides as for any failure.
    let only_errors = RetryPolicy {
        limit: 3,
        disruptions: Some(0),
        retry_on: Some(RetryOn {
            reasons: vec![Error],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        plan(Some(&only_errors), &[lost(1)], at(100)).phase,
        TaskPhase::Failed
    );
}

#[test]
fn cancel_after_a_disruption_ends_the_task() {
    let attempts = [disrupted(1, FailureReason::PodDeleted, at(0))];
    assert_eq!(
        cancelled_plan(None, &attempts, at(1)),
        settled(TaskPhase::Cancelled)
    );
    assert_eq!(
        cancelled_plan(None, &attempts, at(60)),
        settled(TaskPhase::Cancelled),
        "also once the disruption's delay is over"
    );
}
