//! `weir suspend PIPELINE` / `weir resume PIPELINE`: stops or restarts a Pipeline's
//! schedule by writing `spec.schedule.suspend` alone, in a merge patch under the field
//! manager `weir`. Runs already created go on.
//!
//! A Pipeline's spec usually belongs to Git: when its manifest sets `suspend`, Argo CD (on
//! sync or self-heal) or Flux sets it back to what Git says. The command says so when the
//! Pipeline carries a GitOps tool's tracking label or annotation.

use super::backfill::get_pipeline;
use super::cluster::{ClusterArgs, Explain as _, PIPELINES, connect, patch_params};
use crate::api::Pipeline;
use anyhow::bail;
use kube::ResourceExt as _;
use kube::api::Patch;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The Pipeline whose schedule to suspend or resume.
    pipeline: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn suspend(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(set_suspend(args, true))
}

pub fn resume(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(set_suspend(args, false))
}

async fn set_suspend(args: Args, suspend: bool) -> anyhow::Result<ExitCode> {
    let cluster = connect(&args.cluster).await?;
    let name = &args.pipeline;
    let word = if suspend { "suspended" } else { "resumed" };
    let outcome = set_suspended(&cluster, name, suspend).await?;
    if !outcome.changed {
        println!("pipeline {name}: schedule already {word}");
        return Ok(ExitCode::SUCCESS);
    }
    if suspend {
        println!(
            "pipeline {name}: schedule suspended ({}); runs already created go on",
            outcome.cron
        );
    } else {
        println!("pipeline {name}: schedule resumed ({})", outcome.cron);
    }
    if let Some(tool) = outcome.gitops {
        println!(
            "warning: {tool} manages this Pipeline: if its manifest in Git sets spec.schedule.suspend, the next sync sets it back (see docs/cli.md); to make the change last, make it in Git"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What suspending or resuming a schedule did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspended {
    /// Whether the field was written (false: it was so already).
    pub changed: bool,
    /// The schedule's cron expression.
    pub cron: String,
    /// The GitOps tool that manages the Pipeline and may set the field back.
    pub gitops: Option<&'static str>,
}

/// Writes `spec.schedule.suspend` alone (`weir suspend|resume` and the UI).
pub async fn set_suspended(
    cluster: &super::cluster::Cluster,
    name: &str,
    suspend: bool,
) -> anyhow::Result<Suspended> {
    let pipeline = get_pipeline(cluster, name).await?;
    let Some(schedule) = &pipeline.spec.schedule else {
        bail!("pipeline {name} has no schedule: there is nothing to suspend or resume");
    };
    let mut outcome = Suspended {
        changed: false,
        cron: schedule.cron.clone(),
        gitops: gitops_owner(&pipeline),
    };
    if schedule.suspend == suspend {
        return Ok(outcome);
    }
    // `null` on resume removes the field rather than writing its default, so a Pipeline
    // whose manifest in Git does not mention `suspend` matches Git again.
    let value = if suspend {
        serde_json::json!(true)
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({"spec": {"schedule": {"suspend": value}}});
    cluster
        .api::<Pipeline>()
        .patch(name, &patch_params(), &Patch::Merge(&patch))
        .await
        .explain(cluster, "patch", PIPELINES, Some(name))?;
    outcome.changed = true;
    Ok(outcome)
}

/// The GitOps tool whose tracking label or annotation the object carries, if any.
fn gitops_owner(pipeline: &Pipeline) -> Option<&'static str> {
    let has = |key: &str| pipeline.labels().contains_key(key) || pipeline.annotations().contains_key(key);
    if has("argocd.argoproj.io/tracking-id") || has("argocd.argoproj.io/instance") {
        Some("Argo CD")
    } else if has("kustomize.toolkit.fluxcd.io/name") || has("helm.toolkit.fluxcd.io/name") {
        Some("Flux")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(meta: serde_json::Value) -> Pipeline {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": meta,
            "spec": {"tasks": []},
        }))
        .unwrap()
    }

    #[test]
    fn gitops_tools_are_recognised_by_their_tracking_marks() {
        let argo = pipeline(
            serde_json::json!({"name": "p", "annotations": {"argocd.argoproj.io/tracking-id": "app:weir.dev/Pipeline:ns/p"}}),
        );
        assert_eq!(gitops_owner(&argo), Some("Argo CD"));
        let flux = pipeline(
            serde_json::json!({"name": "p", "labels": {"kustomize.toolkit.fluxcd.io/name": "pipelines"}}),
        );
        assert_eq!(gitops_owner(&flux), Some("Flux"));
        assert_eq!(gitops_owner(&pipeline(serde_json::json!({"name": "p"}))), None);
    }
}
