//! The real UI in a real browser: headless Chromium from Debian (tests/common/browser.rs)
//! against `weir ui` (in-process, on a free loopback port) on the test control plane with
//! the operator running. A person's path through the pages: the pipelines page shows the
//! pipeline; a run is triggered with a param through the form; the run page's task states
//! change live (server-sent events) without a reload; the failed task's page shows its log;
//! the failed task is rerun from the page, the confirmation reached and pressed with the
//! keyboard only (Tab, Enter), and the run then succeeds; a viewer (token mode, a
//! ServiceAccount bound to `view`) who goes to the rerun form anyway is shown Kubernetes'
//! own refusal.
//!
//! Every wait polls a condition with a generous timeout (the machine may be loaded); nothing
//! asserts on wall time. `WEIR_SCREENSHOT_DIR=docs/screenshots` makes the first test keep
//! PNGs of the pages it went through (hack/screenshots.sh).

mod common;

use common::browser::{Browser, eval, press};
use common::*;
use fantoccini::Locator;
use fantoccini::key::Key;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use weir::api::PipelineRun;
use weir::ui::AuthMode;
use weir_testenv::TestNamespace;

const TIMEOUT: Duration = Duration::from_secs(180);

/// Polls `script` (a function body returning a value) until it returns `want`.
async fn wait_js(browser: &Browser, what: &str, script: &str, want: Value) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = eval(browser, script).await;
        if got == want {
            return;
        }
        // Chromium shows an error page when it sees the machine's network change (other
        // control planes starting and stopping): the person would press Reload.
        if eval(browser, "return location.href.startsWith('chrome-error://');").await == json!(true) {
            browser
                .client
                .refresh()
                .await
                .unwrap_or_else(|e| panic!("reloading: {e}"));
        }
        if Instant::now() > deadline {
            let text = eval(browser, "return document.body ? document.body.innerText : '';").await;
            panic!("{what}: still {got} instead of {want} after {TIMEOUT:?}; the page says:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn goto(browser: &Browser, url: &str) {
    browser
        .client
        .goto(url)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
}

async fn click(browser: &Browser, css: &str) {
    browser
        .client
        .wait()
        .at_most(TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("waiting for {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

async fn fill(browser: &Browser, css: &str, text: &str) {
    let field = browser
        .client
        .wait()
        .at_most(TIMEOUT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("waiting for {css}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Presses Tab until the element `id` has the focus (as a keyboard user would).
async fn tab_to(browser: &Browser, id: &str) {
    for _ in 0..60 {
        let focused = eval(
            browser,
            "return document.activeElement && document.activeElement.id;",
        )
        .await;
        if focused == json!(id) {
            return;
        }
        press(browser, Key::Tab).await;
    }
    panic!("Tab never reached #{id}");
}

async fn screenshot(browser: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("WEIR_SCREENSHOT_DIR") {
        let path = PathBuf::from(dir).join(name);
        browser.screenshot(&path).await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// `gate` waits for a file (so a run can be watched while it runs); `check` fails, printing
/// a marker, until another file exists; `report` is a finally task.
fn pipeline(gate: &std::path::Path, fixed: &std::path::Path) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: nightly}}
spec:
  params:
    - {{name: region, default: eu, description: where to load}}
  defaults: {{image: busybox}}
  tasks:
    - name: gate
      command: [sh, -c, 'echo "waiting in {{{{ params.region }}}}"; until [ -f {gate} ]; do sleep 0.2; done']
    - name: extract
      dependsOn: [gate]
      command: [sh, -c, 'echo extracted']
    - name: check
      dependsOn: [extract]
      command: [sh, -c, 'echo "checking rows: marker-5d2e"; [ -f {fixed} ]']
    - name: load
      dependsOn: [check]
      command: [sh, -c, 'echo loaded']
  finally:
    - name: report
      command: [sh, -c, 'echo report sent']
"#,
        gate = gate.display(),
        fixed = fixed.display()
    )
}

fn state_of(task: &str) -> String {
    format!(
        "const b = document.querySelector('[data-testid=\"task-state-{task}\"]');\
         return b && (b.dataset.state || (b.querySelector('.state') || {{dataset: {{}}}}).dataset.state || null);"
    )
}

const RUN_PHASE: &str =
    "const b = document.querySelector('[data-testid=run-phase]'); return b && b.dataset.state;";

#[tokio::test]
async fn a_run_is_triggered_watched_live_read_and_rerun_from_the_pages() {
    let (ns, _op) = setup("ui-browser").await;
    let dir = std::env::temp_dir().join(format!("weir-ui-browser-{}", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let (gate, fixed) = (dir.join("gate"), dir.join("fixed"));
    ns.apply(&pipeline(&gate, &fixed));
    let (base, _stop) = ui_server(&ns, AuthMode::Local).await;
    let n = ns.name();
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));

    // The pipelines page lists the pipeline.
    goto(&browser, &format!("{base}/?namespace={n}")).await;
    wait_js(
        &browser,
        "the pipeline's row",
        "return !!document.querySelector('[data-testid=pipeline-nightly]');",
        json!(true),
    )
    .await;

    // Trigger with a param through the form: from the grid, the trigger link, the form.
    goto(&browser, &format!("{base}/ns/{n}/pipelines/nightly")).await;
    click(&browser, "#action-trigger").await;
    fill(&browser, "#param-region", "us-east").await;
    fill(&browser, "#trigger-name", "nightly-1").await;
    click(&browser, "#trigger-submit").await;
    // The form sends to the new run's page, which shows the param.
    wait_js(
        &browser,
        "the new run's page",
        "return location.pathname;",
        json!(format!("/ns/{n}/runs/nightly-1")),
    )
    .await;
    wait_js(
        &browser,
        "the run's params",
        "const t = document.getElementById('params'); return !!t && t.innerText.includes('us-east');",
        json!(true),
    )
    .await;
    let run: PipelineRun = ns.api().get("nightly-1").await.unwrap();
    assert_eq!(run.spec.params["region"], "us-east");

    // Live: gate runs; once its file exists the states move on, with no reload of the page.
    wait_js(&browser, "gate running", &state_of("gate"), json!("Running")).await;
    eval(&browser, "window.weirNoReload = 'same page'; return 0;").await;
    std::fs::write(&gate, "").unwrap();
    wait_js(
        &browser,
        "check failing, live",
        &state_of("check"),
        json!("Failed"),
    )
    .await;
    wait_js(&browser, "the run failing, live", RUN_PHASE, json!("Failed")).await;
    assert_eq!(
        eval(&browser, "return window.weirNoReload;").await,
        json!("same page"),
        "the states changed without a reload"
    );
    assert_eq!(eval(&browser, &state_of("gate")).await, json!("Succeeded"));
    assert_eq!(eval(&browser, &state_of("load")).await, json!("UpstreamFailed"));

    // Screenshots of the run, its graph, the grid and the pipelines list, now that they
    // hold a finished run.
    goto(&browser, &format!("{base}/ns/{n}/runs/nightly-1")).await;
    wait_js(&browser, "the run page", RUN_PHASE, json!("Failed")).await;
    // The picture shows the tasks and the timeline under them.
    eval(
        &browser,
        "document.querySelector('h2').scrollIntoView(); return 0;",
    )
    .await;
    screenshot(&browser, "run.png").await;
    click(&browser, "#link-graph").await;
    wait_js(
        &browser,
        "the run's graph",
        "const g = document.querySelector('#graph[data-graph-ready=true] g.node[data-task=check]'); return g && g.dataset.state;",
        json!("Failed"),
    )
    .await;
    // Styled by the served stylesheet (the CSP ignores the SVG's own <style>): the failed
    // task's box is drawn in the failed colour.
    assert_eq!(
        eval(
            &browser,
            "return getComputedStyle(document.querySelector('g.node[data-task=check] .box')).stroke;"
        )
        .await,
        json!("rgb(198, 40, 40)")
    );
    screenshot(&browser, "run-graph.png").await;
    goto(&browser, &format!("{base}/ns/{n}/pipelines/nightly")).await;
    wait_js(
        &browser,
        "the grid's cell",
        "const c = document.querySelector('[data-testid=cell-nightly-1-check]'); return c && c.dataset.state;",
        json!("Failed"),
    )
    .await;
    screenshot(&browser, "grid.png").await;
    goto(&browser, &format!("{base}/?namespace={n}")).await;
    wait_js(
        &browser,
        "the run's square",
        "return !!document.querySelector('[data-testid=square-nightly-1]');",
        json!(true),
    )
    .await;
    screenshot(&browser, "pipelines.png").await;

    // The failed task, from the grid's cell: its log shows the line it printed.
    goto(&browser, &format!("{base}/ns/{n}/pipelines/nightly")).await;
    click(&browser, "[data-testid=cell-nightly-1-check]").await;
    wait_js(
        &browser,
        "the failed task's log",
        "const l = document.querySelector('[data-testid=log-1]'); return !!l && l.textContent.includes('checking rows: marker-5d2e');",
        json!(true),
    )
    .await;
    screenshot(&browser, "task.png").await;

    // Rerun it once what it needs is there, from the keyboard: Tab to the task's rerun link
    // and Enter, then Tab to the confirmation's button and Enter.
    std::fs::write(&fixed, "").unwrap();
    tab_to(&browser, "action-rerun-task").await;
    press(&browser, Key::Enter).await;
    wait_js(
        &browser,
        "the rerun form with the task ticked",
        "const b = document.getElementById('rerun-task-check'); return !!b && b.checked;",
        json!(true),
    )
    .await;
    click(&browser, "#rerun-downstream").await;
    tab_to(&browser, "rerun-submit").await;
    press(&browser, Key::Enter).await;
    wait_js(
        &browser,
        "back on the run's page",
        "return location.pathname;",
        json!(format!("/ns/{n}/runs/nightly-1")),
    )
    .await;
    wait_js(
        &browser,
        "the rerun succeeding, live",
        RUN_PHASE,
        json!("Succeeded"),
    )
    .await;
    wait_js(
        &browser,
        "check succeeded",
        &state_of("check"),
        json!("Succeeded"),
    )
    .await;
    wait_js(&browser, "load succeeded", &state_of("load"), json!("Succeeded")).await;
    browser.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `nightly-1` as the admin (the test's own credentials) and waits for it to end.
async fn admin_run(ns: &TestNamespace) {
    ns.apply(
        "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: nightly-1}\nspec: {pipelineRef: {name: nightly}}\n",
    );
    wait_run_done(ns, "nightly-1", TIMEOUT).await;
}

#[tokio::test]
async fn a_viewer_sees_kubernetes_refuse_the_rerun_in_the_page() {
    let (ns, _op) = setup("ui-browser-rbac").await;
    let dir = std::env::temp_dir().join(format!("weir-ui-browser-{}", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let gate = dir.join("gate");
    std::fs::write(&gate, "").unwrap();
    ns.apply(&pipeline(&gate, std::path::Path::new("/nonexistent")));
    let token = viewer_token(&ns).await;
    admin_run(&ns).await;
    let (base, _stop) = ui_server(&ns, AuthMode::Token).await;
    let n = ns.name();
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));

    // Logging in with the ServiceAccount's token.
    goto(&browser, &format!("{base}/ns/{n}/runs/nightly-1")).await;
    fill(&browser, "#login-token", &token).await;
    click(&browser, "#login-submit").await;
    // The viewer reads the run (once the aggregated rules reach `view`); the rerun button is
    // shown disabled, as Kubernetes said when asked.
    let deadline = Instant::now() + TIMEOUT;
    while eval(&browser, RUN_PHASE).await != json!("Failed") {
        assert!(Instant::now() < deadline, "the viewer never read the run");
        tokio::time::sleep(Duration::from_millis(500)).await;
        goto(&browser, &format!("{base}/ns/{n}/runs/nightly-1")).await;
    }
    assert_eq!(
        eval(
            &browser,
            "return document.getElementById('action-rerun').disabled;"
        )
        .await,
        json!(true)
    );

    // Going to the rerun form anyway and confirming: Kubernetes refuses, and the page says so
    // in Kubernetes' words.
    goto(&browser, &format!("{base}/ns/{n}/runs/nightly-1/rerun")).await;
    click(&browser, "#rerun-task-check").await;
    click(&browser, "#rerun-submit").await;
    let user = format!("system:serviceaccount:{n}:viewer");
    wait_js(
        &browser,
        "Kubernetes' refusal shown",
        &format!(
            "const m = document.querySelector('[data-testid=kubernetes-message]');\
             return !!m && m.textContent.includes('User \"{user}\" cannot patch resource \"pipelineruns\"');"
        ),
        json!(true),
    )
    .await;
    let run: PipelineRun = ns.api().get("nightly-1").await.unwrap();
    assert!(
        run.status.unwrap().rerun.is_none(),
        "the refused rerun changed nothing"
    );
    browser.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
