//! Leases on running attempts (docs/DESIGN.md "Rules the engine keeps",
//! Leases): a started attempt holds its run's lease (worker, token, expiry,
//! taken by the start statement), renewed every third of `NETRA_LEASE_MS`
//! while its phase runs and its effect commits. The renewals of all the
//! attempts a process runs are one statement per tick ([`Keeper`]): ten
//! thousand slow model calls in flight cost one round trip every ten
//! seconds, not a thousand a second. A redelivered copy of the step finds
//! the lease live and is acked without running; the effect of an attempt
//! whose lease went to another is discarded (fenced, in the effect
//! statement); a lease that expired (its worker died) has its step
//! published again by the sweep ([`publish_expired`]), at the same attempt.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use uuid::Uuid;

use super::{retry, Engine};
use crate::{broker::publisher::Publisher, error::InfraError, store::leases};

/// The most leases one renewal statement carries.
const RENEW_CHUNK: usize = 5_000;

/// The leases this process's attempts hold (token → run), renewed together
/// every third of a lease by a task that ends with the engine.
pub struct Keeper {
    held: Mutex<HashMap<Uuid, Uuid>>,
}

impl Keeper {
    /// Starts the renewals over `pool` (needs a Tokio runtime).
    pub fn start(pool: sqlx::PgPool, lease: Duration) -> Arc<Self> {
        let keeper = Arc::new(Keeper {
            held: Mutex::new(HashMap::new()),
        });
        tokio::spawn(renew_every_third(Arc::downgrade(&keeper), pool, lease));
        keeper
    }

    fn hold(&self, run_id: Uuid, token: Uuid) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(token, run_id);
        }
    }

    fn forget(&self, token: Uuid) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&token);
        }
    }

    /// The leases held now, ordered by run.
    fn snapshot(&self) -> Vec<(Uuid, Uuid)> {
        let mut all: Vec<(Uuid, Uuid)> = match self.held.lock() {
            Ok(held) => held.iter().map(|(token, run)| (*run, *token)).collect(),
            Err(_) => Vec::new(),
        };
        all.sort_unstable();
        all
    }

    /// How many leases are held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The renewal task. A lease that is not renewed was lost (swept after it
/// expired: its attempt's effect will be fenced), ended (its effect
/// committed a moment ago), or locked by the effect committing now; each
/// stays held until its attempt ends, and renewing a lost lease again
/// changes nothing.
async fn renew_every_third(keeper: Weak<Keeper>, pool: sqlx::PgPool, lease: Duration) {
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let Some(held) = keeper.upgrade().map(|k| k.snapshot()) else {
            return;
        };
        for chunk in held.chunks(RENEW_CHUNK) {
            let (runs, tokens): (Vec<Uuid>, Vec<Uuid>) = chunk.iter().copied().unzip();
            match leases::renew_all(&pool, &runs, &tokens, lease).await {
                Ok(renewed) if renewed < chunk.len() => tracing::debug!(
                    held = chunk.len(),
                    renewed,
                    "some leases were not renewed (their effect committed, or they expired and were swept: then their effect is discarded)"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    leases = chunk.len(),
                    error = %e,
                    "lease renewal failed; will try again"
                ),
            }
        }
    }
}

/// An attempt's hold on its lease, renewed by the engine's [`Keeper`] until
/// [`Heartbeat::stop`]ped. Dropped without that (the attempt's task was
/// aborted: a shutdown or lost connection whose grace ran out), it also
/// releases the lease, so that the delivery, which goes back to the queue,
/// starts at once wherever it is redelivered.
pub struct Heartbeat {
    keeper: Arc<Keeper>,
    token: Uuid,
    /// Set until stopped: what a drop releases.
    release: Option<(sqlx::PgPool, Uuid)>,
}

impl Heartbeat {
    /// Has the engine renew the lease `token` holds on `run_id`.
    pub fn start(engine: &Engine, run_id: Uuid, token: Uuid) -> Self {
        engine.leases.hold(run_id, token);
        Heartbeat {
            keeper: engine.leases.clone(),
            token,
            release: Some((engine.marks.clone(), run_id)),
        }
    }

    /// Stops renewing (the attempt ended; its effect or its hand-back
    /// deals with the lease).
    pub fn stop(mut self) {
        self.release = None;
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.keeper.forget(self.token);
        let Some((pool, run_id)) = self.release.take() else {
            return;
        };
        let token = self.token;
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
