//! Approval gates, the reads: the Approvals of the TaskRun's namespace and the signing key,
//! handed to `engine::approval::decide`; its outcome becomes the waiting attempt's verdict
//! (approve: it succeeds; reject: it fails with `Rejected`), and the decision is recorded in
//! the TaskRun's `status.approval` with a `TaskApproved`/`TaskRejected` Event. The key
//! lives in a Secret of the operator's namespace that only the operator reads; the webhook
//! (`webhook::approval`) makes it on first use and signs with it.

use super::podless::Verdict;
use super::{Context, Error, Result};
use crate::api::{
    Approval, ApprovalGate, ApprovalRecord, Attempt, Decision, FailureReason, IgnoredApproval, TaskRun,
    TaskRunStatus, labels, reasons,
};
use crate::engine::approval::{self as decide, KEY_BYTES, Outcome, Waiting};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::events::EventType;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The Secret key holding the signing key.
pub const KEY_FIELD: &str = "hmac-key";
/// How often a waiting approval task is looked at without news (an Approval wakes it).
const IDLE_LOOK: Duration = Duration::from_secs(300);

/// Where the signing key lives, and the key once read.
#[derive(Debug)]
pub struct ApprovalKey {
    pub namespace: String,
    pub secret: String,
    key: OnceCell<Vec<u8>>,
}

impl ApprovalKey {
    pub fn new(namespace: impl Into<String>, secret: impl Into<String>) -> ApprovalKey {
        ApprovalKey {
            namespace: namespace.into(),
            secret: secret.into(),
            key: OnceCell::new(),
        }
    }

    /// The key, read from its Secret (made with a random key if there is none) on first use.
    pub async fn get(&self, client: &kube::Client) -> Result<&[u8]> {
        self.key
            .get_or_try_init(|| load_or_make(client, &self.namespace, &self.secret))
            .await
            .map(Vec::as_slice)
    }
}

impl Default for ApprovalKey {
    fn default() -> ApprovalKey {
        let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "weir-system".into());
        ApprovalKey::new(namespace, "weir-approval-key")
    }
}

async fn load_or_make(client: &kube::Client, namespace: &str, name: &str) -> Result<Vec<u8>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let read = |s: Secret| s.data.and_then(|mut d| d.remove(KEY_FIELD)).map(|b| b.0);
    if let Some(secret) = api.get_opt(name).await? {
        return read(secret).filter(|k| k.len() >= 16).ok_or(Error::MissingField(
            "the approval key Secret's hmac-key (16 bytes or more)",
        ));
    }
    let mut key = vec![0u8; KEY_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| Error::MissingField("random bytes for the approval key"))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                labels::MANAGED_BY.to_string(),
                labels::MANAGED_BY_VALUE.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY_FIELD.to_string(), ByteString(key.clone()))])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(namespace, secret = name, "made the approval signing key");
            Ok(key)
        }
        // Another replica (or the webhook) made it first: use theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            read(api.get(name).await?).ok_or(Error::MissingField("the approval key Secret's hmac-key"))
        }
        Err(e) => Err(e.into()),
    }
}

/// What one look at a waiting approval task found.
#[derive(Clone, Debug, PartialEq)]
pub struct Looked {
    pub verdict: Verdict,
    pub decision: Option<ApprovalRecord>,
    pub ignored: Vec<IgnoredApproval>,
}

/// Looks at the Approvals naming the task and decides the running attempt's verdict.
pub async fn look(
    ctx: &Context,
    ns: &str,
    tr: &TaskRun,
    gate: &ApprovalGate,
    attempt: &Attempt,
    now: jiff::Timestamp,
) -> Result<Looked> {
    let key = ctx.approval_key.get(&ctx.client).await?;
    let approvals = Api::<Approval>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items;
    let name = tr.name_any();
    let run = tr.labels().get(labels::PIPELINE_RUN).cloned().unwrap_or_default();
    let spent = spent(tr.status.as_ref());
    let waiting = Waiting {
        namespace: ns,
        task_run: &name,
        run: &run,
        task: &tr.spec.task_name,
        since: attempt.start_time.as_ref().map_or(now, |t| t.0),
        spent: &spent,
    };
    let looked = decide::decide(gate, &waiting, &approvals, key, now);
    let (verdict, decision) = match looked.outcome {
        Outcome::Waiting { message, look_again } => (
            Verdict::Wait {
                message,
                look_again: look_again.unwrap_or(IDLE_LOOK).min(IDLE_LOOK),
            },
            None,
        ),
        Outcome::Decided(record) => (verdict_of(&record), Some(record)),
    };
    Ok(Looked {
        verdict,
        decision,
        ignored: looked.ignored,
    })
}

/// The Approvals that decided earlier attempts: the decision in the status (a new attempt
/// is being looked at: the task was rerun), and those already listed as spent.
fn spent(status: Option<&TaskRunStatus>) -> Vec<&str> {
    let Some(status) = status else {
        return Vec::new();
    };
    let decided = status.approval.iter().map(|r| r.approval_name.as_str());
    let listed = status
        .ignored_approvals
        .iter()
        .filter(|i| i.reason == decide::SPENT)
        .map(|i| i.name.as_str());
    decided.chain(listed).filter(|n| !n.is_empty()).collect()
}

fn verdict_of(record: &ApprovalRecord) -> Verdict {
    let message = decide::describe(record);
    match record.decision {
        Decision::Approve => Verdict::Holds {
            message: Some(message),
            outputs: BTreeMap::new(),
        },
        Decision::Reject => Verdict::Fails {
            reason: FailureReason::Rejected,
            message,
        },
    }
}

/// Writes what a look found into the status: the decision (none while an attempt waits:
/// a rerun waits afresh, and an earlier round's decision no longer holds), and the
/// Approvals ignored (those of earlier looks kept, each listed once).
pub fn record(
    status: &mut TaskRunStatus,
    waiting: bool,
    decision: Option<ApprovalRecord>,
    ignored: Vec<IgnoredApproval>,
) {
    if waiting || decision.is_some() {
        status.approval = decision;
    }
    for i in ignored {
        if !status.ignored_approvals.iter().any(|old| old.name == i.name) {
            status.ignored_approvals.push(i);
        }
    }
}

/// One Event to publish: its type, reason and text.
pub type News = (EventType, &'static str, String);

/// The Events of a change: the decision taken, and Approvals newly ignored.
pub fn news(task: &str, old: &TaskRunStatus, new: &TaskRunStatus) -> Vec<News> {
    let mut out = Vec::new();
    if let Some(record) = new
        .approval
        .as_ref()
        .filter(|r| old.approval.as_ref() != Some(*r))
    {
        let reason = match record.decision {
            Decision::Approve => reasons::TASK_APPROVED,
            Decision::Reject => reasons::TASK_REJECTED,
        };
        let mut text = format!("task {task}: {}", decide::describe(record));
        if !record.groups.is_empty() {
            text.push_str(&format!(" (groups {})", record.groups.join(", ")));
        }
        if !record.approval_name.is_empty() {
            text.push_str(&format!(" (Approval {})", record.approval_name));
        }
        out.push((EventType::Normal, reason, text));
    }
    for i in &new.ignored_approvals {
        if !old.ignored_approvals.iter().any(|o| o.name == i.name) {
            out.push((
                EventType::Warning,
                reasons::APPROVAL_IGNORED,
                format!("task {task}: Approval {} decides nothing: {}", i.name, i.reason),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_of(decision: Decision, by: &str) -> ApprovalRecord {
        ApprovalRecord {
            decision,
            decided_by: by.into(),
            groups: vec!["ml-leads".into()],
            comment: Some("ship it".into()),
            decided_at: None,
            approval_name: "deploy-abc".into(),
        }
    }

    #[test]
    fn an_approval_succeeds_and_a_rejection_fails_with_rejected() {
        assert!(matches!(
            verdict_of(&record_of(Decision::Approve, "alice")),
            Verdict::Holds { message: Some(m), .. } if m == "approved by alice: ship it"
        ));
        assert_eq!(
            verdict_of(&record_of(Decision::Reject, "bob")),
            Verdict::Fails {
                reason: FailureReason::Rejected,
                message: "rejected by bob: ship it".into(),
            }
        );
    }

    #[test]
    fn a_decision_and_each_ignored_approval_are_told_once() {
        let old = TaskRunStatus::default();
        let mut new = old.clone();
        let forged = IgnoredApproval {
            name: "forged".into(),
            reason: "its signature does not check".into(),
        };
        record(&mut new, true, None, vec![forged.clone()]);
        record(
            &mut new,
            false,
            Some(record_of(Decision::Approve, "alice")),
            vec![forged],
        );
        assert_eq!(new.ignored_approvals.len(), 1);
        let told = news("deploy", &old, &new);
        assert_eq!(told.len(), 2, "{told:?}");
        assert_eq!(told[0].1, reasons::TASK_APPROVED);
        assert_eq!(
            told[0].2,
            "task deploy: approved by alice: ship it (groups ml-leads) (Approval deploy-abc)"
        );
        assert_eq!(told[1].1, reasons::APPROVAL_IGNORED);
        assert!(news("deploy", &new, &new).is_empty());
        // A rerun waits afresh: the earlier decision is gone, without news.
        let mut rerun = new.clone();
        record(&mut rerun, true, None, Vec::new());
        assert_eq!(rerun.approval, None);
        assert!(news("deploy", &new, &rerun).is_empty());
        // A look at a finished task changes nothing.
        let mut done = new.clone();
        record(&mut done, false, None, Vec::new());
        assert_eq!(done.approval, new.approval);
    }
}
