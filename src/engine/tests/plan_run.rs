//! `plan_run`: which tasks start, which are stopped, which are skipped, and how a run ends.

use super::support::{Run, at};
use crate::api::TaskPhase::*;
use crate::api::TriggerRule;
use crate::engine::fixture::{self, pipeline};
use crate::engine::{ObservedTask, RunOutcome, StopReason};
use std::time::Duration;

fn diamond() -> Run {
    Run::new(
        pipeline()
            .task("a")
            .task("b")
            .after(["a"])
            .task("c")
            .after(["a"])
            .task("d")
            .after(["b", "c"])
            .build(),
    )
}

#[test]
fn a_diamond_runs_in_dependency_order() {
    let mut run = diamond();
    let plan = run.step();
    assert_eq!(run.names(&plan.start), ["a"]);
    assert_eq!(run.states(&plan), "a=Pending b=Pending c=Pending d=Pending");
    assert_eq!(
        (plan.stop, plan.outcome.clone(), plan.requeue_after),
        (None, None, None)
    );

    run.set("a", Running);
    assert!(run.step().start.is_empty());
    run.set("a", Succeeded);
    assert_eq!(run.started(), ["b", "c"]);
    run.set("b", Succeeded).set("c", Retrying);
    assert!(
        run.step().start.is_empty(),
        "d waits for c, even while c waits for a retry"
    );
    run.set("c", Succeeded);
    assert_eq!(run.started(), ["d"]);
    assert_eq!(run.step().outcome, None);
    run.set("d", Succeeded);
    let plan = run.step();
    assert!(plan.start.is_empty());
    assert_eq!(plan.outcome, Some(RunOutcome::Succeeded));
}

#[test]
fn start_order_follows_dependencies_not_listing_order() {
    let mut run = Run::new(
        pipeline()
            .task("load")
            .after(["transform"])
            .task("transform")
            .after(["extract"])
            .task("extract")
            .task("audit")
            .build(),
    );
    assert_eq!(run.started(), ["extract", "audit"]);
    run.set("extract", Succeeded);
    assert_eq!(run.started(), ["transform"]);
}

#[test]
fn parallelism_counts_every_active_task() {
    let mut spec = pipeline().parallelism(2);
    for name in ["a", "b", "c", "d", "e"] {
        spec = spec.task(name);
    }
    let mut run = Run::new(spec.build());
    let plan = run.step();
    assert_eq!(run.names(&plan.start), ["a", "b"]);
    assert_eq!(
        run.states(&plan),
        "a=Pending b=Pending c=Pending d=Pending e=Pending"
    );
    // Created (Pending), running and retrying TaskRuns all hold a slot.
    assert!(run.step().start.is_empty(), "a and b are Pending");
    run.set("a", Running).set("b", Retrying);
    assert!(run.step().start.is_empty());
    run.set("a", Succeeded);
    assert_eq!(run.started(), ["c"]);
    run.set("b", Failed).set("c", Skipped);
    assert_eq!(run.started(), ["d", "e"]);
}

#[test]
fn sensors_take_no_parallelism_slot() {
    let mut spec = pipeline()
        .parallelism(1)
        .task("sense")
        .task("a")
        .task("b")
        .build();
    spec.tasks[0].image = None;
    spec.tasks[0].command.clear();
    spec.tasks[0].wait = Some(crate::api::WaitSpec {
        delay: Some("1h".into()),
        ..Default::default()
    });
    let mut run = Run::new(spec);
    let plan = run.step();
    assert_eq!(
        run.names(&plan.start),
        ["sense", "a"],
        "the sensor starts beside a's one slot"
    );
    run.set("sense", Running).set("a", Running);
    assert!(
        run.step().start.is_empty(),
        "a holds the slot; the waiting sensor holds none"
    );
    run.set("a", Succeeded);
    assert_eq!(run.started(), ["b"], "b starts while the sensor still waits");
}

#[test]
fn finally_tasks_count_towards_parallelism() {
    let mut run = Run::new(
        pipeline()
            .parallelism(1)
            .task("a")
            .finally("f")
            .finally("g")
            .build(),
    );
    run.step();
    run.set("a", Succeeded);
    assert_eq!(run.started(), ["f"]);
    assert!(run.step().start.is_empty());
    run.set("f", Succeeded);
    assert_eq!(run.started(), ["g"]);
}

#[test]
fn skips_propagate_by_trigger_rule() {
    let mut run = Run::new(
        pipeline()
            .task("work")
            .task("alert")
            .after(["work"])
            .rule(TriggerRule::OneFailed)
            .task("after-alert")
            .after(["alert"])
            .task("report")
            .after(["alert"])
            .rule(TriggerRule::NoneFailed)
            .task("tidy")
            .after(["after-alert"])
            .rule(TriggerRule::AllDone)
            .task("if-all-failed")
            .after(["work", "tidy"])
            .rule(TriggerRule::AllFailed)
            .build(),
    );
    run.step();
    run.set("work", Succeeded);
    let plan = run.step();
    assert_eq!(
        run.states(&plan),
        "work=Succeeded alert=Skipped after-alert=Skipped report=Pending tidy=Pending if-all-failed=Skipped"
    );
    assert_eq!(
        run.names(&plan.start),
        ["report", "tidy"],
        "NoneFailed and AllDone run after a skip"
    );
    run.set("report", Succeeded).set("tidy", Succeeded);
    assert_eq!(
        run.step().outcome,
        Some(RunOutcome::Succeeded),
        "skipped leaves do not fail a run"
    );
}

#[test]
fn upstream_failures_propagate() {
    let mut run = Run::new(
        pipeline()
            .task("a")
            .task("b")
            .after(["a"])
            .task("c")
            .after(["b"])
            .task("d")
            .after(["c"])
            .rule(TriggerRule::NoneFailed)
            .task("e")
            .after(["c"])
            .rule(TriggerRule::OneSucceeded)
            .task("f")
            .after(["e"])
            .rule(TriggerRule::AllFailed)
            .build(),
    );
    run.step();
    run.set("a", Failed);
    let plan = run.step();
    assert_eq!(
        run.states(&plan),
        "a=Failed b=UpstreamFailed c=UpstreamFailed d=UpstreamFailed e=UpstreamFailed f=Pending"
    );
    assert_eq!(run.names(&plan.start), ["f"]);
    run.set("f", Succeeded);
    let plan = run.step();
    assert_eq!(
        plan.outcome,
        Some(RunOutcome::Failed {
            reason: "TaskFailed",
            message: "failed: a".into()
        }),
        "d is a leaf that did not run"
    );
}

#[test]
fn a_skipped_upstream_task_waits_for_the_others_before_deciding() {
    // `join` needs both branches; one was skipped while the other still runs. Deciding
    // `Skipped` now and `UpstreamFailed` later would let `after-join` run on a state that
    // does not last.
    let spec = || {
        pipeline()
            .task("check")
            .task("branch")
            .after(["check"])
            .rule(TriggerRule::OneFailed)
            .task("slow")
            .task("join")
            .after(["branch", "slow"])
            .task("after-join")
            .after(["join"])
            .rule(TriggerRule::NoneFailed)
            .build()
    };
    let mut run = Run::new(spec());
    run.step();
    run.set("check", Succeeded).set("slow", Running);
    let plan = run.step();
    assert_eq!(run.state(&plan, "branch"), Skipped);
    assert_eq!(
        (run.state(&plan, "join"), run.state(&plan, "after-join")),
        (Pending, Pending)
    );
    assert!(plan.start.is_empty());

    run.set("slow", Failed);
    let plan = run.step();
    assert_eq!(
        (run.state(&plan, "join"), run.state(&plan, "after-join")),
        (UpstreamFailed, UpstreamFailed)
    );

    let mut run = Run::new(spec());
    run.step();
    run.set("check", Succeeded).set("slow", Succeeded);
    let plan = run.step();
    assert_eq!(run.state(&plan, "join"), Skipped);
    assert_eq!(run.names(&plan.start), ["after-join"]);
}

#[test]
fn cancel_stops_active_tasks_once_then_runs_finally() {
    let mut run = Run::new(
        pipeline()
            .task("a")
            .task("b")
            .after(["a"])
            .task("c")
            .after(["b"])
            .rule(TriggerRule::AllDone)
            .task("d")
            .task("e")
            .finally("cleanup")
            .finally("notify")
            .after(["cleanup"])
            .build(),
    );
    run.step();
    run.set("a", Running).set("d", Retrying).set("e", Succeeded);
    run.cancel_requested = true;
    let plan = run.step();
    assert_eq!(plan.stop, Some(StopReason::Cancelled));
    assert_eq!(run.names(&plan.cancel), ["a", "d"]);
    assert!(
        plan.start.is_empty(),
        "finally waits for the stopped tasks to end"
    );
    assert_eq!(
        run.states(&plan),
        "a=Running b=Cancelled c=Cancelled d=Retrying e=Succeeded cleanup=Pending notify=Pending"
    );
    assert_eq!(plan.requeue_after, None);

    let plan = run.step();
    assert!(plan.cancel.is_empty(), "each task is asked to stop only once");

    run.set("a", Cancelled);
    let plan = run.step();
    assert_eq!(
        run.state(&plan, "b"),
        Cancelled,
        "not UpstreamFailed: b never started because of the cancel"
    );
    assert!(plan.start.is_empty());
    run.set("d", Cancelled);
    let plan = run.step();
    assert_eq!(run.names(&plan.start), ["cleanup"]);
    assert_eq!(plan.outcome, None);
    run.set("cleanup", Failed);
    let plan = run.step();
    assert_eq!(
        run.state(&plan, "notify"),
        UpstreamFailed,
        "finally tasks follow their own rules"
    );
    assert_eq!(
        plan.outcome,
        Some(RunOutcome::Cancelled {
            message: "the run was cancelled".into()
        })
    );
}

#[test]
fn cancel_before_anything_started() {
    let mut run = Run::new(pipeline().task("a").task("b").after(["a"]).finally("f").build());
    run.cancel_requested = true;
    let plan = run.step();
    assert_eq!(run.states(&plan), "a=Cancelled b=Cancelled f=Pending");
    assert_eq!(run.names(&plan.start), ["f"]);
    assert!(plan.cancel.is_empty());
    run.set("f", Running);
    let plan = run.step();
    assert!(
        plan.cancel.is_empty(),
        "finally tasks are not stopped by a cancel"
    );
    run.set("f", Succeeded);
    assert!(matches!(run.step().outcome, Some(RunOutcome::Cancelled { .. })));
}

#[test]
fn cancel_keeps_decisions_already_made() {
    let mut run = Run::new(
        pipeline()
            .task("a")
            .task("b")
            .after(["a"])
            .task("c")
            .task("if-c-fails")
            .after(["c"])
            .rule(TriggerRule::OneFailed)
            .build(),
    );
    run.step();
    run.set("a", Failed).set("c", Succeeded);
    run.cancel_requested = true;
    let plan = run.step();
    assert_eq!(
        run.states(&plan),
        "a=Failed b=UpstreamFailed c=Succeeded if-c-fails=Skipped"
    );
}

#[test]
fn run_timeout_stops_the_run_and_fails_it() {
    let mut run = Run::new(
        pipeline()
            .task("a")
            .task("b")
            .after(["a"])
            .finally("report")
            .run_timeout("10m")
            .build(),
    );
    assert_eq!(run.timeout, Some(Duration::from_secs(600)));
    run.step();
    run.set("a", Running);
    run.now = at(4 * 60 + 30);
    let plan = run.step();
    assert_eq!(plan.stop, None);
    assert_eq!(
        plan.requeue_after,
        Some(Duration::from_secs(5 * 60 + 30)),
        "look again at the deadline"
    );

    run.now = at(600);
    let plan = run.step();
    assert_eq!(plan.stop, Some(StopReason::Timeout));
    assert_eq!(run.names(&plan.cancel), ["a"]);
    assert_eq!(run.state(&plan, "b"), Cancelled);
    assert_eq!(plan.requeue_after, None);
    assert!(run.step().cancel.is_empty());

    run.set("a", Cancelled);
    run.now = at(601);
    let plan = run.step();
    assert_eq!(
        run.names(&plan.start),
        ["report"],
        "finally tasks run after a timeout"
    );
    assert_eq!(plan.outcome, None);
    run.set("report", Succeeded);
    assert_eq!(
        run.step().outcome,
        Some(RunOutcome::Failed {
            reason: "RunTimeout",
            message: "the run took longer than its timeout; remaining tasks were cancelled".into()
        })
    );
}

#[test]
fn requeue_after_is_exact_to_the_millisecond() {
    let mut run = Run::new(pipeline().task("a").run_timeout("1.5s").build());
    run.now = at(1) + jiff::SignedDuration::from_millis(1);
    assert_eq!(run.step().requeue_after, Some(Duration::from_millis(499)));
}

#[test]
fn a_deadline_that_cut_nothing_short_does_not_fail_the_run() {
    // Every task finished before the deadline, but the controller only looks after it.
    let mut run = Run::new(pipeline().task("a").finally("f").run_timeout("1m").build());
    run.set("a", Succeeded).set("f", Succeeded);
    run.now = at(3600);
    let plan = run.plan();
    assert_eq!(plan.stop, Some(StopReason::Timeout));
    assert_eq!(plan.outcome, Some(RunOutcome::Succeeded));
}

#[test]
fn cancel_wins_over_timeout() {
    let mut run = Run::new(pipeline().task("a").run_timeout("1m").build());
    run.set("a", Running);
    run.cancel_requested = true;
    run.now = at(120);
    assert_eq!(run.plan().stop, Some(StopReason::Cancelled));
}

#[test]
fn a_handled_failure_does_not_fail_the_run() {
    let mut run = Run::new(
        pipeline()
            .task("load")
            .task("alert")
            .after(["load"])
            .rule(TriggerRule::OneFailed)
            .build(),
    );
    run.step();
    run.set("load", Failed);
    assert_eq!(run.started(), ["alert"]);
    run.set("alert", Succeeded);
    assert_eq!(run.step().outcome, Some(RunOutcome::Succeeded));
}

#[test]
fn a_failed_leaf_fails_the_run_and_names_what_failed() {
    let mut run = Run::new(
        pipeline()
            .task("extract")
            .task("load")
            .after(["extract"])
            .task("other")
            .build(),
    );
    run.set("extract", Failed).set("other", Succeeded);
    let plan = run.plan();
    assert_eq!(run.state(&plan, "load"), UpstreamFailed);
    assert_eq!(
        plan.outcome,
        Some(RunOutcome::Failed {
            reason: "TaskFailed",
            message: "failed: extract".into()
        })
    );
}

#[test]
fn a_failed_leaf_wins_over_a_failed_finally_task() {
    let mut run = Run::new(pipeline().task("a").finally("f").build());
    run.set("a", Failed).set("f", Failed);
    assert_eq!(
        run.plan().outcome,
        Some(RunOutcome::Failed {
            reason: "TaskFailed",
            message: "failed: a".into()
        })
    );
}

#[test]
fn a_failed_finally_task_fails_the_run() {
    let mut run = Run::new(pipeline().task("a").finally("f").finally("g").build());
    run.set("a", Succeeded).set("f", Failed).set("g", Succeeded);
    assert_eq!(
        run.plan().outcome,
        Some(RunOutcome::Failed {
            reason: "FinallyFailed",
            message: "finally task failed: f".into()
        })
    );
}

#[test]
fn long_failure_lists_are_shortened() {
    let mut run = Run::new(fixture::fan_out(10));
    run.set("root", Succeeded);
    for i in 0..8 {
        run.set(&format!("m{i}"), Failed);
    }
    assert_eq!(
        run.plan().outcome,
        Some(RunOutcome::Failed {
            reason: "TaskFailed",
            message: "failed: m0, m1, m2, m3, m4 and 3 more".into()
        })
    );
}

#[test]
fn a_leaf_cancelled_by_hand_is_named() {
    let mut run = Run::new(pipeline().task("a").build());
    run.set("a", Cancelled);
    assert_eq!(
        run.plan().outcome,
        Some(RunOutcome::Failed {
            reason: "TaskFailed",
            message: "failed: a (Cancelled)".into()
        })
    );
}

#[test]
fn finally_tasks_wait_for_every_main_task() {
    let mut run = Run::new(
        pipeline()
            .task("a")
            .task("b")
            .after(["a"])
            .finally("f")
            .finally("g")
            .after(["f"])
            .rule(TriggerRule::AllDone)
            .build(),
    );
    assert_eq!(run.started(), ["a"]);
    run.set("a", Succeeded);
    let plan = run.step();
    assert_eq!(run.names(&plan.start), ["b"]);
    assert_eq!(run.state(&plan, "f"), Pending);
    run.set("b", Retrying);
    assert!(run.step().start.is_empty(), "b may still be retried");
    run.set("b", Failed);
    let plan = run.step();
    assert_eq!(run.names(&plan.start), ["f"], "finally tasks run after a failure");
    run.set("f", Failed);
    assert_eq!(run.started(), ["g"]);
}

#[test]
fn observed_state_wins_over_derived_state() {
    // A TaskRun made by an earlier controller (or by hand) is reported as it is.
    let mut run = diamond();
    let d = run.index("d");
    run.observed[d] = Some(ObservedTask {
        phase: Succeeded,
        cancel_requested: false,
    });
    run.set("a", Succeeded).set("b", Succeeded).set("c", Succeeded);
    let plan = run.plan();
    assert!(plan.start.is_empty());
    assert_eq!(plan.outcome, Some(RunOutcome::Succeeded));
}
