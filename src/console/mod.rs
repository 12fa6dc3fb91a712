//! The operator console at `/console`: server-rendered HTML (maud) with a
//! little JavaScript, every asset embedded in the binary. It reads and acts
//! through the same store functions as the API, within the signed-in
//! principal's scope: a tenant sees its own runs, dead letters and jobs
//! only (anything else is 404), an operator sees every tenant. Every change
//! takes a reason and lands in the audit trail (docs/DESIGN.md "The
//! console").

pub mod audit;
pub mod dead_letters;
pub mod layout;
pub mod queues;
pub mod runs;
pub mod session;
pub mod usage;
pub mod workloads;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use maud::html;

use crate::{api::error::ApiError, pipeline::Engine};

/// The console's routes (merged into the API's router).
pub fn router() -> Router<Engine> {
    Router::new()
        .route("/console", get(runs::list))
        .route("/console/", get(runs::list))
        .route("/console/counts", get(runs::counts))
        .route(
            "/console/login",
            get(session::login_page).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/runs/replay", post(runs::replay_selected))
        .route("/console/runs/{id}", get(runs::show))
        .route("/console/runs/{id}/cancel", post(runs::cancel))
        .route("/console/runs/{id}/report", get(runs::report))
        .route("/console/dead-letters", get(dead_letters::groups))
        .route("/console/dead-letters/group", get(dead_letters::group))
        .route("/console/dead-letters/preview", post(dead_letters::preview))
        .route("/console/dead-letters/{id}", get(dead_letters::show))
        .route(
            "/console/dead-letters/{id}/patched",
            post(dead_letters::patched),
        )
        .route(
            "/console/dead-letters/{id}/replay",
            post(dead_letters::replay_one),
        )
        .route(
            "/console/replays",
            get(dead_letters::jobs).post(dead_letters::replay_group),
        )
        .route("/console/replays/{id}", get(dead_letters::job))
        .route(
            "/console/replays/{id}/progress",
            get(dead_letters::job_progress),
        )
        .route("/console/replays/{id}/abort", post(dead_letters::abort))
        .route("/console/audit", get(audit::page))
        .route("/console/queues", get(queues::page))
        .route("/console/tenants/{name}/fair", post(queues::set_fair))
        .route("/console/usage", get(usage::page))
        .route("/console/workloads", get(workloads::page))
        .route("/console/assets/console.js", get(layout::script))
        .route("/console/assets/console.css", get(layout::style))
}

/// A console failure: a page (or, for a request that is not signed in, a
/// redirect to the sign-in form).
#[derive(Debug)]
pub enum ConsoleError {
    /// Not signed in, or the session ended.
    SignIn,
    /// The form token or origin did not match.
    Forbidden,
    /// Not found, or not the signed-in tenant's.
    NotFound(&'static str),
    /// Anything the API would answer with an error.
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(what) => ConsoleError::NotFound(what),
            other => ConsoleError::Api(other),
        }
    }
}

impl From<crate::store::Error> for ConsoleError {
    fn from(e: crate::store::Error) -> Self {
        ConsoleError::Api(e.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            ConsoleError::SignIn => return Redirect::to("/console/login").into_response(),
            ConsoleError::Forbidden => (
                StatusCode::FORBIDDEN,
                "Refused",
                "This request did not come from a console page of this session (its form token or origin did not match). Reload the page and try again.".to_string(),
            ),
            ConsoleError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "Not found",
                format!("No such {what} (or it is another tenant's)."),
            ),
            ConsoleError::Api(e) => {
                let status = e.status();
                let message = e.to_string();
                if let ApiError::Internal(detail) = &e {
                    tracing::error!(detail = %detail, "internal console error");
                }
                (status, "Could not do that", message)
            }
        };
        let body = html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p.muted { "Status " (status.as_u16()) ". A link from another tenant's session, or to something that was removed, ends here; nothing was changed by this request." }
            p { a href="/console" { "Back to the runs" } " · " a href="/console/dead-letters" { "Dead letters" } " · " a href="/console/login" { "Sign in again" } }
        };
        (status, layout::bare(title, body)).into_response()
    }
}
