//! The supply catalog: model prices and GPU offers from `catalog/models.json`,
//! a versioned data file (each price carries its source and date).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// One model offer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Model id as it appears in telemetry.
    pub id: String,
    /// Provider.
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
}

/// One GPU offer.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub tokens_per_s: std::collections::BTreeMap<String, f64>,
    /// Where the price comes from.
    pub source: String,
    /// When it was read.
    pub as_of: String,
}

/// The catalog file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalog {
    /// Version (date) of the file.
    pub version: String,
    /// Models.
    pub models: Vec<ModelPrice>,
    /// GPUs.
    pub gpus: Vec<GpuOffer>,
}

impl Catalog {
    /// The catalog shipped with this build.
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            serde_json::from_str(include_str!("../../catalog/models.json")).unwrap_or(Catalog {
                version: "empty".into(),
                models: vec![],
                gpus: vec![],
            })
        })
    }

    /// A model by id.
    pub fn model(&self, id: &str) -> Option<&ModelPrice> {
        self.models.iter().find(|m| m.id == id)
    }
}

impl ModelPrice {
    /// Cost in USD of one request.
    pub fn cost(&self, input_tokens: f64, output_tokens: f64) -> f64 {
        (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000.0
    }
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
    }
}
