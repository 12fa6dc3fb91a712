//! `netra submit` and `netra status`: a small client of the HTTP API (ureq,
//! run on the blocking pool).

use crate::model::RunStatus;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use uuid::Uuid;

fn call(
    method: &'static str,
    url: String,
    token: String,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {token}");
    let resp = match (method, body) {
        ("POST", Some(b)) => agent.post(&url).header("authorization", &auth).send_json(b),
        _ => agent.get(&url).header("authorization", &auth).call(),
    }
    .with_context(|| format!("calling {url}"))?;
    let status = resp.status().as_u16();
    let v: Value = resp.into_body().read_json().unwrap_or(Value::Null);
    if status >= 400 {
        bail!(
            "{status}: {}",
            v["error"]["message"].as_str().unwrap_or("request failed")
        );
    }
    Ok(v)
}

async fn call_async(
    method: &'static str,
    url: String,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let token = token.to_string();
    tokio::task::spawn_blocking(move || call(method, url, token, body)).await?
}

/// Prints a run: its report when finished, else its status line.
pub fn print_run(v: &Value, json_out: bool) {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    println!(
        "run {}  status {}  phase {}",
        v["id"].as_str().unwrap_or("?"),
        v["status"].as_str().unwrap_or("?"),
        v["phase"].as_str().unwrap_or("-")
    );
    if let Some(md) = v["result"]["markdown"].as_str() {
        println!("\n{md}");
    } else if let Some(e) = v["error"].as_str() {
        println!("error: {e}");
    }
}

/// `netra submit`.
pub async fn submit(
    api: &str,
    token: &str,
    message: &str,
    workload: Option<String>,
    thread: Option<Uuid>,
    wait: bool,
) -> anyhow::Result<()> {
    let base = api.trim_end_matches('/');
    let body = json!({"message": message, "workload_id": workload});
    let url = match thread {
        Some(t) => format!("{base}/v1/threads/{t}/messages"),
        None => format!("{base}/v1/runs"),
    };
    let created = call_async("POST", url, token, Some(body)).await?;
    let id = created["run_id"].as_str().unwrap_or_default().to_string();
    println!(
        "run {id}  thread {}",
        created["thread_id"].as_str().unwrap_or("?")
    );
    if wait {
        loop {
            let v = call_async("GET", format!("{base}/v1/runs/{id}?wait=30"), token, None).await?;
            let status = v["status"]
                .as_str()
                .and_then(|s| s.parse::<RunStatus>().ok());
            if status.is_some_and(RunStatus::is_final) {
                print_run(&v, false);
                break;
            }
        }
    }
    Ok(())
}

/// `netra status`.
pub async fn status(
    api: &str,
    token: &str,
    id: Uuid,
    wait: u64,
    json_out: bool,
) -> anyhow::Result<()> {
    let base = api.trim_end_matches('/');
    let v = call_async(
        "GET",
        format!("{base}/v1/runs/{id}?wait={wait}"),
        token,
        None,
    )
    .await?;
    print_run(&v, json_out);
    Ok(())
}
