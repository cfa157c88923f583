//! The notifier: a controller of its own over PipelineRuns, so that sending a message never
//! blocks or slows a run's reconcile. Each reconcile:
//!
//! 1. works out the messages the run's status calls for and which to try now
//!    ([`engine::notify::due`] and [`engine::notify::plan`], pure);
//! 2. records them `Sending` in `status.notifications`, under the run's `resourceVersion`
//!    (a stale view of the run cannot write over a newer record);
//! 3. hands each to a tokio task of its own ([`deliver`]), which POSTs it with an
//!    `Idempotency-Key` header and records how it went, again under the `resourceVersion`.
//!
//! The notifier writes the run's status under its own field manager: `status.notifications`,
//! which the run's reconcile never writes (see [`super::pipelinerun::apply_run_status`]),
//! and the `NotificationsDelivered` condition, in the conditions as read (see
//! [`write_records`]).
//!
//! [`engine::notify::due`]: crate::engine::notify::due
//! [`engine::notify::plan`]: crate::engine::notify::plan

use super::{Context, Error, Result, now, truncate};
use crate::api::{
    ConditionStatus, Notification, NotificationRecord, PipelineRun, PipelineSpec, TaskRun, actions,
    condition_types, reasons, set_condition,
};
use crate::engine::notify::{self, Declared, Due, Notice, Origin, TryOutcome};
use crate::metrics::DeliveryOutcome;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, LogParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The field manager of the notifier's status writes.
pub const FIELD_MANAGER: &str = "weir-notifier";
/// How long one try may take, connection included.
const TRY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long recording a try's outcome is retried (conflicts, an API server away) before it
/// is left to the next reconcile, which tries the message again with the same key.
const RECORD_TIMEOUT: Duration = Duration::from_secs(60);

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// What the notifier is configured with, and the messages it is sending right now.
pub struct Notifier {
    /// The installation's default notifications, sent for every run.
    pub defaults: Vec<Notification>,
    /// Where the UI is, for links to a run (`https://weir.example.com`); none: no link.
    pub ui_url: Option<String>,
    /// The operator's namespace: where the Secrets of the defaults are.
    pub namespace: String,
    in_flight: Mutex<HashSet<String>>,
    http: std::result::Result<HttpClient<Https, Full<Bytes>>, String>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new(Vec::new(), None, "default".into())
    }
}

impl Notifier {
    pub fn new(defaults: Vec<Notification>, ui_url: Option<String>, namespace: String) -> Self {
        Notifier {
            defaults,
            ui_url: ui_url.map(|u| u.trim_end_matches('/').to_string()),
            namespace,
            in_flight: Mutex::default(),
            http: http_client(),
        }
    }

    fn is_in_flight(&self, id: &str) -> bool {
        self.in_flight.lock().is_ok_and(|s| s.contains(id))
    }

    fn take(&self, id: &str) -> bool {
        self.in_flight.lock().is_ok_and(|mut s| s.insert(id.to_string()))
    }

    fn release(&self, id: &str) {
        if let Ok(mut s) = self.in_flight.lock() {
            s.remove(id);
        }
    }
}

/// HTTPS with the system's trusted roots (and plain HTTP); an installation without roots
/// can still reach `http://` addresses.
fn http_client() -> std::result::Result<HttpClient<Https, Full<Bytes>>, String> {
    let provider = rustls::crypto::ring::default_provider();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|e| format!("no trusted root certificates for HTTPS: {e}"))?;
    let connector = builder.https_or_http().enable_http1().build();
    Ok(HttpClient::builder(TokioExecutor::new()).build(connector))
}

/// The pipeline a run follows: its revision once it started (a revision that cannot be
/// read leaves only the installation's notifications), else its inline spec.
async fn followed(ctx: &Context, run: &PipelineRun) -> Result<Option<Arc<PipelineSpec>>> {
    let Some(name) = run.status.as_ref().and_then(|s| s.pipeline_revision.as_deref()) else {
        return Ok(run.spec.pipeline_spec.clone().map(Arc::new));
    };
    let ns = run.namespace().unwrap_or_default();
    Ok(match super::revision::read_cached(ctx, &ns, name).await? {
        super::revision::Read::Spec(spec) => Some(spec),
        super::revision::Read::Missing(_) | super::revision::Read::Altered(_) => None,
    })
}

/// The notifications of a run: its pipeline's (`spec`, the one it follows) and the
/// installation's.
fn declared<'a>(spec: Option<&'a PipelineSpec>, notifier: &'a Notifier) -> Vec<Declared<'a>> {
    let own = spec.map(|s| s.notifications.as_slice()).unwrap_or_default();
    own.iter()
        .map(|n| Declared {
            origin: Origin::Pipeline,
            notification: n,
        })
        .chain(notifier.defaults.iter().map(|n| Declared {
            origin: Origin::Installation,
            notification: n,
        }))
        .collect()
}

fn in_flight_id(run: &PipelineRun, key: &str) -> String {
    notify::idempotency_key(run.metadata.uid.as_deref().unwrap_or_default(), key)
}

pub async fn reconcile(run: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action> {
    let notifier = ctx.notifier.clone();
    let Some(status) = run.status.as_ref() else {
        return Ok(Action::await_change());
    };
    if run.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = followed(&ctx, &run).await?;
    if declared(spec.as_deref(), &notifier).is_empty() {
        return Ok(Action::await_change());
    }
    let due = notify::due(&declared(spec.as_deref(), &notifier), status);
    let now = now();
    let cached = notify::plan(
        &due,
        &status.notifications,
        &|k| notifier.is_in_flight(&in_flight_id(&run, k)),
        now,
    );
    if cached.send.is_empty() {
        if condition_stale(status) {
            // The run's reconcile wrote the conditions back from an older read.
            let api = runs_api(&ctx, &run)?;
            let fresh = api.get_status(&run.name_any()).await?;
            if let Some(records) = fresh.status.as_ref().map(|s| s.notifications.clone()) {
                write_records(&api, &fresh, &records).await?;
            }
        }
        return Ok(requeue(cached.next, now));
    }
    // Something to send: decide again on the run as the API server has it now.
    let api = runs_api(&ctx, &run)?;
    let fresh = Arc::new(api.get_status(&run.name_any()).await?);
    let Some(status) = fresh.status.as_ref() else {
        return Ok(Action::await_change());
    };
    let due = notify::due(&declared(spec.as_deref(), &notifier), status);
    let plan = notify::plan(
        &due,
        &status.notifications,
        &|k| notifier.is_in_flight(&in_flight_id(&fresh, k)),
        now,
    );
    if plan.send.is_empty() {
        return Ok(requeue(plan.next, now));
    }
    // Record the intent first: a crash after this point tries again, never forgets.
    write_records(&api, &fresh, &plan.records).await?;
    for key in &plan.send {
        let Some(d) = due.iter().find(|d| &d.key == key).cloned() else {
            continue;
        };
        if !notifier.take(&in_flight_id(&fresh, key)) {
            continue;
        }
        let notification = declared(spec.as_deref(), &notifier)[d.index];
        let (notification, origin) = (notification.notification.clone(), notification.origin);
        let params = notify::params(spec.as_deref(), &fresh.spec.params);
        let message = Message {
            notification,
            origin,
            params,
            due: d,
        };
        tokio::spawn(deliver(ctx.clone(), fresh.clone(), message));
    }
    Ok(requeue(plan.next, now))
}

/// Whether the `NotificationsDelivered` condition says something else than the records.
fn condition_stale(status: &crate::api::PipelineRunStatus) -> bool {
    let want = notify::condition(&status.notifications);
    let have = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition_types::NOTIFICATIONS_DELIVERED);
    match (want, have) {
        (None, _) => false,
        (Some((ok, reason, message)), Some(c)) => {
            c.status != if ok { "True" } else { "False" } || c.reason != reason || c.message != message
        }
        (Some(_), None) => true,
    }
}

fn requeue(next: Option<jiff::Timestamp>, now: jiff::Timestamp) -> Action {
    match next {
        Some(at) => {
            let wait = at.duration_since(now).unsigned_abs();
            Action::requeue(wait + Duration::from_millis(100))
        }
        None => Action::await_change(),
    }
}

fn runs_api(ctx: &Context, run: &PipelineRun) -> Result<Api<PipelineRun>> {
    let ns = run.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    Ok(Api::namespaced(ctx.client.clone(), &ns))
}

/// Writes the records (and the condition they add up to) under `run`'s resourceVersion:
/// a conflict means the run changed since it was read, and the caller decides again.
///
/// `conditions` is written whole, as read with the notifier's condition set: the API
/// server (1.20 at least) treats the list as one value under server-side apply, so a list
/// of the notifier's condition alone would drop `Succeeded`, and leaving the list out after
/// writing it once would delete it.
async fn write_records(
    api: &Api<PipelineRun>,
    run: &PipelineRun,
    records: &[NotificationRecord],
) -> Result<()> {
    let mut conditions = run
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if let Some((ok, reason, message)) = notify::condition(records) {
        let status = if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        set_condition(
            &mut conditions,
            condition_types::NOTIFICATIONS_DELIVERED,
            status,
            reason,
            message,
            run.metadata.generation,
            now(),
        );
    }
    let patch = serde_json::json!({
        "apiVersion": <PipelineRun as Resource>::api_version(&()),
        "kind": <PipelineRun as Resource>::kind(&()),
        "metadata": { "resourceVersion": run.metadata.resource_version },
        "status": { "notifications": records, "conditions": conditions },
    });
    api.patch_status(
        &run.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// One message to send: its notification, where that was declared, the run's params (the
/// pipeline's defaults applied) and the event.
struct Message {
    notification: Notification,
    origin: Origin,
    params: std::collections::BTreeMap<String, serde_json::Value>,
    due: Due,
}

/// Sends one message, then records how it went. Runs as a task of its own.
async fn deliver(ctx: Arc<Context>, run: Arc<PipelineRun>, message: Message) {
    let notifier = ctx.notifier.clone();
    let due = &message.due;
    let id = in_flight_id(&run, &due.key);
    let outcome = match tokio::time::timeout(TRY_TIMEOUT * 3, try_send(&ctx, &run, &message)).await {
        Ok(outcome) => outcome,
        Err(_) => TryOutcome::Transient("timed out".into()),
    };
    ctx.metrics.notification_tried(match outcome {
        TryOutcome::Sent => DeliveryOutcome::sent,
        TryOutcome::Transient(_) => DeliveryOutcome::transient_error,
        TryOutcome::Permanent(_) => DeliveryOutcome::permanent_error,
    });
    let deadline = tokio::time::Instant::now() + RECORD_TIMEOUT;
    let mut wait = Duration::from_millis(200);
    let recorded = loop {
        match record_outcome(&ctx, &run, &due.key, &outcome).await {
            Ok(record) => break record,
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%err, key = due.key, "recording a notification's outcome again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(err) => {
                tracing::warn!(%err, key = due.key, "could not record a notification's outcome; it will be sent again");
                break None;
            }
        }
    };
    notifier.release(&id);
    if let Some(record) = recorded {
        publish(&ctx, &run, &record).await;
    }
}

/// Reads the run, updates the record of `key` and writes it back under the run's
/// resourceVersion. `None` when the record is gone (the run was deleted or rerun).
async fn record_outcome(
    ctx: &Context,
    run: &PipelineRun,
    key: &str,
    outcome: &TryOutcome,
) -> Result<Option<NotificationRecord>> {
    let api = runs_api(ctx, run)?;
    let Some(fresh) = super::ApiResultExt::ignore_not_found(api.get_status(&run.name_any()).await)? else {
        return Ok(None);
    };
    let mut records = fresh
        .status
        .as_ref()
        .map(|s| s.notifications.clone())
        .unwrap_or_default();
    let Some(record) = records.iter_mut().find(|r| r.key == key) else {
        return Ok(None);
    };
    notify::after_try(record, outcome, now());
    let record = record.clone();
    write_records(&api, &fresh, &records).await?;
    Ok(Some(record))
}

async fn publish(ctx: &Context, run: &PipelineRun, record: &NotificationRecord) {
    let (type_, reason, note) = match record.state {
        crate::api::DeliveryState::Sent => (
            EventType::Normal,
            reasons::NOTIFICATION_SENT,
            format!("notification {} sent", record.key),
        ),
        crate::api::DeliveryState::Retrying => (
            EventType::Warning,
            reasons::NOTIFICATION_RETRYING,
            format!(
                "notification {} not delivered (try {}), trying again: {}",
                record.key,
                record.attempts,
                record.message.as_deref().unwrap_or_default()
            ),
        ),
        _ => (
            EventType::Warning,
            reasons::NOTIFICATION_FAILED,
            format!(
                "notification {} not delivered: {}",
                record.key,
                record.message.as_deref().unwrap_or_default()
            ),
        ),
    };
    ctx.event(&run.object_ref(&()), None, type_, reason, actions::NOTIFY, note)
        .await;
}

/// One try: the target's address and credentials, the message, the POST.
async fn try_send(ctx: &Context, run: &PipelineRun, message: &Message) -> TryOutcome {
    let (n, origin, due) = (&message.notification, message.origin, &message.due);
    let secrets_ns = match origin {
        Origin::Pipeline => run.namespace().unwrap_or_default(),
        Origin::Installation => ctx.notifier.namespace.clone(),
    };
    if let (Some(email), None, None) = (&n.email, &n.webhook, &n.slack) {
        return send_email(ctx, run, message, email, &secrets_ns).await;
    }
    let Some((target, format)) = notify::target(n) else {
        return TryOutcome::Permanent("set exactly one of webhook, slack and email".into());
    };
    let url = match (&target.url, &target.url_from) {
        (Some(url), _) => url.clone(),
        (None, Some(r)) => match secret_value(ctx, &secrets_ns, r).await {
            // Never quote a Secret's value: it could be anything, and messages are public.
            Ok(url) if notify::check_url(url.trim()).is_err() => {
                return TryOutcome::Permanent(format!(
                    "key {} of Secret {secrets_ns}/{} is not an http:// or https:// address",
                    r.key, r.name
                ));
            }
            Ok(url) => url.trim().to_string(),
            Err(outcome) => return outcome,
        },
        (None, None) => return TryOutcome::Permanent("set exactly one of url and urlFrom".into()),
    };
    if let Err(e) = notify::check_url(&url) {
        return TryOutcome::Permanent(e);
    }
    let authorization = match &target.authorization_from {
        Some(r) => match secret_value(ctx, &secrets_ns, r).await {
            Ok(v) => Some(v.trim().to_string()),
            Err(outcome) => return outcome,
        },
        None => None,
    };
    let notice = notice(ctx, run, due, message.params.clone()).await;
    let text = match notify::text(n, &notice) {
        Ok(text) => text,
        Err(e) => return TryOutcome::Permanent(format!("message: {e}")),
    };
    let body = notify::body(format, &text, &notice, &due.key);
    let key = notify::idempotency_key(&notice.uid, &due.key);
    post(ctx, &url, authorization.as_deref(), &key, &body).await
}

/// One try of an email: the login from its Secret, the message, the SMTP dialogue.
async fn send_email(
    ctx: &Context,
    run: &PipelineRun,
    message: &Message,
    email: &crate::api::EmailTarget,
    secrets_ns: &str,
) -> TryOutcome {
    let credentials = match &email.credentials_secret {
        Some(name) => {
            let key = |key: &str| crate::api::SecretKeyRef {
                name: name.clone(),
                key: key.into(),
            };
            let user = match secret_value(ctx, secrets_ns, &key("username")).await {
                Ok(v) => v.trim().to_string(),
                Err(outcome) => return outcome,
            };
            let password = match secret_value(ctx, secrets_ns, &key("password")).await {
                Ok(v) => v.trim_end_matches(['\r', '\n']).to_string(),
                Err(outcome) => return outcome,
            };
            Some(lettre::transport::smtp::authentication::Credentials::new(
                user, password,
            ))
        }
        None => None,
    };
    let notice = notice(ctx, run, &message.due, message.params.clone()).await;
    let text = match notify::text(&message.notification, &notice) {
        Ok(text) => text,
        Err(e) => return TryOutcome::Permanent(format!("message: {e}")),
    };
    let key = notify::idempotency_key(&notice.uid, &message.due.key);
    super::mail::send(email, credentials, &text, &key, TRY_TIMEOUT).await
}

/// A key of a Secret; a missing Secret or key is worth trying again (it may be created
/// next), a forbidden one is not.
async fn secret_value(
    ctx: &Context,
    ns: &str,
    r: &crate::api::SecretKeyRef,
) -> std::result::Result<String, TryOutcome> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = match api.get(&r.name).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(TryOutcome::Transient(format!("Secret {ns}/{} not found", r.name)));
        }
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Err(TryOutcome::Permanent(format!(
                "the operator may not read Secret {ns}/{}: {}",
                r.name, s.message
            )));
        }
        Err(e) => {
            return Err(TryOutcome::Transient(format!(
                "reading Secret {ns}/{}: {e}",
                r.name
            )));
        }
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone());
    match value.map(String::from_utf8) {
        Some(Ok(v)) => Ok(v),
        Some(Err(_)) => Err(TryOutcome::Permanent(format!(
            "key {} of Secret {ns}/{} is not UTF-8 text",
            r.key, r.name
        ))),
        None => Err(TryOutcome::Transient(format!(
            "Secret {ns}/{} has no key {}",
            r.name, r.key
        ))),
    }
}

/// What the message can say of the run and the event.
async fn notice(
    ctx: &Context,
    run: &PipelineRun,
    due: &Due,
    params: std::collections::BTreeMap<String, serde_json::Value>,
) -> Notice {
    let ns = run.namespace().unwrap_or_default();
    let name = run.name_any();
    let pipeline = run
        .spec
        .pipeline_ref
        .as_ref()
        .map_or_else(|| "(inline)".to_string(), |r| r.name.clone());
    let link = ctx
        .notifier
        .ui_url
        .as_ref()
        .map(|base| format!("{base}/ns/{ns}/runs/{name}"))
        .unwrap_or_default();
    let logs = match (&due.task, due.event) {
        (Some(task), crate::api::NotifyEvent::Failed | crate::api::NotifyEvent::Retrying) => {
            last_log_lines(ctx, run, task).await.unwrap_or_default()
        }
        _ => String::new(),
    };
    Notice {
        run: name,
        namespace: ns,
        uid: run.metadata.uid.clone().unwrap_or_default(),
        pipeline,
        logical_date: run.spec.logical_date.as_ref().map(|t| t.0),
        data_interval_start: run.spec.data_interval_start.as_ref().map(|t| t.0),
        data_interval_end: run.spec.data_interval_end.as_ref().map(|t| t.0),
        params,
        event: Some(due.event),
        task: due.task.clone(),
        reason: due.reason.clone(),
        message: due.message.clone(),
        link,
        logs,
    }
}

/// The last lines the task's last attempt logged; `None` when there is no pod (any more).
async fn last_log_lines(ctx: &Context, run: &PipelineRun, task: &str) -> Option<String> {
    let ns = run.namespace()?;
    let summary = run.status.as_ref()?.tasks.iter().find(|t| t.name == task)?;
    let task_runs: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &ns);
    let tr = task_runs.get(summary.task_run.as_deref()?).await.ok()?;
    let pod = tr.status?.attempts.last()?.pod_name.clone()?;
    let params = LogParams {
        container: Some(super::job::CONTAINER.to_string()),
        tail_lines: Some(notify::LOG_LINES),
        limit_bytes: Some(8 * 1024),
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    match pods.logs(&pod, &params).await {
        Ok(text) => Some(text.trim_end().to_string()),
        Err(err) => {
            tracing::info!(%err, pod, "no log lines for a notification");
            None
        }
    }
}

async fn post(
    ctx: &Context,
    url: &str,
    authorization: Option<&str>,
    key: &str,
    body: &serde_json::Value,
) -> TryOutcome {
    let client = match &ctx.notifier.http {
        Ok(c) => c,
        Err(e) => return TryOutcome::Permanent(e.clone()),
    };
    let mut request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("weir/", env!("CARGO_PKG_VERSION")),
        )
        .header("Idempotency-Key", key);
    if let Some(a) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, a);
    }
    let request = match request.body(Full::new(Bytes::from(body.to_string()))) {
        Ok(r) => r,
        Err(e) => return TryOutcome::Permanent(format!("bad request to {}: {e}", redact(url))),
    };
    let response = match tokio::time::timeout(TRY_TIMEOUT, client.request(request)).await {
        Err(_) => {
            return TryOutcome::Transient(format!("{} did not answer within {TRY_TIMEOUT:?}", redact(url)));
        }
        Ok(Err(e)) => return TryOutcome::Transient(format!("{}: {e}", redact(url))),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status.is_success() {
        return TryOutcome::Sent;
    }
    let answer = match tokio::time::timeout(TRY_TIMEOUT, response.into_body().collect()).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        _ => String::new(),
    };
    let why = format!(
        "{} answered {status}: {}",
        redact(url),
        truncate(answer.trim(), 200)
    );
    if status.is_server_error()
        || status == hyper::StatusCode::TOO_MANY_REQUESTS
        || status == hyper::StatusCode::REQUEST_TIMEOUT
    {
        TryOutcome::Transient(why)
    } else {
        TryOutcome::Permanent(why)
    }
}

/// An address as messages show it: scheme and host only, since the path of an incoming
/// webhook is its credential.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_show_the_credential_in_a_webhook_address() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            redact("http://user:pw@127.0.0.1:8080/x?y"),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn the_notifier_takes_a_message_once_until_it_is_released() {
        let n = Notifier::default();
        assert!(n.take("uid/a/Failed/0"));
        assert!(n.is_in_flight("uid/a/Failed/0"));
        assert!(!n.take("uid/a/Failed/0"));
        n.release("uid/a/Failed/0");
        assert!(!n.is_in_flight("uid/a/Failed/0"));
    }
}
