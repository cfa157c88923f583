//! The Node object and its heartbeats.

use std::time::Duration;

use anyhow::Context as _;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::warn;

use crate::Args;

/// How often the Node's Lease is renewed and its Ready condition re-stamped. The node
/// lifecycle controller marks a node NotReady (and taints it) after 40 s without either.
const HEARTBEAT: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;

/// Kubelet version the Node claims: the control plane is 1.20.2.
const KUBELET_VERSION: &str = "v1.20.2";

pub fn time_now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Kubernetes' (Go's) name for this machine's architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn status(args: &Args, transition: &str) -> serde_json::Value {
    let now = time_now();
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": transition,
        })
    };
    let resources = json!({
        "cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi",
    });
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "weir-node-agent is posting ready status"),
        ],
        // Only an InternalIP: the apiserver dials the first address of its preferred types,
        // and a Hostname address ("weir-node") would not resolve.
        "addresses": [{"type": "InternalIP", "address": args.address.to_string()}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": args.log_port}},
        "nodeInfo": {
            "machineID": machine_id, "systemUUID": machine_id, "bootID": boot_id,
            "kernelVersion": kernel, "osImage": "weir-node-agent (pods run as local processes)",
            "containerRuntimeVersion": concat!("weir-node-agent://", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux", "architecture": go_arch(),
        },
    })
}

/// Creates the Node, or takes over an existing one of the same name, and marks it Ready.
pub async fn register(client: &kube::Client, args: &Args) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let arch = go_arch();
    let meta = json!({
        "name": args.node_name,
        "labels": {
            "kubernetes.io/hostname": args.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch,
            "weir.dev/testenv-node": "true",
        },
    });
    let transition = time_now();
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": meta, "status": status(args, &transition),
    }))?;
    // Nodes accept their status on create; an existing Node (from an earlier agent) gets
    // labels and status patched instead.
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            nodes
                .patch(
                    &args.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": meta})),
                )
                .await
                .context("patching existing node")?;
        }
        Err(e) => return Err(e).context("creating node"),
    }
    nodes
        .patch_status(
            &args.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status(args, &transition)})),
        )
        .await
        .context("patching node status")?;
    renew_lease(client, args).await.context("creating node lease")?;
    Ok(())
}

/// Renews the Lease and re-stamps the conditions forever; errors are logged and retried.
pub async fn heartbeat(client: kube::Client, args: Args) {
    let nodes: Api<Node> = Api::all(client.clone());
    let transition = time_now();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = renew_lease(&client, &args).await {
            warn!("renewing node lease: {e:#}");
        }
        let patch = Patch::Merge(json!({"status": status(&args, &transition)}));
        if let Err(e) = nodes
            .patch_status(&args.node_name, &PatchParams::default(), &patch)
            .await
        {
            warn!("node status heartbeat: {e}");
        }
    }
}

async fn renew_lease(client: &kube::Client, args: &Args) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(&args.node_name).await?;
    let renew = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {
            "name": args.node_name, "namespace": "kube-node-lease",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": args.node_name,
                "uid": node.metadata.uid.unwrap_or_default(),
            }],
        },
        "spec": {
            "holderIdentity": args.node_name, "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": renew,
        },
    }))?;
    let pp = PatchParams::apply("weir-node-agent").force();
    leases.patch(&args.node_name, &pp, &Patch::Apply(&lease)).await?;
    Ok(())
}
