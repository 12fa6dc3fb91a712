//! `GET /v1/usage`: what the caller's tenant's language-model calls add up
//! to over a time range (the call ledger, [`crate::store::ledger`]),
//! optionally grouped by tenant, model and phase.

use std::collections::BTreeMap;

use axum::{
    extract::{Query, State},
    Json,
};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::{auth::Tenant, error::ApiError};
use crate::{
    pipeline::Engine,
    store::ledger::{self, GroupBy},
};

/// The range when `from` is not given: this many days before `to`.
pub const DEFAULT_DAYS: i64 = 30;

/// The query parameters `GET /v1/usage` reads; any other is refused.
pub const PARAMS: [&str; 3] = ["from", "to", "group_by"];

/// The parsed query: `[from, to)` and the grouping.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// What to group by.
    pub group_by: GroupBy,
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadQuery {
        field: field.to_string(),
        message: message.into(),
    }
}

fn timestamp(q: &BTreeMap<String, String>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    q.get(name)
        .map(|v| {
            // A `+` of an offset arrives as a space unless sent as `%2B`.
            DateTime::parse_from_rfc3339(&v.trim().replace(' ', "+"))
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    bad(
                        name,
                        format!("an RFC 3339 time such as 2026-01-31T00:00:00Z ({e})"),
                    )
                })
        })
        .transpose()
}

/// Parses and checks the query (a `400` names the parameter): `from` and
/// `to` are RFC 3339 times (default: the last [`DEFAULT_DAYS`] days up to
/// now), `from` not after `to`; `group_by` is any of `tenant`, `model`,
/// `phase`, comma-separated.
pub fn parse(q: &BTreeMap<String, String>, now: DateTime<Utc>) -> Result<UsageQuery, ApiError> {
    if let Some(unknown) = q.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(bad(
            unknown,
            format!("unknown parameter (known: {})", PARAMS.join(", ")),
        ));
    }
    let to = timestamp(q, "to")?.unwrap_or(now);
    let from = match timestamp(q, "from")? {
        Some(f) => f,
        None => to
            .checked_sub_signed(Duration::days(DEFAULT_DAYS))
            .ok_or_else(|| bad("to", "too early"))?,
    };
    if from > to {
        return Err(bad("from", format!("{from} is after `to` ({to})")));
    }
    let group_by = match q.get("group_by") {
        Some(g) => GroupBy::parse(g).map_err(|e| bad("group_by", e))?,
        None => GroupBy::default(),
    };
    Ok(UsageQuery { from, to, group_by })
}

/// `GET /v1/usage?from=&to=&group_by=`: the caller's tenant's totals (and
/// groups): calls, ledger hits, failures, tokens in, out and cached, cost
/// and latency (sum and mean).
pub async fn get(
    State(engine): State<Engine>,
    Tenant(tenant): Tenant,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let q = parse(&q, Utc::now())?;
    let (totals, groups) =
        ledger::usage_of_tenant(&engine.pool, &tenant, q.from, q.to, &q.group_by).await?;
    let keys: Vec<&str> = q.group_by.keys().iter().map(|k| k.as_str()).collect();
    Ok(Json(json!({
        "tenant": tenant,
        "from": q.from,
        "to": q.to,
        "group_by": keys,
        "totals": totals,
        "groups": groups,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn field(e: ApiError) -> String {
        match e {
            ApiError::BadQuery { field, .. } => field,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn defaults_to_the_last_30_days_and_names_bad_parameters() {
        let now = DateTime::parse_from_rfc3339("2026-03-31T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let q = parse(&query(&[]), now).unwrap();
        assert_eq!((q.to, q.to - q.from), (now, Duration::days(30)));
        let q = parse(&query(&[("group_by", "phase, model")]), now).unwrap();
        let keys: Vec<_> = q.group_by.keys().iter().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["phase", "model"]);
        for (pairs, name) in [
            (vec![("from", "yesterday")], "from"),
            (vec![("to", "2026-13-01T00:00:00Z")], "to"),
            (
                vec![
                    ("from", "2026-03-02T00:00:00Z"),
                    ("to", "2026-03-01T00:00:00Z"),
                ],
                "from",
            ),
            (vec![("group_by", "model,workload")], "group_by"),
            (vec![("group_by", "model,model")], "group_by"),
            (vec![("tenant", "other")], "tenant"),
        ] {
            assert_eq!(
                field(parse(&query(&pairs), now).unwrap_err()),
                name,
                "{pairs:?}"
            );
        }
    }
}
