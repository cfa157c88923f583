//! `weir backfill`: creates the runs of every data interval of a Pipeline's schedule whose
//! logical date lies in a range, skipping intervals that already have a run (run names are
//! derived from the logical date, so running the same backfill twice creates nothing new).
//! The operator starts them as `maxActiveRuns` allows; `--wait` follows them to the end.

use super::cluster::{Cluster, ClusterArgs, Explain as _, PIPELINE_RUNS, PIPELINES, connect, post_params};
use crate::api::{Pipeline, PipelineRun, RunPhase, Trigger};
use crate::controller::schedule::new_run;
use crate::engine::schedule::{self, CronSchedule, MAX_INTERVALS};
use anyhow::bail;
use kube::api::Api;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The Pipeline to backfill; it must have a schedule.
    pipeline: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// First logical date: `2024-03-01` (midnight in the schedule's time zone),
    /// `2024-03-01T06:00` (also in that zone) or RFC 3339 (`2024-03-01T06:00:00Z`).
    #[arg(long)]
    from: String,
    /// Last logical date, included (same forms as `--from`; a date alone includes the whole
    /// day).
    #[arg(long)]
    to: String,
    /// Only list the intervals and whether each already has a run.
    #[arg(long)]
    dry_run: bool,
    /// Wait until every run of the range finished, printing progress; exit 1 unless all
    /// succeeded.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long (for example `2h`).
    #[arg(long, default_value = "24h", requires = "wait")]
    timeout: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(backfill(args))
}

/// The Pipeline `name` in the cluster's namespace.
pub(crate) async fn get_pipeline(cluster: &Cluster, name: &str) -> anyhow::Result<Pipeline> {
    cluster
        .api::<Pipeline>()
        .get(name)
        .await
        .explain(cluster, "get", PIPELINES, Some(name))
}

async fn backfill(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = connect(&args.cluster).await?;
    let pipeline = get_pipeline(&cluster, &args.pipeline).await?;
    let (intervals, tz) = intervals_between(&pipeline, (&args.from, "--from"), (&args.to, "--to"))?;
    if intervals.is_empty() {
        let cron = pipeline
            .spec
            .schedule
            .as_ref()
            .map(|s| s.cron.as_str())
            .unwrap_or_default();
        println!(
            "no interval of {cron:?} starts between {} and {}",
            args.from, args.to
        );
        return Ok(ExitCode::SUCCESS);
    }

    let api: Api<PipelineRun> = cluster.api();
    let show = |t: jiff::Timestamp| {
        t.to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    };
    let (mut created, mut existed) = (0, 0);
    let mut names = Vec::with_capacity(intervals.len());
    for interval in &intervals {
        let name = schedule::run_name(
            &pipeline.metadata.name.clone().unwrap_or_default(),
            interval.start,
        );
        let outcome = if args.dry_run {
            match api
                .get_opt(&name)
                .await
                .explain(&cluster, "get", PIPELINE_RUNS, Some(&name))?
            {
                Some(run) => {
                    existed += 1;
                    format!("exists ({})", phase_of(&run))
                }
                None => "would be created".to_string(),
            }
        } else {
            let made = create_interval_run(&cluster, &pipeline, &name, interval).await?;
            if made {
                created += 1;
                "created".to_string()
            } else {
                existed += 1;
                match api
                    .get_opt(&name)
                    .await
                    .explain(&cluster, "get", PIPELINE_RUNS, Some(&name))?
                {
                    Some(run) => format!("exists ({})", phase_of(&run)),
                    None => "exists".to_string(),
                }
            }
        };
        println!(
            "{} .. {}  {name}  {outcome}",
            show(interval.start),
            show(interval.end)
        );
        names.push(name);
    }
    let total = intervals.len();
    if args.dry_run {
        println!(
            "{total} interval(s): {existed} already have a run, {} would be created",
            total - existed
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{total} interval(s): {created} run(s) created, {existed} already existed");
    if let Some(max) = pipeline.spec.max_active_runs {
        println!("maxActiveRuns is {max}: runs beyond it wait, queued, and start oldest first");
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let timeout =
        crate::engine::duration::parse(&args.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let all_succeeded = wait_for_runs(&cluster, &names, timeout).await?;
    Ok(if all_succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The schedule intervals of `pipeline` whose logical date lies from `from` to `to` (each
/// given as text, with the name to call it by in errors), and the schedule's time zone.
pub fn intervals_between(
    pipeline: &Pipeline,
    (from, from_name): (&str, &str),
    (to, to_name): (&str, &str),
) -> anyhow::Result<(Vec<schedule::Interval>, jiff::tz::TimeZone)> {
    let name = pipeline.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = pipeline.spec.schedule.as_ref() else {
        bail!("Pipeline {name} has no schedule: backfill cuts the range into the schedule's intervals");
    };
    let cron = CronSchedule::parse(&spec.cron, spec.timezone.as_deref()).map_err(|problems| {
        let text: Vec<String> = problems
            .iter()
            .map(|(f, m)| format!("schedule.{f}: {m}"))
            .collect();
        anyhow::anyhow!("Pipeline {name} has an invalid schedule: {}", text.join("; "))
    })?;
    let tz = cron.timezone().clone();
    let from = schedule::parse_instant(from, &tz).map_err(|e| anyhow::anyhow!("{from_name}: {e}"))?;
    let to = schedule::parse_range_end(to, &tz).map_err(|e| anyhow::anyhow!("{to_name}: {e}"))?;
    if to < from {
        bail!("{to_name} ({to}) is before {from_name} ({from})");
    }
    let intervals = cron.intervals(from, to, MAX_INTERVALS).map_err(|_| {
        anyhow::anyhow!(
            "more than {MAX_INTERVALS} intervals between {from} and {to}: backfill a shorter range at a time"
        )
    })?;
    Ok((intervals, tz))
}

/// Creates the backfill run `name` of one interval; false when it exists already.
pub async fn create_interval_run(
    cluster: &Cluster,
    pipeline: &Pipeline,
    name: &str,
    interval: &schedule::Interval,
) -> anyhow::Result<bool> {
    let run = new_run(pipeline, name, Trigger::Backfill, interval.start, Some(*interval))?;
    match cluster.api::<PipelineRun>().create(&post_params(), &run).await {
        Ok(_) => Ok(true),
        Err(e) if crate::controller::is_already_exists(&e) => Ok(false),
        Err(e) => Err(e).explain(cluster, "create", PIPELINE_RUNS, Some(name)),
    }
}

fn phase_of(run: &PipelineRun) -> String {
    super::runs::phase_text(run)
}

/// Polls the runs until every one finished, printing a line each time the tally changes.
/// Returns whether all succeeded.
async fn wait_for_runs(cluster: &Cluster, names: &[String], timeout: Duration) -> anyhow::Result<bool> {
    let api: Api<PipelineRun> = cluster.api();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_line = String::new();
    loop {
        let mut tally: std::collections::BTreeMap<String, usize> = Default::default();
        let mut finished = 0;
        let mut failures = Vec::new();
        for name in names {
            let found = api
                .get_opt(name)
                .await
                .explain(cluster, "get", PIPELINE_RUNS, Some(name))?;
            let phase = match found {
                Some(run) => {
                    let phase = run.status.as_ref().and_then(|s| s.phase);
                    if phase.is_some_and(RunPhase::is_terminal) {
                        finished += 1;
                        if phase != Some(RunPhase::Succeeded) {
                            let status = run.status.as_ref();
                            let message = status
                                .and_then(|s| {
                                    crate::api::condition::find(
                                        &s.conditions,
                                        crate::api::condition_types::SUCCEEDED,
                                    )
                                })
                                .map(|c| c.message.clone())
                                .unwrap_or_default();
                            failures.push(format!("{name}: {} ({message})", phase_of(&run)));
                        }
                    }
                    phase_of(&run)
                }
                None => {
                    finished += 1;
                    failures.push(format!("{name}: deleted before it finished"));
                    "Deleted".to_string()
                }
            };
            *tally.entry(phase).or_default() += 1;
        }
        let counts: Vec<String> = tally.iter().map(|(p, n)| format!("{n} {p}")).collect();
        let line = format!("{finished}/{} finished: {}", names.len(), counts.join(", "));
        if line != last_line {
            println!("[{}] {line}", jiff::Zoned::now().strftime("%H:%M:%S"));
            last_line = line;
        }
        if finished == names.len() {
            for failure in &failures {
                println!("not succeeded: {failure}");
            }
            return Ok(failures.is_empty());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "gave up waiting after {}: {} of {} run(s) finished",
                crate::engine::duration::format(timeout),
                finished,
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
