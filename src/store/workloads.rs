//! The workloads a tenant has telemetry for (`workloads`).

use sqlx::PgPool;

use super::Error;

/// The ids of a tenant's workloads, in id order (at most `limit`).
pub async fn ids(pool: &PgPool, tenant: &str, limit: i64) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM workloads WHERE tenant = $1 ORDER BY id LIMIT $2",
        tenant,
        limit
    )
    .fetch_all(pool)
    .await?)
}
