//! How fast a 2,000-task run graph becomes usable in a real browser (headless Chromium from
//! Debian, as in tests/browser.rs), beside a baseline page of the same 2,000 tasks as a plain
//! list with a search box and no graph. For each page, the median of a few loads:
//!
//! - first paint: Chromium's first-contentful-paint, from the start of navigation;
//! - ready: the end of the load event, by when deferred scripts (graph.js's set-up) have run;
//! - search: from typing a task name into the search box to the next frame drawn with the
//!   matches highlighted (list: filtered).
//!
//! `cargo bench --bench ui_browser` (needs chromium and chromedriver: hack/tools.sh). Figures
//! are in docs/ui.md. Wall time is printed, never asserted.

#[allow(dead_code)]
#[path = "../tests/common/browser.rs"]
mod browser;
#[allow(dead_code)]
#[path = "../tests/common/dags.rs"]
mod dags;

use browser::{Browser, graph_page, serve};
use serde_json::Value;
use weir::ui::graph::escape;

const TASKS: usize = 2_000;
const LOADS: usize = 5;

/// The same tasks as a list: name, state in words, details; a search box that filters it.
fn list_page(nodes: &[weir::ui::graph::GraphNode]) -> String {
    let mut items = String::new();
    for n in nodes {
        items.push_str(&format!(
            "<li data-task=\"{}\"><a href=\"{}\">{}</a> <span>{}</span> {}</li>",
            escape(&n.id),
            escape(n.href.as_deref().unwrap_or("#")),
            escape(&n.label),
            escape(&n.state),
            escape(&n.details.join("; "))
        ));
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>list</title></head><body>\
         <input id=\"graph-search\" type=\"search\" aria-label=\"Find a task\"><span id=\"graph-status\"></span>\
         <ul id=\"list\">{items}</ul><script>\
         const items=[...document.querySelectorAll('#list li')];\
         document.getElementById('graph-search').addEventListener('input',e=>{{\
         const q=e.target.value.toLowerCase();let n=0;\
         for(const li of items){{const hit=q===''||li.dataset.task.toLowerCase().includes(q);li.hidden=!hit;n+=hit}}\
         document.getElementById('graph-status').textContent=n+' matching'}});\
         </script></body></html>"
    )
}

const SEARCH: &str = "
const done = arguments[arguments.length - 1];
const input = document.getElementById('graph-search');
const t0 = performance.now();
input.value = arguments[0];
input.dispatchEvent(new Event('input', { bubbles: true }));
requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));";

const TIMINGS: &str = "
const paint = performance.getEntriesByName('first-contentful-paint')[0];
const nav = performance.getEntriesByType('navigation')[0];
return [paint ? paint.startTime : null, nav.loadEventEnd];";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure(browser: &Browser, url: &str, query: &str) -> (f64, f64, f64) {
    let (mut paint, mut ready, mut search) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..LOADS {
        browser.client.goto("about:blank").await.expect("blank page");
        browser.client.goto(url).await.expect("opening the page");
        let t = browser.client.execute(TIMINGS, vec![]).await.expect("timings");
        paint.push(t[0].as_f64().unwrap_or(f64::NAN));
        ready.push(t[1].as_f64().unwrap_or(f64::NAN));
        let s = browser
            .client
            .execute_async(SEARCH, vec![Value::from(query)])
            .await
            .expect("searching");
        search.push(s.as_f64().unwrap_or(f64::NAN));
    }
    (median(paint), median(ready), median(search))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (nodes, edges) = dags::fan_in_layers(TASKS, 200, 3);
        let graph = graph_page("2,000 tasks", &nodes, &edges);
        let list = list_page(&nodes);
        let (graph_bytes, list_bytes) = (graph.len(), list.len());
        let graph_url = serve(graph).await;
        let list_url = serve(list).await;
        let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
        let query = "task-01234";
        let g = measure(&browser, &graph_url, query).await;
        let l = measure(&browser, &list_url, query).await;
        browser.close().await;
        println!(
            "\n{TASKS} tasks (fan-in layers, {} edges), median of {LOADS} loads, headless Chromium",
            edges.len()
        );
        println!(
            "{:<16} {:>10} {:>13} {:>10} {:>10}",
            "page", "bytes", "first paint", "ready", "search"
        );
        for (name, bytes, (p, r, s)) in [("graph", graph_bytes, g), ("list (baseline)", list_bytes, l)] {
            println!("{name:<16} {bytes:>10} {p:>10.0} ms {r:>7.0} ms {s:>7.1} ms");
        }
        println!(
            "{:<16} {:>10.1}x {:>12.1}x {:>9.1}x {:>9.1}x",
            "ratio",
            graph_bytes as f64 / list_bytes as f64,
            g.0 / l.0,
            g.1 / l.1,
            g.2 / l.2
        );
    });
}
