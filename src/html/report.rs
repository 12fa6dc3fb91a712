//! A run's report as HTML: the reporting phase's output (the run's
//! result, [`crate::agents::outputs::ReportOutput`] as stored) with three
//! charts drawn on the server: the requests over the run's telemetry
//! window, the cost by model and the monthly saving of each
//! recommendation.
//!
//! The window is the one the data phase read, pinned: each workload's
//! first and last request as the report's metrics name them
//! (`first_ts`, `last_ts`), so a report drawn after more telemetry arrived
//! still shows the requests the run counted. A window of more than
//! [`MAX_POINTS`] clock minutes is drawn in coarser buckets (see
//! [`bucket_minutes`]), and the chart says so.
//!
//! [`body`] is the report without the document shell (for the console to
//! embed), [`render`] adds the run's header (the request, escaped), and
//! [`load`] reads what they need, tenant-scoped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::charts::{self, format_value};
use crate::store::{
    self,
    runs::{self, RunStatus},
    telemetry::{self, Span},
};

/// At most this many points in the requests chart: a window of more clock
/// minutes is drawn in coarser buckets.
pub const MAX_POINTS: i64 = 1500;

/// The bucket widths, in minutes, a long window is drawn in (the smallest
/// that keeps the chart within [`MAX_POINTS`]).
const BUCKETS: [i64; 13] = [2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080];

/// Minutes in a day.
const DAY_MINUTES: i64 = 1440;

/// Everything a report page shows.
#[derive(Debug, Clone)]
pub struct ReportPage {
    /// The run.
    pub run_id: Uuid,
    /// Its status (`completed` or `needs_input`: those have a report).
    pub status: RunStatus,
    /// The request's text, as the user wrote it.
    pub request: String,
    /// When the run finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The report: the reporting phase's output.
    pub report: Value,
    /// Requests per bucket over the window, oldest first, every bucket
    /// present (zero-filled), summed over the report's workloads.
    pub per_minute: Vec<(DateTime<Utc>, i64)>,
    /// The width of a bucket, minutes (1 unless the window is longer than
    /// [`MAX_POINTS`] minutes).
    pub bucket_minutes: i64,
}

/// What a run id names, for a tenant.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// No such run, or another tenant's.
    NotFound,
    /// The run has no report (yet): its status.
    NoReport(RunStatus),
    /// The report.
    Found(Box<ReportPage>),
}

/// The bucket width, in minutes, for a window of `minutes` clock minutes:
/// 1 up to [`MAX_POINTS`], else the smallest of 2, 5, 10, 15, 30 minutes,
/// 1, 2, 3, 6, 12 hours, 1, 2, 7 days that keeps the chart within
/// [`MAX_POINTS`] points (one more for the alignment to the clock), else
/// whole days.
pub fn bucket_minutes(minutes: i64) -> i64 {
    if minutes <= MAX_POINTS {
        return 1;
    }
    let fits = |b: i64| ceil_div(minutes, b) < MAX_POINTS;
    BUCKETS.into_iter().find(|b| fits(*b)).unwrap_or_else(|| {
        let days = ceil_div(ceil_div(minutes, DAY_MINUTES), MAX_POINTS - 1);
        days.max(1).saturating_mul(DAY_MINUTES)
    })
}

/// `a / b` rounded up, for `a >= 0` and `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

/// The window of each workload of a report: its id, first and last
/// request (those of the report's metrics with both).
pub fn spans(report: &Value) -> Vec<(String, DateTime<Utc>, DateTime<Utc>)> {
    let ts = |v: &Value| {
        v.as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    report["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let id = m["workload_id"].as_str()?;
            let (first, last) = (ts(&m["first_ts"])?, ts(&m["last_ts"])?);
            (first <= last).then(|| (id.to_string(), first, last))
        })
        .collect()
}

/// Clock minutes from `first`'s to `last`'s, both included.
fn clock_minutes(first: DateTime<Utc>, last: DateTime<Utc>) -> i64 {
    let minute = |t: DateTime<Utc>| t.timestamp().div_euclid(60);
    minute(last) - minute(first) + 1
}

/// Every bucket of `bucket` minutes from the one holding `from` to the one
/// holding `to`, with the requests of `rows` in it (zero where none):
/// rows outside the range are left out, rows of one bucket are summed.
pub fn fill(
    rows: &[(DateTime<Utc>, i64)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: i64,
) -> Vec<(DateTime<Utc>, i64)> {
    let secs = bucket.max(1).saturating_mul(60);
    let start = from.timestamp().div_euclid(secs);
    let end = to.timestamp().div_euclid(secs);
    if end < start {
        return Vec::new();
    }
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for (t, n) in rows {
        let k = t.timestamp().div_euclid(secs);
        if (start..=end).contains(&k) {
            *counts.entry(k).or_default() += n;
        }
    }
    // Bounded whatever the input: a bucket chosen by `bucket_minutes`
    // keeps a window within MAX_POINTS.
    (start..=end)
        .take(4 * MAX_POINTS as usize)
        .filter_map(|k| {
            let t = DateTime::from_timestamp(k.saturating_mul(secs), 0)?;
            Some((t, counts.get(&k).copied().unwrap_or(0)))
        })
        .collect()
}

/// Reads a run's report for `tenant`, with the requests over its
/// workloads' windows (one statement per workload).
pub async fn load(pool: &PgPool, tenant: &str, run_id: Uuid) -> Result<Lookup, store::Error> {
    let Some(run) = runs::get_for_tenant(pool, tenant, run_id).await? else {
        return Ok(Lookup::NotFound);
    };
    let report = match run.result {
        Some(r) if run.status.has_result() && r.is_object() => r,
        _ => return Ok(Lookup::NoReport(run.status)),
    };
    let spans = spans(&report);
    let range = spans
        .iter()
        .map(|(_, f, l)| (*f, *l))
        .reduce(|(f1, l1), (f2, l2)| (f1.min(f2), l1.max(l2)));
    let (per_minute, bucket) = match range {
        None => (Vec::new(), 1),
        Some((from, to)) => {
            let bucket = bucket_minutes(clock_minutes(from, to));
            let mut rows = Vec::new();
            for (workload, first, last) in &spans {
                let span = Span {
                    tenant,
                    workload,
                    from: *first,
                    to: *last,
                };
                rows.extend(telemetry::requests_per_minute(pool, span, bucket).await?);
            }
            (fill(&rows, from, to, bucket), bucket)
        }
    };
    Ok(Lookup::Found(Box::new(ReportPage {
        run_id: run.id,
        status: run.status,
        request: run.request["message"].as_str().unwrap_or("").to_string(),
        finished_at: run.finished_at,
        report,
        per_minute,
        bucket_minutes: bucket,
    })))
}

/// The page's title.
pub fn title(page: &ReportPage) -> String {
    format!("netra report · run {}", page.run_id)
}

/// The report with its header: the run, its status and the request (as
/// the user wrote it, escaped), then [`body`].
pub fn render(page: &ReportPage) -> Markup {
    html! {
        header {
            h1 { "netra report" }
            p.meta {
                "Run " code { (page.run_id) } " · " (page.status.as_str())
                @if let Some(t) = page.finished_at { " · finished " (t.format("%Y-%m-%d %H:%M:%S UTC")) }
            }
            @if !page.request.is_empty() {
                blockquote.request { (page.request) }
            }
        }
        (body(&page.report, &page.per_minute))
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A number of the report with a unit (`$` before it), "n/a" when absent.
fn figure(v: &Value, unit: &str) -> String {
    match v.as_f64() {
        None => "n/a".to_string(),
        Some(x) => {
            let n = format_value(x);
            match (unit, n.strip_prefix('-')) {
                (_, _) if n == "n/a" => n,
                ("$", Some(abs)) => format!("-${abs}"),
                ("$", None) => format!("${n}"),
                ("", _) => n,
                ("%", _) => format!("{n}%"),
                (u, _) => format!("{n} {u}"),
            }
        }
    }
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// The spacing of a series, minutes (the smallest step between two
/// points; 1 for fewer than two).
fn spacing(per_minute: &[(DateTime<Utc>, i64)]) -> i64 {
    per_minute
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).num_minutes())
        .filter(|m| *m > 0)
        .min()
        .unwrap_or(1)
}

/// A bucket width in words: "minute", "5 minutes", "hour", "2 days".
fn bucket_words(minutes: i64) -> String {
    match minutes {
        1 => "minute".to_string(),
        60 => "hour".to_string(),
        DAY_MINUTES => "day".to_string(),
        m if m % DAY_MINUTES == 0 => format!("{} days", m / DAY_MINUTES),
        m if m % 60 == 0 => format!("{} hours", m / 60),
        m => format!("{m} minutes"),
    }
}

/// The requests chart: per minute, or per bucket when the window is long
/// (said in the title and a note), with the window in UTC.
fn requests_chart(per_minute: &[(DateTime<Utc>, i64)]) -> Markup {
    let bucket = spacing(per_minute);
    let (first, last) = match (per_minute.first(), per_minute.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => return charts::line("Requests per minute", "requests", &[]),
    };
    let one_day = first.date_naive() == last.date_naive();
    let format = if one_day { "%H:%M" } else { "%m-%d %H:%M" };
    let points: Vec<(String, f64)> = per_minute
        .iter()
        .map(|(t, n)| (t.format(format).to_string(), *n as f64))
        .collect();
    let end = last + chrono::Duration::minutes(bucket);
    html! {
        (charts::line(&format!("Requests per {}", bucket_words(bucket)), "requests", &points))
        p.note.meta {
            "UTC, " (first.format("%Y-%m-%d %H:%M")) " to " (end.format("%Y-%m-%d %H:%M"))
            " (the window the data phase read, every workload of the run summed)."
            @if bucket > 1 {
                " The window is longer than " (format_value(MAX_POINTS as f64))
                " minutes, so each point counts the requests of " (bucket_words(bucket))
                " (clock-aligned buckets) to keep the chart readable."
            }
        }
    }
}

/// The cost chart: each model's cost over the window (per workload when
/// the report has several); a model without a cost is "n/a".
fn cost_chart(metrics: &[Value]) -> Markup {
    let several = metrics.len() > 1;
    let items: Vec<(String, f64)> = metrics
        .iter()
        .flat_map(|m| {
            let workload = text(&m["workload_id"]);
            array(&m["models"]).iter().map(move |x| {
                let model = text(&x["model"]);
                let label = if several {
                    format!("{model} ({workload})")
                } else {
                    model.to_string()
                };
                (label, x["cost_usd"].as_f64().unwrap_or(f64::NAN))
            })
        })
        .collect();
    let unknown = metrics
        .iter()
        .flat_map(|m| array(&m["models"]))
        .any(|x| x["cost_usd"].is_null());
    html! {
        (charts::bars("Cost by model over the window", "$", &items))
        @if unknown {
            p.note.meta { "n/a: a model that is not in the supply catalog and has no recorded cost." }
        }
    }
}

/// The savings chart: each recommendation's monthly saving, in rank
/// order (a negative saving, a cost, draws left of zero).
fn savings_chart(recs: &[Value]) -> Markup {
    let items: Vec<(String, f64)> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                format!("{}. {}", i + 1, text(&r["title"])),
                r["monthly_savings_usd"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    charts::bars("Monthly savings by recommendation", "$", &items)
}

/// The latency impact of a recommendation: its note, else the ms.
fn latency(r: &Value) -> String {
    match r["latency_note"].as_str() {
        Some(note) => note.to_string(),
        None => figure(&r["latency_impact_ms"], "ms"),
    }
}

/// The report without the document shell: summary, headline figures, the
/// three charts, recommendations, action plan, metrics, validation,
/// caveats, next steps, model usage and the Markdown. `per_minute` is the
/// requests per bucket over the window, zero-filled (the bucket width is
/// read from the spacing of its points: one minute, or coarser for a long
/// window). Every string of the report is escaped.
pub fn body(report: &Value, per_minute: &[(DateTime<Utc>, i64)]) -> Markup {
    let metrics = array(&report["metrics"]);
    let recs = report["recommendations"].as_array();
    let plan = array(&report["action_plan"]);
    html! {
        article.report {
            @if report["needs_input"] == true {
                div.notice {
                    strong { "Needs input. " }
                    (text(&report["clarifying_question"]))
                }
            }
            h2 { "Executive summary" }
            p.summary { (text(&report["executive_summary"])) }
            @if report["current_monthly_cost_usd"].is_number() || report["total_monthly_savings_usd"].is_number() {
                div.tiles {
                    div.tile { div.k { "Spend now, per month" } div.v { (figure(&report["current_monthly_cost_usd"], "$")) } }
                    div.tile { div.k { "Savings, per month" } div.v { (figure(&report["total_monthly_savings_usd"], "$")) } }
                    @if let Some(recs) = recs {
                        div.tile { div.k { "Recommendations" } div.v { (recs.len()) } }
                    }
                }
            }
            @if !metrics.is_empty() || recs.is_some() {
                h2 { "Charts" }
            }
            @if !metrics.is_empty() {
                section.chart-block #chart-requests { (requests_chart(per_minute)) }
                section.chart-block #chart-cost { (cost_chart(metrics)) }
            }
            @if let Some(recs) = recs {
                section.chart-block #chart-savings { (savings_chart(recs)) }
                (recommendations(recs, array(&report["why"])))
            }
            @if !plan.is_empty() {
                (action_plan(plan))
            }
            @if !metrics.is_empty() {
                (metrics_table(metrics))
            }
            @if report["validation"].is_object() {
                (validation(&report["validation"], &report["supply_configuration"]))
            }
            @if let Some(c) = report["caveats"].as_array().filter(|c| !c.is_empty()) {
                h2 { "Caveats" }
                ul { @for x in c { li { (text(x)) } } }
            }
            @if let Some(s) = report["next_steps"].as_array().filter(|s| !s.is_empty()) {
                h2 { "Next steps" }
                ol { @for x in s { li { (text(x)) } } }
            }
            @if let Some(u) = report["model_usage"].as_array().filter(|u| !u.is_empty()) {
                (model_usage(u))
            }
            @if !text(&report["markdown"]).is_empty() {
                details.markdown {
                    summary { "The report as Markdown" }
                    pre { (text(&report["markdown"])) }
                }
            }
        }
    }
}

fn recommendations(recs: &[Value], why: &[Value]) -> Markup {
    html! {
        h2 { "Recommendations" }
        @if recs.is_empty() {
            p { "No option beats the current setup within the constraints." }
        } @else {
            table.recommendations {
                thead { tr {
                    th.num { "#" } th { "Recommendation" } th { "Workload" }
                    th.num { "Monthly savings" } th { "Latency impact" } th { "Risk" } th { "Confidence" }
                } }
                tbody {
                    @for (i, r) in recs.iter().enumerate() {
                        tr {
                            td.num { (i + 1) }
                            td {
                                (text(&r["title"]))
                                @if let Some(w) = why.get(i).and_then(Value::as_str) { br; span.meta { (w) } }
                            }
                            td { (text(&r["workload_id"])) }
                            td.num { (figure(&r["monthly_savings_usd"], "$")) }
                            td { (latency(r)) }
                            td { (text(&r["risk"])) }
                            td { (text(&r["confidence"])) }
                        }
                    }
                }
            }
            details {
                summary { "How each figure was computed" }
                ol { @for r in recs { li { (text(&r["basis"])) } } }
            }
        }
    }
}

fn action_plan(plan: &[Value]) -> Markup {
    html! {
        h2 { "Action plan" }
        @for p in plan {
            h3 { (text(&p["recommendation"])) }
            ol { @for s in array(&p["steps"]) { li { (text(s)) } } }
        }
    }
}

/// A row of the metrics table: its name and how a workload's cell reads.
type MetricRow = (&'static str, fn(&Value) -> String);

/// The figures of each workload, one column per workload.
fn metrics_table(metrics: &[Value]) -> Markup {
    let rows: [MetricRow; 11] = [
        ("Window", |m| text(&m["span"]).to_string()),
        ("Requests", |m| figure(&m["requests"], "")),
        ("Error rate", |m| {
            figure(&m["error_rate"].as_f64().map(|e| e * 100.0).into(), "%")
        }),
        ("Input tokens", |m| figure(&m["input_tokens"], "")),
        ("Output tokens", |m| figure(&m["output_tokens"], "")),
        ("Latency p50 / p95 / p99, ms", |m| {
            let l = &m["latency_ms"];
            format!(
                "{} / {} / {}",
                figure(&l["p50"], ""),
                figure(&l["p95"], ""),
                figure(&l["p99"], "")
            )
        }),
        ("Requests per hour: average / peak", |m| {
            format!(
                "{} / {}",
                figure(&m["avg_per_hour"], ""),
                figure(&m["peak_per_hour"], "")
            )
        }),
        ("Requests per minute: average / peak", |m| {
            format!(
                "{} / {}",
                figure(&m["avg_per_minute"], ""),
                figure(&m["peak_per_minute"], "")
            )
        }),
        ("Cost over the window", |m| {
            figure(&m["window_cost_usd"], "$")
        }),
        ("Monthly factor", |m| figure(&m["monthly_factor"], "")),
        ("Cost per month", |m| figure(&m["monthly_cost_usd"], "$")),
    ];
    html! {
        h2 { "Metrics" }
        table.metrics {
            thead { tr {
                th { "Workload" }
                @for m in metrics { th.num { (text(&m["workload_id"])) } }
            } }
            tbody {
                @for (name, cell) in rows {
                    tr {
                        th { (name) }
                        @for m in metrics { td.num { (cell(m)) } }
                    }
                }
            }
        }
    }
}

fn validation(v: &Value, config: &Value) -> Markup {
    let unknown: Vec<&str> = array(&v["unknown"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    html! {
        h2 { "Supply configuration" }
        p {
            @match v["valid"].as_bool() {
                Some(true) => span.ok { "Meets the hard constraints" },
                Some(false) => span.no { "Does NOT meet the hard constraints" },
                None => span.unknown { "Not validated" },
            }
            @if !unknown.is_empty() { " (unknown, not violated: " (unknown.join(", ")) ")" }
            "."
        }
        @if let Some(checks) = v["checks"].as_array().filter(|c| !c.is_empty()) {
            table.checks {
                thead { tr { th { "Check" } th { "Subject" } th { "Limit" } th { "Expected" } th { "OK" } } }
                tbody {
                    @for c in checks {
                        tr {
                            td { (text(&c["check"])) " (" (text(&c["severity"])) ")" }
                            td { (text(&c["subject"])) }
                            td { (plain(&c["limit"])) }
                            td { (plain(&c["expected"])) }
                            td {
                                @match c["ok"].as_bool() {
                                    Some(true) => span.ok { "yes" },
                                    Some(false) => span.no { "NO" },
                                    None => span.unknown { "unknown" },
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !config.is_null() {
            details {
                summary { "The configuration (JSON)" }
                pre { (serde_json::to_string_pretty(config).unwrap_or_default()) }
            }
        }
    }
}

/// A JSON value as text: a string as it is, anything else as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn model_usage(phases: &[Value]) -> Markup {
    html! {
        h2 { "Model usage" }
        table.model-usage {
            thead { tr {
                th { "Phase" } th.num { "Calls" } th.num { "From the ledger" }
                th.num { "Input tokens" } th.num { "Output tokens" } th.num { "Cost" }
            } }
            tbody {
                @for p in phases {
                    tr {
                        td { (text(&p["phase"])) }
                        td.num { (figure(&p["calls"], "")) }
                        td.num { (figure(&p["ledger_hits"], "")) }
                        td.num { (figure(&p["input_tokens"], "")) }
                        td.num { (figure(&p["output_tokens"], "")) }
                        td.num {
                            @if p["cost_usd"].is_null() { "self-hosted (no price)" } @else { (figure(&p["cost_usd"], "$")) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::html::testing::well_formed;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, h, m, 0).unwrap()
    }

    #[test]
    fn long_windows_are_bucketed_within_the_bound() {
        assert_eq!(bucket_minutes(1), 1);
        assert_eq!(bucket_minutes(1440), 1);
        assert_eq!(bucket_minutes(1500), 1);
        assert_eq!(bucket_minutes(1501), 2);
        assert_eq!(bucket_minutes(2 * 1440), 2);
        assert_eq!(bucket_minutes(3 * 1440), 5);
        assert_eq!(bucket_minutes(30 * 1440), 30);
        for minutes in [
            1501,
            4000,
            43_200,
            525_600,
            5_256_000,
            50_000_000,
            i64::MAX / 2,
        ] {
            let b = bucket_minutes(minutes);
            assert!(b > 1 && ceil_div(minutes, b) < MAX_POINTS, "{minutes}: {b}");
        }
    }

    #[test]
    fn fill_zero_fills_sums_and_aligns() {
        let rows = vec![
            (at(10, 1), 3),
            (at(10, 3), 2),
            (at(10, 3), 1),
            (at(12, 0), 9),
        ];
        let out = fill(
            &rows,
            at(10, 0) + chrono::Duration::seconds(30),
            at(10, 4),
            1,
        );
        assert_eq!(
            out,
            vec![
                (at(10, 0), 0),
                (at(10, 1), 3),
                (at(10, 2), 0),
                (at(10, 3), 3),
                (at(10, 4), 0)
            ]
        );
        let five = fill(&rows, at(10, 1), at(10, 12), 5);
        assert_eq!(five, vec![(at(10, 0), 6), (at(10, 5), 0), (at(10, 10), 0)]);
        assert!(fill(&rows, at(11, 0), at(10, 0), 1).is_empty());
        // A window far longer than its bucket allows is cut, not unbounded.
        let wide = fill(&[], at(0, 0), at(0, 0) + chrono::Duration::days(3650), 1);
        assert_eq!(wide.len(), 4 * MAX_POINTS as usize);
    }

    fn sample() -> Value {
        json!({
            "executive_summary": "Over <b>the data</b>: \"spend\" & more ☃",
            "needs_input": false,
            "current_monthly_cost_usd": 1000.0,
            "total_monthly_savings_usd": 250.5,
            "metrics": [{
                "workload_id": "w-1", "requests": 3, "first_ts": "2026-11-01T10:00:05Z",
                "last_ts": "2026-11-01T10:02:59.5Z", "span": "the data's 3 minutes",
                "peak_per_minute": 2, "error_rate": 0.5, "monthly_cost_usd": 12.0,
                "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": null},
                "models": [
                    {"model": "gpt-4o", "cost_usd": 1.25},
                    {"model": "<img src=x onerror=alert(1)>", "cost_usd": null}
                ]
            }],
            "recommendations": [
                {"title": "Route <small> ones", "workload_id": "w-1", "monthly_savings_usd": 300.0, "latency_impact_ms": -12.0, "risk": "low", "confidence": "low", "basis": "b1"},
                {"title": "Faster model", "workload_id": "w-1", "monthly_savings_usd": -49.5, "latency_impact_ms": -400.0, "risk": "medium", "confidence": "low", "basis": "b2"}
            ],
            "action_plan": [{"recommendation": "Route <small> ones", "steps": ["step <1>"]}],
            "validation": {"valid": true, "unknown": ["latency_slo_ms"], "checks": [{"check": "budget", "severity": "hard", "subject": "w-1", "limit": 5, "expected": {"a": 1}, "ok": null}]},
            "supply_configuration": {"compute": "</pre><script>x</script>"},
            "caveats": ["less than a day"],
            "next_steps": ["Re-run"],
            "markdown": "# netra report\n\n> <script>alert('x')</script>\n",
        })
    }

    #[test]
    fn body_has_the_three_charts_with_the_report_figures() {
        let report = sample();
        let (from, to) = (at(10, 0), at(10, 2));
        let per_minute = fill(&[(at(10, 0), 1), (at(10, 2), 2)], from, to, 1);
        let out = body(&report, &per_minute).into_string();
        well_formed(&out).unwrap_or_else(|e| panic!("{e}"));
        let requests = section(&out, "chart-requests");
        assert!(requests.contains("Requests per minute"));
        assert!(requests.contains(r#"data-points="3""#) && requests.contains(r#"data-sum="3""#));
        assert!(requests.contains(r#"data-max="2""#));
        assert!(!requests.contains("longer than"));
        let cost = section(&out, "chart-cost");
        assert!(
            cost.contains(r#"data-label="gpt-4o" data-value="1.25""#),
            "{cost}"
        );
        assert!(cost.contains(r#"data-value="n/a""#) && cost.contains("not in the supply catalog"));
        let savings = section(&out, "chart-savings");
        assert!(
            savings.contains(r#"data-value="300""#) && savings.contains(r#"data-value="-49.5""#)
        );
        assert!(savings.contains("-$49.50"));
        for raw in ["<b>", "<script", "<img", "<small>", "<1>"] {
            assert!(!out.contains(raw), "{raw} is not escaped");
        }
        assert!(out.contains("Over &lt;b&gt;the data&lt;/b&gt;: &quot;spend&quot; &amp; more ☃"));
        assert!(out.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(out.contains("&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;"));
        assert!(out.contains("latency_slo_ms") && out.contains("$250.50"));
    }

    #[test]
    fn a_long_window_says_it_is_bucketed() {
        let from = at(0, 0);
        let to = from + chrono::Duration::days(3);
        let b = bucket_minutes(clock_minutes(from, to));
        let per_minute = fill(&[(from, 7)], from, to, b);
        let out = body(&sample(), &per_minute).into_string();
        let requests = section(&out, "chart-requests");
        assert!(requests.contains("Requests per 5 minutes"), "{requests}");
        assert!(requests.contains("longer than 1,500 minutes"));
        assert!(requests.contains(">11-01 00:00<"));
    }

    #[test]
    fn a_question_has_no_charts_and_needs_input_says_so() {
        let q = json!({"executive_summary": "The request is ambiguous.", "needs_input": true,
            "clarifying_question": "Which <workload>?", "metrics": [], "next_steps": ["Which <workload>?"]});
        let out = body(&q, &[]).into_string();
        well_formed(&out).unwrap();
        assert!(!out.contains("<svg") && !out.contains("Charts"));
        assert!(out.contains("Needs input") && out.contains("Which &lt;workload&gt;?"));
        // Anything not an object renders without panicking.
        for v in [
            json!(null),
            json!([1, 2]),
            json!({"metrics": "x", "recommendations": 3}),
        ] {
            well_formed(&body(&v, &[]).into_string()).unwrap();
        }
    }

    fn section<'a>(html: &'a str, id: &str) -> &'a str {
        let start = html
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no {id}"));
        let rest = &html[start..];
        &rest[..rest.find("</section>").unwrap_or(rest.len())]
    }
}
