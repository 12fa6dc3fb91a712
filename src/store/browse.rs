//! Read-only queries for browsing runs across tenants (the console): a page
//! of runs by status, phase, tenant, time and correlation id, and counts per
//! status, always within a scope (`Some(tenant)`, or `None` for an
//! operator's view of every tenant).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{runs::select_runs, runs::Run, Error};

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Browse {
    /// Whose runs may be seen (`None`: every tenant's).
    pub scope: Option<String>,
    /// Only this tenant (within the scope).
    pub tenant: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only runs now at this phase.
    pub phase: Option<String>,
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
    /// At most this many (newest first).
    pub limit: i64,
}

/// The newest runs that match.
pub async fn runs(pool: &PgPool, b: &Browse) -> Result<Vec<Run>, Error> {
    Ok(select_runs!(
        "WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR tenant = $2) \
         AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR phase = $4) \
         AND ($5::text IS NULL OR correlation_id = $5) \
         AND ($6::timestamptz IS NULL OR created_at >= $6) \
         AND ($7::timestamptz IS NULL OR created_at < $7) \
         ORDER BY created_at DESC, id DESC LIMIT $8",
        b.scope.as_deref(),
        b.tenant.as_deref(),
        b.status.as_deref(),
        b.phase.as_deref(),
        b.correlation_id.as_deref(),
        b.from,
        b.to,
        b.limit.clamp(1, 500),
    )
    .fetch_all(pool)
    .await?)
}

/// Runs per status within the scope.
pub async fn status_counts(
    pool: &PgPool,
    scope: Option<&str>,
) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query!(
        r#"SELECT status, count(*) AS "n!" FROM runs WHERE ($1::text IS NULL OR tenant = $1)
         GROUP BY status ORDER BY status"#,
        scope,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}

/// A run, if the scope may see it.
pub async fn run(pool: &PgPool, scope: Option<&str>, id: Uuid) -> Result<Option<Run>, Error> {
    Ok(select_runs!(
        "WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
        id,
        scope
    )
    .fetch_optional(pool)
    .await?)
}

/// A run's stored phase outputs, in pipeline order of their first write.
pub async fn outputs(pool: &PgPool, id: Uuid) -> Result<Vec<(String, serde_json::Value)>, Error> {
    let rows = sqlx::query!(
        "SELECT phase, output FROM phase_outputs WHERE run_id = $1 ORDER BY created_at",
        id,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.phase, r.output)).collect())
}

/// The run of each dead letter and its status now, in the order given (at
/// most `limit`).
pub async fn dead_letter_runs(
    pool: &PgPool,
    ids: &[Uuid],
    limit: i64,
) -> Result<Vec<(Uuid, Option<Uuid>, Option<String>)>, Error> {
    let rows = sqlx::query!(
        r#"SELECT d.id AS "id!", d.run_id, r.status AS "status?" FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)
         JOIN dead_letters d ON d.id = t.id LEFT JOIN runs r ON r.id = d.run_id
         ORDER BY t.n LIMIT $2"#,
        ids,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.run_id, r.status))
        .collect())
}

/// The pending dead letters of these runs, within the scope.
pub async fn pending_of_runs(
    pool: &PgPool,
    scope: Option<&str>,
    runs: &[Uuid],
) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM dead_letters WHERE run_id = ANY($1) AND status = 'pending' \
         AND ($2::text IS NULL OR tenant = $2) ORDER BY created_at",
        runs,
        scope,
    )
    .fetch_all(pool)
    .await?)
}

/// A run's lease now: its holder and expiry (while a phase runs).
pub async fn lease(pool: &PgPool, id: Uuid) -> Result<Option<(String, DateTime<Utc>)>, Error> {
    let row = sqlx::query!(
        "SELECT lease_owner, lease_expires_at FROM runs WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| Some((r.lease_owner?, r.lease_expires_at?))))
}
