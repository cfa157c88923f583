//! The test environment itself: a real 1.20 control plane whose pods run as local processes
//! under `weir-node-agent`. These tests pin down the behaviour Weir relies on (Job
//! accounting, termination messages, deadlines and deletion reaching processes, logs, env),
//! so that a failure in Weir's own cluster tests can be told apart from a broken environment.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use weir_testenv::{TestNamespace, env, pid_alive, pids_with_cmdline, unique_marker, wait_for};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn pod_phase_is(ns: &TestNamespace, name: &str, phase: &str) -> Pod {
    let pods: Api<Pod> = ns.api();
    wait_for(&format!("pod {name} to be {phase}"), TIMEOUT, || async {
        let pod = pods.get(name).await.map_err(|e| e.to_string())?;
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if current == phase {
            Ok(pod)
        } else {
            Err(format!("phase {current:?}"))
        }
    })
    .await
}

fn terminated(pod: &Pod, container: &str) -> ContainerStateTerminated {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .unwrap_or_else(|| panic!("container {container} has no terminated state: {:?}", pod.status))
}

/// Waits until the Job has a condition of this type with status True; returns its reason.
async fn job_condition(ns: &TestNamespace, name: &str, type_: &str) -> Job {
    let jobs: Api<Job> = ns.api();
    wait_for(
        &format!("job {name} to have condition {type_}=True"),
        TIMEOUT,
        || async {
            let job = jobs.get(name).await.map_err(|e| e.to_string())?;
            let conds = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if conds.iter().any(|c| c.type_ == type_ && c.status == "True") {
                Ok(job)
            } else {
                Err(format!("status {:?}", job.status))
            }
        },
    )
    .await
}

fn job_pod_name(ns: &TestNamespace, job: &str) -> String {
    let out = ns.kubectl_ok([
        "get",
        "pods",
        "-l",
        &format!("job-name={job}"),
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let names: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(names.len(), 1, "expected one pod of job {job}, got {names:?}");
    names[0].to_string()
}

#[tokio::test]
async fn server_is_1_20_and_node_is_ready() {
    let ns = env().await.namespace("env-version").await;
    let version: serde_json::Value = serde_json::from_str(&ns.kubectl_ok(["version", "-o", "json"])).unwrap();
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(server.starts_with("v1.20."), "server version {server:?}");

    let nodes = ns.kubectl_ok(["get", "nodes", "--no-headers"]);
    let line = nodes
        .lines()
        .find(|l| l.split_whitespace().next() == Some("weir-node"))
        .unwrap_or_else(|| panic!("no weir-node in:\n{nodes}"));
    assert_eq!(line.split_whitespace().nth(1), Some("Ready"), "{line}");
}

#[tokio::test]
async fn failed_job_is_counted_and_logs_are_served() {
    let ns = env().await.namespace("env-fail").await;
    ns.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: fails}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "echo hi; exit 3"]
"#,
    );
    let job = job_condition(&ns, "fails", "Failed").await;
    let status = job.status.unwrap();
    assert_eq!(status.failed, Some(1));
    assert_eq!(status.succeeded.unwrap_or(0), 0);

    let pod_name = job_pod_name(&ns, "fails");
    let pod = pod_phase_is(&ns, &pod_name, "Failed").await;
    let t = terminated(&pod, "main");
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.reason.as_deref(), Some("Error"));

    // Through the apiserver, which fetches it from the agent's log server.
    assert_eq!(ns.kubectl_ok(["logs", &pod_name]), "hi\n");
    assert_eq!(ns.kubectl_ok(["logs", "job/fails"]), "hi\n");
}

#[tokio::test]
async fn succeeded_job_is_counted() {
    let ns = env().await.namespace("env-ok").await;
    ns.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: works}
spec:
  completions: 2
  parallelism: 2
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["true"]
"#,
    );
    let job = job_condition(&ns, "works", "Complete").await;
    let status = job.status.unwrap();
    assert_eq!(status.succeeded, Some(2));
    assert_eq!(status.failed.unwrap_or(0), 0);
}

#[tokio::test]
async fn termination_messages_are_reported() {
    let ns = env().await.namespace("env-term").await;
    // Default path; a custom path handed to the process through an env var; and a failure
    // with FallbackToLogsOnError and no message.
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: messages}
spec:
  restartPolicy: Never
  containers:
  - name: default-path
    image: busybox
    command: ["sh", "-c", "printf '{\"rows\": 42}' > /dev/termination-log"]
  - name: custom-path
    image: busybox
    terminationMessagePath: /weir/outputs/result.json
    env:
    - {name: RESULT_PATH, value: /weir/outputs/result.json}
    command: ["sh", "-c", "printf '{\"rows\": 7}' > \"$RESULT_PATH\""]
  - name: fallback
    image: busybox
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo first; echo last words; exit 1"]
"#,
    );
    let pod = pod_phase_is(&ns, "messages", "Failed").await;
    let t = terminated(&pod, "default-path");
    assert_eq!((t.exit_code, t.message.as_deref()), (0, Some(r#"{"rows": 42}"#)));
    assert_eq!(t.reason.as_deref(), Some("Completed"));
    let t = terminated(&pod, "custom-path");
    assert_eq!((t.exit_code, t.message.as_deref()), (0, Some(r#"{"rows": 7}"#)));
    let t = terminated(&pod, "fallback");
    assert_eq!(t.exit_code, 1);
    assert_eq!(t.message.as_deref(), Some("first\nlast words\n"));
}

#[tokio::test]
async fn active_deadline_fails_job_and_kills_processes() {
    let ns = env().await.namespace("env-deadline").await;
    let marker = unique_marker("weir-deadline");
    let pid_file = std::env::temp_dir().join(format!("{marker}.pid"));
    ns.apply(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: slow}}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "sleep 600 & echo $! > {pid_file}; wait; : {marker}"]
"#,
        pid_file = pid_file.display()
    ));
    // The shell starts `sleep 600` before the deadline hits. Nothing in this test waits
    // anywhere near 600 s, so if the processes are gone below, they were killed.
    let sleep_pid: u32 = wait_for("the job's sleep process to start", TIMEOUT, || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;

    let job = job_condition(&ns, "slow", "Failed").await;
    let cond = job
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    // The 1.20 Job controller checks the backoff limit before the deadline: when the pod it
    // deleted at the deadline is seen failed before the Job's condition is written (a
    // conflict, a slow sync on a loaded machine), the reason is `BackoffLimitExceeded`.
    // Either way the Job failed because of its deadline: the pod was deleted, not failed.
    assert!(
        matches!(
            cond.reason.as_deref(),
            Some("DeadlineExceeded" | "BackoffLimitExceeded")
        ),
        "{cond:?}"
    );

    wait_for("the job's processes to be gone", TIMEOUT, || async {
        let shells = pids_with_cmdline(&marker);
        if shells.is_empty() && !pid_alive(sleep_pid) {
            Ok(())
        } else {
            Err(format!(
                "shell pids {shells:?}, sleep {sleep_pid} alive: {}",
                pid_alive(sleep_pid)
            ))
        }
    })
    .await;
    let _ = std::fs::remove_file(&pid_file);
}

#[tokio::test]
async fn twenty_pods_at_once_all_succeed() {
    let ns = env().await.namespace("env-many").await;
    let pods: Api<Pod> = ns.api();
    for i in 0..20 {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("p{i}"), "labels": {"batch": "many"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", "echo started $POD; sleep 1; echo done"],
                    "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                }],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    wait_for("20 pods to succeed", Duration::from_secs(120), || async {
        let list = pods
            .list(&ListParams::default().labels("batch=many"))
            .await
            .map_err(|e| e.to_string())?;
        let phases: Vec<String> = list
            .items
            .iter()
            .map(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default()
            })
            .collect();
        if phases.len() == 20 && phases.iter().all(|p| p == "Succeeded") {
            Ok(())
        } else {
            Err(format!("phases {phases:?}"))
        }
    })
    .await;
    assert_eq!(ns.kubectl_ok(["logs", "p7"]), "started p7\ndone\n");
}

#[tokio::test]
async fn deleting_namespace_kills_running_processes() {
    let ns = env().await.namespace("env-nsdel").await;
    let marker = unique_marker("weir-nsdel");
    for i in 0..3 {
        ns.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: sleeper{i}}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "sleep 600; : {marker}"]
"#
        ));
    }
    for i in 0..3 {
        pod_phase_is(&ns, &format!("sleeper{i}"), "Running").await;
    }
    wait_for("3 marked processes", TIMEOUT, || async {
        let pids = pids_with_cmdline(&marker);
        if pids.len() == 3 {
            Ok(())
        } else {
            Err(format!("{pids:?}"))
        }
    })
    .await;

    ns.kubectl_ok(["delete", "namespace", ns.name(), "--wait=false"]);
    wait_for("the pods' processes to be killed", TIMEOUT, || async {
        let pids = pids_with_cmdline(&marker);
        if pids.is_empty() {
            Ok(())
        } else {
            Err(format!("still running: {pids:?}"))
        }
    })
    .await;
    // The namespace controller can only finish once the agent confirmed the pods' deletion.
    let namespaces: Api<Namespace> = Api::all(ns.client());
    wait_for(
        "the namespace to be deleted",
        Duration::from_secs(120),
        || async {
            match namespaces.get_opt(ns.name()).await {
                Ok(None) => Ok(()),
                Ok(Some(n)) => Err(format!("namespace status {:?}", n.status)),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn env_vars_reach_the_process() {
    let ns = env().await.namespace("env-vars").await;
    ns.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {color: blue, size: large}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata:
  name: printenv
  labels: {team: data}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    workingDir: /work/dir
    envFrom:
    - prefix: CM_
      configMapRef: {name: settings}
    env:
    - {name: LITERAL, value: plain}
    - {name: EXPANDED, value: "$(LITERAL)-and-$(CM_color)-$$(LITERAL)"}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: POD_UID
      valueFrom: {fieldRef: {fieldPath: metadata.uid}}
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: TEAM
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['team']"}}
    - name: COLOR
      valueFrom: {configMapKeyRef: {name: settings, key: color}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: MISSING_OK
      valueFrom: {configMapKeyRef: {name: settings, key: nope, optional: true}}
    command: ["sh", "-c"]
    args: ["env | sort; echo ARG=$(POD_NAME); echo PWD=$PWD"]
"#,
    );
    let pod = pod_phase_is(&ns, "printenv", "Succeeded").await;
    let uid = pod.metadata.uid.clone().unwrap();
    let out = ns.kubectl_ok(["logs", "printenv"]);
    let lines: Vec<&str> = out.lines().collect();
    let ns_line = format!("POD_NAMESPACE={}", ns.name());
    let uid_line = format!("POD_UID={uid}");
    for expected in [
        "LITERAL=plain",
        "EXPANDED=plain-and-blue-$(LITERAL)",
        "POD_NAME=printenv",
        ns_line.as_str(),
        uid_line.as_str(),
        "NODE=weir-node",
        "POD_IP=127.0.0.1",
        "TEAM=data",
        "COLOR=blue",
        "PASSWORD=hunter2",
        "CM_color=blue",
        "CM_size=large",
        "ARG=printenv",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected:?} missing from the process env:\n{out}"
        );
    }
    assert!(
        !out.contains("MISSING_OK="),
        "optional missing key must not be set:\n{out}"
    );
    let pwd = lines.iter().find_map(|l| l.strip_prefix("PWD=")).unwrap();
    assert!(pwd.ends_with("/work/dir"), "workingDir: {pwd}");
}

#[tokio::test]
async fn logs_can_be_followed_and_tailed() {
    let ns = env().await.namespace("env-logs").await;
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done; echo oops >&2"]
"#,
    );
    pod_phase_is(&ns, "talker", "Running").await;
    // Follow returns once the container has exited, with everything it wrote.
    let followed = ns.kubectl_ok(["logs", "-f", "talker"]);
    assert_eq!(followed, "line 1\nline 2\nline 3\nline 4\nline 5\noops\n");
    pod_phase_is(&ns, "talker", "Succeeded").await;
    assert_eq!(ns.kubectl_ok(["logs", "talker", "--tail=2"]), "line 5\noops\n");
    assert_eq!(ns.kubectl_ok(["logs", "talker", "--limit-bytes=8"]), "line 1\nl");
    let stamped = ns.kubectl_ok(["logs", "talker", "--timestamps", "--tail=1"]);
    let (ts, rest) = stamped.split_once(' ').unwrap();
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "timestamp {ts:?}");
    assert_eq!(rest, "oops\n");
}

#[tokio::test]
async fn diagnostics_describe_the_namespace() {
    // What a failing test prints (TestNamespace's Drop does this when panicking).
    let ns = env().await.namespace("env-diag").await;
    ns.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: broken}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo something went wrong; exit 2"]
"#,
    );
    pod_phase_is(&ns, "broken", "Failed").await;
    let report = ns.diagnostics();
    for expected in [
        "----- events",
        "broken\tFailed",
        "\"exitCode\":2",
        "[pod/broken/main] something went wrong",
        "kube-apiserver.log",
        "weir-node-agent.log",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing from diagnostics:\n{report}"
        );
    }
}
