//! The supply catalog's tables (`catalog_models`, `catalog_gpus`) as rows.
//!
//! What the rows mean (prices, the embedded file, the fallback when the
//! tables are empty, the read cache) is [`crate::catalog`]'s business; this
//! module reads and replaces the rows, nothing else.

use std::collections::BTreeMap;

use super::Error;
use sqlx::{types::Json, PgPool};

/// One row of `catalog_models`, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    /// Model id as it appears in telemetry (the primary key).
    pub id: String,
    /// Provider (`self-hosted` for open-weight models).
    pub provider: String,
    /// USD per million input tokens.
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    pub output_per_mtok: f64,
    /// Discount on cached input tokens.
    pub cached_input_discount: f64,
    /// Discount for batch processing.
    pub batch_discount: f64,
    /// Context window in tokens (`integer` in Postgres).
    pub context_window: i32,
    /// Quality tier (`integer` in Postgres).
    pub quality_tier: i32,
    /// Typical time to first token, ms.
    pub typical_latency_ms: f64,
    /// Typical generation speed.
    pub output_tokens_per_s: f64,
    /// Where the price comes from.
    pub source: String,
    /// When it was read (a `date`, exchanged as `YYYY-MM-DD` text).
    pub as_of: String,
    /// Size class of a self-hostable model, the key of a GPU offer's tokens/s.
    pub size_class: Option<String>,
    /// Version of the catalog file the row was loaded from: the catalog's
    /// version is the newest of its rows'.
    pub catalog_version: String,
}

/// One row of `catalog_gpus`, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuRow {
    /// Offer id (the primary key).
    pub id: String,
    /// GPU type.
    pub gpu: String,
    /// USD per hour.
    pub hourly_usd: f64,
    /// Memory in GB (`integer` in Postgres).
    pub memory_gb: i32,
    /// Sustained tokens/s by model size class (`jsonb`).
    pub tokens_per_s: Json<BTreeMap<String, f64>>,
    /// Where the price comes from.
    pub source: String,
    /// When it was read (a `date`, exchanged as `YYYY-MM-DD` text).
    pub as_of: String,
    /// Version of the catalog file the row was loaded from.
    pub catalog_version: String,
}

/// Every model row, by id.
pub async fn models(pool: &PgPool) -> Result<Vec<ModelRow>, Error> {
    Ok(sqlx::query_as!(
        ModelRow,
        r#"SELECT id, provider, input_per_mtok, output_per_mtok, cached_input_discount, batch_discount,
         context_window, quality_tier, typical_latency_ms, output_tokens_per_s, source,
         as_of::text AS "as_of!", size_class, catalog_version FROM catalog_models ORDER BY id"#
    )
    .fetch_all(pool)
    .await?)
}

/// Every GPU row, by id.
pub async fn gpus(pool: &PgPool) -> Result<Vec<GpuRow>, Error> {
    Ok(sqlx::query_as!(
        GpuRow,
        r#"SELECT id, gpu, hourly_usd, memory_gb, tokens_per_s AS "tokens_per_s: Json<BTreeMap<String, f64>>",
         source, as_of::text AS "as_of!", catalog_version FROM catalog_gpus ORDER BY id"#
    )
    .fetch_all(pool)
    .await?)
}

/// Makes the tables hold exactly these rows, in one transaction: each row
/// is upserted by id (`loaded_at` set to now), and rows whose id is not
/// among them are deleted.
pub async fn replace(pool: &PgPool, models: &[ModelRow], gpus: &[GpuRow]) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    for m in models {
        upsert_model(&mut tx, m).await?;
    }
    for g in gpus {
        upsert_gpu(&mut tx, g).await?;
    }
    let model_ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    let gpu_ids: Vec<&str> = gpus.iter().map(|g| g.id.as_str()).collect();
    sqlx::query!(
        "DELETE FROM catalog_models WHERE NOT (id = ANY($1::text[]))",
        &model_ids as &[&str],
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "DELETE FROM catalog_gpus WHERE NOT (id = ANY($1::text[]))",
        &gpu_ids as &[&str],
    )
    .execute(&mut *tx)
    .await?;
    Ok(tx.commit().await?)
}

async fn upsert_model(conn: &mut sqlx::PgConnection, m: &ModelRow) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO catalog_models (id, provider, input_per_mtok, output_per_mtok, cached_input_discount, \
         batch_discount, context_window, quality_tier, typical_latency_ms, output_tokens_per_s, source, as_of, \
         catalog_version, size_class, loaded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text::date, $13, $14, now()) \
         ON CONFLICT (id) DO UPDATE SET provider = EXCLUDED.provider, input_per_mtok = EXCLUDED.input_per_mtok, \
         output_per_mtok = EXCLUDED.output_per_mtok, cached_input_discount = EXCLUDED.cached_input_discount, \
         batch_discount = EXCLUDED.batch_discount, context_window = EXCLUDED.context_window, \
         quality_tier = EXCLUDED.quality_tier, typical_latency_ms = EXCLUDED.typical_latency_ms, \
         output_tokens_per_s = EXCLUDED.output_tokens_per_s, source = EXCLUDED.source, as_of = EXCLUDED.as_of, \
         catalog_version = EXCLUDED.catalog_version, size_class = EXCLUDED.size_class, loaded_at = now()",
        m.id,
        m.provider,
        m.input_per_mtok,
        m.output_per_mtok,
        m.cached_input_discount,
        m.batch_discount,
        m.context_window,
        m.quality_tier,
        m.typical_latency_ms,
        m.output_tokens_per_s,
        m.source,
        m.as_of,
        m.catalog_version,
        m.size_class,
    )
    .execute(conn)
    .await?;
    Ok(())
}

async fn upsert_gpu(conn: &mut sqlx::PgConnection, g: &GpuRow) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO catalog_gpus (id, gpu, hourly_usd, memory_gb, tokens_per_s, source, as_of, catalog_version, loaded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::text::date, $8, now()) \
         ON CONFLICT (id) DO UPDATE SET gpu = EXCLUDED.gpu, hourly_usd = EXCLUDED.hourly_usd, \
         memory_gb = EXCLUDED.memory_gb, tokens_per_s = EXCLUDED.tokens_per_s, source = EXCLUDED.source, \
         as_of = EXCLUDED.as_of, catalog_version = EXCLUDED.catalog_version, loaded_at = now()",
        g.id,
        g.gpu,
        g.hourly_usd,
        g.memory_gb,
        &g.tokens_per_s as &Json<BTreeMap<String, f64>>,
        g.source,
        g.as_of,
        g.catalog_version,
    )
    .execute(conn)
    .await?;
    Ok(())
}
