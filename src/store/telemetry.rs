//! Workloads and their LLM request telemetry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

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
pub async fn ensure_workload<'e, E: sqlx::PgExecutor<'e>>(
    pool: E,
    tenant: &str,
    workload: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO workloads (tenant, id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .bind(workload)
        .execute(pool)
        .await?;
    Ok(())
}

/// Inserts a batch of requests in one statement (UNNEST of column arrays).
pub async fn insert_batch(
    conn: &mut sqlx::PgConnection,
    tenant: &str,
    workload: &str,
    rows: &[RequestRecord],
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
    let res = sqlx::query(
        "INSERT INTO llm_requests (tenant, workload_id, ts, model, input_tokens, output_tokens, latency_ms, \
         ttft_ms, status, cost_usd) \
         SELECT $1, $2, * FROM UNNEST($3::timestamptz[], $4::text[], $5::int[], $6::int[], \
         $7::float8[], $8::float8[], $9::text[], $10::float8[])",
    )
    .bind(tenant)
    .bind(workload)
    .bind(&ts)
    .bind(&model)
    .bind(&input)
    .bind(&output)
    .bind(&latency)
    .bind(&ttft)
    .bind(&status)
    .bind(&cost)
    .execute(conn)
    .await?;
    Ok(res.rows_affected())
}

/// How many requests a workload has.
pub async fn request_count(
    pool: &PgPool,
    tenant: &str,
    workload: &str,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM llm_requests WHERE tenant = $1 AND workload_id = $2")
            .bind(tenant)
            .bind(workload)
            .fetch_one(pool)
            .await?;
    Ok(n)
}

/// Refreshes the planner statistics of the telemetry table after a bulk
/// load: until autovacuum gets to it, the agents' window queries plan as if
/// the table were empty and run tens of times slower (measured by `netra bench`).
pub async fn analyze(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("ANALYZE llm_requests").execute(pool).await?;
    Ok(())
}
