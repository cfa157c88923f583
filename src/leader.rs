//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas exactly one runs the controllers (and so writes status and creates Jobs).
//!
//! The algorithm is client-go's:
//! - A candidate reads the Lease. It takes it when nobody holds it, or when the record has
//!   not changed for a whole lease duration *as measured by its own clock since it first saw
//!   that record* (so clock skew between nodes does not matter). Writes carry the
//!   resourceVersion they read: of two candidates racing, one gets a conflict and loses.
//! - The leader renews every [`LeaseConfig::renew_every`]. If it cannot renew within
//!   [`LeaseConfig::renew_deadline`] of its last successful renewal (counted from when that
//!   request was *sent*), it stops the controllers at once and goes back to standby. The
//!   deadline is shorter than the lease duration, so the old leader has stopped before any
//!   other candidate may consider the lease expired.
//! - On shutdown the leader first lets its reconciles finish, then clears the holder so a
//!   standby takes over within one retry period instead of waiting for the lease to expire.
//!
//! Handover cannot duplicate work: Job and TaskRun names are deterministic (a second create
//! is "already exists") and every status write is idempotent.

use crate::http::{Health, Phase};
use crate::metrics::Metrics;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where the lease is and how it is kept.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per process: the pod name, or hostname and process id.
    pub identity: String,
    /// How long a lease stays valid after its last renewal.
    pub duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// The leader gives up leading when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// How often a standby looks at the lease, and a leader retries a failed renewal.
    pub retry_every: Duration,
}

impl LeaseConfig {
    pub fn new(name: impl Into<String>, namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseConfig {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// `POD_NAME` when set (Kubernetes' downward API), else `<hostname>-<pid>`.
pub fn default_identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.is_empty()
    {
        return name;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weir".into());
    format!("{host}-{}", std::process::id())
}

/// The record that would make `identity` the holder, or `None` while someone else holds an
/// unexpired lease. `expired` is judged by the caller's own clock (see the module docs).
fn claim(
    current: &LeaseSpec,
    identity: &str,
    expired: bool,
    now: Timestamp,
    duration: Duration,
) -> Option<LeaseSpec> {
    let holder = current.holder_identity.as_deref().filter(|h| !h.is_empty());
    let ours = holder == Some(identity);
    if holder.is_some() && !ours && !expired {
        return None;
    }
    let transitions = current.lease_transitions.unwrap_or(0);
    Some(LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(duration.as_secs().max(1) as i32),
        acquire_time: if ours {
            current.acquire_time.clone().or(Some(MicroTime(now)))
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..current.clone()
    })
}

/// The last lease record seen, and when this process first saw it.
struct Observed {
    spec: LeaseSpec,
    at: Instant,
}

/// One candidate for the lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
    /// When the request of the last successful acquire or renewal was sent.
    renewed_at: Option<Instant>,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            renewed_at: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    fn observe(&mut self, spec: &LeaseSpec) {
        if self.observed.as_ref().is_none_or(|o| o.spec != *spec) {
            self.observed = Some(Observed {
                spec: spec.clone(),
                at: Instant::now(),
            });
        }
    }

    fn holder(&self) -> Option<&str> {
        self.observed.as_ref()?.spec.holder_identity.as_deref()
    }

    /// One attempt to take or renew the lease: `Ok(true)` when this process holds it now.
    async fn try_claim(&mut self) -> kube::Result<bool> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let mut spec = claim(
                &LeaseSpec::default(),
                &self.config.identity,
                true,
                now,
                self.config.duration,
            )
            .expect("an empty lease can always be claimed");
            spec.lease_transitions = Some(0);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(written) => {
                    self.observe(&written.spec.unwrap_or(spec));
                    Ok(true)
                }
                Err(e) if crate::controller::is_already_exists(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        self.observe(&current);
        let valid_for = current
            .lease_duration_seconds
            .map_or(self.config.duration, |s| Duration::from_secs(s.max(0) as u64));
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|o| o.at + valid_for <= Instant::now());
        let Some(spec) = claim(
            &current,
            &self.config.identity,
            expired,
            now,
            self.config.duration,
        ) else {
            return Ok(false);
        };
        lease.spec = Some(spec.clone());
        // `replace` sends the resourceVersion read above: a concurrent writer makes it fail.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written.spec.unwrap_or(spec));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&mut self) {
        let mut reported: Option<String> = None;
        loop {
            let sent = Instant::now();
            match tokio::time::timeout(self.config.duration / 3, self.try_claim()).await {
                Ok(Ok(true)) => {
                    self.renewed_at = Some(sent);
                    tracing::info!(
                        identity = self.config.identity,
                        lease = self.config.name,
                        "acquired the leader lease"
                    );
                    return;
                }
                Ok(Ok(false)) => {
                    let holder = self.holder().unwrap_or_default().to_string();
                    if reported.as_deref() != Some(holder.as_str()) {
                        tracing::info!(
                            %holder,
                            lease = self.config.name,
                            "standing by: the leader lease is held by another replica"
                        );
                        reported = Some(holder);
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(%err, lease = self.config.name, "could not read or take the lease")
                }
                Err(_) => tracing::warn!(lease = self.config.name, "timed out reading or taking the lease"),
            }
            tokio::time::sleep(self.config.retry_every).await;
        }
    }

    /// Keeps renewing the lease; returns why once this process can no longer be sure it
    /// holds it.
    pub async fn hold(&mut self) -> String {
        let mut renewed_at = self.renewed_at.unwrap_or_else(Instant::now);
        let mut next = renewed_at + self.config.renew_every;
        loop {
            let deadline = renewed_at + self.config.renew_deadline;
            tokio::time::sleep_until(next.min(deadline)).await;
            if Instant::now() >= deadline {
                return format!("could not renew the lease for {:?}", self.config.renew_deadline);
            }
            let sent = Instant::now();
            match tokio::time::timeout_at(deadline, self.try_claim()).await {
                Ok(Ok(true)) => {
                    renewed_at = sent;
                    self.renewed_at = Some(sent);
                    next = sent + self.config.renew_every;
                }
                Ok(Ok(false)) => {
                    return format!(
                        "the lease is now held by {}",
                        self.holder().unwrap_or("someone else")
                    );
                }
                Ok(Err(err)) => {
                    tracing::warn!(%err, "could not renew the leader lease; retrying");
                    next = Instant::now() + self.config.retry_every;
                }
                Err(_) => {
                    return format!("could not renew the lease for {:?}", self.config.renew_deadline);
                }
            }
        }
    }

    /// Gives the lease up (when this process holds it), so a standby takes over at once.
    pub async fn release(&mut self) {
        self.renewed_at = None;
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
                return Ok(false);
            };
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(false);
            };
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        };
        match tokio::time::timeout(Duration::from_secs(5), result).await {
            Ok(Ok(true)) => tracing::info!(lease = self.config.name, "released the leader lease"),
            Ok(Ok(false)) => {}
            Ok(Err(err)) => tracing::warn!(%err, "could not release the leader lease; it will expire"),
            Err(_) => tracing::warn!("timed out releasing the leader lease; it will expire"),
        }
    }
}

/// Runs `lead` (the controllers) while this process holds the lease. Losing the lease aborts
/// them at once (in-flight reconciles are cancelled at their next await) and goes back to
/// standby. Returns when the controllers end after `shutdown`, having released the lease.
pub async fn run_elected<F, Fut>(
    mut elector: Elector,
    shutdown: CancellationToken,
    health: Health,
    metrics: Arc<Metrics>,
    mut lead: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    loop {
        health.set(Phase::Standby);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = elector.acquire() => {}
        }
        if shutdown.is_cancelled() {
            elector.release().await;
            return Ok(());
        }
        metrics.set_leader(true);
        health.set(Phase::Syncing);
        let mut controllers = tokio::spawn(lead());
        tokio::select! {
            reason = elector.hold() => {
                controllers.abort();
                let _ = controllers.await;
                metrics.set_leader(false);
                metrics.controllers_stopped();
                tracing::error!(%reason, "lost the leader lease: controllers stopped; standing by");
            }
            result = &mut controllers => {
                metrics.set_leader(false);
                elector.release().await;
                return match result {
                    Ok(result) => result,
                    Err(err) => Err(anyhow::anyhow!("controllers panicked: {err}")),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn a_live_lease_of_another_holder_is_left_alone() {
        assert_eq!(claim(&held_by("a", 3), "b", false, Timestamp::now(), D), None);
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_counts_a_transition() {
        let now = Timestamp::now();
        let spec = claim(&held_by("a", 3), "b", true, now, D).unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut released = held_by("a", 3);
        released.holder_identity = None;
        let spec = claim(&released, "b", false, Timestamp::now(), D).unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(4));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let now = Timestamp::now();
        let spec = claim(&held_by("b", 3), "b", false, now, D).unwrap();
        assert_eq!(spec.acquire_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn the_deadline_is_inside_the_lease() {
        let c = LeaseConfig::new("l", "ns", "me");
        assert!(c.renew_every < c.renew_deadline && c.renew_deadline < c.duration);
    }
}
