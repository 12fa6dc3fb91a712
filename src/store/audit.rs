//! The audit trail: who did what, to which runs, when and why. Rows are only
//! inserted; an action and its audit row commit in one transaction where the
//! action is a single write (creating a tenant or an operator, a cancel),
//! and the row is written before a bulk action starts otherwise.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::Error;
use crate::model::Reason;

/// Who acts and why: what every audited action takes.
#[derive(Debug, Clone)]
pub struct Said {
    /// `operator:NAME`, `tenant:NAME` or `cli:USER`.
    pub actor: String,
    /// Why.
    pub reason: Reason,
}

impl Said {
    /// An actor and its reason.
    pub fn new(actor: impl Into<String>, reason: Reason) -> Self {
        Self {
            actor: actor.into(),
            reason,
        }
    }
}

/// One action to record.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Who and why.
    pub said: &'a Said,
    /// The tenant acted on (`None` for an action on no tenant's data).
    pub tenant: Option<&'a str>,
    /// `replay`, `patch`, `cancel`, `abort_replay`, `create_tenant`,
    /// `create_operator`, ….
    pub action: &'a str,
    /// What it acted on, in words (`run …`, `group …`, `tenant …`).
    pub target: &'a str,
    /// The runs it touched.
    pub runs: &'a [Uuid],
    /// Anything else worth keeping (the patch, the rate, counts).
    pub detail: Value,
}

/// A recorded action.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    /// Order of recording.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// The tenant acted on.
    pub tenant: Option<String>,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Why.
    pub reason: String,
    /// The runs it touched.
    pub runs: Vec<Uuid>,
    /// Details.
    pub detail: Value,
}

/// Records an action (in the caller's transaction, when given one).
pub async fn record<'e>(ex: impl PgExecutor<'e>, e: &Entry<'_>) -> Result<i64, Error> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO audit_log (actor, tenant, action, target, reason, runs, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        e.said.actor,
        e.tenant,
        e.action,
        e.target,
        e.said.reason.as_str(),
        e.runs,
        e.detail,
    )
    .fetch_one(ex)
    .await?)
}

/// Which actions to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this tenant's (`None`: every tenant's and those on no tenant).
    pub tenant: Option<String>,
    /// Only those that touched this run.
    pub run: Option<Uuid>,
    /// Only older than this id (paging backwards).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// The newest actions first.
pub async fn list(pool: &PgPool, f: &AuditFilter) -> Result<Vec<AuditRow>, Error> {
    Ok(sqlx::query_as!(
        AuditRow,
        r#"SELECT id, at, actor, tenant, action, target, reason, runs, detail FROM audit_log
         WHERE ($1::text IS NULL OR tenant = $1)
           AND ($2::uuid IS NULL OR $2 = ANY (runs))
           AND ($3::bigint IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4"#,
        f.tenant,
        f.run,
        f.before,
        f.limit.clamp(1, 1000),
    )
    .fetch_all(pool)
    .await?)
}
