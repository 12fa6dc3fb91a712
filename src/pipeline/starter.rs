//! Batched phase starts: the start marks and input reads of concurrent
//! deliveries share one statement ([`store::starts::start_phases`]), as
//! their effects do (see [`super::committer`]). The starts of a failed
//! statement are retried one at a time, so each delivery gets its own
//! error (during an outage they all fail at once). Each start takes its
//! run's lease for `lease` (see [`super::lease`]).

use std::time::Duration;

use sqlx::PgPool;

use super::{batcher::Batcher, envelope::Envelope};
use crate::store::{
    self,
    starts::{self, Start},
};

/// The handle handlers start through; cheap to clone.
#[derive(Clone)]
pub struct Starter {
    batcher: Batcher<Envelope, Result<Start, store::Error>>,
}

impl Starter {
    /// Starts the batcher over `pool` (the marks pool), recording `actor`
    /// (also the holder of the leases it takes, for `lease`).
    pub fn start(
        pool: PgPool,
        actor: String,
        lease: Duration,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        max_batch: usize,
        concurrency: usize,
    ) -> Self {
        let batcher = Batcher::start(
            "starts",
            metrics,
            max_batch,
            concurrency,
            move |envs: Vec<Envelope>| {
                let (pool, actor) = (pool.clone(), actor.clone());
                async move { start_batch(&pool, &envs, &actor, lease).await }
            },
        );
        Starter { batcher }
    }

    /// Starts one phase attempt.
    pub async fn start_phase(&self, env: &Envelope) -> Result<Start, store::Error> {
        match self.batcher.call(env.clone()).await {
            Ok(Some(start)) => start,
            // The batch died (a panic): the delivery is handed back.
            Ok(None) => Err(store::Error::batch_died("phase starts")),
            // The starter is gone (shutdown): the delivery goes back.
            Err(_) => Err(store::Error::batcher_gone("the phase starter")),
        }
    }
}

/// One statement for the batch; the starts of a statement that failed are
/// then tried one at a time (unless the database is unreachable).
pub async fn start_batch(
    pool: &PgPool,
    envs: &[Envelope],
    actor: &str,
    lease: Duration,
) -> Vec<Result<Start, store::Error>> {
    let results = starts::start_phases_leased(pool, envs, actor, lease).await;
    let alone = envs.len() == 1;
    let mut out = Vec::with_capacity(envs.len());
    for (env, result) in envs.iter().zip(results) {
        out.push(match result {
            Err(e) if !alone && !e.is_outage() => {
                tracing::debug!(error = %e, "batched start failed; starting it alone");
                starts::start_phase_leased(pool, env, actor, lease).await
            }
            other => other,
        });
    }
    out
}
