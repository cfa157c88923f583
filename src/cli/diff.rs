//! `weir diff A [B]`: what changed between two versions of a pipeline, as a unified diff of
//! their YAML (like `kubectl diff`: exit 0 when they are the same, 1 when they differ).
//!
//! Each side is `run/NAME` (the PipelineRevision the run follows; a bare name is a run),
//! `revision/NAME` (a PipelineRevision) or `pipeline/NAME` (a Pipeline as it is now).
//! Without B, A is compared with what its pipeline is now: the Pipeline a run or revision
//! came from.

use super::cluster::{
    Cluster, ClusterArgs, Explain as _, PIPELINE_REVISIONS, PIPELINE_RUNS, PIPELINES, connect,
};
use crate::api::{Pipeline, PipelineRevision, PipelineRun, PipelineSpec};
use anyhow::{anyhow, bail};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The older version: `RUN`, `run/RUN`, `revision/NAME` or `pipeline/NAME`.
    from: String,
    /// The newer version, in the same forms. Default: the pipeline `from` came from, as it
    /// is now.
    to: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(diff(args))
}

async fn diff(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = connect(&args.cluster).await?;
    let from = version(&cluster, &Side::parse(&args.from)?).await?;
    let to = match &args.to {
        Some(to) => version(&cluster, &Side::parse(to)?).await?,
        None => {
            let Some(pipeline) = from.pipeline.clone() else {
                bail!(
                    "{} has an inline pipelineSpec, not a Pipeline: name a second version to compare it with",
                    from.label
                );
            };
            version(&cluster, &Side::Pipeline(pipeline)).await?
        }
    };
    let text = unified(&from, &to)?;
    if text.is_empty() {
        println!("{} and {} are the same", from.label, to.label);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{text}");
    Ok(ExitCode::from(1))
}

/// One side of the comparison, as named on the command line.
#[derive(Debug, PartialEq)]
enum Side {
    Run(String),
    Revision(String),
    Pipeline(String),
}

impl Side {
    fn parse(arg: &str) -> anyhow::Result<Side> {
        let (kind, name) = arg.split_once('/').unwrap_or(("run", arg));
        if name.is_empty() {
            bail!("{arg:?}: a name is missing after the '/'");
        }
        Ok(match kind {
            "run" | "pipelinerun" | "pr" => Side::Run(name.into()),
            "revision" | "pipelinerevision" | "prev" => Side::Revision(name.into()),
            "pipeline" | "pl" => Side::Pipeline(name.into()),
            other => bail!(
                "{arg:?}: {other:?} is not run, revision or pipeline (write run/NAME, revision/NAME or pipeline/NAME)"
            ),
        })
    }
}

/// A version of a pipeline: its spec, where it came from, and how to call it.
struct Version {
    spec: PipelineSpec,
    pipeline: Option<String>,
    label: String,
}

async fn version(cluster: &Cluster, side: &Side) -> anyhow::Result<Version> {
    match side {
        Side::Run(name) => {
            let run = cluster.api::<PipelineRun>().get(name).await.explain(
                cluster,
                "get",
                PIPELINE_RUNS,
                Some(name),
            )?;
            let Some(followed) = run.status.as_ref().and_then(|s| s.pipeline_revision.clone()) else {
                bail!("pipelinerun {name} has not started: it follows no pipeline version yet");
            };
            let mut version = revision(cluster, &followed).await?;
            version.label = format!("{} (pipelinerun {name})", version.label);
            Ok(version)
        }
        Side::Revision(name) => revision(cluster, name).await,
        Side::Pipeline(name) => {
            let p =
                cluster
                    .api::<Pipeline>()
                    .get(name)
                    .await
                    .explain(cluster, "get", PIPELINES, Some(name))?;
            Ok(Version {
                spec: p.spec,
                pipeline: Some(name.clone()),
                label: format!("pipeline {name} (now)"),
            })
        }
    }
}

async fn revision(cluster: &Cluster, name: &str) -> anyhow::Result<Version> {
    let rev = cluster.api::<PipelineRevision>().get(name).await.explain(
        cluster,
        "get",
        PIPELINE_REVISIONS,
        Some(name),
    )?;
    Ok(Version {
        spec: rev.spec.pipeline_spec,
        pipeline: rev.spec.pipeline,
        label: format!("pipelinerevision {name}"),
    })
}

/// The unified diff of two versions' YAML; empty when they are the same.
fn unified(from: &Version, to: &Version) -> anyhow::Result<String> {
    let yaml = |v: &Version| serde_saphyr::to_string(&v.spec).map_err(|e| anyhow!("{}: {e}", v.label));
    let (a, b) = (yaml(from)?, yaml(to)?);
    if a == b {
        return Ok(String::new());
    }
    Ok(similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(&from.label, &to.label)
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(label: &str, spec: serde_json::Value) -> Version {
        Version {
            spec: serde_json::from_value(spec).unwrap(),
            pipeline: Some("etl".into()),
            label: label.into(),
        }
    }

    #[test]
    fn sides_are_runs_revisions_or_pipelines() {
        assert_eq!(Side::parse("nightly").unwrap(), Side::Run("nightly".into()));
        assert_eq!(
            Side::parse("revision/etl-1").unwrap(),
            Side::Revision("etl-1".into())
        );
        assert_eq!(Side::parse("pipeline/etl").unwrap(), Side::Pipeline("etl".into()));
        let err = Side::parse("job/x").unwrap_err().to_string();
        assert!(err.contains("\"job\" is not run, revision or pipeline"), "{err}");
        assert!(Side::parse("run/").is_err());
    }

    #[test]
    fn a_changed_command_is_one_hunk_and_equal_specs_none() {
        let old = version(
            "a",
            serde_json::json!({"tasks": [
                {"name": "extract", "image": "x", "command": ["run", "v1"]},
                {"name": "load", "image": "x", "dependsOn": ["extract"]},
            ]}),
        );
        let new = version(
            "b",
            serde_json::json!({"tasks": [
                {"name": "extract", "image": "x", "command": ["run", "v2"]},
                {"name": "load", "image": "x", "dependsOn": ["extract"]},
            ]}),
        );
        let text = unified(&old, &new).unwrap();
        assert!(text.starts_with("--- a\n+++ b\n"), "{text}");
        assert!(text.contains("-  - v1\n") || text.contains("- v1"), "{text}");
        assert!(
            text.contains("+  - v2\n") || text.contains("+ v2") || text.contains("v2"),
            "{text}"
        );
        assert_eq!(text.matches("@@ ").count(), 1, "{text}");
        assert_eq!(unified(&old, &old).unwrap(), "");
    }
}
