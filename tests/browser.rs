//! The UI's run graph in a real browser: headless Chromium from Debian, driven over WebDriver
//! (tests/common/browser.rs). A tiny axum router serves a page holding `render_svg` of a
//! real example pipeline and `graph.js`, as the UI's run page does.
//!
//! Needs `chromium` and `chromedriver` (hack/tools.sh installs them); no control plane.
//! `WEIR_SCREENSHOT_DIR=docs/screenshots` makes the graph test keep its screenshot there
//! (hack/screenshots.sh).

mod common;

use common::browser::{Browser, eval, graph_page, press, serve};
use common::dags;
use fantoccini::Locator;
use fantoccini::key::Key;
use serde_json::{Value, json};
use std::time::Duration;
use weir::ui::graph::render_svg;

/// ml-training: train -> evaluate -> validate -> deploy, and the finally task `report`.
const STATES: [(&str, &str); 5] = [
    ("train", "Succeeded"),
    ("evaluate", "Succeeded"),
    ("validate", "Failed"),
    ("deploy", "UpstreamFailed"),
    ("report", "Running"),
];

#[tokio::test]
async fn graph_page_shows_states_and_searches_zooms_and_takes_focus() {
    let pipeline = dags::example("ml-training");
    let (nodes, edges) = dags::from_pipeline(&pipeline, |t| {
        let name = pipeline.name(t);
        STATES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| panic!("no state given for {name}"))
    });
    assert_eq!(nodes.len(), STATES.len(), "the example's tasks changed");
    let url = serve(graph_page("ml-training-manual", &nodes, &edges)).await;
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    browser.client.goto(&url).await.expect("opening the page");
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#graph[data-graph-ready=true]"))
        .await
        .expect("graph.js set the graph up");

    // Every task, with its state in words (not only a colour) and a finally task apart.
    for (task, state) in STATES {
        let text = eval(
            &browser,
            &format!(
                "const g = document.querySelector('g.node[data-task=\"{task}\"]');\
                 return g && [g.getAttribute('data-state'), g.querySelector('text.state').textContent,\
                 g.getBoundingClientRect().width > 0];"
            ),
        )
        .await;
        assert_eq!(text, json!([state, state, true]), "task {task}");
    }
    let finally_right_of_main = eval(
        &browser,
        "const x = t => document.querySelector(`g.node[data-task=\"${t}\"]`).getBoundingClientRect().left;\
         return x('report') > x('deploy');",
    )
    .await;
    assert_eq!(finally_right_of_main, json!(true));

    // Search: typing highlights the match and dims the rest; Enter moves the focus to it.
    browser
        .client
        .find(Locator::Id("graph-search"))
        .await
        .expect("the search box")
        .send_keys("valid")
        .await
        .unwrap();
    let classes = eval(
        &browser,
        "return ['validate', 'train'].map(t => document.querySelector(`g.node[data-task=\"${t}\"]`).getAttribute('class'));",
    )
    .await;
    assert_eq!(classes, json!(["node s-failed match", "node s-succeeded"]));
    let dimmed = eval(
        &browser,
        "return ['validate', 'train'].map(t => getComputedStyle(document.querySelector(`g.node[data-task=\"${t}\"]`)).opacity);",
    )
    .await;
    assert_eq!(dimmed, json!(["1", "0.15"]), "the rest is dimmed while searching");
    let status = eval(
        &browser,
        "return document.getElementById('graph-status').textContent;",
    )
    .await;
    assert!(
        status.as_str().unwrap().starts_with("1 matching task"),
        "{status}"
    );
    press(&browser, Key::Enter).await;
    let focused = eval(
        &browser,
        "const g = document.activeElement.closest('g.node'); return g && g.getAttribute('data-task');",
    )
    .await;
    assert_eq!(focused, json!("validate"));

    // Neighbourhood of the focused task: two steps up and down, the rest hidden.
    browser
        .client
        .find(Locator::Id("graph-neighbours"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let hidden = eval(
        &browser,
        "return [...document.querySelectorAll('g.node.hidden')].map(g => g.getAttribute('data-task'));",
    )
    .await;
    assert_eq!(hidden, json!(["report"]));

    // Zoom: the button narrows the viewBox.
    let view = || async {
        eval(
            &browser,
            "return document.querySelector('#graph svg').getAttribute('viewBox');",
        )
        .await
    };
    let before = view().await;
    browser
        .client
        .find(Locator::Id("graph-zoom-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let after = view().await;
    let width = |v: &Value| -> f64 { v.as_str().unwrap().split(' ').nth(2).unwrap().parse().unwrap() };
    assert!(width(&after) < width(&before), "{before} -> {after}");

    // Keyboard only: from the search box, Tab reaches a task's link.
    eval(&browser, "document.getElementById('graph-search').focus();").await;
    let mut reached = None;
    for _ in 0..12 {
        press(&browser, Key::Tab).await;
        let at = eval(
            &browser,
            "const a = document.activeElement; const g = a.closest && a.closest('g.node');\
             return g && a.getAttribute('href');",
        )
        .await;
        if !at.is_null() {
            reached = Some(at);
            break;
        }
    }
    let reached = reached.expect("Tab never reached a task link");
    assert!(reached.as_str().unwrap().starts_with("/tasks/"), "{reached}");

    // The screenshot helper writes a PNG (into docs/ when hack/screenshots.sh asks).
    eval(
        &browser,
        "const s = document.getElementById('graph-search'); s.value = ''; \
         s.dispatchEvent(new Event('input')); document.activeElement.blur(); \
         document.getElementById('graph-neighbours').click();",
    )
    .await;
    let dimmed = eval(
        &browser,
        "return document.querySelectorAll('.searching, .match, .hidden').length;",
    )
    .await;
    assert_eq!(
        dimmed,
        json!(0),
        "clearing the search and the neighbourhood shows everything"
    );
    browser
        .client
        .find(Locator::Id("graph-fit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let path = match std::env::var_os("WEIR_SCREENSHOT_DIR") {
        Some(dir) => std::path::PathBuf::from(dir).join("graph.png"),
        None => std::env::temp_dir().join(format!("weir-graph-{}.png", std::process::id())),
    };
    browser.screenshot(&path).await.unwrap();
    let png = std::fs::read(&path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    if std::env::var_os("WEIR_SCREENSHOT_DIR").is_none() {
        let _ = std::fs::remove_file(&path);
    }
    browser.close().await;
}

/// Every example pipeline draws: one node per task, one edge per dependency between tasks on
/// the same side of `finally`. (No browser needed.)
#[test]
fn every_example_renders() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // Files only: examples/sensors/ holds cluster-only examples of its own.
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let pipeline = dags::example(name);
        let (nodes, edges) = dags::from_pipeline(&pipeline, |_| "Pending".to_string());
        let svg = render_svg(&nodes, &edges);
        assert_eq!(svg.matches("<g class=\"node ").count(), pipeline.len(), "{name}");
        let inside = edges
            .iter()
            .filter(|e| {
                let finally = |id: &str| nodes.iter().find(|n| n.id == id).unwrap().finally;
                finally(&e.from) == finally(&e.to)
            })
            .count();
        assert_eq!(svg.matches("<path class=\"edge").count(), inside, "{name}");
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} examples");
}
