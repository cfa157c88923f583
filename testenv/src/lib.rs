//! Harness for Weir's integration tests against a real Kubernetes 1.20 control plane.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! let ns = weir_testenv::env().await.namespace("demo").await;
//! ns.kubectl_ok(["create", "configmap", "x", "--from-literal=a=b"]);
//! let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = ns.api();
//! weir_testenv::wait_for("configmap x", Duration::from_secs(10), || async {
//!     cms.get_opt("x").await.ok().flatten()
//! })
//! .await;
//! # }
//! ```
//!
//! * [`env`] starts the environment once per test process with `hack/testenv/up.sh` (which
//!   reuses an environment left running by an earlier run), or uses `$WEIR_KUBECONFIG`.
//! * [`TestEnv::namespace`] makes a fresh namespace per test; dropping it deletes the
//!   namespace, and if the test is panicking, first prints what is in it and the tails of
//!   the component logs.
//! * [`wait_for`] polls a condition with a timeout and a panic message naming it.
//!
//! Each `#[tokio::test]` runs on its own runtime, and a `kube::Client` must not outlive the
//! runtime it was made on, so only the kubeconfig path is kept statically; clients are built
//! per namespace / per call.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The running test environment.
#[derive(Debug)]
pub struct TestEnv {
    kubeconfig: PathBuf,
    state_dir: Option<PathBuf>,
}

static ENV: OnceLock<TestEnv> = OnceLock::new();

/// The test environment, started on first use in this process.
///
/// With `WEIR_KUBECONFIG` set, that cluster is used as it is and nothing is started (its
/// component logs are looked for in `WEIR_ENV_DIR`, if set). Otherwise
/// `hack/testenv/up.sh` is run, which starts or reuses the environment in `WEIR_ENV_DIR`
/// (default `~/.cache/weir/env`). Panics if the environment cannot be started.
pub async fn env() -> &'static TestEnv {
    if let Some(env) = ENV.get() {
        return env;
    }
    // up.sh blocks for seconds; concurrent first callers wait inside get_or_init.
    tokio::task::spawn_blocking(|| ENV.get_or_init(start))
        .await
        .expect("starting the test environment panicked")
}

/// The checkout whose tests are running. Cargo sets `CARGO_MANIFEST_DIR` for a test binary
/// at run time (the package under test: the repository root, or `testenv/`); the value
/// compiled into this crate can name another checkout that shares the target directory
/// (cargo does not rebuild a workspace member that only moved).
fn repo_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf);
    let running = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    running
        .iter()
        .flat_map(|dir| [Some(dir.clone()), dir.parent().map(Path::to_path_buf)])
        .flatten()
        .chain(compiled.clone())
        .find(|dir| dir.join("hack/testenv/up.sh").is_file())
        .or(compiled)
        .expect("testenv crate is inside the repository")
}

fn start() -> TestEnv {
    if let Ok(kubeconfig) = std::env::var("WEIR_KUBECONFIG") {
        let kubeconfig = PathBuf::from(kubeconfig);
        // up.sh writes the kubeconfig into its state dir, next to `logs/`: find the
        // component logs there when WEIR_ENV_DIR does not say.
        let beside = kubeconfig
            .parent()
            .filter(|d| d.join("logs").is_dir())
            .map(Path::to_path_buf);
        return TestEnv {
            kubeconfig,
            state_dir: std::env::var_os("WEIR_ENV_DIR").map(PathBuf::from).or(beside),
        };
    }
    up(&[])
}

/// Runs `hack/testenv/up.sh` with these environment variables set, and returns the
/// environment it started or reused.
fn up(vars: &[(&str, &std::ffi::OsStr)]) -> TestEnv {
    let script = repo_root().join("hack/testenv/up.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).stdin(Stdio::null()).stderr(Stdio::inherit());
    cmd.envs(vars.iter().copied());
    // Build the node agent into the target dir this test binary came from, so the nested
    // cargo build finds everything already compiled.
    if std::env::var_os("CARGO_TARGET_DIR").is_none()
        && let Some(target) = target_dir_of_current_exe()
    {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}); its progress and errors are above. stdout: {stdout}",
        script.display(),
        out.status
    );
    let kubeconfig = PathBuf::from(
        stdout
            .lines()
            .last()
            .unwrap_or_else(|| panic!("{} printed no kubeconfig path", script.display()))
            .trim(),
    );
    let state_dir = kubeconfig.parent().map(Path::to_path_buf);
    TestEnv {
        kubeconfig,
        state_dir,
    }
}

/// `<target>` for a test binary at `<target>/debug/deps/<name>-<hash>`.
fn target_dir_of_current_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    Some(deps.parent()?.parent()?.to_path_buf())
}

/// One component of the environment, for [`TestEnv::restart_component`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    NodeAgent,
}

impl Component {
    /// The name `hack/testenv/restart.sh` takes (and the component's log is named after).
    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::NodeAgent => "weir-node-agent",
        }
    }
}

impl TestEnv {
    /// Starts (or reuses) an environment of its own in `dir`, with every port shifted by
    /// `port_offset`: for tests that break the control plane on purpose (the chaos suite), so
    /// that killing its apiserver or etcd harms no other test. `WEIR_KUBECONFIG` and
    /// `WEIR_ENV_DIR` are ignored. Blocks while `up.sh` runs; call it from
    /// `spawn_blocking` and keep the result in a `static` (namespaces need `&'static`).
    pub fn start_own(dir: &Path, port_offset: u16) -> TestEnv {
        let offset = port_offset.to_string();
        up(&[
            ("WEIR_ENV_DIR", dir.as_os_str()),
            ("WEIR_ENV_PORT_OFFSET", offset.as_ref()),
        ])
    }

    /// Sends `signal` (`"KILL"`, `"TERM"`) to one component, keeps it down for `down`, then
    /// starts it again with the same flags and data (etcd keeps its data) and waits until it
    /// serves again: `hack/testenv/restart.sh`. Blocks; returns its error output on failure.
    /// Restarting the node agent loses the pods it was running (reported `Failed`, reason
    /// `NodeAgentRestarted`).
    pub fn restart_component(
        &self,
        component: Component,
        signal: &str,
        down: Duration,
    ) -> Result<(), String> {
        let dir = self
            .state_dir
            .as_deref()
            .ok_or("the environment's state dir is unknown (WEIR_KUBECONFIG without WEIR_ENV_DIR)")?;
        let script = repo_root().join("hack/testenv/restart.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args([
                "--signal",
                signal,
                "--down",
                &format!("{:.1}", down.as_secs_f64()),
            ])
            .arg(component.name())
            .env("WEIR_ENV_DIR", dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {} failed ({}): {}",
                script.display(),
                component.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The environment's state dir (pids, `logs/`, `kubeconfig`), when known.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// A new client for the current runtime.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig).await
    }

    /// Creates a namespace `<prefix>-<6 random chars>` and waits until pods can be created
    /// in it (its `default` ServiceAccount exists with a token, which 1.20's ServiceAccount
    /// admission requires).
    pub async fn namespace(&'static self, prefix: &str) -> TestNamespace {
        let client = self.client().await;
        let name = format!("{prefix}-{}", random_suffix(6));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"weir.dev/test-namespace": "true"}},
        }))
        .expect("namespace object");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        // From here on, Drop cleans up even if the wait below fails.
        let ns = TestNamespace {
            env: self,
            name,
            client,
        };
        let sas: Api<ServiceAccount> = ns.api();
        wait_for(
            &format!("ServiceAccount {}/default with a token secret", ns.name),
            Duration::from_secs(60),
            || async {
                match sas.get_opt("default").await {
                    Ok(Some(sa)) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()) => Ok(()),
                    Ok(Some(_)) => Err("the ServiceAccount has no token secret yet".to_string()),
                    Ok(None) => Err("no ServiceAccount yet".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await;
        ns
    }
}

async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc =
        Kubeconfig::read_from(kubeconfig).unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("loading {}: {e}", kubeconfig.display()));
    kube::Client::try_from(config).expect("building a kube client")
}

/// Random lowercase letters and digits (valid in DNS labels).
pub fn random_suffix(len: usize) -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    let mut x = h.finish();
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// A namespace for one test; deleted on drop (after printing diagnostics if the test failed).
pub struct TestNamespace {
    env: &'static TestEnv,
    name: String,
    client: kube::Client,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client made on the runtime that created this namespace.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A namespaced `Api` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn kubeconfig(&self) -> &Path {
        self.env.kubeconfig()
    }

    pub fn env(&self) -> &'static TestEnv {
        self.env
    }

    /// `kubectl --kubeconfig <env> -n <namespace>`, to add arguments to and run.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(kubectl_binary());
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("-n")
            .arg(&self.name);
        cmd
    }

    /// Runs kubectl in this namespace and returns its output, whatever the exit status.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.kubectl_command();
        cmd.args(args);
        cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
    }

    /// Runs kubectl in this namespace; panics (with its stderr) unless it succeeds, and
    /// returns its stdout.
    pub fn kubectl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.kubectl(&args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of the given manifests in this namespace; panics on failure.
    pub fn apply(&self, yaml: &str) -> String {
        let mut child = self
            .kubectl_command()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl apply");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(yaml.as_bytes())
            .expect("writing manifests to kubectl");
        let out = child.wait_with_output().expect("waiting for kubectl apply");
        assert!(
            out.status.success(),
            "kubectl apply failed ({}):\n{}\nmanifests:\n{yaml}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What is in the namespace, and the tails of the component logs, as text.
    pub fn diagnostics(&self) -> String {
        let mut report = String::new();
        let mut section = |title: &str, args: &[&str]| {
            let out = self.kubectl(args);
            report.push_str(&format!("----- {title}\n"));
            report.push_str(&String::from_utf8_lossy(&out.stdout));
            if !out.status.success() {
                report.push_str(&String::from_utf8_lossy(&out.stderr));
            }
        };
        section("events", &["get", "events", "--sort-by=.lastTimestamp"]);
        section(
            "pods",
            &[
                "get",
                "pods",
                "-o",
                r#"jsonpath={range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\t"}{.status.reason}{"\t"}{.status.containerStatuses[*].state}{"\n"}{end}"#,
            ],
        );
        section(
            "jobs",
            &[
                "get",
                "jobs",
                "-o",
                r#"jsonpath={range .items[*]}{.metadata.name}{"\tactive="}{.status.active}{" succeeded="}{.status.succeeded}{" failed="}{.status.failed}{"\t"}{.status.conditions}{"\n"}{end}"#,
            ],
        );
        // `kubectl logs` needs a selector to take many pods: this one matches every pod.
        section(
            "container logs (last 20 lines each)",
            &[
                "logs",
                "--all-containers",
                "--prefix",
                "--tail=20",
                "--ignore-errors",
                "--max-log-requests=50",
                "-l",
                "weir.dev/no-such-label notin (x)",
            ],
        );
        // Weir's own resources, if its CRDs are installed.
        let crs = self.kubectl([
            "get",
            "pipelines.weir.dev,pipelineruns.weir.dev,taskruns.weir.dev",
            "-o",
            "yaml",
        ]);
        if crs.status.success() {
            report.push_str("----- weir.dev resources\n");
            report.push_str(&String::from_utf8_lossy(&crs.stdout));
        }
        if let Some(logs) = self.env.state_dir().map(|d| d.join("logs")) {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&logs)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                report.push_str(&format!("----- last 30 lines of {}\n", f.display()));
                for l in &lines[lines.len().saturating_sub(30)..] {
                    report.push_str(l);
                    report.push('\n');
                }
            }
        }
        report
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== diagnostics for namespace {} (test failed) =====\n{}===== end of diagnostics for {} =====",
                self.name,
                self.diagnostics(),
                self.name
            );
        }
        // Not waiting: the namespace controller finishes the deletion in the background.
        let _ = self
            .kubectl_command()
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The kubectl to run: `$KUBECTL`, else `kubectl` from PATH.
pub fn kubectl_binary() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// What a [`wait_for`] poll returns: `Some`/`Ok` when the awaited thing happened, `None` or
/// `Err(reason)` to poll again (the last reason is shown if the wait times out).
pub trait Attempt {
    type Output;
    fn into_result(self) -> Result<Self::Output, String>;
}

impl<T> Attempt for Option<T> {
    type Output = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet".to_string())
    }
}

impl<T, E: std::fmt::Display> Attempt for Result<T, E> {
    type Output = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Polls `poll` every 200 ms until it yields a value, and returns it. Panics after `timeout`
/// with a message naming `what` and the last reason `poll` gave.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut poll: F) -> <Fut::Output as Attempt>::Output
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Attempt,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match poll().await.into_result() {
            Ok(v) => return v,
            Err(reason) => reason,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what} (last observation: {last})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// PIDs of live processes whose command line contains `needle` (this process excluded).
/// Pods of the test environment are local processes, so a unique marker in a container's
/// command shows whether its process is still running.
pub fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        // Zombies have an empty cmdline and are gone for every practical purpose.
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// True if a process with this PID exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A string unlikely to occur anywhere else, for marking processes of one test.
pub fn unique_marker(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), random_suffix(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_dns_safe_and_differ() {
        let a = random_suffix(6);
        let b = random_suffix(6);
        assert_eq!(a.len(), 6);
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(a, b);
    }

    #[test]
    fn finds_own_children_by_cmdline() {
        let marker = unique_marker("weir-harness-selftest");
        // Blocks reading its stdin, without a child process of its own.
        let mut child = Command::new("sh")
            .args(["-c", &format!("read x; : {marker}")])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // The shell needs a moment to exec.
        let mut found = Vec::new();
        for _ in 0..50 {
            found = pids_with_cmdline(&marker);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(found, vec![pid]);
        assert!(pid_alive(pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }
}
