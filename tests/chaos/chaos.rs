//! The scenarios of issue 11's chaos suite, each on its own runs in its own namespace of
//! the chaos environment. They run one at a time (`--test-threads 1`): a scenario that
//! kills the apiserver must not break another one's checks.

use crate::common::Operator;
use crate::harness::{Rng, Scenario, baseline, crash_and_restart};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use std::time::{Duration, Instant};
use weir_testenv::{Component, TestNamespace, wait_for};

/// How long the runs of a scenario get to finish once the faults stop.
const FINISH: Duration = Duration::from_secs(180);

/// (a) The operator is SIGKILLed again and again while runs with retries, a fan-out and
/// `finally` tasks go on; each time a new process starts from nothing but what the API
/// server holds.
#[tokio::test]
async fn operator_sigkilled_repeatedly_during_retries_fan_out_and_finally() {
    let baseline = baseline().await;
    let mut s = Scenario::new("operator-sigkill").await;
    let mut op = Operator::start(&s.ns);
    s.submit(1);
    let mut rng = Rng::new("kill times");
    // Kills every 0.3-1.5 s while the runs go on (at least 8, at most 20), then leaves the
    // last operator to finish.
    while s.faults < 20 && (s.faults < 8 || !s.all_finished().await) {
        tokio::time::sleep(rng.between(Duration::from_millis(300), Duration::from_millis(1500))).await;
        op.restart();
        s.faults += 1;
    }
    eprintln!("  fault: operator SIGKILLed {} times", s.faults);
    s.finish(baseline, FINISH).await;
}

/// (b) kube-apiserver is SIGKILLed mid-run and started again 3 s later (etcd keeps every
/// object); the operator, the Job controller and the node agent all lose their watches.
#[tokio::test]
async fn apiserver_sigkilled_mid_run_and_restarted_with_its_data() {
    let baseline = baseline().await;
    let mut s = Scenario::new("apiserver-sigkill").await;
    let _op = Operator::start(&s.ns);
    s.submit(1);
    s.wait_jobs(4).await;
    crash_and_restart(Component::KubeApiserver, Duration::from_secs(3)).await;
    s.faults += 1;
    s.finish(baseline, FINISH).await;
}

/// (b) etcd is SIGKILLed mid-run and started again 3 s later on the same data dir; the
/// apiserver stays up and answers errors meanwhile.
#[tokio::test]
async fn etcd_sigkilled_mid_run_and_restarted_with_its_data() {
    let baseline = baseline().await;
    let mut s = Scenario::new("etcd-sigkill").await;
    let _op = Operator::start(&s.ns);
    s.submit(1);
    s.wait_jobs(4).await;
    crash_and_restart(Component::Etcd, Duration::from_secs(3)).await;
    s.faults += 1;
    s.finish(baseline, FINISH).await;
}

/// (c) The node agent (the kubelet stand-in) is restarted while pods run: it kills them and
/// reports them Failed (`NodeAgentRestarted`, containers `ContainerStatusUnknown` as a kubelet
/// reports them), as pods lost with their node.
#[tokio::test]
async fn node_agent_restarted_mid_run_losing_its_pods() {
    let baseline = baseline().await;
    let mut s = Scenario::new("agent-restart").await;
    let _op = Operator::start(&s.ns);
    s.submit(1);
    s.wait_jobs(4).await;
    crash_and_restart(Component::NodeAgent, Duration::from_secs(1)).await;
    s.faults += 1;
    s.finish(baseline, FINISH).await;
}

const LEASE: &str = "weir-operator";

async fn holder(ns: &TestNamespace) -> Option<String> {
    let leases: Api<Lease> = ns.api();
    leases.get_opt(LEASE).await.ok()??.spec?.holder_identity
}

/// (d) Two replicas with leader election and three copies of every pipeline at once; the
/// leader is SIGKILLed, the standby takes over when the lease expires, the killed replica
/// comes back as the standby, and the new leader is killed in turn.
#[tokio::test]
async fn leader_of_two_replicas_killed_under_load() {
    let baseline = baseline().await;
    let mut s = Scenario::new("leader-kill").await;
    let args = [
        "--leader-elect",
        "--lease-namespace",
        s.ns.name(),
        "--lease-name",
        LEASE,
    ];
    let mut replicas = [
        Operator::start_with(&s.ns, Some("replica-a"), &args),
        Operator::start_with(&s.ns, Some("replica-b"), &args),
    ];
    let names = ["replica-a", "replica-b"];
    s.submit(3);
    let mut next_kill_at_jobs = 6;
    for _ in 0..2 {
        if !s.wait_progress(next_kill_at_jobs).await {
            break;
        }
        let leader = wait_for("a leader", Duration::from_secs(60), || async {
            holder(&s.ns)
                .await
                .and_then(|h| names.iter().position(|n| *n == h))
        })
        .await;
        replicas[leader].kill();
        let killed = Instant::now();
        s.faults += 1;
        let other = 1 - leader;
        wait_for(
            &format!("{} to take over", names[other]),
            Duration::from_secs(60),
            || async { (holder(&s.ns).await.as_deref() == Some(names[other])).then_some(()) },
        )
        .await;
        eprintln!(
            "  fault: leader {} SIGKILLed; {} took over {:.1}s later",
            names[leader],
            names[other],
            killed.elapsed().as_secs_f64()
        );
        replicas[leader].restart();
        next_kill_at_jobs = s.jobs_created() + 6;
    }
    s.finish(baseline, FINISH).await;
}
