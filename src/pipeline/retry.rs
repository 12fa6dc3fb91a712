//! Retries without holding a delivery: a failed attempt records
//! `retrying(phase, next_attempt_at)` in Postgres and is acked; this
//! scheduler publishes the next attempt when it is due. Pending retries thus
//! survive a restart of every worker. The same loop sweeps runs that sat
//! `queued` too long (their message may have been lost between commit and
//! publish) and publishes them again; dedup makes that harmless. And it
//! sweeps running runs whose lease expired (their worker died; see
//! [`super::lease`]), publishing their step again at the same attempt.

use std::time::Duration;

use backoff::backoff::Backoff;

use super::{dispatch, shutdown::Shutdown, Engine};
use crate::{
    broker::publisher::Publisher,
    config::Config,
    error::InfraError,
    store::runs::{self, Run},
};

/// Randomization of each delay (±25%): with a multiplier of 2 the delays of
/// successive attempts still strictly grow.
pub const JITTER: f64 = 0.25;

/// Delay before attempt `failed_attempt + 1`: exponential with jitter,
/// computed by the `backoff` crate.
pub fn delay_after(config: &Config, failed_attempt: u32) -> Duration {
    let mut b = backoff::ExponentialBackoff {
        initial_interval: config.retry_initial,
        current_interval: config.retry_initial,
        randomization_factor: JITTER,
        multiplier: 2.0,
        max_interval: config.retry_max,
        max_elapsed_time: None,
        ..backoff::ExponentialBackoff::default()
    };
    let mut d = config.retry_initial;
    for _ in 0..failed_attempt.max(1) {
        d = b.next_backoff().unwrap_or(config.retry_max);
    }
    d
}

/// How often the scheduler looks for due retries.
const TICK: Duration = Duration::from_millis(200);

/// Runs the scheduler until shutdown or a broker failure.
pub async fn run_scheduler(
    engine: Engine,
    publisher: Publisher,
    mut shutdown: Shutdown,
) -> Result<(), InfraError> {
    let stale_secs = engine.config.republish_after.as_secs_f64();
    let mut last_sweep = tokio::time::Instant::now();
    let mut last_lease_sweep = tokio::time::Instant::now();
    let lease_every = super::lease::sweep_every(&engine);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(TICK) => {}
        }
        match publish_due(&engine, &publisher).await {
            Ok(_) => {}
            Err(e @ InfraError::Broker(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "retry scheduler: database unavailable, will try again")
            }
        }
        if last_sweep.elapsed().as_secs_f64() >= stale_secs / 2.0 {
            last_sweep = tokio::time::Instant::now();
            match sweep_stale(&engine, &publisher, stale_secs).await {
                Ok(_) => {}
                Err(e @ InfraError::Broker(_)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "stale-run sweep failed, will try again"),
            }
        }
        if last_lease_sweep.elapsed() >= lease_every {
            last_lease_sweep = tokio::time::Instant::now();
            match super::lease::publish_expired(&engine, &publisher).await {
                Ok(_) => {}
                Err(e @ InfraError::Broker(_)) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "expired-lease sweep failed, will try again"),
            }
        }
    }
}

/// Publishes every due retry; returns how many.
///
/// The runs go back to `queued` and commit first, then their messages are
/// published: the row locks are not held while the broker confirms (a phase
/// start waiting for one of those rows would hold up its whole batch). If a
/// publish fails, the run sits `queued` until the stale-run sweep publishes
/// its message again.
pub async fn publish_due(engine: &Engine, publisher: &Publisher) -> Result<usize, InfraError> {
    let due = runs::requeue_due_retries(&engine.pool, 100, "scheduler").await?;
    publish_steps(engine, publisher, &due).await?;
    Ok(due.len())
}

/// Republishes runs stuck in `queued`.
pub async fn sweep_stale(
    engine: &Engine,
    publisher: &Publisher,
    stale_secs: f64,
) -> Result<usize, InfraError> {
    let stale = runs::stale_queued(&engine.pool, stale_secs, 200).await?;
    let mut n = 0;
    for run in &stale {
        if serves(engine, run) && publish_step(engine, publisher, run).await? {
            runs::touch(&engine.pool, run.id).await?;
            n += 1;
        }
    }
    if n > 0 {
        tracing::info!(count = n, "republished runs that sat queued");
    }
    Ok(n)
}

/// True when an agent serves the phase of `run` (one without a phase has
/// none): the sweeps publish only those steps.
pub(crate) fn serves(engine: &Engine, run: &Run) -> bool {
    engine.knows_phase(run.phase.as_deref().unwrap_or_default())
}

/// Publishes the step of `run` (its phase, attempt and replay); false when
/// it has none (no phase), and nothing is published.
async fn publish_step(
    engine: &Engine,
    publisher: &Publisher,
    run: &Run,
) -> Result<bool, InfraError> {
    let Some(env) = run.envelope() else {
        return Ok(false);
    };
    publisher
        .publish_routed(&dispatch::phase_message(&engine.names, &engine.seal, &env))
        .await?;
    Ok(true)
}

/// Publishes the step of each of `runs`, in order (skipping those without
/// one), and stops at the first publish that fails; returns how many were
/// published. The due retries, and the sweep of expired leases
/// ([`super::lease::publish_expired`]), publish through it.
pub(crate) async fn publish_steps<'r>(
    engine: &Engine,
    publisher: &Publisher,
    runs: impl IntoIterator<Item = &'r Run>,
) -> Result<usize, InfraError> {
    let mut n = 0;
    for run in runs {
        if publish_step(engine, publisher, run).await? {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_jitter_and_cap() {
        let mut config = crate::config::Config::from_env().unwrap();
        config.retry_initial = Duration::from_millis(100);
        config.retry_max = Duration::from_secs(10);
        for _ in 0..50 {
            let d1 = delay_after(&config, 1);
            let d2 = delay_after(&config, 2);
            let d3 = delay_after(&config, 3);
            assert!(
                d1 >= Duration::from_millis(75) && d1 <= Duration::from_millis(125),
                "{d1:?}"
            );
            assert!(d1 < d2 && d2 < d3, "{d1:?} {d2:?} {d3:?}");
        }
        assert!(delay_after(&config, 30) <= Duration::from_millis(12_500));
    }
}
