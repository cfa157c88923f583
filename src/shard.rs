//! Sharding: `N` operator processes (shards), each running the controllers for its own
//! share of the namespaces (see docs/sharding.md).
//!
//! A namespace belongs to shard `fnv1a_64(name) % N`: the 64-bit FNV-1a hash of the
//! namespace name's UTF-8 bytes (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`). It is fixed here and never depends on the Rust version or the process
//! (unlike `std`'s `DefaultHasher`), so every replica of every version agrees on who owns
//! what, and so can a person with a few lines of any language ([`shard_of`]).
//!
//! A shard drops the objects of other shards' namespaces as they come off every watch
//! ([`Shard::owned_events`] before the watch cache, [`Shard::gate`] before a wake-up), so
//! its caches hold only its share and it reconciles nothing else. Each shard elects its own
//! leader on a Lease of its own ([`Shard::lease_name`]).

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::watcher;
use std::str::FromStr;

/// The shard of this process: `index` of `count`. One shard of one (the default) owns every
/// namespace, which is the operator without sharding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

/// Why the shard flags make no shard. Every message names the flag to fix.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--shards (WEIR_SHARDS) must be at least 1")]
    NoShards,
    #[error(
        "--shard (WEIR_SHARD) {index} is out of range: with --shards {count} the shards are 0 to {last}",
        last = count - 1
    )]
    OutOfRange { index: u32, count: u32 },
    #[error(
        "--shard (WEIR_SHARD) is required with --shards {count}: a number from 0 to {last}, or `pod-ordinal` to take it from POD_NAME (a StatefulSet pod's ordinal)",
        last = count - 1
    )]
    Missing { count: u32 },
    #[error("--shard (WEIR_SHARD) {given:?} is neither a shard number nor `pod-ordinal`")]
    Unreadable { given: String },
    #[error(
        "--shard pod-ordinal takes the shard from POD_NAME, which is not set (the chart sets it from the pod's metadata.name)"
    )]
    NoPodName,
    #[error(
        "--shard pod-ordinal: POD_NAME {name:?} does not end in -<ordinal> as a StatefulSet pod's name does (for example weir-operator-3)"
    )]
    NoOrdinal { name: String },
}

impl ShardError {
    /// A short, static category for logs.
    pub fn category(&self) -> &'static str {
        match self {
            ShardError::NoShards | ShardError::OutOfRange { .. } | ShardError::Missing { .. } => {
                "shard-range"
            }
            ShardError::Unreadable { .. } => "shard-flag",
            ShardError::NoPodName | ShardError::NoOrdinal { .. } => "pod-name",
        }
    }
}

/// What `--shard` says: a number, or take it from the pod's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardChoice {
    /// This shard number.
    Index(u32),
    /// The ordinal at the end of `POD_NAME` (`weir-operator-5` → 5), modulo the shard count,
    /// so one StatefulSet of `shards × replicas` pods runs every shard `replicas` times.
    PodOrdinal,
}

/// The word `--shard` takes for [`ShardChoice::PodOrdinal`].
pub const POD_ORDINAL: &str = "pod-ordinal";

impl FromStr for ShardChoice {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, ShardError> {
        let text = text.trim();
        if text == POD_ORDINAL {
            return Ok(ShardChoice::PodOrdinal);
        }
        text.parse()
            .map(ShardChoice::Index)
            .map_err(|_| ShardError::Unreadable {
                given: text.to_string(),
            })
    }
}

impl Shard {
    /// One shard that owns every namespace: no sharding.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// The shard the flags make: `--shards` (`count`), `--shard` (`choice`, needed when
    /// there is more than one shard) and `POD_NAME` (`pod_name`, for `pod-ordinal`).
    pub fn from_flags(
        count: u32,
        choice: Option<ShardChoice>,
        pod_name: Option<&str>,
    ) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        match choice {
            None if count == 1 => Ok(Shard::WHOLE),
            None => Err(ShardError::Missing { count }),
            Some(ShardChoice::Index(index)) => Shard::new(index, count),
            Some(ShardChoice::PodOrdinal) => {
                let name = pod_name.filter(|n| !n.is_empty()).ok_or(ShardError::NoPodName)?;
                let ordinal = pod_ordinal(name).ok_or_else(|| ShardError::NoOrdinal { name: name.into() })?;
                Shard::new(ordinal % count, count)
            }
        }
    }

    /// This shard's number, from 0.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many shards there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this shard owns every namespace (there is only one shard).
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Whether the objects of `namespace` are this shard's.
    pub fn owns(&self, namespace: &str) -> bool {
        self.is_whole() || shard_of(namespace, self.count) == self.index
    }

    /// Whether this shard handles an object: one of a namespace it owns. A cluster-scoped
    /// object (no namespace) is every shard's.
    pub fn sees<K: Resource>(&self, object: &K) -> bool {
        object.meta().namespace.as_deref().is_none_or(|ns| self.owns(ns))
    }

    /// The Lease this shard elects its leader on: `base` itself with one shard (so an
    /// installation that was not sharded keeps its Lease), else `<base>-shard-<index>`.
    pub fn lease_name(&self, base: &str) -> String {
        if self.is_whole() {
            base.to_string()
        } else {
            format!("{base}-shard-{}", self.index)
        }
    }

    /// The events of a watch without those of objects other shards own, so they never
    /// reach the watch cache (which then holds this shard's share only). Restarts and
    /// the end of a first list pass.
    pub fn owned_events<K, E, S>(
        self,
        events: S,
    ) -> impl Stream<Item = Result<watcher::Event<K>, E>> + Send + use<K, E, S>
    where
        K: Resource + Send,
        E: Send,
        S: Stream<Item = Result<watcher::Event<K>, E>> + Send,
    {
        events.filter(move |event| {
            let keep = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o)) => {
                    self.sees(o)
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) | Err(_) => true,
            };
            std::future::ready(keep)
        })
    }

    /// `mapper` (what a watched object wakes up) run only for objects this shard sees;
    /// others wake nothing. Every wake-up in Weir stays in the object's namespace, so an
    /// object of another shard could only wake objects of that shard.
    pub fn gate<O, I>(
        self,
        mapper: impl Fn(O) -> I,
    ) -> impl Fn(O) -> std::iter::Flatten<std::option::IntoIter<I>>
    where
        O: Resource,
        I: IntoIterator,
    {
        move |object| {
            let seen = self.sees(&object);
            seen.then(|| mapper(object)).into_iter().flatten()
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard {} of {}", self.index, self.count)
    }
}

/// The 64-bit FNV-1a hash of `bytes`.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The shard that owns `namespace` among `shards` (0 when `shards` is 0 or 1).
pub fn shard_of(namespace: &str, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    (fnv1a_64(namespace.as_bytes()) % u64::from(shards)) as u32
}

/// The ordinal at the end of a StatefulSet pod's name (`weir-operator-12` → 12).
pub fn pod_ordinal(pod_name: &str) -> Option<u32> {
    let (stem, digits) = pod_name.rsplit_once('-')?;
    if stem.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference (Fowler, Noll, Vo): FNV-1a 64 of "", "a" and "foobar".
        assert_eq!(fnv1a_64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn namespaces_map_to_fixed_shards() {
        // Pinned (computed apart, in Python): a change here moves every installation's
        // namespaces between shards.
        let pinned = [
            ("default", [0, 0, 2]),
            ("team-a", [0, 1, 2]),
            ("team-b", [1, 0, 3]),
            ("etl", [0, 2, 0]),
            ("weir-system", [0, 1, 0]),
        ];
        for (ns, shards) in pinned {
            assert_eq!([2, 3, 4].map(|n| shard_of(ns, n)), shards, "{ns}");
        }
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
    }

    #[test]
    fn pod_ordinals() {
        assert_eq!(pod_ordinal("weir-operator-0"), Some(0));
        assert_eq!(pod_ordinal("weir-operator-12"), Some(12));
        assert_eq!(pod_ordinal("weir-0-operator-7"), Some(7));
        for bad in [
            "weir-operator",
            "weir-operator-",
            "-3",
            "7",
            "weir-operator-x1",
            "weir-operator-+1",
            "",
        ] {
            assert_eq!(pod_ordinal(bad), None, "{bad:?}");
        }
        assert_eq!(pod_ordinal("w-99999999999"), None, "beyond u32");
    }

    #[test]
    fn flags_make_a_shard_or_say_which_flag_is_wrong() {
        assert_eq!(Shard::from_flags(1, None, None), Ok(Shard::WHOLE));
        assert_eq!(
            Shard::from_flags(3, Some(ShardChoice::Index(2)), None).map(|s| s.index()),
            Ok(2)
        );
        let pod = |name| Shard::from_flags(2, Some(ShardChoice::PodOrdinal), name);
        assert_eq!(pod(Some("weir-operator-3")), Shard::new(1, 2));
        assert_eq!(pod(Some("weir-operator-2")), Shard::new(0, 2));

        let errors = [
            (Shard::from_flags(0, None, None), "--shards"),
            (
                Shard::from_flags(2, Some(ShardChoice::Index(2)), None),
                "--shard (WEIR_SHARD) 2 is out of range",
            ),
            (
                Shard::from_flags(2, None, None),
                "--shard (WEIR_SHARD) is required with --shards 2",
            ),
            (pod(None), "POD_NAME, which is not set"),
            (pod(Some("")), "POD_NAME, which is not set"),
            (
                pod(Some("weir-operator-abc")),
                "\"weir-operator-abc\" does not end in -<ordinal>",
            ),
        ];
        for (result, words) in errors {
            let message = result.unwrap_err().to_string();
            assert!(message.contains(words), "{message:?} lacks {words:?}");
            assert!(message.contains("--shard"), "{message:?} names no flag");
        }
    }

    #[test]
    fn the_shard_flag_reads_numbers_and_pod_ordinal() {
        assert_eq!("3".parse(), Ok(ShardChoice::Index(3)));
        assert_eq!(" pod-ordinal ".parse(), Ok(ShardChoice::PodOrdinal));
        let err = "-1".parse::<ShardChoice>().unwrap_err();
        assert_eq!(err.category(), "shard-flag");
        assert!(err.to_string().contains("\"-1\" is neither"), "{err}");
    }

    #[test]
    fn one_shard_keeps_the_lease_name_more_shards_number_theirs() {
        assert_eq!(Shard::WHOLE.lease_name("weir-operator"), "weir-operator");
        assert_eq!(
            Shard::new(1, 3).unwrap().lease_name("weir-operator"),
            "weir-operator-shard-1"
        );
        assert_eq!(Shard::new(1, 3).unwrap().to_string(), "shard 1 of 3");
    }

    fn config_map(ns: &str) -> k8s_openapi::api::core::v1::ConfigMap {
        k8s_openapi::api::core::v1::ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("c".into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A namespace `shard` owns, and one it does not.
    fn mine_and_theirs(shard: Shard) -> (String, String) {
        let names: Vec<String> = (0..64).map(|i| format!("ns-{i}")).collect();
        let mine = names
            .iter()
            .find(|n| shard.owns(n))
            .expect("some namespace is mine");
        let theirs = names
            .iter()
            .find(|n| !shard.owns(n))
            .expect("some namespace is theirs");
        (mine.clone(), theirs.clone())
    }

    #[tokio::test]
    async fn another_shards_objects_never_reach_the_cache() {
        use watcher::Event::*;
        let shard = Shard::new(0, 2).unwrap();
        let (mine, theirs) = mine_and_theirs(shard);
        let events = futures::stream::iter(vec![
            Ok(Init),
            Ok(InitApply(config_map(&mine))),
            Ok(InitApply(config_map(&theirs))),
            Ok(InitDone),
            Ok(Apply(config_map(&theirs))),
            Ok(Delete(config_map(&mine))),
            Ok(Delete(config_map(&theirs))),
            Err("watch failed"),
        ]);
        let kept: Vec<String> = shard
            .owned_events(events)
            .map(|e| match e {
                Ok(Init) => "init".to_string(),
                Ok(InitDone) => "done".to_string(),
                Ok(InitApply(o)) => format!("list {}", o.metadata.namespace.unwrap()),
                Ok(Apply(o)) => format!("apply {}", o.metadata.namespace.unwrap()),
                Ok(Delete(o)) => format!("delete {}", o.metadata.namespace.unwrap()),
                Err(e) => e.to_string(),
            })
            .collect()
            .await;
        let list = format!("list {mine}");
        let delete = format!("delete {mine}");
        assert_eq!(
            kept,
            ["init", list.as_str(), "done", delete.as_str(), "watch failed"]
        );
    }

    #[test]
    fn another_shards_objects_wake_nothing_cluster_scoped_ones_wake_every_shard() {
        let shard = Shard::new(1, 2).unwrap();
        let (mine, theirs) = mine_and_theirs(shard);
        let wake = shard.gate(|o: k8s_openapi::api::core::v1::ConfigMap| o.metadata.namespace);
        assert_eq!(wake(config_map(&mine)).collect::<Vec<_>>(), vec![mine.clone()]);
        assert_eq!(wake(config_map(&theirs)).count(), 0);
        assert!(shard.sees(&k8s_openapi::api::core::v1::Namespace::default()));
        assert!(Shard::WHOLE.sees(&config_map(&theirs)));
    }

    proptest! {
        #[test]
        fn every_namespace_has_exactly_one_shard_in_range(ns in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", count in 1u32..64) {
            let shard = shard_of(&ns, count);
            prop_assert!(shard < count);
            let owners: Vec<u32> = (0..count).filter(|i| Shard::new(*i, count).unwrap().owns(&ns)).collect();
            prop_assert_eq!(owners, vec![shard]);
        }

        #[test]
        fn a_statefulset_of_shards_times_replicas_runs_each_shard_replicas_times(count in 1u32..16, replicas in 1u32..5) {
            let mut per_shard = vec![0u32; count as usize];
            for ordinal in 0..count * replicas {
                let name = format!("weir-operator-{ordinal}");
                let shard = Shard::from_flags(count, Some(ShardChoice::PodOrdinal), Some(&name)).unwrap();
                per_shard[shard.index() as usize] += 1;
            }
            prop_assert!(per_shard.iter().all(|n| *n == replicas), "{:?}", per_shard);
        }
    }
}
