//! `weir get RUN`: a run as a tree of its tasks, their fan-out instances and the attempts of
//! retried ones, each with phase, attempts, duration, exit code, reason and message (like
//! `argo get`); `-o json|yaml` for scripts; `--watch` redraws it until the run finishes.

use super::cluster::{ClusterArgs, connect};
use super::output::{self, Format, Screen, paint, say, symbol};
use super::runs::{self, RunView, TaskView};
use crate::api::{AttemptPhase, RunPhase, TaskPhase};
use jiff::Timestamp;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The PipelineRun.
    run: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    output: Format,
    /// Keep it up to date until the run finishes (Ctrl-C stops watching; the run goes on).
    /// With `-o json|yaml`, prints the run again each time it changes.
    #[arg(short, long)]
    watch: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(get(args))
}

async fn get(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = connect(&args.cluster).await?;
    let view = runs::view(&runs::fetch(&cluster, &args.run, false).await?);
    if !args.watch {
        print(&view, args.output, Timestamp::now());
        return Ok(ExitCode::SUCCESS);
    }
    let live = args.output == Format::Text && output::is_terminal();
    let mut screen = Screen::default();
    let mut last: Option<RunView> = None;
    let mut frame = 0;
    let mut view = view;
    loop {
        let changed = last.as_ref() != Some(&view);
        if view.is_finished() {
            screen.clear();
            print(&view, args.output, Timestamp::now());
            return Ok(ExitCode::SUCCESS);
        }
        if live {
            frame += 1;
            let colored = output::colored();
            screen.draw(&render(&view, Timestamp::now(), colored, Some(frame)));
        } else if changed {
            print(&view, args.output, Timestamp::now());
            if args.output == Format::Text {
                say("");
            }
        }
        last = Some(view);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => {
                screen.clear();
                if let Some(view) = &last {
                    print(view, args.output, Timestamp::now());
                }
                eprintln!("stopped watching; the run goes on");
                return Ok(ExitCode::from(130));
            }
        }
        view = runs::view(&runs::fetch(&cluster, &args.run, true).await?);
    }
}

fn print(view: &RunView, format: Format, now: Timestamp) {
    match format {
        Format::Text => {
            for line in render(view, now, output::colored(), None) {
                say(&line);
            }
        }
        data => {
            if let Err(e) = output::print_data(data, view) {
                eprintln!("error: {e:#}");
            }
        }
    }
}

/// The run's own phase drawn as a task's.
fn run_symbol_phase(view: &RunView) -> TaskPhase {
    match view.run_phase() {
        Some(RunPhase::Running) => TaskPhase::Running,
        Some(RunPhase::Succeeded) => TaskPhase::Succeeded,
        Some(RunPhase::Failed) => TaskPhase::Failed,
        Some(RunPhase::Cancelled) => TaskPhase::Cancelled,
        Some(RunPhase::Pending) | None => TaskPhase::Pending,
    }
}

/// The header and the tree, as lines. `frame` turns the spinners of a live display.
pub fn render(view: &RunView, now: Timestamp, colored: bool, frame: Option<usize>) -> Vec<String> {
    let mut lines = header(view, now);
    lines.push(String::new());
    lines.extend(output::table(&tree(view, now, colored, frame)));
    lines.extend(alerts(view));
    lines
}

/// The deadlines the run missed and its notifications, under the tree (nothing when there
/// are none).
fn alerts(view: &RunView) -> Vec<String> {
    let mut lines = Vec::new();
    if !view.deadlines_missed.is_empty() {
        lines.push(String::new());
        lines.push("Deadlines missed:".into());
        let rows: Vec<Vec<String>> = view
            .deadlines_missed
            .iter()
            .map(|m| {
                let on = m
                    .task
                    .as_deref()
                    .map_or("run".to_string(), |t| format!("task {t}"));
                vec![format!("  {on}"), output::one_line(&m.message)]
            })
            .collect();
        lines.extend(output::table(&rows));
    }
    if !view.notifications.is_empty() {
        lines.push(String::new());
        let mut rows = vec![
            [
                "NOTIFICATION",
                "EVENT",
                "ABOUT",
                "STATE",
                "ATTEMPTS",
                "LAST ERROR",
            ]
            .map(String::from)
            .to_vec(),
        ];
        rows.extend(view.notifications.iter().map(|r| {
            vec![
                r.notification.clone(),
                r.event.as_str().to_string(),
                runs::about(r).to_string(),
                format!("{:?}", r.state),
                r.attempts.to_string(),
                first_line(r.message.as_deref()),
            ]
        }));
        lines.extend(output::table(&rows));
    }
    lines
}

fn header(view: &RunView, now: Timestamp) -> Vec<String> {
    let mut fields: Vec<(&str, String)> =
        vec![("Name", view.name.clone()), ("Namespace", view.namespace.clone())];
    if let Some(p) = &view.pipeline {
        fields.push(("Pipeline", p.clone()));
    }
    if let Some(t) = &view.trigger {
        fields.push(("Trigger", t.clone()));
    }
    let mut phase = view.phase.clone();
    match (&view.reason, &view.message) {
        (Some(r), Some(m)) if r != &view.phase => phase.push_str(&format!(" ({r}: {m})")),
        (_, Some(m)) if view.run_phase().is_some_and(RunPhase::is_terminal) || view.phase == "Queued" => {
            phase.push_str(&format!(" ({m})"))
        }
        _ => {}
    }
    if view.cancel_requested && !view.run_phase().is_some_and(RunPhase::is_terminal) {
        phase.push_str(" (cancelling)");
    }
    fields.push(("Phase", phase));
    if let Some(t) = view.logical_date {
        fields.push(("Logical date", output::time(t)));
    }
    if let Some(t) = view.start_time {
        fields.push(("Started", output::time(t)));
    }
    if let Some(t) = view.completion_time {
        fields.push(("Finished", output::time(t)));
    }
    if let Some(d) = view.duration(now) {
        fields.push(("Duration", output::duration(d)));
    }
    if let Some(p) = &view.progress {
        fields.push(("Progress", p.clone()));
    }
    if !view.params.is_empty() {
        let params: Vec<String> = view
            .params
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        fields.push(("Params", params.join(", ")));
    }
    if let Some(r) = &view.rerun {
        let mut text = format!(
            "{} time(s); last: request {} at {}",
            r.count,
            r.request,
            output::time(r.time.0)
        );
        if let Some(by) = &r.requested_by {
            text.push_str(&format!(" by {by}"));
        }
        if r.tasks.is_empty() {
            text.push_str(", not applied (why: kubectl describe pipelinerun)");
        } else {
            text.push_str(&format!(", tasks {}", r.tasks.join(", ")));
            if let Some(n) = r.tasks_omitted {
                text.push_str(&format!(" and {n} more"));
            }
        }
        fields.push(("Reruns", text));
    }
    if let Some(request) = &view.rerun_requested {
        fields.push((
            "Rerun",
            format!("request {request} not applied by the operator yet"),
        ));
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    fields
        .into_iter()
        .map(|(k, v)| format!("{:width$} {v}", format!("{k}:")))
        .collect()
}

/// The rows of the tree table: the run, then each task with its instances and, for tasks
/// that made more than one attempt, every attempt.
fn tree(view: &RunView, now: Timestamp, colored: bool, frame: Option<usize>) -> Vec<Vec<String>> {
    let mut rows = vec![
        [
            "STEP", "PHASE", "ATTEMPTS", "DURATION", "EXIT", "REASON", "MESSAGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let run_phase = run_symbol_phase(view);
    rows.push(vec![
        format!(
            "{} {}",
            paint(run_phase, symbol(run_phase, frame), colored),
            view.name
        ),
        view.phase.clone(),
        String::new(),
        view.duration(now).map(output::duration).unwrap_or_default(),
    ]);
    let count = view.tasks.len();
    for (i, task) in view.tasks.iter().enumerate() {
        let last = i + 1 == count;
        task_rows(&mut rows, task, "", last, now, colored, frame);
    }
    rows
}

fn task_rows(
    rows: &mut Vec<Vec<String>>,
    task: &TaskView,
    indent: &str,
    last: bool,
    now: Timestamp,
    colored: bool,
    frame: Option<usize>,
) {
    let branch = if last { "└─" } else { "├─" };
    let name = if task.finally && task.instance.is_none() {
        format!("{} (finally)", task.name)
    } else {
        task.name.clone()
    };
    let final_attempt = task.attempts.last();
    let attempts = match (task.attempts.len(), task.max_attempts) {
        (0, _) => String::new(),
        (n, Some(max)) if task.instances.is_empty() => format!("{n}/{}", max.max(n as u32)),
        (n, _) => n.to_string(),
    };
    rows.push(vec![
        format!(
            "{indent}{branch}{} {name}",
            paint(task.phase, symbol(task.phase, frame), colored)
        ),
        task.state().to_string(),
        attempts,
        task.duration(now).map(output::duration).unwrap_or_default(),
        final_attempt
            .and_then(|a| a.exit_code)
            .map(|c| c.to_string())
            .unwrap_or_default(),
        final_attempt
            .and_then(|a| a.reason)
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
        first_line(
            task.message
                .as_deref()
                .or(final_attempt.and_then(|a| a.message.as_deref())),
        ),
    ]);
    let inner = format!("{indent}{}", if last { "  " } else { "│ " });
    let count = task.instances.len();
    for (i, instance) in task.instances.iter().enumerate() {
        task_rows(rows, instance, &inner, i + 1 == count, now, colored, frame);
    }
    if task.attempts.len() > 1 {
        let count = task.attempts.len();
        for (i, attempt) in task.attempts.iter().enumerate() {
            let branch = if i + 1 == count { "└─" } else { "├─" };
            let phase = match attempt.phase {
                AttemptPhase::Running => TaskPhase::Running,
                AttemptPhase::Succeeded => TaskPhase::Succeeded,
                AttemptPhase::Failed => TaskPhase::Failed,
            };
            let took = attempt.start_time.as_ref().and_then(|s| {
                let end = attempt.completion_time.as_ref().map_or(now, |t| t.0);
                Duration::try_from(end.duration_since(s.0)).ok()
            });
            rows.push(vec![
                format!(
                    "{inner}{branch}{} attempt {}",
                    paint(phase, symbol(phase, frame), colored),
                    attempt.number
                ),
                format!("{:?}", attempt.phase),
                String::new(),
                took.map(output::duration).unwrap_or_default(),
                attempt.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                attempt.reason.map(|r| r.as_str().to_string()).unwrap_or_default(),
                first_line(attempt.message.as_deref()),
            ]);
        }
    }
}

fn first_line(text: Option<&str>) -> String {
    output::one_line(text.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Attempt, FailureReason};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + secs).unwrap()
    }

    fn task(name: &str, phase: TaskPhase) -> TaskView {
        TaskView {
            max_attempts: Some(3),
            ..TaskView::without_task_run(name, phase)
        }
    }

    fn attempt(n: u32, phase: AttemptPhase, code: i32, secs: (i64, i64)) -> Attempt {
        Attempt {
            number: n,
            job_name: format!("j-{n}"),
            phase,
            start_time: Some(Time(ts(secs.0))),
            completion_time: Some(Time(ts(secs.1))),
            exit_code: Some(code),
            reason: (code != 0).then_some(FailureReason::Error),
            message: (code != 0).then(|| format!("exit code {code}")),
            ..Default::default()
        }
    }

    #[test]
    fn the_tree_shows_instances_and_the_attempts_of_retried_tasks() {
        let mut extract = task("extract", TaskPhase::Succeeded);
        extract.start_time = Some(ts(0));
        extract.completion_time = Some(ts(3));
        extract.attempts = vec![
            attempt(1, AttemptPhase::Failed, 1, (0, 1)),
            attempt(2, AttemptPhase::Succeeded, 0, (2, 3)),
        ];
        let mut fan = task("fan", TaskPhase::Failed);
        fan.message = Some("1 of 2 instances failed".into());
        let mut f0 = task("fan[0]", TaskPhase::Succeeded);
        f0.instance = Some(0);
        f0.attempts = vec![attempt(1, AttemptPhase::Succeeded, 0, (3, 4))];
        let mut f1 = task("fan[1]", TaskPhase::Failed);
        f1.instance = Some(1);
        f1.attempts = vec![attempt(1, AttemptPhase::Failed, 3, (3, 5))];
        fan.instances = vec![f0, f1];
        let mut load = task("load", TaskPhase::UpstreamFailed);
        load.message = Some("upstream task fan failed".into());
        let mut report = task("report", TaskPhase::Succeeded);
        report.finally = true;
        let view = RunView {
            namespace: "ns".into(),
            pipeline: Some("etl".into()),
            trigger: Some("manual".into()),
            reason: Some("TaskFailed".into()),
            message: Some("task fan failed".into()),
            start_time: Some(ts(0)),
            completion_time: Some(ts(6)),
            progress: Some("4/4".into()),
            ..RunView::with_tasks("etl-1", "Failed", vec![extract, fan, load, report])
        };
        let lines = output::table(&tree(&view, ts(10), false, None));
        assert_eq!(
            lines.join("\n"),
            "\
STEP                  PHASE           ATTEMPTS  DURATION  EXIT  REASON  MESSAGE
✗ etl-1               Failed                    6s
├─✓ extract           Succeeded       2/3       3s        0
│ ├─✗ attempt 1       Failed                    1s        1     Error   exit code 1
│ └─✓ attempt 2       Succeeded                 1s        0
├─✗ fan               Failed                                            1 of 2 instances failed
│ ├─✓ fan[0]          Succeeded       1/3                 0
│ └─✗ fan[1]          Failed          1/3                 3     Error   exit code 3
├─✗ load              UpstreamFailed                                    upstream task fan failed
└─✓ report (finally)  Succeeded"
        );
    }

    #[test]
    fn missed_deadlines_and_notifications_show_under_the_tree() {
        use crate::api::{DeliveryState, NotificationRecord, NotifyEvent};
        let record = |key: &str, event, state, attempts, message: Option<&str>| NotificationRecord {
            key: key.into(),
            notification: key.split('/').next().unwrap().into(),
            event,
            state,
            attempts,
            last_attempt_time: None,
            next_attempt_time: None,
            message: message.map(String::from),
        };
        let view = RunView {
            deadlines_missed: vec![runs::MissedView {
                task: Some("load".into()),
                message: "task \"load\" was not done by 2026-01-01T01:00:00Z (1h after its scheduled time); it goes on".into(),
            }],
            notifications: vec![
                record("sla/DeadlineMissed/task/load", NotifyEvent::DeadlineMissed, DeliveryState::Sent, 1, None),
                record(
                    "oncall/Failed/0",
                    NotifyEvent::Failed,
                    DeliveryState::Retrying,
                    2,
                    Some("http://hooks.example.com answered 503 Service Unavailable: busy"),
                ),
            ],
            ..RunView::with_tasks("etl-1", "Failed", vec![task("load", TaskPhase::Failed)])
        };
        let text = render(&view, ts(10), false, None).join("\n");
        let tail: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("Deadlines")).collect();
        assert_eq!(
            tail.join("\n"),
            "\
Deadlines missed:
  task load  task \"load\" was not done by 2026-01-01T01:00:00Z (1h after its scheduled time); it goes on

NOTIFICATION  EVENT           ABOUT      STATE     ATTEMPTS  LAST ERROR
sla           DeadlineMissed  task/load  Sent      1
oncall        Failed          0          Retrying  2         http://hooks.example.com answered 503 Service Unavailable: busy"
        );
        let bare = RunView::with_tasks("etl-1", "Running", vec![task("load", TaskPhase::Running)]);
        assert!(alerts(&bare).is_empty());
    }
}
