//! Redis: the status cache of finished runs, long-poll wake-ups, the shared
//! rate-limit windows and the agent output cache.
//!
//! Redis only speeds things up; nothing waits on it. Postgres stays the
//! truth: the cache holds only runs in a final state (which change only by
//! a replay, whose caller evicts them: `pipeline::replay::evict_cached`), so a lost or flushed cache changes no
//! answer. Every call is bounded by a short timeout (`NETRA_REDIS_TIMEOUT_MS`)
//! and the client reconnects with a short backoff, so a Redis outage costs
//! at most that timeout per call; errors are logged at debug level and
//! ignored. Announcements of finished runs are sent off the path to the ack.
//!
//! Long-polls share one pattern subscription per process ([`Cache::wakeups`]);
//! a wake-up lost in an outage is only latency, because long-polls re-read
//! Postgres on their own as well.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    AsyncCommands,
};
use secrecy::ExposeSecret;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::config::Config;

/// How long a cached final status lives.
const TTL_SECS: u64 = 3600;

/// Capacity of the in-process wake-up channel; a long-poll that lags behind
/// it simply re-reads its run.
const WAKEUP_BUFFER: usize = 1024;

/// A wake-up for long-polls: a run reached a final state, or (after the
/// subscription was re-established) anything may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// This run was announced as final.
    Run(Uuid),
    /// Announcements may have been missed: every waiter re-reads.
    All,
}

/// Aborts the subscription task when the last handle is dropped.
struct TaskGuard(tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A handle to Redis for one namespace.
#[derive(Clone)]
pub struct Cache {
    conn: ConnectionManager,
    ns: String,
    timeout: Duration,
    wakeups: broadcast::Sender<Wakeup>,
    subscribed: Arc<std::sync::atomic::AtomicBool>,
    _subscription: Arc<TaskGuard>,
}

impl Cache {
    /// Connects; `None` (with a warning) when Redis is unreachable.
    pub async fn connect(config: &Config) -> Option<Self> {
        let client = match crate::tls::redis_client(
            config.redis_url.expose_secret(),
            config.tls_ca.as_ref(),
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e.kind_str(), "invalid NETRA_REDIS_URL; running without cache");
                return None;
            }
        };
        let timeout = config.redis_timeout;
        // Short everything: a command waits at most `timeout`, and a lost
        // connection is retried a few times at most a second apart (the
        // client's defaults wait without bound and back off for minutes).
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout.max(Duration::from_millis(500)))
            .set_response_timeout(timeout)
            .set_number_of_retries(2)
            .set_factor(50)
            .set_max_delay(1000);
        let conn = match tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new_with_config(client.clone(), manager_config),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            _ => {
                tracing::warn!(
                    "Redis unreachable; running without cache and with polling long-polls"
                );
                return None;
            }
        };
        let (wakeups, _) = broadcast::channel(WAKEUP_BUFFER);
        let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(subscribe_loop(
            client,
            format!("{}:done:*", config.namespace),
            wakeups.clone(),
            subscribed.clone(),
            timeout,
        ));
        Some(Self {
            conn,
            ns: config.namespace.clone(),
            timeout,
            wakeups,
            subscribed,
            _subscription: Arc::new(TaskGuard(task.abort_handle())),
        })
    }

    fn key(&self, run: Uuid) -> String {
        format!("{}:run:{run}", self.ns)
    }

    /// The pub/sub channel a run's final state is announced on.
    pub fn channel(&self, run: Uuid) -> String {
        format!("{}:done:{run}", self.ns)
    }

    /// Runs one Redis call under the timeout; `None` on error or timeout.
    async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::debug!(error = %e.kind_str(), what, "Redis call failed");
                None
            }
            Err(_) => {
                tracing::debug!(what, "Redis call timed out");
                None
            }
        }
    }

    /// The cached JSON of a finished run.
    pub async fn get(&self, run: Uuid) -> Option<String> {
        let mut c = self.conn.clone();
        self.bounded("get", c.get::<_, Option<String>>(self.key(run)))
            .await
            .flatten()
    }

    /// Caches a finished run's JSON.
    pub async fn put(&self, run: Uuid, json: &str) {
        let mut c = self.conn.clone();
        self.bounded("put", c.set_ex::<_, _, ()>(self.key(run), json, TTL_SECS))
            .await;
    }

    /// Drops a run from the cache (it changes again, e.g. by a replay).
    pub async fn evict(&self, run: Uuid) {
        let mut c = self.conn.clone();
        self.bounded("evict", c.del::<_, ()>(self.key(run))).await;
    }

    /// Announces that a run reached a final state (evicting its cached
    /// status first).
    pub async fn notify(&self, run: Uuid) {
        self.evict(run).await;
        let mut c = self.conn.clone();
        self.bounded("notify", c.publish::<_, _, ()>(self.channel(run), "done"))
            .await;
    }

    /// [`Cache::notify`] in the background: the caller (a delivery on its
    /// way to the ack) never waits for Redis.
    pub fn notify_later(&self, run: Uuid) {
        let cache = self.clone();
        tokio::spawn(async move { cache.notify(run).await });
    }

    /// The process's shared stream of wake-ups for long-polls.
    pub fn wakeups(&self) -> broadcast::Receiver<Wakeup> {
        self.wakeups.subscribe()
    }

    /// True while the shared subscription is established (otherwise
    /// long-polls re-read Postgres more often).
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs a Lua script (`EVAL`) under the timeout; `None` on error.
    pub async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &str,
        keys: &[&str],
        args: &[String],
    ) -> Option<T> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(keys.len());
        for k in keys {
            cmd.arg(format!("{}:{k}", self.ns));
        }
        for a in args {
            cmd.arg(a);
        }
        let mut c = self.conn.clone();
        self.bounded("eval", cmd.query_async::<T>(&mut c)).await
    }

    /// Stores an agent output under a key derived from its inputs.
    pub async fn put_agent_output(&self, key: &str, json: &str, ttl_secs: u64) {
        let mut c = self.conn.clone();
        self.bounded(
            "put agent output",
            c.set_ex::<_, _, ()>(format!("{}:agent:{key}", self.ns), json, ttl_secs),
        )
        .await;
    }

    /// A cached agent output.
    pub async fn get_agent_output(&self, key: &str) -> Option<String> {
        let mut c = self.conn.clone();
        self.bounded(
            "get agent output",
            c.get::<_, Option<String>>(format!("{}:agent:{key}", self.ns)),
        )
        .await
        .flatten()
    }

    /// True when Redis answers PING within the timeout.
    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        self.bounded("ping", redis::cmd("PING").query_async::<String>(&mut c))
            .await
            .is_some()
    }
}

/// Keeps one pattern subscription to the namespace's announcements and
/// forwards them to the process's long-polls; re-subscribes after any
/// failure (at most a second apart) and then wakes every waiter, since
/// announcements may have been missed meanwhile.
async fn subscribe_loop(
    client: redis::Client,
    pattern: String,
    wakeups: broadcast::Sender<Wakeup>,
    subscribed: Arc<std::sync::atomic::AtomicBool>,
    timeout: Duration,
) {
    use std::sync::atomic::Ordering;
    let prefix = pattern.trim_end_matches('*').to_string();
    loop {
        let connect = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.psubscribe(&pattern).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        if let Ok(Ok(mut ps)) =
            tokio::time::timeout(timeout.max(Duration::from_millis(500)), connect).await
        {
            subscribed.store(true, Ordering::Relaxed);
            let _ = wakeups.send(Wakeup::All);
            let mut stream = ps.on_message();
            while let Some(msg) = stream.next().await {
                let channel = msg.get_channel_name();
                if let Some(run) = channel
                    .strip_prefix(prefix.as_str())
                    .and_then(|id| id.parse().ok())
                {
                    let _ = wakeups.send(Wakeup::Run(run));
                }
            }
            subscribed.store(false, Ordering::Relaxed);
            tracing::debug!("Redis subscription lost; re-subscribing");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Extension to print redis errors without their (possibly credentialed) detail.
trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    fn kind_str(&self) -> String {
        format!("{:?}", self.kind())
    }
}
