//! `--wait` of `trigger`, `rerun` and `cancel`: follows one run to its end with the progress
//! display of `weir run` (one line per task redrawn in place on a terminal, a line per
//! change otherwise), then prints the summary table and the outcome. The exit code is 0
//! only when the run succeeded.

use super::cluster::Cluster;
use super::output::say;
use super::runs::{self, RunView};
use crate::api::{RunPhase, TaskPhase};
use crate::local::progress::{self, Progress, Row};
use jiff::Timestamp;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code of a run that did not succeed.
pub const RUN_FAILED: u8 = 1;
/// Exit code when watching was stopped by Ctrl-C (the shell's 128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// What to wait for before the run's phase counts.
#[derive(Clone, Debug, Default)]
pub struct Until {
    /// A rerun request: the run's finished state from before it is applied does not count.
    pub rerun_request: Option<String>,
}

/// How long after a rerun request the operator is expected to have applied it; past it,
/// a note says it has not.
const RERUN_PATIENCE: Duration = Duration::from_secs(30);

/// Follows the run until it finished (or `timeout` passed: an error), showing progress.
pub async fn follow(
    cluster: &Cluster,
    name: &str,
    timeout: Duration,
    until: Until,
) -> anyhow::Result<ExitCode> {
    let live = super::output::is_terminal();
    let mut display = Progress::new(live, super::output::colored());
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let mut noted_queue = false;
    let mut noted_rerun = false;
    loop {
        let view = runs::view(&runs::fetch(cluster, name, true).await?);
        let now = Timestamp::now();
        let waiting_for_rerun = until
            .rerun_request
            .as_ref()
            .is_some_and(|r| view.rerun.as_ref().map(|a| &a.request) != Some(r));
        if waiting_for_rerun && !noted_rerun && started.elapsed() > RERUN_PATIENCE {
            noted_rerun = true;
            display.note(&format!(
                "note: after {}, the operator has not applied the rerun request yet (status.rerun); is it running, and a version that supports reruns?",
                progress::elapsed(RERUN_PATIENCE)
            ));
        }
        if view.phase == crate::api::reasons::QUEUED && !noted_queue {
            noted_queue = true;
            display.note(&format!(
                "queued: {}",
                view.message.as_deref().unwrap_or("waiting under maxActiveRuns")
            ));
        }
        let rows = view.rows(now);
        // The operator records a request it refuses, with no task, and leaves the run as
        // it was: there is nothing to follow.
        let refused = until.rerun_request.is_some()
            && !waiting_for_rerun
            && view.rerun.as_ref().is_some_and(|r| r.tasks.is_empty());
        if refused && view.is_finished() {
            display.finish();
            let request = until.rerun_request.as_deref().unwrap_or_default();
            // The status says why; an operator older than `status.rerun.refused` said so
            // only in an Event.
            let why = match view.rerun.as_ref().and_then(|r| r.refused.clone()) {
                Some(why) => why,
                None => refusal(cluster, name, request).await,
            };
            anyhow::bail!("the operator did not apply rerun request {request} of {name}: {why}");
        }
        if view.is_finished() && !waiting_for_rerun {
            display.update(&rows, &footer(&view, &rows, now));
            display.finish();
            return Ok(outcome(&view, &rows, now));
        }
        if waiting_for_rerun {
            // The run's state from before the request is not the rerun's: show none yet.
            let request = until.rerun_request.as_deref().unwrap_or_default();
            display.update(
                &[],
                &format!("waiting for the operator to apply rerun request {request}"),
            );
        } else {
            display.update(&rows, &footer(&view, &rows, now));
        }
        if tokio::time::Instant::now() >= deadline {
            display.finish();
            anyhow::bail!(
                "gave up waiting after {}: run {name} is {} (follow it with: weir get {name} --watch)",
                crate::engine::duration::format(timeout),
                view.phase
            );
        }
        let tick = if live {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = tokio::signal::ctrl_c() => {
                display.finish();
                eprintln!("stopped waiting; run {name} goes on (weir get {name} --watch, weir cancel {name})");
                return Ok(ExitCode::from(INTERRUPTED));
            }
        }
    }
}

/// Why the operator refused a rerun request, from its `RerunRefused` Event, for an operator
/// that does not write `status.rerun.refused` (best effort: reading Events needs its own
/// permission). The operator publishes the Event just after the status that shows the
/// refusal, so it is looked for again for a few seconds.
async fn refusal(cluster: &Cluster, run: &str, request: &str) -> String {
    use k8s_openapi::api::core::v1::Event;
    let params = kube::api::ListParams::default().fields(&format!(
        "involvedObject.name={run},reason={}",
        crate::api::reasons::RERUN_REFUSED
    ));
    let patience = tokio::time::Instant::now() + EVENT_PATIENCE;
    loop {
        let found = match cluster.api::<Event>().list(&params).await {
            Ok(events) => events
                .items
                .into_iter()
                .filter_map(|e| e.message)
                .rfind(|m| m.contains(request)),
            // No permission to read Events (or no answer): nothing to wait for.
            Err(_) => break,
        };
        if let Some(why) = found {
            return why;
        }
        if tokio::time::Instant::now() >= patience {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    format!("see its Events (kubectl describe pipelinerun {run})")
}

/// How long to look for the Event that says why a rerun request was refused, once the
/// status shows it was.
const EVENT_PATIENCE: Duration = Duration::from_secs(10);

fn footer(view: &RunView, rows: &[Row], now: Timestamp) -> String {
    let done = rows.iter().filter(|r| r.phase.is_terminal()).count();
    let running = rows
        .iter()
        .filter(|r| matches!(r.phase, TaskPhase::Running | TaskPhase::Retrying))
        .count();
    let took = view
        .duration(now)
        .map(progress::elapsed)
        .unwrap_or_else(|| "not started".into());
    format!(
        "{} {}: {done}/{} done, {running} running, {took} · Ctrl-C stops waiting (the run goes on)",
        view.name,
        view.phase,
        rows.len()
    )
}

/// The summary table, the outcome line, and for failures where to look next.
fn outcome(view: &RunView, rows: &[Row], now: Timestamp) -> ExitCode {
    say(&format!("\n{}", progress::summary_table(rows)));
    let took = view.duration(now).map(progress::elapsed).unwrap_or_default();
    let why = match (&view.reason, &view.message) {
        (Some(r), Some(m)) => format!(" ({r}: {m})"),
        (Some(r), None) => format!(" ({r})"),
        _ => String::new(),
    };
    let name = &view.name;
    match view.run_phase() {
        Some(RunPhase::Succeeded) => {
            say(&format!("run {name} succeeded in {took}"));
            ExitCode::SUCCESS
        }
        phase => {
            let word = if phase == Some(RunPhase::Cancelled) {
                "was cancelled"
            } else {
                "failed"
            };
            say(&format!("run {name} {word}{why} after {took}"));
            let mut failed: Vec<&str> = rows
                .iter()
                .filter(|r| r.phase == TaskPhase::Failed)
                .map(|r| r.label.split('[').next().unwrap_or(&r.label))
                .collect();
            failed.dedup();
            for task in failed {
                say(&format!("  logs of {task}: weir logs {name} {task}"));
            }
            ExitCode::from(RUN_FAILED)
        }
    }
}
