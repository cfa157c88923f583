//! Artifacts on a real S3-compatible server (s3s-fs on loopback, checking signatures) with
//! the real control plane: files and directories handed from task to task through `weir
//! exec` (copied into each pod by an init container through an emptyDir), fan-in, logs kept
//! in the store, and a clear reason when the store refuses the credentials.

mod common;

use common::s3::{S3Server, SECRET_KEY, setup_with_store};
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use std::collections::BTreeMap;
use std::time::Duration;
use weir::api::{ArtifactRef, FailureReason, RunPhase, TaskPhase, artifact};
use weir_testenv::{TestNamespace, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A scratch directory for the tasks' files: pods run as host processes here, so their
/// paths are the host's, one directory per test.
fn scratch(ns: &TestNamespace) -> String {
    let dir = std::env::temp_dir().join(format!("weir-artifact-files-{}", ns.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

fn reported(outputs: &BTreeMap<String, String>, name: &str) -> ArtifactRef {
    let text = outputs
        .get(&artifact::output_key(name))
        .unwrap_or_else(|| panic!("no artifact {name} in {outputs:?}"));
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn a_model_file_and_a_directory_reach_the_next_task() {
    let s3 = S3Server::start("model");
    let (ns, _op) = setup_with_store("art-model", &s3, SECRET_KEY).await;
    let dir = scratch(&ns);
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: ml}}
spec:
  pipelineSpec:
    tasks:
      - name: train
        image: python:3.12
        command: [sh, -c]
        args:
          - |
            mkdir -p {dir}/train/report/plots
            head -c 200000 /dev/urandom > {dir}/train/model.pkl
            echo 'auc 0.91' > {dir}/train/report/summary.txt
            echo 'png' > {dir}/train/report/plots/roc.png
            echo accuracy=0.93 > $WEIR_OUTPUTS
            echo training done
        outputs: [{{name: accuracy}}]
        artifacts:
          - {{name: model, path: {dir}/train/model.pkl}}
          - {{name: report, path: {dir}/train/report}}
      - name: validate
        image: python:3.12
        dependsOn: [train]
        command: [sh, -c]
        args:
          - |
            set -e
            cmp {dir}/train/model.pkl {dir}/validate/model.pkl
            diff -r {dir}/train/report {dir}/validate/report
            echo "accuracy {{{{ tasks.train.outputs.accuracy }}}} checked"
        inputs:
          - {{from: tasks.train.artifacts.model, path: {dir}/validate/model.pkl}}
          - {{from: tasks.train.artifacts.report, path: {dir}/validate/report}}
"#
    ));
    let run = wait_run_done(&ns, "ml", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);

    let train = task_run(&ns, "ml", "train").await.status.unwrap();
    assert_eq!(train.outputs["accuracy"], "0.93");
    let model = reported(&train.outputs, "model");
    assert_eq!(model.size, 200_000);
    assert!(!model.dir);
    let report = reported(&train.outputs, "report");
    assert!(report.dir);
    assert_eq!(report.size, "auc 0.91\n".len() as u64 + "png\n".len() as u64);
    // The objects are in the bucket, under the run's prefix.
    let keys = s3.keys(&format!("{}/ml/", ns.name()));
    for key in [
        model.key.clone(),
        format!("{}/listing.json", report.key),
        format!("{}/files/summary.txt", report.key),
        format!("{}/files/plots/roc.png", report.key),
    ] {
        assert!(keys.contains(&key), "{key} not in {keys:?}");
    }
    // The downloaded input is the same file (the task compared them; the digest too).
    let validate = task_run(&ns, "ml", "validate").await;
    assert_eq!(validate.spec.inputs[0].artifacts, vec![model.clone()]);
    let log = s3.keys(&format!("{}/log", model.key.trim_end_matches("/model")));
    assert_eq!(log.len(), 1, "the attempt's log is stored: {keys:?}");
    let text = std::fs::read_to_string(s3.root.join(common::s3::BUCKET).join(&log[0])).unwrap();
    assert_eq!(text, "training done\n");

    // Once the pod is gone, `weir logs` reads the stored log instead.
    let pod = train.attempts[0].pod_name.clone().expect("the attempt's pod");
    ns.api::<Pod>()
        .delete(&pod, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the pod to be gone", Duration::from_secs(60), || async {
        match ns.api::<Pod>().get_opt(&pod).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // So does `weir logs -f`, which then ends: the run is over.
    for follow in [false, true] {
        let mut args = vec!["logs", "ml", "train", "-n", ns.name()];
        if follow {
            args.push("-f");
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(&args)
            .env("KUBECONFIG", ns.kubeconfig())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains("training done"), "{args:?}: {stdout}");
        assert!(
            stderr.contains("the log kept in the artifact store"),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn fan_in_sees_the_artifacts_of_every_instance() {
    let s3 = S3Server::start("fanin");
    let (ns, _op) = setup_with_store("art-fanin", &s3, SECRET_KEY).await;
    let dir = scratch(&ns);
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: parts}}
spec:
  pipelineSpec:
    tasks:
      - name: part
        image: busybox
        forEach: {{items: [eu, us, ap]}}
        command: [sh, -c, 'mkdir -p {dir}/{{{{ item }}}} && echo "rows of {{{{ item }}}}" > {dir}/{{{{ item }}}}/rows.csv']
        artifacts: [{{name: rows, path: '{dir}/{{{{ item }}}}/rows.csv'}}]
      - name: merge
        image: busybox
        dependsOn: [part]
        command: [sh, -c, 'cat {dir}/merge/0 {dir}/merge/1 {dir}/merge/2 > {dir}/merged.csv']
        inputs: [{{from: tasks.part.artifacts.rows, path: {dir}/merge}}]
"#
    ));
    let run = wait_run_done(&ns, "parts", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    let merged = std::fs::read_to_string(format!("{dir}/merged.csv")).unwrap();
    assert_eq!(merged, "rows of eu\nrows of us\nrows of ap\n");
}

#[tokio::test]
async fn wrong_credentials_give_a_clear_reason_on_the_attempt() {
    let s3 = S3Server::start("creds");
    let (ns, op) = setup_with_store("art-creds", &s3, "not-the-secret-key").await;
    let dir = scratch(&ns);
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: denied}}
spec:
  pipelineSpec:
    tasks:
      - name: train
        image: busybox
        command: [sh, -c, 'echo weights > {dir}/model.pkl']
        artifacts: [{{name: model, path: {dir}/model.pkl}}]
"#
    ));
    let run = wait_run_done(&ns, "denied", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    let train = task_run(&ns, "denied", "train").await.status.unwrap();
    assert_eq!(train.phase, Some(TaskPhase::Failed));
    let attempt = &train.attempts[0];
    assert_eq!(attempt.reason, Some(FailureReason::ArtifactError), "{attempt:?}");
    let message = attempt.message.clone().unwrap_or_default();
    assert!(
        message.contains("weir exec: uploading artifact model")
            && message.contains(common::s3::BUCKET)
            && message.contains("403"),
        "{message}"
    );
    // The credentials appear nowhere: not in the status, not in the operator's log.
    let status = serde_json::to_string(&train).unwrap();
    for secret in ["not-the-secret-key", SECRET_KEY] {
        assert!(!status.contains(secret) && !op.log().contains(secret));
    }
}

/// A run with one task leaving a file, to see what happens to its objects.
fn one_artifact_run(name: &str, dir: &str) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: {name}}}
spec:
  pipelineSpec:
    tasks:
      - name: make
        image: busybox
        command: [sh, -c, 'echo data > {dir}/{name}.csv']
        artifacts: [{{name: data, path: {dir}/{name}.csv}}]
"#
    )
}

async fn wait_run_gone(ns: &TestNamespace, name: &str) {
    wait_for(
        &format!("run {name} to be deleted"),
        Duration::from_secs(90),
        || async {
            match ns.api::<weir::api::PipelineRun>().get_opt(name).await {
                Ok(None) => Ok(()),
                other => Err(format!("{:?}", other.map(|r| r.map(|r| r.metadata.finalizers)))),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_the_run_removes_its_objects() {
    let s3 = S3Server::start("delete");
    let (ns, _op) = setup_with_store("art-delete", &s3, SECRET_KEY).await;
    let dir = scratch(&ns);
    ns.apply(&one_artifact_run("gone", &dir));
    ns.apply(&one_artifact_run("kept", &dir));
    for run in ["gone", "kept"] {
        let done = wait_run_done(&ns, run, RUN_TIMEOUT).await;
        assert_eq!(phase(&done), RunPhase::Succeeded, "{:?}", done.status);
        assert!(
            done.metadata
                .finalizers
                .unwrap_or_default()
                .contains(&artifact::FINALIZER.to_string())
        );
    }
    let prefix = |run: &str| format!("{}/{run}/", ns.name());
    // The artifact and the attempt's log.
    assert_eq!(s3.keys(&prefix("gone")).len(), 2, "{:?}", s3.keys(""));
    ns.api::<weir::api::PipelineRun>()
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    wait_run_gone(&ns, "gone").await;
    assert!(s3.keys(&prefix("gone")).is_empty(), "{:?}", s3.keys(""));
    // Another run's objects are left alone.
    assert_eq!(s3.keys(&prefix("kept")).len(), 2);
    wait_for("the ArtifactsDeleted Event", Duration::from_secs(30), || async {
        let events = events_with_reason(&ns, "ArtifactsDeleted");
        if events
            .iter()
            .any(|e| e.contains("deleted 2 object(s) of run gone"))
        {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_store_that_refuses_does_not_keep_a_run_from_being_deleted() {
    let s3 = S3Server::start("giveup");
    let (ns, mut op) = setup_with_store("art-giveup", &s3, "wrong-secret").await;
    let dir = scratch(&ns);
    ns.apply(&one_artifact_run("stuck", &dir));
    let done = wait_run_done(&ns, "stuck", RUN_TIMEOUT).await;
    assert_eq!(phase(&done), RunPhase::Failed);
    // Give up quickly: the operator again, with a short timeout.
    op.terminate(Duration::from_secs(10));
    let mut args = s3.operator_args(common::s3::SECRET);
    args.extend(["--artifact-delete-timeout".to_string(), "3s".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _op = Operator::start_with(&ns, Some("short-timeout"), &args);
    ns.api::<weir::api::PipelineRun>()
        .delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    wait_run_gone(&ns, "stuck").await;
    let events = events_with_reason(&ns, "ArtifactsKept");
    assert!(
        events
            .iter()
            .any(|e| e.contains("gave up deleting the objects of run stuck") && e.contains("403")),
        "{events:?}"
    );
}

/// A value far over the 4 KiB of a termination message: `weir exec` moves it to the store,
/// the TaskRun reports a reference, and the operator reads it back for the next task's
/// templates. Here a JSON list of 10,000 entries of about 100 bytes each (a little over
/// 1 MiB) fans out a task, each instance reading its own entry. Running ten thousand pods
/// would take the test control plane most of an hour, so the run is held to two at a time
/// and cancelled once four instances have read their entries.
#[tokio::test]
async fn a_one_mebibyte_list_of_ten_thousand_entries_fans_out() {
    let s3 = S3Server::start("large");
    let (ns, _op) = setup_with_store("art-large", &s3, SECRET_KEY).await;
    let dir = scratch(&ns);
    let pad = "x".repeat(100);
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: parts}}
spec:
  pipelineSpec:
    parallelism: 2
    tasks:
      - name: list
        image: busybox
        command: [sh, -c]
        args:
          - |
            awk 'BEGIN {{ printf "{{\"parts\": ["; for (i = 0; i < 10000; i++) {{ if (i) printf ","; printf "\"p%05d-{pad}\"", i }}; printf "], \"rows\": 7}}" }}' > $WEIR_OUTPUTS
        outputs: [{{name: parts}}, {{name: rows}}]
      - name: load
        image: busybox
        dependsOn: [list]
        forEach: {{items: "{{{{ tasks.list.outputs.parts }}}}", maxInstances: 10000}}
        command: [sh, -c, 'printf %s "$1" > {dir}/$WEIR_TASK_RUN', sh, "{{{{ item }}}}"]
"#
    ));
    let list = wait_for("the list task to succeed", RUN_TIMEOUT, || async {
        let tr = task_run_opt(&ns, "parts", "list").await?;
        (tr.status.as_ref()?.phase == Some(TaskPhase::Succeeded)).then_some(tr)
    })
    .await;
    let outputs = list.status.unwrap().outputs;
    assert_eq!(outputs["rows"], "7");
    assert!(
        !outputs.contains_key("parts"),
        "the list itself is not in the TaskRun"
    );
    let moved: ArtifactRef = serde_json::from_str(&outputs["weir.large.parts"]).unwrap();
    assert!(moved.size > 1 << 20, "{moved:?}");
    assert_eq!(s3.keys(&moved.key), std::slice::from_ref(&moved.key));

    let instances = wait_for("four instances to read their entries", RUN_TIMEOUT, || async {
        let mut read = BTreeMap::new();
        for tr in task_runs_of(&ns, "parts").await {
            let done = tr.status.as_ref().and_then(|s| s.phase) == Some(TaskPhase::Succeeded);
            if let (true, Some(i)) = (done, tr.spec.instance) {
                let name = tr.metadata.name.clone().unwrap_or_default();
                read.insert(i, std::fs::read_to_string(format!("{dir}/{name}")).ok()?);
            }
        }
        (read.len() >= 4).then_some(read)
    })
    .await;
    for (i, item) in &instances {
        assert_eq!(item, &format!("p{i:05}-{pad}"));
    }
    let run = ns.api::<weir::api::PipelineRun>().get("parts").await.unwrap();
    let tasks = run.status.map(|s| s.tasks).unwrap_or_default();
    let load = tasks
        .iter()
        .find(|t| t.name == "load")
        .expect("load in the summary");
    let message = load.message.clone().unwrap_or_default();
    assert!(message.contains("started (of 10000)"), "{message}");
    ns.kubectl_ok([
        "patch",
        "plr",
        "parts",
        "--type=merge",
        "-p",
        r#"{"spec":{"cancelled":true}}"#,
    ]);
    let run = wait_run_done(&ns, "parts", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Cancelled, "{:?}", run.status);
}

/// The same flow on Azure Blob Storage (Azurite, checking Shared Key signatures): a model
/// file, a 10 KB output moved through the store, and the log, under the run's prefix.
#[tokio::test]
async fn an_azure_container_holds_the_artifacts_outputs_and_logs() {
    let azure = common::azure::Azurite::start("flow");
    let credentials = [("accountKey", common::azure::ACCOUNT_KEY)];
    let args = azure.operator_args(common::s3::SECRET);
    let (ns, _op) = common::s3::setup_with_secret("art-azure", &credentials, &args).await;
    let dir = scratch(&ns);
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: ml}}
spec:
  pipelineSpec:
    tasks:
      - name: train
        image: busybox
        command: [sh, -c]
        args:
          - |
            head -c 50000 /dev/urandom > {dir}/model.pkl
            {{ printf notes=; head -c 10000 /dev/zero | tr '\0' n; }} > $WEIR_OUTPUTS
            echo trained on azure
        outputs: [{{name: notes}}]
        artifacts: [{{name: model, path: {dir}/model.pkl}}]
      - name: check
        image: busybox
        dependsOn: [train]
        command: [sh, -c, 'cmp {dir}/model.pkl {dir}/in.pkl && test "${{#1}}" = 10000', sh, "{{{{ tasks.train.outputs.notes }}}}"]
        inputs: [{{from: tasks.train.artifacts.model, path: {dir}/in.pkl}}]
"#
    ));
    let run = wait_run_done(&ns, "ml", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    let blobs = azure.blobs();
    let prefix = format!("{}/ml/ml-train/1", ns.name());
    for name in ["model", "outputs/notes", "log"] {
        let blob = format!("{prefix}/{name}");
        assert!(blobs.contains(&blob), "{blob} not in {blobs:?}");
    }
}
