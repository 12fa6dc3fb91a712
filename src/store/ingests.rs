//! The ingest history (`ingests`, migration 0014): one row per ingest that
//! read its file to the end, and the last ones of each workload for the
//! console's workloads page.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Error;

/// One ingest to record.
#[derive(Debug, Clone)]
pub struct NewIngest<'a> {
    /// Owning tenant.
    pub tenant: &'a str,
    /// The workload.
    pub workload: &'a str,
    /// The file's format (`azure`, `csv`, `jsonl`).
    pub format: &'a str,
    /// Data rows read.
    pub rows_read: u64,
    /// Rows inserted.
    pub rows_inserted: u64,
    /// Good rows the workload already had.
    pub rows_duplicate: u64,
    /// Bad rows.
    pub errors: u64,
    /// Aborted by too many bad rows (nothing kept).
    pub aborted: bool,
    /// When the ingest began.
    pub started_at: DateTime<Utc>,
}

/// A recorded ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestRow {
    /// Its id.
    pub id: i64,
    /// Owning tenant.
    pub tenant: String,
    /// The workload.
    pub workload_id: String,
    /// The file's format.
    pub format: String,
    /// Data rows read.
    pub rows_read: i64,
    /// Rows inserted.
    pub rows_inserted: i64,
    /// Good rows the workload already had.
    pub rows_duplicate: i64,
    /// Bad rows.
    pub errors: i64,
    /// Aborted by too many bad rows.
    pub aborted: bool,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}

/// Counts past `i64::MAX` are written as `i64::MAX` (no file has that many).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Records an ingest (on a pool, or inside the ingest's transaction);
/// answers its id.
pub async fn record<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    row: &NewIngest<'_>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO ingests (tenant, workload_id, format, rows_read, rows_inserted, rows_duplicate,
           errors, aborted, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        row.tenant,
        row.workload,
        row.format,
        count(row.rows_read),
        count(row.rows_inserted),
        count(row.rows_duplicate),
        count(row.errors),
        row.aborted,
        row.started_at,
    )
    .fetch_one(db)
    .await
}

/// The last `per_workload` ingests of each workload within `scope`
/// (`Some(tenant)`, or `None` for every tenant), newest first within a
/// workload, workloads in (tenant, id) order.
pub async fn recent(
    pool: &PgPool,
    scope: Option<&str>,
    per_workload: i64,
) -> Result<Vec<IngestRow>, Error> {
    Ok(sqlx::query_as!(
        IngestRow,
        r#"SELECT id AS "id!", tenant AS "tenant!", workload_id AS "workload_id!", format AS "format!",
             rows_read AS "rows_read!", rows_inserted AS "rows_inserted!",
             rows_duplicate AS "rows_duplicate!", errors AS "errors!", aborted AS "aborted!",
             started_at AS "started_at!", finished_at AS "finished_at!"
           FROM (
             SELECT *, row_number() OVER (PARTITION BY tenant, workload_id ORDER BY id DESC) AS n
             FROM ingests WHERE ($1::text IS NULL OR tenant = $1)
           ) ranked
           WHERE n <= $2
           ORDER BY tenant, workload_id, id DESC"#,
        scope,
        per_workload,
    )
    .fetch_all(pool)
    .await?)
}

/// What a workload's telemetry holds.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSummary {
    /// Owning tenant.
    pub tenant: String,
    /// The workload.
    pub workload_id: String,
    /// Its requests.
    pub rows: i64,
    /// Its distinct models.
    pub models: i64,
    /// The first request's timestamp (`None` without requests).
    pub first_ts: Option<DateTime<Utc>>,
    /// The last request's timestamp.
    pub last_ts: Option<DateTime<Utc>>,
}

/// The workloads within `scope` (`Some(tenant)`, or `None` for every
/// tenant), in (tenant, id) order, at most `limit`: every ingested workload
/// (also one left without rows), and [`super::ledger::WORKLOAD`] for each
/// tenant whose runs called a model (its rows are those calls, not reuses,
/// as the view `telemetry_requests` reads them).
pub async fn workloads(
    pool: &PgPool,
    scope: Option<&str>,
    limit: i64,
) -> Result<Vec<WorkloadSummary>, Error> {
    Ok(sqlx::query_as!(
        WorkloadSummary,
        r#"SELECT tenant AS "tenant!", workload_id AS "workload_id!", rows AS "rows!",
             models AS "models!", first_ts AS "first_ts?", last_ts AS "last_ts?"
           FROM (
             SELECT w.tenant, w.id AS workload_id, t.rows, t.models, t.first_ts, t.last_ts
             FROM workloads w
             CROSS JOIN LATERAL (
               SELECT count(*) AS rows, count(DISTINCT model) AS models,
                      min(ts) AS first_ts, max(ts) AS last_ts
               FROM llm_requests r WHERE r.tenant = w.tenant AND r.workload_id = w.id
             ) t
             WHERE ($1::text IS NULL OR w.tenant = $1)
             UNION ALL
             SELECT tenant, $3::text, count(*), count(DISTINCT model), min(at), max(at)
             FROM model_calls
             WHERE reused_from IS NULL AND ($1::text IS NULL OR tenant = $1)
             GROUP BY tenant
           ) known
           ORDER BY tenant, workload_id LIMIT $2"#,
        scope,
        limit,
        super::ledger::WORKLOAD,
    )
    .fetch_all(pool)
    .await?)
}
