//! Tenants and their API tokens.
//!
//! A token is shown once, at creation, and stored only as its SHA-256 hash.
//! Lookup is by hash, so no comparison of secret bytes happens in Rust; the
//! hash of a 256-bit random token leaks nothing through timing.

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
    /// Taken.
    #[error("tenant {0} already exists")]
    Exists(String),
    /// Database.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Creates a tenant and returns its token (the only time it is visible).
pub async fn create(
    pool: &PgPool,
    name: &str,
    amqp_user: Option<&str>,
) -> Result<String, TenantError> {
    if crate::config::validate_namespace(name).is_err() {
        return Err(TenantError::InvalidName);
    }
    let token = new_token();
    let res = sqlx::query("INSERT INTO tenants (name, token_hash, amqp_user) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(name)
        .bind(hash_token(&token))
        .bind(amqp_user)
        .execute(pool)
        .await?;
    if res.rows_affected() == 0 {
        return Err(TenantError::Exists(name.to_string()));
    }
    Ok(token)
}

/// The tenant a bearer token belongs to.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("SELECT name FROM tenants WHERE token_hash = $1")
        .bind(hash_token(token))
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(n,)| n))
}

/// The tenant mapped to a broker user (validated `user_id` of AMQP requests).
pub async fn by_amqp_user(pool: &PgPool, user: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("SELECT name FROM tenants WHERE amqp_user = $1")
        .bind(user)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(n,)| n))
}

/// All tenant names.
pub async fn list(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT name FROM tenants ORDER BY name")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(n,)| n).collect())
}
