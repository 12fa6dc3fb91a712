//! The API's error type: each variant is a status code and a JSON body
//! `{"error": {"code", "message", "field"?}}`; internal failures are logged
//! and answered with a generic message.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 403: the token is valid but may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 422 naming the field.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// 400 naming the query parameter (or other part of the request line).
    #[error("{field}: {message}")]
    BadQuery {
        /// The parameter.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 429 with the seconds to wait.
    #[error("rate limit exceeded; retry in {0} s")]
    RateLimited(u64),
    /// 503.
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    /// 500, details only in the log.
    #[error("internal error")]
    Internal(String),
}

/// A store failure: an outage is `503` (try again), anything else `500`
/// with the detail only in the log (a missing row the handler did not look
/// up itself included: handlers answer `404` from the `Option`s they read).
impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        if e.is_outage() {
            ApiError::Unavailable("database")
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl ApiError {
    /// Its status code.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::BadQuery { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(detail = %detail, "internal API error");
        }
        let mut body = json!({"error": {"code": code, "message": self.to_string()}});
        if let ApiError::Invalid { field, .. } | ApiError::BadQuery { field, .. } = &self {
            body["error"]["field"] = json!(field);
        }
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::RateLimited(secs) = &self {
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// A missing or bad reason is a 422 on the field `reason` whose message says
/// a reason is required.
impl From<crate::model::principal::ReasonError> for ApiError {
    fn from(e: crate::model::principal::ReasonError) -> Self {
        ApiError::Invalid {
            field: "reason".into(),
            message: e.to_string(),
        }
    }
}
