//! The call ledger's numbers, served: a run's model calls and usage in its
//! view, `GET /v1/usage` (tenant-scoped, grouped, validated), the ledger's
//! counters at `/metrics`, and netra's own calls as the telemetry of
//! workload `netra-llm`, which an optimization run analyses. Every figure
//! is checked against sums computed here from the rows the test wrote.

use std::time::Duration;

use crate::common::{
    fake_llm::{FakeLlm, Reply},
    *,
};
use chrono::{DateTime, Utc};
use netra::agents::catalog::load_catalog;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// One HTTP call: (status, JSON body, or the text when it is not JSON).
async fn call(
    method: &'static str,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let agent = http();
        let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
        let mut resp = match method {
            "POST" => agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(serde_json::to_vec(&body.unwrap_or(Value::Null)).unwrap()),
            _ => agent.get(&url).header("authorization", &auth).call(),
        }
        .unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
    .await
    .unwrap()
}

/// A netra whose stale-run sweeper leaves the runs this module creates in
/// the store alone (they only carry ledger rows), optionally with a model.
async fn start(llm_base_url: Option<String>) -> TestApp {
    let (mut config, db) = test_config().await;
    config.republish_after = Duration::from_secs(3600);
    if let Some(url) = llm_base_url {
        config.llm.base_url = Some(url);
        config.llm.model = "gpt-4o-mini".into();
        config.llm.requests_per_minute = 0;
        config.llm.tokens_per_minute = 0;
    }
    TestApp::start_with(config, db, None).await
}

/// A ledger row as this module writes it.
#[derive(Debug, Clone)]
struct Row {
    tenant: &'static str,
    run_id: Uuid,
    phase: &'static str,
    model: &'static str,
    reused_from: Option<i64>,
    error: Option<&'static str>,
    input: i32,
    output: i32,
    cached: i32,
    latency_ms: f64,
    /// `None`: no price (self-hosted), or a reuse or failure.
    cost_usd: Option<f64>,
    at: DateTime<Utc>,
}

impl Row {
    fn made(&self) -> bool {
        self.reused_from.is_none()
    }

    fn basis(&self) -> &'static str {
        match (self.reused_from, self.error, self.cost_usd) {
            (Some(_), _, _) => "reused",
            (None, Some(_), _) => "failed",
            (None, None, Some(_)) => "catalog",
            (None, None, None) => "self-hosted",
        }
    }
}

/// Writes a row; answers its id.
async fn insert(pool: &PgPool, r: &Row) -> i64 {
    let answered = r.error.is_none();
    sqlx::query_scalar(
        "INSERT INTO model_calls (tenant, run_id, phase, attempt, replay, purpose, provider, model,
           prompt_version, request_hash, request, response, error, reused_from, input_tokens,
           output_tokens, cached_tokens, latency_ms, cost_usd, cost_basis, at)
         VALUES ($1, $2, $3, 1, 0, $3, 'openai-compatible', $4, 'test/1', md5(random()::text),
           '{}'::jsonb, CASE WHEN $5 THEN '{\"content\": \"{}\"}'::jsonb END, $6, $7, $8, $9, $10,
           $11, $12, $13, $14) RETURNING id",
    )
    .bind(r.tenant)
    .bind(r.run_id)
    .bind(r.phase)
    .bind(r.model)
    .bind(answered)
    .bind(r.error)
    .bind(r.reused_from)
    .bind(r.input)
    .bind(r.output)
    .bind(r.cached)
    .bind(r.latency_ms)
    .bind(r.cost_usd)
    .bind(r.basis())
    .bind(r.at)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// What rows add up to, computed here (the figures netra must answer).
#[derive(Debug, Default, Clone, PartialEq)]
struct Sums {
    calls: i64,
    hits: i64,
    failures: i64,
    input: i64,
    output: i64,
    cached: i64,
    priced_cost: f64,
    unpriced: i64,
    latency: f64,
}

fn sums<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Sums {
    let mut s = Sums::default();
    for r in rows {
        if !r.made() {
            s.hits += 1;
            continue;
        }
        s.calls += 1;
        s.failures += i64::from(r.error.is_some());
        s.input += i64::from(r.input);
        s.output += i64::from(r.output);
        s.cached += i64::from(r.cached);
        s.priced_cost += r.cost_usd.unwrap_or(0.0);
        s.unpriced += i64::from(r.basis() == "self-hosted");
        s.latency += r.latency_ms;
    }
    s
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        "{what}: {a} vs {b}"
    );
}

/// Checks a usage object against sums.
fn check_usage(u: &Value, s: &Sums, what: &str) {
    let int = |k: &str| {
        u[k].as_i64()
            .unwrap_or_else(|| panic!("{what}: {k} in {u}"))
    };
    assert_eq!(
        (
            int("calls"),
            int("ledger_hits"),
            int("failures"),
            int("input_tokens"),
            int("output_tokens"),
            int("cached_tokens"),
            int("unpriced_calls"),
        ),
        (s.calls, s.hits, s.failures, s.input, s.output, s.cached, s.unpriced),
        "{what}: {u}"
    );
    if s.unpriced > 0 {
        assert!(
            u["cost_usd"].is_null(),
            "{what}: unpriced calls, yet a cost: {u}"
        );
    } else {
        close(
            u["cost_usd"].as_f64().unwrap(),
            s.priced_cost,
            &format!("{what} cost"),
        );
    }
    close(
        u["latency_ms_sum"].as_f64().unwrap(),
        s.latency,
        &format!("{what} latency"),
    );
    if s.calls > 0 {
        close(
            u["latency_ms_mean"].as_f64().unwrap(),
            s.latency / s.calls as f64,
            &format!("{what} mean latency"),
        );
    } else {
        assert!(u["latency_ms_mean"].is_null(), "{what}: {u}");
    }
}

/// The acme and globex rows of the tests below: run `view_run` has a priced
/// triage call, its reuse, a failed call and an unpriced reporting call;
/// `bulk_run` has 120 calls over 30 hours (gpt-4o-mini priced, a few
/// failed, qwen-local unpriced) and some reuses; globex has calls of its own.
struct Fixture {
    view_run: Uuid,
    globex_run: Uuid,
    rows: Vec<Row>,
    base: DateTime<Utc>,
}

async fn fixture(pool: &PgPool) -> Fixture {
    let view_run = create_run(pool, "acme", "c-view", "hello", "triage")
        .await
        .id;
    let bulk_run = create_run(pool, "acme", "c-bulk", "hello", "triage")
        .await
        .id;
    let globex_run = create_run(pool, "globex", "c-globex", "hello", "triage")
        .await
        .id;
    let base = Utc::now() - chrono::Duration::days(2);
    let at = |minutes: i64| base + chrono::Duration::minutes(minutes);
    let row = |tenant: &'static str,
               run_id: Uuid,
               phase: &'static str,
               model: &'static str,
               minutes: i64| Row {
        tenant,
        run_id,
        phase,
        model,
        reused_from: None,
        error: None,
        input: 0,
        output: 0,
        cached: 0,
        latency_ms: 0.0,
        cost_usd: None,
        at: at(minutes),
    };
    let mut rows = Vec::new();
    // The run whose view is checked.
    let miss = Row {
        input: 1200,
        output: 80,
        cached: 200,
        latency_ms: 410.5,
        cost_usd: Some(0.000_246),
        ..row("acme", view_run, "triage", "gpt-4o-mini", 0)
    };
    let miss_id = insert(pool, &miss).await;
    rows.push(miss);
    for r in [
        Row {
            reused_from: Some(miss_id),
            ..row("acme", view_run, "triage", "gpt-4o-mini", 1)
        },
        Row {
            error: Some("model call failed (transient): timed out"),
            latency_ms: 30_000.0,
            ..row("acme", view_run, "triage", "gpt-4o-mini", 2)
        },
        Row {
            input: 900,
            output: 300,
            latency_ms: 1500.25,
            ..row("acme", view_run, "reporting", "qwen-local", 3)
        },
    ] {
        insert(pool, &r).await;
        rows.push(r);
    }
    // 120 calls over 30 hours, 4 failed, 20 unpriced; 6 reuses.
    for i in 0..120i64 {
        let minutes = 10 + i * 15;
        let r = if i % 30 == 7 {
            Row {
                error: Some("model call failed (permanent): 400"),
                latency_ms: 12.0 + i as f64,
                ..row("acme", bulk_run, "triage", "gpt-4o-mini", minutes)
            }
        } else if i % 6 == 5 {
            Row {
                input: 2000 + i as i32,
                output: 150,
                latency_ms: 2000.0 + i as f64,
                ..row("acme", bulk_run, "reporting", "qwen-local", minutes)
            }
        } else {
            let (input, output) = (800 + 7 * i as i32, 40 + (i as i32 % 13) * 9);
            Row {
                input,
                output,
                cached: (i as i32 % 4) * 100,
                latency_ms: 300.0 + 3.5 * i as f64,
                cost_usd: Some((f64::from(input) * 0.15 + f64::from(output) * 0.6) / 1e6),
                ..row("acme", bulk_run, "triage", "gpt-4o-mini", minutes)
            }
        };
        let id = insert(pool, &r).await;
        rows.push(r);
        if i % 20 == 3 {
            let hit = Row {
                reused_from: Some(id),
                ..row("acme", bulk_run, "triage", "gpt-4o-mini", minutes + 1)
            };
            insert(pool, &hit).await;
            rows.push(hit);
        }
    }
    // Another tenant's calls, with the same models and phases.
    for i in 0..40i64 {
        let r = Row {
            input: 50_000,
            output: 5_000,
            latency_ms: 9_999.0,
            cost_usd: Some(0.5),
            ..row("globex", globex_run, "triage", "gpt-4o-mini", 20 + i * 30)
        };
        insert(pool, &r).await;
        rows.push(r);
    }
    Fixture {
        view_run,
        globex_run,
        rows,
        base,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[tokio::test]
async fn run_view_lists_the_runs_calls_as_hits_and_misses_with_usage_per_phase() {
    let t = start(None).await;
    let acme = t.tenant("acme").await;
    let globex = t.tenant("globex").await;
    let f = fixture(&t.pool).await;
    let base = t.base();
    let (s, v) = call(
        "GET",
        format!("{base}/v1/runs/{}", f.view_run),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mine: Vec<&Row> = f.rows.iter().filter(|r| r.run_id == f.view_run).collect();
    let calls = v["model_calls"].as_array().unwrap();
    assert_eq!(calls.len(), mine.len(), "{v}");
    for (c, r) in calls.iter().zip(&mine) {
        let want = if r.made() { "miss" } else { "hit" };
        assert_eq!(c["ledger"], want, "{c}");
        assert_eq!(c["phase"], r.phase);
        assert_eq!(c["model"], r.model);
        assert_eq!(c["input_tokens"].as_i64(), Some(i64::from(r.input)));
        assert_eq!(c["error"].as_str(), r.error);
        assert_eq!(c["cost_basis"], r.basis());
    }
    // The hit names the miss it reused.
    assert_eq!(calls[1]["reused_from"], calls[0]["id"]);
    // Totals: one unpriced call makes the cost unknown; per phase, only
    // reporting's is.
    check_usage(&v["usage"], &sums(mine.iter().copied()), "run");
    let phases = v["usage"]["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().filter_map(|p| p["phase"].as_str()).collect();
    assert_eq!(names, ["triage", "reporting"]);
    for p in phases {
        let of_phase = mine.iter().copied().filter(|r| p["phase"] == r.phase);
        check_usage(p, &sums(of_phase), p["phase"].as_str().unwrap());
    }
    assert!(phases[0]["cost_usd"].is_number() && phases[1]["cost_usd"].is_null());
    // Another tenant sees neither the run nor its calls, with or without
    // runs of its own.
    let (s, v) = call(
        "GET",
        format!("{base}/v1/runs/{}", f.view_run),
        Some(&globex),
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (s, v) = call(
        "GET",
        format!("{base}/v1/runs/{}", f.globex_run),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = call(
        "GET",
        format!("{base}/v1/runs/{}", f.globex_run),
        Some(&globex),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(v["model_calls"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["ledger"] == "miss"));
    check_usage(
        &v["usage"],
        &sums(f.rows.iter().filter(|r| r.tenant == "globex")),
        "globex run",
    );
    t.finish().await;
}

#[tokio::test]
async fn usage_totals_are_the_callers_tenant_only_grouped_by_whitelisted_keys() {
    let t = start(None).await;
    let acme = t.tenant("acme").await;
    let globex = t.tenant("globex").await;
    let f = fixture(&t.pool).await;
    let base = t.base();
    let url = |q: &str| format!("{base}/v1/usage{q}");
    let acme_rows = || f.rows.iter().filter(|r| r.tenant == "acme");

    // The default range (the last 30 days) holds every row.
    let (s, v) = call("GET", url(""), Some(&acme), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["groups"], json!([]));
    check_usage(&v["totals"], &sums(acme_rows()), "acme totals");
    let from: DateTime<Utc> = v["from"].as_str().unwrap().parse().unwrap();
    let to: DateTime<Utc> = v["to"].as_str().unwrap().parse().unwrap();
    assert_eq!(to - from, chrono::Duration::days(30));

    // An explicit range, half open: [base + 10 h, base + 20 h).
    let (lo, hi) = (
        f.base + chrono::Duration::hours(10),
        f.base + chrono::Duration::hours(20),
    );
    let q = format!("?from={}&to={}", rfc3339(lo), rfc3339(hi));
    let (s, v) = call("GET", url(&q), Some(&acme), None).await;
    assert_eq!(s, 200, "{v}");
    let in_range = || acme_rows().filter(|r| r.at >= lo && r.at < hi);
    assert!(in_range().count() > 10);
    check_usage(&v["totals"], &sums(in_range()), "range");

    // By model: gpt-4o-mini is priced, qwen-local is not.
    let (s, v) = call("GET", url("?group_by=model"), Some(&acme), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["group_by"], json!(["model"]));
    let groups = v["groups"].as_array().unwrap();
    let models: Vec<&str> = groups.iter().filter_map(|g| g["model"].as_str()).collect();
    assert_eq!(models, ["gpt-4o-mini", "qwen-local"]);
    for g in groups {
        assert!(g.get("phase").is_none() && g.get("tenant").is_none(), "{g}");
        check_usage(
            g,
            &sums(acme_rows().filter(|r| g["model"] == r.model)),
            "model group",
        );
    }
    assert!(groups[0]["cost_usd"].is_number() && groups[1]["cost_usd"].is_null());

    // By tenant and phase: the caller's tenant only; the groups add up to
    // the totals.
    let (s, v) = call("GET", url("?group_by=tenant,phase"), Some(&acme), None).await;
    assert_eq!(s, 200, "{v}");
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    for g in groups {
        assert_eq!(g["tenant"], "acme");
        check_usage(
            g,
            &sums(acme_rows().filter(|r| g["phase"] == r.phase)),
            "phase group",
        );
    }
    let (s, v) = call(
        "GET",
        url("?group_by=model,phase,tenant"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let groups = v["groups"].as_array().unwrap();
    let calls: i64 = groups.iter().map(|g| g["calls"].as_i64().unwrap()).sum();
    assert_eq!(calls, v["totals"]["calls"].as_i64().unwrap());
    for g in groups {
        let of = acme_rows().filter(|r| g["model"] == r.model && g["phase"] == r.phase);
        check_usage(g, &sums(of), "model and phase group");
    }
    let (s, v) = call("GET", url("?group_by=tenant"), Some(&acme), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["groups"].as_array().map(Vec::len), Some(1));
    check_usage(&v["groups"][0], &sums(acme_rows()), "tenant group");

    // The other tenant sees its own calls, never acme's.
    let (s, v) = call("GET", url("?group_by=tenant,model"), Some(&globex), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["tenant"], "globex");
    check_usage(
        &v["totals"],
        &sums(f.rows.iter().filter(|r| r.tenant == "globex")),
        "globex",
    );
    assert!(v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["tenant"] == "globex"));

    // An empty range: zeros, no groups, a cost of 0, no mean.
    let empty = f.base - chrono::Duration::days(3);
    let q = format!("?from={0}&to={0}&group_by=model", rfc3339(empty));
    let (s, v) = call("GET", url(&q), Some(&acme), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["groups"], json!([]));
    check_usage(&v["totals"], &Sums::default(), "empty range");
    assert_eq!(v["totals"]["cost_usd"].as_f64(), Some(0.0));
    // An offset written with `+` (a space once decoded) still parses.
    let q = format!("?to={}", (f.base - chrono::Duration::days(5)).to_rfc3339());
    assert!(q.ends_with("+00:00"), "{q}");
    let (s, v) = call("GET", url(&q), Some(&acme), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["totals"]["calls"], 0);

    // Bad parameters: a 400 naming each.
    for (q, field) in [
        ("?from=yesterday", "from"),
        ("?to=2026-02-30T00:00:00Z", "to"),
        ("?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z", "from"),
        ("?group_by=workload", "group_by"),
        ("?group_by=model,model", "group_by"),
        ("?group_by=model;DROP%20TABLE%20runs", "group_by"),
        ("?tenant=globex", "tenant"),
    ] {
        let (s, v) = call("GET", url(q), Some(&acme), None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
            (400, Some("bad_request"), Some(field)),
            "{q}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    let (s, _) = call("GET", url(""), None, None).await;
    assert_eq!(s, 401);
    // The route is in the OpenAPI document with its parameters.
    let (_, doc) = call("GET", format!("{base}/v1/openapi.json"), None, None).await;
    let names: Vec<&str> = doc["paths"]["/v1/usage"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["from", "to", "group_by"]);
    t.finish().await;
}

async fn data_version(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT version FROM data_version")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Submits a request as a tenant and waits for its run to complete.
async fn run_to_completion(t: &TestApp, token: &str, message: &str) -> Value {
    let (s, v) = call(
        "POST",
        format!("{}/v1/runs", t.base()),
        Some(token),
        Some(json!({"message": message})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let id: Uuid = v["run_id"].as_str().unwrap().parse().unwrap();
    let run = t
        .wait_run(id, &["completed", "needs_input", "dead_lettered"])
        .await;
    assert_eq!(run.status, "completed", "{:?} {:?}", run.error, run.result);
    run.result.unwrap()
}

/// The report's figures for workload netra-llm equal sums over the ledger
/// rows: the calls made (reuses are not requests; failed calls are errors
/// that cost nothing), the tenant's only; and a later run sees calls
/// recorded after the first, although they moved no data version.
#[tokio::test]
async fn an_optimization_of_netra_llm_reports_the_tenants_ledger_figures() {
    let t = start(None).await;
    load_catalog(&t.pool).await.unwrap();
    let acme = t.tenant("acme").await;
    t.tenant("globex").await;
    let version = data_version(&t.pool).await;
    let mut f = fixture(&t.pool).await;
    assert_eq!(
        data_version(&t.pool).await,
        version,
        "ledger writes move no data version"
    );
    // netra-llm is a known workload of a tenant with calls, not of one
    // without (a reuse is no call).
    let known = netra::store::workloads::ids(&t.pool, "acme", 200)
        .await
        .unwrap();
    assert_eq!(known, ["netra-llm"]);
    assert!(netra::store::workloads::ids(&t.pool, "initech", 200)
        .await
        .unwrap()
        .is_empty());

    let check = |report: &Value, rows: &[Row]| {
        let made: Vec<&Row> = rows
            .iter()
            .filter(|r| r.tenant == "acme" && r.made())
            .collect();
        let m = &report["metrics"][0];
        assert_eq!(m["workload_id"], "netra-llm", "{report}");
        assert_eq!(m["requests"].as_u64(), Some(made.len() as u64), "{m}");
        let errors = made.iter().filter(|r| r.error.is_some()).count();
        assert_eq!(m["errors"].as_u64(), Some(errors as u64));
        let s = sums(made.iter().copied());
        assert_eq!(
            (m["input_tokens"].as_i64(), m["output_tokens"].as_i64()),
            (Some(s.input), Some(s.output))
        );
        // The priced model's recorded costs (failed calls: 0); the
        // self-hosted one has none, so the window's cost is the priced one's.
        close(
            m["window_cost_usd"].as_f64().unwrap(),
            s.priced_cost,
            "window cost",
        );
        for model in m["models"].as_array().unwrap() {
            let of: Vec<&Row> = made
                .iter()
                .copied()
                .filter(|r| model["model"] == r.model)
                .collect();
            let s = sums(of.iter().copied());
            assert_eq!(model["requests"].as_u64(), Some(of.len() as u64), "{model}");
            assert_eq!(model["input_tokens"].as_i64(), Some(s.input));
            assert_eq!(model["output_tokens"].as_i64(), Some(s.output));
            if s.unpriced > 0 {
                assert_eq!(model["cost_basis"], "unknown", "{model}");
            } else {
                assert_eq!(model["cost_basis"], "recorded", "{model}");
                close(
                    model["cost_usd"].as_f64().unwrap(),
                    s.priced_cost,
                    "model cost",
                );
            }
        }
        let mut lat: Vec<f64> = made.iter().map(|r| r.latency_ms).collect();
        lat.sort_by(f64::total_cmp);
        let k = (lat.len() - 1) as f64 * 0.5;
        let p50 = lat[k.floor() as usize]
            + (lat[k.ceil() as usize] - lat[k.floor() as usize]) * k.fract();
        close(m["latency_ms"]["p50"].as_f64().unwrap(), p50, "p50 latency");
    };
    let report = run_to_completion(&t, &acme, "Cut the cost of workload netra-llm").await;
    check(&report, &f.rows);
    assert!(report["markdown"].as_str().unwrap().contains("netra-llm"));

    // Calls recorded since (by direct SQL: nothing bumps the version) are
    // in the next run's figures: netra-llm results are never memoized.
    let version = data_version(&t.pool).await;
    let run = f.view_run;
    for i in 0..5 {
        let r = Row {
            tenant: "acme",
            run_id: run,
            phase: "triage",
            model: "gpt-4o-mini",
            reused_from: None,
            error: None,
            input: 10_000 + i,
            output: 1_000,
            cached: 0,
            latency_ms: 5_000.0,
            cost_usd: Some(0.01),
            at: Utc::now() - chrono::Duration::hours(1),
        };
        insert(&t.pool, &r).await;
        f.rows.push(r);
    }
    assert_eq!(data_version(&t.pool).await, version);
    let report = run_to_completion(&t, &acme, "Cut the cost of workload netra-llm").await;
    check(&report, &f.rows);
    t.finish().await;
}

/// A model whose every chat completion answers the same triage, with
/// `usage` tokens; it counts the calls.
async fn fake_model(prompt_tokens: u32, completion_tokens: u32) -> FakeLlm {
    let answer = json!({
        "intent": "cut the cost of workload netra-llm",
        "category": "optimization",
        "workloads": ["netra-llm"],
        "priorities": ["cost"],
        "constraints": [],
        "time_window": {"days": 0, "span": ""},
    });
    let reply = Reply::json_counted(&answer, prompt_tokens, completion_tokens);
    FakeLlm::start(Vec::new(), reply).await
}

/// The value of one sample line of a Prometheus text.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
        .parse()
        .unwrap()
}

/// With a model: triage's real calls are misses in the run's view and its
/// usage, the process's ledger counters at /metrics, and the requests of
/// netra-llm that the same run's data phase reads.
#[tokio::test]
async fn model_calls_of_a_run_show_in_its_view_in_metrics_and_as_netra_llm() {
    let served = fake_model(1500, 90).await;
    let t = start(Some(served.base_url())).await;
    load_catalog(&t.pool).await.unwrap();
    let acme = t.tenant("acme").await;
    let (s, v) = call(
        "POST",
        format!("{}/v1/runs", t.base()),
        Some(&acme),
        Some(json!({"message": "Cut the cost of workload netra-llm"})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let id: Uuid = v["run_id"].as_str().unwrap().parse().unwrap();
    let run = t
        .wait_run(id, &["completed", "needs_input", "dead_lettered"])
        .await;
    assert_eq!(run.status, "completed", "{:?}", run.error);
    let n = served.requests();
    assert!(n >= 1, "triage called the model");
    let (s, v) = call(
        "GET",
        format!("{}/v1/runs/{id}", t.base()),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let calls = v["model_calls"].as_array().unwrap();
    assert_eq!(calls.len(), n, "{v}");
    assert!(calls
        .iter()
        .all(|c| c["ledger"] == "miss" && c["cost_basis"] == "catalog"));
    // Triage always asks; reporting asks for its prose when the report has
    // recommendations (and keeps the template when the answer is not prose).
    assert!(calls.iter().any(|c| c["phase"] == "triage"), "{v}");
    assert!(calls
        .iter()
        .all(|c| c["phase"] == "triage" || c["phase"] == "reporting"));
    let u = &v["usage"];
    assert_eq!(
        (
            u["calls"].as_u64(),
            u["ledger_hits"].as_u64(),
            u["input_tokens"].as_u64(),
            u["output_tokens"].as_u64()
        ),
        (
            Some(n as u64),
            Some(0),
            Some(1500 * n as u64),
            Some(90 * n as u64)
        ),
        "{u}"
    );
    let priced: f64 = calls.iter().filter_map(|c| c["cost_usd"].as_f64()).sum();
    close(u["cost_usd"].as_f64().unwrap(), priced, "run cost");
    close(
        priced,
        n as f64 * (1500.0 * 0.15 + 90.0 * 0.6) / 1e6,
        "catalog price",
    );
    // The data phase ran after triage's calls (and before reporting's):
    // triage's calls are netra-llm's requests.
    let before_data = calls.iter().filter(|c| c["phase"] == "triage").count() as u64;
    let result = run.result.unwrap();
    // The report states the run's model calls so far, per phase.
    assert_eq!(result["model_usage"][0]["phase"], "triage", "{result}");
    assert_eq!(
        result["model_usage"][0]["calls"].as_u64(),
        Some(before_data),
        "{result}"
    );
    assert!(result["markdown"]
        .as_str()
        .unwrap_or_default()
        .contains("## Model usage"));
    let m = &result["metrics"][0];
    assert_eq!(
        (m["workload_id"].as_str(), m["requests"].as_u64()),
        (Some("netra-llm"), Some(before_data))
    );
    assert_eq!(m["input_tokens"].as_u64(), Some(1500 * before_data));

    let (s, text) = call("GET", format!("{}/metrics", t.base()), None, None).await;
    assert_eq!(s, 200);
    let text = text.as_str().unwrap().to_string();
    let n = n as f64;
    assert_eq!(
        sample(&text, "netra_llm_ledger_lookups_total{result=\"miss\"}"),
        n
    );
    assert_eq!(
        sample(&text, "netra_llm_ledger_lookups_total{result=\"hit\"}"),
        0.0
    );
    assert_eq!(sample(&text, "netra_llm_call_failures_total"), 0.0);
    assert_eq!(
        sample(&text, "netra_llm_tokens_total{kind=\"input\"}"),
        1500.0 * n
    );
    assert_eq!(
        sample(&text, "netra_llm_tokens_total{kind=\"output\"}"),
        90.0 * n
    );
    assert_eq!(
        sample(&text, "netra_llm_rate_limit_wait_seconds_total"),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "netra_llm_model_tokens_total{model=\"gpt-4o-mini\",phase=\"triage\",kind=\"input\"}"
        ),
        1500.0 * before_data as f64
    );
    t.finish().await;
}
