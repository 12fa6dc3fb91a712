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

/// Bounds of the HTTP server, so that slow or idle clients cannot use up
/// its connections or file handles.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Open connections at once (`NETRA_HTTP_MAX_CONNECTIONS`, default 1024);
    /// connections beyond it are closed at once.
    pub max_connections: usize,
    /// Open connections from one client address
    /// (`NETRA_HTTP_MAX_CONNECTIONS_PER_CLIENT`, default 128).
    pub max_connections_per_client: usize,
    /// Time to send a request's headers (`NETRA_HTTP_HEADER_TIMEOUT_MS`, 10 s).
    pub header_timeout: Duration,
    /// Time to send a request's body (`NETRA_HTTP_BODY_TIMEOUT_MS`, 10 s).
    pub body_timeout: Duration,
    /// Time for a whole request, long-polls included
    /// (`NETRA_HTTP_REQUEST_TIMEOUT_MS`, 75 s; a long-poll waits at most 60 s).
    pub request_timeout: Duration,
}

/// All of netra's settings.
#[derive(Clone)]
pub struct Config {
    /// RabbitMQ URL (`NETRA_AMQP_URL`), secret because it holds a password;
    /// a comma-separated list of URLs for several broker nodes (read it
    /// with [`Config::amqp_urls`]).
    pub amqp_url: SecretString,
    /// Postgres URL (`NETRA_DATABASE_URL`); it may name several hosts
    /// (`postgres://user:pw@h1:5432,h2:5432/db`), of which netra uses the
    /// writable one (see [`crate::store::hosts`]).
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
    /// The same for one phase (`NETRA_PHASE_TIMEOUT_<PHASE>_MS`): a phase
    /// that waits for a language model may need minutes.
    pub phase_timeouts: BTreeMap<String, Duration>,
    /// RabbitMQ's consumer timeout (`NETRA_BROKER_CONSUMER_TIMEOUT_MS`,
    /// RabbitMQ's default 1,800,000): a delivery held longer closes the
    /// channel, so every phase timeout must stay below it.
    pub broker_consumer_timeout: Duration,
    /// Time in-flight work gets to finish on SIGTERM (`NETRA_SHUTDOWN_GRACE_MS`).
    pub shutdown_grace: Duration,
    /// Largest accepted message body in bytes (`NETRA_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Tenant of AMQP requests that carry no broker-validated `user_id`
    /// (`NETRA_AMQP_DEFAULT_TENANT`). Unset by default: such requests are
    /// then dead-lettered as unauthorized. Only a single-tenant deployment
    /// (like the local stack) sets it, because every broker user that can
    /// publish requests can act as this tenant.
    pub amqp_default_tenant: Option<String>,
    /// Key of the authentication tag of phase envelopes
    /// (`NETRA_ENVELOPE_KEY`); unset, the workers share a random key kept in
    /// the database (see [`crate::pipeline::seal`]).
    pub envelope_key: Option<SecretString>,
    /// Timeout of every Redis call (`NETRA_REDIS_TIMEOUT_MS`, default 250).
    pub redis_timeout: Duration,
    /// Limits of the HTTP server.
    pub http: HttpLimits,
    /// Failed authentications per client address per minute before `429`
    /// (`NETRA_AUTH_FAILURES_PER_MIN`, default 30; 0 = no limit).
    pub auth_failures_per_min: u32,
    /// Database pool size (`NETRA_DB_POOL`).
    pub db_pool_size: u32,
    /// Identifies this process in history rows (`NETRA_WORKER_ID`).
    pub worker_id: String,
    /// A run that sat `queued` this long has its message published again
    /// (`NETRA_REPUBLISH_AFTER_MS`).
    pub republish_after: Duration,
    /// How long an attempt's lease on its run lasts without a heartbeat
    /// (`NETRA_LEASE_MS`, default 30 s, at least 100 ms); the worker renews
    /// it every third of that while the phase runs (see
    /// [`crate::pipeline::lease`]).
    pub lease: Duration,
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
    /// The language model the agents use, if any (`NETRA_LLM_*`; none: the
    /// embedded analyst).
    pub llm: crate::llm::config::LlmConfig,
    /// The certificates of a private CA the services' TLS certificates are
    /// checked against, beside the system's roots (`NETRA_TLS_CA_FILE`).
    pub tls_ca: Option<crate::tls::CaFile>,
    /// Fair admission between tenants (docs/DESIGN.md "Fair admission").
    pub fair: FairConfig,
}

/// The defaults of fair admission (a tenant's own weight, cap and request
/// rate, set with `netra tenant set`, override the last three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairConfig {
    /// The runs in flight the tenants share (`NETRA_FAIR_IN_FLIGHT`,
    /// default 1024): a tenant alone may use all of it; tenants that wait
    /// share it by weight.
    pub in_flight: u32,
    /// A tenant's weight unless set (`NETRA_FAIR_WEIGHT`, default 1).
    pub weight: u32,
    /// A tenant's cap on runs in flight unless set
    /// (`NETRA_FAIR_MAX_IN_FLIGHT`; default none).
    pub max_in_flight: Option<u32>,
    /// A tenant's request rate unless set: new runs per minute on every
    /// way in, beyond which they wait `over its rate`
    /// (`NETRA_FAIR_REQUESTS_PER_MIN`; default 0, no limit).
    pub requests_per_min: u32,
}

impl Default for FairConfig {
    /// The defaults of the settings: 1024 in flight, weight 1, no cap.
    fn default() -> Self {
        Self {
            in_flight: 1024,
            weight: 1,
            max_in_flight: None,
            requests_per_min: 0,
        }
    }
}

impl FairConfig {
    fn from_env() -> Result<Self, ConfigError> {
        let in_flight: u32 = parse("NETRA_FAIR_IN_FLIGHT", 1024u32)?;
        let weight: u32 = parse("NETRA_FAIR_WEIGHT", 1u32)?;
        let max_in_flight: u32 = parse("NETRA_FAIR_MAX_IN_FLIGHT", 0u32)?;
        let requests_per_min: u32 = parse("NETRA_FAIR_REQUESTS_PER_MIN", 0u32)?;
        if in_flight == 0 {
            return Err(ConfigError {
                var: "NETRA_FAIR_IN_FLIGHT",
                reason: "must be at least 1".into(),
            });
        }
        if !(1..=1000).contains(&weight) {
            return Err(ConfigError {
                var: "NETRA_FAIR_WEIGHT",
                reason: "must be from 1 to 1000".into(),
            });
        }
        Ok(Self {
            in_flight,
            weight,
            max_in_flight: (max_in_flight > 0).then_some(max_in_flight),
            requests_per_min,
        })
    }
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
            .field("lease", &self.lease)
            .field("amqp_default_tenant", &self.amqp_default_tenant)
            .field("http", &self.http)
            .field("llm", &self.llm)
            .field("fair", &self.fair)
            .field(
                "tls_ca",
                &self.tls_ca.as_ref().map(|c| c.path.display().to_string()),
            )
            .finish_non_exhaustive()
    }
}

/// Replaces the password of a `scheme://user:password@host/...` URL with `***`.
/// A comma-separated list of URLs (`NETRA_AMQP_URL` may hold one) has each
/// of its passwords replaced; a multi-host Postgres URL keeps its host list.
/// A text that is no URL at all becomes `***`.
pub fn redact_url(url: &str) -> String {
    let starts: Vec<usize> = url.match_indices("://").map(|(i, _)| i + 3).collect();
    if starts.is_empty() {
        return "***".to_string();
    }
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..starts[0]]);
    for (k, &start) in starts.iter().enumerate() {
        // This URL runs up to the next "://" (the next URL's scheme is
        // inside this stretch, after the part that can hold credentials).
        let end = starts.get(k + 1).map_or(url.len(), |next| next - 3);
        out.push_str(&redact_one(&url[start..end]));
        if end < url.len() {
            out.push_str("://");
        }
    }
    out
}

/// The part of one URL after `scheme://`, its credentials replaced: they
/// end at the last `@` before the query (a path rarely holds an `@`, and
/// hiding too much is the safe mistake).
fn redact_one(rest: &str) -> String {
    let query = rest.find(['?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..query].rfind('@') else {
        return rest.to_string();
    };
    let user = rest[..at].split(':').next().unwrap_or("");
    format!("{user}:***@{}", &rest[at + 1..])
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

/// What a URL setting connects to.
#[derive(Debug, Clone, Copy)]
pub enum UrlKind {
    /// RabbitMQ.
    Amqp,
    /// PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
}

impl UrlKind {
    fn expected(self) -> &'static str {
        match self {
            UrlKind::Amqp => "amqp://user:password@host:port/vhost",
            UrlKind::Postgres => "postgres://user:password@host:port/database",
            UrlKind::Redis => "redis://:password@host:port/db",
        }
    }
}

/// Checks a connection URL with the parser of the client that will use it.
/// The error never contains the value, nor the parser's message (which may
/// quote it): a URL holds a password.
///
/// For [`UrlKind::Amqp`] the value may be a comma-separated list of URLs
/// (several broker nodes; see [`amqp_urls`]): each element must parse, and
/// an empty element is refused. For [`UrlKind::Postgres`] it may name
/// several hosts (`postgres://user:pw@h1:5432,h2:5432/db`, see
/// [`crate::store::hosts`]): each host's single-host equivalent must parse.
pub fn check_url(var: &'static str, url: &str, kind: UrlKind) -> Result<(), ConfigError> {
    let invalid = |what: String| ConfigError {
        var,
        reason: format!(
            "{what}; expected the form {} (the value is not shown: it may hold a password)",
            kind.expected()
        ),
    };
    match kind {
        UrlKind::Amqp => {
            let parts: Vec<&str> = url.split(',').map(str::trim).collect();
            let n = parts.len();
            for (k, part) in parts.iter().enumerate() {
                let what = if n == 1 {
                    "not a valid URL".to_string()
                } else if part.is_empty() {
                    return Err(ConfigError {
                        var,
                        reason: format!(
                            "element {} of the comma-separated list of {n} is empty",
                            k + 1
                        ),
                    });
                } else {
                    format!(
                        "element {} of the comma-separated list of {n} is not a valid URL",
                        k + 1
                    )
                };
                if part.parse::<lapin::uri::AMQPUri>().is_err() {
                    return Err(invalid(what));
                }
            }
            Ok(())
        }
        UrlKind::Postgres => match crate::store::hosts::Hosts::parse(url) {
            Ok(_) => Ok(()),
            Err(crate::store::hosts::HostsError::Invalid) => Err(invalid("not a valid URL".into())),
            Err(e) => Err(invalid(format!("not a valid URL ({e})"))),
        },
        UrlKind::Redis => {
            if redis::parse_redis_url(url).is_some() && redis::Client::open(url).is_ok() {
                Ok(())
            } else {
                Err(invalid("not a valid URL".into()))
            }
        }
    }
}

/// The elements of a comma-separated list of URLs (`NETRA_AMQP_URL`),
/// trimmed, empty ones left out. A single URL is a list of one. A comma
/// inside one URL must be percent-encoded (`%2C`).
pub fn amqp_urls(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

fn url_setting(
    name: &'static str,
    default: &str,
    kind: UrlKind,
) -> Result<SecretString, ConfigError> {
    let url = var(name).unwrap_or_else(|| default.to_string());
    check_url(name, &url, kind)?;
    Ok(SecretString::from(url))
}

fn validate_tenant_setting(name: &str) -> Result<(), ConfigError> {
    validate_namespace(name).map_err(|_| ConfigError {
        var: "NETRA_AMQP_DEFAULT_TENANT",
        reason: "use 1-64 letters, digits, '-' or '_'".into(),
    })
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

/// `NETRA_CONCURRENCY_<PHASE>`: the concurrency of single phases, by the
/// phase's name in lower case (at least 1).
fn phase_concurrency() -> Result<BTreeMap<String, u16>, ConfigError> {
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
    Ok(concurrency)
}

/// `NETRA_PHASE_TIMEOUT_<PHASE>_MS`, by lower-case phase name.
fn phase_timeouts() -> Result<BTreeMap<String, Duration>, ConfigError> {
    let mut timeouts = BTreeMap::new();
    for (key, value) in std::env::vars() {
        let Some(phase) = key
            .strip_prefix("NETRA_PHASE_TIMEOUT_")
            .and_then(|k| k.strip_suffix("_MS"))
        else {
            continue;
        };
        let ms: u64 = value.trim().parse().map_err(|_| ConfigError {
            var: "NETRA_PHASE_TIMEOUT_<PHASE>_MS",
            reason: format!("{key} is not a whole number of milliseconds"),
        })?;
        timeouts.insert(phase.to_ascii_lowercase(), Duration::from_millis(ms.max(1)));
    }
    Ok(timeouts)
}

/// Refuses phase timeouts that reach RabbitMQ's consumer timeout: the broker
/// would close the channel under a handler that is still within its time.
fn check_phase_timeouts(config: &Config) -> Result<(), ConfigError> {
    let limit = config.broker_consumer_timeout;
    let mut all = vec![("NETRA_PHASE_TIMEOUT_MS".to_string(), config.phase_timeout)];
    all.extend(config.phase_timeouts.iter().map(|(p, t)| {
        (
            format!("NETRA_PHASE_TIMEOUT_{}_MS", p.to_ascii_uppercase()),
            *t,
        )
    }));
    for (var, t) in all {
        if t >= limit {
            return Err(ConfigError {
                var: "NETRA_PHASE_TIMEOUT_MS",
                reason: format!(
                    "{var} is {} ms, not below RabbitMQ's consumer timeout of {} ms: lower {var}, or raise the broker's consumer_timeout and set NETRA_BROKER_CONSUMER_TIMEOUT_MS to it",
                    t.as_millis(),
                    limit.as_millis()
                ),
            });
        }
    }
    Ok(())
}

/// `NETRA_MAX_ATTEMPTS`: at least 1.
fn max_attempts() -> Result<u32, ConfigError> {
    let max_attempts = parse("NETRA_MAX_ATTEMPTS", 5u32)?;
    if max_attempts == 0 {
        return Err(ConfigError {
            var: "NETRA_MAX_ATTEMPTS",
            reason: "must be at least 1".into(),
        });
    }
    Ok(max_attempts)
}

/// `NETRA_AMQP_DEFAULT_TENANT`, checked when set.
fn amqp_default_tenant() -> Result<Option<String>, ConfigError> {
    let tenant = var("NETRA_AMQP_DEFAULT_TENANT");
    if let Some(t) = &tenant {
        validate_tenant_setting(t)?;
    }
    Ok(tenant)
}

/// `NETRA_ENVELOPE_KEY`: when set, at least 32 characters.
fn envelope_key() -> Result<Option<SecretString>, ConfigError> {
    match var("NETRA_ENVELOPE_KEY") {
        Some(k) if k.len() < 32 => Err(ConfigError {
            var: "NETRA_ENVELOPE_KEY",
            reason: "use at least 32 characters (e.g. `openssl rand -hex 32`)".into(),
        }),
        k => Ok(k.map(SecretString::from)),
    }
}

impl HttpLimits {
    /// Reads the `NETRA_HTTP_*` bounds (at least one connection of each).
    fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            max_connections: parse("NETRA_HTTP_MAX_CONNECTIONS", 1024usize)?.max(1),
            max_connections_per_client: parse("NETRA_HTTP_MAX_CONNECTIONS_PER_CLIENT", 128usize)?
                .max(1),
            header_timeout: millis("NETRA_HTTP_HEADER_TIMEOUT_MS", 10_000)?,
            body_timeout: millis("NETRA_HTTP_BODY_TIMEOUT_MS", 10_000)?,
            request_timeout: millis("NETRA_HTTP_REQUEST_TIMEOUT_MS", 75_000)?,
        })
    }
}

impl Config {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let namespace = var("NETRA_NAMESPACE").unwrap_or_else(|| "netra".into());
        validate_namespace(&namespace)?;
        let default_concurrency = parse("NETRA_CONCURRENCY", DEFAULT_PHASE_CONCURRENCY)?;
        let concurrency = phase_concurrency()?;
        let max_attempts = max_attempts()?;
        let config = Self {
            amqp_url: url_setting("NETRA_AMQP_URL", "amqp://127.0.0.1:5682/%2f", UrlKind::Amqp)?,
            database_url: url_setting(
                "NETRA_DATABASE_URL",
                "postgres://netra@127.0.0.1:5442/netra",
                UrlKind::Postgres,
            )?,
            redis_url: url_setting(
                "NETRA_REDIS_URL",
                "redis://127.0.0.1:6390/0",
                UrlKind::Redis,
            )?,
            http_addr: parse("NETRA_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8089)))?,
            namespace,
            concurrency,
            default_concurrency: default_concurrency.max(1),
            max_attempts,
            retry_initial: millis("NETRA_RETRY_INITIAL_MS", 500)?,
            retry_max: millis("NETRA_RETRY_MAX_MS", 60_000)?,
            phase_timeout: millis("NETRA_PHASE_TIMEOUT_MS", 30_000)?,
            phase_timeouts: phase_timeouts()?,
            broker_consumer_timeout: millis("NETRA_BROKER_CONSUMER_TIMEOUT_MS", 1_800_000)?,
            shutdown_grace: millis("NETRA_SHUTDOWN_GRACE_MS", 20_000)?,
            max_message_bytes: parse("NETRA_MAX_MESSAGE_BYTES", 256 * 1024usize)?,
            amqp_default_tenant: amqp_default_tenant()?,
            envelope_key: envelope_key()?,
            redis_timeout: millis("NETRA_REDIS_TIMEOUT_MS", 250)?.max(Duration::from_millis(10)),
            http: HttpLimits::from_env()?,
            auth_failures_per_min: parse("NETRA_AUTH_FAILURES_PER_MIN", 30u32)?,
            db_pool_size: parse("NETRA_DB_POOL", 20u32)?,
            worker_id: var("NETRA_WORKER_ID").unwrap_or_else(default_worker_id),
            republish_after: millis("NETRA_REPUBLISH_AFTER_MS", 30_000)?,
            lease: millis("NETRA_LEASE_MS", 30_000)?.max(Duration::from_millis(100)),
            rate_limit_per_min: parse("NETRA_RATE_LIMIT_PER_MIN", 600u32)?,
            agent_cache_ttl_secs: parse("NETRA_AGENT_CACHE_TTL_SECS", 3600u64)?,
            memo_entries: parse("NETRA_MEMO_ENTRIES", 4096usize)?,
            commit_batch: parse("NETRA_COMMIT_BATCH", 32usize)?,
            commit_concurrency: parse("NETRA_COMMIT_CONCURRENCY", 1usize)?,
            llm: crate::llm::config::LlmConfig::from_env()?,
            tls_ca: crate::tls::ca_from_env()?,
            fair: FairConfig::from_env()?,
        };
        check_phase_timeouts(&config)?;
        Ok(config)
    }

    /// The handler timeout of one phase.
    pub fn timeout_for(&self, phase: &str) -> Duration {
        self.phase_timeouts
            .get(phase)
            .copied()
            .unwrap_or(self.phase_timeout)
    }

    /// The broker addresses of `NETRA_AMQP_URL`, in the order given (one for
    /// a single URL). They hold passwords: never log them unredacted.
    pub fn amqp_urls(&self) -> Vec<&str> {
        amqp_urls(self.amqp_url.expose_secret())
    }

    /// Concurrency (and prefetch) for one phase.
    pub fn concurrency_for(&self, phase: &str) -> u16 {
        self.concurrency
            .get(phase)
            .copied()
            .unwrap_or(self.default_concurrency)
    }

    /// Prefetch of the upstream requests (`NETRA_CONCURRENCY_REQUESTS`;
    /// by default at least [`INTAKE_CONCURRENCY`]): the requests queue is
    /// one FIFO for every tenant, so intake drains it fast into Postgres,
    /// where fair admission orders the runs (docs/DESIGN.md "Fair
    /// admission").
    pub fn intake_concurrency(&self) -> u16 {
        self.concurrency
            .get("requests")
            .copied()
            .unwrap_or(self.default_concurrency.max(INTAKE_CONCURRENCY))
    }
}

/// The least default prefetch of the upstream requests.
pub const INTAKE_CONCURRENCY: u16 = 512;

/// The most requests one intake statement creates (unless
/// `NETRA_COMMIT_BATCH` is 1: then one at a time).
pub const INTAKE_BATCH: usize = 256;

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
    fn phase_timeouts_must_stay_below_the_consumer_timeout() {
        let mut c = Config::from_env().unwrap();
        c.broker_consumer_timeout = Duration::from_secs(60);
        c.phase_timeout = Duration::from_secs(30);
        assert!(check_phase_timeouts(&c).is_ok());
        c.phase_timeouts
            .insert("triage".into(), Duration::from_secs(60));
        let e = check_phase_timeouts(&c).unwrap_err();
        assert!(e.reason.contains("NETRA_PHASE_TIMEOUT_TRIAGE_MS"), "{e}");
        assert_eq!(c.timeout_for("triage"), Duration::from_secs(60));
        assert_eq!(c.timeout_for("data"), Duration::from_secs(30));
    }

    #[test]
    fn redact_hides_password() {
        let r = redact_url("amqp://netra:s3cret@127.0.0.1:5682/%2f");
        assert_eq!(r, "amqp://netra:***@127.0.0.1:5682/%2f");
        assert!(!r.contains("s3cret"));
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
    }

    #[test]
    fn malformed_urls_are_refused_without_their_value() {
        let cases = [
            (
                "NETRA_AMQP_URL",
                "netra:hunter2@127.0.0.1:5682/%2f",
                UrlKind::Amqp,
            ),
            (
                "NETRA_AMQP_URL",
                "amqp://netra:hunter2@[::1/%2f",
                UrlKind::Amqp,
            ),
            (
                "NETRA_DATABASE_URL",
                "netra:hunter2@127.0.0.1/netra",
                UrlKind::Postgres,
            ),
            (
                "NETRA_DATABASE_URL",
                "postgres://netra:hunter2@h:notaport/x",
                UrlKind::Postgres,
            ),
            (
                "NETRA_REDIS_URL",
                ":hunter2@127.0.0.1:6390/0",
                UrlKind::Redis,
            ),
            (
                "NETRA_REDIS_URL",
                "redis://:hunter2@h:99999999/0",
                UrlKind::Redis,
            ),
        ];
        for (var, url, kind) in cases {
            let e = check_url(var, url, kind).expect_err(url);
            let text = format!("{e} {e:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains(var), "{text}");
        }
        assert!(check_url(
            "NETRA_AMQP_URL",
            "amqp://u:p@127.0.0.1:5682/%2f",
            UrlKind::Amqp
        )
        .is_ok());
        assert!(check_url(
            "NETRA_DATABASE_URL",
            "postgres://u:p@127.0.0.1:5442/db",
            UrlKind::Postgres
        )
        .is_ok());
        assert!(check_url(
            "NETRA_REDIS_URL",
            "redis://:p@127.0.0.1:6390/0",
            UrlKind::Redis
        )
        .is_ok());
    }

    #[test]
    fn redact_hides_every_password_of_a_list() {
        let r = redact_url("amqp://netra:pw1@h1:5682/%2f,amqp://netra:pw2@h2:5682/%2f");
        assert_eq!(
            r,
            "amqp://netra:***@h1:5682/%2f,amqp://netra:***@h2:5682/%2f"
        );
        let r = redact_url("amqp://h1/%2f?heartbeat=5, amqps://u:pw3@h2/%2f");
        assert_eq!(r, "amqp://h1/%2f?heartbeat=5, amqps://u:***@h2/%2f");
        let r = redact_url("postgres://netra:pw4@h1:5442,[::1]:5443/netra?sslmode=disable");
        assert_eq!(
            r,
            "postgres://netra:***@h1:5442,[::1]:5443/netra?sslmode=disable"
        );
        assert_eq!(redact_url("no url: hunter2"), "***");
    }

    #[test]
    fn broker_address_lists_are_checked_element_by_element() {
        let check = |url: &str| check_url("NETRA_AMQP_URL", url, UrlKind::Amqp);
        let list = "amqp://netra:pw@127.0.0.1:5682/%2f,amqp://netra:pw@127.0.0.1:5683/%2f, amqp://netra:pw@127.0.0.1:5684/%2f";
        assert!(check(list).is_ok());
        assert_eq!(
            amqp_urls(list),
            [
                "amqp://netra:pw@127.0.0.1:5682/%2f",
                "amqp://netra:pw@127.0.0.1:5683/%2f",
                "amqp://netra:pw@127.0.0.1:5684/%2f",
            ]
        );
        assert_eq!(amqp_urls("amqp://h/%2f"), ["amqp://h/%2f"]);
        for (bad, element) in [
            (
                "amqp://u:hunter2@h1/%2f,,amqp://u:hunter2@h2/%2f",
                "element 2",
            ),
            ("amqp://u:hunter2@h1/%2f,", "element 2"),
            (",amqp://u:hunter2@h1/%2f", "element 1"),
            (
                "amqp://u:hunter2@h1/%2f,amqp://u:hunter2@[::1/%2f",
                "element 2",
            ),
            ("amqp://u:hunter2@h1/%2f,u:hunter2@h2/%2f", "element 2"),
        ] {
            let e = check(bad).expect_err(bad);
            let text = format!("{e} {e:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("NETRA_AMQP_URL"), "{text}");
            assert!(text.contains(element), "{bad}: {text}");
        }
    }

    #[test]
    fn database_urls_may_name_several_hosts() {
        let check = |url: &str| check_url("NETRA_DATABASE_URL", url, UrlKind::Postgres);
        assert!(
            check("postgres://netra:pw@127.0.0.1:5442,127.0.0.1:5443/netra?sslmode=disable")
                .is_ok()
        );
        assert!(
            check("postgres://netra:pw@[::1]:5442,db2/netra?target_session_attrs=read-write")
                .is_ok()
        );
        for bad in [
            "postgres://netra:hunter2@h1,,h2/netra",
            "postgres://netra:hunter2@h1,h2:x/netra",
            "postgres://netra:hunter2@h1,h2/netra?target_session_attrs=standby",
        ] {
            let e = check(bad).expect_err(bad);
            let text = format!("{e} {e:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("NETRA_DATABASE_URL"), "{text}");
        }
    }

    #[test]
    fn namespace_rejects_dots_and_empty() {
        assert!(validate_namespace("netra-test_1").is_ok());
        assert!(validate_namespace("a.b").is_err());
        assert!(validate_namespace("").is_err());
    }
}
