//! The console over HTTP (no browser): sign-in, form tokens, tenant
//! isolation on every console route, reasons required, and every action in
//! `GET /v1/audit` with who and why. The browser story is in
//! `console_browser.rs`.

use std::time::Duration;

use crate::common::{wrapper::standard_with, *};
use netra::{error::PhaseError, store::dead_letters};
use reqwest::{header, redirect::Policy, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// A signed-in browser, by hand: the session cookie and the page's form token.
pub struct Session {
    base: String,
    client: reqwest::Client,
    cookie: String,
    /// The form token of the session.
    pub csrf: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

impl Session {
    /// Signs in with a token.
    pub async fn sign_in(base: &str, token: &str) -> Session {
        let c = client();
        let r = c
            .post(format!("{base}/console/login"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign-in redirects");
        let set = r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let mut s = Session {
            base: base.into(),
            client: c,
            cookie,
            csrf: String::new(),
        };
        let (status, page) = s.get("/console").await;
        assert_eq!(status, 200);
        let at = page.find("name=\"csrf-token\" content=\"").unwrap() + 27;
        s.csrf = page[at..at + page[at..].find('"').unwrap()].to_string();
        s
    }

    /// GET a console path.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// POST a form (the form token added unless `fields` has one); answers
    /// the status, the `Location` and the body.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        if !fields.iter().any(|(k, _)| *k == "csrf") {
            form.push(("csrf", &self.csrf));
        }
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        let loc = r
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), loc, r.text().await.unwrap())
    }

    /// POST JSON with the form token in `X-CSRF-Token`.
    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header(header::COOKIE, &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

/// A call to the JSON API with a bearer token.
async fn api(method: &str, url: String, token: &str, body: Option<Value>) -> (u16, Value) {
    let c = client();
    let mut req = match method {
        "POST" => c.post(url),
        _ => c.get(url),
    }
    .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Submits a run for a tenant over the API; returns its id.
pub async fn submit(base: &str, token: &str, workload: &str) -> Uuid {
    let (s, v) = api(
        "POST",
        format!("{base}/v1/runs"),
        token,
        Some(json!({"message": format!("Cut the cost of workload {workload}"), "workload_id": workload})),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    v["run_id"].as_str().unwrap().parse().unwrap()
}

/// The pending dead letter of a run.
pub async fn dead_letter_of(t: &TestApp, run: Uuid) -> dead_letters::DeadLetter {
    let f = dead_letters::DeadLetterFilter {
        limit: 100,
        ..Default::default()
    };
    dead_letters::list(&t.pool, &f)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.run_id == Some(run))
        .unwrap()
}

/// A job's progress, once it left `running`.
pub async fn job_ended(s: &Session, job: &str) -> Value {
    for _ in 0..600 {
        let (status, body) = s.get(&format!("/console/replays/{job}/progress")).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["state"] != "running" {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("replay job {job} never ended");
}

/// A netra whose optimization phase fails permanently for its first
/// `fails` calls, with telemetry for tenants `acme` and `other`; returns
/// their tokens.
pub async fn failing_optimization(fails: u32) -> (TestApp, String, String) {
    let (agents, _) = standard_with("optimization", |w| {
        w.failing_first(
            fails,
            PhaseError::permanent("pricing lookup failed: upstream 503"),
        )
    });
    let (config, db) = test_config().await;
    let t = TestApp::start_with(config, db, Some(agents)).await;
    let acme = t.tenant("acme").await;
    let other = t.tenant("other").await;
    for tenant in ["acme", "other"] {
        netra::sample::load(&t.pool, tenant, "w", &netra::sample::chat("gpt-4o", 300, 5))
            .await
            .unwrap();
    }
    (t, acme, other)
}

fn group_path(d: &dead_letters::DeadLetter) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    format!(
        "/console/dead-letters/group?phase={}&fingerprint={}",
        enc(&d.phase),
        enc(&d.fingerprint)
    )
}

#[tokio::test]
async fn another_tenant_gets_404_on_every_console_route() {
    let (t, acme, other) = failing_optimization(1).await;
    let base = t.base();
    let run = submit(&base, &acme, "w").await;
    t.wait_run(run, &["dead_lettered"]).await;
    let theirs = submit(&base, &other, "w").await;
    t.wait_run(theirs, &["completed", "needs_input"]).await;
    let d = dead_letter_of(&t, run).await;
    let a = Session::sign_in(&base, &acme).await;
    // acme starts a slow job, so that there is a job to probe.
    let (s, loc, body) = a
        .post(
            "/console/replays",
            &[
                ("phase", &d.phase),
                ("fingerprint", &d.fingerprint),
                ("rate", "1"),
                ("reason", "probe"),
            ],
        )
        .await;
    assert_eq!(s, 303, "{body}");
    let job = loc.rsplit('/').next().unwrap().to_string();

    let b = Session::sign_in(&base, &other).await;
    let (_, runs_page) = b.get("/console").await;
    assert!(runs_page.contains(&theirs.to_string()));
    assert!(
        !runs_page.contains(&run.to_string()),
        "another tenant's run listed"
    );
    let (_, groups) = b.get("/console/dead-letters").await;
    assert!(
        !groups.contains("pricing lookup failed"),
        "another tenant's group listed"
    );
    let (_, audit_page) = b.get("/console/audit").await;
    assert!(
        !audit_page.contains("probe"),
        "another tenant's audit entry shown"
    );
    let (_, jobs) = b.get("/console/replays").await;
    assert!(!jobs.contains(&job[..8]), "another tenant's job listed");
    for path in [
        format!("/console/runs/{run}"),
        format!("/console/dead-letters/{}", d.id),
        group_path(&d),
        format!("/console/replays/{job}"),
        format!("/console/replays/{job}/progress"),
    ] {
        let (s, body) = b.get(&path).await;
        assert_eq!(s, 404, "GET {path}: {body}");
        assert!(body.contains("<h1>Not found</h1>"), "an HTML page: {body}");
        assert!(
            !body.contains("pricing lookup failed"),
            "GET {path} leaked: {body}"
        );
    }
    for (path, fields) in [
        (format!("/console/runs/{run}/cancel"), vec![("reason", "x")]),
        (
            format!("/console/dead-letters/{}/replay", d.id),
            vec![("reason", "x")],
        ),
        (
            "/console/replays".to_string(),
            vec![
                ("phase", d.phase.as_str()),
                ("fingerprint", d.fingerprint.as_str()),
                ("reason", "x"),
            ],
        ),
        (
            "/console/dead-letters/preview".to_string(),
            vec![
                ("phase", d.phase.as_str()),
                ("fingerprint", d.fingerprint.as_str()),
            ],
        ),
        (
            format!("/console/replays/{job}/abort"),
            vec![("reason", "x")],
        ),
    ] {
        let (s, _, body) = b.post(&path, &fields).await;
        // The preview of a group the tenant has no member of shows nothing.
        if path.ends_with("/preview") {
            assert_eq!(s, 200, "{body}");
            assert!(body.contains("id=\"would-replay\">0<"), "{body}");
            assert!(!body.contains(&run.to_string()));
        } else {
            assert_eq!(s, 404, "POST {path}: {body}");
        }
    }
    let (s, _) = b
        .post_json(
            &format!("/console/dead-letters/{}/patched", d.id),
            json!({"patch": {}}),
        )
        .await;
    assert_eq!(s, 404);
    // Nothing of acme's changed: the dead letter is pending or replayed by
    // acme's own job, never cancelled.
    let r = netra::store::runs::get(&t.pool, run)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(r.status.as_str(), "cancelled");
    t.finish().await;
}

#[tokio::test]
async fn every_console_action_is_audited_and_needs_a_reason_and_the_form_token() {
    let (t, acme, _) = failing_optimization(3).await;
    let base = t.base();
    let runs: Vec<Uuid> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(submit(&base, &acme, "w").await);
        }
        v
    };
    for r in &runs {
        t.wait_run(*r, &["dead_lettered"]).await;
    }
    let a = Session::sign_in(&base, &acme).await;
    let d0 = dead_letter_of(&t, runs[0]).await;

    // A replay without a reason is refused, and says so, everywhere.
    let (s, v) = api(
        "POST",
        format!("{base}/v1/dead-letters/replay"),
        &acme,
        Some(json!({"ids": [d0.id]})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("reason")),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("a reason is required"));
    let (s, _, body) = a
        .post(
            &format!("/console/dead-letters/{}/replay", d0.id),
            &[("reason", "  ")],
        )
        .await;
    assert_eq!(s, 422);
    assert!(body.contains("a reason is required"), "{body}");
    let (s, v) = api(
        "POST",
        format!("{base}/v1/runs/{}/cancel", runs[0]),
        &acme,
        None,
    )
    .await;
    assert_eq!(s, 422, "{v}");
    // Without the form token, or from another origin: refused.
    let (s, _, _) = a
        .post(
            &format!("/console/dead-letters/{}/replay", d0.id),
            &[("csrf", "forged"), ("reason", "x")],
        )
        .await;
    assert_eq!(s, 403);
    assert_eq!(
        dead_letter_of(&t, runs[0]).await.status,
        "pending",
        "nothing replayed by refused requests"
    );

    // The patch editor: a patch keyed by something else is refused; a good
    // one shows the patched inputs, changing nothing.
    let (s, v) = a
        .post_json(
            &format!("/console/dead-letters/{}/patched", d0.id),
            json!({"patch": {"nope": {}}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("patch")),
        "{v}"
    );
    let (s, v) = a
        .post_json(
            &format!("/console/dead-letters/{}/patched", d0.id),
            json!({"patch": {"data": {"operator_note": "checked"}}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["inputs"]["data"]["operator_note"], "checked");
    assert!(
        v["inputs"]["triage"].is_object(),
        "upstream outputs shown: {v}"
    );

    // Patched replay of one run.
    let (s, loc, body) = a
        .post(
            &format!("/console/dead-letters/{}/replay", d0.id),
            &[
                ("patch", r#"{"data": {"operator_note": "checked"}}"#),
                ("reason", "pricing fixed; note added"),
            ],
        )
        .await;
    assert_eq!(s, 303, "{body}");
    let job = loc.rsplit('/').next().unwrap().to_string();
    let v = job_ended(&a, &job).await;
    assert_eq!(
        (v["state"].as_str(), v["replayed"].as_i64()),
        (Some("done"), Some(1)),
        "{v}"
    );
    t.wait_run(runs[0], &["completed", "needs_input"]).await;

    // A group replay at a slow rate, aborted after its first replay.
    let d1 = dead_letter_of(&t, runs[1]).await;
    let (s, loc, _) = a
        .post(
            "/console/replays",
            &[
                ("phase", &d1.phase),
                ("fingerprint", &d1.fingerprint),
                ("rate", "0.1"),
                ("reason", "retry the rest"),
            ],
        )
        .await;
    assert_eq!(s, 303);
    let job = loc.rsplit('/').next().unwrap().to_string();
    for _ in 0..300 {
        let (_, body) = a.get(&format!("/console/replays/{job}/progress")).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["done"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _, body) = a
        .post(
            &format!("/console/replays/{job}/abort"),
            &[("reason", "too slow, will rerun")],
        )
        .await;
    assert_eq!(s, 303, "{body}");
    let v = job_ended(&a, &job).await;
    assert_eq!(
        (v["state"].as_str(), v["done"].as_i64()),
        (Some("aborted"), Some(1)),
        "{v}"
    );
    let pending = dead_letters::groups(&t.pool, Some("acme")).await.unwrap();
    assert_eq!(
        pending.iter().map(|g| g.count).sum::<i64>(),
        1,
        "one left after the abort"
    );

    // Cancel a run that has not ended.
    let queued = create_run(&t.pool, "acme", "c-1", "hello", "triage").await;
    let (s, _, body) = a
        .post(
            &format!("/console/runs/{}/cancel", queued.id),
            &[("reason", "submitted by mistake")],
        )
        .await;
    assert_eq!(s, 303, "{body}");
    assert_eq!(
        t.wait_run(queued.id, &["cancelled"]).await.status.as_str(),
        "cancelled"
    );

    // Every action in GET /v1/audit, with who and why.
    let (s, v) = api("GET", format!("{base}/v1/audit"), &acme, None).await;
    assert_eq!(s, 200);
    let entries = v["audit"].as_array().unwrap();
    let find = |action: &str, reason: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["reason"] == reason)
            .unwrap_or_else(|| panic!("no {action} ({reason}) in {v}"))
            .clone()
    };
    let patch = find("patch", "pricing fixed; note added");
    assert_eq!(patch["actor"], "tenant:acme");
    assert_eq!(patch["runs"], json!([runs[0]]));
    assert_eq!(patch["detail"]["patch"]["data"]["operator_note"], "checked");
    let replay = find("replay", "retry the rest");
    assert_eq!(replay["runs"].as_array().unwrap().len(), 2);
    assert_eq!(
        find("abort_replay", "too slow, will rerun")["actor"],
        "tenant:acme"
    );
    assert_eq!(
        find("cancel", "submitted by mistake")["runs"],
        json!([queued.id])
    );
    assert_eq!(find("create_tenant", "test setup")["tenant"], "acme");
    // ...and in the run's history on its page.
    let (_, page) = a.get(&format!("/console/runs/{}", runs[0])).await;
    assert!(
        page.contains("pricing fixed; note added"),
        "audit entry on the run page"
    );
    assert!(
        page.contains("replay of"),
        "the replay linked to its dead letter"
    );

    // An operator sees every tenant's actions, and its own creation.
    let ops = t.operator("ops").await;
    let (_, v) = api("GET", format!("{base}/v1/audit"), &ops, None).await;
    let all = v["audit"].as_array().unwrap();
    assert!(all
        .iter()
        .any(|e| e["action"] == "create_operator" && e["tenant"].is_null()));
    assert!(all
        .iter()
        .any(|e| e["action"] == "create_tenant" && e["tenant"] == "other"));
    let (_, v) = api("GET", format!("{base}/v1/audit"), &acme, None).await;
    assert!(
        !v["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "create_operator" || e["tenant"] == "other"),
        "a tenant sees only its own trail: {v}"
    );
    let o = Session::sign_in(&base, &ops).await;
    let (_, page) = o.get("/console").await;
    assert!(page.contains("operator:ops") && page.contains("all tenants"));
    // An operator's token is refused where a tenant is needed.
    let (s, _) = api(
        "POST",
        format!("{base}/v1/runs"),
        &ops,
        Some(json!({"message": "x"})),
    )
    .await;
    assert_eq!(s, 403);
    t.finish().await;
}

#[tokio::test]
async fn sign_in_refuses_bad_tokens_and_signing_out_ends_the_session() {
    let t = TestApp::start().await;
    let base = t.base();
    let token = t.tenant("acme").await;
    let r = client()
        .post(format!("{base}/console/login"))
        .form(&[("token", "ntr_wrong\0<script>")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let body = r.text().await.unwrap();
    assert!(!body.contains("<script>"));
    // Not signed in: every page goes to the sign-in form.
    let r = client()
        .get(format!("{base}/console/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/console/login");
    let s = Session::sign_in(&base, &token).await;
    let (st, _, _) = s.post("/console/logout", &[]).await;
    assert_eq!(st, 303);
    let (st, _) = s.get("/console").await;
    assert_eq!(st, 303, "the old cookie no longer works");
    t.finish().await;
}

#[tokio::test]
async fn background_replays_over_the_api_show_progress_and_refuse_a_late_abort() {
    let (t, acme, other) = failing_optimization(2).await;
    let base = t.base();
    let a = submit(&base, &acme, "w").await;
    let b = submit(&base, &acme, "w").await;
    for r in [a, b] {
        t.wait_run(r, &["dead_lettered"]).await;
    }
    let d = dead_letter_of(&t, a).await;
    let url = format!("{base}/v1/replays");
    let (s, v) = api(
        "POST",
        url.clone(),
        &acme,
        Some(json!({"fingerprint": d.fingerprint, "rate": 50})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("reason")),
        "{v}"
    );
    let (s, v) = api(
        "POST",
        url.clone(),
        &acme,
        Some(json!({"fingerprint": d.fingerprint, "rate": 0})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (422, Some("rate")),
        "{v}"
    );
    let (s, job) = api(
        "POST",
        url.clone(),
        &acme,
        Some(json!({"fingerprint": d.fingerprint, "rate": 50, "reason": "pricing back"})),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    assert_eq!(job["total"], 2);
    let id = job["id"].as_str().unwrap().to_string();
    let (s, _) = api("GET", format!("{url}/{id}"), &other, None).await;
    assert_eq!(s, 404, "another tenant's job");
    let mut last = Value::Null;
    for _ in 0..300 {
        let (_, v) = api("GET", format!("{url}/{id}"), &acme, None).await;
        if v["state"] != "running" {
            last = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (last["state"].as_str(), last["replayed"].as_i64()),
        (Some("done"), Some(2)),
        "{last}"
    );
    for r in [a, b] {
        t.wait_run(r, &["completed", "needs_input"]).await;
    }
    let (s, v) = api(
        "POST",
        format!("{url}/{id}/abort"),
        &acme,
        Some(json!({"reason": "late"})),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("only a running job"));
    t.finish().await;
}

#[tokio::test]
async fn the_cli_refuses_a_replay_without_a_reason_and_changes_nothing() {
    let (t, acme, _) = failing_optimization(1).await;
    let run = submit(&t.base(), &acme, "w").await;
    t.wait_run(run, &["dead_lettered"]).await;
    let d = dead_letter_of(&t, run).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_netra"))
        .args(["dlq", "replay", "--id", &d.id.to_string()])
        .env("NETRA_DATABASE_URL", database_url(&t.config))
        .env("NETRA_NAMESPACE", &t.config.namespace)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--reason: a reason is required"), "{err}");
    assert_eq!(dead_letter_of(&t, run).await.status, "pending");
    t.finish().await;
}

#[tokio::test]
async fn replay_selected_from_the_run_list() {
    let (t, acme, other) = failing_optimization(2).await;
    let base = t.base();
    let a = submit(&base, &acme, "w").await;
    let b = submit(&base, &acme, "w").await;
    for r in [a, b] {
        t.wait_run(r, &["dead_lettered"]).await;
    }
    let s = Session::sign_in(&base, &acme).await;
    let (_, page) = s.get("/console?status=dead_lettered").await;
    assert_eq!(
        page.matches("class=\"pick\"").count(),
        2,
        "a checkbox per dead-lettered run"
    );
    let ids = format!("{a},{b}");
    let o = Session::sign_in(&base, &other).await;
    let (st, _, _) = o
        .post("/console/runs/replay", &[("runs", &ids), ("reason", "x")])
        .await;
    assert_eq!(st, 404, "another tenant's runs");
    let (st, _, body) = s
        .post("/console/runs/replay", &[("runs", &ids), ("rate", "20")])
        .await;
    assert_eq!(st, 422);
    assert!(body.contains("a reason is required"));
    let (st, _, _) = s
        .post(
            "/console/runs/replay",
            &[("runs", "not-a-uuid"), ("reason", "x")],
        )
        .await;
    assert_eq!(st, 422);
    let (st, loc, body) = s
        .post(
            "/console/runs/replay",
            &[("runs", &ids), ("rate", "20"), ("reason", "both at once")],
        )
        .await;
    assert_eq!(st, 303, "{body}");
    let v = job_ended(&s, loc.rsplit('/').next().unwrap()).await;
    assert_eq!(
        (v["state"].as_str(), v["replayed"].as_i64()),
        (Some("done"), Some(2)),
        "{v}"
    );
    for r in [a, b] {
        t.wait_run(r, &["completed", "needs_input"]).await;
    }
    t.finish().await;
}
