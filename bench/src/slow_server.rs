//! The slow model of `netra bench --slow-model`: a small OpenAI-compatible
//! chat-completions server that answers every request after a set delay,
//! with a triage answer for the benchmark's request.
//!
//! It runs as a child process of the benchmark (`netra-bench
//! --serve-slow-model MS`), so that its sockets and memory are not counted
//! in the RSS of the worker it serves, and its connections not in the
//! worker's file descriptors. It prints `listening on ADDR` on its first
//! line; each line then read from its stdin is a new delay in
//! milliseconds; the end of stdin (the benchmark went away) ends it.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use axum::{extract::State, routing::post, Json, Router};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The listen backlog: a step opens thousands of connections at once.
const BACKLOG: u32 = 16_384;

/// What the model answers: the triage of [`crate::DEFAULT_REQUEST`], with
/// each number's span, so that grounding keeps it.
fn triage_answer() -> String {
    json!({
        "intent": "cut the cost of bench-w",
        "category": "optimization",
        "workloads": ["bench-w"],
        "priorities": ["cost", "latency"],
        "constraints": [
            {"kind": "target_reduction_pct", "value": 30, "span": "by 30%"},
            {"kind": "latency_slo_ms", "value": 3000, "span": "over 3 s"},
        ],
        "time_window": {"days": 0, "span": ""},
    })
    .to_string()
}

async fn complete(State(delay): State<Arc<AtomicU64>>) -> Json<Value> {
    tokio::time::sleep(Duration::from_millis(delay.load(Ordering::Relaxed))).await;
    Json(json!({
        "id": "bench",
        "object": "chat.completion",
        "model": "bench-slow",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": triage_answer()},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 600, "completion_tokens": 80},
    }))
}

/// Serves until stdin ends.
pub async fn serve(delay_ms: u64) -> anyhow::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], 0).into())?;
    let listener = socket.listen(BACKLOG).context("listening")?;
    println!("listening on {}", listener.local_addr()?);
    let delay = Arc::new(AtomicU64::new(delay_ms));
    let control = {
        let delay = delay.clone();
        async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(ms) = line.trim().parse::<u64>() {
                    delay.store(ms, Ordering::Relaxed);
                }
            }
        }
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(delay);
    tokio::select! {
        r = axum::serve(listener, app) => r.context("serving")?,
        () = control => {}
    }
    Ok(())
}
