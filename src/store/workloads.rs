//! The workloads a tenant has telemetry for (`workloads`, and `netra-llm`
//! while the tenant's runs have called a language model).

use sqlx::PgPool;

use super::Error;

/// The ids of a tenant's workloads, in id order (at most `limit`): those
/// with ingested telemetry, and [`super::ledger::WORKLOAD`] (`netra-llm`)
/// when the call ledger has a model call of the tenant (a reuse is no call).
pub async fn ids(pool: &PgPool, tenant: &str, limit: i64) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id AS "id!" FROM (
             SELECT id FROM workloads WHERE tenant = $1
             UNION
             SELECT $3::text WHERE EXISTS (
               SELECT 1 FROM model_calls WHERE tenant = $1 AND reused_from IS NULL)
           ) known ORDER BY id LIMIT $2"#,
        tenant,
        limit,
        super::ledger::WORKLOAD,
    )
    .fetch_all(pool)
    .await?)
}
