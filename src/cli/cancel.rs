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
    let api = cluster.api::<PipelineRun>();
    let name = &args.run;
    let run = api
        .get(name)
        .await
        .explain(&cluster, "get", PIPELINE_RUNS, Some(name))?;
    let phase = run.status.as_ref().and_then(|s| s.phase);
    if let Some(done) = phase.filter(|p| p.is_terminal()) {
        println!("pipelinerun {name} already finished ({done:?}): nothing to cancel");
        return Ok(ExitCode::SUCCESS);
    }
    if run.spec.cancelled {
        println!("pipelinerun {name} is already being cancelled");
    } else {
        let patch = serde_json::json!({"spec": {"cancelled": true}});
        api.patch(name, &patch_params(), &Patch::Merge(&patch))
            .await
            .explain(&cluster, "patch", PIPELINE_RUNS, Some(name))?;
        println!("pipelinerun {name} cancelled: running tasks are stopped, finally tasks still run");
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
