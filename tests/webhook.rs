//! The validating admission webhook on the real control plane: the API server calls the
//! operator over TLS (the certificate the operator issued itself, trusted through the
//! `caBundle` the operator keeps current) whenever a Pipeline or PipelineRun of the test's
//! namespace is created or updated, and `kubectl apply` shows the answer.
//!
//! Here the operator is a process of the test, so the webhook configuration calls it by
//! URL on loopback; `tests/helm.rs` installs the chart and goes through its Service and
//! both replicas. Each test's configuration selects only its own namespace (by a label),
//! so other tests running at once are never affected.

mod common;

use common::*;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::time::Duration;
use weir::api::{Pipeline, PipelineRun};
use weir_testenv::{TestNamespace, wait_for};

const SECRET: &str = "weir-webhook-tls";

/// A webhook configuration for `ns` alone, calling `url`; deleted on drop.
struct Configuration {
    name: String,
    api: Api<ValidatingWebhookConfiguration>,
    kubeconfig: std::path::PathBuf,
}

impl Configuration {
    async fn create(ns: &TestNamespace, failure_policy: &str) -> Configuration {
        ns.kubectl_ok([
            "label",
            "namespace",
            ns.name(),
            &format!("weir-webhook-test={}", ns.name()),
        ]);
        let name = format!("weir-test-{}", ns.name());
        let webhook = |resource: &str| {
            serde_json::json!({
                "name": format!("{resource}.validate.weir.dev"),
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": failure_policy,
                "timeoutSeconds": 5,
                "rules": [{"apiGroups": ["weir.dev"], "apiVersions": ["v1alpha1"],
                           "operations": ["CREATE", "UPDATE"], "resources": [resource]}],
                "namespaceSelector": {"matchLabels": {"weir-webhook-test": ns.name()}},
                // Port 1 until the operator says where it listens: nothing answers there.
                "clientConfig": {"url": "https://127.0.0.1:1/validate"},
            })
        };
        let config: ValidatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [webhook("pipelines"), webhook("pipelineruns")],
        }))
        .unwrap();
        let api: Api<ValidatingWebhookConfiguration> = Api::all(ns.client());
        api.create(&PostParams::default(), &config).await.unwrap();
        Configuration {
            name,
            api,
            kubeconfig: ns.kubeconfig().to_path_buf(),
        }
    }

    async fn point_at(&self, addr: std::net::SocketAddr) {
        let url = format!("https://{addr}/validate");
        let patch = |i: usize| serde_json::json!({"op": "replace", "path": format!("/webhooks/{i}/clientConfig/url"), "value": url});
        let patch = serde_json::from_value(serde_json::json!([patch(0), patch(1)])).unwrap();
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .unwrap();
    }

    async fn set_failure_policy(&self, policy: &str) {
        let ops: Vec<_> = (0..2)
            .map(|i| serde_json::json!({"op": "replace", "path": format!("/webhooks/{i}/failurePolicy"), "value": policy}))
            .collect();
        let patch = serde_json::from_value(serde_json::Value::Array(ops)).unwrap();
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .unwrap();
    }

    async fn ca_bundle(&self) -> Option<Vec<u8>> {
        let config = self.api.get(&self.name).await.ok()?;
        let bundles: Vec<Vec<u8>> = config
            .webhooks?
            .into_iter()
            .filter_map(|w| w.client_config.ca_bundle.map(|b| b.0))
            .collect();
        (bundles.len() == 2 && bundles[0] == bundles[1]).then(|| bundles[0].clone())
    }
}

impl Drop for Configuration {
    fn drop(&mut self) {
        // Drop cannot await, and the client's connection lives on the test's runtime:
        // kubectl, synchronously.
        let _ = std::process::Command::new(weir_testenv::kubectl_binary())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "delete",
                "validatingwebhookconfiguration",
                &self.name,
                "--ignore-not-found",
            ])
            .output();
    }
}

/// An operator serving the webhook on a free loopback port, its certificate in `SECRET` of
/// the test's namespace.
fn operator_with_webhook(ns: &TestNamespace, config: &Configuration, extra: &[&str]) -> Operator {
    let mut args = vec![
        "--webhook-addr",
        "127.0.0.1:0",
        "--webhook-hosts",
        "127.0.0.1",
        "--webhook-secret",
        SECRET,
        "--webhook-configuration",
        &config.name,
        "--lease-namespace",
        ns.name(),
    ];
    args.extend_from_slice(extra);
    Operator::start_with(ns, None, &args)
}

/// The operator up, its certificate trusted: a Pipeline of ours is refused by the webhook.
async fn start(ns: &TestNamespace, config: &Configuration, extra: &[&str]) -> Operator {
    let op = operator_with_webhook(ns, config, extra);
    config.point_at(op.webhook_addr().await).await;
    wait_for("the caBundle", Duration::from_secs(30), || config.ca_bundle()).await;
    wait_for("the webhook to answer", Duration::from_secs(30), || async {
        let out = apply(ns, &fixture("cycle"));
        (!out.0 && out.1.contains("denied the request")).then_some(())
    })
    .await;
    op
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("tests/fixtures/invalid/{name}.yaml"))).unwrap()
}

/// `kubectl apply -f -`: whether it succeeded, and its output.
fn apply(ns: &TestNamespace, yaml: &str) -> (bool, String) {
    kubectl_apply(ns, yaml, &[])
}

fn refused(ns: &TestNamespace, yaml: &str, expected: &[&str]) -> String {
    let (ok, out) = apply(ns, yaml);
    assert!(!ok, "applied, but should have been refused:\n{yaml}\n{out}");
    assert!(out.contains("denied the request"), "{out}");
    for e in expected {
        assert!(out.contains(e), "expected {e:?} in:\n{out}");
    }
    out
}

const RUN_OF: &str = "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: NAME}\nspec:\n";

fn run_yaml(name: &str, spec: &str) -> String {
    format!("{}{spec}", RUN_OF.replace("NAME", name))
}

const PARAMS_PIPELINE: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: regional}
spec:
  params:
    - {name: region}
    - {name: parts, type: List, default: []}
  tasks:
    - {name: work, image: busybox, command: [sh, -c, 'sleep 30']}
"#;

#[tokio::test]
async fn kubectl_apply_is_refused_with_every_problem_and_its_path() {
    let ns = weir_testenv::env().await.namespace("webhook").await;
    install_crds(&ns).await;
    let config = Configuration::create(&ns, "Fail").await;
    let op = start(&ns, &config, &[]).await;

    // Each kind of invalid Pipeline, with the messages `weir validate` gives.
    refused(
        &ns,
        &fixture("cycle"),
        &["Pipeline \"cycle\" is invalid", "cycle"],
    );
    refused(
        &ns,
        &fixture("unknown-dependency"),
        &[
            "spec.tasks[1].dependsOn: task \"load\": unknown task \"tranform\"",
            "transform",
        ],
    );
    refused(&ns, &fixture("bad-cron"), &["spec.schedule.cron: "]);
    refused(
        &ns,
        &fixture("bad-template"),
        &["spec.tasks[0].command", "regoin"],
    );
    let many = refused(&ns, &fixture("missing-image"), &["image"]);
    assert!(many.contains("problem"), "{many}");
    let pipelines: Api<Pipeline> = ns.api();
    for name in ["cycle", "unknown-dependency", "bad-cron", "bad-template"] {
        assert!(
            pipelines.get_opt(name).await.unwrap().is_none(),
            "{name} was stored"
        );
    }

    // `--dry-run=server` is answered the same way and stores nothing; a valid one passes.
    let (ok, out) = kubectl_apply(&ns, &fixture("cycle"), &["--dry-run=server"]);
    assert!(
        !ok && out.contains("denied the request") && out.contains("cycle"),
        "{out}"
    );
    let (ok, out) = kubectl_apply(&ns, PARAMS_PIPELINE, &["--dry-run=server"]);
    assert!(ok, "{out}");
    assert!(pipelines.get_opt("regional").await.unwrap().is_none());

    // Straight to the webhook: a body past the limit, or one that is not a review, is
    // refused before anything is decoded.
    let ca = config.ca_bundle().await.unwrap();
    let dir = std::env::temp_dir().join(format!("weir-webhook-{}", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.crt"), ca).unwrap();
    std::fs::write(
        dir.join("big.json"),
        vec![b' '; weir::webhook::MAX_REVIEW_BYTES + 1],
    )
    .unwrap();
    std::fs::write(dir.join("junk.json"), "{\"not\": \"a review\"}").unwrap();
    for (body, status) in [("big.json", "413"), ("junk.json", "400")] {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "20",
                "--cacert",
            ])
            .arg(dir.join("ca.crt"))
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", dir.join(body).display()))
            .arg(format!("https://{}/validate", op.webhook_addr().await))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            status,
            "{body}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    // Valid objects pass; an update that breaks one is refused and changes nothing.
    let (ok, out) = apply(&ns, PARAMS_PIPELINE);
    assert!(ok, "{out}");
    refused(
        &ns,
        &PARAMS_PIPELINE.replace("sleep 30", "echo {{ params.regoin }}"),
        &["spec.tasks[0].command", "regoin"],
    );
    let stored = pipelines.get("regional").await.unwrap();
    assert_eq!(stored.metadata.generation, Some(1));

    // Runs are checked against their Pipeline: params known and of the right type.
    refused(
        &ns,
        &run_yaml(
            "bad-params",
            "  pipelineRef: {name: regional}\n  params: {regoin: eu}\n",
        ),
        &[
            "PipelineRun \"bad-params\" is invalid",
            "spec.params: unknown parameter \"regoin\"",
            "spec.params: parameter \"region\" is required",
        ],
    );
    refused(
        &ns,
        &run_yaml(
            "both",
            "  pipelineRef: {name: regional}\n  pipelineSpec: {tasks: [{name: a, image: busybox}]}\n",
        ),
        &["spec: set either pipelineRef or pipelineSpec, not both"],
    );
    refused(
        &ns,
        &run_yaml(
            "inline",
            "  pipelineSpec: {tasks: [{name: a, image: busybox, dependsOn: [b]}]}\n",
        ),
        &["spec.pipelineSpec.tasks[0].dependsOn"],
    );
    // A run whose Pipeline does not exist yet is allowed (GitOps may apply it first).
    let (ok, out) = apply(
        &ns,
        &run_yaml("early", "  pipelineRef: {name: not-yet}\n  params: {x: y}\n"),
    );
    assert!(ok, "{out}");

    // A started run takes cancel requests, nothing else.
    let (ok, out) = apply(
        &ns,
        &run_yaml(
            "good",
            "  pipelineRef: {name: regional}\n  params: {region: eu}\n",
        ),
    );
    assert!(ok, "{out}");
    let runs: Api<PipelineRun> = ns.api();
    wait_for("the run to start", Duration::from_secs(60), || async {
        let run = runs.get("good").await.ok()?;
        run.status?.pipeline_revision.map(|_| ())
    })
    .await;
    let out = ns.kubectl([
        "patch",
        "pipelinerun",
        "good",
        "--type=merge",
        "-p",
        r#"{"spec":{"params":{"region":"us"}}}"#,
    ]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "params of a started run changed");
    assert!(
        text.contains("spec.params: cannot change once the run has started"),
        "{text}"
    );
    let out = ns.kubectl(["patch", "pipelinerun", "good", "--type=merge", "-p", r#"{"spec":{"rerun":{"request":"1","tasks":["wrok"],"downstream":false,"failedInstancesOnly":false}}}"#]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && text.contains("spec.rerun.tasks") && text.contains("wrok"),
        "{text}"
    );
    ns.kubectl_ok([
        "patch",
        "pipelinerun",
        "good",
        "--type=merge",
        "-p",
        r#"{"spec":{"cancelled":true}}"#,
    ]);
    let run = wait_run_done(&ns, "good", Duration::from_secs(60)).await;
    assert_eq!(phase(&run), weir::api::RunPhase::Cancelled);
}

#[tokio::test]
async fn with_the_operator_down_the_failure_policy_decides() {
    let ns = weir_testenv::env().await.namespace("webhook-down").await;
    install_crds(&ns).await;
    let config = Configuration::create(&ns, "Ignore").await;
    let mut op = start(&ns, &config, &[]).await;
    op.kill();

    // Ignore (the chart's default): admitted unchecked; the controller still refuses it.
    let (ok, out) = apply(&ns, &fixture("cycle"));
    assert!(
        ok,
        "with failurePolicy Ignore and no webhook, apply must pass: {out}"
    );
    // Fail: nothing is admitted while the webhook does not answer.
    config.set_failure_policy("Fail").await;
    let (ok, out) = wait_for("failurePolicy Fail to apply", Duration::from_secs(30), || async {
        let (ok, out) = apply(&ns, PARAMS_PIPELINE);
        (!ok).then_some((ok, out))
    })
    .await;
    assert!(!ok && out.contains("failed calling webhook"), "{out}");

    // Back up: the invalid Pipeline admitted meanwhile is marked Ready=False by the
    // controller, as without a webhook.
    op.restart();
    let pipelines: Api<Pipeline> = ns.api();
    wait_for(
        "the cycle Pipeline to be marked not ready",
        Duration::from_secs(60),
        || async {
            let p = pipelines.get("cycle").await.ok()?;
            let ready = p.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (ready.status == "False").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn certificate_rotation_keeps_admissions_working() {
    let ns = weir_testenv::env().await.namespace("webhook-rotate").await;
    install_crds(&ns).await;
    let config = Configuration::create(&ns, "Fail").await;
    // A serving certificate valid 9 s is renewed every 6 s; the Secret is read every second.
    let op = start(
        &ns,
        &config,
        &["--webhook-cert-validity", "9s", "--webhook-cert-check", "1s"],
    )
    .await;
    let secrets: Api<Secret> = ns.api();
    let cert_of = |s: Secret| s.data.unwrap_or_default().get("tls.crt").map(|b| b.0.clone());
    let first = cert_of(secrets.get(SECRET).await.unwrap()).expect("tls.crt");
    let ca = config.ca_bundle().await.unwrap();
    let mut seen = vec![first];
    for round in 0..2 {
        let next = wait_for("a renewed certificate", Duration::from_secs(30), || async {
            let cert = cert_of(secrets.get(SECRET).await.ok()?)?;
            (!seen.contains(&cert)).then_some(cert)
        })
        .await;
        seen.push(next);
        // Past the old certificate's end: only the renewed one can be what is served.
        tokio::time::sleep(Duration::from_secs(4)).await;
        refused(&ns, &fixture("cycle"), &["cycle"]);
        let name = format!("ok-{round}");
        let (ok, out) = apply(&ns, &PARAMS_PIPELINE.replace("regional", &name));
        assert!(ok, "round {round}: {out}");
    }
    assert_eq!(
        config.ca_bundle().await.unwrap(),
        ca,
        "renewing the serving certificate keeps the CA"
    );
    let served = op.log().matches("serving the webhook certificate").count();
    assert!(
        served >= 3,
        "the operator loaded each certificate ({served} times):\n{}",
        op.log()
    );
}
