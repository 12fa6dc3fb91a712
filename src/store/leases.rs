//! The leases of running attempts (migration 0011; docs/DESIGN.md "Rules
//! the engine keeps", Leases). The start statement takes a run's lease
//! ([`super::starts`]) and the effect statement checks and releases it
//! ([`super::effects`]); here are the heartbeat, the release of an attempt
//! that hands its delivery back, and the sweep of expired leases.

use std::time::Duration;

use uuid::Uuid;

use super::{
    runs::{insert_history, select_runs, Run, RunStatus, Transition},
    Error,
};
use sqlx::PgPool;

/// Extends each lease `tokens[i]` holds on run `runs[i]` to `lease` from
/// now, in one statement, and returns how many were extended. A run that no
/// longer holds its token (the lease expired and was swept, or the
/// attempt's effect committed) is not; nor is one whose row is locked (its
/// effect is committing now: the effect ends the lease, or a failed one
/// leaves it for the next renewal, well within the lease), so that the
/// renewal never waits on, or deadlocks with, an effect transaction.
pub async fn renew_all(
    pool: &PgPool,
    runs: &[Uuid],
    tokens: &[Uuid],
    lease: Duration,
) -> Result<usize, Error> {
    let renewed = sqlx::query!(
        "WITH mine AS ( \
           SELECT r.id FROM runs r \
           JOIN unnest($1::uuid[], $2::uuid[]) AS h(id, token) \
             ON r.id = h.id AND r.lease_token = h.token \
           WHERE r.status = 'running' \
           ORDER BY r.id FOR UPDATE OF r SKIP LOCKED) \
         UPDATE runs SET lease_expires_at = now() + make_interval(secs => $3) \
         FROM mine WHERE runs.id = mine.id",
        runs,
        tokens,
        lease.as_secs_f64(),
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(usize::try_from(renewed).unwrap_or(usize::MAX))
}

/// Gives up the lease `token` holds on run `run_id` (an attempt that hands
/// its delivery back: the redelivery may start at once). Nothing changes if
/// the run no longer holds that token.
pub async fn release(pool: &PgPool, run_id: Uuid, token: Uuid) -> Result<bool, Error> {
    Ok(sqlx::query!(
        "UPDATE runs SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND lease_token = $2",
        run_id,
        token,
    )
    .execute(pool)
    .await?
    .rows_affected()
        > 0)
}

/// Moves up to `limit` running runs whose lease expired (their worker died
/// or lost Postgres) back to `queued` at the same phase, attempt and replay
/// generation, with the lease cleared, in one transaction (other sweepers
/// skip the runs it locked), and returns them as they were: the caller
/// publishes their step again after the commit. A running run without a
/// lease (started before migration 0011) counts as expired once it has not
/// changed for `lease`. The attempt is not spent, and nothing was marked
/// processed, so the published copy runs as if it were the first; the
/// attempt that held the lease, if it still runs, is fenced.
pub async fn requeue_expired(
    pool: &PgPool,
    lease: Duration,
    limit: i64,
    actor: &str,
) -> Result<Vec<Run>, Error> {
    let mut tx = pool.begin().await?;
    let expired = select_runs!(
        "WHERE status = 'running' AND (lease_expires_at < now() \
           OR (lease_expires_at IS NULL AND updated_at < now() - make_interval(secs => $1))) \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        lease.as_secs_f64(),
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    for run in &expired {
        let owner = sqlx::query_scalar!("SELECT lease_owner FROM runs WHERE id = $1", run.id)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query!(
            "UPDATE runs SET status = $2, lease_owner = NULL, lease_token = NULL, \
             lease_expires_at = NULL, updated_at = now() WHERE id = $1",
            run.id,
            RunStatus::Queued.as_str(),
        )
        .execute(&mut *tx)
        .await?;
        insert_history(
            &mut tx,
            &Transition {
                run_id: run.id,
                actor,
                from: Some(RunStatus::Running),
                to: RunStatus::Queued,
                phase: run.phase.as_deref(),
                attempt: Some(run.attempt),
                replay: run.replay,
                error: Some("the attempt's lease expired"),
                detail: Some(serde_json::json!({"lease_expired": true, "lease_owner": owner})),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(expired)
}
