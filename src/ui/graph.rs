//! The graph of a run as SVG.
//!
//! STAND-IN: the layered DAG layout and its rendering belong to another piece of work
//! (`graph.rs`, `layout.rs` and `assets/graph.js`), which replaces this file at merge. Its
//! API is fixed; this version only lists the nodes in rows so the graph page works.

/// One task of the graph.
pub struct GraphNode {
    /// Task name (unique).
    pub id: String,
    /// What to print in the node.
    pub label: String,
    /// Task state as text: `Pending`, `Running`, `Succeeded`, `Failed`, ...
    pub state: String,
    /// Small lines under the label: trigger rule, `when`, fan-out counts.
    pub details: Vec<String>,
    /// `finally` tasks are drawn apart.
    pub finally: bool,
    /// Link to the task instance page.
    pub href: Option<String>,
}

/// A dependency: `to` runs after `from`.
pub struct GraphEdge {
    pub from: String,
    pub to: String,
}

const ROW: usize = 22;
const LINE: usize = 16;

/// A complete `<svg>` element with one `<g class="node" data-task="{id}" data-state="{state}">`
/// per node.
pub fn render_svg(nodes: &[GraphNode], edges: &[GraphEdge]) -> String {
    let mut body = String::new();
    let mut y = 10;
    for node in nodes {
        let lines = 1 + node.details.len();
        let height = ROW + (lines - 1) * LINE;
        let x = if node.finally { 40 } else { 10 };
        let mut text = format!(
            r#"<text x="{}" y="{}">{} {}</text>"#,
            x + 8,
            y + 15,
            escape(&node.label),
            escape(&node.state)
        );
        for (i, detail) in node.details.iter().enumerate() {
            text.push_str(&format!(
                r#"<text class="detail" x="{}" y="{}">{}</text>"#,
                x + 16,
                y + 15 + (i + 1) * LINE,
                escape(detail)
            ));
        }
        let inner = format!(r#"<rect x="{x}" y="{y}" width="560" height="{height}" rx="4"></rect>{text}"#);
        let inner = match &node.href {
            Some(href) => format!(r#"<a href="{}">{inner}</a>"#, escape(href)),
            None => inner,
        };
        body.push_str(&format!(
            r#"<g class="node state-{}" data-task="{}" data-state="{}">{inner}</g>"#,
            escape(&node.state.to_ascii_lowercase()),
            escape(&node.id),
            escape(&node.state)
        ));
        y += height + 8;
    }
    let _ = edges;
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="620" height="{}" role="img" aria-label="task graph">{body}</svg>"#,
        y + 10
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
