//! Airflow-style retries: a limit, a delay, exponential backoff with a cap, and a choice of
//! which failures deserve another attempt. And disruptions: attempts ended from outside the
//! task, retried after a short delay without spending the limit, up to a budget of their own
//! (what Kubernetes' pod failure policy does when it ignores `DisruptionTarget`, and Argo's
//! `OnTransientError`).

use super::duration;
use crate::api::{FailureReason, RetryPolicy};
use std::time::Duration;

/// Delay before the first retry when a policy names none.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(10);
/// Disruptions a task may have retried without spending `retries.limit`, when it sets no
/// `retries.disruptions` (or no `retries` at all).
pub const DEFAULT_DISRUPTIONS: u32 = 3;
/// Wait before the attempt that follows a disruption: nothing was wrong with the task, so
/// only long enough for what disrupted it (an API server restart, a drained node) to pass.
pub const DISRUPTION_DELAY: Duration = Duration::from_secs(5);

/// Whether an attempt that failed with `reason` was ended from outside the task: its Job
/// vanished, its pod was evicted, deleted or preempted, its node went away. Never a reason
/// `weir run` records, so the rule leaves local runs as they are.
pub fn is_disruption(reason: FailureReason) -> bool {
    matches!(
        reason,
        FailureReason::Lost
            | FailureReason::Evicted
            | FailureReason::PodDeleted
            | FailureReason::NodeLost
            | FailureReason::Preempted
    )
}

/// How many disruptions a task with `policy` retries without spending its limit.
pub fn disruption_budget(policy: Option<&RetryPolicy>) -> u32 {
    policy.and_then(|p| p.disruptions).unwrap_or(DEFAULT_DISRUPTIONS)
}

/// How a task's failed attempts count, oldest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Attempts that failed with a disruption reason, those past the budget included.
    pub disruptions: u32,
    /// Failures that spend `retries.limit`: every other failure, and disruptions past the
    /// budget.
    pub failures: u32,
    /// The last failure was a disruption within the budget: retried without spending the
    /// limit.
    pub last_spared: bool,
}

/// Counts failed attempts (their reasons, oldest first; `None` is a failure without a
/// reason) against a disruption budget.
pub fn tally(reasons: impl IntoIterator<Item = Option<FailureReason>>, budget: u32) -> Tally {
    let mut t = Tally::default();
    for reason in reasons {
        let disrupted = reason.is_some_and(is_disruption);
        if disrupted {
            t.disruptions += 1;
        }
        t.last_spared = disrupted && t.disruptions <= budget;
        if !t.last_spared {
            t.failures += 1;
        }
    }
    t
}

/// The wait before retry number `retry` (1 for the first retry):
/// `delay * backoffFactor^(retry-1)`, capped at `maxDelay`.
pub fn delay(policy: &RetryPolicy, retry: u32) -> Duration {
    let base = policy
        .delay
        .as_deref()
        .and_then(|d| duration::parse(d).ok())
        .unwrap_or(DEFAULT_DELAY);
    let factor = policy
        .backoff_factor
        .filter(|f| f.is_finite() && *f >= 1.0)
        .unwrap_or(1.0);
    let cap = policy.max_delay.as_deref().and_then(|d| duration::parse(d).ok());
    let exponent = retry.saturating_sub(1).min(1_000) as i32;
    let secs = base.as_secs_f64() * factor.powi(exponent);
    // Anything past a year is as good as forever; keep the arithmetic finite. A zero delay
    // stays zero however large the backoff (0 * inf is NaN, which `min` would turn into
    // the year).
    let secs = if secs.is_nan() {
        0.0
    } else {
        secs.min(365.0 * 86_400.0)
    };
    // Whole milliseconds, like the durations users write, so retry times come out exact
    // rather than a few nanoseconds off (`0.1s * 1.1`).
    let mut wait = Duration::from_millis((secs * 1_000.0).round() as u64);
    if let Some(cap) = cap {
        wait = wait.min(cap);
    }
    wait
}

/// Whether a failure of this kind is worth another attempt under `policy` (ignoring how many
/// attempts are left).
pub fn is_retryable(policy: &RetryPolicy, reason: FailureReason, exit_code: Option<i32>) -> bool {
    if matches!(reason, FailureReason::Cancelled | FailureReason::Rejected) {
        return false;
    }
    let Some(on) = &policy.retry_on else { return true };
    if !on.reasons.is_empty() && !on.reasons.contains(&reason) {
        return false;
    }
    if reason == FailureReason::Error
        && let Some(code) = exit_code
    {
        if on.except_exit_codes.contains(&code) {
            return false;
        }
        if !on.exit_codes.is_empty() && !on.exit_codes.contains(&code) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RetryOn;

    fn policy(delay: &str, factor: f64, max: Option<&str>) -> RetryPolicy {
        RetryPolicy {
            limit: 5,
            delay: Some(delay.into()),
            backoff_factor: Some(factor),
            max_delay: max.map(Into::into),
            retry_on: None,
            disruptions: None,
        }
    }

    #[test]
    fn constant_delay_by_default() {
        let p = RetryPolicy {
            limit: 3,
            ..Default::default()
        };
        assert_eq!(delay(&p, 1), DEFAULT_DELAY);
        assert_eq!(delay(&p, 3), DEFAULT_DELAY);
    }

    #[test]
    fn exponential_backoff_is_capped() {
        let p = policy("10s", 2.0, Some("1m"));
        let waits: Vec<u64> = (1..=5).map(|r| delay(&p, r).as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 60, 60]);
    }

    #[test]
    fn huge_exponents_stay_finite() {
        let p = policy("1h", 100.0, None);
        assert!(delay(&p, 100) <= Duration::from_secs(365 * 86_400));
    }

    #[test]
    fn exit_code_and_reason_filters() {
        let mut p = policy("1s", 1.0, None);
        p.retry_on = Some(RetryOn {
            reasons: vec![FailureReason::Error, FailureReason::OOMKilled],
            exit_codes: vec![],
            except_exit_codes: vec![2],
        });
        assert!(is_retryable(&p, FailureReason::Error, Some(1)));
        assert!(!is_retryable(&p, FailureReason::Error, Some(2)));
        assert!(is_retryable(&p, FailureReason::OOMKilled, Some(137)));
        assert!(!is_retryable(&p, FailureReason::DeadlineExceeded, None));
        assert!(!is_retryable(&p, FailureReason::Cancelled, None));
        p.retry_on.as_mut().unwrap().exit_codes = vec![75];
        assert!(is_retryable(&p, FailureReason::Error, Some(75)));
        assert!(!is_retryable(&p, FailureReason::Error, Some(1)));
    }

    #[test]
    fn disruptions_are_what_ends_an_attempt_from_outside() {
        use FailureReason::*;
        for reason in [Lost, Evicted, PodDeleted, NodeLost, Preempted] {
            assert!(is_disruption(reason), "{reason:?}");
        }
        // Everything `weir run` can record, and every failure of the task's own making.
        for reason in [
            Error,
            OOMKilled,
            DeadlineExceeded,
            ImagePullError,
            ConfigError,
            Cancelled,
            OutputError,
            Unknown,
        ] {
            assert!(!is_disruption(reason), "{reason:?}");
        }
    }

    #[test]
    fn the_budget_defaults_to_three_even_without_retries() {
        assert_eq!(disruption_budget(None), DEFAULT_DISRUPTIONS);
        let p = RetryPolicy::default();
        assert_eq!(disruption_budget(Some(&p)), 3);
        let p = RetryPolicy {
            disruptions: Some(0),
            ..Default::default()
        };
        assert_eq!(disruption_budget(Some(&p)), 0);
    }

    #[test]
    fn disruptions_past_the_budget_count_as_failures() {
        use FailureReason::*;
        let t = |reasons: &[FailureReason], budget| tally(reasons.iter().copied().map(Some), budget);
        let tally_of = |disruptions, failures, last_spared| Tally {
            disruptions,
            failures,
            last_spared,
        };
        assert_eq!(t(&[], 3), Tally::default());
        assert_eq!(t(&[Lost], 3), tally_of(1, 0, true));
        assert_eq!(t(&[Lost, Error], 3), tally_of(1, 1, false));
        assert_eq!(t(&[Error, Evicted, PodDeleted], 3), tally_of(2, 1, true));
        assert_eq!(t(&[Lost, Lost, Lost], 2), tally_of(3, 1, false));
        assert_eq!(t(&[Lost, Lost, Lost, Error], 2), tally_of(3, 2, false));
        assert_eq!(t(&[Preempted], 0), tally_of(1, 1, false));
        assert_eq!(tally([None, Some(Lost)], 1), tally_of(1, 1, true));
    }

    #[test]
    fn a_zero_delay_stays_zero_whatever_the_backoff() {
        // 0 * 100^99 is 0, but 0 * inf is NaN: neither may turn into a year.
        let p = policy("0s", 100.0, None);
        assert_eq!(delay(&p, 100), Duration::ZERO);
        assert_eq!(delay(&p, u32::MAX), Duration::ZERO);
    }

    #[test]
    fn delays_are_whole_milliseconds() {
        let p = policy("100ms", 1.1, None);
        assert_eq!(delay(&p, 2), Duration::from_millis(110));
        assert_eq!(delay(&p, 3), Duration::from_millis(121));
        let p = policy("1s", 1.5, Some("2s"));
        let waits: Vec<u128> = (1..=4).map(|r| delay(&p, r).as_millis()).collect();
        assert_eq!(waits, [1000, 1500, 2000, 2000]);
    }

    #[test]
    fn unusable_settings_fall_back_to_defaults() {
        // Validation rejects these; a hand-made TaskRun may still carry them.
        let p = RetryPolicy {
            limit: 1,
            delay: Some("soon".into()),
            backoff_factor: Some(f64::NAN),
            max_delay: Some("later".into()),
            retry_on: None,
            disruptions: None,
        };
        assert_eq!(delay(&p, 1), DEFAULT_DELAY);
        assert_eq!(delay(&p, 5), DEFAULT_DELAY);
        let p = RetryPolicy {
            backoff_factor: Some(0.5),
            ..policy("8s", 1.0, None)
        };
        assert_eq!(
            delay(&p, 3),
            Duration::from_secs(8),
            "a factor below 1 never shrinks the delay"
        );
    }
}
