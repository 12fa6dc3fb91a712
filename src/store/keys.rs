//! Shared keys: random secrets every process of a deployment reads from the
//! database, so that a key they must agree on needs no configuration.

use super::Error;
use rand::RngCore;
use sqlx::PgPool;

/// The key named `name`, created at random (32 bytes) by the first caller.
pub async fn shared_key(pool: &PgPool, name: &str) -> Result<Vec<u8>, Error> {
    let mut fresh = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut fresh);
    sqlx::query!(
        "INSERT INTO shared_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        name,
        fresh.as_slice(),
    )
    .execute(pool)
    .await?;
    Ok(
        sqlx::query_scalar!("SELECT key FROM shared_keys WHERE name = $1", name)
            .fetch_one(pool)
            .await?,
    )
}
