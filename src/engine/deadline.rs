//! Deadlines, the pure part: when a run is due (its `deadline` from the moment it counts
//! from), how that reads in a message, and what `onMiss: Fail` makes of the run's timeout.

use super::duration;
use crate::api::{Deadline, DeadlineFrom};
use jiff::{SignedDuration, Timestamp};
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
}

/// When the run should be done by; `None` while the moment it counts from is unknown (a
/// run not started yet, for `RunStart`). A `within` that does not parse is an error.
pub fn due_at(deadline: &Deadline, times: &RunTimes) -> Result<Option<Timestamp>, String> {
    let within = duration::parse(&deadline.within).map_err(|e| format!("deadline.within: {e}"))?;
    let from = match deadline.from.unwrap_or_default() {
        DeadlineFrom::LogicalDate => times.logical_date.or(times.created),
        DeadlineFrom::ScheduledTime => times.data_interval_end.or(times.logical_date).or(times.created),
        DeadlineFrom::RunStart => times.started,
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

/// Problems of a deadline, with their field under `field`.
pub fn check(deadline: &Deadline, field: &str) -> Vec<(String, String)> {
    match duration::parse(&deadline.within) {
        Ok(_) => Vec::new(),
        Err(e) => vec![(format!("{field}.within"), e)],
    }
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
