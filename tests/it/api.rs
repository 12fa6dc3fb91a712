//! The HTTP API against a running netra: auth, tenancy, limits, long-poll,
//! threads and follow-ups.

use crate::common::*;
use serde_json::{json, Value};

/// One HTTP call: (status, JSON body).
async fn call(
    method: &'static str,
    url: String,
    token: Option<String>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let agent = http();
        let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
        let mut resp = match method {
            "POST" => agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.unwrap_or_default()),
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

fn json_body(v: Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(&v).unwrap())
}

#[tokio::test]
async fn auth_limits_and_validation_errors() {
    let t = TestApp::start().await;
    let base = t.base();
    let token = t.tenant("acme").await;
    let (s, _) = call(
        "POST",
        format!("{base}/v1/runs"),
        None,
        json_body(json!({"message": "hi"})),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = call(
        "GET",
        format!("{base}/v1/runs"),
        Some("ntr_wrong".into()),
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, v) = call(
        "POST",
        format!("{base}/v1/runs"),
        Some(token.clone()),
        json_body(json!({"message": ""})),
    )
    .await;
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("message")));
    let (s, v) = call(
        "POST",
        format!("{base}/v1/runs"),
        Some(token.clone()),
        json_body(json!({"message": "x", "workload_id": "a b"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("workload_id"))
    );
    let (s, v) = call(
        "POST",
        format!("{base}/v1/runs"),
        Some(token.clone()),
        json_body(json!({"text": "x"})),
    )
    .await;
    assert_eq!((s, v["error"]["field"].as_str()), (422, Some("message")));
    let big = json!({"message": "x".repeat(netra::api::MAX_BODY_BYTES + 10)});
    let (s, _) = call(
        "POST",
        format!("{base}/v1/runs"),
        Some(token.clone()),
        json_body(big),
    )
    .await;
    assert_eq!(s, 413);
    let (s, v) = call(
        "GET",
        format!("{base}/v1/runs/{}", uuid::Uuid::new_v4()),
        Some(token.clone()),
        None,
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = call(
        "GET",
        format!("{base}/v1/runs?status=bogus"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(s, 422);
    let (s, v) = call("GET", format!("{base}/readyz"), None, None).await;
    assert_eq!(
        (s, v["database"].as_str(), v["broker"].as_str()),
        (200, Some("up"), Some("up"))
    );
    t.finish().await;
}

#[tokio::test]
async fn tenant_sees_only_its_own_runs() {
    let t = TestApp::start().await;
    let base = t.base();
    let a = t.tenant("tenant-a").await;
    let b = t.tenant("tenant-b").await;
    let (s, created) = call(
        "POST",
        format!("{base}/v1/runs"),
        Some(a.clone()),
        json_body(json!({"message": "What is batching?"})),
    )
    .await;
    assert_eq!(s, 202);
    let id = created["run_id"].as_str().unwrap().to_string();
    let thread = created["thread_id"].as_str().unwrap().to_string();
    let (s, _) = call(
        "GET",
        format!("{base}/v1/runs/{id}?wait=30"),
        Some(a.clone()),
        None,
    )
    .await;
    assert_eq!(s, 200);
    for (method, url) in [
        ("GET", format!("{base}/v1/runs/{id}")),
        ("POST", format!("{base}/v1/runs/{id}/cancel")),
        ("GET", format!("{base}/v1/threads/{thread}")),
        ("GET", format!("{base}/v1/threads/{thread}/messages")),
    ] {
        let (s, _) = call(method, url.clone(), Some(b.clone()), None).await;
        assert_eq!(s, 404, "{method} {url} leaked to another tenant");
    }
    let (s, _) = call(
        "POST",
        format!("{base}/v1/threads/{thread}/messages"),
        Some(b.clone()),
        json_body(json!({"message": "hi"})),
    )
    .await;
    assert_eq!(s, 404);
    let (_, list_b) = call("GET", format!("{base}/v1/runs"), Some(b), None).await;
    assert_eq!(list_b["runs"].as_array().unwrap().len(), 0);
    let (_, list_a) = call("GET", format!("{base}/v1/runs"), Some(a), None).await;
    assert_eq!(list_a["runs"].as_array().unwrap().len(), 1);
    t.finish().await;
}

#[tokio::test]
async fn idempotency_key_and_pagination() {
    let t = TestApp::start().await;
    let base = t.base();
    let token = t.tenant("p").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let url = format!("{base}/v1/runs");
        let tok = token.clone();
        let (s, v) = tokio::task::spawn_blocking(move || {
            let agent = http();
            let mut r = agent
                .post(&url)
                .header("authorization", &format!("Bearer {tok}"))
                .header("idempotency-key", &format!("k{}", i % 3))
                .send_json(json!({"message": "What is batching?"}))
                .unwrap();
            (
                r.status().as_u16(),
                r.body_mut().read_json::<Value>().unwrap(),
            )
        })
        .await
        .unwrap();
        assert_eq!(s, if i < 3 { 202 } else { 200 });
        ids.push(v["run_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids[0], ids[3]);
    assert_eq!(ids[1], ids[4]);
    let (_, page1) = call(
        "GET",
        format!("{base}/v1/runs?limit=2"),
        Some(token.clone()),
        None,
    )
    .await;
    assert_eq!(page1["runs"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap().to_string();
    let (_, page2) = call(
        "GET",
        format!("{base}/v1/runs?limit=2&cursor={cursor}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(page2["runs"].as_array().unwrap().len(), 1);
    t.finish().await;
}

#[tokio::test]
async fn long_poll_answers_on_completion_and_at_its_deadline() {
    let t = TestApp::start().await;
    let base = t.base();
    let token = t.tenant("lp").await;
    let (_, created) = call(
        "POST",
        format!("{base}/v1/runs"),
        Some(token.clone()),
        json_body(json!({"message": "What is batching?"})),
    )
    .await;
    let id = created["run_id"].as_str().unwrap();
    let (s, v) = call(
        "GET",
        format!("{base}/v1/runs/{id}?wait=60"),
        Some(token.clone()),
        None,
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("completed")));
    // A run that stays unfinished: its thread does not exist yet for the
    // worker (no worker consumes it because its phase is unknown), so the
    // poll answers at the deadline with the current state.
    let run = create_run(&t.pool, "lp", "c", "parked", "not-a-phase").await;
    let (s, v) = call(
        "GET",
        format!("{base}/v1/runs/{}?wait=1", run.id),
        Some(token),
        None,
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("queued")));
    t.finish().await;
}

#[tokio::test]
async fn needs_input_continues_on_the_thread_after_data_arrives() {
    let t = TestApp::start().await;
    let base = t.base();
    let token = t.tenant("default").await;
    let (_, created) = call(
        "POST",
        format!("{base}/v1/runs"),
        Some(token.clone()),
        json_body(json!({"message": "Cut the cost of workload late-data"})),
    )
    .await;
    let id = created["run_id"].as_str().unwrap();
    let thread = created["thread_id"].as_str().unwrap();
    let (_, v) = call(
        "GET",
        format!("{base}/v1/runs/{id}?wait=60"),
        Some(token.clone()),
        None,
    )
    .await;
    assert_eq!(v["status"], "needs_input");
    assert!(v["result"]["markdown"]
        .as_str()
        .unwrap()
        .contains("late-data"));
    load_sample(&t.pool, "late-data", 300).await;
    let (s, follow) = call(
        "POST",
        format!("{base}/v1/threads/{thread}/messages"),
        Some(token.clone()),
        json_body(json!({"message": "Data is in, go ahead"})),
    )
    .await;
    assert_eq!(s, 202);
    assert_eq!(follow["thread_id"].as_str(), Some(thread));
    let id2 = follow["run_id"].as_str().unwrap();
    let (_, v) = call(
        "GET",
        format!("{base}/v1/runs/{id2}?wait=60"),
        Some(token.clone()),
        None,
    )
    .await;
    assert_eq!(v["status"], "completed");
    assert!(v["result"]["recommendations"]
        .as_array()
        .is_some_and(|r| !r.is_empty()));
    let (_, msgs) = call(
        "GET",
        format!("{base}/v1/threads/{thread}/messages"),
        Some(token),
        None,
    )
    .await;
    let roles: Vec<&str> = msgs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["user", "agent", "user", "agent"]);
    t.finish().await;
}

#[tokio::test]
async fn metrics_expose_phase_counters() {
    let t = TestApp::start().await;
    t.publish_request(&json!({"message": "What is batching?"}), None, None, None)
        .await;
    t.wait_all(1, &["completed"]).await;
    let (s, v) = call("GET", format!("{}/metrics", t.base()), None, None).await;
    assert_eq!(s, 200);
    let text = v.as_str().unwrap();
    assert!(
        text.contains("netra_phase_processed_total{phase=\"triage\"} 1"),
        "{text}"
    );
    assert!(text.contains("netra_runs{status=\"completed\"} 1"));
    // One request, two phases (triage, reporting): each start and each
    // effect went through the group commit, in some number of batches.
    for (kind, items) in [("requests", 1), ("starts", 2), ("effects", 2)] {
        assert!(
            text.contains(&format!(
                "netra_batch_items_total{{kind=\"{kind}\"}} {items}"
            )),
            "{kind}: {text}"
        );
    }
    assert!(text.contains("netra_memo_lookups_total{result=\"miss\"}"));
    assert!(
        text.contains(&format!(
            "netra_queue_depth{{queue=\"{}.phase.triage\"}} 0",
            t.config.namespace
        )),
        "{text}"
    );
    assert!(
        text.contains("netra_agent_calls_total{phase=\"triage\",result=\"ok\"} 1"),
        "{text}"
    );
    t.finish().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let (mut config, db) = test_config().await;
    config.rate_limit_per_min = 3;
    let t = TestApp::start_with(config, db, None).await;
    let token = t
        .tenant(&format!(
            "rl-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
        .await;
    let url = format!("{}/v1/runs", t.base());
    let (statuses, retry_after) = tokio::task::spawn_blocking(move || {
        let agent = http();
        let mut statuses = Vec::new();
        let mut retry_after = None;
        for _ in 0..8 {
            let r = agent
                .get(&url)
                .header("authorization", &format!("Bearer {token}"))
                .call()
                .unwrap();
            if r.status().as_u16() == 429 {
                retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
            }
            statuses.push(r.status().as_u16());
        }
        (statuses, retry_after)
    })
    .await
    .unwrap();
    // A minute window holds at most 3 calls; 8 calls span at most 2 windows.
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 2,
        "{statuses:?}"
    );
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)));
    t.finish().await;
}

#[tokio::test]
async fn openapi_document_lists_every_served_route() {
    let t = TestApp::start().await;
    let (s, doc) = call("GET", format!("{}/v1/openapi.json", t.base()), None, None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = netra::api::routes();
    let mut documented = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented += 1;
            assert!(
                routes
                    .iter()
                    .any(|r| r.path == path && r.method.eq_ignore_ascii_case(method)),
                "{method} {path} is documented but not routed"
            );
        }
    }
    assert_eq!(documented, routes.len());
    // Each documented route answers (not 404/405) on the live server.
    let token = t.tenant("docs").await;
    for r in routes.iter().filter(|r| r.method == "GET") {
        let path = r.path.replace("{id}", &uuid::Uuid::new_v4().to_string());
        let (s, body) = call(
            "GET",
            format!("{}{path}", t.base()),
            Some(token.clone()),
            None,
        )
        .await;
        assert!(
            s != 405 && (s != 404 || body["error"]["code"] == "not_found"),
            "{path} -> {s}"
        );
    }
    t.finish().await;
}

#[tokio::test]
async fn flushing_redis_changes_no_answer() {
    let t = TestApp::start().await;
    let base = t.base();
    let token = t.tenant("flush").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let (_, c) = call(
            "POST",
            format!("{base}/v1/runs"),
            Some(token.clone()),
            json_body(json!({"message": format!("What is batching {i}?")})),
        )
        .await;
        ids.push(c["run_id"].as_str().unwrap().to_string());
    }
    let redis_url = std::env::var("NETRA_REDIS_URL").unwrap();
    let flush = || {
        let client = redis::Client::open(redis_url.as_str()).unwrap();
        let mut c = client.get_connection().unwrap();
        let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    };
    flush(); // while runs are in flight
    let mut first = Vec::new();
    for id in &ids {
        let (_, v) = call(
            "GET",
            format!("{base}/v1/runs/{id}?wait=60"),
            Some(token.clone()),
            None,
        )
        .await;
        assert_eq!(v["status"], "completed");
        first.push(v);
    }
    // Cached now; flush again and read: the same answers from Postgres.
    flush();
    for (id, before) in ids.iter().zip(&first) {
        let (_, v) = call(
            "GET",
            format!("{base}/v1/runs/{id}"),
            Some(token.clone()),
            None,
        )
        .await;
        assert_eq!(&v, before);
    }
    t.finish().await;
}

#[tokio::test]
async fn tenant_cannot_list_or_replay_another_tenants_dead_letters() {
    let t = TestApp::start().await;
    let base = t.base();
    let a = t.tenant("dla").await;
    let b = t.tenant("dlb").await;
    // A run of tenant A whose triage failed permanently, committed through
    // the same store call the engine uses.
    let run = create_run(&t.pool, "dla", "c-dl", "x", "triage").await;
    // Simulate a permanent failure committed by the engine.
    let env = netra::pipeline::envelope::Envelope::new(run.id, "triage", 1, 0, "c-dl", "dla");
    let rec = netra::pipeline::effects::AttemptRecord {
        envelope: env,
        input: json!({}),
        started_at: chrono::Utc::now(),
        worker_id: "test".into(),
        reply_to: None,
        lease_token: None,
    };
    netra::pipeline::effects::commit_effect(
        &t.pool,
        &rec,
        &netra::pipeline::effects::Effect::DeadLetter {
            error: netra::error::PhaseError::permanent("bad input"),
        },
    )
    .await
    .unwrap();
    let (_, list_a) = call(
        "GET",
        format!("{base}/v1/dead-letters"),
        Some(a.clone()),
        None,
    )
    .await;
    let items = list_a["dead_letters"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let dl_id = items[0]["id"].as_str().unwrap().to_string();
    let (_, list_b) = call(
        "GET",
        format!("{base}/v1/dead-letters"),
        Some(b.clone()),
        None,
    )
    .await;
    assert!(list_b["dead_letters"].as_array().unwrap().is_empty());
    let (_, groups_b) = call(
        "GET",
        format!("{base}/v1/dead-letters/groups"),
        Some(b.clone()),
        None,
    )
    .await;
    assert!(groups_b["groups"].as_array().unwrap().is_empty());
    let (s, _) = call(
        "GET",
        format!("{base}/v1/dead-letters/{dl_id}"),
        Some(b.clone()),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        "POST",
        format!("{base}/v1/dead-letters/replay"),
        Some(b.clone()),
        json_body(json!({"ids": [dl_id]})),
    )
    .await;
    assert_eq!(s, 404);
    let (_, r) = call(
        "POST",
        format!("{base}/v1/dead-letters/replay"),
        Some(b),
        json_body(json!({"phase": "triage"})),
    )
    .await;
    assert_eq!(r["selected"], 0);
    // Tenant A can replay it.
    let (s, r) = call(
        "POST",
        format!("{base}/v1/dead-letters/replay"),
        Some(a),
        json_body(json!({"ids": [dl_id], "reason": "input fixed upstream"})),
    )
    .await;
    assert_eq!((s, r["replayed"].as_u64()), (200, Some(1)));
    // Its request ("x") cannot be acted on: triage asks, the run needs input.
    t.wait_run(run.id, &["needs_input"]).await;
    t.finish().await;
}

fn stack(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/stack");
    let out = std::process::Command::new(script)
        .args(args)
        .output()
        .expect("run deploy/local/stack");
    assert!(
        out.status.success(),
        "stack {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn amqp_request_tenant_is_the_brokers_validated_user_id() {
    let t = TestApp::start().await;
    let user = format!("tu-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let pass = uuid::Uuid::new_v4().simple().to_string();
    stack(&["rabbitmqctl", "-q", "add_user", &user, &pass]);
    stack(&[
        "rabbitmqctl",
        "-q",
        "set_permissions",
        "-p",
        "/",
        &user,
        ".*",
        ".*",
        ".*",
    ]);
    netra::store::tenants::create(&t.pool, "amqp-tenant", Some(&user), &crate::common::said())
        .await
        .unwrap();
    let base_url = std::env::var("NETRA_AMQP_URL").unwrap();
    let (_, host) = base_url.split_once('@').unwrap();
    let url = format!("amqp://{user}:{pass}@{host}");
    let conn = netra::broker::connect_url(&url, "tenant client")
        .await
        .unwrap();
    let p = netra::broker::publisher::Publisher::open(&conn)
        .await
        .unwrap();
    let msg = netra::broker::publisher::Outgoing {
        exchange: String::new(),
        routing_key: format!("{}.requests", t.config.namespace),
        body: serde_json::to_vec(&json!({"message": "What is batching?"})).unwrap(),
        correlation_id: Some("tenant-corr".into()),
        ..Default::default()
    };
    p.publish_as(&msg, Some(&user)).await.unwrap();
    let run = t.wait_all(1, &["completed"]).await.remove(0);
    assert_eq!(run.tenant, "amqp-tenant");
    // Claiming another user is refused by the broker itself.
    let forged = p.publish_as(&msg, Some("someone-else")).await;
    assert!(forged.is_err(), "the broker accepted a forged user_id");
    let _ = conn.close(200, "bye".into()).await;
    stack(&["rabbitmqctl", "-q", "delete_user", &user]);
    t.finish().await;
}

#[tokio::test]
async fn cli_submit_and_status_are_clients_of_the_http_api() {
    let t = TestApp::start().await;
    let token = t.tenant("cli").await;
    let base = t.base();
    let out = tokio::task::spawn_blocking({
        let (base, token) = (base.clone(), token.clone());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_netra"))
                .args([
                    "submit",
                    "--api",
                    &base,
                    "--wait",
                    "What is prompt caching?",
                ])
                .env("NETRA_TOKEN", &token)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("status completed") && stdout.contains("# netra report"),
        "{stdout}"
    );
    let id = stdout.split_whitespace().nth(1).unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_netra"))
            .args(["status", &id, "--json", "--api", &base])
            .env("NETRA_TOKEN", &token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "completed");
    // A wrong token is a clear error, not a crash.
    let base = t.base();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_netra"))
            .args(["status", &uuid::Uuid::new_v4().to_string(), "--api", &base])
            .env("NETRA_TOKEN", "nope")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    t.finish().await;
}
