//! Jobs of attempts: building one from a TaskRun (`build_job`, no client) and reading what
//! happened to one from the Job and its pods (`observe_attempt`, no client), disruptions
//! included: a pod evicted, preempted, lost with its node, or deleted while it ran.

use crate::api::annotations;
use crate::api::{AttemptPhase, FailureReason, PodReplacements, TaskRun, labels};
use crate::engine::{duration, names, outputs};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerStateTerminated, EnvVar, Pod, PodSpec, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Name of the task's container in every attempt pod.
pub const CONTAINER: &str = "task";

/// Defaults for every task pod, from the operator's installation (the Helm chart's
/// `taskPods` values): a pipeline's `podTemplate` and a task's `securityContext` win field by
/// field; labels, annotations and node selectors are merged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskPodDefaults {
    pub pod: crate::api::PodTemplate,
    pub container_security_context: Option<k8s_openapi::api::core::v1::SecurityContext>,
    /// The artifact store and how tasks run under `weir exec`.
    pub artifacts: super::artifacts::ArtifactSettings,
}

fn merged_pod_template(
    own: Option<&crate::api::PodTemplate>,
    defaults: &TaskPodDefaults,
) -> crate::api::PodTemplate {
    let own = own.cloned().unwrap_or_default();
    let d = defaults.pod.clone();
    let merge = |mut base: BTreeMap<String, String>, top: BTreeMap<String, String>| {
        base.extend(top);
        base
    };
    crate::api::PodTemplate {
        service_account_name: own.service_account_name.or(d.service_account_name),
        node_selector: merge(d.node_selector, own.node_selector),
        tolerations: if own.tolerations.is_empty() {
            d.tolerations
        } else {
            own.tolerations
        },
        image_pull_secrets: if own.image_pull_secrets.is_empty() {
            d.image_pull_secrets
        } else {
            own.image_pull_secrets
        },
        security_context: own.security_context.or(d.security_context),
        priority_class_name: own.priority_class_name.or(d.priority_class_name),
        labels: merge(d.labels, own.labels),
        annotations: merge(d.annotations, own.annotations),
        kueue_queue_name: own.kueue_queue_name.or(d.kueue_queue_name),
    }
}

/// The Job of attempt `attempt` of `task_run`. One pod, never restarted (`backoffLimit: 0`):
/// retries are Weir's, so each attempt keeps its own pod and logs.
pub fn build_job(task_run: &TaskRun, attempt: u32, defaults: &TaskPodDefaults) -> Option<Job> {
    let spec = &task_run.spec;
    let mut labels = job_labels(task_run, task_run.uid()?, attempt);
    let annotations = BTreeMap::from([(annotations::TASK_RUN.to_string(), task_run.name_any())]);
    let pod_template = merged_pod_template(spec.pod_template.as_ref(), defaults);
    let mut pod_labels = pod_template.labels.clone();
    pod_labels.extend(labels.clone());
    if let Some(queue) = &pod_template.kueue_queue_name {
        // On the Job only: Kueue admits Jobs, and a pod label would make no difference.
        labels.insert(labels::KUEUE_QUEUE_NAME.to_string(), queue.clone());
    }
    let mut pod_annotations = pod_template.annotations.clone();
    pod_annotations.extend(annotations.clone());
    let active_deadline_seconds = spec
        .timeout
        .as_deref()
        .and_then(|t| duration::parse(t).ok())
        .map(|d| d.as_secs_f64().ceil().max(1.0) as i64);
    let container = task_container(task_run, attempt, defaults);
    let mut pod = pod_spec(container, &pod_template);
    super::artifacts::wrap(&mut pod, task_run, attempt, &defaults.artifacts);
    Some(Job {
        metadata: ObjectMeta {
            name: Some(names::job_name(&task_run.name_any(), attempt)),
            namespace: task_run.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![task_run.controller_owner_ref(&())?]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// Labels of an attempt's Job and pod: Weir's own, and those of the run the TaskRun belongs to.
fn job_labels(task_run: &TaskRun, uid: String, attempt: u32) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (
            labels::TASK_RUN.to_string(),
            names::label_value(&task_run.name_any()),
        ),
        (labels::TASK_RUN_UID.to_string(), uid),
        (labels::TASK.to_string(), task_run.spec.task_name.clone()),
        (labels::ATTEMPT.to_string(), attempt.to_string()),
    ]);
    for key in [labels::PIPELINE, labels::PIPELINE_RUN, labels::PIPELINE_RUN_UID] {
        if let Some(value) = task_run.labels().get(key) {
            labels.insert(key.to_string(), value.clone());
        }
    }
    labels
}

/// The task's container. Its termination message carries the outputs on success and the
/// failure (or the log tail) otherwise.
fn task_container(task_run: &TaskRun, attempt: u32, defaults: &TaskPodDefaults) -> Container {
    let spec = &task_run.spec;
    Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(task_env(task_run, attempt)),
        working_dir: spec.working_dir.clone(),
        resources: spec.resources.clone(),
        security_context: spec
            .security_context
            .clone()
            .or_else(|| defaults.container_security_context.clone()),
        // On a failure with an empty termination message the log tail becomes the message,
        // so an attempt's failure explains itself in the TaskRun status.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        termination_message_path: Some(outputs::TERMINATION_MESSAGE_PATH.into()),
        ..Default::default()
    }
}

/// What a task may want to know about itself, like Airflow's context (`try_number`, ...).
/// The task's own variables come last so they win on a name clash.
fn task_env(task_run: &TaskRun, attempt: u32) -> Vec<EnvVar> {
    let spec = &task_run.spec;
    let run_name = task_run
        .annotations()
        .get(annotations::PIPELINE_RUN)
        .cloned()
        .unwrap_or_default();
    let mut env = vec![
        env_var("WEIR_TASK", &spec.task_name),
        env_var("WEIR_TASK_RUN", &task_run.name_any()),
        env_var("WEIR_PIPELINE_RUN", &run_name),
        env_var("WEIR_ATTEMPT", &attempt.to_string()),
        env_var(outputs::OUTPUTS_ENV, outputs::TERMINATION_MESSAGE_PATH),
    ];
    env.retain(|v| !spec.env.iter().any(|own| own.name == v.name));
    env.extend(spec.env.iter().cloned());
    env
}

/// One container, never restarted, with the pod-level settings of the merged template.
fn pod_spec(container: Container, pod_template: &crate::api::PodTemplate) -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".into()),
        containers: vec![container],
        service_account_name: pod_template.service_account_name.clone(),
        node_selector: (!pod_template.node_selector.is_empty()).then(|| pod_template.node_selector.clone()),
        tolerations: (!pod_template.tolerations.is_empty()).then(|| pod_template.tolerations.clone()),
        image_pull_secrets: (!pod_template.image_pull_secrets.is_empty())
            .then(|| pod_template.image_pull_secrets.clone()),
        security_context: pod_template.security_context.clone(),
        priority_class_name: pod_template.priority_class_name.clone(),
        ..Default::default()
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// What an attempt's Job and pods say happened.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptReport {
    pub phase: AttemptPhase,
    pub reason: Option<FailureReason>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub finished_at: Option<jiff::Timestamp>,
    /// The Job is still active but its attempt is over: its pod can never start, or was
    /// deleted while it ran (and the Job may be running a replacement). Weir fails the
    /// attempt and deletes the Job.
    pub delete_job: bool,
    /// The attempt's newest pod, if one was seen.
    pub pod_name: Option<String>,
    /// Pods of the attempt that its Job replaced.
    pub replacements: Option<PodReplacements>,
}

/// Reads the outcome of an attempt from its Job and its pods, oldest first. `known_pod` is
/// the pod an earlier look recorded for the attempt, so that a pod that vanished since (and
/// was perhaps replaced) is noticed; `now` tells a pod deleted by the Job's own deadline
/// from one deleted by someone else.
pub fn observe_attempt(
    job: &Job,
    pods: &[&Pod],
    known_pod: Option<&str>,
    now: jiff::Timestamp,
) -> AttemptReport {
    let pod = pods.last().copied();
    let deletion = PodDeletion::find(job, pods, known_pod);
    let mut report = AttemptReport {
        pod_name: pod.map(|p| p.name_any()).or(known_pod.map(String::from)),
        replacements: deletion.as_ref().and_then(PodDeletion::replacements),
        ..outcome(job, pod, deletion.as_ref(), now)
    };
    if report.phase == AttemptPhase::Running {
        // Nothing to record of a replacement while the attempt goes on.
        report.replacements = None;
    }
    report
}

/// Phase, reason and message of an attempt from its Job, its newest pod and a deletion of
/// one of its pods.
fn outcome(
    job: &Job,
    pod: Option<&Pod>,
    deletion: Option<&PodDeletion>,
    now: jiff::Timestamp,
) -> AttemptReport {
    let status = job.status.clone().unwrap_or_default();
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
            .cloned()
    };
    let terminated = pod.and_then(container_terminated);
    let exit_code = terminated.as_ref().map(|t| t.exit_code);
    let pod_message = terminated
        .as_ref()
        .and_then(|t| t.message.clone())
        .filter(|m| !m.trim().is_empty());
    let report = |phase, reason, exit_code, message, finished_at| AttemptReport {
        phase,
        reason,
        exit_code,
        message,
        finished_at,
        delete_job: false,
        pod_name: None,
        replacements: None,
    };

    if let Some(complete) = condition("Complete") {
        let finished = status
            .completion_time
            .map(|t| t.0)
            .or(complete.last_transition_time.map(|t| t.0));
        let code = exit_code.or(Some(0));
        return report(AttemptPhase::Succeeded, None, code, pod_message, finished);
    }
    if let Some(failed) = condition("Failed") {
        let finished = failed.last_transition_time.as_ref().map(|t| t.0);
        let (reason, message) = if past_deadline(job, finished.unwrap_or(now)) {
            // The 1.20 Job controller checks the backoff limit before the deadline: when the
            // pod it deleted at the deadline is seen failed before the Job's condition is
            // written, the reason is `BackoffLimitExceeded`. The attempt still ran out of
            // time; its deleted pod is no disruption.
            (FailureReason::DeadlineExceeded, failed.message.clone())
        } else {
            failure(
                &failed,
                pod,
                terminated.as_ref(),
                pod_message.as_deref(),
                deletion,
            )
        };
        return report(AttemptPhase::Failed, Some(reason), exit_code, message, finished);
    }
    // Still active: look for a pod that can never start, or one deleted under the attempt.
    let over = pod.and_then(stuck_reason).or_else(|| {
        let deletion = deletion.filter(|_| !past_deadline(job, now))?;
        Some((deletion.reason, deletion.message()))
    });
    match over {
        Some((reason, message)) => AttemptReport {
            delete_job: true,
            ..report(AttemptPhase::Failed, Some(reason), None, Some(message), None)
        },
        None => report(AttemptPhase::Running, None, None, None, None),
    }
}

/// Whether the Job completed: its pod exited 0 (`Complete`).
pub fn job_complete(job: &Job) -> bool {
    job.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Complete" && c.status == "True")
}

/// Whether the Job has not finished: no `Complete` or `Failed` condition yet.
pub fn job_active(job: &Job) -> bool {
    !job.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// Whether the Job has run past its `activeDeadlineSeconds`: the Job controller then deletes
/// its pod and fails it with `DeadlineExceeded`, which is no disruption.
fn past_deadline(job: &Job, now: jiff::Timestamp) -> bool {
    let deadline = job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
    let started = job.status.as_ref().and_then(|s| s.start_time.as_ref());
    match (deadline, started) {
        (Some(secs), Some(started)) => now >= started.0 + jiff::SignedDuration::from_secs(secs),
        _ => false,
    }
}

/// Why a Job failed, most telling first: its deadline, what its pod says disrupted it, a pod
/// deleted while it ran, then what the container's termination says.
fn failure(
    failed: &JobCondition,
    pod: Option<&Pod>,
    terminated: Option<&ContainerStateTerminated>,
    pod_message: Option<&str>,
    deletion: Option<&PodDeletion>,
) -> (FailureReason, Option<String>) {
    let job_reason = failed.reason.clone().unwrap_or_default();
    if job_reason == "DeadlineExceeded" {
        return (FailureReason::DeadlineExceeded, failed.message.clone());
    }
    if let Some(disrupted) = pod.and_then(disruption) {
        return disrupted;
    }
    if let Some(deletion) = deletion {
        return (deletion.reason, Some(deletion.message()));
    }
    if let Some(t) = terminated {
        let reason = match t.reason.as_deref() {
            Some("OOMKilled") => FailureReason::OOMKilled,
            _ if t.exit_code == crate::artifacts::exec::FAILURE_EXIT_CODE
                && pod_message.is_some_and(|m| m.starts_with(crate::artifacts::exec::FAILURE_PREFIX)) =>
            {
                FailureReason::ArtifactError
            }
            _ if t.exit_code != 0 => FailureReason::Error,
            _ => FailureReason::Unknown,
        };
        let message = match pod_message {
            Some(m) => format!("exit code {}: {}", t.exit_code, m.trim_end()),
            None => format!("exit code {}", t.exit_code),
        };
        return (reason, Some(message));
    }
    (
        FailureReason::Unknown,
        failed.message.clone().or(Some(job_reason)),
    )
}

/// A pod that says it was ended from outside its task: evicted, preempted, its node gone
/// (the `DisruptionTarget` condition of Kubernetes 1.26 and later, else the pod's reason).
fn disruption(pod: &Pod) -> Option<(FailureReason, Option<String>)> {
    let status = pod.status.as_ref()?;
    let target = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True");
    if let Some(c) = target {
        let message = c.message.clone().or(status.message.clone());
        return Some((disruption_target_reason(c.reason.as_deref()), message));
    }
    let by_container = container_terminated(pod)
        .filter(|t| t.reason.as_deref() == Some("ContainerStatusUnknown"))
        .map(|t| (FailureReason::NodeLost, t.message));
    let reason = match status.reason.as_deref() {
        Some("Evicted") => FailureReason::Evicted,
        Some("Preempting") => FailureReason::Preempted,
        // A node that went away or shut down (`Shutdown` up to 1.20, `Terminated` after).
        Some("NodeLost" | "Shutdown" | "Terminated" | "NodeShutdown") => FailureReason::NodeLost,
        _ => return by_container,
    };
    Some((reason, status.message.clone()))
}

/// What the reason of a `DisruptionTarget` condition means for an attempt.
fn disruption_target_reason(reason: Option<&str>) -> FailureReason {
    match reason {
        Some("PreemptionByScheduler" | "PreemptionByKubeScheduler") => FailureReason::Preempted,
        Some("EvictionByEvictionAPI" | "TerminationByKubelet") => FailureReason::Evicted,
        Some("DeletionByTaintManager" | "DeletionByPodGC") => FailureReason::NodeLost,
        _ => FailureReason::PodDeleted,
    }
}

/// A pod of an attempt deleted while the attempt ran, by anyone but Weir (Weir deletes Jobs,
/// never pods), and the pods its Job started in its place.
#[derive(Clone, Debug, PartialEq)]
struct PodDeletion {
    /// The deleted pod, if its name is known.
    deleted: Option<String>,
    reason: FailureReason,
    /// Pods of the attempt other than the deleted one: the Job's replacements.
    replaced_by: Vec<String>,
}

impl PodDeletion {
    /// A deleted pod among `pods` (oldest first), or `known_pod` gone from them; for a Job
    /// that failed (not for its deadline), no pod left at all.
    fn find(job: &Job, pods: &[&Pod], known_pod: Option<&str>) -> Option<PodDeletion> {
        let vanished = known_pod.filter(|k| !pods.iter().any(|p| p.name_any() == *k));
        let deleting = pods.iter().find(|p| deleted_while_running(p));
        let failed_without_pod = pods.is_empty() && job_failed_by_pod(job);
        if vanished.is_none() && deleting.is_none() && !failed_without_pod {
            return None;
        }
        let deleted = vanished.map(String::from).or(deleting.map(|p| p.name_any()));
        let reason = deleting
            .and_then(|p| disruption(p))
            .map_or(FailureReason::PodDeleted, |(reason, _)| reason);
        let replaced_by = pods
            .iter()
            .map(|p| p.name_any())
            .filter(|name| Some(name) != deleted.as_ref())
            .collect();
        Some(PodDeletion {
            deleted,
            reason,
            replaced_by,
        })
    }

    fn message(&self) -> String {
        let pod = match &self.deleted {
            Some(name) => format!("pod {name}"),
            None => "the attempt's pod".to_string(),
        };
        match self.replaced_by.as_slice() {
            [] => format!("{pod} was deleted while it ran"),
            names => format!(
                "{pod} was deleted while it ran; its Job replaced it with pod {}",
                names.join(", pod ")
            ),
        }
    }

    fn replacements(&self) -> Option<PodReplacements> {
        (!self.replaced_by.is_empty()).then(|| PodReplacements {
            count: self.replaced_by.len() as u32,
            reason: self.reason,
            message: Some(format!(
                "{}, which ran the task again within the same attempt",
                self.message()
            )),
        })
    }
}

/// A pod deleted before its container ended on its own: deletion asked for it (at its
/// `deletionTimestamp` less its grace period) no later than the container finished.
fn deleted_while_running(pod: &Pod) -> bool {
    let Some(at) = &pod.metadata.deletion_timestamp else {
        return false;
    };
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
    let asked = at.0 - jiff::SignedDuration::from_secs(grace);
    match container_terminated(pod) {
        Some(t) => t.finished_at.as_ref().is_none_or(|f| f.0 >= asked),
        None => true,
    }
}

/// The Job failed because a pod failed (not for its deadline).
fn job_failed_by_pod(job: &Job) -> bool {
    job.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Failed" && c.status == "True" && c.reason.as_deref() != Some("DeadlineExceeded"))
}

/// Whether the task's container in `pod` has terminated.
pub fn pod_terminated(pod: &Pod) -> bool {
    container_terminated(pod).is_some()
}

fn container_terminated(pod: &Pod) -> Option<ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .clone()
}

/// A waiting reason that means the container will never start without a change: the image
/// cannot be pulled, or its configuration refers to something missing.
fn stuck_reason(pod: &Pod) -> Option<(FailureReason, String)> {
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?;
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let detail = waiting.message.clone().unwrap_or_default();
    let image = &status.image;
    match waiting.reason.as_deref()? {
        "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => Some((
            FailureReason::ImagePullError,
            format!("image {image:?} cannot be pulled: {detail}"),
        )),
        "CreateContainerConfigError" | "CreateContainerError" => Some((
            FailureReason::ConfigError,
            format!("container cannot be created: {detail}"),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TaskRunSpec;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn task_run() -> TaskRun {
        let mut tr = TaskRun::new(
            "etl-run-extract",
            TaskRunSpec {
                task_name: "extract".into(),
                image: "python:3.12".into(),
                command: vec!["python3".into(), "-c".into(), "print(1)".into()],
                timeout: Some("90s".into()),
                ..Default::default()
            },
        );
        tr.metadata.namespace = Some("data".into());
        tr.metadata.uid = Some("uid-1".into());
        tr
    }

    #[test]
    fn a_kueue_queue_name_labels_the_job_not_the_pod() {
        let plain = build_job(&task_run(), 1, &TaskPodDefaults::default()).unwrap();
        assert!(
            !plain
                .metadata
                .labels
                .unwrap()
                .contains_key(labels::KUEUE_QUEUE_NAME)
        );
        let mut tr = task_run();
        tr.spec.pod_template = Some(crate::api::PodTemplate {
            kueue_queue_name: Some("team-gpus".into()),
            ..Default::default()
        });
        let job = build_job(&tr, 1, &TaskPodDefaults::default()).unwrap();
        assert_eq!(
            job.metadata.labels.unwrap()[labels::KUEUE_QUEUE_NAME],
            "team-gpus"
        );
        let pod_labels = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert!(!pod_labels.contains_key(labels::KUEUE_QUEUE_NAME));
    }

    #[test]
    fn job_has_no_kubernetes_retries_and_a_deadline() {
        let job = build_job(&task_run(), 2, &TaskPodDefaults::default()).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("etl-run-extract-2"));
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(90));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.containers[0].command.as_ref().unwrap()[0], "python3");
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("TaskRun", Some(true)));
        assert_eq!(job.metadata.labels.unwrap()[labels::ATTEMPT], "2");
        let env = pod.containers[0].env.as_ref().unwrap();
        assert!(
            env.iter()
                .any(|v| v.name == "WEIR_ATTEMPT" && v.value.as_deref() == Some("2"))
        );
    }

    #[test]
    fn installation_defaults_fill_what_the_pipeline_leaves_out() {
        use crate::api::PodTemplate;
        use k8s_openapi::api::core::v1::{LocalObjectReference, SecurityContext};
        let defaults = TaskPodDefaults {
            pod: PodTemplate {
                service_account_name: Some("weir-tasks".into()),
                image_pull_secrets: vec![LocalObjectReference {
                    name: "registry".into(),
                }],
                labels: BTreeMap::from([("team".into(), "data".into()), ("tier".into(), "batch".into())]),
                ..Default::default()
            },
            container_security_context: Some(SecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut tr = task_run();
        tr.spec.pod_template = Some(PodTemplate {
            service_account_name: Some("etl".into()),
            labels: BTreeMap::from([("tier".into(), "critical".into())]),
            ..Default::default()
        });
        let job = build_job(&tr, 1, &defaults).unwrap();
        let template = job.spec.unwrap().template;
        let pod = template.spec.unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("etl"),
            "the pipeline's own value wins"
        );
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
        assert_eq!(
            pod.containers[0]
                .security_context
                .as_ref()
                .unwrap()
                .run_as_non_root,
            Some(true)
        );
        let labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(
            (labels["team"].as_str(), labels["tier"].as_str()),
            ("data", "critical")
        );
        assert_eq!(
            labels[labels::MANAGED_BY],
            labels::MANAGED_BY_VALUE,
            "Weir's own labels are kept"
        );
    }

    /// What `observe_attempt` reads of a Job with at most one pod, that no earlier look saw.
    fn observe(job: &Job, pod: Option<&Pod>) -> AttemptReport {
        let pods: Vec<&Pod> = pod.into_iter().collect();
        observe_attempt(job, &pods, None, jiff::Timestamp::from_second(1_000).unwrap())
    }

    fn job_with(type_: &str, reason: &str) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: type_.into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some(format!("{reason} happened")),
                    last_transition_time: Some(Time(jiff::Timestamp::from_second(100).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod_terminated(code: i32, reason: &str, message: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: code,
                            reason: Some(reason.into()),
                            message: Some(message.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn failure_reasons_are_classified() {
        let r = observe(
            &job_with("Failed", "BackoffLimitExceeded"),
            Some(&pod_terminated(3, "Error", "bad row")),
        );
        assert_eq!(
            (r.phase, r.reason, r.exit_code),
            (AttemptPhase::Failed, Some(FailureReason::Error), Some(3))
        );
        assert_eq!(r.message.as_deref(), Some("exit code 3: bad row"));
        assert_eq!(r.finished_at, Some(jiff::Timestamp::from_second(100).unwrap()));

        let r = observe(
            &job_with("Failed", "BackoffLimitExceeded"),
            Some(&pod_terminated(137, "OOMKilled", "")),
        );
        assert_eq!(r.reason, Some(FailureReason::OOMKilled));

        let r = observe(&job_with("Failed", "DeadlineExceeded"), None);
        assert_eq!(r.reason, Some(FailureReason::DeadlineExceeded));

        let r = observe(
            &job_with("Complete", ""),
            Some(&pod_terminated(0, "Completed", "{}")),
        );
        assert_eq!(r.phase, AttemptPhase::Succeeded);
    }

    #[test]
    fn failures_without_a_telling_container_are_classified() {
        let evicted = Pod {
            status: Some(PodStatus {
                reason: Some("Evicted".into()),
                message: Some("The node was low on resource: memory.".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let failed = || job_with("Failed", "BackoffLimitExceeded");
        let cases = [
            (
                "an evicted pod",
                observe(&failed(), Some(&evicted)),
                FailureReason::Evicted,
                Some("The node was low on resource: memory."),
            ),
            (
                "no pod left: it was deleted",
                observe(&failed(), None),
                FailureReason::PodDeleted,
                Some("the attempt's pod was deleted while it ran"),
            ),
            (
                "a failed Job whose container exited 0",
                observe(&failed(), Some(&pod_terminated(0, "Completed", ""))),
                FailureReason::Unknown,
                Some("exit code 0"),
            ),
        ];
        for (name, report, reason, message) in cases {
            assert_eq!(
                (report.phase, report.reason, report.message.as_deref()),
                (AttemptPhase::Failed, Some(reason), message),
                "{name}"
            );
        }
    }

    #[test]
    fn a_task_variable_wins_over_weirs_own() {
        let mut tr = task_run();
        tr.spec.env = vec![env_var("WEIR_ATTEMPT", "mine"), env_var("EXTRA", "x")];
        let env = task_env(&tr, 2);
        let values: Vec<(&str, Option<&str>)> = env
            .iter()
            .filter(|v| v.name == "WEIR_ATTEMPT" || v.name == "EXTRA")
            .map(|v| (v.name.as_str(), v.value.as_deref()))
            .collect();
        assert_eq!(values, [("WEIR_ATTEMPT", Some("mine")), ("EXTRA", Some("x"))]);
        assert!(env.iter().any(|v| v.name == "WEIR_TASK"), "the others stay");
    }

    #[test]
    fn image_pull_backoff_is_stuck() {
        let pod = Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    image: "no/such:image".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ImagePullBackOff".into()),
                            message: Some("not found".into()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = observe(&Job::default(), Some(&pod));
        assert!(r.delete_job);
        assert_eq!(r.reason, Some(FailureReason::ImagePullError));
        assert!(r.message.unwrap().contains("no/such:image"));
    }

    const NOW: i64 = 1_000;

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    /// A pod named `name`, created at `created`, whose container exited with `code` at
    /// `finished`, or is still running.
    fn mk_pod(name: &str, created: i64, exited: Option<(i32, i64)>) -> Pod {
        let state = match exited {
            Some((code, finished)) => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    finished_at: Some(Time(ts(finished))),
                    ..Default::default()
                }),
                ..Default::default()
            },
            None => ContainerState {
                running: Some(Default::default()),
                ..Default::default()
            },
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(state),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    /// `pod`, deleted at `asked` with a grace period of 30 seconds.
    fn deleted_at(mut pod: Pod, asked: i64) -> Pod {
        pod.metadata.deletion_timestamp = Some(Time(ts(asked + 30)));
        pod.metadata.deletion_grace_period_seconds = Some(30);
        pod
    }

    fn active_job() -> Job {
        Job {
            status: Some(JobStatus::default()),
            ..Default::default()
        }
    }

    fn read(job: &Job, pods: &[Pod], known: Option<&str>) -> AttemptReport {
        let pods: Vec<&Pod> = pods.iter().collect();
        observe_attempt(job, &pods, known, ts(NOW))
    }

    #[test]
    fn a_pod_that_says_it_was_disrupted_is_a_disruption() {
        let with = |reason: Option<&str>, target: Option<&str>, container_reason: Option<&str>| {
            let mut pod = mk_pod("p", 100, Some((137, 200)));
            let status = pod.status.as_mut().unwrap();
            status.reason = reason.map(Into::into);
            status.message = Some("said the node".into());
            if let Some(target) = target {
                status.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some(target.into()),
                    message: Some(format!("{target} happened")),
                    ..Default::default()
                }]);
            }
            let terminated = status.container_statuses.as_mut().unwrap()[0]
                .state
                .as_mut()
                .unwrap()
                .terminated
                .as_mut()
                .unwrap();
            terminated.reason = container_reason.map(Into::into);
            observe(&job_with("Failed", "BackoffLimitExceeded"), Some(&pod))
        };
        use FailureReason::*;
        let cases = [
            (with(Some("Evicted"), None, None), Evicted, "said the node"),
            (with(Some("Preempting"), None, None), Preempted, "said the node"),
            (with(Some("Shutdown"), None, None), NodeLost, "said the node"),
            (with(Some("Terminated"), None, None), NodeLost, "said the node"),
            (with(Some("NodeLost"), None, None), NodeLost, "said the node"),
            (
                with(None, Some("PreemptionByScheduler"), None),
                Preempted,
                "PreemptionByScheduler happened",
            ),
            (
                with(None, Some("EvictionByEvictionAPI"), None),
                Evicted,
                "EvictionByEvictionAPI happened",
            ),
            (
                with(None, Some("DeletionByTaintManager"), None),
                NodeLost,
                "DeletionByTaintManager happened",
            ),
            (
                with(None, Some("SomethingNew"), None),
                PodDeleted,
                "SomethingNew happened",
            ),
            (with(None, None, Some("ContainerStatusUnknown")), NodeLost, ""),
        ];
        for (report, reason, message) in cases {
            assert_eq!(report.reason, Some(reason), "{message}");
            assert_eq!(report.message.unwrap_or_default(), message);
        }
        let own = with(Some("SomethingElse"), None, Some("Error"));
        assert_eq!(own.reason, Some(Error), "a pod reason that is no disruption");
    }

    #[test]
    fn a_pod_deleted_while_it_ran_ends_its_attempt() {
        let running = || mk_pod("extract-1-aaaaa", 100, None);
        let r = read(&active_job(), &[deleted_at(running(), 150)], None);
        assert_eq!(
            (r.phase, r.reason, r.delete_job),
            (AttemptPhase::Failed, Some(FailureReason::PodDeleted), true)
        );
        assert_eq!(
            r.message.as_deref(),
            Some("pod extract-1-aaaaa was deleted while it ran")
        );
        assert_eq!(
            (r.pod_name.as_deref(), r.replacements),
            (Some("extract-1-aaaaa"), None)
        );

        // Killed by the deletion: the Job failed (1.20 counts the pod), the pod says 143.
        let killed = deleted_at(mk_pod("extract-1-aaaaa", 100, Some((143, 150))), 150);
        let r = read(&job_with("Failed", "BackoffLimitExceeded"), &[killed], None);
        assert_eq!(
            (r.reason, r.exit_code, r.delete_job),
            (Some(FailureReason::PodDeleted), Some(143), false)
        );

        // Failed by itself, deleted afterwards: an ordinary failure.
        let failed = deleted_at(mk_pod("extract-1-aaaaa", 100, Some((1, 140))), 150);
        let r = read(&job_with("Failed", "BackoffLimitExceeded"), &[failed], None);
        assert_eq!(r.reason, Some(FailureReason::Error));

        // The Job's own deadline deletes its pod: not a disruption; wait for the Job.
        let mut timed = active_job();
        timed.spec = Some(JobSpec {
            active_deadline_seconds: Some(60),
            ..Default::default()
        });
        timed.status.as_mut().unwrap().start_time = Some(Time(ts(NOW - 60)));
        let r = read(&timed, &[deleted_at(running(), NOW)], None);
        assert_eq!((r.phase, r.delete_job), (AttemptPhase::Running, false));
        timed.status.as_mut().unwrap().start_time = Some(Time(ts(NOW - 59)));
        let r = read(&timed, &[deleted_at(running(), NOW)], None);
        assert_eq!(r.reason, Some(FailureReason::PodDeleted), "before the deadline");

        // The deadline's pod deletion seen as a pod failure (`BackoffLimitExceeded`, the
        // 1.20 Job controller's race): still the deadline.
        let mut raced = job_with("Failed", "BackoffLimitExceeded");
        raced.spec = Some(JobSpec {
            active_deadline_seconds: Some(60),
            ..Default::default()
        });
        raced.status.as_mut().unwrap().start_time = Some(Time(jiff::Timestamp::from_second(40).unwrap()));
        let killed = deleted_at(mk_pod("extract-1-aaaaa", 40, Some((143, 100))), 100);
        let r = read(&raced, &[killed], None);
        assert_eq!(r.reason, Some(FailureReason::DeadlineExceeded));
    }

    #[test]
    fn a_replaced_pod_is_seen_and_counted() {
        let (first, second) = ("extract-1-aaaaa", "extract-1-bbbbb");
        // The first pod vanished since the last look; the Job runs a replacement.
        let r = read(&active_job(), &[mk_pod(second, 150, None)], Some(first));
        assert_eq!(
            (r.phase, r.reason, r.delete_job),
            (AttemptPhase::Failed, Some(FailureReason::PodDeleted), true)
        );
        let message = r.message.unwrap();
        assert_eq!(
            message,
            format!("pod {first} was deleted while it ran; its Job replaced it with pod {second}")
        );
        assert_eq!(r.pod_name.as_deref(), Some(second));
        let replaced = r.replacements.unwrap();
        assert_eq!((replaced.count, replaced.reason), (1, FailureReason::PodDeleted));
        assert_eq!(
            replaced.message,
            Some(format!(
                "{message}, which ran the task again within the same attempt"
            ))
        );

        // Both pods listed, the first still going.
        let pods = [
            deleted_at(mk_pod(first, 100, None), 140),
            mk_pod(second, 100, None),
        ];
        let r = read(&active_job(), &pods, None);
        assert_eq!(
            (r.reason, r.pod_name.as_deref()),
            (Some(FailureReason::PodDeleted), Some(second))
        );
        assert_eq!(r.replacements.map(|p| p.count), Some(1));

        // The replacement finished before anyone looked: the attempt succeeded, and says
        // what happened to it.
        let done = [mk_pod(second, 150, Some((0, 160)))];
        let r = read(&job_with("Complete", ""), &done, Some(first));
        assert_eq!((r.phase, r.reason), (AttemptPhase::Succeeded, None));
        assert_eq!(r.replacements.map(|p| p.count), Some(1));

        // A pod that is simply still there is no news.
        let r = read(&active_job(), &[mk_pod(first, 100, None)], Some(first));
        assert_eq!((r.phase, r.replacements), (AttemptPhase::Running, None));
        // Nor is one of a Job that completed and whose pod someone cleaned up.
        let r = read(&job_with("Complete", ""), &[], Some(first));
        assert_eq!((r.phase, r.replacements), (AttemptPhase::Succeeded, None));
    }

    #[test]
    fn a_finished_job_is_not_active() {
        assert!(job_active(&active_job()));
        assert!(job_active(&Job::default()));
        assert!(!job_active(&job_with("Complete", "")));
        assert!(!job_active(&job_with("Failed", "BackoffLimitExceeded")));
    }
}
