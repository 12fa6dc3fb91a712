//! Telemetry tools: workload metrics, cost breakdown by model, and per-model
//! performance (including the output-token cap at the observed p95). All
//! figures are plain SQL aggregates over the run's tenant's `llm_requests`
//! rows in the window, returned unrounded so anyone can reproduce them.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::{db_err, params, Tool, ToolContext};
use crate::{catalog::Catalog, error::PhaseError};

/// The rows of a workload's window: the last `$3` days before its newest
/// request (inclusive), for tenant `$1` and workload `$2`.
pub const WINDOW: &str = "WITH bounds AS (SELECT max(ts) AS hi FROM llm_requests WHERE tenant = $1 AND workload_id = $2), \
     w AS (SELECT r.* FROM llm_requests r, bounds WHERE r.tenant = $1 AND r.workload_id = $2 \
           AND r.ts >= bounds.hi - make_interval(days => $3))";

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

#[derive(sqlx::FromRow)]
struct MetricsRow {
    n: i64,
    errors: i64,
    first_ts: Option<chrono::DateTime<chrono::Utc>>,
    last_ts: Option<chrono::DateTime<chrono::Utc>>,
    span_s: Option<f64>,
    clock_hours: Option<f64>,
    in_sum: i64,
    out_sum: i64,
    in_avg: Option<f64>,
    in_p50: Option<f64>,
    in_p95: Option<f64>,
    in_max: Option<i32>,
    out_avg: Option<f64>,
    out_p50: Option<f64>,
    out_p95: Option<f64>,
    out_max: Option<i32>,
    lat_n: i64,
    lat_p50: Option<f64>,
    lat_p95: Option<f64>,
    lat_p99: Option<f64>,
    ttft_n: i64,
    ttft_p95: Option<f64>,
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
) -> Result<Value, sqlx::Error> {
    let r: MetricsRow = sqlx::query_as(&format!(
        "{WINDOW} SELECT count(*) AS n, count(*) FILTER (WHERE status <> 'ok') AS errors, \
           min(ts) AS first_ts, max(ts) AS last_ts, \
           extract(epoch FROM max(ts) - min(ts))::float8 AS span_s, \
           (extract(epoch FROM date_trunc('hour', max(ts)) - date_trunc('hour', min(ts))) / 3600 + 1)::float8 AS clock_hours, \
           coalesce(sum(input_tokens), 0)::int8 AS in_sum, coalesce(sum(output_tokens), 0)::int8 AS out_sum, \
           avg(input_tokens)::float8 AS in_avg, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY input_tokens) AS in_p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY input_tokens) AS in_p95, max(input_tokens) AS in_max, \
           avg(output_tokens)::float8 AS out_avg, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY output_tokens) AS out_p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY output_tokens) AS out_p95, max(output_tokens) AS out_max, \
           count(latency_ms) AS lat_n, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS lat_p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS lat_p95, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS lat_p99, \
           count(ttft_ms) AS ttft_n, percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS ttft_p95 \
         FROM w"
    ))
    .bind(tenant)
    .bind(workload)
    .bind(days)
    .fetch_one(pool)
    .await?;
    let hourly: Vec<(chrono::DateTime<chrono::Utc>, i64, i64)> = sqlx::query_as(&format!(
        "{WINDOW} SELECT date_trunc('hour', ts) AS hour, count(*), \
           coalesce(sum(input_tokens + output_tokens), 0)::int8 FROM w GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
    ))
    .bind(tenant)
    .bind(workload)
    .bind(days)
    .fetch_all(pool)
    .await?;
    let peak_tokens: Option<i64> = sqlx::query_scalar(&format!(
        "{WINDOW} SELECT max(t)::int8 FROM (SELECT sum(input_tokens + output_tokens) AS t FROM w GROUP BY date_trunc('hour', ts)) h"
    ))
    .bind(tenant)
    .bind(workload)
    .bind(days)
    .fetch_one(pool)
    .await?;
    let by_hour: Vec<(i32, i64)> = sqlx::query_as(&format!(
        "{WINDOW} SELECT extract(hour FROM ts AT TIME ZONE 'UTC')::int4, count(*) FROM w GROUP BY 1 ORDER BY 1"
    ))
    .bind(tenant)
    .bind(workload)
    .bind(days)
    .fetch_all(pool)
    .await?;
    let mut hour_of_day = [0i64; 24];
    for (h, n) in by_hour {
        if let Some(slot) = usize::try_from(h).ok().and_then(|h| hour_of_day.get_mut(h)) {
            *slot = n;
        }
    }
    let hours = r.clock_hours.unwrap_or(0.0);
    let avg_per_hour = (hours > 0.0).then(|| r.n as f64 / hours);
    let peak = hourly.first();
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
            "peak_per_hour": peak.map(|p| p.1),
            "peak_hour": peak.map(|p| p.0),
            "peak_to_average": match (avg_per_hour, peak) { (Some(a), Some(p)) if a > 0.0 => Some(p.1 as f64 / a), _ => None },
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
) -> Result<Value, sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64, Option<f64>, i64)> = sqlx::query_as(&format!(
        "{WINDOW} SELECT model, count(*), coalesce(sum(input_tokens), 0)::int8, coalesce(sum(output_tokens), 0)::int8, \
           sum(cost_usd), count(cost_usd) FROM w GROUP BY model ORDER BY model"
    ))
    .bind(tenant)
    .bind(workload)
    .bind(days)
    .fetch_all(pool)
    .await?;
    let models: Vec<Value> = rows
        .into_iter()
        .map(|(model, n, input, output, recorded, with_cost)| {
            let price = catalog.model(&model);
            let list = price.map(|p| p.cost(input as f64, output as f64));
            let (cost, basis) = match (recorded, list) {
                (Some(c), _) if with_cost == n => (Some(c), "recorded"),
                (_, Some(c)) => (Some(c), "catalog"),
                _ => (None, "unknown"),
            };
            json!({
                "model": model, "requests": n, "input_tokens": input, "output_tokens": output,
                "recorded_cost_usd": recorded, "list_cost_usd": list,
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

#[derive(sqlx::FromRow)]
struct PerfRow {
    model: String,
    n: i64,
    errors: i64,
    lat_p50: Option<f64>,
    lat_p95: Option<f64>,
    lat_p99: Option<f64>,
    ttft_p95: Option<f64>,
    out_avg: Option<f64>,
    cap: Option<i64>,
    above: i64,
    n_above: i64,
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
) -> Result<Value, sqlx::Error> {
    let rows: Vec<PerfRow> = sqlx::query_as(&format!(
        "{WINDOW}, caps AS (SELECT model, (percentile_disc(0.95) WITHIN GROUP (ORDER BY output_tokens))::int8 AS cap \
           FROM w GROUP BY model) \
         SELECT w.model, count(*) AS n, count(*) FILTER (WHERE status <> 'ok') AS errors, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS lat_p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS lat_p95, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS lat_p99, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS ttft_p95, \
           avg(output_tokens)::float8 AS out_avg, caps.cap, \
           coalesce(sum(greatest(w.output_tokens - caps.cap, 0)), 0)::int8 AS above, \
           count(*) FILTER (WHERE w.output_tokens > caps.cap) AS n_above \
         FROM w JOIN caps USING (model) GROUP BY w.model, caps.cap ORDER BY w.model"
    ))
    .bind(tenant)
    .bind(workload)
    .bind(days)
    .fetch_all(pool)
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
