//! Telemetry tools: workload metrics, cost breakdown by model, and per-model
//! performance (including the output-token cap at the observed p95). All
//! figures are plain SQL aggregates over the run's tenant's `llm_requests`
//! rows in the window (read by [`crate::store::telemetry`]), returned
//! unrounded so anyone can reproduce them. The window's length is the
//! data's span (last request − first, no floor); rates divide by it, and
//! peaks are counted per clock hour and per clock minute (UTC).
//!
//! The workload `netra-llm` is netra's own model calls, read from the call
//! ledger (not copied): each call that was made (a reuse is none) is a
//! request with its model, tokens, latency and cost at its time; a failed
//! call has status `error` and costs nothing. Its results are not memoized
//! ([`super::reads_ledger`]).

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use super::{db_err, params, Tool, ToolContext};
use crate::{
    catalog::Catalog,
    error::PhaseError,
    store::telemetry::{self as stored, Window, WindowTotals},
};

/// Parameters of the workload tools.
#[derive(Debug, Deserialize)]
pub struct WorkloadParams {
    /// The workload.
    pub workload_id: String,
    /// Window length in days, ending at the newest request.
    pub days: i32,
    /// Window length in hours, ending at the newest request; when given it
    /// replaces `days` (a stated window such as "the last 2 hours").
    #[serde(default)]
    pub hours: Option<f64>,
}

impl WorkloadParams {
    /// The window these parameters name, for `tenant`.
    fn window<'a>(&'a self, tenant: &'a str) -> Window<'a> {
        Window {
            tenant,
            workload: &self.workload_id,
            hours: self.hours.unwrap_or(f64::from(self.days) * 24.0),
        }
    }
}

fn workload_schema(extra: Value) -> Value {
    let mut props = json!({
        "workload_id": {"type": "string", "description": "workload id"},
        "days": {"type": "integer", "minimum": 1, "maximum": 3650, "description": "window in days, ending at the newest request"},
        "hours": {"type": "number", "minimum": 0.01, "maximum": 87600, "description": "window in hours, ending at the newest request (replaces days)"},
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
            description: "Volume, time span, token distributions, latency percentiles, error rate and the request rate over the window's length, with the peak per clock hour and per clock minute (peak-to-average)",
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
        workload_metrics(&ctx.pool, p.window(&ctx.tenant), p.days)
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
        cost_breakdown(&ctx.pool, p.window(&ctx.tenant), &catalog)
            .await
            .map_err(|e| db_err("cost_breakdown", e))
    })
}

fn performance_tool(ctx: &ToolContext, p: Value) -> BoxFuture<'_, Result<Value, PhaseError>> {
    Box::pin(async move {
        let p: WorkloadParams = params("performance", p)?;
        performance(&ctx.pool, p.window(&ctx.tenant))
            .await
            .map_err(|e| db_err("performance", e))
    })
}

/// Seconds in a day: a window shorter than this extrapolates to a month.
const DAY_S: i64 = 86_400;

/// True when the data covers less than a day: the clock minutes from the
/// first request's to the last's, both whole, are fewer than 1,440. So
/// 00:00:00 to 23:59:55 is a day (its last minute holds requests), and
/// 00:00 to 23:58:59 is not.
pub fn less_than_a_day(first: DateTime<Utc>, last: DateTime<Utc>) -> bool {
    let minute = |t: DateTime<Utc>| t.timestamp().div_euclid(60);
    (minute(last) - minute(first) + 1) * 60 < DAY_S
}

/// A length of time in words: seconds below two minutes, whole minutes
/// (not rounded up: 23:59:55 is "23 h 59 min") below two hours, hours and
/// minutes below three days, then days.
pub fn duration_words(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 120.0 {
        format!("{s:.0} seconds")
    } else if s < 7200.0 {
        format!("{:.0} minutes", (s / 60.0).floor())
    } else if s < 3.0 * 86_400.0 {
        let m = (s / 60.0).floor() as i64;
        format!("{} h {:02} min", m / 60, m % 60)
    } else {
        format!("{:.1} days", s / 86_400.0)
    }
}

/// The data's actual span, named as it is: "the data's 58 minutes,
/// 10:02–11:00 UTC on 2023-11-16" (the dates of both ends when they differ).
pub fn describe_span(first: DateTime<Utc>, last: DateTime<Utc>) -> String {
    let len = duration_words((last - first).num_milliseconds() as f64 / 1000.0);
    if first.date_naive() == last.date_naive() {
        format!(
            "the data's {len}, {}–{} UTC on {}",
            first.format("%H:%M"),
            last.format("%H:%M"),
            first.format("%Y-%m-%d")
        )
    } else {
        format!(
            "the data's {len}, {} – {} UTC",
            first.format("%Y-%m-%d %H:%M"),
            last.format("%Y-%m-%d %H:%M")
        )
    }
}

/// `count / per`, when `per` is positive.
fn ratio(count: f64, per: f64) -> Option<f64> {
    (per > 0.0).then(|| count / per)
}

/// The `rate` object: averages over the window's length (last − first
/// request), the busiest clock hour and clock minute, and each peak over
/// its average. A zero-length window (one instant) has no average.
fn rate(r: &WindowTotals, peaks: &[stored::Peak], hour_of_day: [i64; 24]) -> Value {
    let hours = r.span_s.unwrap_or(0.0) / 3600.0;
    let n = r.n as f64;
    let tokens = (r.in_sum + r.out_sum) as f64;
    let (avg_h, avg_m) = (ratio(n, hours), ratio(n, hours * 60.0));
    let peak = |unit: &str| peaks.iter().find(|p| p.unit == unit);
    let (h, m) = (peak("hour"), peak("minute"));
    let over = |p: Option<&stored::Peak>, avg: Option<f64>| {
        p.zip(avg).and_then(|(p, a)| ratio(p.requests as f64, a))
    };
    json!({
        "window_hours": hours,
        "clock_hours": r.clock_hours.unwrap_or(0.0),
        "avg_per_hour": avg_h,
        "avg_per_minute": avg_m,
        "peak_per_hour": h.map(|p| p.requests),
        "peak_hour": h.map(|p| p.start),
        "peak_to_average": over(h, avg_h),
        "peak_per_minute": m.map(|p| p.requests),
        "peak_minute": m.map(|p| p.start),
        "peak_to_average_minute": over(m, avg_m),
        "avg_tokens_per_hour": ratio(tokens, hours),
        "peak_tokens_per_hour": h.map(|p| p.max_tokens),
        "peak_tokens_per_minute": m.map(|p| p.max_tokens),
        "by_hour_of_day": hour_of_day,
    })
}

/// Requests per hour of the day (UTC), every hour present.
fn hours_of_day(by_hour: Vec<stored::HourOfDay>) -> [i64; 24] {
    let mut hour_of_day = [0i64; 24];
    for h in by_hour {
        if let Some(slot) = usize::try_from(h.hour)
            .ok()
            .and_then(|h| hour_of_day.get_mut(h))
        {
            *slot = h.requests;
        }
    }
    hour_of_day
}

/// Volume, span, token distributions, latency percentiles, error rate and
/// request rate of a workload's window. Percentiles are `percentile_cont`.
/// The window's length is the data's span, last request − first, with no
/// floor: rates divide by it, and `less_than_a_day` says the monthly
/// figures extrapolate less than a day. `window_days` echoes the request;
/// `window_read_hours` is the window read (the stated hours, or days × 24).
pub async fn workload_metrics(
    pool: &PgPool,
    w: Window<'_>,
    days: i32,
) -> Result<Value, crate::store::Error> {
    let r = stored::window_totals(pool, w).await?;
    let peaks = stored::peaks(pool, w).await?;
    let by_hour = hours_of_day(stored::requests_by_hour_of_day(pool, w).await?);
    let span = r.first_ts.zip(r.last_ts);
    let tokens = r.in_sum + r.out_sum;
    Ok(json!({
        "workload_id": w.workload,
        "window_days": days,
        "window_read_hours": w.hours,
        "requests": r.n,
        "errors": r.errors,
        "error_rate": if r.n > 0 { r.errors as f64 / r.n as f64 } else { 0.0 },
        "first_ts": r.first_ts,
        "last_ts": r.last_ts,
        "span_hours": r.span_s.map(|s| s / 3600.0),
        "span": span.map(|(f, l)| describe_span(f, l)),
        "less_than_a_day": span.is_none_or(|(f, l)| less_than_a_day(f, l)),
        "tokens": {
            "input_total": r.in_sum, "output_total": r.out_sum, "total": tokens,
            "input": {"avg": r.in_avg, "p50": r.in_p50, "p95": r.in_p95, "max": r.in_max},
            "output": {"avg": r.out_avg, "p50": r.out_p50, "p95": r.out_p95, "max": r.out_max},
        },
        "latency_ms": {"samples": r.lat_n, "p50": r.lat_p50, "p95": r.lat_p95, "p99": r.lat_p99},
        "ttft_ms": {"samples": r.ttft_n, "p95": r.ttft_p95},
        "rate": rate(&r, &peaks, by_hour),
    }))
}

/// Per-model requests, tokens and cost. `cost_usd` is the recorded cost when
/// every row of the model has one, else the catalog list price of its token
/// sums (`cost_basis` says which; `unknown` when neither exists).
pub async fn cost_breakdown(
    pool: &PgPool,
    w: Window<'_>,
    catalog: &Catalog,
) -> Result<Value, crate::store::Error> {
    let workload = w.workload;
    let usage = stored::usage_by_model(pool, w).await?;
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
pub async fn performance(pool: &PgPool, w: Window<'_>) -> Result<Value, crate::store::Error> {
    let workload = w.workload;
    let rows = stored::performance_by_model(pool, w).await?;
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
