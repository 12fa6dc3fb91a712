//! Intake: turns an upstream request (from `<ns>.requests` or `POST /v1/runs`)
//! into a run and publishes its first phase message.
//!
//! The request's `message_id` (or `Idempotency-Key`) makes the same request
//! create one run however often it arrives; a repeat publishes the first
//! phase message again, which the phase consumer deduplicates. While
//! `<ns>.requests` is backlogged, AMQP requests are checked, spooled to the
//! intake inbox and acked, and become runs a few per tenant at a time
//! ([`super::inbox`]).

use lapin::message::Delivery;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use std::time::Instant;

use super::{batcher::Batcher, dispatch, envelope::Poison, inbox::Spooling, settle, Engine};
use crate::{
    broker::publisher::Publisher,
    error::InfraError,
    store::{
        self,
        runs::{self, Accepted, IntakeError, NewRun},
    },
};

/// What intake did with a request: made (or found) its run, or stored it in
/// the intake inbox to become a run soon (see [`super::inbox`]).
#[derive(Debug, Clone)]
pub enum Taken {
    /// The run exists.
    Accepted(Box<Accepted>),
    /// The request is spooled.
    Spooled,
}

/// Batched intake of AMQP requests: the runs of concurrent requests are
/// created by one statement (see [`runs::create_runs`]); the requests of a
/// failed statement (none of which was created) are retried one at a time,
/// so each gets its own error (during an outage they all fail at once).
/// A full batch, and every batch for a moment after one, is spooled to the
/// intake inbox instead (see [`super::inbox`]).
pub type Creator = Batcher<NewRun, Result<Taken, IntakeError>>;

/// Starts the intake batcher over `pool`.
pub fn creator(
    pool: sqlx::PgPool,
    first_phase: &'static str,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    batch: usize,
    fair: crate::config::FairConfig,
) -> Creator {
    let spooling = std::sync::Arc::new(Spooling::new(batch));
    Batcher::start("requests", metrics, batch, 1, move |news: Vec<NewRun>| {
        let (pool, spooling) = (pool.clone(), spooling.clone());
        async move {
            if spooling.wanted(news.len(), Instant::now()) {
                match store::inbox::spool(&pool, &news).await {
                    Ok(stored) => {
                        spooling.spooled(Instant::now());
                        return news
                            .iter()
                            .zip(stored)
                            .map(|(new, ok)| match ok {
                                true => Ok(Taken::Spooled),
                                false => Err(IntakeError::UnknownThread(
                                    new.thread_id.unwrap_or_default(),
                                )),
                            })
                            .collect();
                    }
                    Err(e) if e.is_outage() => {
                        return news
                            .iter()
                            .map(|_| Err(IntakeError::Db(e.clone())))
                            .collect()
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "spooling failed; creating the runs instead")
                    }
                }
            }
            let results = runs::create_runs(&pool, &news, first_phase, "amqp", fair).await;
            let alone = news.len() == 1;
            let mut out = Vec::with_capacity(news.len());
            for (new, result) in news.iter().zip(results) {
                out.push(match result {
                    Err(IntakeError::Db(e)) if !alone && !e.is_outage() => {
                        tracing::debug!(error = %e, "batched request failed; creating it alone");
                        runs::create_run(&pool, new, first_phase, "amqp", fair).await
                    }
                    other => other,
                });
            }
            out.into_iter()
                .map(|r| r.map(|a| Taken::Accepted(Box::new(a))))
                .collect()
        }
    })
}

/// The highest priority a request may carry (AMQP priorities above it
/// count as it).
pub const MAX_PRIORITY: u8 = 9;

/// Longest accepted request text, in characters.
pub const MAX_MESSAGE_CHARS: usize = 20_000;

/// The body of an upstream request (docs/DESIGN.md "Messages").
#[derive(Debug, Clone, Deserialize)]
pub struct RequestBody {
    /// The user's request in plain language.
    pub message: String,
    /// Continue this thread.
    #[serde(default)]
    pub thread_id: Option<Uuid>,
    /// The workload the request is about.
    #[serde(default)]
    pub workload_id: Option<String>,
    /// Free-form context.
    #[serde(default)]
    pub context: Option<Value>,
    /// Priority, 0 (default) to 9: a tenant's waiting runs are released
    /// highest first (over AMQP the message's `priority` property wins).
    #[serde(default)]
    pub priority: Option<u8>,
}

/// Why text with a NUL character is refused: Postgres cannot store it, so
/// it is bad input, refused where it enters (never an outage to retry).
pub const NUL_PROBLEM: &str = "must not contain the NUL character (\\u0000)";

/// True when any string (or object key) inside `v` contains NUL.
pub fn json_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(json_has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// True when a body starts as a JSON object. serde reads a struct from an
/// array too (by position: `["hi"]` would be `{"message": "hi"}`), and a
/// request is an object, nothing else.
pub fn starts_as_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// A field-level validation failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl RequestBody {
    /// Checks the fields.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.message.trim().is_empty() {
            return Err(Invalid {
                field: "message",
                problem: "must not be empty".into(),
            });
        }
        if self.message.contains('\0') {
            return Err(Invalid {
                field: "message",
                problem: NUL_PROBLEM.into(),
            });
        }
        if self.priority.is_some_and(|p| p > MAX_PRIORITY) {
            return Err(Invalid {
                field: "priority",
                problem: format!("must be from 0 to {MAX_PRIORITY}"),
            });
        }
        if self.message.chars().count() > MAX_MESSAGE_CHARS {
            return Err(Invalid {
                field: "message",
                problem: format!("longer than {MAX_MESSAGE_CHARS} characters"),
            });
        }
        if let Some(w) = &self.workload_id {
            let ok = !w.is_empty()
                && w.len() <= 128
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if !ok {
                return Err(Invalid {
                    field: "workload_id",
                    problem: "use 1-128 letters, digits, '-', '_', '.', ':'".into(),
                });
            }
        }
        if let Some(c) = &self.context {
            if !c.is_object() {
                return Err(Invalid {
                    field: "context",
                    problem: "must be a JSON object".into(),
                });
            }
            if json_has_nul(c) {
                return Err(Invalid {
                    field: "context",
                    problem: NUL_PROBLEM.into(),
                });
            }
        }
        Ok(())
    }

    /// Decodes and validates a raw body.
    pub fn decode(body: &[u8], max_bytes: usize) -> Result<Self, Poison> {
        let text = super::envelope::body_text(body, max_bytes)?;
        if !starts_as_object(text.as_bytes()) {
            return Err(Poison::new(
                "invalid_request",
                "invalid request: the body must be a JSON object",
            ));
        }
        let req: RequestBody = serde_json::from_str(text)
            .map_err(|e| Poison::new("invalid_request", format!("invalid request: {e}")))?;
        req.validate()
            .map_err(|e| Poison::new("invalid_request", e.to_string()))?;
        Ok(req)
    }

    /// The run this request asks for.
    pub fn into_new_run(
        self,
        tenant: String,
        correlation_id: String,
        key: Option<String>,
        reply_to: Option<String>,
    ) -> NewRun {
        NewRun {
            tenant,
            thread_id: self.thread_id,
            correlation_id,
            request_message_id: key,
            reply_to,
            message: self.message,
            workload_id: self.workload_id,
            context: self
                .context
                .unwrap_or_else(|| Value::Object(Default::default())),
            priority: i16::from(self.priority.unwrap_or(0).min(MAX_PRIORITY)),
            over_rate: false,
        }
    }
}

/// Creates (or finds) the run and publishes its current step if it is queued.
/// Without a publisher (broker down) the run still exists and the stale-run
/// sweeper publishes it later.
pub async fn accept(
    engine: &Engine,
    publisher: Option<&Publisher>,
    new: &NewRun,
    actor: &str,
) -> Result<Accepted, IntakeError> {
    let mut new = new.clone();
    new.over_rate = over_rate(engine, &new.tenant).await?;
    let accepted = runs::create_run(
        &engine.pool,
        &new,
        engine.agents.router().first(),
        actor,
        engine.config.fair,
    )
    .await?;
    if accepted.run.status == crate::model::RunStatus::Queued {
        if let (Some(publisher), Some(env)) = (publisher, accepted.run.envelope()) {
            if let Err(e) = publisher
                .publish_routed(&dispatch::phase_message(&engine.names, &engine.seal, &env))
                .await
            {
                tracing::warn!(error = %e, run_id = %accepted.run.id, "first phase not published yet; the sweeper will retry");
            }
        }
    }
    Ok(accepted)
}

/// The key of a tenant's request-rate window (shared by every way in).
pub fn rate_key(tenant: &str) -> String {
    format!("requests:{tenant}")
}

/// Whether a new request of `tenant` is over its request rate, counting it
/// in the tenant's window when it is not (docs/DESIGN.md "Fair admission");
/// false without asking anything when the tenant has no rate.
pub async fn over_rate(engine: &Engine, tenant: &str) -> Result<bool, store::Error> {
    let limit = engine
        .tenant_facts
        .requests_per_min(&engine.pool, tenant, engine.config.fair)
        .await?;
    if limit == 0 {
        return Ok(false);
    }
    Ok(engine
        .limiter
        .check(engine.cache.as_ref(), &rate_key(tenant), limit)
        .await
        .is_some())
}

/// Handles one delivery from `<ns>.requests`.
pub async fn handle(engine: Engine, publisher: Publisher, delivery: Delivery) {
    let result = process(&engine, &publisher, &delivery).await;
    settle::settle(&engine, &delivery, result).await;
}

/// Reads an optional text property of a request; a value with NUL is
/// refused (Postgres cannot store it) as the request's fault.
fn text_property(
    name: &'static str,
    value: Option<&lapin::types::ShortString>,
) -> Result<Option<String>, Poison> {
    match value.map(|v| v.as_str()).filter(|v| !v.is_empty()) {
        Some(v) if v.contains('\0') => Err(Poison::new(
            "invalid_request",
            format!("property {name} {NUL_PROBLEM}"),
        )),
        Some(v) => Ok(Some(v.to_string())),
        None => Ok(None),
    }
}

/// Who sent a request: the tenant mapped to its broker-validated `user_id`
/// (RabbitMQ refuses a `user_id` that is not the connection's user), or the
/// deployment's tenant for requests without one, if it names one. Anything
/// else is unauthorized.
async fn request_tenant(
    engine: &Engine,
    user: Option<&str>,
) -> Result<Result<(String, Option<String>), Poison>, InfraError> {
    Ok(match user {
        Some(user) => match engine
            .tenant_facts
            .tenant_of_user(&engine.pool, user)
            .await?
        {
            Some(t) => Ok((t, Some(user.to_string()))),
            None => Err(Poison::new(
                "unauthorized",
                format!("broker user `{user}` is not mapped to a tenant"),
            )),
        },
        None => match &engine.config.amqp_default_tenant {
            Some(t) => Ok((t.clone(), None)),
            None => Err(Poison::new(
                "unauthorized",
                "request without user_id, and NETRA_AMQP_DEFAULT_TENANT is not set",
            )),
        },
    })
}

/// The reply queues a request may name. No request may name a queue of
/// netra's namespace (`<ns>.…`: phase, request and dead-letter queues,
/// other tenants' reply queues) other than its broker user's own reply
/// queues (`<ns>.reply.<user>.…`, see [`crate::broker::permissions`]); a
/// mapped user must use its own, so that no tenant can have netra publish
/// into another tenant's queue. Requests without a user (the deployment's
/// tenant) may name any queue outside the namespace, such as a
/// server-named `amq.gen-…` queue.
fn reply_to_allowed(engine: &Engine, user: Option<&str>, reply_to: &str) -> bool {
    match user {
        Some(user) => reply_to.starts_with(&engine.names.reply_prefix(user)),
        None => !reply_to.starts_with(&format!("{}.", engine.names.namespace())),
    }
}

/// Turns a request into a run and publishes its first phase message, or
/// dead-letters the request when it is refused.
async fn process(
    engine: &Engine,
    publisher: &Publisher,
    delivery: &Delivery,
) -> Result<(), InfraError> {
    let outcome = match admit(engine, delivery).await? {
        Ok(new) => create(engine, new).await?,
        Err(p) => Err(p),
    };
    match outcome {
        Ok(Taken::Accepted(accepted)) => publish_accepted(engine, publisher, &accepted).await,
        Ok(Taken::Spooled) => Ok(()),
        Err(p) => settle::dead_letter_poison(engine, publisher, "requests", delivery, &p).await,
    }
}

/// The run a delivery asks for, or why it is refused: its body, the
/// sender's tenant and the properties it is addressed with.
async fn admit(engine: &Engine, delivery: &Delivery) -> Result<Result<NewRun, Poison>, InfraError> {
    let body = match RequestBody::decode(&delivery.data, engine.config.max_message_bytes) {
        Ok(b) => b,
        Err(p) => return Ok(Err(p)),
    };
    let props = &delivery.properties;
    let user = props.user_id().as_ref().map(|u| u.as_str().to_string());
    let (tenant, mapped_user) = match request_tenant(engine, user.as_deref()).await? {
        Ok(t) => t,
        Err(p) => return Ok(Err(p)),
    };
    let (correlation_id, key, reply_to) = match addressing(engine, props, mapped_user.as_deref()) {
        Ok(a) => a,
        Err(p) => return Ok(Err(p)),
    };
    let priority = props.priority().map(|p| i16::from(p.min(MAX_PRIORITY)));
    let over_rate = over_rate(engine, &tenant).await?;
    let mut new = body.into_new_run(tenant, correlation_id, key, reply_to);
    if let Some(p) = priority {
        new.priority = p;
    }
    new.over_rate = over_rate;
    Ok(Ok(new))
}

/// A request's correlation id (a new one when it has none), idempotency
/// key and `reply_to`; refused when one holds NUL or the `reply_to` is not
/// a queue its sender may name.
fn addressing(
    engine: &Engine,
    props: &lapin::BasicProperties,
    mapped_user: Option<&str>,
) -> Result<(String, Option<String>, Option<String>), Poison> {
    let correlation_id = text_property("correlation_id", props.correlation_id().as_ref())?;
    let key = text_property("message_id", props.message_id().as_ref())?;
    let reply_to = text_property("reply_to", props.reply_to().as_ref())?;
    if let Some(r) = &reply_to {
        if !reply_to_allowed(engine, mapped_user, r) {
            return Err(Poison::new(
                "forbidden_reply_to",
                format!(
                    "reply_to `{r}` is not a queue this request may name (use {}…)",
                    engine.names.reply_prefix(mapped_user.unwrap_or("<user>"))
                ),
            ));
        }
    }
    let correlation_id = correlation_id.unwrap_or_else(|| Uuid::new_v4().to_string());
    Ok((correlation_id, key, reply_to))
}

/// Creates (or finds) the run through the intake batcher. A request the
/// database refuses (an unknown thread, data it cannot store) is refused;
/// an outage is an error, and the delivery comes back.
async fn create(engine: &Engine, new: NewRun) -> Result<Result<Taken, Poison>, InfraError> {
    let created = match engine.creator.call(new).await {
        Ok(Some(created)) => created,
        // The batch died (a panic): the delivery is handed back.
        Ok(None) => Err(IntakeError::Db(crate::store::Error::batch_died("requests"))),
        // The intake batcher is gone (shutdown): the delivery goes back.
        Err(_) => Err(IntakeError::Db(crate::store::Error::batcher_gone(
            "the intake batcher",
        ))),
    };
    match created {
        Ok(taken) => Ok(Ok(taken)),
        Err(IntakeError::UnknownThread(id)) => Ok(Err(Poison::new(
            "unknown_thread",
            format!("thread {id} does not exist for this tenant"),
        ))),
        Err(IntakeError::Db(e)) if e.is_bad_data() => Ok(Err(Poison::new(
            "rejected_by_database",
            format!(
                "the database refused the request's data (SQLSTATE {})",
                e.sqlstate().unwrap_or_default()
            ),
        ))),
        Err(IntakeError::Db(e)) => Err(InfraError::Database(e)),
    }
}

/// Publishes the first phase message of an accepted run that is queued (a
/// repeated request's too: the phase consumer deduplicates it).
async fn publish_accepted(
    engine: &Engine,
    publisher: &Publisher,
    accepted: &Accepted,
) -> Result<(), InfraError> {
    if accepted.run.status == crate::model::RunStatus::Queued {
        if let Some(env) = accepted.run.envelope() {
            publisher
                .publish_routed(&dispatch::phase_message(&engine.names, &engine.seal, &env))
                .await?;
        }
    }
    tracing::info!(run_id = %accepted.run.id, created = accepted.created, "request accepted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_validation_names_the_field() {
        assert_eq!(
            RequestBody::decode(br#"{"message": ""}"#, 1000)
                .unwrap_err()
                .kind,
            "invalid_request"
        );
        let e =
            RequestBody::decode(br#"{"message": "x", "workload_id": "a b"}"#, 1000).unwrap_err();
        assert!(e.reason.contains("workload_id"), "{e}");
        let e = RequestBody::decode(br#"["cut cost"]"#, 1000).unwrap_err();
        assert!(e.reason.contains("JSON object"), "{e}");
        let e = RequestBody::decode(br#"{"nope": 1}"#, 1000).unwrap_err();
        assert!(e.reason.contains("message"), "{e}");
        assert!(
            RequestBody::decode(br#"{"message": "cut cost", "context": {"a": 1}}"#, 1000).is_ok()
        );
        assert_eq!(
            RequestBody::decode(&[0xff], 1000).unwrap_err().kind,
            "not_utf8"
        );
    }
}
