//! `weir trigger`: starts a run of a Pipeline now, by hand (Airflow's "trigger DAG"). The
//! run is owned by the Pipeline and labelled `weir.dev/trigger=manual`; its logical date is
//! now, and its data interval is empty (it starts and ends now). It waits under
//! `maxActiveRuns` like any run.

use super::backfill::{connect, get_pipeline, wait_for_runs};
use crate::api::{PipelineRun, Trigger};
use crate::controller::schedule::new_run;
use crate::engine::schedule::manual_run_name;
use anyhow::{Context as _, bail};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The Pipeline to run.
    pipeline: String,
    /// Namespace of the Pipeline (default: the one of the kubeconfig context).
    #[arg(short, long)]
    namespace: Option<String>,
    /// A parameter of the run, `NAME=VALUE`; repeat for more. A list parameter takes
    /// `a,b,c` or JSON (`'["a","b"]'`).
    #[arg(short, long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Name of the run (default: `<pipeline>-manual-<yyyymmdd>-<hhmmss>`, in UTC).
    #[arg(long)]
    name: Option<String>,
    /// Wait until the run finished, printing progress; exit 1 unless it succeeded.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (for example `30m`).
    #[arg(long, default_value = "1h", requires = "wait")]
    timeout: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(trigger(args))
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
    let params = parse_params(&args.params)?;
    let (client, ns) = connect(args.namespace).await?;
    let pipeline = get_pipeline(&client, &ns, &args.pipeline).await?;
    let now = jiff::Timestamp::now();
    let name = args.name.unwrap_or_else(|| manual_run_name(&args.pipeline, now));
    let run = new_run(&pipeline, &name, Trigger::Manual, now, None)?;
    // Parameters go in as JSON: the operator checks them against the pipeline's
    // declarations (and turns `a,b` into a list where a list is declared).
    let mut object = serde_json::to_value(&run)?;
    if !params.is_empty() {
        object["spec"]["params"] = serde_json::to_value(&params)?;
    }
    let object: DynamicObject = serde_json::from_value(object)?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<PipelineRun>(&()));
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => println!("pipelinerun/{name} created"),
        Err(e) if crate::controller::is_already_exists(&e) => {
            bail!("a run named {name} already exists (choose another with --name)")
        }
        Err(e) => return Err(e).context("creating the run"),
    }
    if let Some(max) = pipeline.spec.max_active_runs {
        println!("maxActiveRuns is {max}: the run waits, queued, while {max} run(s) are active");
    }
    if !args.wait {
        println!("follow it with: kubectl get pipelinerun {name} -n {ns} -w");
        return Ok(ExitCode::SUCCESS);
    }
    let timeout =
        crate::engine::duration::parse(&args.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let runs: Api<PipelineRun> = Api::namespaced(client, &ns);
    let succeeded = wait_for_runs(&runs, std::slice::from_ref(&name), timeout).await?;
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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
}
