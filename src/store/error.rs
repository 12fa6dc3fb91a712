//! The store's error type: what a caller needs to decide (wait out an
//! outage, refuse bad input, report a missing row, give up), mapped from
//! sqlx's errors in one place ([`From<sqlx::Error>`]).
//!
//! Every variant carries only text that sqlx or Postgres produced about the
//! statement (never a connection string or a secret: the URLs are parsed
//! before a pool exists, and their errors never quote them), or netra's own
//! description of what failed.

/// A failure of a store call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The store cannot be reached: Postgres is unreachable, restarting or
    /// out of resources (I/O errors such as a refused connection, TLS,
    /// protocol errors, pool timeouts; SQLSTATE classes 08 and 53, and 57P:
    /// admin shutdown, crash shutdown, cannot connect now), or the server
    /// written to is no longer the primary (SQLSTATE 25006,
    /// read_only_sql_transaction: a standby after a failover, or a
    /// connection a multi-host pool refused because the server is in
    /// recovery), or the batcher that writes for the caller is gone (a
    /// shutdown) or died without an answer. Not the caller's fault: work is
    /// handed back once the database answers, and never spends a phase
    /// attempt.
    #[error("{0}")]
    Outage(String),
    /// The row the call needs does not exist (a run, a dead letter).
    #[error("no such row")]
    NotFound,
    /// Postgres refused the data itself: SQLSTATE class 22 (data exception:
    /// a NUL in text, an untranslatable character, a value out of range),
    /// class 54 (a program limit such as an over-long value), or a value
    /// sqlx could not encode. The same statement fails the same way every
    /// time, so this is bad input, a permanent failure, never an outage.
    #[error("{message}")]
    BadData {
        /// The SQLSTATE, for messages that name it (none for an encoding
        /// failure, which never reached Postgres).
        sqlstate: Option<String>,
        /// sqlx's description of the failure.
        message: String,
    },
    /// The statement conflicts with what is stored (SQLSTATE class 23: a
    /// unique, foreign-key or check constraint). Not an outage; callers
    /// treat it like [`Error::Internal`] unless they expect it.
    #[error("{0}")]
    Conflict(String),
    /// Anything else: a failing statement, or netra's own store logic (a
    /// batch answered with the wrong number of rows). Not an outage:
    /// retrying as soon as the database answers would not help.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// True when the store could not be reached (see [`Error::Outage`]):
    /// such errors never burn a phase attempt.
    pub fn is_outage(&self) -> bool {
        matches!(self, Error::Outage(_))
    }

    /// True when Postgres refused the data itself (see [`Error::BadData`]).
    pub fn is_bad_data(&self) -> bool {
        matches!(self, Error::BadData { .. })
    }

    /// The SQLSTATE of refused data, for messages that name it.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::BadData { sqlstate, .. } => sqlstate.as_deref(),
            _ => None,
        }
    }

    /// The batcher in front of the store (`what`) is gone: the process is
    /// shutting down. An outage for the caller, whose work goes back.
    pub fn batcher_gone(what: &str) -> Self {
        Error::Outage(format!("{what} is gone (shutting down)"))
    }

    /// The batch that carried the caller's item died without an answer (a
    /// panic). An outage for the caller, whose work goes back.
    pub fn batch_died(what: &str) -> Self {
        Error::Outage(format!("a batch of {what} died without an answer"))
    }

    /// The same failure, described by `message` (a caller's wording that
    /// adds context); [`Error::NotFound`] becomes [`Error::Internal`].
    pub fn with_message(self, message: String) -> Self {
        match self {
            Error::Outage(_) => Error::Outage(message),
            Error::BadData { sqlstate, .. } => Error::BadData { sqlstate, message },
            Error::Conflict(_) => Error::Conflict(message),
            Error::NotFound | Error::Internal(_) => Error::Internal(message),
        }
    }

    /// netra's own store logic failed (never an outage).
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if is_outage(&e) {
            return Error::Outage(e.to_string());
        }
        let code = match &e {
            sqlx::Error::Database(db) => db.code().map(|c| c.to_string()),
            _ => None,
        };
        let class = |prefix: &str| code.as_deref().is_some_and(|c| c.starts_with(prefix));
        if class("22") || class("54") || matches!(e, sqlx::Error::Encode(_)) {
            return Error::BadData {
                sqlstate: code.clone(),
                message: e.to_string(),
            };
        }
        if class("23") {
            return Error::Conflict(e.to_string());
        }
        match e {
            sqlx::Error::RowNotFound => Error::NotFound,
            other => Error::Internal(other.to_string()),
        }
    }
}

/// True when a sqlx error means the database is unreachable or restarting
/// (not that a query is wrong).
fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 57P01-03: admin shutdown, crash
            // shutdown, cannot connect now; 53: insufficient resources;
            // 25006: read-only transaction (the server became a standby:
            // the writes belong on the new primary, once the pools follow
            // it).
            c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") || c == "25006"
        }),
        sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database error with only a SQLSTATE, as Postgres reports one.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "error with SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            "error"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn database(code: &'static str) -> Error {
        Error::from(sqlx::Error::Database(Box::new(Sqlstate(code))))
    }

    #[test]
    fn a_failover_is_an_outage() {
        // Writing to a standby, the server shutting down or starting up,
        // the connection lost or refused.
        for code in [
            "25006", "57P01", "57P02", "57P03", "08006", "08001", "53300",
        ] {
            assert!(database(code).is_outage(), "{code}");
        }
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(Error::from(sqlx::Error::Io(refused)).is_outage());
        // Other SQLSTATEs keep their meaning.
        assert!(database("22021").is_bad_data());
        assert!(matches!(database("23505"), Error::Conflict(_)));
        assert!(matches!(database("25P02"), Error::Internal(_)));
        assert!(matches!(database("42601"), Error::Internal(_)));
    }

    #[test]
    fn sqlx_errors_map_to_what_callers_decide_on() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Io(std::io::Error::other("reset")),
            sqlx::Error::Protocol("unexpected".into()),
        ] {
            assert!(Error::from(e).is_outage());
        }
        assert!(matches!(
            Error::from(sqlx::Error::RowNotFound),
            Error::NotFound
        ));
        let internal = Error::from(sqlx::Error::Configuration("bad".into()));
        assert!(!internal.is_outage() && !internal.is_bad_data());
        assert!(internal.to_string().contains("bad"), "{internal}");
        assert!(Error::from(sqlx::Error::Encode("nul".into())).is_bad_data());
        assert!(Error::batcher_gone("the committer").is_outage());
        assert!(Error::batch_died("effects").is_outage());
    }
}
