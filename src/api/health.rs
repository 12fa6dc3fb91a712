//! Liveness, readiness (broker, database, cache each reported) and metrics.

use axum::{extract::State, http::StatusCode, response::IntoResponse, Json};
use serde_json::json;

use crate::{pipeline::Engine, store};

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Longest a readiness check waits for the database.
const DATABASE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /readyz`: 200 when broker and database are reachable. The cache is
/// reported (`up`, `degraded` when it does not answer within its timeout,
/// or `disabled`) but never makes netra unready: nothing waits on it. Every
/// check is bounded, so the answer comes at once.
pub async fn readyz(State(engine): State<Engine>) -> impl IntoResponse {
    let database_check = tokio::time::timeout(DATABASE_CHECK, store::ping(&engine.pool));
    let cache_check = async {
        match &engine.cache {
            Some(c) if c.ping().await => "up",
            Some(_) => "degraded",
            None => "disabled",
        }
    };
    let (database, cache) = tokio::join!(database_check, cache_check);
    let database = database.unwrap_or(false);
    let broker = engine.link.is_up();
    let ready = database && broker;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "broker": if broker { "up" } else { "down" },
            "database": if database { "up" } else { "down" },
            "cache": cache,
        })),
    )
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(engine): State<Engine>) -> impl IntoResponse {
    let mut extra = String::new();
    if let Ok(rows) = store::runs::count_by_status(&engine.pool).await {
        extra.push_str("# HELP netra_runs runs by status\n# TYPE netra_runs gauge\n");
        for (status, n) in rows {
            extra.push_str(&format!("netra_runs{{status=\"{status}\"}} {n}\n"));
        }
    }
    if let Ok(rows) = store::dead_letters::pending_by_phase(&engine.pool).await {
        extra.push_str("# HELP netra_dead_letters_pending pending dead letters by phase\n# TYPE netra_dead_letters_pending gauge\n");
        for (phase, n) in rows {
            extra.push_str(&format!(
                "netra_dead_letters_pending{{phase=\"{phase}\"}} {n}\n"
            ));
        }
    }
    if let Ok(counts) = store::fair::counts(&engine.pool).await {
        extra.push_str(&crate::metrics::render_tenants(&counts));
    }
    let mut queues = vec![
        engine.names.requests(),
        engine.names.dlq("requests"),
        engine.names.crashloop_queue(),
    ];
    for p in engine.agents.phases() {
        queues.push(engine.names.phase_queue(p));
        queues.push(engine.names.dlq(p));
    }
    let (hits, misses) = engine.memo.stats();
    extra.push_str(&format!(
        "# HELP netra_memo_lookups_total tool results looked up in the memo\n# TYPE netra_memo_lookups_total counter\n\
         netra_memo_lookups_total{{result=\"hit\"}} {hits}\nnetra_memo_lookups_total{{result=\"miss\"}} {misses}\n"
    ));
    extra.push_str(&crate::metrics::render_ledger(engine.ledger_stats()));
    let depths = engine.link.queue_depths(&queues).await;
    if !depths.is_empty() {
        extra.push_str("# HELP netra_queue_depth messages ready in each queue\n# TYPE netra_queue_depth gauge\n");
        for (q, n) in depths {
            extra.push_str(&format!("netra_queue_depth{{queue=\"{q}\"}} {n}\n"));
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        engine.metrics.render(&extra),
    )
}
