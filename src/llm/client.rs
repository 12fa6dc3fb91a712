//! The model client the agents call: ledger first, then the rate limits,
//! then the model, and every call recorded.
//!
//! A request is keyed by the SHA-256 of its rendered JSON and the prompt's
//! version. An earlier attempt, redelivery or replay of the same phase of
//! the same run that recorded an answer to the same key gets that answer
//! back, and the reuse is recorded as a row of its own (`reused_from`, no
//! tokens, no cost): the model is not called and nothing is paid twice. A
//! replay whose patch changed what the prompt is rendered from renders a
//! different request, so only that call is made again.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tracing::Instrument;

use super::{
    config::LlmConfig, prompts::Prompt, ChatAnswer, ChatMessage, ChatRequest, LanguageModel,
    ModelError, OutputSchema,
};
use crate::{
    cache::Cache,
    ratelimit::RateLimiter,
    store::ledger::{self, Call, CallScope, NewCall},
    telemetry::spans,
};

/// Counters of the ledger and the calls, for `/metrics`.
#[derive(Debug, Default)]
pub struct LedgerStats {
    /// Requests answered from the ledger.
    pub hits: AtomicU64,
    /// Requests that called the model.
    pub misses: AtomicU64,
    /// Calls that failed.
    pub failures: AtomicU64,
    /// Prompt tokens paid for.
    pub input_tokens: AtomicU64,
    /// Answer tokens paid for.
    pub output_tokens: AtomicU64,
    /// Time spent waiting for the rate limits, ms.
    pub rate_limited_ms: AtomicU64,
    /// Prompt and answer tokens paid for, per (model, phase).
    pub tokens_by: Mutex<BTreeMap<(String, String), (u64, u64)>>,
}

impl LedgerStats {
    /// Counts the tokens of one answer of `model` to `phase`.
    pub fn add_tokens(&self, model: &str, phase: &str, input: u32, output: u32) {
        if let Ok(mut by) = self.tokens_by.lock() {
            let e = by
                .entry((model.to_string(), phase.to_string()))
                .or_default();
            e.0 += u64::from(input);
            e.1 += u64::from(output);
        }
    }

    /// The tokens per (model, phase) so far.
    pub fn tokens_by_model_phase(&self) -> BTreeMap<(String, String), (u64, u64)> {
        self.tokens_by.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// An answer, and where it came from.
#[derive(Debug, Clone)]
pub struct Answered {
    /// The answer.
    pub answer: ChatAnswer,
    /// Its ledger row.
    pub ledger_id: i64,
    /// True when it was reused from the ledger.
    pub reused: bool,
    /// Time the call took, ms (0 for a reuse).
    pub latency_ms: f64,
}

/// The language model, as the agents use it.
pub struct ModelClient {
    model: Arc<dyn LanguageModel>,
    config: LlmConfig,
    pool: PgPool,
    cache: Option<Cache>,
    limiter: Arc<RateLimiter>,
    /// The counters.
    pub stats: Arc<LedgerStats>,
}

impl std::fmt::Debug for ModelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelClient")
            .field("provider", &self.model.provider())
            .field("model", &self.config.model)
            .finish_non_exhaustive()
    }
}

impl ModelClient {
    /// A client of `model`, recording into `pool`'s ledger.
    pub fn new(
        model: Arc<dyn LanguageModel>,
        config: LlmConfig,
        pool: PgPool,
        cache: Option<Cache>,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        ModelClient {
            model,
            config,
            pool,
            cache,
            limiter,
            stats: Arc::new(LedgerStats::default()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// What a run's phases have asked the model so far, per phase (from the
    /// ledger).
    pub async fn usage_of_run(
        &self,
        run_id: uuid::Uuid,
    ) -> Result<Vec<ledger::PhaseUsage>, ModelError> {
        ledger::usage_of_run(&self.pool, run_id)
            .await
            .map_err(ledger_error)
    }

    /// Renders a request: the prompt as the system message, then `messages`.
    pub fn request(
        &self,
        prompt: &Prompt,
        messages: Vec<ChatMessage>,
        schema: Option<OutputSchema>,
    ) -> ChatRequest {
        let mut all = vec![ChatMessage::new("system", prompt.text())];
        all.extend(messages);
        ChatRequest {
            model: self.config.model.clone(),
            messages: all,
            schema,
            max_tokens: self.config.max_tokens,
            temperature: 0.0,
            seed: self.config.seed,
        }
    }

    /// Answers `request`: from the ledger when this phase of this run asked
    /// the same before, otherwise from the model (within the rate limits,
    /// with `retries` retries of transient failures); every try is a ledger
    /// row (a failed one with its error, then the answer). Each call is a
    /// span, `chat <model>` (see [`crate::telemetry::spans::model_call`]).
    pub async fn call(
        &self,
        scope: &CallScope,
        purpose: &str,
        prompt: &Prompt,
        request: &ChatRequest,
    ) -> Result<Answered, ModelError> {
        let span = spans::model_call(&spans::ModelCall {
            provider: self.model.provider(),
            model: &request.model,
            purpose,
            prompt_version: prompt.version(),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            seed: request.seed,
        });
        let result = self
            .call_unobserved(scope, purpose, prompt, request)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(a) => spans::record_answer(&span, &a.answer, a.reused, a.ledger_id, a.latency_ms),
            Err(e) => spans::failed(&span, e.kind()),
        }
        result
    }

    async fn call_unobserved(
        &self,
        scope: &CallScope,
        purpose: &str,
        prompt: &Prompt,
        request: &ChatRequest,
    ) -> Result<Answered, ModelError> {
        // The text of the request as a JSON value (keys sorted): the key
        // stays what it was when the ledger stored values.
        let request_json = serde_json::to_value(request)
            .map_err(|e| ModelError::permanent(format!("request: {e}")))?
            .to_string();
        let hash = request_hash(prompt.version(), &request_json);
        let row = NewCall {
            scope,
            provider: self.model.provider(),
            request_hash: &hash,
            request: &request_json,
            response: None,
            call: Call {
                purpose,
                model: &request.model,
                prompt_version: prompt.version(),
                reused_from: None,
                error: None,
                input_tokens: 0,
                output_tokens: 0,
                cached_tokens: 0,
                latency_ms: 0.0,
                cost_usd: None,
                cost_basis: "reused",
            },
        };
        if let Some(reused) = self.reuse(&row).await? {
            return Ok(reused);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let mut tries = 0;
        loop {
            self.wait_for_rate(request).await?;
            let started = Instant::now();
            let result = self.model.complete(request).await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            match result {
                Ok(mut answer) => {
                    // Postgres refuses NUL in text; an answer never needs one.
                    answer.content = answer.content.replace('\0', "");
                    return self.record_answer(row, answer, latency_ms).await;
                }
                Err(e) => {
                    // Every try is a row: a retried failure stays visible.
                    self.record_failure(&row, &e, latency_ms).await;
                    match self.retry_wait(&e, tries) {
                        Some(wait) => {
                            tracing::info!(error = %e, ?wait, "model call failed; retrying");
                            tokio::time::sleep(wait).await;
                            tries += 1;
                        }
                        None => {
                            self.stats.failures.fetch_add(1, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// Records a failed try (best effort: the failure is what matters).
    async fn record_failure(&self, row: &NewCall<'_>, e: &ModelError, latency_ms: f64) {
        let message = e.to_string();
        let failed = NewCall {
            call: Call {
                latency_ms,
                error: Some(&message),
                cost_basis: "failed",
                ..row.call
            },
            ..row.clone()
        };
        if let Err(le) = ledger::record(&self.pool, &failed).await {
            tracing::warn!(error = %le, "could not record a failed model call");
        }
    }

    /// How long to wait before trying `e`'s request again (`None`: do not).
    /// A transient failure is retried `retries` times, after the server's
    /// `Retry-After` or a backoff of 0.5 s, 1 s, …; a `Retry-After` longer
    /// than `rate_limit_wait` is not waited out in the phase, and the server
    /// is not called again before it: the call fails.
    fn retry_wait(&self, e: &ModelError, tries: u32) -> Option<Duration> {
        let ModelError::Transient { retry_after, .. } = e else {
            return None;
        };
        if tries >= self.config.retries {
            return None;
        }
        match retry_after {
            Some(asked) if *asked > self.config.rate_limit_wait => None,
            Some(asked) => Some(*asked),
            None => {
                Some(Duration::from_millis(500u64 << tries.min(6)).min(self.config.rate_limit_wait))
            }
        }
    }

    /// The recorded answer to the same request, if there is one, recorded
    /// again as a reuse (one statement).
    async fn reuse(&self, row: &NewCall<'_>) -> Result<Option<Answered>, ModelError> {
        let found = ledger::reuse_answer(&self.pool, row)
            .await
            .map_err(ledger_error)?;
        let Some((id, rec)) = found else {
            return Ok(None);
        };
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Answered {
            answer: recorded_answer(&rec.response, rec.input_tokens, rec.output_tokens),
            ledger_id: id,
            reused: true,
            latency_ms: 0.0,
        }))
    }

    /// Records a model's answer with its tokens, latency and cost.
    async fn record_answer(
        &self,
        row: NewCall<'_>,
        answer: ChatAnswer,
        latency_ms: f64,
    ) -> Result<Answered, ModelError> {
        let (cost_usd, cost_basis) = cost(row.call.model, &answer);
        let response = json!({
            "content": answer.content,
            "finish_reason": answer.finish_reason,
            "model": answer.model,
        });
        let tokens = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        let id = ledger::record(
            &self.pool,
            &NewCall {
                response: Some(&response),
                call: Call {
                    input_tokens: tokens(answer.input_tokens),
                    output_tokens: tokens(answer.output_tokens),
                    cached_tokens: tokens(answer.cached_tokens),
                    latency_ms,
                    cost_usd,
                    cost_basis,
                    ..row.call
                },
                ..row
            },
        )
        .await
        .map_err(ledger_error)?;
        self.stats
            .input_tokens
            .fetch_add(u64::from(answer.input_tokens), Ordering::Relaxed);
        self.stats
            .output_tokens
            .fetch_add(u64::from(answer.output_tokens), Ordering::Relaxed);
        self.stats.add_tokens(
            row.call.model,
            &row.scope.phase,
            answer.input_tokens,
            answer.output_tokens,
        );
        Ok(Answered {
            answer,
            ledger_id: id,
            reused: false,
            latency_ms,
        })
    }

    /// Waits until the per-model limits admit the call (requests per minute,
    /// and the prompt's estimated tokens plus the answer's budget per
    /// minute), shared by all workers through Redis. A call that waited
    /// longer than `rate_limit_wait` fails transiently.
    async fn wait_for_rate(&self, request: &ChatRequest) -> Result<(), ModelError> {
        let (rpm, tpm) = (
            self.config.requests_per_minute,
            self.config.tokens_per_minute,
        );
        if rpm == 0 && tpm == 0 {
            return Ok(());
        }
        let chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
        let tokens = (chars / 4) as u64 + u64::from(request.max_tokens);
        let deadline = Instant::now() + self.config.rate_limit_wait;
        let cache = self.cache.as_ref();
        let key = format!("llm:{}", request.model);
        loop {
            let wait = match self.limiter.check(cache, &format!("{key}:rpm"), rpm).await {
                Some(w) => Some(w),
                None => {
                    self.limiter
                        .check_weighted(cache, &format!("{key}:tpm"), u64::from(tpm), tokens)
                        .await
                }
            };
            let Some(secs) = wait else { return Ok(()) };
            let pause = Duration::from_secs(secs);
            if Instant::now() + pause > deadline {
                return Err(ModelError::RateLimited {
                    message: format!(
                        "model `{}` is at its limit of {rpm} requests or {tpm} tokens per minute",
                        request.model
                    ),
                    retry_after: pause,
                });
            }
            self.stats.rate_limited_ms.fetch_add(
                u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            tokio::time::sleep(pause).await;
        }
    }
}

/// The ledger key of a request.
pub fn request_hash(prompt_version: &str, request: &str) -> String {
    let mut h = Sha256::new();
    h.update(prompt_version.as_bytes());
    h.update(b"\n");
    h.update(request.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// An answer rebuilt from its ledger row.
fn recorded_answer(response: &Value, input_tokens: i32, output_tokens: i32) -> ChatAnswer {
    let tokens = |n: i32| u32::try_from(n).unwrap_or(0);
    ChatAnswer {
        content: response["content"].as_str().unwrap_or_default().to_string(),
        input_tokens: tokens(input_tokens),
        output_tokens: tokens(output_tokens),
        cached_tokens: 0,
        model: response["model"].as_str().unwrap_or_default().to_string(),
        finish_reason: response["finish_reason"].as_str().map(str::to_string),
    }
}

/// The cost of an answer at the catalog's prices: `(None, "self-hosted")`
/// when the catalog has no price for the model.
fn cost(model: &str, answer: &ChatAnswer) -> (Option<f64>, &'static str) {
    match crate::catalog::Catalog::embedded().model(model) {
        Some(p) => {
            let cached = f64::from(answer.cached_tokens.min(answer.input_tokens));
            let fresh = f64::from(answer.input_tokens) - cached;
            let usd = (fresh * p.input_per_mtok
                + cached * p.input_per_mtok * (1.0 - p.cached_input_discount)
                + f64::from(answer.output_tokens) * p.output_per_mtok)
                / 1e6;
            (Some(usd), "catalog")
        }
        None => (None, "self-hosted"),
    }
}

/// A ledger read or write failed: the database is the problem, so the
/// attempt fails transiently (it is retried like any outage).
fn ledger_error(e: crate::store::Error) -> ModelError {
    ModelError::Ledger(e.to_string())
}
