//! The workloads page: each workload the signed-in principal may see (a
//! tenant its own, an operator every tenant's, with a tenant column): the
//! span of its telemetry (first and last request), its rows and distinct
//! models, and its last ingests (`netra ingest`, recorded in `ingests`).
//! `netra-llm` is netra's own model calls, read from the call ledger.

use axum::{extract::State, response::Response};
use maud::{html, Markup};

use super::{
    layout::{self, when},
    session::Signed,
    ConsoleError,
};
use crate::{
    pipeline::Engine,
    store::{
        ingests::{self, IngestRow},
        ledger,
    },
};

/// Most workloads listed.
const MAX_WORKLOADS: i64 = 500;
/// Ingests shown per workload.
const INGESTS_PER_WORKLOAD: i64 = 10;

fn ingest_table(rows: &[&IngestRow]) -> Markup {
    html! {
        table.ingests {
            thead { tr {
                th { "started" } th { "finished" } th { "format" } th.num { "rows read" }
                th.num { "inserted" } th.num { "already present" } th.num { "bad rows" } th { "outcome" }
            } }
            tbody {
                @for i in rows {
                    tr data-ingest=(i.id) {
                        td { (when(&i.started_at)) } td { (when(&i.finished_at)) }
                        td { (i.format) } td.num { (i.rows_read) }
                        td.num data-inserted=(i.id) { (i.rows_inserted) }
                        td.num { (i.rows_duplicate) } td.num { (i.errors) }
                        td {
                            @if i.aborted { span.error { "aborted: too many bad rows, nothing kept" } }
                            @else { span.ok { "committed" } }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/workloads`.
pub async fn page(State(engine): State<Engine>, signed: Signed) -> Result<Response, ConsoleError> {
    let scope = signed.scope();
    let workloads = ingests::workloads(&engine.pool, scope, MAX_WORKLOADS).await?;
    let recent = ingests::recent(&engine.pool, scope, INGESTS_PER_WORKLOAD).await?;
    let operator = signed.is_operator();
    let body = html! {
        h1 { "Workloads" }
        p.muted {
            "The LLM request telemetry " (if operator { "of every tenant" } else { "you ingested" })
            ", as the analysis reads it (timestamps in UTC). "
            code { (ledger::WORKLOAD) } " is netra's own model calls, from the call ledger. "
            "Ingests are recorded since this version; sample data loaded by the demo is not an ingest."
        }
        table #workloads {
            thead { tr {
                @if operator { th { "tenant" } }
                th { "workload" } th.num { "rows" } th.num { "models" } th { "first request" } th { "last request" } th.num { "ingests shown" }
            } }
            tbody {
                @for w in &workloads {
                    @let key = format!("{}/{}", w.tenant, w.workload_id);
                    tr data-workload=(key) {
                        @if operator { td { (w.tenant) } }
                        td { b { (w.workload_id) } }
                        td.num data-rows=(key) { (w.rows) }
                        td.num data-models=(key) { (w.models) }
                        td { (w.first_ts.as_ref().map(when).unwrap_or_else(|| "—".into())) }
                        td { (w.last_ts.as_ref().map(when).unwrap_or_else(|| "—".into())) }
                        td.num { (recent.iter().filter(|i| i.tenant == w.tenant && i.workload_id == w.workload_id).count()) }
                    }
                }
                @if workloads.is_empty() {
                    tr { td colspan=(if operator { "7" } else { "6" }) .muted { "No workloads yet: load telemetry with " code { "netra ingest" } "." } }
                }
            }
        }
        @if workloads.len() as i64 == MAX_WORKLOADS { p.muted { "The first " (MAX_WORKLOADS) " workloads." } }
        h2 { "Last ingests" }
        @for w in &workloads {
            @let mine: Vec<&IngestRow> = recent.iter().filter(|i| i.tenant == w.tenant && i.workload_id == w.workload_id).collect();
            @if !mine.is_empty() {
                h3 {
                    @if operator { (w.tenant) " / " }
                    (w.workload_id)
                }
                (ingest_table(&mine))
            }
        }
        @if recent.is_empty() { p.muted { "No ingests recorded." } }
    };
    Ok(layout::page(&signed, "Workloads", "Workloads", body))
}
