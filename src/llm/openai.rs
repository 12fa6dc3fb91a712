//! The OpenAI-compatible chat-completions client (`POST {base}/chat/completions`).
//!
//! HTTP is reqwest (rustls, no default features): maintained, async on the
//! hyper netra already serves with, with connection pooling and timeouts
//! built in; thousands of slow calls in flight each cost a future, not a
//! thread (ureq, already in the tree for the CLI, blocks a thread per call).
//!
//! The API key goes only into the `Authorization` header: errors carry the
//! status and a short excerpt of the body, never the key or the URL.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::{config::LlmConfig, ChatAnswer, ChatRequest, LanguageModel, ModelError};

/// The largest response body read; a longer one is refused.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// An OpenAI-compatible endpoint.
pub struct OpenAiCompatible {
    http: reqwest::Client,
    url: String,
    api_key: Option<secrecy::SecretString>,
}

impl OpenAiCompatible {
    /// A client of `config.base_url` (which must be set).
    pub fn new(config: &LlmConfig) -> Result<Self, ModelError> {
        let base = config
            .base_url
            .as_deref()
            .ok_or_else(|| ModelError::permanent("no model endpoint is configured"))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ModelError::permanent(format!("HTTP client: {}", e.without_url())))?;
        Ok(OpenAiCompatible {
            http,
            url: format!("{base}/chat/completions"),
            api_key: config.api_key.clone(),
        })
    }

    async fn send(&self, request: &ChatRequest) -> Result<ChatAnswer, ModelError> {
        let mut call = self.http.post(&self.url).json(&body(request));
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key.expose_secret());
        }
        let started = Instant::now();
        let mut response = call.send().await.map_err(transport_error)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ModelError::permanent(format!(
                    "the response is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        tracing::debug!(
            status = status.as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "model call"
        );
        if !status.is_success() {
            return Err(status_error(status, retry_after, &bytes, &request.model));
        }
        parse_answer(&bytes)
    }
}

impl LanguageModel for OpenAiCompatible {
    fn provider(&self) -> &'static str {
        "openai-compatible"
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatAnswer, ModelError>> {
        Box::pin(self.send(request))
    }
}

/// The request body.
pub fn body(request: &ChatRequest) -> Value {
    let mut b = json!({
        "model": request.model,
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "seed": request.seed,
        "stream": false,
    });
    if let Some(s) = &request.schema {
        b["response_format"] = json!({
            "type": "json_schema",
            "json_schema": {"name": s.name, "strict": true, "schema": s.schema},
        });
    }
    b
}

/// A failure before a status arrived, or while reading the body: transient.
fn transport_error(e: reqwest::Error) -> ModelError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the response body was cut short"
    } else {
        "the request failed"
    };
    ModelError::transient(format!("{kind}: {}", e.without_url()))
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured: `None`).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A non-2xx answer: 429 and 5xx are transient, other statuses permanent.
fn status_error(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    model: &str,
) -> ModelError {
    let excerpt = excerpt(body);
    if status.as_u16() == 429 || status.is_server_error() {
        return ModelError::Transient {
            message: format!("HTTP {}: {excerpt}", status.as_u16()),
            retry_after,
        };
    }
    if status.as_u16() == 404 && excerpt.to_lowercase().contains("model") {
        return ModelError::permanent(format!(
            "model `{model}` does not exist on the server (HTTP 404: {excerpt})"
        ));
    }
    ModelError::permanent(format!("HTTP {}: {excerpt}", status.as_u16()))
}

/// The start of a body, as text, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).replace('\0', "");
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text.to_string()
    }
}

/// Reads a chat completion.
pub fn parse_answer(bytes: &[u8]) -> Result<ChatAnswer, ModelError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ModelError::permanent(format!(
            "the response is not JSON ({e}): {}",
            excerpt(bytes)
        ))
    })?;
    let choice = &v["choices"][0];
    let content = choice["message"]["content"].as_str().ok_or_else(|| {
        ModelError::permanent(format!(
            "the response has no choices[0].message.content: {}",
            excerpt(bytes)
        ))
    })?;
    let tokens = |p: &Value| p.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let usage = &v["usage"];
    Ok(ChatAnswer {
        content: content.to_string(),
        input_tokens: tokens(&usage["prompt_tokens"]),
        output_tokens: tokens(&usage["completion_tokens"]),
        cached_tokens: tokens(&usage["prompt_tokens_details"]["cached_tokens"]),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        finish_reason: choice["finish_reason"].as_str().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let t = status_error(
            reqwest::StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            b"slow down",
            "m",
        );
        assert_eq!(
            t,
            ModelError::Transient {
                message: "HTTP 429: slow down".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(status_error(reqwest::StatusCode::BAD_GATEWAY, None, b"", "m").is_transient());
        assert!(!status_error(reqwest::StatusCode::BAD_REQUEST, None, b"bad", "m").is_transient());
        let missing = status_error(
            reqwest::StatusCode::NOT_FOUND,
            None,
            br#"{"error":"model not found"}"#,
            "gpt-9",
        );
        assert!(
            missing.to_string().contains("`gpt-9` does not exist"),
            "{missing}"
        );
    }

    #[test]
    fn answers_are_read_and_bad_bodies_refused() {
        let a = parse_answer(br#"{"model":"m","choices":[{"message":{"content":"{}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#).unwrap();
        assert_eq!(
            (a.input_tokens, a.output_tokens, a.content.as_str()),
            (12, 3, "{}")
        );
        assert!(!parse_answer(b"<html>").unwrap_err().is_transient());
        assert!(!parse_answer(br#"{"choices":[]}"#)
            .unwrap_err()
            .is_transient());
    }
}
