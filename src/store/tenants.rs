//! Tenants and their API tokens.
//!
//! A token is shown once, at creation, and stored only as its SHA-256 hash.
//! Lookup is by hash, so no comparison of secret bytes happens in Rust; the
//! hash of a 256-bit random token leaks nothing through timing.

use super::{
    audit::{self, Said},
    Error,
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// Hashes a bearer token for storage and lookup.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new random token: `ntr_` and 64 hex digits.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ntr_{hex}")
}

/// Why a tenant could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// Names are 1-64 letters, digits, '-' or '_'.
    #[error("invalid tenant name: use 1-64 letters, digits, '-' or '_'")]
    InvalidName,
    /// Taken (by a live tenant, or by a deleted one: a name is never reused,
    /// so a new tenant cannot inherit an old one's runs).
    #[error("tenant {0} already exists or existed (names of deleted tenants are not reused)")]
    Exists(String),
    /// The broker user belongs to another tenant, live or deleted.
    #[error("broker user {0} is mapped to another tenant (or was, to a deleted one)")]
    AmqpUserTaken(String),
    /// No such live tenant.
    #[error("no tenant named {0}")]
    Missing(String),
    /// Database.
    #[error(transparent)]
    Db(#[from] Error),
}

/// Creates a tenant and returns its token (the only time it is visible),
/// recording who created it and why in the same transaction.
pub async fn create(
    pool: &PgPool,
    name: &str,
    amqp_user: Option<&str>,
    said: &Said,
) -> Result<String, TenantError> {
    if crate::config::validate_namespace(name).is_err() {
        return Err(TenantError::InvalidName);
    }
    let token = new_token();
    if amqp_user.is_some_and(|u| crate::config::validate_namespace(u).is_err()) {
        return Err(TenantError::InvalidName);
    }
    let mut tx = pool.begin().await.map_err(Error::from)?;
    let res = sqlx::query!(
        "INSERT INTO tenants (name, token_hash, amqp_user) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        name,
        hash_token(&token),
        amqp_user,
    )
    .execute(&mut *tx)
    .await
    .map_err(Error::from)?;
    if res.rows_affected() == 0 {
        let name_taken = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM tenants WHERE name = $1) AS "taken!""#,
            name,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(Error::from)?;
        return Err(match (name_taken, amqp_user) {
            (false, Some(user)) => TenantError::AmqpUserTaken(user.to_string()),
            _ => TenantError::Exists(name.to_string()),
        });
    }
    let target = format!("tenant {name}");
    audit::record(
        &mut *tx,
        &audit::Entry {
            said,
            tenant: Some(name),
            action: "create_tenant",
            target: &target,
            runs: &[],
            detail: serde_json::json!({ "amqp_user": amqp_user }),
        },
    )
    .await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(token)
}

/// The tenant a bearer token belongs to.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT name FROM tenants WHERE token_hash = $1 AND deleted_at IS NULL",
        hash_token(token),
    )
    .fetch_optional(pool)
    .await?)
}

/// The tenant mapped to a broker user (validated `user_id` of AMQP requests).
pub async fn by_amqp_user(pool: &PgPool, user: &str) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT name FROM tenants WHERE amqp_user = $1 AND deleted_at IS NULL",
        user,
    )
    .fetch_optional(pool)
    .await?)
}

/// Gives a tenant a new token (the old one stops working at once) and
/// returns it; shown only this once.
pub async fn rotate_token(pool: &PgPool, name: &str) -> Result<String, TenantError> {
    let token = new_token();
    let res = sqlx::query!(
        "UPDATE tenants SET token_hash = $2 WHERE name = $1 AND deleted_at IS NULL",
        name,
        hash_token(&token),
    )
    .execute(pool)
    .await
    .map_err(Error::from)?;
    if res.rows_affected() == 0 {
        return Err(TenantError::Missing(name.to_string()));
    }
    Ok(token)
}

/// Deletes a tenant: its token and broker user stop working at once, and
/// its row stays as a tombstone, so neither the name nor the broker user
/// can be given to a new tenant (which would see the old one's runs, or
/// receive its in-flight replies). Its runs and
/// telemetry stay for the record; no live tenant can read them.
pub async fn delete(pool: &PgPool, name: &str) -> Result<(), TenantError> {
    let res = sqlx::query!(
        "UPDATE tenants SET deleted_at = now(), token_hash = NULL \
         WHERE name = $1 AND deleted_at IS NULL",
        name,
    )
    .execute(pool)
    .await
    .map_err(Error::from)?;
    if res.rows_affected() == 0 {
        return Err(TenantError::Missing(name.to_string()));
    }
    Ok(())
}

/// All live tenant names.
pub async fn list(pool: &PgPool) -> Result<Vec<String>, Error> {
    Ok(
        sqlx::query_scalar!("SELECT name FROM tenants WHERE deleted_at IS NULL ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}
