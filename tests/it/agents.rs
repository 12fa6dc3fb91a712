//! The agents and tools on the real stack: tools on hand-checked rows, the
//! dispatcher's errors, tenant isolation, ingest (CSV, Azure trace, bad
//! rows), and end-to-end runs whose report figures are recomputed with
//! direct SQL over the same rows.

use std::io::{BufReader, Write};

use crate::common::*;
use netra::{
    agents::catalog::load_catalog,
    ingest::{self, Format, Target},
    store::telemetry::RequestRecord,
    tools::{Registry, ToolContext},
};
use serde_json::{json, Value};
use sqlx::PgPool;

fn row(ts: &str, model: &str, input: i32, output: i32, latency: f64) -> RequestRecord {
    RequestRecord {
        ts: chrono::DateTime::parse_from_rfc3339(ts).unwrap().into(),
        model: model.into(),
        input_tokens: input,
        output_tokens: output,
        latency_ms: Some(latency),
        ttft_ms: None,
        status: "ok".into(),
        cost_usd: None,
    }
}

async fn insert(pool: &PgPool, tenant: &str, workload: &str, rows: &[RequestRecord]) {
    netra::store::telemetry::ensure_workload(pool, tenant, workload)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    netra::store::telemetry::insert_batch(&mut conn, tenant, workload, rows)
        .await
        .unwrap();
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("netra-{}-{name}", uuid::Uuid::new_v4()));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

async fn ingest_file(
    pool: &PgPool,
    workload: &str,
    format: Format,
    model: Option<&str>,
    max_errors: usize,
    path: &std::path::Path,
) -> ingest::Report {
    let target = Target {
        tenant: "default",
        workload,
        format,
        model,
        max_errors,
        prices: None,
    };
    let reader = BufReader::new(std::fs::File::open(path).unwrap());
    ingest::ingest(pool, &target, reader, |_| {}).await.unwrap()
}

#[tokio::test]
async fn tools_compute_hand_checked_figures_for_the_callers_tenant_only() {
    let (config, db, pool) = fresh_db().await;
    // 20 requests on gpt-4o: output tokens 10, 20, ..., 200; latency 100, ..., 2000 ms;
    // 10 in hour 00, 5 in hour 01, 5 in hour 03.
    let rows: Vec<RequestRecord> = (1..=20)
        .map(|i| {
            let hour = match i {
                1..=10 => 0,
                11..=15 => 1,
                _ => 3,
            };
            row(
                &format!("2026-11-01T{hour:02}:{:02}:00Z", i),
                "gpt-4o",
                1000,
                10 * i,
                100.0 * f64::from(i),
            )
        })
        .collect();
    insert(&pool, "default", "w", &rows).await;
    // Another tenant's rows under the same workload id must never show up.
    insert(
        &pool,
        "other",
        "w",
        &[row("2026-11-01T02:00:00Z", "gpt-4o", 9, 9, 9.0)],
    )
    .await;
    let tools = Registry::standard();
    let ctx = ToolContext::unmemoized(pool.clone(), "default");
    let m = tools
        .call(
            &ctx,
            "workload_metrics",
            json!({"workload_id": "w", "days": 30}),
        )
        .await
        .unwrap();
    assert_eq!(m["requests"], 20);
    assert_eq!(m["tokens"]["input_total"], 20_000);
    // 10 * (1 + ... + 20) = 2100 output tokens.
    assert_eq!(m["tokens"]["output_total"], 2100);
    // percentile_cont(0.95) of 100..2000: position 19 * 0.95 = 18.05 -> 1900 + 0.05 * 100 = 1905.
    assert!((m["latency_ms"]["p95"].as_f64().unwrap() - 1905.0).abs() < 1e-9);
    // The window is the data's span, 00:01 to 03:20 = 199 minutes (clock
    // hours touched: 4, not the divisor): 20 / (199/60) per hour, and the
    // busiest hour's 10 is 10 * 199 / (60 * 20) of that.
    assert_eq!(m["rate"]["clock_hours"], 4.0);
    close(
        m["rate"]["window_hours"].as_f64().unwrap(),
        199.0 / 60.0,
        1e-12,
        "window",
    );
    close(
        m["rate"]["avg_per_hour"].as_f64().unwrap(),
        1200.0 / 199.0,
        1e-12,
        "avg/h",
    );
    assert_eq!(m["rate"]["peak_per_hour"], 10);
    close(
        m["rate"]["peak_to_average"].as_f64().unwrap(),
        1990.0 / 1200.0,
        1e-12,
        "peak/avg",
    );
    // Each request in a clock minute of its own: the peak minute is the first.
    assert_eq!(m["rate"]["peak_per_minute"], 1);
    assert_eq!(m["rate"]["peak_minute"], "2026-11-01T00:01:00Z");
    close(
        m["rate"]["peak_to_average_minute"].as_f64().unwrap(),
        9.95,
        1e-12,
        "peak/avg min",
    );
    assert_eq!(m["less_than_a_day"], true);
    // Peak hour tokens: 10 * 1000 + 10 * (1 + ... + 10) = 10,550.
    assert_eq!(m["rate"]["peak_tokens_per_hour"], 10_550);
    let p = tools
        .call(&ctx, "performance", json!({"workload_id": "w", "days": 30}))
        .await
        .unwrap();
    // percentile_disc(0.95) of 10..200 is the 19th value, 190; only 200 exceeds it, by 10.
    assert_eq!(p["models"][0]["output_cap"], 190);
    assert_eq!(p["models"][0]["output_tokens_above_cap"], 10);
    assert_eq!(p["models"][0]["requests_above_cap"], 1);
    let c = tools
        .call(
            &ctx,
            "cost_breakdown",
            json!({"workload_id": "w", "days": 30}),
        )
        .await
        .unwrap();
    // Embedded catalog (tables empty): 20,000 * 2.5/1M + 2,100 * 10/1M = 0.05 + 0.021 = 0.071.
    assert!((c["total_cost_usd"].as_f64().unwrap() - 0.071).abs() < 1e-12);
    assert_eq!(c["models"][0]["cost_basis"], "catalog");
    // The other tenant sees only its own row.
    let other = ToolContext::unmemoized(pool.clone(), "other");
    let m = tools
        .call(
            &other,
            "workload_metrics",
            json!({"workload_id": "w", "days": 30}),
        )
        .await
        .unwrap();
    assert_eq!(m["requests"], 1);
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn dispatcher_rejects_unknown_tools_and_bad_parameters_by_name() {
    let (config, db, pool) = fresh_db().await;
    let tools = Registry::standard();
    let ctx = ToolContext::unmemoized(pool.clone(), "default");
    let e = tools
        .call(&ctx, "drop_tables", json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.class, netra::error::ErrorClass::Permanent);
    assert!(
        e.message.contains("unknown tool `drop_tables`"),
        "{}",
        e.message
    );
    let e = tools
        .call(
            &ctx,
            "workload_metrics",
            json!({"workload_id": "w", "days": 0}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, netra::error::ErrorClass::Permanent);
    assert!(
        e.message.contains("`workload_metrics`") && e.message.contains("`days`"),
        "{}",
        e.message
    );
    let e = tools
        .call(
            &ctx,
            "workload_metrics",
            json!({"workload_id": "w", "days": 7, "tenant": "other"}),
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("`tenant`"), "{}", e.message);
    let e = tools
        .call(&ctx, "catalog_lookup", json!({"kind": "tpus"}))
        .await
        .unwrap_err();
    assert!(e.message.contains("`kind`"), "{}", e.message);
    // The catalog loads idempotently and the lookup reads it from Postgres.
    let first = load_catalog(&pool).await.unwrap();
    let again = load_catalog(&pool).await.unwrap();
    assert_eq!(first, again);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog_models")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n as usize, first.models);
    sqlx::query("UPDATE catalog_models SET input_per_mtok = 1.25 WHERE id = 'gpt-4o'")
        .execute(&pool)
        .await
        .unwrap();
    let v = tools
        .call(
            &ctx,
            "catalog_lookup",
            json!({"kind": "models", "ids": ["gpt-4o"]}),
        )
        .await
        .unwrap();
    assert_eq!(v["models"][0]["input_per_mtok"], 1.25);
    assert_eq!(v["models"][0]["as_of"], "2026-11-01");
    // A price change is a data change: an edited file loads without a rebuild.
    let mut edited = netra::agents::catalog::Catalog::embedded().clone();
    edited.version = "2026-12-01".into();
    edited.models.retain(|m| m.id != "claude-3-5-haiku");
    let path = temp_file("catalog.json", &serde_json::to_string(&edited).unwrap());
    let loaded = netra::agents::catalog::load_catalog_file(&pool, &path)
        .await
        .unwrap();
    assert_eq!(loaded.models, edited.models.len());
    let from_db = netra::agents::catalog::Catalog::from_db(&pool, None)
        .await
        .unwrap();
    assert_eq!(from_db.version, "2026-12-01");
    assert!(from_db.model("claude-3-5-haiku").is_none());
    assert_eq!(from_db.model("gpt-4o").unwrap().input_per_mtok, 2.5);
    let bad = temp_file("catalog.json", "{\"version\": 1}");
    assert!(matches!(
        netra::agents::catalog::load_catalog_file(&pool, &bad).await,
        Err(netra::agents::catalog::CatalogError::Parse(_))
    ));
    std::fs::remove_file(path).ok();
    std::fs::remove_file(bad).ok();
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn malformed_csv_reports_line_numbers_and_inserts_nothing_over_max_errors() {
    let (config, db, pool) = fresh_db().await;
    let text = "timestamp,model,input_tokens,output_tokens,latency_ms,status\n\
                2026-11-01T00:00:00Z,gpt-4o,10,5,800,ok\n\
                2026-11-01T00:00:01Z,gpt-4o,ten,5,800,ok\n\
                2026-11-01T00:00:02Z,gpt-4o,10,5,800,ok\n\
                not-a-time,gpt-4o,10,5,800,ok\n\
                2026-11-01T00:00:04Z,gpt-4o,10,5\n\
                2026-11-01T00:00:05Z,gpt-4o,10,5,800,ok\n";
    let path = temp_file("bad.csv", text);
    let r = ingest_file(&pool, "bad", Format::Csv, None, 2, &path).await;
    assert!(r.aborted);
    assert_eq!(r.inserted, 0);
    assert_eq!(
        r.bad.iter().map(|b| b.line).collect::<Vec<_>>(),
        vec![3, 5, 6]
    );
    assert!(r.bad[0].reason.contains("input_tokens"), "{:?}", r.bad);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM llm_requests")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let w: i64 = sqlx::query_scalar("SELECT count(*) FROM workloads")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(w, 0, "an aborted ingest leaves no workload behind");
    // Within the limit the good rows go in and the bad ones are still reported.
    let r = ingest_file(&pool, "bad", Format::Csv, None, 3, &path).await;
    assert!(!r.aborted);
    assert_eq!((r.inserted, r.bad_rows), (3, 3));
    std::fs::remove_file(path).ok();
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn azure_trace_rows_keep_their_utc_timestamps_and_take_the_model_from_the_command_line() {
    let (config, db, pool) = fresh_db().await;
    let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                2023-11-16 18:15:46.6805900,374,44\n\
                2023-11-16 18:15:50.9951690,396,109\n";
    let path = temp_file("azure.csv", text);
    let r = ingest_file(&pool, "az", Format::Azure, Some("gpt-4o-mini"), 0, &path).await;
    assert_eq!((r.inserted, r.bad_rows), (2, 0));
    let rows: Vec<(String, String, i32, i32)> = sqlx::query_as(
        "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), model, input_tokens, output_tokens \
         FROM llm_requests WHERE tenant = 'default' AND workload_id = $1 ORDER BY ts",
    )
    .bind("az")
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows[0],
        (
            "2023-11-16 18:15:46.680590".to_string(),
            "gpt-4o-mini".to_string(),
            374,
            44
        )
    );
    std::fs::remove_file(path).ok();
    pool.close().await;
    cleanup(&config, &db).await;
}

/// Seeded telemetry shaped like the Azure trace (bursty arrivals around a
/// daily peak, long-tailed token counts) plus latency, as a generic CSV with
/// the trace's seven-digit UTC timestamps.
fn azure_like_csv(requests: usize, seed: u64) -> String {
    let spec = netra::sample::Spec {
        hours: 48,
        ..netra::sample::chat("gpt-4o", requests, seed)
    };
    let mut out =
        String::from("timestamp,model,input_tokens,output_tokens,latency_ms,ttft_ms,status\n");
    for r in netra::sample::generate(&spec) {
        out.push_str(&format!(
            "{}.{:07},{},{},{},{},{},{}\n",
            r.ts.format("%Y-%m-%d %H:%M:%S"),
            chrono::Timelike::nanosecond(&r.ts) / 100,
            r.model,
            r.input_tokens,
            r.output_tokens,
            r.latency_ms.unwrap_or_default(),
            r.ttft_ms.unwrap_or_default(),
            r.status
        ));
    }
    out
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: report {a} vs SQL {b}");
}

#[tokio::test]
async fn cost_cut_under_a_p95_slo_reports_figures_equal_to_direct_sql() {
    let t = TestApp::start().await;
    load_catalog(&t.pool).await.unwrap();
    let path = temp_file("trace.csv", &azure_like_csv(3000, 2026));
    let r = ingest_file(&t.pool, "trace", Format::Csv, None, 0, &path).await;
    assert_eq!((r.inserted, r.bad_rows), (3000, 0));
    std::fs::remove_file(path).ok();
    // The constraint: keep p95 latency within the next whole second above today's.
    let (n, in_sum, out_sum, p95, span_h): (i64, i64, i64, f64, f64) = sqlx::query_as(
        "SELECT count(*), sum(input_tokens)::int8, sum(output_tokens)::int8, \
         percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms), \
         extract(epoch FROM max(ts) - min(ts))::float8 / 3600 FROM llm_requests WHERE workload_id = 'trace'",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    let slo_s = (p95 / 1000.0).ceil();
    let msg = format!("Cut the cost of workload trace without pushing p95 latency over {slo_s} s");
    t.publish_request(
        &json!({"message": msg, "context": {"batch_eligible_share": 0.2}}),
        Some("e2e"),
        None,
        None,
    )
    .await;
    let runs = t.wait_all(1, &["completed"]).await;
    let report = runs[0].result.clone().unwrap();
    let m = &report["metrics"][0];
    assert_eq!(m["requests"].as_i64(), Some(n));
    assert_eq!(m["input_tokens"].as_i64(), Some(in_sum));
    assert_eq!(m["output_tokens"].as_i64(), Some(out_sum));
    close(
        m["latency_ms"]["p95"].as_f64().unwrap(),
        p95,
        1e-6,
        "p95 latency",
    );
    let factor = 720.0 / span_h;
    let (gi, go, _, _) = catalog_price(&t.pool, "gpt-4o").await;
    let monthly = (in_sum as f64 * gi + out_sum as f64 * go) / 1e6 * factor;
    close(
        report["current_monthly_cost_usd"].as_f64().unwrap(),
        monthly,
        0.005 + 1e-9,
        "monthly cost",
    );
    // The output cap, by SQL over the rows.
    let (cap, above): (i64, i64) = sqlx::query_as(
        "WITH c AS (SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY output_tokens)::int8 AS cap \
           FROM llm_requests WHERE workload_id = 'trace') \
         SELECT c.cap, coalesce(sum(greatest(output_tokens - c.cap, 0)), 0)::int8 FROM llm_requests, c \
         WHERE workload_id = 'trace' GROUP BY c.cap",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    let recs = report["recommendations"].as_array().unwrap();
    assert!(!recs.is_empty());
    // No quality floor: only the requests at or under the median input length move,
    // and the rest stays on gpt-4o. The routed share, by SQL over the rows.
    let rs = recs
        .iter()
        .find(|r| r["kind"] == "model_routing")
        .expect("the small requests go to a cheaper model within the SLO");
    assert!(recs.iter().all(|r| r["kind"] != "model_right_sizing"));
    let (threshold, ri, ro): (i64, i64, i64) = sqlx::query_as(
        "WITH t AS (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY input_tokens)::int8 AS t \
           FROM llm_requests WHERE workload_id = 'trace') \
         SELECT t.t, sum(input_tokens)::int8, sum(output_tokens)::int8 FROM llm_requests, t \
         WHERE workload_id = 'trace' AND input_tokens <= t.t GROUP BY t.t",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(rs["max_input_tokens"].as_i64(), Some(threshold));
    let serving = rs["to_model"].as_str().unwrap();
    let (si, so, _, _) = catalog_price(&t.pool, serving).await;
    let (_, _, gc, gb) = catalog_price(&t.pool, "gpt-4o").await;
    let (a, b) = (in_sum as f64, out_sum as f64);
    let (ri, ro) = (ri as f64, ro as f64);
    // What stays on gpt-4o, step by step: the cap's tokens scale with the output kept.
    let (a1, b1) = (a - ri, b - ro);
    let above1 = above as f64 * b1 / b;
    let trimmed = recs.iter().any(|r| r["kind"] == "prompt_trimming");
    let a2 = if trimmed { a1 * 0.8 } else { a1 };
    let caching_window = a2 * 0.3 * gi / 1e6 * gc;
    let mut total = 0.0;
    for r in recs {
        let got = r["monthly_savings_usd"].as_f64().unwrap();
        total += got;
        let want = match r["kind"].as_str().unwrap() {
            "model_routing" => ((ri * gi + ro * go) - (ri * si + ro * so)) / 1e6 * factor,
            "max_output_tokens" => {
                assert_eq!(r["cap"].as_i64(), Some(cap));
                above1 * go / 1e6 * factor
            }
            "prompt_trimming" => a1 * 0.2 * gi / 1e6 * factor,
            "prompt_caching" => caching_window * factor,
            "batch_processing" => {
                ((a2 * gi + (b1 - above1) * go) / 1e6 - caching_window) * 0.2 * gb * factor
            }
            // The latency goal (the SLO names p95): no saving.
            "capacity_for_peaks" | "streaming" => 0.0,
            other => panic!("unexpected recommendation {other}: {r}"),
        };
        close(got, want, 0.005 + 1e-9, r["kind"].as_str().unwrap());
        if let Some(p) = r["expected_p95_ms"].as_f64() {
            assert!(p <= slo_s * 1000.0, "{r}");
        }
    }
    close(
        report["total_monthly_savings_usd"].as_f64().unwrap(),
        total,
        0.01,
        "total savings",
    );
    assert_eq!(
        report["validation"]["valid"], true,
        "{}",
        report["validation"]
    );
    let md = report["markdown"].as_str().unwrap();
    if std::env::var_os("NETRA_SHOW_REPORT").is_some() {
        eprintln!("{md}");
    }
    assert!(
        md.contains(&format!("| trace | {n} | {in_sum} | {out_sum} |")),
        "{md}"
    );
    assert!(md.contains(&format!("{p95:.1}")));
    assert!(md.contains("## Action plan") && md.contains("Supply configuration"));
    t.finish().await;
}

#[tokio::test]
async fn no_telemetry_needs_input_naming_it_and_a_follow_up_after_ingest_completes() {
    let t = TestApp::start().await;
    t.publish_request(
        &json!({"message": "Reduce the cost of workload fresh-bot"}),
        Some("first"),
        None,
        None,
    )
    .await;
    let first = t.wait_all(1, &["needs_input"]).await.remove(0);
    let r = first.result.clone().unwrap();
    assert_eq!(r["needs_input"], true);
    let missing = r["next_steps"][0].as_str().unwrap();
    assert!(
        missing.contains("request telemetry for workload fresh-bot"),
        "{missing}"
    );
    assert!(r["markdown"]
        .as_str()
        .unwrap()
        .contains("netra ingest --tenant default --workload fresh-bot"));
    let path = temp_file("fresh.csv", &azure_like_csv(400, 9));
    let ing = ingest_file(&t.pool, "fresh-bot", Format::Csv, None, 0, &path).await;
    assert_eq!(ing.inserted, 400);
    std::fs::remove_file(path).ok();
    t.publish_request(
        &json!({"message": "The data is in, go ahead", "thread_id": first.thread_id}),
        Some("second"),
        None,
        None,
    )
    .await;
    let runs = t.wait_all(2, &["needs_input", "completed"]).await;
    let second = runs.iter().find(|r| r.id != first.id).unwrap();
    assert_eq!(second.status, "completed");
    assert_eq!(second.thread_id, first.thread_id);
    let r: &Value = second.result.as_ref().unwrap();
    assert_eq!(r["metrics"][0]["requests"], 400);
    assert!(r["recommendations"]
        .as_array()
        .is_some_and(|x| !x.is_empty()));
    t.finish().await;
}

#[tokio::test]
async fn an_ambiguous_request_gets_a_clarifying_question_not_a_guess() {
    let t = TestApp::start().await;
    t.publish_request(
        &json!({"message": "what about workload chat-prod"}),
        None,
        None,
        None,
    )
    .await;
    // The run asks and waits for the answer: it ends `needs_input`.
    let run = t.wait_all(1, &["needs_input", "completed"]).await.remove(0);
    assert_eq!(run.status, "needs_input");
    let r = run.result.unwrap();
    assert!(r["clarifying_question"]
        .as_str()
        .unwrap()
        .contains("chat-prod"));
    assert!(r["markdown"]
        .as_str()
        .unwrap()
        .contains("Clarification needed"));
    assert_eq!(r["recommendations"], Value::Null);
    assert_eq!(
        r["needs_input"], true,
        "the report says what the status says"
    );
    t.finish().await;
}

/// An Azure LLM inference trace (`TIMESTAMP,ContextTokens,GeneratedTokens`)
/// of `requests` sample chat requests over 48 h.
pub(crate) fn azure_trace_text(requests: usize, seed: u64) -> String {
    let spec = netra::sample::Spec {
        hours: 48,
        ..netra::sample::chat("gpt-4o", requests, seed)
    };
    let mut text = String::from("TIMESTAMP,ContextTokens,GeneratedTokens\n");
    for r in netra::sample::generate(&spec) {
        text.push_str(&format!(
            "{}.{:07},{},{}\n",
            r.ts.format("%Y-%m-%d %H:%M:%S"),
            chrono::Timelike::nanosecond(&r.ts) / 100,
            r.input_tokens,
            r.output_tokens
        ));
    }
    text
}

/// Ingests [`azure_trace_text`] as `workload`, on gpt-4o.
pub(crate) async fn ingest_azure_trace(pool: &PgPool, workload: &str, requests: usize, seed: u64) {
    let path = temp_file("azure-trace.csv", &azure_trace_text(requests, seed));
    let r = ingest_file(pool, workload, Format::Azure, Some("gpt-4o"), 0, &path).await;
    assert_eq!(r.bad_rows, 0);
    std::fs::remove_file(path).ok();
}

#[tokio::test]
async fn an_azure_trace_without_latency_is_partial_and_the_gap_is_a_caveat() {
    let t = TestApp::start().await;
    // The Azure trace itself: tokens and timestamps only, the model from the command line.
    let path = temp_file("azure-trace.csv", &azure_trace_text(500, 5));
    let r = ingest_file(&t.pool, "az-trace", Format::Azure, Some("gpt-4o"), 0, &path).await;
    assert_eq!(r.inserted, 500);
    std::fs::remove_file(path).ok();
    t.publish_request(
        &json!({"message": "Cut the cost of workload az-trace without pushing p95 latency over 2 s"}),
        None,
        None,
        None,
    )
    .await;
    let run = t.wait_all(1, &["completed"]).await.remove(0);
    let data: (Value,) =
        sqlx::query_as("SELECT output FROM phase_outputs WHERE run_id = $1 AND phase = 'data'")
            .bind(run.id)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(data.0["sufficiency"], "partial");
    let report = run.result.unwrap();
    let caveats: Vec<&str> = report["caveats"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        caveats
            .iter()
            .any(|c| c.contains("latency_ms") && c.contains("SLO")),
        "{caveats:?}"
    );
    // A model change cannot be checked against the SLO, so it is left out, not guessed.
    let recs = report["recommendations"].as_array().unwrap();
    assert!(
        recs.iter().all(|r| r["kind"] != "model_right_sizing"),
        "{recs:?}"
    );
    assert!(recs.iter().any(|r| r["kind"] == "prompt_caching"));
    assert!(report["markdown"].as_str().unwrap().contains("## Caveats"));
    t.finish().await;
}

async fn data_version(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT version FROM data_version")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Tool results are memoized by data version: the same call at the same
/// version is answered from the memo, and every kind of write to the data
/// the tools read (ingest, direct SQL, the catalog) moves the version, so a
/// call after it computes the new figures.
#[tokio::test]
async fn memoized_tool_results_follow_every_write_to_the_data() {
    let (config, db, pool) = fresh_db().await;
    load_catalog(&pool).await.unwrap();
    let rows: Vec<RequestRecord> = (1..=10)
        .map(|i| {
            row(
                &format!("2026-11-01T00:{i:02}:00Z"),
                "gpt-4o",
                1000,
                100,
                100.0,
            )
        })
        .collect();
    insert(&pool, "default", "w", &rows).await;
    let memo = std::sync::Arc::new(netra::memo::Memo::new(64));
    let tools = Registry::standard();
    let params = json!({"workload_id": "w", "days": 30});
    let at = |version: i64| ToolContext {
        data_version: Some(version),
        memo: memo.clone(),
        ..ToolContext::unmemoized(pool.clone(), "default")
    };
    let call = |ctx: ToolContext, tool: &'static str| {
        let params = params.clone();
        async move { tools.call(&ctx, tool, params).await.unwrap() }
    };

    let v1 = data_version(&pool).await;
    assert_eq!(call(at(v1), "workload_metrics").await["requests"], 10);
    assert_eq!(call(at(v1), "workload_metrics").await["requests"], 10);
    assert_eq!(memo.stats(), (1, 1), "the second call is a memo hit");
    // Another tenant at the same version has its own entry.
    let other = ToolContext {
        tenant: "other".into(),
        ..at(v1)
    };
    assert_eq!(call(other, "workload_metrics").await["requests"], 0);

    // Ingest moves the version; the call at the new version sees the rows.
    insert(&pool, "default", "w", &rows[..5]).await;
    let v2 = data_version(&pool).await;
    assert!(v2 > v1);
    assert_eq!(call(at(v2), "workload_metrics").await["requests"], 15);

    // So does any SQL on the telemetry, whoever runs it.
    sqlx::query(
        "DELETE FROM llm_requests WHERE tenant = 'default' AND ts > '2026-11-01T00:03:00Z'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let v3 = data_version(&pool).await;
    assert!(v3 > v2);
    assert_eq!(call(at(v3), "workload_metrics").await["requests"], 6);

    // And a price change in the catalog: the cost at the new version uses it.
    let before = call(at(v3), "cost_breakdown").await;
    sqlx::query(
        "UPDATE catalog_models SET input_per_mtok = input_per_mtok * 2 WHERE id = 'gpt-4o'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let v4 = data_version(&pool).await;
    assert!(v4 > v3);
    let after = call(at(v4), "cost_breakdown").await;
    let cost = |v: &Value| v["total_cost_usd"].as_f64().unwrap();
    assert!(cost(&after) > cost(&before), "{before} vs {after}");
    pool.close().await;
    cleanup(&config, &db).await;
}
