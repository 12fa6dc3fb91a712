//! The HTTP API (axum), JSON under `/v1`, plus `/healthz`, `/readyz` and
//! `/metrics`. Errors map to status codes and never show internals.
//!
//! Every route is declared once, in [`routes`], with its documentation; the
//! router and the OpenAPI document (`/v1/openapi.json`) are both built from
//! that one table, so they cannot drift apart.

pub mod auth;
pub mod dead_letters;
pub mod error;
pub mod health;
pub mod limits;
pub mod openapi;
pub mod replays;
pub mod report_html;
pub mod runs;
pub mod server;
pub mod tenants;
pub mod threads;
pub mod usage;

use axum::{
    extract::DefaultBodyLimit,
    routing::{get, patch, post, MethodRouter},
    Router,
};

use crate::pipeline::Engine;

/// Largest accepted HTTP body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One route: method, path, what it does, and its handler.
pub struct Route {
    /// `GET`, `POST` or `PATCH`.
    pub method: &'static str,
    /// Path with `{param}` segments.
    pub path: &'static str,
    /// One line for the OpenAPI summary.
    pub summary: &'static str,
    /// Whether it needs a bearer token.
    pub auth: bool,
    /// Name of the JSON request body schema, if it takes one.
    pub body: Option<&'static str>,
    /// Status codes it can answer with, besides 5xx.
    pub statuses: &'static [u16],
    /// Query parameters and headers it reads (besides `Authorization`).
    pub params: &'static [Param],
    /// The handler.
    pub handler: MethodRouter<Engine>,
}

/// A query parameter or header of a route, for the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// `query` or `header`.
    pub location: &'static str,
    /// JSON schema type: `string` or `integer`.
    pub kind: &'static str,
    /// What it does.
    pub description: &'static str,
}

const fn query(name: &'static str, kind: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        kind,
        description,
    }
}

const IDEMPOTENCY_KEY: Param = Param {
    name: "Idempotency-Key",
    location: "header",
    kind: "string",
    description: "1-200 printable ASCII characters; a repeat answers the same run (200), a reuse for another request 409",
};

const RUN_GET: &[Param] = &[query(
    "wait",
    "integer",
    "long-poll up to this many seconds (at most 60) for a final state",
)];
const RUN_LIST: &[Param] = &[
    query(
        "correlation_id",
        "string",
        "only runs with this correlation id",
    ),
    query("status", "string", "only runs in this status"),
    query("cursor", "string", "next_cursor of the previous page"),
    query("limit", "integer", "page size, 1-200 (default 50)"),
];
const USAGE: &[Param] = &[
    query(
        "from",
        "string",
        "RFC 3339 start of the range, inclusive (default: 30 days before `to`)",
    ),
    query(
        "to",
        "string",
        "RFC 3339 end of the range, exclusive (default: now)",
    ),
    query(
        "group_by",
        "string",
        "any of tenant, model, phase, comma-separated (default: totals only)",
    ),
];
const DLQ_LIST: &[Param] = &[
    query("phase", "string", "only this phase"),
    query(
        "error_contains",
        "string",
        "only errors containing this text",
    ),
    query("fingerprint", "string", "only this group"),
    query("limit", "integer", "most dead letters returned"),
];

const AUDIT: &[Param] = &[
    query("run", "string", "only actions on this run"),
    query("before", "integer", "next_before of the previous page"),
    query("limit", "integer", "page size, 1-500 (default 100)"),
];

impl Route {
    fn with_params(mut self, params: &'static [Param]) -> Self {
        self.params = params;
        self
    }
}

fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    auth: bool,
    body: Option<&'static str>,
    statuses: &'static [u16],
    handler: MethodRouter<Engine>,
) -> Route {
    Route {
        method,
        path,
        summary,
        auth,
        body,
        statuses,
        params: &[],
        handler,
    }
}

/// The API, as data.
pub fn routes() -> Vec<Route> {
    const CREATED: &[u16] = &[200, 202, 400, 401, 404, 409, 413, 422, 429];
    const READ: &[u16] = &[200, 400, 401, 404, 422, 429];
    vec![
        route(
            "POST",
            "/v1/runs",
            "Enqueue a request (honours Idempotency-Key)",
            true,
            Some("RunRequest"),
            CREATED,
            post(runs::create),
        )
        .with_params(&[IDEMPOTENCY_KEY]),
        route(
            "GET",
            "/v1/runs",
            "List runs by correlation id and status, cursor-paginated",
            true,
            None,
            READ,
            get(runs::list),
        )
        .with_params(RUN_LIST),
        route(
            "GET",
            "/v1/runs/{id}",
            "A run with its history; ?wait=N long-polls up to 60 s",
            true,
            None,
            READ,
            get(runs::get),
        )
        .with_params(RUN_GET),
        route(
            "GET",
            "/v1/runs/{id}/report.html",
            "The run's report as a self-contained HTML page with SVG charts (409: no report yet)",
            true,
            None,
            &[200, 400, 401, 404, 409, 429],
            get(report_html::get),
        ),
        route(
            "POST",
            "/v1/runs/{id}/cancel",
            "Cancel a run with a reason; later phase results are discarded",
            true,
            None,
            READ,
            post(runs::cancel),
        ),
        route(
            "GET",
            "/v1/threads/{id}",
            "A conversation thread",
            true,
            None,
            READ,
            get(threads::get),
        ),
        route(
            "GET",
            "/v1/threads/{id}/messages",
            "The thread's messages (user requests, agent reports)",
            true,
            None,
            READ,
            get(threads::messages),
        ),
        route(
            "POST",
            "/v1/threads/{id}/messages",
            "A follow-up: starts a new run in the thread",
            true,
            Some("RunRequest"),
            CREATED,
            post(threads::follow_up),
        )
        .with_params(&[IDEMPOTENCY_KEY]),
        route(
            "GET",
            "/v1/dead-letters",
            "The tenant's pending dead letters",
            true,
            None,
            READ,
            get(dead_letters::list),
        )
        .with_params(DLQ_LIST),
        route(
            "GET",
            "/v1/dead-letters/groups",
            "Pending dead letters grouped by phase and error fingerprint",
            true,
            None,
            READ,
            get(dead_letters::groups),
        ),
        route(
            "POST",
            "/v1/dead-letters/replay",
            "Replay dead letters by ids, group or phase (dry_run, patch)",
            true,
            Some("ReplayRequest"),
            CREATED,
            post(dead_letters::replay),
        ),
        route(
            "POST",
            "/v1/replays",
            "Replay dead letters in the background at a rate, with a reason; 202 with the job",
            true,
            Some("ReplayRequest"),
            CREATED,
            post(replays::create),
        ),
        route(
            "GET",
            "/v1/replays",
            "The newest bulk replays and their progress",
            true,
            None,
            READ,
            get(replays::list),
        ),
        route(
            "GET",
            "/v1/replays/{id}",
            "A bulk replay's progress",
            true,
            None,
            READ,
            get(replays::get),
        ),
        route(
            "POST",
            "/v1/replays/{id}/abort",
            "Abort a running bulk replay, with a reason",
            true,
            Some("ReasonRequest"),
            &[200, 401, 404, 409, 422, 429],
            post(replays::abort),
        ),
        route(
            "GET",
            "/v1/audit",
            "Who did what, when and why (a tenant sees its own, an operator everything)",
            true,
            None,
            READ,
            get(replays::audit_log),
        )
        .with_params(AUDIT),
        route(
            "GET",
            "/v1/dead-letters/{id}",
            "One dead letter",
            true,
            None,
            READ,
            get(dead_letters::show),
        ),
        route(
            "GET",
            "/v1/usage",
            "The tenant's language-model calls, tokens, cost and latency over a time range",
            true,
            None,
            &[200, 400, 401, 429],
            get(usage::get),
        )
        .with_params(USAGE),
        route(
            "GET",
            "/v1/tenants",
            "Tenants' weights, caps on runs in flight, runs in flight and waiting (an operator sees every tenant, a tenant itself)",
            true,
            None,
            &[200, 401, 429],
            get(tenants::list),
        ),
        route(
            "GET",
            "/v1/tenants/{name}",
            "One tenant's weight, cap, runs in flight and waiting (operators, or the tenant itself)",
            true,
            None,
            &[200, 401, 404, 429],
            get(tenants::get),
        ),
        route(
            "PATCH",
            "/v1/tenants/{name}",
            "Set or clear (null) a tenant's weight and cap on runs in flight, with a reason (operators only)",
            true,
            Some("TenantPatch"),
            &[200, 401, 403, 404, 413, 422, 429],
            patch(tenants::patch),
        ),
        route(
            "GET",
            "/v1/openapi.json",
            "This document",
            false,
            None,
            &[200],
            get(openapi::serve),
        ),
        route(
            "GET",
            "/healthz",
            "Liveness",
            false,
            None,
            &[200],
            get(health::healthz),
        ),
        route(
            "GET",
            "/readyz",
            "Readiness of broker, database and cache",
            false,
            None,
            &[200, 503],
            get(health::readyz),
        ),
        route(
            "GET",
            "/metrics",
            "Prometheus metrics",
            false,
            None,
            &[200],
            get(health::metrics),
        ),
    ]
}

/// The router over an engine.
pub fn router(engine: Engine) -> Router {
    let mut router = crate::console::router();
    for r in routes() {
        router = router.route(r.path, r.handler);
    }
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            limits::bounded,
        ))
        .layer(axum::middleware::from_fn(limits::json_errors))
        .with_state(engine)
}

/// Serves the API on `listener` until `stop` fires.
pub async fn serve(
    engine: Engine,
    listener: tokio::net::TcpListener,
    stop: crate::pipeline::shutdown::Shutdown,
) -> std::io::Result<()> {
    let limits = engine.config.http.clone();
    let grace = engine.config.shutdown_grace;
    server::serve(router(engine), listener, limits, stop, grace).await
}
