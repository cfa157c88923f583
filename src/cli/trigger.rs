//! `weir trigger`: starts a run of a Pipeline now, by hand (Airflow's "trigger DAG"). The
//! run is owned by the Pipeline and labelled `weir.dev/trigger=manual`; its logical date is
//! now, and its data interval is empty (it starts and ends now). It waits under
//! `maxActiveRuns` like any run. `--like RUN` runs an earlier run again as a new run: its
//! params, logical date, data interval and timeout are copied.

use super::backfill::get_pipeline;
use super::cluster::{ClusterArgs, Explain as _, PIPELINE_RUNS, connect, post_params};
use crate::api::{PipelineRun, Trigger};
use crate::controller::schedule::new_run;
use crate::engine::schedule::manual_run_name;
use anyhow::bail;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The Pipeline to run.
    pipeline: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// A parameter of the run, `NAME=VALUE`; repeat for more. A list parameter takes
    /// `a,b,c` or JSON (`'["a","b"]'`). With `--like`, wins over the copied value.
    #[arg(short, long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Run again as a new run: copy the params, logical date, data interval and timeout of
    /// this earlier run of the same pipeline.
    #[arg(long, value_name = "RUN")]
    like: Option<String>,
    /// Name of the run (default: `<pipeline>-manual-<yyyymmdd>-<hhmmss>`, in UTC).
    #[arg(long)]
    name: Option<String>,
    /// Wait until the run finished, showing each task's progress; exit 1 unless it
    /// succeeded.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (for example `30m`).
    #[arg(long, default_value = "1h", requires = "wait")]
    timeout: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(trigger(args))
}

fn parse_params(given: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for item in given {
        let Some((name, value)) = item.split_once('=') else {
            bail!("--param {item:?}: expected NAME=VALUE");
        };
        if name.is_empty() {
            bail!("--param {item:?}: the name is empty");
        }
        if params.insert(name.to_string(), value.to_string()).is_some() {
            bail!("--param {name} is given twice");
        }
    }
    Ok(params)
}

async fn trigger(args: Args) -> anyhow::Result<ExitCode> {
    let given = parse_params(&args.params)?;
    let cluster = connect(&args.cluster).await?;
    let ns = cluster.namespace.clone();
    let pipeline = get_pipeline(&cluster, &args.pipeline).await?;
    let like = match &args.like {
        Some(name) => Some(earlier_run(&cluster, name, &args.pipeline).await?),
        None => None,
    };
    let name = args
        .name
        .unwrap_or_else(|| manual_run_name(&args.pipeline, jiff::Timestamp::now()));
    match create_run(&cluster, &pipeline, &name, &given, like.as_ref(), false).await {
        Ok(()) => println!("pipelinerun/{name} created"),
        Err(TriggerError::BadParams(problems)) => bail!("{}", problems.join("; ")),
        Err(TriggerError::Exists(name)) => {
            bail!("a run named {name} already exists (choose another with --name)")
        }
        Err(TriggerError::Other(e)) => return Err(e),
    }
    if let (Some(earlier), Some(like)) = (&like, &args.like) {
        println!("{}", copied_note(like, earlier));
    }
    if let Some(max) = pipeline.spec.max_active_runs {
        println!("maxActiveRuns is {max}: the run waits, queued, while {max} run(s) are active");
    }
    if !args.wait {
        println!("follow it with: weir get {name} -n {ns} --watch");
        return Ok(ExitCode::SUCCESS);
    }
    let timeout =
        crate::engine::duration::parse(&args.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    super::wait::follow(&cluster, &name, timeout, Default::default()).await
}

/// Why a manual run was not created.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The params do not fit the pipeline's declarations: every problem, each naming its
    /// parameter.
    #[error("{}", .0.join("; "))]
    BadParams(Vec<String>),
    /// A run of that name exists.
    #[error("a run named {0} already exists")]
    Exists(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The params of a manual run, checked with the check the operator makes when the run
/// starts (`engine::params::effective_params`): an unknown
/// name, a missing required one, a string for a list.
pub fn check_params(
    pipeline: &crate::api::Pipeline,
    given: &BTreeMap<String, serde_json::Value>,
) -> Result<(), Vec<String>> {
    crate::engine::params::effective_params(&pipeline.spec, given).map(|_| ())
}

/// Creates a manual run `name` of `pipeline` (as `weir trigger` and the UI do): the params
/// given win over those copied from `like`. With `check`, params that do not fit the
/// pipeline are refused before anything is created (the UI's form); without, the operator
/// fails the run with `InvalidParams` when it starts (what `weir trigger` has always done).
pub async fn create_run(
    cluster: &super::cluster::Cluster,
    pipeline: &crate::api::Pipeline,
    name: &str,
    given: &BTreeMap<String, String>,
    like: Option<&PipelineRun>,
    check: bool,
) -> Result<(), TriggerError> {
    create_run_by(cluster, pipeline, name, given, like, check, Trigger::Manual).await
}

/// [`create_run`], labelled with what triggered it (the HTTP trigger endpoint labels its runs
/// `http`).
pub async fn create_run_by(
    cluster: &super::cluster::Cluster,
    pipeline: &crate::api::Pipeline,
    name: &str,
    given: &BTreeMap<String, String>,
    like: Option<&PipelineRun>,
    check: bool,
    trigger: Trigger,
) -> Result<(), TriggerError> {
    let now = jiff::Timestamp::now();
    let mut run = new_run(pipeline, name, trigger, now, None).map_err(|e| TriggerError::Other(e.into()))?;
    if let Some(earlier) = like {
        copy_from(&mut run, earlier);
    }
    // Parameters go in as JSON strings: the operator turns `a,b` into a list where a list
    // is declared.
    for (k, v) in given {
        run.spec
            .params
            .insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    if check {
        check_params(pipeline, &run.spec.params).map_err(TriggerError::BadParams)?;
    }
    match cluster.api::<PipelineRun>().create(&post_params(), &run).await {
        Ok(_) => Ok(()),
        Err(e) if crate::controller::is_already_exists(&e) => Err(TriggerError::Exists(name.to_string())),
        Err(e) => Err(TriggerError::Other(cluster.explain(
            e,
            super::cluster::Request {
                verb: "create",
                resource: PIPELINE_RUNS,
                name: Some(name),
            },
        ))),
    }
}

/// The run `--like` names, which must be a run of the same pipeline.
async fn earlier_run(
    cluster: &super::cluster::Cluster,
    name: &str,
    pipeline: &str,
) -> anyhow::Result<PipelineRun> {
    let run =
        cluster
            .api::<PipelineRun>()
            .get(name)
            .await
            .explain(cluster, "get", PIPELINE_RUNS, Some(name))?;
    match run.spec.pipeline_ref.as_ref().map(|r| r.name.as_str()) {
        Some(p) if p == pipeline => Ok(run),
        Some(p) => bail!("--like {name}: that is a run of pipeline {p}, not of {pipeline}"),
        None => bail!(
            "--like {name}: that run has an inline pipelineSpec, not a Pipeline: copy it with kubectl instead"
        ),
    }
}

/// What a run made `--like` an earlier one takes from it: what decides what its tasks see
/// (params, logical date, data interval) and its timeout. Not its name, labels, owner or
/// status: it is a new run, triggered by hand.
fn copy_from(run: &mut PipelineRun, earlier: &PipelineRun) {
    run.spec.params = earlier.spec.params.clone();
    if earlier.spec.logical_date.is_some() {
        run.spec.logical_date = earlier.spec.logical_date.clone();
        run.spec.data_interval_start = earlier.spec.data_interval_start.clone();
        run.spec.data_interval_end = earlier.spec.data_interval_end.clone();
    }
    run.spec.timeout = earlier.spec.timeout.clone();
}

fn copied_note(like: &str, earlier: &PipelineRun) -> String {
    let mut parts = Vec::new();
    if !earlier.spec.params.is_empty() {
        let names: Vec<&str> = earlier.spec.params.keys().map(String::as_str).collect();
        parts.push(format!("params {}", names.join(", ")));
    }
    if let Some(t) = &earlier.spec.logical_date {
        parts.push(format!("logical date {}", t.0));
    }
    if earlier.spec.timeout.is_some() {
        parts.push("timeout".to_string());
    }
    if parts.is_empty() {
        format!("copied from {like}: nothing (it has no params, logical date or timeout)")
    } else {
        format!("copied from {like}: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_name_value_pairs() {
        let p = parse_params(&["region=eu".into(), "parts=a,b=c".into()]).unwrap();
        assert_eq!(p["region"], "eu");
        assert_eq!(p["parts"], "a,b=c");
        assert!(parse_params(&["novalue".into()]).is_err());
        assert!(parse_params(&["=x".into()]).is_err());
        assert!(parse_params(&["a=1".into(), "a=2".into()]).is_err());
    }

    #[test]
    fn like_copies_what_tasks_see_and_nothing_of_identity() {
        let earlier: PipelineRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "etl-20260101-020000", "labels": {"weir.dev/trigger": "schedule"}},
            "spec": {
                "pipelineRef": {"name": "etl"},
                "params": {"region": "eu", "parts": ["a", "b"]},
                "logicalDate": "2026-01-01T02:00:00Z",
                "dataIntervalStart": "2026-01-01T02:00:00Z",
                "dataIntervalEnd": "2026-01-02T02:00:00Z",
                "timeout": "1h",
                "cancelled": true,
            },
        }))
        .unwrap();
        let mut run: PipelineRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "etl-manual-x", "labels": {"weir.dev/trigger": "manual"}},
            "spec": {"pipelineRef": {"name": "etl"}, "logicalDate": "2026-03-01T00:00:00Z"},
        }))
        .unwrap();
        copy_from(&mut run, &earlier);
        assert_eq!(run.spec.params, earlier.spec.params);
        assert_eq!(run.spec.logical_date, earlier.spec.logical_date);
        assert_eq!(run.spec.data_interval_end, earlier.spec.data_interval_end);
        assert_eq!(run.spec.timeout.as_deref(), Some("1h"));
        assert!(!run.spec.cancelled);
        assert_eq!(run.metadata.name.as_deref(), Some("etl-manual-x"));
        assert_eq!(run.metadata.labels.unwrap()["weir.dev/trigger"], "manual");
        assert_eq!(
            copied_note("etl-20260101-020000", &earlier),
            "copied from etl-20260101-020000: params parts, region, logical date 2026-01-01T02:00:00Z, timeout"
        );
    }
}
