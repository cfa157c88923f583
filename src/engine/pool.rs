//! Pools (Airflow's pools): how a task's priority is worked out from the weights of the
//! pipeline's tasks, in which order tasks waiting for a pool start, and which of them fit in
//! the slots that are free. Both drivers take these decisions from here: the operator over
//! the TaskRuns of a namespace, `weir run` over the tasks of its run.
//!
//! The queue is strict: tasks start in order of priority (higher first), then age (older
//! first), then name, and a task that needs more slots than are free waits at the head of
//! the line, holding back the tasks behind it, until enough are free. Airflow lets smaller
//! tasks past instead, and a task taking several slots can starve there behind a stream of
//! small ones; here it cannot. A task that needs more slots than the pool has at all waits
//! aside (`TooLarge`) and holds back nobody.

use super::dag::Dag;
use super::quote::{ordinal, q};
use crate::api::WeightRule;
use jiff::Timestamp;

/// The weight of a task that sets no `priorityWeight` (Airflow's default).
pub const DEFAULT_WEIGHT: i64 = 1;

/// The priority of every task of a graph: its own weight, plus, by its rule, the weights
/// of every task downstream of it (each counted once) or of every task upstream of it.
/// `weights` and `rules` are indexed like the graph's tasks.
pub fn priorities(dag: &Dag, weights: &[i64], rules: &[WeightRule]) -> Vec<i64> {
    let n = dag.len();
    // Visited marks stamped with the task being summed, so one array serves every walk.
    let mut seen = vec![usize::MAX; n];
    let mut stack = Vec::new();
    (0..n)
        .map(|task| {
            let next: fn(&Dag, usize) -> &[usize] = match rules[task] {
                WeightRule::Absolute => return weights[task],
                WeightRule::Downstream => Dag::downstream,
                WeightRule::Upstream => Dag::upstream,
            };
            let mut sum = weights[task];
            seen[task] = task;
            stack.push(task);
            while let Some(t) = stack.pop() {
                for &other in next(dag, t) {
                    if seen[other] != task {
                        seen[other] = task;
                        sum = sum.saturating_add(weights[other]);
                        stack.push(other);
                    }
                }
            }
            sum
        })
        .collect()
}

/// A task that wants slots of a pool now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// What tells tasks apart when priority and age are equal (the TaskRun's name).
    pub key: &'a str,
    pub slots: u32,
    pub priority: i64,
    /// Since when it waits: the TaskRun's creation.
    pub since: Timestamp,
}

/// Where a candidate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Its slots are free: it may take them now.
    Admitted,
    /// It waits; `position` is its place in line, 1 for the first.
    Queued { position: usize },
    /// It needs more slots than the pool has: it waits until the pool is made larger.
    TooLarge,
}

/// The queue of a pool: every candidate's place, and the ones waiting in line, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// By candidate index.
    pub places: Vec<Place>,
    /// Candidate indices in the order they start: those admitted now, then those in line.
    pub order: Vec<usize>,
}

/// The order candidates start in: priority (higher first), then age (older first), then key.
pub fn order(waiting: &[Candidate<'_>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..waiting.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&waiting[a], &waiting[b]);
        b.priority
            .cmp(&a.priority)
            .then(a.since.cmp(&b.since))
            .then(a.key.cmp(b.key))
    });
    order
}

/// Which of `waiting` may take slots of a pool of `slots` slots of which `occupied` are held,
/// and where the others stand.
pub fn admit(slots: u32, occupied: u32, waiting: &[Candidate<'_>]) -> Decision {
    let mut free = slots.saturating_sub(occupied);
    let mut places = vec![Place::TooLarge; waiting.len()];
    let mut blocked = false;
    let mut position = 0;
    let mut in_order = Vec::with_capacity(waiting.len());
    for i in order(waiting) {
        let need = waiting[i].slots;
        if need > slots {
            continue;
        }
        in_order.push(i);
        if !blocked && need <= free {
            free -= need;
            places[i] = Place::Admitted;
        } else {
            blocked = true;
            position += 1;
            places[i] = Place::Queued { position };
        }
    }
    Decision {
        places,
        order: in_order,
    }
}

/// Slots held: the sum of the holders' slots.
pub fn occupied(held: impl IntoIterator<Item = u32>) -> u32 {
    held.into_iter().fold(0, u32::saturating_add)
}

/// What a waiting task says about why it waits, the same for the operator and `weir run`.
pub fn waiting_message(pool: &str, slots: u32, occupied: u32, need: u32, place: Place) -> String {
    match place {
        Place::Admitted => format!("taking {need} of the {slots} slot(s) of pool {}", q(pool)),
        Place::Queued { position } => format!(
            "waiting for {need} slot(s) of pool {}: {occupied} of {slots} occupied; {} in line",
            q(pool),
            ordinal(position)
        ),
        Place::TooLarge => format!(
            "waiting: the task takes {need} slot(s) (poolSlots) but pool {} has only {slots}; it starts once the pool is made larger",
            q(pool)
        ),
    }
}

/// What a task whose pool does not exist says.
pub fn missing_pool_message(pool: &str, namespace: &str) -> String {
    format!(
        "waiting: pool {} does not exist in namespace {}; the task starts once it is created (kind: Pool)",
        q(pool),
        q(namespace)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn candidate(key: &str, slots: u32, priority: i64, since: i64) -> Candidate<'_> {
        Candidate {
            key,
            slots,
            priority,
            since: ts(since),
        }
    }

    /// a -> b -> d, a -> c -> d, e alone.
    fn diamond() -> Dag {
        Dag::new(vec![vec![], vec![0], vec![0], vec![1, 2], vec![]]).unwrap()
    }

    #[test]
    fn weight_rules_add_up_as_in_airflow() {
        let dag = diamond();
        let weights = [1, 2, 3, 4, 5];
        let all = |rule| priorities(&dag, &weights, &[rule; 5]);
        // Downstream: d is counted once for a although two paths lead to it.
        assert_eq!(all(WeightRule::Downstream), [10, 6, 7, 4, 5]);
        assert_eq!(all(WeightRule::Upstream), [1, 3, 4, 10, 5]);
        assert_eq!(all(WeightRule::Absolute), [1, 2, 3, 4, 5]);
        // Each task by its own rule.
        let mixed = [
            WeightRule::Absolute,
            WeightRule::Upstream,
            WeightRule::Downstream,
            WeightRule::Downstream,
            WeightRule::Upstream,
        ];
        assert_eq!(priorities(&dag, &weights, &mixed), [1, 3, 7, 4, 5]);
    }

    #[test]
    fn priorities_saturate_instead_of_overflowing() {
        let dag = Dag::new(vec![vec![], vec![0]]).unwrap();
        let p = priorities(&dag, &[i64::MAX, i64::MAX], &[WeightRule::Downstream; 2]);
        assert_eq!(p, [i64::MAX, i64::MAX]);
    }

    #[test]
    fn higher_priority_then_older_then_name_goes_first() {
        let waiting = [
            candidate("old-low", 1, 1, 10),
            candidate("new-high", 1, 5, 50),
            candidate("b-old-high", 1, 5, 20),
            candidate("a-old-high", 1, 5, 20),
        ];
        assert_eq!(order(&waiting), [3, 2, 1, 0]);
        let decision = admit(2, 0, &waiting);
        assert_eq!(
            decision.places,
            [
                Place::Queued { position: 2 },
                Place::Queued { position: 1 },
                Place::Admitted,
                Place::Admitted
            ]
        );
        assert_eq!(decision.order, [3, 2, 1, 0]);
    }

    #[test]
    fn a_task_needing_more_than_is_free_holds_back_those_behind_it() {
        let waiting = [candidate("big", 2, 5, 10), candidate("small", 1, 1, 10)];
        // One slot free: the big task waits for both, and the small one may not pass it.
        let decision = admit(3, 2, &waiting);
        assert_eq!(
            decision.places,
            [Place::Queued { position: 1 }, Place::Queued { position: 2 }]
        );
        // Both free: the big one goes; then nothing is left for the small one.
        assert_eq!(
            admit(3, 1, &waiting).places,
            [Place::Admitted, Place::Queued { position: 1 }]
        );
    }

    #[test]
    fn a_task_larger_than_the_pool_waits_aside_and_holds_back_nobody() {
        let waiting = [candidate("huge", 5, 9, 1), candidate("small", 1, 1, 2)];
        let decision = admit(2, 0, &waiting);
        assert_eq!(decision.places, [Place::TooLarge, Place::Admitted]);
        assert_eq!(decision.order, [1]);
        assert_eq!(
            waiting_message("gpu", 2, 0, 5, Place::TooLarge),
            "waiting: the task takes 5 slot(s) (poolSlots) but pool \"gpu\" has only 2; it starts once the pool is made larger"
        );
    }

    #[test]
    fn a_pool_made_smaller_than_what_is_held_admits_nothing() {
        let waiting = [candidate("a", 1, 1, 1)];
        assert_eq!(admit(1, 3, &waiting).places, [Place::Queued { position: 1 }]);
        assert_eq!(
            waiting_message("db", 1, 3, 1, Place::Queued { position: 1 }),
            "waiting for 1 slot(s) of pool \"db\": 3 of 1 occupied; 1st in line"
        );
        assert_eq!(admit(0, 0, &waiting).places, [Place::TooLarge]);
    }

    fn candidates() -> impl Strategy<Value = Vec<(u32, i64, i64)>> {
        prop::collection::vec((1u32..4, -3i64..3, 0i64..5), 0..12)
    }

    proptest! {
        /// What is admitted fits in what is free, is a prefix of the order among the tasks
        /// that fit in the pool at all, and the order is by priority, then age, then name.
        #[test]
        fn admission_never_overshoots_and_follows_the_order(
            slots in 0u32..6,
            occupied in 0u32..8,
            specs in candidates(),
        ) {
            let keys: Vec<String> = (0..specs.len()).map(|i| format!("t{i:02}")).collect();
            let waiting: Vec<Candidate<'_>> = specs
                .iter()
                .zip(&keys)
                .map(|(&(s, p, since), k)| candidate(k, s, p, since))
                .collect();
            let decision = admit(slots, occupied, &waiting);
            let taken: u32 = waiting
                .iter()
                .zip(&decision.places)
                .filter(|(_, p)| **p == Place::Admitted)
                .map(|(c, _)| c.slots)
                .sum();
            prop_assert!(taken <= slots.saturating_sub(occupied));
            let mut seen_waiting = false;
            for pair in decision.order.windows(2) {
                let (a, b) = (&waiting[pair[0]], &waiting[pair[1]]);
                prop_assert!(
                    (-a.priority, a.since, a.key) <= (-b.priority, b.since, b.key)
                );
            }
            for (n, &i) in decision.order.iter().enumerate() {
                match decision.places[i] {
                    Place::Admitted => prop_assert!(!seen_waiting, "admitted behind a waiting task"),
                    Place::Queued { position } => {
                        seen_waiting = true;
                        prop_assert_eq!(position, n + 1 - decision.order.iter().take(n).filter(|&&j| decision.places[j] == Place::Admitted).count());
                    }
                    Place::TooLarge => prop_assert!(false, "a task that fits is never too large"),
                }
            }
            for (c, place) in waiting.iter().zip(&decision.places) {
                prop_assert_eq!(*place == Place::TooLarge, c.slots > slots);
            }
        }

        /// A pool driven to the end (each pass: holders may finish, then admission) never
        /// holds more than its slots, and every task that fits eventually runs.
        #[test]
        fn a_pool_driven_to_the_end_never_overshoots(
            slots in 1u32..5,
            specs in candidates(),
            finishing in prop::collection::vec(any::<bool>(), 64),
        ) {
            let keys: Vec<String> = (0..specs.len()).map(|i| format!("t{i:02}")).collect();
            let mut held: Vec<usize> = Vec::new();
            let mut done = vec![false; specs.len()];
            for pass in 0..200 {
                if !held.is_empty() && (finishing[pass % finishing.len()] || pass > 64) {
                    let i = held.remove(0);
                    done[i] = true;
                }
                let waiting_ix: Vec<usize> = (0..specs.len())
                    .filter(|&i| !done[i] && !held.contains(&i) && specs[i].0 <= slots)
                    .collect();
                let waiting: Vec<Candidate<'_>> = waiting_ix
                    .iter()
                    .map(|&i| candidate(&keys[i], specs[i].0, specs[i].1, specs[i].2))
                    .collect();
                let occupied_now = occupied(held.iter().map(|&i| specs[i].0));
                let decision = admit(slots, occupied_now, &waiting);
                for (k, place) in decision.places.iter().enumerate() {
                    if *place == Place::Admitted {
                        held.push(waiting_ix[k]);
                    }
                }
                prop_assert!(occupied(held.iter().map(|&i| specs[i].0)) <= slots);
            }
            for (i, spec) in specs.iter().enumerate() {
                prop_assert!(done[i] || held.contains(&i) || spec.0 > slots, "task {} never ran", i);
            }
        }
    }
}
