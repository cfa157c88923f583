//! Running the operator: leader election between replicas (failover after a crash, handover
//! on SIGTERM), the probes and the metrics a run leaves behind.

mod common;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use std::time::{Duration, Instant};
use weir::api::RunPhase;
use weir_testenv::{TestNamespace, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const LEASE: &str = "weir-operator";

fn leader_args(ns: &TestNamespace) -> Vec<&str> {
    vec![
        "--leader-elect",
        "--lease-namespace",
        ns.name(),
        "--lease-name",
        LEASE,
    ]
}

async fn holder(ns: &TestNamespace) -> Option<String> {
    let leases: Api<Lease> = ns.api();
    leases.get_opt(LEASE).await.ok()??.spec?.holder_identity
}

async fn wait_holder(ns: &TestNamespace, want: &str, timeout: Duration) {
    wait_for(&format!("{want} to hold the lease"), timeout, || async {
        let h = holder(ns).await;
        if h.as_deref() == Some(want) {
            Ok(())
        } else {
            Err(format!("holder is {h:?}"))
        }
    })
    .await
}

/// A standby is ready (it can take over), but runs no controller.
async fn assert_idle_standby(op: &Operator) {
    let addr = op.http_addr().await;
    let (code, body) = wait_for("the standby to be ready", Duration::from_secs(30), || async {
        http_get(addr, "/readyz").await.ok().filter(|(c, _)| *c == 200)
    })
    .await;
    assert!(body.contains("standby"), "{code} {body}");
    let metrics = scrape(addr).await;
    assert_eq!(sample(&metrics, "weir_leader"), Some(0.0), "{metrics}");
    assert_eq!(
        reconciles(&metrics),
        0.0,
        "a standby must not reconcile:\n{metrics}"
    );
}

#[tokio::test]
async fn leader_killed_mid_run_the_standby_finishes_it_without_duplicate_jobs() {
    let ns = weir_testenv::env().await.namespace("failover").await;
    install_crds(&ns).await;
    let jobs = JobRecorder::start(&ns).await;
    let mut leader = Operator::start_with(&ns, Some("replica-a"), &leader_args(&ns));
    wait_holder(&ns, "replica-a", Duration::from_secs(30)).await;
    let standby = Operator::start_with(&ns, Some("replica-b"), &leader_args(&ns));
    assert_idle_standby(&standby).await;

    ns.apply(&chain_with_flaky_run("chain", 6, "sleep 1"));
    wait_for("the Job of s1", Duration::from_secs(60), || async {
        jobs.created()
            .iter()
            .any(|(_, task, _)| task == "s1")
            .then_some(())
    })
    .await;
    // Only the leader worked so far.
    assert_idle_standby(&standby).await;
    let jobs_before = jobs.created().len();

    leader.kill();
    let killed = Instant::now();
    wait_holder(&ns, "replica-b", Duration::from_secs(45)).await;
    let failover = killed.elapsed();
    wait_for(
        "a Job created by the new leader",
        Duration::from_secs(60),
        || async { (jobs.created().len() > jobs_before).then_some(()) },
    )
    .await;
    let first_job = killed.elapsed();
    eprintln!(
        "failover: replica-b held the lease {:.1}s after the leader was killed; its first Job came {:.1}s after",
        failover.as_secs_f64(),
        first_job.as_secs_f64()
    );
    assert!(
        failover < Duration::from_secs(25),
        "the standby took {failover:?} to take over (lease duration 15s)"
    );

    let run = wait_run_done(&ns, "chain", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    // One Job per task, two for the task that fails once.
    jobs.assert_each_created_once(8);
    let flaky = task_run(&ns, "chain", "flaky").await.status.unwrap();
    assert_eq!(flaky.attempts.len(), 2);

    scrape_until(
        standby.http_addr().await,
        &[
            ("weir_leader", 1.0),
            ("weir_runs_finished_total{outcome=\"succeeded\"}", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn sigterm_releases_the_lease_and_the_standby_takes_over_at_once() {
    let ns = weir_testenv::env().await.namespace("handover").await;
    install_crds(&ns).await;
    let mut leader = Operator::start_with(&ns, Some("replica-a"), &leader_args(&ns));
    wait_holder(&ns, "replica-a", Duration::from_secs(30)).await;
    let standby = Operator::start_with(&ns, Some("replica-b"), &leader_args(&ns));
    assert_idle_standby(&standby).await;

    let signalled = Instant::now();
    let status = leader
        .terminate(Duration::from_secs(30))
        .expect("the leader exits after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        leader.log().contains("released the leader lease"),
        "{}",
        leader.log()
    );
    // No waiting for the lease to expire: the standby sees it free on its next look.
    wait_holder(&ns, "replica-b", Duration::from_secs(10)).await;
    eprintln!(
        "handover after SIGTERM: {:.1}s",
        signalled.elapsed().as_secs_f64()
    );

    ns.apply(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: after}\nspec:\n  pipelineSpec:\n    tasks:\n      - {name: one, image: busybox, command: [sh, -c, 'true']}\n",
    );
    let run = wait_run_done(&ns, "after", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_at_once_and_stands_by() {
    let ns = weir_testenv::env().await.namespace("leaselost").await;
    install_crds(&ns).await;
    let op = Operator::start_with(&ns, Some("replica-a"), &leader_args(&ns));
    wait_holder(&ns, "replica-a", Duration::from_secs(30)).await;
    let addr = op.http_addr().await;
    scrape_until(addr, &[("weir_leader", 1.0)]).await;

    // Someone else takes the lease (as after a partition in which it expired for them).
    let leases: Api<Lease> = ns.api();
    wait_for("the lease to be taken over", Duration::from_secs(30), || async {
        let mut lease = leases.get(LEASE).await.map_err(|e| e.to_string())?;
        let spec = lease.spec.as_mut().ok_or("no spec")?;
        spec.holder_identity = Some("intruder".into());
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            jiff::Timestamp::now(),
        ));
        leases
            .replace(LEASE, &Default::default(), &lease)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    let taken = Instant::now();
    scrape_until(addr, &[("weir_leader", 0.0)]).await;
    eprintln!(
        "the old leader stopped {:.1}s after losing the lease",
        taken.elapsed().as_secs_f64()
    );
    assert!(op.log().contains("lost the leader lease"), "{}", op.log());

    // While the intruder's lease is live, nothing acts on a new run.
    ns.apply(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: waiting}\nspec:\n  pipelineSpec:\n    tasks:\n      - {name: one, image: busybox, command: [sh, -c, 'true']}\n",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let run = ns.api::<weir::api::PipelineRun>().get("waiting").await.unwrap();
    assert!(
        run.status.is_none(),
        "a standby touched the run: {:?}",
        run.status
    );

    // The intruder never renews: once its lease expires, the replica leads again.
    wait_holder(&ns, "replica-a", Duration::from_secs(30)).await;
    let run = wait_run_done(&ns, "waiting", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
}

#[tokio::test]
async fn probes_answer_and_metrics_count_what_runs_did() {
    let (ns, op) = setup("metrics").await;
    let addr = op.http_addr().await;
    let (code, _) = http_get(addr, "/livez").await.expect("GET /livez");
    assert_eq!(code, 200);
    let (_, body) = wait_for("/readyz to answer 200", Duration::from_secs(30), || async {
        http_get(addr, "/readyz").await.ok().filter(|(c, _)| *c == 200)
    })
    .await;
    assert!(body.contains("synced"), "{body}");
    assert!(
        op.log().contains("watch caches synced"),
        "ready only after the caches synced"
    );

    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: good}
spec:
  pipelineSpec:
    tasks:
      - {name: first, image: busybox, command: [sh, -c, 'true']}
      - name: flaky
        image: busybox
        command: [sh, -c, '[ $WEIR_ATTEMPT -ge 2 ]']
        retries: {limit: 2, delay: 1s}
        dependsOn: [first]
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: bad}
spec:
  pipelineSpec:
    tasks:
      - {name: broken, image: busybox, command: [sh, -c, 'exit 3']}
"#,
    );
    assert_eq!(
        phase(&wait_run_done(&ns, "good", RUN_TIMEOUT).await),
        RunPhase::Succeeded
    );
    assert_eq!(
        phase(&wait_run_done(&ns, "bad", RUN_TIMEOUT).await),
        RunPhase::Failed
    );

    // A Job the API server refuses (an invalid quantity) is a reconcile error of category
    // "api": the TaskRun's reconcile fails and is retried with backoff.
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: TaskRun
metadata: {name: greedy}
spec:
  taskName: greedy
  image: busybox
  command: [sh, -c, 'true']
  resources: {limits: {cpu: lots}}
"#,
    );
    scrape_until(
        addr,
        &[
            ("weir_leader", 1.0),
            ("weir_active_runs", 0.0),
            ("weir_runs_started_total", 2.0),
            ("weir_runs_finished_total{outcome=\"succeeded\"}", 1.0),
            ("weir_runs_finished_total{outcome=\"failed\"}", 1.0),
            ("weir_tasks_started_total", 3.0),
            ("weir_tasks_retried_total", 1.0),
            ("weir_tasks_finished_total{outcome=\"succeeded\"}", 2.0),
            ("weir_tasks_finished_total{outcome=\"failed\"}", 1.0),
            ("weir_task_ready_to_job_seconds_count", 3.0),
        ],
    )
    .await;
    let errors = "weir_reconcile_errors_total{controller=\"taskrun\",category=\"api\"}";
    let metrics = wait_for(
        "the reconcile error to be counted",
        Duration::from_secs(30),
        || async {
            let m = scrape(addr).await;
            (sample(&m, errors) >= Some(1.0)).then_some(m)
        },
    )
    .await;
    assert!(
        sample(
            &metrics,
            "weir_reconcile_duration_seconds_count{controller=\"pipeline\"}"
        )
        .is_some(),
        "{metrics}"
    );
    for controller in ["pipelinerun", "taskrun"] {
        let count = sample(
            &metrics,
            &format!("weir_reconcile_duration_seconds_count{{controller=\"{controller}\"}}"),
        );
        assert!(count.unwrap_or(0.0) >= 2.0, "{controller} reconciles: {metrics}");
    }
    for controller in ["pipeline", "pipelinerun", "taskrun"] {
        let series = format!("weir_queue_depth{{controller=\"{controller}\"}}");
        assert!(sample(&metrics, &series).is_some(), "{series} in:\n{metrics}");
    }
    for family in [
        "# TYPE weir_reconcile_errors counter",
        "# TYPE weir_reconcile_duration_seconds histogram",
        "# TYPE weir_task_ready_to_job_seconds histogram",
        "# TYPE weir_active_runs gauge",
    ] {
        assert!(metrics.contains(family), "{family} in:\n{metrics}");
    }
    // Bounded label sets: no object names.
    for name in [ns.name(), "good", "bad", "flaky", "broken", "greedy"] {
        assert!(
            !metrics.contains(&format!("\"{name}\"")),
            "{name} is a label value:\n{metrics}"
        );
    }
}
