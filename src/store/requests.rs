//! Intake in the store: a request becomes a run (with its thread, the
//! user's message and the first history row), or finds the run an earlier
//! copy of the same request created. Concurrent requests are written by one
//! statement ([`create_runs`]), like the phase starts and effects.

use std::sync::OnceLock;

use super::Error;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    batch::{column, fail_rest, split_round},
    runs::{select_runs, Run, RUN_COLUMNS},
};
use crate::config::FairConfig;

/// A setting as the SQL integer it is bound as (saturating).
pub(super) fn to_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A request accepted for processing (serialized as such into the intake
/// inbox, see [`super::inbox`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewRun {
    /// Owning tenant.
    pub tenant: String,
    /// Continue this thread, or start a new one.
    pub thread_id: Option<Uuid>,
    /// Correlation id (generated upstream of here when absent).
    pub correlation_id: String,
    /// Idempotency key.
    pub request_message_id: Option<String>,
    /// Reply queue.
    pub reply_to: Option<String>,
    /// The user's message.
    pub message: String,
    /// Optional workload id.
    pub workload_id: Option<String>,
    /// Optional free-form context.
    pub context: Value,
    /// Priority, 0-9 (docs/DESIGN.md "Fair admission").
    pub priority: i16,
    /// Over its tenant's request rate: the run waits `over its rate`.
    #[serde(default)]
    pub over_rate: bool,
}

/// Why a request cannot become a run.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The thread does not exist for this tenant.
    #[error("unknown thread {0}")]
    UnknownThread(Uuid),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] Error),
}

/// Result of accepting a request.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The run.
    pub run: Run,
    /// False when the idempotency key matched an existing run.
    pub created: bool,
}

/// Creates the run (and thread) of a request: [`create_runs`] with one request.
pub async fn create_run(
    pool: &PgPool,
    new: &NewRun,
    first_phase: &str,
    actor: &str,
    fair: FairConfig,
) -> Result<Accepted, IntakeError> {
    create_runs(pool, std::slice::from_ref(new), first_phase, actor, fair)
        .await
        .pop()
        .unwrap_or_else(|| {
            Err(IntakeError::Db(Error::internal(
                "the intake statement gave no answer",
            )))
        })
}

/// The intake statement for a batch of requests with distinct idempotency
/// keys: each run whose thread is new or the tenant's, and whose key is new,
/// is inserted with its user message and history row; a new thread only
/// together with its run (the foreign key from the run is checked at the
/// end of the statement). One round trip, no explicit transaction. A
/// runtime query: it binds one array per column and returns
/// [`RUN_COLUMNS`], which are put in at run time.
fn statement() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| include_str!("sql/create_runs.sql").replace("{returning}", RUN_COLUMNS))
}

#[derive(sqlx::FromRow)]
struct CreatedRow {
    #[sqlx(flatten)]
    run: Run,
    idx: i64,
}

/// Creates the runs of a batch of requests with as few statements as
/// possible (a second request with the same idempotency key waits for the
/// next round, where it finds the run). The results are in the order of
/// `news`. A failing statement creates none of its round's runs and fails
/// them and the later rounds; the runs of earlier rounds stay created and
/// keep their results, so no request is created twice by a retry.
///
/// Keys are inserted in (tenant, key) order, so two batches that carry
/// copies of the same requests wait for each other in one order and cannot
/// deadlock.
pub async fn create_runs(
    pool: &PgPool,
    news: &[NewRun],
    first_phase: &str,
    actor: &str,
    fair: FairConfig,
) -> Vec<Result<Accepted, IntakeError>> {
    match pool.acquire().await {
        Ok(mut conn) => create_runs_on(&mut conn, news, first_phase, actor, fair).await,
        Err(e) => {
            let mut results: Vec<Option<Result<Accepted, IntakeError>>> =
                (0..news.len()).map(|_| None).collect();
            fail_rest(&mut results, 0..news.len(), Error::from(e));
            results.into_iter().flatten().collect()
        }
    }
}

/// [`create_runs`] on one connection, which may be in a transaction (the
/// inbox's drain creates runs in the transaction that deletes their
/// requests). In a transaction, a failed statement fails the transaction:
/// the caller rolls it back.
pub async fn create_runs_on(
    conn: &mut PgConnection,
    news: &[NewRun],
    first_phase: &str,
    actor: &str,
    fair: FairConfig,
) -> Vec<Result<Accepted, IntakeError>> {
    let mut results: Vec<Option<Result<Accepted, IntakeError>>> =
        (0..news.len()).map(|_| None).collect();
    // A new thread's id is chosen here, once per request.
    let threads: Vec<(Uuid, bool)> = news
        .iter()
        .map(|n| {
            (
                n.thread_id.unwrap_or_else(Uuid::new_v4),
                n.thread_id.is_none(),
            )
        })
        .collect();
    let mut pending: Vec<usize> = (0..news.len()).collect();
    while !pending.is_empty() {
        let (round, later) = split_round(pending, |k| {
            let n = &news[k];
            n.request_message_id
                .as_deref()
                .map(|key| (n.tenant.as_str(), key))
        });
        let rows = insert_round(&mut *conn, news, &threads, &round, first_phase, actor, fair).await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                fail_rest(&mut results, round.into_iter().chain(later), e);
                break;
            }
        };
        pending = later;
        for row in rows {
            if let Some(&k) = usize::try_from(row.idx - 1).ok().and_then(|i| round.get(i)) {
                results[k] = Some(Ok(Accepted {
                    run: row.run,
                    created: true,
                }));
            }
        }
        // Nothing was inserted: an earlier copy of the request made the run,
        // or the thread is not this tenant's.
        for &k in &round {
            if results[k].is_none() {
                results[k] = Some(not_created(&mut *conn, &news[k], threads[k].0).await);
            }
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(IntakeError::Db(Error::internal(
                    "a batch statement gave no answer for an item",
                )))
            })
        })
        .collect()
}

/// The intake statement for one round (requests with distinct keys): the
/// rows of the runs it created, each with its position in the round.
async fn insert_round(
    conn: &mut PgConnection,
    news: &[NewRun],
    threads: &[(Uuid, bool)],
    round: &[usize],
    first_phase: &str,
    actor: &str,
    fair: FairConfig,
) -> Result<Vec<CreatedRow>, Error> {
    let requests = column(round, |k| {
        let n = &news[k];
        json!({"message": n.message, "workload_id": n.workload_id, "context": n.context})
    });
    Ok(sqlx::query_as(statement())
        .bind(column(round, |_| Uuid::new_v4()))
        .bind(column(round, |k| news[k].tenant.as_str()))
        .bind(column(round, |k| threads[k].0))
        .bind(column(round, |k| news[k].correlation_id.as_str()))
        .bind(column(round, |k| news[k].request_message_id.as_deref()))
        .bind(column(round, |k| news[k].reply_to.as_deref()))
        .bind(&requests)
        .bind(column(round, |k| threads[k].1))
        .bind(column(round, |k| news[k].message.as_str()))
        .bind(first_phase)
        .bind(actor)
        .bind(column(round, |k| news[k].priority))
        .bind(to_i32(fair.in_flight))
        .bind(to_i32(fair.weight))
        .bind(fair.max_in_flight.map(to_i32))
        .bind(column(round, |k| news[k].over_rate))
        .fetch_all(conn)
        .await?)
}

/// A request the intake statement created no run for: the run an earlier
/// copy of it created, or an unknown thread (`thread`, not the tenant's).
async fn not_created(
    conn: &mut PgConnection,
    n: &NewRun,
    thread: Uuid,
) -> Result<Accepted, IntakeError> {
    let found = match &n.request_message_id {
        Some(key) => find_by_request_id(conn, &n.tenant, key).await?,
        None => None,
    };
    match found {
        Some(run) => Ok(Accepted {
            run,
            created: false,
        }),
        None => Err(IntakeError::UnknownThread(thread)),
    }
}

async fn find_by_request_id(
    conn: &mut PgConnection,
    tenant: &str,
    key: &str,
) -> Result<Option<Run>, Error> {
    Ok(
        select_runs!("WHERE tenant = $1 AND request_message_id = $2", tenant, key,)
            .fetch_optional(conn)
            .await?,
    )
}
