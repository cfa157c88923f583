//! `weir approve RUN TASK` and `weir reject RUN TASK`: create an Approval as the person
//! running the command (RBAC on `approvals` decides whether they may). Weir's admission
//! webhook records who they are; the operator then lets the run go on, or fails the task
//! with `Rejected` (docs/approvals.md).

use super::cluster::{Cluster, ClusterArgs, Explain as _, Resource, connect};
use super::runs;
use crate::api::{Approval, ApprovalSpec, Decision, PipelineRun, TaskPhase, TaskRun};
use crate::engine::approval::describe;
use kube::Resource as _;
use kube::api::PostParams;
use std::process::ExitCode;

/// `approvals.weir.dev`, for messages about requests on it.
pub const APPROVALS: Resource = Resource {
    singular: "approval",
    plural: "approvals",
    group: crate::api::GROUP,
};

#[derive(clap::Args)]
pub struct Args {
    /// The PipelineRun.
    run: String,
    /// The approval task of the run waiting for a decision.
    task: String,
    /// Why: recorded with the decision in the TaskRun's status and Event.
    #[arg(long, short = 'm')]
    comment: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn approve(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(decide_and_tell(args, Decision::Approve))
}

pub fn reject(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(decide_and_tell(args, Decision::Reject))
}

async fn decide_and_tell(args: Args, decision: Decision) -> anyhow::Result<ExitCode> {
    let cluster = connect(&args.cluster).await?;
    let made = decide(&cluster, &args.run, &args.task, decision, args.comment).await?;
    let name = made.metadata.name.clone().unwrap_or_default();
    match made.spec.decided_by.as_deref() {
        Some(who) => println!(
            "{} task {} of run {} as {who} (Approval {name}); the operator {}",
            decision.past(),
            args.task,
            args.run,
            match decision {
                Decision::Approve => "lets the run go on",
                Decision::Reject => "fails the task with reason Rejected",
            }
        ),
        None => {
            eprintln!(
                "created Approval {name}, but no admission webhook recorded who you are, so the \
                 operator will ignore it: is Weir's approvals webhook installed (see docs/approvals.md)?"
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the Approval deciding `task` of `run`, after checking that it is an approval
/// task that waits and has no decision yet. `weir approve`/`reject` and the UI.
pub async fn decide(
    cluster: &Cluster,
    run: &str,
    task: &str,
    decision: Decision,
    comment: Option<String>,
) -> anyhow::Result<Approval> {
    let tr = waiting_task(cluster, run, task).await?;
    let tr_name = tr.metadata.name.clone().unwrap_or_default();
    let approval = Approval {
        metadata: kube::api::ObjectMeta {
            name: Some(approval_name(&tr_name, decision, jiff::Timestamp::now())),
            owner_references: tr.controller_owner_ref(&()).map(|mut o| {
                o.controller = None;
                o.block_owner_deletion = None;
                vec![o]
            }),
            ..Default::default()
        },
        spec: ApprovalSpec {
            task_run: tr_name,
            decision,
            comment: comment.filter(|c| !c.trim().is_empty()),
            ..Default::default()
        },
    };
    cluster
        .api::<Approval>()
        .create(&PostParams::default(), &approval)
        .await
        .explain(cluster, "create", APPROVALS, approval.metadata.name.as_deref())
}

/// The TaskRun of `task` in `run`, if it is an approval task waiting for a decision; an
/// error saying what it is otherwise.
async fn waiting_task(cluster: &Cluster, run: &str, task: &str) -> anyhow::Result<TaskRun> {
    let run_obj = cluster.api::<PipelineRun>().get(run).await.explain(
        cluster,
        "get",
        super::cluster::PIPELINE_RUNS,
        Some(run),
    )?;
    let task_runs = runs::task_runs_of(cluster, &run_obj, false).await?;
    let Some(tr) = task_runs.into_iter().find(|t| t.spec.task_name == task) else {
        anyhow::bail!(
            "run {run} has no TaskRun for task {task} yet: the task has not started (or the run has no such task; weir get {run} lists them)"
        );
    };
    let status = tr.status.clone().unwrap_or_default();
    if tr.spec.approval.is_none() {
        anyhow::bail!(
            "task {task} of run {run} is not an approval task (it has no `approval` in the pipeline)"
        );
    }
    if let Some(record) = &status.approval {
        anyhow::bail!(
            "task {task} of run {run} is already decided: {}{}",
            describe(record),
            record
                .decided_at
                .as_ref()
                .map(|t| format!(" at {}", t.0))
                .unwrap_or_default()
        );
    }
    match status.phase {
        Some(TaskPhase::Running) => Ok(tr),
        Some(phase) if phase.is_terminal() => {
            anyhow::bail!("task {task} of run {run} is not waiting for a decision: it is {phase:?}")
        }
        _ => anyhow::bail!("task {task} of run {run} is not waiting for a decision yet (it has not started)"),
    }
}

/// `TASKRUN-approve-1a2b3c`, within the 253 characters of a name: unique per second and
/// person in practice, and created with a fixed name (the signature binds it).
fn approval_name(task_run: &str, decision: Decision, now: jiff::Timestamp) -> String {
    let verb = match decision {
        Decision::Approve => "approve",
        Decision::Reject => "reject",
    };
    let suffix = format!(
        "{:06x}",
        (now.as_nanosecond() as u64 ^ std::process::id() as u64) & 0xff_ffff
    );
    let keep = 253 - verb.len() - suffix.len() - 2;
    let base: String = task_run.chars().take(keep).collect();
    format!("{}-{verb}-{suffix}", base.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_names_fit_and_say_what_they_decide() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let name = approval_name("train-1-deploy", Decision::Approve, now);
        assert!(name.starts_with("train-1-deploy-approve-"), "{name}");
        assert_eq!(name.len(), "train-1-deploy-approve-".len() + 6);
        let long = "a".repeat(300);
        assert_eq!(approval_name(&long, Decision::Reject, now).len(), 253);
    }
}
