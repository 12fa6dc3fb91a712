//! Dead letters in the console: groups by fingerprint, a group's runs, a
//! preview of a replay (which runs, which phase; nothing changes), one dead
//! letter with a patch editor that validates the JSON merge patch and shows
//! the patched inputs before anything is replayed, and bulk replays with a
//! rate, live progress and abort. Every replay and abort takes a reason.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    Form, Json,
};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{
    layout::{self, csrf, when},
    runs::{clip, short},
    session::Signed,
    ConsoleError,
};
use crate::{
    api::{
        dead_letters::{check_patch, preview as preview_of, replay_targets, ReplayBody},
        error::ApiError,
        replays,
    },
    model::Reason,
    pipeline::{worker::merge_patch_outputs, Engine},
    store::{
        browse,
        dead_letters::{self, DeadLetter, DeadLetterFilter},
        replay_jobs::{self, JobRow},
        runs,
    },
};

/// `GET /console/dead-letters`: the pending groups.
pub async fn groups(
    State(engine): State<Engine>,
    signed: Signed,
) -> Result<Response, ConsoleError> {
    let groups = dead_letters::groups(&engine.pool, signed.scope()).await?;
    let body = html! {
        h1 { "Dead letters" }
        p.muted { "Pending dead letters, grouped by phase and error fingerprint (ids and numbers stripped)." }
        table #groups {
            thead { tr { th { "phase" } th { "error" } th.num { "count" } th { "first seen" } th { "last seen" } } }
            tbody {
                @for g in &groups {
                    tr {
                        td { (g.phase) }
                        td { a.group href=(group_href(&g.phase, &g.fingerprint)) { code { (clip(&g.fingerprint, 140)) } } }
                        td.num { (g.count) }
                        td { (when(&g.first_at)) } td { (when(&g.last_at)) }
                    }
                }
                @if groups.is_empty() { tr { td colspan="5" .muted { "No pending dead letters." } } }
            }
        }
    };
    Ok(layout::page(&signed, "Dead letters", "Dead letters", body))
}

fn group_href(phase: &str, fingerprint: &str) -> String {
    format!(
        "/console/dead-letters/group?phase={}&fingerprint={}",
        urlencode(phase),
        urlencode(fingerprint)
    )
}

/// Percent-encodes a query value (or a path segment).
pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A group: its phase and fingerprint.
#[derive(Debug, Deserialize)]
pub struct GroupQuery {
    /// Phase.
    pub phase: String,
    /// Fingerprint.
    pub fingerprint: String,
}

async fn group_members(
    engine: &Engine,
    signed: &Signed,
    q: &GroupQuery,
) -> Result<Vec<DeadLetter>, ConsoleError> {
    let f = DeadLetterFilter {
        tenant: signed.scope().map(str::to_string),
        phase: Some(q.phase.clone()),
        fingerprint: Some(q.fingerprint.clone()),
        limit: 10_000,
        ..Default::default()
    };
    Ok(dead_letters::list(&engine.pool, &f).await?)
}

/// The replay form of a group: rate and reason.
fn replay_form(signed: &Signed, q: &GroupQuery) -> Markup {
    html! {
        form #replay-group .panel method="post" action="/console/replays" {
            (csrf(signed))
            input type="hidden" name="phase" value=(q.phase);
            input type="hidden" name="fingerprint" value=(q.fingerprint);
            b { "Replay the group " }
            label { "at most " input #rate name="rate" type="number" min="0.1" max="1000" step="0.1" value="5" size="5"; " per second" }
            " " input #replay-reason name="reason" placeholder="why replay (required)" size="40" required;
            " " button #replay-group-button type="submit" { "Replay group" }
        }
    }
}

/// `GET /console/dead-letters/group`: a group's dead letters.
pub async fn group(
    State(engine): State<Engine>,
    signed: Signed,
    Query(q): Query<GroupQuery>,
) -> Result<Response, ConsoleError> {
    let members = group_members(&engine, &signed, &q).await?;
    if members.is_empty() {
        return Err(ConsoleError::NotFound("dead-letter group"));
    }
    let body = html! {
        h1 { "Group in phase " (q.phase) }
        p { code { (q.fingerprint) } }
        form.inline method="post" action="/console/dead-letters/preview" {
            (csrf(&signed))
            input type="hidden" name="phase" value=(q.phase);
            input type="hidden" name="fingerprint" value=(q.fingerprint);
            button #preview.secondary type="submit" { "Preview replay" }
        }
        (replay_form(&signed, &q))
        (dead_letter_table(&members))
    };
    Ok(layout::page(
        &signed,
        "Dead letters",
        "Dead-letter group",
        body,
    ))
}

fn dead_letter_table(rows: &[DeadLetter]) -> Markup {
    html! {
        table #members {
            thead { tr { th { "dead letter" } th { "run" } th { "tenant" } th { "phase" } th.num { "attempts" } th { "class" } th { "failed" } th { "error" } } }
            tbody {
                @for d in rows {
                    tr data-dead-letter=(d.id) {
                        td { a.dead-letter href={ "/console/dead-letters/" (d.id) } { code { (short(d.id)) } } }
                        td { @if let Some(r) = d.run_id { a href={ "/console/runs/" (r) } { code { (short(r)) } } } @else { "poison" } }
                        td { (d.tenant.as_deref().unwrap_or("—")) }
                        td { (d.phase) } td.num { (d.attempts) } td { (d.error_class) }
                        td { (when(&d.last_failed_at)) }
                        td.error { (clip(&d.error, 140)) }
                    }
                }
            }
        }
    }
}

/// The preview form.
#[derive(Debug, Deserialize)]
pub struct GroupForm {
    /// The session's form token.
    pub csrf: String,
    /// Phase.
    pub phase: String,
    /// Fingerprint.
    pub fingerprint: String,
    /// Replays per second.
    pub rate: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// `POST /console/dead-letters/preview`: which runs a replay of the group
/// would resume, at which phase. Changes nothing.
pub async fn preview(
    State(engine): State<Engine>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<GroupForm>,
) -> Result<Response, ConsoleError> {
    signed.check(&headers, Some(&form.csrf))?;
    let q = GroupQuery {
        phase: form.phase,
        fingerprint: form.fingerprint,
    };
    let members = group_members(&engine, &signed, &q).await?;
    let p = preview_of(&members);
    let body = html! {
        h1 { "Preview: replay of a group" }
        p #preview-summary .panel {
            "A replay would resume " b #would-replay { (p["would_replay"]) } " runs at phase " b { (q.phase) }
            " from their persisted inputs; " (p["not_replayable"]) " poison messages have no run. Nothing has changed."
        }
        table #preview-runs {
            thead { tr { th { "run" } th { "tenant" } th { "phase to run again" } } }
            tbody {
                @for r in p["runs"].as_array().into_iter().flatten() {
                    @let run = r["run_id"].as_str().unwrap_or_default();
                    tr { td { a href={ "/console/runs/" (run) } { code { (run) } } } td { (r["tenant"].as_str().unwrap_or("")) } td { (r["phase"].as_str().unwrap_or("")) } }
                }
            }
        }
        (replay_form(&signed, &q))
        p { a href=(group_href(&q.phase, &q.fingerprint)) { "Back to the group" } }
    };
    Ok(layout::page(
        &signed,
        "Dead letters",
        "Replay preview",
        body,
    ))
}

/// The persisted inputs of a dead letter's phase (the upstream outputs),
/// with `patch` applied when given.
async fn inputs_of(
    engine: &Engine,
    d: &DeadLetter,
    patch: Option<&Value>,
) -> Result<Value, ConsoleError> {
    let Some(run_id) = d.run_id else {
        return Ok(Value::Null);
    };
    let run = runs::get(&engine.pool, run_id)
        .await?
        .ok_or(ConsoleError::NotFound("run"))?;
    let (mut outputs, _) = runs::load_inputs(&engine.pool, &run).await?;
    if let Some(p) = patch {
        merge_patch_outputs(&mut outputs, p);
    }
    Ok(json!(outputs))
}

/// `GET /console/dead-letters/{id}`: one dead letter with its inputs and the
/// patch editor.
pub async fn show(
    State(engine): State<Engine>,
    signed: Signed,
    Path(id): Path<Uuid>,
) -> Result<Response, ConsoleError> {
    let d = dead_letters::get(&engine.pool, id, signed.scope())
        .await?
        .ok_or(ConsoleError::NotFound("dead letter"))?;
    let inputs = inputs_of(&engine, &d, None).await?;
    let pending = d.status == "pending" && d.run_id.is_some();
    let body = html! {
        h1 { "Dead letter " code { (short(d.id)) } }
        div.panel {
            "phase " b { (d.phase) } " · status " b #dl-status { (d.status) } " · " (d.error_class) " · attempts " (d.attempts)
            @if let Some(r) = d.run_id { " · run " a href={ "/console/runs/" (r) } { code { (r) } } }
            p.error { (d.error) }
            p { a href=(group_href(&d.phase, &d.fingerprint)) { "Its group" } }
        }
        div.grid2 {
            div {
                h2 { "Inputs of phase " (d.phase) }
                pre #inputs { (serde_json::to_string_pretty(&inputs).unwrap_or_default()) }
            }
            div {
                h2 { "Patch" }
                @if pending {
                    p.muted { "A JSON merge patch (RFC 7396) keyed by phase name, e.g. " code { "{\"data\": {\"sufficiency\": \"sufficient\"}}" } "." }
                    form #patch-form method="post" action={ "/console/dead-letters/" (d.id) "/replay" } {
                        (csrf(&signed))
                        textarea #patch name="patch" data-preview={ "/console/dead-letters/" (d.id) "/patched" } {}
                        p { button #check-patch.secondary type="button" { "Check patch" } " " span #patch-message .muted { "Check the patch to see the patched inputs." } }
                        pre #patched {}
                        input #patch-reason name="reason" placeholder="why (required)" size="40" required;
                        " " button #replay-patched type="submit" disabled { "Replay with this patch" }
                    }
                } @else {
                    p.muted { "Only a pending dead letter of a run can be replayed." }
                }
            }
        }
    };
    Ok(layout::page(&signed, "Dead letters", "Dead letter", body))
}

/// Body of `POST /console/dead-letters/{id}/patched`.
#[derive(Debug, Deserialize)]
pub struct PatchBody {
    /// The patch.
    pub patch: Value,
}

/// `POST /console/dead-letters/{id}/patched`: the inputs with the patch
/// applied, or why the patch is refused. Changes nothing.
pub async fn patched(
    State(engine): State<Engine>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    signed.check(&headers, None)?;
    let d = dead_letters::get(&engine.pool, id, signed.scope())
        .await?
        .ok_or(ConsoleError::NotFound("dead letter"))?;
    let parsed: Result<PatchBody, _> = serde_json::from_slice(&body);
    let patch = match parsed {
        Ok(p) => p.patch,
        Err(e) => return Ok(invalid(format!("the body must be {{\"patch\": …}}: {e}"))),
    };
    if let Err(e) = check_patch(&patch) {
        return Ok(e.into_response());
    }
    let inputs = inputs_of(&engine, &d, Some(&patch)).await?;
    Ok(Json(json!({"inputs": inputs})).into_response())
}

fn invalid(message: String) -> Response {
    ApiError::Invalid {
        field: "patch".into(),
        message,
    }
    .into_response()
}

/// The form of a patched replay of one dead letter.
#[derive(Debug, Deserialize)]
pub struct ReplayOneForm {
    /// The session's form token.
    pub csrf: String,
    /// The patch, as JSON text (empty: none).
    pub patch: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// `POST /console/dead-letters/{id}/replay`: replays one dead letter,
/// patched when a patch is given, as a job; goes to the job's page.
pub async fn replay_one(
    State(engine): State<Engine>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Form(form): Form<ReplayOneForm>,
) -> Result<Response, ConsoleError> {
    signed.check(&headers, Some(&form.csrf))?;
    let patch = match form
        .patch
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        Some(text) => Some(
            serde_json::from_str::<Value>(text).map_err(|e| ApiError::Invalid {
                field: "patch".into(),
                message: format!("not JSON: {e}"),
            })?,
        ),
        None => None,
    };
    let req = ReplayBody {
        ids: vec![id],
        patch,
        reason: form.reason,
        ..Default::default()
    };
    req.validate()?;
    let job = replays::start(&engine, &signed.who, &req).await?;
    Ok(Redirect::to(&format!("/console/replays/{}", job.id)).into_response())
}

/// `POST /console/replays`: replays a group at a rate, as a job.
pub async fn replay_group(
    State(engine): State<Engine>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<GroupForm>,
) -> Result<Response, ConsoleError> {
    signed.check(&headers, Some(&form.csrf))?;
    let selection = ReplayBody {
        fingerprint: Some(form.fingerprint),
        phase: Some(form.phase),
        ..Default::default()
    };
    start_job(
        &engine,
        &signed,
        selection,
        form.rate.as_deref(),
        form.reason,
    )
    .await
}

/// Starts a bulk replay of `selection` (its `ids`, or `fingerprint` and
/// `phase`) at the form's rate, with its reason, and goes to the job's page;
/// a selection with nothing pending in the scope is 404.
pub(super) async fn start_job(
    engine: &Engine,
    signed: &Signed,
    selection: ReplayBody,
    rate: Option<&str>,
    reason: Option<String>,
) -> Result<Response, ConsoleError> {
    let rate = match rate.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => Some(r.parse::<f64>().map_err(|_| ApiError::Invalid {
            field: "rate".into(),
            message: "must be a number of replays per second".into(),
        })?),
        None => None,
    };
    let req = ReplayBody {
        rate,
        reason,
        ..selection
    };
    req.validate()?;
    // Nothing pending (another replay took it): say so.
    if replay_targets(engine, signed.scope(), &req)
        .await?
        .is_empty()
    {
        return Err(ConsoleError::NotFound(
            "pending dead letter in that selection",
        ));
    }
    let job = replays::start(engine, &signed.who, &req).await?;
    Ok(Redirect::to(&format!("/console/replays/{}", job.id)).into_response())
}

/// `GET /console/replays`: the newest bulk replays.
pub async fn jobs(State(engine): State<Engine>, signed: Signed) -> Result<Response, ConsoleError> {
    let jobs = replay_jobs::list(&engine.pool, signed.scope(), 100).await?;
    let body = html! {
        h1 { "Replays" }
        table #jobs {
            thead { tr { th { "job" } th { "who" } th { "why" } th { "state" } th.num { "done" } th.num { "replayed" } th.num { "rate/s" } th { "started" } } }
            tbody {
                @for j in &jobs {
                    tr {
                        td { a href={ "/console/replays/" (j.id) } { code { (short(j.id)) } } }
                        td { code { (j.actor) } } td { (clip(&j.reason, 80)) }
                        td { span class={ "status status-" (j.state) } { (j.state) } }
                        td.num { (j.done) " / " (j.total) } td.num { (j.replayed) }
                        td.num { (j.rate.map(|r| r.to_string()).unwrap_or_else(|| "—".into())) }
                        td { (when(&j.created_at)) }
                    }
                }
                @if jobs.is_empty() { tr { td colspan="8" .muted { "No replays yet." } } }
            }
        }
    };
    Ok(layout::page(&signed, "Replays", "Replays", body))
}

async fn job_of(engine: &Engine, signed: &Signed, id: Uuid) -> Result<JobRow, ConsoleError> {
    replay_jobs::get(&engine.pool, id, signed.scope())
        .await?
        .ok_or(ConsoleError::NotFound("replay job"))
}

/// The job's runs and their statuses now (the first 100).
async fn job_runs(engine: &Engine, id: Uuid) -> Result<Markup, ConsoleError> {
    let targets = replay_jobs::targets(&engine.pool, id).await?;
    let rows = browse::dead_letter_runs(&engine.pool, &targets, 100).await?;
    Ok(html! {
        @for (dl, run, status) in &rows {
            tr {
                td { a href={ "/console/dead-letters/" (dl) } { code { (short(*dl)) } } }
                td { @if let Some(r) = run { a href={ "/console/runs/" (r) } { code { (short(*r)) } } } }
                td { @if let Some(s) = status { span class={ "status status-" (s) } data-run-status=(s) { (s) } } }
            }
        }
    })
}

/// `GET /console/replays/{id}`: a job's progress, live, with its abort.
pub async fn job(
    State(engine): State<Engine>,
    signed: Signed,
    Path(id): Path<Uuid>,
) -> Result<Response, ConsoleError> {
    let j = job_of(&engine, &signed, id).await?;
    let body = html! {
        h1 { "Replay " code { (short(j.id)) } }
        div #job .panel data-progress={ "/console/replays/" (j.id) "/progress" } {
            p { "by " code { (j.actor) } " · why: " (j.reason)
                " · rate " (j.rate.map(|r| format!("{r}/s")).unwrap_or_else(|| "unlimited".into()))
                @if j.patch.is_some() { " · patched" } }
            p { progress #job-bar value=(j.done) max=(j.total.max(1)) {} " " span #job-done { (j.done) " / " (j.total) }
                " · " span #job-state class={ "status status-" (j.state) } { (j.state) } }
            p { "replayed " span #job-replayed { (j.replayed) } " · already replayed " span #job-skipped { (j.skipped) } }
            @if j.state == "running" {
                form #abort-form method="post" action={ "/console/replays/" (j.id) "/abort" } {
                    (csrf(&signed))
                    input #abort-reason name="reason" placeholder="why abort (required)" size="40" required;
                    " " button.danger #abort type="submit" { "Abort" }
                }
            }
        }
        h2 { "Its runs" }
        table { thead { tr { th { "dead letter" } th { "run" } th { "run status now" } } } tbody #job-runs { (job_runs(&engine, j.id).await?) } }
    };
    Ok(layout::page(&signed, "Replays", "Replay", body))
}

/// `GET /console/replays/{id}/progress`: the job as JSON, with its runs'
/// rows as HTML for the page to swap in.
pub async fn job_progress(
    State(engine): State<Engine>,
    signed: Signed,
    Path(id): Path<Uuid>,
) -> Result<Response, ConsoleError> {
    let j = job_of(&engine, &signed, id).await?;
    let mut v = json!(j);
    v["runs_html"] = json!(job_runs(&engine, id).await?.into_string());
    Ok(Json(v).into_response())
}

/// The abort form.
#[derive(Debug, Deserialize)]
pub struct AbortForm {
    /// The session's form token.
    pub csrf: String,
    /// Why.
    pub reason: Option<String>,
}

/// `POST /console/replays/{id}/abort`.
pub async fn abort(
    State(engine): State<Engine>,
    signed: Signed,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Form(form): Form<AbortForm>,
) -> Result<Response, ConsoleError> {
    signed.check(&headers, Some(&form.csrf))?;
    let reason = Reason::parse(form.reason.as_deref()).map_err(ApiError::from)?;
    replays::abort_job(&engine, &signed.who, id, reason).await?;
    Ok((
        StatusCode::SEE_OTHER,
        [("location", format!("/console/replays/{id}"))],
    )
        .into_response())
}
