//! Who acts: a tenant (its own runs only) or an operator (every tenant), and
//! the reason an operator action must carry (docs/DESIGN.md "Operators and
//! the audit trail").

use std::fmt;

/// Who a token or a console session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A tenant: sees and acts on its own runs only.
    Tenant(String),
    /// An operator: sees and acts on every tenant.
    Operator(String),
}

impl Principal {
    /// From a stored kind (`tenant` or `operator`) and a name.
    pub fn from_kind(kind: &str, name: String) -> Option<Self> {
        match kind {
            "tenant" => Some(Self::Tenant(name)),
            "operator" => Some(Self::Operator(name)),
            _ => None,
        }
    }

    /// `tenant` or `operator`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tenant(_) => "tenant",
            Self::Operator(_) => "operator",
        }
    }

    /// The name, without its kind.
    pub fn name(&self) -> &str {
        match self {
            Self::Tenant(n) | Self::Operator(n) => n,
        }
    }

    /// The tenant whose data it may see, or `None` for all of them.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Self::Tenant(n) => Some(n),
            Self::Operator(_) => None,
        }
    }

    /// Whether it may see a tenant's data.
    pub fn sees(&self, tenant: &str) -> bool {
        self.scope().is_none_or(|t| t == tenant)
    }

    /// The actor recorded in history and the audit trail: `tenant:NAME` or
    /// `operator:NAME`.
    pub fn actor(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.name())
    }
}

/// Longest reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Why an action was taken: required for every action the audit trail
/// records, never empty, at most [`MAX_REASON_CHARS`], no control
/// characters but newlines and tabs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

/// What is wrong with a reason; the message says what to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    /// Absent or blank.
    #[error("a reason is required: say why, it goes in the audit trail")]
    Missing,
    /// Too long.
    #[error("the reason is longer than {MAX_REASON_CHARS} characters")]
    TooLong,
    /// NUL or another control character.
    #[error("the reason contains a control character")]
    Control,
}

impl Reason {
    /// Checks a reason as given (trimmed).
    pub fn parse(given: Option<&str>) -> Result<Self, ReasonError> {
        let s = given.map(str::trim).unwrap_or_default();
        if s.is_empty() {
            return Err(ReasonError::Missing);
        }
        if s.chars().count() > MAX_REASON_CHARS {
            return Err(ReasonError::TooLong);
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(ReasonError::Control);
        }
        Ok(Self(s.to_string()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_required_and_clean() {
        assert_eq!(Reason::parse(None), Err(ReasonError::Missing));
        assert_eq!(Reason::parse(Some("  \n ")), Err(ReasonError::Missing));
        assert_eq!(Reason::parse(Some("a\0b")), Err(ReasonError::Control));
        assert_eq!(
            Reason::parse(Some(&"x".repeat(MAX_REASON_CHARS + 1))),
            Err(ReasonError::TooLong)
        );
        assert_eq!(
            Reason::parse(Some(" fixed the window ")).map(|r| r.as_str().to_string()),
            Ok("fixed the window".to_string())
        );
    }

    #[test]
    fn operators_see_every_tenant_and_tenants_their_own() {
        let t = Principal::Tenant("a".into());
        let o = Principal::Operator("ops".into());
        assert!(t.sees("a") && !t.sees("b"));
        assert!(o.sees("a") && o.sees("b"));
        assert_eq!(t.actor(), "tenant:a");
        assert_eq!(o.actor(), "operator:ops");
        assert_eq!(
            Principal::from_kind("operator", "x".into()),
            Some(Principal::Operator("x".into()))
        );
        assert_eq!(Principal::from_kind("root", "x".into()), None);
    }
}
