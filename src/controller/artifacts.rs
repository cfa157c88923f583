//! The pod of an attempt that moves artifacts (no client): an init container copies the
//! `weir` executable into a shared emptyDir, and the task's command runs under `weir exec`,
//! told what to do by a plan in its environment. Credentials reach the pod only as
//! `secretKeyRef`s, so they never appear in a Job, a status or an Event.

use crate::api::{ArtifactStoreSpec, TaskRun, TaskRunSpec, annotations, artifact};
use crate::artifacts::exec::{self, Plan};
use crate::artifacts::{self as store, Location};
use crate::engine::outputs;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSpec, SecretKeySelector, Volume, VolumeMount,
};
use kube::{Resource as _, ResourceExt as _};

/// The image whose `weir` executable the init container copies, unless `--exec-image`
/// names another: Weir's own image, of this version.
pub const DEFAULT_EXEC_IMAGE: &str = concat!("ghcr.io/weir-dev/weir:", env!("CARGO_PKG_VERSION"));
/// The shared volume, and where it is mounted in both containers.
pub const VOLUME: &str = "weir-exec";
pub const MOUNT_PATH: &str = "/weir-exec";
/// Name of the init container.
pub const INIT_CONTAINER: &str = "weir-exec-install";

/// The installation's artifact settings (the chart's `artifacts` values).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArtifactSettings {
    /// The installation's store; a pipeline's `spec.artifactStore` wins.
    pub store: Option<ArtifactStoreSpec>,
    /// Image of the init container; default [`DEFAULT_EXEC_IMAGE`].
    pub exec_image: Option<String>,
    /// Keep the log of every task that has a `command`, not only of those with artifacts
    /// (all such tasks then run under `weir exec`).
    pub keep_logs: bool,
    /// Leave a run's objects in the store when the run is deleted (retention is then the
    /// bucket's lifecycle rules); by default they are deleted with it.
    pub keep_after_run: bool,
    /// How long deleting a run waits for its objects to go; default [`DELETE_GIVE_UP`].
    pub delete_timeout: Option<std::time::Duration>,
}

impl ArtifactSettings {
    /// The store a TaskRun's objects go to.
    pub fn store_of<'a>(&'a self, spec: &'a TaskRunSpec) -> Option<&'a ArtifactStoreSpec> {
        spec.artifact_store.as_ref().or(self.store.as_ref())
    }

    /// Whether the task runs under `weir exec`: it moves artifacts, its log is kept, or it
    /// declares outputs that may be too large for a termination message (with a store to
    /// move them to, and a `command` to run under it).
    pub fn wraps(&self, spec: &TaskRunSpec) -> bool {
        let can = self.store_of(spec).is_some() && !spec.command.is_empty();
        let keeps_log = self.keep_logs && can;
        let large_outputs = !spec.outputs.is_empty() && can;
        !spec.artifacts.is_empty() || !spec.inputs.is_empty() || keeps_log || large_outputs
    }
}

/// The key prefix of an attempt's objects, and the store they go to.
pub fn attempt_prefix(task_run: &TaskRun, attempt: u32, store: Option<&ArtifactStoreSpec>) -> String {
    let run = task_run
        .annotations()
        .get(annotations::PIPELINE_RUN)
        .cloned()
        .unwrap_or_else(|| task_run.name_any());
    artifact::attempt_prefix(
        store.and_then(|s| s.prefix.as_deref()),
        &task_run.namespace().unwrap_or_default(),
        &run,
        &task_run.name_any(),
        attempt,
    )
}

/// Makes `pod`'s task container run under `weir exec`, when the task needs it.
pub fn wrap(pod: &mut PodSpec, task_run: &TaskRun, attempt: u32, settings: &ArtifactSettings) {
    let spec = &task_run.spec;
    if !settings.wraps(spec) {
        return;
    }
    let store_spec = settings.store_of(spec);
    let plan = Plan {
        store: store_spec.map(Location::of),
        prefix: attempt_prefix(task_run, attempt, store_spec),
        inputs: spec.inputs.clone(),
        artifacts: spec.artifacts.clone(),
        result: outputs::TERMINATION_MESSAGE_PATH.into(),
        work_dir: format!("{MOUNT_PATH}/work"),
        keep_log: store_spec.is_some(),
    };
    let mount = VolumeMount {
        name: VOLUME.into(),
        mount_path: MOUNT_PATH.into(),
        ..Default::default()
    };
    let Some(container) = pod.containers.first_mut() else {
        return;
    };
    let mut argv: Vec<String> = container.command.take().unwrap_or_default();
    argv.extend(container.args.take().unwrap_or_default());
    container.command = Some(vec![format!("{MOUNT_PATH}/weir"), "exec".into(), "--".into()]);
    container.args = Some(argv);
    let env = container.env.get_or_insert_with(Vec::new);
    env.push(EnvVar {
        name: exec::PLAN_ENV.into(),
        value: serde_json::to_string(&plan).ok(),
        value_from: None,
    });
    if let Some(spec) = store_spec
        && let Some(secret) = spec.credentials_secret.as_deref()
    {
        let keys = store::credential_keys(spec.provider.unwrap_or_default());
        env.extend(
            keys.iter()
                .map(|k| secret_env(k.env, secret, k.secret_key, k.optional)),
        );
    }
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(mount.clone());
    let init = Container {
        name: INIT_CONTAINER.into(),
        image: Some(
            settings
                .exec_image
                .clone()
                .unwrap_or_else(|| DEFAULT_EXEC_IMAGE.into()),
        ),
        args: Some(vec!["exec-install".into(), format!("{MOUNT_PATH}/weir")]),
        volume_mounts: Some(vec![mount]),
        security_context: container.security_context.clone(),
        ..Default::default()
    };
    pod.init_containers.get_or_insert_with(Vec::new).push(init);
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
}

fn secret_env(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
    }
}

/// How long deleting a run waits for its objects to leave the store before it lets the run
/// go anyway (with an Event saying what was left): a store that is down or refuses must
/// not keep a run from being deleted forever.
pub const DELETE_GIVE_UP: std::time::Duration = std::time::Duration::from_secs(300);

/// Adds the artifacts finalizer to a run whose objects are to be deleted with it: a store is
/// in use (the installation's, or `pipeline_store`) and `--artifact-keep-after-run` is off.
pub async fn keep_finalizer(
    ctx: &super::Context,
    run: &crate::api::PipelineRun,
    pipeline_store: Option<&ArtifactStoreSpec>,
) -> super::Result<()> {
    let settings = &ctx.task_defaults.artifacts;
    let wanted = !settings.keep_after_run && (pipeline_store.is_some() || settings.store.is_some());
    let finalizers = run.finalizers();
    if !wanted || finalizers.iter().any(|f| f == artifact::FINALIZER) {
        return Ok(());
    }
    let mut all = finalizers.to_vec();
    all.push(artifact::FINALIZER.to_string());
    patch_finalizers(ctx, run, all).await
}

/// A merge patch of `metadata.finalizers`, under the run's resourceVersion so that a
/// concurrent change of the list is not overwritten (a conflict is retried).
async fn patch_finalizers(
    ctx: &super::Context,
    run: &crate::api::PipelineRun,
    finalizers: Vec<String>,
) -> super::Result<()> {
    use super::ApiResultExt as _;
    let api: kube::Api<crate::api::PipelineRun> =
        kube::Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": run.resource_version()}
    });
    api.patch(
        &run.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .ignore_not_found()?;
    Ok(())
}

/// A run being deleted: deletes its objects from every store its tasks used, then lets it
/// go; after [`DELETE_GIVE_UP`] of failures, lets it go anyway with a Warning Event.
pub async fn on_delete(
    ctx: &super::Context,
    run: &crate::api::PipelineRun,
) -> super::Result<kube::runtime::controller::Action> {
    use kube::runtime::controller::Action;
    if !run.finalizers().iter().any(|f| f == artifact::FINALIZER) {
        return Ok(Action::await_change());
    }
    let namespace = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let stores = stores_of(ctx, run, &namespace).await?;
    let mut deleted = 0;
    let mut problems = Vec::new();
    for store in &stores {
        match delete_run_objects(ctx, &namespace, &name, store).await {
            Ok(n) => deleted += n,
            Err(e) => problems.push(e),
        }
    }
    let asked = run.metadata.deletion_timestamp.as_ref().map(|t| t.0);
    let waited = asked.map_or(std::time::Duration::ZERO, |t| {
        std::time::Duration::try_from(super::now().duration_since(t)).unwrap_or_default()
    });
    let (type_, reason, note) = if problems.is_empty() {
        (
            kube::runtime::events::EventType::Normal,
            crate::api::reasons::ARTIFACTS_DELETED,
            format!("deleted {deleted} object(s) of run {name} from the artifact store"),
        )
    } else if waited
        >= ctx
            .task_defaults
            .artifacts
            .delete_timeout
            .unwrap_or(DELETE_GIVE_UP)
    {
        (
            kube::runtime::events::EventType::Warning,
            crate::api::reasons::ARTIFACTS_KEPT,
            format!(
                "gave up deleting the objects of run {name} after {}s; they are left in the store: {}",
                waited.as_secs(),
                problems.join("; ")
            ),
        )
    } else {
        tracing::warn!(
            problems = problems.join("; "),
            "deleting the run's artifacts; trying again"
        );
        return Ok(Action::requeue(std::time::Duration::from_secs(10)));
    };
    ctx.event(
        &run.object_ref(&()),
        None,
        type_,
        reason,
        crate::api::actions::DELETE,
        note,
    )
    .await;
    let rest: Vec<String> = run
        .finalizers()
        .iter()
        .filter(|f| *f != artifact::FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(ctx, run, rest).await?;
    Ok(Action::await_change())
}

/// The stores a run's objects may be in: the installation's, and those its TaskRuns name.
async fn stores_of(
    ctx: &super::Context,
    run: &crate::api::PipelineRun,
    namespace: &str,
) -> super::Result<Vec<ArtifactStoreSpec>> {
    let api: kube::Api<TaskRun> = kube::Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!(
        "{}={}",
        crate::api::labels::PIPELINE_RUN_UID,
        run.uid().unwrap_or_default()
    );
    let task_runs = api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    let mut stores: Vec<ArtifactStoreSpec> = ctx.task_defaults.artifacts.store.iter().cloned().collect();
    for tr in task_runs {
        if let Some(s) = tr.spec.artifact_store
            && !stores.contains(&s)
        {
            stores.push(s);
        }
    }
    Ok(stores)
}

async fn delete_run_objects(
    ctx: &super::Context,
    namespace: &str,
    run: &str,
    spec: &ArtifactStoreSpec,
) -> Result<usize, String> {
    let store = store::open_spec(&ctx.client, namespace, spec).await?;
    store
        .delete_prefix(&artifact::run_prefix(spec.prefix.as_deref(), namespace, run))
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ArtifactSpec, TaskRunSpec};
    use crate::controller::job::{TaskPodDefaults, build_job};

    fn task_run(artifacts: bool) -> TaskRun {
        let mut tr = TaskRun::new(
            "ml-run-train",
            TaskRunSpec {
                task_name: "train".into(),
                image: "python:3.12".into(),
                command: vec!["python3".into(), "train.py".into()],
                args: vec!["--epochs".into(), "3".into()],
                artifacts: if artifacts {
                    vec![ArtifactSpec {
                        name: "model".into(),
                        path: "/out/model.pkl".into(),
                    }]
                } else {
                    Vec::new()
                },
                ..Default::default()
            },
        );
        tr.metadata.namespace = Some("ml".into());
        tr.metadata.uid = Some("uid-1".into());
        tr.annotations_mut()
            .insert(annotations::PIPELINE_RUN.into(), "ml-run".into());
        tr
    }

    fn defaults(store: bool) -> TaskPodDefaults {
        TaskPodDefaults {
            artifacts: ArtifactSettings {
                store: store.then(|| ArtifactStoreSpec {
                    bucket: "weir".into(),
                    prefix: Some("team".into()),
                    endpoint: Some("http://127.0.0.1:9000".into()),
                    credentials_secret: Some("s3-creds".into()),
                    ..Default::default()
                }),
                exec_image: Some("registry.local/weir:test".into()),
                keep_logs: false,
                keep_after_run: false,
                delete_timeout: None,
            },
            ..Default::default()
        }
    }

    fn pod(tr: &TaskRun, d: &TaskPodDefaults) -> PodSpec {
        build_job(tr, 2, d).unwrap().spec.unwrap().template.spec.unwrap()
    }

    #[test]
    fn a_task_without_artifacts_runs_as_written() {
        let p = pod(&task_run(false), &defaults(true));
        assert!(p.init_containers.is_none() && p.volumes.is_none());
        assert_eq!(p.containers[0].command.as_ref().unwrap()[0], "python3");
    }

    #[test]
    fn a_task_with_artifacts_runs_under_weir_exec() {
        let p = pod(&task_run(true), &defaults(true));
        let c = &p.containers[0];
        assert_eq!(c.command.as_deref().unwrap(), ["/weir-exec/weir", "exec", "--"]);
        assert_eq!(
            c.args.as_deref().unwrap(),
            ["python3", "train.py", "--epochs", "3"]
        );
        let init = &p.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("registry.local/weir:test"));
        assert_eq!(init.args.as_deref().unwrap(), ["exec-install", "/weir-exec/weir"]);
        assert!(p.volumes.as_ref().unwrap()[0].empty_dir.is_some());
        let env = c.env.as_ref().unwrap();
        let plan: Plan = serde_json::from_str(
            env.iter()
                .find(|v| v.name == exec::PLAN_ENV)
                .and_then(|v| v.value.as_deref())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(plan.prefix, "team/ml/ml-run/ml-run-train/2");
        assert_eq!(plan.artifacts[0].path, "/out/model.pkl");
        assert!(plan.keep_log);
        // Credentials only by reference, never as values.
        let key = env.iter().find(|v| v.name == store::SECRET_KEY_ENV).unwrap();
        assert!(key.value.is_none());
        let reference = key.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            ("s3-creds", "secretAccessKey")
        );
    }

    #[test]
    fn a_pipelines_store_wins_and_logs_can_be_kept_for_every_task() {
        let mut tr = task_run(true);
        tr.spec.artifact_store = Some(ArtifactStoreSpec {
            bucket: "own".into(),
            ..Default::default()
        });
        let p = pod(&tr, &defaults(true));
        let plan = p.containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == exec::PLAN_ENV)
            .unwrap();
        assert!(plan.value.as_ref().unwrap().contains("\"own\""));
        assert!(
            !p.containers[0]
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == store::ACCESS_KEY_ENV)
        );

        let mut d = defaults(true);
        d.artifacts.keep_logs = true;
        assert!(pod(&task_run(false), &d).init_containers.is_some());
        let without_store = TaskPodDefaults {
            artifacts: ArtifactSettings {
                keep_logs: true,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(pod(&task_run(false), &without_store).init_containers.is_none());
    }
}
