//! The HTTP API (axum), JSON under `/v1`, plus `/healthz`, `/readyz` and
//! `/metrics`. Errors map to status codes and never show internals.

pub mod auth;
pub mod dead_letters;
pub mod error;
pub mod health;
pub mod runs;
pub mod threads;

use axum::{
    extract::DefaultBodyLimit,
    routing::{get, post},
    Router,
};

use crate::pipeline::Engine;

/// Largest accepted HTTP body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The router over an engine.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/v1/runs", post(runs::create).get(runs::list))
        .route("/v1/runs/{id}", get(runs::get))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/v1/threads/{id}", get(threads::get))
        .route(
            "/v1/threads/{id}/messages",
            get(threads::messages).post(threads::follow_up),
        )
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/groups", get(dead_letters::groups))
        .route("/v1/dead-letters/replay", post(dead_letters::replay))
        .route("/v1/dead-letters/{id}", get(dead_letters::show))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(engine)
}

/// Serves the API on `listener` until `stop` fires.
pub async fn serve(
    engine: Engine,
    listener: tokio::net::TcpListener,
    mut stop: crate::pipeline::shutdown::Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(async move { stop.wait().await })
        .await
}
