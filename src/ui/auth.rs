//! Who is asking, and what protects them.
//!
//! - `local` (`weir ui` on a laptop): every request uses the kubeconfig's identity. The
//!   server listens on loopback only: anyone who can reach the port acts as you.
//! - `token` (in a cluster, behind an authenticating proxy or with a login page): every
//!   Kubernetes request is made with the person's own bearer token, from an
//!   `Authorization: Bearer` header or from the `weir_token` cookie (HttpOnly,
//!   SameSite=Strict) that the login page sets. Nothing is done with the UI's own
//!   ServiceAccount. RBAC decides; a refusal is relayed.
//! - `readonly`: the UI's own ServiceAccount reads; every action is refused.
//!
//! Every state-changing request (anything but GET/HEAD) must come from the UI's own pages:
//! a cross-site `Origin` or `Sec-Fetch-Site` is refused, and it must carry the session's
//! CSRF token (header `X-Weir-CSRF`, or form field `csrf`), derived from a per-process
//! secret and the session (the bearer token in `token` mode). Every response carries
//! security headers (a CSP that allows no inline script, no framing, no sniffing, no
//! referrer).

use super::Ui;
use super::error::UiError;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use sha2::{Digest as _, Sha256};

/// How people are authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The kubeconfig's identity (loopback only).
    Local,
    /// Each person's own bearer token.
    Token,
    /// The UI's own ServiceAccount, reading only.
    Readonly,
}

/// The cookie that holds a token pasted on the login page.
pub const TOKEN_COOKIE: &str = "weir_token";
/// The header that carries the CSRF token of a JSON API request.
pub const CSRF_HEADER: &str = "x-weir-csrf";
/// The form field that carries it in a page's form.
pub const CSRF_FIELD: &str = "csrf";
/// The largest form body the CSRF guard reads.
const MAX_FORM: usize = 256 * 1024;

/// 32 random bytes from the kernel.
pub fn random_secret() -> anyhow::Result<[u8; 32]> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Characters of a bearer token (a JWT or an opaque token), so one can go in a cookie.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 16 * 1024
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
}

/// The bearer token of a request: its `Authorization` header, else the login cookie.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| valid_token(t));
    match from_header {
        Some(token) => Some(token.to_string()),
        None => cookie(headers, TOKEN_COOKIE).filter(|t| valid_token(t)),
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.to_string())
        })
}

/// What a request's CSRF token is derived from: its bearer token in `token` mode (each
/// person their own), one fixed session otherwise.
fn session_key(ui: &Ui, headers: &HeaderMap) -> Option<String> {
    match ui.mode() {
        AuthMode::Token => bearer(headers),
        AuthMode::Local | AuthMode::Readonly => Some("local".to_string()),
    }
}

/// The CSRF token of a session.
pub fn csrf_token(ui: &Ui, session: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(ui.0.secret);
    hash.update(b"\0csrf\0");
    hash.update(session.as_bytes());
    hash.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A client that acts as the holder of `token` on the cluster of `config`: every
/// credential of the configuration is replaced by the token.
pub fn client_for_token(config: &kube::Config, token: &str) -> Result<kube::Client, kube::Error> {
    let mut config = config.clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    kube::Client::try_from(config)
}

/// The person asking: a client with their identity, whether the UI lets them act at all
/// (not in `readonly` mode; Kubernetes still decides), and their CSRF token.
#[derive(Clone)]
pub struct User {
    pub client: kube::Client,
    pub may_act: bool,
    pub csrf: String,
    pub mode: AuthMode,
    /// The API server and the kubeconfig context, for error messages.
    server: String,
    context: Option<String>,
}

impl FromRequestParts<Ui> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<User, Response> {
        let mode = ui.mode();
        let (client, session) = match mode {
            AuthMode::Local | AuthMode::Readonly => {
                let Some(client) = ui.0.own.clone() else {
                    return Err(
                        UiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the UI has no client")
                            .into_response(),
                    );
                };
                (client, "local".to_string())
            }
            AuthMode::Token => {
                let Some(token) = bearer(&parts.headers) else {
                    // Inside `/api/v1` the router sees the path without its prefix.
                    let path = match parts.extensions.get::<FullPath>() {
                        Some(FullPath(p)) => p.as_str(),
                        None => parts.uri.path(),
                    };
                    return Err(not_logged_in(path));
                };
                let client = client_for_token(&ui.0.config, &token).map_err(|e| {
                    UiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("building a Kubernetes client: {e}"),
                    )
                    .into_response()
                })?;
                (client, token)
            }
        };
        Ok(User {
            client,
            may_act: mode != AuthMode::Readonly,
            csrf: csrf_token(ui, &session),
            mode,
            server: ui
                .0
                .config
                .cluster_url
                .to_string()
                .trim_end_matches('/')
                .to_string(),
            context: ui.0.context.clone(),
        })
    }
}

impl User {
    /// The CLI's view of a cluster, for this person in namespace `ns`: the shared action
    /// and read functions of `cli` take it.
    pub fn cluster(&self, ns: &str) -> crate::cli::cluster::Cluster {
        crate::cli::cluster::Cluster {
            client: self.client.clone(),
            namespace: ns.to_string(),
            context: self.context.clone(),
            server: self.server.clone(),
        }
    }

    /// Whether Kubernetes would let this person `verb` the resource in `ns` (a
    /// SelfSubjectAccessReview): pages show an action disabled when not. Only a hint: the
    /// action itself is still made as the person, and Kubernetes still decides.
    pub async fn can(&self, ns: &str, verb: &str, resource: crate::cli::cluster::Resource) -> bool {
        if !self.may_act {
            return false;
        }
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(ns.to_string()),
                    verb: Some(verb.to_string()),
                    group: Some(resource.group.to_string()),
                    resource: Some(resource.plural.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: kube::Api<SelfSubjectAccessReview> = kube::Api::all(self.client.clone());
        match api.create(&Default::default(), &review).await {
            Ok(answer) => answer.status.is_some_and(|s| s.allowed),
            // Unknown: show the action; Kubernetes decides when it is used.
            Err(_) => true,
        }
    }
}

/// The request's path as it came, before a nested router took its prefix off.
#[derive(Clone)]
struct FullPath(String);

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

fn not_logged_in(path: &str) -> Response {
    if is_api(path) {
        UiError::new(
            StatusCode::UNAUTHORIZED,
            "no credentials: send an Authorization: Bearer <Kubernetes token> header, or log in at /login",
        )
        .into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

fn refuse(path: &str, error: UiError) -> Response {
    if is_api(path) {
        error.into_response()
    } else {
        super::html::error_page(&error)
    }
}

/// Refuses a request a browser sent from another site: `Sec-Fetch-Site` other than
/// same-origin (or none: typed by the person), or an `Origin` whose host is not this one.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!("a {site} request may not change anything"));
    }
    let origin = text(header::ORIGIN)?;
    let host = text(header::HeaderName::from_static("x-forwarded-host")).or(text(header::HOST));
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    if origin_host.is_none() || origin_host != host {
        return Some(format!("a request from {origin} may not change anything here"));
    }
    None
}

/// The guard of every state-changing request: same origin, not in readonly mode, and the
/// session's CSRF token in the `X-Weir-CSRF` header or the form's `csrf` field.
pub async fn guard(State(ui): State<Ui>, mut request: Request, next: Next) -> Response {
    let full = FullPath(request.uri().path().to_string());
    request.extensions_mut().insert(full);
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    if let Some(why) = cross_site(&parts.headers) {
        return refuse(&path, UiError::new(StatusCode::FORBIDDEN, why));
    }
    if path == "/login" {
        return next.run(Request::from_parts(parts, body)).await;
    }
    if ui.mode() == AuthMode::Readonly {
        return refuse(
            &path,
            UiError::new(
                StatusCode::FORBIDDEN,
                "this UI runs in readonly mode: it takes no actions (use weir or kubectl with your own credentials)",
            ),
        );
    }
    let Some(session) = session_key(&ui, &parts.headers) else {
        return not_logged_in(&path);
    };
    let expected = csrf_token(&ui, &session);
    let header_token = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if header_token.is_some_and(|t| same(t, &expected)) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return refuse(
                &path,
                UiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large"),
            );
        }
    };
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let form_token = is_form
        .then(|| serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes).ok())
        .flatten()
        .and_then(|fields| fields.into_iter().find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v));
    if form_token.is_some_and(|t| same(&t, &expected)) {
        return next
            .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
            .await;
    }
    refuse(
        &path,
        UiError::new(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: send the X-Weir-CSRF header (GET /api/v1/session gives it) or submit the UI's own form",
        ),
    )
}

/// The security headers of every response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    // Not `no-referrer`: under it a browser sends `Origin: null` with the pages' own form
    // POSTs, which the cross-site check must refuse. `same-origin` keeps the referrer
    // from every other site and lets the real origin through on our own.
    set(headers, "referrer-policy", "same-origin");
    set(headers, "cross-origin-opener-policy", "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, "cache-control", "no-store");
    }
    response
}

/// The `Set-Cookie` value that keeps a pasted token; `Secure` when the request came over
/// HTTPS (as a proxy in front says).
pub fn login_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// The `Set-Cookie` value that forgets it.
pub fn logout_cookie() -> String {
    format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether Kubernetes accepts the token (a SelfSubjectAccessReview, which every
/// authenticated user may make): the login page checks before keeping it.
pub async fn token_works(ui: &Ui, token: &str) -> Result<(), UiError> {
    let client = client_for_token(&ui.0.config, token).map_err(|e| {
        UiError::new(
            StatusCode::BAD_GATEWAY,
            format!("building a Kubernetes client: {e}"),
        )
    })?;
    let api: kube::Api<SelfSubjectAccessReview> = kube::Api::all(client);
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some("get".into()),
                resource: Some("namespaces".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&Default::default(), &review).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 401 => Err(UiError::new(
            StatusCode::UNAUTHORIZED,
            "Kubernetes does not accept this token (401 Unauthorized)",
        )),
        Err(e) => Err(UiError::new(
            StatusCode::BAD_GATEWAY,
            format!("asking Kubernetes about the token: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_token_comes_from_the_header_else_the_cookie() {
        let h = headers(&[("authorization", "Bearer abc.def"), ("cookie", "weir_token=xyz")]);
        assert_eq!(bearer(&h).as_deref(), Some("abc.def"));
        let h = headers(&[("cookie", "a=1; weir_token=xyz; b=2")]);
        assert_eq!(bearer(&h).as_deref(), Some("xyz"));
        let h = headers(&[("cookie", "weir_token=bad token")]);
        assert_eq!(bearer(&h), None);
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8765")])).is_none());
        assert!(
            cross_site(&headers(&[
                ("host", "127.0.0.1:8765"),
                ("origin", "http://127.0.0.1:8765")
            ]))
            .is_none()
        );
        assert!(
            cross_site(&headers(&[
                ("host", "127.0.0.1:8765"),
                ("origin", "http://evil.example")
            ]))
            .is_some()
        );
        assert!(cross_site(&headers(&[("host", "h"), ("origin", "null")])).is_some());
        assert!(cross_site(&headers(&[("host", "h"), ("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&headers(&[("host", "h"), ("sec-fetch-site", "same-origin")])).is_none());
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        assert_eq!(
            login_cookie("t", false),
            "weir_token=t; Path=/; HttpOnly; SameSite=Strict"
        );
        assert!(login_cookie("t", true).ends_with("; Secure"));
        assert!(logout_cookie().contains("Max-Age=0"));
    }
}
