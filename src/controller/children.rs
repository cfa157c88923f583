//! The TaskRuns of every active run, from a watch cache instead of a list per reconcile,
//! and the Jobs seen complete, so a run can start a task's successors without waiting for
//! the task's own status write.
//!
//! A run's reconcile used to list its TaskRuns fresh from the API server: a round trip on
//! every look and, for a fan-out of thousands of instances, a list of thousands of objects
//! on every change of any one of them. The run controller now reads them from memory:
//!
//! - the TaskRuns still at work come from one watch cache per scope ([`watch`]), which
//!   selects `weir.dev/finished!=true` like every whole-TaskRun watch (so finished
//!   TaskRuns of finished runs take no memory: see [`super::finished`]);
//! - the finished ones of a run come from one fresh list, taken at the run's first look
//!   (or after the watch restarted), and kept up to date by the watch: a TaskRun that
//!   takes the finished mark leaves the watch with a delete that carries its last state.
//!   They are kept while the run is active and forgotten when it ends ([`Children::forget`]).
//!
//! A cache may lag behind the writes the reconcile itself made: a TaskRun it created a
//! moment ago, or a cancel it asked for, may not be in the cache at the next look. Acting on
//! such a view could start a task twice (harmless: names are deterministic, the second
//! create is "already exists") or, worse, count fewer running tasks than there are and start
//! more than `parallelism` allows. So, in the spirit of the "expectations" of Kubernetes'
//! own controllers, every write to a TaskRun goes into the run's memory at once
//! ([`Children::wrote`]): the object the API server answered with, whose resourceVersion
//! says it is newer than what the watch has shown. Of two copies of one TaskRun the run
//! reads the newer, so its view never goes back behind its own writes. The trigger of a
//! run's reconcile is the same watch that fills the cache, applied to the cache first, so
//! a reconcile woken by a TaskRun's change always sees that change.
//!
//! **Jobs.** The run controller also watches the Jobs of runs ([`watch_jobs`]), keeping
//! nothing of them but, for a Job that completed, its TaskRun and attempt
//! ([`Children::job_done`]). A Job completes only when its pod exited 0, so a task whose
//! result is nothing but that (no outputs, assets or artifacts to read back: see
//! [`ends_with_its_job`]) has succeeded: its successors start on that one watch event, in
//! parallel with the TaskRun's own reconcile, which records the same result a moment later.

use super::Result;
use super::instrument::WatchBackoff;
use crate::api::{PipelineRun, TaskPhase, TaskRun, labels};
use crate::metrics::Queue;
use crate::shard::Shard;
use futures::{FutureExt, Stream, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

/// The caches of the runs' TaskRuns (one per scope) and what is known of each active run.
#[derive(Default)]
pub struct Children {
    stores: RwLock<Vec<Store<TaskRun>>>,
    /// By run uid.
    runs: Mutex<HashMap<String, RunChildren>>,
}

/// What is kept of one active run.
#[derive(Default)]
struct RunChildren {
    /// The run, to wake when one of its Jobs completes.
    run: Option<ObjectRef<PipelineRun>>,
    /// Its TaskRuns (stripped) as last listed fresh, with those that since left the watch
    /// finished; `None` until listed, and again after the watch restarted (it may have
    /// missed a TaskRun leaving).
    listed: Option<HashMap<String, TaskRun>>,
    /// By TaskRun name: the newest attempt whose Job was seen complete.
    jobs_done: HashMap<String, u32>,
}

impl Children {
    /// Adds the cache of one scope.
    pub fn add_store(&self, store: Store<TaskRun>) {
        self.stores
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(store);
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunChildren>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a write (create or patch) to one of a run's TaskRuns: `written` is the object
    /// the API server answered with, newer than anything the watch has shown yet.
    pub fn wrote(&self, run_uid: &str, written: &TaskRun) {
        if let Some(listed) = self.runs().get_mut(run_uid).and_then(|e| e.listed.as_mut()) {
            let mut written = written.clone();
            strip(&mut written);
            newest(listed, written);
        }
    }

    /// [`Children::wrote`] for a write to `run`'s TaskRun that may have found it gone.
    pub fn wrote_opt(&self, run: &PipelineRun, written: Option<&TaskRun>) {
        if let (Some(uid), Some(written)) = (run.uid(), written) {
            self.wrote(&uid, written);
        }
    }

    /// The run's TaskRuns from memory, or `None` when they must be listed fresh: a cache
    /// not synced yet, or a run not listed yet.
    pub fn cached(&self, run_uid: &str) -> Option<Vec<TaskRun>> {
        let stores = self.stores.read().unwrap_or_else(PoisonError::into_inner);
        if stores.is_empty() || !stores.iter().all(is_ready) {
            return None;
        }
        let mut children = self.runs().get(run_uid)?.listed.clone()?;
        let of_run =
            |tr: &TaskRun| tr.labels().get(labels::PIPELINE_RUN_UID).map(String::as_str) == Some(run_uid);
        for tr in stores.iter().flat_map(|s| s.state_filter(of_run)) {
            newest(&mut children, TaskRun::clone(&tr));
        }
        Some(children.into_values().collect())
    }

    /// Forgets a run (it finished or went away).
    pub fn forget(&self, run_uid: &str) {
        self.runs().remove(run_uid);
    }

    /// The run's TaskRuns: from memory when it can be trusted, else from `list`, whose
    /// answer is then kept for the next looks.
    pub async fn of_run<F, Fut>(&self, run: &PipelineRun, list: F) -> Result<Vec<TaskRun>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<TaskRun>>>,
    {
        let uid = run.uid().unwrap_or_default();
        if let Some(children) = self.cached(&uid) {
            return Ok(children);
        }
        let listed = list().await?;
        let mut runs = self.runs();
        let entry = runs.entry(uid).or_default();
        entry.run = Some(ObjectRef::from_obj(run));
        entry.listed = Some(
            listed
                .iter()
                .map(|tr| {
                    let mut tr = tr.clone();
                    strip(&mut tr);
                    (tr.name_any(), tr)
                })
                .collect(),
        );
        Ok(listed)
    }

    /// Takes in a watch event before the cache does: a TaskRun that left the watch
    /// finished is kept with its run; one deleted is dropped; a restart of the watch sends
    /// every run back to a fresh list.
    ///
    /// The API server sends a TaskRun that took the finished mark as a delete carrying its
    /// state from *before* the mark (it no longer matches the selector): that state has
    /// ended, since the mark is written only on an ended TaskRun, under the
    /// resourceVersion that showed it ended. A TaskRun deleted while at work has not.
    fn saw(&self, event: &watcher::Event<TaskRun>) {
        match event {
            watcher::Event::Init => {
                for entry in self.runs().values_mut() {
                    entry.listed = None;
                }
            }
            watcher::Event::Delete(tr) => {
                let Some(uid) = tr.labels().get(labels::PIPELINE_RUN_UID) else {
                    return;
                };
                let mut runs = self.runs();
                let Some(listed) = runs.get_mut(uid).and_then(|e| e.listed.as_mut()) else {
                    return;
                };
                if has_ended(tr) {
                    let mut tr = tr.clone();
                    strip(&mut tr);
                    newest(listed, tr);
                } else {
                    listed.remove(&tr.name_any());
                }
            }
            _ => {}
        }
    }

    /// Takes in a Job: one complete is recorded with its run (if the run is active and
    /// known), which is returned to be woken.
    pub fn job_done(&self, job: &Job) -> Option<ObjectRef<PipelineRun>> {
        if !super::job::job_complete(job) {
            return None;
        }
        let run_uid = job.labels().get(labels::PIPELINE_RUN_UID)?;
        let attempt: u32 = job.labels().get(labels::ATTEMPT)?.parse().ok()?;
        let task_run = job
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "TaskRun")?
            .name
            .clone();
        let mut runs = self.runs();
        let entry = runs.get_mut(run_uid)?;
        let newest = entry.jobs_done.entry(task_run).or_default();
        if *newest >= attempt {
            return None;
        }
        *newest = attempt;
        entry.run.clone()
    }

    /// The newest attempt of a run's TaskRun whose Job was seen complete.
    pub fn job_done_attempt(&self, run_uid: &str, task_run: &str) -> Option<u32> {
        self.runs().get(run_uid)?.jobs_done.get(task_run).copied()
    }
}

/// Whether `tr` has succeeded once the Job of its attempt `done` completed, before its own
/// reconcile says so: a task whose result is its pod's exit code alone (no outputs, assets
/// or artifacts to read back), on its newest attempt, not asked to stop, never rerun (a
/// rerun's attempts start a new round), and not already ended.
pub fn ends_with_its_job(tr: &TaskRun, done: u32) -> bool {
    let spec = &tr.spec;
    let status = tr.status.as_ref();
    let newest = status.and_then(|s| s.attempt_count).unwrap_or(1);
    let phase = status.and_then(|s| s.phase).unwrap_or(TaskPhase::Pending);
    spec.uses_pod()
        && spec.outputs.is_empty()
        && spec.produces.is_empty()
        && spec.artifacts.is_empty()
        && !spec.stop_requested()
        && spec.rerun.is_none()
        && !tr.annotations().contains_key(crate::api::annotations::RERUN)
        && !phase.is_terminal()
        && done >= newest
}

/// Whether a TaskRun's state is an end: ended, or marked finished.
fn has_ended(tr: &TaskRun) -> bool {
    super::finished::is_marked(tr)
        || tr
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(TaskPhase::is_terminal)
}

/// Puts `tr` in `children` unless a newer version of it is there.
fn newest(children: &mut HashMap<String, TaskRun>, tr: TaskRun) {
    if !children.get(&tr.name_any()).is_some_and(|have| newer(have, &tr)) {
        children.insert(tr.name_any(), tr);
    }
}

/// The watch behind a scope's cache: the TaskRuns at work that belong to runs, stripped
/// ([`strip`]), stored in a new cache added to `children`, then handed on to wake their runs
/// (counted in the run controller's `queue`). Each change is in the cache before it wakes
/// the run.
pub fn watch(
    api: Api<TaskRun>,
    children: &std::sync::Arc<Children>,
    queue: &Queue,
    shard: Shard,
) -> impl Stream<Item = Result<TaskRun, watcher::Error>> + Send + 'static {
    let (reader, writer) = reflector::store();
    children.add_store(reader);
    let queue = queue.clone();
    let seen = children.clone();
    let config = watcher::Config::default().labels(&format!(
        "{},{}",
        labels::PIPELINE_RUN_UID,
        super::finished::UNFINISHED
    ));
    shard
        .owned_events(watcher(api, config))
        .backoff(WatchBackoff::default())
        .inspect_ok(move |event| seen.saw(event))
        .modify(strip)
        .reflect(writer)
        .touched_objects()
        .inspect_ok(move |tr: &TaskRun| {
            if let Some(run) = tr.owner_references().iter().find(|o| o.controller == Some(true)) {
                queue.add(tr.namespace().as_deref(), &run.name);
            }
        })
}

/// The Jobs of runs, which wake a run when one completes (see [`Children::job_done`]).
pub fn watch_jobs(
    api: Api<Job>,
    shard: Shard,
) -> impl Stream<Item = Result<Job, watcher::Error>> + Send + 'static {
    let config = watcher::Config::default().labels(labels::PIPELINE_RUN_UID);
    shard
        .owned_events(watcher(api, config))
        .backoff(WatchBackoff::default())
        .applied_objects()
}

/// Whether the cache holds its first full list, now.
fn is_ready(store: &Store<TaskRun>) -> bool {
    super::synced(store.clone()).now_or_never() == Some(true)
}

/// Whether `have` is a strictly later version than `other`. Versions are compared as
/// numbers when both are (the API server's are, in practice: etcd's revision); otherwise
/// neither counts as later.
fn newer(have: &TaskRun, other: &TaskRun) -> bool {
    let number = |tr: &TaskRun| tr.resource_version().and_then(|v| v.parse::<u64>().ok());
    matches!((number(have), number(other)), (Some(h), Some(o)) if h > o)
}

/// What the run's reconcile never reads of a TaskRun: how its pod is made. Left out of
/// memory, which then holds a small part of each TaskRun.
pub fn strip(tr: &mut TaskRun) {
    tr.metadata.managed_fields = None;
    let spec = &mut tr.spec;
    spec.image = String::new();
    spec.command = Vec::new();
    spec.args = Vec::new();
    spec.env = Vec::new();
    spec.working_dir = None;
    spec.resources = None;
    spec.security_context = None;
    spec.pod_template = None;
    spec.inputs = Vec::new();
    spec.artifact_store = None;
    if let Some(status) = tr.status.as_mut() {
        status.attempts = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TaskRunStatus;
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::Event;
    use std::collections::BTreeMap;

    fn task_run(name: &str, run_uid: &str, version: &str) -> TaskRun {
        TaskRun {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                labels: Some(BTreeMap::from([(
                    labels::PIPELINE_RUN_UID.into(),
                    run_uid.into(),
                )])),
                ..Default::default()
            },
            spec: Default::default(),
            status: None,
        }
    }

    fn finished(mut tr: TaskRun) -> TaskRun {
        tr.labels_mut().insert(labels::FINISHED.into(), "true".into());
        tr.status = Some(TaskRunStatus {
            phase: Some(TaskPhase::Succeeded),
            ..Default::default()
        });
        tr
    }

    fn run(uid: &str) -> PipelineRun {
        let mut run = PipelineRun::new("run", Default::default());
        run.metadata.namespace = Some("ns".into());
        run.metadata.uid = Some(uid.into());
        run
    }

    fn children_with(objects: &[TaskRun]) -> (Children, reflector::store::Writer<TaskRun>) {
        let (reader, mut writer) = reflector::store::<TaskRun>();
        writer.apply_watcher_event(&Event::Init);
        for o in objects {
            writer.apply_watcher_event(&Event::InitApply(o.clone()));
        }
        writer.apply_watcher_event(&Event::InitDone);
        let children = Children::default();
        children.add_store(reader);
        (children, writer)
    }

    /// Lists `objects` for the run as a fresh list would.
    fn list(children: &Children, uid: &str, objects: &[TaskRun]) {
        let objects = objects.to_vec();
        let expected = objects.len();
        let listed = children
            .of_run(&run(uid), || async move { Ok(objects) })
            .now_or_never()
            .expect("no waiting")
            .expect("listed");
        assert_eq!(listed.len(), expected, "the list is handed on whole");
    }

    fn names(children: Option<Vec<TaskRun>>) -> Option<Vec<String>> {
        children.map(|c| {
            let mut names: Vec<String> = c.iter().map(|t| t.name_any()).collect();
            names.sort();
            names
        })
    }

    #[test]
    fn nothing_is_read_from_memory_before_the_cache_synced_and_the_run_was_listed() {
        let (reader, _writer) = reflector::store::<TaskRun>();
        let children = Children::default();
        assert!(children.cached("run").is_none());
        children.add_store(reader);
        assert!(children.cached("run").is_none());
        let (children, _w) = children_with(&[task_run("a", "run", "10")]);
        assert!(children.cached("run").is_none(), "not listed yet");
        list(&children, "run", &[task_run("a", "run", "10")]);
        assert_eq!(names(children.cached("run")), Some(vec!["a".into()]));
    }

    #[test]
    fn a_run_reads_its_finished_task_runs_from_its_list_and_the_rest_from_the_cache() {
        let (children, mut writer) =
            children_with(&[task_run("b", "run-1", "11"), task_run("c", "run-2", "12")]);
        list(
            &children,
            "run-1",
            &[
                finished(task_run("a", "run-1", "10")),
                task_run("b", "run-1", "9"),
            ],
        );
        let got = children.cached("run-1").unwrap();
        assert_eq!(names(Some(got.clone())), Some(vec!["a".into(), "b".into()]));
        // The newer of the two copies of b (the cache's).
        let b = got.iter().find(|t| t.name_any() == "b").unwrap();
        assert_eq!(b.resource_version().as_deref(), Some("11"));
        // b finishes: its last state comes with the delete from the watch (the state
        // before the mark, which has ended but is not marked).
        let mut done = finished(task_run("b", "run-1", "14"));
        done.labels_mut().remove(labels::FINISHED);
        children.saw(&Event::Delete(done.clone()));
        writer.apply_watcher_event(&Event::Delete(done));
        let got = children.cached("run-1").unwrap();
        let b = got.iter().find(|t| t.name_any() == "b").unwrap();
        assert_eq!(
            b.status.as_ref().and_then(|s| s.phase),
            Some(TaskPhase::Succeeded)
        );
        // A TaskRun deleted (not finished) is gone.
        children.saw(&Event::Delete(task_run("a", "run-1", "15")));
        assert_eq!(names(children.cached("run-1")), Some(vec!["b".into()]));
    }

    #[test]
    fn a_restarted_watch_sends_every_run_back_to_a_fresh_list() {
        let (children, _w) = children_with(&[]);
        list(&children, "run-1", &[task_run("a", "run-1", "10")]);
        assert!(children.cached("run-1").is_some());
        children.saw(&Event::Init);
        assert!(children.cached("run-1").is_none());
    }

    #[test]
    fn a_run_sees_its_own_writes_before_the_watch_does() {
        let (children, mut writer) = children_with(&[task_run("a", "run-1", "10")]);
        list(&children, "run-1", &[task_run("a", "run-1", "10")]);
        // Created "b" (version 15) and cancelled "a" (version 16): neither is cached yet.
        children.wrote("run-1", &task_run("b", "run-1", "15"));
        let mut cancel = task_run("a", "run-1", "16");
        cancel.spec.cancelled = true;
        children.wrote("run-1", &cancel);
        let view = |children: &Children| {
            let mut got: Vec<(String, Option<String>, bool)> = children
                .cached("run-1")
                .unwrap()
                .iter()
                .map(|t| (t.name_any(), t.resource_version(), t.spec.cancelled))
                .collect();
            got.sort();
            got
        };
        assert_eq!(
            view(&children),
            vec![
                ("a".into(), Some("16".into()), true),
                ("b".into(), Some("15".into()), false)
            ]
        );
        // The watch catches up, then goes further: the newer copy is read each time.
        writer.apply_watcher_event(&Event::Apply(task_run("a", "run-1", "12")));
        assert_eq!(view(&children)[0], ("a".into(), Some("16".into()), true));
        writer.apply_watcher_event(&Event::Apply(task_run("a", "run-1", "18")));
        assert_eq!(view(&children)[0], ("a".into(), Some("18".into()), false));
        // A run not listed yet keeps nothing of a write: its first look lists fresh.
        children.wrote("run-2", &task_run("c", "run-2", "20"));
        assert!(children.cached("run-2").is_none());
    }

    #[test]
    fn a_fresh_list_replaces_what_was_kept() {
        let (children, _w) = children_with(&[]);
        list(
            &children,
            "run-1",
            &[task_run("a", "run-1", "10"), task_run("b", "run-1", "11")],
        );
        children.saw(&Event::Init);
        list(&children, "run-1", &[task_run("b", "run-1", "15")]);
        assert_eq!(names(children.cached("run-1")), Some(vec!["b".into()]));
    }

    #[test]
    fn only_a_higher_numbered_version_is_newer() {
        let at = |v: &str| task_run("a", "r", v);
        assert!(newer(&at("20"), &at("9")), "compared as numbers");
        assert!(!newer(&at("9"), &at("20")));
        assert!(!newer(&at("9"), &at("9")), "the same version");
        assert!(!newer(&at("x8"), &at("x7")), "not numbers: the copy given wins");
        let mut children = HashMap::new();
        newest(&mut children, at("20"));
        newest(&mut children, at("9"));
        assert_eq!(
            children["a"].resource_version().as_deref(),
            Some("20"),
            "kept the newer"
        );
        newest(&mut children, at("x1"));
        assert_eq!(
            children["a"].resource_version().as_deref(),
            Some("x1"),
            "not comparable: replaced"
        );
    }

    fn job(task_run: &str, run_uid: &str, attempt: u32, complete: bool) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("{task_run}-{attempt}"), "namespace": "ns",
                "labels": {labels::PIPELINE_RUN_UID: run_uid, labels::ATTEMPT: attempt.to_string()},
                "ownerReferences": [{"apiVersion": "weir.dev/v1alpha1", "kind": "TaskRun",
                    "name": task_run, "uid": "u", "controller": true}],
            },
            "status": {"conditions": [{"type": if complete { "Complete" } else { "Failed" }, "status": "True"}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_complete_job_of_a_known_run_wakes_it_once() {
        let (children, _w) = children_with(&[]);
        assert_eq!(
            children.job_done(&job("a", "run-1", 1, true)),
            None,
            "run not known yet"
        );
        list(&children, "run-1", &[]);
        let woken = children
            .job_done(&job("a", "run-1", 1, true))
            .expect("wakes the run");
        assert_eq!(
            (woken.name.as_str(), woken.namespace.as_deref()),
            ("run", Some("ns"))
        );
        assert_eq!(
            children.job_done(&job("a", "run-1", 1, true)),
            None,
            "seen already"
        );
        assert_eq!(children.job_done(&job("b", "run-1", 1, false)), None, "failed");
        assert_eq!(children.job_done_attempt("run-1", "a"), Some(1));
        assert_eq!(children.job_done_attempt("run-1", "b"), None);
        children.forget("run-1");
        assert_eq!(children.job_done_attempt("run-1", "a"), None);
    }

    #[test]
    fn only_a_task_whose_result_is_its_exit_code_ends_with_its_job() {
        let plain = task_run("a", "r", "1");
        assert!(ends_with_its_job(&plain, 1));
        let mut retried = plain.clone();
        retried.status = Some(TaskRunStatus {
            attempt_count: Some(2),
            phase: Some(TaskPhase::Running),
            ..Default::default()
        });
        assert!(!ends_with_its_job(&retried, 1), "an older attempt's Job");
        assert!(ends_with_its_job(&retried, 2));
        let mut with_outputs = plain.clone();
        with_outputs.spec.outputs = vec!["rows".into()];
        assert!(!ends_with_its_job(&with_outputs, 1));
        let mut cancelled = plain.clone();
        cancelled.spec.cancelled = true;
        assert!(!ends_with_its_job(&cancelled, 1));
        let mut rerun = plain.clone();
        rerun.spec.rerun = Some("r1".into());
        assert!(!ends_with_its_job(&rerun, 1));
        assert!(!ends_with_its_job(&finished(plain), 1), "already ended");
    }

    #[test]
    fn stripping_keeps_what_the_run_reads() {
        let mut tr = task_run("a", "r", "1");
        tr.spec.task_name = "load".into();
        tr.spec.instance = Some(3);
        tr.spec.cancelled = true;
        tr.spec.image = "etl:1".into();
        tr.spec.command = vec!["run".into()];
        tr.spec.outputs = vec!["rows".into()];
        strip(&mut tr);
        assert_eq!(tr.spec.task_name, "load");
        assert_eq!(tr.spec.instance, Some(3));
        assert!(tr.spec.cancelled);
        assert_eq!(tr.spec.outputs, vec!["rows".to_string()]);
        assert!(tr.spec.image.is_empty() && tr.spec.command.is_empty());
    }
}
