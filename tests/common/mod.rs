//! Helpers shared by the operator tests: the CRDs (installed once), an operator process per
//! test (so a test can kill and restart it), and a recorder of Job events seen by a separate
//! client, the way a person watching `kubectl get jobs -w` would see them.

#![allow(dead_code)]

pub mod azure;
pub mod browser;
pub mod cli;
pub mod dags;
pub mod manifests;
pub mod s3;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Resource, ResourceExt};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::api::{PipelineRun, RunPhase, TaskRun};
use weir_testenv::{TestNamespace, wait_for};

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

static CRDS: OnceLock<()> = OnceLock::new();

/// Applies `crds/` (once per test process) and waits until the API server serves them.
pub async fn install_crds(ns: &TestNamespace) {
    let kubeconfig = ns.kubeconfig().to_path_buf();
    tokio::task::spawn_blocking(move || {
        CRDS.get_or_init(|| {
            let out = Command::new(weir_testenv::kubectl_binary())
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(repo_root().join("crds"))
                .output()
                .expect("running kubectl apply -f crds");
            assert!(
                out.status.success(),
                "applying CRDs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Just after a fresh environment's first apply, a CRD may have no conditions at
            // all yet, and kubectl wait then fails at once (".status.conditions accessor
            // error: <nil>") instead of waiting: try again until the deadline.
            let deadline = Instant::now() + Duration::from_secs(60);
            let out = loop {
                let out = Command::new(weir_testenv::kubectl_binary())
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args([
                        "wait",
                        "--for=condition=Established",
                        "--timeout=30s",
                        "crd/pipelines.weir.dev",
                        "crd/pipelineruns.weir.dev",
                        "crd/taskruns.weir.dev",
                        "crd/pools.weir.dev",
                        "crd/assets.weir.dev",
                        "crd/pipelinerevisions.weir.dev",
                        "crd/approvals.weir.dev",
                    ])
                    .output()
                    .expect("running kubectl wait");
                if out.status.success() || Instant::now() >= deadline {
                    break out;
                }
                std::thread::sleep(Duration::from_millis(500));
            };
            assert!(
                out.status.success(),
                "waiting for CRDs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
    })
    .await
    .unwrap();
}

/// A `weir operator` process watching one namespace; killed when dropped (its log is printed
/// if the test is failing).
pub struct Operator {
    child: Option<Child>,
    log: PathBuf,
    namespace: String,
    kubeconfig: PathBuf,
    starts: u32,
    /// More `weir operator` arguments, and `POD_NAME` (names the replica) if set.
    extra_args: Vec<String>,
    pod_name: Option<String>,
    /// Environment variables of the process (fault points such as `WEIR_CRASH_AT`).
    env: Vec<(String, String)>,
    /// Watch every namespace instead of the test's (only for a control plane of one's own).
    cluster_wide: bool,
}

impl Operator {
    pub fn start(ns: &TestNamespace) -> Operator {
        Operator::start_with(ns, None, &[])
    }

    /// An operator with more arguments; `pod_name` (set as `POD_NAME`) names the replica
    /// (its lease identity) and its log file.
    pub fn start_with(ns: &TestNamespace, pod_name: Option<&str>, args: &[&str]) -> Operator {
        let mut op = Operator::unstarted(ns, pod_name, args);
        op.spawn();
        op
    }

    /// An operator watching every namespace of the cluster (no `--namespace`): it would
    /// act on other tests' objects, so only for a control plane no other test uses.
    pub fn start_cluster_wide(ns: &TestNamespace, pod_name: &str, args: &[&str]) -> Operator {
        let mut op = Operator::unstarted(ns, Some(pod_name), args);
        op.cluster_wide = true;
        op.spawn();
        op
    }

    fn unstarted(ns: &TestNamespace, pod_name: Option<&str>, args: &[&str]) -> Operator {
        let suffix = pod_name.map(|p| format!("-{p}")).unwrap_or_default();
        Operator {
            child: None,
            log: std::env::temp_dir().join(format!("weir-operator-{}{suffix}.log", ns.name())),
            namespace: ns.name().to_string(),
            kubeconfig: ns.kubeconfig().to_path_buf(),
            starts: 0,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            pod_name: pod_name.map(String::from),
            env: Vec::new(),
            cluster_wide: false,
        }
    }

    /// An operator with environment variables set (for example a `WEIR_CRASH_AT` fault
    /// point); [`Operator::restart_without_env`] starts it again without them.
    pub fn start_with_env(ns: &TestNamespace, env: &[(&str, &str)]) -> Operator {
        let mut op = Operator {
            child: None,
            log: std::env::temp_dir().join(format!("weir-operator-{}.log", ns.name())),
            namespace: ns.name().to_string(),
            kubeconfig: ns.kubeconfig().to_path_buf(),
            starts: 0,
            extra_args: Vec::new(),
            pod_name: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            cluster_wide: false,
        };
        op.spawn();
        op
    }

    /// Waits up to `timeout` for the process to end by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.as_mut()?.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Starts the operator again with no extra environment variables.
    pub fn restart_without_env(&mut self) {
        self.kill();
        self.env.clear();
        self.spawn();
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command.arg("operator");
        if !self.cluster_wide {
            command.args(["--namespace", &self.namespace]);
        }
        command
            .args(["--log-level", "info,weir=debug"])
            .args(&self.extra_args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        // Any free loopback port, so operators of tests running at once do not collide.
        if !self.extra_args.iter().any(|a| a == "--http-addr") {
            command.args(["--http-addr", "127.0.0.1:0"]);
        }
        if let Some(pod) = &self.pod_name {
            command.env("POD_NAME", pod);
        }
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = command.spawn().expect("starting weir operator");
        self.child = Some(child);
    }

    /// The address the operator's HTTP port is bound to (read from its log, once this
    /// incarnation logged it).
    pub async fn http_addr(&self) -> std::net::SocketAddr {
        wait_for("the operator's HTTP address", Duration::from_secs(30), || async {
            let log = self.log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("serving /livez")).collect();
            if lines.len() < self.starts as usize {
                return None;
            }
            let addr = lines.last()?.split("addr=").nth(1)?.split_whitespace().next()?;
            addr.parse().ok()
        })
        .await
    }

    /// Where the operator's admission webhook listens (from its log).
    pub async fn webhook_addr(&self) -> std::net::SocketAddr {
        wait_for(
            "the operator's webhook address",
            Duration::from_secs(30),
            || async {
                let log = self.log();
                let line = log
                    .lines()
                    .rev()
                    .find(|l| l.contains("serving the admission webhook"))?;
                line.split("addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            },
        )
        .await
    }

    /// Process id of the running operator.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM (a graceful shutdown) and waits up to `timeout` for the process to end;
    /// returns its exit status, or `None` if it is still running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.pid()?;
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.as_mut()?.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Kills the operator at once (SIGKILL: no chance to finish anything).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!(
                "---- last lines of the operator log ({} starts) ----\n{}",
                self.starts,
                tail.join("\n")
            );
        }
        if std::env::var_os("WEIR_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Test namespaces `<prefix>-...` until there is one for each of `shards` shards (by
/// `weir::shard::shard_of`), in shard order; the others are deleted.
pub async fn one_namespace_per_shard(prefix: &str, shards: u32) -> Vec<weir_testenv::TestNamespace> {
    let mut found: Vec<Option<weir_testenv::TestNamespace>> = (0..shards).map(|_| None).collect();
    for _ in 0..64 * shards {
        let ns = weir_testenv::env().await.namespace(prefix).await;
        let slot = &mut found[weir::shard::shard_of(ns.name(), shards) as usize];
        if slot.is_none() {
            *slot = Some(ns);
        }
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
    }
    panic!("{} random namespaces and still a shard without one", 64 * shards);
}

/// Namespace + CRDs + operator: what almost every test needs.
pub async fn setup(prefix: &str) -> (TestNamespace, Operator) {
    let ns = weir_testenv::env().await.namespace(prefix).await;
    install_crds(&ns).await;
    let op = Operator::start(&ns);
    (ns, op)
}

/// Waits until a PipelineRun reaches a final phase and returns it.
pub async fn wait_run_done(ns: &TestNamespace, name: &str, timeout: Duration) -> PipelineRun {
    let api: Api<PipelineRun> = ns.api();
    wait_for(&format!("PipelineRun {name} to finish"), timeout, || async {
        let run = api.get(name).await.map_err(|e| e.to_string())?;
        match run.status.as_ref().and_then(|s| s.phase) {
            Some(p) if p.is_terminal() => Ok(run),
            p => Err(format!("phase {p:?}")),
        }
    })
    .await
}

pub fn phase(run: &PipelineRun) -> RunPhase {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .expect("run has a phase")
}

pub fn condition_reason(run: &PipelineRun) -> String {
    let status = run.status.as_ref().expect("status");
    weir::api::condition::find(&status.conditions, "Succeeded")
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

pub async fn task_run(ns: &TestNamespace, run: &str, task: &str) -> TaskRun {
    let api: Api<TaskRun> = ns.api();
    api.get(&weir::engine::names::task_run_name(run, task))
        .await
        .unwrap_or_else(|e| panic!("TaskRun for task {task} of {run}: {e}"))
}

pub async fn task_run_opt(ns: &TestNamespace, run: &str, task: &str) -> Option<TaskRun> {
    let api: Api<TaskRun> = ns.api();
    api.get_opt(&weir::engine::names::task_run_name(run, task))
        .await
        .unwrap()
}

/// The state of a task as the run's status summary reports it.
pub fn summary_phase(run: &PipelineRun, task: &str) -> Option<weir::api::TaskPhase> {
    run.status
        .as_ref()?
        .tasks
        .iter()
        .find(|t| t.name == task)
        .map(|t| t.phase)
}

/// What a separate watcher saw happen to Jobs, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEvent {
    Created {
        job: String,
        /// Tells a Job apart from a later one of the same name (deleted and created again).
        uid: String,
        task: String,
        attempt: u32,
        at: Instant,
    },
    Finished {
        job: String,
        task: String,
        succeeded: bool,
        at: Instant,
    },
    Deleted {
        job: String,
        task: String,
    },
}

#[derive(Clone, Default)]
pub struct JobRecorder {
    events: Arc<Mutex<Vec<JobEvent>>>,
}

impl JobRecorder {
    /// Starts watching the Jobs of the namespace (on the current runtime).
    pub async fn start(ns: &TestNamespace) -> JobRecorder {
        let recorder = JobRecorder::default();
        let api: Api<Job> = ns.api();
        let events = recorder.events.clone();
        let ready = Arc::new(tokio::sync::Notify::new());
        let ready_tx = ready.clone();
        tokio::spawn(async move {
            let mut seen_created = std::collections::HashSet::new();
            let mut seen_finished = std::collections::HashSet::new();
            // With backoff: while the API server is down (the chaos suite restarts it), a
            // watcher without it retries in a busy loop.
            let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                let (jobs, deleted): (Vec<Job>, bool) = match event {
                    Ok(watcher::Event::Apply(job)) | Ok(watcher::Event::InitApply(job)) => (vec![job], false),
                    Ok(watcher::Event::Delete(job)) => (vec![job], true),
                    Ok(watcher::Event::InitDone) => {
                        ready_tx.notify_one();
                        continue;
                    }
                    _ => continue,
                };
                for job in jobs {
                    let name = job.name_any();
                    let uid = job.uid().unwrap_or_default();
                    let task = job.labels().get("weir.dev/task").cloned().unwrap_or_default();
                    let attempt = job
                        .labels()
                        .get("weir.dev/attempt")
                        .and_then(|a| a.parse().ok())
                        .unwrap_or(0);
                    let mut out = events.lock().unwrap();
                    if deleted {
                        out.push(JobEvent::Deleted { job: name, task });
                        continue;
                    }
                    // By uid, not name: a Job deleted and created again under its name is a
                    // second Job for the attempt, and must show up as one.
                    if seen_created.insert(uid.clone()) {
                        out.push(JobEvent::Created {
                            job: name.clone(),
                            uid: uid.clone(),
                            task: task.clone(),
                            attempt,
                            at: Instant::now(),
                        });
                    }
                    let conds = job
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.clone())
                        .unwrap_or_default();
                    let done = conds
                        .iter()
                        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
                    if let Some(c) = done
                        && seen_finished.insert(uid)
                    {
                        out.push(JobEvent::Finished {
                            job: name,
                            task,
                            succeeded: c.type_ == "Complete",
                            at: Instant::now(),
                        });
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), ready.notified())
            .await
            .expect("job watcher started");
        recorder
    }

    pub fn events(&self) -> Vec<JobEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Index in the event list of the creation of the first Job of `task`.
    pub fn created_index(&self, task: &str) -> usize {
        self.events()
            .iter()
            .position(|e| matches!(e, JobEvent::Created { task: t, .. } if t == task))
            .unwrap_or_else(|| panic!("no Job was created for task {task}: {:?}", self.events()))
    }

    /// Index of the (last) successful finish of a Job of `task`.
    pub fn finished_index(&self, task: &str) -> usize {
        self.events()
            .iter()
            .rposition(|e| matches!(e, JobEvent::Finished { task: t, .. } if t == task))
            .unwrap_or_else(|| panic!("no Job of task {task} finished: {:?}", self.events()))
    }

    pub fn created(&self) -> Vec<(String, String, u32)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                JobEvent::Created {
                    job, task, attempt, ..
                } => Some((job, task, attempt)),
                _ => None,
            })
            .collect()
    }

    /// Asserts that no Job name was created twice and that `expected` Jobs were created.
    pub fn assert_each_created_once(&self, expected: usize) {
        let created = self.created();
        let mut names: Vec<&str> = created.iter().map(|(j, _, _)| j.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a Job was created twice: {created:?}");
        assert_eq!(created.len(), expected, "{created:?}");
    }

    /// The most Jobs that were running at once (created, not yet finished or deleted).
    pub fn max_concurrent(&self) -> usize {
        let mut active = std::collections::HashSet::new();
        let mut most = 0;
        for e in self.events() {
            match e {
                JobEvent::Created { job, .. } => {
                    active.insert(job);
                }
                JobEvent::Finished { job, .. } | JobEvent::Deleted { job, .. } => {
                    active.remove(&job);
                }
            }
            most = most.max(active.len());
        }
        most
    }
}

/// The names of the files in `examples/` (without `.yaml`), sorted.
pub fn example_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("examples"))
        .expect("reading examples/")
        .map(|e| e.expect("an entry of examples/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every TaskRun of the PipelineRun `run` (instances of fanned-out tasks included).
pub async fn task_runs_of(ns: &TestNamespace, run: &str) -> Vec<TaskRun> {
    let api: Api<TaskRun> = ns.api();
    let selector = format!(
        "{}={}",
        weir::api::labels::PIPELINE_RUN,
        weir::engine::names::label_value(run)
    );
    api.list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap_or_else(|e| panic!("listing the TaskRuns of {run}: {e}"))
        .items
}

/// Every TaskRun of a run, once all of them carry the finished mark (the operator's last
/// write on a TaskRun it is done with).
pub async fn wait_all_marked_finished(ns: &TestNamespace, run: &str) -> Vec<TaskRun> {
    wait_for(
        "every TaskRun marked finished",
        Duration::from_secs(120),
        || async {
            let trs = task_runs_of(ns, run).await;
            let unmarked: Vec<String> = trs
                .iter()
                .filter(|tr| !weir::controller::finished::is_marked(*tr))
                .map(|tr| tr.metadata.name.clone().unwrap_or_default())
                .collect();
            if trs.is_empty() || !unmarked.is_empty() {
                return Err(format!("not marked: {unmarked:?}"));
            }
            Ok(trs)
        },
    )
    .await
}

/// Reads an example from `examples/`, optionally rewriting text in it.
pub fn example(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples").join(format!("{name}.yaml")))
        .unwrap_or_else(|e| panic!("example {name}: {e}"))
}

/// The Events in the namespace whose reason is `reason`, as "reason: message" lines.
pub fn events_with_reason(ns: &TestNamespace, reason: &str) -> Vec<String> {
    let out = ns.kubectl_ok([
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.reason}{\"\\t\"}{.message}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter(|l| l.starts_with(&format!("{reason}\t")))
        .map(String::from)
        .collect()
}

/// The kinds of object the namespace's Events with `reason` are about, one per Event.
pub fn kinds_of_events(ns: &TestNamespace, reason: &str) -> Vec<String> {
    let out = ns.kubectl_ok([
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.reason}{\"\\t\"}{.involvedObject.kind}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("{reason}\t")))
        .map(String::from)
        .collect()
}

pub fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).to_string()
}

/// Waits until no process has `marker` in its command line (the node agent runs pods as
/// local processes, so this is how a test sees that a task's process was really stopped).
pub async fn wait_process_gone(marker: &str, what: &str) {
    wait_for(what, Duration::from_secs(30), || async {
        let pids = weir_testenv::pids_with_cmdline(marker);
        if pids.is_empty() {
            Ok(())
        } else {
            Err(format!("still running: {pids:?}"))
        }
    })
    .await;
}

/// The task lines of a chain `s0 -> s1 -> ... -> s{links-1}`, each running `command`.
pub fn chain_tasks(links: usize, command: &str) -> String {
    (0..links)
        .map(|i| {
            let dep = if i == 0 {
                String::new()
            } else {
                format!(", dependsOn: [s{}]", i - 1)
            };
            format!("      - {{name: s{i}, image: busybox, command: [sh, -c, '{command}']{dep}}}\n")
        })
        .collect()
}

/// A PipelineRun of a chain of `links` tasks running `command`, then a task `flaky` that
/// fails its first attempt and succeeds on the retry: `links + 2` Jobs in all.
pub fn chain_with_flaky_run(name: &str, links: usize, command: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {{name: {name}}}\nspec:\n  pipelineSpec:\n    tasks:\n{}      - {{name: flaky, image: busybox, command: [sh, -c, '[ $WEIR_ATTEMPT -ge 2 ]'], retries: {{limit: 2, delay: 1s}}, dependsOn: [s{}]}}\n",
        chain_tasks(links, command),
        links - 1
    )
}

/// `kubectl apply -f -` with `yaml` on stdin: whether it succeeded, and what it printed.
pub fn kubectl_apply(ns: &TestNamespace, yaml: &str, extra: &[&str]) -> (bool, String) {
    use std::io::Write as _;
    let mut child = ns
        .kubectl_command()
        .args(["apply", "-f", "-"])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `weir ui` in-process for the namespace's user, on a free loopback port: its base URL
/// (`http://127.0.0.1:PORT`) and the sender whose drop stops it.
pub async fn ui_server(
    ns: &TestNamespace,
    mode: weir::ui::AuthMode,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let kubeconfig = kube::config::Kubeconfig::read_from(ns.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let ui = weir::ui::Ui::new(weir::ui::Settings {
        mode,
        config,
        namespace: ns.name().to_string(),
        context: None,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(weir::ui::serve(listener, ui, async {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), stop)
}

/// A ServiceAccount `viewer` bound to the built-in `view` role (to which, as the chart
/// does, a ClusterRole aggregates reading Weir's resources), and its token.
pub async fn viewer_token(ns: &TestNamespace) -> String {
    ns.apply(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: weir-ui-test-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
  - apiGroups: [weir.dev]
    resources: [pipelines, pipelineruns, taskruns, pipelinerevisions]
    verbs: [get, list, watch]
"#,
    );
    ns.kubectl_ok(["create", "serviceaccount", "viewer"]);
    ns.kubectl_ok([
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        &format!("--serviceaccount={}:viewer", ns.name()),
    ]);
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = ns.api();
    let secret = wait_for("the ServiceAccount's token", Duration::from_secs(120), || async {
        sas.get("viewer").await.ok()?.secrets?.first()?.name.clone()
    })
    .await;
    let secret: k8s_openapi::api::core::v1::Secret = ns
        .api::<k8s_openapi::api::core::v1::Secret>()
        .get(&secret)
        .await
        .unwrap();
    String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap()
}

// The operator's HTTP port, as a scraper or a probe reads it.

/// `GET path` over plain HTTP/1.0: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no header end")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    Ok((code, body.to_string()))
}

pub async fn scrape(addr: SocketAddr) -> String {
    let (code, body) = http_get(addr, "/metrics").await.expect("GET /metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// How many reconciles the metrics count, over every controller.
pub fn reconciles(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("weir_reconcile_duration_seconds_count{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Who reported the operator's Events in `ns` (their `reportingInstance`, the replica's
/// `POD_NAME`), with each Event's reason.
pub async fn event_reporters(ns: &TestNamespace) -> Vec<(String, String)> {
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let list = events.list(&Default::default()).await.expect("listing Events");
    list.items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(weir::controller::REPORTER))
        .map(|e| {
            (
                e.reporting_instance.unwrap_or_default(),
                e.reason.unwrap_or_default(),
            )
        })
        .collect()
}

/// The value of the sample `series` (name with its labels, exactly as exposed).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(s, _)| *s == series)?.1.parse().ok())
}

/// Scrapes until every `(series, value)` is exposed (counters move a moment after the status
/// a test waits for: the Event is published in between), and returns the last scrape.
pub async fn scrape_until(addr: SocketAddr, want: &[(&str, f64)]) -> String {
    wait_for("the expected metrics", Duration::from_secs(30), || async {
        let metrics = scrape(addr).await;
        let wrong: Vec<String> = want
            .iter()
            .filter(|(series, value)| sample(&metrics, series) != Some(*value))
            .map(|(series, value)| format!("{series} = {:?}, want {value}", sample(&metrics, series)))
            .collect();
        if wrong.is_empty() {
            Ok(metrics)
        } else {
            Err(format!("{}\n{metrics}", wrong.join("; ")))
        }
    })
    .await
}
