//! The start of a phase attempt: the run is marked `running(phase)` (with
//! its history row) only if it waits for exactly that step, and the inputs
//! the phase reads come back in the same statement. Concurrent starts are
//! batched into one statement ([`start_phases`]), like the effects.

use std::{collections::BTreeMap, sync::OnceLock};

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
}

/// Outcome of trying to start a phase.
#[derive(Debug)]
pub enum Start {
    /// The run is now `running(phase)`; here are its inputs.
    Started(Box<Run>, Inputs),
    /// The run is not waiting for this step (final, cancelled, or moved on).
    NotRunnable(Box<Run>),
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
    start_phases(pool, std::slice::from_ref(env), actor)
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
            };
            results[k] = Some(Ok(Start::Started(Box::new(row.run), inputs)));
        }
        // Not started: tell a run that moved on from one that does not exist.
        for &k in &round {
            if results[k].is_none() {
                results[k] = Some(get(pool, envs[k].run_id).await.map(|run| match run {
                    Some(run) => Start::NotRunnable(Box::new(run)),
                    None => Start::Missing,
                }));
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
