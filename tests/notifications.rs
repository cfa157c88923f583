//! Notifications on the real control plane, to a receiver this test process serves on
//! loopback: what a failed run sends, that it is sent once also when the operator is
//! killed right after the failure, that a try cut short by a crash is sent again with the
//! same idempotency key, and how an undeliverable message shows. Email goes to an SMTP sink
//! this test process serves on loopback (a real SMTP dialogue over TCP, below).

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::*;
use kube::api::Api;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::api::{DeliveryState, NotificationRecord, PipelineRun, RunPhase};
use weir_testenv::{TestNamespace, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    key: String,
    authorization: Option<String>,
    body: serde_json::Value,
}

/// How the receiver answers a request to a path (in order; then 200).
#[derive(Clone, Copy, Debug)]
enum Reply {
    Status(u16),
    /// Tells the test (through `held`) and never answers.
    Hold,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: HashMap<String, VecDeque<Reply>>,
    held: Option<tokio::sync::mpsc::UnboundedSender<Received>>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Inner>>);

impl Receiver {
    /// Serves on a free loopback port; returns its address.
    async fn start(&self) -> SocketAddr {
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn script(&self, path: &str, replies: &[Reply]) {
        self.0
            .lock()
            .unwrap()
            .script
            .insert(path.into(), replies.iter().copied().collect());
    }

    fn on_hold(&self) -> tokio::sync::mpsc::UnboundedReceiver<Received> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.0.lock().unwrap().held = Some(tx);
        rx
    }

    fn received(&self, path: &str) -> Vec<Received> {
        let inner = self.0.lock().unwrap();
        inner
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

async fn receive(State(receiver): State<Receiver>, uri: Uri, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let got = Received {
        path: uri.path().to_string(),
        key: header("idempotency-key").unwrap_or_default(),
        authorization: header("authorization"),
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    };
    let reply = {
        let mut inner = receiver.0.lock().unwrap();
        inner.received.push(got.clone());
        inner.script.get_mut(&got.path).and_then(VecDeque::pop_front)
    };
    match reply {
        None => StatusCode::OK,
        Some(Reply::Status(code)) => StatusCode::from_u16(code).unwrap(),
        Some(Reply::Hold) => {
            if let Some(tx) = receiver.0.lock().unwrap().held.clone() {
                let _ = tx.send(got);
            }
            std::future::pending().await
        }
    }
}

/// One email the SMTP sink got.
#[derive(Clone, Debug, Default)]
struct Mail {
    from: String,
    to: Vec<String>,
    /// The `AUTH PLAIN` response as sent (base64).
    auth: Option<String>,
    /// The message, dot-unstuffed, lines joined with `\n`.
    data: String,
}

impl Mail {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.data
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    fn body(&self) -> &str {
        self.data.split_once("\n\n").map_or("", |(_, body)| body)
    }
}

/// A mail server that speaks the part of SMTP a client sending one message uses (greeting,
/// EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT) over real TCP on loopback, and keeps what it got.
#[derive(Clone, Default)]
struct SmtpSink(Arc<Mutex<Vec<Mail>>>);

impl SmtpSink {
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move { sink.session(stream).await });
            }
        });
        addr
    }

    fn mails(&self) -> Vec<Mail> {
        self.0.lock().unwrap().clone()
    }

    async fn session(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 sink ESMTP ready\r\n").await?;
        let mut mail = Mail::default();
        while let Some(line) = lines.next_line().await? {
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                b"250-sink\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("AUTH PLAIN ") {
                mail.auth = Some(line["AUTH PLAIN ".len()..].trim().to_string());
                b"235 2.7.0 authenticated\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                mail.from = line["MAIL FROM:".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .into();
                b"250 2.1.0 ok\r\n"
            } else if upper.starts_with("RCPT TO:") && upper.contains("NOBODY@") {
                b"550 5.1.1 no such user\r\n"
            } else if upper.starts_with("RCPT TO:") {
                mail.to.push(line["RCPT TO:".len()..].trim().to_string());
                b"250 2.1.5 ok\r\n"
            } else if upper == "DATA" {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = Vec::new();
                while let Some(l) = lines.next_line().await? {
                    if l == "." {
                        break;
                    }
                    // The client doubled every leading dot (RFC 5321 4.5.2).
                    data.push(l.strip_prefix('.').unwrap_or(&l).to_string());
                }
                mail.data = data.join("\n");
                self.0.lock().unwrap().push(std::mem::take(&mut mail));
                b"250 2.0.0 queued\r\n"
            } else if upper == "QUIT" {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            } else if upper == "RSET" || upper == "NOOP" {
                b"250 2.0.0 ok\r\n"
            } else {
                b"502 5.5.2 not implemented\r\n"
            };
            write.write_all(reply).await?;
        }
        Ok(())
    }
}

/// A pipeline whose task `boom` logs two lines and fails; `notifications` is its
/// `notifications:` block, indented under `spec`.
fn failing_pipeline(name: &str, notifications: &str) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: {name}
spec:
  tasks:
    - name: extract
      image: busybox
      command: ["sh", "-c", "echo extracted"]
    - name: boom
      image: busybox
      dependsOn: [extract]
      command: ["sh", "-c", "echo 'loading rows'; echo 'error: disk full'; exit 3"]
  notifications:
{notifications}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata:
  name: {name}-1
spec:
  pipelineRef:
    name: {name}
"#
    )
}

async fn records(ns: &TestNamespace, run: &str) -> Vec<NotificationRecord> {
    let api: Api<PipelineRun> = ns.api();
    api.get(run)
        .await
        .ok()
        .and_then(|r| r.status)
        .map(|s| s.notifications)
        .unwrap_or_default()
}

/// Waits until every record of the run has reached one of `states`, and there are `count`.
async fn wait_records(
    ns: &TestNamespace,
    run: &str,
    count: usize,
    states: &[DeliveryState],
) -> Vec<NotificationRecord> {
    wait_for("the notification records", RUN_TIMEOUT, || async {
        let records = records(ns, run).await;
        let done = records.len() == count && records.iter().all(|r| states.contains(&r.state));
        if done {
            Ok(records)
        } else {
            Err(format!("{records:?}"))
        }
    })
    .await
}

fn uid(run: &PipelineRun) -> String {
    run.metadata.uid.clone().unwrap()
}

/// Long enough for a duplicate to arrive if one were on its way (the notifier acts within
/// milliseconds of a status change); the count is asserted after it, not a duration.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_failed_run_sends_one_failure_notification_with_the_failed_task_and_its_last_log_lines() {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    let ns = weir_testenv::env().await.namespace("notify").await;
    install_crds(&ns).await;
    let _op = Operator::start_with(&ns, None, &["--ui-url", "https://weir.example.com/"]);
    ns.apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata:
  name: hooks
stringData:
  url: http://{addr}/oncall
  token: Bearer s3cret
"#
    ));
    let notifications = format!(
        r#"    - name: oncall
      webhook:
        urlFrom: {{name: hooks, key: url}}
        authorizationFrom: {{name: hooks, key: token}}
    - name: team
      events: [Failed, Succeeded]
      slack:
        url: http://{addr}/slack
      message: "{{{{ run.pipeline }}}} {{{{ notification.event }}}} at {{{{ notification.task }}}}: {{{{ notification.link }}}}"
    - name: cheers
      events: [Succeeded]
      slack:
        url: http://{addr}/cheers"#
    );
    ns.apply(&failing_pipeline("nightly", &notifications));
    let run = wait_run_done(&ns, "nightly-1", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    let records = wait_records(&ns, "nightly-1", 2, &[DeliveryState::Sent]).await;
    settle().await;

    let oncall = receiver.received("/oncall");
    assert_eq!(oncall.len(), 1, "{oncall:#?}");
    let got = &oncall[0];
    assert_eq!(got.key, format!("{}/oncall/Failed/0", uid(&run)));
    assert_eq!(got.authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(got.body["event"], "Failed");
    assert_eq!(got.body["run"], "nightly-1");
    assert_eq!(got.body["pipeline"], "nightly");
    assert_eq!(got.body["task"], "boom");
    assert_eq!(got.body["reason"], "TaskFailed");
    assert_eq!(
        got.body["link"],
        format!("https://weir.example.com/ns/{}/runs/nightly-1", ns.name())
    );
    assert_eq!(got.body["logs"], "loading rows\nerror: disk full");
    let text = got.body["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "Weir: run {}/nightly-1 of pipeline nightly failed (TaskFailed)",
            ns.name()
        )),
        "{text}"
    );
    assert!(text.contains("error: disk full"), "{text}");

    let slack = receiver.received("/slack");
    assert_eq!(slack.len(), 1, "{slack:#?}");
    assert_eq!(
        slack[0].body,
        serde_json::json!({"text": format!("nightly Failed at boom: https://weir.example.com/ns/{}/runs/nightly-1", ns.name())})
    );
    assert!(
        receiver.received("/cheers").is_empty(),
        "a Succeeded-only notification was sent for a failure"
    );
    assert!(records.iter().all(|r| r.attempts == 1), "{records:?}");

    let run = ns.api::<PipelineRun>().get("nightly-1").await.unwrap();
    let delivered =
        weir::api::condition::find(&run.status.unwrap().conditions, "NotificationsDelivered").cloned();
    assert_eq!(
        delivered.map(|c| (c.status, c.reason)),
        Some(("True".into(), "NotificationSent".into()))
    );
    // Events of the same reason on one run make a series: one Event, counted.
    assert!(!events_with_reason(&ns, "NotificationSent").is_empty());
}

#[tokio::test]
async fn the_failure_notification_is_sent_once_when_the_operator_is_killed_right_after_the_failure() {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    let (ns, mut op) = setup("notify-kill").await;
    let notifications = format!(
        r#"    - name: oncall
      webhook:
        url: http://{addr}/oncall"#
    );
    ns.apply(&failing_pipeline("crashy", &notifications));
    let api: Api<PipelineRun> = ns.api();
    wait_for("the run to fail", RUN_TIMEOUT, || async {
        let run = api.get("crashy-1").await.ok()?;
        (run.status?.phase? == RunPhase::Failed).then_some(())
    })
    .await;
    op.kill();
    let sent_before_the_kill = receiver.received("/oncall").len();
    op.restart();
    let records = wait_records(&ns, "crashy-1", 1, &[DeliveryState::Sent]).await;
    settle().await;
    // One notification. Delivery is at least once: had the kill fallen between the
    // receiver's answer and the record of it, the message would come again with the same
    // Idempotency-Key, which a receiver uses to drop the repeat (the next test).
    let got = receiver.received("/oncall");
    let keys: std::collections::BTreeSet<&str> = got.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys.len(),
        1,
        "sent before the kill: {sent_before_the_kill}; received: {got:#?}"
    );
    assert!(got.iter().all(|r| r.body == got[0].body), "{got:#?}");
    assert_eq!(got[0].body["event"], "Failed");
    // A first try cut short before it went out is tried again, and counted.
    assert!(records[0].attempts as usize >= got.len(), "{records:?} {got:#?}");
    eprintln!(
        "requests received: {}, tries recorded: {}",
        got.len(),
        records[0].attempts
    );
}

#[tokio::test]
async fn a_try_cut_short_by_a_crash_is_sent_again_with_the_same_idempotency_key() {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    receiver.script("/oncall", &[Reply::Hold]);
    let mut held = receiver.on_hold();
    let (ns, mut op) = setup("notify-cut").await;
    let notifications = format!(
        r#"    - name: oncall
      webhook:
        url: http://{addr}/oncall"#
    );
    ns.apply(&failing_pipeline("cut", &notifications));
    // The operator dies while the receiver has the message and has not answered.
    let first = tokio::time::timeout(RUN_TIMEOUT, held.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(records(&ns, "cut-1").await[0].state, DeliveryState::Sending);
    op.kill();
    op.restart();
    let records = wait_records(&ns, "cut-1", 1, &[DeliveryState::Sent]).await;
    settle().await;
    let got = receiver.received("/oncall");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(
        got[1].key, first.key,
        "the second try must carry the first one's key"
    );
    assert_eq!(got[1].body["key"], first.body["key"]);
    assert_eq!(records[0].attempts, 2);
}

#[tokio::test]
async fn an_undeliverable_notification_shows_as_a_condition_an_event_and_a_metric_and_a_refused_try_is_retried()
 {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    receiver.script("/gone", &[Reply::Status(404)]);
    receiver.script("/busy", &[Reply::Status(503)]);
    let (ns, op) = setup("notify-fail").await;
    let notifications = format!(
        r#"    - name: gone
      webhook:
        url: http://{addr}/gone
    - name: busy
      slack:
        url: http://{addr}/busy
    - name: nosecret
      slack:
        urlFrom: {{name: missing, key: url}}"#
    );
    ns.apply(&failing_pipeline("unlucky", &notifications));
    wait_run_done(&ns, "unlucky-1", RUN_TIMEOUT).await;
    // 404: given up at once. 503: tried again after the backoff, then sent.
    let records = wait_for("the records", RUN_TIMEOUT, || async {
        let records = records(&ns, "unlucky-1").await;
        let state = |name: &str| records.iter().find(|r| r.notification == name).map(|r| r.state);
        let ok = state("gone") == Some(DeliveryState::Failed)
            && state("busy") == Some(DeliveryState::Sent)
            && state("nosecret") == Some(DeliveryState::Retrying);
        if ok {
            Ok(records)
        } else {
            Err(format!("{records:?}"))
        }
    })
    .await;
    let by_name = |name: &str| records.iter().find(|r| r.notification == name).unwrap().clone();
    assert_eq!(by_name("busy").attempts, 2);
    assert_eq!(receiver.received("/busy").len(), 2);
    assert_eq!(receiver.received("/gone").len(), 1);
    let gone = by_name("gone");
    assert!(
        gone.message.as_deref().unwrap().contains("answered 404"),
        "{gone:?}"
    );
    assert!(
        !gone.message.as_deref().unwrap().contains("/gone"),
        "the address's path is a credential: {gone:?}"
    );
    let nosecret = by_name("nosecret");
    assert!(
        nosecret.message.as_deref().unwrap().contains("not found"),
        "{nosecret:?}"
    );

    let run = ns.api::<PipelineRun>().get("unlucky-1").await.unwrap();
    let delivered =
        weir::api::condition::find(&run.status.as_ref().unwrap().conditions, "NotificationsDelivered")
            .cloned()
            .expect("a NotificationsDelivered condition");
    assert_eq!(
        (delivered.status.as_str(), delivered.reason.as_str()),
        ("False", "NotificationFailed")
    );
    // The run's own condition is untouched by the notifier.
    assert_eq!(condition_reason(&run), "TaskFailed");
    let failed = events_with_reason(&ns, "NotificationFailed");
    assert!(
        failed
            .iter()
            .any(|e| e.contains("gone/Failed/0") && e.contains("404")),
        "{failed:?}"
    );
    assert!(!events_with_reason(&ns, "NotificationRetrying").is_empty());
    scrape_until(
        op.http_addr().await,
        &[
            (
                "weir_notification_deliveries_total{outcome=\"permanent_error\"}",
                1.0,
            ),
            ("weir_notification_deliveries_total{outcome=\"sent\"}", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_missed_deadline_is_said_once_when_it_passes_and_notifies_before_the_run_ends() {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    let (ns, op) = setup("notify-late").await;
    let pipeline = |name: &str, on_miss: &str| {
        format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: {name}
spec:
  deadline: {{within: 2s, from: RunStart, onMiss: {on_miss}}}
  tasks:
    - name: slow
      image: busybox
      command: ["sh", "-c", "sleep 12"]
  notifications:
    - name: sla
      events: [DeadlineMissed, Failed, Succeeded]
      webhook:
        url: http://{addr}/{name}
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata:
  name: {name}-1
spec:
  pipelineRef:
    name: {name}
"#
        )
    };
    ns.apply(&pipeline("late", "Continue"));
    ns.apply(&pipeline("strict", "Fail"));
    let api: Api<PipelineRun> = ns.api();

    // Continue: the miss is told while the task still runs; the run then succeeds.
    let missed = wait_for("the DeadlineMissed message", RUN_TIMEOUT, || async {
        receiver.received("/late").first().cloned().ok_or("none yet")
    })
    .await;
    let run = api.get("late-1").await.unwrap();
    assert!(
        !phase(&run).is_terminal(),
        "the message came after the run ended: {:?}",
        run.status
    );
    assert_eq!(missed.body["event"], "DeadlineMissed");
    assert_eq!(missed.key, format!("{}/sla/DeadlineMissed/run", uid(&run)));
    let message = missed.body["message"].as_str().unwrap();
    assert!(
        message.contains("2s after its start") && message.ends_with("it goes on"),
        "{message}"
    );
    let condition =
        weir::api::condition::find(&run.status.as_ref().unwrap().conditions, "DeadlineMissed").cloned();
    assert_eq!(condition.map(|c| c.status), Some("True".into()));
    let run = wait_run_done(&ns, "late-1", RUN_TIMEOUT).await;
    assert_eq!(
        phase(&run),
        RunPhase::Succeeded,
        "onMiss: Continue must not stop the run"
    );

    // Fail: stopped at the deadline, as by a timeout.
    let run = wait_run_done(&ns, "strict-1", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    assert_eq!(condition_reason(&run), "RunTimeout");
    wait_records(&ns, "strict-1", 2, &[DeliveryState::Sent]).await;
    wait_records(&ns, "late-1", 2, &[DeliveryState::Sent]).await;
    settle().await;
    let mut events: Vec<String> = receiver
        .received("/strict")
        .iter()
        .map(|r| r.body["event"].as_str().unwrap().to_string())
        .collect();
    // With onMiss: Fail the miss and the stop are the same moment: when the notifier's
    // first record write races the run's status write, both messages go out together and
    // may arrive in either order (seen under load); each goes out once.
    events.sort();
    assert_eq!(events, ["DeadlineMissed", "Failed"]);
    let late: Vec<String> = receiver
        .received("/late")
        .iter()
        .map(|r| r.body["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        late,
        ["DeadlineMissed", "Succeeded"],
        "one DeadlineMissed message, however often the run is reconciled"
    );
    let said = events_with_reason(&ns, "DeadlineMissed");
    assert!(!said.is_empty(), "no DeadlineMissed Event");
    scrape_until(op.http_addr().await, &[("weir_deadlines_missed_total", 2.0)]).await;
}

#[tokio::test]
async fn a_tasks_missed_deadline_notifies_once_while_it_runs_and_on_miss_fail_stops_only_that_task() {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    let (ns, op) = setup("notify-task-late").await;
    // `slow` runs past its deadline (Continue); `stuck` is stopped at its own (Fail);
    // `after` has not even started when its deadline passes. The chat message reads a param
    // the run does not give: the pipeline's default.
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: tlate
spec:
  params:
    - name: env
      default: prod
  tasks:
    - name: slow
      image: busybox
      command: ["sh", "-c", "sleep 8"]
      deadline: {{within: 2s, from: TaskStart}}
    - name: stuck
      image: busybox
      command: ["sh", "-c", "sleep 120"]
      deadline: {{within: 3s, from: RunStart, onMiss: Fail}}
    - name: after
      image: busybox
      dependsOn: [slow]
      command: ["sh", "-c", "echo done"]
      deadline: {{within: 4s, from: RunStart}}
  notifications:
    - name: sla
      events: [DeadlineMissed, Failed, Succeeded]
      webhook:
        url: http://{addr}/sla
    - name: chat
      events: [DeadlineMissed]
      slack:
        url: http://{addr}/chat
      message: "{{{{ params.env }}}}: {{{{ notification.task }}}} is late"
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata:
  name: tlate-1
spec:
  pipelineRef:
    name: tlate
"#
    ));
    let api: Api<PipelineRun> = ns.api();
    // The miss of `slow` is told while `slow` still runs.
    let slow_missed = wait_for("the DeadlineMissed message of slow", RUN_TIMEOUT, || async {
        receiver
            .received("/sla")
            .into_iter()
            .find(|r| r.body["task"] == "slow")
            .ok_or("none yet")
    })
    .await;
    let slow = task_run(&ns, "tlate-1", "slow").await;
    assert!(
        !slow.status.as_ref().and_then(|s| s.phase).unwrap().is_terminal(),
        "the message came after the task ended: {:?}",
        slow.status
    );
    let run = api.get("tlate-1").await.unwrap();
    assert_eq!(slow_missed.body["event"], "DeadlineMissed");
    assert_eq!(
        slow_missed.key,
        format!("{}/sla/DeadlineMissed/task/slow", uid(&run))
    );
    let message = slow_missed.body["message"].as_str().unwrap();
    assert!(
        message.contains("2s after the task's start") && message.ends_with("it goes on"),
        "{message}"
    );

    // onMiss: Fail stops `stuck` (sleeping 120s) with reason DeadlineExceeded.
    let stuck = wait_for("stuck to be stopped", RUN_TIMEOUT, || async {
        let tr = task_run_opt(&ns, "tlate-1", "stuck").await.ok_or("no TaskRun")?;
        let done = tr
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_terminal());
        if done { Ok(tr) } else { Err("still running") }
    })
    .await;
    let status = stuck.status.unwrap();
    assert_eq!(status.phase, Some(weir::api::TaskPhase::Failed));
    let succeeded = weir::api::condition::find(&status.conditions, "Succeeded").unwrap();
    assert_eq!(succeeded.reason, "DeadlineExceeded", "{succeeded:?}");
    assert_eq!(
        status.attempts.last().and_then(|a| a.reason),
        Some(weir::api::FailureReason::DeadlineExceeded)
    );
    let stuck_missed = weir::api::condition::find(&status.conditions, "DeadlineMissed").unwrap();
    assert!(
        stuck_missed.message.ends_with("it is stopped"),
        "{stuck_missed:?}"
    );

    let run = wait_run_done(&ns, "tlate-1", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    assert_eq!(summary_phase(&run, "slow"), Some(weir::api::TaskPhase::Succeeded));
    assert_eq!(
        summary_phase(&run, "after"),
        Some(weir::api::TaskPhase::Succeeded)
    );
    let missed: Vec<String> = run
        .status
        .as_ref()
        .unwrap()
        .missed_deadlines
        .iter()
        .map(|m| m.task.clone())
        .collect();
    assert_eq!(missed.len(), 3, "{missed:?}");
    let after = task_run(&ns, "tlate-1", "after").await;
    let after_missed =
        weir::api::condition::find(&after.status.as_ref().unwrap().conditions, "DeadlineMissed").cloned();
    assert!(
        after_missed
            .as_ref()
            .is_some_and(|c| c.message.contains("had not even started")),
        "{after_missed:?}"
    );
    wait_records(&ns, "tlate-1", 7, &[DeliveryState::Sent]).await;
    settle().await;
    let mut sla: Vec<String> = receiver
        .received("/sla")
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.body["event"].as_str().unwrap(),
                r.body["task"].as_str().unwrap_or("-")
            )
        })
        .collect();
    sla.sort();
    assert_eq!(
        sla,
        [
            "DeadlineMissed after",
            "DeadlineMissed slow",
            "DeadlineMissed stuck",
            "Failed stuck"
        ],
        "one message per missed task, however often the run is reconciled"
    );
    let mut chat: Vec<String> = receiver
        .received("/chat")
        .iter()
        .map(|r| r.body["text"].as_str().unwrap().to_string())
        .collect();
    chat.sort();
    assert_eq!(
        chat,
        ["prod: after is late", "prod: slow is late", "prod: stuck is late"]
    );
    scrape_until(op.http_addr().await, &[("weir_task_deadlines_missed_total", 3.0)]).await;

    // `weir get` shows the misses and the notifications.
    let shown = common::cli::stdout_ok(&common::cli::weir(&ns, &["get", "tlate-1"]));
    assert!(shown.contains("Deadlines missed:"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.trim_start().starts_with("task stuck") && l.ends_with("it is stopped")),
        "{shown}"
    );
    let header = shown
        .lines()
        .find(|l| l.starts_with("NOTIFICATION"))
        .unwrap_or_else(|| panic!("no notifications table:\n{shown}"));
    assert!(header.contains("EVENT") && header.contains("STATE") && header.contains("LAST ERROR"));
    let row = shown
        .lines()
        .find(|l| l.starts_with("sla") && l.contains("task/stuck"))
        .unwrap_or_else(|| panic!("no row for sla/task/stuck:\n{shown}"));
    assert!(row.contains("DeadlineMissed") && row.contains("Sent"), "{row}");
}

#[tokio::test]
async fn a_failure_email_reaches_the_smtp_server_with_the_templates_subject_and_body() {
    let sink = SmtpSink::default();
    let smtp = sink.start().await;
    let (ns, _op) = setup("notify-mail").await;
    ns.apply(
        r#"
apiVersion: v1
kind: Secret
metadata:
  name: mail-login
stringData:
  username: weir
  password: s3cret
"#,
    );
    let notifications = format!(
        r#"    - name: mail
      email:
        to: ["Data on call <oncall@example.com>"]
        from: "Weir <weir@example.com>"
        smtp: {{host: 127.0.0.1, port: {port}, tls: None}}
        credentialsSecret: mail-login
      message: "{{{{ run.pipeline }}}} {{{{ notification.event }}}}\nTask {{{{ notification.task }}}} failed.\n{{{{ notification.logs }}}}"
    - name: bounce
      email:
        to: [nobody@example.com]
        from: weir@example.com
        smtp: {{host: 127.0.0.1, port: {port}, tls: None}}"#,
        port = smtp.port()
    );
    ns.apply(&failing_pipeline("mailer", &notifications));
    let run = wait_run_done(&ns, "mailer-1", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Failed);
    let records = wait_records(&ns, "mailer-1", 2, &[DeliveryState::Sent, DeliveryState::Failed]).await;
    settle().await;
    // A recipient the server refuses (5xx) fails the message at once, naming the server.
    let bounce = records.iter().find(|r| r.notification == "bounce").unwrap();
    assert_eq!(
        (bounce.state, bounce.attempts),
        (DeliveryState::Failed, 1),
        "{bounce:?}"
    );
    let why = bounce.message.as_deref().unwrap();
    assert!(
        why.contains(&format!("smtp://127.0.0.1:{}", smtp.port())) && why.contains("no such user"),
        "{why}"
    );
    let records: Vec<_> = records.into_iter().filter(|r| r.notification == "mail").collect();
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = &mails[0];
    assert_eq!(mail.from, "<weir@example.com>");
    assert_eq!(mail.to, ["<oncall@example.com>"]);
    // base64 of "\0weir\0s3cret": the login from the Secret.
    assert_eq!(mail.auth.as_deref(), Some("AHdlaXIAczNjcmV0"));
    assert_eq!(mail.header("Subject"), Some("mailer Failed"), "{}", mail.data);
    assert_eq!(
        mail.header("Message-ID"),
        Some(format!("<{}/mail/Failed/0@weir.dev>", uid(&run)).as_str())
    );
    assert_eq!(
        mail.body(),
        "mailer Failed\nTask boom failed.\nloading rows\nerror: disk full",
        "{}",
        mail.data
    );
    assert_eq!(records[0].attempts, 1);
}

#[tokio::test]
async fn a_tasks_missed_deadline_recorded_before_a_crash_is_not_said_again_by_the_next_operator() {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    let (ns, mut op) = setup("notify-task-crash").await;
    ns.apply(&format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: tcrash
spec:
  tasks:
    - name: slow
      image: busybox
      command: ["sh", "-c", "sleep 6"]
      deadline: {{within: 1s, from: TaskStart}}
  notifications:
    - name: sla
      events: [DeadlineMissed]
      webhook:
        url: http://{addr}/sla
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata:
  name: tcrash-1
spec:
  pipelineRef:
    name: tcrash
"#
    ));
    let api: Api<PipelineRun> = ns.api();
    // The operator dies as soon as the miss is recorded in the run's status.
    wait_for("the miss to be recorded", RUN_TIMEOUT, || async {
        let run = api.get("tcrash-1").await.ok()?;
        (!run.status?.missed_deadlines.is_empty()).then_some(())
    })
    .await;
    op.kill();
    op.restart();
    let run = wait_run_done(&ns, "tcrash-1", RUN_TIMEOUT).await;
    assert_eq!(phase(&run), RunPhase::Succeeded, "onMiss: Continue");
    wait_records(&ns, "tcrash-1", 1, &[DeliveryState::Sent]).await;
    settle().await;
    let got = receiver.received("/sla");
    let keys: std::collections::BTreeSet<&str> = got.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        [format!("{}/sla/DeadlineMissed/task/slow", uid(&run))],
        "{got:#?}"
    );
    assert_eq!(run.status.unwrap().missed_deadlines.len(), 1);
    // The new operator found the record: it neither counted nor said the miss again.
    scrape_until(op.http_addr().await, &[("weir_task_deadlines_missed_total", 0.0)]).await;

    // The UI's run page shows the miss and the notification.
    let (base, _stop) = ui_server(&ns, weir::ui::AuthMode::Local).await;
    let ui: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let (code, page) = http_get(ui, &format!("/ns/{}/runs/tcrash-1", ns.name()))
        .await
        .unwrap();
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains(r#"<table id="deadlines">"#) && page.contains("<td>task slow</td>"),
        "{page}"
    );
    assert!(
        page.contains("<td>sla</td><td>DeadlineMissed</td><td>task/slow</td><td>Sent</td>"),
        "{page}"
    );
}
