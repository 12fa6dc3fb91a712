//! The queues page (operators only: the queues are shared by every
//! tenant). Per phase: the messages ready in its queue and its consumers,
//! read from RabbitMQ with passive declares (no management plugin); the
//! runs in progress, which AMQP 0-9-1 does not report (it has no count of
//! unacknowledged messages), read from Postgres as the runs holding a live
//! lease; the retry backlog waiting in Postgres; and the messages ready in
//! its dead-letter queue. When the broker cannot be read, the Postgres
//! figures are still shown, and the page says so. Then the tenants' fair
//! admission: each tenant's weight and cap on runs in flight (its own or
//! the configured default, or no cap) and its runs in flight and waiting,
//! with a form per live tenant that changes the weight and cap with a
//! reason (`POST /console/tenants/{name}/fair`: the form token, operators
//! only, [`tenants::set_fair`] audited as the API's `PATCH` is).

use std::{collections::BTreeMap, time::Duration};

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::{IntoResponse, Redirect, Response},
    Form,
};
use lapin::{options::QueueDeclareOptions, types::FieldTable, Connection};
use maud::{html, Markup};
use serde::Deserialize;

use super::{
    dead_letters::urlencode,
    layout::{self, csrf, when},
    session::Signed,
    ConsoleError,
};
use crate::{
    api::{error::ApiError, tenants::set_error},
    model::{Phase, Reason},
    pipeline::Engine,
    store::{
        audit::Said,
        queues::{self, PhaseBacklog},
        tenants::{self, FairChange, Field, Setting, TenantView},
    },
};

/// Longest the page waits for the broker (connecting, and all the declares).
const BROKER_WAIT: Duration = Duration::from_secs(3);

/// What RabbitMQ said of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueStat {
    /// Messages ready.
    ready: u32,
    /// Consumers.
    consumers: u32,
}

/// The broker's answers: per queue name, its figures, or `None` when the
/// queue does not exist. `Err` says why the broker could not be read.
type BrokerStats = Result<BTreeMap<String, Option<QueueStat>>, String>;

/// Reads the queues over a connection of its own (the engine's probe
/// channel answers ready counts only), one passive declare each; a missing
/// queue closes the channel, so the next one gets a fresh channel.
async fn read_broker(engine: &Engine, queues: &[String]) -> BrokerStats {
    if !engine.link.is_up() {
        return Err("this worker is not connected to RabbitMQ".into());
    }
    let conn = tokio::time::timeout(
        BROKER_WAIT,
        crate::broker::connect(&engine.config, "netra console queues"),
    )
    .await
    .map_err(|_| "RabbitMQ did not answer in time".to_string())?
    .map_err(|e| e.to_string())?;
    let stats = tokio::time::timeout(BROKER_WAIT, declare_all(&conn, queues))
        .await
        .map_err(|_| "RabbitMQ did not answer in time".to_string())
        .and_then(|r| r);
    let _ = conn.close(200, "bye".into()).await;
    stats
}

async fn declare_all(
    conn: &Connection,
    queues: &[String],
) -> Result<BTreeMap<String, Option<QueueStat>>, String> {
    let mut out = BTreeMap::new();
    let mut channel = None;
    for q in queues {
        let ch = match channel.take() {
            Some(ch) => ch,
            None => conn.create_channel().await.map_err(|e| e.to_string())?,
        };
        let opts = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match ch
            .queue_declare(q.as_str().into(), opts, FieldTable::default())
            .await
        {
            Ok(info) => {
                out.insert(
                    q.clone(),
                    Some(QueueStat {
                        ready: info.message_count(),
                        consumers: info.consumer_count(),
                    }),
                );
                channel = Some(ch);
            }
            // NOT_FOUND closes the channel; anything else is the broker's.
            Err(e) if e.to_string().contains("NOT_FOUND") => {
                out.insert(q.clone(), None);
            }
            Err(e) => return Err(crate::broker::redact_error(&e.to_string())),
        }
    }
    Ok(out)
}

/// The phases to show: the engine's, in pipeline order, then any other
/// phase Postgres has runs in.
fn phases(engine: &Engine, backlog: &[PhaseBacklog]) -> Vec<String> {
    let rank = |p: &str| {
        Phase::ALL
            .iter()
            .position(|k| k.as_str() == p)
            .unwrap_or(Phase::ALL.len())
    };
    let mut out: Vec<String> = engine
        .agents
        .phases()
        .into_iter()
        .map(str::to_string)
        .collect();
    for b in backlog {
        if !out.contains(&b.phase) {
            out.push(b.phase.clone());
        }
    }
    out.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    out
}

/// A queue's ready count and consumers as cells (`—` when unknown).
fn cells(stats: &BrokerStats, queue: &str) -> Markup {
    let stat = stats.as_ref().ok().and_then(|m| m.get(queue));
    html! {
        @match stat {
            Some(Some(s)) => {
                td.num data-ready=(queue) { (s.ready) }
                td.num data-consumers=(queue) { (s.consumers) }
            }
            Some(None) => { td.muted colspan="2" { "no such queue" } }
            None => { td.num.muted { "—" } td.num.muted { "—" } }
        }
    }
}

/// The tenants' table: weight, cap, request rate, runs in flight and
/// waiting, with "default" where the configuration applies, and for each
/// live tenant a form that changes its weight, cap and rate.
fn tenants_table(views: &[TenantView], signed: &Signed) -> Markup {
    html! {
        table #tenants {
            thead { tr {
                th { "tenant" } th.num { "weight" } th.num { "cap (max in flight)" }
                th.num { "requests per min" } th.num { "in flight" } th.num { "waiting" } th { "change (empty: keep)" }
            } }
            tbody {
                @for v in views {
                    tr data-tenant=(v.name) {
                        td { b { (v.name) } }
                        td.num data-weight=(v.name) {
                            (v.weight)
                            @if v.weight_is_default { " " span.muted { "(default)" } }
                        }
                        td.num data-cap=(v.name) {
                            @match v.max_in_flight {
                                Some(n) => { (n) }
                                None => { "none" }
                            }
                            @if v.max_in_flight_is_default { " " span.muted { "(default)" } }
                        }
                        td.num data-rate=(v.name) {
                            @match v.requests_per_min {
                                Some(n) => { (n) }
                                None => { "none" }
                            }
                            @if v.requests_per_min_is_default { " " span.muted { "(default)" } }
                        }
                        td.num data-in-flight=(v.name) { (v.in_flight) }
                        td.num data-waiting=(v.name) { (v.waiting) }
                        td { (fair_form(v, signed)) }
                    }
                }
                @if views.is_empty() {
                    tr { td.muted colspan="7" { "No tenants, and no runs in flight or waiting." } }
                }
            }
        }
    }
}

/// A tenant's form: weight, cap and reason (a tenant without a row, or a
/// deleted one, has nothing to change).
fn fair_form(v: &TenantView, signed: &Signed) -> Markup {
    html! {
        @if v.live {
            form.inline.fair method="post" action={ "/console/tenants/" (urlencode(&v.name)) "/fair" } data-fair=(v.name) {
                (csrf(signed))
                input name="weight" size="6" placeholder="weight" aria-label={ "weight of " (v.name) }
                    title="1-1000, or default; empty: keep";
                " " input name="max_in_flight" size="8" placeholder="cap" aria-label={ "cap of " (v.name) }
                    title="at least 1, none (no cap, whatever the default), or default; empty: keep";
                " " input name="requests_per_min" size="8" placeholder="rate/min" aria-label={ "request rate of " (v.name) }
                    title="new runs per minute, at least 1, none (no limit, whatever the default), or default; empty: keep";
                " " input name="reason" size="24" placeholder="why (required)" aria-label={ "why change " (v.name) } required;
                " " button.secondary type="submit" { "Set" }
            }
        } @else {
            span.muted { "no tenant row" }
        }
    }
}

/// The form of a change of a tenant's weight and cap.
#[derive(Debug, Deserialize)]
pub struct FairForm {
    /// The session's form token.
    pub csrf: String,
    /// The weight as typed: 1-1000, `default`, or empty to keep it.
    pub weight: Option<String>,
    /// The cap as typed: at least 1, `none`, `default`, or empty to keep it.
    pub max_in_flight: Option<String>,
    /// The request rate as typed: at least 1, `none`, `default`, or empty
    /// to keep it.
    pub requests_per_min: Option<String>,
    /// Why.
    pub reason: Option<String>,
}

/// One field of the form, or why it is refused (422 naming it).
fn typed(text: Option<&str>, field: Field) -> Result<Setting, ApiError> {
    Setting::parse(text.unwrap_or_default(), field).map_err(|message| ApiError::Invalid {
        field: field.name().into(),
        message,
    })
}

/// `POST /console/tenants/{name}/fair` (operators; a tenant gets 404, as
/// on the queues page): changes a tenant's weight and cap with a reason,
/// audited as `set_tenant` with the operator as actor, and goes back to
/// the queues page. A refused value, a missing reason or a change of
/// nothing is a 422 page naming the field; an unknown tenant a 404 page.
pub async fn set_fair(
    State(engine): State<Engine>,
    signed: Signed,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<FairForm>,
) -> Result<Response, ConsoleError> {
    signed.check(&headers, Some(&form.csrf))?;
    if !signed.is_operator() {
        return Err(ConsoleError::NotFound("page"));
    }
    let change = FairChange {
        weight: typed(form.weight.as_deref(), Field::Weight)?,
        max_in_flight: typed(form.max_in_flight.as_deref(), Field::MaxInFlight)?,
        requests_per_min: typed(form.requests_per_min.as_deref(), Field::RequestsPerMin)?,
    };
    let reason = Reason::parse(form.reason.as_deref()).map_err(ApiError::from)?;
    let said = Said::new(signed.who.actor(), reason);
    tenants::set_fair(&engine.pool, &name, &change, &said)
        .await
        .map_err(set_error)?;
    Ok(Redirect::to("/console/queues#tenants").into_response())
}

/// `GET /console/queues` (operators; a tenant gets 404).
pub async fn page(State(engine): State<Engine>, signed: Signed) -> Result<Response, ConsoleError> {
    if !signed.is_operator() {
        return Err(ConsoleError::NotFound("page"));
    }
    let backlog = queues::backlog(&engine.pool).await?;
    let phases = phases(&engine, &backlog);
    let names = &engine.names;
    let others = [
        (names.requests(), "requests (intake)"),
        (names.dlq("requests"), "dead letters of requests"),
        (
            names.crashloop_queue(),
            "over the delivery limit (moved to their phase's dead-letter queue)",
        ),
    ];
    let mut all: Vec<String> = Vec::new();
    for p in &phases {
        all.push(names.phase_queue(p));
        all.push(names.dlq(p));
    }
    all.extend(others.iter().map(|(q, _)| q.clone()));
    let stats = read_broker(&engine, &all).await;
    let tenant_views = tenants::views(&engine.pool, engine.config.fair, None).await?;
    let empty = PhaseBacklog {
        phase: String::new(),
        leased: 0,
        expired: 0,
        retrying: 0,
        next_retry_at: None,
    };
    let body = html! {
        h1 { "Queues" }
        p.muted {
            "Namespace " code { (names.namespace()) } ", shared by every tenant. "
            "Ready messages and consumers are RabbitMQ's (passive declares). "
            "AMQP does not report messages delivered but not yet acknowledged, so "
            "\"in progress\" is read from Postgres: the runs whose attempt holds a live lease. "
            "Retries wait in Postgres, not in a queue, until they are due."
        }
        @if let Err(why) = &stats {
            p.error #broker-error role="alert" { "The broker could not be read (" (why) "): only the Postgres figures are shown." }
        }
        table #queues {
            thead { tr {
                th { "phase" } th { "queue" } th.num { "ready" } th.num { "consumers" }
                th.num { "in progress (leased, from Postgres)" } th.num { "leases expired" }
                th.num { "retrying (in Postgres)" } th { "earliest retry" }
                th { "dead-letter queue" } th.num { "ready" } th.num { "consumers" }
            } }
            tbody {
                @for p in &phases {
                    @let b = backlog.iter().find(|b| &b.phase == p).unwrap_or(&empty);
                    @let (queue, dlq) = (names.phase_queue(p), names.dlq(p));
                    tr data-phase=(p) {
                        td { b { (p) } }
                        td { code { (queue) } }
                        (cells(&stats, &queue))
                        td.num data-leased=(p) { (b.leased) }
                        td.num data-expired=(p) { (b.expired) }
                        td.num data-retrying=(p) { (b.retrying) }
                        td { (b.next_retry_at.as_ref().map(when).unwrap_or_default()) }
                        td { a href={ "/console/dead-letters" } { code { (dlq) } } }
                        (cells(&stats, &dlq))
                    }
                }
            }
        }
        h2 { "Other queues" }
        table #other-queues {
            thead { tr { th { "queue" } th { "holds" } th.num { "ready" } th.num { "consumers" } } }
            tbody {
                @for (q, what) in &others {
                    tr { td { code { (q) } } td { (what) } (cells(&stats, q)) }
                }
            }
        }
        h2 { "Tenants" }
        p.muted {
            "Fair admission: while tenants wait, the " (engine.config.fair.in_flight)
            " runs in flight (NETRA_FAIR_IN_FLIGHT) are shared by weight, never beyond a tenant's cap; "
            "the others wait in Postgres until released. \"default\": the tenant has no value of its own "
            "and the configuration applies. Change a tenant here (a number, " code { "default" } ", or for the cap "
            code { "none" } ": no cap, whatever the default; empty keeps the value), with "
            code { "netra tenant set" } " or " code { "PATCH /v1/tenants/{name}" } "; each change is in the audit trail."
        }
        (tenants_table(&tenant_views, &signed))
    };
    Ok(layout::page(&signed, "Queues", "Queues", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenants_table_says_what_is_default() {
        let v = |name: &str, weight_is_default, cap: Option<u32>| TenantView {
            name: name.into(),
            weight: 2,
            weight_is_default,
            max_in_flight: cap,
            max_in_flight_is_default: cap.is_none(),
            requests_per_min: None,
            requests_per_min_is_default: true,
            in_flight: 3,
            waiting: 4,
            live: true,
        };
        let signed = Signed {
            who: crate::model::Principal::Operator("ops".into()),
            csrf: "tok".into(),
        };
        let lifted = TenantView {
            max_in_flight_is_default: false,
            ..v("c", false, None)
        };
        let gone = TenantView {
            live: false,
            ..v("d", true, None)
        };
        let html = tenants_table(
            &[v("a", true, None), v("b", false, Some(7)), lifted, gone],
            &signed,
        )
        .into_string();
        assert!(
            html.contains(r#"data-weight="a">2 <span class="muted">(default)"#),
            "{html}"
        );
        assert!(
            html.contains(r#"data-cap="a">none <span class="muted">(default)"#),
            "{html}"
        );
        assert!(html.contains(r#"data-weight="b">2</td>"#), "{html}");
        assert!(html.contains(r#"data-cap="b">7</td>"#), "{html}");
        assert!(html.contains(r#"data-in-flight="a">3<"#), "{html}");
        assert!(html.contains(r#"data-waiting="b">4<"#), "{html}");
        assert!(html.contains(r#"data-cap="c">none</td>"#), "{html}");
        // A form per live tenant, with the form token; none for the others.
        assert!(
            html.contains(r#"action="/console/tenants/a/fair" data-fair="a""#),
            "{html}"
        );
        assert!(html.contains(r#"name="csrf" value="tok""#), "{html}");
        assert!(!html.contains(r#"data-fair="d""#), "{html}");
        assert!(tenants_table(&[], &signed)
            .into_string()
            .contains("No tenants"));
    }

    #[test]
    fn cells_say_what_is_known() {
        let mut m = BTreeMap::new();
        m.insert(
            "q".to_string(),
            Some(QueueStat {
                ready: 3,
                consumers: 1,
            }),
        );
        m.insert("gone".to_string(), None);
        let ok: BrokerStats = Ok(m);
        let html = cells(&ok, "q").into_string();
        assert!(html.contains(r#"data-ready="q">3<"#), "{html}");
        assert!(html.contains(r#"data-consumers="q">1<"#), "{html}");
        assert!(cells(&ok, "gone").into_string().contains("no such queue"));
        let down: BrokerStats = Err("down".into());
        assert!(cells(&down, "q").into_string().contains("—"));
    }
}
