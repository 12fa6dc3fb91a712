//! Conversation threads and their messages (user messages, agent reports).

use super::Error;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// A thread.
#[derive(Debug, Clone, Serialize)]
pub struct Thread {
    /// Thread id.
    pub id: Uuid,
    /// Owning tenant.
    pub tenant: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// One message of a thread.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// Sequence.
    pub id: i64,
    /// The run it belongs to.
    pub run_id: Option<Uuid>,
    /// `user` or `agent`.
    pub role: String,
    /// The text.
    pub content: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A thread, only if it belongs to `tenant`.
pub async fn get(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<Thread>, Error> {
    Ok(sqlx::query_as!(
        Thread,
        "SELECT id, tenant, created_at FROM threads WHERE id = $1 AND tenant = $2",
        id,
        tenant,
    )
    .fetch_optional(pool)
    .await?)
}

/// A thread's messages, oldest first.
pub async fn messages(pool: &PgPool, thread_id: Uuid) -> Result<Vec<Message>, Error> {
    Ok(sqlx::query_as!(
        Message,
        "SELECT id, run_id, role, content, created_at FROM messages WHERE thread_id = $1 ORDER BY id",
        thread_id,
    )
    .fetch_all(pool)
    .await?)
}
