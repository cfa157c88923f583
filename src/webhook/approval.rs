//! The mutating half of the webhook: who made an Approval. On create it writes the
//! requester's user name and groups, as the API server authenticated them
//! (`request.userInfo`), into `spec.decidedBy` and `spec.groups`, replacing whatever the
//! requester wrote there, and signs the decision with the operator's key
//! (`engine::approval::sign`); the operator counts only Approvals whose signature checks.
//! An update that changes the spec is refused: a decision, once made, stays as made.
//! The configuration calls it with `failurePolicy: Fail`, so no Approval is admitted
//! unsigned while the operator is down (see docs/approvals.md).

use crate::api::{Approval, ApprovalSpec};
use crate::engine::approval::sign;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

/// What the webhook answers about one Approval, before the key is applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Admit with `spec` replaced by this (decider and signature set).
    Sign(Box<ApprovalSpec>),
    /// Admit unchanged (an update that leaves the spec alone).
    Allow,
    /// Refuse, with this message.
    Deny(String),
}

/// Decides about an Approval being created or updated by `user` (with `groups`).
pub fn answer(
    key: &[u8],
    namespace: &str,
    operation: &Operation,
    user: &str,
    groups: &[String],
    approval: &Approval,
    old: Option<&Approval>,
) -> Answer {
    match (operation, old) {
        (Operation::Update, Some(old)) if old.spec != approval.spec => {
            return Answer::Deny(
                "an Approval cannot be changed once made (its decision, comment and who decided \
                 are fixed); if the task still waits, create a new one (weir approve/reject)"
                    .into(),
            );
        }
        (Operation::Create, _) => {}
        _ => return Answer::Allow,
    }
    let Some(name) = approval.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
        return Answer::Deny(
            "an Approval needs a metadata.name (generateName is not supported: the signature \
             binds the name, and Kubernetes 1.20 generates it only after admission)"
                .into(),
        );
    };
    if user.is_empty() {
        return Answer::Deny("the request has no authenticated user to record as the decider".into());
    }
    let mut spec = approval.spec.clone();
    spec.decided_by = Some(user.to_string());
    spec.groups = groups.to_vec();
    spec.signature = None;
    spec.signature = Some(sign(key, namespace, name, &spec));
    Answer::Sign(Box::new(spec))
}

/// The admission response for an Approval: a JSON patch replacing its spec, or a denial.
pub fn respond(key: &[u8], request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    let read = |o: Option<&DynamicObject>| -> Option<Approval> {
        serde_json::from_value(serde_json::to_value(o?).ok()?).ok()
    };
    let Some(approval) = read(request.object.as_ref()) else {
        return allowed.deny("cannot read the Approval");
    };
    let old = read(request.old_object.as_ref());
    let namespace = request.namespace.clone().unwrap_or_default();
    let user = request.user_info.username.clone().unwrap_or_default();
    let groups = request.user_info.groups.clone().unwrap_or_default();
    match answer(
        key,
        &namespace,
        &request.operation,
        &user,
        &groups,
        &approval,
        old.as_ref(),
    ) {
        Answer::Allow => allowed,
        Answer::Deny(message) => allowed.deny(message),
        Answer::Sign(spec) => {
            let patch = serde_json::json!([{"op": "replace", "path": "/spec", "value": spec}]);
            match serde_json::from_value(patch).map(|p| allowed.clone().with_patch(p)) {
                Ok(Ok(response)) => {
                    tracing::info!(%namespace, user, task_run = spec.task_run, decision = spec.decision.as_str(), "approval signed");
                    response
                }
                _ => allowed.deny("cannot write the Approval's patch"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Decision;
    use crate::engine::approval::verify;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn approval(name: Option<&str>, by: Option<&str>) -> Approval {
        let mut a = Approval::new(
            "x",
            ApprovalSpec {
                task_run: "run-1-deploy".into(),
                decision: Decision::Approve,
                comment: Some("ok".into()),
                decided_by: by.map(str::to_string),
                ..Default::default()
            },
        );
        a.metadata.name = name.map(str::to_string);
        a
    }

    #[test]
    fn the_decider_is_the_authenticated_user_not_what_the_object_says() {
        let groups = vec!["ml-leads".to_string(), "system:authenticated".to_string()];
        let claimed = approval(Some("a1"), Some("the-ceo"));
        let Answer::Sign(spec) = answer(KEY, "ml", &Operation::Create, "alice", &groups, &claimed, None)
        else {
            panic!("expected a signature")
        };
        assert_eq!(spec.decided_by.as_deref(), Some("alice"));
        assert_eq!(spec.groups, groups);
        assert!(verify(KEY, "ml", "a1", &spec));
        assert!(!verify(KEY, "ml", "a2", &spec), "the name is signed");
    }

    #[test]
    fn changes_and_unnamed_or_anonymous_approvals_are_refused() {
        let a = approval(Some("a1"), None);
        let mut changed = a.clone();
        changed.spec.decision = Decision::Reject;
        assert!(matches!(
            answer(KEY, "ml", &Operation::Update, "alice", &[], &changed, Some(&a)),
            Answer::Deny(m) if m.contains("cannot be changed")
        ));
        let mut labelled = a.clone();
        labelled.metadata.labels = Some([("team".to_string(), "ml".to_string())].into());
        assert_eq!(
            answer(KEY, "ml", &Operation::Update, "alice", &[], &labelled, Some(&a)),
            Answer::Allow
        );
        assert!(matches!(
            answer(KEY, "ml", &Operation::Create, "alice", &[], &approval(None, None), None),
            Answer::Deny(m) if m.contains("metadata.name")
        ));
        assert!(matches!(
            answer(KEY, "ml", &Operation::Create, "", &[], &a, None),
            Answer::Deny(m) if m.contains("authenticated user")
        ));
    }
}
