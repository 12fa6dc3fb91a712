//! The runs page (filters, counts per status that refresh by themselves)
//! and a run's page (timeline of attempts, history with replays linked to
//! the dead letters they resumed, inputs and outputs, model calls, the
//! audit entries, the report, and a cancel with a reason).

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{Html, IntoResponse, Redirect, Response},
    Form,
};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    layout::{self, csrf, when},
    session::Signed,
    ConsoleError,
};
use crate::{
    model::{Phase, Reason, RunStatus},
    pipeline::Engine,
    store::{
        audit::{self, AuditFilter, Said},
        browse::{self, Browse},
        ledger, runs,
    },
};

/// The runs page's filters (all optional; empty fields are ignored).
#[derive(Debug, Deserialize, Default)]
pub struct RunsQuery {
    /// Status.
    pub status: Option<String>,
    /// Phase.
    pub phase: Option<String>,
    /// Tenant (operators).
    pub tenant: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Created at or after (RFC 3339, or `YYYY-MM-DDTHH:MM` from the form).
    pub from: Option<String>,
    /// Created before.
    pub to: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A time from the filter form: RFC 3339, or the `datetime-local` input's
/// `YYYY-MM-DDTHH:MM` taken as UTC.
fn parse_time(
    v: &Option<String>,
    field: &'static str,
) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    let Some(s) = given(v) else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M")
        .map(|t| Some(t.and_utc()))
        .map_err(|_| {
            ConsoleError::Api(crate::api::error::ApiError::BadQuery {
                field: field.into(),
                message: "use RFC 3339 or YYYY-MM-DDTHH:MM (UTC)".into(),
            })
        })
}

impl RunsQuery {
    fn browse(&self, signed: &Signed) -> Result<Browse, ConsoleError> {
        Ok(Browse {
            scope: signed.scope().map(str::to_string),
            tenant: given(&self.tenant),
            status: given(&self.status),
            phase: given(&self.phase),
            correlation_id: given(&self.correlation_id),
            from: parse_time(&self.from, "from")?,
            to: parse_time(&self.to, "to")?,
            limit: 200,
        })
    }
}

/// The counts per status, as the page and its refresh show them.
async fn counts_markup(engine: &Engine, signed: &Signed) -> Result<Markup, ConsoleError> {
    let counts = browse::status_counts(&engine.pool, signed.scope()).await?;
    Ok(html! {
        @for s in RunStatus::ALL {
            @let n = counts.iter().find(|(k, _)| k == s.as_str()).map_or(0, |(_, n)| *n);
            a.count href={ "/console?status=" (s.as_str()) } data-status=(s.as_str()) {
                b.num { (n) } span class={ "status status-" (s.as_str()) } { (s.as_str()) }
            }
        }
    })
}

/// `GET /console/counts`: the counts fragment (refreshed by the page).
pub async fn counts(
    State(engine): State<Engine>,
    signed: Signed,
) -> Result<Html<String>, ConsoleError> {
    Ok(Html(counts_markup(&engine, &signed).await?.into_string()))
}

fn select(name: &str, current: &Option<String>, options: &[&str]) -> Markup {
    html! {
        select name=(name) {
            option value="" { "any" }
            @for o in options {
                option value=(o) selected[current.as_deref() == Some(*o)] { (o) }
            }
        }
    }
}

/// `GET /console`: the runs.
pub async fn list(
    State(engine): State<Engine>,
    signed: Signed,
    Query(q): Query<RunsQuery>,
) -> Result<Response, ConsoleError> {
    let rows = browse::runs(&engine.pool, &q.browse(&signed)?).await?;
    let statuses: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    let phases: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    let body = html! {
        h1 { "Runs" }
        div #counts .counts { (counts_markup(&engine, &signed).await?) }
        form.filters method="get" action="/console" {
            label { "status" (select("status", &q.status, &statuses)) }
            label { "phase" (select("phase", &q.phase, &phases)) }
            @if signed.is_operator() {
                label { "tenant" input name="tenant" value=[given(&q.tenant)]; }
            }
            label { "correlation id" input name="correlation_id" value=[given(&q.correlation_id)]; }
            label { "from (UTC)" input type="datetime-local" name="from" value=[given(&q.from)]; }
            label { "to (UTC)" input type="datetime-local" name="to" value=[given(&q.to)]; }
            button type="submit" { "Filter" }
        }
        form #replay-selected .panel method="post" action="/console/runs/replay" {
            (csrf(&signed))
            input #selected-runs type="hidden" name="runs" value="";
            b { "Replay the selected dead-lettered runs " }
            label { "at most " input name="rate" type="number" min="0.1" max="1000" step="0.1" value="10" size="5"; " per second" }
            " " input #selected-reason name="reason" placeholder="why replay (required)" size="36" required;
            " " button #replay-selected-button type="submit" { "Replay selected" }
        }
        table #runs {
            thead { tr { th { input #select-all type="checkbox" title="select every dead-lettered run shown"; } th { "run" } th { "tenant" } th { "status" } th { "phase" } th.num { "attempt" } th.num { "replay" } th { "correlation id" } th { "created" } th { "error" } } }
            tbody {
                @for r in &rows {
                    tr data-run=(r.id) {
                        td { @if r.status == RunStatus::DeadLettered { input.pick type="checkbox" value=(r.id); } }
                        td { a href={ "/console/runs/" (r.id) } { code { (short(r.id)) } } }
                        td { (r.tenant) }
                        td { span class={ "status status-" (r.status.as_str()) } { (r.status.as_str()) } }
                        td { (r.phase.as_deref().unwrap_or("")) }
                        td.num { (r.attempt) }
                        td.num { (r.replay) }
                        td { code { (r.correlation_id) } }
                        td { (when(&r.created_at)) }
                        td.error { (r.error.as_deref().map(|e| clip(e, 120)).unwrap_or_default()) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="10" .muted { "No runs match." } } }
            }
        }
        p.muted { "Newest first, at most 200." }
    };
    Ok(layout::page(&signed, "Runs", "Runs", body))
}

/// The first 8 hex digits of an id.
pub fn short(id: Uuid) -> String {
    id.simple().to_string()[..8].to_string()
}

/// A text cut to `n` characters.
pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `GET /console/runs/{id}`.
pub async fn show(
    State(engine): State<Engine>,
    signed: Signed,
    Path(id): Path<Uuid>,
) -> Result<Response, ConsoleError> {
    let run = browse::run(&engine.pool, signed.scope(), id)
        .await?
        .ok_or(ConsoleError::NotFound("run"))?;
    let pool = &engine.pool;
    let attempts = runs::attempts(pool, id).await?;
    let history = runs::history(pool, id).await?;
    let outputs = browse::outputs(pool, id).await?;
    let calls = ledger::calls_of_run(pool, id).await?;
    let trail = audit::list(
        pool,
        &AuditFilter {
            tenant: None,
            run: Some(id),
            before: None,
            limit: 100,
        },
    )
    .await?;
    let lease = browse::lease(pool, id).await?;
    let report = outputs
        .iter()
        .find(|(p, _)| p == "reporting")
        .map(|(_, v)| v);
    let body = html! {
        h1 { "Run " code { (run.id) } }
        div.panel {
            "tenant " b { (run.tenant) } " · status "
            span #run-status class={ "status status-" (run.status.as_str()) } { (run.status.as_str()) }
            " · phase " b { (run.phase.as_deref().unwrap_or("—")) }
            " · attempt " (run.attempt) " · replay " (run.replay)
            " · correlation id " code { (run.correlation_id) }
            @if let Some((owner, until)) = &lease {
                @if !run.is_final() { p.muted { "lease: " code { (owner) } " until " (when(until)) } }
            }
            @if let Some(e) = &run.error { p.error { (e) } }
            @if !run.is_final() {
                form.inline method="post" action={ "/console/runs/" (run.id) "/cancel" } {
                    (csrf(&signed))
                    " " input name="reason" placeholder="why cancel (required)" required;
                    " " button.danger type="submit" { "Cancel run" }
                }
            }
        }
        h2 { "Timeline" }
        table #timeline {
            thead { tr { th { "phase" } th.num { "attempt" } th.num { "replay" } th { "started" } th.num { "ms" } th { "outcome" } th { "class" } th { "error" } th { "worker" } } }
            tbody {
                @for a in &attempts {
                    tr class=[(a.replay > 0).then_some("replay-of")] {
                        td { (a.phase) } td.num { (a.attempt) } td.num { (a.replay) }
                        td { (when(&a.started_at)) }
                        td.num { ((a.finished_at - a.started_at).num_milliseconds()) }
                        td { (a.outcome) } td { (a.error_class.as_deref().unwrap_or("")) }
                        td.error { (a.error.as_deref().map(|e| clip(e, 160)).unwrap_or_default()) }
                        td { code { (a.worker_id) } }
                    }
                }
            }
        }
        h2 { "History" }
        table #history {
            thead { tr { th { "at" } th { "who" } th { "from" } th { "to" } th { "phase" } th { "detail" } } }
            tbody {
                @for h in &history {
                    @let replay_of = h.detail.as_ref().and_then(|d| d.get("replay_of")).and_then(|v| v.as_str());
                    tr class=[replay_of.map(|_| "replay-of")] {
                        td { (when(&h.at)) } td { code { (h.actor) } }
                        td { (h.from_status.as_deref().unwrap_or("")) } td { (h.to_status) }
                        td { (h.phase.as_deref().unwrap_or("")) }
                        td {
                            @if let Some(dl) = replay_of {
                                "replay of " a href={ "/console/dead-letters/" (dl) } { "dead letter " code { (dl.get(..8).unwrap_or(dl)) } }
                                @if h.detail.as_ref().is_some_and(|d| !d["patch"].is_null()) { " (patched)" }
                            } @else if let Some(e) = &h.error {
                                span.error { (clip(e, 160)) }
                            } @else if let Some(d) = &h.detail {
                                code { (clip(&d.to_string(), 160)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Audit trail" }
        (audit_table(&trail))
        h2 { "Model calls" }
        table #calls {
            thead { tr { th { "phase" } th { "purpose" } th { "model" } th.num { "in" } th.num { "out" } th.num { "cost $" } th.num { "ms" } th { "reused" } th { "error" } } }
            tbody {
                @for c in &calls {
                    tr {
                        td { (c.phase) } td { (c.call.purpose) } td { (c.call.model) }
                        td.num { (c.call.input_tokens) } td.num { (c.call.output_tokens) }
                        td.num { (c.call.cost_usd.map(|v| format!("{v:.6}")).unwrap_or_default()) }
                        td.num { (format!("{:.0}", c.call.latency_ms)) }
                        td { (c.call.reused_from.map(|r| format!("from #{r}")).unwrap_or_default()) }
                        td.error { (c.call.error.as_deref().unwrap_or("")) }
                    }
                }
                @if calls.is_empty() { tr { td colspan="9" .muted { "No model calls (the embedded analyst answered)." } } }
            }
        }
        h2 { "Inputs and outputs" }
        p.muted { "Each phase's input is the outputs of the phases before it, with a replay's patch applied." }
        @for (phase, out) in &outputs {
            details {
                summary { (phase) " output" }
                pre { (pretty(out)) }
            }
        }
        details { summary { "request" } pre { (pretty(&run.request)) } }
        @if report.is_some() {
            h2 { "Report" }
            p { a href={ "/console/runs/" (run.id) "/report" } target="_blank" { "Open the report on its own page" }
                " (also " code { "GET /v1/runs/" (run.id) "/report.html" } ")" }
            iframe #report src={ "/console/runs/" (run.id) "/report" } title="report" style="width:100%;height:1600px;border:1px solid #d9dee6;background:#fff" {}
        }
    };
    Ok(layout::page(
        &signed,
        "Runs",
        &format!("Run {}", short(id)),
        body,
    ))
}

/// The audit entries as a table (the run page and the audit page).
pub fn audit_table(rows: &[audit::AuditRow]) -> Markup {
    html! {
        table.audit {
            thead { tr { th { "at" } th { "who" } th { "tenant" } th { "action" } th { "on" } th { "why" } th.num { "runs" } } }
            tbody {
                @for a in rows {
                    tr data-action=(a.action) {
                        td { (when(&a.at)) } td { code { (a.actor) } }
                        td { (a.tenant.as_deref().unwrap_or("—")) }
                        td { b { (a.action) } } td { (a.target) } td { (a.reason) }
                        td.num { (a.runs.len()) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="7" .muted { "No actions recorded." } } }
            }
        }
    }
}

/// The cancel form.
#[derive(Debug, Deserialize)]
pub struct CancelForm {
    /// The session's form token.
    pub csrf: String,
    /// Why.
    pub reason: Option<String>,
}

/// `POST /console/runs/{id}/cancel`.
pub async fn cancel(
    State(engine): State<Engine>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Form(form): Form<CancelForm>,
) -> Result<Response, ConsoleError> {
    signed.check(&headers, Some(&form.csrf))?;
    let reason =
        Reason::parse(form.reason.as_deref()).map_err(crate::api::error::ApiError::from)?;
    let said = Said::new(signed.who.actor(), reason);
    let (_, changed) = runs::cancel(&engine.pool, signed.scope(), id, &said)
        .await?
        .ok_or(ConsoleError::NotFound("run"))?;
    if changed {
        if let Some(cache) = &engine.cache {
            cache.notify_later(id);
        }
    }
    Ok(Redirect::to(&format!("/console/runs/{id}")).into_response())
}

/// The form of "replay selected" on the runs page.
#[derive(Debug, Deserialize)]
pub struct ReplaySelectedForm {
    /// The session's form token.
    pub csrf: String,
    /// Run ids, comma-separated (the page's script fills it from the
    /// checked rows).
    pub runs: String,
    /// Replays per second.
    pub rate: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// `POST /console/runs/replay`: replays the pending dead letters of the
/// selected runs, as one job at a rate; goes to the job's page.
pub async fn replay_selected(
    State(engine): State<Engine>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<ReplaySelectedForm>,
) -> Result<Response, ConsoleError> {
    use crate::api::error::ApiError;
    signed.check(&headers, Some(&form.csrf))?;
    let ids: Vec<Uuid> = form
        .runs
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(10_000)
        .map(|s| {
            s.parse().map_err(|_| ApiError::Invalid {
                field: "runs".into(),
                message: format!("{s:?} is not a run id"),
            })
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(ApiError::Invalid {
            field: "runs".into(),
            message: "select at least one dead-lettered run".into(),
        }
        .into());
    }
    let targets = browse::pending_of_runs(&engine.pool, signed.scope(), &ids).await?;
    if targets.is_empty() {
        return Err(ConsoleError::NotFound("pending dead letter of those runs"));
    }
    let selection = crate::api::dead_letters::ReplayBody {
        ids: targets,
        ..Default::default()
    };
    super::dead_letters::start_job(
        &engine,
        &signed,
        selection,
        form.rate.as_deref(),
        form.reason,
    )
    .await
}

/// `GET /console/runs/{id}/report`: the run's report as HTML, with its
/// charts (the page `GET /v1/runs/{id}/report.html` serves).
pub async fn report(
    State(engine): State<Engine>,
    signed: Signed,
    Path(id): Path<Uuid>,
) -> Result<Response, ConsoleError> {
    let run = browse::run(&engine.pool, signed.scope(), id)
        .await?
        .ok_or(ConsoleError::NotFound("run"))?;
    match crate::html::report::load(&engine.pool, &run.tenant, id).await? {
        crate::html::report::Lookup::Found(page) => Ok(crate::api::report_html::respond(&page)),
        _ => Err(ConsoleError::NotFound("report")),
    }
}
