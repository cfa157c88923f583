//! Jobs of attempts: building one from a TaskRun (`build_job`, no client) and reading what
//! happened to one from the Job and its pod (`observe_attempt`, no client).

use crate::api::annotations;
use crate::api::{AttemptPhase, FailureReason, TaskRun, labels};
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
    }
}

/// The Job of attempt `attempt` of `task_run`. One pod, never restarted (`backoffLimit: 0`):
/// retries are Weir's, so each attempt keeps its own pod and logs.
pub fn build_job(task_run: &TaskRun, attempt: u32, defaults: &TaskPodDefaults) -> Option<Job> {
    let spec = &task_run.spec;
    let labels = job_labels(task_run, task_run.uid()?, attempt);
    let annotations = BTreeMap::from([(annotations::TASK_RUN.to_string(), task_run.name_any())]);
    let pod_template = merged_pod_template(spec.pod_template.as_ref(), defaults);
    let mut pod_labels = pod_template.labels.clone();
    pod_labels.extend(labels.clone());
    let mut pod_annotations = pod_template.annotations.clone();
    pod_annotations.extend(annotations.clone());
    let active_deadline_seconds = spec
        .timeout
        .as_deref()
        .and_then(|t| duration::parse(t).ok())
        .map(|d| d.as_secs_f64().ceil().max(1.0) as i64);
    let container = task_container(task_run, attempt, defaults);
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
                spec: Some(pod_spec(container, &pod_template)),
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

/// What an attempt's Job and pod say happened.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptReport {
    pub phase: AttemptPhase,
    pub reason: Option<FailureReason>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub finished_at: Option<jiff::Timestamp>,
    /// The Job is still active but can never succeed (say its image cannot be pulled): Weir
    /// fails the attempt and deletes the Job.
    pub stuck: bool,
}

/// Reads the outcome of an attempt from its Job and (if still there) its pod.
pub fn observe_attempt(job: &Job, pod: Option<&Pod>) -> AttemptReport {
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

    if let Some(complete) = condition("Complete") {
        let finished = status
            .completion_time
            .map(|t| t.0)
            .or(complete.last_transition_time.map(|t| t.0));
        return AttemptReport {
            phase: AttemptPhase::Succeeded,
            reason: None,
            exit_code: exit_code.or(Some(0)),
            message: pod_message,
            finished_at: finished,
            stuck: false,
        };
    }
    if let Some(failed) = condition("Failed") {
        let (reason, message) = failure(&failed, pod, terminated.as_ref(), pod_message.as_deref());
        return AttemptReport {
            phase: AttemptPhase::Failed,
            reason: Some(reason),
            exit_code,
            message,
            finished_at: failed.last_transition_time.map(|t| t.0),
            stuck: false,
        };
    }
    // Still active: look for a pod that can never start.
    if let Some((reason, message)) = pod.and_then(stuck_reason) {
        return AttemptReport {
            phase: AttemptPhase::Failed,
            reason: Some(reason),
            exit_code: None,
            message: Some(message),
            finished_at: None,
            stuck: true,
        };
    }
    AttemptReport {
        phase: AttemptPhase::Running,
        reason: None,
        exit_code: None,
        message: None,
        finished_at: None,
        stuck: false,
    }
}

/// Why a Job failed, most telling first: its deadline, an eviction of its pod, then what the
/// container's termination says.
fn failure(
    failed: &JobCondition,
    pod: Option<&Pod>,
    terminated: Option<&ContainerStateTerminated>,
    pod_message: Option<&str>,
) -> (FailureReason, Option<String>) {
    let job_reason = failed.reason.clone().unwrap_or_default();
    let pod_reason = pod
        .and_then(|p| p.status.as_ref()?.reason.clone())
        .unwrap_or_default();
    if job_reason == "DeadlineExceeded" {
        (FailureReason::DeadlineExceeded, failed.message.clone())
    } else if pod_reason == "Evicted" {
        (
            FailureReason::Evicted,
            pod.and_then(|p| p.status.as_ref()?.message.clone()),
        )
    } else if let Some(t) = terminated {
        let reason = match t.reason.as_deref() {
            Some("OOMKilled") => FailureReason::OOMKilled,
            _ if t.exit_code != 0 => FailureReason::Error,
            _ => FailureReason::Unknown,
        };
        let message = match pod_message {
            Some(m) => format!("exit code {}: {}", t.exit_code, m.trim_end()),
            None => format!("exit code {}", t.exit_code),
        };
        (reason, Some(message))
    } else {
        (
            FailureReason::Unknown,
            failed.message.clone().or(Some(job_reason)),
        )
    }
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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
        let r = observe_attempt(
            &job_with("Failed", "BackoffLimitExceeded"),
            Some(&pod_terminated(3, "Error", "bad row")),
        );
        assert_eq!(
            (r.phase, r.reason, r.exit_code),
            (AttemptPhase::Failed, Some(FailureReason::Error), Some(3))
        );
        assert_eq!(r.message.as_deref(), Some("exit code 3: bad row"));
        assert_eq!(r.finished_at, Some(jiff::Timestamp::from_second(100).unwrap()));

        let r = observe_attempt(
            &job_with("Failed", "BackoffLimitExceeded"),
            Some(&pod_terminated(137, "OOMKilled", "")),
        );
        assert_eq!(r.reason, Some(FailureReason::OOMKilled));

        let r = observe_attempt(&job_with("Failed", "DeadlineExceeded"), None);
        assert_eq!(r.reason, Some(FailureReason::DeadlineExceeded));

        let r = observe_attempt(
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
                observe_attempt(&failed(), Some(&evicted)),
                FailureReason::Evicted,
                Some("The node was low on resource: memory."),
            ),
            (
                "no pod left: the Job's own message",
                observe_attempt(&failed(), None),
                FailureReason::Unknown,
                Some("BackoffLimitExceeded happened"),
            ),
            (
                "a failed Job whose container exited 0",
                observe_attempt(&failed(), Some(&pod_terminated(0, "Completed", ""))),
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
        let r = observe_attempt(&Job::default(), Some(&pod));
        assert!(r.stuck);
        assert_eq!(r.reason, Some(FailureReason::ImagePullError));
        assert!(r.message.unwrap().contains("no/such:image"));
    }
}
