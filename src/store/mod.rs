//! The store: Postgres access, one file per table family.
//!
//! Postgres is the source of truth for runs, their history and their
//! outputs. Every SQL statement of netra lives under this module (the
//! catalog, the tools and the engine call its typed functions, which return
//! rows), and every query is parameterized (`sqlx::query(..).bind(..)`).

pub mod batch;
pub mod catalog;
pub mod dead_letters;
pub mod effects;
pub mod error;
pub mod keys;
pub mod requests;
pub mod runs;
pub mod starts;
pub mod telemetry;
pub mod tenants;
pub mod threads;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, PgPool,
};

use crate::config::Config;

pub use error::Error;

/// The embedded migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool to the configured database. Statement logging is off, so
/// neither queries nor connection strings reach the logs.
pub async fn connect(config: &Config) -> Result<PgPool, Error> {
    connect_url(config.database_url.expose_secret(), config.db_pool_size).await
}

/// Opens a pool to a database URL.
pub async fn connect_url(url: &str, size: u32) -> Result<PgPool, Error> {
    let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.disable_statement_logging();
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?)
}

/// The settings of the engine's pools: the few statements the engine runs
/// per message are planned once per connection and reused
/// (`plan_cache_mode = force_generic_plan`). Without it Postgres re-plans
/// the effect and start statements on every execution, because parameters
/// that switch parts of them on and off make each custom plan look cheaper
/// than the generic one; `netra bench` measured 17% more runs/s with it.
/// The API's ad-hoc filters keep the default (custom plans) on the main pool.
fn engine_options(config: &Config) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(config
        .database_url
        .expose_secret()
        .parse::<PgConnectOptions>()?
        .disable_statement_logging()
        .options([("plan_cache_mode", "force_generic_plan")]))
}

/// The engine's pools hand out connections without a ping first (sqlx's
/// default is a round trip per acquire, i.e. per statement here): a
/// connection that broke fails its statement, which is an outage for the
/// caller (the delivery is handed back), and the pool replaces it.
fn engine_pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
}

/// Opens the pool of the engine's per-message statements: intake of AMQP
/// requests and the effect transactions (durable commits).
pub async fn connect_hot(config: &Config) -> Result<PgPool, Error> {
    Ok(engine_pool_options()
        .max_connections(config.db_pool_size)
        .connect_with(engine_options(config)?)
        .await?)
}

/// Opens a small pool whose commits do not wait for the WAL flush
/// (`synchronous_commit = off`). It is used only for the mark that a phase
/// attempt started (`running` and its history row): losing that mark in a
/// Postgres crash changes nothing that matters, because the message is
/// redelivered and the outcome of every attempt is committed durably on the
/// main pool. It saves one fsync per phase.
pub async fn connect_relaxed(config: &Config) -> Result<PgPool, Error> {
    Ok(engine_pool_options()
        .max_connections((config.db_pool_size / 2).max(2))
        .connect_with(engine_options(config)?.options([("synchronous_commit", "off")]))
        .await?)
}

/// Applies pending migrations. A failing migration statement is classified
/// like any statement (an outage stays an outage); a migration that cannot
/// be applied at all (edited after it was applied, missing) is
/// [`Error::Internal`]. The message is sqlx's.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    MIGRATOR.run(pool).await.map_err(|e| {
        let message = e.to_string();
        match e {
            sqlx::migrate::MigrateError::Execute(e) => Error::from(e).with_message(message),
            _ => Error::Internal(message),
        }
    })
}

/// The data version: a counter that statement triggers bump on every write
/// to telemetry, workloads or the catalog (see [`crate::memo`]).
pub async fn data_version(pool: &PgPool) -> Result<i64, Error> {
    Ok(sqlx::query_scalar("SELECT version FROM data_version")
        .fetch_one(pool)
        .await?)
}

/// True when a single `SELECT 1` succeeds.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}
