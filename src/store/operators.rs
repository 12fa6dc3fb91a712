//! Operators and the look-up of any bearer token: a token is a tenant's or
//! an operator's, never both (each is 256 random bits, and both tables keep
//! their hashes unique).

use sqlx::PgPool;

use super::{
    audit::{self, Said},
    tenants::{hash_token, new_token, TenantError},
    Error,
};
use crate::model::Principal;

/// Creates an operator and returns its token (the only time it is
/// visible), recording who created it and why in the same transaction.
pub async fn create(pool: &PgPool, name: &str, said: &Said) -> Result<String, TenantError> {
    if crate::config::validate_namespace(name).is_err() {
        return Err(TenantError::InvalidName);
    }
    let token = new_token();
    let mut tx = pool.begin().await.map_err(Error::from)?;
    let res = sqlx::query!(
        "INSERT INTO operators (name, token_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        name,
        hash_token(&token),
    )
    .execute(&mut *tx)
    .await
    .map_err(Error::from)?;
    if res.rows_affected() == 0 {
        return Err(TenantError::Exists(name.to_string()));
    }
    let target = format!("operator {name}");
    audit::record(
        &mut *tx,
        &audit::Entry {
            said,
            tenant: None,
            action: "create_operator",
            target: &target,
            runs: &[],
            detail: serde_json::json!({}),
        },
    )
    .await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(token)
}

/// Live operator names.
pub async fn list(pool: &PgPool) -> Result<Vec<String>, Error> {
    Ok(
        sqlx::query_scalar!("SELECT name FROM operators WHERE deleted_at IS NULL ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}

/// Whom a bearer token belongs to: a live tenant or a live operator.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<Principal>, Error> {
    let row = sqlx::query!(
        r#"SELECT 'tenant' AS "kind!", name AS "name!" FROM tenants
             WHERE token_hash = $1 AND deleted_at IS NULL
         UNION ALL
         SELECT 'operator', name FROM operators WHERE token_hash = $1 AND deleted_at IS NULL
         LIMIT 1"#,
        hash_token(token),
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| Principal::from_kind(&r.kind, r.name)))
}
