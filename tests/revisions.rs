//! Pipeline revisions on a real control plane: runs of one spec share a PipelineRevision, an
//! edit makes a new one for later runs only, a run survives its Pipeline's deletion, the
//! garbage collector removes a revision with its last run, `weir diff` shows what changed,
//! and a run of 10,000 tasks stays a small object.

mod common;

use common::cli::*;
use common::*;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, PostParams};
use std::time::Duration;
use weir::api::{Pipeline, PipelineRevision, PipelineRun, RunPhase};
use weir_testenv::{TestNamespace, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn pipeline(message: &str) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: etl}}
spec:
  tasks:
    - {{name: extract, image: busybox, command: [sh, -c, 'echo {message}']}}
    - {{name: load, image: busybox, command: [sh, -c, 'echo load'], dependsOn: [extract]}}
"#
    )
}

fn run_of(name: &str) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: {name}}}
spec: {{pipelineRef: {{name: etl}}}}
"#
    )
}

/// The revision a run follows, once it started.
async fn revision_of(ns: &TestNamespace, run: &str) -> String {
    let runs: Api<PipelineRun> = ns.api();
    wait_for(&format!("{run} to follow a revision"), RUN_TIMEOUT, || async {
        runs.get(run).await.ok()?.status?.pipeline_revision
    })
    .await
}

#[tokio::test]
async fn runs_share_a_revision_and_keep_theirs_across_edits_and_deletion() {
    let (ns, _op) = setup("revisions").await;
    ns.apply(&pipeline("v1"));
    ns.apply(&run_of("first"));
    ns.apply(&run_of("second"));
    let first = revision_of(&ns, "first").await;
    assert_eq!(revision_of(&ns, "second").await, first, "one spec, one revision");
    assert!(first.starts_with("etl-"), "{first}");
    let revisions: Api<PipelineRevision> = ns.api();
    let rev = revisions.get(&first).await.unwrap();
    let owners: Vec<String> = rev.owner_references().iter().map(|o| o.name.clone()).collect();
    assert_eq!(owners.len(), 2, "both runs own it: {owners:?}");
    assert_eq!(rev.spec.pipeline.as_deref(), Some("etl"));
    assert_eq!(rev.spec.task_count, 2);
    let pipelines: Api<Pipeline> = ns.api();
    wait_for(
        "the Pipeline to name its current revision",
        RUN_TIMEOUT,
        || async {
            let current = pipelines.get("etl").await.ok()?.status?.current_revision?;
            (current == first).then_some(())
        },
    )
    .await;
    // The PipelineRun object carries the revision's name, not a copy of the spec.
    let run = ns.api::<PipelineRun>().get("first").await.unwrap();
    let status = serde_json::to_value(run.status.as_ref().unwrap()).unwrap();
    assert!(status.get("pipelineSpec").is_none(), "{status}");

    // An edit: later runs follow a new revision; `weir diff` shows what changed.
    ns.apply(&pipeline("v2"));
    ns.apply(&run_of("third"));
    let third = revision_of(&ns, "third").await;
    assert_ne!(third, first);
    assert_eq!(revision_of(&ns, "first").await, first, "a run keeps its revision");
    let diff = expect_code(&weir(&ns, &["diff", "first", "third"]), 1);
    assert!(
        diff.contains(&format!("--- pipelinerevision {first} (pipelinerun first)")),
        "{diff}"
    );
    assert!(
        diff.contains("-") && diff.contains("echo v1") && diff.contains("echo v2"),
        "{diff}"
    );
    let same = expect_code(&weir(&ns, &["diff", "third"]), 0);
    assert!(
        same.contains("are the same"),
        "the Pipeline now is what third follows: {same}"
    );
    let old = expect_code(
        &weir(&ns, &["diff", &format!("revision/{first}"), "pipeline/etl"]),
        1,
    );
    assert!(
        old.contains("+++ pipeline etl (now)") && old.contains("echo v2"),
        "{old}"
    );

    // The Pipeline goes: its runs still run and `weir get` still reads their tasks.
    for run in ["first", "second", "third"] {
        assert_eq!(
            phase(&wait_run_done(&ns, run, RUN_TIMEOUT).await),
            RunPhase::Succeeded
        );
    }
    pipelines.delete("etl", &DeleteParams::default()).await.unwrap();
    let shown = expect_code(&weir(&ns, &["get", "first"]), 0);
    assert!(shown.contains("extract") && shown.contains("load"), "{shown}");
    assert!(
        revisions.get(&first).await.is_ok(),
        "a revision outlives its Pipeline"
    );

    // Once no run follows it, the garbage collector removes it; the other one stays.
    let runs: Api<PipelineRun> = ns.api();
    for run in ["first", "second"] {
        runs.delete(run, &DeleteParams::default()).await.unwrap();
    }
    wait_for(
        "the unused revision to be collected",
        Duration::from_secs(120),
        || async { revisions.get_opt(&first).await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert!(
        revisions.get(&third).await.is_ok(),
        "third still follows its revision"
    );
}

#[tokio::test]
async fn a_run_of_ten_thousand_tasks_stays_a_small_object() {
    let (ns, _op) = setup("revisions-big").await;
    // A chain: only its first task runs while the size is read. Created through the API
    // (kubectl apply would add a copy of the whole spec as an annotation).
    let tasks: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            let mut task = serde_json::json!({"name": format!("t{i:05}"), "image": "busybox", "command": ["sleep", "60"]});
            if i > 0 {
                task["dependsOn"] = serde_json::json!([format!("t{:05}", i - 1)]);
            }
            task
        })
        .collect();
    let pipeline: Pipeline = serde_json::from_value(serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "big"}, "spec": {"tasks": tasks},
    }))
    .unwrap();
    ns.api::<Pipeline>()
        .create(&PostParams::default(), &pipeline)
        .await
        .unwrap();
    ns.apply(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: big-1}\nspec: {pipelineRef: {name: big}}\n",
    );
    let runs: Api<PipelineRun> = ns.api();
    let run = wait_for("the first task to run", Duration::from_secs(300), || async {
        let run = runs.get("big-1").await.ok()?;
        let running = run.status.as_ref()?.counts.as_ref()?.running;
        (running > 0).then_some(run)
    })
    .await;
    let size = serde_json::to_vec(&run).unwrap().len();
    assert!(size <= 32 * 1024, "the run is {size} bytes");
    let revision = run.status.unwrap().pipeline_revision.unwrap();
    let rev = ns.api::<PipelineRevision>().get(&revision).await.unwrap();
    assert_eq!(rev.spec.task_count, 10_000);
    println!(
        "a started run of 10,000 tasks: {size} bytes; its revision: {} bytes",
        serde_json::to_vec(&rev).unwrap().len()
    );
    expect_code(&weir(&ns, &["cancel", "big-1"]), 0);
}
