//! `evaluate`: every trigger rule against upstream states, with Airflow's semantics as
//! documented on `TriggerRule`, and the property the planner relies on: every verdict but
//! `Wait` is final.

use crate::api::TaskPhase::{self, *};
use crate::api::TriggerRule::{self, *};
use crate::engine::plan::{Verdict, evaluate};

const RULES: [TriggerRule; 6] = [
    AllSucceeded,
    AllDone,
    AllFailed,
    OneSucceeded,
    OneFailed,
    NoneFailed,
];
const PHASES: [TaskPhase; 8] = [
    Pending,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Skipped,
    UpstreamFailed,
    Cancelled,
];
const TERMINAL: [TaskPhase; 5] = [Succeeded, Failed, Skipped, UpstreamFailed, Cancelled];

fn verdict(rule: TriggerRule, upstream: &[TaskPhase]) -> Verdict {
    evaluate(rule, upstream.iter().copied())
}

/// Reads a case like `"S F R"`: S Succeeded, F Failed, U UpstreamFailed, K Skipped,
/// C Cancelled, R Running, P Pending, T Retrying.
fn states(text: &str) -> Vec<TaskPhase> {
    text.split_whitespace()
        .map(|s| match s {
            "S" => Succeeded,
            "F" => Failed,
            "U" => UpstreamFailed,
            "K" => Skipped,
            "C" => Cancelled,
            "R" => Running,
            "P" => Pending,
            "T" => Retrying,
            other => panic!("unknown state {other}"),
        })
        .collect()
}

#[test]
fn trigger_rule_table() {
    use Verdict::{Run, Skip, UpstreamFailed as UF, Wait};
    #[rustfmt::skip]
    let table: &[(TriggerRule, &str, Verdict)] = &[
        // No upstream task: always runs.
        (AllSucceeded, "", Run), (AllDone, "", Run), (AllFailed, "", Run),
        (OneSucceeded, "", Run), (OneFailed, "", Run), (NoneFailed, "", Run),

        (AllSucceeded, "S S", Run),
        (AllSucceeded, "S R", Wait),
        (AllSucceeded, "S P", Wait),
        (AllSucceeded, "S T", Wait),
        (AllSucceeded, "S F", UF),
        (AllSucceeded, "F R", UF),          // a failure decides at once
        (AllSucceeded, "U S", UF),
        (AllSucceeded, "C S", UF),
        (AllSucceeded, "K S", Skip),
        (AllSucceeded, "K F", UF),          // failure wins over skip
        (AllSucceeded, "K R", Wait),        // the running one may still fail
        (AllSucceeded, "K K", Skip),

        (AllDone, "S F K U C", Run),
        (AllDone, "S R", Wait),
        (AllDone, "F T", Wait),
        (AllDone, "K P", Wait),

        (AllFailed, "F F", Run),
        (AllFailed, "F U C", Run),          // upstream-failed and cancelled count as failed
        (AllFailed, "F R", Wait),
        (AllFailed, "F S", Skip),
        (AllFailed, "S R", Skip),           // one success decides at once
        (AllFailed, "F K", Skip),
        (AllFailed, "K", Skip),

        (OneSucceeded, "S R", Run),         // runs as soon as one succeeds
        (OneSucceeded, "F S", Run),
        (OneSucceeded, "K S", Run),
        (OneSucceeded, "F R", Wait),
        (OneSucceeded, "F F", UF),
        (OneSucceeded, "F K", UF),
        (OneSucceeded, "C K", UF),
        (OneSucceeded, "K K", Skip),

        (OneFailed, "F R", Run),            // runs as soon as one fails
        (OneFailed, "U S", Run),
        (OneFailed, "C", Run),
        (OneFailed, "S R", Wait),
        (OneFailed, "S S", Skip),
        (OneFailed, "S K", Skip),
        (OneFailed, "K", Skip),

        (NoneFailed, "S S", Run),
        (NoneFailed, "S K", Run),           // skipped is not failed
        (NoneFailed, "K K", Run),
        (NoneFailed, "S R", Wait),
        (NoneFailed, "S F", UF),
        (NoneFailed, "U R", UF),
        (NoneFailed, "C S", UF),
    ];
    let mut wrong = Vec::new();
    for &(rule, upstream, want) in table {
        let got = verdict(rule, &states(upstream));
        if got != want {
            wrong.push(format!("{rule:?} over [{upstream}]: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every sequence of up to `len` upstream states.
fn all_upstreams(len: usize, phases: &[TaskPhase]) -> Vec<Vec<TaskPhase>> {
    let mut out = vec![vec![]];
    let mut frontier = vec![vec![]];
    for _ in 0..len {
        frontier = frontier
            .iter()
            .flat_map(|v: &Vec<TaskPhase>| {
                phases.iter().map(move |&p| {
                    let mut w = v.clone();
                    w.push(p);
                    w
                })
            })
            .collect();
        out.extend(frontier.iter().cloned());
    }
    out
}

fn failed(p: TaskPhase) -> bool {
    matches!(p, Failed | UpstreamFailed | Cancelled)
}

/// Once every upstream task is done, the verdict is what the rule says in words.
#[test]
fn finished_upstream_matches_the_documented_rule() {
    for upstream in all_upstreams(4, &TERMINAL) {
        if upstream.is_empty() {
            continue;
        }
        let all = |f: fn(TaskPhase) -> bool| upstream.iter().all(|&p| f(p));
        let any = |f: fn(TaskPhase) -> bool| upstream.iter().any(|&p| f(p));
        let succeeded = |p| p == Succeeded;
        let skipped = |p| p == Skipped;
        for rule in RULES {
            let holds = match rule {
                AllSucceeded => all(succeeded),
                AllDone => true,
                AllFailed => all(failed),
                OneSucceeded => any(succeeded),
                OneFailed => any(failed),
                NoneFailed => !any(failed),
            };
            // When it does not hold: UpstreamFailed when a failure is why, Skipped otherwise.
            let otherwise = match rule {
                AllSucceeded if any(failed) => Verdict::UpstreamFailed,
                OneSucceeded if !all(skipped) => Verdict::UpstreamFailed,
                NoneFailed => Verdict::UpstreamFailed,
                _ => Verdict::Skip,
            };
            let want = if holds { Verdict::Run } else { otherwise };
            assert_eq!(verdict(rule, &upstream), want, "{rule:?} over {upstream:?}");
        }
    }
}

/// A verdict other than `Wait` never changes however the unfinished upstream tasks end, and
/// `Wait` only while some upstream task is unfinished: a task is never left pending forever.
#[test]
fn verdicts_are_final_and_never_stuck() {
    for upstream in all_upstreams(3, &PHASES) {
        let unfinished: Vec<usize> = (0..upstream.len())
            .filter(|&i| !upstream[i].is_terminal())
            .collect();
        for rule in RULES {
            let v = verdict(rule, &upstream);
            if unfinished.is_empty() {
                assert_ne!(v, Verdict::Wait, "{rule:?} over {upstream:?} waits on nothing");
                continue;
            }
            if v == Verdict::Wait {
                continue;
            }
            for ending in all_upstreams(unfinished.len(), &TERMINAL)
                .into_iter()
                .filter(|e| e.len() == unfinished.len())
            {
                let mut later = upstream.clone();
                for (&i, &p) in unfinished.iter().zip(&ending) {
                    later[i] = p;
                }
                assert_eq!(verdict(rule, &later), v, "{rule:?}: {upstream:?} then {later:?}");
            }
        }
    }
}

#[test]
fn order_of_upstream_tasks_does_not_matter() {
    for upstream in all_upstreams(3, &PHASES) {
        let mut reversed = upstream.clone();
        reversed.reverse();
        for rule in RULES {
            assert_eq!(verdict(rule, &upstream), verdict(rule, &reversed));
        }
    }
}
