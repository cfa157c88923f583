//! Lists of Jobs and pods served from the API server's watch cache, never older than what
//! this operator has seen or written of them.
//!
//! A TaskRun's reconcile reads its Jobs and pods on every look. Read from etcd (a list
//! without a resourceVersion), each such list makes the API server read and decode every
//! Job (or pod) of the namespace to pick the TaskRun's out: in a fan-out of hundreds of
//! tasks, hundreds of looks a second, each as wide as the namespace. The API server's own
//! watch cache answers the same list from memory, and with `resourceVersionMatch:
//! NotOlderThan` it answers only once it holds at least the given version. This module keeps,
//! for Jobs and for pods, the newest resourceVersion this operator has seen in a watch
//! event or been answered with after a write ([`Seen::saw`]); lists then ask for no older
//! than that ([`Seen::list`]). A look so never decides from a view older than the event
//! that woke it or the write it made itself, which is what a fresh list guaranteed.
//! Versions are compared as numbers (etcd revisions, in practice); a version that is not a
//! number is not recorded, and with nothing recorded the list goes to etcd as before.

use super::Result;
use kube::Resource;
use kube::api::{Api, ListParams, VersionMatch};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

/// The newest resourceVersion seen of one kind.
#[derive(Default, Debug)]
pub struct Seen(AtomicU64);

impl Seen {
    /// Records a version seen in a watch event or a write's answer.
    pub fn saw(&self, version: Option<&str>) {
        if let Some(v) = version.and_then(|v| v.parse::<u64>().ok()) {
            self.0.fetch_max(v, Ordering::AcqRel);
        }
    }

    /// [`Seen::saw`] for an object.
    pub fn saw_object<K: Resource>(&self, obj: &K) {
        self.saw(obj.meta().resource_version.as_deref());
    }

    /// The list parameters for `selector`: from the watch cache, no older than anything
    /// seen; from etcd while nothing was.
    pub fn params(&self, selector: &str) -> ListParams {
        let params = ListParams::default().labels(selector);
        match self.0.load(Ordering::Acquire) {
            0 => params,
            v => params.at(&v.to_string()).matching(VersionMatch::NotOlderThan),
        }
    }

    /// Lists by `selector` (see [`Seen::params`]).
    pub async fn list<K>(&self, api: &Api<K>, selector: &str) -> Result<Vec<K>>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        Ok(api.list(&self.params(selector)).await?.items)
    }
}

/// What the operator has seen of Jobs and pods.
#[derive(Default, Debug)]
pub struct Fresh {
    pub jobs: Seen,
    pub pods: Seen,
    /// The TaskRuns whose first Job a run's pass is creating with them.
    pub first_jobs: Starting,
}

/// The TaskRuns (by namespace and name) whose first Job is being created by the pass that
/// creates them (see `pipelinerun::first_job`): an expectation, as Kubernetes' own
/// controllers keep. Until that create returned, a look at such a TaskRun would find no Job
/// and create it too, only to be told it exists: in a wide fan-out, a third of the Job
/// creates were such refusals, each a trip through admission and etcd. The TaskRun's look
/// waits instead; the Job's watch event wakes it.
#[derive(Default, Debug)]
pub struct Starting(std::sync::Mutex<std::collections::HashSet<(String, String)>>);

impl Starting {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<(String, String)>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks TaskRun `ns/name` as having its first Job made for it, until the guard drops.
    pub fn expect<'a>(&'a self, ns: &str, name: &str) -> Expecting<'a> {
        let key = (ns.to_string(), name.to_string());
        self.set().insert(key.clone());
        Expecting { starting: self, key }
    }

    /// Whether TaskRun `ns/name` has its first Job being made for it right now.
    pub fn is_expected(&self, ns: &str, name: &str) -> bool {
        self.set().contains(&(ns.to_string(), name.to_string()))
    }
}

/// A first Job being made ([`Starting::expect`]); dropped when its create returned.
#[derive(Debug)]
pub struct Expecting<'a> {
    starting: &'a Starting,
    key: (String, String),
}

impl Drop for Expecting<'_> {
    fn drop(&mut self) {
        self.starting.set().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_job_is_expected_while_its_create_is_in_flight() {
        let starting = Starting::default();
        assert!(!starting.is_expected("ns", "a"));
        {
            let _a = starting.expect("ns", "a");
            assert!(starting.is_expected("ns", "a"));
            assert!(!starting.is_expected("ns", "b"), "only the TaskRun marked");
            assert!(!starting.is_expected("other", "a"), "only in its namespace");
        }
        assert!(!starting.is_expected("ns", "a"), "gone once the create returned");
    }

    #[test]
    fn lists_are_no_older_than_the_newest_version_seen() {
        let seen = Seen::default();
        let params = seen.params("a=b");
        assert_eq!(params.resource_version, None, "nothing seen: from etcd");
        seen.saw(Some("120"));
        seen.saw(Some("90"));
        seen.saw(Some("not-a-number"));
        seen.saw(None);
        let params = seen.params("a=b");
        assert_eq!(params.resource_version.as_deref(), Some("120"));
        assert_eq!(params.version_match, Some(VersionMatch::NotOlderThan));
        assert_eq!(params.label_selector.as_deref(), Some("a=b"));
    }
}
