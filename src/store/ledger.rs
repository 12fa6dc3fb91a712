//! The call ledger (`model_calls`): one row per language-model call, and one
//! per reuse of a recorded answer. The store only writes and reads rows; the
//! model client decides when to look up and what to record.

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::Error;

/// Where a call was made: the phase attempt it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallScope {
    /// The run's tenant.
    pub tenant: String,
    /// The run.
    pub run_id: Uuid,
    /// The phase.
    pub phase: String,
    /// The attempt of the phase.
    pub attempt: i32,
    /// The replay generation.
    pub replay: i32,
}

/// One row to write.
#[derive(Debug, Clone)]
pub struct NewCall<'a> {
    /// The phase attempt.
    pub scope: &'a CallScope,
    /// What the call was for within the phase.
    pub purpose: &'a str,
    /// `openai-compatible`.
    pub provider: &'a str,
    /// The model asked.
    pub model: &'a str,
    /// The system prompt's version.
    pub prompt_version: &'a str,
    /// The lookup key.
    pub request_hash: &'a str,
    /// The rendered request.
    pub request: &'a Value,
    /// The answer; `None` for a failed call.
    pub response: Option<&'a Value>,
    /// Why the call failed.
    pub error: Option<&'a str>,
    /// The row whose answer was reused (a ledger hit).
    pub reused_from: Option<i64>,
    /// Prompt tokens (0 for a hit).
    pub input_tokens: i32,
    /// Answer tokens (0 for a hit).
    pub output_tokens: i32,
    /// Prompt tokens served from the provider's cache.
    pub cached_tokens: i32,
    /// Time the call took, ms.
    pub latency_ms: f64,
    /// Estimated cost, USD (`None`: no price).
    pub cost_usd: Option<f64>,
    /// `catalog`, `self-hosted` or `reused`.
    pub cost_basis: &'a str,
}

/// A recorded answer found for a request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Its row.
    pub id: i64,
    /// The answer.
    pub response: Value,
    /// Its prompt tokens.
    pub input_tokens: i32,
    /// Its answer tokens.
    pub output_tokens: i32,
}

/// The answer recorded for the same request in an earlier attempt (or
/// replay) of the same phase of the same run, if any.
pub async fn find_answer(
    pool: &PgPool,
    scope: &CallScope,
    purpose: &str,
    request_hash: &str,
) -> Result<Option<Recorded>, Error> {
    let row = sqlx::query!(
        r#"SELECT id, response AS "response!", input_tokens, output_tokens FROM model_calls
           WHERE run_id = $1 AND phase = $2 AND purpose = $3 AND request_hash = $4
             AND response IS NOT NULL AND reused_from IS NULL
           ORDER BY id LIMIT 1"#,
        scope.run_id,
        scope.phase,
        purpose,
        request_hash
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Recorded {
        id: r.id,
        response: r.response,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
    }))
}

/// Writes one row; answers its id.
pub async fn record(pool: &PgPool, call: &NewCall<'_>) -> Result<i64, Error> {
    let s = call.scope;
    Ok(sqlx::query_scalar!(
        "INSERT INTO model_calls (tenant, run_id, phase, attempt, replay, purpose, provider,
           model, prompt_version, request_hash, request, response, error, reused_from,
           input_tokens, output_tokens, cached_tokens, latency_ms, cost_usd, cost_basis)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
           $18, $19, $20) RETURNING id",
        s.tenant,
        s.run_id,
        s.phase,
        s.attempt,
        s.replay,
        call.purpose,
        call.provider,
        call.model,
        call.prompt_version,
        call.request_hash,
        call.request,
        call.response,
        call.error,
        call.reused_from,
        call.input_tokens,
        call.output_tokens,
        call.cached_tokens,
        call.latency_ms,
        call.cost_usd,
        call.cost_basis
    )
    .fetch_one(pool)
    .await?)
}

/// One row of a run's calls, for its status and history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallRow {
    /// The row.
    pub id: i64,
    /// The phase.
    pub phase: String,
    /// The attempt.
    pub attempt: i32,
    /// The replay generation.
    pub replay: i32,
    /// What it was for.
    pub purpose: String,
    /// The model asked.
    pub model: String,
    /// The prompt's version.
    pub prompt_version: String,
    /// The row whose answer was reused, for a ledger hit.
    pub reused_from: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Prompt tokens.
    pub input_tokens: i32,
    /// Answer tokens.
    pub output_tokens: i32,
    /// Milliseconds.
    pub latency_ms: f64,
    /// USD, when priced.
    pub cost_usd: Option<f64>,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The calls of a run, oldest first.
pub async fn calls_of_run(pool: &PgPool, run_id: Uuid) -> Result<Vec<CallRow>, Error> {
    Ok(sqlx::query_as!(
        CallRow,
        "SELECT id, phase, attempt, replay, purpose, model, prompt_version, reused_from, error,
           input_tokens, output_tokens, latency_ms, cost_usd, at
         FROM model_calls WHERE run_id = $1 ORDER BY id",
        run_id
    )
    .fetch_all(pool)
    .await?)
}
