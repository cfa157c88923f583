//! `weir list [PIPELINE]`: recent runs, newest first, with phase, progress, start and
//! duration; filtered by pipeline, phase, trigger and label selector.

use super::cluster::{ClusterArgs, Explain as _, PIPELINE_RUNS, connect};
use super::output::{self, Format, say};
use super::runs::phase_text;
use crate::api::{PipelineRun, labels};
use jiff::Timestamp;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Only runs of this Pipeline.
    pipeline: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// List runs in every namespace.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
    /// Only runs in these phases (repeat, or `Failed,Running`): Pending, Queued, Running,
    /// Succeeded, Failed, Cancelled. Case does not matter.
    #[arg(long, value_name = "PHASE", value_delimiter = ',')]
    phase: Vec<String>,
    /// Only runs made this way: schedule, manual, backfill, asset or http.
    #[arg(long, value_name = "TRIGGER")]
    trigger: Option<String>,
    /// Only runs matching this label selector (`-l team=data,env!=dev`), as kubectl takes it.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// Show at most this many runs (the newest); 0 for all.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Output format; `name` prints `pipelinerun/NAME` lines for scripts.
    #[arg(short, long, value_enum, default_value_t = ListFormat::Text)]
    output: ListFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ListFormat {
    Text,
    Json,
    Yaml,
    Name,
}

/// One run as `weir list -o json|yaml` prints it.
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    name: String,
    namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger: Option<String>,
    phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logical_date: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_time: Option<Timestamp>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(list(args))
}

const PHASES: [&str; 6] = ["Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled"];

/// The phases asked for, spelt as the API spells them.
fn wanted_phases(given: &[String]) -> anyhow::Result<Vec<&'static str>> {
    given
        .iter()
        .map(|p| {
            PHASES
                .iter()
                .find(|known| known.eq_ignore_ascii_case(p.trim()))
                .copied()
                .ok_or_else(|| anyhow::anyhow!("--phase {p:?}: not a phase (one of {})", PHASES.join(", ")))
        })
        .collect()
}

async fn list(args: Args) -> anyhow::Result<ExitCode> {
    let phases = wanted_phases(&args.phase)?;
    let cluster = connect(&args.cluster).await?;
    let api: Api<PipelineRun> = if args.all_namespaces {
        Api::all(cluster.client.clone())
    } else {
        cluster.api()
    };
    let mut selector: Vec<String> = args.selector.iter().cloned().collect();
    if let Some(trigger) = &args.trigger {
        selector.push(format!("{}={trigger}", labels::TRIGGER));
    }
    let mut params = ListParams::default();
    if !selector.is_empty() {
        params = params.labels(&selector.join(","));
    }
    let runs = api
        .list(&params)
        .await
        .explain(&cluster, "list", PIPELINE_RUNS, None)?
        .items;
    let mut items: Vec<Item> = runs
        .iter()
        .map(item)
        .filter(|i| args.pipeline.is_none() || i.pipeline == args.pipeline)
        .filter(|i| {
            phases.is_empty()
                || phases.contains(&i.phase.as_str())
                || (i.phase == "Queued" && phases.contains(&"Pending"))
        })
        .collect();
    // Newest first: by start, else creation (queued runs have not started).
    items.sort_by(|a, b| {
        let key = |i: &Item| i.start_time.or(i.created);
        key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name))
    });
    let total = items.len();
    if args.limit > 0 {
        items.truncate(args.limit);
    }
    match args.output {
        ListFormat::Json => output::print_data(Format::Json, &items)?,
        ListFormat::Yaml => output::print_data(Format::Yaml, &items)?,
        ListFormat::Name => {
            for i in &items {
                say(&format!("pipelinerun/{}", i.name));
            }
        }
        ListFormat::Text if items.is_empty() => {
            let scope = if args.all_namespaces {
                "in any namespace".to_string()
            } else {
                format!("in namespace {}", cluster.namespace)
            };
            eprintln!("no runs {scope} match");
        }
        ListFormat::Text => {
            for line in output::table(&rows(&items, args.all_namespaces, Timestamp::now())) {
                say(&line);
            }
            if total > items.len() {
                eprintln!(
                    "({} older run(s) not shown: --limit 0 shows all)",
                    total - items.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn item(run: &PipelineRun) -> Item {
    let status = run.status.as_ref();
    Item {
        name: run.name_any(),
        namespace: run.namespace().unwrap_or_default(),
        pipeline: run.spec.pipeline_ref.as_ref().map(|r| r.name.clone()),
        trigger: run.labels().get(labels::TRIGGER).cloned(),
        phase: phase_text(run),
        progress: status.and_then(|s| s.progress.clone()),
        logical_date: run.spec.logical_date.as_ref().map(|t| t.0),
        created: run.metadata.creation_timestamp.as_ref().map(|t| t.0),
        start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        completion_time: status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0),
    }
}

fn rows(items: &[Item], namespaces: bool, now: Timestamp) -> Vec<Vec<String>> {
    let mut header = vec![
        "NAME", "PIPELINE", "TRIGGER", "PHASE", "PROGRESS", "STARTED", "DURATION",
    ];
    if namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for i in items {
        let took = i.start_time.and_then(|s| {
            let end = i.completion_time.unwrap_or(now);
            Duration::try_from(end.duration_since(s)).ok()
        });
        let mut row = vec![
            i.name.clone(),
            i.pipeline.clone().unwrap_or_else(|| "(inline)".into()),
            i.trigger.clone().unwrap_or_else(|| "-".into()),
            i.phase.clone(),
            i.progress.clone().unwrap_or_else(|| "-".into()),
            i.start_time
                .map(|t| format!("{} ago", output::age(t, now)))
                .unwrap_or_else(|| "-".into()),
            // So far, for a run still going.
            took.map(output::duration).unwrap_or_else(|| "-".into()),
        ];
        if namespaces {
            row.insert(0, i.namespace.clone());
        }
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_matched_whatever_their_case() {
        assert_eq!(
            wanted_phases(&["failed".into(), "Running".into()]).unwrap(),
            ["Failed", "Running"]
        );
        assert!(wanted_phases(&["done".into()]).is_err());
    }

    #[test]
    fn rows_show_progress_start_and_duration() {
        let now: Timestamp = "2026-01-02T10:00:00Z".parse().unwrap();
        let items = vec![
            Item {
                name: "etl-2".into(),
                namespace: "ns".into(),
                pipeline: Some("etl".into()),
                trigger: Some("manual".into()),
                phase: "Running".into(),
                progress: Some("1/3".into()),
                logical_date: None,
                created: None,
                start_time: Some("2026-01-02T09:59:00Z".parse().unwrap()),
                completion_time: None,
            },
            Item {
                name: "etl-1".into(),
                namespace: "ns".into(),
                pipeline: Some("etl".into()),
                trigger: None,
                phase: "Failed".into(),
                progress: Some("3/3".into()),
                logical_date: None,
                created: None,
                start_time: Some("2026-01-02T07:00:00Z".parse().unwrap()),
                completion_time: Some("2026-01-02T07:01:30.5Z".parse().unwrap()),
            },
        ];
        assert_eq!(
            output::table(&rows(&items, false, now)),
            [
                "NAME   PIPELINE  TRIGGER  PHASE    PROGRESS  STARTED  DURATION",
                "etl-2  etl       manual   Running  1/3       60s ago  1m0s",
                "etl-1  etl       -        Failed   3/3       3h ago   1m30s",
            ]
        );
    }
}
