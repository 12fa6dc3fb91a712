//! Group commit: the effects of concurrent deliveries are written together.
//!
//! Handlers hand their effect (a success or a retry) to the committer and
//! wait for its outcome. The committer runs at most `concurrency` effect
//! statements at a time; whatever arrives while they run is written by the
//! next statement as one batch ([`store::effects::commit_effects`]), so
//! under load many effects share a statement, a round trip and a commit,
//! and alone an effect goes out at once. Each handler still acks only after
//! its own effect is committed and its follow-ups are confirmed.
//!
//! If a batch fails, its effects are retried one by one, so an effect that
//! the database refuses fails alone and does not take its batch-mates along.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::store::effects::{self, AttemptRecord, Committed, Effect};

/// The outcome of an effect, and the effect itself handed back (`None` only
/// if the committer task died with it).
pub type Outcome = (Result<Committed, sqlx::Error>, Option<Effect>);

struct Job {
    record: AttemptRecord,
    effect: Effect,
    done: oneshot::Sender<Outcome>,
}

/// The handle handlers commit through; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Committer {
    /// Starts the committer task over `pool`: batches of at most `max_batch`
    /// effects, at most `concurrency` statements at a time. The task ends
    /// when every handle is dropped.
    pub fn start(pool: PgPool, max_batch: usize, concurrency: usize) -> Self {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                // Everything that queued up while the slots were busy.
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let pool = pool.clone();
                tokio::spawn(async move {
                    answer(&pool, batch).await;
                    drop(slot);
                });
            }
        });
        Committer { jobs }
    }

    /// Commits a success or a retry (a dead letter goes through
    /// [`effects::commit_effect`] directly) and hands the effect back.
    pub async fn commit(&self, record: AttemptRecord, effect: Effect) -> Outcome {
        let (done, outcome) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(Job {
            record,
            effect,
            done,
        }) {
            // The committer task is gone (shutdown): the delivery goes back.
            return (Err(sqlx::Error::PoolClosed), Some(job.effect));
        }
        match outcome.await {
            Ok(outcome) => outcome,
            // The batch task died (a panic); the delivery is handed back.
            Err(_) => (Err(sqlx::Error::WorkerCrashed), None),
        }
    }
}

/// Writes one batch and answers every job of it.
async fn answer(pool: &PgPool, batch: Vec<Job>) {
    let (work, done): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|j| ((j.record, j.effect), j.done))
        .unzip();
    for (outcome, done) in write_batch(pool, work).await.into_iter().zip(done) {
        let _ = done.send(outcome);
    }
}

/// Writes a batch of effects (successes and retries) as the committer does:
/// one statement, or, if that fails, one effect at a time. The outcomes are
/// in the order of `batch`.
pub async fn write_batch(pool: &PgPool, batch: Vec<(AttemptRecord, Effect)>) -> Vec<Outcome> {
    let items: Vec<(&AttemptRecord, &Effect)> = batch.iter().map(|(r, e)| (r, e)).collect();
    let result = effects::commit_effects(pool, &items).await;
    drop(items);
    match result {
        Ok(done) => batch
            .into_iter()
            .zip(done)
            .map(|((_, effect), committed)| (Ok(committed), Some(effect)))
            .collect(),
        Err(e) if batch.len() == 1 => {
            let effect = batch.into_iter().next().map(|(_, effect)| effect);
            vec![(Err(e), effect)]
        }
        Err(e) => {
            tracing::debug!(error = %e, size = batch.len(), "batched effects failed; writing them one by one");
            let mut outcomes = Vec::with_capacity(batch.len());
            for (record, effect) in batch {
                let result = effects::commit_effect(pool, &record, &effect).await;
                outcomes.push((result, Some(effect)));
            }
            outcomes
        }
    }
}
