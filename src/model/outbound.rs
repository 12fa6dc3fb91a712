//! What a processed message leads to: the messages to publish after commit.
//!
//! The list is stored with the message's dedup record, in the same
//! transaction as the effect, so that a redelivered duplicate can publish
//! the same follow-ups again (their ids are deterministic, so consumers
//! dedup them) and a crash between commit and publish never stalls a run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::envelope::Envelope;

/// One message to publish once the effect is committed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outbound {
    /// The next phase of the run.
    Phase {
        /// Its envelope.
        envelope: Envelope,
    },
    /// The failed phase message, to `<ns>.dlq.<phase>`.
    DeadLetter {
        /// The envelope that failed.
        envelope: Envelope,
        /// `transient` or `permanent`.
        error_class: String,
        /// Why.
        error: String,
        /// Attempts made.
        attempts: u32,
        /// First failure of this phase in this replay generation.
        first_failed_at: DateTime<Utc>,
        /// This failure.
        last_failed_at: DateTime<Utc>,
    },
    /// The run's final outcome, to the request's `reply_to`.
    Reply {
        /// The reply queue.
        to: String,
        /// The run's correlation id.
        correlation_id: String,
        /// `{run_id, status, result | error}`.
        body: Value,
    },
    /// Wake long-polls and refresh the status cache of a run.
    Notify {
        /// The run.
        run_id: Uuid,
    },
}
