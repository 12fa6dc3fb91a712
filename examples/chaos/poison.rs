//! The eight kinds of poison the `poison` scenario mixes into good traffic,
//! and what netra makes of each (src/pipeline/intake.rs, src/model/envelope.rs,
//! src/pipeline/worker.rs; tests/it/hardening_broker.rs tests the same
//! paths one at a time). None of them becomes a run: each is dead-lettered
//! once, indexed in `dead_letters` under its message id, with an error that
//! starts with its class ([`Kind::expected`]).
//!
//! | kind            | where          | becomes                                   |
//! |-----------------|----------------|-------------------------------------------|
//! | nul             | intake         | `invalid_request` (message holds NUL)     |
//! | invalid-json    | intake         | `invalid_request` (serde's parse error)   |
//! | oversized       | intake         | `oversized` (> NETRA_MAX_MESSAGE_BYTES)   |
//! | not-utf8        | intake         | `not_utf8`                                |
//! | forged-envelope | a phase queue  | `forged` (no or wrong seal)               |
//! | no-message      | intake         | `invalid_request` (missing field)         |
//! | foreign-thread  | intake         | `unknown_thread` (another tenant's)       |
//! | deep-nesting    | intake         | `invalid_request` (recursion limit)       |

use anyhow::{Context, Result};
use netra::{
    broker::{
        publisher::{HeaderValue, Outgoing},
        topology::Names,
    },
    pipeline::envelope::Envelope,
};
use rand::{rngs::StdRng, seq::SliceRandom, Rng};
use serde_json::json;
use uuid::Uuid;

/// A kind of poison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Nul,
    InvalidJson,
    Oversized,
    NotUtf8,
    ForgedEnvelope,
    NoMessage,
    ForeignThread,
    DeepNesting,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 8] = [
        Kind::Nul,
        Kind::InvalidJson,
        Kind::Oversized,
        Kind::NotUtf8,
        Kind::ForgedEnvelope,
        Kind::NoMessage,
        Kind::ForeignThread,
        Kind::DeepNesting,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nul => "nul",
            Kind::InvalidJson => "invalid-json",
            Kind::Oversized => "oversized",
            Kind::NotUtf8 => "not-utf8",
            Kind::ForgedEnvelope => "forged-envelope",
            Kind::NoMessage => "no-message",
            Kind::ForeignThread => "foreign-thread",
            Kind::DeepNesting => "deep-nesting",
        }
    }

    /// The class its dead letter's error starts with.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Nul | Kind::InvalidJson | Kind::NoMessage | Kind::DeepNesting => {
                "invalid_request"
            }
            Kind::Oversized => "oversized",
            Kind::NotUtf8 => "not_utf8",
            Kind::ForgedEnvelope => "forged",
            Kind::ForeignThread => "unknown_thread",
        }
    }
}

/// What the poison messages are made from.
pub struct Ctx {
    pub names: Names,
    /// NETRA_MAX_MESSAGE_BYTES of the workers.
    pub max_bytes: usize,
    /// A thread of another tenant (see [`foreign_thread`]).
    pub foreign_thread: Uuid,
    pub phases: Vec<&'static str>,
}

/// Creates a thread of another tenant in the scenario's database.
pub async fn foreign_thread(pool: &sqlx::PgPool) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO threads (id, tenant) VALUES ($1, 'chaos-other-tenant')")
        .bind(id)
        .execute(pool)
        .await
        .context("creating another tenant's thread")?;
    Ok(id)
}

/// `n` kinds, each at least once when `n >= 8`, in a seeded order.
pub fn kinds(n: usize, rng: &mut StdRng) -> Vec<Kind> {
    let mut out: Vec<Kind> = (0..n)
        .map(|i| match Kind::ALL.get(i) {
            Some(k) => *k,
            None => Kind::ALL[rng.gen_range(0..Kind::ALL.len())],
        })
        .collect();
    out.shuffle(rng);
    out
}

/// The message of one poison of `kind`, with message and correlation id `id`.
pub fn message(kind: Kind, id: &str, ctx: &Ctx, rng: &mut StdRng) -> Outgoing {
    let request = |body: Vec<u8>| Outgoing {
        exchange: ctx.names.intake_exchange(),
        routing_key: String::new(),
        body,
        message_id: Some(id.to_string()),
        correlation_id: Some(id.to_string()),
        ..Default::default()
    };
    match kind {
        // serde_json writes the NUL as the escape \u0000.
        Kind::Nul => request(json_bytes(
            &json!({"message": "Cut the cost\u{0} of chat-prod"}),
        )),
        Kind::InvalidJson => {
            request(br#"{"message": "Cut the cost of workload chat-prod""#.to_vec())
        }
        Kind::Oversized => {
            let text = "x".repeat(ctx.max_bytes + 1024);
            request(json_bytes(&json!({ "message": text })))
        }
        Kind::NotUtf8 => request(b"{\"message\": \"Cut the cost \xff\xfe of chat-prod\"}".to_vec()),
        Kind::ForgedEnvelope => {
            let phase = ctx.phases[rng.gen_range(0..ctx.phases.len())];
            // Half a well-formed envelope without a seal, half garbage
            // under a seal made up by the sender.
            let (body, headers) = if rng.gen_bool(0.5) {
                let env = Envelope::new(Uuid::new_v4(), phase, 1, 0, id, "default");
                (env.to_bytes(), vec![])
            } else {
                let garbage: Vec<u8> = (0..256).map(|_| rng.gen()).collect();
                let seal = (
                    netra::pipeline::seal::HEADER.to_string(),
                    HeaderValue::Text("0".repeat(64)),
                );
                (garbage, vec![seal])
            };
            Outgoing {
                exchange: String::new(),
                routing_key: ctx.names.phase_queue(phase),
                body,
                message_id: Some(id.to_string()),
                correlation_id: Some(id.to_string()),
                headers,
                ..Default::default()
            }
        }
        Kind::NoMessage => request(json_bytes(
            &json!({"text": "Cut the cost of workload chat-prod"}),
        )),
        Kind::ForeignThread => request(json_bytes(&json!({
            "message": "What is prompt caching?",
            "thread_id": ctx.foreign_thread,
        }))),
        Kind::DeepNesting => {
            // Far past serde_json's recursion limit (128).
            let depth = 2000;
            let mut body = String::from(r#"{"message": "What is prompt caching?", "context": "#);
            body.push_str(&r#"{"a": "#.repeat(depth));
            body.push('1');
            body.push_str(&"}".repeat(depth));
            body.push('}');
            request(body.into_bytes())
        }
    }
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    // A serde_json::Value always serializes.
    serde_json::to_vec(v).unwrap_or_default()
}
