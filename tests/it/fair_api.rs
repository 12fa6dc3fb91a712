//! The operator surface of fair admission: `PATCH /v1/tenants/{name}`
//! (operators only, audited with its reason), `GET /v1/tenants` and
//! `GET /v1/tenants/{name}` with counts that match the runs in the
//! database, the per-tenant gauges of `/metrics`, the tenants' table of the
//! console's queues page, and `netra tenant set`; a tenant's "no cap"
//! (`none`) through all of them, and lifting a configured default cap.
//!
//! The apps here run no scheduler (but the one that shows the cap lifted,
//! which consumes no phase): the runs a test creates in the store stay as
//! it made them (in flight, or waiting), so the counts are exact.

use crate::{common::*, console::Session};
use netra::{
    app::StartOptions,
    pipeline::service::ServeOptions,
    store::audit::{self, AuditFilter, AuditRow},
};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// A netra without the scheduler (nothing releases or sweeps runs).
async fn start() -> TestApp {
    start_capped(None).await
}

/// [`start`] with a configured default cap (`NETRA_FAIR_MAX_IN_FLIGHT`).
async fn start_capped(cap: Option<u32>) -> TestApp {
    let (mut config, db) = test_config().await;
    config.fair.max_in_flight = cap;
    let opts = StartOptions {
        serve: ServeOptions {
            scheduler: false,
            ..ServeOptions::default()
        },
        ..StartOptions::default()
    };
    TestApp::start_opts(config, db, opts).await
}

/// A call to the JSON API: (status, body).
async fn api(method: Method, url: String, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The stored weight and cap of a tenant.
async fn stored(pool: &PgPool, name: &str) -> (Option<i32>, Option<i32>) {
    sqlx::query_as("SELECT weight, max_in_flight FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The audit entries of `set_tenant` on a tenant, newest first.
async fn set_entries(pool: &PgPool, tenant: &str) -> Vec<AuditRow> {
    let filter = AuditFilter {
        tenant: Some(tenant.into()),
        limit: 100,
        ..AuditFilter::default()
    };
    audit::list(pool, &filter)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "set_tenant")
        .collect()
}

/// A run of `tenant` in flight (admitted, not started); answers its id.
async fn in_flight(pool: &PgPool, tenant: &str) -> Uuid {
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

/// A run of `tenant` waiting to be admitted.
async fn waiting(pool: &PgPool, tenant: &str) -> Uuid {
    let id = in_flight(pool, tenant).await;
    sqlx::query("UPDATE runs SET wait_reason = 'tenant over its share' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn operators_set_a_tenants_weight_and_cap_with_a_reason() {
    let t = start().await;
    let base = t.base();
    let acme = t.tenant("acme").await;
    t.tenant("beta").await;
    let ops = t.operator("ops").await;
    let url = format!("{base}/v1/tenants/acme");

    let (s, v) = api(
        Method::PATCH,
        url.clone(),
        &ops,
        Some(json!({"weight": 3, "max_in_flight": 50, "reason": "acme pays for more"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"name": "acme", "weight": 3, "weight_is_default": false, "max_in_flight": 50,
               "max_in_flight_is_default": false, "requests_per_min": "none",
               "requests_per_min_is_default": true, "in_flight": 0, "waiting": 0})
    );
    assert_eq!(stored(&t.pool, "acme").await, (Some(3), Some(50)));
    let entries = set_entries(&t.pool, "acme").await;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.actor, "operator:ops");
    assert_eq!(e.reason, "acme pays for more");
    assert_eq!(e.target, "tenant acme");
    assert_eq!(
        e.detail,
        json!({"weight": {"from": null, "to": 3}, "max_in_flight": {"from": null, "to": 50}})
    );

    // null clears the cap to the default (none configured); the weight stays.
    let (s, v) = api(
        Method::PATCH,
        url.clone(),
        &ops,
        Some(json!({"max_in_flight": null, "reason": "no cap after all"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["weight"], 3);
    assert_eq!(v["max_in_flight"], "none", "no cap: none is configured");
    assert_eq!(v["max_in_flight_is_default"], true);
    assert_eq!(stored(&t.pool, "acme").await, (Some(3), None));
    let entries = set_entries(&t.pool, "acme").await;
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0].detail,
        json!({"max_in_flight": {"from": 50, "to": null}})
    );

    // A tenant's token may not: 403, nothing changed.
    let (s, v) = api(
        Method::PATCH,
        url.clone(),
        &acme,
        Some(json!({"weight": 1000, "reason": "more for me"})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    // Bad values and a missing reason are 422 naming the field.
    for (body, field) in [
        (json!({"weight": 0, "reason": "r"}), "weight"),
        (json!({"weight": 1001, "reason": "r"}), "weight"),
        (json!({"weight": "2", "reason": "r"}), "weight"),
        (json!({"max_in_flight": 0, "reason": "r"}), "max_in_flight"),
        (
            json!({"max_in_flight": "unlimited", "reason": "r"}),
            "max_in_flight",
        ),
        (json!({"weight": "none", "reason": "r"}), "weight"),
        (json!({"weight": 2}), "reason"),
        (json!({"weight": 2, "reason": " "}), "reason"),
        (json!({"reason": "nothing"}), "body"),
    ] {
        let (s, v) = api(Method::PATCH, url.clone(), &ops, Some(body.clone())).await;
        assert_eq!(s, 422, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    assert_eq!(stored(&t.pool, "acme").await, (Some(3), None));
    assert_eq!(set_entries(&t.pool, "acme").await.len(), 2);
    // The request rate: a number, then none (no limit), and 0 is refused.
    for (rate, shown) in [(json!(120), json!(120)), (json!("none"), json!("none"))] {
        let (s, v) = api(
            Method::PATCH,
            url.clone(),
            &ops,
            Some(json!({"requests_per_min": rate, "reason": "rate"})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["requests_per_min"], shown, "{v}");
        assert_eq!(v["requests_per_min_is_default"], false, "{v}");
    }
    let (s, v) = api(
        Method::PATCH,
        url.clone(),
        &ops,
        Some(json!({"requests_per_min": 0, "reason": "r"})),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["field"], "requests_per_min", "{v}");
    let rate: Option<i32> =
        sqlx::query_scalar("SELECT requests_per_min FROM tenants WHERE name = 'acme'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(rate, Some(0), "stored as 0: no limit");
    let entries = set_entries(&t.pool, "acme").await;
    assert_eq!(entries.len(), 4);
    assert_eq!(
        entries[0].detail,
        json!({"requests_per_min": {"from": 120, "to": "none"}})
    );
    // An unknown tenant is 404.
    let (s, v) = api(
        Method::PATCH,
        format!("{base}/v1/tenants/ghost"),
        &ops,
        Some(json!({"weight": 2, "reason": "r"})),
    )
    .await;
    assert_eq!(s, 404, "{v}");

    // A tenant reads its own, not another's; its list is itself.
    let (s, v) = api(Method::GET, url.clone(), &acme, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["weight"], 3);
    let (s, _) = api(Method::GET, format!("{base}/v1/tenants/beta"), &acme, None).await;
    assert_eq!(s, 404);
    let (s, v) = api(Method::GET, format!("{base}/v1/tenants"), &acme, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["tenants"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["tenants"][0]["name"], "acme");
    // The operator reads both.
    let (s, v) = api(Method::GET, format!("{base}/v1/tenants/beta"), &ops, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["weight"], 1);
    assert_eq!(v["weight_is_default"], true);
    t.finish().await;
}

#[tokio::test]
async fn counts_match_the_runs_in_the_api_the_metrics_and_the_console() {
    let t = start().await;
    let base = t.base();
    let acme = t.tenant("acme").await;
    t.tenant("idle").await;
    let ops = t.operator("ops").await;
    // acme: two in flight, one waiting; "default" (no tenant row, the
    // deployment's tenant of AMQP requests without user_id): one in flight.
    in_flight(&t.pool, "acme").await;
    in_flight(&t.pool, "acme").await;
    waiting(&t.pool, "acme").await;
    in_flight(&t.pool, "default").await;
    // A finished run counts nowhere.
    let done = in_flight(&t.pool, "acme").await;
    sqlx::query("UPDATE runs SET status = 'completed', finished_at = now() WHERE id = $1")
        .bind(done)
        .execute(&t.pool)
        .await
        .unwrap();

    let (s, v) = api(Method::GET, format!("{base}/v1/tenants"), &ops, None).await;
    assert_eq!(s, 200, "{v}");
    let list = v["tenants"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme", "default", "idle"], "{v}");
    assert_eq!(
        (list[0]["in_flight"].clone(), list[0]["waiting"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(
        list[1],
        json!({"name": "default", "weight": 1, "weight_is_default": true, "max_in_flight": "none",
               "max_in_flight_is_default": true, "requests_per_min": "none",
               "requests_per_min_is_default": true, "in_flight": 1, "waiting": 0})
    );
    assert_eq!(
        (list[2]["in_flight"].clone(), list[2]["waiting"].clone()),
        (json!(0), json!(0))
    );
    // The operator reads the default tenant by name; a tenant's own view
    // has the same counts.
    let (s, v) = api(
        Method::GET,
        format!("{base}/v1/tenants/default"),
        &ops,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["in_flight"], 1);
    let (_, v) = api(Method::GET, format!("{base}/v1/tenants/acme"), &acme, None).await;
    assert_eq!(
        (v["in_flight"].clone(), v["waiting"].clone()),
        (json!(2), json!(1))
    );

    // The gauges.
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "netra_tenant_runs_waiting{tenant=\"acme\"} 1",
        "netra_tenant_runs_in_flight{tenant=\"acme\"} 2",
        "netra_tenant_runs_in_flight{tenant=\"default\"} 1",
        "netra_tenant_runs_waiting{tenant=\"default\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert!(!text.contains("tenant=\"idle\""), "no runs, no series");

    // The console's queues page (operators).
    let (s, _) = api(
        Method::PATCH,
        format!("{base}/v1/tenants/acme"),
        &ops,
        Some(json!({"weight": 4, "max_in_flight": 9, "reason": "console check"})),
    )
    .await;
    assert_eq!(s, 200);
    let session = Session::sign_in(&base, &ops).await;
    let (s, page) = session.get("/console/queues").await;
    assert_eq!(s, 200);
    for cell in [
        r#"data-weight="acme">4</td>"#,
        r#"data-cap="acme">9</td>"#,
        r#"data-in-flight="acme">2<"#,
        r#"data-waiting="acme">1<"#,
        r#"data-in-flight="default">1<"#,
        r#"data-cap="default">none <span class="muted">(default)"#,
        r#"data-weight="idle">1 <span class="muted">(default)"#,
    ] {
        assert!(page.contains(cell), "{cell} missing from the queues page");
    }
    t.finish().await;
}

/// Runs `netra ARGS` against a test database: (success, stdout, stderr).
async fn netra(db_url: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_netra"));
    cmd.args(args)
        .env("NETRA_DATABASE_URL", db_url)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn the_cli_sets_a_tenant_audited_and_refuses_an_unknown_one() {
    let (config, db, pool) = fresh_db().await;
    let url = database_url(&config);
    netra::store::tenants::create(&pool, "acme", None, &said())
        .await
        .unwrap();
    let defaults = [("NETRA_FAIR_WEIGHT", "4"), ("NETRA_FAIR_MAX_IN_FLIGHT", "")];

    let (ok, out, err) = netra(
        &url,
        &[
            "tenant",
            "set",
            "acme",
            "--weight",
            "5",
            "--max-in-flight",
            "7",
            "--reason",
            "a bigger share for acme",
        ],
        &defaults,
    )
    .await;
    assert!(ok, "{out} {err}");
    assert_eq!(out.trim(), "tenant acme: weight 5, max in flight 7");
    assert_eq!(stored(&pool, "acme").await, (Some(5), Some(7)));
    let entries = set_entries(&pool, "acme").await;
    assert_eq!(entries.len(), 1);
    assert!(entries[0].actor.starts_with("cli:"), "{:?}", entries[0]);
    assert_eq!(entries[0].reason, "a bigger share for acme");
    assert_eq!(
        entries[0].detail,
        json!({"weight": {"from": null, "to": 5}, "max_in_flight": {"from": null, "to": 7}})
    );

    // Back to the defaults, which the output names.
    let (ok, out, err) = netra(
        &url,
        &[
            "tenant",
            "set",
            "acme",
            "--default-weight",
            "--no-max-in-flight",
            "--reason",
            "back to normal",
        ],
        &defaults,
    )
    .await;
    assert!(ok, "{out} {err}");
    assert_eq!(
        out.trim(),
        "tenant acme: weight 4 (default: NETRA_FAIR_WEIGHT), no cap on runs in flight (default: NETRA_FAIR_MAX_IN_FLIGHT is unset)"
    );
    assert_eq!(stored(&pool, "acme").await, (None, None));
    assert_eq!(set_entries(&pool, "acme").await.len(), 2);
    let (ok, out, err) = netra(
        &url,
        &["tenant", "set", "acme", "--weight", "2", "--reason", "r"],
        &[("NETRA_FAIR_MAX_IN_FLIGHT", "20")],
    )
    .await;
    assert!(ok, "{out} {err}");
    assert_eq!(
        out.trim(),
        "tenant acme: weight 2, max in flight 20 (default: NETRA_FAIR_MAX_IN_FLIGHT)"
    );

    // An unknown tenant fails, naming it, and changes nothing.
    let (ok, _, err) = netra(
        &url,
        &["tenant", "set", "ghost", "--weight", "2", "--reason", "r"],
        &defaults,
    )
    .await;
    assert!(!ok);
    assert!(err.contains("no tenant named ghost"), "{err}");
    // Bad values, a missing change, a missing reason.
    for (args, says) in [
        (vec!["--weight", "0", "--reason", "r"], "--weight"),
        (vec!["--weight", "1001", "--reason", "r"], "--weight"),
        (
            vec!["--max-in-flight", "0", "--reason", "r"],
            "--max-in-flight",
        ),
        (
            vec!["--weight", "2", "--default-weight", "--reason", "r"],
            "cannot be used with",
        ),
        (vec!["--reason", "r"], "required"),
        (
            vec!["--weight", "2", "--reason", " "],
            "a reason is required",
        ),
    ] {
        let mut all = vec!["tenant", "set", "acme"];
        all.extend(args.iter());
        let (ok, _, err) = netra(&url, &all, &defaults).await;
        assert!(!ok, "{all:?}");
        assert!(err.contains(says), "{all:?}: {err}");
    }
    assert_eq!(stored(&pool, "acme").await, (Some(2), None));
    assert_eq!(set_entries(&pool, "acme").await.len(), 3);
    pool.close().await;
    cleanup(&config, &db).await;
}

#[tokio::test]
async fn none_lifts_the_configured_cap_and_round_trips_through_patch_and_get() {
    let t = start_capped(Some(2)).await;
    let base = t.base();
    let acme = t.tenant("acme").await;
    t.tenant("beta").await;
    let ops = t.operator("ops").await;
    let url = format!("{base}/v1/tenants/acme");
    let cap = |v: &Value| {
        (
            v["max_in_flight"].clone(),
            v["max_in_flight_is_default"].clone(),
        )
    };

    // The configured cap applies to every tenant without one of its own.
    let (s, v) = api(Method::GET, format!("{base}/v1/tenants"), &ops, None).await;
    assert_eq!(s, 200, "{v}");
    for x in v["tenants"].as_array().unwrap() {
        assert_eq!(cap(x), (json!(2), json!(true)), "{x}");
    }

    // "none": no cap of its own, stored as 0 and audited as "none".
    let (s, v) = api(
        Method::PATCH,
        url.clone(),
        &ops,
        Some(json!({"max_in_flight": "none", "reason": "acme is exempt"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(cap(&v), (json!("none"), json!(false)), "{v}");
    assert_eq!(stored(&t.pool, "acme").await, (None, Some(0)));
    let entries = set_entries(&t.pool, "acme").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, "operator:ops");
    assert_eq!(
        entries[0].detail,
        json!({"max_in_flight": {"from": null, "to": "none"}})
    );
    // GET shows it, to the operator and to the tenant; the other tenant
    // keeps the configured cap.
    for token in [&ops, &acme] {
        let (s, v) = api(Method::GET, url.clone(), token, None).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(cap(&v), (json!("none"), json!(false)), "{v}");
    }
    let (_, v) = api(Method::GET, format!("{base}/v1/tenants/beta"), &ops, None).await;
    assert_eq!(cap(&v), (json!(2), json!(true)), "{v}");

    // "default", like null, goes back to the configured cap.
    let (s, v) = api(
        Method::PATCH,
        url.clone(),
        &ops,
        Some(json!({"max_in_flight": "default", "weight": "default", "reason": "exemption over"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(cap(&v), (json!(2), json!(true)), "{v}");
    assert_eq!(stored(&t.pool, "acme").await, (None, None));
    assert_eq!(
        set_entries(&t.pool, "acme").await[0].detail,
        json!({"weight": {"from": null, "to": null}, "max_in_flight": {"from": "none", "to": null}})
    );

    // A name Postgres cannot take (NUL) is no tenant, not an error.
    let (s, v) = api(
        Method::PATCH,
        format!("{base}/v1/tenants/a%00b"),
        &ops,
        Some(json!({"weight": 2, "reason": "r"})),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = api(Method::GET, format!("{base}/v1/tenants/a%00b"), &ops, None).await;
    assert_eq!(s, 404, "{v}");
    t.finish().await;
}

/// A tenant's runs (in flight, waiting) as `GET /v1/tenants/{name}` counts them.
async fn counts_of(base: &str, ops: &str, tenant: &str) -> (i64, i64) {
    let (s, v) = api(
        Method::GET,
        format!("{base}/v1/tenants/{tenant}"),
        ops,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    (
        v["in_flight"].as_i64().unwrap(),
        v["waiting"].as_i64().unwrap(),
    )
}

/// Waits, with a bounded deadline, until a tenant's counts are `want`.
async fn wait_counts(base: &str, ops: &str, tenant: &str, want: (i64, i64)) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = counts_of(base, ops, tenant).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{tenant}: (in flight, waiting) {got:?}, expected {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_tenant_with_no_cap_runs_past_the_default_cap_while_another_stays_capped() {
    // Intake and the scheduler run, no phase is consumed: an admitted run
    // stays in flight, so the counts only grow by admission.
    let (mut config, db) = test_config().await;
    config.fair.max_in_flight = Some(2);
    config.rate_limit_per_min = 0;
    let opts = StartOptions {
        serve: ServeOptions {
            phases: Some(Vec::new()),
            ..ServeOptions::default()
        },
        ..StartOptions::default()
    };
    let t = TestApp::start_opts(config, db, opts).await;
    let base = t.base();
    let acme = t.tenant("acme").await;
    let bravo = t.tenant("bravo").await;
    let ops = t.operator("ops").await;
    for token in [&acme, &bravo] {
        for _ in 0..5 {
            let (s, v) = api(
                Method::POST,
                format!("{base}/v1/runs"),
                token,
                Some(json!({"message": "What is prompt caching?"})),
            )
            .await;
            assert_eq!(s, 202, "{v}");
        }
    }
    // Both at the configured cap of 2; the rest wait.
    wait_counts(&base, &ops, "acme", (2, 3)).await;
    wait_counts(&base, &ops, "bravo", (2, 3)).await;

    // acme without a cap: the scheduler releases its waiting runs past the
    // default cap; bravo stays at it.
    let (s, v) = api(
        Method::PATCH,
        format!("{base}/v1/tenants/acme"),
        &ops,
        Some(json!({"max_in_flight": "none", "reason": "acme is exempt from the default cap"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    wait_counts(&base, &ops, "acme", (5, 0)).await;
    assert_eq!(counts_of(&base, &ops, "bravo").await, (2, 3));
    let (in_flight, released): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE wait_reason IS NULL AND finished_at IS NULL), \
                count(*) FILTER (WHERE EXISTS (SELECT 1 FROM run_history h \
                    WHERE h.run_id = runs.id AND h.detail ? 'released')) \
         FROM runs WHERE tenant = 'acme'",
    )
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!((in_flight, released), (5, 3), "released by the scheduler");
    // New requests of acme are admitted at intake, still past the cap.
    let (s, v) = api(
        Method::POST,
        format!("{base}/v1/runs"),
        &acme,
        Some(json!({"message": "And batching?"})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    wait_counts(&base, &ops, "acme", (6, 0)).await;
    assert_eq!(counts_of(&base, &ops, "bravo").await, (2, 3));

    // Only the cap held bravo's: lifted, they are released too.
    let (s, v) = api(
        Method::PATCH,
        format!("{base}/v1/tenants/bravo"),
        &ops,
        Some(json!({"max_in_flight": "none", "reason": "bravo too"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    wait_counts(&base, &ops, "bravo", (5, 0)).await;
    t.finish().await;
}

#[tokio::test]
async fn the_cli_takes_none_and_default_for_the_cap() {
    let (config, db, pool) = fresh_db().await;
    let url = database_url(&config);
    netra::store::tenants::create(&pool, "acme", None, &said())
        .await
        .unwrap();
    let capped = [
        ("NETRA_FAIR_WEIGHT", "1"),
        ("NETRA_FAIR_MAX_IN_FLIGHT", "20"),
    ];
    let set = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut all = vec!["tenant", "set", "acme"];
            all.extend(args.iter());
            netra(&url, &all, &capped).await
        }
    };

    let (ok, out, err) = set(&["--max-in-flight", "none", "--reason", "acme is exempt"]).await;
    assert!(ok, "{out} {err}");
    assert_eq!(
        out.trim(),
        "tenant acme: weight 1 (default: NETRA_FAIR_WEIGHT), no cap on runs in flight (its own: none)"
    );
    assert_eq!(stored(&pool, "acme").await, (None, Some(0)));
    let entries = set_entries(&pool, "acme").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].detail,
        json!({"max_in_flight": {"from": null, "to": "none"}})
    );

    let (ok, out, err) = set(&[
        "--max-in-flight",
        "default",
        "--weight",
        "5",
        "--reason",
        "back under the cap",
    ])
    .await;
    assert!(ok, "{out} {err}");
    assert_eq!(
        out.trim(),
        "tenant acme: weight 5, max in flight 20 (default: NETRA_FAIR_MAX_IN_FLIGHT)"
    );
    assert_eq!(stored(&pool, "acme").await, (Some(5), None));
    let (ok, out, err) = set(&[
        "--weight",
        "default",
        "--max-in-flight",
        "7",
        "--reason",
        "its own cap",
    ])
    .await;
    assert!(ok, "{out} {err}");
    assert_eq!(
        out.trim(),
        "tenant acme: weight 1 (default: NETRA_FAIR_WEIGHT), max in flight 7"
    );
    assert_eq!(stored(&pool, "acme").await, (None, Some(7)));

    // Words it does not take, and "none" where it means nothing.
    for (args, says) in [
        (
            &["--max-in-flight", "unlimited", "--reason", "r"][..],
            "none (no cap)",
        ),
        (
            &["--max-in-flight", "", "--reason", "r"][..],
            "--max-in-flight",
        ),
        (&["--weight", "none", "--reason", "r"][..], "cannot be none"),
        (
            &[
                "--max-in-flight",
                "none",
                "--no-max-in-flight",
                "--reason",
                "r",
            ][..],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["tenant", "set", "acme"];
        all.extend(args.iter());
        let (ok, _, err) = netra(&url, &all, &capped).await;
        assert!(!ok, "{all:?}");
        assert!(err.contains(says), "{all:?}: {err}");
    }
    assert_eq!(stored(&pool, "acme").await, (None, Some(7)));
    assert_eq!(set_entries(&pool, "acme").await.len(), 3);
    pool.close().await;
    cleanup(&config, &db).await;
}
