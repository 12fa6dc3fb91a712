//! `/v1/runs`: enqueue, read (with long-poll), list, cancel.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{
    auth::{Caller, Tenant},
    error::ApiError,
};
use crate::{
    cache::Wakeup,
    pipeline::{intake, intake::RequestBody, Engine},
    store::{
        audit::Said,
        ledger,
        runs::{self, IntakeError, Run, RunFilter},
    },
};

/// Longest long-poll, seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// Longest `Idempotency-Key`, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Parses a request body, naming the offending field on failure (the path
/// to it, e.g. `message` or `context.budget`; a missing field is named by
/// serde's message).
pub fn parse_body(body: &[u8]) -> Result<RequestBody, ApiError> {
    if !intake::starts_as_object(body) {
        return Err(ApiError::Invalid {
            field: "body".into(),
            message: "must be a JSON object".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let req: RequestBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = known_path(e.path());
        let inner = e.into_inner();
        let text = inner.to_string();
        let field = if path.is_empty() {
            match text.strip_prefix("missing field `") {
                Some(rest) => rest.split('`').next().unwrap_or("body").to_string(),
                None => "body".to_string(),
            }
        } else {
            path
        };
        ApiError::Invalid {
            field,
            message: text,
        }
    })?;
    // Nothing may follow the object (serde_json stops reading after it).
    de.end().map_err(|e| ApiError::Invalid {
        field: "body".into(),
        message: e.to_string(),
    })?;
    req.validate().map_err(|e| ApiError::Invalid {
        field: e.field.to_string(),
        message: e.problem,
    })?;
    Ok(req)
}

/// The known part of a path to a field (`context.budget`, `context.l[1]`):
/// the segments before the first unknown one (serde_path_to_error shows
/// those as `?`, which names no field, e.g. for a syntax error between
/// fields); empty for the body itself.
fn known_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        if matches!(segment, Segment::Unknown) {
            break;
        }
        if !out.is_empty() && !matches!(segment, Segment::Seq { .. }) {
            out.push('.');
        }
        out.push_str(&segment.to_string());
    }
    out
}

/// Creates a run from a request body (shared with thread follow-ups).
pub async fn enqueue(
    engine: &Engine,
    tenant: String,
    req: RequestBody,
    key: Option<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let correlation_id = Uuid::new_v4().to_string();
    let new = req.into_new_run(tenant, correlation_id, key, None);
    let new_key = new.request_message_id.clone();
    let new_thread = new.thread_id;
    let new_request =
        json!({"message": new.message, "workload_id": new.workload_id, "context": new.context});
    let publisher = engine.link.publisher();
    let accepted = match intake::accept(engine, publisher.as_ref(), &new, "api").await {
        Ok(a) => a,
        Err(IntakeError::UnknownThread(_)) => return Err(ApiError::NotFound("thread")),
        Err(IntakeError::Db(e)) => return Err(e.into()),
    };
    let run = accepted.run;
    // A key reused for another request is the caller's mistake: say so
    // instead of answering with the first request's run.
    if !accepted.created {
        if let Some(key) = &new_key {
            if !same_request(&run, &new_request, new_thread) {
                return Err(ApiError::Conflict(format!(
                    "Idempotency-Key `{key}` was already used for a different request (run {})",
                    run.id
                )));
            }
        }
    }
    Ok((
        if accepted.created {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        },
        Json(json!({
            "run_id": run.id,
            "thread_id": run.thread_id,
            "correlation_id": run.correlation_id,
            "status": run.status,
            "status_url": format!("/v1/runs/{}", run.id),
            "created": accepted.created,
        })),
    ))
}

/// True when a run found by its idempotency key was created by the same
/// request (same message, workload, context and, if named, thread).
fn same_request(run: &Run, request: &Value, thread: Option<Uuid>) -> bool {
    run.request == *request && thread.is_none_or(|t| t == run.thread_id)
}

/// The `Idempotency-Key` header: 1-200 printable ASCII characters; anything
/// else is a 422 naming the header (never silently ignored).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = || ApiError::Invalid {
        field: "Idempotency-Key".into(),
        message: format!("use 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
    };
    let key = v.to_str().map_err(|_| invalid())?;
    let ok = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY
        && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(Some(key.to_string()))
    } else {
        Err(invalid())
    }
}

/// `POST /v1/runs`.
pub async fn create(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = idempotency_key(&headers)?;
    let req = parse_body(&body)?;
    enqueue(&engine, tenant, req, key).await
}

/// A run's language-model calls as its view shows them: each row with
/// `ledger` `hit` (a recorded answer reused: `reused_from` names it) or
/// `miss` (the model was called; `error` says if it failed).
fn model_calls(calls: &[ledger::CallRow]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| {
            let mut v = json!(c);
            v["ledger"] = json!(if c.call.reused_from.is_some() {
                "hit"
            } else {
                "miss"
            });
            v
        })
        .collect()
}

/// A run's usage: the totals of its calls, and per phase.
fn usage(phases: &[ledger::PhaseUsage]) -> Value {
    let total = phases
        .iter()
        .fold(ledger::Usage::default(), |acc, p| acc.merge(&p.usage));
    let mut v = json!(total);
    v["phases"] = json!(phases);
    v
}

/// The JSON view of a run with its history, its model calls and their usage.
pub async fn view(engine: &Engine, run: &Run) -> Result<Value, ApiError> {
    let history = runs::history(&engine.pool, run.id).await?;
    let attempts = runs::attempts(&engine.pool, run.id).await?;
    let calls = ledger::calls_of_run(&engine.pool, run.id).await?;
    let phases = ledger::usage_of_run(&engine.pool, run.id).await?;
    Ok(json!({
        "id": run.id,
        "tenant": run.tenant,
        "thread_id": run.thread_id,
        "correlation_id": run.correlation_id,
        "status": run.status,
        "phase": run.phase,
        "attempt": run.attempt,
        "replay": run.replay,
        "next_attempt_at": run.next_attempt_at,
        "priority": run.priority,
        "wait_reason": run.wait_reason,
        "result": run.result,
        "error": run.error,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "finished_at": run.finished_at,
        "history": history,
        "attempts": attempts,
        "model_calls": model_calls(&calls),
        "usage": usage(&phases),
    }))
}

/// Query of `GET /v1/runs/{id}`.
#[derive(Debug, Deserialize)]
pub struct GetQuery {
    /// Long-poll up to this many seconds for a final state.
    pub wait: Option<u64>,
}

/// `GET /v1/runs/{id}`: answers at once, or with `?wait=N` as soon as the run
/// is final (woken by Redis pub/sub) or after N seconds with its state then.
pub async fn get(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    Path(id): Path<Uuid>,
    Query(q): Query<GetQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(cache) = &engine.cache {
        if let Some(cached) = cache.get(id).await {
            if let Ok(v) = serde_json::from_str::<Value>(&cached) {
                if v["tenant"] == tenant.as_str() {
                    return Ok(Json(v));
                }
            }
        }
    }
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let run = runs::get_for_tenant(&engine.pool, &tenant, id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let run = if run.is_final() || wait.is_zero() {
        run
    } else {
        long_poll(&engine, &tenant, run, wait).await?
    };
    let v = view(&engine, &run).await?;
    if run.is_final() {
        if let Some(cache) = &engine.cache {
            cache.put(id, &v.to_string()).await;
        }
    }
    Ok(Json(v))
}

/// How often a long-poll re-reads Postgres while Redis announcements
/// arrive, and while they do not (Redis away): a lost wake-up costs at most
/// this much latency, never the answer.
const POLL_SUBSCRIBED: Duration = Duration::from_secs(5);
const POLL_UNSUBSCRIBED: Duration = Duration::from_secs(1);

async fn long_poll(
    engine: &Engine,
    tenant: &str,
    run: Run,
    wait: Duration,
) -> Result<Run, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribed before the re-read, so a change in between is not missed.
    let mut wakeups = engine.cache.as_ref().map(|c| c.wakeups());
    let mut current = runs::get_for_tenant(&engine.pool, tenant, run.id)
        .await?
        .unwrap_or(run);
    while !current.is_final() && tokio::time::Instant::now() < deadline {
        let subscribed = engine.cache.as_ref().is_some_and(|c| c.is_subscribed());
        let poll = if subscribed {
            POLL_SUBSCRIBED
        } else {
            POLL_UNSUBSCRIBED
        };
        let until = deadline.min(tokio::time::Instant::now() + poll);
        if let Some(rx) = wakeups.as_mut() {
            // Wake for this run, for "re-read everything", or on lag.
            loop {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Ok(Wakeup::Run(id))) if id != current.id => continue,
                    Ok(Err(broadcast::error::RecvError::Closed)) => {
                        tokio::time::sleep_until(until).await;
                        break;
                    }
                    _ => break,
                }
            }
        } else {
            tokio::time::sleep_until(until).await;
        }
        current = runs::get_for_tenant(&engine.pool, tenant, current.id)
            .await?
            .unwrap_or(current);
    }
    Ok(current)
}

/// Query of `GET /v1/runs`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Filter by correlation id.
    pub correlation_id: Option<String>,
    /// Filter by status.
    pub status: Option<String>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Page size (max 200).
    pub limit: Option<i64>,
}

fn encode_cursor(run: &Run) -> String {
    format!("{}_{}", run.created_at.timestamp_micros(), run.id)
}

fn decode_cursor(c: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::Invalid {
        field: "cursor".into(),
        message: "not a cursor from this API".into(),
    };
    let (ts, id) = c.split_once('_').ok_or_else(bad)?;
    let micros: i64 = ts.parse().map_err(|_| bad())?;
    let ts = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok((ts, id.parse().map_err(|_| bad())?))
}

/// `GET /v1/runs?correlation_id=…&status=…&cursor=…&limit=…`.
pub async fn list(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = &q.status {
        if s.parse::<crate::model::RunStatus>().is_err() {
            let names: Vec<&str> = crate::model::RunStatus::ALL
                .iter()
                .map(|st| st.as_str())
                .collect();
            return Err(ApiError::Invalid {
                field: "status".into(),
                message: format!("one of {}", names.join(", ")),
            });
        }
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let filter = RunFilter {
        correlation_id: q.correlation_id,
        status: q.status,
        after: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    let page = runs::list(&engine.pool, &tenant, &filter).await?;
    let next = if page.len() as i64 == limit {
        page.last().map(encode_cursor)
    } else {
        None
    };
    let items: Vec<Value> = page
        .iter()
        .map(|r| json!({"id": r.id, "status": r.status, "phase": r.phase, "correlation_id": r.correlation_id, "thread_id": r.thread_id, "created_at": r.created_at}))
        .collect();
    Ok(Json(json!({"runs": items, "next_cursor": next})))
}

/// `POST /v1/runs/{id}/cancel` with `{"reason": …}` (required: it goes in
/// the audit trail).
pub async fn cancel(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // Another tenant's run is 404 before anything else is said about it.
    crate::store::browse::run(&engine.pool, who.scope(), id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let said = Said::new(who.actor(), super::replays::ReasonBody::parse(&body)?);
    let (run, changed) = runs::cancel(&engine.pool, who.scope(), id, &said)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    if changed {
        if let Some(cache) = &engine.cache {
            cache.notify_later(id);
        }
    }
    Ok(Json(
        json!({"id": run.id, "status": run.status, "cancelled": changed}),
    ))
}
