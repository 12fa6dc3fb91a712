//! Error policy.
//!
//! A failing phase returns a [`PhaseError`] that says what to do next:
//! `Transient` failures (a dependency timed out, answered 429/5xx, a handler
//! timeout) are retried after exponential backoff until the phase's attempts
//! are spent; `Permanent` failures (bad input, unknown schema, an agent error
//! or panic) are dead-lettered at once with a reason a person can read.
//!
//! Outages of netra's own infrastructure (Postgres, RabbitMQ) are not phase
//! failures at all: they are [`InfraError`]s, which never burn an attempt. The
//! delivery is handed back to the broker once the dependency is back. The
//! store answers [`crate::store::Error`], which already says whether a
//! database failure is an outage, refused data or something else.
//! `thiserror` enums live at each boundary; `anyhow` only in `main` and the CLI.

use std::fmt;

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Retry with backoff.
    Transient,
    /// Dead-letter now.
    Permanent,
}

impl ErrorClass {
    /// The lower-case name stored in history rows and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of one phase attempt.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class} error: {message}")]
pub struct PhaseError {
    /// Retry or dead-letter.
    pub class: ErrorClass,
    /// What went wrong, readable by an operator; never contains secrets.
    pub message: String,
    /// Set when the attempt could not run yet (a language model's rate
    /// limit): the phase runs again after this long, and the attempt does
    /// not count.
    pub defer: Option<std::time::Duration>,
}

impl PhaseError {
    /// A failure that a later attempt may not see.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            message: storable(message.into()),
            defer: None,
        }
    }

    /// A failure that will happen again on every attempt.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            message: storable(message.into()),
            defer: None,
        }
    }

    /// The attempt could not run yet: run the phase again after `after`,
    /// without counting this attempt (a rate limit, not a failure).
    pub fn deferred(message: impl Into<String>, after: std::time::Duration) -> Self {
        Self {
            class: ErrorClass::Transient,
            message: storable(message.into()),
            defer: Some(after),
        }
    }
}

/// The message with NUL written as `\u0000`: it is stored in Postgres
/// (history, dead letters), which refuses NUL in text, and a message may
/// quote its input.
fn storable(message: String) -> String {
    if message.contains('\0') {
        message.replace('\0', "\\u0000")
    } else {
        message
    }
}

/// netra's own infrastructure failed (database or broker): not the phase's
/// fault, so it never counts as an attempt.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// Postgres failed or is unreachable (the store's error says which).
    #[error("database: {0}")]
    Database(#[from] crate::store::Error),
    /// RabbitMQ failed, is unreachable, or refused a publish.
    #[error("broker: {0}")]
    Broker(String),
    /// Redis failed (only where Redis is needed for correctness).
    #[error("cache: {0}")]
    Cache(String),
}

impl From<lapin::Error> for InfraError {
    fn from(e: lapin::Error) -> Self {
        InfraError::Broker(e.to_string())
    }
}

impl InfraError {
    /// True when the database itself is unreachable or restarting, as opposed
    /// to a query that is wrong.
    pub fn is_database_outage(&self) -> bool {
        match self {
            InfraError::Database(e) => e.is_outage(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_storable_in_postgres() {
        let e = PhaseError::transient("bad \0 input");
        assert_eq!(e.message, "bad \\u0000 input");
        assert_eq!(PhaseError::permanent("plain").message, "plain");
    }
}
