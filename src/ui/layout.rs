//! A layered (Sugiyama-style) drawing of a directed graph, left to right: what the UI's run
//! graph is drawn from. Pure and deterministic: the same nodes and edges always give the same
//! picture, so a page that refreshes does not jump about.
//!
//! The classic four steps, each kept linear or near-linear so that a run of ten thousand
//! tasks lays out in well under a second (see `benches/ui.rs` and docs/ui.md):
//!
//! 1. **Cycles** are broken, not refused: runs come from validated pipelines, but a drawing
//!    must never fail. A depth-first search in index order reverses its back edges; reversed
//!    edges are still drawn, pointing the right way, and flagged.
//! 2. **Layers** by longest path from the sources, then every source that feeds something is
//!    pulled right to just before its first consumer, so that it does not drag a long edge
//!    across the picture. Every edge then goes from a lower to a higher layer, and an edge
//!    spanning several layers gets one dummy vertex per layer in between.
//! 3. **Order within layers**: barycenter sweeps down and up, each followed by transposition
//!    of neighbours where that removes crossings; the best order seen (counted exactly with
//!    an accumulator tree, Barth–Jünger–Mutzel) is kept. Sweeps and transposition passes are
//!    capped, so cost grows with the graph, not with how unlucky the order is.
//! 4. **Coordinates**: columns are as wide as their widest node; within a column, vertices
//!    keep their order and never overlap, and each is pulled towards the mean position of
//!    its neighbours by an exact weighted least-squares fit under those constraints (pool
//!    adjacent violators). Edges between dummies weigh most, so long edges run straight.
//!
//! Edge routes are polylines through their dummies' lanes.

/// A node's box.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Size {
    pub width: f64,
    pub height: f64,
}

/// How far apart things are and how much work the ordering may do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Horizontal space between columns (edges run there).
    pub layer_gap: f64,
    /// Vertical space between two nodes of a column.
    pub node_gap: f64,
    /// Vertical space next to an edge passing through a column.
    pub edge_gap: f64,
    /// Most barycenter sweeps (each one down and one up).
    pub max_sweeps: usize,
    /// Most transposition passes over one layer after each sweep step.
    pub max_transpose_passes: usize,
    /// Rounds of coordinate refinement (each one down and one up).
    pub coordinate_rounds: usize,
    /// Most dummy vertices in all. Past it, the longest edges are drawn as straight lines
    /// from end to end, left out of the ordering: a graph whose edges mostly span many
    /// layers would otherwise cost edges × layers.
    pub max_dummies: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            layer_gap: 64.0,
            node_gap: 16.0,
            edge_gap: 8.0,
            max_sweeps: 8,
            max_transpose_passes: 4,
            coordinate_rounds: 8,
            max_dummies: 100_000,
        }
    }
}

/// Where a node went: `x`, `y` is its top-left corner.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    /// Column, from 0 at the left.
    pub layer: usize,
    /// Position in its column, from 0 at the top (dummies counted).
    pub order: usize,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// One input edge's drawing, from the right side of `from` to the left side of `to`.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub from: usize,
    pub to: usize,
    /// At least two points; the first on `from`'s box, the last on `to`'s.
    pub points: Vec<(f64, f64)>,
    /// The edge closed a cycle and was laid out backwards (it is still drawn from `from`
    /// to `to`, going right to left).
    pub reversed: bool,
}

/// The whole drawing.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// One per input node, in input order.
    pub nodes: Vec<Placed>,
    /// One per distinct input edge kept (self loops and out-of-range ends are left out),
    /// in the order of first appearance.
    pub routes: Vec<Route>,
    pub width: f64,
    pub height: f64,
    /// Number of columns.
    pub layers: usize,
    /// Edge crossings between adjacent columns in the final order (edges drawn straight
    /// past `max_dummies` not counted).
    pub crossings: usize,
    /// Edges drawn straight across because of `max_dummies`.
    pub straight_edges: usize,
}

/// Lays out `sizes.len()` nodes with `edges` (`(from, to)` indices into `sizes`). Edges that
/// point outside `sizes`, self loops and repeats are ignored; cycles are broken. Sizes that are
/// not finite or negative count as zero. Never panics.
pub fn layout(sizes: &[Size], edges: &[(usize, usize)], options: &Options) -> Layout {
    let n = sizes.len();
    let sizes: Vec<Size> = sizes.iter().map(|s| sanitize(*s)).collect();
    let edges = distinct_edges(n, edges);
    let reversed = back_edges(n, &edges);
    let directed: Vec<(usize, usize)> = edges
        .iter()
        .zip(&reversed)
        .map(|(&(a, b), &r)| if r { (b, a) } else { (a, b) })
        .collect();
    let layer = assign_layers(n, &directed);
    let through = through_columns(&layer, &directed, options.max_dummies);
    let mut graph = LayeredGraph::build(&sizes, &layer, &directed, &through);
    let crossings = graph.order(options);
    let (column_x, column_width) = graph.columns(options);
    let y = graph.coordinates(options);
    let top = graph
        .vertices
        .iter()
        .zip(&y)
        .map(|(v, &y)| y - v.height / 2.0)
        .fold(f64::INFINITY, f64::min);
    let top = if top.is_finite() { top } else { 0.0 };
    let mut nodes = Vec::with_capacity(n);
    let mut height: f64 = 0.0;
    for (i, size) in sizes.iter().enumerate() {
        let l = graph.vertices[i].layer;
        let x = column_x[l] + (column_width[l] - size.width) / 2.0;
        let y = y[i] - size.height / 2.0 - top;
        height = height.max(y + size.height);
        nodes.push(Placed {
            layer: l,
            order: graph.position[i],
            x,
            y,
            width: size.width,
            height: size.height,
        });
    }
    let routes = edges
        .iter()
        .enumerate()
        .map(|(e, &(from, to))| {
            let mut points = vec![right_side(&nodes[directed[e].0])];
            for &d in graph.chains[e].iter().flatten() {
                let l = graph.vertices[d].layer;
                let dy = y[d] - top;
                points.push((column_x[l], dy));
                points.push((column_x[l] + column_width[l], dy));
            }
            points.push(left_side(&nodes[directed[e].1]));
            if reversed[e] {
                points.reverse();
            }
            Route {
                from,
                to,
                points,
                reversed: reversed[e],
            }
        })
        .collect();
    let width = match (column_x.last(), column_width.last()) {
        (Some(x), Some(w)) => x + w,
        _ => 0.0,
    };
    Layout {
        nodes,
        routes,
        width,
        height,
        layers: column_x.len(),
        crossings,
        straight_edges: through.iter().filter(|t| !**t).count(),
    }
}

/// Which edges get dummies: all of them unless that makes more than `budget`, then all but
/// the longest (ties broken by input order, so the choice is deterministic).
fn through_columns(layer: &[usize], edges: &[(usize, usize)], budget: usize) -> Vec<bool> {
    let span = |&(a, b): &(usize, usize)| layer[b] - layer[a] - 1;
    let total: usize = edges.iter().map(span).sum();
    let mut through = vec![true; edges.len()];
    if total <= budget {
        return through;
    }
    let mut longest: Vec<usize> = (0..edges.len()).collect();
    longest.sort_by_key(|&e| (std::cmp::Reverse(span(&edges[e])), e));
    let mut total = total;
    for e in longest {
        if total <= budget {
            break;
        }
        total -= span(&edges[e]);
        through[e] = false;
    }
    through
}

fn sanitize(size: Size) -> Size {
    let clean = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
    Size {
        width: clean(size.width),
        height: clean(size.height),
    }
}

fn right_side(p: &Placed) -> (f64, f64) {
    (p.x + p.width, p.y + p.height / 2.0)
}

fn left_side(p: &Placed) -> (f64, f64) {
    (p.x, p.y + p.height / 2.0)
}

/// Edges with both ends in range, no self loops, each pair once, in first-seen order.
fn distinct_edges(n: usize, edges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut seen = std::collections::HashSet::with_capacity(edges.len());
    edges
        .iter()
        .copied()
        .filter(|&(a, b)| a < n && b < n && a != b && seen.insert((a, b)))
        .collect()
}

/// Which edges a depth-first search (roots and neighbours in index order) finds going back
/// to a vertex still on its stack. Reversing exactly those leaves the graph acyclic.
fn back_edges(n: usize, edges: &[(usize, usize)]) -> Vec<bool> {
    let out = adjacency(n, edges.iter().enumerate().map(|(e, &(a, _))| (a, e)));
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut mark = vec![Mark::New; n];
    let mut back = vec![false; edges.len()];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        mark[root] = Mark::OnStack;
        stack.push((root, 0));
        while let Some((v, next)) = stack.last_mut() {
            let v = *v;
            if let Some(&e) = out[v].get(*next) {
                *next += 1;
                let w = edges[e].1;
                match mark[w] {
                    Mark::New => {
                        mark[w] = Mark::OnStack;
                        stack.push((w, 0));
                    }
                    Mark::OnStack => back[e] = true,
                    Mark::Done => {}
                }
            } else {
                mark[v] = Mark::Done;
                stack.pop();
            }
        }
    }
    back
}

/// `lists[k]` = the values paired with key `k`, in input order.
fn adjacency(n: usize, pairs: impl Iterator<Item = (usize, usize)>) -> Vec<Vec<usize>> {
    let mut lists = vec![Vec::new(); n];
    for (k, v) in pairs {
        lists[k].push(v);
    }
    lists
}

/// Longest path from the sources, then sources pulled right to just before their first
/// successor. `edges` must be acyclic.
fn assign_layers(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let down = adjacency(n, edges.iter().copied());
    let mut indegree = vec![0usize; n];
    for &(_, b) in edges {
        indegree[b] += 1;
    }
    let mut layer = vec![0usize; n];
    let mut ready: std::collections::VecDeque<usize> = (0..n).filter(|&v| indegree[v] == 0).collect();
    while let Some(v) = ready.pop_front() {
        for &w in &down[v] {
            layer[w] = layer[w].max(layer[v] + 1);
            indegree[w] -= 1;
            if indegree[w] == 0 {
                ready.push_back(w);
            }
        }
    }
    let mut has_up = vec![false; n];
    for &(_, b) in edges {
        has_up[b] = true;
    }
    for v in 0..n {
        if !has_up[v]
            && let Some(first) = down[v].iter().map(|&w| layer[w]).min()
        {
            layer[v] = first - 1;
        }
    }
    layer
}

/// A vertex of the layered graph: an input node, or a dummy on an edge spanning layers.
#[derive(Clone, Debug)]
struct Vertex {
    layer: usize,
    height: f64,
    width: f64,
    dummy: bool,
    up: Vec<usize>,
    down: Vec<usize>,
}

struct LayeredGraph {
    /// Input nodes first (same indices), then dummies.
    vertices: Vec<Vertex>,
    /// Each layer's vertices, top to bottom.
    layers: Vec<Vec<usize>>,
    /// Each vertex's index in its layer.
    position: Vec<usize>,
    /// Each input edge's dummies, left to right; `None` for an edge drawn straight across.
    chains: Vec<Option<Vec<usize>>>,
}

impl LayeredGraph {
    fn build(sizes: &[Size], layer: &[usize], edges: &[(usize, usize)], through: &[bool]) -> LayeredGraph {
        let mut vertices: Vec<Vertex> = sizes
            .iter()
            .zip(layer)
            .map(|(s, &l)| Vertex {
                layer: l,
                height: s.height,
                width: s.width,
                dummy: false,
                up: Vec::new(),
                down: Vec::new(),
            })
            .collect();
        let mut chains = Vec::with_capacity(edges.len());
        for (&(a, b), &through) in edges.iter().zip(through) {
            if !through {
                chains.push(None);
                continue;
            }
            let mut chain = Vec::new();
            let mut prev = a;
            for l in layer[a] + 1..layer[b] {
                let d = vertices.len();
                vertices.push(Vertex {
                    layer: l,
                    height: 0.0,
                    width: 0.0,
                    dummy: true,
                    up: vec![prev],
                    down: Vec::new(),
                });
                vertices[prev].down.push(d);
                chain.push(d);
                prev = d;
            }
            vertices[prev].down.push(b);
            vertices[b].up.push(prev);
            chains.push(Some(chain));
        }
        let count = layer.iter().map(|&l| l + 1).max().unwrap_or(0);
        let mut graph = LayeredGraph {
            position: vec![0; vertices.len()],
            layers: vec![Vec::new(); count],
            vertices,
            chains,
        };
        graph.initial_order();
        graph
    }

    /// Breadth-first from the input nodes in index order, so that connected vertices start
    /// near each other.
    fn initial_order(&mut self) {
        let mut seen = vec![false; self.vertices.len()];
        let mut queue = std::collections::VecDeque::new();
        for root in 0..self.vertices.len() {
            if seen[root] {
                continue;
            }
            seen[root] = true;
            queue.push_back(root);
            while let Some(v) = queue.pop_front() {
                self.layers[self.vertices[v].layer].push(v);
                for &w in self.vertices[v].down.iter().chain(&self.vertices[v].up) {
                    if !seen[w] {
                        seen[w] = true;
                        queue.push_back(w);
                    }
                }
            }
        }
        self.renumber();
    }

    fn renumber(&mut self) {
        for layer in &self.layers {
            for (i, &v) in layer.iter().enumerate() {
                self.position[v] = i;
            }
        }
    }

    /// Crossing reduction; returns the crossings of the order it settles on.
    fn order(&mut self, options: &Options) -> usize {
        let mut best = self.crossings();
        let mut best_layers = self.layers.clone();
        let mut stale = 0;
        for _ in 0..options.max_sweeps {
            if best == 0 {
                break;
            }
            for l in 1..self.layers.len() {
                self.sort_by_barycenter(l, true);
                self.transpose(l, options.max_transpose_passes);
            }
            for l in (0..self.layers.len().saturating_sub(1)).rev() {
                self.sort_by_barycenter(l, false);
                self.transpose(l, options.max_transpose_passes);
            }
            let now = self.crossings();
            if now < best {
                best = now;
                best_layers.clone_from(&self.layers);
                stale = 0;
            } else {
                stale += 1;
                if stale >= 2 {
                    break;
                }
            }
        }
        self.layers = best_layers;
        self.renumber();
        best
    }

    fn neighbours(&self, v: usize, upward: bool) -> &[usize] {
        if upward {
            &self.vertices[v].up
        } else {
            &self.vertices[v].down
        }
    }

    /// Sorts layer `l` by the mean position of each vertex's neighbours in the layer above
    /// (`upward`) or below; a vertex without any keeps its place.
    fn sort_by_barycenter(&mut self, l: usize, upward: bool) {
        let mut keyed: Vec<(f64, usize)> = self.layers[l]
            .iter()
            .map(|&v| {
                let ns = self.neighbours(v, upward);
                let key = if ns.is_empty() {
                    // Scaled into the neighbours' range so that it keeps its relative place.
                    self.position[v] as f64
                } else {
                    ns.iter().map(|&w| self.position[w] as f64).sum::<f64>() / ns.len() as f64
                };
                (key, v)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.layers[l] = keyed.into_iter().map(|(_, v)| v).collect();
        for (i, &v) in self.layers[l].iter().enumerate() {
            self.position[v] = i;
        }
    }

    /// Crossings between the edges of `u` and those of `w` (both in one layer, `u` above)
    /// towards the neighbouring layers on both sides.
    fn pair_crossings(&self, u: usize, w: usize, scratch: &mut (Vec<usize>, Vec<usize>)) -> usize {
        let mut total = 0;
        for upward in [true, false] {
            let (a, b) = scratch;
            a.clear();
            b.clear();
            a.extend(self.neighbours(u, upward).iter().map(|&x| self.position[x]));
            b.extend(self.neighbours(w, upward).iter().map(|&x| self.position[x]));
            a.sort_unstable();
            b.sort_unstable();
            // Pairs (i in a, j in b) with i > j: for each j, the a's after it.
            let mut i = 0;
            for &j in b.iter() {
                while i < a.len() && a[i] <= j {
                    i += 1;
                }
                total += a.len() - i;
            }
        }
        total
    }

    /// Swaps neighbours in layer `l` while that removes crossings, at most `passes` times
    /// over the layer.
    fn transpose(&mut self, l: usize, passes: usize) {
        let mut scratch = (Vec::new(), Vec::new());
        for _ in 0..passes {
            let mut improved = false;
            for i in 1..self.layers[l].len() {
                let u = self.layers[l][i - 1];
                let w = self.layers[l][i];
                let before = self.pair_crossings(u, w, &mut scratch);
                if before == 0 {
                    continue;
                }
                let after = self.pair_crossings(w, u, &mut scratch);
                if after < before {
                    self.layers[l].swap(i - 1, i);
                    self.position[u] = i;
                    self.position[w] = i - 1;
                    improved = true;
                }
            }
            if !improved {
                break;
            }
        }
    }

    /// Every crossing between adjacent layers.
    fn crossings(&self) -> usize {
        (1..self.layers.len()).map(|l| self.crossings_between(l)).sum()
    }

    /// Crossings between layer `l - 1` and `l`: inversions of the lower ends when edges are
    /// sorted by their upper ends, counted with a Fenwick tree.
    fn crossings_between(&self, l: usize) -> usize {
        let mut ends: Vec<(usize, usize)> = self.layers[l - 1]
            .iter()
            .flat_map(|&v| {
                self.vertices[v]
                    .down
                    .iter()
                    .map(move |&w| (self.position[v], self.position[w]))
            })
            .collect();
        ends.sort_unstable();
        let size = self.layers[l].len();
        let mut tree = vec![0usize; size + 1];
        let mut count = 0;
        for (seen, &(_, lower)) in ends.iter().enumerate() {
            // Edges seen so far ending at or before `lower`.
            let mut at_or_before = 0;
            let mut i = lower + 1;
            while i > 0 {
                at_or_before += tree[i];
                i &= i - 1;
            }
            count += seen - at_or_before;
            let mut i = lower + 1;
            while i <= size {
                tree[i] += 1;
                i += i & i.wrapping_neg();
            }
        }
        count
    }

    /// Each column's left edge and width.
    fn columns(&self, options: &Options) -> (Vec<f64>, Vec<f64>) {
        let widths: Vec<f64> = self
            .layers
            .iter()
            .map(|layer| layer.iter().map(|&v| self.vertices[v].width).fold(0.0, f64::max))
            .collect();
        let mut x = Vec::with_capacity(widths.len());
        let mut at = 0.0;
        for w in &widths {
            x.push(at);
            at += w + options.layer_gap;
        }
        (x, widths)
    }

    /// Smallest distance between the centres of neighbours `a` above `b` in a column.
    fn separation(&self, a: usize, b: usize, options: &Options) -> f64 {
        let (va, vb) = (&self.vertices[a], &self.vertices[b]);
        let gap = if va.dummy || vb.dummy {
            options.edge_gap
        } else {
            options.node_gap
        };
        (va.height + vb.height) / 2.0 + gap
    }

    /// Vertical centre of every vertex.
    fn coordinates(&self, options: &Options) -> Vec<f64> {
        let mut y = vec![0.0; self.vertices.len()];
        for layer in &self.layers {
            let mut at = 0.0;
            for (i, &v) in layer.iter().enumerate() {
                if i > 0 {
                    at += self.separation(layer[i - 1], v, options);
                }
                y[v] = at;
            }
        }
        let mut fit = Fit::default();
        for _ in 0..options.coordinate_rounds {
            for l in 1..self.layers.len() {
                self.place_layer(l, &mut y, &[true], options, &mut fit);
            }
            for l in (0..self.layers.len().saturating_sub(1)).rev() {
                self.place_layer(l, &mut y, &[false], options, &mut fit);
            }
        }
        for l in 0..self.layers.len() {
            self.place_layer(l, &mut y, &[true, false], options, &mut fit);
        }
        y
    }

    /// Moves layer `l`'s vertices as close as their order and separations allow to the
    /// weighted mean of their neighbours on the given sides.
    fn place_layer(&self, l: usize, y: &mut [f64], sides: &[bool], options: &Options, fit: &mut Fit) {
        let layer = &self.layers[l];
        fit.targets.clear();
        fit.weights.clear();
        let mut offset = 0.0;
        for (i, &v) in layer.iter().enumerate() {
            if i > 0 {
                offset += self.separation(layer[i - 1], v, options);
            }
            let (mut sum, mut weight) = (0.0, 0.0);
            for &upward in sides {
                for &w in self.neighbours(v, upward) {
                    let pull = match (self.vertices[v].dummy, self.vertices[w].dummy) {
                        (true, true) => 8.0,
                        (true, false) | (false, true) => 2.0,
                        (false, false) => 1.0,
                    };
                    sum += pull * y[w];
                    weight += pull;
                }
            }
            let (target, weight) = if weight > 0.0 {
                (sum / weight, weight)
            } else {
                // Nothing to align with: stay put, lightly.
                (y[v], 0.01)
            };
            fit.targets.push(target - offset);
            fit.weights.push(weight);
        }
        fit.solve();
        let mut offset = 0.0;
        for (i, &v) in layer.iter().enumerate() {
            if i > 0 {
                offset += self.separation(layer[i - 1], v, options);
            }
            y[v] = fit.solution[i] + offset;
        }
    }
}

/// Weighted isotonic regression by pool adjacent violators: the non-decreasing sequence
/// closest to `targets` in weighted least squares. With each vertex's target shifted by the
/// separations above it, "non-decreasing" is exactly "in order and not overlapping".
#[derive(Default)]
struct Fit {
    targets: Vec<f64>,
    weights: Vec<f64>,
    solution: Vec<f64>,
    /// Pooled blocks: (mean, weight, count).
    blocks: Vec<(f64, f64, usize)>,
}

impl Fit {
    fn solve(&mut self) {
        self.blocks.clear();
        for (&t, &w) in self.targets.iter().zip(&self.weights) {
            let mut block = (t, w, 1);
            while let Some(&(mean, weight, count)) = self.blocks.last() {
                if mean < block.0 {
                    break;
                }
                self.blocks.pop();
                let total = weight + block.1;
                block = (
                    (mean * weight + block.0 * block.1) / total,
                    total,
                    count + block.2,
                );
            }
            self.blocks.push(block);
        }
        self.solution.clear();
        for &(mean, _, count) in &self.blocks {
            self.solution.extend(std::iter::repeat_n(mean, count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn boxes(n: usize) -> Vec<Size> {
        vec![
            Size {
                width: 100.0,
                height: 40.0
            };
            n
        ]
    }

    fn run(n: usize, edges: &[(usize, usize)]) -> Layout {
        layout(&boxes(n), edges, &Options::default())
    }

    fn overlap(a: &Placed, b: &Placed) -> bool {
        a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
    }

    #[test]
    fn empty_graph() {
        let l = run(0, &[]);
        assert_eq!(l.nodes.len(), 0);
        assert_eq!(l.layers, 0);
        assert_eq!(l.width, 0.0);
    }

    #[test]
    fn chain_runs_left_to_right_on_one_line() {
        let l = run(4, &[(0, 1), (1, 2), (2, 3)]);
        let layers: Vec<usize> = l.nodes.iter().map(|p| p.layer).collect();
        assert_eq!(layers, [0, 1, 2, 3]);
        assert!(l.nodes.windows(2).all(|w| w[0].y == w[1].y));
        assert_eq!(l.crossings, 0);
    }

    #[test]
    fn diamond_has_no_crossings_and_join_sits_between_branches() {
        let l = run(4, &[(0, 1), (0, 2), (1, 3), (2, 3)]);
        assert_eq!(l.crossings, 0);
        assert_eq!(l.nodes[3].layer, 2);
        let mid = |p: &Placed| p.y + p.height / 2.0;
        let (a, b) = (mid(&l.nodes[1]), mid(&l.nodes[2]));
        assert!((mid(&l.nodes[3]) - (a + b) / 2.0).abs() < 1e-6);
        assert!((mid(&l.nodes[0]) - (a + b) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn crossed_pairs_are_uncrossed() {
        // a0 -> b1, a1 -> b0 and so on for three layers: drawable without any crossing.
        let l = run(6, &[(0, 3), (1, 2), (2, 5), (3, 4)]);
        assert_eq!(l.crossings, 0);
    }

    #[test]
    fn complete_bipartite_reaches_its_crossing_number() {
        // K(3,3) on two layers cannot do better than C(3,2)^2 = 9.
        let edges: Vec<_> = (0..3).flat_map(|a| (3..6).map(move |b| (a, b))).collect();
        assert_eq!(run(6, &edges).crossings, 9);
    }

    #[test]
    fn a_tree_is_drawn_without_crossings() {
        // Children listed so that the initial order interleaves the subtrees.
        let edges = [
            (0, 1),
            (0, 2),
            (1, 3),
            (2, 4),
            (1, 5),
            (2, 6),
            (3, 7),
            (6, 8),
            (5, 9),
        ];
        assert_eq!(run(10, &edges).crossings, 0);
    }

    #[test]
    fn source_is_pulled_next_to_its_consumer() {
        // 3 feeds only the last task of a chain: it belongs just before it, not at the start.
        let l = run(4, &[(0, 1), (1, 2), (3, 2)]);
        assert_eq!(l.nodes[3].layer, 1);
    }

    #[test]
    fn long_edges_go_through_dummies_and_run_straight() {
        // 0 -> 1 -> 2 -> 3 and 0 -> 3 straight across.
        let l = run(4, &[(0, 1), (1, 2), (2, 3), (0, 3)]);
        let route = l.routes.iter().find(|r| (r.from, r.to) == (0, 3)).unwrap();
        assert_eq!(route.points.len(), 2 + 2 * 2);
        let ys: Vec<f64> = route.points[1..route.points.len() - 1]
            .iter()
            .map(|p| p.1)
            .collect();
        assert!(ys.windows(2).all(|w| (w[0] - w[1]).abs() < 1e-6), "{ys:?}");
    }

    #[test]
    fn past_the_dummy_budget_the_longest_edges_go_straight() {
        // A chain of 6 with 0 -> 5 (4 dummies) and 1 -> 4 (2 dummies); room for 3.
        let edges = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 5), (1, 4)];
        let options = Options {
            max_dummies: 3,
            ..Options::default()
        };
        let l = layout(&boxes(6), &edges, &options);
        assert_eq!(l.straight_edges, 1);
        let straight = l.routes.iter().find(|r| (r.from, r.to) == (0, 5)).unwrap();
        assert_eq!(straight.points.len(), 2);
        let kept = l.routes.iter().find(|r| (r.from, r.to) == (1, 4)).unwrap();
        assert_eq!(kept.points.len(), 2 + 2 * 2);
        assert_eq!(run(6, &edges).straight_edges, 0);
    }

    #[test]
    fn cycles_are_broken_and_drawn() {
        let l = run(3, &[(0, 1), (1, 2), (2, 0), (1, 1), (0, 1), (7, 1)]);
        assert_eq!(l.routes.len(), 3);
        let back: Vec<_> = l.routes.iter().filter(|r| r.reversed).collect();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].from, back[0].to), (2, 0));
        // Drawn from its own `from`: it starts at 2's left side.
        assert_eq!(back[0].points[0], left_side(&l.nodes[2]));
    }

    #[test]
    fn bad_sizes_count_as_zero() {
        let sizes = [
            Size {
                width: f64::NAN,
                height: -3.0,
            },
            Size {
                width: f64::INFINITY,
                height: 10.0,
            },
        ];
        let l = layout(&sizes, &[(0, 1)], &Options::default());
        assert!(l.nodes.iter().all(|p| p.x.is_finite() && p.y.is_finite()));
        assert_eq!(l.nodes[0].width, 0.0);
    }

    fn check(sizes: &[Size], edges: &[(usize, usize)]) -> Result<(), TestCaseError> {
        let l = layout(sizes, edges, &Options::default());
        prop_assert_eq!(l.nodes.len(), sizes.len());
        for (i, a) in l.nodes.iter().enumerate() {
            prop_assert!(a.x.is_finite() && a.y.is_finite());
            prop_assert!(a.x >= -1e-6 && a.y >= -1e-6);
            prop_assert!(a.x + a.width <= l.width + 1e-6 && a.y + a.height <= l.height + 1e-6);
            for b in &l.nodes[i + 1..] {
                prop_assert!(!overlap(a, b), "{:?} overlaps {:?}", a, b);
            }
        }
        for r in &l.routes {
            let (from, to) = (&l.nodes[r.from], &l.nodes[r.to]);
            if r.reversed {
                prop_assert!(from.layer > to.layer);
            } else {
                prop_assert!(from.layer < to.layer);
            }
            prop_assert!(r.points.len() >= 2);
            let monotone = r.points.windows(2).all(|w| {
                if r.reversed {
                    w[0].0 >= w[1].0
                } else {
                    w[0].0 <= w[1].0
                }
            });
            prop_assert!(monotone, "route {:?} goes back and forth", r);
        }
        prop_assert_eq!(l.crossings, crossings_drawn(&l));
        prop_assert_eq!(&l, &layout(sizes, edges, &Options::default()));
        Ok(())
    }

    /// Crossings counted from the drawing itself, segment against segment in each gap
    /// between columns: checks the accumulator-tree count.
    fn crossings_drawn(l: &Layout) -> usize {
        let mut segments = Vec::new();
        for r in &l.routes {
            let mut points = r.points.clone();
            if r.reversed {
                points.reverse();
            }
            let start = l.nodes[if r.reversed { r.to } else { r.from }].layer;
            // One y per column: the two ends, and one of each dummy's pair of points.
            let mut ys = vec![points[0].1];
            ys.extend(points[1..points.len() - 1].iter().step_by(2).map(|p| p.1));
            ys.push(points[points.len() - 1].1);
            for (k, w) in ys.windows(2).enumerate() {
                segments.push((start + k, w[0], w[1]));
            }
        }
        let mut count = 0;
        for (i, a) in segments.iter().enumerate() {
            for b in &segments[i + 1..] {
                if a.0 == b.0 && (a.1 - b.1) * (a.2 - b.2) < 0.0 {
                    count += 1;
                }
            }
        }
        count
    }

    fn sizes(n: usize) -> impl Strategy<Value = Vec<Size>> {
        proptest::collection::vec(
            (0.0..300.0f64, 0.0..120.0f64).prop_map(|(width, height)| Size { width, height }),
            n,
        )
    }

    proptest! {
        #[test]
        fn acyclic_graphs_lay_out_cleanly(
            (sizes, edges) in (1usize..40).prop_flat_map(|n| (
                sizes(n),
                proptest::collection::vec((0..n, 0..n), 0..80)
                    .prop_map(|e| e.into_iter().filter(|(a, b)| a < b).collect::<Vec<_>>()),
            ))
        ) {
            check(&sizes, &edges)?;
            let l = layout(&sizes, &edges, &Options::default());
            prop_assert!(l.routes.iter().all(|r| !r.reversed));
        }

        #[test]
        fn any_edges_never_break_it(
            (sizes, edges) in (0usize..30).prop_flat_map(|n| (
                sizes(n),
                proptest::collection::vec((0..n + 2, 0..n + 2), 0..80),
            ))
        ) {
            check(&sizes, &edges)?;
        }

    }
}
