//! `weir asset update NAME`: records an event on an asset from outside Weir (a loader that is
//! not a Weir pipeline), so that the pipelines whose `spec.assets` names it may start a run.
//! The same write as a task that `produces` the asset: `controller::asset::record_event`.

use super::cluster::{ASSETS, ClusterArgs, Explain as _, connect};
use crate::controller::asset::record_event;
use crate::engine::asset::{NewEvent, check_extra, check_name, object_name};
use anyhow::bail;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Record an update of an asset (creating the Asset on its first update).
    Update(UpdateArgs),
}

#[derive(clap::Args)]
struct UpdateArgs {
    /// The asset's name, for example `warehouse/sales/daily`.
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// An extra value of the event, `KEY=VALUE`, read by consumers as
    /// `{{ assetEvent.extra.KEY }}`; repeat for more.
    #[arg(long = "extra", value_name = "KEY=VALUE")]
    extra: Vec<String>,
    /// The logical date of the data (RFC 3339, or a date, read in UTC).
    #[arg(long, value_name = "DATE")]
    logical_date: Option<String>,
    /// An idempotency key: an update whose key is already in the asset's history is not
    /// recorded again (so a retried loader does not start two runs).
    #[arg(long)]
    key: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Update(args) => super::block_on(update(args)),
    }
}

/// `KEY=VALUE` pairs, each key once.
pub fn parse_extra(given: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut extra = BTreeMap::new();
    for item in given {
        let Some((key, value)) = item.split_once('=') else {
            bail!("--extra {item:?}: expected KEY=VALUE");
        };
        if extra.insert(key.to_string(), value.to_string()).is_some() {
            bail!("--extra {key} is given twice");
        }
    }
    check_extra(&extra).map_err(|e| anyhow::anyhow!("--extra: {e}"))?;
    Ok(extra)
}

async fn update(args: UpdateArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let extra = parse_extra(&args.extra)?;
    let logical_date = match &args.logical_date {
        Some(text) => Some(
            crate::engine::schedule::parse_instant(text, &jiff::tz::TimeZone::UTC)
                .map_err(|e| anyhow::anyhow!("--logical-date: {e}"))?,
        ),
        None => None,
    };
    let cluster = connect(&args.cluster).await?;
    let event = NewEvent {
        source: "cli".into(),
        logical_date,
        extra,
        key: args.key.clone(),
        ..Default::default()
    };
    let object = object_name(&args.name);
    let sequence = match record_event(&cluster.client, &cluster.namespace, &args.name, event).await {
        Ok(sequence) => sequence,
        Err(crate::controller::Error::Kube(e)) => {
            return Err::<ExitCode, _>(e).explain(&cluster, "update", ASSETS, Some(&object));
        }
        Err(e) => return Err(e.into()),
    };
    println!("asset {} (asset/{object}): event {sequence} recorded", args.name);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_values_are_key_value_pairs_given_once() {
        let ok = parse_extra(&["date=2024-03-01".into(), "rows=a=b".into()]).unwrap();
        assert_eq!(ok["date"], "2024-03-01");
        assert_eq!(ok["rows"], "a=b", "only the first = splits");
        let err = |given: &[&str]| {
            let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
            parse_extra(&given).unwrap_err().to_string()
        };
        assert!(err(&["novalue"]).contains("expected KEY=VALUE"));
        assert!(err(&["a=1", "a=2"]).contains("given twice"));
        assert!(err(&["bad key=1"]).contains("extra key"));
    }
}
