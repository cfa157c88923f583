//! Pod lifecycle: watching the pods bound to this node and running each one like a kubelet.
//!
//! Pods found at start-up:
//! * already `Succeeded`/`Failed`: left alone;
//! * with containers that an earlier agent instance had started (any container status
//!   `running` or `terminated`): their processes were killed when this agent started
//!   (`procs::reap_leftovers`), and a process's exit status and output cannot be recovered,
//!   so the pod is reported `Failed` with reason `NodeAgentRestarted` rather than silently
//!   run a second time. A Job's controller then counts a failure and may retry;
//! * not started yet: run normally.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt as _, future::join_all};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::container::{self, Exit, PrepareError, Sources};
use super::network::{self, Network, PodNetwork};
use super::node::time_now;
use super::procs::{self, ProcTable};

/// Upper bound on how long a deleted pod's processes get between SIGTERM and SIGKILL.
const MAX_GRACE: Duration = Duration::from_secs(30);
/// Grace for processes of a pod that vanished from the API without graceful deletion.
const GONE_GRACE: Duration = Duration::from_secs(2);
/// Retry interval while a container's env refers to a missing ConfigMap/Secret key.
const CONFIG_RETRY: Duration = Duration::from_secs(2);

/// Shared by the pod workers and the log server.
pub struct Ctx {
    pub client: kube::Client,
    pub node_name: String,
    pub node_ip: String,
    pub state_dir: PathBuf,
    pub procs: ProcTable,
    pub settings: container::Settings,
    /// Networks of their own for the pods that ask (`--pod-network`).
    pub network: Option<Arc<Network>>,
    /// Log files of containers that are running now, so that `follow` knows when to stop.
    pub running_logs: Mutex<HashSet<PathBuf>>,
}

/// What the watch last said about a pod.
#[derive(Clone)]
enum Observed {
    Present(Arc<Pod>),
    Gone,
}

/// Keeps one worker task per pod (by UID) and feeds it the pod's updates.
pub struct Manager {
    ctx: Arc<Ctx>,
    workers: HashMap<String, watch::Sender<Observed>>,
}

impl Manager {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            ctx,
            workers: HashMap::new(),
        }
    }

    pub async fn run(mut self) -> anyhow::Result<()> {
        let api: Api<Pod> = Api::all(self.ctx.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.ctx.node_name));
        // The watcher re-lists after errors (with backoff); a re-list replays every pod as
        // InitApply, and pods missing from it are gone.
        let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
        let mut listing: Option<HashSet<String>> = None;
        let mut first_list = true;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => listing = Some(HashSet::new()),
                Ok(Event::InitApply(pod)) => {
                    if let (Some(seen), Some(uid)) = (listing.as_mut(), pod.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    self.observe(pod);
                }
                Ok(Event::InitDone) => {
                    let seen = listing.take().unwrap_or_default();
                    let gone: Vec<String> = self
                        .workers
                        .keys()
                        .filter(|u| !seen.contains(*u))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.gone(&uid);
                    }
                    if first_list {
                        first_list = false;
                        self.remove_orphan_dirs(&seen);
                    }
                }
                Ok(Event::Apply(pod)) => self.observe(pod),
                Ok(Event::Delete(pod)) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        self.gone(uid);
                    }
                }
                Err(e) => warn!("pod watch failed, re-listing: {e}"),
            }
        }
        anyhow::bail!("pod watch stream ended")
    }

    fn observe(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let pod = Arc::new(pod);
        if let Some(tx) = self.workers.get(&uid) {
            tx.send_replace(Observed::Present(pod));
            return;
        }
        let (tx, rx) = watch::channel(Observed::Present(pod.clone()));
        self.workers.insert(uid, tx);
        tokio::spawn(worker(self.ctx.clone(), pod, rx));
    }

    fn gone(&mut self, uid: &str) {
        if let Some(tx) = self.workers.remove(uid) {
            tx.send_replace(Observed::Gone);
        }
    }

    /// Pod directories of pods deleted while no agent was running.
    fn remove_orphan_dirs(&self, live: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(self.ctx.state_dir.join("pods")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let uid = name.rsplit('_').next().unwrap_or_default();
            if !live.contains(uid) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// True if an earlier agent instance started any container of this pod.
fn started_before(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten()
        .any(|cs| {
            cs.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
}

async fn worker(ctx: Arc<Ctx>, pod: Arc<Pod>, mut rx: watch::Receiver<Observed>) {
    rx.borrow_and_update();
    let key = pod_key(&pod);
    let pod_dir = ctx.state_dir.join("pods").join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    ));
    let run = Arc::new(PodRun::new(ctx.clone(), pod.clone(), pod_dir.clone()));
    if is_terminal(&pod) {
        // Nothing to do until it is deleted.
    } else if pod.metadata.deletion_timestamp.is_some() {
        info!(pod = %key, "deleted before it ran");
    } else if started_before(&pod) {
        info!(pod = %key, "was running under an earlier agent; reporting it failed");
        run.fail_after_agent_restart().await;
    } else {
        info!(pod = %key, "starting");
        run.clone().supervise(&mut rx).await;
        info!(pod = %key, phase = %run.state.lock().unwrap().phase(), "done");
    }

    // Wait for the pod to go away; a graceful deletion needs our confirmation.
    let mut finalized = false;
    loop {
        let observed = rx.borrow_and_update().clone();
        match observed {
            Observed::Gone => break,
            Observed::Present(p) if p.metadata.deletion_timestamp.is_some() && !finalized => {
                finalized = run.finalize_deletion().await;
            }
            Observed::Present(_) => {}
        }
        if rx.changed().await.is_err() {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&pod_dir);
}

/// Why a pod's processes are being stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Deleted,
    Gone,
    Deadline,
}

/// One pod being run.
struct PodRun {
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    api: Api<Pod>,
    dir: PathBuf,
    state: Mutex<PodState>,
    /// Serializes status patches so that they reach the apiserver in order.
    report_lock: tokio::sync::Mutex<()>,
    /// Process groups of this pod's running containers.
    groups: Mutex<Vec<i32>>,
    stop: watch::Sender<Option<Stop>>,
    /// Set once SIGKILL was sent: containers started after that are killed at once.
    killed: std::sync::atomic::AtomicBool,
    /// The pod's own network while its containers run (pods that ask for one).
    network: Mutex<Option<PodNetwork>>,
    /// Its address, reported as podIP (kept after the network is gone, as a kubelet does).
    pod_ip: Mutex<Option<String>>,
}

impl PodRun {
    fn new(ctx: Arc<Ctx>, pod: Arc<Pod>, dir: PathBuf) -> Self {
        let api = Api::namespaced(
            ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let spec = pod.spec.clone().unwrap_or_default();
        let status = |c: &Container| CStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            container_id: None,
            state: CState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
        };
        let init: Vec<CStatus> = spec.init_containers.iter().flatten().map(status).collect();
        let mut main: Vec<CStatus> = spec.containers.iter().map(status).collect();
        if !init.is_empty() {
            for c in &mut main {
                c.state = CState::Waiting {
                    reason: "PodInitializing".into(),
                    message: None,
                };
            }
        }
        let scheduled = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        let now = time_now();
        Self {
            ctx,
            api,
            dir,
            state: Mutex::new(PodState {
                start_time: now.clone(),
                init,
                main,
                failure: None,
                transitions: HashMap::from([("PodScheduled", (true, scheduled.unwrap_or(now)))]),
            }),
            pod,
            report_lock: tokio::sync::Mutex::new(()),
            groups: Mutex::new(Vec::new()),
            stop: watch::channel(None).0,
            killed: false.into(),
            network: Mutex::new(None),
            pod_ip: Mutex::new(None),
        }
    }

    fn spec_grace(&self) -> Duration {
        let secs = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64).min(MAX_GRACE)
    }

    /// Runs the pod's containers until they end, the pod is deleted, or its deadline passes.
    async fn supervise(self: Arc<Self>, rx: &mut watch::Receiver<Observed>) {
        if let Err(e) = self.attach_network().await {
            warn!(pod = %pod_key(&self.pod), "{e:#}");
            self.state.lock().unwrap().failure = Some(("NetworkSetupFailed".into(), format!("{e:#}")));
            self.report().await;
            return;
        }
        self.report().await;
        self.supervise_containers(rx).await;
        // The sandbox goes when the containers have ended.
        self.network.lock().unwrap().take();
    }

    /// A network of the pod's own, if it asks for one and the agent has a pod network.
    async fn attach_network(&self) -> anyhow::Result<()> {
        let asks = self
            .pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(network::ANNOTATION))
            .is_some_and(|v| v == "pod");
        if !asks {
            return Ok(());
        }
        let Some(net) = self.ctx.network.as_ref() else {
            anyhow::bail!(
                "the pod asks for a network of its own ({}: pod), but this node agent has none \
                 (--pod-network unset, or setting it up failed: see the agent's log)",
                network::ANNOTATION
            );
        };
        let attached = net.attach().await?;
        info!(pod = %pod_key(&self.pod), ip = %attached.ip, netns = attached.netns(), "pod network attached");
        *self.pod_ip.lock().unwrap() = Some(attached.ip.to_string());
        *self.network.lock().unwrap() = Some(attached);
        Ok(())
    }

    async fn supervise_containers(self: &Arc<Self>, rx: &mut watch::Receiver<Observed>) {
        let deadline = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .map(|s| Instant::now() + Duration::from_secs(s.max(0) as u64));
        let exec = self.clone().execute();
        tokio::pin!(exec);
        let mut kill_at: Option<Instant> = None;
        let mut watching = true;
        loop {
            let stopping = self.stop.borrow().is_some();
            tokio::select! {
                _ = &mut exec => break,
                changed = rx.changed(), if watching => {
                    let observed = if changed.is_ok() { rx.borrow_and_update().clone() } else { Observed::Gone };
                    match observed {
                        Observed::Gone => {
                            watching = false;
                            // Gone without graceful deletion (forced, or grace 0): hurry.
                            let grace = if stopping { GONE_GRACE.min(self.remaining(kill_at)) } else { GONE_GRACE };
                            kill_at = Some(self.begin_stop(Stop::Gone, grace));
                        }
                        Observed::Present(p) if p.metadata.deletion_timestamp.is_some() && !stopping => {
                            let grace = p
                                .metadata
                                .deletion_grace_period_seconds
                                .map(|s| Duration::from_secs(s.max(0) as u64).min(MAX_GRACE))
                                .unwrap_or_else(|| self.spec_grace());
                            kill_at = Some(self.begin_stop(Stop::Deleted, grace));
                        }
                        Observed::Present(_) => {}
                    }
                }
                _ = sleep_until_opt(deadline), if !stopping => {
                    info!(pod = %pod_key(&self.pod), "active deadline exceeded");
                    self.state.lock().unwrap().failure = Some((
                        "DeadlineExceeded".into(),
                        "Pod was active on the node longer than the specified deadline".into(),
                    ));
                    kill_at = Some(self.begin_stop(Stop::Deadline, self.spec_grace()));
                }
                _ = sleep_until_opt(kill_at) => {
                    self.killed.store(true, std::sync::atomic::Ordering::SeqCst);
                    for &g in self.groups.lock().unwrap().iter() {
                        procs::kill_group(g, libc::SIGKILL);
                    }
                    kill_at = None;
                }
            }
        }
        // A deadline failure is final even though containers were cut short.
        self.report().await;
    }

    fn remaining(&self, kill_at: Option<Instant>) -> Duration {
        kill_at.map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()))
    }

    /// Sends SIGTERM to every container and returns when SIGKILL is due.
    fn begin_stop(&self, why: Stop, grace: Duration) -> Instant {
        info!(pod = %pod_key(&self.pod), ?why, ?grace, "stopping containers");
        self.stop.send_replace(Some(why));
        for &g in self.groups.lock().unwrap().iter() {
            procs::kill_group(g, libc::SIGTERM);
        }
        Instant::now() + grace
    }

    fn stopped(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Init containers one after another, then the main containers together.
    async fn execute(self: Arc<Self>) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        for (i, c) in spec.init_containers.iter().flatten().enumerate() {
            match self.run_container(true, i, c).await {
                Some(exit) if exit.code == 0 => {}
                // A failed init container fails the pod (restartPolicy Never), as does a stop.
                _ => return,
            }
        }
        let runs = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| self.run_container(false, i, c));
        join_all(runs).await;
    }

    fn set_state(&self, init: bool, i: usize, state: CState, container_id: Option<String>) {
        let mut st = self.state.lock().unwrap();
        let list = if init { &mut st.init } else { &mut st.main };
        list[i].state = state;
        if container_id.is_some() {
            list[i].container_id = container_id;
        }
    }

    /// Runs one container to its end. `None` if it never started because the pod was stopped.
    async fn run_container(&self, init: bool, i: usize, c: &Container) -> Option<Exit> {
        let mut stop_rx = self.stop.subscribe();
        let prepared = loop {
            if self.stopped() {
                return None;
            }
            let mut sources = Sources::new(self.ctx.client.clone(), self.api_namespace());
            let prepared = container::prepare(
                &self.pod,
                c,
                &self.dir,
                &mut sources,
                &self.ctx.state_dir,
                &self.ctx.settings,
            )
            .await;
            // Like the kubelet: stay waiting and retry, the ConfigMap may appear, the API
            // server come back.
            let (reason, message) = match prepared {
                Ok(p) => break p,
                Err(PrepareError::Config(message)) => ("CreateContainerConfigError", message),
                Err(PrepareError::Mount(message)) => ("ContainerCreating", message),
                Err(PrepareError::Start(message)) => {
                    return Some(self.start_failed(init, i, message).await);
                }
            };
            let state = CState::Waiting {
                reason: reason.into(),
                message: Some(message),
            };
            self.set_state(init, i, state, None);
            self.report().await;
            tokio::select! {
                _ = tokio::time::sleep(CONFIG_RETRY) => {}
                _ = stop_rx.changed() => {}
            }
        };
        if self.stopped() {
            return None;
        }
        self.ctx
            .running_logs
            .lock()
            .unwrap()
            .insert(prepared.log_path.clone());
        let mut prepared = prepared;
        prepared.netns = self
            .network
            .lock()
            .unwrap()
            .as_ref()
            .map(|n| n.netns().to_string());
        let running = match container::spawn(&prepared) {
            Ok(r) => r,
            Err(message) => {
                self.ctx.running_logs.lock().unwrap().remove(&prepared.log_path);
                return Some(self.start_failed(init, i, message).await);
            }
        };
        let pgid = running.pgid;
        self.groups.lock().unwrap().push(pgid);
        self.ctx.procs.insert(pgid);
        // A stop that raced with the start: deliver what the others already got.
        if self.stopped() {
            let sig = if self.killed.load(std::sync::atomic::Ordering::SeqCst) {
                libc::SIGKILL
            } else {
                libc::SIGTERM
            };
            procs::kill_group(pgid, sig);
        }
        let started_at = time_now();
        let container_id = Some(format!("weir://{pgid}"));
        self.set_state(
            init,
            i,
            CState::Running {
                started_at: started_at.clone(),
            },
            container_id,
        );
        self.report().await;

        let exit = running.wait(&prepared).await;
        self.groups.lock().unwrap().retain(|&g| g != pgid);
        self.ctx.procs.remove(pgid);
        self.ctx.running_logs.lock().unwrap().remove(&prepared.log_path);
        info!(pod = %pod_key(&self.pod), container = %c.name, code = exit.code, "container exited");
        let state = CState::Terminated {
            exit_code: exit.code,
            signal: exit.signal,
            reason: if exit.code == 0 { "Completed" } else { "Error" }.into(),
            message: exit.message.clone(),
            started_at,
            finished_at: time_now(),
        };
        self.set_state(init, i, state, None);
        self.report().await;
        Some(exit)
    }

    async fn start_failed(&self, init: bool, i: usize, message: String) -> Exit {
        warn!(pod = %pod_key(&self.pod), container = i, %message, "container could not start");
        let now = time_now();
        let state = CState::Terminated {
            exit_code: 128,
            signal: None,
            reason: "StartError".into(),
            message: message.clone(),
            started_at: now.clone(),
            finished_at: now,
        };
        self.set_state(init, i, state, None);
        self.report().await;
        Exit {
            code: 128,
            signal: None,
            message,
        }
    }

    fn api_namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    async fn fail_after_agent_restart(&self) {
        let previous = self.pod.status.clone().unwrap_or_default();
        {
            let mut guard = self.state.lock().unwrap();
            let st = &mut *guard;
            let now = time_now();
            let lists = [
                (&mut st.init, previous.init_container_statuses.unwrap_or_default()),
                (&mut st.main, previous.container_statuses.unwrap_or_default()),
            ];
            for (list, prev) in lists {
                for c in list.iter_mut() {
                    let old = prev.iter().find(|p| p.name == c.name);
                    let terminated = old
                        .and_then(|o| o.state.as_ref())
                        .and_then(|s| s.terminated.clone());
                    let was_started = old
                        .and_then(|o| o.state.as_ref())
                        .and_then(|s| s.running.as_ref())
                        .and_then(|r| r.started_at.as_ref())
                        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
                    c.container_id = old.and_then(|o| o.container_id.clone());
                    c.state = match terminated {
                        Some(t) => CState::Terminated {
                            exit_code: t.exit_code,
                            signal: t.signal,
                            reason: t.reason.unwrap_or_default(),
                            message: t.message.unwrap_or_default(),
                            started_at: t
                                .started_at
                                .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                                .unwrap_or_else(|| now.clone()),
                            finished_at: t
                                .finished_at
                                .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                                .unwrap_or_else(|| now.clone()),
                        },
                        // What a kubelet reports of a container it can no longer find
                        // (its node restarted under it): the same reason and message.
                        None => CState::Terminated {
                            exit_code: 137,
                            signal: Some(libc::SIGKILL),
                            reason: "ContainerStatusUnknown".into(),
                            message: "The container could not be located when the pod was terminated".into(),
                            started_at: was_started.unwrap_or_else(|| now.clone()),
                            finished_at: now.clone(),
                        },
                    };
                }
            }
            if let Some(t) = previous.start_time {
                st.start_time = t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            }
            st.failure = Some((
                "NodeAgentRestarted".into(),
                "weir-node-agent restarted while the pod ran; it does not re-attach to processes".into(),
            ));
        }
        self.report().await;
    }

    /// Confirms a graceful deletion, as the kubelet does once the containers are gone.
    async fn finalize_deletion(&self) -> bool {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = self.pod.metadata.name.as_deref().unwrap_or_default();
        for attempt in 0..5 {
            match self.api.delete(name, &dp).await {
                Ok(_) => return true,
                // Already gone, or a different pod by now.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return true,
                Err(e) => {
                    warn!(pod = %pod_key(&self.pod), attempt, "finalizing deletion: {e}");
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
            }
        }
        false
    }

    /// Sends the current status through `pods/status`.
    async fn report(&self) {
        let _guard = self.report_lock.lock().await;
        let pod_ip = self.pod_ip.lock().unwrap().clone();
        let body = self
            .state
            .lock()
            .unwrap()
            .status_patch(&self.ctx.node_ip, pod_ip.as_deref().unwrap_or(&self.ctx.node_ip));
        let name = self.pod.metadata.name.as_deref().unwrap_or_default();
        for attempt in 0..5u32 {
            match self
                .api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => {
                    warn!(pod = %pod_key(&self.pod), attempt, "status update failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => futures::future::pending().await,
    }
}

#[derive(Debug, Clone)]
enum CState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        reason: String,
        message: String,
        started_at: String,
        finished_at: String,
    },
}

#[derive(Debug, Clone)]
struct CStatus {
    name: String,
    image: String,
    container_id: Option<String>,
    state: CState,
}

impl CStatus {
    fn running(&self) -> bool {
        matches!(self.state, CState::Running { .. })
    }

    fn exit_code(&self) -> Option<i32> {
        match self.state {
            CState::Terminated { exit_code, .. } => Some(exit_code),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        let state = match &self.state {
            CState::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            CState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            CState::Terminated {
                exit_code,
                signal,
                reason,
                message,
                started_at,
                finished_at,
            } => {
                let mut t = json!({
                    "exitCode": exit_code, "reason": reason,
                    "startedAt": started_at, "finishedAt": finished_at,
                    "containerID": self.container_id,
                });
                if let Some(s) = signal {
                    t["signal"] = json!(s);
                }
                if !message.is_empty() {
                    t["message"] = json!(message);
                }
                json!({ "terminated": t })
            }
        };
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": format!("weir-node-agent://{}", self.image),
            "ready": self.running(),
            "started": self.running(),
            "restartCount": 0,
            "state": state,
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

struct PodState {
    start_time: String,
    init: Vec<CStatus>,
    main: Vec<CStatus>,
    /// A pod-level failure (reason, message) that overrides the containers' outcome.
    failure: Option<(String, String)>,
    /// Condition type -> (status, lastTransitionTime).
    transitions: HashMap<&'static str, (bool, String)>,
}

impl PodState {
    fn initialized(&self) -> bool {
        self.init.iter().all(|c| c.exit_code() == Some(0))
    }

    /// The pod phase by the kubelet's rules for restartPolicy Never.
    fn phase(&self) -> &'static str {
        if self.failure.is_some()
            || self
                .init
                .iter()
                .any(|c| matches!(c.exit_code(), Some(code) if code != 0))
        {
            return "Failed";
        }
        if !self.initialized() {
            return "Pending";
        }
        if self.main.iter().all(|c| c.exit_code().is_some()) {
            return if self.main.iter().all(|c| c.exit_code() == Some(0)) {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if self.main.iter().any(|c| c.running() || c.exit_code().is_some()) {
            "Running"
        } else {
            "Pending"
        }
    }

    fn condition(
        &mut self,
        type_: &'static str,
        status: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) -> Value {
        let now = time_now();
        let entry = self.transitions.entry(type_).or_insert((status, now.clone()));
        if entry.0 != status {
            *entry = (status, now);
        }
        json!({
            "type": type_,
            "status": if status { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": entry.1,
        })
    }

    fn status_patch(&mut self, node_ip: &str, pod_ip: &str) -> Value {
        let phase = self.phase();
        let done = matches!(phase, "Succeeded" | "Failed");
        let initialized = self.initialized();
        let unready: Vec<String> = self
            .main
            .iter()
            .filter(|c| !c.running())
            .map(|c| c.name.clone())
            .collect();
        let ready = unready.is_empty();
        let (ready_reason, ready_message) = if ready {
            (None, None)
        } else if done {
            (Some("PodCompleted"), None)
        } else {
            (
                Some("ContainersNotReady"),
                Some(format!("containers with unready status: [{}]", unready.join(" "))),
            )
        };
        let uninitialized: Vec<String> = self
            .init
            .iter()
            .filter(|c| c.exit_code() != Some(0))
            .map(|c| c.name.clone())
            .collect();
        let conditions = vec![
            self.condition(
                "Initialized",
                initialized,
                if initialized {
                    None
                } else {
                    Some("ContainersNotInitialized")
                },
                (!initialized)
                    .then(|| format!("containers with incomplete status: [{}]", uninitialized.join(" "))),
            ),
            self.condition("Ready", ready, ready_reason, ready_message.clone()),
            self.condition("ContainersReady", ready, ready_reason, ready_message),
            self.condition("PodScheduled", true, None, None),
        ];
        let (reason, message) = match &self.failure {
            Some((r, m)) => (Some(r.clone()), Some(m.clone())),
            None => (None, None),
        };
        let mut status = json!({
            "phase": phase,
            "reason": reason,
            "message": message,
            "hostIP": node_ip,
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": self.main.iter().map(CStatus::to_json).collect::<Vec<_>>(),
        });
        if !self.init.is_empty() {
            status["initContainerStatuses"] = self.init.iter().map(CStatus::to_json).collect();
        }
        json!({ "status": status })
    }
}
