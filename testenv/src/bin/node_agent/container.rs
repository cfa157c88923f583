//! Turning a container spec into a local process: environment, paths, spawning, waiting.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::Api;

use super::logfile;
use super::procs::{self, MARKER_ENV};
use super::volumes::{self, Mount, PreparedMounts};

/// What this node gives every container besides its own spec.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// Image (repository without tag or digest, or only its last path segment) -> the
    /// program that stands in for its entrypoint, for containers that have no `command`.
    pub image_commands: Vec<(String, PathBuf)>,
    /// `KUBERNETES_SERVICE_HOST`/`PORT` and friends, pointing at the API server on loopback.
    pub service_env: Vec<(String, String)>,
    /// Whether the service-account volume is bind-mounted in a private mount namespace.
    pub service_account_mounts: bool,
}

impl Settings {
    /// The program standing in for `image`'s entrypoint, if one was configured.
    pub fn entrypoint(&self, image: &str) -> Option<&Path> {
        let repository = image_repository(image);
        let last = repository.rsplit('/').next().unwrap_or(repository);
        self.image_commands
            .iter()
            .find(|(key, _)| key == repository || (!key.contains('/') && key == last))
            .map(|(_, path)| path.as_path())
    }
}

/// `registry:5000/org/weir:1.2@sha256:...` -> `registry:5000/org/weir`.
pub fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// Kubelet limits for the termination message (`MaxContainerTerminationMessageLength`) and
/// for the log tail used by `FallbackToLogsOnError`.
const MAX_MESSAGE_BYTES: usize = 4096;
const FALLBACK_LOG_LINES: usize = 80;
const FALLBACK_LOG_BYTES: usize = 2048;

/// Why a container could not be started; becomes a `waiting` state
/// (`CreateContainerConfigError` or `ContainerCreating`, retried like the kubelet does) or a
/// `terminated` one (`StartError`, not retried).
#[derive(Debug)]
pub enum PrepareError {
    /// The container's environment refers to something missing (or unreadable):
    /// `CreateContainerConfigError`.
    Config(String),
    /// A volume cannot be set up (its Secret is missing, or the API server did not answer):
    /// the kubelet reports `FailedMount` and leaves the container `ContainerCreating`, which
    /// no controller takes for a final failure.
    Mount(String),
    Start(String),
}

/// Everything needed to start one container.
#[derive(Debug)]
pub struct Prepared {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Host path standing in for the container's `terminationMessagePath`.
    pub termination_file: PathBuf,
    pub fallback_to_logs: bool,
    pub log_path: PathBuf,
    /// Bind mounts made in the container's private mount namespace.
    pub mounts: Vec<Mount>,
    /// The pod's own network namespace (`ip netns` name), if it has one.
    pub netns: Option<String>,
}

/// Reads ConfigMaps and Secrets of the pod's namespace, once per pod start attempt.
pub struct Sources {
    client: kube::Client,
    namespace: String,
    config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    secrets: HashMap<String, Option<BTreeMap<String, String>>>,
}

impl Sources {
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    async fn config_map(&mut self, name: &str) -> Result<Option<&BTreeMap<String, String>>, PrepareError> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let cm = api
                .get_opt(name)
                .await
                .map_err(|e| PrepareError::Config(format!("reading configmap {name:?}: {e}")))?;
            let data = cm.map(|cm| {
                let mut d = cm.data.unwrap_or_default();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    d.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                d
            });
            self.config_maps.insert(name.to_string(), data);
        }
        Ok(self.config_maps[name].as_ref())
    }

    async fn secret(&mut self, name: &str) -> Result<Option<&BTreeMap<String, String>>, PrepareError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let s = api
                .get_opt(name)
                .await
                .map_err(|e| PrepareError::Config(format!("reading secret {name:?}: {e}")))?;
            let data = s.map(|s| {
                let mut d: BTreeMap<String, String> = s.string_data.unwrap_or_default();
                for (k, v) in s.data.unwrap_or_default() {
                    d.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                d
            });
            self.secrets.insert(name.to_string(), data);
        }
        Ok(self.secrets[name].as_ref())
    }
}

/// Kubernetes `$(VAR)` expansion (k8s.io/kubernetes/third_party/forked/golang/expansion):
/// `$(NAME)` becomes the value of NAME if it is defined and is left as is otherwise, and
/// `$$` is an escaped `$`.
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            match b[i + 1] {
                b'$' => {
                    out.push_str(&input[last..i]);
                    out.push('$');
                    i += 2;
                    last = i;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        out.push_str(&input[last..i]);
                        match vars(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        last = i;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push_str(&input[last..]);
    out
}

pub fn field_ref(pod: &Pod, path: &str) -> Result<String, PrepareError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(rest.to_string())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        // Every pod of this node has the node's address (there is no pod network).
        "status.podIP" | "status.hostIP" => Some("127.0.0.1".to_string()),
        "status.podIPs" | "status.hostIPs" => Some("127.0.0.1".to_string()),
        _ => {
            if let Some(k) = map_key("metadata.labels['") {
                Some(
                    meta.labels
                        .as_ref()
                        .and_then(|l| l.get(&k).cloned())
                        .unwrap_or_default(),
                )
            } else if let Some(k) = map_key("metadata.annotations['") {
                Some(
                    meta.annotations
                        .as_ref()
                        .and_then(|a| a.get(&k).cloned())
                        .unwrap_or_default(),
                )
            } else if path == "metadata.labels" || path == "metadata.annotations" {
                let m = if path == "metadata.labels" {
                    &meta.labels
                } else {
                    &meta.annotations
                };
                Some(
                    m.iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            } else {
                return Err(PrepareError::Config(format!(
                    "unsupported fieldRef fieldPath {path:?}"
                )));
            }
        }
    };
    Ok(value.unwrap_or_default())
}

fn resource_field(container: &Container, resource: &str) -> Result<String, PrepareError> {
    // Without a limit a kubelet reports node allocatable; with a divisor it divides. Only
    // the plain quantity is supported here, which is what tests of this environment need.
    let res = container.resources.as_ref();
    let q = match resource {
        "limits.cpu" | "limits.memory" | "limits.ephemeral-storage" => res
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(&resource["limits.".len()..]).cloned()),
        "requests.cpu" | "requests.memory" | "requests.ephemeral-storage" => res
            .and_then(|r| r.requests.as_ref())
            .and_then(|l| l.get(&resource["requests.".len()..]).cloned()),
        _ => {
            return Err(PrepareError::Config(format!(
                "unsupported resourceFieldRef {resource:?}"
            )));
        }
    };
    Ok(q.map(|q| q.0).unwrap_or_else(|| match resource {
        r if r.ends_with("cpu") => "16".to_string(),
        r if r.ends_with("memory") => (64u64 << 30).to_string(),
        _ => (100u64 << 30).to_string(),
    }))
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// The container's environment in kubelet order: `envFrom` sources, then `env` entries,
/// each of which may refer to variables defined before it with `$(NAME)`.
async fn resolve_env(
    pod: &Pod,
    container: &Container,
    sources: &mut Sources,
    literal: &(dyn Fn(&str) -> String + Sync),
) -> Result<Vec<(String, String)>, PrepareError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = env.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what, name, optional) = if let Some(r) = &from.config_map_ref {
            let d = sources.config_map(&r.name).await?.cloned();
            (d, "configmap", r.name.clone(), r.optional.unwrap_or(false))
        } else if let Some(r) = &from.secret_ref {
            let d = sources.secret(&r.name).await?.cloned();
            (d, "secret", r.name.clone(), r.optional.unwrap_or(false))
        } else {
            continue;
        };
        match data {
            Some(d) => {
                for (k, v) in d {
                    let k = format!("{prefix}{k}");
                    // The kubelet skips (and reports) keys that are not valid variable names.
                    if valid_env_name(&k) {
                        set(&mut env, k, v);
                    }
                }
            }
            None if optional => {}
            None => return Err(PrepareError::Config(format!("{what} \"{name}\" not found"))),
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                field_ref(pod, &f.field_path)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_field(container, &r.resource)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match sources.config_map(&r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(PrepareError::Config(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                r.key, sources.namespace, r.name
                            )));
                        }
                    },
                    None if optional => continue,
                    None => {
                        return Err(PrepareError::Config(format!(
                            "configmap \"{}\" not found",
                            r.name
                        )));
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match sources.secret(&r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(PrepareError::Config(format!(
                                "couldn't find key {} in Secret {}/{}",
                                r.key, sources.namespace, r.name
                            )));
                        }
                    },
                    None if optional => continue,
                    None => {
                        return Err(PrepareError::Config(format!("secret \"{}\" not found", r.name)));
                    }
                }
            } else {
                String::new()
            }
        } else {
            let raw = literal(var.value.as_deref().unwrap_or(""));
            let snapshot = env.clone();
            expand(&raw, &|n| {
                snapshot.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// Maps a path inside the "container" to the host. Paths that exist on the host as
/// directories (say `/tmp`) are used as they are; anything else lives under the
/// container's private root directory.
fn host_dir(root: &Path, container_path: &str) -> PathBuf {
    let p = Path::new(container_path);
    if p.is_absolute() && p.is_dir() {
        return p.to_path_buf();
    }
    root.join(container_path.trim_start_matches('/'))
}

/// Works out argv, environment and paths of a container and creates its directories.
///
/// Termination message path mapping: the kubelet bind-mounts a fresh file at the
/// container's `terminationMessagePath` (default `/dev/termination-log`) and reads it after
/// the container exits. A local process cannot be given a private `/dev/termination-log`
/// (and, running as root, writing the real path would clobber the host and collide between
/// concurrent containers), so the file is always created at
/// `<container root>/<terminationMessagePath>` instead, and every occurrence of the exact
/// `terminationMessagePath` string in the container's literal env values, `command` and
/// `args` is replaced by that host path before `$(VAR)` expansion. A task that is told where
/// to write (through an env var or an argument carrying the path, as Weir does) therefore
/// writes the right file; a program with the path compiled in would not, and cannot here.
pub async fn prepare(
    pod: &Pod,
    container: &Container,
    pod_dir: &Path,
    sources: &mut Sources,
    state_dir: &Path,
    settings: &Settings,
) -> Result<Prepared, PrepareError> {
    let name = container.name.clone();
    let root = pod_dir.join(&name);
    let term_path = container
        .termination_message_path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/dev/termination-log".to_string());
    let termination_file = root.join(term_path.trim_start_matches('/'));
    let mapped = termination_file.to_string_lossy().into_owned();
    let literal = |s: &str| s.replace(&term_path, &mapped);

    let mut env = resolve_env(pod, container, sources, &literal).await?;

    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let command: Vec<String> = container
        .command
        .iter()
        .flatten()
        .map(|s| expand(&literal(s), &lookup))
        .collect();
    let args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .map(|s| expand(&literal(s), &lookup))
        .collect();
    // No image is ever run, so the image's entrypoint is the program configured for it
    // (`--image-command`), if any; `command` replaces it, as in a container.
    let image = container.image.as_deref().unwrap_or_default();
    let entrypoint = match settings.entrypoint(image) {
        Some(path) if command.is_empty() => {
            if !path.is_file() {
                return Err(PrepareError::Start(format!(
                    "image {image:?} runs {}, which does not exist",
                    path.display()
                )));
            }
            vec![path.to_string_lossy().into_owned()]
        }
        _ => Vec::new(),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(command).chain(args).collect();
    if argv.is_empty() {
        return Err(PrepareError::Start(format!(
            "container has neither command nor args, and no --image-command names image {image:?}; \
             weir-node-agent runs no images, only commands"
        )));
    }
    let mounts = if settings.service_account_mounts {
        let mut mounts: Vec<Mount> =
            volumes::service_account_mount(sources.client(), pod, container, pod_dir)
                .await?
                .into_iter()
                .collect();
        mounts.extend(volumes::empty_dir_mounts(pod, container, pod_dir)?);
        mounts
    } else {
        Vec::new()
    };

    let cwd = match container.working_dir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) => host_dir(&root, w),
        None => root.clone(),
    };
    let mkdir = |p: &Path| {
        std::fs::create_dir_all(p).map_err(|e| PrepareError::Start(format!("creating {}: {e}", p.display())))
    };
    mkdir(&root)?;
    mkdir(&cwd)?;
    if let Some(parent) = termination_file.parent() {
        mkdir(parent)?;
    }
    std::fs::write(&termination_file, b"")
        .map_err(|e| PrepareError::Start(format!("creating {}: {e}", termination_file.display())))?;

    // A clean environment, as in a container: the host's PATH so commands are found, a
    // private HOME, then the container's variables (which may override both).
    let mut full_env = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ),
        ("HOME".to_string(), root.to_string_lossy().into_owned()),
        (
            "HOSTNAME".to_string(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
    ];
    // As a kubelet does, the API server's address comes before the container's own variables.
    full_env.extend(settings.service_env.iter().cloned());
    for (k, v) in env.drain(..) {
        full_env.retain(|(n, _)| *n != k);
        full_env.push((k, v));
    }
    full_env.push((MARKER_ENV.to_string(), state_dir.to_string_lossy().into_owned()));

    Ok(Prepared {
        log_path: pod_dir.join(format!("{name}.log")),
        argv,
        env: full_env,
        cwd,
        termination_file,
        fallback_to_logs: container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
        mounts,
        netns: None,
    })
}

/// A started container process.
pub struct Running {
    pub pgid: i32,
    child: tokio::process::Child,
    copiers: Vec<tokio::task::JoinHandle<()>>,
}

/// How a container ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub code: i32,
    pub signal: Option<i32>,
    pub message: String,
}

pub fn spawn(p: &Prepared) -> Result<Running, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log_path)
        .map_err(|e| format!("creating log {}: {e}", p.log_path.display()))?;
    let log = Arc::new(Mutex::new(log));
    let mut cmd = tokio::process::Command::new(&p.argv[0]);
    cmd.args(&p.argv[1..])
        .env_clear()
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&p.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that signals reach the children of `sh -c` too.
        .process_group(0);
    if let Some(netns) = &p.netns {
        let fd = super::network::open_netns(netns).map_err(|e| format!("{e:#}"))?;
        // SAFETY: setns is async-signal-safe; the descriptor lives as long as the closure.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    if !p.mounts.is_empty() {
        let mounts = PreparedMounts::new(&p.mounts).map_err(|e| format!("preparing mounts: {e}"))?;
        // SAFETY: apply_in_child makes only async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || mounts.apply_in_child());
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", p.argv[0]))?;
    let pgid = child.id().map(|id| id as i32).unwrap_or(0);
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let copiers = vec![
        tokio::spawn(logfile::copy_stream(stdout, "stdout", log.clone())),
        tokio::spawn(logfile::copy_stream(stderr, "stderr", log)),
    ];
    Ok(Running { pgid, child, copiers })
}

impl Running {
    /// Waits for the main process, then kills what is left of its process group (as the end
    /// of a container's PID namespace would) and collects the output.
    pub async fn wait(mut self, p: &Prepared) -> Exit {
        let status = self.child.wait().await;
        procs::kill_group(self.pgid, libc::SIGKILL);
        for c in self.copiers {
            // A process that left the group could keep the pipe open; do not wait for it.
            let _ = tokio::time::timeout(Duration::from_secs(2), c).await;
        }
        let (code, signal) = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt as _;
                match (s.code(), s.signal()) {
                    (Some(c), _) => (c, None),
                    (None, Some(sig)) => (128 + sig, Some(sig)),
                    (None, None) => (255, None),
                }
            }
            Err(_) => (255, None),
        };
        Exit {
            code,
            signal,
            message: termination_message(p, code),
        }
    }
}

fn termination_message(p: &Prepared, code: i32) -> String {
    let mut msg = std::fs::read(&p.termination_file).unwrap_or_default();
    // The kubelet keeps the end of a longer file (`tail.ReadAtMost`), not its start.
    msg.drain(..msg.len().saturating_sub(MAX_MESSAGE_BYTES));
    let msg = String::from_utf8_lossy(&msg).into_owned();
    if msg.is_empty() && code != 0 && p.fallback_to_logs {
        return logfile::tail_for_message(&p.log_path, FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_map_to_entrypoints() {
        assert_eq!(image_repository("busybox"), "busybox");
        assert_eq!(image_repository("busybox:1.36"), "busybox");
        assert_eq!(image_repository("reg:5000/org/weir:0.1.0"), "reg:5000/org/weir");
        assert_eq!(image_repository("reg:5000/org/weir"), "reg:5000/org/weir");
        assert_eq!(image_repository("org/weir:1@sha256:abc"), "org/weir");
        let settings = Settings {
            image_commands: vec![
                ("weir".into(), "/bin/weir".into()),
                ("ghcr.io/x/tool".into(), "/bin/tool".into()),
            ],
            ..Default::default()
        };
        assert_eq!(
            settings.entrypoint("ghcr.io/weir-dev/weir:0.1.0"),
            Some(Path::new("/bin/weir"))
        );
        assert_eq!(settings.entrypoint("weir"), Some(Path::new("/bin/weir")));
        assert_eq!(
            settings.entrypoint("ghcr.io/x/tool:2"),
            Some(Path::new("/bin/tool"))
        );
        assert_eq!(settings.entrypoint("other.io/x/tool:2"), None);
        assert_eq!(settings.entrypoint("weirdo"), None);
    }

    #[test]
    fn expansion_matches_kubernetes() {
        let vars = |n: &str| match n {
            "A" => Some("x".to_string()),
            "B" => Some("$(A)".to_string()),
            _ => None,
        };
        assert_eq!(expand("$(A)-$(B)", &vars), "x-$(A)");
        assert_eq!(expand("$(C)", &vars), "$(C)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("a$", &vars), "a$");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("$x", &vars), "$x");
    }
}
