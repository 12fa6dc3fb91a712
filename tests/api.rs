//! The HTTP API against a running netra: auth, tenancy, limits, long-poll,
//! threads and follow-ups.

mod common;

use common::*;
use serde_json::{json, Value};

/// One HTTP call: (status, JSON body).
async fn call(
    method: &'static str,
    url: String,
    token: Option<String>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
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
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
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
    let run = netra::store::runs::create_run(
        &t.pool,
        &netra::store::runs::NewRun {
            tenant: "lp".into(),
            thread_id: None,
            correlation_id: "c".into(),
            request_message_id: None,
            reply_to: None,
            message: "parked".into(),
            workload_id: None,
            context: json!({}),
        },
        "not-a-phase",
        "test",
    )
    .await
    .unwrap()
    .run;
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
    t.finish().await;
}
