//! The `weir` CLI for clusters against the real control plane: `get` matches the TaskRuns,
//! `logs` (whole and `-f`) prints every task's lines in order with prefixes and says when a
//! pod is gone, `list` filters, `cancel` cancels, `rerun` writes its request, `suspend` and
//! `resume` touch one field, `trigger --like` copies a run, `trigger --wait` fails with the
//! run; and the errors: a missing run, a user without permission, an unreachable cluster.

mod common;

use common::cli::*;
use common::*;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use weir::api::{Pipeline, PipelineRun, RunPhase, TaskRun};
use weir_testenv::{TestNamespace, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Stderr of a `weir` that must have failed with exit code 2 (an error).
fn expect_error(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "weir should have failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stderr
}

/// A pipeline with a task that succeeds on its second attempt, a fan-out whose instance
/// `b` fails with exit code 3, a task left upstream-failed, and a `finally` task.
const MIXED: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: mixed}
spec:
  params:
    - {name: region, default: eu}
  defaults: {image: busybox}
  tasks:
    - name: extract
      command: [sh, -c, 'echo "extracting {{ params.region }}"; echo "attempt $WEIR_ATTEMPT"; [ $WEIR_ATTEMPT -ge 2 ]']
      retries: {limit: 2, delay: 1s}
    - name: shard
      dependsOn: [extract]
      forEach: {items: ["a", "b", "c"]}
      command: [sh, -c, 'echo "shard {{ item }}"; [ "{{ item }}" != b ] || exit 3']
    - name: load
      dependsOn: [shard]
      command: [sh, -c, 'echo loading']
  finally:
    - name: report
      command: [sh, -c, 'echo report done']
"#;

/// `weir trigger mixed --wait`: the run fails, and so does the command.
fn run_mixed(ns: &TestNamespace, name: &str) -> String {
    ns.apply(MIXED);
    let out = weir(
        ns,
        &["trigger", "mixed", "--name", name, "--wait", "--timeout", "2m"],
    );
    expect_code(&out, 1)
}

#[tokio::test]
async fn get_shows_the_task_runs_of_a_run_with_a_retried_and_a_failed_task() {
    let (ns, _op) = setup("cli-get").await;
    let out = run_mixed(&ns, "mixed-1");
    // trigger --wait: the summary, the outcome and where to look.
    for line in [
        "extract   Succeeded       2 ",
        "shard[1]  Failed          1 ",
        "load      UpstreamFailed  0 ",
        "run mixed-1 failed (TaskFailed",
        "logs of shard: weir logs mixed-1 shard",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }

    let task_runs = task_runs_of(&ns, "mixed-1").await;
    assert_eq!(task_runs.len(), 5, "extract, three shards, report");
    let json = expect_code(&weir(&ns, &["get", "mixed-1", "-o", "json"]), 0);
    let view: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(view["phase"], "Failed");
    assert_eq!(view["reason"], "TaskFailed");
    let names: Vec<&str> = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["extract", "shard", "load", "report"]);
    // Every TaskRun is in the tree, with its phase and every attempt as the TaskRun has it.
    for tr in &task_runs {
        let node = find_node(&view, tr);
        let status = tr.status.as_ref().unwrap();
        assert_eq!(
            node["phase"].as_str(),
            Some(status.phase.unwrap().as_str()),
            "{}",
            tr.name_any()
        );
        assert_eq!(node["taskRun"].as_str(), Some(tr.name_any().as_str()));
        let attempts = node["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), status.attempts.len(), "{}", tr.name_any());
        for (shown, real) in attempts.iter().zip(&status.attempts) {
            assert_eq!(shown["number"], real.number);
            assert_eq!(shown["jobName"], real.job_name.as_str());
            assert_eq!(shown["phase"], format!("{:?}", real.phase));
            assert_eq!(shown["exitCode"].as_i64(), real.exit_code.map(i64::from));
            assert_eq!(shown["reason"].as_str(), real.reason.map(|r| r.as_str()));
        }
    }
    let extract = &view["tasks"][0];
    assert_eq!(extract["attempts"][0]["exitCode"], 1);
    assert_eq!(extract["attempts"][1]["exitCode"], 0);
    assert_eq!(view["tasks"][1]["instances"][1]["attempts"][0]["exitCode"], 3);
    assert_eq!(view["tasks"][2]["phase"], "UpstreamFailed");
    assert!(view["tasks"][2].get("taskRun").is_none());

    // The tree, for people.
    let tree = expect_code(&weir(&ns, &["get", "mixed-1"]), 0);
    let line = |start: &str| -> String {
        tree.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{tree}"))
            .to_string()
    };
    let cells = |start: &str| -> Vec<String> {
        line(start)
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    assert!(line("Phase:").contains("Failed (TaskFailed"), "{tree}");
    assert_eq!(cells("├─✓ extract")[..3], ["├─✓ extract", "Succeeded", "2/3"]);
    let first = cells("│ ├─✗ attempt 1");
    assert_eq!(first[1], "Failed");
    assert_eq!(first[3..5], ["1", "Error"], "{tree}");
    assert!(first[5].starts_with("exit code 1"), "{tree}");
    assert_eq!(cells("│ └─✓ attempt 2")[3], "0", "{tree}");
    assert_eq!(cells("├─✗ shard")[1], "Failed");
    let failed_shard = cells("│ ├─✗ shard[1]");
    assert_eq!(failed_shard[1..3], ["Failed", "1/1"]);
    assert_eq!(failed_shard[4..6], ["3", "Error"], "{tree}");
    assert_eq!(cells("├─✗ load")[1], "UpstreamFailed");
    assert_eq!(cells("└─✓ report (finally)")[1], "Succeeded");

    // Logs of every attempt, failed ones included, by task, instance and attempt.
    let logs = expect_code(&weir(&ns, &["logs", "mixed-1"]), 0);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(
        lines,
        [
            "extract   | extracting eu",
            "extract   | attempt 1",
            "extract#2 | extracting eu",
            "extract#2 | attempt 2",
            "shard[0]  | shard a",
            "shard[1]  | shard b",
            "shard[2]  | shard c",
            "report    | report done",
        ],
        "{logs}"
    );
    let first_try = expect_code(&weir(&ns, &["logs", "mixed-1", "extract", "--attempt", "1"]), 0);
    assert_eq!(first_try, "extract   | extracting eu\nextract   | attempt 1\n");
    let one = expect_code(&weir(&ns, &["logs", "mixed-1", "shard[1]"]), 0);
    assert_eq!(one, "shard[1] | shard b\n");
    let one = expect_code(&weir(&ns, &["logs", "mixed-1", "shard[1]", "--no-prefix"]), 0);
    assert_eq!(one, "shard b\n");
    let out = weir(&ns, &["logs", "mixed-1", "load"]);
    expect_code(&out, 0);
    assert!(
        text(&out)
            .1
            .contains("task load of run mixed-1 did not run (UpstreamFailed"),
        "{}",
        text(&out).1
    );

    // A pod that is gone: said plainly, the other instances still printed.
    let shard0 = task_runs
        .iter()
        .find(|tr| tr.spec.task_name == "shard" && tr.spec.instance == Some(0))
        .unwrap();
    let pods: Api<Pod> = ns.api();
    let selector = format!("weir.dev/taskrun-uid={}", shard0.uid().unwrap());
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels(&selector))
        .await
        .unwrap();
    wait_for("the pod of shard[0] to be gone", RUN_TIMEOUT, || async {
        let left = pods.list(&ListParams::default().labels(&selector)).await.unwrap();
        left.items.is_empty().then_some(())
    })
    .await;
    let out = weir(&ns, &["logs", "mixed-1", "shard"]);
    let (stdout, stderr) = text(&out);
    expect_code(&out, 0);
    assert_eq!(stdout, "shard[1] | shard b\nshard[2] | shard c\n");
    assert!(
        stderr.contains("shard[0]: no logs for attempt 1: its pod no longer exists"),
        "{stderr}"
    );
}

/// The node of the `weir get -o json` tree that shows this TaskRun.
fn find_node<'a>(view: &'a serde_json::Value, tr: &TaskRun) -> &'a serde_json::Value {
    let task = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == tr.spec.task_name.as_str())
        .unwrap_or_else(|| panic!("no task {} in the tree", tr.spec.task_name));
    match tr.spec.instance {
        None => task,
        Some(k) => task["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instance"] == k)
            .unwrap_or_else(|| panic!("no instance {k} of {}", tr.spec.task_name)),
    }
}

#[tokio::test]
async fn logs_follow_prints_every_task_of_a_running_chain_in_order() {
    let (ns, _op) = setup("cli-logs").await;
    let lines = r#"for i in 1 2 3; do echo "$WEIR_TASK line $i"; sleep 0.3; done"#;
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: chain}}
spec:
  pipelineSpec:
    defaults: {{image: busybox}}
    tasks:
      - {{name: s0, command: [sh, -c, '{lines}']}}
      - {{name: s1, dependsOn: [s0], command: [sh, -c, '{lines}; [ $WEIR_ATTEMPT -ge 2 ]'], retries: {{limit: 1, delay: 1s}}}}
      - {{name: s2, dependsOn: [s1], command: [sh, -c, '{lines}']}}
"#
    ));
    // Started before any task: it must pick up each one, and the retry, as they start.
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["logs", "chain", "-f", "-n", ns.name()])
        .env("KUBECONFIG", ns.kubeconfig())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting weir logs -f");
    let pid = child.id();
    let waited = tokio::time::timeout(
        RUN_TIMEOUT,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let out = match waited {
        Ok(joined) => joined.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("weir logs -f did not end with the run");
        }
    };
    let stdout = expect_code(&out, 0);
    let mut expected = Vec::new();
    for (prefix, task) in [("s0", "s0"), ("s1", "s1"), ("s1#2", "s1"), ("s2", "s2")] {
        for i in 1..=3 {
            expected.push(format!("{prefix:<4} | {task} line {i}"));
        }
    }
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got, expected, "stderr:\n{}", text(&out).1);
    let run = wait_run_done(&ns, "chain", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded);
}

#[tokio::test]
async fn list_filters_by_pipeline_phase_trigger_and_label() {
    let (ns, _op) = setup("cli-list").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: good}
spec:
  tasks: [{name: ok, image: busybox, command: [sh, -c, 'true']}]
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: bad}
spec:
  tasks: [{name: boom, image: busybox, command: [sh, -c, 'exit 1']}]
"#,
    );
    expect_code(&weir(&ns, &["trigger", "good", "--name", "good-1", "--wait"]), 0);
    expect_code(&weir(&ns, &["trigger", "good", "--name", "good-2", "--wait"]), 0);
    expect_code(&weir(&ns, &["trigger", "bad", "--name", "bad-1", "--wait"]), 1);
    // A run made by hand with kubectl has no trigger label.
    ns.apply(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: by-hand, labels: {team: data}}\nspec: {pipelineRef: {name: good}}\n",
    );
    wait_run_done(&ns, "by-hand", RUN_TIMEOUT).await;

    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["list", "-o", "name"];
        all.extend_from_slice(args);
        let mut names: Vec<String> = expect_code(&weir(&ns, &all), 0)
            .lines()
            .map(|l| l.trim_start_matches("pipelinerun/").to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&[]), ["bad-1", "by-hand", "good-1", "good-2"]);
    assert_eq!(names(&["good"]), ["by-hand", "good-1", "good-2"]);
    assert_eq!(names(&["--phase", "failed"]), ["bad-1"]);
    assert_eq!(names(&["--phase", "Failed,Succeeded"]).len(), 4);
    assert_eq!(names(&["good", "--trigger", "manual"]), ["good-1", "good-2"]);
    assert_eq!(names(&["-l", "team=data"]), ["by-hand"]);
    assert!(names(&["--phase", "running"]).is_empty());
    assert_eq!(names(&["--limit", "1"]).len(), 1);

    let table = expect_code(&weir(&ns, &["list", "bad"]), 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "PIPELINE", "TRIGGER", "PHASE", "PROGRESS", "STARTED", "DURATION"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..5], ["bad-1", "bad", "manual", "Failed", "1/1"], "{table}");
    assert!(row[5].ends_with('s') && row[6] == "ago", "{table}");

    let json = expect_code(&weir(&ns, &["list", "--phase", "Failed", "-o", "json"]), 0);
    let items: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(items[0]["name"], "bad-1");
    assert_eq!(items[0]["phase"], "Failed");
    assert_eq!(items[0]["pipeline"], "bad");
    let out = weir(&ns, &["list", "--phase", "done"]);
    assert!(expect_error(&out).contains("--phase \"done\": not a phase"));
}

const SLOW: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: slow}
spec:
  schedule: {cron: "0 3 1 1 *"}
  defaults: {image: busybox}
  tasks:
    - {name: wait, command: [sh, -c, 'echo waiting; sleep 300']}
    - {name: after, dependsOn: [wait], command: [sh, -c, 'echo after']}
  finally:
    - {name: cleanup, command: [sh, -c, 'echo cleanup']}
"#;

/// Triggers `slow` and waits until its first task runs.
async fn start_slow(ns: &TestNamespace, name: &str) {
    ns.apply(SLOW);
    expect_code(&weir(ns, &["trigger", "slow", "--name", name]), 0);
    wait_for("the slow task to run", RUN_TIMEOUT, || async {
        let tr = task_run_opt(ns, name, "wait").await?;
        (tr.status?.phase? == weir::api::TaskPhase::Running).then_some(())
    })
    .await;
}

#[tokio::test]
async fn cancel_stops_a_running_run_and_its_finally_tasks_run() {
    let (ns, _op) = setup("cli-cancel").await;
    start_slow(&ns, "slow-1").await;
    let out = expect_code(&weir(&ns, &["cancel", "slow-1", "--wait", "--timeout", "2m"]), 0);
    assert!(out.contains("pipelinerun slow-1 cancelled"), "{out}");
    assert!(out.contains("run slow-1 was cancelled"), "{out}");
    let run = wait_run_done(&ns, "slow-1", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Cancelled);
    assert!(run.spec.cancelled);
    assert_eq!(
        summary_phase(&run, "cleanup"),
        Some(weir::api::TaskPhase::Succeeded)
    );
    let again = expect_code(&weir(&ns, &["cancel", "slow-1"]), 0);
    assert!(
        again.contains("already finished (Cancelled): nothing to cancel"),
        "{again}"
    );
    // The cancelled attempt's pod was deleted with its Job: its logs say why they are gone.
    let out = weir(&ns, &["logs", "slow-1", "wait"]);
    expect_code(&out, 0);
    assert!(text(&out).1.contains("it was cancelled"), "{}", text(&out).1);
}

#[tokio::test]
async fn rerun_writes_the_request_for_the_operator() {
    let (ns, _op) = setup("cli-rerun").await;
    // Made with kubectl, so that the field manager `weir` has written nothing before.
    ns.apply(MIXED);
    ns.apply(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: mixed-1}\nspec: {pipelineRef: {name: mixed}}\n",
    );
    assert_eq!(
        phase(&wait_run_done(&ns, "mixed-1", RUN_TIMEOUT).await),
        RunPhase::Failed
    );
    let runs: Api<PipelineRun> = ns.api();

    let out = expect_code(
        &weir(
            &ns,
            &[
                "rerun",
                "mixed-1",
                "--task",
                "shard",
                "--downstream",
                "--failed-instances-only",
            ],
        ),
        0,
    );
    assert!(out.contains("rerun requested"), "{out}");
    let run = runs.get("mixed-1").await.unwrap();
    let first = run.spec.rerun.clone().expect("spec.rerun is written");
    assert_eq!(first.tasks, ["shard"]);
    assert!(first.downstream && first.failed_instances_only);
    // The request is the UTC time to the millisecond: 20260102T140305.123Z.
    assert_eq!(first.request.len(), 20, "{}", first.request);
    assert!(first.request.ends_with('Z') && first.request.as_bytes()[8] == b'T');
    // Written by the field manager `weir` (which the operator reports as who asked), and
    // spec.rerun is all it wrote.
    let owned = fields_of(&run.metadata, "weir");
    assert_eq!(owned.len(), 1, "{owned:?}");
    let spec_fields: Vec<&String> = owned[0]["f:spec"].as_object().unwrap().keys().collect();
    assert_eq!(spec_fields, ["f:rerun"], "{owned:?}");
    assert_eq!(owned[0].as_object().unwrap().len(), 1, "{owned:?}");

    // A second request replaces the first entirely: nothing of its tasks or flags remains.
    expect_code(&weir(&ns, &["rerun", "mixed-1"]), 0);
    let second = runs.get("mixed-1").await.unwrap().spec.rerun.unwrap();
    assert_ne!(second.request, first.request);
    assert!(second.tasks.is_empty(), "{second:?}");
    assert!(!second.downstream && !second.failed_instances_only, "{second:?}");

    let out = weir(&ns, &["rerun", "mixed-1", "--task", "shrd"]);
    assert!(
        expect_error(&out).contains("pipelinerun mixed-1 has no task shrd (did you mean shard?)"),
        "{}",
        text(&out).1
    );
    // The operator side of reruns is not in this branch: that it applies the request (a
    // new attempt of shard[1], then load) is tested with the operator.
}

#[tokio::test]
async fn suspend_and_resume_write_only_the_schedule_flag() {
    let (ns, _op) = setup("cli-suspend").await;
    ns.apply(SLOW);
    let pipelines: Api<Pipeline> = ns.api();
    let out = expect_code(&weir(&ns, &["suspend", "slow"]), 0);
    assert!(out.contains("pipeline slow: schedule suspended"), "{out}");
    assert!(!out.contains("warning"), "{out}");
    let p = pipelines.get("slow").await.unwrap();
    assert!(p.spec.schedule.as_ref().unwrap().suspend);
    assert_eq!(
        fields_of(&p.metadata, "weir"),
        [serde_json::json!({"f:spec": {"f:schedule": {"f:suspend": {}}}})],
        "weir owns spec.schedule.suspend alone"
    );
    assert!(expect_code(&weir(&ns, &["suspend", "slow"]), 0).contains("already suspended"));
    expect_code(&weir(&ns, &["resume", "slow"]), 0);
    let p = pipelines.get("slow").await.unwrap();
    assert!(!p.spec.schedule.as_ref().unwrap().suspend);

    // A Pipeline that a GitOps tool tracks gets a warning that the change will not last.
    ns.kubectl_ok([
        "annotate",
        "pipeline",
        "slow",
        "argocd.argoproj.io/tracking-id=pipelines:weir.dev/Pipeline:x/slow",
    ]);
    let out = expect_code(&weir(&ns, &["suspend", "slow"]), 0);
    assert!(out.contains("warning: Argo CD manages this Pipeline"), "{out}");
    ns.apply(MIXED);
    let out = weir(&ns, &["suspend", "mixed"]);
    assert!(expect_error(&out).contains("pipeline mixed has no schedule"));
}

#[tokio::test]
async fn trigger_like_copies_params_and_logical_date() {
    let (ns, _op) = setup("cli-like").await;
    ns.apply(MIXED);
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: first}
spec:
  pipelineRef: {name: mixed}
  params: {region: us}
  logicalDate: "2024-03-01T02:00:00Z"
  dataIntervalStart: "2024-03-01T02:00:00Z"
  dataIntervalEnd: "2024-03-02T02:00:00Z"
"#,
    );
    let out = expect_code(
        &weir(
            &ns,
            &[
                "trigger", "mixed", "--like", "first", "--name", "again", "-p", "other=x",
            ],
        ),
        0,
    );
    assert!(
        out.contains("copied from first: params region, logical date 2024-03-01T02:00:00Z"),
        "{out}"
    );
    let runs: Api<PipelineRun> = ns.api();
    let (first, again) = (runs.get("first").await.unwrap(), runs.get("again").await.unwrap());
    assert_eq!(again.spec.params["region"], "us");
    assert_eq!(again.spec.params["other"], "x");
    assert_eq!(again.spec.logical_date, first.spec.logical_date);
    assert_eq!(again.spec.data_interval_start, first.spec.data_interval_start);
    assert_eq!(again.spec.data_interval_end, first.spec.data_interval_end);
    assert_eq!(again.labels()["weir.dev/trigger"], "manual");

    ns.apply(SLOW);
    let out = weir(&ns, &["trigger", "slow", "--like", "first"]);
    assert!(expect_error(&out).contains("--like first: that is a run of pipeline mixed, not of slow"));
}

/// The fields each `managedFields` entry of `manager` owns.
fn fields_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    manager: &str,
) -> Vec<serde_json::Value> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .map(|m| m.fields_v1.as_ref().unwrap().0.clone())
        .collect()
}

/// A kubeconfig for the ServiceAccount `name` of the namespace, allowed only `verbs` on
/// PipelineRuns.
async fn limited_user(ns: &TestNamespace, name: &str, verbs: &str) -> PathBuf {
    ns.kubectl_ok(["create", "serviceaccount", name]);
    ns.kubectl_ok([
        "create",
        "role",
        name,
        &format!("--verb={verbs}"),
        "--resource=pipelineruns.weir.dev",
    ]);
    ns.kubectl_ok([
        "create",
        "rolebinding",
        name,
        &format!("--role={name}"),
        &format!("--serviceaccount={}:{name}", ns.name()),
    ]);
    let sas: Api<ServiceAccount> = ns.api();
    let secret = wait_for("the ServiceAccount's token", RUN_TIMEOUT, || async {
        sas.get(name).await.ok()?.secrets?.first()?.name.clone()
    })
    .await;
    let secret: Secret = ns.api::<Secret>().get(&secret).await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let admin = std::fs::read_to_string(ns.kubeconfig()).unwrap();
    let limited: String = admin
        .lines()
        .map(|l| match l.split_once("token:") {
            Some((indent, _)) => format!("{indent}token: {token}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let path = std::env::temp_dir().join(format!("weir-cli-{}.kubeconfig", ns.name()));
    std::fs::write(&path, limited).unwrap();
    path
}

#[tokio::test]
async fn a_user_without_permission_is_told_which_verb_on_which_resource() {
    let (ns, _op) = setup("cli-rbac").await;
    start_slow(&ns, "slow-1").await;
    let kubeconfig = limited_user(&ns, "reader", "get,list").await;

    // Allowed to read the run, not to change it.
    let out = weir_as(&kubeconfig, &ns, &["cancel", "slow-1"]);
    let user = format!("system:serviceaccount:{}:reader", ns.name());
    let expected = format!(
        "error: forbidden: User \"{user}\" may not patch pipelineruns.weir.dev in namespace {}. A Role bound to you needs verb \"patch\" on resource \"pipelineruns\" of API group \"weir.dev\" (check with: kubectl auth can-i patch pipelineruns.weir.dev -n {})",
        ns.name(),
        ns.name()
    );
    assert_eq!(expect_error(&out).trim(), expected);
    // Allowed to read the run, not its TaskRuns.
    let out = weir_as(&kubeconfig, &ns, &["get", "slow-1"]);
    let stderr = expect_error(&out);
    assert!(
        stderr.contains("may not list taskruns.weir.dev")
            && stderr.contains("needs verb \"list\" on resource \"taskruns\""),
        "{stderr}"
    );
    // Nothing was changed.
    let run = ns.api::<PipelineRun>().get("slow-1").await.unwrap();
    assert!(!run.spec.cancelled);
    let _ = std::fs::remove_file(kubeconfig);
}

#[tokio::test]
async fn a_missing_run_or_an_unreachable_cluster_is_said_plainly() {
    let ns = weir_testenv::env().await.namespace("cli-errors").await;
    install_crds(&ns).await;
    for args in [
        vec!["get", "nope"],
        vec!["logs", "nope"],
        vec!["rerun", "nope"],
        vec!["cancel", "nope"],
    ] {
        let out = weir(&ns, &args);
        assert_eq!(
            expect_error(&out).trim(),
            format!("error: pipelinerun nope not found in namespace {}", ns.name()),
            "weir {args:?}"
        );
    }
    let out = weir(&ns, &["trigger", "nope"]);
    assert_eq!(
        expect_error(&out).trim(),
        format!("error: pipeline nope not found in namespace {}", ns.name())
    );

    // A server nobody listens on.
    let admin = std::fs::read_to_string(ns.kubeconfig()).unwrap();
    let unreachable: String = admin
        .lines()
        .map(|l| match l.split_once("server:") {
            Some((indent, _)) => format!("{indent}server: https://127.0.0.1:1\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let path = std::env::temp_dir().join(format!("weir-cli-{}-unreachable.kubeconfig", ns.name()));
    std::fs::write(&path, unreachable).unwrap();
    let out = weir_as(&path, &ns, &["list"]);
    let stderr = expect_error(&out);
    assert!(
        stderr.starts_with(
            "error: cannot reach the Kubernetes API server at https://127.0.0.1:1 (context weir-testenv): "
        ) && stderr.contains("Connection refused"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(path);
    let out = weir(&ns, &["list", "--context", "elsewhere"]);
    assert!(
        expect_error(&out).contains("context \"elsewhere\" is not in the kubeconfig (it has: weir-testenv)")
    );
}

#[tokio::test]
async fn kubectl_runs_it_as_a_plugin_and_completions_cover_the_commands() {
    let ns = weir_testenv::env().await.namespace("cli-plugin").await;
    install_crds(&ns).await;
    let dir = std::env::temp_dir().join(format!("weir-plugin-{}", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_weir"), dir.join("kubectl-weir")).unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    // kubectl finds a plugin only when its name comes first: `kubectl weir ...`, with the
    // plugin's own flags after it.
    let kubectl = |args: &[&str]| {
        let out = Command::new(weir_testenv::kubectl_binary())
            .arg("weir")
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", ns.kubeconfig())
            .output()
            .expect("running kubectl weir");
        text(&out)
    };
    let (stdout, stderr) = kubectl(&["list", "-n", ns.name()]);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.trim(), format!("no runs in namespace {} match", ns.name()));
    let (help, _) = kubectl(&["--help"]);
    assert!(help.contains("Usage: kubectl weir <COMMAND>"), "{help}");
    let _ = std::fs::remove_dir_all(&dir);

    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["completion", shell])
            .output()
            .unwrap();
        let script = expect_code(&out, 0);
        for word in ["rerun", "logs", "namespace", "failed-instances-only"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
}

#[tokio::test]
async fn rerun_wait_follows_the_run_to_its_new_outcome() {
    let (ns, _op) = setup("cli-rerun-wait").await;
    let gate = std::env::temp_dir().join(format!("{}.gate", weir_testenv::unique_marker("weir-cli")));
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: gated}}
spec:
  defaults: {{image: busybox}}
  tasks:
    - {{name: extract, command: [sh, -c, 'echo extracted']}}
    - name: shard
      dependsOn: [extract]
      forEach: {{items: [a, b, c]}}
      command: [sh, -c, 'echo "shard $1"; test "$1" != b || test -e {gate} || exit 4', sh, "{{{{ item }}}}"]
    - {{name: load, dependsOn: [shard], command: [sh, -c, 'echo loaded']}}
  finally:
    - {{name: report, command: [sh, -c, 'echo report']}}
"#,
        gate = gate.display()
    ));
    expect_code(
        &weir(&ns, &["trigger", "gated", "--name", "gated-1", "--wait"]),
        1,
    );
    let out = weir(&ns, &["rerun", "gated-1", "--task", "report"]);
    assert!(expect_error(&out).contains("--task report: finally tasks only"));

    std::fs::write(&gate, "open").unwrap();
    let out = weir(
        &ns,
        &[
            "rerun",
            "gated-1",
            "--task",
            "shard",
            "--failed-instances-only",
            "--downstream",
            "--wait",
            "--timeout",
            "2m",
        ],
    );
    let _ = std::fs::remove_file(&gate);
    let stdout = expect_code(&out, 0);
    assert!(stdout.contains("run gated-1 succeeded in"), "{stdout}");

    // The history: shard[1] failed, then succeeded; shard[0] and shard[2] kept their one
    // attempt; load and the finally task ran again.
    let json = expect_code(&weir(&ns, &["get", "gated-1", "-o", "json"]), 0);
    let view: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(view["phase"], "Succeeded");
    assert_eq!(view["rerun"]["requestedBy"], "weir");
    assert_eq!(view["rerun"]["count"], 1);
    let attempts = |task: &serde_json::Value| -> Vec<String> {
        task["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| format!("{}:{}", a["number"], a["phase"].as_str().unwrap()))
            .collect()
    };
    let shard = &view["tasks"][1];
    assert_eq!(attempts(&shard["instances"][0]), ["1:Succeeded"]);
    assert_eq!(attempts(&shard["instances"][1]), ["1:Failed", "2:Succeeded"]);
    assert_eq!(attempts(&shard["instances"][2]), ["1:Succeeded"]);
    assert_eq!(view["tasks"][2]["phase"], "Succeeded");
    assert_eq!(attempts(&view["tasks"][3]), ["1:Succeeded", "2:Succeeded"]);
    let tree = expect_code(&weir(&ns, &["get", "gated-1"]), 0);
    let reruns = tree
        .lines()
        .find(|l| l.starts_with("Reruns:"))
        .unwrap_or_default();
    assert!(
        reruns.contains("1 time(s)") && reruns.contains("by weir"),
        "{tree}"
    );
    let logs = expect_code(&weir(&ns, &["logs", "gated-1", "shard[1]"]), 0);
    assert_eq!(logs, "shard[1]   | shard b\nshard[1]#2 | shard b\n");
}

#[tokio::test]
async fn rerun_wait_says_why_the_operator_refused_a_request() {
    let (ns, _op) = setup("cli-rerun-refused").await;
    // Only the finally task fails: nothing of spec.tasks is left to rerun.
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: tail}
spec:
  tasks: [{name: work, image: busybox, command: [sh, -c, 'true']}]
  finally: [{name: notify, image: busybox, command: [sh, -c, 'exit 1']}]
"#,
    );
    expect_code(&weir(&ns, &["trigger", "tail", "--name", "tail-1", "--wait"]), 1);
    let out = weir(&ns, &["rerun", "tail-1", "--wait", "--timeout", "1m"]);
    let stderr = expect_error(&out);
    assert!(
        stderr.contains("the operator did not apply rerun request")
            && stderr.contains("nothing to rerun: every task succeeded"),
        "{stderr}"
    );
    let tree = expect_code(&weir(&ns, &["get", "tail-1"]), 0);
    assert!(tree.contains("not applied"), "{tree}");
}
