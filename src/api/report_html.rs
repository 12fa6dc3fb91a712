//! `GET /v1/runs/{id}/report.html`: a run's report as one self-contained
//! HTML page (inline CSS, charts as inline SVG, no script), rendered by
//! [`crate::html::report`]. Tenant-scoped like `GET /v1/runs/{id}`:
//! another tenant's run is `404`. A run without a report (one not yet
//! `completed` or `needs_input`, or one that ended without a report:
//! `dead_lettered`, `cancelled`) is `409` with a JSON error naming its
//! status.

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use uuid::Uuid;

use super::{auth::Tenant, error::ApiError};
use crate::{
    html::{self, report},
    pipeline::Engine,
};

/// What the page may load: its own inline styles and nothing else (no
/// script, no frame, no request anywhere), so even a string that escaped
/// escaping could not run.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

/// `GET /v1/runs/{id}/report.html`.
pub async fn get(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let page = match report::load(&engine.pool, &tenant, id).await? {
        report::Lookup::NotFound => return Err(ApiError::NotFound("run")),
        report::Lookup::NoReport(status) => {
            return Err(ApiError::Conflict(format!(
                "run {id} has no report: its status is {status} (a run has one once it is completed or needs_input)"
            )))
        }
        report::Lookup::Found(page) => page,
    };
    Ok(respond(&page))
}

/// The page as a response, with the headers that keep it inert (the
/// console serves the same page to a signed-in browser).
pub fn respond(page: &report::ReportPage) -> Response {
    let markup = html::page(&report::title(page), report::render(page));
    let mut resp = markup.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    resp
}
