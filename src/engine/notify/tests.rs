use super::*;
use crate::api::{AppliedRerun, TaskSummary};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

fn hook(name: &str, on: &[NotifyEvent]) -> Notification {
    Notification {
        name: name.into(),
        events: on.to_vec(),
        webhook: Some(WebhookTarget {
            url: Some("http://127.0.0.1:9/hook".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn summary(name: &str, phase: TaskPhase, attempts: u32) -> TaskSummary {
    TaskSummary {
        name: name.into(),
        phase,
        task_run: Some(format!("run-{name}")),
        attempts: Some(attempts),
        message: Some(format!("{name} exited with code 3")),
    }
}

fn failed_run() -> PipelineRunStatus {
    PipelineRunStatus {
        phase: Some(RunPhase::Failed),
        conditions: vec![Condition {
            type_: "Succeeded".into(),
            status: "False".into(),
            reason: "TaskFailed".into(),
            message: "task \"load\" failed".into(),
            last_transition_time: Time(t("2026-01-01T00:00:00Z")),
            observed_generation: None,
        }],
        tasks: vec![
            summary("extract", TaskPhase::Succeeded, 1),
            summary("load", TaskPhase::Failed, 2),
        ],
        ..Default::default()
    }
}

fn pipeline(ns: &[Notification]) -> Vec<Declared<'_>> {
    ns.iter()
        .map(|n| Declared {
            origin: Origin::Pipeline,
            notification: n,
        })
        .collect()
}

#[test]
fn a_failed_run_calls_for_one_message_per_notification_listening_to_failures() {
    let ns = [
        hook("oncall", &[]),
        hook("team", &[NotifyEvent::Succeeded]),
        hook("all", &[NotifyEvent::Failed, NotifyEvent::Succeeded]),
    ];
    let due = due(&pipeline(&ns), &failed_run());
    let keys: Vec<&str> = due.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["oncall/Failed/0", "all/Failed/0"]);
    assert_eq!(due[0].task.as_deref(), Some("load"));
    assert_eq!(due[0].reason, "TaskFailed");
    assert_eq!(due[1].index, 2);
}

#[test]
fn a_rerun_that_fails_again_is_a_new_message_and_retries_are_one_per_attempt() {
    let ns = [hook("oncall", &[NotifyEvent::Failed, NotifyEvent::Retrying])];
    let mut status = failed_run();
    status.rerun = Some(AppliedRerun {
        request: "r".into(),
        time: Time(t("2026-01-01T00:00:00Z")),
        requested_by: None,
        tasks: vec![],
        tasks_omitted: None,
        refused: None,
        count: 1,
    });
    status.tasks.push(summary("flaky", TaskPhase::Retrying, 2));
    let keys: Vec<String> = due(&pipeline(&ns), &status).into_iter().map(|d| d.key).collect();
    assert_eq!(keys, ["oncall/Failed/1", "oncall/Retrying/flaky/2"]);
}

#[test]
fn installation_defaults_never_share_a_key_with_a_pipelines_notification() {
    let n = hook("oncall", &[]);
    let both = [
        Declared {
            origin: Origin::Pipeline,
            notification: &n,
        },
        Declared {
            origin: Origin::Installation,
            notification: &n,
        },
    ];
    let keys: Vec<String> = due(&both, &failed_run()).into_iter().map(|d| d.key).collect();
    assert_eq!(keys, ["oncall/Failed/0", "installation.oncall/Failed/0"]);
}

#[test]
fn a_message_is_recorded_before_it_is_sent_and_never_sent_again_once_sent() {
    let ns = [hook("oncall", &[])];
    let due = due(&pipeline(&ns), &failed_run());
    let now = t("2026-01-01T00:00:10Z");
    let first = plan(&due, &[], &|_| false, now);
    assert_eq!(first.send, ["oncall/Failed/0"]);
    assert_eq!(first.records[0].state, DeliveryState::Sending);
    assert_eq!(first.records[0].attempts, 1);
    // While this process sends it, it is not taken again.
    assert!(plan(&due, &first.records, &|_| true, now).send.is_empty());
    let mut sent = first.records.clone();
    after_try(&mut sent[0], &TryOutcome::Sent, now);
    let again = plan(&due, &sent, &|_| false, now);
    assert!(again.send.is_empty());
    assert_eq!(again.records, sent);
}

#[test]
fn a_send_cut_short_by_a_crash_is_tried_again_with_the_same_key() {
    let ns = [hook("oncall", &[])];
    let due = due(&pipeline(&ns), &failed_run());
    let now = t("2026-01-01T00:00:10Z");
    let first = plan(&due, &[], &|_| false, now);
    // A new process: the record says Sending, nothing is in flight.
    let after_restart = plan(&due, &first.records, &|_| false, now);
    assert_eq!(after_restart.send, first.send);
    assert_eq!(after_restart.records[0].attempts, 2);
    assert_eq!(after_restart.records[0].key, first.records[0].key);
}

#[test]
fn failed_tries_back_off_then_give_up() {
    let ns = [hook("oncall", &[])];
    let due = due(&pipeline(&ns), &failed_run());
    let mut now = t("2026-01-01T00:00:00Z");
    let mut records = plan(&due, &[], &|_| false, now).records;
    let mut waits = Vec::new();
    for _ in 1..MAX_ATTEMPTS {
        after_try(&mut records[0], &TryOutcome::Transient("503".into()), now);
        assert_eq!(records[0].state, DeliveryState::Retrying);
        let at = records[0].next_attempt_time.clone().unwrap().0;
        waits.push((at - now).get_seconds());
        // Not before its time.
        let early = plan(&due, &records, &|_| false, now);
        assert!(early.send.is_empty());
        assert_eq!(early.next, Some(at));
        now = at;
        records = plan(&due, &records, &|_| false, now).records;
    }
    assert_eq!(waits, [2, 4, 8, 16, 32]);
    after_try(&mut records[0], &TryOutcome::Transient("503".into()), now);
    assert_eq!(records[0].state, DeliveryState::Failed);
    assert!(
        records[0]
            .message
            .as_deref()
            .unwrap()
            .contains("gave up after 6 tries")
    );
    assert!(plan(&due, &records, &|_| false, now).send.is_empty());
}

#[test]
fn backoff_is_capped() {
    assert_eq!(backoff(1), Duration::from_secs(2));
    assert_eq!(backoff(100), MAX_BACKOFF);
}

#[test]
fn a_permanent_failure_is_not_tried_again_and_shows_in_the_condition() {
    let ns = [hook("oncall", &[])];
    let due = due(&pipeline(&ns), &failed_run());
    let now = t("2026-01-01T00:00:00Z");
    let mut records = plan(&due, &[], &|_| false, now).records;
    assert_eq!(
        condition(&records),
        None,
        "nothing to say while the first try is going"
    );
    after_try(
        &mut records[0],
        &TryOutcome::Permanent("answered 404".into()),
        now,
    );
    assert_eq!(records[0].state, DeliveryState::Failed);
    let (ok, reason, message) = condition(&records).unwrap();
    assert!(!ok);
    assert_eq!(reason, "NotificationFailed");
    assert!(
        message.contains("oncall/Failed/0") && message.contains("answered 404"),
        "{message}"
    );
    after_try(&mut records[0], &TryOutcome::Sent, now);
    assert!(condition(&records).unwrap().0);
}

#[test]
fn records_stay_bounded_by_dropping_the_oldest_finished() {
    let now = t("2026-01-01T00:00:00Z");
    let old: Vec<NotificationRecord> = (0..MAX_RECORDS)
        .map(|i| NotificationRecord {
            key: format!("n/Retrying/t/{i}"),
            notification: "n".into(),
            event: NotifyEvent::Retrying,
            state: DeliveryState::Sent,
            attempts: 1,
            last_attempt_time: None,
            next_attempt_time: None,
            message: None,
        })
        .collect();
    let ns = [hook("n", &[])];
    let due = due(&pipeline(&ns), &failed_run());
    let p = plan(&due, &old, &|_| false, now);
    assert_eq!(p.records.len(), MAX_RECORDS);
    assert_eq!(p.records[0].key, "n/Retrying/t/1");
    assert_eq!(p.send, ["n/Failed/0"]);
}

fn notice() -> Notice {
    Notice {
        run: "nightly-1".into(),
        namespace: "data".into(),
        uid: "u-1".into(),
        pipeline: "nightly".into(),
        event: Some(NotifyEvent::Failed),
        task: Some("load".into()),
        reason: "TaskFailed".into(),
        message: "task \"load\" failed".into(),
        link: "https://weir.example.com/ns/data/runs/nightly-1".into(),
        logs: "connecting\nerror: table missing".into(),
        params: [("region".to_string(), Value::String("eu".into()))].into(),
        ..Default::default()
    }
}

#[test]
fn the_default_message_says_what_failed_where_to_look_and_the_last_log_lines() {
    let text = text(&hook("oncall", &[]), &notice()).unwrap();
    assert_eq!(
        text,
        "Weir: run data/nightly-1 of pipeline nightly failed (TaskFailed): task \"load\" failed\n\
         https://weir.example.com/ns/data/runs/nightly-1\n\
         Last log lines of load:\n```\nconnecting\nerror: table missing\n```"
    );
}

#[test]
fn a_message_template_reads_the_run_its_params_and_the_event() {
    let mut n = hook("oncall", &[]);
    n.message = Some("{{ notification.event }}: {{ run.pipeline }} in {{ params.region }} at {{ notification.task }} <{{ notification.link }}>".into());
    assert_eq!(
        text(&n, &notice()).unwrap(),
        "Failed: nightly in eu at load <https://weir.example.com/ns/data/runs/nightly-1>"
    );
}

#[test]
fn bodies_for_a_webhook_and_for_slack() {
    let slack = body(Format::Slack, "hello", &notice(), "oncall/Failed/0");
    assert_eq!(slack, json!({"text": "hello"}));
    let hook = body(Format::Webhook, "hello", &notice(), "oncall/Failed/0");
    assert_eq!(hook["event"], "Failed");
    assert_eq!(hook["task"], "load");
    assert_eq!(hook["key"], "oncall/Failed/0");
    assert_eq!(hook["logs"], "connecting\nerror: table missing");
    assert_eq!(hook["text"], "hello");
    assert_eq!(idempotency_key("u-1", "oncall/Failed/0"), "u-1/oncall/Failed/0");
}

#[test]
fn checks_name_every_problem_with_its_field() {
    let mut bad_target = hook("two", &[]);
    bad_target.slack = bad_target.webhook.clone();
    let mut bad_url = hook("url", &[]);
    bad_url.webhook.as_mut().unwrap().url = Some("ftp://x".into());
    let mut bad_template = hook("tpl", &[]);
    bad_template.message = Some("{{ params.nope }} {{ tasks.a.outputs.b }} {{ notification.colour }}".into());
    let mut neither = hook("neither", &[]);
    neither.webhook.as_mut().unwrap().url = None;
    let list = [
        hook("dup", &[]),
        hook("dup", &[]),
        bad_target,
        bad_url,
        bad_template,
        neither,
        hook("Bad_Name", &[]),
    ];
    let problems = check(&list, &["region"], "notifications");
    let text: Vec<String> = problems.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    assert_eq!(
        text,
        [
            "notifications[1].name: duplicate notification name \"dup\"",
            "notifications[2]: set exactly one of webhook, slack and email",
            "notifications[3].webhook.url: \"ftp://x\" must start with http:// or https://",
            "notifications[4].message: bad template: unknown notification field \"colour\" (known: event, task, reason, message, link, logs)",
            "notifications[5].webhook: set exactly one of url and urlFrom",
            "notifications[6].name: \"Bad_Name\" is not a valid name (lowercase letters, digits and '-', at most 63)",
        ]
    );
    let mut refs = hook("refs", &[]);
    refs.message = Some("{{ params.nope }} {{ tasks.a.outputs.b }}".into());
    let text: Vec<String> = check(&[refs], &["region"], "n")
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        text,
        [
            "{{ params.nope }}: no parameter \"nope\" is declared",
            "{{ tasks.a.outputs.b }} is not available in a notification's message",
        ]
    );
}

#[test]
fn a_missed_deadline_is_one_message_per_run_even_after_a_rerun() {
    let ns = [hook("sla", &[NotifyEvent::DeadlineMissed])];
    let mut status = failed_run();
    status.phase = Some(RunPhase::Running);
    status.conditions.push(Condition {
        type_: "DeadlineMissed".into(),
        status: "True".into(),
        reason: "DeadlineMissed".into(),
        message: "the run was not done by 2026-01-01T01:00:00Z (1h after its start); it goes on".into(),
        last_transition_time: Time(t("2026-01-01T01:00:00Z")),
        observed_generation: None,
    });
    let first: Vec<String> = due(&pipeline(&ns), &status).into_iter().map(|d| d.key).collect();
    assert_eq!(first, ["sla/DeadlineMissed/run"]);
    status.rerun = Some(AppliedRerun {
        request: "r".into(),
        time: Time(t("2026-01-01T02:00:00Z")),
        requested_by: None,
        tasks: vec![],
        tasks_omitted: None,
        refused: None,
        count: 1,
    });
    let after: Vec<String> = due(&pipeline(&ns), &status).into_iter().map(|d| d.key).collect();
    assert_eq!(after, first);
}

#[test]
fn a_message_sees_the_pipelines_param_defaults_for_params_the_run_does_not_give() {
    let spec: crate::api::PipelineSpec = serde_json::from_value(serde_json::json!({
        "tasks": [{"name": "a", "image": "busybox"}],
        "params": [
            {"name": "env", "default": "prod"},
            {"name": "region", "default": "eu"},
            {"name": "owner"},
        ],
    }))
    .unwrap();
    let given: BTreeMap<String, Value> = [("region".to_string(), json!("us"))].into();
    // `owner` is required and missing: the defaults still apply, the given value wins.
    let seen = params(Some(&spec), &given);
    assert_eq!(seen.get("env"), Some(&json!("prod")));
    assert_eq!(seen.get("region"), Some(&json!("us")));
    assert_eq!(seen.get("owner"), None);
    let given: BTreeMap<String, Value> = [("owner".to_string(), json!("data"))].into();
    let seen = params(Some(&spec), &given);
    assert_eq!(seen.len(), 3);
    assert_eq!(seen["env"], json!("prod"));
    let mut n = Notice {
        params: seen,
        ..notice()
    };
    n.event = Some(NotifyEvent::Failed);
    let hook = Notification {
        message: Some("{{ params.env }}/{{ params.owner }}".into()),
        ..hook("h", &[])
    };
    assert_eq!(text(&hook, &n).unwrap(), "prod/data");
    assert_eq!(params(None, &given), given);
}

#[test]
fn a_tasks_missed_deadline_is_one_message_per_task_naming_it() {
    let mut status = PipelineRunStatus {
        phase: Some(RunPhase::Running),
        ..Default::default()
    };
    status.missed_deadlines.push(crate::api::MissedDeadline {
        task: "load".into(),
        due_time: Time(t("2026-01-01T01:00:00Z")),
        message:
            "task \"load\" was not done by 2026-01-01T01:00:00Z (1h after its scheduled time); it goes on"
                .into(),
        failed: false,
    });
    let sla = hook("sla", &[NotifyEvent::DeadlineMissed]);
    let only_failures = hook("oncall", &[]);
    let list = [sla, only_failures];
    let due = due(&pipeline(&list), &status);
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].key, "sla/DeadlineMissed/task/load");
    assert_eq!(due[0].task.as_deref(), Some("load"));
    let n = Notice {
        event: Some(NotifyEvent::DeadlineMissed),
        task: due[0].task.clone(),
        reason: due[0].reason.clone(),
        message: due[0].message.clone(),
        ..notice()
    };
    let text = default_text(&n);
    assert!(
        text.contains("missed the deadline of task load (DeadlineMissed)"),
        "{text}"
    );
}

#[test]
fn an_email_target_is_checked_and_its_subject_is_the_first_line() {
    let email = |to: &[&str], from: &str, host: &str| Notification {
        name: "mail".into(),
        email: Some(crate::api::EmailTarget {
            to: to.iter().map(|s| s.to_string()).collect(),
            from: from.into(),
            smtp: crate::api::SmtpServer {
                host: host.into(),
                port: Some(25),
                tls: Some(crate::api::SmtpTls::None),
            },
            credentials_secret: None,
        }),
        ..Default::default()
    };
    let ok = email(
        &["oncall@example.com", "Data <data@example.com>"],
        "Weir <weir@example.com>",
        "smtp.example.com",
    );
    assert_eq!(check(std::slice::from_ref(&ok), &[], "notifications"), []);
    let bad = email(&["not an address"], "weir", "smtp example");
    let fields: Vec<String> = check(&[bad], &[], "notifications")
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(
        fields,
        [
            "notifications[0].email.to[0]",
            "notifications[0].email.from",
            "notifications[0].email.smtp.host"
        ]
    );
    let none = email(&[], "weir@example.com", "smtp.example.com");
    assert_eq!(
        check(&[none], &[], "notifications")[0].0,
        "notifications[0].email.to"
    );
    let two = Notification {
        slack: Some(WebhookTarget {
            url: Some("https://chat.example.com/x".into()),
            ..Default::default()
        }),
        ..ok
    };
    let problems = check(&[two], &[], "notifications");
    assert_eq!(problems[0].1, "set exactly one of webhook, slack and email");

    let (subject, body) = email_parts("\nnightly Failed\nTask boom failed\n");
    assert_eq!(subject, "nightly Failed");
    assert_eq!(body, "\nnightly Failed\nTask boom failed\n");
    assert_eq!(
        message_id("u-1/oncall/Failed/0"),
        "<u-1/oncall/Failed/0@weir.dev>"
    );
    assert_eq!(message_id("a b<c>"), "<a_b_c_@weir.dev>");
}

#[test]
fn an_approval_task_that_waits_calls_for_one_message_per_attempt() {
    let ns = [hook("approvers", &[NotifyEvent::ApprovalNeeded])];
    let mut waiting = summary("sign-off", TaskPhase::Running, 1);
    waiting.message = Some("attempt 1: waiting for approval: weir approve r1 sign-off".into());
    let status = PipelineRunStatus {
        phase: Some(RunPhase::Running),
        tasks: vec![summary("train", TaskPhase::Running, 1), waiting],
        ..Default::default()
    };
    let due = due(&pipeline(&ns), &status);
    let keys: Vec<&str> = due.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["approvers/ApprovalNeeded/sign-off/1"]);
    assert_eq!(due[0].task.as_deref(), Some("sign-off"));
    assert!(
        due[0].message.contains("weir approve r1 sign-off"),
        "{:?}",
        due[0]
    );
    // Nobody listening to it by default (failures only).
    assert!(super::due(&pipeline(&[hook("oncall", &[])]), &status).is_empty());
}
