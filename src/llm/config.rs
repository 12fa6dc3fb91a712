//! The language-model settings (`NETRA_LLM_*`). Without
//! `NETRA_LLM_BASE_URL` no model is used: the agents run the embedded
//! analyst, offline.

use std::time::Duration;

use secrecy::SecretString;

use crate::{config::ConfigError, model::Phase};

/// What a phase does when the model cannot be used: its call failed (a
/// transient failure on every try, or a permanent one), or its answer was
/// refused twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Use the embedded analyst's answer, and say so in the output's model
    /// note.
    Embedded,
    /// Fail the phase with the model's error: a transient one is retried
    /// as the phase's attempts allow, a permanent one or a twice-refused
    /// answer dead-letters at once.
    Fail,
}

/// The model endpoint and how it is used.
#[derive(Clone)]
pub struct LlmConfig {
    /// The OpenAI-compatible API's base URL, up to and including `/v1`
    /// (`NETRA_LLM_BASE_URL`); `None`: no model, the embedded analyst.
    pub base_url: Option<String>,
    /// The model to ask (`NETRA_LLM_MODEL`).
    pub model: String,
    /// Sent as a bearer token (`NETRA_LLM_API_KEY`); never logged, never in
    /// an error or the ledger.
    pub api_key: Option<SecretString>,
    /// One call's time limit (`NETRA_LLM_TIMEOUT_MS`, default 60 s).
    pub timeout: Duration,
    /// An answer's token budget (`NETRA_LLM_MAX_TOKENS`, default 512).
    pub max_tokens: u32,
    /// Sent as `seed` (`NETRA_LLM_SEED`, default 7).
    pub seed: u64,
    /// What a model that cannot be used leads to (`NETRA_LLM_FALLBACK`:
    /// `embedded`, the default, or `fail`).
    pub fallback: Fallback,
    /// Calls per minute to the model, shared by all workers
    /// (`NETRA_LLM_RPM`, default 0: no limit).
    pub requests_per_minute: u32,
    /// Tokens per minute (prompt estimate plus the answer's budget), shared
    /// by all workers (`NETRA_LLM_TPM`, default 0: no limit).
    pub tokens_per_minute: u32,
    /// How long one call may wait for the rate limits before its phase is
    /// rescheduled without spending an attempt (`NETRA_LLM_RATE_WAIT_MS`,
    /// default 30 s); also the longest `Retry-After` a retry waits out (a
    /// server that asks for longer is not called again by that call).
    pub rate_limit_wait: Duration,
    /// Transient failures retried within one attempt, with backoff, before
    /// the attempt fails (`NETRA_LLM_RETRIES`, default 2).
    pub retries: u32,
    /// The phases that ask the model (`NETRA_LLM_PHASES`, comma-separated;
    /// default `triage,reporting`, the two that have prompts).
    pub phases: Vec<Phase>,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("max_tokens", &self.max_tokens)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            base_url: None,
            model: String::new(),
            api_key: None,
            timeout: Duration::from_secs(60),
            max_tokens: 512,
            seed: 7,
            fallback: Fallback::Embedded,
            requests_per_minute: 0,
            tokens_per_minute: 0,
            rate_limit_wait: Duration::from_secs(30),
            retries: 2,
            phases: vec![Phase::Triage, Phase::Reporting],
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ConfigError {
            var: name,
            reason: format!("`{v}` is not a non-negative whole number"),
        }),
    }
}

/// `NETRA_LLM_PHASES`: phase names, comma-separated.
fn phases(list: &str) -> Result<Vec<Phase>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<Phase>().map_err(|e| ConfigError {
                var: "NETRA_LLM_PHASES",
                reason: e.to_string(),
            })
        })
        .collect()
}

impl LlmConfig {
    /// Reads `NETRA_LLM_*`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = LlmConfig::default();
        let base_url = var("NETRA_LLM_BASE_URL").map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &base_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(ConfigError {
                    var: "NETRA_LLM_BASE_URL",
                    reason:
                        "must start with http:// or https:// (for example http://127.0.0.1:8093/v1)"
                            .into(),
                });
            }
        }
        let model = var("NETRA_LLM_MODEL").unwrap_or_default();
        if base_url.is_some() && model.is_empty() {
            return Err(ConfigError {
                var: "NETRA_LLM_MODEL",
                reason: "is required when NETRA_LLM_BASE_URL is set".into(),
            });
        }
        let fallback = match var("NETRA_LLM_FALLBACK").as_deref() {
            None | Some("embedded") => Fallback::Embedded,
            Some("fail") => Fallback::Fail,
            Some(other) => {
                return Err(ConfigError {
                    var: "NETRA_LLM_FALLBACK",
                    reason: format!("`{other}` is neither `embedded` nor `fail`"),
                })
            }
        };
        let ms = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(number(
                name,
                u64::try_from(default.as_millis()).unwrap_or(u64::MAX),
            )?))
        };
        let timeout = ms("NETRA_LLM_TIMEOUT_MS", d.timeout)?;
        if timeout.is_zero() {
            return Err(ConfigError {
                var: "NETRA_LLM_TIMEOUT_MS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(LlmConfig {
            base_url,
            model,
            api_key: var("NETRA_LLM_API_KEY").map(SecretString::from),
            timeout,
            max_tokens: number("NETRA_LLM_MAX_TOKENS", d.max_tokens)?.max(1),
            seed: number("NETRA_LLM_SEED", d.seed)?,
            fallback,
            requests_per_minute: number("NETRA_LLM_RPM", d.requests_per_minute)?,
            tokens_per_minute: number("NETRA_LLM_TPM", d.tokens_per_minute)?,
            rate_limit_wait: ms("NETRA_LLM_RATE_WAIT_MS", d.rate_limit_wait)?,
            retries: number("NETRA_LLM_RETRIES", d.retries)?,
            phases: match var("NETRA_LLM_PHASES") {
                None => d.phases,
                Some(list) => phases(&list)?,
            },
        })
    }

    /// True when a model is configured and `phase` asks it.
    pub fn used_by(&self, phase: Phase) -> bool {
        self.enabled() && self.phases.contains(&phase)
    }

    /// True when a model is configured.
    pub fn enabled(&self) -> bool {
        self.base_url.is_some()
    }
}
