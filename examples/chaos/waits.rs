//! The suite's bounded waits on the state of the stack (never a sleep
//! standing in for one): the workers' topology, their first completion, a
//! writable Postgres host (the promoted standby after a failover), and the
//! end of the duplicator's copying.

use std::{path::Path, sync::atomic::AtomicU64, time::Duration};

use anyhow::{anyhow, bail, Result};
use lapin::{options::QueueDeclareOptions, types::ShortString};
use netra::broker::topology::Names;
use sqlx::PgPool;

use crate::{stack::hosts_of, traffic::Broker};

/// Bound of the waits on the workers' start and first completion.
pub const START_BOUND: Duration = Duration::from_secs(60);

/// The namespace's quorum queues the workers consume: the requests and
/// the phase queues.
pub fn consumed_queues(names: &Names) -> Vec<String> {
    let mut queues = vec![names.requests()];
    queues.extend(
        netra::agents::standard()
            .phases()
            .iter()
            .map(|p| names.phase_queue(p)),
    );
    queues
}

/// Waits until the workers declared the requests and phase queues.
pub async fn topology(broker: &Broker, names: &Names, log_dir: &Path) -> Result<()> {
    let queues = consumed_queues(names);
    let deadline = tokio::time::Instant::now() + START_BOUND;
    loop {
        if let Ok(depths) = depths(broker, &queues).await {
            if depths.len() == queues.len() {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the workers declared no topology within {START_BOUND:?} (worker logs: {})",
                log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ready messages of each queue, stopping at the first that does not exist.
pub async fn depths(broker: &Broker, queues: &[String]) -> Result<Vec<u32>> {
    let conn = broker.connect("chaos probe").await?;
    let mut out = Vec::new();
    for q in queues {
        let Ok(ch) = conn.create_channel().await else {
            break;
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match ch
            .queue_declare(ShortString::from(q.as_str()), passive, Default::default())
            .await
        {
            Ok(q) => out.push(q.message_count()),
            Err(_) => break,
        }
    }
    let _ = conn.close(200, ShortString::from("bye")).await;
    Ok(out)
}

/// `duplicates`: waits until the copies stopped and the phase queues (and
/// the duplicator's) are empty, so that a reply a copy causes comes before
/// the marker's.
pub async fn quiet(broker: &Broker, names: &Names, copies: &AtomicU64) -> Result<()> {
    let mut queues: Vec<String> = netra::agents::standard()
        .phases()
        .iter()
        .map(|p| names.phase_queue(p))
        .collect();
    queues.push(format!("{}.test.duplicator", names.namespace()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = u64::MAX;
    while tokio::time::Instant::now() < deadline {
        let now = copies.load(std::sync::atomic::Ordering::Relaxed);
        let empty = depths(broker, &queues)
            .await
            .is_ok_and(|d| d.len() == queues.len() && d.iter().all(|n| *n == 0));
        if empty && now == last {
            return Ok(());
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(anyhow!(
        "the duplicated messages were still moving 30 s after the runs settled"
    ))
}

/// A pool on the writable host of `url` (single- or multi-host: after a
/// failover, the promoted standby), retried until `deadline`.
pub async fn writable_db(url: &str, deadline: tokio::time::Instant) -> Result<PgPool> {
    loop {
        let mut last = anyhow!("no host in the database URL");
        for host in hosts_of(url) {
            match netra::store::connect_url(&host, 4).await {
                Ok(pool) => match sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
                    .fetch_one(&pool)
                    .await
                {
                    Ok(false) => return Ok(pool),
                    Ok(true) => pool.close().await,
                    Err(e) => last = e.into(),
                },
                Err(e) => last = e.into(),
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(last.context("no writable Postgres host for the scenario's database"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until a run completed: the workers work, the faults may start.
pub async fn first_completion(pool: &PgPool, log_dir: &Path) -> Result<()> {
    let deadline = tokio::time::Instant::now() + START_BOUND;
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE status IN ('completed', 'needs_input')",
        )
        .fetch_one(pool)
        .await
        .unwrap_or(0);
        if done > 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no run completed within {START_BOUND:?} of the first request (worker logs: {})",
                log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
