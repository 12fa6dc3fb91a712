//! The usage page: what the language-model calls of the last `days` days
//! (1 to 90, 7 by default) came to, from the call ledger: calls, tokens
//! and cost over time (per hour for two days or less, else per day, UTC)
//! and per model, per tenant (operators) and per phase. A tenant sees its
//! own calls only. The charts are SVG drawn here, by pure functions
//! ([`svg_series`], [`svg_bars`]) that never panic on odd numbers.

use std::collections::BTreeMap;

use axum::{
    extract::{Query, State},
    response::Response,
};
use chrono::{DateTime, Duration, DurationRound, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::{layout, session::Signed, ConsoleError};
use crate::html::charts;
use crate::{
    api::error::ApiError,
    pipeline::Engine,
    store::ledger::{self, UsagePoint},
};

/// Days shown without `?days=`.
const DEFAULT_DAYS: i64 = 7;
/// Most days shown.
const MAX_DAYS: i64 = 90;

/// The page's query.
#[derive(Debug, Deserialize, Default)]
pub struct UsageQuery {
    /// Days back from now, 1 to 90.
    pub days: Option<String>,
}

/// `days` as given (empty: the default), or why not.
fn parse_days(given: Option<&str>) -> Result<i64, ConsoleError> {
    let Some(text) = given.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT_DAYS);
    };
    match text.parse::<i64>() {
        Ok(d) if (1..=MAX_DAYS).contains(&d) => Ok(d),
        _ => Err(ConsoleError::Api(ApiError::BadQuery {
            field: "days".into(),
            message: format!("a whole number of days from 1 to {MAX_DAYS}"),
        })),
    }
}

/// What a set of ledger rows adds up to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sum {
    calls: i64,
    ledger_hits: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    unpriced_calls: i64,
}

impl Sum {
    fn add(&mut self, p: &UsagePoint) {
        self.calls = self.calls.saturating_add(p.calls);
        self.ledger_hits = self.ledger_hits.saturating_add(p.ledger_hits);
        self.input_tokens = self.input_tokens.saturating_add(p.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(p.output_tokens);
        self.cost_usd += p.cost_usd;
        self.unpriced_calls = self.unpriced_calls.saturating_add(p.unpriced_calls);
    }
}

/// The rows summed by a key.
fn by<F: Fn(&UsagePoint) -> &str>(points: &[UsagePoint], key: F) -> BTreeMap<String, Sum> {
    let mut out: BTreeMap<String, Sum> = BTreeMap::new();
    for p in points {
        out.entry(key(p).to_string()).or_default().add(p);
    }
    out
}

/// Every bucket from `from`'s to `to`'s (each hour or day), with the rows
/// summed in each: buckets without calls are zeros, so the series has no gaps.
fn series(
    points: &[UsagePoint],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: Duration,
) -> Vec<(DateTime<Utc>, Sum)> {
    let mut out: BTreeMap<DateTime<Utc>, Sum> = BTreeMap::new();
    let mut t = from.duration_trunc(step).unwrap_or(from);
    // Bounded: at most 90 days of days or 2 days of hours (and a guard).
    while t < to && out.len() < 10_000 {
        out.insert(t, Sum::default());
        t += step;
    }
    for p in points {
        out.entry(p.bucket).or_default().add(p);
    }
    out.into_iter().collect()
}

/// A table of sums by one key (`what`: its heading and its cells' prefix).
fn sum_table(what: &str, sums: &BTreeMap<String, Sum>) -> Markup {
    html! {
        table id={ "by-" (what) } {
            thead { tr {
                th { (what) } th.num { "calls" } th.num { "ledger hits" } th.num { "input tokens" }
                th.num { "output tokens" } th.num { "cost $" } th.num { "unpriced calls" }
            } }
            tbody {
                @for (k, s) in sums {
                    @let key = format!("{what}:{k}");
                    tr {
                        td { (k) }
                        td.num data-calls=(key) { (s.calls) }
                        td.num { (s.ledger_hits) }
                        td.num data-input=(key) { (s.input_tokens) }
                        td.num data-output=(key) { (s.output_tokens) }
                        td.num data-cost=(key) { (format!("{:.6}", s.cost_usd)) }
                        td.num { (s.unpriced_calls) }
                    }
                }
                @if sums.is_empty() { tr { td colspan="7" .muted { "No model calls in this period." } } }
            }
        }
    }
}

fn cost_bars(title: &str, sums: &BTreeMap<String, Sum>) -> Markup {
    let items: Vec<(String, f64)> = sums.iter().map(|(k, s)| (k.clone(), s.cost_usd)).collect();
    charts::bars(title, "USD", &items)
}

fn call_bars(title: &str, sums: &BTreeMap<String, Sum>) -> Markup {
    let items: Vec<(String, f64)> = sums
        .iter()
        .map(|(k, s)| (k.clone(), s.calls as f64))
        .collect();
    charts::bars(title, "calls", &items)
}

/// `GET /console/usage?days=N`.
pub async fn page(
    State(engine): State<Engine>,
    signed: Signed,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ConsoleError> {
    let days = parse_days(q.days.as_deref())?;
    let to = Utc::now();
    let from = to - Duration::days(days);
    let (bucket, step, fmt) = if days <= 2 {
        ("hour", Duration::hours(1), "%m-%d %H:00")
    } else {
        ("day", Duration::days(1), "%Y-%m-%d")
    };
    let points = ledger::usage_series(&engine.pool, signed.scope(), from, to, bucket).await?;
    let mut total = Sum::default();
    for p in &points {
        total.add(p);
    }
    let over_time = series(&points, from, to, step);
    let label = |t: &DateTime<Utc>| t.format(fmt).to_string();
    let cost_points: Vec<(String, f64)> = over_time
        .iter()
        .map(|(t, s)| (label(t), s.cost_usd))
        .collect();
    let call_points: Vec<(String, f64)> = over_time
        .iter()
        .map(|(t, s)| (label(t), s.calls as f64))
        .collect();
    let by_model = by(&points, |p| &p.model);
    let by_tenant = by(&points, |p| &p.tenant);
    let by_phase = by(&points, |p| &p.phase);
    let body = html! {
        h1 { "Usage" }
        form.filters method="get" action="/console/usage" {
            label { "days (1–90)" input type="number" name="days" min="1" max="90" value=(days); }
            button type="submit" { "Show" }
        }
        p.muted {
            "The language-model calls of " (if signed.is_operator() { "every tenant" } else { "your runs" })
            " from " (layout::when(&from)) " to " (layout::when(&to)) " UTC, from the call ledger, per " (bucket) ". "
            "Cost is at the supply catalog's prices; calls to a model without a price are counted as unpriced and add no cost. "
            "A ledger hit reused a recorded answer and cost nothing. Also at " code { "GET /v1/usage" } "."
        }
        div.counts #usage-totals {
            div.count { b.num #total-calls { (total.calls) } "calls" }
            div.count { b.num #total-input { (total.input_tokens) } "input tokens" }
            div.count { b.num #total-output { (total.output_tokens) } "output tokens" }
            div.count { b.num #total-cost { "$" (format!("{:.6}", total.cost_usd)) } "cost" }
            div.count { b.num { (total.ledger_hits) } "ledger hits" }
            div.count { b.num { (total.unpriced_calls) } "unpriced calls" }
        }
        h2 { "Over time" }
        div.grid2 {
            (charts::line(&format!("Cost per {bucket}"), "USD", &cost_points))
            (charts::line(&format!("Calls per {bucket}"), "calls", &call_points))
        }
        h2 { "By model" }
        div.grid2 { (cost_bars("Cost by model", &by_model)) (call_bars("Calls by model", &by_model)) }
        (sum_table("model", &by_model))
        @if signed.is_operator() {
            h2 { "By tenant" }
            div.grid2 { (cost_bars("Cost by tenant", &by_tenant)) (call_bars("Calls by tenant", &by_tenant)) }
            (sum_table("tenant", &by_tenant))
        }
        h2 { "By phase" }
        div.grid2 { (cost_bars("Cost by phase", &by_phase)) (call_bars("Calls by phase", &by_phase)) }
        (sum_table("phase", &by_phase))
    };
    Ok(layout::page(&signed, "Usage", "Usage", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_1_to_90() {
        assert_eq!(parse_days(None).ok(), Some(7));
        assert_eq!(parse_days(Some("")).ok(), Some(7));
        assert_eq!(parse_days(Some("2")).ok(), Some(2));
        assert_eq!(parse_days(Some("90")).ok(), Some(90));
        for bad in ["0", "91", "-1", "x", "1.5", "99999999999999999999"] {
            assert!(parse_days(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn series_have_every_bucket() {
        let to = Utc::now();
        let from = to - Duration::days(3);
        let s = series(&[], from, to, Duration::days(1));
        assert!((3..=4).contains(&s.len()), "{}", s.len());
        assert!(s.iter().all(|(_, v)| *v == Sum::default()));
        let h = series(&[], to - Duration::days(2), to, Duration::hours(1));
        assert!((48..=49).contains(&h.len()), "{}", h.len());
    }
}
