//! The call ledger (`model_calls`): one row per language-model call, and one
//! per reuse of a recorded answer. The store only writes and reads rows; the
//! model client decides when to look up and what to record.
//!
//! It also answers what the calls add up to ([`Usage`]): per run and phase
//! (`GET /v1/runs/{id}`) and per tenant over a time range, grouped by model
//! and/or phase (`GET /v1/usage`). Every grouping is one of a fixed set of
//! compile-time checked statements ([`usage_of_tenant`] picks one by the
//! parsed [`GroupBy`]), so no SQL is ever built from what a caller sent.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::Error;

/// The workload netra's own model calls are telemetry of: every tenant whose
/// runs called a model has it (the view `telemetry_requests`, migration
/// 0010, names it too).
pub const WORKLOAD: &str = "netra-llm";

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

/// What a ledger row says of its call, as it is written ([`NewCall`],
/// borrowing its text) and read back ([`CallRow`], owning it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Call<S> {
    /// What the call was for within the phase.
    pub purpose: S,
    /// The model asked.
    pub model: S,
    /// The system prompt's version.
    pub prompt_version: S,
    /// The row whose answer was reused (a ledger hit).
    pub reused_from: Option<i64>,
    /// Why the call failed.
    pub error: Option<S>,
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
    /// `catalog`, `self-hosted` (no price), `reused` or `failed`.
    pub cost_basis: S,
}

/// One row to write.
#[derive(Debug, Clone)]
pub struct NewCall<'a> {
    /// The phase attempt.
    pub scope: &'a CallScope,
    /// `openai-compatible`.
    pub provider: &'a str,
    /// The lookup key.
    pub request_hash: &'a str,
    /// The rendered request, as JSON text (a call in flight holds its text,
    /// not a tree of values).
    pub request: &'a str,
    /// The answer; `None` for a failed call.
    pub response: Option<&'a Value>,
    /// The call.
    pub call: Call<&'a str>,
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

/// A compile-time checked `query!` (or `query_scalar!`, `$query`) that
/// writes the [`NewCall`] `$row` into `model_calls`: the statement is
/// `$head`, `INSERT INTO model_calls` with its columns, then `$rest` (the
/// `VALUES` or `SELECT` of the row, and what follows). The row's fields are
/// bound in the columns' order, `reused_from` (the 14th) only when given in
/// the brackets: without it, `$rest` writes its own. The columns and their
/// binds are written once, here.
macro_rules! insert_call {
    ($query:ident, $row:expr, $head:literal, $rest:literal, [$($reused_from:expr)?]) => {{
        let row: &NewCall<'_> = $row;
        let (s, call) = (row.scope, &row.call);
        sqlx::$query!(
            $head
                + "INSERT INTO model_calls (tenant, run_id, phase, attempt, replay, purpose, provider,
           model, prompt_version, request_hash, request, response, error, reused_from,
           input_tokens, output_tokens, cached_tokens, latency_ms, cost_usd, cost_basis)
         "
                + $rest,
            s.tenant,
            s.run_id,
            s.phase,
            s.attempt,
            s.replay,
            call.purpose,
            row.provider,
            call.model,
            call.prompt_version,
            row.request_hash,
            row.request,
            row.response,
            call.error,
            $($reused_from,)?
            call.input_tokens,
            call.output_tokens,
            call.cached_tokens,
            call.latency_ms,
            call.cost_usd,
            call.cost_basis
        )
    }};
}

/// The answer recorded for the same request in an earlier attempt (or
/// replay) of the same phase of the same run (`hit`'s scope, purpose and
/// request hash), if any, and `hit` written as its reuse (with
/// `reused_from` that answer's row, whatever `hit` says), in one statement;
/// answers the new row's id and the answer. Nothing is written when there
/// is no answer.
pub async fn reuse_answer(
    pool: &PgPool,
    hit: &NewCall<'_>,
) -> Result<Option<(i64, Recorded)>, Error> {
    let row = insert_call!(
        query,
        hit,
        "WITH found AS (
           SELECT id, response, input_tokens, output_tokens FROM model_calls
           WHERE run_id = $2 AND phase = $3 AND purpose = $6 AND request_hash = $10
             AND response IS NOT NULL AND reused_from IS NULL
           ORDER BY id LIMIT 1),
         hit AS (",
        r#"SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb, $12, $13, found.id, $14, $15,
           $16, $17, $18, $19
         FROM found RETURNING id)
         SELECT hit.id AS "hit_id!", found.id AS "id!", found.response AS "response!",
           found.input_tokens AS "input_tokens!", found.output_tokens AS "output_tokens!"
         FROM hit, found"#,
        []
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| {
        let answer = Recorded {
            id: r.id,
            response: r.response,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
        };
        (r.hit_id, answer)
    }))
}

/// Writes one row; answers its id.
pub async fn record(pool: &PgPool, row: &NewCall<'_>) -> Result<i64, Error> {
    Ok(insert_call!(
        query_scalar,
        row,
        "",
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb, $12, $13, $14, $15, $16, $17,
           $18, $19, $20) RETURNING id",
        [row.call.reused_from]
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
    /// The call (its fields serialized in line with the row's).
    #[serde(flatten)]
    pub call: Call<String>,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The calls of a run, oldest first.
pub async fn calls_of_run(pool: &PgPool, run_id: Uuid) -> Result<Vec<CallRow>, Error> {
    let rows = sqlx::query!(
        "SELECT id, phase, attempt, replay, purpose, model, prompt_version, reused_from, error,
           input_tokens, output_tokens, cached_tokens, latency_ms, cost_usd, cost_basis, at
         FROM model_calls WHERE run_id = $1 ORDER BY id",
        run_id
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| CallRow {
            id: r.id,
            phase: r.phase,
            attempt: r.attempt,
            replay: r.replay,
            call: Call {
                purpose: r.purpose,
                model: r.model,
                prompt_version: r.prompt_version,
                reused_from: r.reused_from,
                error: r.error,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cached_tokens: r.cached_tokens,
                latency_ms: r.latency_ms,
                cost_usd: r.cost_usd,
                cost_basis: r.cost_basis,
            },
            at: r.at,
        })
        .collect())
}

/// What a set of ledger rows adds up to.
///
/// `calls` are the model calls made (failed ones included); `ledger_hits`
/// the answers reused instead, which called nothing and cost nothing. Tokens,
/// cost and latency are those of the calls made. `cost_usd` is the sum of
/// their catalog prices, `null` when one of them was to a model without a
/// price (`unpriced_calls` of them; a failed call costs nothing).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// Model calls made.
    pub calls: i64,
    /// Recorded answers reused (a retry, redelivery or replay asked the same).
    pub ledger_hits: i64,
    /// Calls that failed.
    pub failures: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Answer tokens.
    pub output_tokens: i64,
    /// Prompt tokens served from the provider's cache.
    pub cached_tokens: i64,
    /// USD at the catalog's prices; `None` when a call had no price.
    pub cost_usd: Option<f64>,
    /// Calls to a model the catalog has no price for.
    pub unpriced_calls: i64,
    /// Time the calls took, ms.
    pub latency_ms_sum: f64,
    /// `latency_ms_sum / calls`; `None` without calls.
    pub latency_ms_mean: Option<f64>,
}

/// No calls: nothing paid.
impl Default for Usage {
    fn default() -> Self {
        Usage {
            calls: 0,
            ledger_hits: 0,
            failures: 0,
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            cost_usd: Some(0.0),
            unpriced_calls: 0,
            latency_ms_sum: 0.0,
            latency_ms_mean: None,
        }
    }
}

impl Usage {
    /// The usage of `self` and `other` together.
    pub fn merge(&self, other: &Usage) -> Usage {
        let calls = self.calls + other.calls;
        let latency_ms_sum = self.latency_ms_sum + other.latency_ms_sum;
        Usage {
            calls,
            ledger_hits: self.ledger_hits + other.ledger_hits,
            failures: self.failures + other.failures,
            input_tokens: self.input_tokens + other.input_tokens,
            output_tokens: self.output_tokens + other.output_tokens,
            cached_tokens: self.cached_tokens + other.cached_tokens,
            cost_usd: self.cost_usd.zip(other.cost_usd).map(|(a, b)| a + b),
            unpriced_calls: self.unpriced_calls + other.unpriced_calls,
            latency_ms_sum,
            latency_ms_mean: mean(latency_ms_sum, calls),
        }
    }
}

fn mean(sum: f64, n: i64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

/// One group of rows, as the usage statements answer it; the key columns
/// not grouped by are null.
#[derive(Debug, Clone)]
struct UsageRow {
    model: Option<String>,
    phase: Option<String>,
    calls: i64,
    ledger_hits: i64,
    failures: i64,
    input_tokens: i64,
    output_tokens: i64,
    cached_tokens: i64,
    cost_sum: f64,
    unpriced_calls: i64,
    latency_ms_sum: f64,
}

impl UsageRow {
    fn usage(&self) -> Usage {
        Usage {
            calls: self.calls,
            ledger_hits: self.ledger_hits,
            failures: self.failures,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_tokens: self.cached_tokens,
            cost_usd: (self.unpriced_calls == 0).then_some(self.cost_sum),
            unpriced_calls: self.unpriced_calls,
            latency_ms_sum: self.latency_ms_sum,
            latency_ms_mean: mean(self.latency_ms_sum, self.calls),
        }
    }
}

/// A compile-time checked `query_as!` of [`UsageRow`]s: `$keys` selects the
/// `model` and `phase` key columns (null where not grouped), `$rest` is
/// the `WHERE` (and `GROUP BY`, `ORDER BY`) over `model_calls`. The
/// aggregates are written once, here. Reuses carry no tokens, latency or
/// cost (the client records them so); the filters say so anyway.
macro_rules! usage_query {
    ($keys:literal, $rest:literal, $($arg:expr),+ $(,)?) => {
        sqlx::query_as!(
            UsageRow,
            "SELECT " + $keys + r#",
               count(*) FILTER (WHERE reused_from IS NULL) AS "calls!",
               count(*) FILTER (WHERE reused_from IS NOT NULL) AS "ledger_hits!",
               count(*) FILTER (WHERE reused_from IS NULL AND error IS NOT NULL) AS "failures!",
               coalesce(sum(input_tokens) FILTER (WHERE reused_from IS NULL), 0)::int8 AS "input_tokens!",
               coalesce(sum(output_tokens) FILTER (WHERE reused_from IS NULL), 0)::int8 AS "output_tokens!",
               coalesce(sum(cached_tokens) FILTER (WHERE reused_from IS NULL), 0)::int8 AS "cached_tokens!",
               coalesce(sum(cost_usd) FILTER (WHERE reused_from IS NULL), 0)::float8 AS "cost_sum!",
               count(*) FILTER (WHERE reused_from IS NULL AND cost_basis = 'self-hosted') AS "unpriced_calls!",
               coalesce(sum(latency_ms) FILTER (WHERE reused_from IS NULL), 0)::float8 AS "latency_ms_sum!"
             FROM model_calls "# + $rest,
            $($arg),+
        )
    };
}

/// The usage of one phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseUsage {
    /// The phase.
    pub phase: String,
    /// Its calls.
    #[serde(flatten)]
    pub usage: Usage,
}

/// A run's usage per phase, in the order the phases first called.
pub async fn usage_of_run(pool: &PgPool, run_id: Uuid) -> Result<Vec<PhaseUsage>, Error> {
    let rows = usage_query!(
        r#"NULL::text AS "model?", phase AS "phase?""#,
        "WHERE run_id = $1 GROUP BY phase ORDER BY min(id)",
        run_id
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| PhaseUsage {
            phase: r.phase.clone().unwrap_or_default(),
            usage: r.usage(),
        })
        .collect())
}

/// A key `GET /v1/usage` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKey {
    /// The tenant (the caller's: one group).
    Tenant,
    /// The model asked.
    Model,
    /// The phase that called.
    Phase,
}

impl GroupKey {
    /// Every key, by name.
    pub const ALL: [GroupKey; 3] = [GroupKey::Tenant, GroupKey::Model, GroupKey::Phase];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKey::Tenant => "tenant",
            GroupKey::Model => "model",
            GroupKey::Phase => "phase",
        }
    }
}

/// What to group by: a set of [`GroupKey`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupBy(Vec<GroupKey>);

impl GroupBy {
    /// Parses `tenant,model,phase` (any of them, each at most once; empty:
    /// no grouping); the error says what is wrong.
    pub fn parse(text: &str) -> Result<GroupBy, String> {
        let mut keys = Vec::new();
        for name in text.split(',').map(str::trim) {
            if name.is_empty() {
                continue;
            }
            let key = GroupKey::ALL
                .into_iter()
                .find(|k| k.as_str() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown key `{name}`: use any of tenant, model, phase, comma-separated"
                    )
                })?;
            if keys.contains(&key) {
                return Err(format!("`{name}` is named twice"));
            }
            keys.push(key);
        }
        Ok(GroupBy(keys))
    }

    /// The keys, in the order given.
    pub fn keys(&self) -> &[GroupKey] {
        &self.0
    }

    fn has(&self, key: GroupKey) -> bool {
        self.0.contains(&key)
    }
}

/// One group of a tenant's usage: its keys (those grouped by) and usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageGroup {
    /// The tenant, when grouped by tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The model, when grouped by model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The phase, when grouped by phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The group's calls.
    #[serde(flatten)]
    pub usage: Usage,
}

/// A tenant's usage in `[from, to)`: the totals, and the groups of
/// `group_by` (none without keys), ordered by their keys. Only the tenant's
/// rows are read, so grouping by tenant gives at most one group.
pub async fn usage_of_tenant(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    group_by: &GroupBy,
) -> Result<(Usage, Vec<UsageGroup>), Error> {
    let totals = usage_query!(
        r#"NULL::text AS "model?", NULL::text AS "phase?""#,
        "WHERE tenant = $1 AND at >= $2 AND at < $3",
        tenant,
        from,
        to
    )
    .fetch_one(pool)
    .await?
    .usage();
    if group_by.keys().is_empty() {
        return Ok((totals, Vec::new()));
    }
    // One fixed statement per combination of the model and phase keys; the
    // tenant key is the WHERE's tenant, so it needs no column of its own.
    let tenant_key = group_by.has(GroupKey::Tenant).then(|| tenant.to_string());
    let (by_model, by_phase) = (group_by.has(GroupKey::Model), group_by.has(GroupKey::Phase));
    if !by_model && !by_phase {
        // By tenant alone: the totals are its one group (none without rows).
        let any = totals.calls + totals.ledger_hits > 0;
        let group = any.then(|| UsageGroup {
            tenant: tenant_key,
            model: None,
            phase: None,
            usage: totals.clone(),
        });
        return Ok((totals, group.into_iter().collect()));
    }
    let rows = grouped_usage(pool, tenant, from, to, by_model, by_phase).await?;
    let groups = rows
        .iter()
        .map(|r| UsageGroup {
            tenant: tenant_key.clone(),
            model: r.model.clone(),
            phase: r.phase.clone(),
            usage: r.usage(),
        })
        .collect();
    Ok((totals, groups))
}

/// A tenant's usage rows in `[from, to)` grouped by model, phase or both
/// (one fixed statement per combination: no SQL is built from the request).
async fn grouped_usage(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    by_model: bool,
    by_phase: bool,
) -> Result<Vec<UsageRow>, Error> {
    Ok(match (by_model, by_phase) {
        (true, false) => {
            usage_query!(
                r#"model AS "model?", NULL::text AS "phase?""#,
                "WHERE tenant = $1 AND at >= $2 AND at < $3 GROUP BY model ORDER BY model",
                tenant,
                from,
                to
            )
            .fetch_all(pool)
            .await?
        }
        (false, true) => {
            usage_query!(
                r#"NULL::text AS "model?", phase AS "phase?""#,
                "WHERE tenant = $1 AND at >= $2 AND at < $3 GROUP BY phase ORDER BY phase",
                tenant,
                from,
                to
            )
            .fetch_all(pool)
            .await?
        }
        _ => {
            usage_query!(
                r#"model AS "model?", phase AS "phase?""#,
                "WHERE tenant = $1 AND at >= $2 AND at < $3
                 GROUP BY model, phase ORDER BY model, phase",
                tenant,
                from,
                to
            )
            .fetch_all(pool)
            .await?
        }
    })
}

/// One bucket of the call ledger's time series: the calls of one tenant,
/// model and phase within one hour or day (UTC), as the console's usage
/// page charts them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsagePoint {
    /// The start of the bucket (UTC).
    pub bucket: DateTime<Utc>,
    /// The tenant.
    pub tenant: String,
    /// The model asked.
    pub model: String,
    /// The phase that called.
    pub phase: String,
    /// Model calls made (failed ones included, reuses not).
    pub calls: i64,
    /// Recorded answers reused instead of calling.
    pub ledger_hits: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Answer tokens.
    pub output_tokens: i64,
    /// USD at the catalog's prices, of the priced calls.
    pub cost_usd: f64,
    /// Calls to a model without a price (not in `cost_usd`).
    pub unpriced_calls: i64,
}

/// The ledger's rows in `[from, to)` within `scope` (`Some(tenant)`, or
/// `None` for every tenant), summed per `bucket` (`"hour"` or `"day"`, in
/// UTC), tenant, model and phase, in time order. Any other bucket is
/// refused as bad data before a statement is sent.
pub async fn usage_series(
    pool: &PgPool,
    scope: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: &str,
) -> Result<Vec<UsagePoint>, Error> {
    if !matches!(bucket, "hour" | "day") {
        return Err(Error::BadData {
            sqlstate: None,
            message: format!("bucket `{bucket}`: use hour or day"),
        });
    }
    Ok(sqlx::query_as!(
        UsagePoint,
        r#"SELECT date_trunc($4, at, 'UTC') AS "bucket!", tenant AS "tenant!", model AS "model!",
             phase AS "phase!",
             count(*) FILTER (WHERE reused_from IS NULL) AS "calls!",
             count(*) FILTER (WHERE reused_from IS NOT NULL) AS "ledger_hits!",
             coalesce(sum(input_tokens) FILTER (WHERE reused_from IS NULL), 0)::int8 AS "input_tokens!",
             coalesce(sum(output_tokens) FILTER (WHERE reused_from IS NULL), 0)::int8 AS "output_tokens!",
             coalesce(sum(cost_usd) FILTER (WHERE reused_from IS NULL), 0)::float8 AS "cost_usd!",
             count(*) FILTER (WHERE reused_from IS NULL AND cost_basis = 'self-hosted') AS "unpriced_calls!"
           FROM model_calls
           WHERE ($1::text IS NULL OR tenant = $1) AND at >= $2 AND at < $3
           GROUP BY 1, tenant, model, phase
           ORDER BY 1, tenant, model, phase"#,
        scope,
        from,
        to,
        bucket,
    )
    .fetch_all(pool)
    .await?)
}
