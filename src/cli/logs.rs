//! `weir logs RUN [TASK]`: the logs of a run's tasks, each line prefixed by its task (and
//! instance, and attempt when it is a retry), tasks in DAG order. Every attempt runs as its
//! own Job and pod (labels `weir.dev/taskrun-uid` and `weir.dev/attempt`), so the logs of
//! failed attempts stay reachable as long as their pods exist; `--attempt N` picks one.
//! `-f` streams running tasks and picks up each new task or attempt as it starts, until the
//! run finishes.

use super::cluster::{Cluster, ClusterArgs, Explain as _, POD_LOGS, PODS, connect};
use super::runs::{self, RunView, TaskView};
use crate::api::{AttemptPhase, FailureReason, labels};
use anyhow::bail;
use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{ListParams, LogParams};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(clap::Args)]
pub struct Args {
    /// The PipelineRun.
    run: String,
    /// Only this task: `TASK`, or `TASK[K]` for one instance of a fanned-out task.
    task: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Keep streaming: follow running tasks, and new tasks and attempts as they start,
    /// until the run finishes.
    #[arg(short, long)]
    follow: bool,
    /// Only this attempt of each task (1 is the first try). Default: every attempt.
    #[arg(long, value_name = "N")]
    attempt: Option<u32>,
    /// Only the last N lines of each attempt.
    #[arg(long, value_name = "N")]
    tail: Option<i64>,
    /// Start each line with the time the kubelet recorded for it.
    #[arg(long)]
    timestamps: bool,
    /// Print the lines alone, without the task prefix.
    #[arg(long)]
    no_prefix: bool,
}

/// Name of the task's container in every attempt pod (`controller::job::CONTAINER`).
const CONTAINER: &str = crate::controller::job::CONTAINER;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(logs(args))
}

/// `TASK` or `TASK[K]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TaskFilter {
    task: String,
    instance: Option<u32>,
}

fn parse_task(text: &str) -> anyhow::Result<TaskFilter> {
    match text.split_once('[') {
        None => Ok(TaskFilter {
            task: text.to_string(),
            instance: None,
        }),
        Some((task, rest)) => {
            let Some(k) = rest.strip_suffix(']').and_then(|k| k.parse().ok()) else {
                bail!("{text:?}: expected TASK or TASK[K] with K an instance number, like process[2]");
            };
            Ok(TaskFilter {
                task: task.to_string(),
                instance: Some(k),
            })
        }
    }
}

/// One attempt whose logs are wanted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Unit {
    /// `extract`, `process[2]`, with `#n` for attempts after the first.
    prefix: String,
    task_run_uid: String,
    attempt: u32,
    /// The attempt's Job, whose plan tells where a stored log is.
    job: String,
    /// The attempt finished (its pod will write nothing more).
    finished: bool,
    /// It was stopped by a cancellation (which deletes its Job and pod).
    cancelled: bool,
}

/// The attempts wanted, in DAG order; the TaskRuns' UIDs come from `uids` (by name).
fn units(
    view: &RunView,
    filter: Option<&TaskFilter>,
    attempt: Option<u32>,
    uids: &HashMap<String, String>,
) -> Vec<Unit> {
    let mut out = Vec::new();
    let mut add = |t: &TaskView| {
        let Some(uid) = t.task_run.as_ref().and_then(|n| uids.get(n)) else {
            return;
        };
        for a in &t.attempts {
            if attempt.is_some_and(|n| n != a.number) {
                continue;
            }
            let prefix = if a.number > 1 {
                format!("{}#{}", t.name, a.number)
            } else {
                t.name.clone()
            };
            out.push(Unit {
                prefix,
                task_run_uid: uid.clone(),
                attempt: a.number,
                job: a.job_name.clone(),
                finished: a.phase != AttemptPhase::Running,
                cancelled: a.reason == Some(FailureReason::Cancelled),
            });
        }
    };
    for task in &view.tasks {
        if filter.is_some_and(|f| f.task != task.task) {
            continue;
        }
        add(task);
        for instance in &task.instances {
            if filter.is_some_and(|f| f.instance.is_some() && f.instance != instance.instance) {
                continue;
            }
            add(instance);
        }
    }
    out
}

/// The pods of a run's attempts, by TaskRun UID and attempt; the newest when there are
/// several.
fn pods_by_attempt(pods: Vec<Pod>) -> HashMap<(String, u32), Pod> {
    let mut out: HashMap<(String, u32), Pod> = HashMap::new();
    for pod in pods {
        let labels = pod.labels();
        let (Some(uid), Some(attempt)) = (
            labels.get(labels::TASK_RUN_UID).cloned(),
            labels.get(labels::ATTEMPT).and_then(|a| a.parse().ok()),
        ) else {
            continue;
        };
        let key = (uid, attempt);
        let newer = out
            .get(&key)
            .is_none_or(|old| old.metadata.creation_timestamp < pod.metadata.creation_timestamp);
        if newer {
            out.insert(key, pod);
        }
    }
    out
}

/// Whether the task container has started (so it has logs to read).
fn started(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
}

/// Why the task container waits, when it is worth saying: not while it is merely being
/// created.
fn waiting_problem(pod: &Pod) -> Option<String> {
    let reason = waiting_reason(pod);
    let ordinary = ["ContainerCreating", "PodInitializing"];
    let scheduled = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
    let unscheduled = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
        .map(|c| format!("not scheduled: {}", c.message.clone().unwrap_or_default()));
    match unscheduled {
        Some(why) => Some(why),
        None if !scheduled || ordinary.iter().any(|o| reason.starts_with(o)) => None,
        None if reason == NOT_STARTED => None,
        None => Some(reason),
    }
}

const NOT_STARTED: &str = "not scheduled or not started yet";

/// Why the task container waits, as the kubelet says it.
fn waiting_reason(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref()?.waiting.as_ref())
        .map(|w| match &w.message {
            Some(m) => format!("{}: {m}", w.reason.clone().unwrap_or_default()),
            None => w.reason.clone().unwrap_or_default(),
        })
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| NOT_STARTED.to_string())
}

fn gone(unit: &Unit) -> String {
    gone_note(unit.attempt, unit.cancelled)
}

/// Why an attempt has no logs any more: its pod is gone (`weir logs` and the UI).
pub fn gone_note(attempt: u32, cancelled: bool) -> String {
    if cancelled {
        return format!(
            "no logs for attempt {attempt}: it was cancelled, and cancelling deletes the attempt's Job and pod with their logs"
        );
    }
    format!(
        "no logs for attempt {attempt}: its pod no longer exists (deleted with its Job, by a Job TTL or by pod garbage collection), and its logs went with it"
    )
}

/// How lines are written: prefixes padded to one width, coloured on a terminal.
struct Printer {
    width: usize,
    colored: bool,
    no_prefix: bool,
    colors: HashMap<String, &'static str>,
}

const PALETTE: [&str; 6] = [
    "\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[91m",
];

impl Printer {
    fn new(view: &RunView, filter: Option<&TaskFilter>, no_prefix: bool) -> Printer {
        let mut printer = Printer {
            width: 0,
            colored: super::output::colored(),
            no_prefix,
            colors: HashMap::new(),
        };
        printer.widen(view, filter);
        printer
    }

    /// Makes room for every task shown (known once the operator pinned the pipeline), and
    /// for `#n` where a task may retry, so prefixes line up as attempts come.
    fn widen(&mut self, view: &RunView, filter: Option<&TaskFilter>) {
        let widest = view
            .tasks
            .iter()
            .filter(|t| filter.is_none_or(|f| f.task == t.task))
            .flat_map(|t| std::iter::once(t).chain(&t.instances))
            .map(|t| {
                let most = t.max_attempts.unwrap_or(1).max(t.attempts.len() as u32);
                let retry = if most > 1 { 1 + most.to_string().len() } else { 0 };
                // `[k]` of instances still to come.
                let instance = if t.fans_out && t.instances.is_empty() {
                    3
                } else {
                    0
                };
                t.name.chars().count() + retry + instance
            })
            .max()
            .unwrap_or(0)
            .min(40);
        self.width = self.width.max(widest);
    }

    fn prefix(&mut self, prefix: &str) -> String {
        let padded = format!("{prefix:<width$} |", width = self.width);
        if !self.colored {
            return padded;
        }
        let next = PALETTE[self.colors.len() % PALETTE.len()];
        let task = prefix.split(['[', '#']).next().unwrap_or(prefix).to_string();
        let color = *self.colors.entry(task).or_insert(next);
        format!("{color}{padded}\x1b[0m")
    }

    fn line(&mut self, prefix: &str, line: &str) {
        let text = if self.no_prefix {
            line.to_string()
        } else {
            format!("{} {line}", self.prefix(prefix))
        };
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }

    /// Something about the logs rather than in them: on stderr, so a pipe gets only logs.
    fn note(&mut self, prefix: &str, text: &str) {
        let _ = std::io::stdout().flush();
        eprintln!("{prefix}: {text}");
    }
}

async fn logs(args: Args) -> anyhow::Result<ExitCode> {
    let filter = args.task.as_deref().map(parse_task).transpose()?;
    let cluster = connect(&args.cluster).await?;
    let snapshot = runs::fetch(&cluster, &args.run, false).await?;
    let view = runs::view(&snapshot);
    if let Some(f) = &filter {
        check_task(&view, f)?;
    }
    let mut printer = Printer::new(&view, filter.as_ref(), args.no_prefix);
    let params = LogParams {
        container: Some(CONTAINER.to_string()),
        follow: args.follow,
        tail_lines: args.tail,
        timestamps: args.timestamps,
        ..Default::default()
    };
    let run_uid = snapshot.run.uid().unwrap_or_default();
    if args.follow {
        follow(&cluster, &args, filter.as_ref(), &run_uid, &params, &mut printer).await
    } else {
        let uids = uids_of(&snapshot);
        let wanted = units(&view, filter.as_ref(), args.attempt, &uids);
        let pods = pods_by_attempt(list_pods(&cluster, &run_uid, false).await?);
        if wanted.is_empty() {
            eprintln!("{}", nothing_ran(&view, filter.as_ref(), args.attempt));
        }
        for unit in &wanted {
            print_once(
                &cluster,
                unit,
                pods.get(&(unit.task_run_uid.clone(), unit.attempt)),
                &params,
                &mut printer,
            )
            .await?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A task named on the command line must be one of the run's.
fn check_task(view: &RunView, filter: &TaskFilter) -> anyhow::Result<()> {
    let Some(task) = view.tasks.iter().find(|t| t.task == filter.task) else {
        let known: Vec<&str> = view.tasks.iter().map(|t| t.task.as_str()).collect();
        let hint = crate::engine::suggest::closest(&filter.task, known.iter().copied())
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        bail!(
            "pipelinerun {} has no task {}{hint}; its tasks: {}",
            view.name,
            filter.task,
            known.join(", ")
        );
    };
    if let Some(k) = filter.instance
        && !task.instances.iter().any(|i| i.instance == Some(k))
        && task.phase.is_terminal()
    {
        bail!(
            "task {} of pipelinerun {} has no instance {k} (it has {})",
            filter.task,
            view.name,
            task.instances.len()
        );
    }
    Ok(())
}

/// Why there are no logs to show at all.
fn nothing_ran(view: &RunView, filter: Option<&TaskFilter>, attempt: Option<u32>) -> String {
    let run = &view.name;
    let task = filter.and_then(|f| view.tasks.iter().find(|t| t.task == f.task));
    match (task, attempt) {
        (Some(t), Some(n)) if !t.attempts.is_empty() || !t.instances.is_empty() => {
            format!("task {} of run {run} has no attempt {n}", t.task)
        }
        (Some(t), _) if t.phase.is_terminal() => {
            let why = t.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            format!(
                "task {} of run {run} did not run ({}{why}), so it has no logs",
                t.task,
                t.phase.as_str()
            )
        }
        (Some(t), _) => format!(
            "task {} of run {run} has not started yet ({})",
            t.task,
            t.phase.as_str()
        ),
        (None, _) => format!(
            "no task of run {run} has started yet ({}): there are no logs",
            view.phase
        ),
    }
}

fn uids_of(snapshot: &runs::Snapshot) -> HashMap<String, String> {
    snapshot
        .task_runs
        .iter()
        .filter_map(|tr| Some((tr.name_any(), tr.uid()?)))
        .collect()
}

async fn list_pods(cluster: &Cluster, run_uid: &str, cached: bool) -> anyhow::Result<Vec<Pod>> {
    let mut params = ListParams::default().labels(&format!("{}={run_uid}", labels::PIPELINE_RUN_UID));
    if cached {
        params = params.match_any();
    }
    Ok(cluster
        .api::<Pod>()
        .list(&params)
        .await
        .explain(cluster, "list", PODS, None)?
        .items)
}

/// The log an attempt whose pod is gone left in the artifact store, or why there is none.
async fn print_stored(cluster: &Cluster, unit: &Unit, printer: &mut Printer) {
    match crate::artifacts::stored_log(&cluster.client, &cluster.namespace, &unit.job).await {
        Ok(Some(text)) => {
            printer.note(
                &unit.prefix,
                &format!(
                    "attempt {}: its pod is gone; the log kept in the artifact store:",
                    unit.attempt
                ),
            );
            for line in text.lines() {
                printer.line(&unit.prefix, line);
            }
        }
        Ok(None) => printer.note(&unit.prefix, &gone(unit)),
        Err(e) => printer.note(
            &unit.prefix,
            &format!("{}; the stored log could not be read: {e}", gone(unit)),
        ),
    }
}

/// The logs of one attempt, read whole.
async fn print_once(
    cluster: &Cluster,
    unit: &Unit,
    pod: Option<&Pod>,
    params: &LogParams,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let Some(pod) = pod else {
        print_stored(cluster, unit, printer).await;
        return Ok(());
    };
    if !started(pod) {
        let word = if unit.finished {
            "never started"
        } else {
            "has not started yet"
        };
        printer.note(
            &unit.prefix,
            &format!(
                "no logs: attempt {} {word} ({})",
                unit.attempt,
                waiting_reason(pod)
            ),
        );
        return Ok(());
    }
    let name = pod.name_any();
    match cluster.api::<Pod>().logs(&name, params).await {
        Ok(text) => {
            for line in text.lines() {
                printer.line(&unit.prefix, line);
            }
            Ok(())
        }
        Err(e) => match e {
            kube::Error::Api(ref s) if s.code != 403 && s.code != 401 => {
                printer.note(
                    &unit.prefix,
                    &format!("no logs for attempt {} (pod {name}): {}", unit.attempt, s.message),
                );
                Ok(())
            }
            e => Err(e).explain(cluster, "get", POD_LOGS, Some(&name)),
        },
    }
}

/// Most logs `-f` streams at once (kubectl's `--max-log-requests` is 5 by default); a wide
/// fan-out's further instances are streamed as earlier ones end. Their lines are not lost:
/// a stream started late begins at the container's first line.
const MAX_STREAMS: usize = 50;

/// What the streams of `-f` send to the printer.
enum Message {
    Line(String, String),
    Note(String, String),
    Ended(Unit),
    Failed(anyhow::Error),
}

/// Streams every wanted attempt as its pod starts, until the run (or the task asked for)
/// finished and every stream ended.
async fn follow(
    cluster: &Cluster,
    args: &Args,
    filter: Option<&TaskFilter>,
    run_uid: &str,
    params: &LogParams,
    printer: &mut Printer,
) -> anyhow::Result<ExitCode> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let mut following = Following {
        cluster,
        args,
        filter,
        run_uid,
        params,
        tx,
        handled: HashSet::new(),
        open: HashSet::new(),
        noted_waiting: BTreeMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(Message::Line(prefix, line)) => printer.line(&prefix, &line),
                Some(Message::Note(prefix, text)) => printer.note(&prefix, &text),
                Some(Message::Ended(unit)) => {
                    following.open.remove(&(unit.task_run_uid, unit.attempt));
                }
                Some(Message::Failed(e)) => return Err(e),
                None => {}
            },
            _ = tick.tick() => {
                if following.look(printer).await? {
                    // Lines sent before the last streams ended are printed already: each
                    // stream sends `Ended` after its last line, on the same channel.
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
}

/// The state of `-f`: which attempts are streamed or given up on.
struct Following<'a> {
    cluster: &'a Cluster,
    args: &'a Args,
    filter: Option<&'a TaskFilter>,
    run_uid: &'a str,
    params: &'a LogParams,
    tx: mpsc::UnboundedSender<Message>,
    /// Attempts streamed or given up on.
    handled: HashSet<(String, u32)>,
    /// Attempts whose stream has not ended yet.
    open: HashSet<(String, u32)>,
    /// The waiting reason last told for an attempt, so a long image pull is told once.
    noted_waiting: BTreeMap<(String, u32), String>,
}

impl Following<'_> {
    /// One look at the run and its pods: streams every wanted attempt whose container
    /// started, says which will never have logs. Returns whether all is done: nothing more
    /// will run, and every stream ended.
    async fn look(&mut self, printer: &mut Printer) -> anyhow::Result<bool> {
        let snapshot = runs::fetch(self.cluster, &self.args.run, true).await?;
        let view = runs::view(&snapshot);
        printer.widen(&view, self.filter);
        let uids = uids_of(&snapshot);
        let wanted = units(&view, self.filter, self.args.attempt, &uids);
        let pods = pods_by_attempt(list_pods(self.cluster, self.run_uid, true).await?);
        for unit in &wanted {
            let key = (unit.task_run_uid.clone(), unit.attempt);
            if !self.handled.contains(&key) {
                let pod = pods.get(&key);
                if pod.is_none() && unit.finished {
                    // Finished and its pod gone: what the store kept, once.
                    self.handled.insert(key);
                    print_stored(self.cluster, unit, printer).await;
                    continue;
                }
                self.look_at(unit, key.clone(), pod, printer);
            }
        }
        let pending = wanted
            .iter()
            .any(|u| !self.handled.contains(&(u.task_run_uid.clone(), u.attempt)));
        Ok(self.open.is_empty() && !pending && finished(&view, self.filter))
    }

    fn look_at(&mut self, unit: &Unit, key: (String, u32), pod: Option<&Pod>, printer: &mut Printer) {
        match pod {
            // Past the cap, the attempt waits for a later look.
            Some(_) if self.open.len() >= MAX_STREAMS => {}
            Some(pod) if started(pod) => {
                self.handled.insert(key.clone());
                self.open.insert(key);
                tokio::spawn(stream(
                    self.cluster.clone(),
                    unit.clone(),
                    pod.name_any(),
                    self.params.clone(),
                    self.tx.clone(),
                ));
            }
            Some(pod) if unit.finished => {
                self.handled.insert(key);
                let why = waiting_reason(pod);
                printer.note(
                    &unit.prefix,
                    &format!("no logs: attempt {} never started ({why})", unit.attempt),
                );
            }
            Some(pod) => {
                if let Some(reason) = waiting_problem(pod)
                    && self.noted_waiting.get(&key) != Some(&reason)
                {
                    let text = format!("waiting for attempt {} to start: {reason}", unit.attempt);
                    printer.note(&unit.prefix, &text);
                    self.noted_waiting.insert(key, reason);
                }
            }
            None => {}
        }
    }
}

/// Whether nothing more will run: the run finished, or the task asked for did.
fn finished(view: &RunView, filter: Option<&TaskFilter>) -> bool {
    if view.is_finished() {
        return true;
    }
    let Some(f) = filter else {
        return false;
    };
    view.tasks
        .iter()
        .filter(|t| t.task == f.task)
        .all(|t| match f.instance {
            None => t.phase.is_terminal(),
            Some(k) => t
                .instances
                .iter()
                .find(|i| i.instance == Some(k))
                .is_some_and(|i| i.phase.is_terminal()),
        })
}

/// Follows one pod's log to its end, sending each line.
async fn stream(
    cluster: Cluster,
    unit: Unit,
    pod: String,
    params: LogParams,
    tx: mpsc::UnboundedSender<Message>,
) {
    let api = cluster.api::<Pod>();
    match api.log_stream(&pod, &params).await {
        Ok(reader) => {
            let mut lines = reader.lines();
            while let Some(line) = lines.next().await {
                match line {
                    Ok(line) => {
                        let _ = tx.send(Message::Line(unit.prefix.clone(), line));
                    }
                    Err(e) => {
                        let _ = tx.send(Message::Note(
                            unit.prefix.clone(),
                            format!("the log stream of attempt {} broke off: {e}", unit.attempt),
                        ));
                        break;
                    }
                }
            }
        }
        Err(kube::Error::Api(s)) if s.code != 403 && s.code != 401 => {
            let _ = tx.send(Message::Note(
                unit.prefix.clone(),
                format!("no logs for attempt {} (pod {pod}): {}", unit.attempt, s.message),
            ));
        }
        Err(e) => {
            let _ = tx.send(Message::Failed(cluster.explain(
                e,
                super::cluster::Request {
                    verb: "get",
                    resource: POD_LOGS,
                    name: Some(&pod),
                },
            )));
        }
    }
    let _ = tx.send(Message::Ended(unit));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_and_instances_are_named_like_the_tree() {
        assert_eq!(
            parse_task("load").unwrap(),
            TaskFilter {
                task: "load".into(),
                instance: None
            }
        );
        assert_eq!(
            parse_task("process[2]").unwrap(),
            TaskFilter {
                task: "process".into(),
                instance: Some(2)
            }
        );
        assert!(parse_task("process[x]").is_err());
        assert!(parse_task("process[2").is_err());
    }

    #[test]
    fn the_newest_pod_of_an_attempt_wins() {
        let pod = |name: &str, uid: &str, attempt: u32, created: i64| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": name,
                    "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string(),
                    "labels": {"weir.dev/taskrun-uid": uid, "weir.dev/attempt": attempt.to_string()},
                },
            }))
            .unwrap()
        };
        let pods = pods_by_attempt(vec![
            pod("a-1-new", "a", 1, 20),
            pod("a-1-old", "a", 1, 10),
            pod("a-2", "a", 2, 30),
        ]);
        assert_eq!(pods[&("a".to_string(), 1)].name_any(), "a-1-new");
        assert_eq!(pods[&("a".to_string(), 2)].name_any(), "a-2");
    }
}
