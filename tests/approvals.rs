//! Approval gates on the real control plane (`--authorization-mode=RBAC`): people are
//! other users by impersonation from the admin kubeconfig. The operator serves the
//! approvals' mutating webhook on loopback; the test's MutatingWebhookConfiguration selects
//! only its own namespace (by a label), so other tests running at once are not affected.
//!
//! What is shown: a user a Role allows to create approvals approves, and the TaskRun
//! records that user (not the name the user wrote into the object); a user without the
//! permission is refused by Kubernetes; an Approval that skipped the webhook decides
//! nothing and says so; a rejection fails the task with `Rejected`; a timed-out approval
//! takes its default; and no approval task ever has a Job.

mod common;

use common::cli::{text, weir_as};
use common::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir::api::{Approval, ApprovalSpec, Decision, FailureReason, RunPhase, TaskPhase, TaskRun, labels};
use weir_testenv::{TestNamespace, wait_for};

const LABEL: &str = "weir-approval-test";

/// The approvals' webhook configuration for `ns` alone; deleted on drop.
struct Configuration {
    name: String,
    kubeconfig: PathBuf,
}

impl Configuration {
    async fn create(ns: &TestNamespace) -> Configuration {
        label(ns, true);
        let name = format!("weir-approval-test-{}", ns.name());
        let config: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "approvals.mutate.weir.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "rules": [{"apiGroups": ["weir.dev"], "apiVersions": ["v1alpha1"],
                           "operations": ["CREATE", "UPDATE"], "resources": ["approvals"]}],
                "namespaceSelector": {"matchLabels": {LABEL: ns.name()}},
                // Port 1 until the operator says where it listens: nothing answers there.
                "clientConfig": {"url": "https://127.0.0.1:1/mutate-approval"},
            }],
        }))
        .unwrap();
        Api::<MutatingWebhookConfiguration>::all(ns.client())
            .create(&PostParams::default(), &config)
            .await
            .unwrap();
        Configuration {
            name,
            kubeconfig: ns.kubeconfig().to_path_buf(),
        }
    }

    async fn point_at(&self, ns: &TestNamespace, addr: std::net::SocketAddr) {
        let patch = serde_json::json!([{"op": "replace", "path": "/webhooks/0/clientConfig/url",
            "value": format!("https://{addr}/mutate-approval")}]);
        Api::<MutatingWebhookConfiguration>::all(ns.client())
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::<()>::Json(serde_json::from_value(patch).unwrap()),
            )
            .await
            .unwrap();
    }
}

impl Drop for Configuration {
    fn drop(&mut self) {
        let _ = std::process::Command::new(weir_testenv::kubectl_binary())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "delete",
                "mutatingwebhookconfiguration",
                &self.name,
                "--ignore-not-found",
            ])
            .output();
    }
}

/// Puts the namespace under the webhook (`on`) or out of it.
fn label(ns: &TestNamespace, on: bool) {
    let value = if on {
        format!("{LABEL}={}", ns.name())
    } else {
        format!("{LABEL}-")
    };
    ns.kubectl_ok(["label", "namespace", ns.name(), &value, "--overwrite"]);
}

/// An operator serving the approvals' webhook, its caBundle kept in `config`, the webhook
/// answering.
async fn start(ns: &TestNamespace, config: &Configuration) -> Operator {
    let op = Operator::start_with(
        ns,
        None,
        &[
            "--webhook-addr",
            "127.0.0.1:0",
            "--webhook-hosts",
            "127.0.0.1",
            "--approval-webhook-configuration",
            &config.name,
            "--lease-namespace",
            ns.name(),
        ],
    );
    let addr = op.webhook_addr().await;
    config.point_at(ns, addr).await;
    wait_for("the webhook to sign", Duration::from_secs(60), || async {
        signed_by_webhook(ns).then_some(())
    })
    .await;
    op
}

/// Whether an Approval created now would pass through the webhook (a server-side dry run).
fn signed_by_webhook(ns: &TestNamespace) -> bool {
    let yaml = approval_yaml("probe", "nothing", "");
    let (ok, out) = kubectl_apply(ns, &yaml, &["--dry-run=server", "-o", "json"]);
    ok && out.contains("\"signature\"")
}

fn approval_yaml(name: &str, task_run: &str, extra: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: Approval\nmetadata: {{name: {name}}}\nspec:\n  taskRun: {task_run}\n  decision: Approve\n{extra}"
    )
}

/// A kubeconfig acting as `user` (in `groups`) through impersonation.
fn kubeconfig_as(ns: &TestNamespace, user: &str, groups: &[&str]) -> PathBuf {
    let mut config = kube::config::Kubeconfig::read_from(ns.kubeconfig()).unwrap();
    for named in &mut config.auth_infos {
        let auth = named.auth_info.get_or_insert_with(Default::default);
        auth.impersonate = Some(user.into());
        auth.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    }
    let path = std::env::temp_dir().join(format!("weir-approvals-{}-{user}.kubeconfig", ns.name()));
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

async fn client_as(path: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Roles: `approver` may create approvals, `reader` only read runs (as `weir` must).
fn rbac(ns: &TestNamespace) {
    ns.apply(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: run-reader}
rules:
  - apiGroups: [weir.dev]
    resources: [pipelineruns, taskruns, pipelinerevisions]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: approver}
rules:
  - apiGroups: [weir.dev]
    resources: [approvals]
    verbs: [create, get, list, watch]
"#,
    );
    for (binding, role, user) in [
        ("alice-reads", "run-reader", "alice"),
        ("bob-reads", "run-reader", "bob"),
        ("alice-approves", "approver", "alice"),
    ] {
        ns.kubectl_ok([
            "create",
            "rolebinding",
            binding,
            &format!("--role={role}"),
            &format!("--user={user}"),
        ]);
    }
}

const PIPELINE: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: NAME}
spec:
  tasks:
    - {name: validate, image: busybox, command: [sh, -c, 'true']}
    - name: approve
      dependsOn: [validate]
      approval: {message: "deploy the new model?"APPROVAL}
    - {name: deploy, image: busybox, command: [sh, -c, 'true'], dependsOn: [approve]}
"#;

fn pipeline(name: &str, approval: &str) -> String {
    PIPELINE.replace("NAME", name).replace("APPROVAL", approval)
}

fn trigger(ns: &TestNamespace, pipeline: &str, run: &str) {
    ns.apply(&format!(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {{name: {run}}}\nspec: {{pipelineRef: {{name: {pipeline}}}}}\n"
    ));
}

/// The approval task of `run` once it waits, with its condition's message.
async fn waiting(ns: &TestNamespace, run: &str) -> (TaskRun, String) {
    wait_for("the approval task to wait", Duration::from_secs(90), || async {
        let tr = task_run_opt(ns, run, "approve").await?;
        let status = tr.status.clone()?;
        let c = weir::api::condition::find(&status.conditions, "Succeeded")?;
        (c.reason == "Waiting" && c.message.contains("waiting for approval"))
            .then(|| (tr.clone(), c.message.clone()))
    })
    .await
}

async fn no_job_for(ns: &TestNamespace, tr: &TaskRun) {
    let jobs: Api<Job> = ns.api();
    let selector = format!("{}={}", labels::TASK_RUN_UID, tr.metadata.uid.clone().unwrap());
    let found = jobs
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert!(
        found.items.is_empty(),
        "an approval task has a Job: {:?}",
        found.items
    );
}

#[tokio::test]
async fn approvals_record_who_kubernetes_says_decided() {
    let ns = weir_testenv::env().await.namespace("approvals").await;
    install_crds(&ns).await;
    rbac(&ns);
    let config = Configuration::create(&ns).await;
    let _op = start(&ns, &config).await;
    let alice = kubeconfig_as(&ns, "alice", &["ml-leads"]);
    let bob = kubeconfig_as(&ns, "bob", &[]);

    ns.apply(&pipeline("gated", ""));
    trigger(&ns, "gated", "r1");
    let (tr, message) = waiting(&ns, "r1").await;
    assert!(
        message.contains("waiting for approval: weir approve r1 approve (deploy the new model?)"),
        "{message}"
    );
    let tr_name = tr.metadata.name.clone().unwrap();

    // An Approval that skipped the webhook (the namespace out of its selector for a moment)
    // claims to be the CEO's: it decides nothing, and says why.
    label(&ns, false);
    let forged = approval_yaml("forged", &tr_name, "  decidedBy: the-ceo\n  signature: 00ff\n");
    wait_for(
        "an Approval past the webhook",
        Duration::from_secs(30),
        || async {
            let (ok, out) = kubectl_apply(&ns, &forged, &["--dry-run=server", "-o", "json"]);
            (ok && out.contains("the-ceo")).then_some(())
        },
    )
    .await;
    let (ok, out) = kubectl_apply(&ns, &forged, &[]);
    assert!(ok, "{out}");
    label(&ns, true);
    wait_for("the webhook to sign again", Duration::from_secs(30), || async {
        signed_by_webhook(&ns).then_some(())
    })
    .await;
    let ignored = wait_for(
        "the forged Approval to be ignored",
        Duration::from_secs(60),
        || async {
            let status = task_run(&ns, "r1", "approve").await.status?;
            status.ignored_approvals.into_iter().find(|i| i.name == "forged")
        },
    )
    .await;
    assert!(ignored.reason.contains("signature does not check"), "{ignored:?}");
    let events = events_with_reason(&ns, "ApprovalIgnored");
    assert!(
        events
            .iter()
            .any(|e| e.contains("Approval forged decides nothing")),
        "{events:?}"
    );

    // Bob may read the run but not decide: Kubernetes refuses him, the task still waits.
    let out = weir_as(&bob, &ns, &["approve", "r1", "approve"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "bob approved: {stderr}");
    assert!(
        stderr.contains("forbidden") && stderr.contains("\"create\"") && stderr.contains("approvals"),
        "{stderr}"
    );
    // Not an approval task; no such task started.
    let out = weir_as(&alice, &ns, &["approve", "r1", "validate"]);
    assert!(
        text(&out).1.contains("is not an approval task"),
        "{:?}",
        text(&out)
    );

    // Alice may, and whatever name she writes in, the record says alice.
    let claimed = Approval::new(
        "alice-says-yes",
        ApprovalSpec {
            task_run: tr_name.clone(),
            decision: Decision::Approve,
            comment: Some("metrics look right".into()),
            decided_by: Some("the-ceo".into()),
            groups: vec!["system:masters".into()],
            signature: None,
        },
    );
    let made = Api::<Approval>::namespaced(client_as(&alice).await, ns.name())
        .create(&PostParams::default(), &claimed)
        .await
        .unwrap();
    assert_eq!(made.spec.decided_by.as_deref(), Some("alice"));
    assert!(
        made.spec.groups.contains(&"ml-leads".to_string()),
        "{:?}",
        made.spec.groups
    );
    assert!(!made.spec.groups.contains(&"system:masters".to_string()));

    let run = wait_run_done(&ns, "r1", Duration::from_secs(120)).await;
    assert_eq!(phase(&run), RunPhase::Succeeded);
    let tr = task_run(&ns, "r1", "approve").await;
    let record = tr.status.clone().unwrap().approval.expect("status.approval");
    assert_eq!(record.decision, Decision::Approve);
    assert_eq!(record.decided_by, "alice");
    assert_eq!(record.comment.as_deref(), Some("metrics look right"));
    assert_eq!(record.approval_name, "alice-says-yes");
    let events = events_with_reason(&ns, "TaskApproved");
    assert!(
        events
            .iter()
            .any(|e| e.contains("approved by alice: metrics look right")),
        "{events:?}"
    );
    no_job_for(&ns, &tr).await;
    let shown = common::cli::stdout_ok(&common::cli::weir(&ns, &["get", "r1"]));
    assert!(shown.contains("approved by alice: metrics look right"), "{shown}");

    // A decision stays as made; a second one is refused by the CLI.
    let out = ns.kubectl([
        "patch",
        "approval",
        "alice-says-yes",
        "--type=merge",
        "-p",
        r#"{"spec":{"decision":"Reject"}}"#,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && stderr.contains("cannot be changed"),
        "{stderr}"
    );
    let out = weir_as(&alice, &ns, &["reject", "r1", "approve"]);
    assert!(
        text(&out).1.contains("already decided: approved by alice"),
        "{:?}",
        text(&out)
    );

    // `weir reject` as alice: the task fails with Rejected, once, and the run fails.
    trigger(&ns, "gated", "r2");
    waiting(&ns, "r2").await;
    let out = weir_as(
        &alice,
        &ns,
        &["reject", "r2", "approve", "--comment", "drift too high"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("rejected task approve of run r2 as alice"),
        "{stdout}"
    );
    let run = wait_run_done(&ns, "r2", Duration::from_secs(120)).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    let tr = task_run(&ns, "r2", "approve").await;
    let status = tr.status.clone().unwrap();
    assert_eq!(status.phase, Some(TaskPhase::Failed));
    assert_eq!(status.attempts.len(), 1, "a rejection is not retried");
    assert_eq!(status.attempts[0].reason, Some(FailureReason::Rejected));
    let c = weir::api::condition::find(&status.conditions, "Succeeded").unwrap();
    assert_eq!(c.reason, "Rejected", "{c:?}");
    assert_eq!(status.approval.unwrap().decided_by, "alice");
    assert_eq!(summary_phase(&run, "deploy"), Some(TaskPhase::UpstreamFailed));
    no_job_for(&ns, &tr).await;

    // A rerun waits afresh: the rejection no longer holds (nor counts), and this time
    // alice approves.
    common::cli::stdout_ok(&common::cli::weir(&ns, &["rerun", "r2"]));
    wait_for(
        "the rerun to wait for approval",
        Duration::from_secs(90),
        || async {
            let status = task_run(&ns, "r2", "approve").await.status?;
            let c = weir::api::condition::find(&status.conditions, "Succeeded")?;
            (status.approval.is_none() && c.message.starts_with("attempt 2: waiting for approval"))
                .then_some(())
        },
    )
    .await;
    let out = weir_as(&alice, &ns, &["approve", "r2", "approve"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let run = wait_run_done(&ns, "r2", Duration::from_secs(120)).await;
    assert_eq!(phase(&run), RunPhase::Succeeded);
    let status = task_run(&ns, "r2", "approve").await.status.unwrap();
    assert_eq!(status.approval.unwrap().decision, Decision::Approve);
    assert!(
        status
            .ignored_approvals
            .iter()
            .any(|i| i.name.starts_with("r2-approve-reject-")),
        "{:?}",
        status.ignored_approvals
    );

    // From the UI, as the person whose token it was given: the run page offers Approve,
    // and the decision is recorded as that ServiceAccount.
    let token = approver_token(&ns, "carol").await;
    let (base, _stop) = ui_server(&ns, weir::ui::AuthMode::Token).await;
    trigger(&ns, "gated", "r3");
    waiting(&ns, "r3").await;
    let page = curl(&token, &format!("{base}/ns/{}/runs/r3", ns.name()), None).await;
    assert!(
        page.contains(r#"class="button" id="action-approve-approve""#),
        "{page}"
    );
    let session: serde_json::Value =
        serde_json::from_str(&curl(&token, &format!("{base}/api/v1/session"), None).await).unwrap();
    let csrf = session["csrfToken"].as_str().unwrap().to_string();
    curl(
        &token,
        &format!("{base}/ns/{}/runs/r3/approve/approve", ns.name()),
        Some(&format!("csrf={csrf}&comment=from+the+UI")),
    )
    .await;
    let run = wait_run_done(&ns, "r3", Duration::from_secs(120)).await;
    assert_eq!(phase(&run), RunPhase::Succeeded);
    let record = task_run(&ns, "r3", "approve")
        .await
        .status
        .unwrap()
        .approval
        .unwrap();
    assert_eq!(
        record.decided_by,
        format!("system:serviceaccount:{}:carol", ns.name())
    );
    assert_eq!(record.comment.as_deref(), Some("from the UI"));
}

/// `curl` with a bearer token: the body (GET, or POST of a form when `form` is given). Off
/// the test's runtime thread, which serves the UI.
async fn curl(token: &str, url: &str, form: Option<&str>) -> String {
    let (token, url, form) = (token.to_string(), url.to_string(), form.map(str::to_string));
    tokio::task::spawn_blocking(move || curl_blocking(&token, &url, form.as_deref()))
        .await
        .unwrap()
}

fn curl_blocking(token: &str, url: &str, form: Option<&str>) -> String {
    let mut command = std::process::Command::new("curl");
    command.args([
        "-sS",
        "--max-time",
        "20",
        "-H",
        &format!("Authorization: Bearer {token}"),
    ]);
    if let Some(form) = form {
        command.args(["--data", form]);
    }
    let out = command.arg(url).output().unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A ServiceAccount allowed to read runs and create approvals, and its token.
async fn approver_token(ns: &TestNamespace, name: &str) -> String {
    ns.kubectl_ok(["create", "serviceaccount", name]);
    let subject = format!("--serviceaccount={}:{name}", ns.name());
    for role in ["run-reader", "approver"] {
        ns.kubectl_ok([
            "create",
            "rolebinding",
            &format!("{name}-{role}"),
            &format!("--role={role}"),
            &subject,
        ]);
    }
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = ns.api();
    let secret = wait_for("the ServiceAccount's token", Duration::from_secs(120), || async {
        sas.get(name).await.ok()?.secrets?.first()?.name.clone()
    })
    .await;
    let secret: k8s_openapi::api::core::v1::Secret = ns.api().get(&secret).await.unwrap();
    String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap()
}

#[tokio::test]
async fn a_timed_out_approval_takes_its_default_and_approvers_are_told_it_waits() {
    let ns = weir_testenv::env().await.namespace("approvals-timeout").await;
    install_crds(&ns).await;
    let config = Configuration::create(&ns).await;
    let _op = start(&ns, &config).await;
    let (hook, bodies) = receiver().await;
    let notify = format!(
        "  notifications:\n    - {{name: approvers, events: [ApprovalNeeded], webhook: {{url: \"http://{hook}/hook\"}}}}\n"
    );
    ns.apply(&format!(
        "{}{notify}",
        pipeline("approve-by-default", ", timeout: 5s, onTimeout: Approve")
    ));
    ns.apply(&pipeline("reject-by-default", ", timeout: 3s"));
    trigger(&ns, "approve-by-default", "approved");
    trigger(&ns, "reject-by-default", "rejected");

    let run = wait_run_done(&ns, "approved", Duration::from_secs(120)).await;
    assert_eq!(phase(&run), RunPhase::Succeeded);
    let tr = task_run(&ns, "approved", "approve").await;
    let record = tr.status.clone().unwrap().approval.expect("status.approval");
    assert_eq!(
        (record.decision, record.decided_by.as_str()),
        (Decision::Approve, "timeout")
    );
    no_job_for(&ns, &tr).await;
    let sent = wait_for(
        "the ApprovalNeeded notification",
        Duration::from_secs(30),
        || async {
            let bodies = bodies.lock().unwrap().clone();
            (!bodies.is_empty()).then_some(bodies)
        },
    )
    .await;
    assert_eq!(sent.len(), 1, "sent once: {sent:?}");
    assert!(
        sent[0].contains("ApprovalNeeded") && sent[0].contains("weir approve approved approve"),
        "{}",
        sent[0]
    );

    let run = wait_run_done(&ns, "rejected", Duration::from_secs(120)).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    let status = task_run(&ns, "rejected", "approve").await.status.unwrap();
    assert_eq!(status.attempts[0].reason, Some(FailureReason::Rejected));
    let record = status.approval.expect("status.approval");
    assert_eq!(
        (record.decision, record.decided_by.as_str()),
        (Decision::Reject, "timeout")
    );
    let events = events_with_reason(&ns, "TaskRejected");
    assert!(
        events
            .iter()
            .any(|e| e.contains("rejected by the approval's timeout")),
        "{events:?}"
    );
}

/// A plain HTTP receiver on loopback: each request's body, answered 200.
async fn receiver() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + length {
                        kept.lock().unwrap().push(text[end + 4..].to_string());
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                }
            });
        }
    });
    (addr, bodies)
}
