//! `weir run`: runs a pipeline on this machine, each task as a local process, with the
//! operator's engine deciding what runs when (see `crate::local`).

use crate::engine::RunOutcome;
use crate::engine::{duration, resolve};
use crate::local::progress::{self, summary_table};
use crate::local::runner::shown_path;
use crate::local::{LocalRun, runner};
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The YAML file holding the Pipeline (the file you would `kubectl apply`; a PipelineRun
    /// in it gives the run's params and timeout).
    file: PathBuf,
    /// A parameter of the run, `name=value` (repeatable); wins over the PipelineRun's.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Which Pipeline or PipelineRun of the file to run, when it holds several.
    #[arg(long)]
    pipeline: Option<String>,
    /// Print what would run, in which order, with templates rendered; run nothing.
    #[arg(long)]
    dry_run: bool,
    /// The run's name (`WEIR_PIPELINE_RUN`, `{{ run.name }}`). Default: the pipeline's name
    /// and the time, like a run made by a schedule.
    #[arg(long)]
    name: Option<String>,
    /// Where logs, outputs and `run.json` go. Default: `.weir-run/<run name>/`.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The artifact store of this run: a directory on this machine. Default:
    /// `<run dir>/artifacts`.
    #[arg(long)]
    artifact_dir: Option<PathBuf>,
    /// How long a stopped task may take to exit after SIGTERM before it is killed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    grace_period: Duration,
    /// Print one line per change even on a terminal (what CI logs get anyway).
    #[arg(long)]
    plain: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text)
}

/// Exit code of a run that failed.
const FAILED: u8 = 1;
/// Exit code when the run could not start (bad file, params, missing variables).
const CANNOT_START: u8 = 2;
/// Exit code of a run cancelled by Ctrl-C or SIGTERM (the shell's 128 + SIGINT).
const INTERRUPTED: u8 = 130;

fn cannot_start(lines: &[String]) -> anyhow::Result<ExitCode> {
    for line in lines {
        eprintln!("{line}");
    }
    Ok(ExitCode::from(CANNOT_START))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let schemas = crate::manifest::Schemas::new();
    let report = crate::manifest::check_file(&args.file, &schemas);
    if !report.ok() {
        let mut lines: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "{}: not run: fix the problems above first",
            args.file.display()
        ));
        return cannot_start(&lines);
    }
    let selected = match report.select(args.pipeline.as_deref()) {
        Ok(s) => s,
        Err(e) => return cannot_start(&[e]),
    };
    let pipeline = crate::engine::validate(selected.spec).map_err(|e| anyhow::anyhow!("{e}"))?;

    // Params: the PipelineRun's, then the command line's.
    let mut given: BTreeMap<String, serde_json::Value> =
        selected.run.map(|r| r.spec.params.clone()).unwrap_or_default();
    for param in &args.params {
        let Some((name, value)) = param.split_once('=') else {
            return cannot_start(&[format!("--param {param:?}: expected NAME=VALUE")]);
        };
        given.insert(
            name.trim().to_string(),
            serde_json::Value::String(value.to_string()),
        );
    }
    let base = selected.pipeline_name.clone();
    let (name, run_dir) = match (&args.name, &args.run_dir) {
        (Some(name), Some(dir)) => (name.clone(), dir.clone()),
        (Some(name), None) => (name.clone(), PathBuf::from(".weir-run").join(name)),
        (None, dir) => {
            let stamp = jiff::Zoned::now().strftime("%Y%m%d-%H%M%S").to_string();
            let mut name = format!("{base}-{stamp}");
            let mut n = 1;
            // Two runs in the same second get different names (and directories).
            while dir.is_none() && PathBuf::from(".weir-run").join(&name).exists() {
                n += 1;
                name = format!("{base}-{stamp}-{n}");
            }
            let dir = dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".weir-run").join(&name));
            (name, dir)
        }
    };
    let run = selected.run;
    let identity = resolve::RunIdentity {
        name: name.clone(),
        namespace: run
            .and_then(|r| r.metadata.namespace.clone())
            .unwrap_or_else(|| "default".into()),
        uid: format!("local-{}", jiff::Timestamp::now().as_nanosecond()),
        pipeline: base.clone(),
    };
    let context = match resolve::RunContext::new(identity, &pipeline.spec, run.map(|r| &r.spec), &given) {
        Ok(context) => resolve::RunContext {
            started: Some(jiff::Timestamp::now()),
            ..context
        },
        Err(problems) => return cannot_start(&problems),
    };
    let timeout = crate::engine::run_timeout(&pipeline, run.and_then(|r| r.spec.timeout.as_deref()))
        .map_err(anyhow::Error::msg)?;

    let host = |name: &str| std::env::var(name).ok();
    let pools = report.pools();
    let mut problems = crate::local::start_problems(&pipeline, &host);
    problems.extend(crate::local::pool_problems(&pipeline, &pools));
    if !problems.is_empty() {
        return cannot_start(&problems);
    }

    let local = LocalRun {
        name,
        pipeline_name: base,
        pipeline,
        timeout,
        context,
        artifact_dir: {
            let dir = args
                .artifact_dir
                .clone()
                .unwrap_or_else(|| run_dir.join("artifacts"));
            std::path::absolute(&dir).unwrap_or(dir)
        },
        // Absolute: tasks with a workingDir get the same outputs file path.
        run_dir: std::path::absolute(&run_dir).unwrap_or(run_dir),
        grace: args.grace_period,
        pools,
    };

    say(&crate::local::image_note(&local.pipeline));
    if let Some(note) = crate::local::alerts_note(&local.pipeline) {
        say(&note);
    }
    let missing = crate::local::missing_programs(&local.pipeline);
    if !missing.is_empty() {
        say(&format!(
            "warning: not found on this machine: {}",
            missing.join(", ")
        ));
    }
    if args.dry_run {
        say(crate::local::plan_text(&local).trim_end());
        return Ok(ExitCode::SUCCESS);
    }

    std::fs::create_dir_all(&local.run_dir)
        .with_context(|| format!("creating the run directory {}", local.run_dir.display()))?;
    say(&format!(
        "run {} of pipeline {}: {} task(s); logs in {}/",
        local.name,
        local.pipeline_name,
        local.pipeline.len(),
        shown_path(&local.run_dir)
    ));
    let live = !args.plain && std::io::stdout().is_terminal();
    let colored = live && std::env::var_os("NO_COLOR").is_none();
    let run_name = local.name.clone();
    let run_dir = local.run_dir.clone();
    let pipeline = local.pipeline.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(runner::execute(local, runner::Display { live, colored }))?;

    say(&format!("\n{}", summary_table(&report.rows)));
    let took = progress::elapsed(report.duration);
    let logs = shown_path(&run_dir);
    let (line, code) = match &report.outcome {
        Some(RunOutcome::Succeeded) if !report.interrupted => {
            (format!("run {run_name} succeeded in {took}; logs in {logs}/"), 0)
        }
        Some(RunOutcome::Failed { reason, message }) => (
            format!("run {run_name} failed ({reason}: {message}) after {took}; logs in {logs}/"),
            FAILED,
        ),
        Some(RunOutcome::Cancelled { .. } | RunOutcome::Succeeded) | None => (
            format!("run {run_name} was cancelled after {took}; logs in {logs}/"),
            INTERRUPTED,
        ),
    };
    say(&line);
    let event = match &report.outcome {
        Some(RunOutcome::Succeeded) if !report.interrupted => Some(crate::api::NotifyEvent::Succeeded),
        Some(RunOutcome::Failed { .. }) => Some(crate::api::NotifyEvent::Failed),
        _ => None,
    };
    if let Some(unsent) = event.and_then(|e| crate::local::would_notify(&pipeline, e)) {
        say(&unsent);
    }
    Ok(ExitCode::from(code))
}

/// Prints a line; a closed stdout (`weir run ... | head`) must not stop a run half-way.
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
