//! The Helm chart end to end: `helm install charts/weir` into the test control plane, the
//! operator runs as pods of the chart's Deployment, or of its StatefulSet of shards (the
//! node agent runs the `weir` binary under test for the chart's image) with the chart's
//! ServiceAccount and RBAC, talking to the API server in-cluster (service-account token,
//! `KUBERNETES_SERVICE_HOST`), and pipelines run to `Succeeded`. In namespaced mode the
//! operator's own credentials are refused outside its namespaces and for Secrets, shown by
//! requests the API server denies.
//!
//! The operator of these tests always watches only the tests' own namespaces (the control
//! plane is shared with other tests, each with its own operator).

mod common;

use common::*;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use weir::api::{Pipeline, RunPhase};
use weir_testenv::{TestNamespace, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const RELEASE: &str = "weir";

/// The helm binary `hack/tools.sh` installs (run once per test process).
fn helm() -> PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let tools = std::env::var_os("WEIR_TOOLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/weir/tools"));
        let helm = tools.join("bin/helm");
        if !helm.exists() {
            let status = Command::new(repo_root().join("hack/tools.sh"))
                .status()
                .expect("running hack/tools.sh");
            assert!(status.success(), "hack/tools.sh failed");
        }
        helm
    })
    .clone()
}

/// Points the test environment's `bin/weir` (what the node agent runs for the image
/// `.../weir`) at the binary of this build, so the chart's pods run the code under test.
fn run_this_weir_for_the_image(ns: &TestNamespace) {
    let state = ns
        .env()
        .state_dir()
        .map(Path::to_path_buf)
        .or_else(|| ns.kubeconfig().parent().map(Path::to_path_buf))
        .expect("the test environment's state dir");
    let link = state.join("bin/weir");
    assert!(
        link.symlink_metadata().is_ok(),
        "{} is missing: the node agent was started by an older hack/testenv/up.sh; run it again",
        link.display()
    );
    let tmp = state.join(format!("bin/.weir-{}", weir_testenv::random_suffix(8)));
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_weir"), &tmp).expect("creating a link");
    std::fs::rename(&tmp, &link).expect("re-pointing bin/weir");
}

/// A Helm release; uninstalled on drop (so that its ClusterRoles do not outlive the test).
struct Release {
    namespace: String,
    kubeconfig: PathBuf,
}

impl Release {
    fn install(ns: &TestNamespace, values: &[(&str, String)]) -> Release {
        run_this_weir_for_the_image(ns);
        let mut cmd = Command::new(helm());
        cmd.arg("install")
            .arg(RELEASE)
            .arg(repo_root().join("charts/weir"))
            .arg("--kubeconfig")
            .arg(ns.kubeconfig())
            .args(["--namespace", ns.name()])
            // The CRDs are already there (install_crds); Helm 4 would server-side apply its
            // copies over kubectl's and fail on the field-manager conflict.
            .arg("--skip-crds")
            .args(["--wait", "--timeout", "120s"])
            // Each operator pod gets a network namespace and an address of its own (the node
            // agent's pod network): both replicas listen on the chart's ports, and the
            // webhook Service's Endpoints are real pod addresses the API server calls.
            .args(["--set", r"podAnnotations.testenv\.weir\.dev/network=pod"])
            .args(["--set", "operator.logFormat=text"])
            .args(["--set", r"operator.logLevel=info\,weir=debug"]);
        for (key, value) in values {
            cmd.arg("--set").arg(format!("{key}={value}"));
        }
        let release = Release {
            namespace: ns.name().to_string(),
            kubeconfig: ns.kubeconfig().to_path_buf(),
        };
        let out = cmd.output().expect("running helm install");
        assert!(
            out.status.success(),
            "helm install failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        release
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = Command::new(helm())
            .args([
                "uninstall",
                RELEASE,
                "--timeout",
                "60s",
                "--namespace",
                &self.namespace,
            ])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .output();
    }
}

/// The operator pods of the release, by name.
async fn operator_pods(ns: &TestNamespace) -> Vec<Pod> {
    let pods: Api<Pod> = ns.api();
    pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

async fn lease_holder(ns: &TestNamespace) -> Option<String> {
    let leases: Api<Lease> = ns.api();
    leases.get_opt(RELEASE).await.ok()??.spec?.holder_identity
}

/// The operator's logs (every replica), for asserting on and for failure messages.
fn operator_logs(ns: &TestNamespace) -> String {
    let out = ns.kubectl([
        "logs",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
        "--tail=-1",
        "--prefix",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `diamond` example's run in `ns` succeeds; else the failure shows its status and the
/// logs of the operator installed in `home`.
async fn assert_diamond_succeeds(ns: &TestNamespace, home: &TestNamespace) {
    let run = wait_run_done(ns, "diamond-manual", RUN_TIMEOUT).await;
    assert_eq!(
        phase(&run),
        RunPhase::Succeeded,
        "{:?}\n{}",
        run.status,
        operator_logs(home)
    );
}

/// A client that authenticates exactly as the operator pods do: with the token of the
/// chart's ServiceAccount (the legacy token Secret Kubernetes 1.20 creates for it).
async fn client_as_operator(ns: &TestNamespace) -> kube::Client {
    let sas: Api<ServiceAccount> = ns.api();
    let sa = wait_for(
        "the operator's ServiceAccount token",
        Duration::from_secs(30),
        || async {
            let sa = sas.get(RELEASE).await.map_err(|e| e.to_string())?;
            sa.secrets
                .as_ref()
                .and_then(|s| s.first())
                .map(|_| sa.clone())
                .ok_or_else(|| "no token secret yet".to_string())
        },
    )
    .await;
    let secret_name = sa.secrets.unwrap()[0].name.clone().expect("token secret name");
    let secret: Secret = ns.api::<Secret>().get(&secret_name).await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let mut kubeconfig = Kubeconfig::read_from(ns.kubeconfig()).unwrap();
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.token = Some(token.clone().into());
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// The HTTP status of a request's error; 200 for success.
fn status_of<T>(result: kube::Result<T>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(e) => panic!("request failed without an API status: {e}"),
    }
}

/// The chart's webhook, called by the API server through the chart's Service: both replicas
/// (each in its own network namespace, on the same port) are its Endpoints and answer.
async fn webhook_admits_and_refuses_through_the_service(ns: &TestNamespace, pods: &[Pod]) {
    let ips: Vec<String> = pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert_ne!(ips[0], ips[1], "each replica has an address of its own");
    assert!(!ips.contains(&"127.0.0.1".to_string()), "{ips:?}");
    let endpoints: Api<Endpoints> = ns.api();
    let service = format!("{RELEASE}-webhook");
    wait_for(
        "both replicas behind the webhook Service",
        Duration::from_secs(60),
        || async {
            let ep = endpoints.get_opt(&service).await.ok()??;
            let mut ready: Vec<String> = ep
                .subsets?
                .into_iter()
                .flat_map(|s| s.addresses.unwrap_or_default())
                .map(|a| a.ip)
                .collect();
            ready.sort();
            let mut want = ips.clone();
            want.sort();
            (ready == want).then_some(())
        },
    )
    .await;
    let invalid =
        std::fs::read_to_string(repo_root().join("tests/fixtures/invalid/unknown-dependency.yaml")).unwrap();
    // The operators' certificate must be in the caBundle before the first answer counts.
    let denied = wait_for(
        "the webhook to refuse an invalid Pipeline",
        Duration::from_secs(60),
        || async {
            let (ok, text) = kubectl_apply(ns, &invalid, &["--dry-run=server"]);
            (!ok && text.contains("denied the request")).then_some(text)
        },
    )
    .await;
    assert!(
        denied.contains(r#"spec.tasks[1].dependsOn: task "load": unknown task "tranform""#),
        "{denied}"
    );
    // Every replica serves the webhook, with the certificate the configuration trusts, for
    // the Service's name. (The API server keeps its connection to the one endpoint it
    // picked, so asking it many times would not reach both.)
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(ns.client());
    let config = configs.get(&format!("{}-{RELEASE}", ns.name())).await.unwrap();
    let ca = config.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("caBundle")
        .0;
    let dir = std::env::temp_dir().join(format!("weir-helm-{}", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.crt"), ca).unwrap();
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0", "operation": "CREATE", "namespace": ns.name(), "name": "cycle",
            "kind": {"group": "weir.dev", "version": "v1alpha1", "kind": "Pipeline"},
            "resource": {"group": "weir.dev", "version": "v1alpha1", "resource": "pipelines"},
            "userInfo": {}, "dryRun": true,
            "object": serde_saphyr::from_str::<serde_json::Value>(
                &std::fs::read_to_string(repo_root().join("tests/fixtures/invalid/cycle.yaml")).unwrap()
            ).unwrap(),
        },
    });
    std::fs::write(dir.join("review.json"), review.to_string()).unwrap();
    let host = format!("{service}.{}.svc", ns.name());
    for ip in &ips {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(dir.join("ca.crt"))
            .args([
                "--resolve",
                &format!("{host}:9443:{ip}"),
                "-H",
                "Content-Type: application/json",
                "--data-binary",
            ])
            .arg(format!("@{}", dir.join("review.json").display()))
            .arg(format!("https://{host}:9443/validate"))
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(
            answer.contains(r#""allowed":false"#) && answer.contains("cycle"),
            "the replica at {ip} answered: {answer}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, text) = kubectl_apply(ns, &invalid, &[]);
    assert!(!ok && text.contains("denied the request"), "{text}");
    assert!(
        ns.api::<Pipeline>()
            .get_opt("unknown-dependency")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn chart_runs_pipelines_with_two_replicas_and_leader_election() {
    let ns = weir_testenv::env().await.namespace("helm").await;
    install_crds(&ns).await;
    // Cluster-scope RBAC (the chart's default); the watch is limited to this namespace only
    // so as not to touch other tests' objects, and so is the webhook (by a label: 1.20 has
    // no kubernetes.io/metadata.name label for the chart's default selector).
    ns.kubectl_ok([
        "label",
        "namespace",
        ns.name(),
        &format!("weir-helm-test={}", ns.name()),
    ]);
    let _release = Release::install(
        &ns,
        &[
            ("watchNamespaces[0]", ns.name().to_string()),
            (
                "webhook.namespaceSelector.matchLabels.weir-helm-test",
                ns.name().to_string(),
            ),
        ],
    );

    let pods = operator_pods(&ns).await;
    assert_eq!(pods.len(), 2, "two replicas");
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some(RELEASE));
        let container = &spec.containers[0];
        assert!(container.command.is_none(), "the image's entrypoint runs");
        let sc = container.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
    }
    let names: Vec<String> = pods.iter().map(name_of).collect();
    let leader = wait_for("a replica to hold the lease", Duration::from_secs(60), || async {
        lease_holder(&ns).await.filter(|h| names.contains(h))
    })
    .await;

    webhook_admits_and_refuses_through_the_service(&ns, &pods).await;

    ns.apply(&example("diamond"));
    let run = wait_run_done(&ns, "diamond-manual", RUN_TIMEOUT).await;
    assert_eq!(
        phase(&run),
        RunPhase::Succeeded,
        "{:?}\n{}",
        run.status,
        operator_logs(&ns)
    );

    // What GitOps tools rely on: the operator wrote the Pipeline's status and nothing else.
    let pipeline: Pipeline = ns.api::<Pipeline>().get("diamond").await.unwrap();
    assert_eq!(pipeline.metadata.generation, Some(1));
    for entry in pipeline.metadata.managed_fields.iter().flatten() {
        if entry.manager.as_deref() == Some("weir-operator") {
            let fields = &entry.fields_v1.as_ref().unwrap().0;
            let keys: Vec<&String> = fields.as_object().unwrap().keys().collect();
            assert_eq!(keys, vec!["f:status"], "the operator owns only status: {fields}");
        }
    }

    // The leader goes away: the standby takes over and runs the next pipeline.
    let pods_api: Api<Pod> = ns.api();
    pods_api.delete(&leader, &DeleteParams::default()).await.unwrap();
    let new_leader = wait_for(
        "another replica to take the lease",
        Duration::from_secs(90),
        || async { lease_holder(&ns).await.filter(|h| *h != leader) },
    )
    .await;
    ns.apply(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: after-failover}\n\
         spec: {pipelineRef: {name: diamond}}\n",
    );
    let run = wait_run_done(&ns, "after-failover", RUN_TIMEOUT).await;
    assert_eq!(
        phase(&run),
        RunPhase::Succeeded,
        "{:?}\n{}",
        run.status,
        operator_logs(&ns)
    );
    assert!(
        operator_pods(&ns).await.iter().any(|p| name_of(p) == new_leader),
        "the lease is held by a pod of the release"
    );
    let logs = operator_logs(&ns);
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the chart's RBAC allows all the operator does:\n{logs}"
    );
}

#[tokio::test]
async fn namespaced_rbac_confines_the_operator_to_its_namespaces() {
    let env = weir_testenv::env().await;
    let home = env.namespace("helm-ns").await;
    let work = env.namespace("helm-work").await;
    let other = env.namespace("helm-other").await;
    install_crds(&home).await;
    let _release = Release::install(
        &home,
        &[
            ("rbac.scope", "namespaced".into()),
            ("replicaCount", "1".into()),
            ("watchNamespaces", format!("{{{},{}}}", home.name(), work.name())),
        ],
    );

    // A pipeline in a watched namespace runs.
    work.apply(&example("diamond"));
    assert_diamond_succeeds(&work, &home).await;

    // Sensors read what the chart's sensors.readableResources allows (ConfigMaps by
    // default); a Secret is not among them, so that sensor fails at once, saying what to add.
    work.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: flag}
data: {ready: "yes"}
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: sensing}
spec:
  tasks:
    - name: flag
      timeout: 60s
      wait:
        pokeInterval: 1s
        object: {apiVersion: v1, kind: ConfigMap, name: flag, field: {path: data.ready, value: "yes"}}
    - name: secret
      timeout: 60s
      wait: {pokeInterval: 1s, object: {apiVersion: v1, kind: Secret, name: anything}}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: sensing-1}
spec:
  pipelineRef: {name: sensing}
"#,
    );
    wait_run_done(&work, "sensing-1", RUN_TIMEOUT).await;
    let flag = task_run(&work, "sensing-1", "flag").await.status.unwrap();
    assert_eq!(flag.phase, Some(weir::api::TaskPhase::Succeeded), "{flag:?}");
    let secret = task_run(&work, "sensing-1", "secret").await.status.unwrap();
    let attempt = secret.attempts.last().expect("an attempt");
    assert_eq!(
        attempt.reason,
        Some(weir::api::FailureReason::WaitFailed),
        "{attempt:?}"
    );
    let message = attempt.message.clone().unwrap_or_default();
    assert!(
        message.contains("may not read secrets in namespace")
            && message.contains("sensors.readableResources"),
        "{message}"
    );

    // A schedule: the operator creates runs itself and deletes them past the history limit,
    // both allowed by the namespaced Role.
    work.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: ticker}
spec:
  schedule: {cron: "*/2 * * * * *"}
  successfulRunsHistoryLimit: 1
  tasks:
    - {name: tick, image: busybox, command: [sh, -c, 'echo tick']}
"#,
    );
    let runs: Api<weir::api::PipelineRun> = work.api();
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    wait_for(
        "scheduled runs to be created and the oldest deleted",
        Duration::from_secs(90),
        || {
            let runs = runs.clone();
            let seen = &seen;
            async move {
                let now: Vec<String> = runs
                    .list(&ListParams::default().labels("weir.dev/pipeline=ticker"))
                    .await
                    .map_err(|e| e.to_string())?
                    .items
                    .iter()
                    .map(|r| r.metadata.name.clone().unwrap_or_default())
                    .collect();
                let mut seen = seen.lock().unwrap();
                seen.extend(now.iter().cloned());
                let deleted = seen.iter().filter(|n| !now.contains(n)).count();
                if seen.len() >= 3 && deleted >= 1 {
                    Ok(())
                } else {
                    Err(format!("seen {seen:?}, now {now:?}"))
                }
            }
        },
    )
    .await;
    work.kubectl_ok([
        "patch",
        "pipeline",
        "ticker",
        "--type=merge",
        "-p",
        r#"{"spec":{"schedule":{"suspend":true}}}"#,
    ]);

    // The operator's own credentials, request by request.
    let operator = client_as_operator(&home).await;
    let in_ns = |ns: &TestNamespace| ns.name().to_string();
    let pipelines = |ns: &str| Api::<Pipeline>::namespaced(operator.clone(), ns);
    assert_eq!(
        status_of(pipelines(&in_ns(&work)).list(&ListParams::default()).await),
        200
    );
    // No Secrets, not even in its own namespaces.
    for ns in [&home, &work] {
        let secrets = Api::<Secret>::namespaced(operator.clone(), ns.name());
        assert_eq!(status_of(secrets.list(&ListParams::default()).await), 403);
    }
    let own_token = Api::<ServiceAccount>::namespaced(home.client(), home.name())
        .get(RELEASE)
        .await
        .unwrap()
        .secrets
        .unwrap()[0]
        .name
        .clone()
        .expect("token secret name");
    assert_eq!(
        status_of(
            Api::<Secret>::namespaced(operator.clone(), home.name())
                .get(&own_token)
                .await
        ),
        403
    );
    // Nothing outside its namespaces: not reading Pipelines, not creating Jobs, not listing
    // across the cluster.
    assert_eq!(
        status_of(pipelines(&in_ns(&other)).list(&ListParams::default()).await),
        403
    );
    assert_eq!(
        status_of(
            Api::<Pipeline>::all(operator.clone())
                .list(&ListParams::default())
                .await
        ),
        403
    );
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "escape"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}},
    }))
    .unwrap();
    assert_eq!(
        status_of(
            Api::<Job>::namespaced(operator.clone(), other.name())
                .create(&PostParams::default(), &job)
                .await
        ),
        403
    );

    // And a pipeline outside its namespaces is left alone.
    other.apply(&example("diamond"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let untouched = other
        .api::<weir::api::PipelineRun>()
        .get("diamond-manual")
        .await
        .unwrap();
    assert!(untouched.status.is_none(), "{:?}", untouched.status);
    let logs = operator_logs(&home);
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "namespaced RBAC covers what the operator does:\n{logs}"
    );
}

/// Several shards: the chart's StatefulSet (here 2 shards x 1 pod), each pod taking its shard
/// from its ordinal and leading on its shard's Lease, with the chart's RBAC for both Leases;
/// each namespace's run is driven by its own shard's pod.
#[tokio::test]
async fn chart_runs_two_shards_as_a_statefulset() {
    let watched = one_namespace_per_shard("helm-shard", 2).await;
    let home = weir_testenv::env().await.namespace("helm-shards").await;
    install_crds(&home).await;
    let names: Vec<&str> = watched.iter().map(|ns| ns.name()).collect();
    let _release = Release::install(
        &home,
        &[
            ("sharding.shards", "2".into()),
            ("sharding.replicasPerShard", "1".into()),
            ("watchNamespaces", format!("{{{}}}", names.join(","))),
            ("webhook.enabled", "false".into()),
        ],
    );

    let pods = operator_pods(&home).await;
    let mut pod_names: Vec<String> = pods.iter().map(name_of).collect();
    pod_names.sort();
    assert_eq!(pod_names, [format!("{RELEASE}-0"), format!("{RELEASE}-1")]);
    for pod in &pods {
        let args = pod.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap_or_default();
        assert!(args.contains(&"--shards=2".to_string()), "{args:?}");
        assert!(args.contains(&"--shard=pod-ordinal".to_string()), "{args:?}");
    }
    let leases: Api<Lease> = home.api();
    for shard in 0..2 {
        let lease = format!("{RELEASE}-shard-{shard}");
        let want = format!("{RELEASE}-{shard}");
        wait_for(
            &format!("{want} to hold {lease}"),
            Duration::from_secs(60),
            || async {
                let holder = leases.get_opt(&lease).await.ok()??.spec?.holder_identity;
                (holder.as_deref() == Some(want.as_str())).then_some(())
            },
        )
        .await;
    }

    for ns in &watched {
        ns.apply(&example("diamond"));
    }
    for (shard, ns) in watched.iter().enumerate() {
        assert_diamond_succeeds(ns, &home).await;
        let reporters: Vec<String> = event_reporters(ns)
            .await
            .into_iter()
            .map(|(who, _)| who)
            .collect();
        let own = format!("{RELEASE}-{shard}");
        assert!(
            !reporters.is_empty() && reporters.iter().all(|r| *r == own),
            "events of shard {shard}'s namespace came from {reporters:?}"
        );
    }
    let logs = operator_logs(&home);
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "the chart's RBAC allows all the shards do:\n{logs}"
    );
}
