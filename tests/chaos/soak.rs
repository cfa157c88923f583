//! The soak: the workload pipelines on a schedule for a long time (`WEIR_SOAK_MINUTES`,
//! default 2), two operator replicas, and a random fault every 20-60 s. Not in CI; run it
//! with `hack/soak.sh --minutes 60` (see docs/reliability.md).

use crate::common::{JobRecorder, Operator};
use crate::harness::{
    Outcome, Rng, Tally, baseline, check_run, count_orphans, crash_and_restart, created_jobs, namespace,
};
use crate::workload::{WORKLOAD, workload};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};
use weir::api::{Pipeline, PipelineRun, RunPhase, labels};
use weir_testenv::{Component, TestNamespace};

/// Every workload pipeline runs at each :00 and :30.
const CRON: &str = "*/30 * * * * *";
const INTERVAL: i64 = 30;
const LEASE: &str = "weir-operator";
const REPLICAS: [&str; 2] = ["replica-a", "replica-b"];

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillLeader,
    Restart(Component),
}

const FAULTS: &[Fault] = &[
    Fault::KillLeader,
    Fault::Restart(Component::KubeApiserver),
    Fault::Restart(Component::Etcd),
    Fault::Restart(Component::NodeAgent),
    Fault::Restart(Component::KubeControllerManager),
    Fault::Restart(Component::KubeScheduler),
];

struct Soak {
    ns: TestNamespace,
    jobs: JobRecorder,
    replicas: [Operator; 2],
    baseline: &'static BTreeMap<&'static str, Outcome>,
    tally: Tally,
    /// Runs checked once finished, and the Jobs that belonged to them.
    checked: HashSet<String>,
    attributed: HashSet<String>,
    /// Logical dates of every scheduled run seen, by pipeline.
    intervals: BTreeMap<String, BTreeSet<i64>>,
    faults: BTreeMap<String, usize>,
}

impl Soak {
    async fn inject(&mut self, fault: Fault, rng: &mut Rng) {
        match fault {
            Fault::KillLeader => {
                let leases: Api<Lease> = self.ns.api();
                let holder = leases
                    .get_opt(LEASE)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|l| l.spec?.holder_identity);
                let Some(i) = REPLICAS.iter().position(|r| Some(*r) == holder.as_deref()) else {
                    return; // no leader right now (a failover is going on): nothing to kill
                };
                // Back at once, as a Deployment would bring it back: it becomes the standby.
                self.replicas[i].restart();
                eprintln!(
                    "  fault at {}: leader {} SIGKILLed and restarted",
                    jiff::Timestamp::now(),
                    REPLICAS[i]
                );
                *self.faults.entry("leader".into()).or_default() += 1;
            }
            Fault::Restart(component) => {
                let down = rng.between(Duration::from_secs(1), Duration::from_secs(5));
                crash_and_restart(component, down).await;
                *self.faults.entry(component.name().into()).or_default() += 1;
            }
        }
        self.tally.faults += 1;
    }

    /// Notes every scheduled run, and checks those that finished since the last look.
    /// Returns how many runs are not finished yet.
    async fn check_finished(&mut self) -> usize {
        let api: Api<PipelineRun> = self.ns.api();
        let Ok(runs) = api.list(&ListParams::default()).await else {
            return usize::MAX; // the API server is down: look again later
        };
        let jobs = created_jobs(&self.jobs.events());
        let mut unfinished = 0;
        for run in runs.items {
            let name = run.name_any();
            let Some(pipeline) = run.labels().get(labels::PIPELINE).cloned() else {
                continue;
            };
            if let Some(date) = run.spec.logical_date.as_ref() {
                self.intervals
                    .entry(pipeline.clone())
                    .or_default()
                    .insert(date.0.as_second());
            }
            let finished = run
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(RunPhase::is_terminal);
            if !finished {
                unfinished += 1;
                continue;
            }
            if self.checked.insert(name.clone()) {
                self.tally.runs += 1;
                let w = workload(&pipeline);
                let known = self.tally.problems.len();
                let mine = check_run(&self.ns, &name, w, &jobs, self.baseline, &mut self.tally).await;
                self.attributed.extend(mine);
                // Said at once, with the time: an hour later nobody remembers which fault
                // came just before.
                for problem in &self.tally.problems[known..] {
                    eprintln!("soak: PROBLEM at {}: {problem}", jiff::Timestamp::now());
                }
            }
        }
        unfinished
    }

    /// Intervals between the first and the last scheduled run of a pipeline that got no run.
    fn missed_intervals(&mut self) {
        for (pipeline, dates) in &self.intervals {
            let (Some(first), Some(last)) = (dates.first(), dates.last()) else {
                continue;
            };
            let missing: Vec<i64> = (0..=(last - first) / INTERVAL)
                .map(|i| first + i * INTERVAL)
                .filter(|d| !dates.contains(d))
                .collect();
            if !missing.is_empty() {
                self.tally.problems.push(format!(
                    "pipeline {pipeline}: {} interval(s) got no run (logical dates, Unix seconds): {missing:?}",
                    missing.len()
                ));
            }
        }
    }
}

#[tokio::test]
async fn scheduled_pipelines_with_random_faults() {
    let minutes: f64 = std::env::var("WEIR_SOAK_MINUTES")
        .ok()
        .map(|m| m.parse().expect("WEIR_SOAK_MINUTES is a number"))
        .unwrap_or(2.0);
    let started = Instant::now();
    let baseline = baseline().await;
    eprintln!("soak: {minutes} minutes");
    let ns = namespace("soak").await;
    let jobs = JobRecorder::start(&ns).await;
    let args = [
        "--leader-elect",
        "--lease-namespace",
        ns.name(),
        "--lease-name",
        LEASE,
    ];
    let replicas = [
        Operator::start_with(&ns, Some(REPLICAS[0]), &args),
        Operator::start_with(&ns, Some(REPLICAS[1]), &args),
    ];
    let yaml: Vec<String> = WORKLOAD.iter().map(|w| w.scheduled_manifest(CRON, 10)).collect();
    ns.apply(&yaml.join("---\n"));
    let mut soak = Soak {
        ns,
        jobs,
        replicas,
        baseline,
        tally: Tally::default(),
        checked: HashSet::new(),
        attributed: HashSet::new(),
        intervals: BTreeMap::new(),
        faults: BTreeMap::new(),
    };

    let mut rng = Rng::new("fault times and kinds");
    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut next_fault = Instant::now() + rng.between(Duration::from_secs(20), Duration::from_secs(60));
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        soak.check_finished().await;
        if Instant::now() >= next_fault {
            let fault = *rng.pick(FAULTS);
            soak.inject(fault, &mut rng).await;
            next_fault = Instant::now() + rng.between(Duration::from_secs(20), Duration::from_secs(60));
        }
        if last_report.elapsed() >= Duration::from_secs(300) {
            eprintln!(
                "soak: {:.0} min: {} faults {:?}",
                started.elapsed().as_secs_f64() / 60.0,
                soak.tally.line(),
                soak.faults
            );
            last_report = Instant::now();
        }
    }

    // No new runs; the ones going on finish, without faults.
    let pipelines: Api<Pipeline> = soak.ns.api();
    for w in WORKLOAD {
        let patch = serde_json::json!({"spec": {"schedule": {"suspend": true}}});
        pipelines
            .patch(w.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("suspending a schedule");
    }
    let drain = Instant::now() + Duration::from_secs(300);
    while soak.check_finished().await > 0 && Instant::now() < drain {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let unfinished = soak.check_finished().await;
    if unfinished == usize::MAX {
        soak.tally
            .problems
            .push("the API server does not answer at the end".into());
    } else if unfinished > 0 {
        soak.tally.runs += unfinished;
        soak.tally.problems.push(format!(
            "{unfinished} run(s) still not finished 5 minutes after the last fault"
        ));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let jobs = created_jobs(&soak.jobs.events());
    count_orphans(&jobs, &soak.attributed, &mut soak.tally);
    soak.missed_intervals();
    eprintln!("soak: faults by kind {:?}", soak.faults);
    soak.tally.report("soak", started.elapsed());
}
