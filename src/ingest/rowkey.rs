//! Row keys, which make ingest idempotent (migration 0012): a row's key is
//! the SHA-256 of the tenant, the workload, the row's content as read from
//! the file (timestamp to the nanosecond, model, tokens, latency, time to
//! first token, status, recorded cost) and its occurrence among the
//! identical rows of its run of equal timestamps. Ingesting the same rows
//! again gives the same keys, which the unique index turns away; two
//! identical requests of one file (same instant, same tokens) differ in
//! their occurrence and are both kept. Only the current timestamp's rows are
//! remembered, so memory stays flat on any file; identical rows that are
//! not next to each other in timestamp order count as one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::store::telemetry::RequestRecord;

/// A row key.
pub type RowKey = [u8; 32];

/// Computes the keys of one file's rows, in file order.
#[derive(Debug)]
pub struct Keyer<'a> {
    tenant: &'a str,
    workload: &'a str,
    /// The timestamp of the current run of rows.
    run_ts: Option<DateTime<Utc>>,
    /// How often each content was seen in the current run.
    seen: HashMap<RowKey, u32>,
}

impl<'a> Keyer<'a> {
    /// Keys for a workload of a tenant.
    pub fn new(tenant: &'a str, workload: &'a str) -> Self {
        Keyer {
            tenant,
            workload,
            run_ts: None,
            seen: HashMap::new(),
        }
    }

    /// The key of the next row of the file.
    pub fn key(&mut self, rec: &RequestRecord) -> RowKey {
        if self.run_ts != Some(rec.ts) {
            self.seen.clear();
            self.run_ts = Some(rec.ts);
        }
        let content = content_digest(self.tenant, self.workload, rec);
        let n = self.seen.entry(content).or_insert(0);
        let occurrence = *n;
        *n = n.saturating_add(1);
        Sha256::new()
            .chain_update(content)
            .chain_update(occurrence.to_be_bytes())
            .finalize()
            .into()
    }
}

/// The digest of a row's content (text fields length-prefixed, so no two
/// rows share an encoding).
fn content_digest(tenant: &str, workload: &str, r: &RequestRecord) -> RowKey {
    let mut h = Sha256::new();
    h.update(b"netra-row-key-v1");
    for s in [tenant, workload, r.model.as_str(), r.status.as_str()] {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    h.update(r.ts.timestamp().to_be_bytes());
    h.update(r.ts.timestamp_subsec_nanos().to_be_bytes());
    h.update(r.input_tokens.to_be_bytes());
    h.update(r.output_tokens.to_be_bytes());
    for x in [r.latency_ms, r.ttft_ms, r.cost_usd] {
        match x {
            None => h.update([0u8]),
            Some(v) => {
                h.update([1u8]);
                h.update(v.to_bits().to_be_bytes());
            }
        }
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: &str, input: i32) -> RequestRecord {
        RequestRecord {
            ts: DateTime::parse_from_rfc3339(ts).unwrap().into(),
            model: "gpt-4o".into(),
            input_tokens: input,
            output_tokens: 5,
            latency_ms: None,
            ttft_ms: None,
            status: "ok".into(),
            cost_usd: None,
        }
    }

    #[test]
    fn keys_repeat_across_files_and_tell_identical_rows_of_one_file_apart() {
        let rows = [
            rec("2026-01-01T00:00:00Z", 1),
            rec("2026-01-01T00:00:00Z", 2),
            rec("2026-01-01T00:00:00Z", 1),
            rec("2026-01-01T00:00:01Z", 1),
        ];
        let keys = |t: &str, w: &str| {
            let mut k = Keyer::new(t, w);
            rows.iter().map(|r| k.key(r)).collect::<Vec<_>>()
        };
        let a = keys("default", "w");
        assert_eq!(a, keys("default", "w"), "the same file, the same keys");
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), 4, "identical rows of one file both kept");
        assert_ne!(a, keys("other", "w"), "the tenant is part of the key");
        assert_ne!(a, keys("default", "w2"), "the workload is part of the key");
    }
}
