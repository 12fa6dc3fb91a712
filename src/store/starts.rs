//! The start of a phase attempt: the run is marked `running(phase)` (with
//! its history row) only if it waits for exactly that step, and the inputs
//! the phase reads come back in the same statement. Concurrent starts are
//! batched into one statement ([`start_phases`]), like the effects.
//!
//! A start takes the run's lease for its attempt (a fresh token; see
//! [`crate::pipeline::lease`]); a step whose lease another attempt holds
//! and keeps alive is not started ([`Start::Held`]).

use std::{collections::BTreeMap, sync::OnceLock, time::Duration};

use uuid::Uuid;

use super::Error;
use serde_json::Value;
use sqlx::PgPool;

use super::{
    batch::{column, fail_rest, split_round},
    runs::{get, Run, RUN_COLUMNS},
};
use crate::model::{envelope::Envelope, ThreadMessage};

/// What a phase reads: upstream outputs, the thread so far, and the
/// operator's patch when this is a patched replay.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Outputs of the phases that ran, by phase.
    pub outputs: BTreeMap<String, Value>,
    /// Earlier messages of the thread (up to 20, oldest first).
    pub thread: Vec<ThreadMessage>,
    /// JSON merge patch recorded with the replay, if any.
    pub patch: Option<Value>,
    /// The version of the data agents read (see [`crate::memo`]).
    pub data_version: i64,
    /// The token of the lease the started attempt holds on its run: its
    /// heartbeat renews it and its effect commits only while the run still
    /// holds it.
    pub lease_token: Uuid,
}

/// The lease of a start when the caller names none (tests, tools): 30 s,
/// as `NETRA_LEASE_MS` defaults to.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Outcome of trying to start a phase.
#[derive(Debug)]
pub enum Start {
    /// The run is now `running(phase)`; here are its inputs.
    Started(Box<Run>, Inputs),
    /// The run is not waiting for this step (final, cancelled, or moved on).
    NotRunnable(Box<Run>),
    /// Another attempt of exactly this step holds the run's lease and it is
    /// live (that attempt is running the phase): this copy must not run it.
    Held {
        /// The worker that holds the lease.
        owner: Option<String>,
    },
    /// No such run.
    Missing,
}

#[derive(sqlx::FromRow)]
struct StartedRow {
    #[sqlx(flatten)]
    run: Run,
    idx: i64,
    outputs: sqlx::types::Json<BTreeMap<String, Value>>,
    thread: sqlx::types::Json<Vec<ThreadMessage>>,
    patch: Option<Value>,
    data_version: i64,
}

/// Starts one phase attempt: [`start_phases`] with one envelope.
pub async fn start_phase(pool: &PgPool, env: &Envelope, actor: &str) -> Result<Start, Error> {
    start_phase_leased(pool, env, actor, DEFAULT_LEASE).await
}

/// Starts one phase attempt with a lease of `lease`: [`start_phases_leased`]
/// with one envelope.
pub async fn start_phase_leased(
    pool: &PgPool,
    env: &Envelope,
    actor: &str,
    lease: Duration,
) -> Result<Start, Error> {
    start_phases_leased(pool, std::slice::from_ref(env), actor, lease)
        .await
        .pop()
        .unwrap_or_else(|| Err(Error::internal("the start statement gave no answer")))
}

/// The start statement for a batch of envelopes of distinct runs: it locks
/// their runs in id order (as the effect statement does, so the two cannot
/// deadlock), marks those that wait for exactly the envelope's step
/// `running`, writes their history rows, and reads their inputs. A runtime
/// query: it binds one array per column and returns [`RUN_COLUMNS`], which
/// are put in at run time.
fn statement() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let cols: Vec<String> = RUN_COLUMNS
            .split(',')
            .map(|c| format!("runs.{}", c.trim()))
            .collect();
        let returning = cols.join(", ");
        include_str!("sql/start_phases.sql").replace("{returning}", &returning)
    })
}

/// Starts a batch of phase attempts with as few statements as possible
/// (one per round of distinct runs; a second copy of a message waits for
/// the next round). The results are in the order of `envs`; a failing
/// statement fails its round and the later ones, earlier rounds keep theirs.
pub async fn start_phases(
    pool: &PgPool,
    envs: &[Envelope],
    actor: &str,
) -> Vec<Result<Start, Error>> {
    start_phases_leased(pool, envs, actor, DEFAULT_LEASE).await
}

/// [`start_phases`] with leases of `lease` (taken by `actor`).
pub async fn start_phases_leased(
    pool: &PgPool,
    envs: &[Envelope],
    actor: &str,
    lease: Duration,
) -> Vec<Result<Start, Error>> {
    // A fresh token per attempt: a redelivered copy never holds the lease
    // of the attempt it duplicates.
    let tokens: Vec<Uuid> = envs.iter().map(|_| Uuid::new_v4()).collect();
    let mut results: Vec<Option<Result<Start, Error>>> = (0..envs.len()).map(|_| None).collect();
    let mut pending: Vec<usize> = (0..envs.len()).collect();
    while !pending.is_empty() {
        let (round, later) = split_round(pending, |k| Some(envs[k].run_id));
        let rows: Result<Vec<StartedRow>, Error> = sqlx::query_as(statement())
            .bind(column(&round, |k| envs[k].run_id))
            .bind(column(&round, |k| envs[k].phase.as_str()))
            .bind(column(&round, |k| {
                i32::try_from(envs[k].attempt).unwrap_or(i32::MAX)
            }))
            .bind(column(&round, |k| {
                i32::try_from(envs[k].replay).unwrap_or(i32::MAX)
            }))
            .bind(actor)
            .bind(lease.as_secs_f64())
            .bind(column(&round, |k| tokens[k]))
            .fetch_all(pool)
            .await
            .map_err(Error::from);
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                fail_rest(&mut results, round.into_iter().chain(later), e);
                break;
            }
        };
        pending = later;
        for row in rows {
            let Some(&k) = usize::try_from(row.idx - 1).ok().and_then(|i| round.get(i)) else {
                continue;
            };
            let inputs = Inputs {
                outputs: row.outputs.0,
                thread: row.thread.0,
                patch: row.patch.filter(|p| !p.is_null()),
                data_version: row.data_version,
                lease_token: tokens[k],
            };
            results[k] = Some(Ok(Start::Started(Box::new(row.run), inputs)));
        }
        // Not started: tell a step another attempt holds from a run that
        // moved on, and both from one that does not exist.
        for &k in &round {
            if results[k].is_none() {
                results[k] = Some(not_started(pool, &envs[k]).await);
            }
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::internal(
                    "a batch statement gave no answer for an item",
                ))
            })
        })
        .collect()
}

/// Why an envelope did not start: its step is held by a live lease of
/// another attempt, or the run is not waiting for it, or there is no run.
async fn not_started(pool: &PgPool, env: &Envelope) -> Result<Start, Error> {
    let Some(run) = get(pool, env.run_id).await? else {
        return Ok(Start::Missing);
    };
    let attempt = i32::try_from(env.attempt).unwrap_or(i32::MAX);
    let replay = i32::try_from(env.replay).unwrap_or(i32::MAX);
    let holder = sqlx::query_scalar!(
        "SELECT lease_owner FROM runs WHERE id = $1 AND status = 'running' AND phase = $2 \
         AND attempt = $3 AND replay = $4 AND lease_token IS NOT NULL \
         AND lease_expires_at > now()",
        env.run_id,
        env.phase,
        attempt,
        replay,
    )
    .fetch_optional(pool)
    .await?;
    Ok(match holder {
        Some(owner) => Start::Held { owner },
        None => Start::NotRunnable(Box::new(run)),
    })
}
