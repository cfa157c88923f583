//! The `weir` command line. Each subcommand lives in its own module with an `Args` struct
//! (clap) and a `run(args) -> anyhow::Result<ExitCode>`; this file only lists and
//! dispatches them. The subcommands that talk to a cluster share `cluster` (kubeconfig,
//! namespace, errors people can act on), `runs` (a run read as a tree), `output` and `wait`.

pub mod approve;
pub mod asset;
pub mod backfill;
pub mod cancel;
pub mod cluster;
pub mod completion;
pub mod crd;
pub mod diff;
pub mod exec;
pub mod get;
pub mod graph;
pub mod list;
pub mod logs;
pub mod operator;
pub mod output;
pub mod rerun;
pub mod run;
pub mod runs;
pub mod suspend;
pub mod trigger;
pub mod ui;
pub mod validate;
pub mod wait;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Kubernetes-native data pipelines: DAGs of tasks run as Jobs"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands in the order of the help: working with runs on a cluster, then on this
/// machine, then the operator and set-up.
#[derive(Subcommand)]
enum Command {
    /// Start a run of a Pipeline now, by hand.
    Trigger(trigger::Args),
    /// Show a run: its tasks, fan-out instances and attempts as a tree.
    Get(get::Args),
    /// Print the logs of a run's tasks, each line prefixed by its task; -f to follow.
    Logs(logs::Args),
    /// List recent runs with phase, progress, start and duration.
    List(list::Args),
    /// Run part of a run again: its failed tasks, or the tasks named (Airflow's "clear").
    Rerun(rerun::Args),
    /// Cancel a run: running tasks stop, finally tasks still run.
    Cancel(cancel::Args),
    /// Approve a run's waiting approval task, as yourself: the run goes on.
    Approve(approve::Args),
    /// Reject a run's waiting approval task, as yourself: it fails with reason Rejected.
    Reject(approve::Args),
    /// Show what changed between the pipeline version a run followed and another version.
    Diff(diff::Args),
    /// Create the runs of every schedule interval in a date range (skipping existing ones).
    Backfill(backfill::Args),
    /// Suspend a Pipeline's schedule (runs already created go on).
    Suspend(suspend::Args),
    /// Resume a Pipeline's suspended schedule.
    Resume(suspend::Args),
    /// Record an update of an asset, starting the pipelines that wait for it.
    Asset(asset::Args),
    /// Serve the web UI and its JSON API (grid, graph, logs, actions) on 127.0.0.1.
    Ui(ui::Args),
    /// Run a pipeline on this machine: each task as a local process, in DAG order.
    Run(run::Args),
    /// Check Pipeline and PipelineRun manifests offline; exit 1 if any has a problem.
    Validate(validate::Args),
    /// Draw a pipeline's DAG as text, Graphviz DOT or Mermaid.
    Graph(graph::Args),
    /// Run the operator: watch Pipelines, PipelineRuns and TaskRuns and run their tasks as Jobs.
    Operator(Box<operator::Args>),
    /// Print the CustomResourceDefinitions (or write one file each into a directory).
    Crd(crd::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(completion::Args),
    /// Run a task's command inside its pod, moving its artifacts (set up by the operator).
    #[command(hide = true)]
    Exec(exec::Args),
    /// Copy this executable into a task pod's shared volume (the init container's job).
    #[command(hide = true)]
    ExecInstall(exec::InstallArgs),
}

impl Cli {
    /// Parses the command line. Run as `kubectl-weir` (a kubectl plugin: `kubectl weir
    /// ...`), help and errors name the command that way.
    pub fn from_env() -> Cli {
        let mut command = Cli::command();
        let invoked = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        if invoked.as_deref().is_some_and(|n| n.starts_with("kubectl-weir")) {
            command = command.bin_name("kubectl weir");
        }
        let matches = command.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Operator(args) => operator::run(*args),
            Command::Crd(args) => crd::run(args),
            Command::Validate(args) => validate::run(args),
            Command::Trigger(args) => trigger::run(args),
            Command::Backfill(args) => backfill::run(args),
            Command::Run(args) => run::run(args),
            Command::Graph(args) => graph::run(args),
            Command::Get(args) => get::run(args),
            Command::Logs(args) => logs::run(args),
            Command::List(args) => list::run(args),
            Command::Rerun(args) => rerun::run(args),
            Command::Cancel(args) => cancel::run(args),
            Command::Approve(args) => approve::approve(args),
            Command::Reject(args) => approve::reject(args),
            Command::Diff(args) => diff::run(args),
            Command::Suspend(args) => suspend::suspend(args),
            Command::Resume(args) => suspend::resume(args),
            Command::Asset(args) => asset::run(args),
            Command::Ui(args) => ui::run(args),
            Command::Completion(args) => completion::run(args),
            Command::Exec(args) => exec::run(args),
            Command::ExecInstall(args) => exec::install(args),
        }
    }
}

/// Runs a subcommand's async body on a runtime of one thread (a command talks to one API
/// server; it needs no more).
pub fn block_on<T>(body: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(body)
}
