//! Group commit: the effects of concurrent deliveries are written together.
//!
//! Handlers hand their effect (a success or a retry) to the committer and
//! wait for its outcome. The committer runs at most `concurrency` effect
//! statements at a time; whatever arrives while they run is written by the
//! next statement as one batch ([`effects::commit_effects`]), so
//! under load many effects share a statement, a round trip and a commit,
//! and alone an effect goes out at once. Each handler still acks only after
//! its own effect is committed and its follow-ups are confirmed.
//!
//! If a batch statement fails, its effects are retried one by one, so an
//! effect that the database refuses fails alone and does not take its
//! batch-mates along; during an outage they all fail at once (and wait for
//! the database in the worker).

use sqlx::PgPool;

use super::{
    batcher::Batcher,
    effects::{self, AttemptRecord, Committed, Effect},
};
use crate::store;

/// The outcome of an effect, and the effect itself handed back (`None` only
/// if the committer task died with it).
pub type Outcome = (Result<Committed, store::Error>, Option<Effect>);

/// The handle handlers commit through; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    batcher: Batcher<(AttemptRecord, Effect), Outcome>,
}

impl Committer {
    /// Starts the committer over `pool`: batches of at most `max_batch`
    /// effects, at most `concurrency` statements at a time.
    pub fn start(
        pool: PgPool,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        max_batch: usize,
        concurrency: usize,
    ) -> Self {
        let batcher = Batcher::start("effects", metrics, max_batch, concurrency, move |batch| {
            let pool = pool.clone();
            async move { write_batch(&pool, batch).await }
        });
        Committer { batcher }
    }

    /// Commits a success or a retry (a dead letter goes through
    /// [`effects::commit_effect`] directly) and hands the effect back.
    pub async fn commit(&self, record: AttemptRecord, effect: Effect) -> Outcome {
        match self.batcher.call((record, effect)).await {
            Ok(Some(outcome)) => outcome,
            // The batch died (a panic): the delivery is handed back.
            Ok(None) => (Err(store::Error::batch_died("effects")), None),
            // The committer is gone (shutdown): the delivery goes back.
            Err((_, effect)) => (
                Err(store::Error::batcher_gone("the effect committer")),
                Some(effect),
            ),
        }
    }
}

/// Writes a batch of effects (successes and retries) as the committer does:
/// one statement for all; the effects of a statement that failed are then
/// written one at a time, so one the database refuses fails alone (unless
/// the database is unreachable: then they all fail at once). The outcomes
/// are in the order of `batch`.
pub async fn write_batch(pool: &PgPool, batch: Vec<(AttemptRecord, Effect)>) -> Vec<Outcome> {
    let items: Vec<(&AttemptRecord, &Effect)> = batch.iter().map(|(r, e)| (r, e)).collect();
    let results = effects::commit_effects(pool, &items).await;
    drop(items);
    let alone = batch.len() == 1;
    let mut outcomes = Vec::with_capacity(batch.len());
    for ((record, effect), result) in batch.into_iter().zip(results) {
        outcomes.push(match result {
            Err(e) if !alone && !e.is_outage() => {
                tracing::debug!(error = %e, "batched effect failed; writing it alone");
                commit_alone(pool, &record, effect).await
            }
            Err(e) if e.is_bad_data() => refused(pool, &record, &e).await,
            other => (other, Some(effect)),
        });
    }
    outcomes
}

/// Commits one effect alone. If the database refuses its data (a NUL in an
/// output, say: see [`store::Error::BadData`]), that will happen on every
/// attempt, so the phase is dead-lettered with the reason instead, and that
/// effect is handed back.
pub async fn commit_alone(pool: &PgPool, record: &AttemptRecord, effect: Effect) -> Outcome {
    match effects::commit_effect(pool, record, &effect).await {
        Err(e) if e.is_bad_data() => refused(pool, record, &e).await,
        other => (other, Some(effect)),
    }
}

async fn refused(pool: &PgPool, record: &AttemptRecord, e: &store::Error) -> Outcome {
    let error = crate::error::PhaseError::permanent(format!(
        "the database refused this phase's data (SQLSTATE {})",
        e.sqlstate().unwrap_or_default()
    ));
    tracing::warn!(error = %error.message, "phase data refused; dead-lettering");
    let effect = Effect::DeadLetter { error };
    (
        effects::commit_effect(pool, record, &effect).await,
        Some(effect),
    )
}
