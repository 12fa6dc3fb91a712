//! The phase message: a small JSON claim check.
//!
//! It names the run, the phase, the attempt and the replay generation; the
//! phase's inputs are read from Postgres, never from the message, so a replay
//! always sees the persisted upstream outputs. Decoding is strict and every
//! refusal says why, because the reason goes into the dead-letter queue.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The envelope schema this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One phase message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// The run this message moves forward.
    pub run_id: Uuid,
    /// The phase to run.
    pub phase: String,
    /// Attempt number of this phase, from 1.
    pub attempt: u32,
    /// Replay generation: 0 for the original, +1 for each replay.
    pub replay: u32,
    /// The run's correlation id.
    pub correlation_id: String,
    /// The tenant that owns the run.
    pub tenant: String,
    /// W3C trace context; the trace id is the run id.
    pub traceparent: String,
}

impl Envelope {
    /// A new envelope for `phase` of a run.
    pub fn new(
        run_id: Uuid,
        phase: &str,
        attempt: u32,
        replay: u32,
        correlation_id: &str,
        tenant: &str,
    ) -> Self {
        Self {
            v: SCHEMA_VERSION,
            run_id,
            phase: phase.to_string(),
            attempt,
            replay,
            correlation_id: correlation_id.to_string(),
            tenant: tenant.to_string(),
            traceparent: traceparent(run_id, phase, attempt, replay),
        }
    }

    /// Deterministic per (run, phase, attempt, replay): publishing the same
    /// step twice yields the same id, which is what dedup keys on.
    pub fn message_id(&self) -> String {
        message_id(self.run_id, &self.phase, self.attempt, self.replay)
    }

    /// The JSON body.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and validates a body; `known_phase` tells which phase names exist.
    pub fn decode(
        body: &[u8],
        max_bytes: usize,
        known_phase: impl Fn(&str) -> bool,
    ) -> Result<Self, Poison> {
        let text = body_text(body, max_bytes)?;
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Poison::new("invalid_json", format!("body is not JSON: {e}")))?;
        match value.get("v").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(Poison::new(
                    "unknown_schema",
                    format!(
                        "schema version {v} is not supported (this build reads {SCHEMA_VERSION})"
                    ),
                ))
            }
            None => {
                return Err(Poison::new(
                    "missing_field",
                    "missing field `v` (schema version)",
                ))
            }
        }
        let env: Envelope = serde_json::from_value(value)
            .map_err(|e| Poison::new("invalid_envelope", format!("invalid envelope: {e}")))?;
        if !known_phase(&env.phase) {
            return Err(Poison::new(
                "unknown_phase",
                format!("unknown phase `{}`", env.phase),
            ));
        }
        if env.attempt == 0 {
            return Err(Poison::new(
                "invalid_envelope",
                "attempt must be at least 1",
            ));
        }
        Ok(env)
    }
}

/// Checks a message body's size and encoding, the first two reasons a
/// message cannot be processed, and returns it as text.
pub fn body_text(body: &[u8], max_bytes: usize) -> Result<&str, Poison> {
    if body.len() > max_bytes {
        return Err(Poison::new(
            "oversized",
            format!(
                "body of {} bytes exceeds the limit of {max_bytes}",
                body.len()
            ),
        ));
    }
    std::str::from_utf8(body).map_err(|e| {
        Poison::new(
            "not_utf8",
            format!("body is not UTF-8 (at byte {})", e.valid_up_to()),
        )
    })
}

/// The deterministic message id of a phase step.
pub fn message_id(run_id: Uuid, phase: &str, attempt: u32, replay: u32) -> String {
    format!("{run_id}:{phase}:{attempt}:{replay}")
}

/// A W3C `traceparent` whose trace id is the run id and whose span id is
/// derived from the step, so a republished step carries the same header.
pub fn traceparent(run_id: Uuid, phase: &str, attempt: u32, replay: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(message_id(run_id, phase, attempt, replay).as_bytes());
    let span: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("00-{}-{span}-01", run_id.simple())
}

/// Why a message cannot be processed at all: it goes to the dead-letter queue
/// on its first delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {reason}")]
pub struct Poison {
    /// Short machine-readable kind (`invalid_json`, `unknown_phase`, …).
    pub kind: &'static str,
    /// Readable reason.
    pub reason: String,
}

impl Poison {
    /// A poison verdict.
    pub fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(p: &str) -> bool {
        p == "triage"
    }

    #[test]
    fn round_trip_and_deterministic_id() {
        let run = Uuid::new_v4();
        let a = Envelope::new(run, "triage", 1, 0, "c-1", "t");
        let b = Envelope::new(run, "triage", 1, 0, "c-1", "t");
        assert_eq!(a.message_id(), b.message_id());
        assert_eq!(a.traceparent, b.traceparent);
        assert_ne!(
            a.message_id(),
            Envelope::new(run, "triage", 2, 0, "c-1", "t").message_id()
        );
        let back = Envelope::decode(&a.to_bytes(), 1024, known).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn poison_kinds() {
        let run = Uuid::new_v4();
        let good = Envelope::new(run, "triage", 1, 0, "c", "t");
        assert_eq!(
            Envelope::decode(b"{nope", 1024, known).unwrap_err().kind,
            "invalid_json"
        );
        assert_eq!(
            Envelope::decode(&[0xff, 0xfe], 1024, known)
                .unwrap_err()
                .kind,
            "not_utf8"
        );
        assert_eq!(
            Envelope::decode(&good.to_bytes(), 10, known)
                .unwrap_err()
                .kind,
            "oversized"
        );
        let mut v = serde_json::to_value(&good).unwrap();
        v["v"] = 99.into();
        let body = serde_json::to_vec(&v).unwrap();
        assert_eq!(
            Envelope::decode(&body, 1024, known).unwrap_err().kind,
            "unknown_schema"
        );
        let other = Envelope::new(run, "nope", 1, 0, "c", "t");
        assert_eq!(
            Envelope::decode(&other.to_bytes(), 1024, known)
                .unwrap_err()
                .kind,
            "unknown_phase"
        );
        let mut v = serde_json::to_value(&good).unwrap();
        v.as_object_mut().unwrap().remove("run_id");
        let body = serde_json::to_vec(&v).unwrap();
        assert_eq!(
            Envelope::decode(&body, 1024, known).unwrap_err().kind,
            "invalid_envelope"
        );
    }
}
