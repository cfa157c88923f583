//! How a failure is answered: a status code and a message people can act on, and, when
//! Kubernetes refused the request, its own status (code, reason, message) as it gave it.
//! The JSON API answers with [`UiError`] as JSON; pages render the same as HTML
//! ([`super::html::error_page`]).

use crate::cli::cluster::Refused;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A failed request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// What went wrong, in a sentence.
    pub error: String,
    /// Every problem found, each naming what it is about (bad params, for example).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The Kubernetes API server's answer, when it refused the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesStatus>,
}

/// A Kubernetes `Status`, as the API server gave it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KubernetesStatus {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

impl UiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> UiError {
        UiError {
            status,
            error: error.into(),
            problems: Vec::new(),
            kubernetes: None,
        }
    }

    pub fn bad_request(error: impl Into<String>) -> UiError {
        UiError::new(StatusCode::BAD_REQUEST, error)
    }

    /// Input that does not fit, with every problem.
    pub fn invalid(error: impl Into<String>, problems: Vec<String>) -> UiError {
        UiError {
            problems,
            ..UiError::new(StatusCode::UNPROCESSABLE_ENTITY, error)
        }
    }
}

impl From<anyhow::Error> for UiError {
    /// A refusal of the API server keeps its status code; a cluster that cannot be reached
    /// is a 502; anything else the shared (CLI) code refused is the request's fault.
    fn from(err: anyhow::Error) -> UiError {
        let text = format!("{err:#}");
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return UiError {
                status: StatusCode::from_u16(refused.code).unwrap_or(StatusCode::BAD_GATEWAY),
                error: text,
                problems: Vec::new(),
                kubernetes: Some(KubernetesStatus {
                    code: refused.code,
                    reason: refused.reason.clone(),
                    message: refused.message.clone(),
                }),
            };
        }
        let status = if text.starts_with("cannot reach") || text.starts_with("could not get credentials") {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::BAD_REQUEST
        };
        UiError::new(status, text)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}
