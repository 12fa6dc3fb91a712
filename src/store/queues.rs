//! What Postgres knows of the phase queues (the console's queues page):
//! per phase, the runs whose attempt holds a live lease (being worked on
//! now: AMQP 0-9-1 does not report unacknowledged messages, so this stands
//! in for them) and the retry backlog, runs waiting in Postgres for their
//! next attempt. Every tenant's runs: the queues are shared.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Error;

/// Runs of one phase that Postgres holds outside the broker's ready count.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseBacklog {
    /// The phase.
    pub phase: String,
    /// Running runs whose lease has not expired (`lease_expires_at > now()`).
    pub leased: i64,
    /// Running runs whose lease expired (their worker stopped; the sweeper
    /// publishes their step again).
    pub expired: i64,
    /// Runs waiting for a retry (`status = 'retrying'`).
    pub retrying: i64,
    /// The earliest `next_attempt_at` among them.
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// Per phase (in name order), the running and retrying runs; phases with
/// neither are left out.
pub async fn backlog(pool: &PgPool) -> Result<Vec<PhaseBacklog>, Error> {
    Ok(sqlx::query_as!(
        PhaseBacklog,
        r#"SELECT phase AS "phase!",
             count(*) FILTER (WHERE status = $1 AND lease_expires_at > now()) AS "leased!",
             count(*) FILTER (WHERE status = $1 AND (lease_expires_at IS NULL OR lease_expires_at <= now())) AS "expired!",
             count(*) FILTER (WHERE status = $2) AS "retrying!",
             min(next_attempt_at) FILTER (WHERE status = $2) AS "next_retry_at?"
           FROM runs
           WHERE status IN ($1, $2) AND phase IS NOT NULL
           GROUP BY phase ORDER BY phase"#,
        crate::model::RunStatus::Running.as_str(),
        crate::model::RunStatus::Retrying.as_str(),
    )
    .fetch_all(pool)
    .await?)
}
