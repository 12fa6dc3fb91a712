//! Sliding-window rate limits: at most `limit` calls of one key in any
//! 60-second window, with no burst at a minute boundary (a fixed window lets
//! twice the limit through across one).
//!
//! The window is shared by every process through Redis (a sorted set of call
//! times, updated by one atomic script on Redis's own clock). While Redis is
//! away, or slow, each process keeps its own window instead, so the limit
//! still holds per process; a deployment of N processes then admits at most
//! N times the limit until Redis is back.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::cache::Cache;

/// The window length.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Keys kept in the per-process windows before idle ones are dropped.
const LOCAL_KEYS: usize = 10_000;

/// Drops the calls older than the window, counts the rest, and admits this
/// call if there is room (recording it with a unique member, unless ARGV[4]
/// is `peek`); otherwise answers the milliseconds until the oldest call
/// leaves the window.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  if ARGV[4] ~= 'peek' then
    redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3])
    redis.call('PEXPIRE', KEYS[1], window)
  end
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
";

/// Like [`SCRIPT`], but every call weighs ARGV[4] units (tokens, say): the
/// units in the window are the sum of the weights (kept in the members'
/// names), and a call is admitted while that sum plus its weight stays
/// within the limit (a call heavier than the whole limit is admitted into an
/// empty window, so it cannot wait forever).
const WEIGHTED_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local weight = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #members, 2 do
  used = used + tonumber(string.match(members[i], '([0-9]+)$'))
end
if used == 0 or used + weight <= limit then
  redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3] .. '-' .. weight)
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
return math.max(1, tonumber(members[2]) + window - now)
";

/// Runs a window script in Redis (ARGV: window ms, limit, a unique member,
/// `last`): `Some(None)` when admitted, `Some(Some(secs))` when over the
/// limit, `None` when Redis did not answer (the caller uses its own window).
async fn shared(
    cache: Option<&Cache>,
    script: &str,
    key: &str,
    limit: u64,
    last: &str,
) -> Option<Option<u64>> {
    let cache = cache?;
    let args = [
        WINDOW.as_millis().to_string(),
        limit.to_string(),
        uuid::Uuid::new_v4().simple().to_string(),
        last.to_string(),
    ];
    let wait_ms = cache.eval::<u64>(script, &[key], &args).await?;
    Some((wait_ms > 0).then(|| wait_ms.div_ceil(1000).max(1)))
}

/// The limiter of one process.
#[derive(Default)]
pub struct RateLimiter {
    /// The per-process windows: each key's calls in the window, with their
    /// weights (1 for a counted call).
    local: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
}

impl RateLimiter {
    /// A limiter with empty windows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one call of `key` against `limit` per window: `None` when it is
    /// admitted, otherwise the whole seconds to wait (at least 1). `limit` 0
    /// admits everything.
    pub async fn check(&self, cache: Option<&Cache>, key: &str, limit: u32) -> Option<u64> {
        self.call(cache, key, limit, true).await
    }

    /// Like [`RateLimiter::check`], but counts nothing: `Some` when the key
    /// is over its limit now.
    pub async fn peek(&self, cache: Option<&Cache>, key: &str, limit: u32) -> Option<u64> {
        self.call(cache, key, limit, false).await
    }

    async fn call(&self, cache: Option<&Cache>, key: &str, limit: u32, count: bool) -> Option<u64> {
        if limit == 0 {
            return None;
        }
        let mode = if count { "count" } else { "peek" };
        if let Some(wait) =
            shared(cache, SCRIPT, &format!("rl:{key}"), u64::from(limit), mode).await
        {
            return wait;
        }
        self.local(key, limit, Instant::now(), count)
    }

    /// Counts a call of `weight` units (tokens, say) of `key` against
    /// `limit` units per window: `None` when admitted, otherwise the whole
    /// seconds to wait. `limit` 0 admits everything.
    pub async fn check_weighted(
        &self,
        cache: Option<&Cache>,
        key: &str,
        limit: u64,
        weight: u64,
    ) -> Option<u64> {
        if limit == 0 {
            return None;
        }
        let w = weight.to_string();
        if let Some(wait) = shared(cache, WEIGHTED_SCRIPT, &format!("rlw:{key}"), limit, &w).await {
            return wait;
        }
        self.weighted_local(key, limit, weight, Instant::now())
    }

    /// The per-process weighted window (used while Redis is away).
    pub fn weighted_local(&self, key: &str, limit: u64, weight: u64, now: Instant) -> Option<u64> {
        self.window(&format!("w:{key}"), limit, weight, now, true)
    }

    /// The per-process window (used while Redis is away): counts a call.
    pub fn check_local(&self, key: &str, limit: u32, now: Instant) -> Option<u64> {
        self.local(key, limit, now, true)
    }

    fn local(&self, key: &str, limit: u32, now: Instant, count: bool) -> Option<u64> {
        self.window(key, u64::from(limit), 1, now, count)
    }

    /// One per-process window: admits a call of `weight` while the weights
    /// in the window plus it stay within `limit` (an empty window admits
    /// any call), recording it when `record`; otherwise the whole seconds
    /// until the oldest call leaves the window.
    fn window(
        &self,
        key: &str,
        limit: u64,
        weight: u64,
        now: Instant,
        record: bool,
    ) -> Option<u64> {
        let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > LOCAL_KEYS {
            map.retain(|_, calls| {
                calls
                    .back()
                    .is_some_and(|(t, _)| now.duration_since(*t) < WINDOW)
            });
        }
        let calls = map.entry(key.to_string()).or_default();
        while calls
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            calls.pop_front();
        }
        let used: u64 = calls.iter().map(|(_, w)| w).sum();
        if used == 0 || used.saturating_add(weight) <= limit {
            if record {
                calls.push_back((now, weight));
            }
            return None;
        }
        let oldest = calls.front().map_or(now, |(t, _)| *t);
        let wait = WINDOW.saturating_sub(now.duration_since(oldest));
        Some(wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_window_admits_limit_in_any_window() {
        let rl = RateLimiter::new();
        let t0 = Instant::now();
        for _ in 0..20 {
            assert_eq!(rl.check_local("a", 20, t0), None);
        }
        // No second burst just after a "minute boundary": the window slides.
        assert!(rl
            .check_local("a", 20, t0 + Duration::from_secs(59))
            .is_some());
        // Another key has its own window.
        assert_eq!(rl.check_local("b", 20, t0), None);
        // A full window later the calls have left it.
        assert_eq!(rl.check_local("a", 20, t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn weighted_window_sums_the_weights() {
        let rl = RateLimiter::new();
        let t0 = Instant::now();
        assert_eq!(rl.weighted_local("t", 1000, 600, t0), None);
        assert_eq!(rl.weighted_local("t", 1000, 400, t0), None);
        assert_eq!(
            rl.weighted_local("t", 1000, 1, t0 + Duration::from_secs(30)),
            Some(30)
        );
        // A call heavier than the limit gets an empty window.
        assert_eq!(rl.weighted_local("u", 10, 50, t0), None);
        assert_eq!(
            rl.weighted_local("t", 1000, 900, t0 + Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn local_wait_is_until_the_oldest_call_leaves() {
        let rl = RateLimiter::new();
        let t0 = Instant::now();
        assert_eq!(rl.check_local("k", 1, t0), None);
        assert_eq!(
            rl.check_local("k", 1, t0 + Duration::from_secs(15)),
            Some(45)
        );
    }
}
