//! `GET /v1/runs/{id}/report.html` against a running netra: real runs to
//! completion, then the page's three charts checked against the JSON
//! report's figures, the escaping of what users wrote (the request, a model
//! name), the bucketing of a long window, a negative saving drawn left of
//! zero, and tenancy (another tenant's run
//! is 404, a run without a report 409).

use crate::common::*;
use serde_json::{json, Value};

/// One GET: (status, content type, headers of interest, body).
struct Page {
    status: u16,
    content_type: String,
    csp: String,
    body: String,
}

async fn get(url: String, token: &str) -> Page {
    let auth = format!("Bearer {token}");
    tokio::task::spawn_blocking(move || {
        let mut resp = http()
            .get(&url)
            .header("authorization", &auth)
            .call()
            .unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (content_type, csp) = (header("content-type"), header("content-security-policy"));
        Page {
            status: resp.status().as_u16(),
            content_type,
            csp,
            body: resp.body_mut().read_to_string().unwrap_or_default(),
        }
    })
    .await
    .unwrap()
}

/// Starts a run for `token` and waits for it to finish: (id, its JSON view).
async fn run_to_completion(base: &str, token: &str, message: &str) -> (String, Value) {
    let (url, auth, body) = (
        format!("{base}/v1/runs"),
        format!("Bearer {token}"),
        json!({ "message": message }),
    );
    let created: Value = tokio::task::spawn_blocking(move || {
        http()
            .post(&url)
            .header("authorization", &auth)
            .send_json(body)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    })
    .await
    .unwrap();
    let id = created["run_id"].as_str().unwrap().to_string();
    let view = get(format!("{base}/v1/runs/{id}?wait=60"), token).await;
    let view: Value = serde_json::from_str(&view.body).unwrap();
    assert_eq!(view["status"], "completed", "{view}");
    (id, view)
}

/// The markup of `<section id="…">`.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id}"));
    let rest = &html[start..];
    &rest[..rest.find("</section>").unwrap()]
}

/// The value of the first attribute `name` in `markup`.
fn attr<'a>(markup: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let start = markup
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {markup}"))
        + key.len();
    markup[start..].split('"').next().unwrap()
}

/// Text as it was before HTML escaping.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The bars of a chart: (label, value) as their data attributes say.
fn bars(chart: &str) -> Vec<(String, String)> {
    chart
        .split("<g class=\"bar")
        .skip(1)
        .map(|g| {
            (
                unescape(attr(g, "data-label")),
                attr(g, "data-value").to_string(),
            )
        })
        .collect()
}

/// A JSON number as the chart writes it (`n/a` for none).
fn exact(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_string(), |x| x.to_string())
}

#[tokio::test]
async fn report_page_draws_the_reports_figures_escaped_and_tenant_scoped() {
    let t = TestApp::start().await;
    let base = t.base();
    let token = t.tenant("acme").await;
    let other = t.tenant("other").await;
    // A day of a priced model, and a model whose name is markup (not in
    // the catalog: its cost is unknown).
    let odd_model = "<b>odd</b> \"model\" & co";
    for spec in [
        netra::sample::chat("gpt-4o", 1500, 5),
        netra::sample::Spec {
            model: odd_model.to_string(),
            ..netra::sample::chat("gpt-4o", 200, 6)
        },
    ] {
        netra::sample::load(&t.pool, "acme", "chat-prod", &spec)
            .await
            .unwrap();
    }
    let message = "Please cut the cost of workload chat-prod. <script>alert(\"pwned\")</script> 'single' & naïve ☃ 𝔘𝔫𝔦 \u{202e}x";
    let (id, view) = run_to_completion(&base, &token, message).await;
    let report = &view["result"];

    let page = get(format!("{base}/v1/runs/{id}/report.html"), &token).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(page.csp.contains("default-src 'none'"), "{}", page.csp);
    let html = &page.body;
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>"));
    assert!(html.contains("<style>") && !html.contains("<link") && !html.contains(" src="));

    // Escaping: nothing the user wrote becomes markup.
    assert!(!html.contains("<script"), "a script tag got through");
    assert!(!html.contains("<b>odd"));
    assert!(
        html.contains("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; 'single' &amp; naïve ☃ 𝔘𝔫𝔦 \u{202e}x"),
        "the request is not shown escaped"
    );
    assert!(html.contains("&lt;b&gt;odd&lt;/b&gt; &quot;model&quot; &amp; co"));

    // 1. Requests per minute: one point per clock minute of the day, summing
    // to the report's requests, peaking at its busiest minute.
    let m = &report["metrics"][0];
    let requests = section(html, "chart-requests");
    assert!(requests.contains("Requests per minute"), "{requests}");
    assert!(!requests.contains("longer than"));
    let points: i64 = attr(requests, "data-points").parse().unwrap();
    assert!((1400..=1440).contains(&points), "{points}");
    assert_eq!(attr(requests, "data-sum"), m["requests"].to_string());
    assert_eq!(m["requests"], 1700);
    assert_eq!(attr(requests, "data-max"), m["peak_per_minute"].to_string());

    // 2. Cost by model: the report's per-model cost, the unknown one n/a.
    let cost = bars(section(html, "chart-cost"));
    let expected: Vec<(String, String)> = m["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["model"].as_str().unwrap().to_string(),
                exact(&x["cost_usd"]),
            )
        })
        .collect();
    assert_eq!(cost, expected);
    assert!(
        cost.iter().any(|(l, v)| l == odd_model && v == "n/a"),
        "{cost:?}"
    );
    assert!(
        cost.iter().any(|(l, v)| l == "gpt-4o" && v != "n/a"),
        "{cost:?}"
    );

    // 3. Savings: each recommendation's monthly saving, in rank order.
    let savings = bars(section(html, "chart-savings"));
    let recs = report["recommendations"].as_array().unwrap();
    assert!(!recs.is_empty());
    let expected: Vec<(String, String)> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                format!("{}. {}", i + 1, r["title"].as_str().unwrap()),
                exact(&r["monthly_savings_usd"]),
            )
        })
        .collect();
    assert_eq!(savings, expected);

    // Tenancy: another tenant's token sees nothing; an unknown id is 404.
    for (url, tok) in [
        (format!("{base}/v1/runs/{id}/report.html"), &other),
        (
            format!("{base}/v1/runs/{}/report.html", uuid::Uuid::new_v4()),
            &token,
        ),
    ] {
        let p = get(url, tok).await;
        assert_eq!(p.status, 404);
        assert!(p.content_type.starts_with("application/json"));
        let v: Value = serde_json::from_str(&p.body).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert!(!p.body.contains("chat-prod"));
    }
    let p = get(format!("{base}/v1/runs/{id}/report.html"), "ntr_wrong").await;
    assert_eq!(p.status, 401);

    // A run without a report yet: 409, naming its status.
    let parked = create_run(&t.pool, "acme", "c-parked", "parked", "not-a-phase").await;
    let p = get(format!("{base}/v1/runs/{}/report.html", parked.id), &token).await;
    assert_eq!(p.status, 409, "{}", p.body);
    let v: Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(v["error"]["code"], "conflict");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("queued"),
        "{v}"
    );
    t.finish().await;
}

#[tokio::test]
async fn a_long_window_is_drawn_in_coarser_buckets() {
    let t = TestApp::start().await;
    let base = t.base();
    let token = t.tenant("acme").await;
    // Three days: 4,320 clock minutes, drawn in 5-minute buckets.
    let spec = netra::sample::Spec {
        hours: 72,
        ..netra::sample::chat("gpt-4o-mini", 2000, 9)
    };
    netra::sample::load(&t.pool, "acme", "batch-jobs", &spec)
        .await
        .unwrap();
    let (id, view) = run_to_completion(
        &base,
        &token,
        "Show the usage breakdown of workload batch-jobs",
    )
    .await;
    let m = &view["result"]["metrics"][0];
    let page = get(format!("{base}/v1/runs/{id}/report.html"), &token).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let requests = section(&page.body, "chart-requests");
    assert!(requests.contains("Requests per 5 minutes"), "{requests}");
    assert!(requests.contains("longer than 1,500 minutes"));
    let points: i64 = attr(requests, "data-points").parse().unwrap();
    assert!((860..=865).contains(&points), "{points}");
    assert_eq!(attr(requests, "data-sum"), m["requests"].to_string());
    // An analysis has no recommendations: no savings chart; the cost chart
    // has the report's one model.
    assert!(!page.body.contains("chart-savings"));
    let cost = bars(section(&page.body, "chart-cost"));
    assert_eq!(
        cost,
        vec![(
            "gpt-4o-mini".to_string(),
            exact(&m["models"][0]["cost_usd"])
        )]
    );
    // A quality goal: an upgrade costs more, a negative saving, drawn to
    // the left of the zero line.
    let (id, view) = run_to_completion(
        &base,
        &token,
        "Improve the answer quality of workload batch-jobs",
    )
    .await;
    let page = get(format!("{base}/v1/runs/{id}/report.html"), &token).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let chart = section(&page.body, "chart-savings");
    let recs = view["result"]["recommendations"].as_array().unwrap();
    let expected: Vec<String> = recs
        .iter()
        .map(|r| exact(&r["monthly_savings_usd"]))
        .collect();
    let drawn: Vec<String> = bars(chart).into_iter().map(|(_, v)| v).collect();
    assert_eq!(drawn, expected);
    let negative = recs
        .iter()
        .position(|r| r["monthly_savings_usd"].as_f64().unwrap() < 0.0)
        .expect("an upgrade costs more");
    let zero: f64 = attr(&chart[chart.find("<line ").unwrap()..], "x1")
        .parse()
        .unwrap();
    let bar = chart.split("<g class=\"bar").nth(negative + 1).unwrap();
    assert!(bar.starts_with(" neg\""), "{bar}");
    let rect = &bar[bar.find("<rect ").unwrap()..];
    let (x, width): (f64, f64) = (
        attr(rect, "x").parse().unwrap(),
        attr(rect, "width").parse().unwrap(),
    );
    assert!(
        x < zero && (x + width - zero).abs() < 0.2,
        "{x} + {width} vs {zero}"
    );
    assert!(bar.contains(&format!(
        "-${:.2}",
        -recs[negative]["monthly_savings_usd"].as_f64().unwrap()
    )));
    t.finish().await;
}
