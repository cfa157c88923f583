//! Artifacts: files and directories a task leaves for later tasks, kept in object storage
//! (see docs/artifacts.md).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of an artifact's name: it becomes part of an object key and of references such as
/// `tasks.train.artifacts.model`.
pub const ARTIFACT_NAME_PATTERN: &str = r"^[a-zA-Z_][a-zA-Z0-9_-]*$";

/// Finalizer on a run whose objects are deleted from the artifact store with it.
pub const FINALIZER: &str = "weir.dev/artifacts";

/// The output key under which a task's result reports artifact `name` (its object key, size
/// and digest, as JSON). Keys with a dot cannot be declared as outputs, so they never clash.
pub fn output_key(name: &str) -> String {
    format!("weir.artifact.{name}")
}

/// A file or directory the task leaves for later tasks: once the command exits 0, `weir
/// exec` uploads what is at `path` to the artifact store (a directory with everything in
/// it) and reports its size and SHA-256 digest.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSpec {
    /// Name, read downstream as `tasks.<task>.artifacts.<name>`; unique within the task.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_-]*$"))]
    pub name: String,
    /// Absolute path of the file or directory in the task's container. A missing path fails
    /// the attempt (reason `OutputError`).
    #[schemars(length(min = 2))]
    pub path: String,
}

/// A file or directory given to the task before its command starts, downloaded from the
/// artifact store with its digest checked.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactInput {
    /// The artifact: `tasks.<task>.artifacts.<name>`, of a task upstream of this one. From a
    /// fanned-out task, `path` becomes a directory with one entry per instance: `0`, `1`, ...
    #[schemars(length(min = 1))]
    pub from: String,
    /// Absolute path in the task's container where the file or directory is put.
    #[schemars(length(min = 2))]
    pub path: String,
}

/// Where artifacts (and the logs of tasks run under `weir exec`) are kept, overriding the
/// installation's store for one pipeline. Credentials come from a Secret in the run's
/// namespace, never from the spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactStoreSpec {
    /// Kind of object storage: `S3` (Amazon S3 and S3-compatible services such as MinIO or
    /// Ceph; the default), `GCS` (Google Cloud Storage) or `Azure` (Azure Blob Storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<StoreProvider>,
    /// Bucket (S3, GCS), or container (Azure).
    #[schemars(length(min = 1, max = 255))]
    pub bucket: String,
    /// Key prefix every object of this pipeline goes under, for example `teams/ml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// URL of the service, when it is not the provider's own: an S3-compatible service
    /// (`http://minio.storage:9000`), a GCS emulator, or an Azure blob endpoint such as
    /// Azurite's `http://127.0.0.1:10000/devstoreaccount1`. Unset: the provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region of the bucket (S3). Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Storage account (Azure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Secret in the run's namespace with the credentials: for S3 keys `accessKeyId` and
    /// `secretAccessKey` (and optionally `sessionToken`); for GCS `serviceAccountKey` (a
    /// service account's JSON key); for Azure `accountKey`. Unset: the pod's own identity
    /// (for example IRSA or Workload Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// A kind of object storage.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StoreProvider {
    /// Amazon S3 and S3-compatible services.
    #[default]
    S3,
    /// Google Cloud Storage.
    GCS,
    /// Azure Blob Storage.
    Azure,
}

/// Where one uploaded artifact is, as `weir exec` reports it and later tasks download it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRef {
    /// Object key within the bucket (the store's prefix included). A directory's files are
    /// under `<key>/files/`, listed with their digests in `<key>/listing.json`.
    pub key: String,
    /// Size in bytes (of all its files, for a directory).
    pub size: u64,
    /// SHA-256 of the file, or of a directory's listing, as lowercase hex.
    pub sha256: String,
    /// Whether the artifact is a directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
}

/// An input of a TaskRun: the artifacts its `from` names, resolved when the task started.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedInput {
    /// As written in the pipeline: `tasks.<task>.artifacts.<name>`.
    pub from: String,
    /// Where the artifact is put in the container.
    pub path: String,
    /// The artifacts: one, or one per instance of a fanned-out producer (`fanIn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactRef>,
    /// The producer fanned out: `path` is a directory with one entry per instance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fan_in: bool,
}

/// The producing task and artifact an input's `from` names (`tasks.<task>.artifacts.<name>`).
pub fn parse_from(from: &str) -> Result<(&str, &str), String> {
    let parts: Vec<&str> = from.trim().split('.').collect();
    match parts.as_slice() {
        ["tasks", task, "artifacts", name] if !task.is_empty() && !name.is_empty() => Ok((task, name)),
        _ => Err("must read tasks.<task>.artifacts.<name>".to_string()),
    }
}

/// Where the objects of one attempt go: `<prefix>/<namespace>/<run>/<taskrun>/<attempt>`.
/// Everything of a run shares [`run_prefix`], so deleting the run deletes one prefix.
pub fn attempt_prefix(
    store_prefix: Option<&str>,
    namespace: &str,
    run: &str,
    task_run: &str,
    attempt: u32,
) -> String {
    format!(
        "{}/{task_run}/{attempt}",
        run_prefix(store_prefix, namespace, run)
    )
}

/// The key prefix every object of run `run` is under.
pub fn run_prefix(store_prefix: Option<&str>, namespace: &str, run: &str) -> String {
    match store_prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(p) => format!("{p}/{namespace}/{run}"),
        None => format!("{namespace}/{run}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_names_a_task_and_an_artifact() {
        assert_eq!(parse_from("tasks.train.artifacts.model"), Ok(("train", "model")));
        for bad in [
            "tasks.train.outputs.model",
            "tasks.train.artifacts",
            "train.model",
            "tasks..artifacts.m",
            "",
        ] {
            assert!(parse_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_of_a_run_share_its_prefix() {
        let run = run_prefix(Some("/team/ml/"), "ns", "run-1");
        assert_eq!(run, "team/ml/ns/run-1");
        let attempt = attempt_prefix(Some("/team/ml/"), "ns", "run-1", "run-1-train", 2);
        assert_eq!(attempt, "team/ml/ns/run-1/run-1-train/2");
        assert!(attempt.starts_with(&format!("{run}/")));
        assert_eq!(run_prefix(None, "ns", "r"), "ns/r");
        assert_eq!(run_prefix(Some(""), "ns", "r"), "ns/r");
    }
}
