//! Approval gates, the pure part: the signature the admission webhook puts on an Approval
//! (HMAC-SHA256 over everything that decides: namespace, name, TaskRun, decision, comment,
//! user, groups), and what the Approvals naming a waiting task decide. No client, no clock.

use crate::api::approval::WAITING_MESSAGE;
use crate::api::{Approval, ApprovalGate, ApprovalRecord, ApprovalSpec, Decision, IgnoredApproval};
use crate::engine::duration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use ring::hmac;
use std::time::Duration;

/// Why an Approval that decided an earlier attempt (before a rerun) decides nothing now.
pub const SPENT: &str = "it decided an earlier attempt of the task already";

/// `decidedBy` of a decision taken because `approval.timeout` passed.
pub const TIMEOUT_DECIDER: &str = "timeout";
/// Bytes of a new signing key.
pub const KEY_BYTES: usize = 32;

/// The bytes signed for an Approval: a JSON array, so no field can bleed into another.
fn payload(namespace: &str, name: &str, spec: &ApprovalSpec) -> Vec<u8> {
    serde_json::json!([
        "weir.dev/approval/v1",
        namespace,
        name,
        spec.task_run,
        spec.decision.as_str(),
        spec.comment.as_deref().unwrap_or(""),
        spec.decided_by.as_deref().unwrap_or(""),
        spec.groups,
    ])
    .to_string()
    .into_bytes()
}

/// The signature of an Approval as it stands (its `decidedBy` and `groups` already set),
/// in hex.
pub fn sign(key: &[u8], namespace: &str, name: &str, spec: &ApprovalSpec) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, &payload(namespace, name, spec));
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the Approval carries a signature made with `key` over what it says now
/// (compared in constant time).
pub fn verify(key: &[u8], namespace: &str, name: &str, spec: &ApprovalSpec) -> bool {
    let Some(tag) = spec.signature.as_deref().and_then(from_hex) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&key, &payload(namespace, name, spec), &tag).is_ok()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What the Approvals naming a waiting task decide.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// No decision yet: `message` says how to give one; look again after `look_again` (when
    /// the approval's timeout passes), or only when an Approval changes.
    Waiting {
        message: String,
        look_again: Option<Duration>,
    },
    /// Decided, by a person or by the timeout.
    Decided(ApprovalRecord),
}

/// The outcome, and the Approvals that decided nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Looked {
    pub outcome: Outcome,
    pub ignored: Vec<IgnoredApproval>,
}

/// The task being decided on: the TaskRun, and how a person names it to `weir approve`.
#[derive(Clone, Debug)]
pub struct Waiting<'a> {
    pub namespace: &'a str,
    pub task_run: &'a str,
    pub run: &'a str,
    pub task: &'a str,
    /// When the attempt started waiting.
    pub since: jiff::Timestamp,
    /// Approvals that decided earlier attempts: they count no more.
    pub spent: &'a [&'a str],
}

/// Decides from `approvals` (any in the namespace; those naming other TaskRuns are passed
/// over): the earliest Approval with a valid signature made since the task started waiting
/// wins; with none, the gate's `timeout` may decide by `onTimeout`.
pub fn decide(
    gate: &ApprovalGate,
    task: &Waiting<'_>,
    approvals: &[Approval],
    key: &[u8],
    now: jiff::Timestamp,
) -> Looked {
    let mut ignored = Vec::new();
    let mut valid: Vec<(&Approval, jiff::Timestamp)> = Vec::new();
    // Creation times have whole seconds: an Approval of the second the wait began counts.
    let since = task.since.as_second();
    for approval in approvals.iter().filter(|a| a.spec.task_run == task.task_run) {
        let name = approval.metadata.name.clone().unwrap_or_default();
        let created = approval.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
        let why = if task.spent.contains(&name.as_str()) {
            Some(SPENT.to_string())
        } else if !verify(key, task.namespace, &name, &approval.spec) {
            Some(
                "its signature does not check: it was not admitted through Weir's webhook, or \
                 was changed since, so who decided is unknown"
                    .to_string(),
            )
        } else if created.as_second() < since {
            Some(format!(
                "made at {created}, before this attempt started waiting at {}",
                task.since
            ))
        } else {
            None
        };
        match why {
            Some(reason) => ignored.push(IgnoredApproval { name, reason }),
            None => valid.push((approval, created)),
        }
    }
    valid.sort_by(|a, b| {
        a.1.cmp(&b.1)
            .then_with(|| a.0.metadata.name.cmp(&b.0.metadata.name))
    });
    let outcome = match valid.first() {
        Some((approval, created)) => Outcome::Decided(ApprovalRecord {
            decision: approval.spec.decision,
            decided_by: approval.spec.decided_by.clone().unwrap_or_default(),
            groups: approval.spec.groups.clone(),
            comment: approval.spec.comment.clone(),
            decided_at: Some(Time(*created)),
            approval_name: approval.metadata.name.clone().unwrap_or_default(),
        }),
        None => on_time(gate, task, now),
    };
    Looked { outcome, ignored }
}

/// With no decision: still waiting, or the timeout's default.
fn on_time(gate: &ApprovalGate, task: &Waiting<'_>, now: jiff::Timestamp) -> Outcome {
    let mut message = format!("{WAITING_MESSAGE}: weir approve {} {}", task.run, task.task);
    if let Some(asked) = gate.message.as_deref().filter(|m| !m.is_empty()) {
        message = format!("{message} ({asked})");
    }
    let Some((text, limit)) = gate
        .timeout
        .as_deref()
        .and_then(|t| duration::parse(t).ok().map(|d| (t, d)))
    else {
        return Outcome::Waiting {
            message,
            look_again: None,
        };
    };
    let waited = Duration::try_from(now.duration_since(task.since)).unwrap_or(Duration::ZERO);
    match limit.checked_sub(waited) {
        Some(left) if !left.is_zero() => Outcome::Waiting {
            message,
            look_again: Some(left),
        },
        _ => {
            let decision = gate.on_timeout.unwrap_or(Decision::Reject);
            let at = task.since.checked_add(limit).unwrap_or(now);
            Outcome::Decided(ApprovalRecord {
                decision,
                decided_by: TIMEOUT_DECIDER.into(),
                groups: Vec::new(),
                comment: Some(format!(
                    "no decision within {text}: {} by default (approval.onTimeout)",
                    decision.past()
                )),
                decided_at: Some(Time(at)),
                approval_name: String::new(),
            })
        }
    }
}

/// One line about a decision: `approved by alice: ship it`.
pub fn describe(record: &ApprovalRecord) -> String {
    let by = match record.decided_by.as_str() {
        TIMEOUT_DECIDER => "the approval's timeout".to_string(),
        who => who.to_string(),
    };
    match record.comment.as_deref().filter(|c| !c.is_empty()) {
        Some(comment) => format!("{} by {by}: {comment}", record.decision.past()),
        None => format!("{} by {by}", record.decision.past()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn approval(name: &str, created: i64, decision: Decision, by: &str) -> Approval {
        let mut spec = ApprovalSpec {
            task_run: "train-1-deploy".into(),
            decision,
            comment: Some("looks good".into()),
            decided_by: Some(by.into()),
            groups: vec!["ml".into()],
            signature: None,
        };
        spec.signature = Some(sign(KEY, "ml", name, &spec));
        Approval {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec,
        }
    }

    fn waiting() -> Waiting<'static> {
        Waiting {
            namespace: "ml",
            task_run: "train-1-deploy",
            run: "train-1",
            task: "deploy",
            since: ts(10),
            spent: &["spent"],
        }
    }

    #[test]
    fn a_signature_covers_every_field_that_decides() {
        let a = approval("a1", 20, Decision::Approve, "alice");
        assert!(verify(KEY, "ml", "a1", &a.spec));
        assert!(!verify(b"another key", "ml", "a1", &a.spec));
        assert!(!verify(KEY, "other", "a1", &a.spec));
        assert!(!verify(KEY, "ml", "a2", &a.spec));
        let changes: [fn(&mut ApprovalSpec); 6] = [
            |s| s.decided_by = Some("mallory".into()),
            |s| s.decision = Decision::Reject,
            |s| s.comment = None,
            |s| s.groups.push("system:masters".into()),
            |s| s.task_run = "train-2-deploy".into(),
            |s| s.signature = Some("zz".into()),
        ];
        for change in changes {
            let mut spec = a.spec.clone();
            change(&mut spec);
            assert!(!verify(KEY, "ml", "a1", &spec), "{spec:?}");
        }
        let mut unsigned = a.spec.clone();
        unsigned.signature = None;
        assert!(!verify(KEY, "ml", "a1", &unsigned));
    }

    #[test]
    fn the_earliest_valid_approval_decides_and_the_others_are_listed_as_ignored() {
        let mut forged = approval("forged", 15, Decision::Approve, "alice");
        forged.spec.decided_by = Some("ceo".into());
        let mut other_task = approval("other", 12, Decision::Approve, "bob");
        other_task.spec.task_run = "train-1-train".into();
        let approvals = vec![
            approval("late", 40, Decision::Approve, "carol"),
            approval("stale", 5, Decision::Approve, "dave"),
            forged,
            other_task,
            approval("first", 30, Decision::Reject, "alice"),
            approval("spent", 10, Decision::Approve, "erin"),
        ];
        let looked = decide(&ApprovalGate::default(), &waiting(), &approvals, KEY, ts(50));
        let Outcome::Decided(record) = looked.outcome.clone() else {
            panic!("{looked:?}")
        };
        assert_eq!(record.decision, Decision::Reject);
        assert_eq!(record.decided_by, "alice");
        assert_eq!(record.groups, ["ml"]);
        assert_eq!(record.approval_name, "first");
        assert_eq!(record.decided_at, Some(Time(ts(30))));
        let ignored: Vec<&str> = looked.ignored.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(ignored, ["stale", "forged", "spent"]);
        assert_eq!(looked.ignored[2].reason, SPENT);
        assert!(
            looked.ignored[0].reason.contains("before this attempt"),
            "{looked:?}"
        );
        assert!(
            looked.ignored[1].reason.contains("signature does not check"),
            "{looked:?}"
        );
    }

    #[test]
    fn without_a_decision_it_waits_until_the_timeout_takes_the_default() {
        let gate = ApprovalGate {
            timeout: Some("1m".into()),
            on_timeout: Some(Decision::Approve),
            message: Some("deploy?".into()),
        };
        assert_eq!(
            decide(&gate, &waiting(), &[], KEY, ts(40)).outcome,
            Outcome::Waiting {
                message: "waiting for approval: weir approve train-1 deploy (deploy?)".into(),
                look_again: Some(Duration::from_secs(30)),
            }
        );
        let Outcome::Decided(record) = decide(&gate, &waiting(), &[], KEY, ts(75)).outcome else {
            panic!("expected the timeout's decision")
        };
        assert_eq!(record.decision, Decision::Approve);
        assert_eq!(record.decided_by, TIMEOUT_DECIDER);
        assert_eq!(record.decided_at, Some(Time(ts(70))));
        assert_eq!(
            describe(&record),
            "approved by the approval's timeout: no decision within 1m: approved by default (approval.onTimeout)"
        );
        // Reject is the default outcome; no timeout waits for ever.
        let reject = ApprovalGate {
            timeout: Some("1m".into()),
            ..Default::default()
        };
        assert!(matches!(
            decide(&reject, &waiting(), &[], KEY, ts(75)).outcome,
            Outcome::Decided(ApprovalRecord {
                decision: Decision::Reject,
                ..
            })
        ));
        assert_eq!(
            decide(&ApprovalGate::default(), &waiting(), &[], KEY, ts(1_000_000)).outcome,
            Outcome::Waiting {
                message: "waiting for approval: weir approve train-1 deploy".into(),
                look_again: None,
            }
        );
    }
}
