//! Telemetry tools: workload metrics, cost breakdown by model, and per-model
//! performance (including the output-token cap at the observed p95). All
//! figures are plain SQL aggregates over the run's tenant's `llm_requests`
//! rows in the window (read by [`crate::store::telemetry`]), returned
//! unrounded so anyone can reproduce them.
//!
//! The workload `netra-llm` is netra's own model calls, read from the call
//! ledger (not copied): each call that was made (a reuse is none) is a
//! request with its model, tokens, latency and cost at its time; a failed
//! call has status `error` and costs nothing. Its results are not memoized
//! ([`super::reads_ledger`]).

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::{db_err, params, Tool, ToolContext};
use crate::{
    catalog::Catalog,
    error::PhaseError,
    store::telemetry::{self as stored, Window},
};

/// Parameters of the workload tools.
#[derive(Debug, Deserialize)]
pub struct WorkloadParams {
    /// The workload.
    pub workload_id: String,
    /// Window length in days, ending at the newest request.
    pub days: i32,
}

fn workload_schema(extra: Value) -> Value {
    let mut props = json!({
        "workload_id": {"type": "string", "description": "workload id"},
        "days": {"type": "integer", "minimum": 1, "maximum": 3650, "description": "window in days, ending at the newest request"},
    });
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    json!({"type": "object", "additionalProperties": false, "required": ["workload_id", "days"], "properties": props})
}

/// The tools of this module.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "workload_metrics",
            description: "Volume, time span, token distributions, latency percentiles, error rate and the hourly request rate (peak-to-average) of a workload",
            parameters: workload_schema(json!({})),
            handler: metrics_tool,
        },
        Tool {
            name: "cost_breakdown",
            description: "Requests, tokens and cost per model of a workload (recorded cost when every row has one, else catalog list price)",
            parameters: workload_schema(json!({})),
            handler: cost_tool,
        },
        Tool {
            name: "performance",
            description: "Per-model latency percentiles, time to first token, error rate, and the output tokens above a cap at the observed p95 of output tokens",
            parameters: workload_schema(json!({})),
            handler: performance_tool,
        },
    ]
}

fn metrics_tool(ctx: &ToolContext, p: Value) -> BoxFuture<'_, Result<Value, PhaseError>> {
    Box::pin(async move {
        let p: WorkloadParams = params("workload_metrics", p)?;
        workload_metrics(&ctx.pool, &ctx.tenant, &p.workload_id, p.days)
            .await
            .map_err(|e| db_err("workload_metrics", e))
    })
}

fn cost_tool(ctx: &ToolContext, p: Value) -> BoxFuture<'_, Result<Value, PhaseError>> {
    Box::pin(async move {
        let p: WorkloadParams = params("cost_breakdown", p)?;
        let catalog = Catalog::from_db(&ctx.pool, ctx.data_version)
            .await
            .map_err(|e| db_err("cost_breakdown", e))?;
        cost_breakdown(&ctx.pool, &ctx.tenant, &p.workload_id, p.days, &catalog)
            .await
            .map_err(|e| db_err("cost_breakdown", e))
    })
}

fn performance_tool(ctx: &ToolContext, p: Value) -> BoxFuture<'_, Result<Value, PhaseError>> {
    Box::pin(async move {
        let p: WorkloadParams = params("performance", p)?;
        performance(&ctx.pool, &ctx.tenant, &p.workload_id, p.days)
            .await
            .map_err(|e| db_err("performance", e))
    })
}

/// Volume, span, token distributions, latency percentiles, error rate and
/// hourly rate of a workload's window. Percentiles are `percentile_cont`;
/// the hourly average divides by every clock hour from the first to the
/// last request (inclusive), so idle hours count as zero.
pub async fn workload_metrics(
    pool: &PgPool,
    tenant: &str,
    workload: &str,
    days: i32,
) -> Result<Value, crate::store::Error> {
    let w = Window {
        tenant,
        workload,
        days,
    };
    let r = stored::window_totals(pool, w).await?;
    let peak = stored::peak_hour(pool, w).await?;
    let peak_tokens = stored::peak_tokens_per_hour(pool, w).await?;
    let by_hour = stored::requests_by_hour_of_day(pool, w).await?;
    let mut hour_of_day = [0i64; 24];
    for h in by_hour {
        if let Some(slot) = usize::try_from(h.hour)
            .ok()
            .and_then(|h| hour_of_day.get_mut(h))
        {
            *slot = h.requests;
        }
    }
    let hours = r.clock_hours.unwrap_or(0.0);
    let avg_per_hour = (hours > 0.0).then(|| r.n as f64 / hours);
    let tokens = r.in_sum + r.out_sum;
    Ok(json!({
        "workload_id": workload,
        "window_days": days,
        "requests": r.n,
        "errors": r.errors,
        "error_rate": if r.n > 0 { r.errors as f64 / r.n as f64 } else { 0.0 },
        "first_ts": r.first_ts,
        "last_ts": r.last_ts,
        "span_hours": r.span_s.map(|s| s / 3600.0),
        "tokens": {
            "input_total": r.in_sum, "output_total": r.out_sum, "total": tokens,
            "input": {"avg": r.in_avg, "p50": r.in_p50, "p95": r.in_p95, "max": r.in_max},
            "output": {"avg": r.out_avg, "p50": r.out_p50, "p95": r.out_p95, "max": r.out_max},
        },
        "latency_ms": {"samples": r.lat_n, "p50": r.lat_p50, "p95": r.lat_p95, "p99": r.lat_p99},
        "ttft_ms": {"samples": r.ttft_n, "p95": r.ttft_p95},
        "rate": {
            "clock_hours": hours,
            "avg_per_hour": avg_per_hour,
            "peak_per_hour": peak.as_ref().map(|p| p.requests),
            "peak_hour": peak.as_ref().map(|p| p.hour),
            "peak_to_average": match (avg_per_hour, &peak) { (Some(a), Some(p)) if a > 0.0 => Some(p.requests as f64 / a), _ => None },
            "avg_tokens_per_hour": (hours > 0.0).then(|| tokens as f64 / hours),
            "peak_tokens_per_hour": peak_tokens,
            "by_hour_of_day": hour_of_day,
        },
    }))
}

/// Per-model requests, tokens and cost. `cost_usd` is the recorded cost when
/// every row of the model has one, else the catalog list price of its token
/// sums (`cost_basis` says which; `unknown` when neither exists).
pub async fn cost_breakdown(
    pool: &PgPool,
    tenant: &str,
    workload: &str,
    days: i32,
    catalog: &Catalog,
) -> Result<Value, crate::store::Error> {
    let usage = stored::usage_by_model(
        pool,
        Window {
            tenant,
            workload,
            days,
        },
    )
    .await?;
    let models: Vec<Value> = usage
        .into_iter()
        .map(|u| {
            let price = catalog.model(&u.model);
            let list = price.map(|p| p.cost(u.input_tokens as f64, u.output_tokens as f64));
            let (cost, basis) = match (u.recorded_cost_usd, list) {
                (Some(c), _) if u.with_cost == u.requests => (Some(c), "recorded"),
                (_, Some(c)) => (Some(c), "catalog"),
                _ => (None, "unknown"),
            };
            json!({
                "model": u.model, "requests": u.requests, "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "recorded_cost_usd": u.recorded_cost_usd, "list_cost_usd": list,
                "cost_usd": cost, "cost_basis": basis,
                "price": price.map(|p| json!({"input_per_mtok": p.input_per_mtok, "output_per_mtok": p.output_per_mtok, "source": p.source, "as_of": p.as_of})),
            })
        })
        .collect();
    let total: f64 = models.iter().filter_map(|m| m["cost_usd"].as_f64()).sum();
    Ok(
        json!({"workload_id": workload, "models": models, "total_cost_usd": total, "catalog_version": catalog.version}),
    )
}

/// Per-model performance and the output-token cap: `output_cap` is the
/// observed p95 of output tokens (`percentile_disc`, an actual value), and
/// `output_tokens_above_cap` is `sum(max(output_tokens - cap, 0))`, the
/// tokens a `max_tokens` limit at that cap would not generate.
pub async fn performance(
    pool: &PgPool,
    tenant: &str,
    workload: &str,
    days: i32,
) -> Result<Value, crate::store::Error> {
    let rows = stored::performance_by_model(
        pool,
        Window {
            tenant,
            workload,
            days,
        },
    )
    .await?;
    let models: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "model": r.model, "requests": r.n, "errors": r.errors,
                "error_rate": if r.n > 0 { r.errors as f64 / r.n as f64 } else { 0.0 },
                "latency_ms": {"p50": r.lat_p50, "p95": r.lat_p95, "p99": r.lat_p99},
                "ttft_p95_ms": r.ttft_p95,
                "avg_output_tokens": r.out_avg,
                "output_cap": r.cap,
                "output_tokens_above_cap": r.above,
                "requests_above_cap": r.n_above,
            })
        })
        .collect();
    Ok(json!({"workload_id": workload, "models": models}))
}
