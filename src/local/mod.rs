//! `weir run`: a pipeline run on this machine, driven by the same engine as the operator.
//!
//! The runner plays both controllers (see [`runner`]): the planner decides exactly as it
//! does in a cluster (trigger rules, retries and their delays, timeouts, `parallelism`,
//! `finally`, params, templates and outputs), and each attempt is a local process instead of
//! a Job: the task's `command` and `args` with its `env`, in its own process group, its
//! output in a log file under the run directory. The image is not used.
//!
//! What cannot be the same on a laptop, and what Weir does instead:
//! - `valueFrom` variables (Secrets, ConfigMaps, fields) are taken from the environment
//!   `weir run` is started with; a run whose variables are not all there does not start,
//!   and says which task needs which variable.
//! - A task without `command` (one that relies on its image's entrypoint) cannot run.
//! - A wait task waits for its `delay` or `time` with no process; one that waits for another
//!   pipeline's run, a Kubernetes object or an asset needs a cluster, and the run does not
//!   start.
//! - A task's outputs file is in the run directory (`$WEIR_OUTPUTS`), read on success like a
//!   termination message (first 4 KiB).
//! - Resources, security contexts and pod settings have no local meaning and are ignored.

pub mod env;
pub mod process;
pub mod progress;
pub mod runner;

use crate::engine::{ValidPipeline, resolve};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// A run ready to start.
pub struct LocalRun {
    /// The run's name, what a PipelineRun would be called (`WEIR_PIPELINE_RUN`).
    pub name: String,
    pub pipeline_name: String,
    pub pipeline: ValidPipeline,
    /// The run's timeout (the PipelineRun's own, else the pipeline's).
    pub timeout: Option<Duration>,
    /// What templates see of the run (`{{ run.name }}`, params, ...).
    pub context: resolve::RunContext,
    /// Logs, outputs files and `run.json`.
    pub run_dir: PathBuf,
    /// How long a task may take to exit after SIGTERM.
    pub grace: Duration,
    /// The pools the tasks may use (the Pools of the file given), by name: their slots.
    pub pools: BTreeMap<String, u32>,
    /// The artifact store: a directory (`--artifact-dir`, default `<run dir>/artifacts`).
    pub artifact_dir: PathBuf,
}

/// Tasks whose pool the file does not define, or that take more slots than it has: in a
/// cluster they would wait for the pool to be created or made larger; here nothing can, so
/// the run does not start.
pub fn pool_problems(pipeline: &ValidPipeline, pools: &BTreeMap<String, u32>) -> Vec<String> {
    let mut problems = Vec::new();
    for i in 0..pipeline.len() {
        let Some(pool) = pipeline.pool(i) else {
            continue;
        };
        let task = pipeline.name(i);
        let need = pipeline.task(i).pool_slots.unwrap_or(1);
        match pools.get(pool) {
            None => problems.push(format!(
                "task {task:?} uses pool {pool:?}, which the file does not define: add a Pool named {pool:?} (kind: Pool, spec.slots) to it"
            )),
            Some(&slots) if need > slots => problems.push(format!(
                "task {task:?} takes {need} slot(s) of pool {pool:?} (poolSlots), which has only {slots}: it could never start"
            )),
            Some(_) => {}
        }
    }
    problems
}

/// Problems that keep a run from starting on this machine, all of them at once.
pub fn start_problems(pipeline: &ValidPipeline, host: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for i in 0..pipeline.len() {
        let spec = resolve::task_run_spec(pipeline, i);
        let task = pipeline.name(i);
        if let Some(wait) = &spec.wait {
            if !wait.is_local() {
                problems.push(format!(
                    "task {task:?} waits for {}, which needs a cluster: `weir run` can wait only for a delay or a time (run it with `weir trigger` on a cluster)",
                    wait.kinds().join(", ")
                ));
            }
            continue;
        }
        if spec.command.is_empty() {
            problems.push(format!(
                "task {task:?} has no command: locally Weir runs command + args, and cannot run the entrypoint of its image {}",
                spec.image
            ));
        }
        for var in spec.env.iter().filter(|v| v.value_from.is_some()) {
            if host(&var.name).is_none() {
                problems.push(format!(
                    "task {task:?}: variable {} comes from {}, which `weir run` cannot read: set {} in the environment you run it from",
                    var.name,
                    env::source_of(var),
                    var.name
                ));
            }
        }
        if let Some(dir) = &spec.working_dir
            && !std::path::Path::new(dir).is_dir()
        {
            problems.push(format!(
                "task {task:?}: workingDir {dir} does not exist on this machine"
            ));
        }
    }
    problems
}

/// Programs the tasks call that are not found on this machine (checked on `PATH` for bare
/// names, as paths otherwise).
pub fn missing_programs(pipeline: &ValidPipeline) -> Vec<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut missing: Vec<String> = Vec::new();
    for i in 0..pipeline.len() {
        let spec = resolve::task_run_spec(pipeline, i);
        let Some(program) = spec.command.first() else {
            continue;
        };
        if program.contains("{{") || program.contains("$(") || missing.contains(program) {
            continue;
        }
        let found = if program.contains('/') {
            std::path::Path::new(program).exists()
        } else {
            std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
        };
        if !found {
            missing.push(program.clone());
        }
    }
    missing
}

/// The one-time note on what does not apply locally.
pub fn image_note(pipeline: &ValidPipeline) -> String {
    let mut images: Vec<String> = Vec::new();
    for i in 0..pipeline.len() {
        let image = resolve::task_run_spec(pipeline, i).image;
        if !image.is_empty() && !images.contains(&image) {
            images.push(image);
        }
    }
    format!(
        "note: tasks run as processes on this machine; their images are not used ({}): the programs they call must be installed here",
        images.join(", ")
    )
}

/// What `weir run` says of the pipeline's notifications and deadlines, which only the
/// operator acts on; `None` when it declares neither.
pub fn alerts_note(pipeline: &ValidPipeline) -> Option<String> {
    let spec = &pipeline.spec;
    let mut parts = Vec::new();
    if !spec.notifications.is_empty() {
        let names: Vec<&str> = spec.notifications.iter().map(|n| n.name.as_str()).collect();
        parts.push(format!("notifications ({})", names.join(", ")));
    }
    let mut deadlines: Vec<String> = spec
        .deadline
        .iter()
        .map(|d| format!("run: {}", crate::engine::deadline::describe(d)))
        .collect();
    for i in 0..pipeline.len() {
        if let Some(d) = &pipeline.task(i).deadline {
            let name = pipeline.name(i);
            deadlines.push(format!("{name}: {}", crate::engine::deadline::describe(d)));
        }
    }
    if !deadlines.is_empty() {
        parts.push(format!("deadlines ({})", deadlines.join("; ")));
    }
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        "note: {} are acted on by the operator only: weir run sends no message and stops nothing at a deadline",
        parts.join(" and ")
    ))
}

/// The notifications the operator would have sent for a run that ended `outcome`
/// (`Failed` or `Succeeded`), as a line; `None` when none listens.
pub fn would_notify(pipeline: &ValidPipeline, outcome: crate::api::NotifyEvent) -> Option<String> {
    let names: Vec<&str> = pipeline
        .spec
        .notifications
        .iter()
        .filter(|n| {
            n.events.contains(&outcome) || (n.events.is_empty() && outcome == crate::api::NotifyEvent::Failed)
        })
        .map(|n| n.name.as_str())
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "not sent (weir run sends no notifications; the operator would have): {} to {}",
            outcome.as_str(),
            names.join(", ")
        )
    })
}

fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `--dry-run`: what would run, in which order, with templates rendered as far as they can
/// be before anything ran (an upstream task's outputs show as the reference to them).
pub fn plan_text(run: &LocalRun) -> String {
    let pipeline = &run.pipeline;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dry run: run {} of pipeline {} has {} task(s); nothing is started",
        run.name,
        run.pipeline_name,
        pipeline.len()
    );
    let limits = [
        run.timeout
            .map(|t| format!("run timeout {}", crate::engine::duration::format(t))),
        pipeline
            .parallelism
            .map(|p| format!("at most {p} task(s) at once")),
    ];
    let limits: Vec<String> = limits.into_iter().flatten().collect();
    if !limits.is_empty() {
        let _ = writeln!(out, "{}", limits.join(", "));
    }
    if !run.context.params.is_empty() {
        let params: Vec<String> = run
            .context
            .params
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        let _ = writeln!(out, "params: {}", params.join(" "));
    }
    let placeholder = |task: &str, key: &str| {
        Some(serde_json::Value::String(format!(
            "{{{{ tasks.{task}.outputs.{key} }}}}"
        )))
    };
    let layers = crate::graph::layers(pipeline);
    let mut in_finally = false;
    for (step, layer) in layers.iter().enumerate() {
        for &t in layer {
            if pipeline.is_finally(t) && !in_finally {
                in_finally = true;
                let _ = writeln!(out, "\nfinally (after every task above, whatever the outcome):");
            }
            let task = pipeline.task(t);
            let values = resolve::TaskValues {
                run: &run.context,
                outputs: &placeholder,
                item: None,
                lenient: true,
            };
            let _ = write!(out, "\n{}. {}", step + 1, task.name);
            let upstream: Vec<&str> = pipeline
                .dag
                .upstream(t)
                .iter()
                .map(|&u| pipeline.name(u))
                .collect();
            if !upstream.is_empty() {
                let _ = write!(out, "  after {}", upstream.join(", "));
                if let Some(rule) = task
                    .trigger_rule
                    .filter(|r| *r != crate::api::TriggerRule::AllSucceeded)
                {
                    let _ = write!(out, " ({rule:?})");
                }
            }
            out.push('\n');
            for w in &task.when {
                let _ = writeln!(out, "   when {} {:?} {:?}", w.input, w.operator, w.values);
            }
            let items = resolve::items(pipeline, t, &values);
            let item = match (&items, &task.for_each) {
                (Ok(list), Some(_)) => {
                    let _ = writeln!(out, "   for each of {} item(s); the first:", list.len());
                    list.first()
                }
                (Err(_), Some(for_each)) => {
                    // Items that come from an upstream task are known when it has run.
                    let written = match &for_each.items {
                        Some(items) => items.to_string(),
                        None => serde_json::to_string(&for_each.matrix).unwrap_or_default(),
                    };
                    let _ = writeln!(out, "   for each item of {written}");
                    None
                }
                _ => None,
            };
            let values = resolve::TaskValues { item, ..values };
            let instance = task.for_each.as_ref().map(|_| 0);
            let spec = resolve::resolve_task(pipeline, t, instance, &values)
                .unwrap_or_else(|_| resolve::task_run_spec(pipeline, t));
            let argv: Vec<&String> = spec.command.iter().chain(&spec.args).collect();
            let scripts = argv.iter().filter(|a| a.contains('\n')).count();
            let mut n = 0;
            let words: Vec<String> = argv
                .iter()
                .map(|a| {
                    if !a.contains('\n') {
                        return shell_word(a);
                    }
                    n += 1;
                    if scripts == 1 {
                        "<script>".to_string()
                    } else {
                        format!("<script {n}>")
                    }
                })
                .collect();
            let _ = writeln!(out, "   $ {}", words.join(" "));
            let mut n = 0;
            for a in argv.iter().filter(|a| a.contains('\n')) {
                n += 1;
                if scripts > 1 {
                    let _ = writeln!(out, "   <script {n}>:");
                }
                for line in a.trim_end().lines() {
                    let _ = writeln!(out, "   | {line}");
                }
            }
            for var in &spec.env {
                match (&var.value, &var.value_from) {
                    (_, Some(_)) => {
                        let _ = writeln!(out, "   {}=<from {}>", var.name, env::source_of(var));
                    }
                    (value, None) => {
                        let _ = writeln!(out, "   {}={}", var.name, value.as_deref().unwrap_or_default());
                    }
                }
            }
            let mut settings = Vec::new();
            if let Some(r) = &spec.retries {
                let mut text = format!(
                    "retries {} (delay {}",
                    r.limit,
                    r.delay.as_deref().unwrap_or("10s")
                );
                if let Some(f) = r.backoff_factor.filter(|f| *f != 1.0) {
                    let _ = write!(text, ", x{f}");
                }
                if let Some(m) = &r.max_delay {
                    let _ = write!(text, ", at most {m}");
                }
                text.push(')');
                settings.push(text);
            }
            if let Some(t) = &spec.timeout {
                settings.push(format!("timeout {t}"));
            }
            if !spec.outputs.is_empty() {
                settings.push(format!("outputs {}", spec.outputs.join(", ")));
            }
            if !settings.is_empty() {
                let _ = writeln!(out, "   {}", settings.join(", "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixture::pipeline;
    use crate::engine::validate;

    #[test]
    fn weir_run_says_that_notifications_and_deadlines_are_the_operators() {
        let spec: crate::api::PipelineSpec = serde_json::from_value(serde_json::json!({
            "tasks": [
                {"name": "extract", "image": "busybox"},
                {"name": "load", "image": "busybox", "deadline": {"within": "30m", "from": "TaskStart"}},
            ],
            "deadline": {"within": "2h"},
            "notifications": [
                {"name": "oncall", "webhook": {"url": "http://hooks.example.com/x"}},
                {"name": "team", "events": ["Succeeded"], "slack": {"url": "http://chat.example.com/y"}},
            ],
        }))
        .unwrap();
        let valid = validate(&spec).unwrap();
        assert_eq!(
            alerts_note(&valid).unwrap(),
            "note: notifications (oncall, team) and deadlines (run: 2h after its scheduled time; \
             load: 30m after the task's start) are acted on by the operator only: weir run sends \
             no message and stops nothing at a deadline"
        );
        use crate::api::NotifyEvent;
        assert!(
            would_notify(&valid, NotifyEvent::Failed)
                .unwrap()
                .ends_with("Failed to oncall")
        );
        assert!(
            would_notify(&valid, NotifyEvent::Succeeded)
                .unwrap()
                .ends_with("Succeeded to team")
        );
        let plain = validate(&pipeline().task("a").build()).unwrap();
        assert_eq!(alerts_note(&plain), None);
        assert_eq!(would_notify(&plain, NotifyEvent::Failed), None);
    }

    #[test]
    fn words_are_quoted_for_a_shell_only_when_needed() {
        assert_eq!(shell_word("python3"), "python3");
        assert_eq!(shell_word("echo hi"), "'echo hi'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn tasks_that_cannot_run_here_are_all_reported() {
        let mut spec = pipeline().task("a").task("b").build();
        spec.tasks[0].command.clear();
        spec.tasks[1].env.push(k8s_openapi::api::core::v1::EnvVar {
            name: "TOKEN".into(),
            value: None,
            value_from: Some(Default::default()),
        });
        spec.tasks[1].working_dir = Some("/no/such/dir/for/weir".into());
        let valid = validate(&spec).unwrap();
        let problems = start_problems(&valid, &|_| None);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("\"a\" has no command"));
        assert!(problems[1].contains("TOKEN"));
        assert!(problems[2].contains("/no/such/dir/for/weir"));
        assert!(start_problems(&valid, &|_| Some("x".into())).len() == 2);
    }
}
