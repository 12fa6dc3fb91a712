//! The intake inbox in the pipeline: when to spool requests instead of
//! creating their runs, and the drain that makes runs of them.
//!
//! `<ns>.requests` is one FIFO queue for every tenant. Creating runs is the
//! expensive part of intake (the fair-admission decision, four inserts per
//! run), so during one tenant's flood the queue used to be read only as fast
//! as runs could be created, and another tenant's requests waited behind the
//! whole flood before fair admission ever saw them. Now, when an intake
//! batch is full (the queue is backlogged), and for a short while after,
//! intake stores the checked requests in the inbox (one narrow insert per
//! batch) and acks them; the scheduler's admission loop takes them a few
//! per tenant at a time and creates their runs, so a tenant with twenty
//! requests behind ten thousand gets its runs in the next round. An
//! uncontended request goes straight to its run, as before.
//!
//! A row is deleted in the transaction that creates its run, so a request
//! becomes a run once or stays spooled (a drain that dies rolls back). A
//! request that cannot become a run (its thread is not its tenant's, the
//! database refuses its data) is indexed as a dead letter in that same
//! transaction, so it is never lost silently.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{retry, Engine};
use crate::{
    broker::publisher::Publisher,
    error::InfraError,
    model::RunStatus,
    store::{
        self, dead_letters,
        inbox::{self, Spooled},
        runs::{self, Accepted, IntakeError, NewRun},
    },
};

/// Requests of one tenant turned into runs per drain round: every tenant
/// with spooled requests gets this many per round, whatever the others
/// have spooled.
pub const PER_TENANT: i64 = 128;

/// How long intake goes on spooling after its last full batch: a flood
/// read fast comes in batches that are no longer full, and they must not
/// overtake the flood's spooled requests.
const LINGER: Duration = Duration::from_secs(1);

/// The queue (and dead-letter routing key) spooled requests came from.
const QUEUE: &str = "requests";

/// The actor of the first history row of the runs a drain creates (AMQP
/// intake's is `amqp`): the history shows which requests were spooled.
pub const ACTOR: &str = "amqp-inbox";

/// When intake spools: a full batch, and for [`LINGER`] after one.
#[derive(Debug)]
pub struct Spooling {
    full: usize,
    until: Mutex<Option<Instant>>,
}

impl Spooling {
    /// For intake batches of at most `batch` requests (1: never spools; the
    /// unbatched mode creates every run alone).
    pub fn new(batch: usize) -> Self {
        Self {
            full: if batch <= 1 { usize::MAX } else { batch },
            until: Mutex::new(None),
        }
    }

    /// Whether a batch of `n` requests is spooled, at `now`.
    pub fn wanted(&self, n: usize, now: Instant) -> bool {
        n >= self.full || self.lock().is_some_and(|until| now < until)
    }

    /// Records a spooled batch at `now`.
    pub fn spooled(&self, now: Instant) {
        *self.lock() = Some(now + LINGER);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // A poisoned lock only guards an instant: its value is still good.
        self.until.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One drain round: takes up to [`PER_TENANT`] spooled requests of every
/// tenant, creates their runs in the transaction that deletes them, then
/// publishes the first steps of the runs admitted at once (the others wait
/// for the admission loop, like any run over its share). Returns how many
/// requests it took. If the process dies after the commit and before the
/// publish, the stale-run sweep publishes the steps.
pub async fn drain(engine: &Engine, publisher: &Publisher) -> Result<usize, InfraError> {
    let mut tx = engine.hot.begin().await.map_err(store::Error::from)?;
    let taken = inbox::take(&mut tx, PER_TENANT).await?;
    if taken.is_empty() {
        return Ok(0);
    }
    let (news, unreadable): (Vec<&Spooled>, Vec<&Spooled>) =
        taken.iter().partition(|s| s.new.is_ok());
    let news: Vec<NewRun> = news.iter().filter_map(|s| s.new.clone().ok()).collect();
    let results = runs::create_runs_on(
        &mut tx,
        &news,
        engine.agents.router().first(),
        ACTOR,
        engine.config.fair,
    )
    .await;
    if let Some(e) = results.iter().find_map(|r| match r {
        Err(IntakeError::Db(e)) => Some(e.clone()),
        _ => None,
    }) {
        // The transaction failed with the statement: nothing was taken.
        drop(tx);
        if e.is_outage() {
            return Err(InfraError::Database(e));
        }
        tracing::debug!(error = %e, "a drained batch failed; draining its requests one at a time");
        let mut n = 0;
        for s in &taken {
            n += drain_one(engine, publisher, s.id).await?;
        }
        return Ok(n);
    }
    for s in unreadable {
        refuse_unreadable(&mut tx, engine, &s.new).await?;
    }
    let mut accepted = Vec::with_capacity(results.len());
    for (new, result) in news.iter().zip(results) {
        match result {
            Ok(a) => accepted.push(a),
            Err(IntakeError::UnknownThread(id)) => {
                refuse(
                    &mut tx,
                    engine,
                    &Ok(new.clone()),
                    "unknown_thread",
                    &format!("thread {id} does not exist for this tenant"),
                )
                .await?;
            }
            Err(IntakeError::Db(_)) => {}
        }
    }
    tx.commit().await.map_err(store::Error::from)?;
    publish(engine, publisher, &accepted).await?;
    Ok(taken.len())
}

/// Drains the request in row `id` alone; a request the database refuses
/// is dead-lettered (indexed) in the transaction that deletes it.
async fn drain_one(engine: &Engine, publisher: &Publisher, id: i64) -> Result<usize, InfraError> {
    let mut tx = engine.hot.begin().await.map_err(store::Error::from)?;
    let Some(s) = inbox::take_one(&mut tx, id).await? else {
        return Ok(0);
    };
    let new = match &s.new {
        Ok(new) => new.clone(),
        Err(_) => {
            refuse_unreadable(&mut tx, engine, &s.new).await?;
            tx.commit().await.map_err(store::Error::from)?;
            return Ok(1);
        }
    };
    let first = engine.agents.router().first();
    let result = runs::create_runs_on(
        &mut tx,
        std::slice::from_ref(&new),
        first,
        ACTOR,
        engine.config.fair,
    )
    .await
    .pop();
    match result {
        Some(Ok(a)) => {
            tx.commit().await.map_err(store::Error::from)?;
            publish(engine, publisher, std::slice::from_ref(&a)).await?;
        }
        Some(Err(IntakeError::UnknownThread(thread))) => {
            refuse(
                &mut tx,
                engine,
                &s.new,
                "unknown_thread",
                &format!("thread {thread} does not exist for this tenant"),
            )
            .await?;
            tx.commit().await.map_err(store::Error::from)?;
        }
        Some(Err(IntakeError::Db(e))) if !e.is_outage() => {
            drop(tx);
            let mut tx = engine.hot.begin().await.map_err(store::Error::from)?;
            if let Some(s) = inbox::take_one(&mut tx, id).await? {
                let reason = format!(
                    "the database refused the request's data (SQLSTATE {})",
                    e.sqlstate().unwrap_or_default()
                );
                refuse(&mut tx, engine, &s.new, "rejected_by_database", &reason).await?;
            }
            tx.commit().await.map_err(store::Error::from)?;
        }
        Some(Err(IntakeError::Db(e))) => return Err(InfraError::Database(e)),
        None => {
            return Err(InfraError::Database(store::Error::internal(
                "the intake statement gave no answer",
            )))
        }
    }
    Ok(1)
}

/// [`refuse`] for a row that no longer reads as a request.
async fn refuse_unreadable(
    conn: &mut sqlx::PgConnection,
    engine: &Engine,
    request: &Result<NewRun, String>,
) -> Result<(), InfraError> {
    let reason = "the spooled request no longer reads as one";
    refuse(conn, engine, request, "unreadable_request", reason).await
}

/// Indexes a spooled request that cannot become a run as a dead letter of
/// `<ns>.requests`, in the transaction that takes it.
async fn refuse(
    conn: &mut sqlx::PgConnection,
    engine: &Engine,
    request: &Result<NewRun, String>,
    kind: &str,
    reason: &str,
) -> Result<(), InfraError> {
    let (key, body) = match request {
        Ok(new) => (
            new.request_message_id.as_deref(),
            serde_json::to_vec(new).unwrap_or_default(),
        ),
        Err(text) => (None, text.clone().into_bytes()),
    };
    tracing::warn!(kind, reason, "spooled request refused; dead-lettered");
    let queue = engine.names.dlq(QUEUE);
    dead_letters::insert_poison(&mut *conn, &queue, QUEUE, key, kind, reason, &body).await?;
    Ok(())
}

/// Publishes the first step of each accepted run that is queued and
/// admitted (a repeated request's too: the phase consumer deduplicates).
async fn publish(
    engine: &Engine,
    publisher: &Publisher,
    accepted: &[Accepted],
) -> Result<(), InfraError> {
    // Collected first: a lazy iterator's closures held across the await
    // would make the future not `Send`.
    let queued: Vec<&runs::Run> = accepted
        .iter()
        .filter(|a| a.run.status == RunStatus::Queued)
        .map(|a| &a.run)
        .collect();
    retry::publish_steps(engine, publisher, queued).await?;
    for a in accepted {
        tracing::info!(run_id = %a.run.id, created = a.created, "spooled request accepted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spools_full_batches_and_for_a_while_after() {
        let s = Spooling::new(256);
        let t = Instant::now();
        assert!(!s.wanted(255, t));
        assert!(s.wanted(256, t));
        s.spooled(t);
        assert!(s.wanted(1, t + LINGER / 2));
        assert!(!s.wanted(1, t + LINGER));
        let unbatched = Spooling::new(1);
        assert!(!unbatched.wanted(1, t));
    }
}
