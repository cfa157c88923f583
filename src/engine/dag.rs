//! The graph of tasks: indices, upstream/downstream edges, a topological order and cycle
//! detection that names the path. Everything is linear in tasks + edges.

use std::collections::HashMap;

/// A directed acyclic graph over task indices `0..len`.
#[derive(Clone, Debug)]
pub struct Dag {
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
    topo: Vec<usize>,
}

/// A cycle found in the graph, as the task indices along it (first == last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle(pub Vec<usize>);

impl Dag {
    /// Builds the graph from `upstream[i]` = the tasks `i` depends on. Fails with one cycle
    /// per strongly connected component that has one (self loops included).
    pub fn new(upstream: Vec<Vec<usize>>) -> Result<Dag, Vec<Cycle>> {
        let n = upstream.len();
        let mut downstream = vec![Vec::new(); n];
        for (task, ups) in upstream.iter().enumerate() {
            for &up in ups {
                downstream[up].push(task);
            }
        }
        // Kahn's algorithm; ties broken by index so the order is stable.
        let mut indegree: Vec<usize> = upstream.iter().map(Vec::len).collect();
        let mut ready: std::collections::VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut topo = Vec::with_capacity(n);
        while let Some(task) = ready.pop_front() {
            topo.push(task);
            for &down in &downstream[task] {
                indegree[down] -= 1;
                if indegree[down] == 0 {
                    ready.push_back(down);
                }
            }
        }
        if topo.len() == n {
            return Ok(Dag {
                upstream,
                downstream,
                topo,
            });
        }
        Err(find_cycles(&upstream, &indegree))
    }

    pub fn len(&self) -> usize {
        self.upstream.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upstream.is_empty()
    }

    /// The tasks `task` depends on.
    pub fn upstream(&self, task: usize) -> &[usize] {
        &self.upstream[task]
    }

    /// The tasks that depend on `task`.
    pub fn downstream(&self, task: usize) -> &[usize] {
        &self.downstream[task]
    }

    /// Every task, each after all of its upstream tasks.
    pub fn topological_order(&self) -> &[usize] {
        &self.topo
    }
}

/// Finds one cycle in each strongly connected component among the tasks Kahn's algorithm
/// could not order (those with `remaining[i] > 0`). Iterative Tarjan, so a deep graph
/// cannot overflow the stack.
fn find_cycles(upstream: &[Vec<usize>], remaining: &[usize]) -> Vec<Cycle> {
    let n = upstream.len();
    let stuck: Vec<bool> = (0..n).map(|i| remaining[i] > 0).collect();
    const UNSEEN: usize = usize::MAX;
    let mut index = vec![UNSEEN; n];
    let mut lowlink = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut components: Vec<Vec<usize>> = Vec::new();
    // Edges followed "downstream-to-upstream" are enough: a cycle is a cycle either way.
    for root in 0..n {
        if !stuck[root] || index[root] != UNSEEN {
            continue;
        }
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next_index;
        lowlink[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut edge)) = call.last_mut() {
            let edges = &upstream[v];
            if *edge < edges.len() {
                let w = edges[*edge];
                *edge += 1;
                if !stuck[w] {
                    continue;
                }
                if index[w] == UNSEEN {
                    index[w] = next_index;
                    lowlink[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    lowlink[v] = lowlink[v].min(index[w]);
                }
            } else {
                call.pop();
                if let Some(&(parent, _)) = call.last() {
                    lowlink[parent] = lowlink[parent].min(lowlink[v]);
                }
                if lowlink[v] == index[v] {
                    let mut component = Vec::new();
                    loop {
                        let w = stack.pop().expect("tarjan stack holds the component");
                        on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    let is_cycle = component.len() > 1 || upstream[v].contains(&v);
                    if is_cycle {
                        components.push(component);
                    }
                }
            }
        }
    }
    let mut cycles: Vec<Cycle> = components.iter().map(|c| cycle_within(upstream, c)).collect();
    cycles.sort_by_key(|c| c.0[0]);
    cycles
}

/// A simple cycle through the smallest task of a strongly connected component, in run order:
/// in `[a, b, c, a]` each task depends on the one before it (`a -> b` reads like Airflow's
/// `a >> b`).
fn cycle_within(upstream: &[Vec<usize>], component: &[usize]) -> Cycle {
    let members: std::collections::HashSet<usize> = component.iter().copied().collect();
    let start = *component.iter().min().expect("component is not empty");
    // BFS from `start` along "depends on" edges until one leads back to `start`.
    // `reached_from[w] = v` means v depends on w.
    let mut reached_from: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut closing = None;
    'search: while let Some(v) = queue.pop_front() {
        for &w in &upstream[v] {
            if w == start {
                closing = Some(v);
                break 'search;
            }
            if members.contains(&w) && !reached_from.contains_key(&w) {
                reached_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let last = closing.expect("a strongly connected component has a cycle through each member");
    // `last` depends on `start`; walking `reached_from` from `last` goes to tasks that depend
    // on the current one, which is run order, until it comes back to `start`.
    let mut path = vec![start, last];
    let mut v = last;
    while v != start {
        v = reached_from[&v];
        path.push(v);
    }
    Cycle(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_a_diamond() {
        // 0 -> {1,2} -> 3
        let dag = Dag::new(vec![vec![], vec![0], vec![0], vec![1, 2]]).unwrap();
        let order = dag.topological_order();
        let pos = |t| order.iter().position(|&x| x == t).unwrap();
        assert!(pos(0) < pos(1) && pos(0) < pos(2) && pos(1) < pos(3) && pos(2) < pos(3));
        assert_eq!(dag.downstream(0), &[1, 2]);
    }

    #[test]
    fn finds_a_two_cycle_and_a_self_loop() {
        // 0 <-> 1, 2 depends on itself, 3 depends on 0 (not in a cycle, but blocked).
        let err = Dag::new(vec![vec![1], vec![0], vec![2], vec![0]]).unwrap_err();
        assert_eq!(err.len(), 2);
        assert_eq!(err[0].0.first(), err[0].0.last());
        assert_eq!(err[0].0.len(), 3);
        assert_eq!(err[1].0, vec![2, 2]);
    }

    #[test]
    fn deep_chain_with_cycle_does_not_overflow() {
        let n = 100_000;
        let mut ups: Vec<Vec<usize>> = (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        ups[0] = vec![n - 1];
        let err = Dag::new(ups).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].0.len(), n + 1);
    }
}
