//! What the chaos scenarios and the soak share: their own test environment, the fault-free
//! baseline, the checks made on every run, and the summary they print.

use crate::common::{JobEvent, JobRecorder, Operator, install_crds};
use crate::workload::{WORKLOAD, Workload, workload};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use weir::api::{PipelineRun, RunPhase, TaskPhase, TaskRun, labels};
use weir::engine::names;
use weir_testenv::{Component, TestEnv, TestNamespace};

/// Where the chaos environment lives: `WEIR_CHAOS_ENV_DIR`, default `~/.cache/weir/chaos-env`
/// (not under the shared `~/.cache/weir/env`, whose down.sh would otherwise match it).
pub fn env_dir() -> PathBuf {
    std::env::var_os("WEIR_CHAOS_ENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/weir/chaos-env")
        })
}

/// `WEIR_CHAOS_PORT_OFFSET`, default 1000: etcd on 24790/24800, the apiserver on 17443, ...
pub fn port_offset() -> u16 {
    std::env::var("WEIR_CHAOS_PORT_OFFSET")
        .ok()
        .map(|v| v.parse().expect("WEIR_CHAOS_PORT_OFFSET is a number"))
        .unwrap_or(1000)
}

static ENV: OnceLock<TestEnv> = OnceLock::new();

/// The chaos suite's own control plane, started on first use: killing its apiserver or etcd
/// disturbs no other test and nobody else's environment.
pub async fn chaos_env() -> &'static TestEnv {
    if let Some(env) = ENV.get() {
        return env;
    }
    tokio::task::spawn_blocking(|| ENV.get_or_init(|| TestEnv::start_own(&env_dir(), port_offset())))
        .await
        .expect("starting the chaos environment panicked")
}

/// A fresh namespace of the chaos environment, with Weir's CRDs installed.
pub async fn namespace(prefix: &str) -> TestNamespace {
    let ns = chaos_env().await.namespace(prefix).await;
    install_crds(&ns).await;
    ns
}

/// Restarts one component of the chaos environment (SIGKILL, `down` of downtime).
pub async fn crash_and_restart(component: Component, down: Duration) {
    let env = chaos_env().await;
    let started = Instant::now();
    tokio::task::spawn_blocking(move || env.restart_component(component, "KILL", down))
        .await
        .expect("restart panicked")
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "  fault at {}: {} SIGKILLed, serving again {:.1}s later",
        jiff::Timestamp::now(),
        component.name(),
        started.elapsed().as_secs_f64()
    );
}

/// Pseudo-random numbers for fault timing (xorshift). The seed is `WEIR_CHAOS_SEED` or taken
/// from the clock, and printed, so that a failing sequence can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(what: &str) -> Rng {
        let seed = std::env::var("WEIR_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("  {what}: WEIR_CHAOS_SEED={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration between `min` and `max`.
    pub fn between(&mut self, min: Duration, max: Duration) -> Duration {
        let span = (max - min).as_millis() as u64;
        min + Duration::from_millis(self.next() % (span + 1))
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// What must come out of a run the same way with and without faults.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub phase: Option<RunPhase>,
    pub reason: String,
    /// Each task's phase in the run's summary.
    pub tasks: BTreeMap<String, TaskPhase>,
    /// Each TaskRun (by task and fan-out instance): its phase and outputs.
    pub task_runs: BTreeMap<String, (Option<TaskPhase>, BTreeMap<String, String>)>,
}

fn task_key(tr: &TaskRun) -> String {
    match tr.labels().get(labels::INSTANCE) {
        Some(i) => format!("{}[{i}]", tr.spec.task_name),
        None => tr.spec.task_name.clone(),
    }
}

/// A run's outcome and its TaskRuns, read fresh from the API server.
pub async fn observe(ns: &TestNamespace, run: &str) -> Result<(Outcome, Vec<TaskRun>), String> {
    let run: PipelineRun = ns.api().get(run).await.map_err(|e| e.to_string())?;
    let task_runs: Api<TaskRun> = ns.api();
    let lp = ListParams::default().labels(&format!("{}={}", labels::PIPELINE_RUN, run.name_any()));
    let task_runs = task_runs.list(&lp).await.map_err(|e| e.to_string())?.items;
    let status = run.status.clone().unwrap_or_default();
    let outcome = Outcome {
        phase: status.phase,
        reason: weir::api::condition::find(&status.conditions, "Succeeded")
            .map(|c| c.reason.clone())
            .unwrap_or_default(),
        tasks: status.tasks.iter().map(|t| (t.name.clone(), t.phase)).collect(),
        task_runs: task_runs
            .iter()
            .map(|tr| {
                let st = tr.status.clone().unwrap_or_default();
                (task_key(tr), (st.phase, st.outputs))
            })
            .collect(),
    };
    Ok((outcome, task_runs))
}

/// What differs between an outcome and the expected one, one line each (long output values
/// shortened).
fn differences(got: &Outcome, want: &Outcome) -> String {
    fn short(v: impl std::fmt::Debug) -> String {
        let text = format!("{v:?}");
        match text.char_indices().nth(160) {
            Some((i, _)) => format!("{}...", &text[..i]),
            None => text,
        }
    }
    let mut out = format!(
        "  run: got {:?} {}, want {:?} {}\n",
        got.phase, got.reason, want.phase, want.reason
    );
    let tasks: std::collections::BTreeSet<&String> = got.tasks.keys().chain(want.tasks.keys()).collect();
    for t in tasks {
        let (g, w) = (got.tasks.get(t), want.tasks.get(t));
        if g != w {
            let _ = writeln!(out, "  task {t}: got {g:?}, want {w:?}");
        }
    }
    let keys: std::collections::BTreeSet<&String> =
        got.task_runs.keys().chain(want.task_runs.keys()).collect();
    for k in keys {
        let (g, w) = (got.task_runs.get(k), want.task_runs.get(k));
        if g != w {
            let _ = writeln!(out, "  TaskRun of {k}: got {}, want {}", short(g), short(w));
        }
    }
    out
}

/// Each TaskRun with its attempts, one line each: what a failure report needs.
pub fn describe_task_runs(task_runs: &[TaskRun]) -> String {
    let mut out = String::new();
    let mut sorted: Vec<&TaskRun> = task_runs.iter().collect();
    sorted.sort_by_key(|tr| tr.name_any());
    for tr in sorted {
        let st = tr.status.clone().unwrap_or_default();
        let _ = writeln!(out, "    TaskRun {} phase={:?}", tr.name_any(), st.phase);
        for a in &st.attempts {
            let _ = writeln!(
                out,
                "      attempt {} job={} {:?} reason={} exit={:?} message={:?}",
                a.number,
                a.job_name,
                a.phase,
                a.reason.map(|r| r.as_str()).unwrap_or("-"),
                a.exit_code,
                a.message.as_deref().unwrap_or("")
            );
        }
    }
    out
}

/// The counts printed after a scenario or a soak.
#[derive(Debug, Default)]
pub struct Tally {
    pub runs: usize,
    pub faults: usize,
    pub finished: usize,
    pub same_outcome: usize,
    pub duplicates: usize,
    pub attempts_lost: usize,
    /// What went wrong, one entry per problem, with the evidence.
    pub problems: Vec<String>,
}

impl Tally {
    pub fn line(&self) -> String {
        format!(
            "runs={} faults={} finished={} same-outcome={} duplicates={} attempts-lost={}",
            self.runs, self.faults, self.finished, self.same_outcome, self.duplicates, self.attempts_lost
        )
    }

    /// Prints the summary (and appends it to `$WEIR_CHAOS_SUMMARY`, which hack/test.sh adds
    /// up), then fails the test if anything went wrong.
    pub fn report(&self, scenario: &str, took: Duration) {
        let line = self.line();
        eprintln!("chaos summary [{scenario}]: {line} ({:.0}s)", took.as_secs_f64());
        if let Some(path) = std::env::var_os("WEIR_CHAOS_SUMMARY") {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("opening WEIR_CHAOS_SUMMARY");
            writeln!(f, "{scenario} {line} seconds={:.0}", took.as_secs_f64()).expect("writing the summary");
        }
        assert!(
            self.problems.is_empty() && self.finished == self.runs && self.same_outcome == self.runs,
            "[{scenario}] {line}; {} problem(s):\n{}",
            self.problems.len(),
            self.problems.join("\n")
        );
    }
}

/// The Jobs the recorder saw being created: name → (attempt label, how many distinct Jobs).
pub fn created_jobs(events: &[JobEvent]) -> BTreeMap<String, (u32, usize)> {
    let mut jobs: BTreeMap<String, (u32, usize)> = BTreeMap::new();
    for e in events {
        if let JobEvent::Created { job, attempt, .. } = e {
            jobs.entry(job.clone()).or_insert((*attempt, 0)).1 += 1;
        }
    }
    jobs
}

/// Checks one run: finished, its outcome the fault-free one, every Job of its TaskRuns in
/// their attempt history (no gap in it), no attempt with two Jobs. `jobs` is
/// [`created_jobs`]. Adds to `tally` and returns the names of the Jobs that belong to the run.
pub async fn check_run(
    ns: &TestNamespace,
    run: &str,
    workload: &Workload,
    jobs: &BTreeMap<String, (u32, usize)>,
    baseline: &BTreeMap<&'static str, Outcome>,
    tally: &mut Tally,
) -> HashSet<String> {
    let (outcome, task_runs) = match observe(ns, run).await {
        Ok(o) => o,
        Err(e) => {
            tally.problems.push(format!("run {run}: cannot be read: {e}"));
            return HashSet::new();
        }
    };
    if outcome.phase.is_some_and(RunPhase::is_terminal) {
        tally.finished += 1;
    } else {
        tally.problems.push(format!(
            "run {run} ({}) did not finish: phase {:?}\n{}",
            workload.name,
            outcome.phase,
            describe_task_runs(&task_runs)
        ));
    }
    let expected = &baseline[workload.name];
    if &outcome == expected {
        tally.same_outcome += 1;
    } else if outcome.phase.is_some_and(RunPhase::is_terminal) {
        tally.problems.push(format!(
            "run {run} ({}) ended otherwise than without faults:\n{}{}",
            workload.name,
            differences(&outcome, expected),
            describe_task_runs(&task_runs)
        ));
    }

    let mut mine = HashSet::new();
    for tr in &task_runs {
        let st = tr.status.clone().unwrap_or_default();
        let history: HashMap<u32, &str> = st
            .attempts
            .iter()
            .map(|a| (a.number, a.job_name.as_str()))
            .collect();
        let numbers: Vec<u32> = st.attempts.iter().map(|a| a.number).collect();
        let contiguous: Vec<u32> = (1..=numbers.len() as u32).collect();
        if numbers != contiguous || st.attempt_count.unwrap_or(0) as usize != numbers.len() {
            tally.attempts_lost += contiguous.iter().filter(|n| !numbers.contains(n)).count().max(1);
            tally.problems.push(format!(
                "TaskRun {}: attempt numbers {numbers:?} with attemptCount {:?}, not 1..=n",
                tr.name_any(),
                st.attempt_count
            ));
        }
        // Jobs are named `<taskrun>-<attempt>`; a Job a few attempts past the history would
        // still be found by count_orphans.
        let tried = numbers.iter().copied().max().unwrap_or(0) + 3;
        for attempt in 1..=tried {
            let name = names::job_name(&tr.name_any(), attempt);
            let Some((job, (_, count))) = jobs.get_key_value(&name) else {
                continue;
            };
            mine.insert(job.clone());
            if *count > 1 {
                tally.duplicates += count - 1;
                tally.problems.push(format!(
                    "attempt {attempt} of TaskRun {} had {count} Jobs named {job}",
                    tr.name_any()
                ));
            }
            if history.get(&attempt) != Some(&job.as_str()) {
                tally.attempts_lost += 1;
                tally.problems.push(format!(
                    "Job {job} (attempt {attempt}) ran but TaskRun {} does not list it:\n{}",
                    tr.name_any(),
                    describe_task_runs(std::slice::from_ref(tr))
                ));
            }
        }
    }
    mine
}

/// Jobs created that belong to none of the runs checked: attempts no history has.
pub fn count_orphans(jobs: &BTreeMap<String, (u32, usize)>, attributed: &HashSet<String>, tally: &mut Tally) {
    for (job, (attempt, _)) in jobs {
        if !attributed.contains(job) {
            tally.attempts_lost += 1;
            tally.problems.push(format!(
                "Job {job} (attempt {attempt}) belongs to no TaskRun's history"
            ));
        }
    }
}

/// Phase of a run, `None` while it cannot be read (the API server may be down).
async fn run_phase(ns: &TestNamespace, run: &str) -> Option<RunPhase> {
    let api: Api<PipelineRun> = ns.api();
    api.get(run).await.ok()?.status?.phase
}

static BASELINE: tokio::sync::OnceCell<BTreeMap<&'static str, Outcome>> = tokio::sync::OnceCell::const_new();

/// What each workload pipeline gets without faults, measured once per test process on the
/// chaos environment (a run of each, one operator, nothing broken). Also checks that this
/// is what the pipelines were designed to do.
pub async fn baseline() -> &'static BTreeMap<&'static str, Outcome> {
    BASELINE
        .get_or_init(|| async {
            let started = Instant::now();
            let mut scenario = Scenario::new("baseline").await;
            let _op = Operator::start(&scenario.ns);
            scenario.submit(1);
            scenario.wait_finished(Duration::from_secs(180)).await;
            let mut outcomes = BTreeMap::new();
            for (run, w) in &scenario.runs {
                let (outcome, task_runs) = observe(&scenario.ns, run).await.expect("reading a baseline run");
                assert_eq!(
                    outcome.phase,
                    Some(w.designed),
                    "without faults, {} should end {:?}:\n{outcome:?}\n{}",
                    w.name,
                    w.designed,
                    describe_task_runs(&task_runs)
                );
                outcomes.insert(w.name, outcome);
            }
            // The same checks as under faults, against itself.
            let mut tally = Tally {
                runs: scenario.runs.len(),
                ..Tally::default()
            };
            let jobs = created_jobs(&scenario.jobs.events());
            let mut attributed = HashSet::new();
            for (run, w) in &scenario.runs {
                attributed.extend(check_run(&scenario.ns, run, w, &jobs, &outcomes, &mut tally).await);
            }
            count_orphans(&jobs, &attributed, &mut tally);
            tally.report("baseline", started.elapsed());
            outcomes
        })
        .await
}

/// One scenario: a namespace, a Job recorder, the runs submitted and the faults injected.
pub struct Scenario {
    pub name: &'static str,
    pub ns: TestNamespace,
    pub jobs: JobRecorder,
    pub runs: Vec<(String, &'static Workload)>,
    pub faults: usize,
    started: Instant,
}

impl Scenario {
    pub async fn new(name: &'static str) -> Scenario {
        eprintln!("chaos scenario [{name}]");
        let ns = namespace(&format!("chaos-{name}")).await;
        let jobs = JobRecorder::start(&ns).await;
        Scenario {
            name,
            ns,
            jobs,
            runs: Vec::new(),
            faults: 0,
            started: Instant::now(),
        }
    }

    /// Submits `copies` runs of every workload pipeline.
    pub fn submit(&mut self, copies: usize) {
        let mut yaml = String::new();
        for copy in 0..copies {
            for w in WORKLOAD {
                let run = format!("{}-{copy}", w.name);
                yaml.push_str("---\n");
                yaml.push_str(&w.run_manifest(&run));
                self.runs.push((run, workload(w.name)));
            }
        }
        self.ns.apply(&yaml);
    }

    pub fn jobs_created(&self) -> usize {
        self.jobs.created().len()
    }

    /// Waits until at least `n` Jobs were created: the runs are under way.
    pub async fn wait_jobs(&self, n: usize) {
        weir_testenv::wait_for(&format!("{n} Jobs"), Duration::from_secs(120), || async {
            let seen = self.jobs_created();
            if seen >= n {
                Ok(())
            } else {
                Err(format!("{seen} so far"))
            }
        })
        .await
    }

    /// Waits until at least `n` Jobs were created (true) or every run finished (false).
    pub async fn wait_progress(&self, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if self.jobs_created() >= n {
                return true;
            }
            if self.all_finished().await {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "[{}] neither {n} Jobs nor every run finished after 120s",
            self.name
        );
    }

    /// True once every run is in a final phase.
    pub async fn all_finished(&self) -> bool {
        for (run, _) in &self.runs {
            if !run_phase(&self.ns, run).await.is_some_and(RunPhase::is_terminal) {
                return false;
            }
        }
        true
    }

    /// Waits (without failing) up to `timeout` for every run to finish.
    pub async fn wait_finished(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !self.all_finished().await {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits for the runs to finish, checks every one of them against the baseline, prints
    /// the summary and fails the test on any problem.
    pub async fn finish(self, baseline: &BTreeMap<&'static str, Outcome>, timeout: Duration) {
        self.wait_finished(timeout).await;
        // Let the recorder catch up with the last Job events.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut tally = Tally {
            runs: self.runs.len(),
            faults: self.faults,
            ..Tally::default()
        };
        let jobs = created_jobs(&self.jobs.events());
        let mut attributed = HashSet::new();
        for (run, w) in &self.runs {
            attributed.extend(check_run(&self.ns, run, w, &jobs, baseline, &mut tally).await);
        }
        count_orphans(&jobs, &attributed, &mut tally);
        tally.report(self.name, self.started.elapsed());
    }
}
