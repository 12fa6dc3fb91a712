//! A language-model provider that misbehaves on purpose: a test double.
//!
//! A real provider's outages (a 429 with `Retry-After`, a 500, a call that
//! never answers, a body cut short, an answer that is not JSON or not the
//! schema) cannot be had on demand, least of all offline, so the tests of
//! how netra copes with them talk to this instead: a small HTTP/1.1 server
//! on `127.0.0.1:0` that speaks just enough of `POST /v1/chat/completions`
//! and answers each request as its script says, in order, then with its
//! `then` reply. It counts the requests, keeps their bodies, and notes any
//! request that came before the `Retry-After` it last asked for.
//!
//! With [`Reply::Forward`] it is a counting proxy in front of a real server
//! (llama-server), for the tests that must know whether the model was asked.
//!
//! It is written on the socket (not axum) because some replies break HTTP
//! on purpose: a `Content-Length` larger than the body sent, a connection
//! that stays silent.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A chat completion (200) whose message content is this text, with
    /// `usage` tokens estimated from the lengths of the prompt and answer.
    Answer(String),
    /// A chat completion (200) of this content with these `usage` tokens.
    Counted {
        content: String,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    /// This status with this body, and a `Retry-After` of that many seconds.
    Status {
        code: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// 200 with this body as it is (not a chat completion).
    Raw(String),
    /// Nothing for this long (beyond the client's timeout), then close.
    Hang(Duration),
    /// A 200 whose `Content-Length` announces more than is sent, then close.
    CutShort,
    /// Forwarded to this base URL (up to `/v1`), answered as it answers.
    Forward(String),
}

impl Reply {
    /// A 500.
    pub fn error_500() -> Self {
        Reply::Status {
            code: 500,
            retry_after: None,
            body: r#"{"error":{"message":"internal error"}}"#.into(),
        }
    }

    /// A 429 asking to wait `secs`.
    pub fn too_many(secs: u64) -> Self {
        Reply::Status {
            code: 429,
            retry_after: Some(secs),
            body: r#"{"error":{"message":"rate limit reached"}}"#.into(),
        }
    }

    /// The JSON of `answer` as the message content.
    pub fn json(answer: &Value) -> Self {
        Reply::Answer(answer.to_string())
    }

    /// The JSON of `answer` as the message content, with these `usage`
    /// tokens.
    pub fn json_counted(answer: &Value, prompt_tokens: u32, completion_tokens: u32) -> Self {
        Reply::Counted {
            content: answer.to_string(),
            prompt_tokens,
            completion_tokens,
        }
    }
}

struct State {
    script: Mutex<VecDeque<Reply>>,
    then: Reply,
    requests: AtomicUsize,
    early: AtomicUsize,
    not_before: Mutex<Option<Instant>>,
    bodies: Mutex<Vec<Value>>,
    http: reqwest::Client,
}

/// The server; it stops when dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeLlm {
    /// Answers with `script`, one reply per request, then always `then`.
    pub async fn start(script: Vec<Reply>, then: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(State {
            script: Mutex::new(script.into()),
            then,
            requests: AtomicUsize::new(0),
            early: AtomicUsize::new(0),
            not_before: Mutex::new(None),
            bodies: Mutex::new(Vec::new()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()
                .expect("HTTP client"),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        FakeLlm { addr, state, task }
    }

    /// A proxy to `upstream` (a base URL up to `/v1`) that counts requests.
    pub async fn proxy(upstream: &str) -> Self {
        Self::start(Vec::new(), Reply::Forward(upstream.to_string())).await
    }

    /// The base URL, as `NETRA_LLM_BASE_URL` wants it.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Chat-completion requests received.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests that came before the `Retry-After` the server had asked for.
    pub fn early(&self) -> usize {
        self.state.early.load(Ordering::SeqCst)
    }

    /// The JSON bodies of the requests, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.state.bodies.lock().unwrap().clone()
    }
}

/// Reads one request: (request line, body).
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = head.lines().next().unwrap_or_default().to_string();
    Some((line, buf[head_end..head_end + length].to_vec()))
}

async fn respond(stream: &mut TcpStream, code: u16, extra: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {code} Fake\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// Answers `request` with a chat completion (200) of `content`, with
/// `usage` (prompt, completion) tokens.
async fn answer(stream: &mut TcpStream, request: &Value, content: &str, usage: (u64, u64)) {
    let body = json!({
        "id": "fake-1",
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1},
    });
    respond(stream, 200, "", body.to_string().as_bytes()).await;
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let Some((line, body)) = read_request(&mut stream).await else {
        return;
    };
    if !line.starts_with("POST /v1/chat/completions ") {
        respond(&mut stream, 404, "", br#"{"error":"not found"}"#).await;
        return;
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    {
        let mut not_before = state.not_before.lock().unwrap();
        if not_before.is_some_and(|t| Instant::now() < t) {
            state.early.fetch_add(1, Ordering::SeqCst);
        }
        *not_before = None;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.bodies.lock().unwrap().push(request.clone());
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.then.clone());
    match reply {
        Reply::Answer(content) => {
            let prompt_chars: usize = request["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["content"].as_str())
                .map(str::len)
                .sum();
            let usage = (prompt_chars as u64 / 4 + 1, content.len() as u64 / 4 + 1);
            answer(&mut stream, &request, &content, usage).await;
        }
        Reply::Counted {
            content,
            prompt_tokens,
            completion_tokens,
        } => {
            let usage = (prompt_tokens.into(), completion_tokens.into());
            answer(&mut stream, &request, &content, usage).await;
        }
        Reply::Status {
            code,
            retry_after,
            body,
        } => {
            let extra = match retry_after {
                Some(secs) => {
                    *state.not_before.lock().unwrap() =
                        Some(Instant::now() + Duration::from_secs(secs));
                    format!("retry-after: {secs}\r\n")
                }
                None => String::new(),
            };
            respond(&mut stream, code, &extra, body.as_bytes()).await;
        }
        Reply::Raw(body) => respond(&mut stream, 200, "", body.as_bytes()).await,
        Reply::Hang(d) => tokio::time::sleep(d).await,
        Reply::CutShort => {
            let part = br#"{"id":"fake-1","choices":[{"message":{"content":"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                part.len() + 4096
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(part).await;
            let _ = stream.flush().await;
            // Dropped here: the connection closes short of its length.
        }
        Reply::Forward(upstream) => {
            let sent = state
                .http
                .post(format!("{upstream}/chat/completions"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) => {
                    let code = r.status().as_u16();
                    let bytes = r.bytes().await.unwrap_or_default();
                    respond(&mut stream, code, "", &bytes).await;
                }
                Err(e) => {
                    let msg = json!({"error": format!("proxy: {e}")}).to_string();
                    respond(&mut stream, 502, "", msg.as_bytes()).await;
                }
            }
        }
    }
}
