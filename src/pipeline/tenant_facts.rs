//! What intake reads about tenants for every request, remembered for a
//! second: the tenant of a broker user, and a tenant's request rate.
//! During a flood a query per request would queue for a pooled connection
//! behind the phases' statements. A tenant deleted, a user mapped to
//! another tenant, or a rate changed takes effect within [`TTL`].

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::{
    config::FairConfig,
    store::{self, fair, tenants},
};

/// How long an answer is reused.
pub const TTL: Duration = Duration::from_secs(1);

/// Answers remembered at most per kind (the map is emptied beyond it).
const MOST: usize = 10_000;

/// Answers by key, each kept for [`TTL`].
#[derive(Debug)]
struct Remembered<K, V> {
    known: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K, V> Default for Remembered<K, V> {
    fn default() -> Self {
        Self {
            known: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Remembered<K, V> {
    fn get(&self, key: &K, now: Instant) -> Option<V> {
        let known = self.lock();
        let (v, at) = known.get(key)?;
        (now.duration_since(*at) < TTL).then(|| v.clone())
    }

    fn put(&self, key: K, v: V, now: Instant) {
        let mut known = self.lock();
        if known.len() >= MOST {
            known.clear();
        }
        known.insert(key, (v, now));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, Instant)>> {
        // A poisoned lock guards plain answers: they are still good.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The remembered answers of one process.
#[derive(Debug, Default)]
pub struct TenantFacts {
    users: Remembered<String, Option<String>>,
    rates: Remembered<String, u32>,
}

impl TenantFacts {
    /// The tenant mapped to broker user `user`, if any.
    pub async fn tenant_of_user(
        &self,
        pool: &PgPool,
        user: &str,
    ) -> Result<Option<String>, store::Error> {
        let now = Instant::now();
        if let Some(t) = self.users.get(&user.to_string(), now) {
            return Ok(t);
        }
        let tenant = tenants::by_amqp_user(pool, user).await?;
        self.users.put(user.to_string(), tenant.clone(), now);
        Ok(tenant)
    }

    /// `tenant`'s request rate, new runs per minute (0: no limit): its own
    /// setting, or the configured default.
    pub async fn requests_per_min(
        &self,
        pool: &PgPool,
        tenant: &str,
        fair: FairConfig,
    ) -> Result<u32, store::Error> {
        let now = Instant::now();
        if let Some(r) = self.rates.get(&tenant.to_string(), now) {
            return Ok(r);
        }
        let rate = match fair::requests_per_min(pool, tenant).await? {
            Some(own) => u32::try_from(own).unwrap_or(0),
            None => fair.requests_per_min,
        };
        self.rates.put(tenant.to_string(), rate, now);
        Ok(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_reused_for_the_ttl_only() {
        let r: Remembered<String, u32> = Remembered::default();
        let t = Instant::now();
        r.put("a".into(), 5, t);
        assert_eq!(r.get(&"a".into(), t + TTL / 2), Some(5));
        assert_eq!(r.get(&"a".into(), t + TTL), None);
        assert_eq!(r.get(&"b".into(), t), None);
    }
}
