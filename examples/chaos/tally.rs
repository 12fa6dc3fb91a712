//! The counts of one scenario, from its database and its reply queue:
//! waiting (bounded) until every submitted request's run is terminal, its
//! reply arrived and every poison message is dead-lettered, then counting
//! what the table shows. Requests are matched by message id
//! (`runs.request_message_id`), replies by correlation id (the same id).

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::{poison::Kind, traffic::Sent};

/// The statuses a run changes no more from (src/model RunStatus::is_final).
pub const FINAL: [&str; 4] = ["completed", "needs_input", "dead_lettered", "cancelled"];

/// What a scenario's row shows (and what makes it fail).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub submitted: usize,
    pub completed: usize,
    pub needs_input: usize,
    /// Good requests whose run was dead-lettered or cancelled: failures.
    pub good_dead_lettered: usize,
    pub poison_dead_lettered: usize,
    /// Poison that became a run, or was never dead-lettered.
    pub poison_unaccounted: usize,
    /// Poison dead-lettered with another error class than expected.
    pub poison_misfiled: Vec<String>,
    pub lost: usize,
    pub applied_twice: usize,
    pub stuck: usize,
    /// Stuck runs by `status(phase)`.
    pub stuck_by: BTreeMap<String, usize>,
    pub replies_missing: usize,
    pub replies_duplicated: usize,
    /// Per fault, ms from its heal to the next completion (None: none came).
    pub recovery_ms: Vec<Option<i64>>,
}

impl Tally {
    /// p99 (nearest rank) of the recoveries that were measured.
    pub fn p99_recovery(&self) -> Option<i64> {
        let mut ms: Vec<i64> = self.recovery_ms.iter().flatten().copied().collect();
        if ms.is_empty() {
            return None;
        }
        ms.sort_unstable();
        let rank = (ms.len() * 99).div_ceil(100).max(1);
        Some(ms[rank - 1])
    }

    /// The reasons this scenario fails the suite (empty: it passed).
    /// Duplicated replies are reported, not fatal.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.lost > 0 {
            out.push(format!("{} lost", self.lost));
        }
        if self.applied_twice > 0 {
            out.push(format!(
                "{} phase effects applied twice",
                self.applied_twice
            ));
        }
        if self.stuck > 0 {
            let by: Vec<String> = self
                .stuck_by
                .iter()
                .map(|(at, n)| format!("{n} {at}"))
                .collect();
            out.push(format!("{} stuck ({})", self.stuck, by.join(", ")));
        }
        if self.good_dead_lettered > 0 {
            out.push(format!(
                "{} good requests dead-lettered",
                self.good_dead_lettered
            ));
        }
        if self.poison_unaccounted > 0 {
            out.push(format!(
                "{} poison messages not dead-lettered (or run)",
                self.poison_unaccounted
            ));
        }
        out
    }
}

/// `(message id, status, phase)` of the runs of `ids`.
async fn runs_of(pool: &PgPool, ids: &[String]) -> Result<Vec<(String, String, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT request_message_id, status, phase FROM runs WHERE tenant = 'default' AND request_message_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// `(message id, error)` of the dead letters indexed under `ids`.
async fn dead_letters_of(pool: &PgPool, ids: &[String]) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT ON (message_id) message_id, error FROM dead_letters WHERE message_id = ANY($1) ORDER BY message_id, created_at",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// Waits until every good request has a terminal run (and a completed or
/// needs_input one its reply) and every poison message a dead letter, or
/// until `deadline`. Query errors (the database coming back) only retry.
pub async fn settle(
    pool: &PgPool,
    sent: &Sent,
    replies: &crate::traffic::Replies,
    deadline: tokio::time::Instant,
) {
    let good: Vec<String> = sent.good.iter().cloned().collect();
    let poison: Vec<String> = sent.poison.iter().map(|(id, _)| id.clone()).collect();
    loop {
        let done = async {
            let runs = runs_of(pool, &good).await?;
            let terminal = runs.len() == good.len()
                && runs.iter().all(|(id, status, _)| {
                    FINAL.contains(&status.as_str())
                        && (!["completed", "needs_input"].contains(&status.as_str())
                            || replies.count(id) > 0)
                });
            let dead = dead_letters_of(pool, &poison).await?.len() == poison.len();
            anyhow::Ok(terminal && dead)
        }
        .await
        .unwrap_or(false);
        if done || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Counts a settled scenario. `heals` are the moments the faults healed;
/// `marker` is the final request (not counted).
pub async fn count(
    pool: &PgPool,
    sent: &Sent,
    replies: &HashMap<String, u32>,
    heals: &[DateTime<Utc>],
    marker: &str,
) -> Result<Tally> {
    let good: Vec<String> = sent.good.iter().cloned().collect();
    let mut t = Tally {
        submitted: good.len(),
        ..Tally::default()
    };
    let runs = runs_of(pool, &good).await.context("reading the runs")?;
    t.lost = good.len().saturating_sub(runs.len());
    for (id, status, phase) in &runs {
        match status.as_str() {
            "completed" | "needs_input" => {
                if status == "completed" {
                    t.completed += 1;
                } else {
                    t.needs_input += 1;
                }
                if replies.get(id).copied().unwrap_or(0) == 0 {
                    t.replies_missing += 1;
                }
            }
            "dead_lettered" | "cancelled" => t.good_dead_lettered += 1,
            _ => {
                t.stuck += 1;
                *t.stuck_by
                    .entry(format!("{status}({})", phase.as_deref().unwrap_or("-")))
                    .or_default() += 1;
            }
        }
    }
    t.replies_duplicated = good
        .iter()
        .filter(|id| replies.get(*id).copied().unwrap_or(0) > 1)
        .count();
    // Each (run, phase) succeeds once (tests/faults.rs assert_exactly_once).
    // phase_outputs cannot hold two rows of a (run, phase): it is the key.
    let (twice,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT run_id, phase FROM phase_attempts WHERE outcome = 'succeeded' \
         GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .context("counting phase effects applied twice")?;
    t.applied_twice = usize::try_from(twice).unwrap_or(usize::MAX);
    count_poison(pool, sent, &mut t).await?;
    for heal in heals {
        let next: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT min(finished_at) FROM runs WHERE finished_at >= $1 \
             AND status IN ('completed', 'needs_input') AND request_message_id IS DISTINCT FROM $2",
        )
        .bind(heal)
        .bind(marker)
        .fetch_one(pool)
        .await
        .context("reading completion times")?;
        t.recovery_ms
            .push(next.map(|n| (n - *heal).num_milliseconds().max(0)));
    }
    Ok(t)
}

async fn count_poison(pool: &PgPool, sent: &Sent, t: &mut Tally) -> Result<()> {
    if sent.poison.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = sent.poison.iter().map(|(id, _)| id.clone()).collect();
    let kinds: HashMap<&str, Kind> = sent
        .poison
        .iter()
        .map(|(id, k)| (id.as_str(), *k))
        .collect();
    let dead = dead_letters_of(pool, &ids)
        .await
        .context("reading dead letters")?;
    let ran = runs_of(pool, &ids).await?.len();
    t.poison_dead_lettered = dead.len();
    t.poison_unaccounted = ids.len().saturating_sub(dead.len()) + ran;
    let mut misfiled: BTreeMap<String, usize> = BTreeMap::new();
    for (id, error) in &dead {
        if let Some(kind) = kinds.get(id.as_str()) {
            if !error.starts_with(kind.expected()) {
                let class = error.split(':').next().unwrap_or_default();
                *misfiled
                    .entry(format!("{} as {class}", kind.name()))
                    .or_default() += 1;
            }
        }
    }
    t.poison_misfiled = misfiled
        .into_iter()
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
    Ok(())
}
