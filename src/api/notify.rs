//! Notifications: messages the operator sends to a webhook, a Slack-compatible incoming
//! webhook or an email address (over SMTP) when a run fails, succeeds or retries a task. Declared on a pipeline
//! (`spec.notifications`) and as installation defaults; what was sent is recorded in the
//! run's status (`status.notifications`), so each message goes out once per event, across
//! restarts and leader changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where and when to send a message about a run.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Names the notification within the pipeline; part of every message's idempotency key.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// The events that send a message: `Failed`, `Succeeded`, `Retrying`, `DeadlineMissed`. Empty: `Failed`
    /// only. (Not `on`: YAML 1.1 readers such as kubectl's take a key `on` for `true`.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<NotifyEvent>,

    /// A generic webhook: the message is POSTed as a JSON object (see the docs for its
    /// fields). Exactly one of `webhook`, `slack` and `email` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTarget>,

    /// A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat, ...): the message
    /// is POSTed as `{"text": ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<WebhookTarget>,

    /// An email sent over SMTP: the message's first line is its subject, the whole message
    /// its body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailTarget>,

    /// The message text, a template: `{{ run.name }}`, `{{ run.namespace }}`,
    /// `{{ run.pipeline }}`, `{{ run.logicalDate }}`, `{{ params.NAME }}` and
    /// `{{ notification.event }}`, `.task`, `.reason`, `.message`, `.link` (the run in the
    /// UI, when a UI address is configured) and `.logs` (the last log lines of the failed
    /// task). Unset: a default one-line summary, with the log lines for a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Something that happened to a run that can send a message.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum NotifyEvent {
    /// The run failed (a task failed, the run timed out, or it could not start).
    Failed,
    /// The run succeeded.
    Succeeded,
    /// An attempt of a task failed and the task will be tried again.
    Retrying,
    /// The run was not done by its `deadline` (sent when it is missed, not when the run
    /// ends).
    DeadlineMissed,
    /// An approval task started waiting for a person's decision (once per attempt; see
    /// docs/approvals.md).
    ApprovalNeeded,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Failed => "Failed",
            NotifyEvent::Succeeded => "Succeeded",
            NotifyEvent::Retrying => "Retrying",
            NotifyEvent::DeadlineMissed => "DeadlineMissed",
            NotifyEvent::ApprovalNeeded => "ApprovalNeeded",
        }
    }
}

/// An HTTP(S) endpoint. The address is given in `url` or, when it holds a credential (a
/// Slack webhook address does), read from a Secret in the run's namespace with `urlFrom`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTarget {
    /// The address, `http://` or `https://`. Exactly one of `url` and `urlFrom` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// A key of a Secret holding the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_from: Option<SecretKeyRef>,

    /// A key of a Secret whose value is sent as the `Authorization` header (for example
    /// `Bearer abc...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_from: Option<SecretKeyRef>,
}

/// Email over SMTP.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailTarget {
    /// Recipients, such as `oncall@example.com` or `Data team <data@example.com>`.
    #[schemars(length(min = 1))]
    pub to: Vec<String>,
    /// The sender, such as `Weir <weir@example.com>`.
    pub from: String,
    /// The mail server.
    pub smtp: SmtpServer,
    /// A Secret (in the run's namespace; for installation defaults, the operator's) with
    /// keys `username` and `password`, to log in to the server. Unset: no login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
}

/// An SMTP server.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpServer {
    /// Host name or address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Port. Default: 587 with `StartTls`, 465 with `Tls`, 25 with `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// How the connection is secured: `StartTls` (default: plain, then upgraded, refused if
    /// the server cannot), `Tls` (TLS from the start) or `None` (plain text, for a relay on
    /// a trusted network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SmtpTls>,
}

/// How an SMTP connection is secured.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SmtpTls {
    /// Plain text.
    None,
    /// Plain, upgraded with STARTTLS (required).
    #[default]
    StartTls,
    /// TLS from the start (SMTPS).
    Tls,
}

/// One key of a Secret in the run's namespace (for installation defaults: in the
/// operator's namespace).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Where one message stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeliveryState {
    /// Being sent: recorded before each try. Found after a restart, the message is sent
    /// again with the same idempotency key.
    Sending,
    /// The receiver answered with a 2xx status.
    Sent,
    /// A try failed; the next one waits until `nextAttemptTime`.
    Retrying,
    /// Every try failed (or the target is misconfigured); not tried again.
    Failed,
}

/// One message about a run, as far as it got.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// Identifies the message: the notification, the event and what it is about (for
    /// example `oncall/Failed/1`). Sent as the `Idempotency-Key` header, with the run's UID.
    pub key: String,
    /// Name of the notification.
    pub notification: String,
    /// The event.
    pub event: NotifyEvent,
    /// Where the message stands.
    pub state: DeliveryState,
    /// Tries so far.
    pub attempts: u32,
    /// When the last try started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,
    /// When the next try is due (state `Retrying`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// Why the last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
