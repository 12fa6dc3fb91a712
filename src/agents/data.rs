//! Data: runs the telemetry tools concurrently for each workload the request
//! names, then rates data sufficiency (`sufficient`, `partial` with caveats,
//! or `insufficient` with exactly what is missing).

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::{
    agents::{catalog::Catalog, round2, upstream},
    error::PhaseError,
    pipeline::agent::{Agent, AgentContext, PhaseInput},
};

/// The data agent.
pub struct Data;

/// Fewer requests than this make an analysis `partial`.
pub const MIN_REQUESTS: i64 = 100;

fn db_err(e: sqlx::Error) -> PhaseError {
    if crate::store::is_outage(&e) {
        PhaseError::transient(format!(
            "telemetry query failed: database unavailable ({e})"
        ))
    } else {
        PhaseError::permanent(format!("telemetry query failed: {e}"))
    }
}

const WINDOW: &str = "WITH bounds AS (SELECT max(ts) AS hi FROM llm_requests WHERE tenant = $1 AND workload_id = $2), \
     w AS (SELECT r.* FROM llm_requests r, bounds WHERE r.tenant = $1 AND r.workload_id = $2 \
           AND r.ts > bounds.hi - make_interval(days => $3))";

#[derive(sqlx::FromRow)]
struct SummaryRow {
    n: i64,
    span_s: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    ttft95: Option<f64>,
    errors: i64,
    with_latency: i64,
    avg_in: Option<f64>,
    avg_out: Option<f64>,
    p95_out: Option<f64>,
    tokens: i64,
}

/// Volume, time span, latency percentiles and error rate of a workload's window.
pub async fn workload_summary(
    pool: &PgPool,
    tenant: &str,
    workload: &str,
    days: i32,
) -> Result<Value, sqlx::Error> {
    let row: SummaryRow = sqlx::query_as(&format!(
        "{WINDOW} SELECT count(*) AS n, \
           extract(epoch FROM max(ts) - min(ts))::float8 AS span_s, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS ttft95, \
           count(*) FILTER (WHERE status <> 'ok') AS errors, count(latency_ms) AS with_latency, \
           avg(input_tokens)::float8 AS avg_in, avg(output_tokens)::float8 AS avg_out, \
           percentile_cont(0.95) WITHIN GROUP (ORDER BY output_tokens) AS p95_out, \
           coalesce(sum(input_tokens + output_tokens), 0)::int8 AS tokens \
         FROM w"
    ))
    .bind(tenant)
    .bind(workload)
    .bind(days)
    .fetch_one(pool)
    .await?;
    let SummaryRow {
        n,
        span_s,
        p50,
        p95,
        p99,
        ttft95,
        errors,
        with_latency,
        avg_in,
        avg_out,
        p95_out,
        tokens,
    } = row;
    Ok(json!({
        "requests": n,
        "span_hours": span_s.map(|s| round2(s / 3600.0)),
        "latency_ms": {"p50": p50.map(round2), "p95": p95.map(round2), "p99": p99.map(round2), "samples": with_latency},
        "ttft_p95_ms": ttft95.map(round2),
        "error_rate": if n > 0 { round2(errors as f64 / n as f64 * 100.0) / 100.0 } else { 0.0 },
        "errors": errors,
        "avg_input_tokens": avg_in.map(round2),
        "avg_output_tokens": avg_out.map(round2),
        "p95_output_tokens": p95_out.map(round2),
        "total_tokens": tokens,
    }))
}

/// Per-model request counts, tokens and cost (recorded cost, else catalog price).
pub async fn cost_by_model(
    pool: &PgPool,
    tenant: &str,
    workload: &str,
    days: i32,
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
    let catalog = Catalog::embedded();
    let models: Vec<Value> = rows
        .into_iter()
        .map(|(model, n, input, output, recorded, with_cost)| {
            let priced = catalog.model(&model).map(|p| p.cost(input as f64, output as f64));
            let (cost, basis) = if with_cost == n && recorded.is_some() {
                (recorded, "recorded")
            } else {
                (priced, "catalog")
            };
            json!({
                "model": model, "requests": n, "input_tokens": input, "output_tokens": output,
                "cost_usd": cost.map(round2), "cost_basis": if cost.is_some() { basis } else { "unknown" },
            })
        })
        .collect();
    Ok(Value::Array(models))
}

/// Requests per hour: average, peak and peak-to-average ratio (burstiness).
pub async fn hourly_rate(
    pool: &PgPool,
    tenant: &str,
    workload: &str,
    days: i32,
) -> Result<Value, sqlx::Error> {
    let row: (Option<f64>, Option<i64>, i64) = sqlx::query_as(&format!(
        "{WINDOW}, h AS (SELECT date_trunc('hour', ts) AS hour, count(*) AS n FROM w GROUP BY 1) \
         SELECT avg(n)::float8, max(n), count(*) FROM h"
    ))
    .bind(tenant)
    .bind(workload)
    .bind(days)
    .fetch_one(pool)
    .await?;
    let (avg, peak, hours) = row;
    Ok(json!({
        "avg_per_hour": avg.map(round2),
        "peak_per_hour": peak,
        "active_hours": hours,
        "peak_to_average": match (avg, peak) { (Some(a), Some(p)) if a > 0.0 => Some(round2(p as f64 / a)), _ => None },
    }))
}

impl Agent for Data {
    fn phase(&self) -> &'static str {
        "data"
    }

    fn run<'a>(
        &'a self,
        ctx: &'a AgentContext,
        input: &'a PhaseInput,
    ) -> BoxFuture<'a, Result<Value, PhaseError>> {
        Box::pin(async move {
            let triage = upstream(input, "triage")?;
            let workloads: Vec<String> = triage["workload_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let days = triage["time_range_days"]
                .as_i64()
                .unwrap_or(30)
                .clamp(1, 3650) as i32;
            if workloads.is_empty() {
                return Ok(json!({
                    "sufficiency": "insufficient",
                    "missing": ["a workload id: name the workload (\"workload <id>\") or pass workload_id"],
                    "caveats": [], "workloads": [],
                }));
            }
            let mut results = Vec::new();
            let mut missing = Vec::new();
            let mut caveats = Vec::new();
            for w in &workloads {
                let (summary, models, rate) = tokio::try_join!(
                    workload_summary(&ctx.pool, &input.tenant, w, days),
                    cost_by_model(&ctx.pool, &input.tenant, w, days),
                    hourly_rate(&ctx.pool, &input.tenant, w, days),
                )
                .map_err(db_err)?;
                let n = summary["requests"].as_i64().unwrap_or(0);
                if n == 0 {
                    missing.push(format!(
                        "request telemetry for workload {w} (ingest it with `netra ingest --workload {w} FILE`, then reply on this thread)"
                    ));
                    continue;
                }
                if n < MIN_REQUESTS {
                    caveats.push(format!(
                        "workload {w} has only {n} requests in the window; figures are indicative"
                    ));
                }
                if summary["latency_ms"]["samples"].as_i64().unwrap_or(0) == 0 {
                    caveats.push(format!(
                        "workload {w} has no latency data; latency impact cannot be checked"
                    ));
                }
                if models
                    .as_array()
                    .is_some_and(|m| m.iter().any(|x| x["cost_basis"] == "unknown"))
                {
                    caveats.push(format!(
                        "workload {w} uses a model missing from the catalog; its cost is unknown"
                    ));
                }
                results.push(
                    json!({"workload_id": w, "summary": summary, "models": models, "hourly": rate}),
                );
            }
            let sufficiency = if !missing.is_empty() {
                "insufficient"
            } else if !caveats.is_empty() {
                "partial"
            } else {
                "sufficient"
            };
            Ok(json!({
                "sufficiency": sufficiency,
                "missing": missing,
                "caveats": caveats,
                "window_days": days,
                "workloads": results,
                "catalog_version": Catalog::embedded().version,
            }))
        })
    }
}
