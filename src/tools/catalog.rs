//! The catalog lookup tool: model prices and GPU offers as loaded into
//! Postgres (each with its source and date), optionally narrowed to ids.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{db_err, params, Tool, ToolContext};
use crate::{catalog::Catalog, error::PhaseError};

#[derive(Debug, Deserialize)]
struct LookupParams {
    kind: String,
    #[serde(default)]
    ids: Option<Vec<String>>,
}

/// The tools of this module.
pub fn tools() -> Vec<Tool> {
    vec![Tool {
        name: "catalog_lookup",
        description: "Model prices (per million tokens, cached and batch discounts, quality tier, latency) and GPU offers (hourly price, tokens/s by model size), each with source and date",
        parameters: json!({
            "type": "object", "additionalProperties": false, "required": ["kind"],
            "properties": {
                "kind": {"type": "string", "enum": ["models", "gpus", "all"]},
                "ids": {"type": "array", "items": {"type": "string"}, "description": "only these ids"},
            }
        }),
        handler: lookup_tool,
    }]
}

fn lookup_tool(ctx: &ToolContext, p: Value) -> BoxFuture<'_, Result<Value, PhaseError>> {
    Box::pin(async move {
        let p: LookupParams = params("catalog_lookup", p)?;
        let c = Catalog::from_db(&ctx.pool, ctx.data_version)
            .await
            .map_err(|e| db_err("catalog_lookup", e))?;
        Ok(lookup(&c, &p.kind, p.ids.as_deref()))
    })
}

/// The part of a catalog a lookup asks for (pure, for tests).
pub fn lookup(c: &Catalog, kind: &str, ids: Option<&[String]>) -> Value {
    let keep = |id: &str| ids.is_none_or(|ids| ids.iter().any(|x| x == id));
    let models: Vec<_> = c.models.iter().filter(|m| keep(&m.id)).collect();
    let gpus: Vec<_> = c.gpus.iter().filter(|g| keep(&g.id)).collect();
    let mut out = json!({"version": c.version});
    if kind != "gpus" {
        out["models"] = json!(models);
    }
    if kind != "models" {
        out["gpus"] = json!(gpus);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_narrows_by_kind_and_id() {
        let c = Catalog::embedded();
        let v = lookup(c, "models", Some(&["gpt-4o".to_string()]));
        assert_eq!(v["models"].as_array().map(Vec::len), Some(1));
        assert!(v.get("gpus").is_none());
        assert_eq!(v["models"][0]["source"], "OpenAI API pricing page");
        let all = lookup(c, "all", None);
        assert_eq!(all["gpus"].as_array().map(Vec::len), Some(c.gpus.len()));
    }
}
