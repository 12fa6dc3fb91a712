//! Dead-letter replay: resume a failed phase from persisted state.
//!
//! The Postgres index is the source of truth. Replaying one dead letter is
//! one transaction (run back to `queued(phase)` at the next replay
//! generation, the dead letter marked `replayed`, the patch recorded in the
//! history), then a confirmed publish of the phase message. A crash between
//! the two leaves a `queued` run that the stale-run sweeper publishes; a
//! rerun of the command skips what is already replayed. Only then are the
//! replayed copies removed from `<ns>.dlq.<phase>`, so the queue never holds
//! less than the index says is pending.

use std::time::Duration;

use lapin::{
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions},
    types::ShortString,
    Channel,
};
use sqlx::PgPool;

use super::{dispatch, envelope::Envelope, seal::Seal};
use crate::{
    broker::{publisher::Publisher, topology::Names},
    error::InfraError,
    store::{
        audit::Said,
        dead_letters::{self, DeadLetter, Replayed},
        replay_jobs, runs,
    },
};

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Show what would happen; change nothing.
    pub dry_run: bool,
    /// JSON merge patch over the phase's persisted inputs (keys are phase names).
    pub patch: Option<serde_json::Value>,
    /// At most this many replays per second (None: unlimited).
    pub rate: Option<f64>,
    /// Who asks (recorded in the history).
    pub actor: String,
    /// The bulk-replay job this is ([`start_job`]): progress is written to
    /// it after each dead letter, and an abort asked for stops the replay
    /// before the next one.
    pub job: Option<uuid::Uuid>,
}

/// What a replay did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Dead letters whose runs were queued again.
    pub replayed: usize,
    /// Already replayed earlier (a rerun), skipped.
    pub skipped: usize,
    /// Poison messages without a run: not replayable.
    pub not_replayable: usize,
    /// Would be replayed (dry run).
    pub would_replay: usize,
    /// Replayed copies removed from the dead-letter queues.
    pub drained: usize,
    /// The runs queued again: their cached final status (Redis) is stale,
    /// and the caller evicts it ([`evict_cached`]).
    pub runs: Vec<uuid::Uuid>,
    /// Stopped early: its job was aborted.
    pub aborted: bool,
}

/// A bulk replay to record before it starts.
#[derive(Debug, Clone)]
pub struct JobRequest<'a> {
    /// Who and why.
    pub said: &'a Said,
    /// What was asked for, as given (ids, group, phase).
    pub selection: serde_json::Value,
    /// The dead letters selected.
    pub targets: &'a [DeadLetter],
    /// The patch.
    pub patch: Option<&'a serde_json::Value>,
    /// Per second.
    pub rate: Option<f64>,
}

/// Records a bulk replay and its audit entry (one transaction) and returns
/// its id, for [`Options::job`]. The job's tenant is the targets' tenant
/// when they share one (so that tenant sees it), else none (an operator's
/// replay across tenants).
pub async fn start_job(pool: &PgPool, req: &JobRequest<'_>) -> Result<uuid::Uuid, InfraError> {
    let mut tenants = req.targets.iter().map(|d| d.tenant.as_deref());
    let first = tenants.next().flatten();
    let tenant = if tenants.all(|t| t == first) {
        first
    } else {
        None
    };
    let ids: Vec<uuid::Uuid> = req.targets.iter().map(|d| d.id).collect();
    let mut run_ids: Vec<uuid::Uuid> = req.targets.iter().filter_map(|d| d.run_id).collect();
    run_ids.sort_unstable();
    run_ids.dedup();
    Ok(replay_jobs::create(
        pool,
        &replay_jobs::NewJob {
            said: req.said,
            tenant,
            selection: req.selection.clone(),
            targets: &ids,
            runs: &run_ids,
            patch: req.patch,
            rate: req.rate,
        },
    )
    .await?)
}

/// [`replay`] for a job: the job ends `done`, `aborted` or `failed` (with
/// the error) whatever happens.
pub async fn run_job(
    pool: &PgPool,
    names: &Names,
    seal: &Seal,
    publisher: Option<&Publisher>,
    targets: &[DeadLetter],
    opts: &Options,
    progress: impl FnMut(usize),
) -> Result<Report, InfraError> {
    let result = replay(pool, names, seal, publisher, targets, opts, progress).await;
    if let Some(job) = opts.job {
        let (state, error) = match &result {
            Ok(r) if r.aborted => ("aborted", None),
            Ok(_) => ("done", None),
            Err(e) => ("failed", Some(e.to_string())),
        };
        if let Err(e) = replay_jobs::finish(pool, job, state, error.as_deref()).await {
            tracing::warn!(%job, error = %e, "replay job end not recorded; it will show as interrupted");
        }
    }
    result
}

/// Drops the cached final status of replayed runs, so that reads and
/// long-polls see them running again instead of their old outcome.
pub async fn evict_cached(cache: Option<&crate::cache::Cache>, runs: &[uuid::Uuid]) {
    if let Some(cache) = cache {
        for run in runs {
            cache.evict(*run).await;
        }
    }
}

/// Replays the given dead letters; `progress` is called after each one.
pub async fn replay(
    pool: &PgPool,
    names: &Names,
    seal: &Seal,
    publisher: Option<&Publisher>,
    targets: &[DeadLetter],
    opts: &Options,
    mut progress: impl FnMut(usize),
) -> Result<Report, InfraError> {
    let mut report = Report::default();
    let interval = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    for (i, dl) in targets.iter().enumerate() {
        if opts.dry_run {
            if dl.status == "pending" && dl.run_id.is_some() {
                report.would_replay += 1;
            }
            progress(i + 1);
            continue;
        }
        if i > 0 {
            if let Some(d) = interval {
                if paced(pool, opts.job, d).await? {
                    report.aborted = true;
                    break;
                }
            }
        }
        match dead_letters::mark_replayed(pool, dl.id, &opts.actor, opts.patch.as_ref()).await? {
            Replayed::Queued { run, .. } => {
                if let (Some(p), Some(r)) = (publisher, runs::get(pool, run).await?) {
                    if let Some(env) = r.envelope() {
                        p.publish_routed(&dispatch::phase_message(names, seal, &env))
                            .await?;
                    }
                }
                report.replayed += 1;
                report.runs.push(run);
            }
            Replayed::AlreadyDone => report.skipped += 1,
            Replayed::NoRun => report.not_replayable += 1,
        }
        progress(i + 1);
        if let Some(job) = opts.job {
            let counts = replay_jobs::Progress {
                done: count(i + 1),
                replayed: count(report.replayed),
                skipped: count(report.skipped),
                not_replayable: count(report.not_replayable),
            };
            if replay_jobs::progress(pool, job, counts).await? {
                report.aborted = true;
                break;
            }
        }
    }
    Ok(report)
}

/// Waits `d` before the next replay of a paced job, looking for an abort
/// at least every second; true when one was asked for.
async fn paced(pool: &PgPool, job: Option<uuid::Uuid>, d: Duration) -> Result<bool, InfraError> {
    let until = tokio::time::Instant::now() + d;
    loop {
        let now = tokio::time::Instant::now();
        if now >= until {
            return Ok(false);
        }
        tokio::time::sleep((until - now).min(Duration::from_secs(1))).await;
        if let Some(job) = job {
            if replay_jobs::abort_requested(pool, job).await? {
                return Ok(true);
            }
        }
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Removes from `<ns>.dlq.<phase>` the messages whose dead letters are no
/// longer pending; keeps every other message. Returns how many it removed.
pub async fn drain_replayed(
    pool: &PgPool,
    channel: &Channel,
    names: &Names,
    phase: &str,
) -> Result<usize, InfraError> {
    let queue = names.dlq(phase);
    let mut removed = 0;
    let mut keep = Vec::new();
    loop {
        let got = channel
            .basic_get(
                ShortString::from(queue.as_str()),
                BasicGetOptions::default(),
            )
            .await?;
        let Some(msg) = got else { break };
        let delivery = msg.delivery;
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string());
        let done = match &message_id {
            Some(id) => dead_letters::all_replayed(pool, id).await?,
            None => false,
        };
        if done {
            delivery.acker.ack(BasicAckOptions::default()).await?;
            removed += 1;
        } else {
            keep.push(delivery);
        }
        if msg.message_count == 0 {
            break;
        }
    }
    for d in keep {
        d.acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
    }
    Ok(removed)
}

/// The envelope a dead letter's run resumes with (for `dlq show`).
pub fn resumed_envelope(dl: &DeadLetter, correlation_id: &str) -> Option<Envelope> {
    let run = dl.run_id?;
    Some(Envelope::new(
        run,
        &dl.phase,
        1,
        u32::try_from(dl.replay + 1).unwrap_or(1),
        correlation_id,
        dl.tenant.as_deref().unwrap_or_default(),
    ))
}
