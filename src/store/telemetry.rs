//! Workloads and their LLM request telemetry: the writes of `netra ingest`
//! and the sample loader, and the window aggregates the telemetry tools
//! read (plain SQL aggregates, returned as rows; the tools shape them).
//! The aggregates also read netra's own model calls, as workload
//! `netra-llm` (see `window_query!`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::Error;

/// One LLM request of a workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    /// When the request arrived (UTC).
    pub ts: DateTime<Utc>,
    /// Model name.
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: i32,
    /// Completion tokens.
    pub output_tokens: i32,
    /// End-to-end latency in ms, when known.
    pub latency_ms: Option<f64>,
    /// Time to first token in ms, when known.
    pub ttft_ms: Option<f64>,
    /// `ok` or an error status.
    pub status: String,
    /// Cost in USD, when known.
    pub cost_usd: Option<f64>,
}

/// Creates the workload if it does not exist (on a pool or inside a
/// transaction, so an aborted ingest leaves no empty workload behind).
///
/// This, [`insert_keyed`] and [`analyze`] still answer [`sqlx::Error`]:
/// `netra ingest` (`src/ingest/`) runs them in a transaction of its own
/// and wraps sqlx's errors; they move to [`super::Error`] with it.
pub async fn ensure_workload<'e, E: sqlx::PgExecutor<'e>>(
    pool: E,
    tenant: &str,
    workload: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO workloads (tenant, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        tenant,
        workload,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Inserts a batch of requests without keys (generated samples, tests): see
/// [`insert_keyed`].
pub async fn insert_batch(
    conn: &mut sqlx::PgConnection,
    tenant: &str,
    workload: &str,
    rows: &[RequestRecord],
) -> Result<u64, sqlx::Error> {
    insert_keyed(conn, tenant, workload, rows, &vec![None; rows.len()]).await
}

/// Inserts a batch of requests in one statement (UNNEST of column arrays),
/// `keys[i]` the row key of `rows[i]` (migration 0012). A row whose key the
/// workload already has is skipped; a row without a key is always
/// inserted. Answers the rows inserted.
pub async fn insert_keyed(
    conn: &mut sqlx::PgConnection,
    tenant: &str,
    workload: &str,
    rows: &[RequestRecord],
    keys: &[Option<Vec<u8>>],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.ts).collect();
    let model: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    let input: Vec<i32> = rows.iter().map(|r| r.input_tokens).collect();
    let output: Vec<i32> = rows.iter().map(|r| r.output_tokens).collect();
    let latency: Vec<Option<f64>> = rows.iter().map(|r| r.latency_ms).collect();
    let ttft: Vec<Option<f64>> = rows.iter().map(|r| r.ttft_ms).collect();
    let status: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    let cost: Vec<Option<f64>> = rows.iter().map(|r| r.cost_usd).collect();
    // The nullable columns and the borrowed text are bound as they are
    // (`as`: sqlx checks arrays of `String` and `f64` otherwise).
    let res = sqlx::query!(
        "INSERT INTO llm_requests (tenant, workload_id, ts, model, input_tokens, output_tokens, latency_ms, \
         ttft_ms, status, cost_usd, row_key) \
         SELECT $1, $2, * FROM UNNEST($3::timestamptz[], $4::text[], $5::int[], $6::int[], \
         $7::float8[], $8::float8[], $9::text[], $10::float8[], $11::bytea[]) \
         ON CONFLICT (tenant, workload_id, row_key) DO NOTHING",
        tenant,
        workload,
        &ts,
        &model as &[&str],
        &input,
        &output,
        &latency as &[Option<f64>],
        &ttft as &[Option<f64>],
        &status as &[&str],
        &cost as &[Option<f64>],
        keys as &[Option<Vec<u8>>],
    )
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// How many requests a workload has.
pub async fn request_count(pool: &PgPool, tenant: &str, workload: &str) -> Result<i64, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM llm_requests WHERE tenant = $1 AND workload_id = $2"#,
        tenant,
        workload,
    )
    .fetch_one(pool)
    .await?)
}

/// Refreshes the planner statistics of the telemetry table after a bulk
/// load: until autovacuum gets to it, the agents' window queries plan as if
/// the table were empty and run tens of times slower (measured by `netra bench`).
pub async fn analyze(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!("ANALYZE llm_requests").execute(pool).await?;
    Ok(())
}

/// A compile-time checked `query_as!` (or, with `scalar`, `query_scalar!`)
/// over a workload's window: the statement starts with the CTE `w`, the
/// rows of the last `$3` seconds before the workload's newest request
/// (inclusive), for tenant `$1` and workload `$2`; `$rest` (a string
/// literal) reads `w`. Binds the [`Window`] `$w`.
///
/// With `$head, traffic, $tail`, `$rest` is `$head`, then the columns of the
/// requests' outcome and speed, written once here (`n`, `errors`,
/// `lat_p50`, `lat_p95`, `lat_p99`, `ttft_p95`, of the rows or of a group of
/// them), then `$tail`.
///
/// The rows are those of the view `telemetry_requests` (migration 0010):
/// the tenant's `llm_requests`, and its model calls as the requests of
/// workload [`super::ledger::WORKLOAD`] (`netra-llm`), read from the ledger
/// as it is when the statement runs.
macro_rules! window_query {
    (@run $mac:ident, ($($out:ty)?), $w:expr, $($rest:tt)+) => {
        sqlx::$mac!(
            $($out,)?
            "WITH bounds AS (SELECT max(ts) AS hi FROM telemetry_requests WHERE tenant = $1 AND workload_id = $2), \
             w AS (SELECT r.* FROM telemetry_requests r, bounds WHERE r.tenant = $1 AND r.workload_id = $2 \
             AND r.ts >= bounds.hi - make_interval(secs => $3)) "
                + $($rest)+,
            $w.tenant,
            $w.workload,
            $w.secs(),
        )
    };
    ($out:ty, $w:expr, $head:literal, traffic, $tail:literal) => {
        window_query!(
            @run query_as,
            ($out),
            $w,
            $head
                + r#"count(*) AS "n!", count(*) FILTER (WHERE status <> 'ok') AS "errors!",
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS lat_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS lat_p95,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS lat_p99,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms) AS ttft_p95"#
                + $tail
        )
    };
    (scalar, $w:expr, $rest:literal) => {
        window_query!(@run query_scalar, (), $w, $rest)
    };
    ($out:ty, $w:expr, $rest:literal) => {
        window_query!(@run query_as, ($out), $w, $rest)
    };
}

/// Which window an aggregate reads.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    /// The run's tenant: no aggregate reads another tenant's rows.
    pub tenant: &'a str,
    /// The workload.
    pub workload: &'a str,
    /// Window length in hours, ending at the workload's newest request.
    pub hours: f64,
}

impl Window<'_> {
    /// The window's length in seconds (what the statements bind).
    pub fn secs(&self) -> f64 {
        self.hours * 3600.0
    }
}

/// Volume, span, token and latency distributions of a window.
/// Percentiles are `percentile_cont`; `clock_hours` counts every clock hour
/// from the first to the last request (inclusive).
#[derive(Debug, Clone)]
pub struct WindowTotals {
    /// Requests.
    pub n: i64,
    /// Requests whose status is not `ok`.
    pub errors: i64,
    /// First request.
    pub first_ts: Option<DateTime<Utc>>,
    /// Last request.
    pub last_ts: Option<DateTime<Utc>>,
    /// Seconds from the first to the last request.
    pub span_s: Option<f64>,
    /// Clock hours from the first to the last request, both included.
    pub clock_hours: Option<f64>,
    /// Input tokens in all.
    pub in_sum: i64,
    /// Output tokens in all.
    pub out_sum: i64,
    /// Mean input tokens.
    pub in_avg: Option<f64>,
    /// Median input tokens.
    pub in_p50: Option<f64>,
    /// 95th percentile of input tokens.
    pub in_p95: Option<f64>,
    /// Largest input.
    pub in_max: Option<i32>,
    /// Mean output tokens.
    pub out_avg: Option<f64>,
    /// Median output tokens.
    pub out_p50: Option<f64>,
    /// 95th percentile of output tokens.
    pub out_p95: Option<f64>,
    /// Largest output.
    pub out_max: Option<i32>,
    /// Requests with a latency.
    pub lat_n: i64,
    /// Median latency, ms.
    pub lat_p50: Option<f64>,
    /// 95th percentile latency, ms.
    pub lat_p95: Option<f64>,
    /// 99th percentile latency, ms.
    pub lat_p99: Option<f64>,
    /// Requests with a time to first token.
    pub ttft_n: i64,
    /// 95th percentile time to first token, ms.
    pub ttft_p95: Option<f64>,
}

/// The totals of a window.
pub async fn window_totals(pool: &PgPool, w: Window<'_>) -> Result<WindowTotals, Error> {
    Ok(window_query!(
        WindowTotals,
        w,
        "SELECT ",
        traffic,
        r#",
           min(ts) AS first_ts, max(ts) AS last_ts,
           extract(epoch FROM max(ts) - min(ts))::float8 AS span_s,
           (extract(epoch FROM date_trunc('hour', max(ts)) - date_trunc('hour', min(ts))) / 3600 + 1)::float8 AS clock_hours,
           coalesce(sum(input_tokens), 0)::int8 AS "in_sum!", coalesce(sum(output_tokens), 0)::int8 AS "out_sum!",
           avg(input_tokens)::float8 AS in_avg,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY input_tokens) AS in_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY input_tokens) AS in_p95, max(input_tokens) AS in_max,
           avg(output_tokens)::float8 AS out_avg,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY output_tokens) AS out_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY output_tokens) AS out_p95, max(output_tokens) AS out_max,
           count(latency_ms) AS "lat_n!", count(ttft_ms) AS "ttft_n!"
         FROM w"#
    )
    .fetch_one(pool)
    .await?)
}

/// The busiest clock hour, or clock minute, of a window.
#[derive(Debug, Clone)]
pub struct Peak {
    /// `hour` or `minute`.
    pub unit: String,
    /// The start of the busiest one (the earliest of a tie).
    pub start: DateTime<Utc>,
    /// Requests in it.
    pub requests: i64,
    /// Input and output tokens in it.
    pub tokens: i64,
    /// The most tokens of any one of the unit (not always the busiest's).
    pub max_tokens: i64,
}

/// The busiest clock hour and the busiest clock minute of a window (by
/// requests, the earliest of a tie), with the most tokens of any hour or
/// minute; none when the window is empty.
pub async fn peaks(pool: &PgPool, w: Window<'_>) -> Result<Vec<Peak>, Error> {
    Ok(window_query!(
        Peak,
        w,
        r#", b AS (SELECT u.unit, date_trunc(u.unit, w.ts, 'UTC') AS start, count(*) AS requests,
             coalesce(sum(w.input_tokens + w.output_tokens), 0)::int8 AS tokens
           FROM w CROSS JOIN (VALUES ('hour'), ('minute')) AS u(unit) GROUP BY 1, 2)
         SELECT DISTINCT ON (unit) unit AS "unit!", start AS "start!", requests AS "requests!",
           tokens AS "tokens!", (max(tokens) OVER (PARTITION BY unit))::int8 AS "max_tokens!"
         FROM b ORDER BY unit, requests DESC, start"#
    )
    .fetch_all(pool)
    .await?)
}

/// Requests of one hour of the day (UTC).
#[derive(Debug, Clone)]
pub struct HourOfDay {
    /// 0 to 23.
    pub hour: i32,
    /// Requests in that hour, over every day of the window.
    pub requests: i64,
}

/// Requests by hour of the day (hours without any are left out).
pub async fn requests_by_hour_of_day(
    pool: &PgPool,
    w: Window<'_>,
) -> Result<Vec<HourOfDay>, Error> {
    Ok(window_query!(
        HourOfDay,
        w,
        r#"SELECT extract(hour FROM ts AT TIME ZONE 'UTC')::int4 AS "hour!", count(*) AS "requests!"
         FROM w GROUP BY 1 ORDER BY 1"#
    )
    .fetch_all(pool)
    .await?)
}

/// Requests, tokens and recorded cost of one model in a window.
#[derive(Debug, Clone)]
pub struct ModelUsage {
    /// Model.
    pub model: String,
    /// Requests.
    pub requests: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Sum of the recorded costs (rows without one left out).
    pub recorded_cost_usd: Option<f64>,
    /// Requests with a recorded cost: the recorded sum is the model's cost
    /// only when every request has one.
    pub with_cost: i64,
}

/// Usage per model of a window, by model.
pub async fn usage_by_model(pool: &PgPool, w: Window<'_>) -> Result<Vec<ModelUsage>, Error> {
    Ok(window_query!(
        ModelUsage,
        w,
        r#"SELECT model AS "model!", count(*) AS "requests!",
           coalesce(sum(input_tokens), 0)::int8 AS "input_tokens!",
           coalesce(sum(output_tokens), 0)::int8 AS "output_tokens!",
           sum(cost_usd) AS recorded_cost_usd, count(cost_usd) AS "with_cost!"
         FROM w GROUP BY model ORDER BY model"#
    )
    .fetch_all(pool)
    .await?)
}

/// Performance of one model in a window, and its output-token cap.
#[derive(Debug, Clone)]
pub struct ModelPerformance {
    /// Model.
    pub model: String,
    /// Requests.
    pub n: i64,
    /// Requests whose status is not `ok`.
    pub errors: i64,
    /// Median latency, ms.
    pub lat_p50: Option<f64>,
    /// 95th percentile latency, ms.
    pub lat_p95: Option<f64>,
    /// 99th percentile latency, ms.
    pub lat_p99: Option<f64>,
    /// 95th percentile time to first token, ms.
    pub ttft_p95: Option<f64>,
    /// Mean output tokens.
    pub out_avg: Option<f64>,
    /// The observed p95 of output tokens (`percentile_disc`: an actual value).
    pub cap: Option<i64>,
    /// `sum(max(output_tokens - cap, 0))`: what a limit at the cap would not generate.
    pub above: i64,
    /// Requests with more output tokens than the cap.
    pub n_above: i64,
}

/// Performance per model of a window, by model.
pub async fn performance_by_model(
    pool: &PgPool,
    w: Window<'_>,
) -> Result<Vec<ModelPerformance>, Error> {
    Ok(window_query!(
        ModelPerformance,
        w,
        r#", caps AS (SELECT model, (percentile_disc(0.95) WITHIN GROUP (ORDER BY output_tokens))::int8 AS cap
           FROM w GROUP BY model)
         SELECT w.model AS "model!", "#,
        traffic,
        r#",
           avg(output_tokens)::float8 AS out_avg, caps.cap,
           coalesce(sum(greatest(w.output_tokens - caps.cap, 0)), 0)::int8 AS "above!",
           count(*) FILTER (WHERE w.output_tokens > caps.cap) AS "n_above!"
         FROM w JOIN caps USING (model) GROUP BY w.model, caps.cap ORDER BY w.model"#
    )
    .fetch_all(pool)
    .await?)
}

/// The requests of one model at or under an input-size threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeShare {
    /// Model.
    pub model: String,
    /// The threshold: an observed input length (`percentile_disc`).
    pub threshold: i64,
    /// Which percentile of the model's input lengths it is (0.25, 0.5, 0.75).
    pub percentile: f64,
    /// Requests with `input_tokens <= threshold`.
    pub requests: i64,
    /// Their input tokens.
    pub input_tokens: i64,
    /// Their output tokens.
    pub output_tokens: i64,
}

/// Per model, the requests at or under the 25th, 50th and 75th percentile
/// of its input lengths (the share a size-based route would move).
pub async fn input_size_shares(pool: &PgPool, w: Window<'_>) -> Result<Vec<SizeShare>, Error> {
    Ok(window_query!(
        SizeShare,
        w,
        r#", q AS (SELECT model, unnest(ARRAY[0.25, 0.5, 0.75]::float8[]) AS pct,
             unnest(percentile_disc(ARRAY[0.25, 0.5, 0.75]::float8[]) WITHIN GROUP (ORDER BY input_tokens)) AS threshold
           FROM w GROUP BY model)
         SELECT q.model AS "model!", q.threshold::int8 AS "threshold!", q.pct AS "percentile!",
           count(*) AS "requests!", coalesce(sum(w.input_tokens), 0)::int8 AS "input_tokens!",
           coalesce(sum(w.output_tokens), 0)::int8 AS "output_tokens!"
         FROM q JOIN w ON w.model = q.model AND w.input_tokens <= q.threshold
         GROUP BY q.model, q.threshold, q.pct ORDER BY q.model, q.pct"#
    )
    .fetch_all(pool)
    .await?)
}

/// A workload's telemetry between two instants, both included: the span a
/// run's data phase read (its first and last request), pinned so that a
/// report drawn later shows the same requests.
#[derive(Debug, Clone, Copy)]
pub struct Span<'a> {
    /// The run's tenant: no other tenant's rows are read.
    pub tenant: &'a str,
    /// The workload.
    pub workload: &'a str,
    /// The first instant read.
    pub from: DateTime<Utc>,
    /// The last instant read.
    pub to: DateTime<Utc>,
}

/// Requests per bucket of `bucket_minutes` clock minutes (UTC, aligned to
/// the Unix epoch, so a bucket of 1 is a clock minute and one of 60 a clock
/// hour) in a span, oldest first: the start of each bucket that holds a
/// request, and its requests (buckets without any are left out). A
/// `bucket_minutes` below 1 reads as 1.
pub async fn requests_per_minute(
    pool: &PgPool,
    s: Span<'_>,
    bucket_minutes: i64,
) -> Result<Vec<(DateTime<Utc>, i64)>, Error> {
    let bucket_secs = bucket_minutes.max(1).saturating_mul(60);
    let rows = sqlx::query!(
        r#"SELECT (floor(extract(epoch FROM ts) / $5::int8) * $5::int8)::int8 AS "bucket!", count(*) AS "requests!"
         FROM telemetry_requests WHERE tenant = $1 AND workload_id = $2 AND ts >= $3 AND ts <= $4
         GROUP BY 1 ORDER BY 1"#,
        s.tenant,
        s.workload,
        s.from,
        s.to,
        bucket_secs,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| DateTime::from_timestamp(r.bucket, 0).map(|t| (t, r.requests)))
        .collect())
}
