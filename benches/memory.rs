//! The operator's memory with many objects in its caches, on the real test control plane:
//! 1,000 finished PipelineRuns of 10 tasks (10,000 finished TaskRuns) in one namespace,
//! against the same operator watching an empty namespace, in the same run. Issue 14's goal:
//! RSS <= 64 MiB with 10,000 TaskRuns and 1,000 finished runs.
//!
//! Run: `cargo bench --bench memory` (starts or reuses the test environment; creating the
//! objects takes a few minutes). `WEIR_MEMORY_RUNS=100` for a quicker, smaller run.
//! `WEIR_MEMORY_KEEP=1` leaves the filled namespace in place (its name is printed), to
//! profile an operator on it by hand (see docs/operations.md, "Memory").
//! The filled namespace's deletion keeps the control plane's garbage collector busy for
//! minutes afterwards (see the same section).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Operator, install_crds};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::api::{PipelineRun, TaskRun};
use weir_testenv::TestNamespace;

const TASKS_PER_RUN: usize = 10;
/// Issue 14's goal: the operator's RSS with 1,000 finished runs and 10,000 TaskRuns.
const GOAL_MIB: f64 = 64.0;
const GOAL_RUNS: usize = 1_000;

fn main() {
    let runs: usize = std::env::var("WEIR_MEMORY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let env = weir_testenv::env().await;
        let empty = env.namespace("bench-memory-empty").await;
        install_crds(&empty).await;
        let idle = settled_rss(&Operator::start(&empty)).await;

        let full = env.namespace("bench-memory").await;
        let started = Instant::now();
        fill(&full, runs).await;
        let made = started.elapsed();
        let loaded = settled_rss(&Operator::start(&full)).await;
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "made {runs} finished runs and {} TaskRuns in {:.0}s",
            runs * TASKS_PER_RUN,
            made.as_secs_f64()
        );
        println!("{:<52} {:>10}", "", "RSS");
        println!("{:<52} {:>6.1} MiB", "operator, empty namespace", mib(idle));
        println!(
            "{:<52} {:>6.1} MiB",
            format!("operator, {runs} runs and {} TaskRuns", runs * TASKS_PER_RUN),
            mib(loaded)
        );
        println!(
            "{:<52} {:>6.1} MiB ({:.1} KiB per TaskRun)",
            "difference",
            mib(loaded.saturating_sub(idle)),
            loaded.saturating_sub(idle) as f64 / (runs * TASKS_PER_RUN) as f64
        );
        println!("{}", goal_line(runs, mib(loaded)));
        if std::env::var_os("WEIR_MEMORY_KEEP").is_some() {
            println!("kept namespace {} (delete it when done)", full.name());
            std::mem::forget(full);
        }
    });
}

/// The goal's line: the RSS against the goal when measured at the goal's size; a smaller
/// run says that it does not tell.
fn goal_line(runs: usize, loaded_mib: f64) -> String {
    let verdict = |mib: f64| if mib <= GOAL_MIB { "met" } else { "NOT met" };
    if runs == GOAL_RUNS {
        format!(
            "goal: RSS with {} TaskRuns {loaded_mib:.1} MiB <= {GOAL_MIB:.0} MiB: {}",
            GOAL_RUNS * TASKS_PER_RUN,
            verdict(loaded_mib)
        )
    } else {
        format!(
            "goal (RSS <= {GOAL_MIB:.0} MiB with {} TaskRuns) is measured with the default {GOAL_RUNS} runs; this run had {runs}",
            GOAL_RUNS * TASKS_PER_RUN
        )
    }
}

/// Creates `runs` finished runs of `TASKS_PER_RUN` finished TaskRuns each (statuses written
/// through the status subresource, TaskRuns marked `weir.dev/finished`, as the operator
/// would have left them).
async fn fill(ns: &TestNamespace, runs: usize) {
    let run_api: Api<PipelineRun> = ns.api();
    let tr_api: Api<TaskRun> = ns.api();
    futures::stream::iter(0..runs)
        .map(|r| {
            let (run_api, tr_api) = (run_api.clone(), tr_api.clone());
            async move {
                let run = finished_run(&run_api, r).await?;
                for t in 0..TASKS_PER_RUN {
                    finished_task_run(&tr_api, &run, t).await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("objects created");
}

fn done_at() -> serde_json::Value {
    serde_json::json!("2026-12-01T02:00:00Z")
}

async fn finished_run(api: &Api<PipelineRun>, r: usize) -> anyhow::Result<PipelineRun> {
    let tasks: Vec<serde_json::Value> = (0..TASKS_PER_RUN)
        .map(|t| serde_json::json!({"name": format!("task-{t}"), "image": "busybox", "command": ["true"]}))
        .collect();
    let run: PipelineRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "PipelineRun",
        "metadata": {"name": format!("run-{r:05}")},
        "spec": {"pipelineSpec": {"tasks": tasks}},
    }))?;
    let run = api.create(&PostParams::default(), &run).await?;
    let status = serde_json::json!({"status": {
        "phase": "Succeeded", "startTime": done_at(), "completionTime": done_at(),
        "pipelineRevision": "inline-0123456789", "progress": format!("{TASKS_PER_RUN}/{TASKS_PER_RUN}"),
    }});
    api.patch_status(
        &run.metadata.name.clone().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    Ok(run)
}

async fn finished_task_run(api: &Api<TaskRun>, run: &PipelineRun, t: usize) -> anyhow::Result<()> {
    use kube::Resource as _;
    let run_name = run.metadata.name.clone().unwrap_or_default();
    let name = weir::engine::names::task_run_name(&run_name, &format!("task-{t}"));
    let owner = run.controller_owner_ref(&()).expect("run has a uid");
    let tr: TaskRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "TaskRun",
        "metadata": {"name": name, "ownerReferences": [owner],
            "labels": {"weir.dev/pipelinerun-uid": run.metadata.uid, "weir.dev/task": format!("task-{t}"),
                "weir.dev/finished": "true"}},
        "spec": {"taskName": format!("task-{t}"), "image": "busybox", "command": ["true"]},
    }))?;
    api.create(&PostParams::default(), &tr).await?;
    let status = serde_json::json!({"status": {
        "phase": "Succeeded", "startTime": done_at(), "completionTime": done_at(),
        "attempts": [{"number": 1, "jobName": format!("{name}-1"), "phase": "Succeeded",
            "startTime": done_at(), "completionTime": done_at(), "exitCode": 0}],
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// The operator's RSS once it is ready and has had time to reconcile what it found: the
/// largest of a few samples, in KiB.
async fn settled_rss(op: &Operator) -> u64 {
    let addr = op.http_addr().await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !ready(addr).await {
        assert!(Instant::now() < deadline, "the operator never became ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut most = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        most = most.max(rss_kib(op.pid().expect("operator running")));
    }
    most
}

async fn ready(addr: std::net::SocketAddr) -> bool {
    let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if conn.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer).await;
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
