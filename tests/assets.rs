//! Assets against the real control plane: a task that `produces` an asset starts exactly one
//! run of the pipeline that waits for it, with the event's values in its templates; an
//! all-of condition waits for every asset; `weir asset update` records outside updates once
//! per idempotency key; an operator that dies between creating the run and recording what
//! it consumed still leaves exactly one run.

mod common;

use common::cli::*;
use common::*;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::process::Command;
use std::time::Duration;
use weir::api::{Asset, AssetSequence, Pipeline, PipelineRun, RunPhase, labels};
use weir::engine::asset::object_name;
use weir_testenv::{TestNamespace, wait_for};

const LONG: Duration = Duration::from_secs(180);

/// The runs of `pipeline` that asset updates started.
async fn asset_runs(ns: &TestNamespace, pipeline: &str) -> Vec<PipelineRun> {
    let api: Api<PipelineRun> = ns.api();
    let selector = format!("{}={pipeline},{}=asset", labels::PIPELINE, labels::TRIGGER);
    api.list(&ListParams::default().labels(&selector))
        .await
        .expect("listing runs")
        .items
}

async fn consumed(ns: &TestNamespace, pipeline: &str) -> Vec<AssetSequence> {
    let api: Api<Pipeline> = ns.api();
    let p = api.get(pipeline).await.expect("the pipeline");
    p.status.map(|s| s.consumed_assets).unwrap_or_default()
}

async fn asset(ns: &TestNamespace, name: &str) -> Asset {
    let api: Api<Asset> = ns.api();
    api.get(&object_name(name)).await.expect("the Asset")
}

fn seq(asset: &str, sequence: u64) -> AssetSequence {
    AssetSequence {
        asset: asset.into(),
        sequence,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producing_task_starts_exactly_one_consumer_run_that_reads_the_event() {
    let (ns, _op) = setup("assets-produce").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: report}
spec:
  assets: {any: [warehouse/sales/daily]}
  tasks:
    - name: build
      image: busybox
      command: [sh, -c, 'echo "{{ assetEvent.asset }}|{{ assetEvent.extra.date }}|{{ assetEvent.pipelineRun }}|{{ run.logicalDate }}"']
"#,
    );
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: load-sales}
spec:
  tasks:
    - name: load
      image: busybox
      command: [sh, -c, 'echo "date=2024-03-01" > "$WEIR_OUTPUTS"']
      outputs: [{name: date}]
      produces: [{asset: warehouse/sales/daily, extra: [date]}]
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: load-1}
spec:
  pipelineRef: {name: load-sales}
  logicalDate: "2024-03-01T00:00:00Z"
"#,
    );
    let producer = wait_run_done(&ns, "load-1", LONG).await;
    assert_eq!(phase(&producer), RunPhase::Succeeded);
    let load = task_run(&ns, "load-1", "load").await;
    assert_eq!(
        load.status.as_ref().unwrap().asset_events,
        [seq("warehouse/sales/daily", 1)],
        "the TaskRun notes the event its success recorded"
    );
    let recorded = asset(&ns, "warehouse/sales/daily").await;
    assert_eq!(recorded.spec.name, "warehouse/sales/daily");
    let status = recorded.status.expect("the Asset's status");
    assert_eq!(status.sequence, 1);
    let event = &status.events[0];
    assert_eq!(event.pipeline_run.as_deref(), Some("load-1"));
    assert_eq!(event.task.as_deref(), Some("load"));
    assert_eq!(event.extra["date"], "2024-03-01");
    assert_eq!(
        event.logical_date.as_ref().map(|t| t.0.to_string()).as_deref(),
        Some("2024-03-01T00:00:00Z")
    );

    let runs = wait_for("one asset-triggered run of report", LONG, || async {
        let runs = asset_runs(&ns, "report").await;
        (!runs.is_empty()).then_some(runs).ok_or("none yet")
    })
    .await;
    let name = runs[0].name_any();
    let run = wait_run_done(&ns, &name, LONG).await;
    assert_eq!(phase(&run), RunPhase::Succeeded);
    let build = task_run(&ns, &name, "build").await;
    assert_eq!(
        build.spec.command[2],
        r#"echo "warehouse/sales/daily|2024-03-01|load-1|2024-03-01T00:00:00Z""#
    );
    wait_for("the consumed event recorded", LONG, || async {
        let got = consumed(&ns, "report").await;
        (got == [seq("warehouse/sales/daily", 1)])
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    assert_eq!(asset_runs(&ns, "report").await.len(), 1, "one event, one run");
    let consumers = wait_for("the Asset lists its consumer", LONG, || async {
        let status = asset(&ns, "warehouse/sales/daily")
            .await
            .status
            .unwrap_or_default();
        (!status.consumers.is_empty())
            .then_some(status)
            .ok_or("no consumers yet")
    })
    .await;
    assert_eq!(consumers.consumers, ["report"]);
    assert_eq!(consumers.consumer_list.as_deref(), Some("report"));
    let table = kubectl(&ns, &["get", "assets"]);
    assert!(
        table.contains("warehouse/sales/daily") && table.contains("report"),
        "{table}"
    );
}

fn kubectl(ns: &TestNamespace, args: &[&str]) -> String {
    let out = Command::new(weir_testenv::kubectl_binary())
        .arg("--kubeconfig")
        .arg(ns.kubeconfig())
        .args(["--namespace", ns.name()])
        .args(args)
        .output()
        .expect("running kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_of_waits_for_the_second_asset_and_a_repeated_key_counts_once() {
    let (ns, _op) = setup("assets-all").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: join}
spec:
  assets: {all: [sales, fx]}
  tasks:
    - name: show
      image: busybox
      command: [sh, -c, 'echo {{ assetEvents }}']
"#,
    );
    stdout_ok(&weir(&ns, &["asset", "update", "sales", "--extra", "part=1"]));
    let out = stdout_ok(&weir(
        &ns,
        &["asset", "update", "sales", "--extra", "part=1", "--key", "load-7"],
    ));
    assert!(out.contains("event 2 recorded"), "{out}");
    // The same key again (a retried loader): no new event.
    let out = stdout_ok(&weir(&ns, &["asset", "update", "sales", "--key", "load-7"]));
    assert!(out.contains("event 2 recorded"), "{out}");
    assert_eq!(asset(&ns, "sales").await.status.unwrap().sequence, 2);

    stdout_ok(&weir(
        &ns,
        &["asset", "update", "fx", "--logical-date", "2024-03-01"],
    ));
    let fx_time = asset(&ns, "fx").await.status.unwrap().events[0].time.0;
    let runs = wait_for("the run once both assets moved", LONG, || async {
        let runs = asset_runs(&ns, "join").await;
        (!runs.is_empty()).then_some(runs).ok_or("none yet")
    })
    .await;
    let run = &runs[0];
    // The run cannot predate the second asset's event: all-of waited for it.
    // (creationTimestamp has whole seconds.)
    let created = run.creation_timestamp().unwrap().0;
    assert!(
        created >= fx_time - jiff::SignedDuration::from_secs(1),
        "{created} {fx_time}"
    );
    let events: Vec<(Option<&str>, u64)> = run
        .spec
        .asset_events
        .iter()
        .map(|e| (e.asset.as_deref(), e.sequence))
        .collect();
    assert_eq!(events, [(Some("sales"), 1), (Some("sales"), 2), (Some("fx"), 1)]);
    assert_eq!(
        run.spec.logical_date.as_ref().unwrap().0.to_string(),
        "2024-03-01T00:00:00Z"
    );
    let done = wait_run_done(&ns, &run.name_any(), LONG).await;
    assert_eq!(phase(&done), RunPhase::Succeeded);
    let show = task_run(&ns, &run.name_any(), "show").await;
    assert!(
        show.spec.command[2].contains(r#""asset":"fx""#),
        "{:?}",
        show.spec.command
    );

    // Only one of the two moves again: no new run until the other does too.
    wait_for("both consumed", LONG, || async {
        let got = consumed(&ns, "join").await;
        (got == [seq("fx", 1), seq("sales", 2)])
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    stdout_ok(&weir(&ns, &["asset", "update", "sales"]));
    let out = weir(&ns, &["asset", "update", "bad name"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an asset name"));
    stdout_ok(&weir(&ns, &["asset", "update", "fx"]));
    wait_for("a second run", LONG, || async {
        let n = asset_runs(&ns, "join").await.len();
        (n == 2).then_some(()).ok_or(format!("{n} runs"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_after_creating_the_run_still_leaves_exactly_one() {
    let ns = weir_testenv::env().await.namespace("assets-crash").await;
    install_crds(&ns).await;
    // The operator exits right after it created the asset-triggered run, before it records
    // the consumed events in the Pipeline's status.
    let mut op = Operator::start_with_env(&ns, &[("WEIR_CRASH_AT", "after-asset-run-created")]);
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: downstream}
spec:
  assets: {any: [raw]}
  tasks:
    - name: t
      image: busybox
      command: [sh, -c, 'echo {{ assetEvent.extra.batch }}']
"#,
    );
    stdout_ok(&weir(&ns, &["asset", "update", "raw", "--extra", "batch=1"]));
    let exit = op
        .wait_exit(LONG)
        .expect("the operator to stop at the fault point");
    assert_eq!(exit.code(), Some(86), "{}", op.log());
    assert_eq!(asset_runs(&ns, "downstream").await.len(), 1);
    assert!(
        consumed(&ns, "downstream").await.is_empty(),
        "nothing recorded before the crash"
    );
    // Another event comes while the operator is down: the restarted operator must not make
    // a second run for the first event, and the events after it still get theirs.
    stdout_ok(&weir(&ns, &["asset", "update", "raw", "--extra", "batch=2"]));
    op.restart_without_env();
    wait_for(
        "the consumed events recorded from the existing run",
        LONG,
        || async {
            let got = consumed(&ns, "downstream").await;
            (!got.is_empty()).then_some(()).ok_or("nothing yet")
        },
    )
    .await;
    let runs = wait_for("the runs to settle", LONG, || async {
        let runs = asset_runs(&ns, "downstream").await;
        let got = consumed(&ns, "downstream").await;
        (got == [seq("raw", 2)]).then_some(runs).ok_or(format!("{got:?}"))
    })
    .await;
    let first = runs
        .iter()
        .find(|r| r.spec.asset_events.iter().any(|e| e.sequence == 1));
    let first = first.expect("the run made before the crash");
    assert_eq!(
        runs.iter()
            .filter(|r| r.spec.asset_events.iter().any(|e| e.sequence == 1))
            .count(),
        1,
        "event 1 started one run"
    );
    // Event 2 came after the first run's events were fixed: it has a run of its own, or was
    // taken with event 1 if the first run was made after it. Never two runs for one event.
    for sequence in [1, 2] {
        let n = runs
            .iter()
            .filter(|r| r.spec.asset_events.iter().any(|e| e.sequence == sequence))
            .count();
        assert_eq!(
            n,
            1,
            "event {sequence} is in {n} runs: {:?}",
            runs.iter().map(|r| r.name_any()).collect::<Vec<_>>()
        );
    }
    wait_run_done(&ns, &first.name_any(), LONG).await;
}

/// One HTTP call to the trigger endpoint: its status and JSON body.
async fn call(base: &str, path: &str, headers: &[(&str, &str)], body: String) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt as _;
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri(format!("{base}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .unwrap();
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"));
    (status, json)
}

/// The address the operator's trigger endpoint is bound to, from its log.
async fn trigger_base(op: &Operator) -> String {
    wait_for(
        "the trigger endpoint's address",
        Duration::from_secs(60),
        || async {
            let log = op.log();
            let line = log
                .lines()
                .find(|l| l.contains("serving the HTTP trigger endpoint"))?;
            let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
            Some(format!("http://{addr}"))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_trigger_creates_one_run_per_idempotency_key_and_refuses_a_wrong_token() {
    let ns = weir_testenv::env().await.namespace("assets-http").await;
    install_crds(&ns).await;
    let op = Operator::start_with(&ns, None, &["--trigger-addr", "127.0.0.1:0"]);
    let token = "s3cret-token-for-the-loader";
    ns.apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: etl-trigger}}
stringData: {{token: "{token}"}}
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: etl}}
spec:
  httpTrigger: {{secretName: etl-trigger}}
  params: [{{name: day}}]
  tasks:
    - name: t
      image: busybox
      command: [sh, -c, 'echo {{{{ params.day }}}}']
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: closed}}
spec:
  tasks: [{{name: t, image: busybox, command: ["true"]}}]
---
apiVersion: weir.dev/v1alpha1
kind: Asset
metadata: {{name: {object}}}
spec:
  name: raw/orders
  httpTrigger: {{secretName: etl-trigger}}
"#,
        object = object_name("raw/orders"),
    ));
    let base = trigger_base(&op).await;
    let path = format!("/v1/namespaces/{}/pipelines/etl/runs", ns.name());
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("idempotency-key", "order-42"),
    ];
    let body = r#"{"params": {"day": "2024-03-01"}}"#.to_string();
    let (status, first) = call(&base, &path, &headers, body.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["created"], true);
    // The same call again (a client that did not see the answer): the same run, not a new one.
    let (status, again) = call(&base, &path, &headers, body.clone()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (again["run"].clone(), again["created"].clone()),
        (first["run"].clone(), false.into())
    );
    let runs: Api<PipelineRun> = ns.api();
    let http_runs = runs
        .list(&ListParams::default().labels(&format!("{}=http", labels::TRIGGER)))
        .await
        .unwrap()
        .items;
    assert_eq!(http_runs.len(), 1);
    let run = wait_run_done(&ns, first["run"].as_str().unwrap(), LONG).await;
    assert_eq!(phase(&run), RunPhase::Succeeded);
    assert_eq!(
        task_run(&ns, &run.name_any(), "t").await.spec.command[2],
        "echo 2024-03-01"
    );

    // Refusals, each with a JSON message.
    let wrong = [
        ("authorization", "Bearer s3cret-token-for-the-loadeR"),
        ("content-type", "application/json"),
    ];
    // (path, headers, body, the status, what the error says)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        (path.clone(), wrong.to_vec(), body.clone(), 401, "wrong token"),
        (
            path.clone(),
            vec![("content-type", "application/json")],
            body.clone(),
            401,
            "Authorization: Bearer",
        ),
        (
            path.clone(),
            headers.to_vec(),
            r#"{"params": {"dya": "x"}}"#.into(),
            400,
            "dya",
        ),
        (
            path.clone(),
            headers.to_vec(),
            "x".repeat(70_000),
            413,
            "larger than",
        ),
        (
            path.clone(),
            vec![("authorization", auth.as_str())],
            body.clone(),
            415,
            "application/json",
        ),
        (
            format!("/v1/namespaces/{}/pipelines/closed/runs", ns.name()),
            headers.to_vec(),
            body.clone(),
            403,
            "accepts no HTTP triggers",
        ),
        (
            format!("/v1/namespaces/{}/pipelines/nope/runs", ns.name()),
            headers.to_vec(),
            body.clone(),
            404,
            "no pipeline nope",
        ),
        (
            "/v1/namespaces/elsewhere/pipelines/etl/runs".into(),
            headers.to_vec(),
            body.clone(),
            404,
            "does not serve namespace",
        ),
    ];
    for (path, headers, body, want, says) in cases {
        let (status, reply) = call(&base, &path, &headers, body).await;
        let error = reply["error"].as_str().unwrap_or_default().to_string();
        assert_eq!(status, want, "{path}: {reply}");
        assert!(error.contains(says), "{path}: {error:?} should say {says:?}");
    }
    let still = runs
        .list(&ListParams::default().labels(&format!("{}=http", labels::TRIGGER)))
        .await
        .unwrap();
    assert_eq!(still.items.len(), 1, "no refused call made a run");

    // Asset events: with the Asset's token, once per key.
    let events = format!("/v1/namespaces/{}/asset-events", ns.name());
    let event = r#"{"asset": "raw/orders", "extra": {"batch": "7"}}"#.to_string();
    for _ in 0..2 {
        let (status, reply) = call(&base, &events, &headers, event.clone()).await;
        assert_eq!((status, reply["sequence"].clone()), (200, 1.into()), "{reply}");
    }
    let (status, reply) = call(&base, &events, &wrong, event).await;
    assert_eq!(status, 401, "{reply}");
    let (status, reply) = call(&base, &events, &headers, r#"{"asset": "raw/unknown"}"#.into()).await;
    assert_eq!(status, 403, "{reply}");
    let recorded = asset(&ns, "raw/orders").await.status.unwrap();
    assert_eq!(recorded.sequence, 1);
    assert_eq!(recorded.events[0].source, "http");
    assert_eq!(recorded.events[0].extra["batch"], "7");
}
