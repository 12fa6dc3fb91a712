//! A bounded in-process memo of read-only results, keyed by the version of
//! the data they were computed from.
//!
//! Every write to the data the agents' tools read (telemetry, workloads, the
//! supply catalog) bumps one counter in Postgres (`data_version`, kept by
//! statement triggers, migration 0005), in the writer's transaction. The
//! engine reads that counter in the same statement that starts a phase and
//! hands it to the agent, which looks results up under it. A result is
//! stored only under the version read both just before and just after it
//! was computed ([`current_version`]): no write committed in between, so the
//! result is exactly what the tool computes at that version. A write after
//! the phase started is not seen by that phase, as if it had committed a
//! moment later; the next phase sees it. Entries of older versions are never
//! looked up again and age out of the least-recently-used bound. Only
//! successful results are kept.

use std::{
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use lru::LruCache;
use serde_json::Value;
use sqlx::PgPool;

/// The data version now (`None` if it cannot be read: then nothing is
/// stored).
pub async fn current_version(pool: &PgPool) -> Option<i64> {
    crate::store::data_version(pool).await.ok()
}

/// The memo, shared by every phase of a process. `lru` gives the bound and
/// the eviction order; a `Mutex` suffices because entries are looked up and
/// inserted, never computed, under the lock.
pub struct Memo {
    entries: Option<Mutex<LruCache<String, Arc<Value>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Memo {
    /// A memo holding at most `capacity` results; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Memo {
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether results are kept at all.
    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The key of a result: the data version, the tenant, what was called
    /// and its parameters (serde_json objects serialize with sorted keys, so
    /// equal parameters give equal keys).
    pub fn key(version: i64, tenant: &str, name: &str, params: &Value) -> String {
        format!("{version}\u{1f}{tenant}\u{1f}{name}\u{1f}{params}")
    }

    /// A memoized result.
    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        let entries = self.entries.as_ref()?;
        let hit = entries.lock().ok()?.get(key).cloned();
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Keeps a result.
    pub fn put(&self, key: String, value: Arc<Value>) {
        if let Some(mut entries) = self.entries.as_ref().and_then(|e| e.lock().ok()) {
            entries.put(key, value);
        }
    }

    /// Lookups that found a result and lookups that did not.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

impl Default for Memo {
    fn default() -> Self {
        Memo::new(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_separate_versions_tenants_and_parameters() {
        let p = json!({"workload_id": "w", "days": 7});
        let same_params_other_order: Value =
            serde_json::from_str(r#"{"days": 7, "workload_id": "w"}"#).unwrap();
        assert_eq!(
            Memo::key(1, "t", "m", &p),
            Memo::key(1, "t", "m", &same_params_other_order)
        );
        assert_ne!(Memo::key(1, "t", "m", &p), Memo::key(2, "t", "m", &p));
        assert_ne!(Memo::key(1, "t", "m", &p), Memo::key(1, "u", "m", &p));
        assert_ne!(
            Memo::key(1, "t", "m", &p),
            Memo::key(1, "t", "m", &json!({"workload_id": "w", "days": 8}))
        );
    }

    #[test]
    fn bounded_and_can_be_disabled() {
        let memo = Memo::new(2);
        for i in 0..3 {
            memo.put(format!("k{i}"), Arc::new(json!(i)));
        }
        assert!(memo.get("k0").is_none(), "the oldest entry is evicted");
        assert_eq!(*memo.get("k2").unwrap(), json!(2));
        assert_eq!(memo.stats(), (1, 1));

        let off = Memo::new(0);
        off.put("k".into(), Arc::new(json!(1)));
        assert!(!off.enabled());
        assert!(off.get("k").is_none());
    }
}
