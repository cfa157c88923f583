//! What a kubelet gives a pod's in-cluster API clients: the service-account volume at
//! `/var/run/secrets/kubernetes.io/serviceaccount` (token, `ca.crt`, `namespace`).
//!
//! Containers are host processes here, so the volume cannot simply appear in a container
//! filesystem. Instead its files are written to `<pod dir>/volumes/<volume>/` and the
//! container's process is started in a private mount namespace (`unshare(CLONE_NEWNS)`, every
//! mount made private so nothing propagates back to the host) where that directory is
//! bind-mounted read-only onto the standard path. The host sees only an empty mount point.
//!
//! emptyDir volumes are directories of the pod, bind-mounted the same way (read-write).
//!
//! Of the other volumes, only the one mounted at the standard path is materialized: the legacy token Secret
//! volume that the ServiceAccount admission plugin of Kubernetes 1.20 adds, or a projected
//! volume (`serviceAccountToken` through the TokenRequest API, `configMap`, `secret`,
//! `downwardAPI`) as newer clusters add. Projected tokens are not refreshed.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, Pod, Secret, ServiceAccount, Volume, VolumeProjection,
};
use kube::api::{Api, PostParams};
use serde_json::json;

use super::container::{PrepareError, field_ref};

/// Where Kubernetes clients look for the service account's credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A bind mount in the container's private mount namespace.
#[derive(Debug, Clone)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Writes the files of the volume this container mounts at [`SERVICE_ACCOUNT_DIR`] and
/// returns its mount; `None` when it mounts nothing there (for example
/// `automountServiceAccountToken: false`). A missing Secret or ConfigMap, or one that cannot
/// be read (the API server or etcd is down), is a [`PrepareError::Mount`], retried like the
/// kubelet retries (the token controller may not have created the token Secret yet).
pub async fn service_account_mount(
    client: &kube::Client,
    pod: &Pod,
    container: &Container,
    pod_dir: &Path,
) -> Result<Option<Mount>, PrepareError> {
    let wanted = Path::new(SERVICE_ACCOUNT_DIR);
    let Some(volume_mount) = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(&m.mount_path) == wanted && m.sub_path.as_deref().unwrap_or("").is_empty())
    else {
        return Ok(None);
    };
    let spec = pod.spec.as_ref();
    let Some(volume) = spec
        .and_then(|s| s.volumes.as_ref())
        .and_then(|vs| vs.iter().find(|v| v.name == volume_mount.name))
    else {
        return Err(PrepareError::Start(format!(
            "volume {:?} mounted at {SERVICE_ACCOUNT_DIR} is not defined",
            volume_mount.name
        )));
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let files = volume_files(client, namespace, pod, volume).await?;
    let dir = pod_dir.join("volumes").join(&volume.name);
    write_files(&dir, &files)
        .map_err(|e| PrepareError::Start(format!("writing volume {}: {e}", volume.name)))?;
    Ok(Some(Mount {
        source: dir,
        target: wanted.to_path_buf(),
        read_only: true,
    }))
}

/// The files of a volume: relative path -> contents.
async fn volume_files(
    client: &kube::Client,
    namespace: &str,
    pod: &Pod,
    volume: &Volume,
) -> Result<BTreeMap<String, Vec<u8>>, PrepareError> {
    let mut files = BTreeMap::new();
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        match secret_data(client, namespace, &name).await? {
            Some(data) => select(&mut files, data, secret.items.as_deref(), "Secret", &name)?,
            None if secret.optional == Some(true) => {}
            None => return Err(PrepareError::Mount(format!("secret \"{name}\" not found"))),
        }
    } else if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            project(client, namespace, pod, source, &mut files).await?;
        }
    } else {
        return Err(PrepareError::Start(format!(
            "volume {:?} at {SERVICE_ACCOUNT_DIR}: only secret and projected volumes are supported",
            volume.name
        )));
    }
    Ok(files)
}

async fn project(
    client: &kube::Client,
    namespace: &str,
    pod: &Pod,
    source: &VolumeProjection,
    files: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), PrepareError> {
    if let Some(token) = &source.service_account_token {
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let token_value = request_token(
            client,
            namespace,
            &sa,
            pod,
            token.audience.as_deref(),
            token.expiration_seconds,
        )
        .await?;
        files.insert(token.path.clone(), token_value.into_bytes());
    }
    if let Some(cm) = &source.config_map {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let found = api
            .get_opt(&cm.name)
            .await
            .map_err(|e| PrepareError::Mount(format!("reading configmap {:?}: {e}", cm.name)))?;
        match found {
            Some(found) => {
                let mut data: BTreeMap<String, Vec<u8>> = found
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    found
                        .binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                select(files, data, cm.items.as_deref(), "ConfigMap", &cm.name)?;
            }
            None if cm.optional == Some(true) => {}
            None => {
                return Err(PrepareError::Mount(format!(
                    "configmap \"{}\" not found",
                    cm.name
                )));
            }
        }
    }
    if let Some(secret) = &source.secret {
        match secret_data(client, namespace, &secret.name).await? {
            Some(data) => select(files, data, secret.items.as_deref(), "Secret", &secret.name)?,
            None if secret.optional == Some(true) => {}
            None => {
                return Err(PrepareError::Mount(format!(
                    "secret \"{}\" not found",
                    secret.name
                )));
            }
        }
    }
    if let Some(downward) = &source.downward_api {
        for item in downward.items.iter().flatten() {
            if let Some(f) = &item.field_ref {
                files.insert(item.path.clone(), field_ref(pod, &f.field_path)?.into_bytes());
            }
        }
    }
    Ok(())
}

async fn secret_data(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, PrepareError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| PrepareError::Mount(format!("reading secret {name:?}: {e}")))?;
    Ok(secret.map(|s| {
        let mut data: BTreeMap<String, Vec<u8>> = s
            .string_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
        data
    }))
}

/// All keys as files, or only `items` (key -> path) when given, as the kubelet does.
fn select(
    files: &mut BTreeMap<String, Vec<u8>>,
    mut data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    kind: &str,
    name: &str,
) -> Result<(), PrepareError> {
    match items {
        None => files.extend(data),
        Some(items) => {
            for item in items {
                let Some(value) = data.remove(&item.key) else {
                    return Err(PrepareError::Mount(format!(
                        "couldn't find key {} in {kind} {name}",
                        item.key
                    )));
                };
                files.insert(item.path.clone(), value);
            }
        }
    }
    Ok(())
}

/// A token for the pod's service account, bound to the pod, from the TokenRequest API.
async fn request_token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    pod: &Pod,
    audience: Option<&str>,
    expiration_seconds: Option<i64>,
) -> Result<String, PrepareError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let mut spec = json!({
        "audiences": audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
        "expirationSeconds": expiration_seconds.unwrap_or(3607),
        "boundObjectRef": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod.metadata.name,
            "uid": pod.metadata.uid,
        },
    });
    if audience.is_none() {
        // Empty audiences: the API server's own.
        spec.as_object_mut().unwrap().remove("audiences");
    }
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": spec,
    });
    let response: serde_json::Value = api
        .create_subresource("token", service_account, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            PrepareError::Mount(format!(
                "requesting a token for service account {service_account:?}: {e}"
            ))
        })?;
    response["status"]["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| PrepareError::Mount("TokenRequest returned no token".into()))
}

fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (path, contents) in files {
        let relative = Path::new(path);
        if relative.is_absolute() || relative.components().any(|c| c.as_os_str() == "..") {
            return Err(std::io::Error::other(format!("bad file path {path:?} in volume")));
        }
        let file = dir.join(relative);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, contents)?;
    }
    Ok(())
}

/// The container's emptyDir volumes: one directory per volume of the pod,
/// `<pod dir>/volumes/<volume>/`, shared by all its containers (init containers too, which is
/// how an init container hands files to the main one), bind-mounted at each `mountPath`.
/// The mount point is created on the host, empty, as for the service-account volume.
pub fn empty_dir_mounts(
    pod: &Pod,
    container: &Container,
    pod_dir: &Path,
) -> Result<Vec<Mount>, PrepareError> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.and_then(|vs| vs.iter().find(|v| v.name == m.name)) else {
            continue;
        };
        if volume.empty_dir.is_none() {
            continue;
        }
        if !m.sub_path.as_deref().unwrap_or("").is_empty() {
            return Err(PrepareError::Start(format!(
                "volume {:?}: subPath is not supported for emptyDir volumes",
                m.name
            )));
        }
        let source = pod_dir.join("volumes").join(&volume.name);
        let target = PathBuf::from(&m.mount_path);
        for dir in [&source, &target] {
            std::fs::create_dir_all(dir)
                .map_err(|e| PrepareError::Start(format!("creating {}: {e}", dir.display())))?;
        }
        mounts.push(Mount {
            source,
            target,
            read_only: m.read_only == Some(true),
        });
    }
    Ok(mounts)
}

/// Mounts in the form the forked child needs (no allocation after `fork`).
pub struct PreparedMounts(Vec<(CString, CString, bool)>);

impl PreparedMounts {
    pub fn new(mounts: &[Mount]) -> std::io::Result<Self> {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
        Ok(Self(
            mounts
                .iter()
                .map(|m| Ok((c(&m.source)?, c(&m.target)?, m.read_only)))
                .collect::<std::io::Result<_>>()?,
        ))
    }

    /// Runs in the forked child before `exec`: a private mount namespace, then the bind
    /// mounts. Only async-signal-safe system calls.
    pub fn apply_in_child(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: plain system calls on NUL-terminated strings that outlive them.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // The copied mounts may be shared with the host's: make them all private first,
            // or the bind mounts below would propagate back (what `unshare --propagation
            // private` does).
            check(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (source, target, read_only) in &self.0 {
                check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                if *read_only {
                    check(libc::mount(
                        c"none".as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
        }
        Ok(())
    }
}

/// Whether this agent may create mount namespaces (it needs CAP_SYS_ADMIN), tried once with
/// a child process; also creates the mount point on the host. Without it, pods run with no
/// service-account volume, as before.
pub fn private_mounts_supported() -> Result<(), String> {
    std::fs::create_dir_all(SERVICE_ACCOUNT_DIR)
        .map_err(|e| format!("creating {SERVICE_ACCOUNT_DIR}: {e}"))?;
    let probe = PreparedMounts(Vec::new());
    let mut cmd = std::process::Command::new("true");
    // SAFETY: apply_in_child makes only async-signal-safe system calls.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || probe.apply_in_child());
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("probe exited with {s}")),
        Err(e) => Err(format!("cannot create a private mount namespace: {e}")),
    }
}
