//! Weir beside a bare Kubernetes client, in one run on the real test control plane, each
//! seen by a separate watch client (as a person running `kubectl get jobs -w` would):
//!
//! - **chain**: a 50-task chain of no-op tasks; for each link, the time from the moment a Job
//!   is seen complete to the moment its successor's Job is seen created. The baseline is a
//!   client that watches Jobs and creates Job N+1 as soon as it sees Job N complete.
//! - **fan**: 120 independent no-op tasks; the Job-creation rate (Jobs per second from the
//!   first Job seen to the last) and the time until every Job completed. The baseline
//!   creates the 120 Jobs itself, one request after another.
//!
//! Prints both and their ratio: absolute times on a shared machine are noisy, the ratio
//! less so. Issue 14's goals: hop p50 <= 3x and p95 <= 4x the bare client's, a creation
//! rate >= 60 % of the bare client's, and the fan's end-to-end time within 5 %.
//!
//! Run: `cargo bench --bench chain_latency` (starts or reuses the test environment).
//! `WEIR_BENCH_ONLY=fan` (or `chain`) runs one half, Weir and its baseline, while working
//! on it.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{JobEvent, JobRecorder, Operator, install_crds, wait_run_done};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use std::time::{Duration, Instant};
use weir_testenv::TestNamespace;

const CHAIN: usize = 50;
const FAN: usize = 120;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("WEIR_BENCH_ONLY").unwrap_or_default();
    runtime.block_on(async {
        let env = weir_testenv::env().await;
        header();
        if only != "fan" {
            let (weir, bare) = chains(env).await;
            report_chain(&weir, &bare);
        }
        if only != "chain" {
            let (weir, bare) = fans(env).await;
            report_fan(&weir, &bare);
        }
    });
}

/// Runs `tasks` as the PipelineRun `name` with Weir, in a namespace of its own that is gone
/// when this returns: the Jobs seen, and when the run was applied.
async fn with_weir(env: &'static weir_testenv::TestEnv, name: &str, tasks: &str) -> (Vec<JobEvent>, Instant) {
    let ns = env.namespace(&format!("bench-{name}")).await;
    install_crds(&ns).await;
    let operator = Operator::start(&ns);
    let jobs = JobRecorder::start(&ns).await;
    let started = Instant::now();
    ns.apply(&format!(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {{name: {name}}}\nspec:\n  pipelineSpec:\n    tasks:\n{tasks}"
    ));
    let run = wait_run_done(&ns, name, Duration::from_secs(600)).await;
    assert_eq!(common::phase(&run), weir::api::RunPhase::Succeeded);
    let events = jobs.events();
    drop((operator, jobs));
    gone(ns);
    (events, started)
}

/// The chain, driven by Weir, then by the bare client: each one's hops.
async fn chains(env: &'static weir_testenv::TestEnv) -> (Vec<Duration>, Vec<Duration>) {
    let (events, _) = with_weir(env, "chain", &common::chain_tasks(CHAIN, "true")).await;
    let weir_chain = hops(&events);
    let bare_chain = {
        let ns = env.namespace("bench-chain-bare").await;
        let jobs = JobRecorder::start(&ns).await;
        bare_chain(&ns, &jobs).await;
        let hops = hops(&jobs.events());
        drop(jobs);
        gone(ns);
        hops
    };
    (weir_chain, bare_chain)
}

/// The fan, driven by Weir, then by the bare client.
async fn fans(env: &'static weir_testenv::TestEnv) -> (Fan, Fan) {
    let tasks: String = (0..FAN)
        .map(|i| format!("      - {{name: f{i}, image: busybox, command: [sh, -c, 'true']}}\n"))
        .collect();
    let (events, started) = with_weir(env, "fan", &tasks).await;
    let weir_fan = fan(&events, started);
    let bare_fan = {
        let ns = env.namespace("bench-fan-bare").await;
        let jobs = JobRecorder::start(&ns).await;
        let started = Instant::now();
        let api: Api<Job> = ns.api();
        for i in 0..FAN {
            api.create(&PostParams::default(), &job(&format!("f{i}")))
                .await
                .unwrap();
        }
        wait_jobs_done(&jobs, FAN).await;
        let fan = fan(&jobs.events(), started);
        drop(jobs);
        gone(ns);
        fan
    };
    (weir_fan, bare_fan)
}

/// Deletes a measured namespace and waits until it is gone: the namespace controller's
/// deletion of hundreds of Jobs, pods and TaskRuns would otherwise run under the next
/// measurement (it made the bare client's rate vary by 3x between runs).
fn gone(ns: TestNamespace) {
    let status = ns
        .kubectl_command()
        .args(["delete", "namespace", ns.name(), "--wait=true", "--timeout=300s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("kubectl runs");
    assert!(status.success(), "namespace {} deleted", ns.name());
}

/// A no-op Job that the recorder files under `task`.
fn job(task: &str) -> Job {
    let labels = serde_json::json!({"weir.dev/task": task, "weir.dev/attempt": "1"});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": task, "labels": labels},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [
                {"name": "task", "image": "busybox", "command": ["sh", "-c", "true"]}
            ]},
        }},
    }))
    .unwrap()
}

/// The baseline chain: create `s0`, then `s{i+1}` as soon as the watch shows `s{i}` complete.
async fn bare_chain(ns: &TestNamespace, jobs: &JobRecorder) {
    let api: Api<Job> = ns.api();
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    api.create(&PostParams::default(), &job("s0")).await.unwrap();
    let mut next = 1;
    while next < CHAIN {
        let Some(Ok(seen)) = stream.next().await else {
            continue;
        };
        let complete = seen
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Complete" && c.status == "True"));
        if complete && seen.metadata.name.as_deref() == Some(&format!("s{}", next - 1)) {
            api.create(&PostParams::default(), &job(&format!("s{next}")))
                .await
                .unwrap();
            next += 1;
        }
    }
    wait_jobs_done(jobs, CHAIN).await;
}

async fn wait_jobs_done(jobs: &JobRecorder, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while finished(&jobs.events()).len() < count {
        assert!(Instant::now() < deadline, "{count} Jobs did not complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn finished(events: &[JobEvent]) -> Vec<(String, Instant)> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Finished { task, at, .. } => Some((task.clone(), *at)),
            _ => None,
        })
        .collect()
}

fn created(events: &[JobEvent]) -> Vec<(String, Instant)> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Created { task, at, .. } => Some((task.clone(), *at)),
            _ => None,
        })
        .collect()
}

/// Each link's gap from `s{i-1}` complete to `s{i}` created, sorted.
fn hops(events: &[JobEvent]) -> Vec<Duration> {
    let (done, made) = (finished(events), created(events));
    let at =
        |list: &[(String, Instant)], task: String| list.iter().find(|(t, _)| *t == task).map(|(_, at)| *at);
    let mut gaps: Vec<Duration> = (1..CHAIN)
        .filter_map(|i| {
            let done = at(&done, format!("s{}", i - 1))?;
            Some(at(&made, format!("s{i}"))?.saturating_duration_since(done))
        })
        .collect();
    gaps.sort();
    assert_eq!(gaps.len(), CHAIN - 1, "every link measured");
    gaps
}

/// Jobs per second from the first Job seen to the last, and the time from `started` until
/// every Job completed.
struct Fan {
    rate: f64,
    total: Duration,
}

fn fan(events: &[JobEvent], started: Instant) -> Fan {
    let made: Vec<Instant> = created(events).into_iter().map(|(_, at)| at).collect();
    let done: Vec<Instant> = finished(events).into_iter().map(|(_, at)| at).collect();
    assert_eq!(
        (made.len(), done.len()),
        (FAN, FAN),
        "every Job created and finished once"
    );
    let first = made.iter().min().unwrap();
    let last = made.iter().max().unwrap();
    let span = last.duration_since(*first).as_secs_f64().max(1e-3);
    Fan {
        rate: (FAN - 1) as f64 / span,
        total: done.iter().max().unwrap().duration_since(started),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report_chain(weir_chain: &[Duration], bare_chain: &[Duration]) {
    let ratio = |a: Duration, b: Duration| ms(a) / ms(b).max(1e-3);
    let (wp50, wp95) = (percentile(weir_chain, 0.5), percentile(weir_chain, 0.95));
    let (bp50, bp95) = (percentile(bare_chain, 0.5), percentile(bare_chain, 0.95));
    println!(
        "{:<44} {:>9.1} ms {:>9.1} ms {:>7.1}x",
        format!("chain of {CHAIN}: hop p50"),
        ms(wp50),
        ms(bp50),
        ratio(wp50, bp50)
    );
    println!(
        "{:<44} {:>9.1} ms {:>9.1} ms {:>7.1}x",
        format!("chain of {CHAIN}: hop p95"),
        ms(wp95),
        ms(bp95),
        ratio(wp95, bp95)
    );
}

fn header() {
    println!("{:<44} {:>12} {:>12} {:>8}", "", "weir", "bare client", "ratio");
}

fn report_fan(weir_fan: &Fan, bare_fan: &Fan) {
    println!(
        "{:<44} {:>8.1} /s {:>8.1} /s {:>7.0} %",
        format!("fan of {FAN}: Jobs created per second"),
        weir_fan.rate,
        bare_fan.rate,
        100.0 * weir_fan.rate / bare_fan.rate.max(1e-3)
    );
    println!(
        "{:<44} {:>10.1} s {:>10.1} s {:>7.0} %",
        format!("fan of {FAN}: all Jobs complete"),
        weir_fan.total.as_secs_f64(),
        bare_fan.total.as_secs_f64(),
        100.0 * weir_fan.total.as_secs_f64() / bare_fan.total.as_secs_f64().max(1e-3)
    );
}
