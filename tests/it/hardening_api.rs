//! The hardening of the HTTP API: NUL and type errors are 422 naming the
//! field (and create nothing), Idempotency-Key is checked, every error is
//! JSON, half-open connections from one address cannot starve the others,
//! failed logins are limited per address, the per-tenant rate limit holds
//! with and without Redis, and tenants can be rotated and deleted (library
//! and CLI).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The second loopback address: a different client for the per-address limits.
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// One HTTP answer.
#[derive(Debug)]
struct Resp {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    allow: Option<String>,
    text: String,
    json: Value,
}

impl Resp {
    /// `error.field` of a JSON error.
    fn field(&self) -> Option<&str> {
        self.json["error"]["field"].as_str()
    }
}

/// One HTTP call from 127.0.0.1 through ureq: any method, optional bearer
/// token, extra headers and body.
async fn call(
    method: &str,
    url: String,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Resp {
    let method = method.to_string();
    let token = token.map(str::to_string);
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let agent = http();
        let resp = match body {
            Some(b) => agent.run(
                req.header("content-type", "application/json")
                    .body(b)
                    .unwrap(),
            ),
            None => agent.run(req.body(()).unwrap()),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = resp.status().as_u16();
        let content_type = header("content-type").unwrap_or_default();
        let retry_after = header("retry-after");
        let allow = header("allow");
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            content_type,
            retry_after,
            allow,
            text,
            json,
        }
    })
    .await
    .unwrap()
}

fn body(v: Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(&v).unwrap())
}

fn addr(t: &TestApp) -> SocketAddr {
    t.app.as_ref().unwrap().http_addr.unwrap()
}

/// A TCP connection to `to` from the address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// One raw HTTP/1.1 request from `from` (with `Connection: close`): the
/// status and the whole answer.
async fn raw(from: IpAddr, to: SocketAddr, head: &[u8], body: &[u8]) -> (u16, String) {
    let mut stream = connect_from(from, to).await.expect("connect");
    let mut req = head.to_vec();
    req.extend_from_slice(
        format!(
            "Host: netra\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    req.extend_from_slice(body);
    stream.write_all(&req).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    (status, text)
}

/// `GET /v1/runs` from `from` with a bearer token, raw.
async fn raw_list(from: IpAddr, to: SocketAddr, token: &str) -> (u16, String) {
    let head = format!("GET /v1/runs HTTP/1.1\r\nAuthorization: Bearer {token}\r\n");
    raw(from, to, head.as_bytes(), b"").await
}

async fn run_count(t: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&t.pool)
        .await
        .unwrap()
}

/// A name unique to this test run (tenant names are never reused).
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[tokio::test]
async fn nul_characters_are_refused_naming_the_field_and_create_nothing() {
    let t = TestApp::start().await;
    let url = format!("{}/v1/runs", t.base());
    let token = t.tenant("nul").await;
    // Raw JSON text, so that the escape reaches the server as written.
    for (text, field) in [
        (r#"{"message":"a\u0000b"}"#, "message"),
        (r#"{"message":"x","context":{"k":"a\u0000"}}"#, "context"),
        (r#"{"message":"x","context":{"a\u0000":1}}"#, "context"),
        (
            r#"{"message":"x","context":{"l":["ok","\u0000"]}}"#,
            "context",
        ),
    ] {
        let r = call("POST", url.clone(), Some(&token), &[], Some(text.into())).await;
        assert_eq!((r.status, r.field()), (422, Some(field)), "{text}: {r:?}");
        assert_eq!(r.json["error"]["code"], "invalid", "{r:?}");
        assert!(
            r.json["error"]["message"].as_str().unwrap().contains("NUL"),
            "{r:?}"
        );
    }
    // A follow-up with NUL is refused the same way.
    let r = call(
        "POST",
        url.clone(),
        Some(&token),
        &[],
        body(json!({"message": "first"})),
    )
    .await;
    assert_eq!(r.status, 202, "{r:?}");
    let thread = r.json["thread_id"].as_str().unwrap().to_string();
    let r = call(
        "POST",
        format!("{}/v1/threads/{thread}/messages", t.base()),
        Some(&token),
        &[],
        Some(br#"{"message":"again\u0000"}"#.to_vec()),
    )
    .await;
    assert_eq!((r.status, r.field()), (422, Some("message")), "{r:?}");
    // Only the one valid request made a run.
    assert_eq!(run_count(&t).await, 1);
    t.finish().await;
}

#[tokio::test]
async fn type_errors_and_missing_fields_name_the_field() {
    let t = TestApp::start().await;
    let url = format!("{}/v1/runs", t.base());
    let token = t.tenant("types").await;
    for (text, field) in [
        (r#"{"message":123}"#, "message"),
        (r#"{"message":null}"#, "message"),
        (r#"{"context":{}}"#, "message"),
        (r#"{}"#, "message"),
        (r#"{"message":"x","workload_id":5}"#, "workload_id"),
        (r#"{"message":"x","thread_id":"not-a-uuid"}"#, "thread_id"),
        (r#"{"message":"x","context":[1]}"#, "context"),
        // A struct must not be read from an array (serde would, by position).
        (r#"["hi"]"#, "body"),
        (r#"[1]"#, "body"),
        (r#""hi""#, "body"),
        (r#"{"message":"x""#, "body"),
        ("not json", "body"),
        (r#"{"message":"x"} {"message":"y"}"#, "body"),
        (r#"{"message":"x","context":{"a":1"#, "context"),
        (r#"{"message":"x","context":{"a":[1,"#, "context.a"),
        ("", "body"),
    ] {
        let r = call("POST", url.clone(), Some(&token), &[], Some(text.into())).await;
        assert_eq!((r.status, r.field()), (422, Some(field)), "{text}: {r:?}");
        assert!(r.json["error"]["message"].is_string(), "{r:?}");
    }
    assert_eq!(run_count(&t).await, 0);
    t.finish().await;
}

#[tokio::test]
async fn idempotency_key_is_checked_and_honoured_by_follow_ups() {
    let t = TestApp::start().await;
    let base = t.base();
    let url = format!("{base}/v1/runs");
    let token = t.tenant("idem").await;
    let msg = json!({"message": "What is batching?"});

    // Same key, same body: the same run (202, then 200).
    let first = call(
        "POST",
        url.clone(),
        Some(&token),
        &[("idempotency-key", "k-1")],
        body(msg.clone()),
    )
    .await;
    assert_eq!(first.status, 202, "{first:?}");
    let again = call(
        "POST",
        url.clone(),
        Some(&token),
        &[("idempotency-key", "k-1")],
        body(msg.clone()),
    )
    .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(first.json["run_id"], again.json["run_id"]);
    assert_eq!(again.json["created"], false);

    // Same key, another body: 409 naming the key.
    let other = call(
        "POST",
        url.clone(),
        Some(&token),
        &[("idempotency-key", "k-1")],
        body(json!({"message": "What is caching?"})),
    )
    .await;
    assert_eq!(
        (other.status, other.json["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{other:?}"
    );
    assert!(
        other.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`k-1`"),
        "{other:?}"
    );

    // Keys are per tenant: another tenant's same key is its own new run.
    let token_b = t.tenant("idem-b").await;
    let b = call(
        "POST",
        url.clone(),
        Some(&token_b),
        &[("idempotency-key", "k-1")],
        body(msg.clone()),
    )
    .await;
    assert_eq!(b.status, 202, "{b:?}");
    assert_ne!(b.json["run_id"], first.json["run_id"]);

    // 200 characters is the longest key; 201 is refused naming the header.
    let longest = "a".repeat(200);
    let r = call(
        "POST",
        url.clone(),
        Some(&token),
        &[("idempotency-key", &longest)],
        body(msg.clone()),
    )
    .await;
    assert_eq!(r.status, 202, "{r:?}");
    let runs_before = run_count(&t).await;
    let too_long = "a".repeat(201);
    for bad in [too_long.as_str(), "", "tab\there"] {
        let r = call(
            "POST",
            url.clone(),
            Some(&token),
            &[("idempotency-key", bad)],
            body(msg.clone()),
        )
        .await;
        assert_eq!(
            (r.status, r.field()),
            (422, Some("Idempotency-Key")),
            "{bad:?}: {r:?}"
        );
    }
    // A non-ASCII key (UTF-8 bytes in the header; ureq refuses to send
    // them, so this request is written by hand).
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nIdempotency-Key: cl\u{e9}\r\n"
    );
    let (status, text) = raw(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        addr(&t),
        head.as_bytes(),
        &serde_json::to_vec(&msg).unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains(r#""field":"Idempotency-Key""#), "{text}");
    assert_eq!(run_count(&t).await, runs_before, "a refused key made a run");

    // A follow-up with a key, twice: the same run both times.
    let thread = first.json["thread_id"].as_str().unwrap();
    let follow_url = format!("{base}/v1/threads/{thread}/messages");
    let follow = json!({"message": "And with a larger batch?"});
    let f1 = call(
        "POST",
        follow_url.clone(),
        Some(&token),
        &[("idempotency-key", "f-1")],
        body(follow.clone()),
    )
    .await;
    assert_eq!(f1.status, 202, "{f1:?}");
    assert_eq!(f1.json["thread_id"].as_str(), Some(thread));
    let f2 = call(
        "POST",
        follow_url.clone(),
        Some(&token),
        &[("idempotency-key", "f-1")],
        body(follow.clone()),
    )
    .await;
    assert_eq!(f2.status, 200, "{f2:?}");
    assert_eq!(f1.json["run_id"], f2.json["run_id"]);
    // ...and the same key for another follow-up text is a conflict.
    let f3 = call(
        "POST",
        follow_url.clone(),
        Some(&token),
        &[("idempotency-key", "f-1")],
        body(json!({"message": "Something else"})),
    )
    .await;
    assert_eq!(f3.status, 409, "{f3:?}");
    // A malformed key on a follow-up is refused as well.
    let r = call(
        "POST",
        follow_url,
        Some(&token),
        &[("idempotency-key", &too_long)],
        body(follow),
    )
    .await;
    assert_eq!(
        (r.status, r.field()),
        (422, Some("Idempotency-Key")),
        "{r:?}"
    );
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM runs WHERE thread_id = $1::uuid")
        .bind(thread)
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(n, 2, "the first run and one follow-up");
    t.finish().await;
}

/// Method, URL, token, body and the expected status.
type ErrorCase<'a> = (&'a str, String, Option<&'a str>, Option<Vec<u8>>, u16);

#[tokio::test]
async fn every_error_answer_is_json() {
    let t = TestApp::start().await;
    let base = t.base();
    let token = t.tenant("errors").await;
    let tok = Some(token.as_str());
    let too_big = json!({"message": "x".repeat(netra::api::MAX_BODY_BYTES + 100)});
    let cases: Vec<ErrorCase> = vec![
        ("GET", format!("{base}/v1/runs/not-a-uuid"), tok, None, 400),
        (
            "POST",
            format!("{base}/v1/runs/not-a-uuid/cancel"),
            tok,
            None,
            400,
        ),
        (
            "GET",
            format!("{base}/v1/threads/not-a-uuid/messages"),
            tok,
            None,
            400,
        ),
        (
            "GET",
            format!("{base}/v1/dead-letters/not-a-uuid"),
            tok,
            None,
            400,
        ),
        ("GET", format!("{base}/v1/runs?limit=abc"), tok, None, 400),
        (
            "GET",
            format!("{base}/v1/runs/{}?wait=abc", uuid::Uuid::new_v4()),
            tok,
            None,
            400,
        ),
        ("GET", format!("{base}/v1/no-such-route"), tok, None, 404),
        ("GET", format!("{base}/nope"), None, None, 404),
        ("DELETE", format!("{base}/v1/runs"), tok, None, 405),
        ("PUT", format!("{base}/healthz"), None, None, 405),
        ("POST", format!("{base}/v1/runs"), tok, body(too_big), 413),
        ("GET", format!("{base}/v1/runs"), None, None, 401),
    ];
    for (method, url, token, b, want) in cases {
        let r = call(method, url.clone(), token, &[], b).await;
        assert_eq!(r.status, want, "{method} {url}: {r:?}");
        assert!(
            r.content_type.starts_with("application/json"),
            "{method} {url}: content-type {:?}, body {:?}",
            r.content_type,
            r.text
        );
        assert!(
            r.json["error"]["code"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{method} {url}: {r:?}"
        );
        assert!(
            r.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{method} {url}: {r:?}"
        );
        if want == 405 {
            // The rewrite keeps axum's headers.
            assert!(r.allow.is_some(), "405 without Allow: {r:?}");
        }
    }
    t.finish().await;
}

/// The soft limit of open files of this process.
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_connections_from_one_address_do_not_starve_others() {
    let (mut config, db) = test_config().await;
    // No header deadline during the test: only the per-client cap may close
    // the half-open connections.
    config.http.header_timeout = Duration::from_secs(3600);
    let cap = config.http.max_connections_per_client;
    let t = TestApp::start_with(config, db, None).await;
    let to = addr(&t);
    // Each connection costs one handle here (and, while held, one in the
    // server, which runs in this process); other tests run alongside.
    let n = 2000.min(open_files_limit().saturating_sub(2000) / 2);
    assert!(
        n > 2 * cap,
        "RLIMIT_NOFILE {} is too low for this test (`ulimit -n 20000`)",
        open_files_limit()
    );

    // Open them all, each with a partial request (no blank line after the
    // headers), a bounded number connecting at a time.
    let closed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..n {
        let (closed, gate) = (closed.clone(), gate.clone());
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let stream = tokio::time::timeout(DEADLINE, connect_from(OTHER_CLIENT, to))
                .await
                .expect("connect in time")
                .expect("connect");
            let (mut rd, mut wr) = stream.into_split();
            // A write that fails means the server closed it already.
            let _ = wr.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
            // Watches for the server closing it (EOF or reset), or for an
            // answer once the request is completed.
            let (tx, rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let got = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        closed.fetch_add(1, Ordering::SeqCst);
                        Vec::new()
                    }
                    Ok(k) => buf[..k].to_vec(),
                };
                let _ = tx.send(got);
            });
            (i, wr, rx)
        });
    }
    let mut conns = Vec::with_capacity(n);
    while let Some(c) = connecting.join_next().await {
        conns.push(c.unwrap());
    }
    assert_eq!(conns.len(), n);

    // Another client is still served while they are all held (retried:
    // one attempt may be refused, the answer must come before the deadline).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let url = format!("{}/healthz", t.base());
    loop {
        let url = url.clone();
        let r = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            let mut r = agent.get(&url).call().map_err(|e| e.to_string())?;
            let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
            Ok::<_, String>((r.status().as_u16(), text))
        })
        .await
        .unwrap();
        match r {
            Ok((200, text)) if text == "ok" => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "/healthz not served while one address holds {n} connections: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // The server kept at most `cap` of them: the rest it closed.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while closed.load(Ordering::SeqCst) < n - cap {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server closed only {} of {n} connections from one address (cap {cap})",
            closed.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The ones still open were held by the server: completing their
    // requests gets answers.
    let mut open = Vec::new();
    for (i, wr, mut rx) in conns {
        match rx.try_recv() {
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => open.push((i, wr, rx)),
            Ok(got) => assert!(got.is_empty(), "connection {i} answered a partial request"),
            Err(e) => panic!("watcher of connection {i} gone: {e}"),
        }
    }
    assert!(open.len() <= cap, "{} open, cap {cap}", open.len());
    assert!(!open.is_empty(), "the server closed every connection");
    for (i, mut wr, rx) in open {
        wr.write_all(b"\r\n").await.unwrap();
        let got = tokio::time::timeout(DEADLINE, rx)
            .await
            .expect("answer in time")
            .unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "connection {i}: {text:?}");
    }
    t.finish().await;
}

#[tokio::test]
async fn failed_authentications_are_limited_per_client_address() {
    let (mut config, db) = test_config().await;
    config.auth_failures_per_min = 5;
    let t = TestApp::start_with(config, db, None).await;
    let url = format!("{}/v1/runs", t.base());
    let token = t.tenant("locked").await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..6 {
        let wrong = format!("ntr_wrong{i}");
        let r = call("GET", url.clone(), Some(&wrong), &[], None).await;
        statuses.push(r.status);
        last = Some(r);
    }
    assert!(
        started.elapsed() < netra::ratelimit::WINDOW,
        "the calls took longer than the window"
    );
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    let last = last.unwrap();
    assert_eq!(last.json["error"]["code"], "rate_limited", "{last:?}");
    let wait: u64 = last
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without retry-after: {last:?}"));
    assert!((1..=60).contains(&wait), "{wait}");
    // The address is locked out: even a valid token is not looked at.
    let r = call("GET", url.clone(), Some(&token), &[], None).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.retry_after.is_some(), "{r:?}");
    // So is a call without a token.
    let r = call("GET", url.clone(), None, &[], None).await;
    assert_eq!(r.status, 429, "{r:?}");
    // Another address is not: a wrong token is still 401 there, a valid one 200.
    let (s, text) = raw_list(OTHER_CLIENT, addr(&t), "ntr_wrong").await;
    assert_eq!(s, 401, "{text}");
    let (s, text) = raw_list(OTHER_CLIENT, addr(&t), &token).await;
    assert_eq!(s, 200, "{text}");
    // Routes without authentication stay open to the locked-out address.
    let r = call("GET", format!("{}/healthz", t.base()), None, &[], None).await;
    assert_eq!(r.status, 200);
    t.finish().await;
}

/// `n` authenticated `GET /v1/runs` calls: their statuses and the last
/// retry-after; asserts they all fell in one rate-limit window.
async fn list_calls(urls: &[String], token: &str) -> (Vec<u16>, Option<String>) {
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for url in urls {
        let r = call("GET", url.clone(), Some(token), &[], None).await;
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(r.json["error"]["code"], "rate_limited", "{r:?}");
            retry_after = r.retry_after;
        }
    }
    assert!(
        started.elapsed() < netra::ratelimit::WINDOW,
        "the calls took longer than the window"
    );
    (statuses, retry_after)
}

fn assert_retry_after(v: Option<String>) {
    let secs: u64 = v
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a retry-after in seconds: {v:?}"));
    assert!((1..=60).contains(&secs), "{secs}");
}

#[tokio::test]
async fn rate_limit_holds_without_redis() {
    let (mut config, db) = test_config().await;
    // Nothing listens there: the cache is disabled.
    config.redis_url = "redis://127.0.0.1:1/0".to_string().into();
    config.rate_limit_per_min = 5;
    let t = TestApp::start_with(config, db, None).await;
    assert!(
        t.app.as_ref().unwrap().engine.cache.is_none(),
        "the cache should be disabled"
    );
    let token = t.tenant("no-redis").await;
    let urls = vec![format!("{}/v1/runs", t.base()); 6];
    let (statuses, retry_after) = list_calls(&urls, &token).await;
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    assert_retry_after(retry_after);
    // Per tenant: another tenant still has its budget.
    let other = t.tenant("no-redis-2").await;
    let (statuses, _) = list_calls(&urls[..1], &other).await;
    assert_eq!(statuses, [200]);
    t.finish().await;
}

#[tokio::test]
async fn rate_limit_is_shared_by_processes_through_redis() {
    let (mut config, db) = test_config().await;
    config.rate_limit_per_min = 5;
    // Two processes of one deployment: same database, same namespace.
    let a = TestApp::start_with(config.clone(), db.clone(), None).await;
    let b = TestApp::start_with(config, db, None).await;
    assert!(
        a.app.as_ref().unwrap().engine.cache.is_some(),
        "Redis is up"
    );
    let token = a.tenant(&unique("shared")).await;
    let (ua, ub) = (
        format!("{}/v1/runs", a.base()),
        format!("{}/v1/runs", b.base()),
    );
    // 5 calls alternating between the two: each process alone would admit
    // 5, so a 429 on the 6th proves the window is shared.
    let urls = [&ua, &ub, &ua, &ub, &ua, &ub].map(|u| u.clone());
    let (statuses, retry_after) = list_calls(&urls, &token).await;
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    assert_retry_after(retry_after);
    let (statuses, _) = list_calls(&[ua], &token).await;
    assert_eq!(statuses, [429]);
    let mut b = b;
    b.app.take().unwrap().shutdown().await;
    a.finish().await;
}

/// `GET /v1/runs` with a token: the status.
async fn status_with(t: &TestApp, token: &str) -> u16 {
    call(
        "GET",
        format!("{}/v1/runs", t.base()),
        Some(token),
        &[],
        None,
    )
    .await
    .status
}

#[tokio::test]
async fn tenant_tokens_rotate_and_deleted_names_are_never_reused() {
    use netra::store::tenants::{self, TenantError};
    let t = TestApp::start().await;
    let old = t.tenant("rot").await;
    assert_eq!(status_with(&t, &old).await, 200);
    let new = tenants::rotate_token(&t.pool, "rot").await.unwrap();
    assert_ne!(new, old);
    assert_eq!(
        status_with(&t, &old).await,
        401,
        "the old token still works"
    );
    assert_eq!(
        status_with(&t, &new).await,
        200,
        "the new token does not work"
    );
    tenants::delete(&t.pool, "rot").await.unwrap();
    assert_eq!(
        status_with(&t, &new).await,
        401,
        "a deleted tenant's token works"
    );
    assert!(matches!(
        tenants::create(&t.pool, "rot", None, &crate::common::said()).await,
        Err(TenantError::Exists(_))
    ));
    assert!(matches!(
        tenants::rotate_token(&t.pool, "rot").await,
        Err(TenantError::Missing(_))
    ));
    assert!(matches!(
        tenants::delete(&t.pool, "rot").await,
        Err(TenantError::Missing(_))
    ));
    assert!(!tenants::list(&t.pool)
        .await
        .unwrap()
        .contains(&"rot".to_string()));

    // A deleted tenant's broker user is unmapped, and never mapped again.
    tenants::create(&t.pool, "withuser", Some("bu-old"), &crate::common::said())
        .await
        .unwrap();
    assert_eq!(
        tenants::by_amqp_user(&t.pool, "bu-old")
            .await
            .unwrap()
            .as_deref(),
        Some("withuser")
    );
    tenants::delete(&t.pool, "withuser").await.unwrap();
    assert_eq!(
        tenants::by_amqp_user(&t.pool, "bu-old").await.unwrap(),
        None
    );
    assert!(
        tenants::create(&t.pool, "heir", Some("bu-old"), &crate::common::said())
            .await
            .is_err(),
        "a new tenant inherited a deleted tenant's broker user"
    );

    // The same through the CLI.
    let cli = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_netra"));
        c.args(args)
            .env("NETRA_DATABASE_URL", database_url(&t.config))
            .env("NETRA_NAMESPACE", &t.config.namespace)
            .env("RUST_LOG", "warn");
        async move {
            let out = c.output().await.unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            (out.status.success(), stdout, stderr)
        }
    };
    let token_of = |stdout: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with("ntr_"))
            .unwrap_or_else(|| panic!("no token printed: {stdout:?}"))
            .to_string()
    };
    let (ok, out, err) = cli(&["tenant", "create", "cli-t", "--reason", "test"]).await;
    assert!(ok, "{out}{err}");
    let first = token_of(&out);
    assert_eq!(status_with(&t, &first).await, 200);
    let (ok, out, err) = cli(&["tenant", "create", "cli-t", "--reason", "test"]).await;
    assert!(!ok, "created twice: {out}{err}");
    let (ok, out, err) = cli(&["tenant", "rotate-token", "cli-t"]).await;
    assert!(ok, "{out}{err}");
    let second = token_of(&out);
    assert_ne!(first, second);
    assert_eq!(status_with(&t, &first).await, 401);
    assert_eq!(status_with(&t, &second).await, 200);
    let (ok, out, err) = cli(&["tenant", "list"]).await;
    assert!(ok && out.lines().any(|l| l == "cli-t"), "{out}{err}");
    let (ok, out, err) = cli(&["tenant", "delete", "cli-t"]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(status_with(&t, &second).await, 401);
    let (ok, out, err) = cli(&["tenant", "create", "cli-t", "--reason", "test"]).await;
    assert!(!ok, "a deleted name was created again: {out}{err}");
    assert!(err.contains("cli-t"), "{err}");
    assert!(!out.contains("ntr_"), "a token was printed: {out}");
    let (ok, out, err) = cli(&["tenant", "rotate-token", "cli-t"]).await;
    assert!(!ok, "rotated a deleted tenant: {out}{err}");
    let (ok, out, err) = cli(&["tenant", "delete", "cli-t"]).await;
    assert!(!ok, "deleted twice: {out}{err}");
    let (ok, out, err) = cli(&["tenant", "list"]).await;
    assert!(ok && !out.lines().any(|l| l == "cli-t"), "{out}{err}");
    t.finish().await;
}
