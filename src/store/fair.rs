//! Fair admission in the store: which tenants have runs waiting to be
//! admitted, releasing a tenant's waiting runs as its share allows, and the
//! counts of waiting and in-flight runs per tenant (migration 0015,
//! docs/DESIGN.md "Fair admission").
//!
//! Admission is decided by the SQL function `netra_fair_admit` (the intake
//! statement calls it too). A release serializes per tenant with a
//! transaction-scoped advisory lock, so two schedulers never admit beyond a
//! share between them, and takes its runs `FOR UPDATE SKIP LOCKED`: a run is
//! released once. A release that dies before its commit releases nothing.

use std::sync::OnceLock;

use sqlx::PgPool;

use super::{
    requests::to_i32,
    runs::{Run, RUN_COLUMNS},
    Error,
};
use crate::config::FairConfig;

/// Why a run waits: its tenant has its share of the runs in flight.
pub const OVER_SHARE: &str = "tenant over its share";
/// Why a run waits: its tenant is over its request rate.
pub const OVER_RATE: &str = "over its rate";

/// The tenants with runs waiting to be admitted (one index probe per
/// tenant).
pub async fn waiting_tenants(pool: &PgPool) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar(
        "WITH RECURSIVE waiting(tenant) AS ( \
           (SELECT tenant FROM runs WHERE wait_reason IS NOT NULL ORDER BY tenant LIMIT 1) \
           UNION ALL \
           SELECT (SELECT r.tenant FROM runs r WHERE r.wait_reason IS NOT NULL AND r.tenant > w.tenant \
                   ORDER BY r.tenant LIMIT 1) FROM waiting w WHERE w.tenant IS NOT NULL) \
         SELECT tenant FROM waiting WHERE tenant IS NOT NULL",
    )
    .fetch_all(pool)
    .await?)
}

fn release_statement() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH quota AS (SELECT netra_fair_admit($1, $2, true, $3, $4, $5) AS n), \
             picked AS (SELECT id FROM runs WHERE tenant = $1 AND wait_reason = ANY($6) \
                 AND status = 'queued' ORDER BY priority DESC, created_at, id \
                 LIMIT (SELECT n FROM quota) FOR UPDATE SKIP LOCKED), \
             released AS (UPDATE runs SET wait_reason = NULL, updated_at = now() \
                 WHERE id IN (SELECT id FROM picked) RETURNING {cols}), \
             history AS (INSERT INTO run_history (run_id, actor, from_status, to_status, phase, \
                 attempt, replay, detail) \
                 SELECT id, $7, 'queued', 'queued', phase, attempt, replay, \
                   jsonb_build_object('released', true) FROM released) \
             SELECT {cols} FROM released ORDER BY priority DESC, created_at, id",
            cols = RUN_COLUMNS
        )
    })
}

/// Releases up to `most` of `tenant`'s waiting runs (those waiting for one
/// of `reasons`) as its share allows, highest priority first, oldest first
/// within a priority; returns them, admitted (their steps are to be
/// published). Nothing when another process is releasing the same tenant.
pub async fn release(
    pool: &PgPool,
    tenant: &str,
    most: u32,
    reasons: &[&str],
    fair: FairConfig,
    actor: &str,
) -> Result<Vec<Run>, Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('netra.fair'), hashtext($1))",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(Vec::new());
    }
    let runs: Vec<Run> = sqlx::query_as(release_statement())
        .bind(tenant)
        .bind(to_i32(most))
        .bind(to_i32(fair.in_flight))
        .bind(to_i32(fair.weight))
        .bind(fair.max_in_flight.map(to_i32))
        .bind(reasons)
        .bind(actor)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(runs)
}

/// One tenant's admission, as the metrics and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantCounts {
    /// The tenant.
    pub tenant: String,
    /// Runs waiting to be admitted.
    pub waiting: i64,
    /// Runs admitted and not finished.
    pub in_flight: i64,
    /// Requests spooled in the intake inbox, not yet runs
    /// ([`super::inbox`]).
    pub spooled: i64,
}

/// Waiting and in-flight runs and spooled requests per tenant (tenants
/// with none are left out), by tenant name. Three statements, each on its
/// own index.
pub async fn counts(pool: &PgPool) -> Result<Vec<TenantCounts>, Error> {
    let waiting: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tenant, count(*) FROM runs WHERE wait_reason IS NOT NULL AND status = 'queued' \
         GROUP BY tenant",
    )
    .fetch_all(pool)
    .await?;
    let in_flight: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tenant, count(*) FROM runs WHERE wait_reason IS NULL AND finished_at IS NULL \
         AND status IN ('queued', 'running', 'retrying') GROUP BY tenant",
    )
    .fetch_all(pool)
    .await?;
    let mut by: std::collections::BTreeMap<String, TenantCounts> = Default::default();
    for (tenant, n) in waiting {
        by.entry(tenant.clone())
            .or_insert_with(|| TenantCounts::empty(tenant))
            .waiting = n;
    }
    for (tenant, n) in in_flight {
        by.entry(tenant.clone())
            .or_insert_with(|| TenantCounts::empty(tenant))
            .in_flight = n;
    }
    for (tenant, n) in super::inbox::depth(pool).await? {
        by.entry(tenant.clone())
            .or_insert_with(|| TenantCounts::empty(tenant))
            .spooled = n;
    }
    Ok(by.into_values().collect())
}

impl TenantCounts {
    fn empty(tenant: String) -> Self {
        Self {
            tenant,
            waiting: 0,
            in_flight: 0,
            spooled: 0,
        }
    }
}

/// `tenant`'s own request rate (`tenants.requests_per_min`, migration
/// 0018): None when it has no row or no value of its own.
pub async fn requests_per_min(pool: &PgPool, tenant: &str) -> Result<Option<i32>, Error> {
    Ok(sqlx::query_scalar::<_, Option<i32>>(
        "SELECT requests_per_min FROM tenants WHERE name = $1 AND deleted_at IS NULL",
    )
    .bind(tenant)
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// The tenants with runs waiting for their request rate, and how many.
pub async fn rate_waiting(pool: &PgPool) -> Result<Vec<(String, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT tenant, count(*) FROM runs WHERE wait_reason = 'over its rate' \
         AND status = 'queued' GROUP BY tenant ORDER BY tenant",
    )
    .fetch_all(pool)
    .await?)
}

/// Lets up to `n` of `tenant`'s runs that wait for its rate go on to wait
/// for its share (highest priority first, then oldest), where the next
/// release admits them; returns how many went on. Runs another process is
/// moving are skipped.
pub async fn pass_rate(pool: &PgPool, tenant: &str, n: i64, actor: &str) -> Result<u64, Error> {
    let done: i64 = sqlx::query_scalar(
        "WITH picked AS (SELECT id FROM runs WHERE tenant = $1 AND wait_reason = 'over its rate' \
             AND status = 'queued' ORDER BY priority DESC, created_at, id LIMIT $2 \
             FOR UPDATE SKIP LOCKED), \
         passed AS (UPDATE runs SET wait_reason = 'tenant over its share', updated_at = now() \
             WHERE id IN (SELECT id FROM picked) RETURNING id, phase, attempt, replay), \
         history AS (INSERT INTO run_history (run_id, actor, from_status, to_status, phase, \
             attempt, replay, detail) \
             SELECT id, $3, 'queued', 'queued', phase, attempt, replay, \
               jsonb_build_object('waiting', 'tenant over its share', 'rate_passed', true) \
             FROM passed) \
         SELECT count(*) FROM passed",
    )
    .bind(tenant)
    .bind(n)
    .bind(actor)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(done).unwrap_or(0))
}
