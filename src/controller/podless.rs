//! Attempts that use no pod. A `wait` task's attempt has no Job: each time the TaskRun is
//! reconciled, the operator evaluates the task's condition itself (`check`) and `judge`
//! turns the answer into the attempt's outcome, failing it with `DeadlineExceeded` once the
//! task's `timeout` has passed. While it waits, the attempt stays `Running` with a message
//! that says what it waits for, and the TaskRun is looked at again after the poke interval.
//! Retries, trigger rules, cancellation and reruns work as for any task: only how an
//! attempt starts and ends differs.

use super::{Context, Result};
use crate::api::{Attempt, AttemptPhase, FailureReason, TaskRun, WaitSpec};
use crate::engine::duration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often a sensor looks when its `pokeInterval` is not set.
pub const DEFAULT_POKE: Duration = Duration::from_secs(30);

/// What one look at a podless attempt's condition found.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Not yet: `message` says what the attempt waits for; look again after `look_again`.
    Wait { message: String, look_again: Duration },
    /// The condition holds: the attempt succeeds with these outputs.
    Holds {
        message: Option<String>,
        outputs: BTreeMap<String, String>,
    },
    /// The attempt fails, for example because what it waits for failed.
    Fails { reason: FailureReason, message: String },
}

/// What evaluating the running attempt left: the outputs of an attempt that succeeded, and
/// when to look again at one that still waits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evaluated {
    pub outputs: Option<BTreeMap<String, String>>,
    pub look_again: Option<Duration>,
    /// An approval task's decision, once taken.
    pub approval: Option<crate::api::ApprovalRecord>,
    /// Approvals naming an approval task that decided nothing.
    pub ignored_approvals: Vec<crate::api::IgnoredApproval>,
}

/// Evaluates the running attempt of a task that uses no pod and records its outcome in
/// `attempts`. Nothing for a task with pods, or with no attempt running.
pub async fn evaluate(
    ctx: &Context,
    ns: &str,
    tr: &TaskRun,
    attempts: &mut BTreeMap<u32, Attempt>,
    now: jiff::Timestamp,
) -> Result<Evaluated> {
    if tr.spec.uses_pod() {
        return Ok(Evaluated::default());
    }
    let Some(attempt) = attempts
        .values_mut()
        .rev()
        .find(|a| a.phase == AttemptPhase::Running)
    else {
        return Ok(Evaluated::default());
    };
    if let Some(gate) = &tr.spec.approval {
        // Its own timeout decides by `onTimeout`: the task's `timeout` (`judge`) does not apply.
        let looked = super::approval::look(ctx, ns, tr, gate, attempt, now).await?;
        let evaluated = record(attempt, looked.verdict, now);
        return Ok(Evaluated {
            approval: looked.decision,
            ignored_approvals: looked.ignored,
            ..evaluated
        });
    }
    let found = check(ctx, ns, tr, attempt, now).await?;
    let verdict = judge(tr.spec.timeout.as_deref(), attempt, found, now);
    Ok(record(attempt, verdict, now))
}

/// The first status of an attempt just started without a pod says what it waits for: its
/// condition is looked at once, and the message of a wait kept. An outcome found here is
/// left for the next look to record (the plan of this pass still has the attempt running).
pub async fn announce(
    ctx: &Context,
    ns: &str,
    tr: &TaskRun,
    attempts: &mut BTreeMap<u32, Attempt>,
    started: Option<u32>,
    now: jiff::Timestamp,
) -> Result<()> {
    let Some(number) = started.filter(|_| !tr.spec.uses_pod()) else {
        return Ok(());
    };
    let mut probe = attempts.clone();
    evaluate(ctx, ns, tr, &mut probe, now).await?;
    if let (Some(looked), Some(attempt)) = (probe.get(&number), attempts.get_mut(&number))
        && looked.phase == AttemptPhase::Running
    {
        attempt.message = looked.message.clone();
    }
    Ok(())
}

/// Looks at the condition of the task's kind.
async fn check(
    ctx: &Context,
    ns: &str,
    tr: &TaskRun,
    attempt: &Attempt,
    now: jiff::Timestamp,
) -> Result<Verdict> {
    let started = attempt.start_time.as_ref().map_or(now, |t| t.0);
    let Some(wait) = &tr.spec.wait else {
        return Ok(Verdict::Fails {
            reason: FailureReason::ConfigError,
            message: "the task uses no pod but says nothing to wait for".into(),
        });
    };
    if wait.delay.is_some() {
        return Ok(check_delay(wait, started, now));
    }
    super::sensor::check(ctx, ns, wait, now).await
}

/// `delay`: holds once the attempt has waited that long.
fn check_delay(wait: &WaitSpec, started: jiff::Timestamp, now: jiff::Timestamp) -> Verdict {
    let poke = poke_interval(wait);
    let Some(text) = &wait.delay else {
        return Verdict::Fails {
            reason: FailureReason::ConfigError,
            message: "wait names nothing to wait for".into(),
        };
    };
    let delay = match duration::parse(text) {
        Ok(d) => d,
        Err(e) => {
            return Verdict::Fails {
                reason: FailureReason::ConfigError,
                message: format!("wait.delay: {e}"),
            };
        }
    };
    let waited = Duration::try_from(now.duration_since(started)).unwrap_or(Duration::ZERO);
    match delay.checked_sub(waited) {
        Some(left) if !left.is_zero() => Verdict::Wait {
            message: format!("waiting {text} ({} left)", duration::format(left)),
            look_again: left.min(poke),
        },
        _ => Verdict::Holds {
            message: Some(format!("waited {text}")),
            outputs: BTreeMap::new(),
        },
    }
}

/// The poke interval of a sensor; the default when it is unset or does not parse (the
/// validator reports that).
pub fn poke_interval(wait: &WaitSpec) -> Duration {
    wait.poke_interval
        .as_deref()
        .and_then(|p| duration::parse(p).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_POKE)
}

/// The verdict with the task's `timeout` applied: a wait that has gone on past it fails the
/// attempt with `DeadlineExceeded`, naming what it waited for; a wait looks again no later
/// than when the timeout passes.
pub fn judge(timeout: Option<&str>, attempt: &Attempt, found: Verdict, now: jiff::Timestamp) -> Verdict {
    let Verdict::Wait { message, look_again } = found else {
        return found;
    };
    let Some(limit) = timeout.and_then(|t| duration::parse(t).ok()) else {
        return Verdict::Wait { message, look_again };
    };
    let started = attempt.start_time.as_ref().map_or(now, |t| t.0);
    let waited = Duration::try_from(now.duration_since(started)).unwrap_or(Duration::ZERO);
    match limit.checked_sub(waited) {
        Some(left) if !left.is_zero() => Verdict::Wait {
            message,
            look_again: look_again.min(left),
        },
        _ => Verdict::Fails {
            reason: FailureReason::DeadlineExceeded,
            message: format!("timed out after {}: still {message}", timeout.unwrap_or_default()),
        },
    }
}

/// Writes a verdict into the running attempt.
fn record(attempt: &mut Attempt, verdict: Verdict, now: jiff::Timestamp) -> Evaluated {
    match verdict {
        Verdict::Wait { message, look_again } => {
            attempt.message = Some(message);
            Evaluated {
                look_again: Some(look_again),
                ..Default::default()
            }
        }
        Verdict::Holds { message, outputs } => {
            attempt.phase = AttemptPhase::Succeeded;
            attempt.completion_time = Some(Time(now));
            attempt.message = message;
            Evaluated {
                outputs: Some(outputs),
                ..Default::default()
            }
        }
        Verdict::Fails { reason, message } => {
            attempt.phase = AttemptPhase::Failed;
            attempt.completion_time = Some(Time(now));
            attempt.reason = Some(reason);
            attempt.message = Some(message);
            Evaluated::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn running(started: i64) -> Attempt {
        Attempt {
            number: 1,
            phase: AttemptPhase::Running,
            start_time: Some(Time(ts(started))),
            ..Default::default()
        }
    }

    fn delay(text: &str, poke: Option<&str>) -> WaitSpec {
        WaitSpec {
            poke_interval: poke.map(str::to_string),
            delay: Some(text.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_delay_waits_then_holds_and_looks_again_no_later_than_it_ends() {
        let wait = delay("90s", Some("1m"));
        assert_eq!(
            check_delay(&wait, ts(0), ts(10)),
            Verdict::Wait {
                message: "waiting 90s (1m20s left)".into(),
                look_again: Duration::from_secs(60),
            }
        );
        match check_delay(&wait, ts(0), ts(50)) {
            Verdict::Wait { look_again, .. } => assert_eq!(look_again, Duration::from_secs(40)),
            other => panic!("expected a wait, got {other:?}"),
        }
        assert!(matches!(check_delay(&wait, ts(0), ts(90)), Verdict::Holds { .. }));
        assert!(matches!(
            check_delay(&delay("soon", None), ts(0), ts(1)),
            Verdict::Fails {
                reason: FailureReason::ConfigError,
                ..
            }
        ));
    }

    #[test]
    fn the_poke_interval_defaults_to_thirty_seconds() {
        assert_eq!(poke_interval(&WaitSpec::default()), DEFAULT_POKE);
        assert_eq!(poke_interval(&delay("1m", Some("0s"))), DEFAULT_POKE);
        assert_eq!(poke_interval(&delay("1m", Some("5s"))), Duration::from_secs(5));
    }

    #[test]
    fn a_wait_past_the_timeout_fails_with_what_it_waited_for() {
        let waiting = || Verdict::Wait {
            message: "waiting for pipeline/load".into(),
            look_again: Duration::from_secs(30),
        };
        assert_eq!(
            judge(Some("1m"), &running(0), waiting(), ts(45)),
            Verdict::Wait {
                message: "waiting for pipeline/load".into(),
                look_again: Duration::from_secs(15),
            }
        );
        assert_eq!(
            judge(Some("1m"), &running(0), waiting(), ts(60)),
            Verdict::Fails {
                reason: FailureReason::DeadlineExceeded,
                message: "timed out after 1m: still waiting for pipeline/load".into(),
            }
        );
        assert_eq!(judge(None, &running(0), waiting(), ts(1_000_000)), waiting());
        let holds = Verdict::Holds {
            message: None,
            outputs: BTreeMap::new(),
        };
        assert_eq!(judge(Some("1m"), &running(0), holds.clone(), ts(600)), holds);
    }

    #[test]
    fn a_verdict_is_written_into_the_attempt() {
        let mut attempt = running(0);
        let out = record(
            &mut attempt,
            Verdict::Wait {
                message: "waiting".into(),
                look_again: Duration::from_secs(7),
            },
            ts(5),
        );
        assert_eq!(out.look_again, Some(Duration::from_secs(7)));
        assert_eq!(attempt.phase, AttemptPhase::Running);
        assert_eq!(attempt.message.as_deref(), Some("waiting"));
        let out = record(
            &mut attempt,
            Verdict::Fails {
                reason: FailureReason::DeadlineExceeded,
                message: "late".into(),
            },
            ts(9),
        );
        assert_eq!(out, Evaluated::default());
        assert_eq!(attempt.phase, AttemptPhase::Failed);
        assert_eq!(attempt.reason, Some(FailureReason::DeadlineExceeded));
        assert_eq!(attempt.completion_time, Some(Time(ts(9))));
    }
}
