//! `weir ui` against the real control plane with the operator running: the server runs
//! in-process on a free loopback port and is spoken to over HTTP, as a browser or another
//! system would. The pages and the JSON API show real states; trigger (JSON and form)
//! creates runs with params and refuses bad ones naming the param; cancel and rerun work;
//! a viewer in token mode is refused by Kubernetes (its 403 relayed), not just shown a
//! disabled button; CSRF and cross-site requests are refused; security headers are set;
//! logs are served, with a note once the pod is gone; the live stream delivers a change.

mod common;

use common::*;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams};
use std::time::Duration;
use weir::api::{PipelineRun, RunPhase};
use weir::ui::AuthMode;
use weir_testenv::{TestNamespace, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A UI server on a free loopback port, stopped when dropped.
struct Server {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn start(ns: &TestNamespace, mode: AuthMode) -> Server {
    let (base, stop) = ui_server(ns, mode).await;
    Server {
        base,
        http: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        _stop: stop,
    }
}

impl Server {
    async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: String) -> Reply {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .http
            .request(request.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], String::new()).await
    }

    async fn get_as(&self, path: &str, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.request("GET", path, &[("authorization", &auth)], String::new())
            .await
    }

    /// A server-sent-events stream, once its headers came.
    async fn stream(&self, path: &str) -> hyper::body::Incoming {
        let request = hyper::Request::get(format!("{}{path}", self.base))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.http.request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        response.into_body()
    }

    /// The session's CSRF token (`GET /api/v1/session`).
    async fn csrf(&self, token: Option<&str>) -> String {
        let reply = match token {
            Some(t) => self.get_as("/api/v1/session", t).await,
            None => self.get("/api/v1/session").await,
        };
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["csrfToken"].as_str().unwrap().to_string()
    }

    /// A JSON POST with the session's CSRF token.
    async fn post_json(&self, path: &str, body: serde_json::Value) -> Reply {
        let csrf = self.csrf(None).await;
        self.request(
            "POST",
            path,
            &[("content-type", "application/json"), ("x-weir-csrf", &csrf)],
            body.to_string(),
        )
        .await
    }

    /// A form POST as a page's form sends it (its CSRF field included by the caller).
    async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(fields).unwrap();
        self.request(
            "POST",
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
    }
}

/// A pipeline with params, a task that prints a marker, a fan-out with one failing
/// instance, a task left upstream-failed and a `finally` task.
const ETL: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: etl}
spec:
  params:
    - {name: region, default: eu}
    - {name: parts, type: List, default: [a, b]}
  schedule: {cron: "0 2 * * *", timezone: Europe/Berlin}
  defaults: {image: busybox}
  tasks:
    - name: extract
      command: [sh, -c, 'echo "extracting {{ params.region }} marker-7f3a"']
      env:
        - name: PASSWORD
          valueFrom: {secretKeyRef: {name: db, key: password}}
    - name: shard
      dependsOn: [extract]
      forEach: {items: "{{ params.parts }}"}
      command: [sh, -c, 'echo "shard {{ item }}"; [ "{{ item }}" != b ] || exit 3']
    - name: load
      dependsOn: [shard]
      command: [sh, -c, 'echo loading']
  finally:
    - name: report
      command: [sh, -c, 'echo report done']
---
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {password: s3cret-value-91}
"#;

fn assert_security_headers(reply: &Reply) {
    let csp = reply.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    assert_eq!(reply.headers["x-frame-options"], "DENY");
    assert_eq!(reply.headers["referrer-policy"], "same-origin");
}

/// What a stream sent until it sent `needle`.
async fn read_until(mut body: hyper::body::Incoming, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
    while !seen.contains(needle) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{needle} never came in the stream:\n{seen}"))
            .expect("the stream ended")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    seen
}

async fn run_of(ns: &TestNamespace, name: &str) -> PipelineRun {
    ns.api::<PipelineRun>().get(name).await.unwrap()
}

#[tokio::test]
async fn pages_and_json_show_pipelines_runs_and_task_states() {
    let (ns, _op) = setup("ui-pages").await;
    ns.apply(ETL);
    let ui = start(&ns, AuthMode::Local).await;
    let n = ns.name();

    // Trigger through the JSON API, with a param; the run carries it.
    let reply = ui
        .post_json(
            &format!("/api/v1/namespaces/{n}/pipelines/etl/runs"),
            serde_json::json!({"name": "etl-1", "params": {"region": "us"}}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["name"], "etl-1");
    assert_eq!(run_of(&ns, "etl-1").await.spec.params["region"], "us");
    let run = wait_run_done(&ns, "etl-1", RUN_TIMEOUT).await;
    assert_eq!(run.status.unwrap().phase, Some(RunPhase::Failed));

    // The JSON list: the pipeline, its schedule in words in its zone, its last run.
    let list = ui.get(&format!("/api/v1/namespaces/{n}/pipelines")).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let list = list.json();
    let etl = &list["items"][0];
    assert_eq!(etl["name"], "etl");
    assert_eq!(etl["schedule"]["words"], "every day at 02:00");
    assert!(
        etl["schedule"]["nextRunLocal"].as_str().unwrap().ends_with("CET")
            || etl["schedule"]["nextRunLocal"]
                .as_str()
                .unwrap()
                .ends_with("CEST")
    );
    assert_eq!(etl["lastRuns"][0]["name"], "etl-1");
    assert_eq!(etl["lastRuns"][0]["phase"], "Failed");
    let runs = ui
        .get(&format!("/api/v1/namespaces/{n}/pipelineruns?pipeline=etl"))
        .await
        .json();
    assert_eq!(runs["items"][0]["name"], "etl-1");

    // The pipelines page: the row, its ready state and the run's square (shape and word).
    let page = ui.get(&format!("/?namespace={n}")).await;
    assert_eq!(page.status, 200);
    assert_security_headers(&page);
    assert!(
        page.body.contains(r#"data-testid="pipeline-etl""#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"data-testid="square-etl-1""#),
        "{}",
        page.body
    );
    assert!(page.body.contains("etl-1: Failed"), "{}", page.body);

    // The grid: one cell per task, the fan-out as one cell with counts.
    let grid = ui.get(&format!("/ns/{n}/pipelines/etl")).await;
    assert_eq!(grid.status, 200, "{}", grid.body);
    for (task, state) in [
        ("extract", "Succeeded"),
        ("shard", "Failed"),
        ("load", "UpstreamFailed"),
        ("report", "Succeeded"),
    ] {
        let cell = format!(r#"data-state="{state}" data-testid="cell-etl-1-{task}""#);
        assert!(grid.body.contains(&cell), "{cell} missing:\n{}", grid.body);
    }
    assert!(
        grid.body.contains("shard: Failed (1/2 succeeded, 1 failed)"),
        "{}",
        grid.body
    );
    let cells = ui
        .get(&format!("/api/v1/namespaces/{n}/pipelines/etl/grid"))
        .await
        .json();
    assert_eq!(cells["rows"][1]["cells"][0]["instances"]["failed"], 1);

    // The run page: its state, its tasks, its timeline, its events.
    let page = ui.get(&format!("/ns/{n}/runs/etl-1")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains(r#"data-state="Failed" data-testid="run-phase""#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(r#"data-testid="task-state-shard[1]""#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"id="gantt""#));
    assert!(page.body.contains(r#"<td><code>us</code></td>"#), "{}", page.body);

    // The graph page: one node per task, with the fan-out's counts.
    let page = ui.get(&format!("/ns/{n}/runs/etl-1/graph")).await;
    assert!(
        page.body.contains(r#"data-task="shard" data-state="Failed""#),
        "{}",
        page.body
    );
    assert!(page.body.contains("1/2 succeeded, 1 failed"), "{}", page.body);
    assert!(
        page.body
            .contains(r#"<script src="/static/graph.js" defer></script>"#)
    );

    // The task instance: the attempt's exit code, the env's Secret as a reference only,
    // and its log.
    let page = ui
        .get(&format!("/ns/{n}/runs/etl-1/tasks/shard?instance=1"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("<td>3</td>"),
        "exit code 3 missing:\n{}",
        page.body
    );
    assert!(page.body.contains("shard b"), "{}", page.body);
    let page = ui.get(&format!("/ns/{n}/runs/etl-1/tasks/extract")).await;
    assert!(
        page.body
            .contains("from Secret <code>db</code>, key <code>password</code> (value not shown)"),
        "{}",
        page.body
    );
    assert!(page.body.contains("extracting us marker-7f3a"), "{}", page.body);
    assert!(
        !page.body.contains("s3cret-value-91"),
        "a Secret's value is never shown"
    );
    let missing = ui.get(&format!("/ns/{n}/runs/etl-1/tasks/nope")).await;
    assert_eq!(missing.status, 404);
    assert!(
        missing
            .body
            .contains("has no task nope; its tasks: extract, shard, load, report"),
        "{}",
        missing.body
    );
}

#[tokio::test]
async fn triggering_checks_params_and_the_csrf_token() {
    let (ns, _op) = setup("ui-trigger").await;
    ns.apply(ETL);
    let ui = start(&ns, AuthMode::Local).await;
    let n = ns.name();
    let path = format!("/api/v1/namespaces/{n}/pipelines/etl/runs");

    // A param the pipeline does not declare: refused, naming it, and nothing created.
    let reply = ui
        .post_json(
            &path,
            serde_json::json!({"name": "bad-1", "params": {"regoin": "us"}}),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    let body = reply.json();
    assert!(
        body["problems"][0]
            .as_str()
            .unwrap()
            .contains(r#"unknown parameter "regoin""#),
        "{body}"
    );
    assert!(ns.api::<PipelineRun>().get_opt("bad-1").await.unwrap().is_none());

    // No CSRF token, a wrong one, another site's origin: refused before anything is done.
    let json = [("content-type", "application/json")];
    let body = serde_json::json!({"name": "csrf-1"}).to_string();
    let reply = ui.request("POST", &path, &json, body.clone()).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.json()["error"].as_str().unwrap().contains("CSRF"));
    let reply = ui
        .request(
            "POST",
            &path,
            &[("content-type", "application/json"), ("x-weir-csrf", "0000")],
            body.clone(),
        )
        .await;
    assert_eq!(reply.status, 403);
    let csrf = ui.csrf(None).await;
    let reply = ui
        .request(
            "POST",
            &path,
            &[
                ("content-type", "application/json"),
                ("x-weir-csrf", &csrf),
                ("origin", "http://evil.example"),
            ],
            body,
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(ns.api::<PipelineRun>().get_opt("csrf-1").await.unwrap().is_none());

    // The form: prefilled with the defaults; submitted, the run is created with its params.
    let form = ui.get(&format!("/ns/{n}/pipelines/etl/trigger")).await;
    assert!(
        form.body
            .contains(r#"id="param-region" name="param.region" value="eu""#),
        "{}",
        form.body
    );
    assert!(
        form.body
            .contains(r#"id="param-parts" name="param.parts" value="a,b""#),
        "{}",
        form.body
    );
    let trigger = format!("/ns/{n}/pipelines/etl/trigger");
    let reply = ui
        .post_form(
            &trigger,
            &[
                ("csrf", &csrf),
                ("param.region", "ap"),
                ("param.parts", "x,y,z"),
                ("name", "form-1"),
            ],
        )
        .await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert_eq!(reply.headers["location"], format!("/ns/{n}/runs/form-1"));
    let run = run_of(&ns, "form-1").await;
    assert_eq!(run.spec.params["region"], "ap");
    assert_eq!(run.spec.params["parts"], "x,y,z");
    assert_eq!(run.labels()["weir.dev/trigger"], "manual");

    // Without its CSRF field the form is refused; with a bad param it comes back saying which.
    let reply = ui
        .post_form(&trigger, &[("param.region", "ap"), ("name", "form-2")])
        .await;
    assert_eq!(reply.status, 403);
    let reply = ui
        .post_form(
            &trigger,
            &[
                ("csrf", &csrf),
                ("param.region", "ap"),
                ("param.colour", "red"),
                ("name", "form-2"),
            ],
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(
        reply.body.contains("unknown parameter &quot;colour&quot;"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains(r#"value="ap""#),
        "what was typed is kept: {}",
        reply.body
    );
    assert!(ns.api::<PipelineRun>().get_opt("form-2").await.unwrap().is_none());

    // Backfill: one run per interval of the schedule (in its time zone), once.
    let backfill = format!("/api/v1/namespaces/{n}/pipelines/etl/backfill");
    let range = serde_json::json!({"from": "2026-03-01", "to": "2026-03-02"});
    let reply = ui.post_json(&backfill, range.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let runs = reply.json()["runs"].as_array().unwrap().clone();
    let dates: Vec<&str> = runs.iter().map(|r| r["logicalDate"].as_str().unwrap()).collect();
    assert_eq!(dates, ["2026-03-01T01:00:00Z", "2026-03-02T01:00:00Z"]);
    assert!(runs.iter().all(|r| r["created"] == true), "{runs:?}");
    let name = runs[0]["name"].as_str().unwrap().to_string();
    assert_eq!(run_of(&ns, &name).await.labels()["weir.dev/trigger"], "backfill");
    let again = ui.post_json(&backfill, range).await.json();
    assert!(
        again["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["created"] == false),
        "{again}"
    );
    let reply = ui
        .post_json(
            &backfill,
            serde_json::json!({"from": "2026-03-05", "to": "2026-03-01"}),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(
        reply.json()["error"].as_str().unwrap().contains("is before from"),
        "{}",
        reply.body
    );

    // Suspend and resume the schedule: one field, and the pipelines page says so.
    let pipelines: Api<weir::api::Pipeline> = ns.api();
    let reply = ui
        .post_json(
            &format!("/api/v1/namespaces/{n}/pipelines/etl/suspend"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["changed"], true);
    assert!(pipelines.get("etl").await.unwrap().spec.schedule.unwrap().suspend);
    let page = ui.get(&format!("/?namespace={n}")).await;
    assert!(page.body.contains("⏸ suspended"), "{}", page.body);
    let grid = ui.get(&format!("/ns/{n}/pipelines/etl")).await;
    assert!(grid.body.contains(r#"id="action-resume""#), "{}", grid.body);
    let reply = ui
        .post_form(&format!("/ns/{n}/pipelines/etl/resume"), &[("csrf", &csrf)])
        .await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    assert!(!pipelines.get("etl").await.unwrap().spec.schedule.unwrap().suspend);
}

/// A pipeline whose task fails until a file exists, and one that waits.
fn flaky(marker: &std::path::Path) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: flaky}}
spec:
  defaults: {{image: busybox}}
  tasks:
    - {{name: check, command: [sh, -c, 'echo checking; [ -f {} ]']}}
    - {{name: after, dependsOn: [check], command: [sh, -c, 'echo after']}}
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: slow}}
spec:
  defaults: {{image: busybox}}
  tasks:
    - {{name: wait, command: [sh, -c, 'echo waiting; sleep 300']}}
"#,
        marker.display()
    )
}

#[tokio::test]
async fn cancel_and_rerun_act_on_runs() {
    let (ns, _op) = setup("ui-actions").await;
    let marker = std::env::temp_dir().join(format!("weir-ui-{}", ns.name()));
    let _ = std::fs::remove_file(&marker);
    ns.apply(&flaky(&marker));
    let ui = start(&ns, AuthMode::Local).await;
    let n = ns.name();

    // Cancel, from the confirmation page's form.
    let reply = ui
        .post_json(
            &format!("/api/v1/namespaces/{n}/pipelines/slow/runs"),
            serde_json::json!({"name": "slow-1"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let confirm = ui.get(&format!("/ns/{n}/runs/slow-1/cancel")).await;
    assert!(confirm.body.contains(r#"id="confirm""#), "{}", confirm.body);
    let csrf = ui.csrf(None).await;
    let reply = ui
        .post_form(&format!("/ns/{n}/runs/slow-1/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    let run = wait_run_done(&ns, "slow-1", RUN_TIMEOUT).await;
    assert_eq!(run.status.unwrap().phase, Some(RunPhase::Cancelled));
    let again = ui
        .post_json(
            &format!("/api/v1/namespaces/{n}/pipelineruns/slow-1/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["changed"], false);

    // Rerun a failed task once what it needs is there: it succeeds, and so does the run.
    ui.post_json(
        &format!("/api/v1/namespaces/{n}/pipelines/flaky/runs"),
        serde_json::json!({"name": "flaky-1"}),
    )
    .await;
    let run = wait_run_done(&ns, "flaky-1", RUN_TIMEOUT).await;
    assert_eq!(run.status.unwrap().phase, Some(RunPhase::Failed));
    let unknown = ui
        .post_json(
            &format!("/api/v1/namespaces/{n}/pipelineruns/flaky-1/rerun"),
            serde_json::json!({"tasks": ["chek"]}),
        )
        .await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(
        unknown.json()["error"]
            .as_str()
            .unwrap()
            .contains("no task chek (did you mean check?)")
    );
    std::fs::write(&marker, "").unwrap();
    let reply = ui
        .post_form(
            &format!("/ns/{n}/runs/flaky-1/rerun"),
            &[("csrf", &csrf), ("task", "check"), ("downstream", "true")],
        )
        .await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    wait_for("the rerun to succeed", RUN_TIMEOUT, || async {
        let run = run_of(&ns, "flaky-1").await;
        let status = run.status?;
        (status.rerun.is_some() && status.phase == Some(RunPhase::Succeeded)).then_some(())
    })
    .await;
    let page = ui.get(&format!("/ns/{n}/runs/flaky-1/tasks/check")).await;
    assert!(page.body.contains(r#"data-testid="attempt-2""#), "{}", page.body);
    let _ = std::fs::remove_file(&marker);
}

#[tokio::test]
async fn a_viewer_is_refused_by_kubernetes_and_sees_the_refusal() {
    let (ns, _op) = setup("ui-rbac").await;
    ns.apply(&flaky(std::path::Path::new("/nonexistent")));
    let token = viewer_token(&ns).await;

    let ui = start(&ns, AuthMode::Token).await;
    let n = ns.name();
    // Without a token: the API says how to authenticate, pages send to the login page.
    let reply = ui.get(&format!("/api/v1/namespaces/{n}/pipelines")).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let reply = ui.get(&format!("/?namespace={n}")).await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.headers["location"], "/login");

    // Logging in checks the token with Kubernetes and keeps it in an HttpOnly cookie.
    let reply = ui.post_form("/login", &[("token", "not-a-real-token")]).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        reply.body.contains("does not accept this token"),
        "{}",
        reply.body
    );
    let reply = ui.post_form("/login", &[("token", &token)]).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    let cookie = reply.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("weir_token=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let page = ui
        .request(
            "GET",
            &format!("/?namespace={n}"),
            &[("cookie", &session)],
            String::new(),
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);

    // The viewer reads (once the aggregated rules reach `view`).
    ui_admin_trigger(&ns).await;
    wait_for("the viewer to read runs", RUN_TIMEOUT, || async {
        let r = ui
            .get_as(&format!("/api/v1/namespaces/{n}/pipelineruns"), &token)
            .await;
        (r.status == 200 && r.body.contains("flaky-1")).then_some(())
    })
    .await;
    // The action is shown disabled (Kubernetes said so when asked) ...
    let page = ui.get_as(&format!("/ns/{n}/runs/flaky-1"), &token).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(r#"id="action-rerun" disabled"#),
        "{}",
        page.body
    );
    // ... and used anyway, Kubernetes refuses it: its 403 and message are relayed.
    let csrf = ui.csrf(Some(&token)).await;
    let auth = format!("Bearer {token}");
    let reply = ui
        .request(
            "POST",
            &format!("/api/v1/namespaces/{n}/pipelineruns/flaky-1/rerun"),
            &[
                ("authorization", &auth),
                ("x-weir-csrf", &csrf),
                ("content-type", "application/json"),
            ],
            "{}".into(),
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["kubernetes"]["code"], 403);
    let user = format!("system:serviceaccount:{n}:viewer");
    assert!(
        body["kubernetes"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!(r#"User "{user}" cannot patch resource "pipelineruns""#)),
        "{body}"
    );
    // The form route says the same as a page.
    let reply = ui
        .request(
            "POST",
            &format!("/ns/{n}/runs/flaky-1/rerun"),
            &[
                ("authorization", &auth),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.body.contains(r#"data-testid="kubernetes-message""#),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("cannot patch resource"), "{}", reply.body);
    // The CSRF token is the session's: another session's is refused.
    let local = ui.csrf(Some("another-token")).await;
    assert_ne!(local, csrf);

    // Readonly mode refuses every action itself.
    let readonly = start(&ns, AuthMode::Readonly).await;
    let reply = readonly
        .request(
            "POST",
            &format!("/api/v1/namespaces/{n}/pipelineruns/flaky-1/cancel"),
            &[],
            String::new(),
        )
        .await;
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("readonly mode"), "{}", reply.body);
    let page = readonly.get(&format!("/ns/{n}/runs/flaky-1")).await;
    assert!(
        page.body.contains(r#"id="action-rerun" disabled"#),
        "{}",
        page.body
    );
}

/// Creates run `flaky-1` as the admin (the test's own client) and waits for it to end.
async fn ui_admin_trigger(ns: &TestNamespace) {
    let ui = start(ns, AuthMode::Local).await;
    let reply = ui
        .post_json(
            &format!("/api/v1/namespaces/{}/pipelines/flaky/runs", ns.name()),
            serde_json::json!({"name": "flaky-1"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    wait_run_done(ns, "flaky-1", RUN_TIMEOUT).await;
}

#[tokio::test]
async fn logs_are_served_with_a_note_once_the_pod_is_gone_and_changes_stream_live() {
    let (ns, _op) = setup("ui-live").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: steps}
spec:
  defaults: {image: busybox}
  tasks:
    - {name: first, command: [sh, -c, 'echo "line one of first"; sleep 4']}
    - {name: second, dependsOn: [first], command: [sh, -c, 'echo second']}
"#,
    );
    let ui = start(&ns, AuthMode::Local).await;
    let n = ns.name();
    // The grid's stream says when the pipeline's runs change (the page then reads itself).
    let grid = ui
        .stream(&format!("/api/v1/namespaces/{n}/pipelines/steps/watch"))
        .await;
    ui.post_json(
        &format!("/api/v1/namespaces/{n}/pipelines/steps/runs"),
        serde_json::json!({"name": "steps-1"}),
    )
    .await;
    let seen = read_until(grid, "event: changed").await;
    assert!(seen.contains("event: changed"), "{seen}");

    // The run's stream: a first state, then the change to Succeeded as it happens.
    let body = ui
        .stream(&format!("/api/v1/namespaces/{n}/pipelineruns/steps-1/watch"))
        .await;
    let seen = read_until(body, r#""phase":"Succeeded""#).await;
    assert!(seen.starts_with("event: state\n"), "{seen}");
    assert!(seen.contains(r#""second":"Succeeded""#), "{seen}");
    let states: Vec<&str> = seen.lines().filter(|l| l.starts_with("data:")).collect();
    assert!(states.len() >= 2, "a first state and at least one change: {seen}");

    // The log of the attempt ...
    let path = format!("/api/v1/namespaces/{n}/pipelineruns/steps-1/tasks/first/logs");
    let logs = ui.get(&path).await.json();
    assert_eq!(logs["attempts"][0]["log"], "line one of first\n", "{logs}");
    assert_eq!(logs["attempts"][0]["finished"], true);
    // ... and, once its pod is deleted, a note saying so.
    let pods: Api<Pod> = ns.api();
    let pod = logs["attempts"][0]["pod"].as_str().unwrap().to_string();
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    wait_for("the pod to be gone", RUN_TIMEOUT, || async {
        let left = pods.list(&ListParams::default()).await.unwrap();
        (!left.items.iter().any(|p| p.name_any() == pod)).then_some(())
    })
    .await;
    let logs = ui.get(&path).await.json();
    assert!(logs["attempts"][0].get("log").is_none(), "{logs}");
    assert!(
        logs["attempts"][0]["note"]
            .as_str()
            .unwrap()
            .contains("its pod no longer exists"),
        "{logs}"
    );
    let page = ui.get(&format!("/ns/{n}/runs/steps-1/tasks/first")).await;
    assert!(
        page.body
            .contains("no logs for attempt 1: its pod no longer exists"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn weir_ui_prints_its_url_serves_and_keeps_local_credentials_on_loopback() {
    let ns = weir_testenv::env().await.namespace("ui-cmd").await;
    install_crds(&ns).await;
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["ui", "--address", "0.0.0.0", "-n", ns.name()])
        .env("KUBECONFIG", ns.kubeconfig())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("listens on loopback only"), "{stderr}");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["ui", "--port", "0", "-n", ns.name()])
        .env("KUBECONFIG", ns.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(RUN_TIMEOUT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line
        .split(" at ")
        .nth(1)
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let http: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("{url}api/v1/session").parse().unwrap();
    let response = http.get(uri).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let session: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(session["mode"], "local");
    assert_eq!(session["namespace"], ns.name());
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_waiting_sensor_shows_as_waiting_with_no_pod_and_no_log() {
    let (ns, _op) = setup("ui-sensor").await;
    ns.apply(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: sensing}
spec:
  tasks:
    - name: hold
      wait: {pokeInterval: 1s, delay: 10m}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: sensing-1}
spec:
  pipelineRef: {name: sensing}
"#,
    );
    let ui = start(&ns, AuthMode::Local).await;
    let n = ns.name();
    let run_page = wait_for("the run page to show the sensor waiting", RUN_TIMEOUT, || async {
        let page = ui.get(&format!("/ns/{n}/runs/sensing-1")).await;
        page.body
            .contains(r#"data-state="Waiting" data-testid="task-state-hold""#)
            .then_some(page.body.clone())
            .ok_or(page.body)
    })
    .await;
    assert!(run_page.contains("⧖"), "the waiting shape");
    let page = ui.get(&format!("/ns/{n}/runs/sensing-1/tasks/hold")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(r#"data-testid="sensor-note""#),
        "{}",
        page.body
    );
    assert!(page.body.contains("no pod (sensor)"), "{}", page.body);
    assert!(
        page.body.contains("waiting 10m"),
        "the attempt says what for: {}",
        page.body
    );
    assert!(!page.body.contains(r#"data-testid="log-1""#), "no log to fetch");
}
