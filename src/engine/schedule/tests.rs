//! Schedules against a fake clock: every time is a parameter.

use super::*;
use crate::api::Schedule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn cron(expr: &str, tz: &str) -> CronSchedule {
    CronSchedule::parse(expr, Some(tz)).unwrap_or_else(|e| panic!("{expr}: {e:?}"))
}

/// The next `n` cron times after `from`, as local wall-clock times with their offset.
fn next_n(c: &CronSchedule, from: &str, n: usize) -> Vec<String> {
    let mut t = ts(from);
    let mut out = Vec::new();
    for _ in 0..n {
        t = c.next_after(t).expect("fires");
        out.push(
            t.to_zoned(c.timezone().clone())
                .strftime("%Y-%m-%d %H:%M:%S %:z")
                .to_string(),
        );
    }
    out
}

#[test]
fn common_expressions() {
    let utc = |e| cron(e, "UTC");
    assert_eq!(
        next_n(&utc("*/15 * * * *"), "2024-05-06T10:07:00Z", 3),
        [
            "2024-05-06 10:15:00 +00:00",
            "2024-05-06 10:30:00 +00:00",
            "2024-05-06 10:45:00 +00:00"
        ]
    );
    // Weekdays at 09:00, from a Friday afternoon.
    assert_eq!(
        next_n(&utc("0 9 * * MON-FRI"), "2024-05-10T15:00:00Z", 2),
        ["2024-05-13 09:00:00 +00:00", "2024-05-14 09:00:00 +00:00"]
    );
    assert_eq!(
        next_n(&utc("@daily"), "2024-02-28T12:00:00Z", 2),
        ["2024-02-29 00:00:00 +00:00", "2024-03-01 00:00:00 +00:00"]
    );
    assert_eq!(
        next_n(&utc("@hourly"), "2024-02-28T23:59:59Z", 2),
        ["2024-02-29 00:00:00 +00:00", "2024-02-29 01:00:00 +00:00"]
    );
    // @weekly is Sunday midnight; @monthly the 1st; @yearly January 1st.
    assert_eq!(
        next_n(&utc("@weekly"), "2024-05-08T00:00:00Z", 1),
        ["2024-05-12 00:00:00 +00:00"]
    );
    assert_eq!(
        next_n(&utc("@monthly"), "2024-01-31T00:00:00Z", 2),
        ["2024-02-01 00:00:00 +00:00", "2024-03-01 00:00:00 +00:00"]
    );
    assert_eq!(
        next_n(&utc("@yearly"), "2024-05-08T00:00:00Z", 1),
        ["2025-01-01 00:00:00 +00:00"]
    );
    // Seconds first, for fast cadences and tests.
    assert_eq!(
        next_n(&utc("*/2 * * * * *"), "2024-05-06T10:00:00.500Z", 3),
        [
            "2024-05-06 10:00:02 +00:00",
            "2024-05-06 10:00:04 +00:00",
            "2024-05-06 10:00:06 +00:00"
        ]
    );
}

#[test]
fn tricky_expressions() {
    let utc = |e| cron(e, "UTC");
    // Last day of the month, in a leap year.
    assert_eq!(
        next_n(&utc("0 0 L * *"), "2024-02-01T00:00:00Z", 2),
        ["2024-02-29 00:00:00 +00:00", "2024-03-31 00:00:00 +00:00"]
    );
    // February 29th only exists in leap years.
    assert_eq!(
        next_n(&utc("0 0 29 2 *"), "2024-03-01T00:00:00Z", 1),
        ["2028-02-29 00:00:00 +00:00"]
    );
    // Day of month and day of week both restricted: either matches (Vixie cron).
    assert_eq!(
        next_n(&utc("0 12 1 * MON"), "2024-05-01T13:00:00Z", 2),
        ["2024-05-06 12:00:00 +00:00", "2024-05-13 12:00:00 +00:00"]
    );
    // Second Friday of the month; nearest weekday to the 15th (Saturday -> Friday 14th).
    assert_eq!(
        next_n(&utc("0 8 * * FRI#2"), "2024-06-01T00:00:00Z", 1),
        ["2024-06-14 08:00:00 +00:00"]
    );
    assert_eq!(
        next_n(&utc("0 8 15W * *"), "2024-06-01T00:00:00Z", 1),
        ["2024-06-14 08:00:00 +00:00"]
    );
    // Ranges with steps, lists, names.
    assert_eq!(
        next_n(&utc("0 8-17/3 * JAN,JUL *"), "2024-06-30T20:00:00Z", 4),
        [
            "2024-07-01 08:00:00 +00:00",
            "2024-07-01 11:00:00 +00:00",
            "2024-07-01 14:00:00 +00:00",
            "2024-07-01 17:00:00 +00:00"
        ]
    );
    // A time exactly on a cron time is not "after" it; a fraction of a second later is.
    let c = utc("0 * * * *");
    assert_eq!(
        c.next_after(ts("2024-05-06T10:00:00Z")),
        Some(ts("2024-05-06T11:00:00Z"))
    );
    assert_eq!(
        c.at_or_after(ts("2024-05-06T10:00:00Z")),
        Some(ts("2024-05-06T10:00:00Z"))
    );
    assert_eq!(
        c.at_or_after(ts("2024-05-06T10:00:00.1Z")),
        Some(ts("2024-05-06T11:00:00Z"))
    );
    assert_eq!(
        c.at_or_before(ts("2024-05-06T10:59:59.9Z")),
        Some(ts("2024-05-06T10:00:00Z"))
    );
    assert_eq!(
        c.before(ts("2024-05-06T10:00:00Z")),
        Some(ts("2024-05-06T09:00:00Z"))
    );
}

#[test]
fn bad_expressions_and_zones_are_reported_by_field() {
    let err = |expr: &str, tz: Option<&str>| CronSchedule::parse(expr, tz).unwrap_err();
    for expr in [
        "61 * * * *",
        "* * *",
        "",
        "0 0 * * * * * *",
        "every day",
        "0/5 * * * *",
    ] {
        let e = err(expr, None);
        assert_eq!(e[0].0, "cron", "{expr}: {e:?}");
        assert!(e[0].1.contains("is not a cron expression"), "{expr}: {e:?}");
    }
    let e = err("0 0 30 2 *", None);
    assert!(e[0].1.contains("never fires"), "{e:?}");
    let e = err("0 0 * * *", Some("Europe/Berln"));
    assert_eq!(e[0].0, "timezone");
    assert!(e[0].1.contains("unknown time zone \"Europe/Berln\""), "{e:?}");
    // Both problems at once.
    assert_eq!(err("nope", Some("Mars/Olympus")).len(), 2);
}

// Europe/Berlin in 2024: clocks jump 02:00 -> 03:00 on March 31st and fall back
// 03:00 -> 02:00 on October 27th.
#[test]
fn dst_europe_berlin() {
    let daily = cron("30 2 * * *", "Europe/Berlin");
    // 02:30 does not exist on March 31st: that day's run is at the first instant after
    // the gap, 03:00.
    assert_eq!(
        next_n(&daily, "2024-03-29T12:00:00Z", 3),
        [
            "2024-03-30 02:30:00 +01:00",
            "2024-03-31 03:00:00 +02:00",
            "2024-04-01 02:30:00 +02:00"
        ]
    );
    // 02:30 happens twice on October 27th: the run is once, at the first.
    assert_eq!(
        next_n(&daily, "2024-10-25T12:00:00Z", 3),
        [
            "2024-10-26 02:30:00 +02:00",
            "2024-10-27 02:30:00 +02:00",
            "2024-10-28 02:30:00 +01:00"
        ]
    );
    // Hourly keeps an hour between runs through both changes.
    let hourly = cron("0 * * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&hourly, "2024-03-31T00:30:00+01:00", 2),
        ["2024-03-31 01:00:00 +01:00", "2024-03-31 03:00:00 +02:00"]
    );
    assert_eq!(
        next_n(&hourly, "2024-10-27T01:30:00+02:00", 3),
        [
            "2024-10-27 02:00:00 +02:00",
            "2024-10-27 02:00:00 +01:00",
            "2024-10-27 03:00:00 +01:00"
        ]
    );
    // Data intervals around the change are 23 and 25 hours long.
    let midnight = cron("@daily", "Europe/Berlin");
    let spring = midnight.interval_from(ts("2024-03-30T23:00:00Z")).unwrap();
    assert_eq!(
        spring.end.duration_since(spring.start),
        SignedDuration::from_hours(23)
    );
    let autumn = midnight.interval_from(ts("2024-10-26T22:00:00Z")).unwrap();
    assert_eq!(
        autumn.end.duration_since(autumn.start),
        SignedDuration::from_hours(25)
    );
}

// America/New_York in 2024: 02:00 -> 03:00 on March 10th, 02:00 -> 01:00 on November 3rd.
#[test]
fn dst_america_new_york() {
    let daily = cron("30 2 * * *", "America/New_York");
    assert_eq!(
        next_n(&daily, "2024-03-09T12:00:00Z", 3),
        [
            "2024-03-10 03:00:00 -04:00",
            "2024-03-11 02:30:00 -04:00",
            "2024-03-12 02:30:00 -04:00"
        ]
    );
    // 01:30 happens twice on November 3rd: once, the first (EDT).
    let early = cron("30 1 * * *", "America/New_York");
    assert_eq!(
        next_n(&early, "2024-11-02T12:00:00Z", 2),
        ["2024-11-03 01:30:00 -04:00", "2024-11-04 01:30:00 -05:00"]
    );
    // Every 30 minutes keeps its rhythm through the repeated hour.
    let half_hourly = cron("*/30 * * * *", "America/New_York");
    assert_eq!(
        next_n(&half_hourly, "2024-11-03T00:45:00-04:00", 5),
        [
            "2024-11-03 01:00:00 -04:00",
            "2024-11-03 01:30:00 -04:00",
            "2024-11-03 01:00:00 -05:00",
            "2024-11-03 01:30:00 -05:00",
            "2024-11-03 02:00:00 -05:00"
        ]
    );
    // Weekday 06:00 runs stay at 06:00 local, so 5 hours UTC in winter, 4 in summer.
    let weekday = cron("0 6 * * 1-5", "America/New_York");
    assert_eq!(
        weekday.next_after(ts("2024-03-08T12:00:00Z")),
        Some(ts("2024-03-11T10:00:00Z"))
    );
    assert_eq!(
        weekday.next_after(ts("2024-03-07T12:00:00Z")),
        Some(ts("2024-03-08T11:00:00Z"))
    );
}

/// `at_or_before` and `next_after` agree on what the cron times are, DST changes included:
/// walking forward from any time and looking back from any time give the same instants.
#[test]
fn backward_and_forward_searches_agree_around_dst() {
    for (expr, tz, from) in [
        ("30 2 * * *", "Europe/Berlin", "2024-03-29T00:00:00Z"),
        ("30 2 * * *", "Europe/Berlin", "2024-10-25T00:00:00Z"),
        ("0 * * * *", "Europe/Berlin", "2024-10-26T20:00:00Z"),
        ("*/30 * * * *", "America/New_York", "2024-11-02T20:00:00Z"),
        ("30 1 * * *", "America/New_York", "2024-11-01T00:00:00Z"),
        ("*/20 2 * * *", "America/New_York", "2024-03-09T00:00:00Z"),
    ] {
        let c = cron(expr, tz);
        let mut ticks = vec![];
        let mut t = ts(from);
        for _ in 0..12 {
            t = c.next_after(t).unwrap();
            ticks.push(t);
        }
        for w in ticks.windows(2) {
            let (a, b) = (w[0], w[1]);
            for probe in [
                a,
                a + SignedDuration::from_secs(1),
                b - SignedDuration::from_secs(1),
            ] {
                assert_eq!(
                    c.at_or_before(probe),
                    Some(a),
                    "{expr} {tz} at_or_before({probe})"
                );
            }
            assert_eq!(c.before(b), Some(a), "{expr} {tz} before({b})");
        }
    }
}

fn schedule(cron_expr: &str) -> Schedule {
    Schedule {
        cron: cron_expr.into(),
        ..Default::default()
    }
}

fn parsed(s: Schedule) -> ParsedSchedule {
    ParsedSchedule::parse(&s).unwrap_or_else(|e| panic!("{e:?}"))
}

fn input(created: &str, last: Option<&str>, now: &str) -> TickInput {
    TickInput {
        created: ts(created),
        last_schedule: last.map(ts),
        unfinished: 0,
        max_active_runs: None,
        now: ts(now),
    }
}

/// Intervals as `start..end` in UTC, short.
fn spans(plan: &TickPlan) -> Vec<String> {
    plan.create
        .iter()
        .map(|i| {
            format!(
                "{}..{}",
                i.start.strftime("%m-%dT%H:%M:%S"),
                i.end.strftime("%m-%dT%H:%M:%S")
            )
        })
        .collect()
}

#[test]
fn first_run_comes_at_the_first_cron_time_after_creation() {
    let s = parsed(schedule("@daily"));
    let before = plan_ticks(&s, &input("2024-01-01T10:00:00Z", None, "2024-01-01T23:59:59Z"));
    assert!(before.create.is_empty());
    assert_eq!(before.next_schedule, Some(ts("2024-01-02T00:00:00Z")));
    assert_eq!(before.last_schedule, None);

    let plan = plan_ticks(&s, &input("2024-01-01T10:00:00Z", None, "2024-01-02T00:00:00.2Z"));
    // The run covers the day the pipeline was created in.
    assert_eq!(spans(&plan), ["01-01T00:00:00..01-02T00:00:00"]);
    assert_eq!(plan.last_schedule, Some(ts("2024-01-02T00:00:00Z")));
    assert_eq!(plan.next_schedule, Some(ts("2024-01-03T00:00:00Z")));
    assert!(plan.skipped.is_empty() && plan.waiting.is_none());

    // Asking again in the same second changes nothing.
    let again = plan_ticks(
        &s,
        &input(
            "2024-01-01T10:00:00Z",
            Some("2024-01-02T00:00:00Z"),
            "2024-01-02T00:00:00.9Z",
        ),
    );
    assert!(again.create.is_empty());
    assert_eq!(again.last_schedule, Some(ts("2024-01-02T00:00:00Z")));
}

#[test]
fn without_catchup_only_the_latest_missed_interval_runs() {
    let s = parsed(schedule("@daily"));
    // The operator was down from January 2nd to the 5th, noon.
    let plan = plan_ticks(
        &s,
        &input(
            "2024-01-01T10:00:00Z",
            Some("2024-01-02T00:00:00Z"),
            "2024-01-05T12:00:00Z",
        ),
    );
    assert_eq!(spans(&plan), ["01-04T00:00:00..01-05T00:00:00"]);
    assert_eq!(plan.skipped, [(SkipReason::NoCatchup, 2)]);
    assert_eq!(plan.last_schedule, Some(ts("2024-01-05T00:00:00Z")));
    assert_eq!(plan.next_schedule, Some(ts("2024-01-06T00:00:00Z")));
}

#[test]
fn catchup_creates_every_missed_interval_oldest_first() {
    let s = parsed(Schedule {
        catchup: true,
        ..schedule("@daily")
    });
    let plan = plan_ticks(
        &s,
        &input(
            "2024-01-01T10:00:00Z",
            Some("2024-01-02T00:00:00Z"),
            "2024-01-05T12:00:00Z",
        ),
    );
    assert_eq!(
        spans(&plan),
        [
            "01-02T00:00:00..01-03T00:00:00",
            "01-03T00:00:00..01-04T00:00:00",
            "01-04T00:00:00..01-05T00:00:00"
        ]
    );
    assert!(plan.skipped.is_empty());
    assert_eq!(plan.last_schedule, Some(ts("2024-01-05T00:00:00Z")));
}

#[test]
fn catchup_from_a_start_time_in_the_past() {
    // startTime a week before the pipeline was created, not on a cron time: the first
    // interval starts at the first midnight after it.
    let s = parsed(Schedule {
        catchup: true,
        start_time: Some(Time(ts("2023-12-25T06:00:00Z"))),
        ..schedule("@daily")
    });
    let plan = plan_ticks(&s, &input("2024-01-01T10:00:00Z", None, "2024-01-01T10:00:01Z"));
    assert_eq!(plan.create.len(), 6, "{:?}", spans(&plan));
    assert_eq!(plan.create[0].start, ts("2023-12-26T00:00:00Z"));
    assert_eq!(plan.create[5].end, ts("2024-01-01T00:00:00Z"));
    // Consecutive: each interval starts where the previous one ended.
    assert!(plan.create.windows(2).all(|w| w[0].end == w[1].start));
}

#[test]
fn catchup_keeps_at_most_max_active_runs_unfinished() {
    let s = parsed(Schedule {
        catchup: true,
        start_time: Some(Time(ts("2023-01-01T00:00:00Z"))),
        ..schedule("@daily")
    });
    let mut i = input("2024-01-01T10:00:00Z", None, "2024-01-01T10:00:00Z");
    // A year behind, no limit: the default window.
    let plan = plan_ticks(&s, &i);
    assert_eq!(plan.create.len(), DEFAULT_CATCHUP_WINDOW as usize);
    assert_eq!(plan.waiting, Some(WaitReason::CatchupWindow));
    assert_eq!(plan.last_schedule, Some(plan.create.last().unwrap().end));
    // With maxActiveRuns 3 and one still going: two more.
    i.max_active_runs = Some(3);
    i.unfinished = 1;
    i.last_schedule = plan.last_schedule;
    let next = plan_ticks(&s, &i);
    assert_eq!(next.create.len(), 2);
    assert_eq!(next.create[0].start, plan.create.last().unwrap().end);
    // Full: nothing until one finishes, and nothing is lost.
    i.unfinished = 3;
    let full = plan_ticks(&s, &i);
    assert!(full.create.is_empty());
    assert_eq!(full.waiting, Some(WaitReason::CatchupWindow));
    assert_eq!(full.last_schedule, i.last_schedule);
}

#[test]
fn catching_up_step_by_step_creates_each_interval_exactly_once() {
    // A fake clock that jumps irregularly, sometimes by many intervals, sometimes by a
    // fraction of one, with runs finishing at random: every interval gets exactly one run,
    // in order, with no gap and no overlap.
    for catchup in [true, false] {
        let s = parsed(Schedule {
            catchup,
            ..schedule("*/10 * * * *")
        });
        let mut last = None;
        let mut created: Vec<Interval> = vec![];
        let mut now = ts("2024-01-01T00:03:00Z");
        let steps = [7, 1, 60, 0, 3, 600, 11, 10, 45, 240, 2];
        for (n, &minutes) in steps.iter().cycle().take(60).enumerate() {
            now += SignedDuration::from_mins(minutes);
            let plan = plan_ticks(
                &s,
                &TickInput {
                    created: ts("2024-01-01T00:03:00Z"),
                    last_schedule: last,
                    unfinished: (n % 3) as u32,
                    max_active_runs: Some(4),
                    now,
                },
            );
            for i in &plan.create {
                assert!(i.end <= now && i.start < i.end);
            }
            created.extend(&plan.create);
            last = plan.last_schedule;
        }
        let mut sorted = created.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), created.len(), "a duplicate interval");
        assert_eq!(sorted, created, "not oldest first");
        if catchup {
            assert!(created.windows(2).all(|w| w[0].end == w[1].start), "a gap");
            assert_eq!(created[0].start, ts("2024-01-01T00:00:00Z"));
        }
    }
}

#[test]
fn catchup_across_a_dst_change() {
    // Daily at 02:30 Berlin, down over the spring change: the March 31st run starts at
    // 03:00 CEST, and each interval ends where the next starts.
    let s = parsed(Schedule {
        catchup: true,
        timezone: Some("Europe/Berlin".into()),
        ..schedule("30 2 * * *")
    });
    let plan = plan_ticks(
        &s,
        &input(
            "2024-03-28T12:00:00Z",
            Some("2024-03-29T01:30:00Z"),
            "2024-04-02T12:00:00Z",
        ),
    );
    let local: Vec<String> = plan
        .create
        .iter()
        .map(|i| {
            i.start
                .to_zoned(s.cron.timezone().clone())
                .strftime("%m-%d %H:%M %:z")
                .to_string()
        })
        .collect();
    assert_eq!(
        local,
        [
            "03-29 02:30 +01:00",
            "03-30 02:30 +01:00",
            "03-31 03:00 +02:00",
            "04-01 02:30 +02:00"
        ]
    );
    assert!(plan.create.windows(2).all(|w| w[0].end == w[1].start));
}

#[test]
fn seconds_schedule_catches_up_after_ten_seconds_down() {
    let s = parsed(Schedule {
        catchup: true,
        ..schedule("*/2 * * * * *")
    });
    let plan = plan_ticks(
        &s,
        &input(
            "2024-01-01T00:00:00Z",
            Some("2024-01-01T00:00:10Z"),
            "2024-01-01T00:00:20.5Z",
        ),
    );
    assert_eq!(plan.create.len(), 5);
    assert_eq!(plan.next_schedule, Some(ts("2024-01-01T00:00:22Z")));
}

#[test]
fn end_time_stops_the_schedule() {
    let s = parsed(Schedule {
        catchup: true,
        start_time: Some(Time(ts("2024-01-01T00:00:00Z"))),
        end_time: Some(Time(ts("2024-01-03T12:00:00Z"))),
        ..schedule("@daily")
    });
    // Intervals starting January 1st, 2nd and 3rd; the one starting on the 3rd ends on the
    // 4th.
    let plan = plan_ticks(&s, &input("2023-12-01T00:00:00Z", None, "2024-02-01T00:00:00Z"));
    assert_eq!(plan.create.len(), 3);
    assert_eq!(plan.create[2].start, ts("2024-01-03T00:00:00Z"));
    assert_eq!(plan.next_schedule, None);
    let done = plan_ticks(
        &s,
        &input(
            "2023-12-01T00:00:00Z",
            plan.last_schedule.map(|t| t.to_string()).as_deref(),
            "2024-02-01T00:00:00Z",
        ),
    );
    assert!(done.create.is_empty() && done.next_schedule.is_none());
    // Before the end, the next time is shown.
    let early = plan_ticks(&s, &input("2023-12-01T00:00:00Z", None, "2024-01-02T10:00:00Z"));
    assert_eq!(early.next_schedule, Some(ts("2024-01-03T00:00:00Z")));
}

#[test]
fn starting_deadline_skips_intervals_that_ended_too_long_ago() {
    let s = parsed(Schedule {
        catchup: true,
        starting_deadline: Some("1h".into()),
        ..schedule("@daily")
    });
    // Down until 00:30 on the 5th: only the interval that ended at 00:00 is in time.
    let plan = plan_ticks(
        &s,
        &input(
            "2024-01-01T10:00:00Z",
            Some("2024-01-02T00:00:00Z"),
            "2024-01-05T00:30:00Z",
        ),
    );
    assert_eq!(spans(&plan), ["01-04T00:00:00..01-05T00:00:00"]);
    assert_eq!(plan.skipped, [(SkipReason::StartingDeadline, 2)]);
    // Down until noon: nothing is in time.
    let late = plan_ticks(
        &s,
        &input(
            "2024-01-01T10:00:00Z",
            Some("2024-01-02T00:00:00Z"),
            "2024-01-05T12:00:00Z",
        ),
    );
    assert!(late.create.is_empty());
    assert_eq!(late.skipped, [(SkipReason::StartingDeadline, 3)]);
    assert_eq!(late.last_schedule, Some(ts("2024-01-05T00:00:00Z")));
}

fn policy_input(unfinished: u32) -> TickInput {
    TickInput {
        unfinished,
        ..input(
            "2024-01-01T00:00:00Z",
            Some("2024-01-01T00:10:00Z"),
            "2024-01-01T00:40:30Z",
        )
    }
}

#[test]
fn concurrency_policies() {
    let with = |policy, catchup| {
        parsed(Schedule {
            catchup,
            concurrency_policy: Some(policy),
            ..schedule("*/10 * * * *")
        })
    };
    use ConcurrencyPolicy::*;
    // Three intervals are due (ending 00:20, 00:30, 00:40).

    // Allow: runs regardless of the one still going.
    let allow = plan_ticks(&with(Allow, false), &policy_input(1));
    assert_eq!(spans(&allow), ["01-01T00:30:00..01-01T00:40:00"]);
    assert!(!allow.cancel_unfinished);

    // Forbid, a run going: the intervals are skipped.
    let forbid = plan_ticks(&with(Forbid, false), &policy_input(1));
    assert!(forbid.create.is_empty());
    assert_eq!(forbid.skipped, [(SkipReason::Forbid, 3)]);
    assert_eq!(forbid.last_schedule, Some(ts("2024-01-01T00:40:00Z")));
    // Forbid, nothing going: the newest runs.
    let idle = plan_ticks(&with(Forbid, false), &policy_input(0));
    assert_eq!(spans(&idle), ["01-01T00:30:00..01-01T00:40:00"]);

    // Forbid with catchup, a run going: wait, lose nothing.
    let wait = plan_ticks(&with(Forbid, true), &policy_input(1));
    assert!(wait.create.is_empty() && wait.skipped.is_empty());
    assert_eq!(wait.waiting, Some(WaitReason::Forbid));
    assert_eq!(wait.last_schedule, Some(ts("2024-01-01T00:10:00Z")));
    // ... and once it finished, one at a time, oldest first.
    let one = plan_ticks(&with(Forbid, true), &policy_input(0));
    assert_eq!(spans(&one), ["01-01T00:10:00..01-01T00:20:00"]);
    assert_eq!(one.waiting, Some(WaitReason::Forbid));

    // Replace: the newest interval runs and the running ones are cancelled.
    let replace = plan_ticks(&with(Replace, true), &policy_input(2));
    assert_eq!(spans(&replace), ["01-01T00:30:00..01-01T00:40:00"]);
    assert!(replace.cancel_unfinished);
    assert_eq!(replace.skipped, [(SkipReason::Replace, 2)]);
    let replace_idle = plan_ticks(&with(Replace, false), &policy_input(0));
    assert!(!replace_idle.cancel_unfinished);
}

#[test]
fn suspended_schedules_create_nothing_and_resume_as_catchup_says() {
    let mut spec = Schedule {
        suspend: true,
        catchup: true,
        ..schedule("@hourly")
    };
    let i = input(
        "2024-01-01T00:00:00Z",
        Some("2024-01-01T01:00:00Z"),
        "2024-01-01T05:30:00Z",
    );
    let plan = plan_ticks(&parsed(spec.clone()), &i);
    assert!(plan.create.is_empty() && plan.next_schedule.is_none());
    assert_eq!(plan.last_schedule, i.last_schedule);
    spec.suspend = false;
    assert_eq!(plan_ticks(&parsed(spec.clone()), &i).create.len(), 4);
    spec.catchup = false;
    assert_eq!(plan_ticks(&parsed(spec), &i).create.len(), 1);
}

#[test]
fn a_schedule_that_starts_in_the_future_waits_for_it() {
    let s = parsed(Schedule {
        start_time: Some(Time(ts("2024-06-01T00:00:00Z"))),
        ..schedule("@daily")
    });
    let plan = plan_ticks(&s, &input("2024-01-01T00:00:00Z", None, "2024-01-15T00:00:00Z"));
    assert!(plan.create.is_empty());
    // The first interval starts June 1st and ends, so runs, June 2nd.
    assert_eq!(plan.next_schedule, Some(ts("2024-06-02T00:00:00Z")));
}

#[test]
fn schedule_fields_are_checked() {
    let problems = check(&Schedule {
        cron: "* * *".into(),
        timezone: Some("Nowhere/City".into()),
        starting_deadline: Some("5 minutes".into()),
        start_time: Some(Time(ts("2024-02-01T00:00:00Z"))),
        end_time: Some(Time(ts("2024-01-01T00:00:00Z"))),
        ..Default::default()
    });
    let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["cron", "timezone", "startingDeadline", "endTime"]);
    assert!(check(&schedule("@daily")).is_empty());
}

fn run(name: &str, logical: Option<&str>, created: &str, started: bool, finished: bool) -> QueuedRun {
    QueuedRun {
        name: name.into(),
        logical_date: logical.map(ts),
        created: ts(created),
        started,
        finished,
    }
}

#[test]
fn waiting_runs_start_oldest_logical_date_first_within_the_limit() {
    let runs = vec![
        run("done", None, "2024-01-01T00:00:00Z", true, true),
        run("active", None, "2024-01-01T00:00:00Z", true, false),
        // Created last but covering the oldest interval (a backfill): goes first.
        run(
            "backfill",
            Some("2023-06-01T00:00:00Z"),
            "2024-01-03T00:00:00Z",
            false,
            false,
        ),
        run("manual", None, "2024-01-02T00:00:00Z", false, false),
        run(
            "scheduled",
            Some("2024-01-01T12:00:00Z"),
            "2024-01-02T00:00:01Z",
            false,
            false,
        ),
    ];
    let q = RunQueue::new(&runs);
    assert_eq!(q.active, [1]);
    let order: Vec<&str> = q.waiting.iter().map(|&i| runs[i].name.as_str()).collect();
    assert_eq!(order, ["backfill", "scheduled", "manual"]);
    // maxActiveRuns 2: one slot is free, for the backfill run.
    assert_eq!(q.free_slots(Some(2)), 1);
    assert_eq!(q.admit(2, Some(2)), Ok(()));
    assert_eq!(q.admit(4, Some(2)), Err(1));
    assert_eq!(q.admit(3, Some(2)), Err(2));
    // Already started runs never wait; no limit means everyone starts.
    assert_eq!(q.admit(1, Some(1)), Ok(()));
    assert_eq!(q.admit(3, None), Ok(()));
    // Over the limit (it was lowered): nobody starts.
    assert_eq!(q.free_slots(Some(1)), 0);
    assert_eq!(RunQueue::new(&runs).admit(2, Some(1)), Err(1));
}

#[test]
fn history_limits_keep_the_runs_that_finished_last() {
    let f = |name: &str, ok: bool, at: &str| FinishedRun {
        name: name.into(),
        succeeded: ok,
        finished_at: ts(at),
    };
    let runs = vec![
        f("s1", true, "2024-01-01T00:00:00Z"),
        f("s2", true, "2024-01-02T00:00:00Z"),
        f("f1", false, "2024-01-02T06:00:00Z"),
        f("s3", true, "2024-01-03T00:00:00Z"),
        f("f2", false, "2024-01-04T00:00:00Z"),
        f("f3", false, "2024-01-05T00:00:00Z"),
    ];
    let mut pruned = runs_to_prune(&runs, Some(2), Some(1));
    pruned.sort();
    assert_eq!(pruned, ["f1", "f2", "s1"]);
    assert!(runs_to_prune(&runs, None, None).is_empty());
    let mut all_failed = runs_to_prune(&runs, None, Some(0));
    all_failed.sort();
    assert_eq!(all_failed, ["f1", "f2", "f3"]);
}

#[test]
fn run_names_come_from_the_logical_date_in_utc() {
    assert_eq!(
        run_name("daily-sales-etl", ts("2024-03-01T00:00:00Z")),
        "daily-sales-etl-20240301-000000"
    );
    // The two 01:30s of New York's autumn change get different names.
    let first = ts("2024-11-03T01:30:00-04:00");
    let second = ts("2024-11-03T01:30:00-05:00");
    assert_ne!(run_name("p", first), run_name("p", second));
    let long = "a".repeat(80);
    let name = run_name(&long, first);
    assert!(
        name.len() <= names::MAX_NAME && names::is_dns_label(&name),
        "{name}"
    );
    assert_eq!(name, run_name(&long, first));
    assert_ne!(name, run_name(&long, second));
    assert_eq!(
        manual_run_name("etl", ts("2024-03-01T10:20:30Z")),
        "etl-manual-20240301-102030"
    );
}

#[test]
fn command_line_dates() {
    let berlin = TimeZone::get("Europe/Berlin").unwrap();
    assert_eq!(
        parse_instant("2024-03-01", &berlin).unwrap(),
        ts("2024-02-29T23:00:00Z")
    );
    assert_eq!(
        parse_instant("2024-07-01T06:00", &berlin).unwrap(),
        ts("2024-07-01T04:00:00Z")
    );
    assert_eq!(
        parse_instant("2024-07-01T06:00:00Z", &berlin).unwrap(),
        ts("2024-07-01T06:00:00Z")
    );
    assert!(
        parse_instant("yesterday", &berlin)
            .unwrap_err()
            .contains("not a date")
    );
}

#[test]
fn backfill_intervals_cover_logical_dates_in_the_range() {
    let c = cron("@daily", "UTC");
    let got = c
        .intervals(ts("2024-01-01T00:00:00Z"), ts("2024-01-31T00:00:00Z"), 100)
        .unwrap();
    assert_eq!(got.len(), 31);
    assert_eq!(got[30].end, ts("2024-02-01T00:00:00Z"));
    // A range starting mid-interval starts at the next cron time.
    let got = c
        .intervals(ts("2024-01-01T06:00:00Z"), ts("2024-01-03T00:00:00Z"), 100)
        .unwrap();
    assert_eq!(got.len(), 2);
    assert!(
        c.intervals(ts("2024-01-01T00:00:00Z"), ts("2025-01-01T00:00:00Z"), 100)
            .is_err()
    );
    assert!(
        c.intervals(ts("2024-02-01T00:00:00Z"), ts("2024-01-01T00:00:00Z"), 100)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_bad_schedule_makes_the_pipeline_invalid() {
    let mut spec = crate::engine::fixture::pipeline().task("a").build();
    spec.schedule = Some(Schedule {
        cron: "0 25 * * *".into(),
        timezone: Some("Europe/Berln".into()),
        ..Default::default()
    });
    spec.max_active_runs = Some(0);
    let err = crate::engine::validate(&spec).unwrap_err().to_string();
    assert!(
        err.contains("schedule.cron: \"0 25 * * *\" is not a cron expression"),
        "{err}"
    );
    assert!(err.contains("schedule.timezone: unknown time zone"), "{err}");
    assert!(err.contains("maxActiveRuns: must be at least 1"), "{err}");
    spec.schedule = Some(schedule("*/5 * * * *"));
    spec.max_active_runs = Some(2);
    assert!(crate::engine::validate(&spec).is_ok());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const EXPRESSIONS: &[&str] = &[
        "30 2 * * *",
        "0 * * * *",
        "*/30 * * * *",
        "15 1,2,3 * * 0",
        "0 0 L * *",
        "*/20 * * * * *",
        "@daily",
    ];
    const ZONES: &[&str] = &["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Around any instant of 2024 (DST changes included), the cron time before it and
        /// the one after it are neighbours: nothing lies between them, and each search
        /// finds the other.
        #[test]
        fn searches_agree_everywhere(
            expr in 0..EXPRESSIONS.len(),
            zone in 0..ZONES.len(),
            secs in 1_704_067_200i64..1_735_689_600,
            nanos in 0u32..1_000_000_000,
        ) {
            let c = cron(EXPRESSIONS[expr], ZONES[zone]);
            let t = Timestamp::new(secs, nanos as i32).unwrap();
            let next = c.next_after(t).unwrap();
            let before = c.at_or_before(t).unwrap();
            prop_assert!(before <= t && t < next);
            prop_assert_eq!(c.next_after(before), Some(next));
            prop_assert_eq!(c.at_or_before(next), Some(next));
            prop_assert_eq!(c.before(next), Some(before));
        }

        /// However the clock jumps and runs come and go, catch-up creates every interval
        /// once, in order, without gaps.
        #[test]
        fn catchup_covers_every_interval_once(
            expr in 0..EXPRESSIONS.len(),
            zone in 0..ZONES.len(),
            jumps in proptest::collection::vec((1i64..200_000, 0u32..5), 1..40),
            max_active in proptest::option::of(1u32..5),
        ) {
            let s = parsed(Schedule {
                catchup: true,
                timezone: Some(ZONES[zone].into()),
                ..schedule(EXPRESSIONS[expr])
            });
            let created = ts("2024-03-01T00:00:00Z");
            let mut now = created;
            let mut last = None;
            let mut all: Vec<Interval> = vec![];
            for (secs, unfinished) in jumps {
                now += SignedDuration::from_secs(secs);
                let plan = plan_ticks(&s, &TickInput {
                    created,
                    last_schedule: last,
                    unfinished,
                    max_active_runs: max_active,
                    now,
                });
                prop_assert!(plan.last_schedule >= last);
                for i in &plan.create {
                    prop_assert!(i.start < i.end && i.end <= now);
                }
                let window = max_active.unwrap_or(DEFAULT_CATCHUP_WINDOW);
                prop_assert!(plan.create.len() as u32 <= window.saturating_sub(unfinished));
                all.extend(&plan.create);
                last = plan.last_schedule;
            }
            for pair in all.windows(2) {
                prop_assert_eq!(pair[0].end, pair[1].start);
            }
            if let Some(first) = all.first() {
                prop_assert!(first.start <= created && created < first.end);
            }
        }
    }
}
