//! Notifications, the pure part: which messages a run's status calls for, which of them to
//! try now (from what the run's status records), what a try's outcome makes of its record,
//! the condition the records add up to, and the message text and body.
//!
//! Delivery is at least once: a record is written (`Sending`) before every try and updated
//! after it, so a message whose try was cut short by a crash is tried again, with the same
//! idempotency key, by whichever replica leads next. A message recorded `Sent` is never sent
//! again.

use super::quote::q;
use super::template::{NoticeField, Reference, RunField, Template, Values};
use crate::api::{
    DeliveryState, Notification, NotificationRecord, NotifyEvent, PipelineRunStatus, RunPhase, TaskPhase,
    WebhookTarget,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Tries per message before it is given up (`Failed`).
pub const MAX_ATTEMPTS: u32 = 6;
/// The wait after the first failed try; doubled after each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest wait between tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Most records kept in a run's status; beyond, the oldest finished ones make room.
pub const MAX_RECORDS: usize = 50;
/// Log lines of the failed task put in a message.
pub const LOG_LINES: i64 = 20;
/// Most bytes of a rendered message (Slack cuts at 40,000 characters).
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Where a notification was declared; installation defaults read their Secrets in the
/// operator's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Pipeline,
    Installation,
}

/// A notification with where it came from.
#[derive(Clone, Copy, Debug)]
pub struct Declared<'a> {
    pub origin: Origin,
    pub notification: &'a Notification,
}

impl Declared<'_> {
    /// The name in keys: installation defaults are prefixed so they never clash with a
    /// pipeline's own.
    pub fn key_name(&self) -> String {
        match self.origin {
            Origin::Pipeline => self.notification.name.clone(),
            Origin::Installation => format!("installation.{}", self.notification.name),
        }
    }
}

/// The target of a notification and the shape of its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A JSON object with every field of the event.
    Webhook,
    /// `{"text": ...}`.
    Slack,
}

/// The target and its format: exactly one is declared (validation makes sure).
pub fn target(n: &Notification) -> Option<(&WebhookTarget, Format)> {
    match (&n.webhook, &n.slack) {
        (Some(w), None) => Some((w, Format::Webhook)),
        (None, Some(s)) => Some((s, Format::Slack)),
        _ => None,
    }
}

/// A message the run's status calls for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// `<notification>/<event>/<what>`: the same for the same event, whoever computes it.
    pub key: String,
    /// Which notification (index in the list given to [`due`]).
    pub index: usize,
    pub event: NotifyEvent,
    /// The task the event is about: the first failed task of a failed run, the retried
    /// task of `Retrying`.
    pub task: Option<String>,
    /// The run's (or the task's) reason, for example `TaskFailed`.
    pub reason: String,
    /// What happened, in words.
    pub message: String,
}

fn events_of(n: &Notification) -> Vec<NotifyEvent> {
    if n.events.is_empty() {
        vec![NotifyEvent::Failed]
    } else {
        n.events.clone()
    }
}

/// The run's own events: its outcome (once per outcome: a rerun that ends again is a new
/// one) and each task waiting for a retry (once per attempt).
fn events(status: &PipelineRunStatus) -> Vec<(NotifyEvent, String, Option<String>, String, String)> {
    let mut out = Vec::new();
    let round = status.rerun.as_ref().map_or(0, |r| r.count);
    let succeeded = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::api::condition_types::SUCCEEDED);
    let (reason, message) = succeeded.map_or((String::new(), String::new()), |c| {
        (c.reason.clone(), c.message.clone())
    });
    match status.phase {
        Some(RunPhase::Failed) => {
            let task = status
                .tasks
                .iter()
                .find(|t| t.phase == TaskPhase::Failed)
                .map(|t| t.name.clone());
            out.push((NotifyEvent::Failed, round.to_string(), task, reason, message));
        }
        Some(RunPhase::Succeeded) => {
            out.push((NotifyEvent::Succeeded, round.to_string(), None, reason, message));
        }
        _ => {}
    }
    let missed = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::api::condition_types::DEADLINE_MISSED && c.status == "True");
    if let Some(c) = missed {
        // Once per run: the condition stays through reruns, which must not say it again.
        let what = "run".to_string();
        out.push((
            NotifyEvent::DeadlineMissed,
            what,
            None,
            c.reason.clone(),
            c.message.clone(),
        ));
    }
    for m in &status.missed_deadlines {
        // Once per task and run, like the run's own miss.
        out.push((
            NotifyEvent::DeadlineMissed,
            format!("task/{}", m.task),
            Some(m.task.clone()),
            crate::api::reasons::DEADLINE_MISSED.to_string(),
            m.message.clone(),
        ));
    }
    // An approval task waiting for a person: once per attempt (the summary carries its
    // waiting message).
    let waiting = |t: &&crate::api::TaskSummary| {
        t.phase == TaskPhase::Running
            && t.message
                .as_deref()
                .is_some_and(|m| m.contains(crate::api::approval::WAITING_MESSAGE))
    };
    for t in status.tasks.iter().filter(waiting) {
        out.push((
            NotifyEvent::ApprovalNeeded,
            format!("{}/{}", t.name, t.attempts.unwrap_or(1)),
            Some(t.name.clone()),
            crate::api::reasons::WAITING.into(),
            t.message.clone().unwrap_or_default(),
        ));
    }
    for t in status.tasks.iter().filter(|t| t.phase == TaskPhase::Retrying) {
        let attempts = t.attempts.unwrap_or(0);
        let what = format!("{}/{attempts}", t.name);
        let message = t
            .message
            .clone()
            .unwrap_or_else(|| format!("attempt {attempts} failed"));
        out.push((
            NotifyEvent::Retrying,
            what,
            Some(t.name.clone()),
            "Retrying".into(),
            message,
        ));
    }
    out
}

/// Every message `status` calls for, for each notification that listens to its event.
pub fn due(notifications: &[Declared<'_>], status: &PipelineRunStatus) -> Vec<Due> {
    let events = events(status);
    let mut out = Vec::new();
    for (index, declared) in notifications.iter().enumerate() {
        let wanted = events_of(declared.notification);
        for (event, what, task, reason, message) in &events {
            if wanted.contains(event) {
                out.push(Due {
                    key: format!("{}/{}/{what}", declared.key_name(), event.as_str()),
                    index,
                    event: *event,
                    task: task.clone(),
                    reason: reason.clone(),
                    message: message.clone(),
                });
            }
        }
    }
    out
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The records to write before sending (unchanged when `send` is empty).
    pub records: Vec<NotificationRecord>,
    /// Keys to try now, once `records` is written.
    pub send: Vec<String>,
    /// When to look again (the earliest retry due).
    pub next: Option<Timestamp>,
}

/// Which messages to try now. `in_flight` says which keys this process is sending at the
/// moment: a `Sending` record not in flight was cut short (a crash, a new leader) and is
/// tried again.
pub fn plan(
    due: &[Due],
    records: &[NotificationRecord],
    in_flight: &dyn Fn(&str) -> bool,
    now: Timestamp,
) -> Plan {
    let mut records = records.to_vec();
    let mut send = Vec::new();
    let mut next: Option<Timestamp> = None;
    for d in due {
        if in_flight(&d.key) {
            continue;
        }
        let existing = records.iter_mut().find(|r| r.key == d.key);
        match existing {
            None => {
                if !make_room(&mut records) {
                    continue;
                }
                records.push(NotificationRecord {
                    key: d.key.clone(),
                    notification: d.key.split('/').next().unwrap_or_default().to_string(),
                    event: d.event,
                    state: DeliveryState::Sending,
                    attempts: 1,
                    last_attempt_time: Some(Time(now)),
                    next_attempt_time: None,
                    message: None,
                });
                send.push(d.key.clone());
            }
            Some(r) => match r.state {
                DeliveryState::Sent | DeliveryState::Failed => {}
                DeliveryState::Retrying => {
                    let at = r.next_attempt_time.as_ref().map_or(now, |t| t.0);
                    if at <= now {
                        start_try(r, now);
                        send.push(d.key.clone());
                    } else {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                }
                DeliveryState::Sending => {
                    start_try(r, now);
                    send.push(d.key.clone());
                }
            },
        }
    }
    Plan { records, send, next }
}

fn start_try(r: &mut NotificationRecord, now: Timestamp) {
    r.state = DeliveryState::Sending;
    r.attempts += 1;
    r.last_attempt_time = Some(Time(now));
    r.next_attempt_time = None;
}

/// Makes room for one more record by dropping the oldest finished one; false when every
/// record is still going.
fn make_room(records: &mut Vec<NotificationRecord>) -> bool {
    if records.len() < MAX_RECORDS {
        return true;
    }
    let finished = records
        .iter()
        .position(|r| matches!(r.state, DeliveryState::Sent | DeliveryState::Failed));
    match finished {
        Some(i) => {
            records.remove(i);
            true
        }
        None => false,
    }
}

/// How a try ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TryOutcome {
    Sent,
    /// Worth trying again (a connection error, a 5xx, 429).
    Transient(String),
    /// Trying again cannot help (a missing Secret, a bad address, a 4xx).
    Permanent(String),
}

/// The wait after failed try number `attempt`.
pub fn backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The record after a try.
pub fn after_try(record: &mut NotificationRecord, outcome: &TryOutcome, now: Timestamp) {
    match outcome {
        TryOutcome::Sent => {
            record.state = DeliveryState::Sent;
            record.message = None;
            record.next_attempt_time = None;
        }
        TryOutcome::Transient(why) if record.attempts < MAX_ATTEMPTS => {
            record.state = DeliveryState::Retrying;
            record.message = Some(why.clone());
            let wait = backoff(record.attempts);
            let at = now
                .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
                .unwrap_or(now);
            record.next_attempt_time = Some(Time(at));
        }
        TryOutcome::Transient(why) => {
            record.state = DeliveryState::Failed;
            record.message = Some(format!("{why} (gave up after {} tries)", record.attempts));
            record.next_attempt_time = None;
        }
        TryOutcome::Permanent(why) => {
            record.state = DeliveryState::Failed;
            record.message = Some(why.clone());
            record.next_attempt_time = None;
        }
    }
}

/// The `NotificationsDelivered` condition the records add up to: `False` while one is
/// retrying or failed, `True` once all were sent; none while nothing was tried.
pub fn condition(records: &[NotificationRecord]) -> Option<(bool, &'static str, String)> {
    use crate::api::reasons;
    let troubled: Vec<&NotificationRecord> = records
        .iter()
        .filter(|r| matches!(r.state, DeliveryState::Retrying | DeliveryState::Failed))
        .collect();
    if let Some(first) = troubled.first() {
        let failed = troubled.iter().any(|r| r.state == DeliveryState::Failed);
        let reason = if failed {
            reasons::NOTIFICATION_FAILED
        } else {
            reasons::NOTIFICATION_RETRYING
        };
        let why = first.message.as_deref().unwrap_or("unknown error");
        let more = match troubled.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return Some((
            false,
            reason,
            format!("notification {}: {why}{more}", q(&first.key)),
        ));
    }
    if records.is_empty() || records.iter().any(|r| r.state == DeliveryState::Sending) {
        return None;
    }
    let sent = records.len();
    Some((
        true,
        reasons::NOTIFICATION_SENT,
        format!("{sent} notification(s) delivered"),
    ))
}

/// Everything a message can say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Notice {
    pub run: String,
    pub namespace: String,
    pub uid: String,
    pub pipeline: String,
    pub logical_date: Option<Timestamp>,
    pub data_interval_start: Option<Timestamp>,
    pub data_interval_end: Option<Timestamp>,
    pub params: BTreeMap<String, Value>,
    pub event: Option<NotifyEvent>,
    pub task: Option<String>,
    pub reason: String,
    pub message: String,
    /// The run in the UI; empty when no UI address is configured.
    pub link: String,
    /// The last log lines of the task the event is about (a failure's).
    pub logs: String,
}

fn timestamp(t: Option<Timestamp>) -> Value {
    Value::String(t.map(|t| t.to_string()).unwrap_or_default())
}

impl Values for Notice {
    fn get(&self, reference: &Reference) -> Result<Value, String> {
        let text = |s: &str| Value::String(s.to_string());
        match reference {
            Reference::Run(field) => Ok(match field {
                RunField::Name => text(&self.run),
                RunField::Namespace => text(&self.namespace),
                RunField::Uid => text(&self.uid),
                RunField::Pipeline => text(&self.pipeline),
                RunField::LogicalDate => timestamp(self.logical_date),
                RunField::DataIntervalStart => timestamp(self.data_interval_start),
                RunField::DataIntervalEnd => timestamp(self.data_interval_end),
            }),
            Reference::Param(name) => Ok(self.params.get(name).cloned().unwrap_or(Value::Null)),
            Reference::Notification(field) => Ok(match field {
                NoticeField::Event => text(self.event.map_or("", NotifyEvent::as_str)),
                NoticeField::Task => text(self.task.as_deref().unwrap_or_default()),
                NoticeField::Reason => text(&self.reason),
                NoticeField::Message => text(&self.message),
                NoticeField::Link => text(&self.link),
                NoticeField::Logs => text(&self.logs),
            }),
            other => Err(format!(
                "{{{{ {other} }}}} is not available in a notification's message"
            )),
        }
    }
}

/// The params a message sees: the run's, with the pipeline's defaults for those it does not
/// give (as its tasks see them). A run whose params do not fit its pipeline never started;
/// its message sees what it gave.
pub fn params(
    spec: Option<&crate::api::PipelineSpec>,
    given: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    let Some(spec) = spec else {
        return given.clone();
    };
    super::params::effective_params(spec, given).unwrap_or_else(|_| {
        let mut out: BTreeMap<String, Value> = spec
            .params
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.default.clone()?)))
            .collect();
        out.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    })
}

/// The message text when a notification declares none.
pub fn default_text(notice: &Notice) -> String {
    let event = notice.event.map_or("", NotifyEvent::as_str);
    let mut text = format!(
        "Weir: run {}/{} of pipeline {} {}",
        notice.namespace,
        notice.run,
        notice.pipeline,
        match notice.event {
            Some(NotifyEvent::Failed) => "failed".to_string(),
            Some(NotifyEvent::Succeeded) => "succeeded".to_string(),
            Some(NotifyEvent::DeadlineMissed) => match &notice.task {
                Some(task) => format!("missed the deadline of task {task}"),
                None => "missed its deadline".to_string(),
            },
            Some(NotifyEvent::ApprovalNeeded) => format!(
                "needs an approval of task {}",
                notice.task.as_deref().unwrap_or_default()
            ),
            Some(NotifyEvent::Retrying) =>
                format!("is retrying task {}", notice.task.as_deref().unwrap_or_default()),
            None => event.to_lowercase(),
        }
    );
    if !notice.reason.is_empty() && notice.event != Some(NotifyEvent::Succeeded) {
        text.push_str(&format!(" ({})", notice.reason));
    }
    if !notice.message.is_empty() {
        text.push_str(&format!(": {}", notice.message));
    }
    if !notice.link.is_empty() {
        text.push_str(&format!("\n{}", notice.link));
    }
    if !notice.logs.is_empty() {
        let task = notice.task.as_deref().unwrap_or("the task");
        text.push_str(&format!("\nLast log lines of {task}:\n```\n{}\n```", notice.logs));
    }
    text
}

/// The message text: the notification's template rendered, or the default.
pub fn text(n: &Notification, notice: &Notice) -> Result<String, String> {
    let text = match &n.message {
        Some(template) => Template::parse(template)?.render(notice)?,
        None => default_text(notice),
    };
    Ok(super::quote::truncate(&text, MAX_MESSAGE))
}

/// The request body.
pub fn body(format: Format, text: &str, notice: &Notice, key: &str) -> Value {
    match format {
        Format::Slack => json!({ "text": text }),
        Format::Webhook => json!({
            "key": key,
            "event": notice.event.map_or("", NotifyEvent::as_str),
            "run": notice.run,
            "namespace": notice.namespace,
            "uid": notice.uid,
            "pipeline": notice.pipeline,
            "logicalDate": timestamp(notice.logical_date),
            "task": notice.task,
            "reason": notice.reason,
            "message": notice.message,
            "link": notice.link,
            "logs": notice.logs,
            "text": text,
        }),
    }
}

/// The `Idempotency-Key` header: the run's UID and the record's key, the same on every
/// try of the same message.
pub fn idempotency_key(uid: &str, key: &str) -> String {
    format!("{uid}/{key}")
}

/// Problems in `spec.notifications` (or the installation's defaults): field path under
/// the list, and message. `params` are the pipeline's declared parameters.
pub fn check(notifications: &[Notification], params: &[&str], path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, n) in notifications.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if !super::names::is_dns_label(&n.name) {
            out.push((
                format!("{at}.name"),
                format!(
                    "{} is not a valid name (lowercase letters, digits and '-', at most 63)",
                    q(&n.name)
                ),
            ));
        } else if !names.insert(n.name.as_str()) {
            out.push((
                format!("{at}.name"),
                format!("duplicate notification name {}", q(&n.name)),
            ));
        }
        let targets = [n.webhook.is_some(), n.slack.is_some(), n.email.is_some()];
        match target(n) {
            _ if targets.iter().filter(|t| **t).count() != 1 => {
                out.push((at.clone(), "set exactly one of webhook, slack and email".into()));
            }
            None => {
                if let Some(email) = &n.email {
                    out.extend(check_email(email, &format!("{at}.email")));
                }
            }
            Some((t, format)) => {
                let field = format!(
                    "{at}.{}",
                    if format == Format::Slack {
                        "slack"
                    } else {
                        "webhook"
                    }
                );
                out.extend(check_target(t, &field));
            }
        }
        if let Some(message) = &n.message {
            match Template::parse(message) {
                Err(e) => out.push((format!("{at}.message"), format!("bad template: {e}"))),
                Ok(t) => {
                    for r in t.references() {
                        let problem = match r {
                            Reference::Param(p) if !params.contains(&p.as_str()) => {
                                Some(format!("{{{{ params.{p} }}}}: no parameter {} is declared", q(p)))
                            }
                            Reference::Output { .. } | Reference::Item(_) => Some(format!(
                                "{{{{ {r} }}}} is not available in a notification's message"
                            )),
                            _ => None,
                        };
                        if let Some(p) = problem {
                            out.push((format!("{at}.message"), p));
                        }
                    }
                }
            }
        }
    }
    out
}

fn check_email(e: &crate::api::EmailTarget, field: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if e.to.is_empty() {
        out.push((format!("{field}.to"), "name at least one recipient".into()));
    }
    for (i, to) in e.to.iter().enumerate() {
        if let Err(problem) = check_mailbox(to) {
            out.push((format!("{field}.to[{i}]"), problem));
        }
    }
    if let Err(problem) = check_mailbox(&e.from) {
        out.push((format!("{field}.from"), problem));
    }
    let host = e.smtp.host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
        out.push((
            format!("{field}.smtp.host"),
            format!("{} is not a host name or address", q(&e.smtp.host)),
        ));
    }
    if e.smtp.port == Some(0) {
        out.push((format!("{field}.smtp.port"), "must be 1 to 65535".into()));
    }
    out
}

/// An address an email can go to or come from: `a@example.com` or `Name <a@example.com>`.
pub fn check_mailbox(text: &str) -> Result<lettre::message::Mailbox, String> {
    text.parse::<lettre::message::Mailbox>()
        .map_err(|e| format!("{} is not an email address: {e}", q(text)))
}

/// The subject (the text's first line, at most 200 bytes) and the body (the whole text) of
/// an email.
pub fn email_parts(text: &str) -> (String, String) {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("Weir");
    let subject = super::quote::truncate(first.trim(), 200);
    (subject, text.to_string())
}

/// The email's `Message-ID`: the idempotency key's, the same on every try of the same
/// message, so a mail system (or a person) can tell a repeat.
pub fn message_id(idempotency_key: &str) -> String {
    let id: String = idempotency_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-./_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("<{id}@weir.dev>")
}

fn check_target(t: &WebhookTarget, field: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match (&t.url, &t.url_from) {
        (Some(_), Some(_)) | (None, None) => {
            out.push((field.to_string(), "set exactly one of url and urlFrom".into()));
        }
        (Some(url), None) => {
            if let Err(e) = check_url(url) {
                out.push((format!("{field}.url"), e));
            }
        }
        (None, Some(_)) => {}
    }
    out
}

/// An address a notification can be POSTed to: `http://` or `https://` with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{} must start with http:// or https://", q(url)))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{} has no host", q(url)));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
