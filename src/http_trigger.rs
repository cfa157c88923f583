//! The HTTP trigger endpoint (`weir operator --trigger-addr`): systems outside Kubernetes
//! start a run of a pipeline, with params, or record an asset event, with a plain HTTP POST.
//!
//! - `POST /v1/namespaces/{ns}/pipelines/{pipeline}/runs`, body `{"params": {...}}`;
//! - `POST /v1/namespaces/{ns}/asset-events`, body `{"asset": "...", "extra": {...},
//!   "logicalDate": "..."}`.
//!
//! A pipeline (or an Asset) accepts calls only when its `spec.httpTrigger` names a Secret,
//! and only from callers who send that Secret's `token` as `Authorization: Bearer <token>`
//! (compared in constant time, over SHA-256 digests so the length does not show either).
//! An `Idempotency-Key` header makes a retried call safe: the run's name is derived from
//! it, so the second create finds the first run; an asset event's key is the header.
//! Bodies are at most [`MAX_BODY`] bytes; every error is a JSON object with `error`.
//!
//! The runs are made by `cli::trigger::create_run_by`, the same function `weir trigger` and
//! the UI use (labelled `weir.dev/trigger=http`), and events by
//! `controller::asset::record_event`, as tasks and `weir asset update` record them.

use crate::api::{Asset, Pipeline, Trigger};
use crate::cli::cluster::Cluster;
use crate::cli::trigger::{TriggerError, create_run_by};
use crate::controller::asset::record_event;
use crate::engine::asset::{NewEvent, check_extra, check_name, object_name};
use crate::engine::names;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest idempotency key.
pub const MAX_KEY: usize = 256;
/// Shortest token a Secret may hold: a shorter one is refused as if it were wrong.
pub const MIN_TOKEN: usize = 16;
/// The header carrying the idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Clone)]
struct AppState {
    client: Client,
    /// The namespaces the operator watches; empty: all.
    namespaces: Vec<String>,
}

/// A refused call: its HTTP status and a message for the caller.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn refuse(code: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(code, message.into())
}

/// The endpoint's routes, answering for the `namespaces` given (empty: all).
pub fn router(client: Client, namespaces: Vec<String>) -> Router {
    Router::new()
        .route("/v1/namespaces/{ns}/pipelines/{pipeline}/runs", post(trigger_run))
        .route("/v1/namespaces/{ns}/asset-events", post(asset_event))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(AppState { client, namespaces })
}

/// Binds `addr` and returns the bound address and the server, which runs until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = axum::serve(listener, router).with_graceful_shutdown(shutdown);
    Ok((bound, async move { server.await }))
}

/// The body of a run trigger.
#[derive(Deserialize, Default, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Params of the run: strings, or lists and numbers (passed on as JSON).
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// The body of an asset event.
#[derive(Deserialize, Default, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventRequest {
    pub asset: String,
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
    #[serde(default)]
    pub logical_date: Option<jiff::Timestamp>,
}

async fn trigger_run(
    State(state): State<AppState>,
    Path((ns, pipeline)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    state.check_namespace(&ns)?;
    let request: RunRequest = parse_body(&headers, body)?;
    let key = idempotency_key(&headers)?;
    let p = Api::<Pipeline>::namespaced(state.client.clone(), &ns)
        .get_opt(&pipeline)
        .await
        .map_err(kube_refusal)?
        .ok_or_else(|| {
            refuse(
                StatusCode::NOT_FOUND,
                format!("no pipeline {pipeline} in namespace {ns}"),
            )
        })?;
    let secret = p
        .spec
        .http_trigger
        .as_ref()
        .map(|t| t.secret_name.as_str())
        .ok_or_else(|| {
            refuse(
                StatusCode::FORBIDDEN,
                format!("pipeline {pipeline} accepts no HTTP triggers: its spec.httpTrigger is not set"),
            )
        })?;
    state.authenticate(&ns, secret, &headers).await?;
    let name = run_name(
        &pipeline,
        &p.uid().unwrap_or_default(),
        key.as_deref(),
        jiff::Timestamp::now(),
    );
    let given = params_as_text(request.params);
    let cluster = Cluster {
        client: state.client.clone(),
        namespace: ns.clone(),
        context: None,
        server: String::new(),
    };
    let created = match create_run_by(&cluster, &p, &name, &given, None, true, Trigger::Http).await {
        Ok(()) => true,
        Err(TriggerError::Exists(_)) if key.is_some() => false,
        Err(TriggerError::Exists(name)) => {
            return Err(refuse(
                StatusCode::CONFLICT,
                format!("a run named {name} exists already: retry"),
            ));
        }
        Err(TriggerError::BadParams(problems)) => {
            return Err(refuse(StatusCode::BAD_REQUEST, problems.join("; ")));
        }
        Err(TriggerError::Other(e)) => {
            tracing::warn!(%e, pipeline, ns, "HTTP trigger: creating the run failed");
            return Err(refuse(
                StatusCode::BAD_GATEWAY,
                format!("creating the run failed: {e}"),
            ));
        }
    };
    tracing::info!(run = name, pipeline, ns, created, "HTTP trigger");
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        code,
        axum::Json(serde_json::json!({ "run": name, "namespace": ns, "created": created })),
    )
        .into_response())
}

async fn asset_event(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    state.check_namespace(&ns)?;
    let request: EventRequest = parse_body(&headers, body)?;
    let key = idempotency_key(&headers)?;
    check_name(&request.asset).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    check_extra(&request.extra).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    let object = object_name(&request.asset);
    let not_open = || {
        refuse(
            StatusCode::FORBIDDEN,
            format!(
                "asset {} accepts no HTTP events: create its Asset ({object}) with spec.httpTrigger",
                request.asset
            ),
        )
    };
    let asset = Api::<Asset>::namespaced(state.client.clone(), &ns)
        .get_opt(&object)
        .await
        .map_err(kube_refusal)?
        .ok_or_else(not_open)?;
    let secret = asset
        .spec
        .http_trigger
        .as_ref()
        .map(|t| t.secret_name.clone())
        .ok_or_else(not_open)?;
    state.authenticate(&ns, &secret, &headers).await?;
    let event = NewEvent {
        source: "http".into(),
        logical_date: request.logical_date,
        extra: request.extra,
        key,
        ..Default::default()
    };
    let sequence = record_event(&state.client, &ns, &request.asset, event)
        .await
        .map_err(|e| {
            tracing::warn!(%e, asset = request.asset, ns, "HTTP trigger: recording the event failed");
            refuse(
                StatusCode::BAD_GATEWAY,
                format!("recording the event failed: {e}"),
            )
        })?;
    tracing::info!(asset = request.asset, sequence, ns, "HTTP trigger: asset event");
    Ok(axum::Json(serde_json::json!({ "asset": request.asset, "sequence": sequence })).into_response())
}

impl AppState {
    fn check_namespace(&self, ns: &str) -> Result<(), Refusal> {
        if self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == ns) {
            Ok(())
        } else {
            Err(refuse(
                StatusCode::NOT_FOUND,
                format!("the operator does not serve namespace {ns}"),
            ))
        }
    }

    /// The caller's bearer token against the Secret's `token`.
    async fn authenticate(&self, ns: &str, secret: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let given = bearer(headers).ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "send the token as Authorization: Bearer <token>",
            )
        })?;
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(secret)
            .await
            .map_err(kube_refusal)?;
        let expected = secret
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get("token"))
            .map(|b| b.0.as_slice());
        if token_matches(expected, given.as_bytes()) {
            Ok(())
        } else {
            Err(refuse(StatusCode::UNAUTHORIZED, "wrong token"))
        }
    }
}

/// Whether `given` is the `expected` token: compared in constant time over SHA-256 digests
/// (so neither the content nor the length shows in the time taken). A missing or too short
/// token matches nothing.
pub fn token_matches(expected: Option<&[u8]>, given: &[u8]) -> bool {
    let Some(expected) = expected.map(|e| e.trim_ascii()) else {
        return false;
    };
    if expected.len() < MIN_TOKEN {
        return false;
    }
    let a = Sha256::digest(expected);
    let b = Sha256::digest(given);
    a.ct_eq(&b).into()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The idempotency key, if given: printable ASCII, at most [`MAX_KEY`] bytes.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = || {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("the Idempotency-Key header must be 1 to {MAX_KEY} printable ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty() || key.len() > MAX_KEY || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// The body as JSON of type `T` (an empty body is `{}`), or why not.
pub fn parse_body<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Refusal> {
    let body = body.map_err(|e| {
        let code = e.status();
        let message = if code == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the body is larger than {MAX_BODY} bytes")
        } else {
            format!("reading the body: {e}")
        };
        refuse(code, message)
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as Content-Type: application/json",
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("the body is not valid: {e}")))
}

/// The name of a run made by the endpoint: from the idempotency key when there is one
/// (`<pipeline>-http-<hash of the pipeline's uid and the key>`, so the same key always names
/// the same run), else from the time of the call.
pub fn run_name(pipeline: &str, uid: &str, key: Option<&str>, now: jiff::Timestamp) -> String {
    let suffix = match key {
        Some(key) => format!("http-{}", names::short_hash(&format!("{uid};{key}"))),
        None => format!(
            "http-{}-{}",
            now.strftime("%Y%m%d-%H%M%S"),
            names::short_hash(&now.as_nanosecond().to_string())
        ),
    };
    names::child_name(pipeline, &suffix)
}

/// Params as `weir trigger` passes them: strings as they are, anything else as JSON text
/// (the operator reads a declared list from JSON).
fn params_as_text(params: BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    params
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

fn kube_refusal(e: kube::Error) -> Refusal {
    tracing::warn!(%e, "HTTP trigger: the API server refused a read");
    match &e {
        kube::Error::Api(s) if s.code == 403 => refuse(
            StatusCode::BAD_GATEWAY,
            format!(
                "the operator may not read what the trigger needs (see docs/triggers.md, RBAC): {}",
                s.message
            ),
        ),
        _ => refuse(StatusCode::BAD_GATEWAY, format!("the Kubernetes API: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn tokens_match_only_exactly_and_only_when_long_enough() {
        let token = b"0123456789abcdef-secret";
        assert!(token_matches(Some(token), token));
        assert!(
            token_matches(Some(b"0123456789abcdef-secret\n"), token),
            "a trailing newline in the Secret is ignored"
        );
        assert!(!token_matches(Some(token), b"0123456789abcdef-secreT"));
        assert!(!token_matches(Some(token), b""));
        assert!(!token_matches(None, token));
        assert!(
            !token_matches(Some(b"short"), b"short"),
            "too short to be a token"
        );
    }

    #[test]
    fn the_bearer_token_and_the_idempotency_key_are_read_from_headers() {
        assert_eq!(bearer(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
        assert_eq!(
            idempotency_key(&headers(&[("idempotency-key", "order-42")])),
            Ok(Some("order-42".into()))
        );
        assert_eq!(idempotency_key(&HeaderMap::new()), Ok(None));
        let long = "k".repeat(MAX_KEY + 1);
        assert_eq!(
            idempotency_key(&headers(&[("idempotency-key", &long)]))
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn run_names_come_from_the_key_when_there_is_one() {
        let now: jiff::Timestamp = "2024-03-01T06:00:00Z".parse().unwrap();
        let later: jiff::Timestamp = "2024-03-01T07:00:00Z".parse().unwrap();
        let a = run_name("etl", "uid-1", Some("k1"), now);
        assert_eq!(
            a,
            run_name("etl", "uid-1", Some("k1"), later),
            "a retry names the same run"
        );
        assert!(a.starts_with("etl-http-"), "{a}");
        assert_ne!(a, run_name("etl", "uid-1", Some("k2"), now));
        assert_ne!(
            a,
            run_name("etl", "uid-2", Some("k1"), now),
            "a recreated pipeline starts afresh"
        );
        assert!(run_name("etl", "uid-1", None, now).starts_with("etl-http-20240301-060000-"));
        assert!(names::is_dns_label(&run_name(
            &"p".repeat(200),
            "u",
            Some("k"),
            now
        )));
    }

    #[test]
    fn bodies_must_be_json_objects_of_known_fields() {
        let json = headers(&[("content-type", "application/json")]);
        let ok: RunRequest = parse_body(
            &json,
            Ok(Bytes::from(r#"{"params": {"day": "2024-03-01", "n": 3}}"#)),
        )
        .unwrap();
        assert_eq!(ok.params["n"], serde_json::json!(3));
        assert_eq!(params_as_text(ok.params)["n"], "3");
        let empty: RunRequest = parse_body(&HeaderMap::new(), Ok(Bytes::new())).unwrap();
        assert_eq!(empty, RunRequest::default());
        let refused = |h: &HeaderMap, body: &'static str| {
            parse_body::<RunRequest>(h, Ok(Bytes::from(body))).unwrap_err()
        };
        assert_eq!(
            refused(&HeaderMap::new(), "{}").0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let unknown = refused(&json, r#"{"parms": {}}"#);
        assert_eq!(unknown.0, StatusCode::BAD_REQUEST);
        assert!(unknown.1.contains("unknown field `parms`"), "{}", unknown.1);
        let event: EventRequest = parse_body(
            &json,
            Ok(Bytes::from(
                r#"{"asset": "a/b", "logicalDate": "2024-03-01T00:00:00Z"}"#,
            )),
        )
        .unwrap();
        assert_eq!(event.asset, "a/b");
    }
}
