//! The audit page: every recorded action the signed-in principal may see
//! (a tenant: actions on its data; an operator: all), newest first.

use axum::{
    extract::{Query, State},
    response::Response,
};
use maud::html;
use serde::Deserialize;

use super::{layout, runs::audit_table, session::Signed, ConsoleError};
use crate::{
    pipeline::Engine,
    store::audit::{self, AuditFilter},
};

/// Paging.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Older than this id.
    pub before: Option<i64>,
}

/// `GET /console/audit`.
pub async fn page(
    State(engine): State<Engine>,
    signed: Signed,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ConsoleError> {
    let rows = audit::list(
        &engine.pool,
        &AuditFilter {
            tenant: signed.scope().map(str::to_string),
            run: None,
            before: q.before,
            limit: 200,
        },
    )
    .await?;
    let older = (rows.len() == 200)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let body = html! {
        h1 { "Audit trail" }
        p.muted { "Who did what, when and why: replays, patches, cancels, aborts, tenant and operator creation, from the console, the API and the CLI. Also at " code { "GET /v1/audit" } "." }
        (audit_table(&rows))
        @if let Some(b) = older { p { a href={ "/console/audit?before=" (b) } { "Older" } } }
    };
    Ok(layout::page(&signed, "Audit", "Audit trail", body))
}
