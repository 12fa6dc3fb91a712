//! Leases on running attempts (docs/DESIGN.md "Rules the engine keeps",
//! Leases): a started attempt holds its run's lease (worker, token, expiry,
//! taken by the start statement) and renews it every third of
//! `NETRA_LEASE_MS` while its phase runs and its effect commits
//! ([`Heartbeat`]). A redelivered copy of the step finds the lease live and
//! is acked without running; the effect of an attempt whose lease went to
//! another is discarded (fenced, in the effect statement); a lease that
//! expired (its worker died) has its step published again by the sweep
//! ([`publish_expired`]), at the same attempt.

use std::time::Duration;

use uuid::Uuid;

use super::{retry, Engine};
use crate::{broker::publisher::Publisher, error::InfraError, store::leases};

/// Renews an attempt's lease until [`Heartbeat::stop`]ped. Dropped without
/// that (the attempt's task was aborted: a shutdown or lost connection
/// whose grace ran out), it also releases the lease, so that the delivery,
/// which goes back to the queue, starts at once wherever it is redelivered.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    /// Set until stopped: what a drop releases.
    release: Option<(sqlx::PgPool, Uuid, Uuid)>,
}

impl Heartbeat {
    /// Starts renewing the lease `token` holds on `run_id`, every third of
    /// the engine's lease length. A renewal that finds the lease gone (swept
    /// after it expired: another attempt may run the step now) stops the
    /// heartbeat; the attempt's effect will be fenced.
    pub fn start(engine: &Engine, run_id: Uuid, token: Uuid) -> Self {
        let pool = engine.marks.clone();
        let release = Some((pool.clone(), run_id, token));
        let lease = engine.config.lease;
        let every = lease / 3;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match leases::renew(&pool, run_id, token, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(%run_id, "the attempt no longer holds its lease (its effect committed, or the lease expired and was swept: then its effect is discarded)");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%run_id, error = %e, "lease renewal failed; will try again")
                    }
                }
            }
        });
        Heartbeat { task, release }
    }

    /// Stops renewing (the attempt ended; its effect or its hand-back
    /// deals with the lease).
    pub fn stop(mut self) {
        self.release = None;
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
        let Some((pool, run_id, token)) = self.release.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = leases::release(&pool, run_id, token).await {
                    tracing::debug!(%run_id, error = %e, "lease release failed; it will expire");
                }
            });
        }
    }
}

/// Gives up an attempt's lease when its delivery is handed back, so that
/// the redelivery starts at once instead of finding the lease live. Best
/// effort: if this fails, the lease expires and the sweep publishes the step.
pub async fn release(engine: &Engine, run_id: Uuid, token: Uuid) {
    if let Err(e) = leases::release(&engine.marks, run_id, token).await {
        tracing::debug!(%run_id, error = %e, "lease release failed; it will expire");
    }
}

/// How often the sweep of expired leases runs: half a lease (the runs
/// table is read without an index, see migration 0011).
pub fn sweep_every(engine: &Engine) -> Duration {
    engine.config.lease / 2
}

/// Puts running runs whose lease expired back to `queued` (same phase,
/// attempt and replay) and publishes their step; returns how many. As with
/// due retries, the runs commit first and are published after; a publish
/// that fails leaves the run `queued` for the stale-run sweep.
pub async fn publish_expired(engine: &Engine, publisher: &Publisher) -> Result<usize, InfraError> {
    let expired =
        leases::requeue_expired(&engine.pool, engine.config.lease, 100, "scheduler").await?;
    let served: Vec<_> = expired
        .iter()
        .filter(|r| retry::serves(engine, r))
        .collect();
    let n = retry::publish_steps(engine, publisher, served).await?;
    if n > 0 {
        tracing::info!(count = n, "published again the steps whose lease expired");
    }
    Ok(n)
}
