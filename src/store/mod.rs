//! The store: Postgres access, one file per table family.
//!
//! Postgres is the source of truth for runs, their history and their
//! outputs. Every query is parameterized (`sqlx::query(..).bind(..)`).

pub mod dead_letters;
pub mod runs;
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

/// The embedded migrations (`migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool to the configured database. Statement logging is off, so
/// neither queries nor connection strings reach the logs.
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    connect_url(config.database_url.expose_secret(), config.db_pool_size).await
}

/// Opens a pool to a database URL.
pub async fn connect_url(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.disable_statement_logging();
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// True when an error means the database is unreachable or restarting (not
/// that a query is wrong). Such errors never burn a phase attempt.
pub fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 57P01-03: admin shutdown, crash
            // shutdown, cannot connect now; 53: insufficient resources.
            c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
        }),
        sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

/// True when a single `SELECT 1` succeeds.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}
