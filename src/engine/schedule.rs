//! Schedules, as pure functions of their inputs (the clock is a parameter): cron times in a
//! time zone, the data intervals between them, which intervals get a run now (catch-up,
//! starting deadline, end time, concurrency policy), which waiting runs may start under
//! `maxActiveRuns`, and which finished runs the history limits delete.
//!
//! The model is Airflow's: a cron expression cuts time into data intervals, from one cron
//! time to the next. The run for an interval is created when the interval ends, and its
//! logical date is the interval's start. Run names are derived from the logical date, so
//! whatever handles an interval twice (a restart, a second replica, a backfill over a range
//! the schedule already covered) finds the run already there.

use super::quote::q;
use super::{duration, names};
use crate::api::{ConcurrencyPolicy, Schedule};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// How many runs a catch-up keeps unfinished at once when the pipeline sets no
/// `maxActiveRuns` (Airflow's default `max_active_runs_per_dag`).
pub const DEFAULT_CATCHUP_WINDOW: u32 = 16;
/// Most intervals counted or listed at once (a backfill over more is refused; counts of
/// skipped intervals stop here).
pub const MAX_INTERVALS: usize = 10_000;

/// A cron expression read in a time zone.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    cron: Cron,
    tz: TimeZone,
}

/// One data interval: `[start, end)`. Its run's logical date is `start`; the run is due at
/// `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Interval {
    /// The logical date of the interval's run.
    pub fn logical_date(&self) -> Timestamp {
        self.start
    }
}

fn floor_second(t: Timestamp) -> Timestamp {
    let secs = t.as_second() - i64::from(t.subsec_nanosecond() < 0);
    Timestamp::from_second(secs).unwrap_or(t)
}

impl CronSchedule {
    /// Parses a cron expression (five fields, six with seconds first, or a macro such as
    /// `@daily`) and an IANA time zone (default `UTC`).
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<CronSchedule, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| {
                errors.push((
                    "cron".to_string(),
                    format!(
                        "{} is not a cron expression ({e}); expected minute hour \
                         day-of-month month day-of-week, six fields with seconds first, or a macro \
                         such as @daily",
                        q(expression)
                    ),
                ))
            })
            .ok();
        let tz = match timezone {
            None => Some(TimeZone::UTC),
            Some(name) => TimeZone::get(name)
                .map_err(|_| {
                    errors.push((
                        "timezone".to_string(),
                        format!(
                            "unknown time zone {}: use an IANA name such as \"Europe/Berlin\"",
                            q(name)
                        ),
                    ))
                })
                .ok(),
        };
        let (Some(cron), Some(tz)) = (cron, tz) else {
            return Err(errors);
        };
        let schedule = CronSchedule { cron, tz };
        // Without a year field, an expression that fires at all fires within a few decades.
        if schedule.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(vec![(
                "cron".to_string(),
                format!("{} never fires (no date matches it)", q(expression)),
            )]);
        }
        Ok(schedule)
    }

    /// The time zone the expression is read in.
    pub fn timezone(&self) -> &TimeZone {
        &self.tz
    }

    /// The first cron time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        // Cron times are whole seconds: the first one after `t` is the first one after the
        // second `t` falls in.
        let start = floor_second(t).to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The first cron time at or after `t`.
    pub fn at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        if t.subsec_nanosecond() != 0 {
            return self.next_after(t);
        }
        self.cron
            .find_next_occurrence(&t.to_zoned(self.tz.clone()), true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last cron time at or before `t`.
    pub fn at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let mut probe = floor_second(t);
        // The backward search and the forward one can disagree on what the cron times are
        // around daylight-saving changes; the forward one is the reference (it is what
        // the scheduler walks). So step forward from what the backward search found,
        // keeping only times the forward search produces.
        for _ in 0..8 {
            let found = self
                .cron
                .find_previous_occurrence(&probe.to_zoned(self.tz.clone()), true)
                .ok()?
                .timestamp();
            let mut best = self.at_or_after(found).filter(|&x| x == found);
            let mut cursor = found;
            while let Some(next) = self.next_after(cursor).filter(|&n| n <= t) {
                best = Some(next);
                cursor = next;
            }
            if best.is_some() {
                return best;
            }
            probe = found.checked_sub(SignedDuration::from_secs(1)).ok()?;
        }
        None
    }

    /// The last cron time strictly before `t`.
    pub fn before(&self, t: Timestamp) -> Option<Timestamp> {
        let t = if t.subsec_nanosecond() == 0 {
            t.checked_sub(SignedDuration::from_secs(1)).ok()?
        } else {
            t
        };
        self.at_or_before(t)
    }

    /// The data interval starting at `start` (a cron time).
    pub fn interval_from(&self, start: Timestamp) -> Option<Interval> {
        Some(Interval {
            start,
            end: self.next_after(start)?,
        })
    }

    /// Every data interval whose start (the logical date) lies in `[from, to]`, oldest
    /// first. More than `limit` is an error carrying how many there are at least.
    pub fn intervals(&self, from: Timestamp, to: Timestamp, limit: usize) -> Result<Vec<Interval>, usize> {
        let mut out = Vec::new();
        let Some(mut start) = self.at_or_after(from) else {
            return Ok(out);
        };
        while start <= to {
            if out.len() == limit {
                return Err(limit + 1);
            }
            let Some(interval) = self.interval_from(start) else {
                break;
            };
            out.push(interval);
            start = interval.end;
        }
        Ok(out)
    }

    /// How many cron times lie in `(after, until]`, counting at most `MAX_INTERVALS`.
    pub fn count_between(&self, after: Timestamp, until: Timestamp) -> usize {
        let mut n = 0;
        let mut cursor = after;
        while n < MAX_INTERVALS {
            match self.next_after(cursor) {
                Some(t) if t <= until => {
                    n += 1;
                    cursor = t;
                }
                _ => break,
            }
        }
        n
    }
}

/// A `Pipeline.spec.schedule`, checked and parsed.
#[derive(Clone, Debug)]
pub struct ParsedSchedule {
    pub cron: CronSchedule,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub catchup: bool,
    pub policy: ConcurrencyPolicy,
    pub starting_deadline: Option<Duration>,
    pub suspend: bool,
}

impl ParsedSchedule {
    /// Parses a schedule, reporting every problem as `(field, message)`, fields relative to
    /// `schedule`.
    pub fn parse(spec: &Schedule) -> Result<ParsedSchedule, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let cron = CronSchedule::parse(&spec.cron, spec.timezone.as_deref())
            .map_err(|e| errors.extend(e))
            .ok();
        let starting_deadline = match spec.starting_deadline.as_deref().map(duration::parse) {
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                errors.push(("startingDeadline".into(), e));
                None
            }
            None => None,
        };
        let start = spec.start_time.as_ref().map(|t| t.0);
        let end = spec.end_time.as_ref().map(|t| t.0);
        if let (Some(s), Some(e)) = (start, end)
            && e < s
        {
            errors.push(("endTime".into(), format!("endTime {e} is before startTime {s}")));
        }
        match cron {
            Some(cron) if errors.is_empty() => Ok(ParsedSchedule {
                cron,
                start,
                end,
                catchup: spec.catchup,
                policy: spec.concurrency_policy.unwrap_or_default(),
                starting_deadline,
                suspend: spec.suspend,
            }),
            _ => Err(errors),
        }
    }
}

/// Every problem of a schedule as `(field, message)`; empty when it is valid.
pub fn check(spec: &Schedule) -> Vec<(String, String)> {
    ParsedSchedule::parse(spec).err().unwrap_or_default()
}

/// What the scheduler knows when it looks at a pipeline.
#[derive(Clone, Debug)]
pub struct TickInput {
    /// When the Pipeline was created (where its first interval starts without `startTime`).
    pub created: Timestamp,
    /// `status.lastScheduleTime`: the end of the newest interval already dealt with.
    pub last_schedule: Option<Timestamp>,
    /// Runs created by the schedule that have not finished.
    pub unfinished: u32,
    /// The pipeline's `maxActiveRuns`.
    pub max_active_runs: Option<u32>,
    pub now: Timestamp,
}

/// Why due intervals got no run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `catchup` is off: only the newest missed interval runs.
    NoCatchup,
    /// The interval ended longer than `startingDeadline` ago.
    StartingDeadline,
    /// `concurrencyPolicy: Forbid` and a scheduled run was still going.
    Forbid,
    /// `concurrencyPolicy: Replace` runs only the newest interval.
    Replace,
}

impl SkipReason {
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::NoCatchup => "catchup is off, so only the newest missed interval runs",
            SkipReason::StartingDeadline => "they ended longer than startingDeadline ago",
            SkipReason::Forbid => "concurrencyPolicy is Forbid and a scheduled run is still going",
            SkipReason::Replace => "concurrencyPolicy is Replace, so only the newest interval runs",
        }
    }
}

/// Why due intervals wait without a run for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// `Forbid` with `catchup`: the next interval runs when the scheduled run finished.
    Forbid,
    /// Catching up, and as many scheduled runs as allowed are unfinished.
    CatchupWindow,
}

/// What the scheduler does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickPlan {
    /// Intervals to create runs for, oldest first.
    pub create: Vec<Interval>,
    /// Cancel the unfinished scheduled runs (`Replace`), once the new run exists.
    pub cancel_unfinished: bool,
    /// Due intervals given up, with how many (at most `MAX_INTERVALS` counted) and why.
    pub skipped: Vec<(SkipReason, usize)>,
    /// Due intervals held back for now.
    pub waiting: Option<WaitReason>,
    /// The new `status.lastScheduleTime`.
    pub last_schedule: Option<Timestamp>,
    /// The next cron time the schedule acts on, `None` when suspended or ended.
    pub next_schedule: Option<Timestamp>,
}

/// Decides which due intervals get a run now.
///
/// Due intervals are those that started at or after the schedule's start, no later than
/// its end time, ended after `last_schedule` and no later than `now`. Without `catchup` only
/// the newest of them runs; with it, all of them, oldest first, keeping at most
/// `maxActiveRuns` (or [`DEFAULT_CATCHUP_WINDOW`]) scheduled runs unfinished. Intervals
/// that ended more than `startingDeadline` ago are skipped. `Forbid` skips intervals while
/// a scheduled run is going (with `catchup` it waits instead); `Replace` runs the newest
/// interval and cancels the unfinished scheduled runs.
pub fn plan_ticks(schedule: &ParsedSchedule, input: &TickInput) -> TickPlan {
    let cron = &schedule.cron;
    let now = input.now;
    let mut plan = TickPlan {
        create: Vec::new(),
        cancel_unfinished: false,
        skipped: Vec::new(),
        waiting: None,
        last_schedule: input.last_schedule,
        next_schedule: None,
    };
    // Where the first interval starts: the first cron time at or after `startTime`, or else
    // the interval the Pipeline was created in.
    let first_start = match schedule.start {
        Some(start) => cron.at_or_after(start),
        None => cron
            .at_or_before(input.created)
            .or_else(|| cron.at_or_after(input.created)),
    };
    let Some(first_start) = first_start else {
        return plan;
    };
    // Every interval ending after `lower` is still to be dealt with.
    let lower = input.last_schedule.map_or(first_start, |l| l.max(first_start));
    // The end of the last interval `endTime` allows (the one starting last at or before it).
    let last_end = schedule.end.map(|end| {
        cron.at_or_before(end)
            .filter(|&s| s >= first_start)
            .and_then(|s| cron.next_after(s))
            .unwrap_or(first_start)
    });
    let within_end = |t: Timestamp| last_end.is_none_or(|l| t <= l);
    if schedule.suspend {
        return plan;
    }
    plan.next_schedule = cron.next_after(now.max(lower)).filter(|&t| within_end(t));
    let horizon = last_end.map_or(now, |l| l.min(now));
    let Some(newest) = cron.at_or_before(horizon).filter(|&e| e > lower) else {
        return plan;
    };

    // Intervals that ended before the starting deadline are skipped.
    let mut eligible_lower = lower;
    if let Some(deadline) = schedule.starting_deadline {
        let oldest_allowed = now.checked_sub(deadline).unwrap_or(now);
        if newest < oldest_allowed {
            plan.skipped
                .push((SkipReason::StartingDeadline, cron.count_between(lower, newest)));
            plan.last_schedule = Some(newest);
            return plan;
        }
        if let Some(first_ok) = cron.at_or_after(oldest_allowed)
            && let Some(before) = cron.before(first_ok)
            && before > lower
        {
            plan.skipped
                .push((SkipReason::StartingDeadline, cron.count_between(lower, before)));
            eligible_lower = before;
            plan.last_schedule = Some(before);
        }
    }

    let newest_interval = Interval {
        start: cron
            .before(newest)
            .map_or(eligible_lower, |s| s.max(eligible_lower)),
        end: newest,
    };
    let run_newest_only = |plan: &mut TickPlan, reason: SkipReason| {
        let older = cron.count_between(eligible_lower, newest_interval.start);
        if older > 0 {
            plan.skipped.push((reason, older));
        }
        plan.create.push(newest_interval);
        plan.last_schedule = Some(newest);
    };
    let busy = input.unfinished > 0;
    match (schedule.policy, schedule.catchup) {
        (ConcurrencyPolicy::Replace, _) => {
            run_newest_only(&mut plan, SkipReason::Replace);
            plan.cancel_unfinished = busy;
        }
        (ConcurrencyPolicy::Forbid, false) if busy => {
            plan.skipped
                .push((SkipReason::Forbid, cron.count_between(eligible_lower, newest)));
            plan.last_schedule = Some(newest);
        }
        (ConcurrencyPolicy::Forbid, true) if busy => plan.waiting = Some(WaitReason::Forbid),
        (_, false) => run_newest_only(&mut plan, SkipReason::NoCatchup),
        (policy, true) => {
            let room = if policy == ConcurrencyPolicy::Forbid {
                1
            } else {
                input
                    .max_active_runs
                    .unwrap_or(DEFAULT_CATCHUP_WINDOW)
                    .saturating_sub(input.unfinished)
            };
            let mut start = eligible_lower;
            while let Some(end) = cron.next_after(start).filter(|&e| e <= newest) {
                if plan.create.len() as u32 >= room {
                    plan.waiting = Some(if policy == ConcurrencyPolicy::Forbid {
                        WaitReason::Forbid
                    } else {
                        WaitReason::CatchupWindow
                    });
                    break;
                }
                plan.create.push(Interval { start, end });
                plan.last_schedule = Some(end);
                start = end;
            }
        }
    }
    plan
}

/// A run of one pipeline, as the queue under `maxActiveRuns` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedRun {
    pub name: String,
    /// `spec.logicalDate`, if set.
    pub logical_date: Option<Timestamp>,
    pub created: Timestamp,
    /// The run took its snapshot and started.
    pub started: bool,
    /// The run reached a final phase.
    pub finished: bool,
}

impl QueuedRun {
    /// Waiting runs start in this order: oldest logical date (or, without one, creation
    /// time) first.
    fn admission_key(&self) -> (Timestamp, Timestamp, &str) {
        (
            self.logical_date.unwrap_or(self.created),
            self.created,
            &self.name,
        )
    }
}

/// The runs of one pipeline that count against `maxActiveRuns`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunQueue {
    /// Started and not finished, in admission order.
    pub active: Vec<usize>,
    /// Not started and not finished, in the order they may start.
    pub waiting: Vec<usize>,
}

impl RunQueue {
    pub fn new(runs: &[QueuedRun]) -> RunQueue {
        let mut queue = RunQueue::default();
        for (i, run) in runs.iter().enumerate() {
            match (run.started, run.finished) {
                (_, true) => {}
                (true, false) => queue.active.push(i),
                (false, false) => queue.waiting.push(i),
            }
        }
        queue
            .active
            .sort_by(|&a, &b| runs[a].admission_key().cmp(&runs[b].admission_key()));
        queue
            .waiting
            .sort_by(|&a, &b| runs[a].admission_key().cmp(&runs[b].admission_key()));
        queue
    }

    /// How many waiting runs may start now.
    pub fn free_slots(&self, max_active_runs: Option<u32>) -> usize {
        match max_active_runs {
            None => self.waiting.len(),
            Some(max) => (max as usize).saturating_sub(self.active.len()),
        }
    }

    /// Whether run `index` may start now; otherwise its place in the queue (1 = next).
    pub fn admit(&self, index: usize, max_active_runs: Option<u32>) -> Result<(), usize> {
        match self.waiting.iter().position(|&i| i == index) {
            Some(pos) if pos < self.free_slots(max_active_runs) => Ok(()),
            Some(pos) => Err(pos + 1 - self.free_slots(max_active_runs)),
            // Already started (or finished): nothing to wait for.
            None => Ok(()),
        }
    }
}

/// A finished run that history limits may delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedRun {
    pub name: String,
    pub succeeded: bool,
    pub finished_at: Timestamp,
}

/// The runs to delete so that at most `keep_succeeded` succeeded and `keep_failed` failed
/// (or cancelled) runs remain, the ones that finished last. `None` keeps every run.
pub fn runs_to_prune(
    runs: &[FinishedRun],
    keep_succeeded: Option<u32>,
    keep_failed: Option<u32>,
) -> Vec<String> {
    let mut sorted: Vec<&FinishedRun> = runs.iter().collect();
    sorted.sort_by(|a, b| {
        b.finished_at
            .cmp(&a.finished_at)
            .then_with(|| b.name.cmp(&a.name))
    });
    let (mut succeeded, mut failed) = (0u32, 0u32);
    let mut prune = Vec::new();
    for run in sorted {
        let (seen, keep) = if run.succeeded {
            (&mut succeeded, keep_succeeded)
        } else {
            (&mut failed, keep_failed)
        };
        *seen += 1;
        if keep.is_some_and(|k| *seen > k) {
            prune.push(run.name.clone());
        }
    }
    prune
}

/// The name of the run for the interval with this logical date:
/// `<pipeline>-<yyyymmdd>-<hhmmss>` in UTC (unique even when a daylight-saving change
/// repeats a local time), shortened with a hash when it would pass 63 characters.
pub fn run_name(pipeline: &str, logical_date: Timestamp) -> String {
    names::child_name(pipeline, &logical_date.strftime("%Y%m%d-%H%M%S").to_string())
}

/// The name of a run made by `weir trigger` at `at`: `<pipeline>-manual-<yyyymmdd>-<hhmmss>`.
pub fn manual_run_name(pipeline: &str, at: Timestamp) -> String {
    names::child_name(pipeline, &at.strftime("manual-%Y%m%d-%H%M%S").to_string())
}

/// Reads an instant as people write one on a command line: RFC 3339 with an offset
/// (`2024-03-01T06:00:00Z`, `2024-03-01T07:00:00+01:00`), or a date (`2024-03-01`,
/// midnight) or date and time (`2024-03-01T06:00`) in the time zone `tz`.
pub fn parse_instant(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    // A date alone reads as its midnight.
    let civil: DateTime = text.parse().map_err(|_| {
        format!(
            "{} is not a date: use 2024-03-01, 2024-03-01T06:00 or 2024-03-01T06:00:00Z",
            q(text)
        )
    })?;
    tz.to_ambiguous_zoned(civil)
        .compatible()
        .map(|z| z.timestamp())
        .map_err(|e| format!("{}: {e}", q(text)))
}

/// Reads the end of a range of logical dates, included: like [`parse_instant`], except that
/// a date alone (`2024-03-31`) means the whole day, up to the next midnight in `tz`.
pub fn parse_range_end(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let start = parse_instant(text, tz)?;
    let date_only = !text.contains(['T', 't', ' ']) && text.parse::<jiff::civil::Date>().is_ok();
    if !date_only {
        return Ok(start);
    }
    let next_midnight = start
        .to_zoned(tz.clone())
        .tomorrow()
        .and_then(|z| z.start_of_day())
        .map_err(|e| format!("{}: {e}", q(text)))?;
    next_midnight
        .timestamp()
        .checked_sub(SignedDuration::from_nanos(1))
        .map_err(|e| format!("{}: {e}", q(text)))
}

#[cfg(test)]
mod tests;
