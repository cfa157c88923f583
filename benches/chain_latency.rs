//! Scheduling latency on the real test control plane: a 50-task chain of no-op tasks, and
//! for each link the time from the moment a Job is seen complete to the moment its
//! successor's Job is seen created, both observed by a separate watch client (as a person
//! running `kubectl get jobs -w` would see them). Prints the median and p95.
//!
//! Run: `cargo bench --bench chain_latency` (starts or reuses the test environment).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{JobEvent, JobRecorder, Operator, install_crds, wait_run_done};
use std::time::Duration;

const TASKS: usize = 50;

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
    runtime.block_on(async {
        let ns = weir_testenv::env().await.namespace("bench-chain").await;
        install_crds(&ns).await;
        let _operator = Operator::start(&ns);
        let jobs = JobRecorder::start(&ns).await;
        ns.apply(&format!(
            "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {{name: chain}}\nspec:\n  pipelineSpec:\n    tasks:\n{}",
            common::chain_tasks(TASKS, "true")
        ));
        let run = wait_run_done(&ns, "chain", Duration::from_secs(600)).await;
        assert_eq!(common::phase(&run), weir::api::RunPhase::Succeeded);

        let events = jobs.events();
        let finished_at = |task: &str| {
            events.iter().find_map(|e| match e {
                JobEvent::Finished { task: t, at, .. } if t == task => Some(*at),
                _ => None,
            })
        };
        let created_at = |task: &str| {
            events.iter().find_map(|e| match e {
                JobEvent::Created { task: t, at, .. } if t == task => Some(*at),
                _ => None,
            })
        };
        let mut gaps: Vec<Duration> = (1..TASKS)
            .filter_map(|i| {
                let done = finished_at(&format!("s{}", i - 1))?;
                let next = created_at(&format!("s{i}"))?;
                Some(next.saturating_duration_since(done))
            })
            .collect();
        gaps.sort();
        assert_eq!(gaps.len(), TASKS - 1, "every link measured");
        let total: Duration = run
            .status
            .as_ref()
            .and_then(|s| s.duration.clone())
            .map(|d| weir::engine::duration::parse(&d).unwrap_or_default())
            .unwrap_or_default();
        println!(
            "chain of {TASKS} no-op tasks: Job complete -> successor Job created: median {:?}, p95 {:?}, max {:?} ({} links); run took {:?}",
            percentile(&gaps, 0.5),
            percentile(&gaps, 0.95),
            gaps.last().unwrap(),
            gaps.len(),
            total
        );
    });
}
