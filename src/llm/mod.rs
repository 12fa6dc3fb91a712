//! Language models: the chat-completions interface the agents think with,
//! and what keeps it safe to use from a queue worker.
//!
//! - [`LanguageModel`] is one chat-completions endpoint; [`openai`] is the
//!   OpenAI-compatible client (OpenAI, vLLM, Ollama, llama.cpp's
//!   `llama-server`, a LiteLLM proxy). The embedded analyst is not a
//!   language model: it is the deterministic analysis each agent runs when
//!   no model is configured, and what a model's answer falls back to.
//! - [`ModelError`] classifies failures: transient (connect errors,
//!   timeouts, 429 with its `Retry-After`, 5xx) or permanent (any other 4xx,
//!   a model that does not exist, an answer that is not what was asked). It
//!   also says which failures an agent may fall back from, and what the
//!   others make of the phase (`From<ModelError> for PhaseError`).
//! - [`client::ModelClient`] is what agents call: it renders nothing itself,
//!   but looks the request up in the call ledger first (a retry, redelivery
//!   or replay whose request did not change reuses the recorded answer and
//!   pays nothing), waits out the per-model rate limits (shared through
//!   Redis), calls the model, and records the call with its tokens, latency
//!   and cost.
//! - [`prompts`]: the system prompts, versioned files under `prompts/`.
//! - [`grounding`]: the checks that keep a model's inventions out of runs
//!   (spans that must state the numbers taken from them, numbers in prose
//!   that must come from the computed analysis).

pub mod client;
pub mod config;
pub mod grounding;
pub mod openai;
pub mod prompts;

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::PhaseError;

/// One chat-completions request, as rendered for the model. Its JSON is
/// what the ledger hashes and stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model asked.
    pub model: String,
    /// System prompt, then the conversation.
    pub messages: Vec<ChatMessage>,
    /// The JSON schema the answer must follow (structured output), with its
    /// name; `None` for free text.
    pub schema: Option<OutputSchema>,
    /// The answer's token budget.
    pub max_tokens: u32,
    /// Always 0: the same request should give the same answer.
    pub temperature: f64,
    /// Sent as `seed` where the server supports it, for the same reason.
    pub seed: u64,
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message of `role`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// A JSON schema for structured output (`response_format: json_schema`,
/// strict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSchema {
    /// The schema's name, as the API wants one.
    pub name: String,
    /// The schema (shared by every request that uses it).
    pub schema: std::sync::Arc<Value>,
}

/// What the model answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatAnswer {
    /// The answer's text (JSON text for structured output).
    pub content: String,
    /// Tokens of the prompt.
    pub input_tokens: u32,
    /// Tokens of the answer.
    pub output_tokens: u32,
    /// Tokens of the prompt served from the provider's cache.
    pub cached_tokens: u32,
    /// The model that answered, as the server names it.
    pub model: String,
    /// Why the answer ended (`stop`, `length`, …), when the server says.
    pub finish_reason: Option<String>,
}

/// Why a model call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// Worth retrying: a connect error, a timeout, a 5xx, or a 429.
    #[error("model call failed (transient): {message}")]
    Transient {
        /// What happened (never the API key).
        message: String,
        /// How long the server asked to wait (`Retry-After` of a 429 or 503).
        retry_after: Option<Duration>,
    },
    /// Not worth retrying: another 4xx, an unknown model, a body that is
    /// not a chat completion.
    #[error("model call failed (permanent): {message}")]
    Permanent {
        /// What happened.
        message: String,
    },
    /// The per-model rate limits did not admit the call in time: the phase
    /// should run again later, without counting this as a failure.
    #[error("model call rate limited: {message}")]
    RateLimited {
        /// Which limit.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The call ledger could not be read or written: the database is out,
    /// which the phase treats like any outage.
    #[error("call ledger: {0}")]
    Ledger(String),
}

impl ModelError {
    /// A transient failure without a `Retry-After`.
    pub fn transient(message: impl Into<String>) -> Self {
        ModelError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        ModelError::Permanent {
            message: message.into(),
        }
    }

    /// The kind of failure, as a span's `error.type`: `transient`,
    /// `permanent`, `rate_limited` or `ledger`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::Transient { .. } => "transient",
            ModelError::Permanent { .. } => "permanent",
            ModelError::RateLimited { .. } => "rate_limited",
            ModelError::Ledger(_) => "ledger",
        }
    }

    /// True for failures worth retrying.
    pub fn is_transient(&self) -> bool {
        !matches!(self, ModelError::Permanent { .. })
    }

    /// False for the failures no fallback may hide: a rate limit (the phase
    /// runs again when the limits admit the call) and an outage of the
    /// ledger's database (treated like any outage). The others mean the
    /// model could not be used, and an agent may go on without it.
    pub fn may_fall_back(&self) -> bool {
        !matches!(self, ModelError::RateLimited { .. } | ModelError::Ledger(_))
    }
}

/// What a failed model call makes of the phase when the agent does not fall
/// back: a rate limit defers the attempt by its `retry_after` (not counted
/// as a failure), a permanent failure is permanent, and the others (a
/// transient failure, the ledger's database out) are transient.
impl From<ModelError> for PhaseError {
    fn from(e: ModelError) -> Self {
        let message = e.to_string();
        match e {
            ModelError::RateLimited { retry_after, .. } => {
                PhaseError::deferred(message, retry_after)
            }
            ModelError::Permanent { .. } => PhaseError::permanent(message),
            ModelError::Transient { .. } | ModelError::Ledger(_) => PhaseError::transient(message),
        }
    }
}

/// One chat-completions endpoint.
pub trait LanguageModel: Send + Sync {
    /// The provider's name in the ledger (`openai-compatible`).
    fn provider(&self) -> &'static str;

    /// Sends one request.
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatAnswer, ModelError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    #[test]
    fn failures_the_agents_do_not_fall_back_from_become_phase_errors() {
        let wait = Duration::from_secs(7);
        let cases = [
            (
                ModelError::RateLimited {
                    message: "rpm".into(),
                    retry_after: wait,
                },
                false,
                ErrorClass::Transient,
                Some(wait),
            ),
            (
                ModelError::Ledger("db down".into()),
                false,
                ErrorClass::Transient,
                None,
            ),
            (
                ModelError::Transient {
                    message: "503".into(),
                    retry_after: Some(wait),
                },
                true,
                ErrorClass::Transient,
                None,
            ),
            (
                ModelError::permanent("400"),
                true,
                ErrorClass::Permanent,
                None,
            ),
        ];
        for (e, may, class, defer) in cases {
            assert_eq!(e.may_fall_back(), may, "{e}");
            let message = e.to_string();
            let p = PhaseError::from(e);
            assert_eq!((p.class, p.defer, p.message), (class, defer, message));
        }
    }
}
