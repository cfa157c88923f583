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
}

#[cfg(test)]
mod tests {
    use super::*;

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
