//! Fair admission between tenants: the release of waiting runs.
//!
//! Intake admits a tenant's request at once while the tenant is under its
//! share of the runs in flight (the intake statement decides, with no
//! extra round trip); beyond it the run waits in Postgres, `queued` with
//! the reason `tenant over its share`, and its step is not published. This
//! loop, in every process that runs the scheduler, releases waiting runs as
//! shares free up: for each tenant with waiting runs, as many as
//! `netra_fair_admit` allows, highest priority first (docs/DESIGN.md "Fair
//! admission"). A release commits before its steps are published; if the
//! process dies in between, the stale-run sweep publishes them. Each round
//! first drains the intake inbox ([`inbox::drain`]): the requests intake
//! spooled during a flood become runs, a few per tenant per round; then the
//! runs waiting `over its rate` go on to wait for their share as their
//! tenant's rate window has room ([`pass_rates`]).

use std::time::Duration;

use super::{inbox, intake, retry, shutdown::Shutdown, Engine};
use crate::{broker::publisher::Publisher, error::InfraError, store::fair};

/// How often waiting runs are looked for.
const TICK: Duration = Duration::from_millis(50);

/// Most runs of one tenant released by one statement.
const BATCH: u32 = 500;

/// Releases waiting runs until shutdown or a broker failure.
pub async fn run(
    engine: Engine,
    publisher: Publisher,
    mut shutdown: Shutdown,
) -> Result<(), InfraError> {
    let mut start = 0usize;
    let mut busy = false;
    loop {
        // While the inbox has a backlog, the next round starts at once.
        let pause = if busy { Duration::ZERO } else { TICK };
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
        let round = async {
            let drained = inbox::drain(&engine, &publisher).await?;
            pass_rates(&engine).await?;
            release_all(&engine, &publisher, start).await?;
            Ok::<_, InfraError>(drained)
        };
        busy = match round.await {
            Ok(drained) => drained > 0,
            Err(e @ InfraError::Broker(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "fair admission: database unavailable, will try again");
                false
            }
        };
        // Each process starts its round at another tenant.
        start = start.wrapping_add(1);
    }
}

/// Lets runs that wait for their tenant's request rate go on to wait for
/// its share, as many per tenant as its rate window has room for now
/// (each counted in the window, like a request that came in under it).
pub async fn pass_rates(engine: &Engine) -> Result<u64, InfraError> {
    let mut passed = 0;
    for (tenant, waiting) in fair::rate_waiting(&engine.pool).await? {
        let limit = engine
            .tenant_facts
            .requests_per_min(&engine.pool, &tenant, engine.config.fair)
            .await?;
        let most = waiting.min(i64::from(BATCH));
        let mut room = 0;
        while room < most {
            if limit > 0
                && engine
                    .limiter
                    .check(engine.cache.as_ref(), &intake::rate_key(&tenant), limit)
                    .await
                    .is_some()
            {
                break;
            }
            room += 1;
        }
        if room > 0 {
            passed += fair::pass_rate(&engine.pool, &tenant, room, "scheduler").await?;
        }
    }
    Ok(passed)
}

/// One round over the tenants with waiting runs (from the `start`-th, so
/// that no tenant is always served first); returns how many runs were
/// released.
pub async fn release_all(
    engine: &Engine,
    publisher: &Publisher,
    start: usize,
) -> Result<usize, InfraError> {
    let tenants = fair::waiting_tenants(&engine.pool).await?;
    if tenants.is_empty() {
        return Ok(0);
    }
    let n = tenants.len();
    let mut released = 0;
    for k in 0..n {
        let tenant = &tenants[(start + k) % n];
        let runs = fair::release(
            &engine.pool,
            tenant,
            BATCH,
            &[fair::OVER_SHARE],
            engine.config.fair,
            "scheduler",
        )
        .await?;
        released += retry::publish_steps(engine, publisher, &runs).await?;
    }
    if released > 0 {
        tracing::debug!(count = released, "released waiting runs");
    }
    Ok(released)
}
