//! A run's DAG as one `<svg>` element: laid out left to right by [`super::layout`], each task
//! a box showing its state by colour, by a shape and in words, with its details (trigger
//! rule, `when`, fan-out counts) underneath. `finally` tasks are drawn apart, in a labelled
//! region to the right of the main graph. Everything a user wrote is escaped.
//!
//! The markup is what `assets/graph.js` works with (zoom, pan, search, neighbourhood view):
//! `svg.weir-graph` holds `g.node[data-task][data-state]` per task, each with an `<a>` when it
//! has a link, and `path.edge[data-from][data-to]` per edge.

use super::layout::{self, Layout, Options, Size};
use std::collections::HashMap;
use std::fmt::Write as _;

/// A task to draw.
pub struct GraphNode {
    /// Task name (unique).
    pub id: String,
    /// What to print in the node.
    pub label: String,
    /// Task state as text: "Pending", "Running", "Succeeded", "Failed", "Skipped",
    /// "Retrying", "Cancelled", ...
    pub state: String,
    /// Small lines under the label: e.g. "trigger: allDone", "when: ...",
    /// "3/5 succeeded, 1 failed".
    pub details: Vec<String>,
    /// Finally tasks are drawn apart.
    pub finally: bool,
    /// Link to the task instance page.
    pub href: Option<String>,
}

/// `from` must finish (by its trigger rule) before `to`; both are task ids.
pub struct GraphEdge {
    pub from: String,
    pub to: String,
}

/// Longest label and detail lines drawn, in characters; the full text is in the node's
/// `<title>`.
pub const MAX_LABEL_CHARS: usize = 40;
pub const MAX_DETAIL_CHARS: usize = 48;
/// Most detail lines drawn under a label.
pub const MAX_DETAIL_LINES: usize = 4;

// Box metrics, in SVG units (pixels at zoom 1). Character widths are estimates for the
// stylesheet's sans-serif sizes: a little generous, so that text stays inside its box.
const LABEL_CHAR: f64 = 7.6;
const DETAIL_CHAR: f64 = 6.4;
const TEXT_LEFT: f64 = 30.0;
const PAD_RIGHT: f64 = 12.0;
const MIN_WIDTH: f64 = 140.0;
const LABEL_LINE: f64 = 20.0;
const STATE_LINE: f64 = 16.0;
const DETAIL_LINE: f64 = 15.0;
const PAD_Y: f64 = 8.0;
const MARGIN: f64 = 24.0;
/// Space between the main graph and the finally region, and inside the region's border.
const REGION_GAP: f64 = 72.0;
const REGION_PAD: f64 = 16.0;
const REGION_TITLE: f64 = 24.0;
const FINALLY_TITLE: &str = "finally: runs after the tasks on the left, whatever their outcome";

/// The graph's stylesheet. It is inside the SVG for pages that allow inline styles, and
/// the UI also serves it in `/static/app.css`, because the UI's Content-Security-Policy
/// (`style-src 'self'`) makes browsers ignore the inline copy.
pub const STYLE: &str = "\
.weir-graph{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}\
.weir-graph .box{fill:#fff;stroke:var(--c,#607d8b);stroke-width:1.5}\
.weir-graph .bar{fill:var(--c,#607d8b)}\
.weir-graph .icon{fill:var(--c,#607d8b);stroke:var(--c,#607d8b)}\
.weir-graph .label{font-size:13px;font-weight:600;fill:#1a1a1a}\
.weir-graph .state{font-size:11px;fill:#333}\
.weir-graph .detail{font-size:11px;fill:#555}\
.weir-graph .edge{fill:none;stroke:#8a949e;stroke-width:1.2;marker-end:url(#weir-arrow)}\
.weir-graph .edge.reversed{stroke-dasharray:4 3}\
.weir-graph .region{fill:#f6f7f9;stroke:#8a949e;stroke-dasharray:6 4}\
.weir-graph .region-title{font-size:12px;font-style:italic;fill:#444}\
.weir-graph .finally-link{fill:none;stroke:#8a949e;stroke-dasharray:6 4;stroke-width:1.2}\
.weir-graph a:focus{outline:none}\
.weir-graph a:focus .box,.weir-graph .node.match .box{stroke:#111;stroke-width:3}\
.weir-graph .s-succeeded{--c:#2e7d32}.weir-graph .s-failed{--c:#c62828}\
.weir-graph .s-running{--c:#1565c0}.weir-graph .s-pending{--c:#757575}\
.weir-graph .s-skipped{--c:#ad1457}.weir-graph .s-retrying{--c:#b26a00}\
.weir-graph .s-cancelled{--c:#5d4037}.weir-graph .s-upstreamfailed{--c:#e65100}\
.weir-graph.searching .node:not(.match),.weir-graph.searching .edge{opacity:.15}\
.weir-graph .node.hidden,.weir-graph .edge.hidden{display:none}";

/// A complete <svg> element (no surrounding page) with one
/// `<g class="node" data-task="{id}" data-state="{state}">` per node.
pub fn render_svg(nodes: &[GraphNode], edges: &[GraphEdge]) -> String {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .rev()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let pairs: Vec<(usize, usize)> = edges
        .iter()
        .filter_map(|e| Some((*index.get(e.from.as_str())?, *index.get(e.to.as_str())?)))
        .collect();
    let main = Part::lay_out(nodes, &pairs, false);
    let finally = Part::lay_out(nodes, &pairs, true);
    let mut drawing = Drawing::new(nodes.len());
    let main_right = MARGIN + main.layout.width;
    let mut width = main_right;
    let mut height = MARGIN + main.layout.height;
    drawing.part(nodes, edges, &main, MARGIN, MARGIN);
    if !finally.members.is_empty() {
        let left = if main.members.is_empty() {
            MARGIN
        } else {
            main_right + REGION_GAP
        };
        let top = MARGIN;
        let region_w = (finally.layout.width + 2.0 * REGION_PAD)
            .max(FINALLY_TITLE.chars().count() as f64 * DETAIL_CHAR + 2.0 * REGION_PAD);
        let region_h = finally.layout.height + 2.0 * REGION_PAD + REGION_TITLE;
        drawing.region(left, top, region_w, region_h);
        if !main.members.is_empty() {
            let y = MARGIN + main.layout.height.min(region_h) / 2.0;
            drawing.finally_link(main_right + 8.0, left - 4.0, y);
        }
        drawing.part(
            nodes,
            edges,
            &finally,
            left + REGION_PAD,
            top + REGION_PAD + REGION_TITLE,
        );
        width = left + region_w;
        height = height.max(top + region_h);
    }
    drawing.finish(nodes.len(), width + MARGIN, height + MARGIN)
}

/// The main tasks or the finally tasks, laid out on their own.
struct Part {
    /// Input indices of the nodes in this part, in input order.
    members: Vec<usize>,
    /// Input edge index of each route, with both ends in this part.
    route_edges: Vec<usize>,
    layout: Layout,
}

impl Part {
    fn lay_out(nodes: &[GraphNode], pairs: &[(usize, usize)], finally: bool) -> Part {
        let members: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].finally == finally)
            .collect();
        let mut local = vec![usize::MAX; nodes.len()];
        for (k, &i) in members.iter().enumerate() {
            local[i] = k;
        }
        let sizes: Vec<Size> = members.iter().map(|&i| node_size(&nodes[i])).collect();
        let inside: Vec<(usize, usize)> = pairs
            .iter()
            .filter(|(a, b)| local[*a] != usize::MAX && local[*b] != usize::MAX)
            .map(|&(a, b)| (local[a], local[b]))
            .collect();
        let layout = layout::layout(&sizes, &inside, &Options::default());
        // Routes come back for the distinct pairs in first-seen order: map them to names.
        let mut route_edges = Vec::with_capacity(layout.routes.len());
        let mut seen = std::collections::HashSet::new();
        for (e, &(a, b)) in pairs.iter().enumerate() {
            if local[a] != usize::MAX && local[b] != usize::MAX && a != b && seen.insert((a, b)) {
                route_edges.push(e);
            }
        }
        Part {
            members,
            route_edges,
            layout,
        }
    }
}

fn details(node: &GraphNode) -> impl Iterator<Item = &String> {
    node.details.iter().take(MAX_DETAIL_LINES)
}

fn node_size(node: &GraphNode) -> Size {
    let label = node.label.chars().count().min(MAX_LABEL_CHARS) as f64 * LABEL_CHAR;
    let state = node.state.chars().count().min(MAX_DETAIL_CHARS) as f64 * DETAIL_CHAR;
    let detail = details(node)
        .map(|d| d.chars().count().min(MAX_DETAIL_CHARS))
        .max()
        .unwrap_or(0) as f64
        * DETAIL_CHAR;
    let text = label.max(state).max(detail);
    Size {
        width: (TEXT_LEFT + text + PAD_RIGHT).max(MIN_WIDTH).round(),
        height: PAD_Y * 2.0 + LABEL_LINE + STATE_LINE + DETAIL_LINE * details(node).count() as f64,
    }
}

struct Drawing {
    edges: String,
    nodes: String,
    regions: String,
}

impl Drawing {
    fn new(nodes: usize) -> Drawing {
        Drawing {
            edges: String::with_capacity(nodes * 80),
            nodes: String::with_capacity(nodes * 400),
            regions: String::new(),
        }
    }

    fn part(&mut self, nodes: &[GraphNode], edges: &[GraphEdge], part: &Part, dx: f64, dy: f64) {
        for (route, &e) in part.layout.routes.iter().zip(&part.route_edges) {
            let edge = &edges[e];
            let _ = write!(
                self.edges,
                "<path class=\"edge{}\" data-from=\"{}\" data-to=\"{}\" d=\"",
                if route.reversed { " reversed" } else { "" },
                escape(&edge.from),
                escape(&edge.to)
            );
            for (k, (x, y)) in route.points.iter().enumerate() {
                let _ = write!(
                    self.edges,
                    "{}{} {}",
                    if k == 0 { "M" } else { "L" },
                    num(x + dx),
                    num(y + dy)
                );
            }
            self.edges.push_str("\"/>");
        }
        for (k, &i) in part.members.iter().enumerate() {
            let p = &part.layout.nodes[k];
            self.node(&nodes[i], p.x + dx, p.y + dy, p.width, p.height);
        }
    }

    fn node(&mut self, node: &GraphNode, x: f64, y: f64, width: f64, height: f64) {
        let out = &mut self.nodes;
        let class = state_class(&node.state);
        let _ = write!(
            out,
            "<g class=\"node s-{class}\" data-task=\"{}\" data-state=\"{}\" transform=\"translate({} {})\">",
            escape(&node.id),
            escape(&node.state),
            num(x),
            num(y)
        );
        match &node.href {
            Some(href) => {
                let _ = write!(out, "<a href=\"{}\">", escape(href));
            }
            None => out.push_str("<a tabindex=\"-1\">"),
        }
        let mut title = format!("{}: {}", node.id, node.state);
        if node.finally {
            title.push_str(" (finally)");
        }
        for d in &node.details {
            title.push_str("; ");
            title.push_str(d);
        }
        let _ = write!(
            out,
            "<title>{}</title><rect class=\"box\" width=\"{}\" height=\"{}\" rx=\"6\"/>\
             <rect class=\"bar\" width=\"5\" height=\"{}\" rx=\"2\"/>",
            escape(&title),
            num(width),
            num(height),
            num(height)
        );
        out.push_str(&icon(&class, 17.0, PAD_Y + 12.0));
        let mut line_y = PAD_Y + 14.0;
        let _ = write!(
            out,
            "<text class=\"label\" x=\"{TEXT_LEFT}\" y=\"{}\">{}</text>",
            num(line_y),
            escape(&shorten(&node.label, MAX_LABEL_CHARS))
        );
        line_y += STATE_LINE + 1.0;
        let _ = write!(
            out,
            "<text class=\"state\" x=\"{TEXT_LEFT}\" y=\"{}\">{}</text>",
            num(line_y),
            escape(&shorten(&node.state, MAX_DETAIL_CHARS))
        );
        for d in details(node) {
            line_y += DETAIL_LINE;
            let _ = write!(
                out,
                "<text class=\"detail\" x=\"{TEXT_LEFT}\" y=\"{}\">{}</text>",
                num(line_y),
                escape(&shorten(d, MAX_DETAIL_CHARS))
            );
        }
        out.push_str("</a></g>");
    }

    fn region(&mut self, x: f64, y: f64, width: f64, height: f64) {
        let _ = write!(
            self.regions,
            "<g class=\"finally-region\"><rect class=\"region\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"8\"/>\
             <text class=\"region-title\" x=\"{}\" y=\"{}\">{FINALLY_TITLE}</text></g>",
            num(x),
            num(y),
            num(width),
            num(height),
            num(x + REGION_PAD),
            num(y + REGION_PAD + 8.0)
        );
    }

    fn finally_link(&mut self, from: f64, to: f64, y: f64) {
        let _ = write!(
            self.regions,
            "<path class=\"finally-link\" d=\"M{} {}L{} {}\" marker-end=\"url(#weir-arrow)\"/>",
            num(from),
            num(y),
            num(to),
            num(y)
        );
    }

    fn finish(self, count: usize, width: f64, height: f64) -> String {
        let (w, h) = (num(width), num(height));
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"weir-graph\" viewBox=\"0 0 {w} {h}\" \
             width=\"{w}\" height=\"{h}\" role=\"group\" aria-label=\"Task graph, {count} task{}\">\
             <style>{STYLE}</style><defs><marker id=\"weir-arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
             markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\" fill=\"#8a949e\"/>\
             </marker>{}</defs>{}<g class=\"edges\">{}</g><g class=\"nodes\">{}</g></svg>",
            if count == 1 { "" } else { "s" },
            icon_defs(),
            self.regions,
            self.edges,
            self.nodes
        )
    }
}

/// The state as a class name: lower-case letters only ("UpstreamFailed" -> "upstreamfailed").
fn state_class(state: &str) -> String {
    let class: String = state
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .take(32)
        .collect();
    if class.is_empty() {
        "unknown".to_string()
    } else {
        class
    }
}

/// A shape per state, so that states differ by more than colour: a filled disc with a tick
/// (succeeded), with a cross (failed), a triangle (running), a struck ring (skipped), a
/// diamond (retrying), a square (cancelled), a warning triangle (upstream failed), a ring
/// (pending and anything else). Defined once in `<defs>`, used by every node.
const ICONS: [(&str, &str); 8] = [
    (
        "succeeded",
        "<circle r=\"7\"/><path d=\"M-3.5 0L-1 2.8L3.8-2.8\" fill=\"none\" stroke=\"#fff\" stroke-width=\"2\"/>",
    ),
    (
        "failed",
        "<circle r=\"7\"/><path d=\"M-3-3L3 3M3-3L-3 3\" stroke=\"#fff\" stroke-width=\"2\"/>",
    ),
    ("running", "<path d=\"M-5-6L6 0L-5 6z\"/>"),
    (
        "skipped",
        "<circle r=\"6\" fill=\"none\" stroke-width=\"2\"/><path d=\"M-4.5 4.5L4.5-4.5\" stroke-width=\"2\"/>",
    ),
    ("retrying", "<path d=\"M0-7L7 0L0 7L-7 0z\"/>"),
    (
        "cancelled",
        "<rect x=\"-6\" y=\"-6\" width=\"12\" height=\"12\"/>",
    ),
    (
        "upstreamfailed",
        "<path d=\"M0-7L7 6L-7 6z\"/><path d=\"M0-2.5V2M0 3.5V4.5\" stroke=\"#fff\" stroke-width=\"1.6\"/>",
    ),
    ("other", "<circle r=\"6\" fill=\"none\" stroke-width=\"2\"/>"),
];

/// The icon of a state class: its own, or the plain ring.
fn icon_of(class: &str) -> &'static str {
    ICONS
        .iter()
        .find(|(key, _)| *key == class)
        .map_or("other", |(key, _)| key)
}

fn icon_defs() -> String {
    ICONS
        .iter()
        .map(|(key, shape)| format!("<g id=\"weir-i-{key}\">{shape}</g>"))
        .collect()
}

fn icon(class: &str, cx: f64, cy: f64) -> String {
    format!(
        "<use class=\"icon\" aria-hidden=\"true\" href=\"#weir-i-{}\" x=\"{}\" y=\"{}\"/>",
        icon_of(class),
        num(cx),
        num(cy)
    )
}

/// Escapes text for XML content and attribute values (the page's own escaping, `html::esc`),
/// after dropping the characters XML 1.0 forbids and making line breaks and tabs spaces.
pub fn escape(text: &str) -> String {
    let xml: String = text
        .chars()
        .filter_map(|c| match c {
            '\t' | '\n' | '\r' => Some(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => None,
            c => Some(c),
        })
        .collect();
    super::html::esc(&xml)
}

/// At most `max` characters, the last one an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A coordinate with at most one decimal, so that large graphs stay small.
fn num(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, state: &str) -> GraphNode {
        GraphNode {
            id: id.to_string(),
            label: id.to_string(),
            state: state.to_string(),
            details: Vec::new(),
            finally: false,
            href: Some(format!("/tasks/{id}")),
        }
    }

    fn edge(from: &str, to: &str) -> GraphEdge {
        GraphEdge {
            from: from.to_string(),
            to: to.to_string(),
        }
    }

    /// The `translate(x y)` of a node's group.
    fn position(svg: &str, id: &str) -> (f64, f64) {
        let at = svg.find(&format!("data-task=\"{id}\"")).expect("node drawn");
        let rest = &svg[at..];
        let t = rest.find("translate(").unwrap() + "translate(".len();
        let end = rest[t..].find(')').unwrap();
        let mut parts = rest[t..t + end].split(' ').map(|v| v.parse::<f64>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    }

    #[test]
    fn one_group_per_node_with_state_text_shape_and_link() {
        let mut failed = node("load", "Failed");
        failed.details = vec!["trigger: allDone".into(), "3/5 succeeded, 1 failed".into()];
        let svg = render_svg(
            &[node("extract", "Succeeded"), failed],
            &[edge("extract", "load")],
        );
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<g class=\"node ").count(), 2);
        assert!(svg.contains("<g class=\"node s-failed\" data-task=\"load\" data-state=\"Failed\""));
        assert!(svg.contains("<a href=\"/tasks/load\">"));
        assert!(svg.contains("<title>load: Failed; trigger: allDone; 3/5 succeeded, 1 failed</title>"));
        assert!(svg.contains(">Failed</text>"));
        assert!(svg.contains(">3/5 succeeded, 1 failed</text>"));
        // A cross for failed, a tick for succeeded, a ring for anything else.
        assert!(svg.contains("<g id=\"weir-i-failed\"><circle r=\"7\"/><path d=\"M-3-3L3 3M3-3L-3 3\""));
        let group = |id: &str| {
            let at = svg.find(&format!("data-task=\"{id}\"")).unwrap();
            svg[at..at + svg[at..].find("</g>").unwrap()].to_string()
        };
        assert!(group("load").contains("href=\"#weir-i-failed\""));
        assert!(group("extract").contains("href=\"#weir-i-succeeded\""));
        assert_eq!(icon_of("whatever"), "other");
        assert!(svg.contains("data-from=\"extract\" data-to=\"load\""));
        assert!(position(&svg, "extract").0 < position(&svg, "load").0);
    }

    #[test]
    fn user_text_is_escaped() {
        let mut n = node("<script>alert('x')</script>", "Running\"><b>");
        n.label = "a & b < c".into();
        n.details = vec!["when: '{{ params.x }}' == \"y\"".into()];
        n.href = Some("/t?a=1&b=\"2\"".into());
        let svg = render_svg(&[n], &[]);
        assert!(!svg.contains("<script>"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("data-task=\"&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;\""));
        assert!(svg.contains(">a &amp; b &lt; c</text>"));
        assert!(svg.contains("href=\"/t?a=1&amp;b=&quot;2&quot;\""));
        assert!(svg.contains("s-runningb"));
    }

    #[test]
    fn finally_tasks_sit_in_their_own_region_to_the_right() {
        let mut cleanup = node("cleanup", "Pending");
        cleanup.finally = true;
        let mut notify = node("notify", "Pending");
        notify.finally = true;
        let svg = render_svg(
            &[node("a", "Succeeded"), node("b", "Running"), cleanup, notify],
            &[edge("a", "b"), edge("b", "cleanup"), edge("cleanup", "notify")],
        );
        assert!(svg.contains("class=\"finally-region\""));
        assert!(svg.contains("finally: runs after the tasks on the left"));
        let right_of_main = position(&svg, "b").0;
        assert!(position(&svg, "cleanup").0 > right_of_main + REGION_GAP);
        assert!(position(&svg, "notify").0 > position(&svg, "cleanup").0);
        // The edge between finally tasks is drawn; the one into the region is the link.
        assert!(svg.contains("data-from=\"cleanup\" data-to=\"notify\""));
        assert!(!svg.contains("data-to=\"cleanup\""));
        assert!(svg.contains("class=\"finally-link\""));
    }

    #[test]
    fn unknown_edges_long_text_and_missing_links_are_fine() {
        let mut long = node(&"x".repeat(300), "Whatever");
        long.label = "y".repeat(300);
        long.href = None;
        let svg = render_svg(&[long], &[edge("nope", "x"), edge("x", "nope")]);
        assert!(svg.contains(&format!(">{}…</text>", "y".repeat(MAX_LABEL_CHARS - 1))));
        assert!(svg.contains("<a tabindex=\"-1\">"));
        assert!(svg.contains("s-whatever"));
        assert!(!svg.contains("<path class=\"edge"));
        let empty = render_svg(&[], &[]);
        assert!(empty.contains("Task graph, 0 tasks"));
    }

    #[test]
    fn nodes_are_wide_enough_for_their_text() {
        let mut n = node("t", "Succeeded");
        n.label = "a_rather_long_task_name_here".into();
        let size = node_size(&n);
        assert!(size.width >= TEXT_LEFT + 28.0 * LABEL_CHAR);
        n.details = vec!["d".into(); 9];
        assert_eq!(
            node_size(&n).height,
            PAD_Y * 2.0 + LABEL_LINE + STATE_LINE + DETAIL_LINE * MAX_DETAIL_LINES as f64
        );
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.04), "12");
        assert_eq!(num(-3.26), "-3.3");
        assert_eq!(num(0.17), "0.2");
    }
}
