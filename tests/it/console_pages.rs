//! The console's queues, usage and workloads pages, over HTTP as a browser
//! without JavaScript sees them (sign-in form, session cookie): real
//! figures compared with the database and the broker, each tenant seeing
//! only its own data, and the queues page for operators only, with its
//! form that changes a tenant's weight and cap (operators only, audited,
//! bad input refused on the page with nothing changed).

use crate::{common::*, console::Session};
use chrono::{DateTime, Duration, Utc};
use netra::ingest::{self, Format, Target};
use sqlx::PgPool;
use uuid::Uuid;

/// A client that does not follow redirects (the sign-in answers one).
fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// Signs in with a token; answers the `cookie` header to send.
async fn sign_in(base: &str, token: &str) -> String {
    let (url, token) = (format!("{base}/console/login"), token.to_string());
    tokio::task::spawn_blocking(move || {
        let resp = client()
            .post(&url)
            .send_form([("token", token.as_str())])
            .unwrap();
        assert_eq!(resp.status().as_u16(), 303, "sign-in redirects");
        let set = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a session cookie")
            .to_string();
        let pair = set.split(';').next().unwrap().trim().to_string();
        assert!(pair.starts_with("netra_session="), "{set}");
        pair
    })
    .await
    .unwrap()
}

/// GETs a console path with the session cookie: (status, body).
async fn get(base: &str, path: &str, cookie: &str) -> (u16, String) {
    let (url, cookie) = (format!("{base}{path}"), cookie.to_string());
    tokio::task::spawn_blocking(move || {
        let mut resp = client().get(&url).header("cookie", &cookie).call().unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap())
    })
    .await
    .unwrap()
}

/// The text of the element whose attribute `attr` is `key`.
fn cell(html: &str, attr: &str, key: &str) -> Option<String> {
    let needle = format!("{attr}=\"{key}\">");
    let at = html.find(&needle)? + needle.len();
    let end = html[at..].find('<')?;
    Some(html[at..at + end].to_string())
}

/// Runs a run of `tenant` (its ledger rows need one).
async fn a_run(pool: &PgPool, tenant: &str) -> Uuid {
    create_run(
        pool,
        tenant,
        &format!("c-{}", Uuid::new_v4()),
        "hi",
        "triage",
    )
    .await
    .id
}

/// Writes a model call; answers its id.
#[allow(clippy::too_many_arguments)]
async fn call(
    pool: &PgPool,
    tenant: &str,
    run: Uuid,
    phase: &str,
    model: &str,
    tokens: (i32, i32),
    cost: Option<f64>,
    reused_from: Option<i64>,
    at: DateTime<Utc>,
) -> i64 {
    let basis = match (reused_from, cost) {
        (Some(_), _) => "reused",
        (None, Some(_)) => "catalog",
        (None, None) => "self-hosted",
    };
    sqlx::query_scalar(
        "INSERT INTO model_calls (tenant, run_id, phase, attempt, replay, purpose, provider, model,
           prompt_version, request_hash, request, response, reused_from, input_tokens,
           output_tokens, latency_ms, cost_usd, cost_basis, at)
         VALUES ($1, $2, $3, 1, 0, $3, 'openai-compatible', $4, 'test/1', md5(random()::text),
           '{}'::jsonb, '{\"content\": \"{}\"}'::jsonb, $5, $6, $7, 100, $8, $9, $10) RETURNING id",
    )
    .bind(tenant)
    .bind(run)
    .bind(phase)
    .bind(model)
    .bind(reused_from)
    .bind(tokens.0)
    .bind(tokens.1)
    .bind(cost)
    .bind(basis)
    .bind(at)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn queues_page_is_for_operators_and_shows_depths_leases_and_retries() {
    let t = TestApp::start().await;
    let base = t.base();
    let op = sign_in(&base, &t.operator("ops").await).await;
    let tenant = sign_in(&base, &t.tenant("acme").await).await;
    let ns = t.config.namespace.clone();
    let dlq = format!("{ns}.dlq.data");
    for i in 0..3 {
        t.publish_raw(&dlq, format!("{{\"n\":{i}}}").into_bytes())
            .await;
    }
    // One run holding a live lease at optimization, one waiting to retry
    // its data phase in an hour (neither is touched by the engine meanwhile).
    let leased = a_run(&t.pool, "acme").await;
    let retrying = a_run(&t.pool, "acme").await;
    sqlx::query(
        "UPDATE runs SET status = 'running', phase = 'optimization', lease_owner = 'elsewhere',
           lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(leased)
    .execute(&t.pool)
    .await
    .unwrap();
    let next: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE runs SET status = 'retrying', phase = 'data', next_attempt_at = now() + interval '1 hour'
         WHERE id = $1 RETURNING next_attempt_at",
    )
    .bind(retrying)
    .fetch_one(&t.pool)
    .await
    .unwrap();

    let (status, html) = get(&base, "/console/queues", &tenant).await;
    assert_eq!(status, 404, "a tenant has no queues page: {html}");
    assert!(!html.contains(&dlq));

    let (status, html) = get(&base, "/console/queues", &op).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains("broker-error"), "{html}");
    assert_eq!(t.queue_depth(&dlq).await, 3);
    assert_eq!(
        cell(&html, "data-ready", &dlq).as_deref(),
        Some("3"),
        "{html}"
    );
    assert_eq!(cell(&html, "data-consumers", &dlq).as_deref(), Some("0"));
    // Every phase queue is consumed by this worker.
    let triage = format!("{ns}.phase.triage");
    let consumers: u32 = cell(&html, "data-consumers", &triage)
        .expect("triage's queue")
        .parse()
        .unwrap();
    assert!(consumers >= 1, "{html}");
    let (db_leased, db_retrying): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'running' AND phase = 'optimization' AND lease_expires_at > now()),
                count(*) FILTER (WHERE status = 'retrying' AND phase = 'data') FROM runs",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!((db_leased, db_retrying), (1, 1));
    assert_eq!(
        cell(&html, "data-leased", "optimization").as_deref(),
        Some("1")
    );
    assert_eq!(cell(&html, "data-retrying", "data").as_deref(), Some("1"));
    assert!(html.contains("in progress (leased, from Postgres)"));
    assert!(
        html.contains(&next.format("%Y-%m-%d %H:%M:%S").to_string()),
        "the earliest retry is shown"
    );
    t.finish().await;
}

/// The stored weight and cap of a tenant.
async fn stored_fair(pool: &PgPool, name: &str) -> (Option<i32>, Option<i32>) {
    sqlx::query_as("SELECT weight, max_in_flight FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The audit entries of `set_tenant` on a tenant, newest first.
async fn set_tenant_entries(pool: &PgPool, tenant: &str) -> Vec<netra::store::audit::AuditRow> {
    let filter = netra::store::audit::AuditFilter {
        tenant: Some(tenant.into()),
        limit: 100,
        ..Default::default()
    };
    netra::store::audit::list(pool, &filter)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "set_tenant")
        .collect()
}

#[tokio::test]
async fn operators_change_a_tenants_weight_and_cap_on_the_queues_page() {
    let (mut config, db) = test_config().await;
    config.fair.max_in_flight = Some(4);
    let t = TestApp::start_with(config, db, None).await;
    let base = t.base();
    let acme_token = t.tenant("acme").await;
    t.tenant("beta").await;
    let ops = Session::sign_in(&base, &t.operator("ops").await).await;
    let form = "/console/tenants/acme/fair";

    let (s, page) = ops.get("/console/queues").await;
    assert_eq!(s, 200);
    assert!(
        page.contains(r#"action="/console/tenants/acme/fair""#),
        "{page}"
    );
    assert!(page.contains(r#"data-cap="acme">4 <span class="muted">(default)"#));

    // Weight and cap at once; "none" lifts the configured cap.
    let (s, loc, body) = ops
        .post(
            form,
            &[
                ("weight", "3"),
                ("max_in_flight", "none"),
                ("reason", "acme pays for more"),
            ],
        )
        .await;
    assert_eq!(
        (s, loc.as_str()),
        (303, "/console/queues#tenants"),
        "{body}"
    );
    assert_eq!(stored_fair(&t.pool, "acme").await, (Some(3), Some(0)));
    let entries = set_tenant_entries(&t.pool, "acme").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, "operator:ops");
    assert_eq!(entries[0].reason, "acme pays for more");
    assert_eq!(entries[0].target, "tenant acme");
    assert_eq!(
        entries[0].detail,
        serde_json::json!({"weight": {"from": null, "to": 3}, "max_in_flight": {"from": null, "to": "none"}})
    );
    let (_, page) = ops.get("/console/queues").await;
    assert!(page.contains(r#"data-weight="acme">3</td>"#), "{page}");
    assert!(page.contains(r#"data-cap="acme">none</td>"#), "{page}");
    assert!(page.contains(r#"data-cap="beta">4 <span class="muted">(default)"#));
    // An empty field keeps its value; "default" clears it.
    let (s, _, body) = ops
        .post(
            form,
            &[
                ("weight", ""),
                ("max_in_flight", "12"),
                ("reason", "a cap after all"),
            ],
        )
        .await;
    assert_eq!(s, 303, "{body}");
    assert_eq!(stored_fair(&t.pool, "acme").await, (Some(3), Some(12)));
    let (s, _, body) = ops
        .post(
            form,
            &[("max_in_flight", "default"), ("reason", "the usual cap")],
        )
        .await;
    assert_eq!(s, 303, "{body}");
    assert_eq!(stored_fair(&t.pool, "acme").await, (Some(3), None));
    assert_eq!(set_tenant_entries(&t.pool, "acme").await.len(), 3);

    // Bad input: the page says what is wrong, and nothing changes.
    for (fields, status, says) in [
        (
            vec![("weight", "abc"), ("reason", "r")],
            422,
            "weight: must be an integer from 1 to 1000",
        ),
        (
            vec![("weight", "0"), ("reason", "r")],
            422,
            "weight: must be",
        ),
        (
            vec![("weight", "1001"), ("reason", "r")],
            422,
            "weight: must be",
        ),
        (
            vec![("weight", "2\0"), ("reason", "r")],
            422,
            "weight: must be",
        ),
        (
            vec![("weight", "none"), ("reason", "r")],
            422,
            "cannot be none",
        ),
        (
            vec![("max_in_flight", "0"), ("reason", "r")],
            422,
            "max_in_flight: must be",
        ),
        (
            vec![("max_in_flight", "-1"), ("reason", "r")],
            422,
            "max_in_flight: must be",
        ),
        (
            vec![("max_in_flight", "99999999999"), ("reason", "r")],
            422,
            "max_in_flight: must be",
        ),
        (
            vec![("max_in_flight", "unlimited"), ("reason", "r")],
            422,
            "none (no cap)",
        ),
        (vec![("weight", "2")], 422, "a reason is required"),
        (
            vec![("weight", "2"), ("reason", "  ")],
            422,
            "a reason is required",
        ),
        (
            vec![("weight", "2"), ("reason", "a\0b")],
            422,
            "control character",
        ),
        (
            vec![("weight", ""), ("max_in_flight", ""), ("reason", "r")],
            422,
            "nothing to change",
        ),
        (
            vec![("weight", "2"), ("reason", "r"), ("csrf", "forged")],
            403,
            "form token",
        ),
    ] {
        let (s, _, body) = ops.post(form, &fields).await;
        assert_eq!(s, status, "{fields:?}: {body}");
        assert!(
            body.contains(says),
            "{fields:?}: {says:?} missing from {body}"
        );
        assert!(body.contains(r#"role="alert""#), "{fields:?}: {body}");
    }
    for path in ["/console/tenants/ghost/fair", "/console/tenants/a%00b/fair"] {
        let (s, _, body) = ops.post(path, &[("weight", "2"), ("reason", "r")]).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert!(body.contains("No such tenant"), "{path}: {body}");
    }
    assert_eq!(stored_fair(&t.pool, "acme").await, (Some(3), None));
    assert_eq!(set_tenant_entries(&t.pool, "acme").await.len(), 3);

    // A tenant's session cannot use it, not even on itself: 404, as the
    // queues page.
    let acme = Session::sign_in(&base, &acme_token).await;
    let (s, _, body) = acme
        .post(form, &[("weight", "1000"), ("reason", "more for me")])
        .await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(stored_fair(&t.pool, "acme").await, (Some(3), None));
    assert_eq!(set_tenant_entries(&t.pool, "acme").await.len(), 3);
    t.finish().await;
}

#[tokio::test]
async fn usage_page_charts_the_ledger_within_the_tenants_scope() {
    let t = TestApp::start().await;
    let base = t.base();
    let op = sign_in(&base, &t.operator("ops").await).await;
    let acme = sign_in(&base, &t.tenant("acme").await).await;
    t.tenant("globex").await;
    let (ra, rg) = (a_run(&t.pool, "acme").await, a_run(&t.pool, "globex").await);
    let now = Utc::now();
    let first = call(
        &t.pool,
        "acme",
        ra,
        "triage",
        "gpt-4o",
        (1000, 200),
        Some(0.25),
        None,
        now - Duration::hours(1),
    )
    .await;
    // A reuse of it: a ledger hit, no call.
    call(
        &t.pool,
        "acme",
        ra,
        "triage",
        "gpt-4o",
        (0, 0),
        None,
        Some(first),
        now - Duration::minutes(30),
    )
    .await;
    call(
        &t.pool,
        "acme",
        ra,
        "reporting",
        "gpt-4o-mini",
        (300, 50),
        Some(0.5),
        None,
        now - Duration::hours(30),
    )
    .await;
    call(
        &t.pool,
        "globex",
        rg,
        "triage",
        "globex-private-model",
        (7, 7),
        Some(4.0),
        None,
        now - Duration::hours(2),
    )
    .await;
    // Outside the 7 days.
    call(
        &t.pool,
        "acme",
        ra,
        "triage",
        "gpt-4o",
        (9, 9),
        Some(8.0),
        None,
        now - Duration::days(8),
    )
    .await;

    let (status, html) = get(&base, "/console/usage", &acme).await;
    assert_eq!(status, 200, "{html}");
    let (calls, input, output, cost): (i64, i64, i64, f64) = sqlx::query_as(
        "SELECT count(*), sum(input_tokens)::int8, sum(output_tokens)::int8, sum(cost_usd) FROM model_calls
         WHERE tenant = 'acme' AND reused_from IS NULL AND at >= now() - interval '7 days'",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!((calls, input, output), (2, 1300, 250));
    assert_eq!(cell(&html, "id", "total-calls"), Some(calls.to_string()));
    assert_eq!(cell(&html, "id", "total-input"), Some(input.to_string()));
    assert_eq!(cell(&html, "id", "total-output"), Some(output.to_string()));
    assert_eq!(cell(&html, "id", "total-cost"), Some(format!("${cost:.6}")));
    assert_eq!(
        cell(&html, "data-calls", "model:gpt-4o").as_deref(),
        Some("1")
    );
    assert_eq!(
        cell(&html, "data-cost", "model:gpt-4o-mini").as_deref(),
        Some("0.500000")
    );
    assert_eq!(
        cell(&html, "data-input", "phase:triage").as_deref(),
        Some("1000")
    );
    assert!(html.matches("<svg").count() >= 6, "series and bars");
    assert!(!html.contains("globex"), "another tenant's calls: {html}");
    assert!(
        !html.contains("by-tenant"),
        "no tenant breakdown for a tenant"
    );

    // Two days are charted per hour; one day leaves the 30-hour-old call out.
    let (_, html) = get(&base, "/console/usage?days=1", &acme).await;
    assert_eq!(cell(&html, "id", "total-calls").as_deref(), Some("1"));
    assert!(html.contains("Calls per hour"));
    let (_, html) = get(&base, "/console/usage?days=30", &acme).await;
    assert_eq!(cell(&html, "id", "total-calls").as_deref(), Some("3"));
    assert!(html.contains("Calls per day"));
    for bad in ["0", "91", "abc"] {
        let (status, _) = get(&base, &format!("/console/usage?days={bad}"), &acme).await;
        assert_eq!(status, 400, "days={bad}");
    }

    let (status, html) = get(&base, "/console/usage", &op).await;
    assert_eq!(status, 200);
    assert_eq!(cell(&html, "id", "total-calls").as_deref(), Some("3"));
    assert_eq!(
        cell(&html, "data-calls", "tenant:globex").as_deref(),
        Some("1")
    );
    assert_eq!(
        cell(&html, "data-cost", "model:globex-private-model").as_deref(),
        Some("4.000000")
    );
    t.finish().await;
}

fn target<'a>(tenant: &'a str, workload: &'a str, max_errors: usize) -> Target<'a> {
    Target {
        tenant,
        workload,
        format: Format::Csv,
        model: None,
        max_errors,
        prices: None,
    }
}

async fn load(pool: &PgPool, t: &Target<'_>, text: &str) -> ingest::Report {
    ingest::ingest(pool, t, std::io::BufReader::new(text.as_bytes()), |_| {})
        .await
        .unwrap()
}

#[tokio::test]
async fn workloads_page_shows_telemetry_and_ingests_within_the_tenants_scope() {
    let t = TestApp::start().await;
    let base = t.base();
    let op = sign_in(&base, &t.operator("ops").await).await;
    let acme = sign_in(&base, &t.tenant("acme").await).await;
    let globex = sign_in(&base, &t.tenant("globex").await).await;
    let file = "timestamp,model,input_tokens,output_tokens,cost_usd\n\
                2024-03-01T10:00:00Z,gpt-4o,100,10,\n\
                2024-03-01T11:00:00Z,gpt-4o-mini,200,20,\n\
                2024-03-02T09:30:00Z,in-house-7b,300,30,0.001\n";
    let chat = target("acme", "acme-chat", 0);
    let first = load(&t.pool, &chat, file).await;
    assert_eq!((first.inserted, first.already_present), (3, 0));
    let again = load(&t.pool, &chat, file).await;
    assert_eq!((again.inserted, again.already_present), (0, 3));
    // Too many bad rows: aborted, nothing kept, still recorded.
    let bad = format!("{file}2024-03-03T00:00:00Z,gpt-4o,x,1,\n");
    let aborted = load(&t.pool, &chat, &bad).await;
    assert!(aborted.aborted);
    load(
        &t.pool,
        &target("globex", "globex-secret-wl", 0),
        "timestamp,model,input_tokens,output_tokens\n2024-03-01T10:00:00Z,gpt-4o,1,1\n",
    )
    .await;

    // The history, as recorded.
    let rows: Vec<(i64, i64, i64, bool)> = sqlx::query_as(
        "SELECT rows_inserted, rows_duplicate, errors, aborted FROM ingests
         WHERE tenant = 'acme' AND workload_id = 'acme-chat' ORDER BY id",
    )
    .fetch_all(&t.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![(3, 0, 0, false), (0, 3, 0, false), (0, 0, 1, true)]
    );

    let (status, html) = get(&base, "/console/workloads", &acme).await;
    assert_eq!(status, 200, "{html}");
    let (n, models): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT model) FROM llm_requests WHERE tenant = 'acme' AND workload_id = 'acme-chat'",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!((n, models), (3, 3));
    assert_eq!(
        cell(&html, "data-rows", "acme/acme-chat"),
        Some(n.to_string())
    );
    assert_eq!(
        cell(&html, "data-models", "acme/acme-chat"),
        Some(models.to_string())
    );
    assert!(html.contains("2024-03-01 10:00:00") && html.contains("2024-03-02 09:30:00"));
    assert_eq!(html.matches("data-ingest=").count(), 3, "{html}");
    assert!(html.contains("aborted: too many bad rows"));
    assert!(!html.contains("globex-secret-wl"), "{html}");

    let (_, html) = get(&base, "/console/workloads", &globex).await;
    assert!(html.contains("globex-secret-wl") && !html.contains("acme-chat"));
    assert_eq!(html.matches("data-ingest=").count(), 1);

    let (status, html) = get(&base, "/console/workloads", &op).await;
    assert_eq!(status, 200);
    assert_eq!(
        cell(&html, "data-rows", "acme/acme-chat").as_deref(),
        Some("3")
    );
    assert_eq!(
        cell(&html, "data-rows", "globex/globex-secret-wl").as_deref(),
        Some("1")
    );
    assert!(html.contains("<th>tenant</th>"));
    assert_eq!(html.matches("data-ingest=").count(), 4);
    t.finish().await;
}
