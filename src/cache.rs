//! Redis: the status cache of finished runs and long-poll wake-ups.
//!
//! Postgres stays the truth. The cache only holds runs in a final state
//! (which change only by a replay, which evicts them), so a lost or flushed
//! cache changes no answer; every Redis error is logged and ignored.

use redis::{aio::ConnectionManager, AsyncCommands};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::Config;

/// How long a cached final status lives.
const TTL_SECS: u64 = 3600;

/// A handle to Redis for one namespace.
#[derive(Clone)]
pub struct Cache {
    client: redis::Client,
    conn: ConnectionManager,
    ns: String,
}

impl Cache {
    /// Connects; `None` (with a warning) when Redis is unreachable.
    pub async fn connect(config: &Config) -> Option<Self> {
        let client = match redis::Client::open(config.redis_url.expose_secret()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e.kind_str(), "invalid NETRA_REDIS_URL; running without cache");
                return None;
            }
        };
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            ConnectionManager::new(client.clone()),
        )
        .await
        {
            Ok(Ok(conn)) => Some(Self {
                client,
                conn,
                ns: config.namespace.clone(),
            }),
            _ => {
                tracing::warn!(
                    "Redis unreachable; running without cache and with polling long-polls"
                );
                None
            }
        }
    }

    fn key(&self, run: Uuid) -> String {
        format!("{}:run:{run}", self.ns)
    }

    /// The pub/sub channel a run's final state is announced on.
    pub fn channel(&self, run: Uuid) -> String {
        format!("{}:done:{run}", self.ns)
    }

    /// The cached JSON of a finished run.
    pub async fn get(&self, run: Uuid) -> Option<String> {
        let mut c = self.conn.clone();
        c.get::<_, Option<String>>(self.key(run))
            .await
            .ok()
            .flatten()
    }

    /// Caches a finished run's JSON.
    pub async fn put(&self, run: Uuid, json: &str) {
        let mut c = self.conn.clone();
        if let Err(e) = c.set_ex::<_, _, ()>(self.key(run), json, TTL_SECS).await {
            tracing::debug!(error = %e.kind_str(), "cache put failed");
        }
    }

    /// Drops a run from the cache (it changes again, e.g. by a replay).
    pub async fn evict(&self, run: Uuid) {
        let mut c = self.conn.clone();
        let _ = c.del::<_, ()>(self.key(run)).await;
    }

    /// Announces that a run reached a final state.
    pub async fn notify(&self, run: Uuid) {
        let mut c = self.conn.clone();
        self.evict(run).await;
        if let Err(e) = c.publish::<_, _, ()>(self.channel(run), "done").await {
            tracing::debug!(error = %e.kind_str(), "cache notify failed");
        }
    }

    /// A fresh pub/sub connection (for long-polls).
    pub async fn pubsub(&self) -> Option<redis::aio::PubSub> {
        self.client.get_async_pubsub().await.ok()
    }

    /// Counts one API call of `tenant` in the current minute; returns the
    /// seconds until the window resets when the limit is exceeded. Without
    /// Redis (or on a Redis error) calls are allowed.
    pub async fn rate_limit(&self, tenant: &str, per_min: u32) -> Option<u64> {
        if per_min == 0 {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let window = now / 60;
        let key = format!("{}:rl:{tenant}:{window}", self.ns);
        let mut c = self.conn.clone();
        let count: u64 = match redis::pipe()
            .atomic()
            .incr(&key, 1u64)
            .expire(&key, 120)
            .ignore()
            .query_async::<(u64,)>(&mut c)
            .await
        {
            Ok((n,)) => n,
            Err(_) => return None,
        };
        (count > u64::from(per_min)).then(|| (window + 1) * 60 - now)
    }

    /// Stores an agent output under a key derived from its inputs.
    pub async fn put_agent_output(&self, key: &str, json: &str, ttl_secs: u64) {
        let mut c = self.conn.clone();
        let _ = c
            .set_ex::<_, _, ()>(format!("{}:agent:{key}", self.ns), json, ttl_secs)
            .await;
    }

    /// A cached agent output.
    pub async fn get_agent_output(&self, key: &str) -> Option<String> {
        let mut c = self.conn.clone();
        c.get::<_, Option<String>>(format!("{}:agent:{key}", self.ns))
            .await
            .ok()
            .flatten()
    }

    /// True when Redis answers PING.
    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok()
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
