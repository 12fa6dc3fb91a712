//! The queues page (operators only: the queues are shared by every
//! tenant). Per phase: the messages ready in its queue and its consumers,
//! read from RabbitMQ with passive declares (no management plugin); the
//! runs in progress, which AMQP 0-9-1 does not report (it has no count of
//! unacknowledged messages), read from Postgres as the runs holding a live
//! lease; the retry backlog waiting in Postgres; and the messages ready in
//! its dead-letter queue. When the broker cannot be read, the Postgres
//! figures are still shown, and the page says so. Then the tenants' fair
//! admission: each tenant's weight and cap on runs in flight (its own or
//! the configured default) and its runs in flight and waiting.

use std::{collections::BTreeMap, time::Duration};

use axum::{extract::State, response::Response};
use lapin::{options::QueueDeclareOptions, types::FieldTable, Connection};
use maud::{html, Markup};

use super::{
    layout::{self, when},
    session::Signed,
    ConsoleError,
};
use crate::{
    model::Phase,
    pipeline::Engine,
    store::{
        queues::{self, PhaseBacklog},
        tenants::{self, TenantView},
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

/// The tenants' table: weight, cap, runs in flight and waiting, with
/// "default" where the configuration applies.
fn tenants_table(views: &[TenantView]) -> Markup {
    html! {
        table #tenants {
            thead { tr {
                th { "tenant" } th.num { "weight" } th.num { "cap (max in flight)" }
                th.num { "in flight" } th.num { "waiting" }
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
                        td.num data-in-flight=(v.name) { (v.in_flight) }
                        td.num data-waiting=(v.name) { (v.waiting) }
                    }
                }
                @if views.is_empty() {
                    tr { td.muted colspan="5" { "No tenants, and no runs in flight or waiting." } }
                }
            }
        }
    }
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
            "and the configuration applies (change with " code { "netra tenant set" } " or "
            code { "PATCH /v1/tenants/{name}" } ")."
        }
        (tenants_table(&tenant_views))
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
            in_flight: 3,
            waiting: 4,
        };
        let html = tenants_table(&[v("a", true, None), v("b", false, Some(7))]).into_string();
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
        assert!(tenants_table(&[]).into_string().contains("No tenants"));
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
