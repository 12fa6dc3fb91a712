//! The dead-letter index: every message that reached a `<ns>.dlq.*` queue,
//! with its reason, so operators can list and group failures without
//! draining the queues. The index is the source of truth for replays.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{runs::Transition, Error};
use crate::model::RunStatus;

/// A normalized error: ids, numbers and timestamps stripped, so that the same
/// failure of many runs falls into one group.
pub fn fingerprint(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if !token.is_empty() {
            let has_digit = token.chars().any(|c| c.is_ascii_digit());
            let hexish =
                token.len() >= 8 && token.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            if has_digit || hexish {
                out.push('#');
            } else {
                out.push_str(token);
            }
            token.clear();
        }
    };
    for c in error.chars() {
        if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' || c == ':' {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out.chars().take(300).collect()
}

/// The dead letter of a run's phase, as the effect transaction indexes it
/// (see [`super::effects::write_dead_letter`]).
#[derive(Debug, Clone)]
pub struct PhaseDeadLetter<'a> {
    /// The run.
    pub run_id: Uuid,
    /// The phase that failed.
    pub phase: &'a str,
    /// The failed message's id (a replay drains its copy by it).
    pub message_id: &'a str,
    /// `transient` or `permanent`.
    pub error_class: &'a str,
    /// The failure (its fingerprint groups it).
    pub error: &'a str,
    /// Attempts made.
    pub attempts: i32,
    /// Replay generation that failed (the first failure is looked up in it).
    pub replay: i32,
    /// This failure: the last one, and the first when none came before.
    pub last_failed_at: DateTime<Utc>,
}

/// Indexes the dead letter of a run's phase (inside the effect transaction),
/// for the run's tenant.
pub(super) async fn insert_for_run(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    dl: &PhaseDeadLetter<'_>,
    first_failed_at: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO dead_letters (id, run_id, tenant, phase, queue, message_id, error_class, error, \
         fingerprint, attempts, replay, first_failed_at, last_failed_at) \
         VALUES ($1, $2, $3, $4, 'phase', $5, $6, $7, $8, $9, $10, $11, $12)",
        Uuid::new_v4(),
        dl.run_id,
        tenant,
        dl.phase,
        dl.message_id,
        dl.error_class,
        dl.error,
        fingerprint(dl.error),
        dl.attempts,
        dl.replay,
        first_failed_at,
        dl.last_failed_at,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Indexes a poison message (one that never became or moved a run), on
/// the pool or in the caller's transaction.
pub async fn insert_poison<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    queue: &str,
    phase: &str,
    message_id: Option<&str>,
    kind: &str,
    reason: &str,
    body: &[u8],
) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    let now = Utc::now();
    let kept = &body[..body.len().min(64 * 1024)];
    sqlx::query!(
        "INSERT INTO dead_letters (id, phase, queue, message_id, error_class, error, fingerprint, \
         attempts, first_failed_at, last_failed_at, body) \
         VALUES ($1, $2, $3, $4, 'permanent', $5, $6, 1, $7, $7, $8)",
        id,
        phase,
        queue,
        message_id,
        format!("{kind}: {reason}"),
        format!("{kind}: {}", fingerprint(reason)),
        now,
        kept,
    )
    .execute(exec)
    .await?;
    Ok(id)
}

/// One indexed dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Dead-letter id.
    pub id: Uuid,
    /// The run, when the message belonged to one.
    pub run_id: Option<Uuid>,
    /// The run's tenant.
    pub tenant: Option<String>,
    /// Phase (or `requests`).
    pub phase: String,
    /// `phase`, `requests`, or the queue the poison came from.
    pub queue: String,
    /// The failed message's id.
    pub message_id: Option<String>,
    /// `transient` or `permanent`.
    pub error_class: String,
    /// The error.
    pub error: String,
    /// Normalized error, for grouping.
    pub fingerprint: String,
    /// Attempts made.
    pub attempts: i32,
    /// Replay generation that failed.
    pub replay: i32,
    /// First failure.
    pub first_failed_at: DateTime<Utc>,
    /// Last failure.
    pub last_failed_at: DateTime<Utc>,
    /// `pending`, `replayed` or `discarded`.
    pub status: String,
    /// Indexed.
    pub created_at: DateTime<Utc>,
}

/// Filters for listing dead letters.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Only this tenant (None: all, for operators).
    pub tenant: Option<String>,
    /// Only this phase.
    pub phase: Option<String>,
    /// Error contains this text.
    pub error_contains: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Only this fingerprint.
    pub fingerprint: Option<String>,
    /// Include replayed ones.
    pub include_replayed: bool,
    /// Page size.
    pub limit: i64,
}

/// Lists dead letters, newest first.
pub async fn list(pool: &PgPool, f: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
    Ok(sqlx::query_as!(
        DeadLetter,
        "SELECT id, run_id, tenant, phase, queue, message_id, error_class, error, fingerprint, attempts, \
         replay, first_failed_at, last_failed_at, status, created_at FROM dead_letters \
         WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR phase = $2) \
         AND ($3::text IS NULL OR strpos(error, $3) > 0) AND ($4::timestamptz IS NULL OR created_at >= $4) \
         AND ($5::text IS NULL OR fingerprint = $5) AND ($6 OR status = 'pending') \
         ORDER BY created_at DESC, id LIMIT $7",
        f.tenant.as_deref(),
        f.phase.as_deref(),
        f.error_contains.as_deref(),
        f.since,
        f.fingerprint.as_deref(),
        f.include_replayed,
        f.limit,
    )
    .fetch_all(pool)
    .await?)
}

/// A group of pending dead letters with the same phase and fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Phase.
    pub phase: String,
    /// Normalized error.
    pub fingerprint: String,
    /// How many.
    pub count: i64,
    /// Oldest.
    pub first_at: DateTime<Utc>,
    /// Newest.
    pub last_at: DateTime<Utc>,
}

/// Pending dead letters grouped by phase and fingerprint.
pub async fn groups(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<Group>, Error> {
    Ok(sqlx::query_as!(
        Group,
        r#"SELECT phase, fingerprint, count(*) AS "count!", min(created_at) AS "first_at!",
         max(created_at) AS "last_at!"
         FROM dead_letters WHERE status = 'pending' AND ($1::text IS NULL OR tenant = $1)
         GROUP BY phase, fingerprint ORDER BY count(*) DESC, phase"#,
        tenant,
    )
    .fetch_all(pool)
    .await?)
}

/// Counts of pending dead letters per phase (metrics).
pub async fn pending_by_phase(pool: &PgPool) -> Result<Vec<(String, i64)>, Error> {
    let rows = sqlx::query!(
        r#"SELECT phase, count(*) AS "count!" FROM dead_letters WHERE status = 'pending'
         GROUP BY phase ORDER BY phase"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.phase, r.count)).collect())
}

/// One dead letter by id (tenant-scoped when `tenant` is given).
pub async fn get(
    pool: &PgPool,
    id: Uuid,
    tenant: Option<&str>,
) -> Result<Option<DeadLetter>, Error> {
    Ok(sqlx::query_as!(
        DeadLetter,
        "SELECT id, run_id, tenant, phase, queue, message_id, error_class, error, fingerprint, attempts, \
         replay, first_failed_at, last_failed_at, status, created_at FROM dead_letters \
         WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
        id,
        tenant,
    )
    .fetch_optional(pool)
    .await?)
}

/// How many earlier dead letters (replayed ones) the run's phase has had.
pub async fn replays_of(pool: &PgPool, run_id: Uuid, phase: &str) -> Result<i64, Error> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "replays!" FROM dead_letters
         WHERE run_id = $1 AND phase = $2 AND status = 'replayed'"#,
        run_id,
        phase,
    )
    .fetch_one(pool)
    .await?)
}

/// Outcome of marking one dead letter replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// The run is `queued(phase)` again at this replay generation.
    Queued {
        /// The run.
        run: Uuid,
        /// The new replay generation.
        generation: i32,
    },
    /// Already replayed (or discarded) earlier: nothing to do.
    AlreadyDone,
    /// A poison message with no run: it cannot be replayed.
    NoRun,
}

/// Moves a dead-lettered run back to `queued(phase)` at the next replay
/// generation and marks the dead letter replayed, in one transaction, with
/// the patch (if any) recorded in the history. Safe to repeat: a second call
/// finds the dead letter replayed and does nothing.
pub async fn mark_replayed(
    pool: &PgPool,
    id: Uuid,
    actor: &str,
    patch: Option<&serde_json::Value>,
) -> Result<Replayed, Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        "SELECT run_id, phase, replay, status FROM dead_letters WHERE id = $1 FOR UPDATE",
        id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(Error::NotFound);
    };
    if row.status != "pending" {
        return Ok(Replayed::AlreadyDone);
    }
    let Some(run_id) = row.run_id else {
        return Ok(Replayed::NoRun);
    };
    let (phase, generation) = (row.phase, row.replay + 1);
    let updated = sqlx::query!(
        "UPDATE runs SET status = $4, phase = $2, attempt = 1, replay = $3, error = NULL, \
         next_attempt_at = NULL, finished_at = NULL, updated_at = now() \
         WHERE id = $1 AND status = $5 AND phase = $2",
        run_id,
        phase,
        generation,
        RunStatus::Queued.as_str(),
        RunStatus::DeadLettered.as_str(),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        // The run moved on some other way (cancelled, replayed by id of an
        // older dead letter): retire this entry without touching the run.
        sqlx::query!(
            "UPDATE dead_letters SET status = 'discarded' WHERE id = $1",
            id
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Replayed::AlreadyDone);
    }
    super::runs::insert_history(
        &mut tx,
        &Transition {
            run_id,
            actor,
            from: Some(RunStatus::DeadLettered),
            to: RunStatus::Queued,
            phase: Some(&phase),
            attempt: Some(1),
            replay: generation,
            error: None,
            detail: Some(
                serde_json::json!({ "replay_of": id, "generation": generation, "patch": patch }),
            ),
        },
    )
    .await?;
    sqlx::query!(
        "UPDATE dead_letters SET status = 'replayed' WHERE id = $1",
        id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Replayed::Queued {
        run: run_id,
        generation,
    })
}

/// True when a message has dead letters in the index and none of them is
/// still pending (every one was replayed): its copy in the dead-letter
/// queue may go.
pub async fn all_replayed(pool: &PgPool, message_id: &str) -> Result<bool, Error> {
    let pending = sqlx::query_scalar!(
        r#"SELECT count(*) FILTER (WHERE status = 'pending') AS "pending!" FROM dead_letters
         WHERE message_id = $1 HAVING count(*) > 0"#,
        message_id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(pending == Some(0))
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprint_strips_ids_and_numbers() {
        let a = fingerprint(
            "run 6f1c2a9e-0000-4000-8000-000000000001 failed after 1234 ms at 2026-11-23T10:00:00Z",
        );
        let b = fingerprint(
            "run 0a1b2c3d-1111-4000-8000-000000000002 failed after 99 ms at 2026-11-24T11:30:00Z",
        );
        assert_eq!(a, b);
        assert!(a.contains("failed after # ms"));
        assert_ne!(fingerprint("timeout"), fingerprint("bad input"));
    }
}
