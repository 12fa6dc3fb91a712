//! The supply catalog: model prices and GPU offers.
//!
//! The versioned data file `catalog/models.json` (each price carries its
//! source and date) is upserted into Postgres by [`load_catalog`] at start
//! and on `netra migrate`; agents read the catalog from Postgres
//! ([`Catalog::from_db`]) and fall back to the file embedded in the build
//! only when the tables are empty. Editing prices is a data change. The
//! rows are read and written by [`crate::store::catalog`]; this module maps
//! them to offers and keeps the read cache.

use std::{collections::BTreeMap, sync::OnceLock};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::store;

/// One model offer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelPrice {
    /// Model id as it appears in telemetry.
    pub id: String,
    /// Provider (`self-hosted` for open-weight models a GPU offer can serve).
    pub provider: String,
    /// USD per million input tokens.
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    pub output_per_mtok: f64,
    /// Discount on cached input tokens (0.5 = half price).
    pub cached_input_discount: f64,
    /// Discount for batch processing.
    pub batch_discount: f64,
    /// Context window in tokens.
    pub context_window: u32,
    /// 1 (small) to 3 (frontier).
    pub quality_tier: u8,
    /// Typical time to first token, ms.
    pub typical_latency_ms: f64,
    /// Typical generation speed.
    pub output_tokens_per_s: f64,
    /// Where the price comes from.
    pub source: String,
    /// When it was read.
    pub as_of: String,
    /// Size class (`8b`, `70b`) of a self-hostable model: the key of a GPU
    /// offer's `tokens_per_s`.
    #[serde(default)]
    pub size_class: Option<String>,
    /// The architecture of an open-weight model (sizes GPU memory for
    /// self-hosting). Facts of the weights, not prices: read from the file
    /// embedded in the build, also when the prices come from Postgres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Architecture>,
}

/// What an open-weight model needs in GPU memory: its weights and, per
/// token of context, its KV cache.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Architecture {
    /// Parameters, billions.
    pub params_b: f64,
    /// Transformer layers.
    pub layers: u32,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: u32,
    /// Size of one head.
    pub head_dim: u32,
    /// Where the figures come from.
    pub source: String,
}

impl Architecture {
    /// GB of weights at `bytes_per_param`.
    pub fn weights_gb(&self, bytes_per_param: f64) -> f64 {
        self.params_b * bytes_per_param
    }

    /// Bytes of KV cache per token of context: keys and values of every
    /// layer and KV head, at `bytes_per_value`.
    pub fn kv_bytes_per_token(&self, bytes_per_value: f64) -> f64 {
        2.0 * f64::from(self.layers)
            * f64::from(self.kv_heads)
            * f64::from(self.head_dim)
            * bytes_per_value
    }
}

/// One GPU offer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GpuOffer {
    /// Offer id.
    pub id: String,
    /// GPU type.
    pub gpu: String,
    /// USD per hour.
    pub hourly_usd: f64,
    /// Memory.
    pub memory_gb: u32,
    /// Sustained tokens/s by model size class (`8b`, `70b`).
    pub tokens_per_s: BTreeMap<String, f64>,
    /// Where the price comes from.
    pub source: String,
    /// When it was read.
    pub as_of: String,
}

/// The catalog file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    /// Version (date) of the file.
    pub version: String,
    /// Models.
    pub models: Vec<ModelPrice>,
    /// GPUs.
    pub gpus: Vec<GpuOffer>,
}

/// The data file compiled into the build.
pub const EMBEDDED_JSON: &str = include_str!("../catalog/models.json");

impl Catalog {
    /// The catalog shipped with this build (empty if the file does not
    /// parse; a unit test guards that it does).
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            serde_json::from_str(EMBEDDED_JSON).unwrap_or(Catalog {
                version: "empty".into(),
                models: vec![],
                gpus: vec![],
            })
        })
    }

    /// The catalog as loaded into Postgres (every run reads it several
    /// times). With the data version a phase started at (`Some`), the read
    /// is reused only at that version, so it is exact; without it, for at
    /// most [`CACHE_TTL`] per database. A load through this process is seen
    /// at once either way.
    pub async fn from_db(pool: &PgPool, version: Option<i64>) -> Result<Catalog, store::Error> {
        let opts = pool.connect_options();
        let key = format!(
            "{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or_default()
        );
        if let Some(hit) = cache_get(&key, version) {
            return Ok(hit);
        }
        // Kept under a version only if no write committed while it was read.
        let before = crate::memo::current_version(pool).await;
        let fresh = Self::read_db(pool).await?;
        let at = match before {
            Some(v) if crate::memo::current_version(pool).await == Some(v) => Some(v),
            _ => None,
        };
        cache_put(key, at, fresh.clone());
        Ok(fresh)
    }

    /// The catalog as stored in Postgres; the embedded file when the tables
    /// are empty (a database that was never loaded).
    pub async fn read_db(pool: &PgPool) -> Result<Catalog, store::Error> {
        let rows = store::catalog::models(pool).await?;
        if rows.is_empty() {
            return Ok(Catalog::embedded().clone());
        }
        let version = rows
            .iter()
            .map(|r| r.catalog_version.clone())
            .max()
            .unwrap_or_default();
        let models = rows.into_iter().map(ModelPrice::from_row).collect();
        let gpus = store::catalog::gpus(pool)
            .await?
            .into_iter()
            .map(GpuOffer::from_row)
            .collect();
        Ok(Catalog {
            version,
            models,
            gpus,
        })
    }

    /// A model by id.
    pub fn model(&self, id: &str) -> Option<&ModelPrice> {
        self.models.iter().find(|m| m.id == id)
    }
}

impl ModelPrice {
    /// Cost in USD of `input_tokens` and `output_tokens` at list price.
    pub fn cost(&self, input_tokens: f64, output_tokens: f64) -> f64 {
        (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000.0
    }
}

impl ModelPrice {
    /// The offer of a stored row (a negative count reads as 0).
    fn from_row(r: store::catalog::ModelRow) -> Self {
        let architecture = Catalog::embedded()
            .model(&r.id)
            .and_then(|m| m.architecture.clone());
        ModelPrice {
            id: r.id,
            provider: r.provider,
            input_per_mtok: r.input_per_mtok,
            output_per_mtok: r.output_per_mtok,
            cached_input_discount: r.cached_input_discount,
            batch_discount: r.batch_discount,
            context_window: u32::try_from(r.context_window).unwrap_or(0),
            quality_tier: u8::try_from(r.quality_tier).unwrap_or(0),
            typical_latency_ms: r.typical_latency_ms,
            output_tokens_per_s: r.output_tokens_per_s,
            source: r.source,
            architecture,
            as_of: r.as_of,
            size_class: r.size_class,
        }
    }

    /// The row that stores this offer, loaded from catalog `version`.
    fn to_row(&self, version: &str) -> store::catalog::ModelRow {
        store::catalog::ModelRow {
            id: self.id.clone(),
            provider: self.provider.clone(),
            input_per_mtok: self.input_per_mtok,
            output_per_mtok: self.output_per_mtok,
            cached_input_discount: self.cached_input_discount,
            batch_discount: self.batch_discount,
            context_window: i32::try_from(self.context_window).unwrap_or(i32::MAX),
            quality_tier: i32::from(self.quality_tier),
            typical_latency_ms: self.typical_latency_ms,
            output_tokens_per_s: self.output_tokens_per_s,
            source: self.source.clone(),
            as_of: self.as_of.clone(),
            size_class: self.size_class.clone(),
            catalog_version: version.to_string(),
        }
    }
}

impl GpuOffer {
    /// The offer of a stored row (a negative size reads as 0).
    fn from_row(r: store::catalog::GpuRow) -> Self {
        GpuOffer {
            id: r.id,
            gpu: r.gpu,
            hourly_usd: r.hourly_usd,
            memory_gb: u32::try_from(r.memory_gb).unwrap_or(0),
            tokens_per_s: r.tokens_per_s.0,
            source: r.source,
            as_of: r.as_of,
        }
    }

    /// The row that stores this offer, loaded from catalog `version`.
    fn to_row(&self, version: &str) -> store::catalog::GpuRow {
        store::catalog::GpuRow {
            id: self.id.clone(),
            gpu: self.gpu.clone(),
            hourly_usd: self.hourly_usd,
            memory_gb: i32::try_from(self.memory_gb).unwrap_or(i32::MAX),
            tokens_per_s: sqlx::types::Json(self.tokens_per_s.clone()),
            source: self.source.clone(),
            as_of: self.as_of.clone(),
            catalog_version: version.to_string(),
        }
    }
}

/// How long a catalog read from Postgres is reused by this process.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// A catalog read, when, and at which data version (see [`crate::memo`]).
type CatalogCache = std::collections::HashMap<String, (std::time::Instant, Option<i64>, Catalog)>;

fn catalog_cache() -> &'static std::sync::Mutex<CatalogCache> {
    static CACHE: OnceLock<std::sync::Mutex<CatalogCache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A cached read: one at exactly `version` when it is known, else one
/// younger than [`CACHE_TTL`].
fn cache_get(key: &str, version: Option<i64>) -> Option<Catalog> {
    let cache = catalog_cache().lock().ok()?;
    cache
        .get(key)
        .filter(|(at, v, _)| match version {
            Some(_) => *v == version,
            None => at.elapsed() < CACHE_TTL,
        })
        .map(|(_, _, c)| c.clone())
}

fn cache_put(key: String, version: Option<i64>, catalog: Catalog) {
    if let Ok(mut cache) = catalog_cache().lock() {
        cache.insert(key, (std::time::Instant::now(), version, catalog));
    }
}

/// Forgets every cached catalog (after a load).
fn cache_clear() {
    if let Ok(mut cache) = catalog_cache().lock() {
        cache.clear();
    }
}

/// What [`load_catalog`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogLoad {
    /// Version of the file loaded.
    pub version: String,
    /// Model rows upserted.
    pub models: usize,
    /// GPU rows upserted.
    pub gpus: usize,
}

/// Upserts the embedded `catalog/models.json` into `catalog_models` and
/// `catalog_gpus` in one transaction, deleting rows the file no longer has.
/// Idempotent: call it after migrations at every start and on `netra migrate`.
pub async fn load_catalog(pool: &PgPool) -> Result<CatalogLoad, store::Error> {
    load_catalog_from(pool, Catalog::embedded()).await
}

/// Why a catalog file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("reading the catalog file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a valid catalog.
    #[error("the catalog file is invalid: {0}")]
    Parse(#[from] serde_json::Error),
    /// Postgres failed.
    #[error("database: {0}")]
    Db(#[from] store::Error),
}

/// Loads a catalog file read at run time (prices changed without a
/// rebuild), with the same upsert as [`load_catalog`].
pub async fn load_catalog_file(
    pool: &PgPool,
    path: &std::path::Path,
) -> Result<CatalogLoad, CatalogError> {
    let c: Catalog = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(load_catalog_from(pool, &c).await?)
}

/// [`load_catalog`] for a given catalog (tests, or a file read at run time).
pub async fn load_catalog_from(pool: &PgPool, c: &Catalog) -> Result<CatalogLoad, store::Error> {
    let models: Vec<_> = c.models.iter().map(|m| m.to_row(&c.version)).collect();
    let gpus: Vec<_> = c.gpus.iter().map(|g| g.to_row(&c.version)).collect();
    store::catalog::replace(pool, &models, &gpus).await?;
    cache_clear();
    Ok(CatalogLoad {
        version: c.version.clone(),
        models: c.models.len(),
        gpus: c.gpus.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_parses_and_prices() {
        let c = Catalog::embedded();
        assert!(c.models.len() >= 4, "catalog did not parse");
        let m = c.model("gpt-4o").unwrap();
        // 1M input + 1M output = 2.50 + 10.00
        assert!((m.cost(1e6, 1e6) - 12.5).abs() < 1e-9);
        assert!(c
            .models
            .iter()
            .all(|m| !m.source.is_empty() && !m.as_of.is_empty()));
        assert!(c
            .gpus
            .iter()
            .all(|g| !g.source.is_empty() && !g.as_of.is_empty()));
        let l70 = c.model("llama-3.1-70b").unwrap();
        assert_eq!(l70.size_class.as_deref(), Some("70b"));
        // 80 layers x 8 KV heads x 128 x 2 (K and V) x 2 bytes = 327,680 bytes per token.
        let a = l70.architecture.as_ref().unwrap();
        assert_eq!(a.kv_bytes_per_token(2.0), 327_680.0);
        assert!((a.weights_gb(2.0) - 141.2).abs() < 1e-9);
    }
}
