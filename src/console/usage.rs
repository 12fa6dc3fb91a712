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

/// A number as the charts label it: `—` when not finite, whole numbers
/// without decimals, huge ones in exponent form.
fn num(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.abs() >= 1e12 {
        format!("{v:.3e}")
    } else if v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// A value a chart can place: not finite is 0, and magnitudes are bounded
/// so that differences of two values stay finite.
fn plottable(v: f64) -> f64 {
    if v.is_finite() {
        v.clamp(-1e300, 1e300)
    } else {
        0.0
    }
}

/// Where `v` falls in `[lo, hi]`, from 0 to 1 (0 for an empty range).
fn share(v: f64, lo: f64, hi: f64) -> f64 {
    let span = hi - lo;
    if span > 0.0 && span.is_finite() {
        ((plottable(v) - lo) / span).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

const CHART_W: f64 = 640.0;
const CHART_H: f64 = 180.0;
const PAD_L: f64 = 70.0;
const PAD_B: f64 = 24.0;
const PAD_T: f64 = 12.0;

/// A time series as an SVG line chart: `points` in order (label, value),
/// the y axis from the least of 0 and the values to the greatest. Values
/// that are not finite are drawn as 0 (and labelled `—`).
fn svg_series(title: &str, unit: &str, points: &[(String, f64)]) -> Markup {
    let values: Vec<f64> = points.iter().map(|(_, v)| plottable(*v)).collect();
    let hi = values.iter().copied().fold(0.0_f64, f64::max);
    let lo = values.iter().copied().fold(0.0_f64, f64::min);
    let plot_w = CHART_W - PAD_L - 10.0;
    let plot_h = CHART_H - PAD_T - PAD_B;
    let x = |i: usize| {
        if points.len() <= 1 {
            PAD_L + plot_w / 2.0
        } else {
            PAD_L + plot_w * i as f64 / (points.len() - 1) as f64
        }
    };
    let y = |v: f64| PAD_T + plot_h * (1.0 - share(v, lo, hi));
    let line: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect::<Vec<_>>()
        .join(" ");
    html! {
        figure.chart {
            figcaption { b { (title) } " (" (unit) ")" }
            svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(title)
                viewBox={ "0 0 " (CHART_W) " " (CHART_H) } width="100%" style="max-width:640px;background:#fff;border:1px solid #d9dee6" {
                title { (title) }
                line x1=(PAD_L) y1=(PAD_T + plot_h) x2=(CHART_W - 10.0) y2=(PAD_T + plot_h) stroke="#d9dee6" {}
                line x1=(PAD_L) y1=(PAD_T) x2=(PAD_L) y2=(PAD_T + plot_h) stroke="#d9dee6" {}
                text x=(PAD_L - 6.0) y=(PAD_T + 10.0) text-anchor="end" font-size="11" fill="#5b6574" { (num(hi)) }
                text x=(PAD_L - 6.0) y=(PAD_T + plot_h) text-anchor="end" font-size="11" fill="#5b6574" { (num(lo)) }
                @if points.is_empty() {
                    text x=(PAD_L + plot_w / 2.0) y=(PAD_T + plot_h / 2.0) text-anchor="middle" font-size="12" fill="#5b6574" { "No data" }
                } @else {
                    @if let Some((first, _)) = points.first() {
                        text x=(PAD_L) y=(CHART_H - 6.0) font-size="11" fill="#5b6574" { (first) }
                    }
                    @if points.len() > 1 {
                        @if let Some((last, _)) = points.last() {
                            text x=(CHART_W - 10.0) y=(CHART_H - 6.0) text-anchor="end" font-size="11" fill="#5b6574" { (last) }
                        }
                        polyline points=(line) fill="none" stroke="#2456c8" stroke-width="1.5" {}
                    }
                    @for (i, (label, v)) in points.iter().enumerate() {
                        circle cx={ (format!("{:.1}", x(i))) } cy={ (format!("{:.1}", y(values[i]))) } r="2.5" fill="#2456c8" {
                            title { (label) ": " (num(*v)) " " (unit) }
                        }
                    }
                }
            }
        }
    }
}

/// Labelled values as SVG horizontal bars, longest for the greatest value;
/// a value that is not finite, or not above 0, has no bar (its label says
/// what it is).
fn svg_bars(title: &str, unit: &str, items: &[(String, f64)]) -> Markup {
    let hi = items
        .iter()
        .map(|(_, v)| plottable(*v))
        .fold(0.0_f64, f64::max);
    let row_h = 20.0;
    let label_w = 180.0;
    let value_w = 110.0;
    let bar_w = CHART_W - label_w - value_w;
    let height = (items.len().max(1) as f64) * row_h + 8.0;
    html! {
        figure.chart {
            figcaption { b { (title) } " (" (unit) ")" }
            svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(title)
                viewBox={ "0 0 " (CHART_W) " " (height) } width="100%" style="max-width:640px;background:#fff;border:1px solid #d9dee6" {
                title { (title) }
                @if items.is_empty() {
                    text x="8" y="18" font-size="12" fill="#5b6574" { "No data" }
                }
                @for (i, (label, v)) in items.iter().enumerate() {
                    @let top = 4.0 + i as f64 * row_h;
                    @let w = bar_w * share(*v, 0.0, hi);
                    text x=(label_w - 6.0) y=(top + 14.0) text-anchor="end" font-size="12" fill="#1d2430" { (super::runs::clip(label, 26)) }
                    rect x=(label_w) y=(top + 3.0) width={ (format!("{w:.1}")) } height=(row_h - 6.0) fill="#2456c8" {
                        title { (label) ": " (num(*v)) " " (unit) }
                    }
                    text x=(label_w + w + 4.0) y=(top + 14.0) font-size="11" fill="#5b6574" { (num(*v)) }
                }
            }
        }
    }
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
    svg_bars(title, "USD", &items)
}

fn call_bars(title: &str, sums: &BTreeMap<String, Sum>) -> Markup {
    let items: Vec<(String, f64)> = sums
        .iter()
        .map(|(k, s)| (k.clone(), s.calls as f64))
        .collect();
    svg_bars(title, "calls", &items)
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
            (svg_series(&format!("Cost per {bucket}"), "USD", &cost_points))
            (svg_series(&format!("Calls per {bucket}"), "calls", &call_points))
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

    fn pts(values: &[f64]) -> Vec<(String, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("p{i}"), *v))
            .collect()
    }

    /// Every number in the SVG's coordinates is finite.
    fn coordinates_are_finite(svg: &str) {
        assert!(!svg.contains("NaN"), "{svg}");
        assert!(!svg.contains("inf"), "{svg}");
    }

    #[test]
    fn charts_of_nothing_say_so() {
        let s = svg_series("Cost", "USD", &[]).into_string();
        assert!(s.contains("No data") && s.contains("<svg"), "{s}");
        let b = svg_bars("Cost", "USD", &[]).into_string();
        assert!(b.contains("No data") && b.contains("<svg"), "{b}");
    }

    #[test]
    fn odd_values_never_panic_or_draw_nan() {
        let odd = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -5.0,
            0.0,
            f64::MAX,
            -f64::MAX,
            f64::MIN_POSITIVE,
            1e308,
        ];
        for values in [&odd[..], &[f64::NAN], &[-1.0], &[f64::MAX], &[0.0, 0.0]] {
            let s = svg_series("t", "u", &pts(values)).into_string();
            coordinates_are_finite(&s);
            let b = svg_bars("t", "u", &pts(values)).into_string();
            coordinates_are_finite(&b);
        }
        // The labels say a value is unknown rather than printing NaN.
        assert!(svg_bars("t", "u", &pts(&[f64::NAN]))
            .into_string()
            .contains('—'));
    }

    #[test]
    fn the_greatest_bar_is_full_and_negative_bars_are_empty() {
        let b = svg_bars("t", "u", &pts(&[2.0, 1.0, -3.0])).into_string();
        let full = format!("width=\"{:.1}\"", CHART_W - 180.0 - 110.0);
        let half = format!("width=\"{:.1}\"", (CHART_W - 180.0 - 110.0) / 2.0);
        assert!(b.contains(&full), "{b}");
        assert!(b.contains(&half), "{b}");
        assert!(b.contains("width=\"0.0\""), "{b}");
    }

    #[test]
    fn labels_are_escaped() {
        let b = svg_bars("t", "u", &[("<script>".to_string(), 1.0)]).into_string();
        assert!(!b.contains("<script>") && b.contains("&lt;script&gt;"));
    }

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

    #[test]
    fn numbers_are_labelled_readably() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(0.125), "0.1250");
        assert_eq!(num(f64::NAN), "—");
        assert!(num(f64::MAX).contains('e'));
    }
}
