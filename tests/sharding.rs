//! Sharding (docs/sharding.md): two shards of two replicas each, on the real control plane.
//! Each shard runs only the namespaces the hash gives it, each elects its own leader on its
//! own Lease, and killing one shard's leader mid-run hands its runs to that shard's standby
//! with no Job created twice, while the other shard never touches them.

mod common;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use std::process::Command;
use std::time::Duration;
use weir::api::RunPhase;
use weir::shard::Shard;
use weir_testenv::wait_for;

const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const LEASE: &str = "weir-operator";
const SHARDS: u32 = 2;

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

async fn wait_holder(leases: &Api<Lease>, lease: &str, want: &str, timeout: Duration) {
    wait_for(&format!("{want} to hold {lease}"), timeout, || async {
        let h = holder(leases, lease).await;
        if h.as_deref() == Some(want) {
            Ok(())
        } else {
            Err(format!("holder is {h:?}"))
        }
    })
    .await
}

/// A standby of its shard: ready, not leading, and no reconcile at all.
async fn assert_idle_standby(op: &Operator, shard: u32) {
    let addr = op.http_addr().await;
    wait_for("the standby to be ready", Duration::from_secs(30), || async {
        http_get(addr, "/readyz").await.ok().filter(|(c, _)| *c == 200)
    })
    .await;
    let metrics = scrape(addr).await;
    assert_eq!(sample(&metrics, "weir_leader"), Some(0.0), "{metrics}");
    let info = format!("weir_shard_info{{shard=\"{shard}\",shards=\"{SHARDS}\"}}");
    assert_eq!(sample(&metrics, &info), Some(1.0), "{metrics}");
    assert_eq!(
        reconciles(&metrics),
        0.0,
        "a standby must not reconcile:\n{metrics}"
    );
}

#[tokio::test]
async fn two_shards_each_run_their_namespaces_and_a_dead_leader_hands_over_without_duplicate_jobs() {
    let namespaces = one_namespace_per_shard("shard", SHARDS).await;
    let (ns0, ns1) = (&namespaces[0], &namespaces[1]);
    // The Leases live in a namespace of their own, so that a shard's log names the other
    // shard's namespace only if it touched it.
    let home = weir_testenv::env().await.namespace("shard-home").await;
    install_crds(&home).await;
    let leases: Api<Lease> = home.api();
    let watched = format!("{},{}", ns0.name(), ns1.name());
    let args = [
        "--namespaces",
        &watched,
        "--leader-elect",
        "--lease-namespace",
        home.name(),
        "--lease-name",
        LEASE,
        "--shards",
        "2",
        "--shard",
        "pod-ordinal",
    ];
    // As a StatefulSet of 2 shards x 2 replicas names its pods: ordinal % 2 is the shard.
    let lease_of = |shard: u32| Shard::new(shard, SHARDS).unwrap().lease_name(LEASE);
    let mut pods = Vec::new();
    for ordinal in 0..4u32 {
        let pod = format!("weir-operator-{ordinal}");
        pods.push(Operator::start_with(&home, Some(&pod), &args));
        if ordinal < SHARDS {
            // The first pod of each shard leads it.
            wait_holder(&leases, &lease_of(ordinal), &pod, Duration::from_secs(30)).await;
        }
    }
    assert_idle_standby(&pods[2], 0).await;
    assert_idle_standby(&pods[3], 1).await;
    assert!(
        pods[0]
            .log()
            .contains("sharded: this process runs the namespaces"),
        "{}",
        pods[0].log()
    );

    let jobs0 = JobRecorder::start(ns0).await;
    let jobs1 = JobRecorder::start(ns1).await;
    ns1.apply(&chain_with_flaky_run("other", 3, "true"));
    ns0.apply(&chain_with_flaky_run("chain", 6, "sleep 1"));
    wait_for(
        "the Job of s1 in shard 0's namespace",
        Duration::from_secs(60),
        || async {
            jobs0
                .created()
                .iter()
                .any(|(_, task, _)| task == "s1")
                .then_some(())
        },
    )
    .await;
    // Shard 0's leader dies mid-chain; its standby (pod 2) takes shard 0's Lease. Shard 1's
    // Lease does not move.
    pods[0].kill();
    let killed = std::time::Instant::now();
    wait_holder(&leases, &lease_of(0), "weir-operator-2", Duration::from_secs(45)).await;
    eprintln!(
        "shard 0's standby held its Lease {:.1}s after the leader was killed",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(
        holder(&leases, &lease_of(1)).await.as_deref(),
        Some("weir-operator-1")
    );

    let run = wait_run_done(ns0, "chain", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
    let other = wait_run_done(ns1, "other", RUN_TIMEOUT).await;
    assert_eq!(phase(&other), RunPhase::Succeeded, "{:?}", other.status);
    // One Job per task, two for the task that fails once: none twice across the handover.
    jobs0.assert_each_created_once(8);
    jobs1.assert_each_created_once(5);

    // Every Event of a namespace came from its shard's leader of the moment.
    let by0 = event_reporters(ns0).await;
    let by1 = event_reporters(ns1).await;
    assert!(
        by0.iter()
            .all(|(who, _)| who == "weir-operator-0" || who == "weir-operator-2"),
        "{by0:?}"
    );
    assert!(by1.iter().all(|(who, _)| who == "weir-operator-1"), "{by1:?}");
    let reported =
        |by: &[(String, String)], who: &str, reason: &str| by.iter().any(|(w, r)| w == who && r == reason);
    assert!(reported(&by0, "weir-operator-0", "RunStarted"), "{by0:?}");
    assert!(reported(&by0, "weir-operator-2", "RunSucceeded"), "{by0:?}");
    assert!(reported(&by1, "weir-operator-1", "RunSucceeded"), "{by1:?}");

    // Shard 1 never touched shard 0's namespace: its replicas never even named it (every
    // reconcile logs its namespace), and its standby still reconciled nothing.
    for pod in [&pods[1], &pods[3]] {
        let log = pod.log();
        assert!(!log.contains(ns0.name()), "shard 1 named {}:\n{log}", ns0.name());
    }
    assert!(
        pods[1].log().contains(ns1.name()),
        "shard 1's leader ran nothing:\n{}",
        pods[1].log()
    );
    assert_idle_standby(&pods[3], 1).await;
    // And shard 0's new leader never touched shard 1's.
    assert!(!pods[2].log().contains(ns1.name()), "{}", pods[2].log());
}

#[tokio::test]
async fn a_shard_that_owns_none_of_its_namespaces_stays_up_and_ready_doing_nothing() {
    let namespaces = one_namespace_per_shard("shard-none", SHARDS).await;
    install_crds(&namespaces[0]).await;
    // Shard 1, given only shard 0's namespace.
    let op = Operator::start_with(&namespaces[0], Some("lonely"), &["--shards", "2", "--shard", "1"]);
    let addr = op.http_addr().await;
    wait_for("the idle shard to be ready", Duration::from_secs(30), || async {
        http_get(addr, "/readyz").await.ok().filter(|(c, _)| *c == 200)
    })
    .await;
    namespaces[0].apply(&chain_with_flaky_run("ignored", 1, "true"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let run = namespaces[0]
        .api::<weir::api::PipelineRun>()
        .get("ignored")
        .await
        .unwrap();
    assert!(
        run.status.is_none(),
        "another shard's run was touched: {:?}",
        run.status
    );
    let metrics = scrape(addr).await;
    assert_eq!(sample(&metrics, "weir_leader"), Some(1.0), "{metrics}");
    assert_eq!(reconciles(&metrics), 0.0, "{metrics}");
    assert!(
        op.log().contains("owns none of the namespaces given"),
        "{}",
        op.log()
    );
    // Still serving after the controllers would have ended.
    let (code, _) = http_get(addr, "/livez").await.expect("GET /livez");
    assert_eq!(code, 200);
}

/// `weir operator` with these arguments and `POD_NAME`: it must refuse to start, saying why.
fn refused(args: &[&str], pod_name: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .args(["operator", "--http-addr", "127.0.0.1:0"])
        .args(args)
        .env("KUBECONFIG", "/nonexistent")
        .env_remove("WEIR_SHARDS")
        .env_remove("WEIR_SHARD")
        .env_remove("POD_NAME");
    if let Some(pod) = pod_name {
        command.env("POD_NAME", pod);
    }
    let out = command.output().expect("running weir operator");
    assert!(!out.status.success(), "{args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_shard_flags_stop_the_operator_at_startup_naming_the_flag() {
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (
            &["--shards", "0"],
            None,
            "--shards (WEIR_SHARDS) must be at least 1",
        ),
        (
            &["--shards", "2", "--shard", "2"],
            None,
            "--shard (WEIR_SHARD) 2 is out of range",
        ),
        (
            &["--shards", "3"],
            None,
            "--shard (WEIR_SHARD) is required with --shards 3",
        ),
        (
            &["--shards", "2", "--shard", "pod-ordinal"],
            Some("weir-operator"),
            "does not end in -<ordinal>",
        ),
        (
            &["--shards", "2", "--shard", "pod-ordinal"],
            None,
            "POD_NAME, which is not set",
        ),
    ];
    for (args, pod, words) in cases {
        let stderr = refused(args, pod);
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
}

/// Without `--namespaces` (how the chart runs shards), each shard watches every namespace
/// and drops other shards' objects as they come off the watch. Ignored in the main suite:
/// operators watching every namespace would act on other tests' objects. Run it alone on
/// an environment of its own: `cargo test --test sharding -- --ignored`.
#[tokio::test]
#[ignore = "watches every namespace: run alone, on a control plane no other test uses"]
async fn cluster_wide_shards_drop_other_shards_objects_from_their_watches() {
    let namespaces = one_namespace_per_shard("shard", SHARDS).await;
    install_crds(&namespaces[0]).await;
    let shards: Vec<Operator> = (0..SHARDS)
        .map(|shard| {
            let index = shard.to_string();
            let pod = format!("weir-operator-{shard}");
            Operator::start_cluster_wide(&namespaces[0], &pod, &["--shards", "2", "--shard", &index])
        })
        .collect();
    for ns in &namespaces {
        ns.apply(&chain_with_flaky_run("run", 2, "true"));
    }
    for (shard, ns) in namespaces.iter().enumerate() {
        let run = wait_run_done(ns, "run", RUN_TIMEOUT).await;
        assert_eq!(phase(&run), RunPhase::Succeeded, "{:?}", run.status);
        let by = event_reporters(ns).await;
        let leader = format!("weir-operator-{shard}");
        assert!(
            !by.is_empty() && by.iter().all(|(who, _)| *who == leader),
            "{by:?}"
        );
        let log = shards[shard].log();
        assert!(
            log.contains(ns.name()),
            "shard {shard} never named its namespace:\n{log}"
        );
        let other = namespaces[1 - shard].name();
        assert!(!log.contains(other), "shard {shard} named {other}:\n{log}");
    }
}
