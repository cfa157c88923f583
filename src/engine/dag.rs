//! The graph of tasks: indices, upstream/downstream edges, a topological order and cycle
//! detection that names the path. Everything is linear in tasks + edges.

use std::collections::HashMap;

/// A directed acyclic graph over task indices `0..len`.
///
/// Edges are stored compressed (one array per direction, sliced by task) rather than as a
/// list per task: the planner walks every task's upstream tasks in dependency order, and
/// thousands of small lists scattered over the heap cost a cache miss each.
#[derive(Clone, Debug)]
pub struct Dag {
    upstream: Adjacency,
    downstream: Adjacency,
    topo: Vec<usize>,
}

/// Neighbours of task `t`: `edges[start[t]..start[t + 1]]`.
#[derive(Clone, Debug)]
struct Adjacency {
    start: Vec<usize>,
    edges: Vec<usize>,
}

impl Adjacency {
    fn of(&self, task: usize) -> &[usize] {
        &self.edges[self.start[task]..self.start[task + 1]]
    }
}

/// A cycle found in the graph, as the task indices along it (first == last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle(pub Vec<usize>);

impl Dag {
    /// Builds the graph from `upstream[i]` = the tasks `i` depends on. Fails with one cycle
    /// per strongly connected component that has one (self loops included).
    pub fn new(upstream: Vec<Vec<usize>>) -> Result<Dag, Vec<Cycle>> {
        let n = upstream.len();
        let mut up_start = Vec::with_capacity(n + 1);
        up_start.push(0);
        for ups in &upstream {
            up_start.push(up_start[up_start.len() - 1] + ups.len());
        }
        let edge_count = up_start[n];
        // Downstream lists by counting sort, each in increasing task order.
        let mut down_start = vec![0; n + 1];
        for &up in upstream.iter().flatten() {
            down_start[up + 1] += 1;
        }
        for i in 0..n {
            down_start[i + 1] += down_start[i];
        }
        let mut down_edges = vec![0; edge_count];
        let mut next = down_start.clone();
        for (task, ups) in upstream.iter().enumerate() {
            for &up in ups {
                down_edges[next[up]] = task;
                next[up] += 1;
            }
        }
        let downstream = Adjacency {
            start: down_start,
            edges: down_edges,
        };

        // Kahn's algorithm; ties broken by index so the order is stable.
        let mut indegree: Vec<usize> = upstream.iter().map(Vec::len).collect();
        let mut ready: std::collections::VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut topo = Vec::with_capacity(n);
        while let Some(task) = ready.pop_front() {
            topo.push(task);
            for &down in downstream.of(task) {
                indegree[down] -= 1;
                if indegree[down] == 0 {
                    ready.push_back(down);
                }
            }
        }
        if topo.len() != n {
            return Err(find_cycles(&upstream, &indegree));
        }
        let mut up_edges = Vec::with_capacity(edge_count);
        for ups in &upstream {
            up_edges.extend_from_slice(ups);
        }
        let upstream = Adjacency {
            start: up_start,
            edges: up_edges,
        };
        Ok(Dag {
            upstream,
            downstream,
            topo,
        })
    }

    pub fn len(&self) -> usize {
        self.topo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topo.is_empty()
    }

    /// The tasks `task` depends on.
    pub fn upstream(&self, task: usize) -> &[usize] {
        self.upstream.of(task)
    }

    /// The tasks that depend on `task`.
    pub fn downstream(&self, task: usize) -> &[usize] {
        self.downstream.of(task)
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

    #[test]
    fn an_empty_graph_is_fine() {
        let dag = Dag::new(vec![]).unwrap();
        assert!(dag.is_empty());
        assert_eq!(dag.len(), 0);
        assert!(dag.topological_order().is_empty());
    }

    #[test]
    fn edges_are_kept_both_ways_in_task_order() {
        // 3 and 1 depend on 0 and 2; 4 on 3.
        let dag = Dag::new(vec![vec![], vec![2, 0], vec![], vec![0, 2], vec![3]]).unwrap();
        assert_eq!(dag.len(), 5);
        assert_eq!(dag.upstream(1), &[2, 0], "as listed");
        assert_eq!(dag.upstream(0), &[] as &[usize]);
        assert_eq!(dag.downstream(0), &[1, 3]);
        assert_eq!(dag.downstream(2), &[1, 3]);
        assert_eq!(dag.downstream(3), &[4]);
        assert_eq!(dag.downstream(4), &[] as &[usize]);
        assert_eq!(dag.topological_order(), &[0, 2, 1, 3, 4], "ties in index order");
    }

    #[test]
    fn a_cycle_behind_a_long_tail_is_reported_once() {
        // 0 <- 1 <- 2 <- 1 (cycle 1,2), and 3..1000 hang off 2.
        let mut ups: Vec<Vec<usize>> = vec![vec![], vec![0, 2], vec![1]];
        ups.extend((3..1000).map(|i| vec![i - 1]));
        let err = Dag::new(ups).unwrap_err();
        assert_eq!(err, vec![Cycle(vec![1, 2, 1])]);
    }
}
