//! `weir cancel RUN`: sets the run's `spec.cancelled` (a merge patch of that one field):
//! the operator stops running tasks, cancels pending ones, and still runs `finally` tasks.

use super::cluster::{ClusterArgs, Explain as _, PIPELINE_RUNS, connect, patch_params};
use super::runs;
use crate::api::{PipelineRun, RunPhase};
use kube::api::Patch;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The PipelineRun to cancel.
    run: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Wait until the run has stopped (its `finally` tasks done), showing progress.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "10m", requires = "wait")]
    timeout: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(cancel(args))
}

async fn cancel(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = connect(&args.cluster).await?;
    let name = &args.run;
    match request_cancel(&cluster, name).await? {
        Cancel::AlreadyFinished(done) => {
            println!("pipelinerun {name} already finished ({done}): nothing to cancel");
            return Ok(ExitCode::SUCCESS);
        }
        Cancel::AlreadyRequested => println!("pipelinerun {name} is already being cancelled"),
        Cancel::Requested => {
            println!("pipelinerun {name} cancelled: running tasks are stopped, finally tasks still run")
        }
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let timeout =
        crate::engine::duration::parse(&args.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let code = super::wait::follow(&cluster, name, timeout, Default::default()).await?;
    // The run ending Cancelled is what was asked for.
    let view = runs::view(&runs::fetch(&cluster, name, false).await?);
    Ok(match view.run_phase() {
        Some(RunPhase::Cancelled) => ExitCode::SUCCESS,
        _ => code,
    })
}

/// What asking to cancel a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// The run had finished already (its phase): nothing was written.
    AlreadyFinished(String),
    /// `spec.cancelled` was set already.
    AlreadyRequested,
    /// `spec.cancelled` is now set.
    Requested,
}

/// Sets the run's `spec.cancelled` (one field, merge patch) unless it finished or is
/// already cancelled: `weir cancel` and the UI.
pub async fn request_cancel(cluster: &super::cluster::Cluster, name: &str) -> anyhow::Result<Cancel> {
    let api = cluster.api::<PipelineRun>();
    let run = api
        .get(name)
        .await
        .explain(cluster, "get", PIPELINE_RUNS, Some(name))?;
    let phase = run.status.as_ref().and_then(|s| s.phase);
    if let Some(done) = phase.filter(|p| p.is_terminal()) {
        return Ok(Cancel::AlreadyFinished(format!("{done:?}")));
    }
    if run.spec.cancelled {
        return Ok(Cancel::AlreadyRequested);
    }
    let patch = serde_json::json!({"spec": {"cancelled": true}});
    api.patch(name, &patch_params(), &Patch::Merge(&patch))
        .await
        .explain(cluster, "patch", PIPELINE_RUNS, Some(name))?;
    Ok(Cancel::Requested)
}
