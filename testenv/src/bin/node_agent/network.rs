//! Pod networking: a network namespace and an address per pod, on a bridge of the host.
//!
//! Enabled with `--pod-network CIDR`; a pod gets its own network only when it asks with the
//! annotation [`ANNOTATION`]`: pod` (every other pod shares the host's network, as before),
//! so that tests that need it (two replicas of a server on one port; a Service whose
//! Endpoints are real pod addresses, which may not be loopback) opt in and nothing else
//! changes. For such a pod the agent, with iproute2:
//!
//! * creates the network namespace `<name>-<n>` and a veth pair: `eth0` inside, with the
//!   address `<cidr>.<n>`, a default route via the bridge; the host end `<short>x<n>` on
//!   the bridge `<bridge>`, which holds the first address of the CIDR (so the host, and
//!   the API server on it, reach every pod, and pods reach each other);
//! * brings `lo` up and listens inside the namespace on `127.0.0.1:<API server port>`,
//!   forwarding to the API server on the host's loopback: in-cluster clients keep using
//!   `KUBERNETES_SERVICE_HOST=127.0.0.1` and the API server's certificate (valid for
//!   127.0.0.1) verifies;
//! * starts the pod's processes in that namespace (`setns` before `exec`);
//! * deletes the namespace (and so the veth pair) when the pod's containers have ended.
//!
//! Names carry the environment's name (`hack/testenv/up.sh` passes one made of its port
//! offset), so that several environments on one machine never share a bridge, namespace
//! or address range; `hack/testenv/down.sh` removes what is left.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use tracing::{debug, info, warn};

/// The pod annotation asking for a network of the pod's own.
pub const ANNOTATION: &str = "testenv.weir.dev/network";

/// Where `ip netns add` keeps namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// The pod network of this agent.
pub struct Network {
    /// Names: the bridge is `<name>`, namespaces `<name>-<n>`, host veth ends `<name>x<n>`.
    name: String,
    base: u32,
    prefix_len: u8,
    /// Port of the API server on the host's loopback, offered inside each namespace.
    api_port: u16,
    used: Mutex<BTreeSet<u32>>,
}

/// A pod's network; torn down on drop.
pub struct PodNetwork {
    network: Arc<Network>,
    index: u32,
    pub ip: Ipv4Addr,
    netns: String,
    proxy: tokio::task::JoinHandle<()>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `10.100.0.0/16` → (base address, prefix length).
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| format!("expected an IPv4 CIDR like 10.100.0.0/16, got {cidr:?}"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|e| format!("{cidr:?}: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("{cidr:?}: {e}"))?;
    if !(8..=28).contains(&len) {
        return Err(format!("{cidr:?}: the prefix length must be 8 to 28"));
    }
    Ok((addr, len))
}

impl Network {
    /// Sets up the bridge (again, if an earlier agent left it) and removes namespaces an
    /// earlier agent left behind: their processes were killed at start-up.
    pub fn new(name: &str, cidr: (Ipv4Addr, u8), api_port: u16) -> anyhow::Result<Network> {
        if name.is_empty() || name.len() > 8 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            bail!(
                "--pod-network-name must be 1 to 8 letters or digits (it prefixes interface names), got {name:?}"
            );
        }
        let mask = u32::MAX << (32 - cidr.1);
        let network = Network {
            name: name.to_string(),
            base: u32::from(cidr.0) & mask,
            prefix_len: cidr.1,
            api_port,
            used: Mutex::new(BTreeSet::new()),
        };
        network.remove_leftovers();
        let gateway = format!("{}/{}", network.address(1), network.prefix_len);
        if !std::path::Path::new(&format!("/sys/class/net/{name}")).exists() {
            ip(&["link", "add", name, "type", "bridge"])?;
        }
        ip(&["addr", "replace", &gateway, "dev", name])?;
        ip(&["link", "set", name, "up"])?;
        info!(bridge = name, %gateway, "pod network ready");
        Ok(network)
    }

    fn address(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + index)
    }

    fn netns(&self, index: u32) -> String {
        format!("{}-{index}", self.name)
    }

    fn remove_leftovers(&self) {
        let prefix = format!("{}-", self.name);
        let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name
                .strip_prefix(&prefix)
                .is_some_and(|n| n.parse::<u32>().is_ok())
            {
                match ip(&["netns", "del", &name]) {
                    Ok(()) => info!(
                        netns = name,
                        "removed a network namespace left by an earlier agent"
                    ),
                    Err(e) => warn!("{e:#}"),
                }
            }
        }
    }

    fn allocate(&self) -> anyhow::Result<u32> {
        let size = 1u32 << (32 - self.prefix_len);
        let mut used = self.used.lock().unwrap();
        // .0 is the network, .1 the bridge, the last the broadcast address.
        let index = (2..size - 1)
            .find(|i| !used.contains(i))
            .context("the pod network has no address left")?;
        used.insert(index);
        Ok(index)
    }

    /// Gives a pod its namespace, address and API server forwarder.
    pub async fn attach(self: &Arc<Self>) -> anyhow::Result<PodNetwork> {
        let index = self.allocate()?;
        let netns = self.netns(index);
        let this = self.clone();
        let ns = netns.clone();
        let setup = tokio::task::spawn_blocking(move || this.create(index, &ns)).await;
        let proxy = match setup.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(listener) => tokio::spawn(forward(listener, self.api_port)),
            Err(e) => {
                let _ = ip(&["netns", "del", &netns]);
                self.used.lock().unwrap().remove(&index);
                return Err(e);
            }
        };
        Ok(PodNetwork {
            network: self.clone(),
            index,
            ip: self.address(index),
            netns,
            proxy,
        })
    }

    fn create(&self, index: u32, netns: &str) -> anyhow::Result<tokio::net::TcpListener> {
        let veth = format!("{}x{index:x}", self.name);
        let address = format!("{}/{}", self.address(index), self.prefix_len);
        let gateway = self.address(1).to_string();
        ip(&["netns", "add", netns])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ])?;
        ip(&["link", "set", &veth, "master", &self.name, "up"])?;
        ip(&["-n", netns, "addr", "add", &address, "dev", "eth0"])?;
        ip(&["-n", netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", netns, "link", "set", "lo", "up"])?;
        ip(&["-n", netns, "route", "add", "default", "via", &gateway])?;
        let listener = listen_in(netns, self.api_port)?;
        debug!(netns, %address, "pod network attached");
        Ok(listener)
    }
}

/// Binds `127.0.0.1:port` inside the namespace, from a thread of its own (`setns` moves only
/// the calling thread); the socket stays in that namespace.
fn listen_in(netns: &str, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let fd = open_netns(netns)?;
    let listener = std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
        // SAFETY: setns on a namespace file descriptor we own; affects this thread only.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread binding in {netns} panicked"))?
    .with_context(|| format!("listening on 127.0.0.1:{port} in {netns}"))?;
    // from_std needs a runtime: this runs in spawn_blocking, inside one.
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

pub fn open_netns(netns: &str) -> anyhow::Result<OwnedFd> {
    let path = format!("{NETNS_DIR}/{netns}");
    Ok(File::open(&path)
        .with_context(|| format!("opening {path}"))?
        .into())
}

/// Forwards every connection to the API server on the host's loopback.
async fn forward(listener: tokio::net::TcpListener, port: u16) {
    loop {
        let Ok((mut inside, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
                Ok(mut host) => {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut host).await;
                }
                Err(e) => debug!("forwarding to the API server: {e}"),
            }
        });
    }
}

impl PodNetwork {
    pub fn netns(&self) -> &str {
        &self.netns
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        self.proxy.abort();
        // Deleting the namespace deletes the veth pair with it.
        if let Err(e) = ip(&["netns", "del", &self.netns]) {
            warn!("{e:#}");
        }
        self.network.used.lock().unwrap().remove(&self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_read_and_bad_ones_named() {
        assert_eq!(
            parse_cidr("10.106.0.0/16"),
            Ok((Ipv4Addr::new(10, 106, 0, 0), 16))
        );
        assert!(
            parse_cidr("10.106.0.0")
                .unwrap_err()
                .contains("expected an IPv4 CIDR")
        );
        assert!(parse_cidr("10.106.0.0/30").unwrap_err().contains("8 to 28"));
        assert!(parse_cidr("10.306.0.0/16").is_err());
    }
}
