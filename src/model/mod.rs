//! Shared vocabulary of the store and the pipeline, a leaf module both
//! import (the store imports nothing of the pipeline): run statuses as a
//! type, so that a typo is a compile error rather than a silent bug
//! (docs/DESIGN.md "Run states"); the phase message ([`envelope`]); what a
//! processed message leads to ([`outbound`]); a thread's messages.

/// The by-name traits of an enum of names with `ALL` and `as_str`:
/// `Display`, `FromStr` (refusing other names with `$err`), and comparison
/// with `str`.
macro_rules! names {
    ($ty:ident, $err:ident) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $err;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $err(s.to_string()))
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

pub mod envelope;
pub mod outbound;
pub mod phase;
pub mod principal;

pub use phase::Phase;
pub use principal::{Principal, Reason};

/// One earlier message of the run's conversation thread.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ThreadMessage {
    /// `user` or `agent`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// The status of a run (docs/DESIGN.md "Run states"). Stored as its
/// snake_case name in `runs.status`, and shown that way in the API.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for its current phase's message to be consumed.
    Queued,
    /// A phase attempt is running.
    Running,
    /// A transient failure; the next attempt is due at `next_attempt_at`.
    Retrying,
    /// Done, with a report.
    Completed,
    /// Done, asking the user for what is missing.
    NeedsInput,
    /// A phase failed permanently or spent its attempts.
    DeadLettered,
    /// Cancelled by the tenant.
    Cancelled,
}

impl RunStatus {
    /// Every status, in the order of the state machine.
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Retrying,
        RunStatus::Completed,
        RunStatus::NeedsInput,
        RunStatus::DeadLettered,
        RunStatus::Cancelled,
    ];

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Retrying => "retrying",
            RunStatus::Completed => "completed",
            RunStatus::NeedsInput => "needs_input",
            RunStatus::DeadLettered => "dead_lettered",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// True once the run changes no more (short of a replay).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed
                | RunStatus::NeedsInput
                | RunStatus::DeadLettered
                | RunStatus::Cancelled
        )
    }

    /// True for the final statuses that carry a result (a report).
    pub fn has_result(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::NeedsInput)
    }
}

/// An unknown status name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown run status `{0}`")]
pub struct UnknownStatus(pub String);

names!(RunStatus, UnknownStatus);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in RunStatus::ALL {
            assert_eq!(st.as_str().parse::<RunStatus>().unwrap(), st);
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert!("nope".parse::<RunStatus>().is_err());
        assert!(RunStatus::DeadLettered.is_final() && !RunStatus::Retrying.is_final());
    }
}
