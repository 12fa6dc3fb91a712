//! Typed settings read from `NETRA_*` environment variables.
//!
//! Defaults point at the local stack started by `deploy/local/stack`, except
//! for credentials, which only that stack knows (`deploy/local/stack env`).
//! Connection URLs hold passwords, so they are kept as [`SecretString`] and
//! never appear in `Debug` output or logs; [`redact_url`] gives a loggable form.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

/// Concurrent handlers (and prefetch) per phase when nothing else is
/// configured. A handler mostly waits (for its batched start and commit, the
/// broker's confirm, an LLM), so more of them keep the CPUs busy and the
/// batches large: `netra bench` at 128 runs in flight gave 453, 494 and 569
/// runs/s with 8, 16 and 32, and no more with 64.
pub const DEFAULT_PHASE_CONCURRENCY: u16 = 32;

/// An invalid setting: names the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

/// All of netra's settings.
#[derive(Clone)]
pub struct Config {
    /// RabbitMQ URL (`NETRA_AMQP_URL`), secret because it holds a password.
    pub amqp_url: SecretString,
    /// Postgres URL (`NETRA_DATABASE_URL`).
    pub database_url: SecretString,
    /// Redis URL (`NETRA_REDIS_URL`).
    pub redis_url: SecretString,
    /// Address the HTTP API binds (`NETRA_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Queue/exchange name prefix (`NETRA_NAMESPACE`).
    pub namespace: String,
    /// Concurrent handlers (and prefetch) per phase (`NETRA_CONCURRENCY`,
    /// `NETRA_CONCURRENCY_<PHASE>`).
    pub concurrency: BTreeMap<String, u16>,
    /// Default concurrency for phases without their own setting.
    pub default_concurrency: u16,
    /// Attempts per phase before a transient failure dead-letters (`NETRA_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// First retry delay (`NETRA_RETRY_INITIAL_MS`).
    pub retry_initial: Duration,
    /// Cap on one retry delay (`NETRA_RETRY_MAX_MS`).
    pub retry_max: Duration,
    /// Time one phase handler may take before the attempt counts as a
    /// transient failure (`NETRA_PHASE_TIMEOUT_MS`).
    pub phase_timeout: Duration,
    /// Time in-flight work gets to finish on SIGTERM (`NETRA_SHUTDOWN_GRACE_MS`).
    pub shutdown_grace: Duration,
    /// Largest accepted message body in bytes (`NETRA_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Tenant of AMQP requests that carry no validated `user_id` (`NETRA_DEFAULT_TENANT`).
    pub default_tenant: String,
    /// Database pool size (`NETRA_DB_POOL`).
    pub db_pool_size: u32,
    /// Identifies this process in history rows (`NETRA_WORKER_ID`).
    pub worker_id: String,
    /// A run that sat `queued` this long has its message published again
    /// (`NETRA_REPUBLISH_AFTER_MS`).
    pub republish_after: Duration,
    /// API requests per tenant per minute, 0 for no limit (`NETRA_RATE_LIMIT_PER_MIN`).
    pub rate_limit_per_min: u32,
    /// Lifetime of cached agent outputs (`NETRA_AGENT_CACHE_TTL_SECS`, 0 = off).
    pub agent_cache_ttl_secs: u64,
    /// Tool results memoized in-process by data version
    /// (`NETRA_MEMO_ENTRIES`, default 4096; 0 disables; see [`crate::memo`]).
    pub memo_entries: usize,
    /// Most effects written by one statement (`NETRA_COMMIT_BATCH`, default
    /// 32; 1 commits each effect alone; see [`crate::pipeline::committer`]).
    pub commit_batch: usize,
    /// Effect statements running at once (`NETRA_COMMIT_CONCURRENCY`,
    /// default 1): fewer means larger batches under load (`netra bench` at
    /// 128 runs in flight: 4.2 ms of CPU per run with 1, 4.5 with 2, 5.5
    /// with 4).
    pub commit_concurrency: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("amqp_url", &redact_url(self.amqp_url.expose_secret()))
            .field(
                "database_url",
                &redact_url(self.database_url.expose_secret()),
            )
            .field("redis_url", &redact_url(self.redis_url.expose_secret()))
            .field("http_addr", &self.http_addr)
            .field("namespace", &self.namespace)
            .field("concurrency", &self.concurrency)
            .field("default_concurrency", &self.default_concurrency)
            .field("max_attempts", &self.max_attempts)
            .field("phase_timeout", &self.phase_timeout)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

/// Replaces the password of a `scheme://user:password@host/...` URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".to_string();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_string();
    };
    let creds = &rest[..at];
    let user = creds.split(':').next().unwrap_or("");
    format!("{}://{}:***@{}", &url[..scheme_end], user, &rest[at + 1..])
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError {
            var: name,
            reason: format!("{e}"),
        }),
    }
}

fn millis(name: &'static str, default_ms: u64) -> Result<Duration, ConfigError> {
    parse(name, default_ms).map(Duration::from_millis)
}

/// Checks that a namespace is usable as a queue-name prefix.
pub fn validate_namespace(ns: &str) -> Result<(), ConfigError> {
    let ok = !ns.is_empty()
        && ns.len() <= 64
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            var: "NETRA_NAMESPACE",
            reason: "use 1-64 letters, digits, '-' or '_'".into(),
        })
    }
}

impl Config {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let namespace = var("NETRA_NAMESPACE").unwrap_or_else(|| "netra".into());
        validate_namespace(&namespace)?;
        let default_concurrency = parse("NETRA_CONCURRENCY", DEFAULT_PHASE_CONCURRENCY)?;
        let mut concurrency = BTreeMap::new();
        for (key, value) in std::env::vars() {
            if let Some(phase) = key.strip_prefix("NETRA_CONCURRENCY_") {
                let n: u16 = value.trim().parse().map_err(|_| ConfigError {
                    var: "NETRA_CONCURRENCY_<PHASE>",
                    reason: format!("{key} is not a whole number"),
                })?;
                concurrency.insert(phase.to_ascii_lowercase(), n.max(1));
            }
        }
        let max_attempts = parse("NETRA_MAX_ATTEMPTS", 5u32)?;
        if max_attempts == 0 {
            return Err(ConfigError {
                var: "NETRA_MAX_ATTEMPTS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            amqp_url: SecretString::from(
                var("NETRA_AMQP_URL").unwrap_or_else(|| "amqp://127.0.0.1:5682/%2f".into()),
            ),
            database_url: SecretString::from(
                var("NETRA_DATABASE_URL")
                    .unwrap_or_else(|| "postgres://netra@127.0.0.1:5442/netra".into()),
            ),
            redis_url: SecretString::from(
                var("NETRA_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6390/0".into()),
            ),
            http_addr: parse("NETRA_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8089)))?,
            namespace,
            concurrency,
            default_concurrency: default_concurrency.max(1),
            max_attempts,
            retry_initial: millis("NETRA_RETRY_INITIAL_MS", 500)?,
            retry_max: millis("NETRA_RETRY_MAX_MS", 60_000)?,
            phase_timeout: millis("NETRA_PHASE_TIMEOUT_MS", 30_000)?,
            shutdown_grace: millis("NETRA_SHUTDOWN_GRACE_MS", 20_000)?,
            max_message_bytes: parse("NETRA_MAX_MESSAGE_BYTES", 256 * 1024usize)?,
            default_tenant: var("NETRA_DEFAULT_TENANT").unwrap_or_else(|| "default".into()),
            db_pool_size: parse("NETRA_DB_POOL", 20u32)?,
            worker_id: var("NETRA_WORKER_ID").unwrap_or_else(default_worker_id),
            republish_after: millis("NETRA_REPUBLISH_AFTER_MS", 30_000)?,
            rate_limit_per_min: parse("NETRA_RATE_LIMIT_PER_MIN", 600u32)?,
            agent_cache_ttl_secs: parse("NETRA_AGENT_CACHE_TTL_SECS", 3600u64)?,
            memo_entries: parse("NETRA_MEMO_ENTRIES", 4096usize)?,
            commit_batch: parse("NETRA_COMMIT_BATCH", 32usize)?,
            commit_concurrency: parse("NETRA_COMMIT_CONCURRENCY", 1usize)?,
        })
    }

    /// Concurrency (and prefetch) for one phase.
    pub fn concurrency_for(&self, phase: &str) -> u16 {
        self.concurrency
            .get(phase)
            .copied()
            .unwrap_or(self.default_concurrency)
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_password() {
        let r = redact_url("amqp://netra:s3cret@127.0.0.1:5682/%2f");
        assert_eq!(r, "amqp://netra:***@127.0.0.1:5682/%2f");
        assert!(!r.contains("s3cret"));
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
    }

    #[test]
    fn namespace_rejects_dots_and_empty() {
        assert!(validate_namespace("netra-test_1").is_ok());
        assert!(validate_namespace("a.b").is_err());
        assert!(validate_namespace("").is_err());
    }
}
